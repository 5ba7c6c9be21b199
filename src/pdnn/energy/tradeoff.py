"""Accuracy against energy: measured accuracies joined with computed energies, the Pareto front,
the cheapest configuration within a tolerance of the best 32-bit accuracy, and what one more
sample costs beside what it buys.

A *point* is one measured configuration: a run, an aggregation, a T. :func:`run_points` makes
them from run directories (``config.json`` gives the network, each ``eval-*.json`` the accuracy at
each T, :func:`pdnn.energy.network_energy` the energy); :func:`tradeoff` needs only dicts with
``energy_j`` and ``accuracy``, so it works on points from anywhere. :func:`tradeoff_runs` refuses
runs of different datasets (their accuracies are not comparable) and skips runs not yet evaluated.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Sequence

from ..checks import AGGREGATIONS, as_real, is_boolean, one_of, shown
from ..convert import build_model, model_config, replay
from ..errors import UsageError
from ..io import RunError, config_dataset, eval_files, read_config, read_eval, read_json
from ..models import ModelConfig, is_generator
from ..nn import NeuronSpec
from ..labels import run_label, series_labels
from ..provenance import warn_if_stale
from .account import LAYER_STEP_NOTE, Settings, check_settings, network_energy, next_sample_increase_pct
from .graph import Network, analyze
from .tech import FLOAT_BITS

LAYER_SERIES = " (layer)"  # after a run's name: the series of its layer-aggregation evaluation
FLOAT_BASIS = "most accurate 32-bit float deterministic run"
FALLBACK_BASIS = "most accurate point: no 32-bit float deterministic run was given"


def parse_tolerance(text) -> float:
    """An accuracy tolerance in percentage points, as a fraction: ``"1"``, ``"1%"`` and ``"1.0"``
    all give 0.01 (one point). Must be a number >= 0 and < 100."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1] if raw.endswith("%") else raw)
    except ValueError:
        raise UsageError(f"tolerance must be a number of percentage points like 1 or 1%, got {text!r}") from None
    if not math.isfinite(value) or not 0 <= value < 100:
        raise UsageError(f"tolerance must be at least 0 and below 100 percentage points, got {text!r}")
    return value / 100 + 0.0  # (-0 is 0)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(energy, accuracy)`` points no other point beats: none has lower or equal
    energy with higher accuracy, or lower energy with equal accuracy. Ordered by energy, then
    index; identical points are all kept (the reference's twin was left off the front while the
    reference, chosen as best, was marked off it too)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best or front and points[i] == points[front[-1]]:
            front.append(i)
            best = points[i][1]
    return front


def _check_point(p: dict, i: int) -> None:
    if not isinstance(p, dict):
        raise UsageError(f"point {i} must be a dict with 'energy_j' and 'accuracy', got {type(p).__name__} {shown(p)}")
    for key in ("energy_j", "accuracy"):
        if key not in p:
            raise UsageError(f"point {i} has no {key!r}")
        value = p[key]
        if not isinstance(value, (int, float)) or is_boolean(value):  # what JSON holds: a numpy float32 is not
            raise UsageError(f"point {i}: {key} must be a Python int or float (a JSON number), got "
                             f"{type(value).__name__} {shown(value)}")
        number = as_real(value)  # (None: an int too large for a float)
        if number is None or not math.isfinite(number) or number < 0:
            raise UsageError(f"point {i}: {key} must be a finite number >= 0, got {shown(value)}")
    if p["accuracy"] > 1:
        raise UsageError(f"point {i}: accuracy must be a fraction in [0, 1], got {shown(p['accuracy'])}")
    if not isinstance(p.get("float32", False), bool):  # ("no" was taken as true: the reference)
        raise UsageError(f"point {i}: float32 must be true or false, got {shown(p['float32'])}")


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
                "aggregate": a.get("aggregate"),
                "from_samples": a.get("samples"),
                "to_samples": b.get("samples"),
                "energy_increase_pct": (100.0 * (b["energy_j"] - a["energy_j"]) / a["energy_j"]
                                        if a["energy_j"] else None),
                "accuracy_gain_pct": 100.0 * (b["accuracy"] - a["accuracy"]),
                "next_sample_increase_pct": a.get("next_sample_increase_pct"),
            })
    return rows


