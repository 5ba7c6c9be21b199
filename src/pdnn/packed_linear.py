"""Linear layers whose weight is packed once for oneDNN: a faster GEMM for a few folded rows.

At batch 1, T samples make every layer after the prefix a GEMM of T rows against the whole
weight. On the 2-core x86 CPU this project measures on, ``F.linear`` (MKL) ran the 16-row GEMM
of a 2048 x 2048 layer at about half the speed it reaches at 256 rows, so T = 16 cost 2.2-2.6
times T = 1 for the benchmark MLP. oneDNN with the weight reordered once into its blocked layout
(what ``torch.compile``'s weight freezing does on the CPU) ran the same GEMM 1.7 times faster:
packed/plain time 0.52-0.65 at 4-16 rows and 0.73-0.79 at 64 rows for layers of 0.5-4 M weights,
but 1.15-1.96 at 1-2 rows and 1.3-5 for layers of 65 k weights or fewer, where the call's fixed
cost dominates. Hence a layer is packed only with at least ``MIN_WEIGHTS`` weights, and the
packed GEMM serves only inputs of ``ROWS`` rows; everything else takes ``F.linear``.

The packed copy is redone when the weight's storage or version counter changes (assignment,
``load_state_dict``, an optimiser step, any in-place op), or any of ``SAMPLED`` elements spread
over it does. Torch does not count changes made through ``.data``, nor those of its fused
optimisers (``Adam(fused=True)`` steps leave the version counter as it was), and a dtype round
trip (``.half().float()``) can hand the weight its old address back: the sample sees these, as
it sees any change of most weights, but a change of a few unsampled weights through ``.data``
would leave a stale copy. Packing is therefore opt-in, ``SampledModel(..., pack_weights=True)``,
for evaluating fixed weights. It runs only without
autograd (``torch.no_grad``/``inference_mode``, or nothing requiring a gradient), on float32
CPU tensors outside CPU autocast, and never where the layer has hooks, forward or backward
(they would be skipped), nor on a weight made under ``torch.inference_mode`` (it has no version
counter, so a change in place could not be told).
"""
from __future__ import annotations

import math

import torch
from torch import fx, nn

from .tracing import wrap_module_calls
from .transposed_linear import plain_linear, takes_a_faster_gemm

MIN_WEIGHTS = 2**19
ROWS = range(4, 65)
SAMPLED = 64  # weights compared at each call (8 x 8): a few microseconds, against the GEMM's milliseconds


def available() -> bool:
    """Whether this torch build has the oneDNN linear kernels (x86 builds do)."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def eligible(module: nn.Module) -> bool:
    """A float linear layer large enough to gain from packing."""
    return plain_linear(module) and module.weight.numel() >= MIN_WEIGHTS


class PackedLinear(nn.Module):
    """Calls ``linear``, or, for inputs it serves, oneDNN with ``linear``'s packed weight."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self._packed: torch.Tensor | None = None
        self._stamp: tuple | None = None
        self._sample: torch.Tensor | None = None  # SAMPLED weights as they were packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = self.linear
        w = linear.weight
        if not takes_a_faster_gemm(linear, x, ROWS) or w.is_inference():  # no version counter to stamp
            return linear(x)
        stamp, sample = (w.data_ptr(), w._version), _sample(w)
        if stamp != self._stamp or not torch.equal(sample, self._sample):
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), x.shape[0])
            self._stamp, self._sample = stamp, sample
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, linear.bias, "none", [], "")


def _sample(w: torch.Tensor) -> torch.Tensor:
    """``SAMPLED`` of the 2-D ``w``'s elements, on a grid of evenly spaced rows and columns (a
    copy of them alone, whatever ``w``'s strides: a flattened transposed weight was all copied)."""
    side = math.isqrt(SAMPLED)
    rows, columns = w.shape
    return w.detach()[:: max(1, rows // side), :: max(1, columns // side)][:side, :side].clone()


def pack_linears(gm: fx.GraphModule) -> None:
    """Route ``gm``'s calls of eligible linear layers through :class:`PackedLinear`."""
    if available() and wrap_module_calls(gm, eligible, PackedLinear, "packed"):
        gm.recompile()
