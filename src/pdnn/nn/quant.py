"""Deterministic k-bit activations and k-bit weight layers with learned per-channel scales."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as torch_F

from .. import functional as F
from ..checks import one_of, positive_int
from ..errors import UsageError
from ..functional import check_bits


class Quantize(nn.Module):
    r"""k-bit deterministic activation: ``tanh(beta*x)`` rounded to ``2**bits`` levels in [-1, 1].

    With ``mode="unipolar"`` the sigmoid is rounded to levels in [0, 1]. ``Quantize(1)`` is the
    deterministic sign neuron. Gradients use the STE through the unrounded activation.

    Shape: input ``(*)``, output ``(*)``.

    Example:
        >>> q = Quantize(2)
        >>> sorted({round(v, 6) for v in q(torch.linspace(-5, 5, 1001)).tolist()})
        [-1.0, -0.333333, 0.333333, 1.0]
    """

    stochastic = False

    def __init__(self, bits: int, beta: float = 1.0, mode: str = "bipolar"):
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.beta = F.check_beta(beta)
        self.mode = one_of("mode", mode, F.MODES)

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


class WeightQuantizer(nn.Module):
    r"""k-bit weights with one learned scale per output channel.

    The forward pass sees ``s_c * q((w / s_c).clamp(-1, 1))`` (``s_c`` as the straight-through form
    that scales its gradient computes it, which can differ from the saved scale by an ulp: every
    weight of a channel still sits on one grid), where ``q`` rounds to ``2**bits``
    equally spaced levels in [-1, 1] (for one bit: ``s_c * sign(w)``) and ``s_c > 0`` is the scale
    of output channel ``c``. This follows Brevitas' per-output-channel weight quantisers with a
    learned scale, trained the LSQ way (Esser et al., ICLR 2020): the rounding passes gradients
    straight through inside the clipping range and stops them outside it (Larq's clipped
    ``ste_sign``), the scale receives ``q - w/s`` inside and ``±1`` outside, and its gradient is
    scaled by ``1/sqrt(K * 2**(bits-1))`` (``K`` weights per channel), LSQ's factor for SGD, where
    it makes the scale learn at the pace of the weights. Unlike Brevitas' and LSQ's integer grids,
    which hold 0 (LSQ's factor counts ``2**(bits-1) - 1`` positive levels), the grid here is
    symmetric without zero, ``±1/3, ±1`` times the scale at two bits, as the activations' levels
    are: a weight is never 0, and the factor counts ``2**(bits-1)`` positive levels. Under Adam (what ``pdnn train`` uses) a
    constant factor on a parameter's gradient barely changes its update, which Adam normalises:
    the scales then learn at Adam's own pace (the factor only weighs Adam's epsilon more).

    The scale starts where the quantisation error is smallest, on the first forward pass (after
    the model's own initialisation has set the weights): for one bit ``mean|w_c|`` exactly (the
    XNOR-Net / Larq ``magnitude_aware_sign`` optimum); for more bits the best of 64 fractions of
    ``max|w_c|``. The scales are parameters, saved in checkpoints; in hardware they fold into the
    normalisation that follows the layer (or one multiply per output).

    Example:
        >>> wq = WeightQuantizer(bits=2, channels=3)
        >>> w = torch.randn(3, 50)
        >>> [len(row.unique()) <= 4 for row in wq(w)]
        [True, True, True]
    """

    def __init__(self, bits: int, channels: int):
        super().__init__()
        self.bits = check_bits(bits, "weight bits")
        self.scale = nn.Parameter(torch.ones(positive_int("channels", channels)))
        self.register_buffer("initialised", torch.tensor(False))
        self._seen: tuple | None = None  # (buffer, version) that ``_ready`` was read from
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether the scales are initialised: the ``initialised`` buffer, read again (one device
        sync) only after something wrote it -- loading a checkpoint, or the fold check restoring
        the buffers it found -- so that a Python copy can never disagree with what is saved."""
        seen = (id(self.initialised), self.initialised._version)
        if seen != self._seen:
            self._ready, self._seen = bool(self.initialised), seen
        return self._ready

    @torch.no_grad()
    def reset_scale(self, w: torch.Tensor) -> None:
        """Set each channel's scale to the one with the smallest squared quantisation error."""
        flat = w.detach().flatten(1)
        if self.bits == 1:
            best = flat.abs().mean(1)
        else:
            top = flat.abs().amax(1).clamp_min(torch.finfo(w.dtype).tiny)
            best, best_err = top.clone(), torch.full_like(top, math.inf)
            for fraction in torch.linspace(1 / 64, 1, 64).tolist():
                s = (top * fraction)[:, None]
                err = ((F.quantize_levels(flat / s, self.bits) * s - flat) ** 2).sum(1)
                better = err < best_err
                best = torch.where(better, s[:, 0], best)
                best_err = torch.where(better, err, best_err)
        if not (finite := torch.isfinite(best)).all():  # (a NaN scale stayed for good: every later weight NaN)
            channels = torch.nonzero(~finite).flatten().tolist()
            raise UsageError(f"{self.extra_repr()}: the weights it first quantises hold NaN or infinity (output "
                             f"channel(s) {', '.join(map(str, channels[:8]))}{' ...' if len(channels) > 8 else ''}), "
                             "which would set their scales for good; initialise the weights with finite numbers")
        self.scale.copy_(best.clamp_min(torch.finfo(w.dtype).tiny))
        self.initialised.fill_(True)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if isinstance(w, torch.Tensor):  # (not a tracer's proxy)
            if w.dim() < 2 or len(w) != len(self.scale) or w[0].numel() == 0:
                raise UsageError(f"{self.extra_repr()} got weights of shape {list(w.shape)}: expected "
                                 f"{len(self.scale)} output channels, the first of at least two dimensions, "
                                 f"each with at least one weight")
            if not w.is_floating_point():
                raise UsageError(f"{self.extra_repr()} got weights of type {w.dtype}: expected floating point")
        if not self.ready:
            self.reset_scale(w)
        per_channel = w[0].numel()
        grad_scale = 1.0 / math.sqrt(per_channel * 2 ** (self.bits - 1))
        s = self.scale.abs().clamp_min(torch.finfo(w.dtype).tiny)
        s = (s - s * grad_scale).detach() + s * grad_scale  # value s (to an ulp: 1 in 10**7), gradient scaled
        s = s.view(-1, *([1] * (w.dim() - 1)))
        v = torch.clamp(w / s, -1.0, 1.0)
        return F.straight_through(F.quantize_levels(v.detach(), self.bits), v) * s  # exactly the levels forward

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.scale.numel()}"


