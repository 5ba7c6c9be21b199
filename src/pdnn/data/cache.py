"""Decoded datasets cached on disk, so each source is decoded once per machine.

A cache file holds the decoded uint8 tensors (and the training split's channel statistics) of one
dataset read from one place. Its name is ``<dataset>-<where>-<stamp>.pt``: ``where`` hashes the
source files' paths, ``stamp`` their sizes and modification times. A changed source therefore
misses the cache and is decoded again (the stale file for the same place is then deleted), while
copies of a dataset in two places coexist. Files are written by :func:`pdnn.io.atomic_write` (a
temporary name in the cache directory, moved into place with ``os.replace``), so a reader (another
DDP rank, a second job) sees either no file or a whole one. A cache file that cannot be read is rebuilt with a warning:
the cache is an optimisation and must never be the reason a run fails.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..io import atomic_write

FORMAT = 1  # bump when what a cache file holds changes; old files then miss
_TENSORS = {"train_x": torch.uint8, "train_y": torch.int64, "test_x": torch.uint8,
            "test_y": torch.int64, "mean": torch.float32, "std": torch.float32}


def cache_dir(path: str | Path | None = None) -> Path:
    """The cache directory: ``path`` if given, else ``$PDNN_CACHE``, else ``~/.cache/pdnn``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("PDNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pdnn"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(directory: Path, name: str, files: list[Path]) -> Path:
    """Where the cache of dataset ``name`` decoded from ``files`` lives (see the module docstring)."""
    paths = [str(Path(f).resolve()) for f in files]
    stats = [Path(f).stat() for f in files]
    where = _digest([FORMAT, name, paths])
    stamp = _digest([[s.st_size, s.st_mtime_ns] for s in stats])
    return directory / f"{name}-{where}-{stamp}.pt"


def _valid(obj) -> bool:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return False
    if not isinstance(obj.get("classes"), list):
        return False
    return all(isinstance(obj.get(k), torch.Tensor) and obj[k].dtype == d for k, d in _TENSORS.items())


def read(path: Path) -> dict | None:
    """The cached dict at ``path``, or ``None`` if it is absent or unreadable (warns if unreadable)."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, ...: all mean "rebuild"
        warnings.warn(f"cache file {path} is unreadable ({type(err).__name__}: {err}); rebuilding it",
                      stacklevel=3)
        return None
    if not _valid(obj):
        warnings.warn(f"cache file {path} does not hold a pdnn dataset of format {FORMAT}; rebuilding it",
                      stacklevel=3)
        return None
    return obj


def write(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` atomically, and delete stale caches of the same source place.
    A cache directory that cannot be written is warned about, not fatal."""
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except OSError as err:
        warnings.warn(f"could not write the data cache {path} ({err}); the dataset will be decoded "
                      "again next time (set PDNN_CACHE to a writable directory)", stacklevel=3)
        return
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for stale in path.parent.glob(f"{prefix}*.pt"):
        if stale != path:
            stale.unlink(missing_ok=True)


def cached(name: str, files: list[Path], build: Callable[[], dict],
           directory: str | Path | None = None) -> dict:
    """The decoded dataset: from the cache if it is current, else ``build()`` (which returns the
    tensors and ``classes``), stored for next time. ``files`` are every source file ``build`` reads."""
    path = cache_path(cache_dir(directory), name, files)
    obj = read(path)
    if obj is None:
        obj = {"format": FORMAT, **build()}
        obj["mean"], obj["std"] = channel_stats(obj["train_x"])
        write(path, obj)
    return obj


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images ``[N, C, H, W]`` on the 0..1 scale, as float32.

    Summed exactly in int64 over chunks, so 50,000 CIFAR images need no float64 copy of the
    split and the result does not depend on summation order."""
    if len(x) == 0:
        raise ValueError("cannot compute channel statistics of an empty training split")
    total = torch.zeros(x.shape[1], dtype=torch.int64)
    squares = torch.zeros(x.shape[1], dtype=torch.int64)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].to(torch.int64)
        total += part.sum(dim=(0, 2, 3))
        squares += (part * part).sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total.double() / count
    var = (squares.double() / count - mean * mean).clamp_min(0)
    return (mean / 255).float(), (var.sqrt() / 255).float()
