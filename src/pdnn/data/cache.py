"""Decoded datasets cached on disk, so each source is decoded once per machine.

A cache entry is a directory ``<dataset>-<where>-<stamp>/``: ``where`` hashes the dataset's
folder as found (links not followed, nor ``link/..`` collapsed, so copies linked into one content
store stay apart), ``stamp`` each source file's path with links resolved, its size and its
modification time, and a sha256 of the first and last :data:`SAMPLED` bytes of up to
:data:`SAMPLED_FILES` of the files (all of a dataset of a few files; evenly spread over the
60,000 images of a folder of class folders, which would otherwise all be read at every start).
A changed source -- a file rewritten, added or removed, a link aimed at another copy, a folder
replaced by another version's copy that kept its timestamps (``cp -a``, ``rsync -a``, a Nix
store's mtime of 1) -- therefore misses the cache and is decoded again (the stale entry for the
same place is then deleted), while copies of a dataset in two places coexist. Not seen (delete
the entry): a file rewritten with its old size, its bytes at both ends and its modification time
set back, and such a copy that differs only in images of a folder source that were not sampled.
The status-change time or inode would see those, but they move on ``chmod`` and differ between
machines that install one package, which would make a cache shared between them decode again
and again; hashing every byte would read a dataset's gigabytes at every start.
The entry holds each array as a raw file (``train_x.bin``, ``train_y.bin``, ``test_x.bin``,
``test_y.bin``) and ``meta.json`` (format, shapes, classes, the training split's channel
statistics and the labels' sha256).

Memory. Decoders stream chunks into a :class:`CacheWriter`, which appends them to the raw files
and sums the channel statistics as they pass, so building the cache holds one chunk at a time,
not the dataset. Readers map the raw files (``np.memmap``) and copy only the examples a run
keeps: ``--subset 500`` of CIFAR-10 reads 1.5 MB of images, not 184 MB.

Entries are built in a temporary directory next to their final place and renamed into it, so a
reader (another DDP rank, a second job) sees either no entry or a whole one. An entry that cannot
be read -- damaged, or written in another format (``FORMAT``) -- is rebuilt with a warning: the
cache is an optimisation and must never be the reason a run fails. Damage is found by the files'
sizes and by the labels' checksums (a label changed in place would make training fail with an
index error, or evaluation score against the wrong classes). The images are not checksummed: any
byte is a valid pixel, and checking them would read the whole split, which a subset never does.
(Format 1 caches were single ``<dataset>-*.pt`` files; they are no longer read and may be
deleted.)
"""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..io import folder_mode, remove_orphans, temporary_prefix, write_json
from .idx import DataError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a disk or quota filled up, or a file size limit reached

FORMAT = 4  # bump when what an entry holds changes (4: .jpe and .jfif files decoded); other formats are rebuilt
SAMPLED = 1 << 16  # bytes read at each end of a sampled source file for its stamp
SAMPLED_FILES = 64  # source files sampled so
META = "meta.json"
SPLITS = ("train", "test")
ARRAYS = {"train_x": np.uint8, "train_y": np.int64, "test_x": np.uint8, "test_y": np.int64}
_STATS_CHUNK = 1024  # images per step of the channel sums (bounds their int64 temporaries)


def cache_dir(path: str | Path | None = None) -> Path:
    """The cache directory: ``path`` if given, else ``$PDNN_CACHE``, else ``~/.cache/pdnn``, or, for
    a user without a home directory (a container's), ``pdnn-cache-<uid>`` in the temporary folder."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("PDNN_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        return Path.home() / ".cache" / "pdnn"
    except RuntimeError:
        return Path(tempfile.gettempdir()) / f"pdnn-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(directory: Path, name: str, files: list[Path], place: Path | None = None) -> Path:
    """Where the cache of dataset ``name`` decoded from ``files`` lives (see the module docstring);
    ``place``: the dataset's folder (default: the folder the files share)."""
    paths = [str(Path(f).absolute()) for f in files]  # (absolute() keeps link/..: where the link's target's parent is)
    folder = str(Path(place).absolute()) if place is not None else os.path.commonpath(paths) if paths else ""
    where = _digest([name, folder])
    sampled = set(np.linspace(0, len(paths) - 1, min(len(paths), SAMPLED_FILES)).round().astype(int).tolist())
    stamp = _digest([_file_stamp(Path(p), i in sampled) for i, p in enumerate(paths)])
    return directory / f"{name}-{where}-{stamp}"


