"""The datasets pdnn knows, how each is found, and :func:`load`.

Loading is: find a complete copy under the data roots (:mod:`.locate`), decode it once into
uint8 tensors cached on disk (:mod:`.cache`, with :mod:`.idx`, :mod:`.cifar` or :mod:`.images`
doing the decoding), then keep the first ``subset`` examples of each split. ``demo`` is a slice
of Fashion-MNIST shipped inside the package (``embedded/``), so every machine can run something
without a download.
"""
from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checks import positive_int
from ..errors import UsageError
from . import cache, celeba, cifar, idx, images
from .dataset import Dataset
from .locate import DatasetNotFound, data_roots, find_idx_files

EMBEDDED = Path(__file__).parent / "embedded"
IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS = [str(i) for i in range(10)]


@dataclass(frozen=True)
class Spec:
    """What is known about a dataset without reading it."""

    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    augmentation: str
    how_to_get: str


_IDX_HINT = ("Pass its parent folder as --data-dir ROOT (repeatable) or PDNN_DATA=ROOT1:ROOT2. "
             "Files may be raw or gzipped.")
SPECS: dict[str, Spec] = {
    "demo": Spec((1, 28, 28), tuple(FASHION_CLASSES), "none",
                 "It ships inside the package (pdnn/data/embedded/); reinstall pdnn."),
    "fashion-mnist": Spec(
        (1, 28, 28), tuple(FASHION_CLASSES), "none",
        "To get it: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs "
        "/usr/share/datasets/fashion-mnist, found with no option), or download the four IDX files "
        "from https://github.com/zalandoresearch/fashion-mnist (data/fashion) into "
        "ROOT/fashion-mnist/. " + _IDX_HINT),
    "mnist": Spec(
        (1, 28, 28), tuple(DIGITS), "none",
        "To get it: download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (e.g. from "
        "https://ossci-datasets.s3.amazonaws.com/mnist/) into ROOT/mnist/. " + _IDX_HINT),
    "cifar10": Spec(
        (3, 32, 32), tuple(cifar.CLASSES), "cifar",
        "To get it: download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract "
        "it in ROOT (giving ROOT/cifar-10-batches-py/), or put a class-folder copy in "
        "ROOT/cifar10-jpeg/ as train.zip and test.zip (or train/ and test/ folders) with entries "
        "<class>/<image>. Then pass --data-dir ROOT (repeatable) or set PDNN_DATA=ROOT1:ROOT2."),
    "celeba": Spec(
        (3, 64, 64), ("face",), "none",
        "To get it: download img_align_celeba.zip (and optionally list_eval_partition.txt) from "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into ROOT/celeba/ (the zip, or it extracted as "
        "ROOT/celeba/img_align_celeba/). Then pass --data-dir ROOT (repeatable) or set PDNN_DATA=ROOT1:ROOT2."),
}
DATASETS = tuple(SPECS)
INPUT_SHAPES = {name: spec.input_shape for name, spec in SPECS.items()}


def describe(name: str) -> dict:
    """``{"input_shape": (C, H, W), "num_classes": K}`` of dataset ``name``, without reading data
    (enough to build a model for it)."""
    spec = _spec(name)
    return {"input_shape": spec.input_shape, "num_classes": len(spec.classes)}


def _spec(name: str) -> Spec:
    if name not in SPECS:
        raise UsageError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return SPECS[name]


@dataclass
class Source:
    """A complete copy of a dataset: the files decoding reads (they key the cache), a
    description for run records, and the decoder."""

    files: list[Path]
    description: str
    decode: Callable[[cache.CacheWriter, bool], list[str] | None]  # (writer, progress) -> classes, if named
    folder: Path  # the dataset's folder under its root: its place in the cache


def _idx_source(folder: Path, files: list[Path], num_classes: int) -> Source:
    def decode(writer: cache.CacheWriter, progress: bool) -> None:
        writer.add("train", *idx.load_idx_split(files[0], files[1], num_classes))
        writer.add("test", *idx.load_idx_split(files[2], files[3], num_classes))

    return Source(files, f"{folder} (IDX)", decode, folder)


def _idx_folder(name: str) -> str:
    """The folder under a data root that holds IDX dataset ``name``."""
    return "fashion-mnist" if name in ("demo", "fashion-mnist") else name


def _holds_itself(name: str, root: Path) -> str | None:
    """Where data root ``root`` is itself a copy of dataset ``name`` (``--data-dir
    .../fashion-mnist``), which is read only from ``ROOT/<its folder>/``: what to do instead.
    Without it such a root was passed over silently for the next one that holds the dataset.
    MNIST's and Fashion-MNIST's files have the same names, so an IDX root is told by its name
    (as given, or of the folder a link leads to) alone; CIFAR-10's batches and class folders by
    what they hold."""
    real = Path(os.path.realpath(root))
    if name == "cifar10":
        batches = all((root / n).is_file() for n in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH))
        classes = all((root / n).is_file() for n in ("train.zip", "test.zip")) or all(
            _has_cifar_classes(root / n) for n in ("train", "test"))
        folder, what = ("cifar-10-batches-py", "the python batches") if batches else ("cifar10-jpeg", "a class-folder copy")
        if not (batches or classes):
            return None
    elif name in ("celeba", "demo"):
        return None
    else:
        folder, what = _idx_folder(name), "the IDX files"
        if folder not in (root.name, real.name) or find_idx_files(root, IDX_FILES)[0] is None:
            return None
    if folder in (root.name, real.name):  # (the parent of the folder that bears the name: there it is found)
        advice = f"give its parent, {real.parent if real.name == folder else root.parent}"
    else:
        advice = f"move {'them' if name == 'cifar10' and batches else 'its two halves'} into {real / folder}/"
    return f"{root} holds {what} itself, which is read from ROOT/{folder}/: {advice}"


