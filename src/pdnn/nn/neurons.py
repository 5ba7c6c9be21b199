"""Neurons by name, so models, configs and the command line share one vocabulary."""
from __future__ import annotations

import re

from torch import nn

from ..errors import UsageError
from .pbit import PBit
from .quant import Quantize, check_bits

NEURONS = ("pbit", "pbit-unipolar", "tanh", "sigmoid", "sign", "quant:k")


def make_neuron(name: str, beta: float = 1.0) -> nn.Module:
    """Build the activation called ``name``.

    ``pbit`` / ``pbit-unipolar``: stochastic p-bits (means tanh / sigmoid); ``tanh`` /
    ``sigmoid``: float activations (the 32-bit baseline; ``beta`` is absorbed by the preceding
    normalisation and ignored); ``sign``: deterministic 1-bit; ``quant:k``: deterministic k-bit
    quantised tanh, k = 1..8.
    """
    if name == "pbit":
        return PBit("bipolar", beta)
    if name == "pbit-unipolar":
        return PBit("unipolar", beta)
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "sign":
        return Quantize(1, beta)
    match = re.fullmatch(r"quant:(\d+)", name)
    if match:
        return Quantize(check_bits(int(match.group(1)), f"bits in neuron {name!r}"), beta)
    raise UsageError(f"unknown neuron {name!r}; expected one of {', '.join(NEURONS)}")


def neuron_bits(name: str) -> int:
    """Bits per activation value of neuron ``name`` (32 for float)."""
    make_neuron(name)  # validates
    if name in ("pbit", "pbit-unipolar", "sign"):
        return 1
    if name.startswith("quant:"):
        return int(name.split(":")[1])
    return 32
