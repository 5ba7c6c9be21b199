"""The low-bit weight study's analysis: from a trade-off of measured runs, the cheapest
configuration within one point of the 32-bit float network, the cheapest p-DNN there, and which
term of the EO energy limits its gain; and sigmoid against tanh p-bits at matched temperature.

Used by the ``lowbit`` study of ``pdnn reproduce`` and by ``scripts/lowbit_summary.py`` (the
tables of ``results/lowbit``). Every number is read from a run's JSON files or computed from its
``config.json``; nothing is typed in.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from ..energy import Settings, network_energy, run_network
from ..io import read_json

TABLE_TS = (1, 2, 5, 10, 50)  # the T columns of the accuracy tables


def memory_settings(memory: str) -> Settings:
    """Weights and activations both in ``memory`` (``dram`` or ``sram``), per-EO weight reads."""
    return Settings(weight_memory=memory, activation_memory=memory)


def accuracy_by_t(run_dir) -> dict[int, float]:
    """Accuracy (a fraction, mean over the sampling repeats) by T, from ``eval-network.json``."""
    document = read_json(Path(run_dir) / "eval-network.json")
    return {r["samples"]: r["accuracy_mean"] for r in document["results"]}


def is_pbit(point: dict) -> bool:
    return str(point.get("neuron") or "").startswith("pbit")


def is_lowbit_pbit(point: dict) -> bool:
    """A p-DNN whose weights have fewer than 32 bits."""
    return is_pbit(point) and (point.get("weight_bits") or 32) < 32


def cheapest_within(result: dict, keep: Callable[[dict], bool] = lambda p: True) -> dict | None:
    """The lowest-energy point of a :func:`pdnn.energy.tradeoff` result that ``keep`` accepts and
    whose accuracy is within the result's tolerance of its reference; None if there is none."""
    floor = result["reference"]["accuracy"] - result["tolerance"] - 1e-12
    pool = [p for p in result["points"] if keep(p) and p["accuracy"] >= floor]
    return min(pool, key=lambda p: (p["energy_j"], -p["accuracy"])) if pool else None


def energy_limits(point: dict, settings: Settings, reference_j: float, input_bits: int = 8) -> dict:
    """The terms of ``point``'s energy and, per term, the gain over the reference that term alone
    would allow were every other term free. The *limiting* term allows the smallest gain: the
    one to shrink for more."""
    net, _ = run_network(point["run"], input_bits)
    energy = network_energy(net, point["samples"], replace(settings, aggregate=point.get("aggregate", "network")))
    caps = {k.removesuffix("_j"): reference_j / v for k, v in energy["terms"].items() if v > 0}
    limiting = min(caps, key=caps.get)
    return {"total_j": energy["total_j"], "terms": energy["terms"], "gain_cap_by_term": caps,
            "limiting_term": limiting, "limiting_share": energy["terms"][f"{limiting}_j"] / energy["total_j"],
            "first_layer_j": energy["layers"][0]["total_j"]}


def _chosen(point: dict | None, reference_j: float) -> dict | None:
    if point is None:
        return None
    keys = ("label", "run", "accuracy", "energy_j", "weight_bits", "neuron", "samples", "aggregate")
    return {**{k: point.get(k) for k in keys}, "gain": reference_j / point["energy_j"] if point["energy_j"] else None}


def headline(result: dict, settings: Settings) -> dict:
    """What a trade-off of float- and low-bit-weight runs says about "less energy within one point":
    the cheapest configuration of all, the cheapest p-DNN (any weight width), and the cheapest
    p-DNN with low-bit weights, each with its gain over the reference; the limiting term of the
    cheapest of all and of the cheapest low-bit p-DNN; and, in case no low-bit p-DNN is within
    tolerance, the most accurate one."""
    ref = result["reference"]
    ref_j = ref["energy_j"]
    bits = result.get("input_bits", 8)
    best = _chosen(cheapest_within(result), ref_j)
    best["limits"] = energy_limits(best, settings, ref_j, bits)
    lowbit = _chosen(cheapest_within(result, is_lowbit_pbit), ref_j)
    if lowbit is not None:
        lowbit["limits"] = energy_limits(lowbit, settings, ref_j, bits)
    lowbit_points = [p for p in result["points"] if is_lowbit_pbit(p)]
    closest = max(lowbit_points, key=lambda p: (p["accuracy"], -p["energy_j"])) if lowbit_points else None
    return {"dataset": result.get("dataset"), "memory": settings.weight_memory, "tolerance": result["tolerance"],
            "reference": {k: ref.get(k) for k in ("label", "run", "accuracy", "energy_j", "basis")},
            "best": best, "best_pbit": _chosen(cheapest_within(result, is_pbit), ref_j),
            "best_lowbit_pbit": lowbit, "most_accurate_lowbit_pbit": _chosen(closest, ref_j)}


