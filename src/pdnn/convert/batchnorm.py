"""BatchNorm statistics under sampling: re-estimating the running statistics behind the noise.

In a converted network, every BatchNorm after the first stochastic module sees inputs of another
mean and variance than those it was trained with; :func:`recalibrate_batchnorm` measures them
under sampling on held-out training examples and sets its running statistics to them: the only
numbers of a network a conversion may change.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..checks import positive_int
from ..errors import UsageError
from ..evaluate import FOLD_ROWS
from ..nn import is_stochastic
from ..sampling import SampledModel


class _Stop(Exception):
    """Raised by a hook once the statistics it collects are in, to skip the rest of a pass."""


def _identity(x):
    return x


def batchnorms_after_noise(model: nn.Module, x: torch.Tensor) -> list[tuple[str, _BatchNorm]]:
    """BatchNorm layers that run after the first stochastic module on input ``x`` (in order):
    those whose input statistics a conversion changes."""

    order: list[tuple[str, nn.Module]] = []
    handles = [m.register_forward_pre_hook(lambda mod, inp, name=n: order.append((name, mod)))
               for n, m in model.named_modules() if isinstance(m, _BatchNorm) or is_stochastic(m)]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            SampledModel(model, 1, seed=0)(x)  # seeded: the global random stream is left alone
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    first = next((i for i, (_, m) in enumerate(order) if is_stochastic(m)), len(order))
    result, seen = [], set()
    for name, m in order[first:]:
        if isinstance(m, _BatchNorm) and id(m) not in seen and m.running_mean is not None:
            seen.add(id(m))
            result.append((name, m))
    return result


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    x: torch.Tensor,
    samples: int = 4,
    batch_size: int = 500,
    prepare: Callable[[torch.Tensor], torch.Tensor] = _identity,
    seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """Re-estimate, in place, the running statistics of the BatchNorms behind the noise.

    A converted network's activations are bits (or noisy values) where the trained network had
    graded ones, so the input of every later BatchNorm has a different mean and, above all, a
    larger variance than the running statistics it was trained with. This sets each such
    BatchNorm's ``running_mean`` / ``running_var`` to the per-channel mean and (population)
    variance of its input under sampling (``samples`` samples of every example of ``x``,
    network aggregation, generator seeded with ``seed``), one layer at a time in execution order
    with the layers before it already updated -- exactly the statistics it sees at evaluation.
    No weight, bias or affine parameter changes; the model is left in eval mode.

    Args:
        model: a converted (stochastic) model; modified in place.
        x: examples (uint8 or float) -- held-out *training* examples, never test data.
        prepare: maps a batch of ``x`` to the model's input (e.g. ``Dataset.normalize``).

    Returns:
        ``{name: {"running_mean": [...], "running_var": [...]}}``, JSON-serialisable; pass it as
        ``to_sampled(..., bn_stats=...)`` to rebuild the same model.
    """
    if len(x) == 0:
        raise UsageError("recalibrate_batchnorm needs at least one example")
    positive_int("bn_samples (samples per example for recalibrating batch norms)", samples)
    positive_int("batch_size", batch_size)
    model.eval()
    layers = batchnorms_after_noise(model, prepare(x[:2]))
    step = max(1, min(batch_size, FOLD_ROWS // samples))
    stats: dict[str, dict[str, list[float]]] = {}
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for _, bn in layers]  # (restored on a refusal)
    for name, bn in layers:
        moments = {"n": 0, "sum": 0.0, "sumsq": 0.0, "low": None, "high": None}

        def collect(module, inputs, moments=moments):
            z = inputs[0].detach().double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
            moments["n"] += z.shape[1]
            moments["sum"] = moments["sum"] + z.sum(1)
            moments["sumsq"] = moments["sumsq"] + (z * z).sum(1)
            # each channel's extremes: one of one value has a variance of 0, which its sums leave at 1e-17
            low, high = z.amin(1), z.amax(1)
            moments["low"] = low if moments["low"] is None else torch.minimum(moments["low"], low)
            moments["high"] = high if moments["high"] is None else torch.maximum(moments["high"], high)
            raise _Stop

        handle = bn.register_forward_pre_hook(collect)
        sampler = SampledModel(model, samples, reduce="none", seed=seed)  # the same draws for every layer
        try:
            for start in range(0, len(x), step):
                try:
                    sampler(prepare(x[start:start + step]))
                except _Stop:
                    pass
        finally:
            handle.remove()
        if moments["n"] == 0:
            continue
        problem = None
        if moments["n"] == 1:  # (one example, one sample, one position: a BatchNorm1d's variance would be 0)
            problem = (f"recalibrate_batchnorm needs two values per channel at least, and {name} sees one (1 example "
                       "x 1 sample): their variance would be 0, by which the batch norm divides; give more examples "
                       "or samples")
        elif not torch.isfinite(moments["sum"] + moments["sumsq"]).all():  # (one NaN made every statistic NaN)
            problem = (f"recalibrate_batchnorm: {name} sees values that are not finite (NaN or inf), from the examples "
                       "or the model, and their mean and variance would be too; give finite examples")
        if problem:
            for (_, changed), (mean, var) in zip(layers, before):
                changed.running_mean.copy_(mean)
                changed.running_var.copy_(var)
            raise UsageError(problem)
        mean = moments["sum"] / moments["n"]
        var = (moments["sumsq"] / moments["n"] - mean * mean).clamp_min(0.0)
        if (lost := int(((moments["low"] == moments["high"]) & (bn.running_var.double() > bn.eps)).sum())):
            # (a channel at 0 before, a dead one, is not said)
            warnings.warn(f"recalibrate_batchnorm: {lost} of the {len(var)} channels of {name} had one value in all "
                          f"{moments['n']} they saw (examples x samples x positions), so their running variance is "
                          f"now 0 (to rounding) and the batch norm divides them by sqrt(eps = {bn.eps:g}); give more "
                          "examples or samples", stacklevel=2)
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        stats[name] = {"running_mean": bn.running_mean.tolist(), "running_var": bn.running_var.tolist()}
    return stats
