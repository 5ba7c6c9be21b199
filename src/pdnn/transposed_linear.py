"""Linear layers on a few folded rows, computed as ``(W @ x.T).T``: the faster GEMM there.

At batch 1, T samples make every layer after the prefix a GEMM of T rows against the whole
weight. ``F.linear`` asks MKL for ``x @ W.T``. For 8-48 rows against a weight of at least
``MIN_WEIGHTS`` entries, MKL computes the same product as ``W @ x.T`` in 0.53-0.92 of the time on
the 2-core x86 CPU this project measures on, with one or two threads
(``benchmarks/bench_gemm_orientation.py``: 2048 x 2048 and 4096 x 1024 weights, 72
measurements). Outside that range it is not reliably faster: 1.03-2.6 times slower at 1-4 rows,
0.92-1.26 of the time at 64 rows and more, and 0.35-1.84 for smaller weights at 8-48 rows. Hence
those bounds.

The product comes out laid out transposed; adding the bias writes it to a contiguous tensor,
as ``F.linear``'s output is, in one pass (tens of microseconds for 16 x 2048). The sums run in
another order, so outputs differ from ``F.linear``'s by float rounding, as a GEMM of 16 rows
already differs from 16 GEMVs. A p-bit after the layer can then flip only where its
pre-activation lies within rounding of its threshold.

This path runs only without autograd (``torch.no_grad``/``inference_mode``, or nothing requiring
a gradient), on float32 CPU tensors outside CPU autocast, and never where the layer has forward
hooks (they would be skipped). The weight is read on every call, so nothing can go stale.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from .foldcheck import has_hooks
from .nn import QuantLinear
from .tracing import wrap_module_calls

MIN_WEIGHTS = 2**21
ROWS = range(8, 49)


def plain_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` (or a float ``QuantLinear``) whose forward is ``F.linear`` of its weight."""
    return type(module) is nn.Linear or (type(module) is QuantLinear and module.weight_quant is None)


def takes_a_faster_gemm(linear: nn.Linear, x: torch.Tensor, rows: range) -> bool:
    """Whether ``linear(x)`` may be computed by another GEMM than ``F.linear``'s: a 2-D float32
    CPU input of a number of rows in ``rows``, no autograd, no CPU autocast (``F.linear`` would
    compute in lower precision) and no hooks, forward or backward (a wrapper that bypasses the
    layer would skip them)."""
    w = linear.weight
    return (x.dim() == 2 and x.shape[0] in rows and x.dtype == w.dtype == torch.float32
            and x.device.type == w.device.type == "cpu"
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            and not torch.is_autocast_enabled("cpu")
            and not has_hooks(linear))


def eligible(module: nn.Module) -> bool:
    """A float linear layer large enough to gain from the transposed GEMM."""
    return plain_linear(module) and module.weight.numel() >= MIN_WEIGHTS


class TransposedLinear(nn.Module):
    """Calls ``linear``, or, for inputs it serves, computes it as ``(W @ x.T).T``."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def serves(self, x: torch.Tensor) -> bool:
        """Whether this call takes the transposed GEMM (see the module's docstring)."""
        return takes_a_faster_gemm(self.linear, x, ROWS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.serves(x):
            return self.linear(x)
        product = torch.mm(self.linear.weight, x.t()).t()  # laid out transposed
        out = torch.empty(product.shape, dtype=product.dtype, device="cpu")  # contiguous, as F.linear's output
        bias = self.linear.bias
        return out.copy_(product) if bias is None else torch.add(product, bias, out=out)


def use_transposed_linears(gm: fx.GraphModule) -> None:
    """Route ``gm``'s calls of eligible linear layers through :class:`TransposedLinear`."""
    if wrap_module_calls(gm, eligible, TransposedLinear, "transposed"):
        gm.recompile()
