"""Drop-in ``nn.Module``s: p-bit neurons, k-bit quantisers and k-bit weight layers."""
from .neurons import NEURONS, NeuronSpec, make_neuron, neuron_bits
from .noise import DitheredQuantize, GaussianNoise, HardPBit, LogisticNoise
from .pbit import PBit
from .quant import QuantConv2d, QuantLinear, Quantize, WeightQuantizer, check_bits, computed_weight

__all__ = ["PBit", "Quantize", "QuantLinear", "QuantConv2d", "WeightQuantizer", "check_bits", "computed_weight",
           "is_stochastic", "NEURONS", "NeuronSpec", "make_neuron", "neuron_bits",
           "GaussianNoise", "LogisticNoise", "DitheredQuantize", "HardPBit"]


def is_stochastic(module) -> bool:
    """True for modules that draw random numbers on every call (p-bits, noise injectors)."""
    return bool(getattr(module, "stochastic", False))
