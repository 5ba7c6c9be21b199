"""The reference MLP and CNN, parameterised by neuron type and weight bits.

Design notes:
* Every hidden layer is ``weights -> batch norm -> neuron``; normalisation puts the
  pre-activations where a p-bit's probability is not saturated.
* After a p-bit, pooling averages (a max over +-1 bits is almost always +1).
* The first layer reads the input directly, so its weights and normalisation form the
  deterministic prefix that a ``SampledModel`` computes once for all samples.
* Weights use Glorot (Xavier) uniform initialisation, as in the paper; biases start at zero.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import positive_ints
from ..errors import UsageError
from ..nn import NeuronSpec, QuantConv2d, QuantLinear, check_bits
from .registry import register


def glorot_init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _check_shape(input_shape) -> tuple[int, int, int]:
    return positive_ints("input_shape", input_shape, "(channels, height, width)", length=3)


def _recording_shape(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """``model`` with the input shape it was built for as ``model.input_shape`` (as a VAE has
    it), which :class:`pdnn.SampledModel` names when an input of another shape fails."""
    model.input_shape = input_shape
    return model


@register("mlp")
def mlp(
    neuron: str = "pbit",
    weight_bits: int = 32,
    beta: float = 1.0,
    input_shape=(1, 28, 28),
    num_classes: int = 10,
    width: int = 256,
    depth: int = 2,
) -> nn.Module:
    """``depth`` hidden layers of ``width`` units: Linear -> BatchNorm1d -> neuron."""
    weight_bits = check_bits(weight_bits, "weight bits", allow_float=True)
    input_shape = _check_shape(input_shape)
    features = math.prod(input_shape)
    spec = NeuronSpec.parse(neuron)
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [
            QuantLinear(features, width, weight_bits=weight_bits),
            nn.BatchNorm1d(width),
            spec.build(beta),
        ]
        features = width
    layers.append(QuantLinear(features, num_classes, weight_bits=weight_bits))
    return _recording_shape(glorot_init(nn.Sequential(*layers)), input_shape)


@register("cnn")
def cnn(
    neuron: str = "pbit",
    weight_bits: int = 32,
    beta: float = 1.0,
    input_shape=(3, 32, 32),
    num_classes: int = 10,
    width: int = 32,
) -> nn.Module:
    """A VGG-style CNN: [conv-conv-pool] x 2, conv-pool, linear; widths w, 2w, 4w.

    Each conv is 3x3 with padding 1, followed by BatchNorm2d and the neuron; pooling is 2x2
    average pooling. For 32x32 inputs the classifier sees 4w x 4 x 4 features, for 28x28
    4w x 3 x 3.

    The convolution weights are channels-last, so every convolution, batch norm, p-bit and
    pooling runs in channels-last order whatever the input's layout (the activations are
    the same numbers): on the CPU this made evaluation 1.45-1.7x and a training step 1.3x
    faster (``benchmarks/bench_layout.py``).
    """
    weight_bits = check_bits(weight_bits, "weight bits", allow_float=True)
    input_shape = channels, height, width_px = _check_shape(input_shape)
    spec = NeuronSpec.parse(neuron)
    plan = [width, width, "pool", 2 * width, 2 * width, "pool", 4 * width, "pool"]
    layers: list[nn.Module] = []
    for item in plan:
        if item == "pool":
            layers.append(nn.AvgPool2d(2))
            height, width_px = height // 2, width_px // 2
            continue
        layers += [
            QuantConv2d(channels, item, 3, padding=1, bias=False, weight_bits=weight_bits),
            nn.BatchNorm2d(item),
            spec.build(beta),
        ]
        channels = item
    if height < 1 or width_px < 1:
        raise UsageError(f"input_shape {input_shape!r} is too small for three 2x2 poolings")
    layers += [nn.Flatten(), QuantLinear(channels * height * width_px, num_classes, weight_bits=weight_bits)]
    return _recording_shape(glorot_init(nn.Sequential(*layers)).to(memory_format=torch.channels_last), input_shape)
