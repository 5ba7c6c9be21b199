"""Decoding a split stored as class folders of image files, in a directory or a zip.

Layout: ``<class>/<file>`` (e.g. ``airplane/0000.jpg``), relative to the directory or the zip's
root. Classes are the sorted folder names. Images are decoded with Pillow exactly once, when the
cache is built (see :mod:`pdnn.data.cache`), a chunk at a time; training never touches Pillow.

Order. Such copies are sorted by class, so "the first N examples" would be N airplanes. Examples
are therefore interleaved: the first file of every class, then the second of every class, and
so on (files in sorted order within a class). The order is deterministic, and any prefix --
what ``subset`` keeps -- is class-balanced.
"""
from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from ..progress import progress_bar
from .idx import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
_MODES = {1: "L", 3: "RGB"}
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")  # Pillow's 16- and 32-bit modes


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def is_image(parts: tuple[str, ...]) -> bool:
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES and not _hidden(parts)


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder``, through links to folders too (a class folder may be one), but
    not into a folder that holds the link (a link back up would loop). A link to nothing named as
    an image is an error: passed over, it left the dataset an image short without a word (one
    named otherwise, such as an editor's lock file ``.#1.png``, is passed over as before)."""
    files = []
    for top, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        above = Path(top).relative_to(folder).parents  # the folders the walk passed to reach top
        if any(os.path.realpath(folder / part) == real for part in above):
            folders[:] = []
            continue
        for path in (Path(top) / name for name in names):
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists() and is_image(path.relative_to(folder).parts):
                raise DataError(f"{path}: a link to {os.readlink(path)}, which does not exist; expected a file "
                                "(repair the link, or remove it to leave the file out)")
    return files


def list_images(source: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(entry, label)`` pairs of a class-folder directory or zip, interleaved by
    class (see the module docstring)."""
    if source.is_dir():
        stored = {p.relative_to(source).parts: p.relative_to(source).as_posix() for p in files_under(source)}
    else:
        try:  # read by the name stored, which may spell the same path otherwise ('./cat/1.jpg')
            with zipfile.ZipFile(source) as zf:
                stored = {PurePosixPath(n).parts: n for n in zf.namelist() if not n.endswith("/")}
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{source}: not a readable zip file ({err})") from err
    paths = [p for p in stored if is_image(p)]
    if others := sorted(p for p in stored if not is_image(p) and not _hidden(p)):
        warnings.warn(f"{source}: {len(others)} files whose suffix is no image's are left out (first "
                      f"{'/'.join(others[0])!r}); an image needs one of {', '.join(IMAGE_SUFFIXES)}", stacklevel=2)
    deep = [p for p in paths if len(p) != 2]
    if deep:
        raise DataError(f"{source}: entry {'/'.join(deep[0])!r} is not <class>/<file>; "
                        "expected every image directly inside one class folder")
    by_class: dict[str, list[str]] = {}
    for cls, name in sorted(paths):
        by_class.setdefault(cls, []).append(stored[cls, name])
    if not by_class:
        raise DataError(f"{source}: no images found; expected <class>/<file> entries "
                        f"with a suffix in {', '.join(IMAGE_SUFFIXES)}")
    classes = sorted(by_class)
    longest = max(len(v) for v in by_class.values())
    entries = [(by_class[c][i], label) for i in range(longest)
               for label, c in enumerate(classes) if i < len(by_class[c])]
    return classes, entries


CHUNK = 1024  # images decoded before they are handed to the cache writer (bounds memory)


def undecodable(source: Path, entry: str, err: Exception) -> DataError:
    """The error for an image that could not be read or decoded: Pillow's own message for a file
    it does not recognise names the in-memory buffer it was given (``<_io.BytesIO object at 0x7f…>``)."""
    from PIL import UnidentifiedImageError

    why = "not an image format Pillow recognises" if isinstance(err, UnidentifiedImageError) else err
    return DataError(f"{source}: cannot read or decode {entry!r} ({why})")


def decode_split(source: Path, shape: tuple[int, int, int], writer, split: str, desc: str = "decoding",
                 progress: bool = True) -> list[str]:
    """Decode every image of ``source`` into ``writer`` (a :class:`~pdnn.data.cache.CacheWriter`)
    as ``split``, uint8 ``[N, C, H, W]`` in chunks of :data:`CHUNK` (``shape`` = ``(C, H, W)``,
    C = 1 for greyscale or 3 for RGB; images are converted to that mode, and must already have
    that size). Returns the classes."""
    from PIL import Image  # imported here: only cache building needs Pillow

    channels, height, width = shape
    classes, entries = list_images(source)
    chunk = np.empty((min(CHUNK, len(entries)), height, width, channels), dtype=np.uint8)
    zf = None if source.is_dir() else zipfile.ZipFile(source)
    try:
        bar = progress_bar(total=len(entries), desc=desc, unit="img", enabled=progress, mininterval=0.5)
        for start in range(0, len(entries), CHUNK):
            part = entries[start:start + CHUNK]
            for k, (entry, _) in enumerate(part):
                try:  # a damaged zip entry raises BadZipFile, zlib.error or EOFError; Pillow many types
                    data = (source / entry).read_bytes() if zf is None else zf.read(entry)
                    with Image.open(io.BytesIO(data)) as im:
                        mode = im.mode
                        pixels = np.asarray(im.convert(_MODES[channels])) if mode not in WIDE_MODES else None
                except Exception as err:
                    raise undecodable(source, entry, err) from err
                if pixels is None:  # (converting would clip every value above 255 to white)
                    raise DataError(f"{source}: {entry!r} has {mode} pixels, not 8-bit ones; expected 8-bit "
                                    "greyscale, colour or palette images")
                if pixels.shape[:2] != (height, width):
                    raise DataError(f"{source}: {entry!r} is {pixels.shape[1]}x{pixels.shape[0]} pixels; "
                                    f"expected {width}x{height}")
                chunk[k] = pixels.reshape(height, width, channels)
            writer.add(split, chunk[:len(part)].transpose(0, 3, 1, 2),
                       np.array([label for _, label in part], dtype=np.int64))
            bar.update(len(part))
        bar.close()
    finally:
        if zf is not None:
            zf.close()
    return classes


def write_folders(train: Path, test: Path, shape: tuple[int, int, int], writer, progress: bool = True) -> list[str]:
    """Both splits into ``writer``; the two splits must have the same class folders. Returns the classes."""
    classes = decode_split(train, shape, writer, "train", f"decoding {train.name}", progress)
    test_classes = decode_split(test, shape, writer, "test", f"decoding {test.name}", progress)
    if test_classes != classes:
        raise DataError(f"class folders differ: {train} has {classes}, {test} has {test_classes} "
                        f"({unmatched(classes, test_classes, train.name, test.name)}; a folder with no image is "
                        "no class)")
    return classes


def unmatched(first: list[str], second: list[str], first_name: str, second_name: str) -> str:
    """Which names one list has and the other lacks (an empty class folder is easy to miss in a
    list of ten), or that the two differ only in order."""
    parts = [f"only in {name}: {', '.join(only)}" for name, only in
             ((first_name, [c for c in first if c not in second]), (second_name, [c for c in second if c not in first]))
             if only]
    return "; ".join(parts) or "the same names in another order"