class _WeightQuantMixin:
    """Shared by the k-bit layers: ``weight_bits`` = 32 means float weights."""

    weight_bits: int
    weight_quant: WeightQuantizer | None

    def _init_weight_quant(self, weight_bits: int) -> None:
        self.weight_bits = check_bits(weight_bits, "weight bits", allow_float=True)
        channels = self.weight.shape[0]  # type: ignore[attr-defined]
        self.weight_quant = None if self.weight_bits == 32 else WeightQuantizer(self.weight_bits, channels)

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight  # type: ignore[attr-defined]
        return w if self.weight_quant is None else self.weight_quant(w)


def computed_weight(layer: nn.Module) -> torch.Tensor:
    """The weights ``layer`` computes with: a k-bit layer's quantised ones, else its ``weight``."""
    return layer.quantized_weight() if isinstance(layer, _WeightQuantMixin) else layer.weight


class QuantLinear(_WeightQuantMixin, nn.Linear):
    """``nn.Linear`` whose forward pass uses k-bit weights (``weight_bits=32``: float)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 32):
        super().__init__(in_features, out_features, bias)
        self._init_weight_quant(weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch_F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


class QuantConv2d(_WeightQuantMixin, nn.Conv2d):
    """``nn.Conv2d`` whose forward pass uses k-bit weights (``weight_bits=32``: float)."""

    def __init__(self, *args, weight_bits: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_weight_quant(weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"
