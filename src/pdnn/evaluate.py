"""Accuracy versus the number of samples T, with mean and spread over independent repeats.

For network aggregation all samples are drawn from one *pool*: for every test batch the
network is sampled ``repeats * max(T)`` times (in chunks, folded into the batch), and repeat
``r`` at a given T averages the disjoint samples ``r*T .. (r+1)*T - 1``. The R repeats at one
T are therefore independent, as if drawn separately, while the whole curve costs
``R * max(T)`` samples instead of ``R * sum(T)``. Layer aggregation averages inside the
network, so each (T, repeat) is a separate pass.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .adaptive import StoppingRule, check_rule, rounds_taken
from .checks import AGGREGATIONS, one_of, positive_int, shown, torch_seed
from .errors import UsageError
from .nn import is_stochastic
from .progress import progress_bar
from .sampling import MAX_ROWS as SPLIT_ROWS, SampledModel, check_samples
from .tracing import evaluated

FOLD_ROWS = 1024  # rows per forward pass where samples are folded here (layer aggregation, batch-norm
# re-estimation); network evaluation draws at most this many samples per call, which the sampler
# runs SPLIT_ROWS rows at a time
BATCH = 64  # test examples per batch: at T = 1 a pass is this many rows; at 500 the reference CNN's
# first-layer activations on CIFAR-10 were 64 MB apiece and the per-epoch check in `train` peaked
# 270 MB above training itself (64 rows: 8 MB apiece, within what training already uses)
ADAPTIVE_BATCH = 500  # inputs per batch with T chosen per input: one batch's rounds run its unsettled rows


def is_deterministic(model: nn.Module) -> bool:
    return not any(is_stochastic(m) for m in model.modules())


def parse_samples(text: str, name: str = "samples", check: Callable[[int], int] = check_samples) -> list[int]:
    """``"1,2,5"`` -> ``[1, 2, 5]``, with a clear error for anything that is not T >= 1 (``name``
    says what the numbers are when they are not samples, e.g. ``"--quant-bits"``; ``check``, what
    else a T must be, e.g. priceable by the energy model)."""
    values = []
    for part in str(text).split(","):
        try:
            value = int(part)
        except ValueError:
            raise UsageError(f"{name} must be integers >= 1 separated by commas, got {text!r}") from None
        values.append(check(value) if name == "samples" else positive_int(name, value))
    if twice := sorted({v for v in values if values.count(v) > 1}):
        raise UsageError(f"{name} lists {', '.join(map(str, twice))} more than once, got {text!r}; expected each once")
    return sorted(values)


def running_sums(parts, ends: list[int]) -> dict[int, torch.Tensor]:
    """The sums (float64) of the first k samples, for k = 0 and every k of the sorted ``ends``,
    of the samples ``[n, ...]`` that ``parts`` yields in turn: the rows at ``ends`` of one cumsum
    over all the samples, bit for bit (each part's sums continue from the last), with only one
    part in memory at a time."""
    sums, total, done, next_end = {}, None, 0, 0
    for part in parts:
        part = part.double()
        if total is not None:
            part[0] += total
        cumulative = part.cumsum(0)
        while next_end < len(ends) and ends[next_end] <= done + len(part):
            sums[ends[next_end]] = cumulative[ends[next_end] - done - 1].clone()  # (a view would keep the part)
            next_end += 1
        total, done = cumulative[-1].clone(), done + len(part)
    sums[0] = torch.zeros_like(total)
    return sums


def drawn(sampler: SampledModel, x: torch.Tensor, samples: int, chunk: int):
    """``samples`` samples of ``sampler`` on ``x``, ``chunk`` per call, one call's ``[n, B, ...]`` at a time."""
    for done in range(0, samples, chunk):
        sampler.samples = min(chunk, samples - done)
        yield sampler(x)


@torch.no_grad()
def _pooled_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: list[int], repeats: int,
    seed: int, batch_size: int, prepare: Callable, progress: bool,
) -> dict[int, list[int]]:
    pool = repeats * max(samples)
    correct = {t: [0] * repeats for t in samples}
    sampler = SampledModel(model, reduce="none", seed=seed, max_rows=SPLIT_ROWS)
    bar = progress_bar(total=len(x), desc="eval", unit="img", enabled=progress, leave=False)
    chunk = min(pool, FOLD_ROWS)  # samples per call; the sampler splits the batch to SPLIT_ROWS rows
    ends = sorted({r * t for t in samples for r in range(1, repeats + 1)})  # where a repeat's samples end
    for start in range(0, len(x), batch_size):
        xb, yb = prepare(x[start : start + batch_size]), y[start : start + batch_size]
        sums = running_sums(drawn(sampler, xb, pool, chunk), ends)
        for t in samples:
            for r in range(repeats):
                correct[t][r] += hits(sums[(r + 1) * t] - sums[r * t], yb)
        bar.update(len(xb))
    bar.close()
    return correct


