"""Calibration: choosing a conversion's noise scale (β for pbit) by a sweep on held-out examples.

A global sweep over the values, chosen by :data:`CRITERION`, then optionally one coordinate-wise
pass layer by layer (:data:`PER_LAYER_RULE`); :func:`format_calibration` prints the result.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..checks import positive_int, shown
from ..errors import UsageError
from ..evaluate import accuracy_vs_samples, binomial_stderr
from ..sampling import check_samples
from .batchnorm import _identity, recalibrate_batchnorm
from .methods import DEFAULT_VALUES, parameter_of
from .rewrite import _check_value, _select, conversion_spec, to_sampled
from .sites import _discover


CRITERION = (
    "held-out accuracy at the target T; among the values within one binomial standard error of the best "
    "at the target T, the one with the highest accuracy averaged over all swept T (which favours "
    "values that already help at small T); ties go to the earlier value in the sweep"
)
PER_LAYER_RULE = (
    "after the global sweep, one coordinate-wise pass over the converted activations in execution order: each "
    "one's value is swept over the same values with the others held at their current ones and chosen by the "
    "same criterion among the values no worse at the target T than its current one, so that every step can only "
    "raise the held-out accuracy at the target T"
)


@dataclass
class _Trials:
    """Measures conversions of one model on one set of held-out examples, always the same way.

    A trial converts ``model`` with a spec, re-estimates the BatchNorm statistics behind the noise
    (if ``bn_samples``) and measures the accuracy for every T in ``samples``. The seed and the
    examples are fixed, so a conversion always gives the same numbers: each is measured once
    (the per-layer pass meets the global choice again in every layer's sweep).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    names: list[str]  # the converted activations, in execution order
    samples: list[int]
    target: int
    repeats: int
    seed: int
    batch_size: int
    prepare: Callable[[torch.Tensor], torch.Tensor]
    bn_samples: int | None  # None: keep the trained BatchNorm statistics
    progress: bool
    measured: dict = field(default_factory=dict)

    def measure(self, spec: dict, label: str) -> tuple[dict, dict | None]:
        """``(row, bn_stats)`` of the conversion ``spec``: the accuracies (``results`` as in
        ``eval-*.json``, ``accuracy_at_target``, ``mean_accuracy``) and its re-estimated
        BatchNorm statistics (``None`` without ``bn_samples``)."""
        value = spec[parameter_of(spec["method"])]
        # the value of every converted activation: a per-layer dict equal everywhere is the number
        per_layer = tuple(value[n] if isinstance(value, dict) else value for n in self.names)
        if per_layer not in self.measured:
            converted = to_sampled(self.model, **spec)
            bn_stats = None
            if self.bn_samples:
                bn_stats = recalibrate_batchnorm(converted, self.x, self.bn_samples, self.batch_size, self.prepare,
                                                 self.seed)
            results = accuracy_vs_samples(converted, self.x, self.y, self.samples, self.repeats, seed=self.seed,
                                          batch_size=self.batch_size, prepare=self.prepare)
            by_t = {r["samples"]: r["accuracy_mean"] for r in results}
            row = {"results": results, "accuracy_at_target": by_t[self.target],
                   "mean_accuracy": sum(by_t.values()) / len(by_t)}
            self.measured[per_layer] = row, bn_stats
            if self.progress:
                print(f"  {label}: " + "  ".join(f"T={t}: {100 * a:.2f}%" for t, a in by_t.items()), flush=True)
        row, bn_stats = self.measured[per_layer]
        return dict(row), bn_stats


def _sweep_values(method: str, values: Sequence[float] | None) -> list[float]:
    """The values a calibration tries (default :data:`DEFAULT_VALUES`), each checked."""
    key = parameter_of(method)
    values = [_check_value(key, v, f"{key} in the calibration sweep")
              for v in (DEFAULT_VALUES[method] if values is None else values)]
    if not values:
        raise UsageError("calibration needs at least one value to try")
    if twice := sorted({v for v in values if values.count(v) > 1}):  # a row measured twice, under one name
        raise UsageError(f"the calibration sweep lists {key} = {', '.join(f'{v:g}' for v in twice)} more than once, "
                         f"got {values}; expected each once")
    return values


def _sweep(trials: _Trials, method: str, layers, values: list[float], current: dict | None = None,
           name: str | None = None) -> tuple[list[dict], list[dict | None]]:
    """Measure every value of the sweep: on all layers at once, or (``name``) on one layer with the
    others at their ``current`` values. Returns the rows (``{key: value, ...}``) and BatchNorm stats."""
    key = parameter_of(method)
    rows, stats = [], []
    for v in values:
        setting = v if name is None else {**current, name: v}
        label = f"{key} = {v:g}" if name is None else f"{name}: {key} = {v:g}"
        row, bn_stats = trials.measure(conversion_spec(method, **{key: setting}, layers=layers), label)
        rows.append({key: v, **row})
        stats.append(bn_stats)
    return rows, stats


def _choose(rows: list[dict], n: int, floor: float = -math.inf) -> tuple[int, float]:
    """The index of the row :data:`CRITERION` picks among those with at least ``floor`` accuracy at
    the target T, and the tolerance (one binomial standard error of the best accuracy at the
    target T, on ``n`` examples). Marks every row's ``within_tolerance``."""
    best = max(row["accuracy_at_target"] for row in rows)
    tolerance = binomial_stderr(best, n)
    for row in rows:
        row["within_tolerance"] = row["accuracy_at_target"] >= best - tolerance
    # the best row always qualifies (floor is one of the rows' accuracies); max() keeps the first of ties
    candidates = [i for i, row in enumerate(rows) if row["within_tolerance"] and row["accuracy_at_target"] >= floor]
    return max(candidates, key=lambda i: rows[i]["mean_accuracy"]), tolerance


def _at_edge(values: list[float], chosen: float) -> bool:
    """Whether ``chosen`` is the smallest or largest of at least three values: the optimum may lie outside."""
    return len(set(values)) >= 3 and chosen in (min(values), max(values))


def _per_layer_pass(trials: _Trials, method: str, layers, values: list[float], start: float, row: dict) -> dict:
    """The coordinate-wise pass of :data:`PER_LAYER_RULE`, from ``start`` on every layer (measured as
    ``row``). Returns its record: every layer's sweep and choice, the chosen ``{name: value}`` and
    its accuracies."""
    current = {name: start for name in trials.names}
    record = []
    for name in trials.names:
        sweep, _ = _sweep(trials, method, layers, values, current, name)
        i, tolerance = _choose(sweep, len(trials.y), floor=row["accuracy_at_target"])
        current[name], row = values[i], sweep[i]
        record.append({"name": name, "sweep": sweep, "chosen": values[i], "tolerance": tolerance,
                       "at_edge": _at_edge(values, values[i])})
    return {"rule": PER_LAYER_RULE, "layers": record, "chosen": current, "results": row["results"],
            "accuracy_at_target": row["accuracy_at_target"], "mean_accuracy": row["mean_accuracy"]}


def calibrate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    method: str = "gaussian",
    values: Sequence[float] | None = None,
    samples: Sequence[int] = (1, 2, 5, 10, 20),
    target: int | None = None,
    layers: str | Sequence[str] = "hidden",
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 500,
    prepare: Callable[[torch.Tensor], torch.Tensor] = _identity,
    recalibrate_bn: bool = False,
    bn_samples: int = 4,
    progress: bool = False,
    per_layer: bool = False,
) -> dict:
    """Choose the noise scale (β for pbit) of a conversion by a sweep on held-out examples.

    For every value the model is converted (``to_sampled``), optionally its BatchNorm
    statistics are re-estimated on the same examples (``recalibrate_bn``; images only, no
    labels), and its accuracy is measured for every T in ``samples`` (network aggregation,
    ``repeats`` independent repeats, seed ``seed``). The choice follows :data:`CRITERION`:
    accuracy at ``target`` (default: the largest T), then the mean over the swept T. A choice at
    the edge of a sweep of three or more values is warned about (the optimum may lie outside).

    ``per_layer`` then refines the choice one activation at a time (:data:`PER_LAYER_RULE`), so
    that each may end with its own value; the result is never worse at ``target`` on these
    examples than the global choice (it costs up to ``len(layers) × (len(values) − 1)`` more trials).

    ``x, y`` must be held-out *training* examples (the caller's split; :func:`convert_run` prefers
    training examples the run never saw); test data must never reach this function.

    Returns a JSON-serialisable document: the sweep (accuracy vs T per value), the accuracy of
    the deterministic model on the same examples, the chosen value (``at_edge`` if it is the
    smallest or largest), the per-layer pass (``per_layer``, or ``None``) and the resulting
    ``spec``: the keyword arguments of :func:`to_sampled` (a per-layer ``{name: value}`` after
    ``per_layer``), with ``bn_stats`` when ``recalibrate_bn`` -- it replays the measured conversion.
    """
    key = parameter_of(method)
    values = _sweep_values(method, values)
    layers = conversion_spec(method, layers=layers)["layers"]
    if isinstance(samples, (str, bytes)) or not hasattr(samples, "__iter__"):
        raise UsageError(f"samples must be a list of T values >= 1, got {shown(samples)}")
    samples = sorted({check_samples(t) for t in samples})
    if not samples and target is None:
        raise UsageError("samples must name at least one T >= 1 (or give target), got none")
    positive_int("batch_size", batch_size)
    target = max(samples) if target is None else positive_int("target (the T the scale is chosen at)", target)
    samples = sorted({*samples, target})
    if recalibrate_bn:
        positive_int("bn_samples (samples per example for recalibrating batch norms)", bn_samples)
    names = [s.name for s in _select(_discover(model).sites, layers)]
    trials = _Trials(model, x, y, names, samples, target, repeats, seed, batch_size, prepare,
                     bn_samples if recalibrate_bn else None, progress)
    was_training = model.training
    try:
        sweep, stats = _sweep(trials, method, layers, values)  # (first: a model it cannot convert is named at once)
        deterministic = accuracy_vs_samples(model, x, y, [1], 1, seed=seed, batch_size=batch_size,
                                            prepare=prepare)[0]["accuracy_mean"]
        i, tolerance = _choose(sweep, len(y))
        refined, setting, final, bn_stats = None, values[i], sweep[i], stats[i]
        if per_layer:
            refined = _per_layer_pass(trials, method, layers, values, values[i], sweep[i])
            setting = dict(refined["chosen"])
            final, bn_stats = trials.measure(conversion_spec(method, **{key: setting}, layers=layers),
                                             "per layer")  # measured during the pass: looked up, not redone
    finally:
        model.train(was_training)
    document = {
        "method": method,
        "parameter": key,
        "layers": layers,
        "values": values,
        "samples": samples,
        "target_samples": target,
        "repeats": repeats,
        "seed": seed,
        "examples": len(y),
        "recalibrate_bn": bool(recalibrate_bn),
        "bn_samples": bn_samples if recalibrate_bn else None,
        "criterion": CRITERION,
        "tolerance": tolerance,
        "deterministic_accuracy": deterministic,
        "sweep": sweep,
        "chosen": values[i],
        "at_edge": _at_edge(values, values[i]),
        "per_layer": refined,
        "chosen_beats_deterministic": final["accuracy_at_target"] > deterministic,
        "spec": conversion_spec(method, **{key: setting}, layers=layers, bn_stats=bn_stats),
    }
    _warn_at_edge(document)
    return document