def measured_runs(run_dirs, measured, missing: str) -> tuple[list[tuple[str, dict]], list[dict]]:
    """``(run, config)`` of the runs for which ``measured(run)`` holds, and the others as
    ``{"run", "reason"}`` (``missing`` formatted with the run) to list as skipped."""
    runs, skipped = [], []
    for run_dir in run_dirs:
        config = read_config(run_dir)
        if measured(run_dir):
            runs.append((str(run_dir), config))
        else:
            skipped.append({"run": str(run_dir), "reason": missing.format(run_dir)})
    return runs, skipped


def tradeoff(points: list[dict], tolerance: float = 0.01) -> dict:
    """Pareto front and minimum-energy choice over ``points``.

    Each point needs ``energy_j`` and ``accuracy`` (a fraction); ``float32: True`` marks a 32-bit
    float deterministic configuration. The reference is the most accurate float32 point (the
    most accurate point of all if there is none; ``reference["basis"]`` says which). ``best`` is
    the lowest-energy point whose accuracy is at least the reference's minus ``tolerance`` (an
    absolute fraction: 0.01 = one percentage point), with ``energy_gain`` = E_ref / E_best
    (``None`` if E_best is 0) and ``is_reference`` when no point within tolerance costs less than
    the reference itself.
    """
    if not isinstance(points, (list, tuple)):  # (a dict's keys were taken for the points)
        raise UsageError(f"points must be a list of dicts, got {type(points).__name__}")
    if not points:
        raise UsageError("tradeoff needs at least one point")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise UsageError(f"tolerance must be a fraction in [0, 1), got {shown(tolerance)}")
    for i, p in enumerate(points):
        _check_point(p, i)
    points = [dict(p) for p in points]
    front = pareto_front([(p["energy_j"], p["accuracy"]) for p in points])
    for i, p in enumerate(points):
        p["pareto"] = i in front
    floats = [p for p in points if p.get("float32")]
    pool, basis = (floats, FLOAT_BASIS) if floats else (points, FALLBACK_BASIS)
    ref = max(pool, key=lambda p: (p["accuracy"], -p["energy_j"]))
    floor = ref["accuracy"] - tolerance
    eligible = [p for p in points if p["accuracy"] >= floor - 1e-12]
    best = min(eligible, key=lambda p: (p["energy_j"], -p["accuracy"], p is not ref))
    gain = ref["energy_j"] / best["energy_j"] if best["energy_j"] else None
    return {
        "tolerance": tolerance,
        "tolerance_pct": 100.0 * tolerance,
        "reference": {**ref, "basis": basis},
        "best": {**best, "energy_gain": gain, "is_reference": best is ref,
                 "energy_ratio_to_reference": best["energy_j"] / ref["energy_j"] if ref["energy_j"] else None,
                 "accuracy_drop_pct": 100.0 * (ref["accuracy"] - best["accuracy"])},
        "pareto_front": front,
        "points": points,
        "marginal": marginal_costs(points),
    }


def run_network(run_dir, input_bits: int = 8) -> tuple[Network, dict]:
    """The energy structure of a run's model, from its ``config.json`` alone.

    Energy depends on layers, bit widths and neurons, never on weight values, so no checkpoint
    is read: a run whose ``checkpoint.pt`` is elsewhere (a converted run) or not yet written is
    priced all the same. A converted run's noise modules are rebuilt by replaying its
    ``convert`` spec on the freshly built model (its ``bn_stats`` land in BatchNorm buffers,
    which no energy depends on).
    """
    config = read_config(run_dir)
    spec = model_config(run_dir, config)
    return model_network(replay(build_model(run_dir, config), config, run_dir), spec.input_shape, input_bits), config


def model_network(model, input_shape, input_bits: int = 8) -> Network:
    """The energy structure of ``model`` per inference: a classifier fed ``input_bits``-bit
    inputs of ``input_shape``; a generator (VAE) per generated image, which costs its decoder
    alone, fed a float latent (the encoder is not run to generate)."""
    if is_generator(model):
        return analyze(model.decoder, (model.latent,), FLOAT_BITS)
    return analyze(model, input_shape, input_bits)


