"""Datasets as uint8 tensors, decoded once and cached on disk, with on-device augmentation.

    >>> import torch
    >>> from pdnn.data import load, augment
    >>> ds = load("demo").to("cpu")      # or "fashion-mnist", "mnist", "cifar10", "celeba"; any device
    >>> x = augment(ds.train_x[:64], ds.augmentation, torch.Generator())  # a generator on that device
    >>> ds.normalize(x).shape            # what a model reads
    torch.Size([64, 1, 28, 28])

Modules: :mod:`.catalog` (which datasets exist, :func:`load`), :mod:`.locate` (data roots),
:mod:`.idx`, :mod:`.cifar`, :mod:`.images`, :mod:`.celeba` (decoders), :mod:`.cache` (the on-disk cache),
:mod:`.dataset` (:class:`Dataset`), :mod:`.augment`.
"""
from .augment import augment
from .cache import cache_dir
from .catalog import DATASETS, INPUT_SHAPES, describe, load
from .dataset import Dataset
from .idx import DataError
from .locate import DatasetNotFound, data_roots

__all__ = ["load", "describe", "DATASETS", "INPUT_SHAPES", "Dataset", "augment", "data_roots",
           "DatasetNotFound", "DataError", "cache_dir"]
