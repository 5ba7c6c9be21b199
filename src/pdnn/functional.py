"""Pure functions for p-bit sampling, quantisation and straight-through gradients.

A p-bit is a binary stochastic neuron whose *mean* is a deterministic activation:

* bipolar:  ``b = sign(tanh(beta*x) - u)``,  ``u ~ U(-1, 1)``,  ``b in {-1, +1}``,
  ``P(b = +1) = (1 + tanh(beta*x)) / 2`` so ``E[b] = tanh(beta*x)``;
* unipolar: ``b = 1[sigmoid(beta*x) > u]``, ``u ~ U(0, 1)``, ``b in {0, 1}``,
  ``E[b] = sigmoid(beta*x)``.

Gradients flow through the random bit by a straight-through estimator (STE). The forward value
is always exactly the bit; the backward pass uses the derivative of a *surrogate*:

* ``"mean"``: the mean function (``tanh(beta*x)`` or ``sigmoid(beta*x)``) -- the default;
* ``"identity"``: ``x`` itself (gradient 1);
* ``"clipped"``: ``clamp(x, -1, 1)`` (gradient ``1[|x| <= 1]``).

For p-bits the estimator is one autograd function (the forward returns the bit, the backward
multiplies by ``ds/dx``); for the deterministic quantisers it is ``q + (s - s.detach())``, whose
bracket is exactly zero in the forward pass. No input is modified in place.

NaN handling: a NaN pre-activation propagates as NaN to the output instead of silently becoming a
bit, without any host-device synchronisation.
"""
from __future__ import annotations

import math

import torch

from .checks import one_of
from .errors import UsageError

MODES = ("bipolar", "unipolar")
STES = ("mean", "identity", "clipped")


def check_beta(beta: float) -> float:
    """Return ``beta`` as a float, or raise if it is not a finite positive number."""
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise UsageError(f"beta must be a positive number, got {beta!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"beta must be a finite number > 0, got {beta!r}")
    return value


def mean_activation(x: torch.Tensor, mode: str = "bipolar", beta: float = 1.0) -> torch.Tensor:
    """The expectation of a p-bit: ``tanh(beta*x)`` (bipolar) or ``sigmoid(beta*x)`` (unipolar)."""
    one_of("mode", mode, MODES)
    return torch.tanh(beta * x) if mode == "bipolar" else torch.sigmoid(beta * x)


def straight_through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Forward ``value`` exactly, backward the gradient of ``surrogate``.

    ``surrogate - surrogate.detach()`` is exactly 0 for finite numbers and NaN for NaN, so NaN
    inputs propagate to the output as well.
    """
    return value + (surrogate - surrogate.detach())


class _PBitFunction(torch.autograd.Function):
    """Forward: the bits; backward: the STE, from one saved tensor.

    One autograd function rather than ``bits + (s - s.detach())``: sampling is memory-bound, and
    this saves five full-size elementwise passes per p-bit layer and keeps a single tensor (the
    probability) for the backward pass instead of four. Nothing is modified in place but the
    fresh output.
    """

    @staticmethod
    def forward(ctx, x, mode, beta, generator, ste):
        gain = 2.0 * beta if mode == "bipolar" else beta
        # P(b = +1) = (1 + tanh(beta*x)) / 2 = sigmoid(2*beta*x): one activation, one draw and
        # one comparison per bit, the last two in place on the fresh uniform draws
        p_one = (x * gain).sigmoid_()
        bits = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).lt_(p_one)
        if mode == "bipolar":
            bits = bits.mul_(2.0).sub_(1.0)
        # a NaN pre-activation must not become a bit. On the CPU one read-only sum finds it
        # (the full masking pass is paid only then); elsewhere mask unconditionally, which
        # needs no host-device synchronisation
        if x.device.type != "cpu" or torch.isnan(p_one.sum()):
            bits = bits.masked_fill_(torch.isnan(x), float("nan"))
        # d/dx sigmoid(g*x) = g*p*(1 - p); the bipolar mean 2*sigmoid(2*beta*x) - 1 doubles it
        ctx.ste, ctx.slope = ste, (2.0 * gain if mode == "bipolar" else gain)
        if ste == "mean":
            ctx.save_for_backward(p_one)
        elif ste == "clipped":
            ctx.save_for_backward(x)
        return bits

    @staticmethod
    def backward(ctx, grad):
        if ctx.ste == "identity":
            return grad, None, None, None, None
        (saved,) = ctx.saved_tensors
        if ctx.ste == "clipped":
            return grad * (saved.abs() <= 1), None, None, None, None
        return torch.ops.aten.sigmoid_backward(grad * ctx.slope, saved), None, None, None, None


def pbit(
    x: torch.Tensor,
    mode: str = "bipolar",
    beta: float = 1.0,
    generator: torch.Generator | None = None,
    ste: str = "mean",
) -> torch.Tensor:
    """Draw one p-bit per element of ``x``.

    Args:
        x: pre-activations, any shape, floating point.
        mode: ``"bipolar"`` (bits in {-1, +1}) or ``"unipolar"`` (bits in {0, 1}).
        beta: inverse temperature, > 0.
        generator: source of the uniform draws; must live on ``x.device``. ``None`` uses torch's
            default generator for that device.
        ste: surrogate for the backward pass: ``"mean"``, ``"identity"`` or ``"clipped"``.

    Returns:
        A tensor of the shape and dtype of ``x`` holding the bits (NaN where ``x`` is NaN).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pbit(torch.zeros(4), generator=g).abs().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    one_of("mode", mode, MODES)
    one_of("ste", ste, STES)
    beta = check_beta(beta)
    if not x.is_floating_point():
        raise TypeError(f"pbit expects a floating-point tensor, got dtype {x.dtype}")
    return _PBitFunction.apply(x, mode, beta, generator, ste)


def quantize_levels(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Round values in [-1, 1] to the nearest of ``2**bits`` equally spaced levels in [-1, 1].

    Values outside [-1, 1] are clipped first. For ``bits=1`` the levels are {-1, +1}.
    """
    steps = 2**bits - 1
    t = torch.clamp(t, -1.0, 1.0)
    return torch.round((t + 1.0) * (steps / 2.0)) * (2.0 / steps) - 1.0


def quantized_activation(
    x: torch.Tensor, bits: int, beta: float = 1.0, mode: str = "bipolar"
) -> torch.Tensor:
    """Deterministic k-bit activation: ``tanh(beta*x)`` (or sigmoid) rounded to ``2**bits`` levels.

    Bipolar levels span [-1, 1]; unipolar levels span [0, 1]. The backward pass is the derivative
    of the unrounded activation (STE), so a k-bit network trains like its float counterpart.
    """
    mean = mean_activation(x, mode, beta)
    if mode == "bipolar":
        q = quantize_levels(mean, bits)
    else:
        q = (quantize_levels(2.0 * mean - 1.0, bits) + 1.0) / 2.0
    return straight_through(q, mean)
