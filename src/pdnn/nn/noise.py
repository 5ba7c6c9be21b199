"""Noise injectors: drop-in ``nn.Module``s that make a trained deterministic network stochastic.

They are what :func:`pdnn.convert.to_sampled` puts into a trained network:

* :class:`GaussianNoise` / :class:`LogisticNoise` add noise to a pre-activation (placed just
  before an unchanged activation);
* :class:`DitheredQuantize` is a k-bit quantiser with uniform dither added before rounding, so its
  *mean* is (approximately, for one step of dither exactly) the unrounded activation;
* :class:`HardPBit` is a p-bit whose mean is the clipped-linear ``hardtanh``.

Like :class:`pdnn.nn.PBit`, every module here has ``stochastic = True`` (so
:class:`pdnn.SampledModel` starts its stochastic region there) and a ``generator`` attribute
(``None`` by default: torch's global generator) that ``SampledModel(seed=...)`` sets for the
duration of a call. Every call draws fresh noise; no module knows how many samples are taken.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional as F
from ..checks import as_real, is_boolean, one_of, shown
from ..errors import UsageError
from .quant import check_bits


def check_scale(scale, what: str = "scale") -> float:
    """Return ``scale`` as a float, or raise if it is not a finite number >= 0."""
    value = as_real(scale)
    if value is None and not is_boolean(scale):
        raise UsageError(f"{what} must be a number >= 0, got {shown(scale)}")
    if value is None or not math.isfinite(value) or value < 0:  # (a flag reads as 1 or 0 to Python)
        raise UsageError(f"{what} must be a finite number >= 0, got {shown(scale)}")
    return value


def _check_generator(module: nn.Module, x: torch.Tensor) -> torch.Generator | None:
    g = module.generator
    F.check_floating(x, type(module).__name__)
    F.check_generator(g, x, type(module).__name__)
    return g


def _drawn(x: torch.Tensor, generator: torch.Generator | None) -> dict:
    """The keywords of a draw shaped like ``x`` (see :func:`pdnn.functional.generator_keyword`),
    in float32 for a half-precision ``x``: torch's bfloat16 ``rand`` gives 0 with probability
    about 2e-3 and values below 0.001 three times too often, which biases every mean built on
    it (a logistic draw's log(u), a threshold compared with a small probability)."""
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return {"device": x.device, "dtype": dtype, **F.generator_keyword(generator)}


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape, **_drawn(x, generator))


