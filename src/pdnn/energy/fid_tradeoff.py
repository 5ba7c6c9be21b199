"""Image quality against energy for generator runs: the trade-off ranked by a Fréchet distance.

The same analysis as :mod:`.tradeoff`, with the score a distance (lower is better) read from each
run's ``fid-clf.json`` or ``fid.json`` (written by ``pdnn fid``) instead of an accuracy. The
energy is that of one generated image: the decoder at T samples (:func:`.tradeoff.run_network`).
Distances are comparable only when measured with one feature extractor on the same real images,
so runs measured differently are refused. The tolerance is in the distance's own units.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from ..checks import positive_int, shown
from ..errors import UsageError
from ..io import RunError, pyplot, read_json, result_rows, save_figure
from .account import Settings, check_settings, network_energy
from ..labels import figure_text, run_label, series_labels
from ..provenance import warn_if_stale
from .tradeoff import check_one_dataset, is_float32_config, measured_runs, pareto_front, run_network

METRIC_FILES = ("fid-clf.json", "fid.json")


def fid_file(run_dir) -> Path | None:
    """The run's distance file (``fid-clf.json`` first), or ``None``."""
    for name in METRIC_FILES:
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def fid_points(run_dir, settings: Settings, input_bits: int = 8,
               label: str | None = None) -> tuple[list[dict], dict, dict]:
    """One point per T of the run's distance file; returns ``(points, measurement, features)``:
    the measurement as recorded (metric, feature source, real images, n: all but the source must
    match across compared runs) and what identifies its features (see :func:`features_differ`).
    ``label`` names its series (default: the config's label, else the folder's name)."""
    net, config = run_network(run_dir, input_bits)
    path = fid_file(run_dir)
    document = read_json(path)
    rows = result_rows(document, path)
    label = label or run_label(run_dir, config)
    float32 = is_float32_config(config) and not net.stochastic
    points = []
    for row in rows:
        try:
            t, mean, std = positive_int("samples (T)", row["samples"]), float(row["mean"]), float(row.get("std", 0.0))
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(f"{path}: each result needs an integer 'samples' >= 1 and numbers 'mean' and 'std', "
                           f"got {row!r} ({err})") from None
        if not all(math.isfinite(v) and v >= 0 for v in (mean, std)):
            raise RunError(f"{path}: a distance and its std must be finite numbers >= 0, got mean {row['mean']!r}, "
                           f"std {row.get('std')!r}")
        points.append({"run": str(run_dir), "series": label, "label": f"{label} T={t}", "samples": t,
                       "fid": mean, "fid_std": std, "repeats": row.get("repeats"),
                       "energy_j": network_energy(net, t, settings)["total_j"], "float32": float32,
                       "neuron": config["model"].get("neuron"), "weight_bits": config["model"].get("weight_bits")})
    measured = {k: document.get(k) for k in ("metric", "feature_source", "real", "n")}
    weights = document.get("feature_weights")
    return points, measured, {"sha256": weights.get("sha256") if isinstance(weights, dict) else None,
                              "source": os.path.normpath(str(document.get("feature_source"))),
                              "dim": document.get("feature_dim")}


def features_differ(features: dict) -> bool:
    """Whether the runs' distances were computed in different features: by the feature network's
    weights (their sha256) where every run recorded them -- two classifiers saved under one folder
    name differ -- else by the feature source's path (normalised: ``./clf`` is ``clf``), as
    records made before the weights were recorded allow; and by their number where recorded."""
    by = "sha256" if all(f["sha256"] for f in features.values()) else "source"
    dims = {f["dim"] for f in features.values() if f["dim"] is not None}
    return len({f[by] for f in features.values()}) > 1 or len(dims) > 1


