"""CelebA, aligned and cropped images (``img_align_celeba``), centre-cropped and resized to 64x64.

Layout under a data root: ``celeba/img_align_celeba/`` (a folder of ``000001.jpg`` ...) or
``celeba/img_align_celeba.zip`` (the official archive, whose entries are
``img_align_celeba/<file>``, or that folder at any depth), optionally with ``celeba/list_eval_partition.txt``.

Splits: the official partition (0 train, 1 validation, 2 test) from ``list_eval_partition.txt``
when present, else from the file numbers, which is the same partition: 1-162770 train,
162771-182637 validation, 182638-202599 test. Validation images are not used.

Preprocessing, as is customary for 64x64 CelebA generation (DCGAN and most VAE papers): the
central 140x140 square of the 178x218 image (which holds the face), resized to 64x64 with a
bilinear filter (Pillow, antialiased). CelebA has no classes here: every label is 0.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from ..progress import progress_bar
from .idx import DataError
from .images import CHUNK, WIDE_MODES, is_image, undecodable

SIZE = 64
CROP = 140
ALIGNED = (178, 218)  # width, height of every img_align_celeba image
TRAIN_LAST, TEST_FIRST = 162770, 182638  # official partition by file number
PARTITION = "list_eval_partition.txt"
FOLDER, ZIP = "img_align_celeba", "img_align_celeba.zip"


def _entries(source: Path) -> dict[str, str]:
    """Image names (``000001.jpg``...) of a folder, or of the zip's ``img_align_celeba/`` at any
    depth, each with the path that reads it. Hidden files (macOS's ``._`` forks) are skipped."""
    if source.is_dir():
        return {p.name: p.name for p in sorted(source.iterdir()) if is_image((p.name,))}
    try:
        with zipfile.ZipFile(source) as zf:
            stored = zf.namelist()  # read by the name stored, which may spell the path otherwise ('./...')
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{source}: not a readable zip file ({err})") from err
    members: dict[str, str] = {}
    for name in stored:
        n = PurePosixPath(name)
        if n.parent.name == FOLDER and is_image(n.parts):
            if n.name in members:
                raise DataError(f"{source}: {n.name} is in two {FOLDER}/ folders ({members[n.name]!r} and "
                                f"{name!r}); expected one")
            members[n.name] = name
    return dict(sorted(members.items()))


def _split_of(source: Path, names: list[str], partition: Path | None) -> dict[str, int]:
    if partition is not None:
        split = {}
        try:
            lines = partition.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{partition}: not a readable text file ({err}); expected '<file> <0|1|2>' lines") \
                from None
        for line in lines:
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{partition}: expected '<file> <0|1|2>' lines, got {line!r}")
            if split.setdefault(parts[0], int(parts[1])) != int(parts[1]):
                raise DataError(f"{partition}: {parts[0]} is listed in splits {split[parts[0]]} and {parts[1]}; "
                                "expected each image once")
        if missing := [name for name in names if name not in split]:  # (a partition of another release)
            raise DataError(f"{partition} gives no split for {len(missing)} of the {len(names)} images in "
                            f"{source} ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        return split
    split = {}
    for name in names:
        try:
            number = int(PurePosixPath(name).stem)
        except ValueError:
            raise DataError(f"{source}: {name!r} is not a numbered CelebA image, and there is no {PARTITION} "
                            "beside it to give its split") from None
        split[name] = 0 if number <= TRAIN_LAST else (1 if number < TEST_FIRST else 2)
    return split


def preprocess(image) -> np.ndarray:
    """A PIL image of the aligned set (178x218) -> uint8 ``[64, 64, 3]``: central 140x140 crop,
    resized to 64x64. Another size is refused: its centre is not where the aligned faces are."""
    from PIL import Image

    if image.size != ALIGNED:
        raise DataError("is {}x{} pixels; expected the aligned images' {}x{}".format(*image.size, *ALIGNED))
    if image.mode in WIDE_MODES:  # (converting would clip every value above 255 to white)
        raise DataError(f"has {image.mode} pixels, not 8-bit ones; expected the aligned set's 8-bit colour images")
    image = image.convert("RGB")
    (w, h), side = image.size, CROP
    left, top = (w - side) // 2, (h - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BILINEAR))


def write_celeba(source: Path, partition: Path | None, writer, progress: bool = True) -> None:
    """Decode both splits into the cache ``writer`` (see the module docstring), :data:`CHUNK`
    images at a time so that memory stays bounded whatever the number of images."""
    from PIL import Image

    members = _entries(source)
    names = list(members)
    if not names:
        raise DataError(f"{source}: no images found; expected {FOLDER}/000001.jpg ...")
    split = _split_of(source, names, partition)
    chosen = {0: [n for n in names if split.get(n) == 0], 2: [n for n in names if split.get(n) == 2]}
    for part, what in ((0, "training"), (2, "test")):
        if not chosen[part]:
            raise DataError(f"{source}: no {what} images (official partition) among its {len(names)} images")
    zf = None if source.is_dir() else zipfile.ZipFile(source)
    try:
        for part, key in ((0, "train"), (2, "test")):
            entries = chosen[part]
            chunk = np.empty((min(CHUNK, len(entries)), SIZE, SIZE, 3), dtype=np.uint8)
            bar = progress_bar(total=len(entries), desc=f"decoding CelebA {key}", unit="img", enabled=progress,
                       mininterval=0.5)
            for start in range(0, len(entries), CHUNK):
                part_names = entries[start:start + CHUNK]
                for k, name in enumerate(part_names):
                    try:  # a damaged zip entry raises BadZipFile, zlib.error or EOFError; Pillow many types
                        data = (source / name).read_bytes() if zf is None else zf.read(members[name])
                        with Image.open(io.BytesIO(data)) as im:
                            chunk[k] = preprocess(im)
                    except DataError as err:
                        raise DataError(f"{source}: {members[name]!r} {err}") from None
                    except Exception as err:
                        raise undecodable(source, members[name], err) from err
                writer.add(key, chunk[:len(part_names)].transpose(0, 3, 1, 2),
                           np.zeros(len(part_names), dtype=np.int64))
                bar.update(len(part_names))
            bar.close()
    finally:
        if zf is not None:
            zf.close()