class _AdditiveNoise(nn.Module):
    """``y = x + scale * n`` with fresh zero-mean noise ``n`` from :meth:`draw` on every call;
    ``scale = 0`` returns the input itself. Gradient 1 (the noise does not depend on ``x``)."""

    stochastic = True

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = check_scale(scale)
        self.generator: torch.Generator | None = None

    def draw(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = _check_generator(self, x)
        if self.scale == 0:
            return x
        return x + self.scale * self.draw(x, g)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class GaussianNoise(_AdditiveNoise):
    r"""Add zero-mean Gaussian noise: :math:`y = x + \sigma\,\varepsilon,\ \varepsilon \sim \mathcal N(0, 1)`.

    Placed before an activation ``f`` it makes the neuron ``f(x + σε)``, whose mean is the
    Gaussian-smoothed activation. ``scale = 0`` returns the input unchanged (bit for bit).
    The gradient with respect to ``x`` is 1 (the noise does not depend on ``x``).

    Args:
        scale: the standard deviation σ >= 0, in the units of ``x``.

    Attributes:
        generator: optional ``torch.Generator`` on the input's device (set by ``SampledModel``).

    Shape: input ``(*)``, output ``(*)``.

    Example:
        >>> noise = GaussianNoise(0.5)
        >>> noise(torch.zeros(100_000)).std().item()   # doctest: +SKIP
        0.500...
    """

    def draw(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(x.shape, **_drawn(x, generator)).to(x.dtype)


class LogisticNoise(_AdditiveNoise):
    r"""Add zero-mean logistic noise: :math:`y = x + s \log\frac{u}{1-u},\ u \sim U(0, 1)`.

    The noise has the density :math:`\frac{e^{-n/s}}{s(1+e^{-n/s})^2}`, mean 0 and standard
    deviation :math:`s\pi/\sqrt3`. Its CDF is the sigmoid, which makes it the p-bit's own noise:
    ``sign(x + n)`` with ``s = 1/(2β)`` *is* a bipolar p-bit of mean ``tanh(βx)``. ``scale = 0``
    returns the input unchanged.

    Args:
        scale: the logistic scale s >= 0, in the units of ``x``.

    Attributes:
        generator: optional ``torch.Generator`` on the input's device (set by ``SampledModel``).

    Shape: input ``(*)``, output ``(*)``.
    """

    def draw(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = _uniform(x, generator)
        u.clamp_min_(torch.finfo(u.dtype).tiny)  # log(u) finite, 1 - u > 0
        return (torch.log(u) - torch.log1p(-u)).to(x.dtype)


class DitheredQuantize(nn.Module):
    r"""k-bit activation with uniform dither: :math:`y = Q_k(f(x) + w\Delta u),\ u \sim U(-\tfrac12, \tfrac12)`.

    ``f(x)`` is the unrounded activation of :class:`pdnn.nn.Quantize` (``tanh(βx)`` bipolar,
    ``sigmoid(βx)`` unipolar), :math:`Q_k` rounds to the nearest of its ``2**bits`` levels and
    :math:`\Delta` is one quantisation step (``2/(2**bits - 1)`` bipolar, ``1/(2**bits - 1)``
    unipolar). With ``width = 1`` (one step of dither) the output is one of the two levels
    around ``f(x)`` with probabilities that make :math:`\mathbb E[y] = f(x)` *exactly*; for 1 bit
    this is the p-bit of mean ``tanh(βx)``. Other widths give a mean that is a smoothed staircase
    (``width = 0``: the deterministic quantiser, bit for bit). The output takes only the
    quantiser's levels, so ``precision`` stays ``bits``; a half-precision output holds them
    rounded (1/3 is 0.33398 in bfloat16), which shifts the mean by as much. Gradients use the STE
    through ``f``.

    Args:
        bits: activation bits, 1..8.
        beta: inverse temperature of ``f``.
        mode: ``"bipolar"`` (levels in [-1, 1]) or ``"unipolar"`` (levels in [0, 1]).
        width: dither width in quantisation steps, >= 0.

    Attributes:
        generator: optional ``torch.Generator`` on the input's device (set by ``SampledModel``).
        precision: bits per output value (``bits``), read by the energy model.

    Shape: input ``(*)``, output ``(*)``.

    Example:
        >>> q = DitheredQuantize(2, width=1.0)
        >>> {round(v, 6) for v in q(torch.randn(1000)).tolist()} <= {-1.0, -0.333333, 0.333333, 1.0}
        True
    """

    stochastic = True

    def __init__(self, bits: int, beta: float = 1.0, mode: str = "bipolar", width: float = 1.0):
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.beta = F.check_beta(beta)
        self.mode = one_of("mode", mode, F.MODES)
        self.width = check_scale(width, "dither width")
        self.generator: torch.Generator | None = None

    @property
    def precision(self) -> int:
        return self.bits

    @property
    def step(self) -> float:
        """One quantisation step in the output's units."""
        return (2.0 if self.mode == "bipolar" else 1.0) / (2**self.bits - 1)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The unrounded activation (the output's mean for ``width = 1``)."""
        return F.mean_activation(x, self.mode, self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = _check_generator(self, x)
        if self.width == 0:
            return F.quantized_activation(x, self.bits, self.beta, self.mode)
        mean = self.mean(x)
        # work on the bipolar scale [-1, 1], where one step is 2 / (2**bits - 1)
        t = mean if self.mode == "bipolar" else 2.0 * mean - 1.0
        dither = (_uniform(x, g) - 0.5) * (self.width * 2.0 / (2**self.bits - 1))
        q = F.quantize_levels(t.detach() + dither, self.bits).to(x.dtype)  # chosen in the draw's precision
        if self.mode == "unipolar":
            q = (q + 1.0) / 2.0
        return F.straight_through(q, mean)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, beta={self.beta:g}, mode={self.mode!r}, width={self.width:g}"


class HardPBit(nn.Module):
    r"""A p-bit whose mean is the clipped-linear ``hardtanh``.

    .. math::
        b \in \{a, c\},\quad P(b = c) = \frac{\operatorname{clamp}(\beta x, a, c) - a}{c - a},
        \qquad \mathbb E[b] = \operatorname{clamp}(\beta x, a, c)

    with ``a = min_val`` and ``c = max_val``: the stochastic counterpart of ``nn.Hardtanh(a, c)``
    (for the default ``a, c = -1, 1`` the bits are ±1 and ``P(+1) = (1 + clamp(βx, -1, 1))/2``).
    Gradients use the STE through the mean (``β`` inside ``[a, c]``, 0 outside).

    Args:
        min_val, max_val: the two output values (``min_val < max_val``), as in ``nn.Hardtanh``.
        beta: gain applied to ``x`` before clipping (> 0).

    Attributes:
        generator: optional ``torch.Generator`` on the input's device (set by ``SampledModel``).
        precision: bits per output value (1).

    Shape: input ``(*)``, output ``(*)``.
    """

    stochastic = True
    precision = 1

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.min_val, self.max_val = (math.nan if (value := as_real(bound)) is None else value
                                      for bound in (min_val, max_val))
        if not (math.isfinite(self.min_val) and math.isfinite(self.max_val) and self.min_val < self.max_val):
            raise UsageError(f"HardPBit needs numbers min_val < max_val, finite, got {shown(min_val)}, {shown(max_val)}")
        self.beta = F.check_beta(beta)
        self.generator: torch.Generator | None = None

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.beta * x, self.min_val, self.max_val)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = _check_generator(self, x)
        mean = self.mean(x)
        # the two values as x's dtype holds them, chosen, not rebuilt as a + (c - a) (which rounds
        # off either); the probability is taken between them, so that the mean is the clamp
        low, high = (x.new_full((), bound) for bound in (self.min_val, self.max_val))  # (a fill: no copy to a GPU)
        # in at least single precision: a half one rounded the low bits of small means away
        wide = x.detach() if x.dtype in (torch.float32, torch.float64) else x.detach().float()
        wide_low, wide_high = low.to(wide.dtype), high.to(wide.dtype)  # (exact, and so is their difference)
        p_high = (self.mean(wide) - wide_low) / (wide_high - wide_low)
        return F.straight_through(torch.where(p_high > _uniform(x, g), high, low), mean)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val:g}, max_val={self.max_val:g}, beta={self.beta:g}"
