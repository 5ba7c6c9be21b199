"""The layer that reads a shared-input p-bit's T samples passes its input gradient once, summed.

In a folded graph the first p-bit after the deterministic prefix reads the prefix's output ``x``
(B rows) and draws T samples of bits from it (T*B rows, ``SharedInputPBit``). When the next layer
``L`` is a linear layer or a convolution, its input gradient is linear in its output gradient, and
the straight-through derivative ``s'(x)`` is the same for the T copies of ``x``. So the gradient
that reaches ``x``,

    sum over samples t of  s'(x) * L^T(g_t)  =  s'(x) * L^T(sum over t of g_t),

needs ``L``'s input gradient for one summed gradient of B rows, not for T*B rows, and one
surrogate derivative instead of T. The weight gradient still reads every sample's bits.

For the reference CNN (width 16, batch 64) at s = 8 that is the 16-channel 32 x 32 convolution's
input gradient for 64 rows instead of 512, and an Adam step took about 0.95 of its time before
on the 2-core CPU this project measures on (median of six rounds; the fastest repeats 0.89-0.94
in every round: ``benchmarks/bench_summed_gradient.py``).

:class:`SharedBitsLayer` replaces the pair in the graph. Outputs, and the layer's weight and bias
gradients, are those of the pair; the gradient of ``x`` sums in another order, so it differs from
the pair's by float rounding. It takes this path only where it applies exactly: under autograd
with ``x`` requiring a gradient, outside ``torch.func`` transforms, ``torch.compile`` and
autocast, for torch's linear layers and zero-padded convolutions with numeric padding (and
pdnn's k-bit ones, whose quantised weight it uses), and never where the p-bit or the layer has
hooks, forward or backward (they see the pair's calls). Everywhere else it calls the pair.

A backward pass that is itself differentiated (``create_graph=True``, as a gradient penalty asks)
takes no shortcut: it rebuilds the pair's graph on the bits already drawn
(:func:`pdnn.functional.attach_bits`) and differentiates that, so second derivatives are the
pair's too (tested, within float rounding).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as torch_F

from .foldcheck import batched_by_autograd, has_hooks, runs_eagerly
from .functional import attach_bits, straight_through_gradient
from .nn import QuantConv2d, QuantLinear, computed_weight
from .per_sample_norm import batch_major_layout

aten = torch.ops.aten
LINEARS = (nn.Linear, QuantLinear)
CONVOLUTIONS = {nn.Conv1d: torch_F.conv1d, nn.Conv2d: torch_F.conv2d, nn.Conv3d: torch_F.conv3d,
                QuantConv2d: torch_F.conv2d}


def summable(layer: nn.Module) -> bool:
    """A layer whose input gradient :class:`SharedBitsLayer` may pass summed."""
    if type(layer) in LINEARS:
        return True
    return (type(layer) in CONVOLUTIONS and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str))


class SharedBitsLayer(nn.Module):
    """``layer(shared(x))``, with ``x``'s gradient through ``layer`` computed once for the summed
    samples. ``shared`` draws T samples of p-bits from ``x`` (``shared.pbit``, ``shared.samples``);
    ``layer`` is called as it is outside autograd (it may be a wrapper that computes ``plain``, a
    :func:`summable` layer, by a faster GEMM)."""

    def __init__(self, shared: nn.Module, layer: nn.Module, plain: nn.Module):
        super().__init__()
        self.shared, self.layer, self.plain = shared, layer, plain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._sums(x):
            return self.layer(self.shared(x))
        plain, pbit = self.plain, self.shared.pbit
        bits = self.shared(x.detach())
        weight = computed_weight(plain)
        rule = (pbit.mode, pbit.beta, pbit.ste)
        return _SummedInputGradient.apply(x, bits, weight, plain.bias, plain, rule, self.shared.samples)

    def _sums(self, x: torch.Tensor) -> bool:
        """Whether the summed gradient applies to this call; ``plain`` is checked at each (a padding
        mode set on the model since the pairing was computed with zeros under autograd)."""
        return (isinstance(x, torch.Tensor) and x.dim() > 0 and torch.is_grad_enabled() and x.requires_grad
                and summable(self.plain) and x.dtype == self.plain.weight.dtype
                and not torch.is_autocast_enabled(x.device.type)
                and runs_eagerly()
                and not any(has_hooks(m) for m in (self.shared.pbit, self.layer, self.plain)))


def _sum_of_samples(grad: torch.Tensor, samples: int) -> torch.Tensor:
    """The sum of the T blocks of rows of ``grad`` ``[T*B, ...]``, read in memory order and laid
    out as ``grad`` is (a channels-last gradient stays channels-last: its convolution is faster)."""
    if batched_by_autograd(grad):  # (no layout to ask for)
        return grad.reshape(samples, -1, *grad.shape[1:]).sum(0)
    if batch_major_layout(grad) is None:
        grad = grad.contiguous()
    block = grad.numel() // samples
    total = grad.as_strided((samples, block), (block, 1)).sum(0)
    return total.as_strided((grad.shape[0] // samples, *grad.shape[1:]), grad.stride())


def _layer(plain: nn.Module, bits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``plain``'s output for ``bits`` with the given weight and bias: its own functional."""
    if type(plain) in LINEARS:
        return torch_F.linear(bits, weight, bias)
    return CONVOLUTIONS[type(plain)](bits, weight, bias, plain.stride, plain.padding, plain.dilation, plain.groups)