@torch.no_grad()
def _layer_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: list[int], repeats: int,
    seed: int, batch_size: int, prepare: Callable, progress: bool,
) -> dict[int, list[int]]:
    correct = {t: [0] * repeats for t in samples}
    bar = progress_bar(total=len(samples) * repeats, desc="eval (layer)", enabled=progress, leave=False)
    for t in samples:
        for r in range(repeats):
            sampler = SampledModel(model, t, aggregate="layer", seed=seed + 1000 * r + t)
            step = max(1, min(batch_size, FOLD_ROWS // t))
            for start in range(0, len(x), step):
                correct[t][r] += hits(sampler(prepare(x[start : start + step])), y[start : start + step])
            bar.update()
    bar.close()
    return correct


def _check_model(model, owner: str) -> None:
    """Raise a ``UsageError`` unless ``model`` is an ``nn.Module`` (``None`` met ``.eval`` first)."""
    if not isinstance(model, nn.Module):
        raise UsageError(f"{owner} evaluates an nn.Module, got {type(model).__name__}")


def check_labels(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise unless ``y`` holds one class index per input, shape ``[N]`` with ``N = len(x) > 0``:
    labels ``[N, 1]`` (a column read from a table) would be compared with every prediction by
    broadcasting, and count up to N hits each."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UsageError(f"labels must be a tensor of one class index per input, shape [N], got {shape}"
                         + (" (flatten the column)" if isinstance(y, torch.Tensor) and y.dim() == 2
                            and y.shape[1] == 1 else ""))
    if len(x) != len(y) or len(x) == 0:
        raise UsageError(f"need as many labels as inputs (> 0), got {len(x)} inputs, {len(y)} labels")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise UsageError(f"labels must be integer class indices, got {y.dtype}")
    if int(y.min()) < 0:
        raise UsageError(f"labels must be class indices >= 0, got {int(y.min())}")


def hits(scores: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows of class scores ``[B, C]`` have their largest score at their label. A NaN
    score is no prediction: its argmax is 0, so NaN rows counted as class 0 (a NaN weight scored
    the share of label 0); a label no class has could never be hit."""
    if (broken := int(scores.isnan().any(-1).sum())):
        raise UsageError(f"the model's class scores are NaN for {broken} of {len(scores)} inputs (a NaN input or "
                         "weight, or an infinite score: repeats are told apart by differences of running sums, "
                         "and inf - inf is NaN): an accuracy cannot count them")
    if scores.dim() != 2 or scores.shape[-1] < 2:  # (one score per input: its argmax is always class 0)
        raise UsageError(f"an accuracy needs class scores [B, C >= 2] to take the largest of, got "
                         f"{list(scores.shape)}")
    if int(labels.max()) >= scores.shape[-1]:
        raise UsageError(f"labels must be class indices below {scores.shape[-1]}, the model's classes; got "
                         f"{int(labels.max())}")
    return int((scores.argmax(-1) == labels).sum())


def accuracy_vs_samples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    samples: Sequence[int] = (1, 2, 5, 10, 20, 50),
    repeats: int = 3,
    aggregate: str = "network",
    seed: int = 0,
    batch_size: int = BATCH,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    progress: bool = False,
) -> list[dict]:
    """Classification accuracy of ``model`` on ``(x, y)`` for each T in ``samples``.

    ``prepare`` maps a stored batch to the model's input (e.g. uint8 -> normalised float).
    A deterministic model is evaluated once, at T = 1. The model runs in eval mode, and each of
    its modules gets its own mode back afterwards; NaN class scores, and labels that are no class
    index of the model, are refused (:func:`hits`). Returns one dict per T:
    ``{"samples", "accuracy_mean", "accuracy_std", "repeats", "accuracies"}`` with accuracies
    as fractions in [0, 1] and the standard deviation across repeats (0 for one repeat).
    """
    _check_model(model, "accuracy_vs_samples")
    if not isinstance(samples, Iterable) or isinstance(samples, str):
        raise UsageError(f"samples must be a sequence of T values such as [1, 10], got {shown(samples)}")
    samples = sorted({check_samples(t) for t in samples})
    if not samples:
        raise UsageError("samples must name at least one T >= 1, got none")
    positive_int("repeats", repeats)
    positive_int("batch_size", batch_size)  # (below 1 no batch ran: an accuracy of 0, silently)
    one_of("aggregate", aggregate, AGGREGATIONS)  # (any other name ran network aggregation)
    if aggregate == "layer":  # each (repeat, T) seeds its own sampler (see _layer_correct)
        span = 1000 * (repeats - 1) + samples[-1]
        if span >= 2**63:  # (no seed leaves room for them: the error named the seed, with an empty range)
            raise UsageError(f"repeats must leave 1000 x (repeats - 1) + the largest T below 2**63 under "
                             f"aggregate='layer', which seeds each repeat and T on its own, got {repeats} repeats")
        torch_seed("seed", seed, span=span)
    check_labels(x, y)
    if is_deterministic(model):
        samples, repeats = [1], 1
    count = _layer_correct if aggregate == "layer" else _pooled_correct
    with evaluated(model):
        correct = count(model, x, y, samples, repeats, seed, batch_size, prepare, progress)
    results = []
    for t in samples:
        accs = [c / len(x) for c in correct[t]]
        results.append(
            {
                "samples": t,
                "accuracy_mean": statistics.fmean(accs),
                "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "repeats": len(accs),
                "accuracies": accs,
            }
        )
    return results


def binomial_stderr(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` examples (for error bars in reports)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)


def format_table(document: dict) -> str:
    """A plain-text table of an evaluation document, accuracies in percent. One repeat has no
    spread to show: its std is a dash, not the 0 the JSON holds for it."""
    lines = [f"{'T':>5}  {'accuracy %':>10}  {'std %':>6}  repeats"]
    for row in document["results"]:
        std = f"{100 * row['accuracy_std']:.2f}" if row["repeats"] > 1 else "-"
        lines.append(f"{row['samples']:>5}  {100 * row['accuracy_mean']:>10.2f}  {std:>6}  {row['repeats']}")
    return "\n".join(lines)


@torch.no_grad()
def adaptive_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, rule: StoppingRule, seed: int = 0,
    batch_size: int = ADAPTIVE_BATCH, prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    priced: Callable[[torch.Tensor, torch.Tensor], dict] | None = None, progress: bool = False,
) -> dict:
    """Accuracy of ``model`` on ``(x, y)`` with T chosen per input (:mod:`pdnn.adaptive`):
    ``{"accuracy", "mean_samples", "samples_histogram": {T: inputs}, "mean_rounds", "rule"}``. A
    prior variance the rule lacks is learnt on the first batch and kept for the others
    (:func:`pdnn.adaptive.adaptive_sample`). ``priced(taken, rounds)``, given each input's T and
    rounds (looks it took part in), returns entries to add: the energy, say. Eval mode, NaN and
    labels as :func:`accuracy_vs_samples`; ``progress``: a bar over the inputs, moved as each batch
    settles."""
    _check_model(model, "adaptive_accuracy")
    check_rule(rule)
    positive_int("batch_size", batch_size)
    check_labels(x, y)
    sampler = SampledModel(model, samples="auto", seed=seed, max_rows=SPLIT_ROWS)
    sampler.stopping = rule
    correct, spent, taken, rounds, given, looks = 0, 0, [], [], rule.prior_variance is not None, set()
    with evaluated(model), progress_bar(total=len(x), desc="eval (adaptive)", unit="img", enabled=progress,
                                         leave=False) as bar:
        for start in range(0, len(x), batch_size):
            schedule = sampler.stopping.schedule()  # (the first batch may learn the prior a look at T = 1 needs)
            looks.update(schedule)
            mean = sampler(prepare(x[start : start + batch_size]))  # each round in passes of at most SPLIT_ROWS rows
            correct += hits(mean, y[start : start + batch_size])
            taken.append(sampler.last_samples)
            rounds.append(rounds_taken(sampler.last_samples, schedule))
            spent += int(sampler.last_samples.sum())
            bar.update(len(mean))
            bar.set_postfix(mean_T=f"{spent / (start + len(mean)):.2f}")
    rule = sampler.stopping
    taken, rounds = torch.cat(taken), torch.cat(rounds)
    values, counts = taken.unique(return_counts=True)
    return {
        "accuracy": correct / len(x),
        "mean_samples": taken.double().mean().item(),
        "samples_histogram": {int(v): int(c) for v, c in zip(values, counts)},
        "mean_rounds": rounds.double().mean().item(),
        "rule": {"rule": rule.rule, "error": rule.error, "max_samples": rule.max_samples,
                 "checkpoints": sorted(looks) or rule.schedule(), "prior_samples": rule.prior_samples,
                 "prior_variance": rule.prior_variance,
                 "prior_variance_learnt": not given and rule.prior_variance is not None},
    } | (priced(taken, rounds) if priced else {})