def _warn_at_edge(document: dict) -> None:
    key, values = document["parameter"], document["values"]
    edges = [f"{key} = {document['chosen']:g}"] if document["at_edge"] else []
    if document["per_layer"]:
        edges += [f"{key} of {r['name']} = {r['chosen']:g}" for r in document["per_layer"]["layers"] if r["at_edge"]]
    if edges:
        warnings.warn(f"calibration chose {', '.join(edges)}: at the edge of the sweep ({min(values):g} to "
                      f"{max(values):g}); the best value may lie outside it, widen --values", stacklevel=3)


def format_calibration(document: dict) -> str:
    """A plain-text table of a calibration sweep (and its per-layer pass), accuracies in percent."""
    key, samples = document["parameter"], document["samples"]
    lines = [f"{key:>8}  " + "  ".join(f"{'T=' + str(t):>7}" for t in samples) + "   mean"]
    for row in document["sweep"]:
        by_t = {r["samples"]: r["accuracy_mean"] for r in row["results"]}
        mark = " <- chosen" if row[key] == document["chosen"] else ""
        lines.append(f"{row[key]:>8g}  " + "  ".join(f"{100 * by_t[t]:>7.2f}" for t in samples)
                     + f"  {100 * row['mean_accuracy']:>5.2f}{mark}")
    refined = document.get("per_layer")
    if refined:
        lines.append(f"per layer, accuracy (%) at T={document['target_samples']} for each {key} (* kept):")
        for layer in refined["layers"]:
            lines.append(f"{layer['name']:>8}  " + "  ".join(
                f"{row[key]:g}: {100 * row['accuracy_at_target']:.2f}{'*' if row[key] == layer['chosen'] else ''}"
                for row in layer["sweep"]))
        by_t = {r["samples"]: r["accuracy_mean"] for r in refined["results"]}
        lines.append(f"{'result':>8}  " + "  ".join(f"{100 * by_t[t]:>7.2f}" for t in samples)
                     + f"  {100 * refined['mean_accuracy']:>5.2f}")
    lines.append(f"deterministic: {100 * document['deterministic_accuracy']:.2f}% "
                 f"({document['examples']} held-out training examples)")
    return "\n".join(lines)