def fid_tradeoff_runs(run_dirs: Sequence, settings: Settings | None = None, tolerance: float = 1.0,
                      input_bits: int = 8) -> dict:
    """Pareto front of (energy, distance) over the runs' measured T, the reference (the best
    32-bit float deterministic decoder, else the best point), and the cheapest point whose
    distance is at most the reference's plus ``tolerance``."""
    settings = check_settings(settings)
    if not run_dirs:
        raise UsageError("tradeoff needs at least one run directory")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        raise UsageError(f"tolerance must be a distance >= 0, got {shown(tolerance)}")
    runs, skipped = measured_runs(run_dirs, fid_file, "no fid-clf.json or fid.json (run `pdnn fid {}`)")
    if not runs:
        raise RunError("none of the generator runs has been measured; run `pdnn fid RUN_DIR` first")
    dataset = check_one_dataset(runs)
    warn_if_stale((run, fid_file(run).name, read_json(fid_file(run))) for run, _ in runs)
    points, measurements, features, labels = [], {}, {}, series_labels(runs)
    for run_dir, _ in runs:
        run_points, measurements[run_dir], features[run_dir] = fid_points(run_dir, settings, input_bits,
                                                                        labels[run_dir])
        points += run_points
    alike = {tuple((k, v) for k, v in m.items() if k != "feature_source") for m in measurements.values()}
    if len(alike) > 1 or features_differ(features):
        listing = "; ".join(f"{run}: {m['metric']} of {m['feature_source']} ({features[run]['dim']} features, "
                            f"weights sha256 {(features[run]['sha256'] or 'not recorded')[:12]}), n={m['n']}"
                            for run, m in measurements.items())
        raise UsageError(f"the runs' distances were measured differently ({listing}); compare runs measured alike")
    front = pareto_front([(p["energy_j"], -p["fid"]) for p in points])
    for i, p in enumerate(points):
        p["pareto"] = i in front
    floats = [p for p in points if p["float32"]]
    ref = min(floats or points, key=lambda p: (p["fid"], p["energy_j"]))
    eligible = [p for p in points if p["fid"] <= ref["fid"] + tolerance + 1e-12]
    best = min(eligible, key=lambda p: (p["energy_j"], p["fid"], p is not ref))
    measured = next(iter(measurements.values()))
    return {
        "metric": measured["metric"], "lower_is_better": True, "measurement": measured, "dataset": dataset,
        "tolerance": tolerance,
        "reference": {**ref, "basis": "best 32-bit float deterministic decoder" if floats else
                      "best point: no 32-bit float deterministic decoder was given"},
        "best": {**best, "is_reference": best is ref,
                 "energy_gain": ref["energy_j"] / best["energy_j"] if best["energy_j"] else None,
                 "fid_increase": best["fid"] - ref["fid"]},
        "pareto_front": front, "points": points, "skipped": skipped,
        "settings": settings.to_dict(), "input_bits": input_bits,
        "units": "energy_j: J per generated image; fid: the measurement's distance (lower is better)",
    }


def format_fid_tradeoff(result: dict) -> str:
    metric = result["metric"]
    points = sorted(result["points"], key=lambda p: p["energy_j"])
    width = max([len(p["label"]) for p in points] + [len("configuration")])
    lines = [f"{'configuration':<{width}}  {'energy µJ':>10}  {metric:>9}  {'std':>7}  {'front':>5}"]
    for p in points:
        lines.append(f"{p['label']:<{width}}  {p['energy_j'] * 1e6:>10.4g}  {p['fid']:>9.3f}  {p['fid_std']:>7.3f}  "
                     f"{'*' if p['pareto'] else '':>5}")
    r, b = result["reference"], result["best"]
    lines += ["", f"reference ({r['basis']}): {r['label']}, {metric} {r['fid']:.3f}, {r['energy_j'] * 1e6:.4g} µJ"]
    if b["is_reference"]:
        lines.append(f"minimum energy within {result['tolerance']:g} of it: the reference itself")
    else:
        gain = "n/a" if b["energy_gain"] is None else f"{b['energy_gain']:.2f}x"
        lines.append(f"minimum energy within {result['tolerance']:g} of it: {b['label']}, {metric} {b['fid']:.3f}, "
                     f"{b['energy_j'] * 1e6:.4g} µJ: {gain} less energy than the reference")
    return "\n".join(lines)


def plot_fid_tradeoff(result: dict, out, title: str | None = None) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[dict]] = {}
    for p in result["points"]:
        series.setdefault(p["series"], []).append(p)
    colors = plt.get_cmap("tab20" if len(series) > 10 else "tab10")  # (tab10 gave an 11th decoder the first's)
    for k, (name, ps) in enumerate(sorted(series.items())):
        ps = sorted(ps, key=lambda p: p["samples"])
        ax.errorbar([p["energy_j"] * 1e6 for p in ps], [p["fid"] for p in ps], yerr=[p["fid_std"] for p in ps],
                    marker="o", ms=3, label=figure_text(name), capsize=2, color=colors(k % colors.N))
    front = sorted((result["points"][i] for i in result["pareto_front"]), key=lambda p: p["energy_j"])
    ax.step([p["energy_j"] * 1e6 for p in front], [p["fid"] for p in front], where="post", color="k",
            linewidth=0.8, linestyle="--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("energy per generated image (µJ)")
    ax.set_ylabel(f"{result['metric']} (lower is better)")
    ax.set_title(figure_text(title) if title else f"{result['metric']} vs energy")
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4)
    fig.tight_layout()
    return save_figure(fig, out, dpi=150)
