"""The p-bit neuron as a drop-in ``nn.Module``."""
from __future__ import annotations

import torch
from torch import nn

from .. import functional as F
from ..checks import one_of


class PBit(nn.Module):
    r"""Binary stochastic neuron whose mean is a deterministic activation.

    .. math::
        b = \operatorname{sign}(\tanh(\beta x) - u),\ u \sim U(-1, 1)  \quad\text{(bipolar)}\qquad
        b = \mathbb{1}[\sigma(\beta x) > u],\ u \sim U(0, 1)      \quad\text{(unipolar)}

    Every call draws fresh bits. The module does not know how many samples are taken: a
    :class:`pdnn.SampledModel` folds the samples into the batch dimension.

    Args:
        mode: ``"bipolar"`` or ``"unipolar"``.
        beta: inverse temperature, a fixed number > 0 (a tensor that requires a gradient is refused).
        ste: backward surrogate: ``"mean"`` (derivative of the mean), ``"identity"``, ``"clipped"``.

    Attributes:
        generator: optional ``torch.Generator`` for the draws (set by ``SampledModel(seed=...)``);
            it must be on the input's device.
        precision: bits per output value (1), read by the energy model.

    Shape: input ``(*)``, output ``(*)``.

    Example:
        >>> layer = PBit("bipolar", beta=2.0)
        >>> set(layer(torch.randn(100)).tolist()) <= {-1.0, 1.0}
        True
    """

    stochastic = True
    precision = 1

    def __init__(self, mode: str = "bipolar", beta: float = 1.0, ste: str = "mean"):
        super().__init__()
        self.mode = one_of("mode", mode, F.MODES)
        self.beta = F.check_beta(beta)
        self.ste = one_of("ste", ste, F.STES)
        self.generator: torch.Generator | None = None

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic activation this neuron samples around."""
        return F.mean_activation(x, self.mode, self.beta)

    def forward(self, x: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """The bits of ``x``; ``repeats``: of ``x`` repeated along its first dimension, see
        :func:`pdnn.functional.pbit`."""
        F.check_generator(self.generator, x, "PBit")
        return F.pbit(x, self.mode, self.beta, self.generator, self.ste, repeats)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, beta={self.beta:g}, ste={self.ste!r}"
