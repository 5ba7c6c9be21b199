"""Data augmentation as batched tensor ops on the batch's own device.

As in airbench, a whole batch is augmented by one indexing operation, so augmentation costs
about as much as a copy and never leaves the GPU. Random crop with padding and horizontal flip
are both a choice of source pixel for every output pixel: output ``(i, j)`` of image ``n`` reads
input row ``i + dy[n] - pad`` and column ``j + dx[n] - pad`` (mirrored, ``W - 1 - j``, when
``n`` is flipped). Padding never materialises: a row or column outside the image is reflected back
inside (``padding="reflect"``) or reads as zero (``padding="zero"``). This works for uint8 and
float alike, and gives exactly what ``F.pad`` + crop + ``torch.flip`` would.

Randomness comes only from the ``generator`` argument, which must live on the batch's device (a
CPU generator cannot drive CUDA draws; the error says so instead of silently using another
stream), so the same seed gives the same augmentation on the same device.
"""
from __future__ import annotations

import numbers

import torch

KINDS = ("cifar", "none")
PADDINGS = ("reflect", "zero")


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror indices in ``[-size + 1, 2 * size - 2]`` into ``[0, size - 1]`` (edge not repeated,
    as ``F.pad(mode="reflect")``)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4, padding: str = "reflect",
              flip: bool = True) -> torch.Tensor:
    """Random ``pad``-pixel translation (crop of the padded image back to its size) and, if
    ``flip``, a horizontal flip with probability 1/2, independently per image of ``x`` ``[N, C, H, W]``.

    Draws, in order: ``dy`` and ``dx`` in ``0..2*pad`` (``[N]`` each), then the flip bits ``[N]``.
    """
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; expected one of {', '.join(PADDINGS)}")
    n, _, height, width = x.shape
    if not isinstance(pad, numbers.Integral) or pad < 0:
        raise ValueError(f"pad {pad!r}: expected a whole number of pixels >= 0")
    if padding == "reflect" and pad >= min(height, width):
        raise ValueError(f"reflect padding of {pad} needs images larger than {pad} pixels, "
                         f"got {height}x{width}")
    device = x.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    rows = torch.arange(height, device=device) + (dy - pad)[:, None]  # [N, H]
    cols = torch.arange(width, device=device).expand(n, width)  # [N, W]
    if flip:
        flipped = torch.randint(0, 2, (n, 1), generator=generator, device=device).bool()
        cols = torch.where(flipped, width - 1 - cols, cols)
    cols = cols + (dx - pad)[:, None]
    if padding == "reflect":
        rows, cols = _reflect(rows, height), _reflect(cols, width)
        inside = None
    else:
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=device)[None, :, None, None]
    out = x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    if inside is not None:
        out = out * inside[:, None].to(out.dtype)
    return out


def augment(x: torch.Tensor, kind: str, generator: torch.Generator | None, *, pad: int = 4,
            padding: str = "reflect") -> torch.Tensor:
    """Augment a batch ``x`` ``[N, C, H, W]`` (uint8 or float; the result has the same shape,
    dtype and device; ``x`` is not modified).

    ``kind``: ``"cifar"`` -- random crop after ``pad``-pixel padding (``"reflect"`` or ``"zero"``)
    and random horizontal flip; ``"none"`` -- ``x`` unchanged (MNIST-like data, where flips change
    meaning). ``Dataset.augmentation`` names the right kind for a dataset.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> augment(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), "cifar", g).shape
        torch.Size([8, 3, 32, 32])
    """
    if kind not in KINDS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "none":
        return x
    if x.dim() != 4:
        raise ValueError(f"augment expects a batch [N, C, H, W], got shape {list(x.shape)}")
    if generator is None:
        raise ValueError("augment needs an explicit torch.Generator (on the batch's device) "
                         "so that runs are reproducible")
    if generator.device.type != x.device.type:
        raise ValueError(f"the generator is on {generator.device} but the batch is on {x.device}; "
                         f"create it with torch.Generator(device={str(x.device)!r})")
    return crop_flip(x, generator, pad=pad, padding=padding)