def _has_cifar_classes(split: Path) -> bool:
    """Whether folder ``split`` holds CIFAR-10's ten class folders, by name (another dataset's
    classes are not CIFAR-10's), among its first entries (a folder of many files is not listed
    whole; one that cannot be read holds none)."""
    try:
        with os.scandir(split) as entries:
            names = {e.name.lower() for e in itertools.islice(entries, 64) if e.is_dir()}
    except OSError:
        return False
    return set(cifar.CLASSES) <= names


def _find_idx(name: str, roots: list[Path], looked: list) -> Source | None:
    folders = [EMBEDDED] if name == "demo" else [root / _idx_folder(name) for root in roots]
    for folder in folders:
        files, why = find_idx_files(folder, IDX_FILES)
        if files is not None:
            return _idx_source(folder, files, len(SPECS[name].classes))
        hint = None if name == "demo" else _holds_itself(name, folder.parent)
        looked.append((folder, why + (f"; {hint}" if hint else "")))
    return None


def _find_cifar(roots: list[Path], looked: list) -> Source | None:
    shape = SPECS["cifar10"].input_shape
    for root in roots:
        batches = root / "cifar-10-batches-py"
        names = [*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]
        if batches.is_dir():
            missing = [n for n in names if not (batches / n).is_file()]
            if not missing:
                files = [batches / n for n in names]
                if (batches / cifar.META).is_file():
                    files.append(batches / cifar.META)
                return Source(files, f"{batches} (canonical python batches)",
                              lambda writer, progress, folder=batches: cifar.write_batches(folder, writer), batches)
            looked.append((batches, "missing " + ", ".join(missing)))
        else:
            looked.append((batches, "no such folder"))

        folder = root / "cifar10-jpeg"
        if not folder.is_dir():
            hint = _holds_itself("cifar10", root)  # (--data-dir .../cifar10-jpeg)
            looked.append((folder, "no such folder" + (f"; {hint}" if hint else "")))
            continue
        for kind, train, test in (("zip", folder / "train.zip", folder / "test.zip"),
                                  ("folders", folder / "train", folder / "test")):
            if train.exists() and test.exists():
                for path in (train, test):  # (a folder named train.zip failed in the cache's stamp with an OSError)
                    if path.is_dir() != (kind == "folders"):
                        raise idx.DataError(f"{path}: is a {'folder' if path.is_dir() else 'file'}; expected "
                                            f"{'a zip file' if kind == 'zip' else 'a folder of class folders'}")
                files = [train, test] if kind == "zip" else sorted(
                    p for split in (train, test) for p in images.files_under(split))

                def decode(writer, progress, train=train, test=test):
                    return images.write_folders(train, test, shape, writer, progress)

                return Source(files, f"{folder} (class-folder {kind}; JPEG copies differ slightly "
                              "from the canonical pixels)", decode, folder)
        halves = [path.name for path in (folder / "train.zip", folder / "test.zip", folder / "train", folder / "test")
                  if path.exists()]  # (a copy begun: name what it lacks)
        looked.append((folder, f"neither train.zip and test.zip nor train/ and test/ (only {', '.join(halves)})"
                       if halves else "neither train.zip and test.zip nor train/ and test/"))
    return None