def _recorded(model: dict, name: str):
    """A model option as the run's ``config.json`` records it, or as its model was built: with
    :class:`ModelConfig`'s default where the record leaves the option out."""
    return model.get(name, getattr(ModelConfig, name))


def is_float32_config(config: dict) -> bool:
    """A run whose network is the 32-bit float deterministic baseline."""
    model = config.get("model", {})
    try:
        float_neuron = NeuronSpec.parse(_recorded(model, "neuron")).kind == "float"
    except ValueError:
        return False
    return _recorded(model, "weight_bits") == 32 and float_neuron and "convert" not in config


def run_points(run_dir, settings: Settings | None = None, input_bits: int = 8, label: str | None = None) -> list[dict]:
    """One point per (eval file, T) of a run: accuracy measured, energy computed with the eval
    file's own aggregation. ``label`` names its series (default: the config's label, else the
    folder's name)."""
    settings = check_settings(settings)
    net, config = run_network(run_dir, input_bits)
    files = eval_files(run_dir)
    if not files:
        raise RunError(f"{run_dir} has no eval-*.json; run `pdnn eval {run_dir}` first")
    label = label or run_label(run_dir, config)
    float32 = is_float32_config(config) and not net.stochastic
    points = []
    for path in files:
        document = read_eval(path)
        rows = document["results"]
        aggregate = document.get("aggregate", "network")
        try:
            one_of("aggregate", aggregate, AGGREGATIONS)
        except ValueError as err:
            raise RunError(f"{path}: {err}") from None
        s = replace(settings, aggregate=aggregate, shared_prefix=settings.shared_prefix or aggregate == "layer")
        series = label if aggregate == "network" else label + LAYER_SERIES
        for row in rows:
            t, accuracy = row["samples"], row["accuracy_mean"]
            try:
                energy = network_energy(net, t, s)["total_j"]
            except UsageError as err:  # a T evaluated but beyond pricing (2**53): which file holds it
                raise RunError(f"{path}: {err}") from None
            points.append({
                "run": str(run_dir), "series": series, "label": f"{series} T={t}", "aggregate": aggregate,
                "examples": document.get("examples"),
                "samples": t, "accuracy": accuracy, "accuracy_std": row.get("accuracy_std", 0.0),
                "energy_j": energy, "next_sample_increase_pct": next_sample_increase_pct(net, t, s, energy),
                "float32": float32, "neuron": _recorded(config["model"], "neuron"),
                "weight_bits": _recorded(config["model"], "weight_bits"),
            })
    return points


def check_one_dataset(runs: Sequence[tuple[str, dict]]) -> str | None:
    """The dataset shared by ``runs`` (``(run_dir, config)`` pairs), ``None`` if none records one.

    Accuracies on different datasets (or input shapes) cannot be judged against one reference,
    so a mix raises a ``ValueError`` listing every run with its dataset and input shape.
    """
    described = [(run, config_dataset(config), model_config(run, config).input_shape) for run, config in runs]
    datasets = {d for _, d, _ in described if d is not None}
    if len(datasets) > 1 or len({shape for _, _, shape in described}) > 1:
        listing = "; ".join(f"{run}: {d or 'dataset not recorded'}, input {'x'.join(map(str, shape))}"
                            for run, d, shape in described)
        raise UsageError(f"the runs are on different datasets or input shapes ({listing}); "
                         "a trade-off compares runs of one dataset")
    return datasets.pop() if datasets else None


