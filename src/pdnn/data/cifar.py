"""Reading the canonical CIFAR-10 python batches (``cifar-10-batches-py``).

Each batch file is a Python pickle of a dict with ``b'data'`` (uint8 ``[N, 3072]``: 1024 red,
then 1024 green, then 1024 blue values, row-major 32x32) and ``b'labels'`` (N ints). The
training split is ``data_batch_1`` .. ``data_batch_5`` in that order, the test split
``test_batch``; ``batches.meta`` holds ``b'label_names'``.

Unpickling runs code named by the file, and data directories are often shared or downloaded, so
the unpickler here only lets through what these files legitimately contain (numpy arrays, lists,
dicts, bytes): a tampered batch fails with an error instead of executing something.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .idx import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_ALLOWED = {
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
    ("__builtin__", "bytes"),  # ... and empty bytes (an empty array's buffer, an empty label)
    ("builtins", "bytes"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """Unpickle a CIFAR batch file with the restricted unpickler; errors name the file."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError:
        raise
    except Exception as err:  # a damaged pickle raises many types (a bad encoding name: LookupError)
        raise DataError(f"{path}: not a readable CIFAR batch pickle ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the pickle, got {type(obj).__name__}")
    return obj


def read_batch(path: Path, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file as images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]``."""
    batch = read_pickle(path)
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: missing b'data' or b'labels'; keys are {sorted(map(str, batch))}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' is {data.dtype} {list(data.shape)}; expected uint8 [N, 3072]")
    labels = np.asarray(labels)
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but labels of shape {list(labels.shape)}")
    if len(labels) and labels.dtype.kind not in "iu":  # a cast would truncate 2.9 to class 2
        raise DataError(f"{path}: labels of type {labels.dtype} (first {labels[0]}); expected integers")
    labels = labels.astype(np.int64)
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if len(outside):
        raise DataError(f"{path}: label {outside[0]} out of range; expected 0..{num_classes - 1}")
    x = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    return x, torch.from_numpy(labels)


def read_classes(folder: Path) -> list[str]:
    """Class names from ``batches.meta`` if present (which must be the canonical CIFAR-10 names, in
    their order), else the canonical names."""
    meta = folder / META
    if not meta.is_file():
        return list(CLASSES)
    names = read_pickle(meta).get(b"label_names")
    if not isinstance(names, list):
        raise DataError(f"{meta}: no b'label_names' list")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if names != list(CLASSES):  # the batches' label i is CIFAR-10's class i
        raise DataError(f"{meta}: label_names {', '.join(names)}; expected CIFAR-10's {', '.join(CLASSES)}, "
                        "in this order")
    return names


def write_batches(folder: Path, writer) -> list[str]:
    """The whole dataset from a ``cifar-10-batches-py`` folder into ``writer`` (a
    :class:`~pdnn.data.cache.CacheWriter`), one batch file at a time. Returns the classes."""
    classes = read_classes(folder)
    for name in TRAIN_BATCHES:
        writer.add("train", *read_batch(folder / name, len(classes)))
    writer.add("test", *read_batch(folder / TEST_BATCH, len(classes)))
    return classes