def _file_stamp(path: Path, sampled: bool) -> list:
    """What tells a source file's contents apart cheaply: its resolved path, size, modification
    time and, if ``sampled``, the sha256 of its first and last :data:`SAMPLED` bytes."""
    stat = path.stat()
    if not sampled:
        return [os.path.realpath(path), stat.st_size, stat.st_mtime_ns]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLED))
        if stat.st_size > SAMPLED:
            f.seek(max(SAMPLED, stat.st_size - SAMPLED))
            digest.update(f.read(SAMPLED))
    return [os.path.realpath(path), stat.st_size, stat.st_mtime_ns, digest.hexdigest()]


class CacheWriter:
    """Where a decoder puts a dataset: chunks of uint8 images ``[n, C, H, W]`` and int64 labels
    ``[n]`` per split, appended to the entry's raw files in the order given."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._files = {}
        self._shapes = {split: None for split in SPLITS}  # one image's (C, H, W)
        self._counts = dict.fromkeys(SPLITS, 0)
        self._sums = self._squares = None
        self._label_hashes = {f"{split}_y": hashlib.sha256() for split in SPLITS}

    def add(self, split: str, images, labels) -> None:
        images = np.ascontiguousarray(images.numpy() if isinstance(images, torch.Tensor) else images)
        labels = np.ascontiguousarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels,
                                      dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
            raise ValueError(f"a {split} chunk must be uint8 images [n, C, H, W] with n labels, got "
                             f"{images.dtype} {list(images.shape)} and labels {list(labels.shape)}")
        shape = images.shape[1:]
        if self._shapes[split] not in (None, shape):
            raise ValueError(f"{split} images of shape {shape} after images of shape {self._shapes[split]}")
        self._shapes[split] = shape
        for key, array in ((f"{split}_x", images), (f"{split}_y", labels)):
            if key not in self._files:
                self._files[key] = open(self.directory / f"{key}.bin", "wb")
            self._files[key].write(array.data)
        self._label_hashes[f"{split}_y"].update(labels.data)
        self._counts[split] += len(images)
        if split == "train":
            self._add_to_sums(images)

    def count(self, split: str) -> int:
        """How many images were added to ``split`` so far."""
        return self._counts[split]

    def image_shape(self, split: str) -> tuple[int, ...] | None:
        """``(C, H, W)`` of the images added to ``split`` so far (``None``: none yet)."""
        return self._shapes[split]

    def _add_to_sums(self, images: np.ndarray) -> None:
        # exact: int64 sums do not depend on the order or size of the chunks
        if self._sums is None:
            self._sums = np.zeros(images.shape[1], dtype=np.int64)
            self._squares = np.zeros(images.shape[1], dtype=np.int64)
        for start in range(0, len(images), _STATS_CHUNK):
            part = images[start:start + _STATS_CHUNK].astype(np.int64)
            self._sums += part.sum(axis=(0, 2, 3))
            self._squares += (part * part).sum(axis=(0, 2, 3))

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    def finish(self, classes: list[str]) -> dict:
        """Close the files and write ``meta.json``, which makes the entry complete."""
        self.close()
        if not self._counts["train"]:
            raise DataError("the training split is empty: there is nothing to learn from or to normalise by")
        shapes = {}
        for split in SPLITS:
            image = self._shapes[split] or self._shapes["train"]
            shapes[f"{split}_x"] = [self._counts[split], *image]
            shapes[f"{split}_y"] = [self._counts[split]]
            for key in (f"{split}_x", f"{split}_y"):
                (self.directory / f"{key}.bin").touch()  # an empty split still has its files
        count = self._counts["train"] * math.prod(self._shapes["train"][1:])
        mean, std = stats_from_sums(self._sums, self._squares, count)
        meta = {"format": FORMAT, "classes": list(classes), "shapes": shapes,
                "mean": mean.tolist(), "std": std.tolist(),
                "labels_sha256": {key: h.hexdigest() for key, h in self._label_hashes.items()}}
        write_json(self.directory / META, meta)
        return meta


def stats_from_sums(sums, squares, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std on the 0..1 scale, as float32, from exact integer sums of the
    uint8 values and of their squares over ``count`` values per channel."""
    mean = torch.as_tensor(sums, dtype=torch.float64) / count
    var = (torch.as_tensor(squares, dtype=torch.float64) / count - mean * mean).clamp_min(0)
    return (mean / 255).float(), (var.sqrt() / 255).float()


