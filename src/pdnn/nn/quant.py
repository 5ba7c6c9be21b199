"""Deterministic k-bit activations and k-bit weight layers (the quantised baselines)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as torch_F

from .. import functional as F
from ..errors import UsageError

MAX_BITS = 8


def check_bits(bits: int, what: str, allow_float: bool = False) -> int:
    """Validate a bit width: 1..8, or also 32 (float) when ``allow_float``."""
    ok = isinstance(bits, int) and not isinstance(bits, bool)
    if ok and (1 <= bits <= MAX_BITS or (allow_float and bits == 32)):
        return bits
    expected = f"an integer 1..{MAX_BITS}" + (" or 32 (float)" if allow_float else "")
    raise UsageError(f"{what} must be {expected}, got {bits!r}")


class Quantize(nn.Module):
    r"""k-bit deterministic activation: ``tanh(beta*x)`` rounded to ``2**bits`` levels in [-1, 1].

    With ``mode="unipolar"`` the sigmoid is rounded to levels in [0, 1]. ``Quantize(1)`` is the
    deterministic sign neuron. Gradients use the STE through the unrounded activation.

    Shape: input ``(*)``, output ``(*)``.

    Example:
        >>> q = Quantize(2)
        >>> sorted(set(q(torch.linspace(-5, 5, 1001)).tolist()))
        [-1.0, -0.3333333432674408, 0.3333333432674408, 1.0]
    """

    stochastic = False

    def __init__(self, bits: int, beta: float = 1.0, mode: str = "bipolar"):
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.beta = F.check_beta(beta)
        self.mode = F.check_choice("mode", mode, F.MODES)

    @property
    def precision(self) -> int:
        return self.bits

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The unrounded activation (what dithering noise is centred on)."""
        return F.mean_activation(x, self.mode, self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.quantized_activation(x, self.bits, self.beta, self.mode)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, beta={self.beta:g}, mode={self.mode!r}"


class _WeightQuantMixin:
    """Shared by the k-bit layers: ``weight_bits`` = 32 means float weights."""

    weight_bits: int

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight  # type: ignore[attr-defined]
        return w if self.weight_bits == 32 else F.quantize_weight(w, self.weight_bits)


class QuantLinear(_WeightQuantMixin, nn.Linear):
    """``nn.Linear`` whose forward pass uses k-bit weights (``weight_bits=32``: float)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 32):
        super().__init__(in_features, out_features, bias)
        self.weight_bits = check_bits(weight_bits, "weight bits", allow_float=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch_F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


class QuantConv2d(_WeightQuantMixin, nn.Conv2d):
    """``nn.Conv2d`` whose forward pass uses k-bit weights (``weight_bits=32``: float)."""

    def __init__(self, *args, weight_bits: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_bits = check_bits(weight_bits, "weight bits", allow_float=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"
