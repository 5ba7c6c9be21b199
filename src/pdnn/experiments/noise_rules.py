"""The rules that decide the claims of sampling without retraining (``results/noise/``, the
``noise`` study of ``pdnn reproduce``), written once so that every report applies the same ones.

Accuracies are means over independent sampling repeats, on the same test images; a difference
counts only beyond twice its standard error over repeats (SE = std / √repeats), and never below
a floor of 0.1 points and one test image, so that a few hundredths of a point with a tiny repeat
spread do not count. The rules account for the sampling noise only, not for the finite test set.
"""
from __future__ import annotations

import math

GAIN_RULE = ("gain at T = 2: acc(2) − acc(1) > 2·√(SE(1)² + SE(2)²); monotonic: no step between consecutive "
             "measured T falls by more than 2·√(SE² + SE²) of its ends and acc(Tmax) − acc(1) exceeds that bound "
             "(a flat curve is not monotonic); SE = std / √repeats, every bound ≥ 0.1 points and one test image")
ABOVE_RULE = ("acc(Tmax) − deterministic source (same test images) > 2·SE(Tmax), the bound ≥ 0.1 points and one "
              "test image")
AGGREGATION_RULE = ("at every T ≥ 2 measured by both, network − layer ≥ −bound, and > bound at one T at least; "
                    "bound = 2·√(SE_network² + SE_layer²), ≥ 0.1 points and one test image")


def rows_by_samples(document: dict) -> dict[int, dict]:
    """An ``eval-*.json`` document's result rows by T."""
    return {r["samples"]: r for r in document["results"]}


def standard_error(row: dict) -> float:
    """The standard error of a mean accuracy over repeats (the sampling noise on these test images)."""
    return row["accuracy_std"] / math.sqrt(row["repeats"]) if row["repeats"] > 1 else 0.0


def floor(examples: int) -> float:
    """The smallest difference any rule counts: 0.1 points, and at least one test image."""
    return max(0.001, 1 / examples)


def bound(examples: int, *rows: dict) -> float:
    """Twice the standard error of a difference between (or of) ``rows``, at least :func:`floor`."""
    return max(floor(examples), 2 * math.sqrt(sum(standard_error(r) ** 2 for r in rows)))


def verdicts(rows: dict[int, dict], det: float | None, examples: int) -> dict:
    """Gain at T = 2, monotonic improvement with T and the comparison with the deterministic
    source ``det`` (None: no comparison) of one accuracy-per-T table, by :data:`GAIN_RULE` and
    :data:`ABOVE_RULE`."""
    ts = sorted(rows)
    out: dict = {"floor": floor(examples)}
    if 1 in rows and 2 in rows:
        a, b = rows[1], rows[2]
        out["gain_T2_vs_T1"] = b["accuracy_mean"] - a["accuracy_mean"]
        out["gain_T2_vs_T1_bound"] = bound(examples, a, b)
        out["gain_at_T2"] = out["gain_T2_vs_T1"] > out["gain_T2_vs_T1_bound"]
    drops = []
    for s, t in zip(ts, ts[1:]):
        d = rows[t]["accuracy_mean"] - rows[s]["accuracy_mean"]
        if d < -bound(examples, rows[s], rows[t]):
            drops.append([s, t, d])
    first, last = rows[ts[0]], rows[ts[-1]]
    overall = last["accuracy_mean"] - first["accuracy_mean"]
    out["significant_drops"] = drops
    out["strictly_increasing"] = all(rows[t]["accuracy_mean"] > rows[s]["accuracy_mean"] for s, t in zip(ts, ts[1:]))
    out["gain_Tmax_vs_T1"] = overall
    out["monotonic"] = not drops and overall > bound(examples, first, last)
    if det is not None:
        best_t = max(ts, key=lambda t: rows[t]["accuracy_mean"])
        out["deterministic"] = det
        out["T2_minus_deterministic"] = rows[2]["accuracy_mean"] - det if 2 in rows else None
        out["Tmax"] = ts[-1]
        out["Tmax_minus_deterministic"] = last["accuracy_mean"] - det
        out["beats_deterministic"] = last["accuracy_mean"] - det > bound(examples, last)
        out["below_deterministic"] = last["accuracy_mean"] - det < -bound(examples, last)
        out["best_T"] = best_t
        out["best_minus_deterministic"] = rows[best_t]["accuracy_mean"] - det
    return out


def aggregation_verdict(network: dict[int, dict], layer: dict[int, dict], examples: int) -> dict:
    """Network (p-DNN) against layer (bit-stream) aggregation at equal T, by :data:`AGGREGATION_RULE`:
    ``{"differences": {T: network − layer}, "bounds": {T: bound}, "ahead", "behind", "beats"}``."""
    ts = sorted(t for t in set(network) & set(layer) if t >= 2)
    diffs = {t: network[t]["accuracy_mean"] - layer[t]["accuracy_mean"] for t in ts}
    bounds = {t: bound(examples, network[t], layer[t]) for t in ts}
    ahead = [t for t in ts if diffs[t] > bounds[t]]
    behind = [t for t in ts if diffs[t] < -bounds[t]]
    return {"differences": diffs, "bounds": bounds, "ahead": ahead, "behind": behind,
            "beats": bool(ahead) and not behind}