def read(path: Path) -> dict | None:
    """The entry at ``path`` as ``{"classes", "mean", "std", "train_x", ...}`` with the arrays as
    read-only ``np.memmap`` (copy what you keep), or ``None`` if there is no entry; an entry that
    is damaged or of another format is warned about and ``None`` returned, so it is rebuilt."""
    if not path.exists():
        return None
    meta, why = _checked_meta(path)
    if meta is not None:
        try:
            return _mapped(path, meta)
        except OSError as err:  # (removed by another process since it was checked)
            why = f"is unreadable ({err})"
    warnings.warn(f"cache entry {path} {why}; rebuilding it", stacklevel=3)
    return None


def _mapped(path: Path, meta: dict) -> dict:
    entry = {"classes": meta["classes"], "mean": torch.tensor(meta["mean"], dtype=torch.float32),
             "std": torch.tensor(meta["std"], dtype=torch.float32)}
    for key, dtype in ARRAYS.items():
        shape = tuple(meta["shapes"][key])
        entry[key] = (np.memmap(path / f"{key}.bin", dtype=dtype, mode="r", shape=shape) if math.prod(shape)
                      else np.empty(shape, dtype=dtype))  # an empty file cannot be mapped
    return entry


def _why_unreadable(path: Path) -> str | None:
    return _checked_meta(path)[1]


def _well_formed(meta: dict) -> bool:
    """Whether ``meta`` has the fields an entry's ``meta.json`` holds, of their types and ranges."""
    shapes, channels = meta["shapes"], meta["shapes"]["train_x"][1]
    counts = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for key in ARRAYS for n in shapes[key])
    classes = isinstance(meta["classes"], list) and all(isinstance(c, str) for c in meta["classes"])
    statistics = all(len(meta[k]) == channels and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in meta[k])
                     for k in ("mean", "std"))
    return counts and classes and statistics and set(meta["labels_sha256"]) == {"train_y", "test_y"}


