"""Accuracy against energy: measured accuracies joined with computed energies, the Pareto front,
the cheapest configuration within a tolerance of the best 32-bit accuracy, and what one more
sample costs beside what it buys.

A *point* is one measured configuration: a run, an aggregation, a T. :func:`run_points` makes
them from run directories (``config.json`` gives the network, each ``eval-*.json`` the accuracy at
each T, :func:`pdnn.energy.network_energy` the energy); :func:`tradeoff` needs only dicts with
``energy_j`` and ``accuracy``, so it works on points from anywhere.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..models import ModelConfig
from ..nn import neuron_bits
from ..runs import RunError, eval_files, load_model, read_config, read_json
from .account import AGGREGATES, Settings, network_energy
from .graph import Network, analyze


def parse_tolerance(text) -> float:
    """``"1%"`` -> 0.01; a bare number is a fraction (``"0.01"`` -> 0.01). Must be in [0, 1)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"tolerance must be a percentage like 1% or a fraction like 0.01, got {text!r}") from None
    if not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"tolerance must be between 0% and 100%, got {text!r}")
    return value


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(energy, accuracy)`` points no other point beats: none has lower or equal
    energy with higher accuracy, or lower energy with equal accuracy. Ordered by energy; of
    identical points only the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _check_point(p: dict, i: int) -> None:
    for key in ("energy_j", "accuracy"):
        if key not in p:
            raise ValueError(f"point {i} has no {key!r}")
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"point {i}: {key} must be a finite number >= 0, got {value!r}")
    if p["accuracy"] > 1:
        raise ValueError(f"point {i}: accuracy must be a fraction in [0, 1], got {p['accuracy']!r}")


def marginal_costs(points: Sequence[dict]) -> list[dict]:
    """Per series (one run and aggregation), between consecutive measured T: the energy increase
    and the accuracy gain, both in percent, beside ``ΔE(T→T+1)/E(T)`` at the lower T."""
    series: dict[str, list[dict]] = {}
    for p in points:
        series.setdefault(p.get("series", "all"), []).append(p)
    rows = []
    for name, ps in series.items():
        ps = sorted(ps, key=lambda p: p.get("samples", 1))
        for a, b in zip(ps, ps[1:]):
            if a.get("samples") == b.get("samples"):
                continue
            rows.append({
                "series": name,
                "from_samples": a.get("samples"),
                "to_samples": b.get("samples"),
                "energy_increase_pct": (100.0 * (b["energy_j"] - a["energy_j"]) / a["energy_j"]
                                        if a["energy_j"] else None),
                "accuracy_gain_pct": 100.0 * (b["accuracy"] - a["accuracy"]),
                "next_sample_increase_pct": a.get("next_sample_increase_pct"),
            })
    return rows


def tradeoff(points: list[dict], tolerance: float = 0.01) -> dict:
    """Pareto front and minimum-energy choice over ``points``.

    Each point needs ``energy_j`` and ``accuracy`` (a fraction); ``float32: True`` marks a 32-bit
    float deterministic configuration. The reference is the most accurate float32 point (the
    most accurate point of all if there is none, which the result says). ``best`` is the
    lowest-energy point whose accuracy is at least the reference's minus ``tolerance`` (an
    absolute fraction: 0.01 = one percentage point), with ``energy_gain`` = E_ref / E_best.
    """
    if not points:
        raise ValueError("tradeoff needs at least one point")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a fraction in [0, 1), got {tolerance!r}")
    for i, p in enumerate(points):
        _check_point(p, i)
    points = [dict(p) for p in points]
    front = pareto_front([(p["energy_j"], p["accuracy"]) for p in points])
    for i, p in enumerate(points):
        p["pareto"] = i in front
    floats = [p for p in points if p.get("float32")]
    pool, basis = (floats, "most accurate 32-bit float deterministic configuration") if floats else \
        (points, "most accurate configuration (no 32-bit float deterministic run was given)")
    ref = max(pool, key=lambda p: (p["accuracy"], -p["energy_j"]))
    floor = ref["accuracy"] - tolerance
    eligible = [p for p in points if p["accuracy"] >= floor - 1e-12]
    best = min(eligible, key=lambda p: (p["energy_j"], -p["accuracy"]))
    gain = ref["energy_j"] / best["energy_j"] if best["energy_j"] else None
    return {
        "tolerance": tolerance,
        "tolerance_pct": 100.0 * tolerance,
        "reference": {**ref, "basis": basis},
        "best": {**best, "energy_gain": gain,
                 "energy_ratio_to_reference": best["energy_j"] / ref["energy_j"] if ref["energy_j"] else None,
                 "accuracy_drop_pct": 100.0 * (ref["accuracy"] - best["accuracy"])},
        "pareto_front": front,
        "points": points,
        "marginal": marginal_costs(points),
    }


def run_network(run_dir, input_bits: int = 8) -> tuple[Network, dict]:
    """The energy structure of a run's model, from its ``config.json`` (weights are not needed
    unless the run was converted, whose noise modules are rebuilt by loading it)."""
    config = read_config(run_dir)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (TypeError, KeyError) as err:
        raise RunError(f"{Path(run_dir) / 'config.json'}: bad 'model' section ({err})") from err
    model = load_model(run_dir)[0] if "convert" in config else model_config.build()
    return analyze(model, model_config.input_shape, input_bits), config