def term_name(term: str) -> str:
    return term.replace("_", " ")


def headline_rows(headlines: Sequence[dict]) -> list[str]:
    """A Markdown table: one row per (dataset, memory) headline."""
    rows = ["| dataset | memory | 32-bit reference | cheapest within 1 point | accuracy | gain | cheapest p-DNN within "
            "1 point (gain) | cheapest low-bit p-DNN within 1 point (gain) | limiting term of the cheapest: its share, "
            "the gain it alone allows |",
            "|---|---|---|---|---|---|---|---|---|"]
    for h in headlines:
        ref, best, limits = h["reference"], h["best"], h["best"]["limits"]
        term = limits["limiting_term"]
        chosen = [("none" if c is None else f"{c['label']} ({c['gain']:.2f}×)")
                  for c in (h["best_pbit"], h["best_lowbit_pbit"])]
        rows.append(f"| {h['dataset']} | {h['memory']} | {ref['label']} {100 * ref['accuracy']:.2f} % "
                    f"| {best['label']} (b_w = {best['weight_bits']}) | {100 * best['accuracy']:.2f} % "
                    f"| **{best['gain']:.2f}×** | {chosen[0]} | {chosen[1]} | {term_name(term)}: "
                    f"{100 * limits['limiting_share']:.0f} %, ≤ {limits['gain_cap_by_term'][term]:.1f}× |")
    return rows


def run_table(run_dirs: Sequence[Path], ts: Sequence[int] = TABLE_TS) -> list[str]:
    """A Markdown table of accuracy (%) against T, one row per evaluated run, with its weight
    width, neuron and training samples."""
    rows = ["| run | b_w | neuron | s | " + " | ".join(f"T={t}" for t in ts) + " |",
            "|---|---|---|---|" + "---|" * len(ts)]
    for run in run_dirs:
        if not (Path(run) / "eval-network.json").is_file():
            continue
        config = read_json(Path(run) / "config.json")
        acc = accuracy_by_t(run)
        cells = [f"{100 * acc[t]:.2f}" if t in acc else "" for t in ts]
        rows.append(f"| {Path(run).name} | {config['model']['weight_bits']} | {config['model']['neuron']} | "
                    f"{config['train']['samples']} | " + " | ".join(cells) + " |")
    return rows


def matched_gaps(pairs: dict[int, tuple[Path, Path]]) -> list[dict]:
    """Per training s and every T both runs measured: bipolar minus unipolar accuracy (a fraction).
    ``pairs``: s -> (bipolar run, unipolar run at the matched temperature)."""
    gaps = []
    for s, (bipolar, unipolar) in sorted(pairs.items()):
        a, b = accuracy_by_t(bipolar), accuracy_by_t(unipolar)
        gaps += [{"s": s, "T": t, "bipolar": a[t], "unipolar": b[t], "gap": a[t] - b[t]} for t in sorted(set(a) & set(b))]
    return gaps


def alike(gaps: Sequence[dict], tolerance: float = 0.01) -> bool:
    """The rule for "sigmoid and tanh p-bits perform alike": |gap| within ``tolerance`` (one
    point) at every measured (s, T), and at least one measured."""
    return bool(gaps) and all(abs(g["gap"]) <= tolerance + 1e-12 for g in gaps)


def matched_rows(triples: dict[int, Sequence[Path]], headers: Sequence[str], ts: Sequence[int] = (1, 10, 50)) -> list[str]:
    """A Markdown table: per s, the accuracy (%) at ``ts`` of each run of ``triples[s]`` (one
    column per header; "not run" where a run has no evaluation)."""
    rows = ["| s | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for s, runs in sorted(triples.items()):
        cells = []
        for run in runs:
            if (Path(run) / "eval-network.json").is_file():
                acc = accuracy_by_t(run)
                cells.append(" / ".join(f"{100 * acc[t]:.2f}" if t in acc else "–" for t in ts))
            else:
                cells.append("not run")
        rows.append(f"| {s} | " + " | ".join(cells) + " |")
    return rows