def tradeoff_runs(run_dirs: Sequence, settings: Settings | None = None, tolerance: float = 0.01,
                  input_bits: int = 8) -> dict:
    """:func:`tradeoff` over every measured configuration of ``run_dirs``, all of one dataset.

    A run without any ``eval-*.json`` is skipped and listed under ``skipped`` (a study in progress
    has some); it is an error only when no run is left. A missing or broken run is an error.
    """
    settings = check_settings(settings)
    if not run_dirs:
        raise UsageError("tradeoff needs at least one run directory")
    runs, skipped = measured_runs(run_dirs, lambda d: bool(eval_files(d)), "no eval-*.json (run `pdnn eval {}`)")
    if not runs:
        raise RunError(f"none of the runs has been evaluated (no eval-*.json in {', '.join(map(str, run_dirs))}); "
                       "run `pdnn eval RUN_DIR` first")
    dataset = check_one_dataset(runs)
    warn_if_stale((run, path.name, read_json(path)) for run, _ in runs for path in eval_files(run))
    labels = series_labels(runs, suffixes=("", LAYER_SERIES))
    points = [p for run_dir, _ in runs for p in run_points(run_dir, settings, input_bits, labels[run_dir])]
    examples = {f"{p['run']} ({p['aggregate']})": p["examples"] for p in points}  # one per eval file
    if len(set(examples.values()) - {None}) > 1:  # (evaluations written before the count have none)
        warnings.warn("the runs were evaluated on different numbers of test examples ("
                      + ", ".join(f"{evaluation}: {n}" for evaluation, n in examples.items())
                      + "), so their accuracies are not measured alike")
    result = tradeoff(points, tolerance)
    result["dataset"] = dataset
    result["skipped"] = skipped
    result["notes"] = [LAYER_STEP_NOTE] if any(p["aggregate"] == "layer" for p in points) else []
    result["settings"] = {k: v for k, v in settings.to_dict().items() if k != "aggregate"}
    result["settings"]["aggregate"] = "per eval file"
    result["input_bits"] = input_bits
    result["units"] = "energy_j: J per inference; accuracy: fraction; *_pct: percent"
    return result


def _pct(value: float | None, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.3f}{suffix}"


def format_tradeoff(result: dict) -> str:
    """The points (µJ, %, on the front or not), the reference and the choice, and the marginal
    costs as text. Labels are never cut, so every row stays distinguishable."""
    points = sorted(result["points"], key=lambda p: p["energy_j"])
    mark = lambda p: "†" if p.get("aggregate") == "layer" else ""  # noqa: E731  (see LAYER_STEP_NOTE)
    width = max([len(str(p.get("label", "?"))) for p in points] + [len("configuration")])
    lines = [f"{'configuration':<{width}}  {'energy µJ':>10}  {'acc %':>7}  {'front':>5}  {'ΔE(T→T+1)/E':>13}"]
    for p in points:
        lines.append(f"{str(p.get('label', '?')):<{width}}  {p['energy_j'] * 1e6:>10.4g}  {100 * p['accuracy']:>7.2f}  "
                     f"{'*' if p['pareto'] else '':>5}  {_pct(p.get('next_sample_increase_pct'), '%') + mark(p):>13}")
    r, b = result["reference"], result["best"]
    lines += ["", f"reference ({r['basis']}): {r.get('label', '?')}, {100 * r['accuracy']:.2f} %, "
                  f"{r['energy_j'] * 1e6:.4g} µJ"]
    pct = result["tolerance_pct"]
    within = f"within {pct:g} percentage point{'' if pct == 1 else 's'} of it"
    if b.get("is_reference"):
        lines.append(f"minimum energy {within}: the reference itself (no point within tolerance costs less)")
    else:
        gain = "n/a" if b["energy_gain"] is None else f"{b['energy_gain']:.2f}x"
        lines.append(f"minimum energy {within}: {b.get('label', '?')}, {100 * b['accuracy']:.2f} %, "
                     f"{b['energy_j'] * 1e6:.4g} µJ: {gain} less energy than the reference")
    if result["marginal"]:
        series_width = max([len(str(m["series"])) for m in result["marginal"]] + [len("series")])
        lines += ["", "marginal cost of samples:",
                  f"{'series':<{series_width}}  {'T':>9}  {'energy +%':>10}  {'accuracy +pts':>14}  "
                  f"{'ΔE(T→T+1)/E':>13}"]
        for m in result["marginal"]:
            steps = f"{m['from_samples']}→{m['to_samples']}"
            lines.append(f"{str(m['series']):<{series_width}}  {steps:>9}  "
                         f"{_pct(m['energy_increase_pct']):>10}  {m['accuracy_gain_pct']:>14.2f}  "
                         f"{_pct(m['next_sample_increase_pct'], '%') + mark(m):>13}")
    lines += [f"† {note}" for note in result.get("notes", [])]
    return "\n".join(lines)
