"""A small convolutional VAE whose decoder's hidden neurons are p-bits (or any pdnn neuron).

Design notes:
* The encoder is a float network (ReLU): it only serves training; generation runs the decoder
  alone, and the decoder is what the energy model costs.
* The decoder is ``Linear -> BN -> neuron -> [upsample x2 -> 3x3 conv -> BN -> neuron] ... ->
  upsample x2 -> 3x3 conv -> sigmoid``. Nearest upsampling followed by a convolution (rather than
  a transposed convolution) keeps every weight layer a k-bit ``QuantLinear``/``QuantConv2d``.
* A generated image is the mean of T decoder samples (``SampledModel(vae.decoder, T)``): pixel
  intensities in [0, 1] averaged over samples. The decoder's first ``Linear`` and its batch norm
  form the deterministic prefix computed once per latent.
* Images of 28 or 32 pixels use two upsamplings (from 7x7 or 8x8), 64 pixels three (from 8x8).
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import positive_int
from ..errors import UsageError
from ..nn import QuantConv2d, QuantLinear, check_bits, make_neuron
from .reference import _check_shape, glorot_init
from .registry import register


class VAE(nn.Module):
    """``encode(x) -> (mu, logvar)`` of a diagonal Gaussian over ``latent`` dimensions;
    ``decoder(z) -> images`` in [0, 1] of ``input_shape``.

    Shapes: ``x`` ``[B, C, H, W]`` (the dataset's normalised images), ``z`` ``[B, latent]``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent: int, input_shape: tuple[int, int, int]):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent, self.input_shape = latent, input_shape

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One reconstruction from the posterior mean (for inspection; training uses the task)."""
        return self.decoder(self.encode(x)[0])

    def extra_repr(self) -> str:
        return f"latent={self.latent}, input_shape={self.input_shape}"


def _upsamplings(height: int, width: int) -> int:
    ups = 2 if max(height, width) <= 32 else 3
    if height % 2**ups or width % 2**ups:
        raise UsageError(f"the VAE needs image sides divisible by {2**ups}, got {height}x{width}")
    return ups


@register("vae")
def vae(
    neuron: str = "pbit",
    weight_bits: int = 32,
    beta: float = 1.0,
    input_shape=(1, 28, 28),
    num_classes: int = 10,  # accepted for a uniform ModelConfig; a VAE has no classes
    width: int = 32,
    latent: int = 16,
) -> VAE:
    """Convolutional VAE; ``neuron`` and ``weight_bits`` apply to the decoder's hidden layers."""
    weight_bits = check_bits(weight_bits, "weight bits", allow_float=True)
    latent = positive_int("latent", latent)
    channels, height, width_px = _check_shape(input_shape)
    ups = _upsamplings(height, width_px)
    widths = [width * 2 ** i for i in range(ups)]  # encoder widths, fine to coarse
    h0, w0 = height // 2**ups, width_px // 2**ups

    enc: list[nn.Module] = []
    c = channels
    for w in widths:
        enc += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.ReLU()]
        c = w
    enc += [nn.Flatten(), nn.Linear(c * h0 * w0, 2 * latent)]

    dec: list[nn.Module] = [
        QuantLinear(latent, c * h0 * w0, bias=False, weight_bits=weight_bits),
        nn.BatchNorm1d(c * h0 * w0),
        make_neuron(neuron, beta),
        nn.Unflatten(1, (c, h0, w0)),
    ]
    for w in reversed(widths[:-1]):
        dec += [nn.Upsample(scale_factor=2, mode="nearest"),
                QuantConv2d(c, w, 3, padding=1, bias=False, weight_bits=weight_bits),
                nn.BatchNorm2d(w), make_neuron(neuron, beta)]
        c = w
    dec += [nn.Upsample(scale_factor=2, mode="nearest"),
            QuantConv2d(c, channels, 3, padding=1, weight_bits=weight_bits), nn.Sigmoid()]
    return glorot_init(VAE(nn.Sequential(*enc), nn.Sequential(*dec), latent, (channels, height, width_px)))


def is_generator(model: nn.Module) -> bool:
    return isinstance(model, VAE)