def _checked_meta(path: Path) -> tuple[dict | None, str | None]:
    """The entry's ``meta.json`` once its files are checked against it, or why it cannot be read."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as err:
        return None, f"is unreadable ({type(err).__name__}: {err})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        return None, f"is of format {found!r}, not {FORMAT}"
    try:
        if not _well_formed(meta):
            return None, "is damaged (its shapes, classes, statistics or checksums are malformed)"
        for key, dtype in ARRAYS.items():
            expected = math.prod(meta["shapes"][key]) * np.dtype(dtype).itemsize
            size = (path / f"{key}.bin").stat().st_size
            if size != expected:
                return None, f"is damaged ({key}.bin holds {size} bytes, expected {expected})"
        for key, expected in meta["labels_sha256"].items():
            if hashlib.sha256((path / f"{key}.bin").read_bytes()).hexdigest() != expected:
                return None, f"is damaged ({key}.bin does not match its sha256)"
    except Exception as err:  # (a meta.json edited or damaged into any shape: the cache must never fail a run)
        return None, f"is unreadable ({type(err).__name__}: {err})"
    return meta, None


def cached(name: str, files: list[Path], build: Callable[[CacheWriter], list[str]],
           directory: str | Path | None = None, place: Path | None = None) -> dict:
    """The decoded dataset (as :func:`read` returns it): from the cache if it is current, else
    built by ``build(writer)`` -- which streams the splits into ``writer`` and returns the class
    names -- and kept for next time. ``files`` are every source file ``build`` reads, ``place``
    the dataset's folder (see :func:`cache_path`).

    A cache directory that cannot be written, or that fills up as the entry is written, is warned
    about, not fatal: the entry is then built in a temporary directory and deleted once mapped.
    So is an entry in the way that cannot be moved (another user's, in a shared folder with the
    sticky bit): the entry built is read from where it was built, and deleted once mapped."""
    path = cache_path(cache_dir(directory), name, files, place)
    entry = read(path)
    if entry is not None:
        return entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp"))
    except OSError as err:
        problem = err
    else:
        try:
            _build(staging, build)
            os.chmod(staging, folder_mode())  # a shared cache, readable by the user's group
            try:
                _publish(staging, path)
                problem = None
            except OSError as err:  # an entry in the way that this user cannot move
                _not_kept(path, err)
                return read(staging)  # mapped files stay readable after the directory is removed
        except OSError as err:  # the cache's disk filled up as the entry was written; any other error is raised
            if err.errno not in FULL:
                raise
            problem = err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if problem is None:
            _remove_stale(path)
            remove_orphans(path)  # the staging folders of builds that were killed
            if (entry := read(path)) is not None:
                return entry
            problem = "another process removed the entry as it was published"
    _not_kept(path, problem)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"pdnn-{name}-"))
        _build(staging, build)
        return read(staging)  # mapped files stay readable after the directory is removed
    except OSError as err:  # this disk full too: said with both places, not as a bare "[Errno 28]"
        if err.errno not in FULL:
            raise
        raise DataError(f"no room to decode {name} in the temporary folder {tempfile.gettempdir()} "
                        f"({err.strerror}), where it went because the data cache {path.parent} could not be written "
                        f"({problem}); free space, or set PDNN_CACHE or TMPDIR to a folder with room") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _not_kept(path: Path, problem) -> None:
    warnings.warn(f"could not write the data cache in {path.parent} ({problem}); the dataset will be decoded "
                  "again next time (set PDNN_CACHE to a writable directory)", stacklevel=3)


def _build(staging: Path, build: Callable[[CacheWriter], list[str]]) -> None:
    """An entry written by ``build`` into the folder ``staging``."""
    writer = CacheWriter(staging)
    try:
        writer.finish(build(writer))
    finally:
        writer.close()


def _publish(staging: Path, path: Path) -> None:
    """Rename the complete entry ``staging`` to ``path``. If an entry is already there, another
    process finished first (keep it) or it was unreadable (replace it)."""
    try:
        os.rename(staging, path)
        return
    except OSError:
        if _why_unreadable(path) is None:
            return
    old = path.with_name(f"{temporary_prefix(path)}old.tmp")  # named so that remove_orphans finds it if killed
    try:
        os.rename(path, old)
    except FileNotFoundError:  # another process moved the unreadable entry away first
        pass
    try:
        os.rename(staging, path)
    except OSError:  # another process published between the two renames: keep its entry
        if _why_unreadable(path) is not None:
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale(path: Path) -> None:
    """Delete entries of the same dataset place whose sources have since changed, and the staging
    folders of their builds that were killed."""
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*"):
        if stale != path and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    remove_orphans(path.with_name(prefix), any_ending=True)
