"""The in-memory dataset: uint8 tensors plus what is needed to feed them to a model.

Images stay uint8 (4x smaller than float32) until a batch is drawn; :meth:`Dataset.normalize`
turns a batch into float32 with the training split's per-channel mean and std. The statistics
are those of the *full* training split even when ``subset`` was used, so a run evaluated on a
different subset than it was trained on still sees identically normalised inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset with both splits held as tensors.

    Attributes:
        name: the dataset's name in :data:`pdnn.data.DATASETS`.
        classes: class names; label ``i`` is ``classes[i]``.
        train_x, test_x: uint8 ``[N, C, H, W]``.
        train_y, test_y: int64 ``[N]``.
        mean, std: float32 ``[C]``, per-channel statistics of the training split on the 0..1 scale.
        augmentation: the :func:`pdnn.data.augment` kind suited to the data (``"cifar"``/``"none"``).
        source: where the data was read from, for run records (a JPEG copy of CIFAR-10 gives
            slightly different accuracies from the canonical batches, so it should be stated).

    Example:
        >>> from pdnn.data import load
        >>> ds = load("demo").to("cpu")
        >>> x = ds.normalize(ds.train_x[:64])
        >>> x.dtype, tuple(x.shape)
        (torch.float32, (64, 1, 28, 28))
    """

    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    augmentation: str = "none"
    source: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images ``[..., C, H, W]`` -> float32 ``(x / 255 - mean) / std`` per channel, on
        ``x``'s device. Only uint8 is accepted: a float input could be on the 0..1 or the 0..255
        scale, and guessing wrong would silently shift every input."""
        if x.dtype != torch.uint8:
            raise TypeError(f"normalize expects uint8 images (0..255), got {x.dtype}")
        std = torch.where(self.std > 0, self.std, torch.ones_like(self.std))  # constant channel
        scale = (1 / (255 * std)).to(x.device).view(-1, 1, 1)
        shift = (self.mean / std).to(x.device).view(-1, 1, 1)
        return x.float() * scale - shift

    def to(self, device: torch.device | str) -> "Dataset":
        """A copy with every tensor on ``device`` (shares tensors already there)."""
        tensors = ("train_x", "train_y", "test_x", "test_y", "mean", "std")
        return replace(self, **{k: getattr(self, k).to(device) for k in tensors})

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train_y)}, test={len(self.test_y)}, "
                f"input_shape={self.input_shape}, classes={self.num_classes}, "
                f"device={self.device}, source={self.source!r})")
