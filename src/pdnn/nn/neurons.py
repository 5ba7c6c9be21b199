"""Neurons by name, so models, configs, the command line and the energy model share one vocabulary.

A name (``pbit``, ``pbit-unipolar``, ``tanh``, ``sigmoid``, ``sign``, ``quant:3``) is parsed once
into a :class:`NeuronSpec`, which builds the module and tells what it is without building it:

    >>> spec = NeuronSpec.parse("quant:3")
    >>> spec.kind, spec.bits, spec.stochastic
    ('quant', 3, False)
    >>> NeuronSpec.parse("pbit-unipolar").build()
    PBit(mode='unipolar', beta=1, ste='mean')
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ..checks import shown
from ..errors import UsageError
from .pbit import PBit
from .quant import Quantize, check_bits

NEURONS = ("pbit", "pbit-unipolar", "tanh", "sigmoid", "sign", "quant:k")
FLOAT_BITS = 32  # a bit width of 32 means 32-bit floating point throughout pdnn


@dataclass(frozen=True)
class NeuronSpec:
    """A parsed neuron name.

    ``kind``: ``"pbit"`` (a stochastic p-bit, ``mode`` bipolar with mean tanh or unipolar with
    mean sigmoid), ``"float"`` (``nn.Tanh`` / ``nn.Sigmoid``, the 32-bit baseline) or ``"quant"``
    (a deterministic ``bits``-bit quantised tanh; ``sign`` is ``quant:1``). ``bits``: bits per
    activation value (32 for float). ``stochastic``: the neuron draws random numbers.
    """

    name: str
    kind: str
    bits: int
    mode: str = "bipolar"

    @property
    def stochastic(self) -> bool:
        return self.kind == "pbit"

    @classmethod
    def parse(cls, name: "str | NeuronSpec") -> "NeuronSpec":
        """The spec of ``name``; a ``ValueError`` names an unknown neuron or a bad bit count."""
        if isinstance(name, NeuronSpec):
            return name
        if name in ("pbit", "pbit-unipolar"):
            return cls(name, "pbit", 1, "unipolar" if name == "pbit-unipolar" else "bipolar")
        if name in ("tanh", "sigmoid"):
            return cls(name, "float", FLOAT_BITS, "unipolar" if name == "sigmoid" else "bipolar")
        if name == "sign":
            return cls(name, "quant", 1)
        match = re.fullmatch(r"quant:(-?(?:0|[1-9]\d*))", str(name), re.ASCII)  # one spelling per width
        if match:  # (int() refuses more than 4300 digits: such a width is named as written)
            digits = match.group(1)  # (a negative one is named as a bad width, as 0 is)
            bits = int(digits) if len(digits) <= 4300 else digits
            return cls(name, "quant", check_bits(bits, f"bits in neuron {shown(name)}"))
        raise UsageError(f"unknown neuron {shown(name)}; expected one of {', '.join(NEURONS)}")

    def build(self, beta: float = 1.0) -> nn.Module:
        """The activation module. A float activation ignores ``beta`` (the preceding
        normalisation absorbs it)."""
        if self.kind == "pbit":
            return PBit(self.mode, beta)
        if self.kind == "float":
            return nn.Sigmoid() if self.mode == "unipolar" else nn.Tanh()
        return Quantize(self.bits, beta)


def make_neuron(name: "str | NeuronSpec", beta: float = 1.0) -> nn.Module:
    """Build the activation called ``name`` (see :class:`NeuronSpec`).

    ``pbit`` / ``pbit-unipolar``: stochastic p-bits (means tanh / sigmoid); ``tanh`` /
    ``sigmoid``: float activations (the 32-bit baseline; ``beta`` is absorbed by the preceding
    normalisation and ignored); ``sign``: deterministic 1-bit; ``quant:k``: deterministic k-bit
    quantised tanh, k = 1..8.
    """
    return NeuronSpec.parse(name).build(beta)


def neuron_bits(name: "str | NeuronSpec") -> int:
    """Bits per activation value of neuron ``name`` (32 for float)."""
    return NeuronSpec.parse(name).bits