def _pair_gradients(ctx, grad, x, bits, weight, bias) -> tuple:
    """The gradients as the pair computes them, recorded for a further derivative: the bits
    attached to ``x`` by the p-bit's own backward pass, then the layer, differentiated."""
    need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
    attached = attach_bits(x, bits, *ctx.rule, repeats=ctx.samples)
    needed = [(x, need_x), (weight, need_w), (bias, need_b)]
    found = iter(torch.autograd.grad(_layer(ctx.plain, attached, weight, bias), [t for t, need in needed if need],
                                     grad, create_graph=True))
    x_grad, weight_grad, bias_grad = (next(found) if need else None for _, need in needed)
    return x_grad, None, weight_grad, bias_grad, None, None, None


class _SummedInputGradient(torch.autograd.Function):
    """Forward: ``plain``'s output for the bits; backward: the weight and bias gradients from
    every sample's bits, ``x``'s from the samples' summed output gradient."""

    @staticmethod
    def forward(ctx, x, bits, weight, bias, plain, rule, samples):
        ctx.plain, ctx.rule, ctx.samples = plain, rule, samples
        ctx.save_for_backward(x, bits, weight, bias)
        return _layer(plain, bits, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, bits, weight, bias = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():  # create_graph=True: the gradients must be the pair's as functions too
            return _pair_gradients(ctx, grad, x, bits, weight, bias)
        summed = _sum_of_samples(grad, ctx.samples) if need_x else None
        plain = ctx.plain
        if type(plain) in LINEARS:
            rows, bit_rows = grad.reshape(-1, grad.shape[-1]), bits.reshape(-1, bits.shape[-1])
            grad_w = rows.t().mm(bit_rows) if need_w else None
            grad_b = rows.sum(0) if need_b and bias is not None else None
            grad_x = summed.matmul(weight) if need_x else None
        else:
            dims = weight.dim() - 2
            params = (list(plain.stride), list(plain.padding), list(plain.dilation), False, [0] * dims, plain.groups)
            bias_size = [weight.shape[0]] if bias is not None else None
            grad_w = grad_b = grad_x = None
            if need_w or need_b:
                _, grad_w, grad_b = aten.convolution_backward(grad, bits, weight, bias_size, *params,
                                                              [False, need_w, need_b and bias is not None])
            if need_x:  # x has the shape of one sample's bits; only its shape is read
                grad_x = aten.convolution_backward(summed, x, weight, None, *params, [True, False, False])[0]
        if need_x:
            grad_x = straight_through_gradient(grad_x, x, *ctx.rule)
        return grad_x, None, grad_w, grad_b, None, None, None