def _find_celeba(roots: list[Path], looked: list) -> Source | None:
    for root in roots:
        folder = root / "celeba"
        partition = folder / celeba.PARTITION
        partition = partition if partition.is_file() else None
        extra = [partition] if partition else []
        if (folder / celeba.FOLDER).is_dir():
            images_dir = folder / celeba.FOLDER
            files = sorted(p for p in images_dir.iterdir() if p.is_file()) + extra
            return Source(files, f"{images_dir} (aligned images, {celeba.CROP}px centre crop to 64x64)",
                          lambda writer, progress: celeba.write_celeba(images_dir, partition, writer, progress),
                          folder)
        if (folder / celeba.ZIP).is_file():
            archive = folder / celeba.ZIP
            return Source([archive, *extra], f"{archive} (aligned images, {celeba.CROP}px centre crop to 64x64)",
                          lambda writer, progress: celeba.write_celeba(archive, partition, writer, progress),
                          folder)
        looked.append((folder, f"neither {celeba.FOLDER}/ nor {celeba.ZIP}"))
    return None


def find(name: str, roots: list[Path]) -> Source:
    """A complete copy of dataset ``name`` under exactly ``roots`` (in order), or
    :class:`DatasetNotFound` listing every place looked at."""
    spec = _spec(name)
    looked: list[tuple[Path, str]] = []
    finders = {"cifar10": _find_cifar, "celeba": _find_celeba}
    source = finders[name](roots, looked) if name in finders else _find_idx(name, roots, looked)
    if source is None:
        raise DatasetNotFound(name, looked, spec.how_to_get)
    passed = [(folder, why) for folder, why in looked if folder.exists()]  # a copy begun, or half-removed
    if passed:
        warnings.warn(f"dataset {name!r}: passed over the incomplete "
                      + "; ".join(f"{folder} ({why})" for folder, why in passed)
                      + f" and read {source.description} instead", stacklevel=3)
    named = {folder.parent for folder, _ in passed}  # (named above: not named again)
    for root in roots[:roots.index(source.folder.parent)] if source.folder.parent in roots else ():
        if (root not in named and (hint := _holds_itself(name, root))  # a root given as the dataset's own folder
                and not os.path.samefile(root, source.folder)):  # (not a link to the very copy read)
            warnings.warn(f"dataset {name!r}: read {source.description}; {hint}", stacklevel=3)
    return source


def load(name: str, roots: list[str | Path] | None = None, subset: int | None = None,
         cache_dir: str | Path | None = None, progress: bool = True) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) as a :class:`Dataset` on the CPU.

    Args:
        roots: the ``--data-dir`` values (or ``None``): searched first, then ``$PDNN_DATA``,
            then the default roots -- see :func:`data_roots`.
        subset: keep only the first ``subset`` examples of each split (``None``: all).
        cache_dir: where decoded tensors are cached (default ``$PDNN_CACHE`` or ``~/.cache/pdnn``).
        progress: show a progress bar while decoding image files.

    Raises:
        DatasetNotFound: no complete copy under any root (the message says where it looked).
        DataError: a source file is corrupt or truncated where its format can tell (the message
            names it): a zip entry's checksum, a gzip's, an IDX header's sizes, an image that does not
            decode; a JPEG whose scan data is damaged decodes to other pixels without a word, as JPEG
            holds no checksum.

    Example:
        >>> ds = load("demo", subset=256)
        >>> ds.train_x.shape, ds.num_classes
        (torch.Size([256, 1, 28, 28]), 10)
    """
    spec = _spec(name)
    if subset is not None:
        positive_int("subset", subset, "an integer >= 1 or None", most=None)
    source = find(name, data_roots(roots))
    data = cache.cached(name, source.files, lambda writer: _decode(name, spec, source, writer, progress),
                        cache_dir, source.folder)
    # copies only the kept examples out of the mapped cache: a subset never reads the whole split
    tensors = {k: torch.from_numpy(np.array(data[k][:subset])) for k in cache.ARRAYS}
    return Dataset(name=name, classes=list(data["classes"]), mean=data["mean"], std=data["std"],
                   augmentation=spec.augmentation, source=source.description, **tensors)


def _decode(name: str, spec: Spec, source: Source, writer: cache.CacheWriter, progress: bool) -> list[str]:
    classes = source.decode(writer, progress) or list(spec.classes)
    for split, what in (("train", "training"), ("test", "test")):
        if not writer.count(split):  # said now, not after an epoch of training, when it is evaluated
            raise idx.DataError(f"{source.description}: the {what} split holds no images; {name} needs both "
                                "(one to learn from, one to evaluate on)")
    for split in cache.SPLITS:
        shape = writer.image_shape(split)
        if shape is not None and shape != spec.input_shape:
            raise idx.DataError(f"{source.description}: {split}_x images have shape {shape}; "
                                f"{name} expects {spec.input_shape}")
    if list(classes) != list(spec.classes):  # label i must mean the dataset's class i
        raise idx.DataError(f"{source.description}: classes {', '.join(classes)} (label 0, 1, ...); {name} "
                            f"expects exactly {', '.join(spec.classes)}, in this order "
                            f"({images.unmatched(list(classes), list(spec.classes), 'the data', name)})")
    return classes