def is_float32_config(config: dict) -> bool:
    """A run whose network is the 32-bit float deterministic baseline."""
    model = config.get("model", {})
    try:
        float_neuron = neuron_bits(model.get("neuron", "")) == 32
    except ValueError:
        return False
    return model.get("weight_bits") == 32 and float_neuron and "convert" not in config


def run_points(run_dir, settings: Settings | None = None, input_bits: int = 8) -> list[dict]:
    """One point per (eval file, T) of a run: accuracy measured, energy computed with the eval
    file's own aggregation."""
    settings = settings or Settings()
    net, config = run_network(run_dir, input_bits)
    files = eval_files(run_dir)
    if not files:
        raise RunError(f"{run_dir} has no eval-*.json; run `pdnn eval {run_dir}` first")
    label = config.get("label") or Path(run_dir).name
    float32 = is_float32_config(config) and not net.stochastic
    points = []
    for path in files:
        document = read_json(path)
        rows = document.get("results") if isinstance(document, dict) else None
        if not isinstance(rows, list) or not rows:
            raise RunError(f"{path} has no 'results' list")
        aggregate = document.get("aggregate", "network")
        if aggregate not in AGGREGATES:
            raise RunError(f"{path}: unknown aggregate {aggregate!r}; expected network or layer")
        s = replace(settings, aggregate=aggregate)
        series = label if aggregate == "network" else f"{label} (layer)"
        for row in rows:
            try:
                t, accuracy = row["samples"], row["accuracy_mean"]
            except (KeyError, TypeError):
                raise RunError(f"{path}: each result needs 'samples' and 'accuracy_mean', got {row!r}") from None
            energy = network_energy(net, t, s)["total_j"]
            following = network_energy(net, t + 1, s)["total_j"]
            points.append({
                "run": str(run_dir), "series": series, "label": f"{series} T={t}", "aggregate": aggregate,
                "samples": t, "accuracy": accuracy, "accuracy_std": row.get("accuracy_std", 0.0),
                "energy_j": energy, "next_sample_increase_pct": 100.0 * (following - energy) / energy,
                "float32": float32, "neuron": config["model"].get("neuron"),
                "weight_bits": config["model"].get("weight_bits"),
            })
    return points


def tradeoff_runs(run_dirs: Sequence, settings: Settings | None = None, tolerance: float = 0.01,
                  input_bits: int = 8) -> dict:
    """:func:`tradeoff` over every measured configuration of ``run_dirs``."""
    settings = settings or Settings()
    if not run_dirs:
        raise ValueError("tradeoff needs at least one run directory")
    points = [p for run_dir in run_dirs for p in run_points(run_dir, settings, input_bits)]
    result = tradeoff(points, tolerance)
    result["settings"] = {k: v for k, v in settings.to_dict().items() if k != "aggregate"}
    result["settings"]["aggregate"] = "per eval file"
    result["input_bits"] = input_bits
    result["units"] = "energy_j: J per inference; accuracy: fraction; *_pct: percent"
    return result


def format_tradeoff(result: dict) -> str:
    """The points (µJ, %, on the front or not), the choice, and the marginal costs as text."""
    lines = [f"{'configuration':<34} {'energy µJ':>10} {'acc %':>7} {'front':>5} {'ΔE(T→T+1)/E':>12}"]
    for p in sorted(result["points"], key=lambda p: p["energy_j"]):
        lines.append(f"{p.get('label', '?')[:34]:<34} {p['energy_j'] * 1e6:>10.4g} {100 * p['accuracy']:>7.2f} "
                     f"{'*' if p['pareto'] else '':>5} {p.get('next_sample_increase_pct', float('nan')):>11.3f}%")
    r, b = result["reference"], result["best"]
    lines += ["", f"reference ({r['basis']}): {r.get('label', '?')}, {100 * r['accuracy']:.2f} %, "
                  f"{r['energy_j'] * 1e6:.4g} µJ",
              f"minimum energy within {result['tolerance_pct']:g} % of it: {b.get('label', '?')}, "
              f"{100 * b['accuracy']:.2f} %, {b['energy_j'] * 1e6:.4g} µJ"
              + (f" ({b['energy_gain']:.2f}x less energy)" if b["energy_gain"] else "")]
    if result["marginal"]:
        lines += ["", "marginal cost of samples:",
                  f"{'series':<28} {'T':>9} {'energy +%':>10} {'accuracy +pts':>14} {'ΔE(T→T+1)/E':>12}"]
        for m in result["marginal"]:
            energy = "-" if m["energy_increase_pct"] is None else f"{m['energy_increase_pct']:.3f}"
            nxt = m["next_sample_increase_pct"]
            lines.append(f"{m['series'][:28]:<28} {str(m['from_samples']) + '→' + str(m['to_samples']):>9} "
                         f"{energy:>10} {m['accuracy_gain_pct']:>14.2f} "
                         f"{('-' if nxt is None else f'{nxt:.3f}%'):>12}")
    return "\n".join(lines)
