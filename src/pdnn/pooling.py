"""Average pooling over disjoint windows, with a backward pass that keeps no input and fills nothing.

torch's ``avg_pool2d`` keeps its input alive until the backward pass (which reads only its
shape), and its backward pass zero-fills the input gradient and then adds every window's share
to it. Where the windows are disjoint (stride = kernel, no padding, floor mode) every input
element lies in at most one window, so its gradient is that one share, ``grad / (kh * kw)``,
which can be written directly; elements past the last window get zero. That is exactly the
number torch's kernel computes (``0 + g / n`` is ``g / n``; for ``g = -0.0`` torch gives
``+0.0``, which compares equal).

In sample-aware training the pooled tensors are the folded p-bits, tens of megabytes at s = 8:
the reference CNN's training step then keeps three fewer of them and skips three zero-filling
passes (``benchmarks/bench_lean_training.py``).

A backward pass that is itself differentiated (``create_graph=True``) writes no ``out=`` tensor,
which autograd cannot record: it repeats and pads the shares instead.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from .foldcheck import batched_by_autograd, has_hooks, runs_eagerly
from .per_sample_norm import batch_major_layout
from .tracing import wrap_module_calls

_DTYPES = (torch.float32, torch.float64)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def disjoint(pool: nn.Module) -> bool:
    """Whether ``pool`` is a plain ``nn.AvgPool2d`` whose windows do not overlap."""
    if type(pool) is not nn.AvgPool2d:
        return False
    kernel, stride = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    return (kernel == stride and _pair(pool.padding) == (0, 0) and not pool.ceil_mode
            and pool.divisor_override is None)


def differentiable_shares(grad: torch.Tensor, kernel: tuple[int, int], shape: torch.Size) -> torch.Tensor:
    """The input gradient of a disjoint average pool of input ``shape``, each window's share
    ``grad / (kh * kw)``, by operations autograd can differentiate (for ``create_graph=True``)."""
    (kh, kw), (h, w) = kernel, grad.shape[-2:]
    share = (grad / (kh * kw)).repeat_interleave(kh, -2).repeat_interleave(kw, -1)
    return nn.functional.pad(share, (0, shape[-1] - w * kw, 0, shape[-2] - h * kh))


class _DisjointAvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel):
        ctx.shape, ctx.kernel = x.shape, kernel
        ctx.layout = batch_major_layout(x) or torch.contiguous_format
        return nn.functional.avg_pool2d(x, kernel)

    @staticmethod
    def backward(ctx, grad):
        (kh, kw), (h, w) = ctx.kernel, grad.shape[-2:]
        if torch.is_grad_enabled() or batched_by_autograd(grad):  # create_graph=True: differentiable ops
            return differentiable_shares(grad, ctx.kernel, ctx.shape), None
        if (kh, kw) == (2, 2) and ctx.shape[-2:] == (2 * h, 2 * w):
            # nearest upsampling by exactly two maps index i to i >> 1 (torch's special case): the
            # fastest way to copy each share into its window, twice the speed of the strided write
            if grad.dim() == 3:
                return nn.functional.interpolate(grad[None] / 4, scale_factor=2, mode="nearest")[0], None
            share = grad.contiguous(memory_format=ctx.layout) / 4  # the output follows its layout
            return nn.functional.interpolate(share, scale_factor=2, mode="nearest"), None
        out = torch.empty(ctx.shape, dtype=grad.dtype, memory_format=ctx.layout)
        if ctx.shape[-2:] != (h * kh, w * kw):
            out.zero_()  # the rows or columns past the last window
        windows = out[..., : h * kh, : w * kw].unflatten(-1, (w, kw)).unflatten(-3, (h, kh))
        torch.div(grad[..., :, None, :, None].expand(windows.shape), kh * kw, out=windows)
        return out, None


class DisjointAvgPool2d(nn.Module):
    """Calls ``pool`` (an ``nn.AvgPool2d`` with disjoint windows, see :func:`disjoint`) with the
    lean backward pass where it applies: CPU float tensors under autograd, outside ``torch.func``
    transforms and ``torch.compile``, and no hooks (forward or backward) that expect the module
    itself to run. Its windows are checked at each call: a stride, padding or rounding set on the
    model since the wrapping was pooled as disjoint windows under autograd."""

    def __init__(self, pool: nn.AvgPool2d):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.pool
        lean = (isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled() and x.is_cpu
                and x.dtype in _DTYPES and x.dim() in (3, 4) and not has_hooks(pool) and disjoint(pool)
                and runs_eagerly())
        return _DisjointAvgPool.apply(x, _pair(pool.kernel_size)) if lean else pool(x)


def use_disjoint_pools(gm: fx.GraphModule) -> None:
    """Route ``gm``'s calls of average pools with disjoint windows through :class:`DisjointAvgPool2d`."""
    wrap_module_calls(gm, disjoint, DisjointAvgPool2d, "disjoint_pool")
