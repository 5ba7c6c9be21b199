"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian int32
dimensions, then the values in C order. Only unsigned bytes (type ``0x08``) occur in these
datasets, so only they are accepted. Files may be gzipped (``.gz``, recognised by content, not by
name). Everything is checked against the header -- magic, type, and that the payload has exactly
the size the dimensions promise -- because a truncated download otherwise decodes into a
plausible-looking but wrong tensor. Errors name the file and what was wrong.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch

from ..errors import UsageError

UBYTE = 0x08
_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
               0x0D: "float32", 0x0E: "float64"}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(UsageError):
    """A source data file exists but its contents are not what the format requires."""


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if it is gzip (a truncated gzip is reported, not half-read)."""
    raw = Path(path).read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(f"{path}: corrupt or truncated gzip data ({err})") from err


def parse_idx(data: bytes, name: str = "<bytes>", dimensions: tuple[int, str] | None = None) -> torch.Tensor:
    """Decode IDX ``data`` into a uint8 tensor of the shape its header gives; ``name`` is used in
    error messages. ``dimensions``: the count the file must have and what it holds, checked before
    the sizes (a labels file with an images file's magic read as a 21-digit "truncated" size)."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or ndim == 0:
        raise DataError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()}; expected 0x0000 then a type byte "
            "and a dimension count >= 1 (is this an IDX file?)"
        )
    if dtype != UBYTE:
        kind = _TYPE_NAMES.get(dtype, "unknown type")
        raise DataError(f"{name}: IDX type 0x{dtype:02x} ({kind}); expected 0x08 (unsigned byte)")
    if dimensions is not None and ndim != dimensions[0]:
        swapped = ndim in (1, 3)  # (the other file of an images-and-labels pair)
        raise DataError(f"{name}: its IDX magic number 0x{data[:4].hex()} gives {ndim} dimension{'s' * (ndim > 1)}; "
                        f"expected {dimensions[0]} for {dimensions[1]} (0x{data[:3].hex()}{dimensions[0]:02x})"
                        + (": is it the other file of the set, renamed?" if swapped else ""))
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                        f"file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(shape)
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise DataError(f"{name}: {what}: dimensions {list(shape)} need {expected} bytes of data, "
                        f"found {found}")
    if expected == 0:
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(memoryview(data)[header:]), dtype=torch.uint8).reshape(shape)


def read_idx(path: str | Path, dimensions: tuple[int, str] | None = None) -> torch.Tensor:
    """Read an IDX file (raw or gzipped) into a uint8 tensor; raises :class:`DataError` naming
    the file if it is corrupt or truncated (``dimensions``: as :func:`parse_idx`)."""
    return parse_idx(read_bytes(Path(path)), str(path), dimensions)


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as IDX (used to write the embedded demo and test fixtures)."""
    if tensor.dtype != torch.uint8:
        raise TypeError(f"IDX writing supports uint8 tensors only, got {tensor.dtype}")
    header = struct.pack(f">HBB{tensor.dim()}I", 0, UBYTE, tensor.dim(), *tensor.shape)
    return header + tensor.contiguous().cpu().numpy().tobytes()


def load_idx_split(images: Path, labels: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One split from an images file ``[N, H, W]`` and a labels file ``[N]``: returns images
    ``[N, 1, H, W]`` uint8 and labels int64, after checking that they belong together."""
    x, y = read_idx(images, (3, "images [N, H, W]")), read_idx(labels, (1, "labels [N]"))
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    if len(y) and int(y.max()) >= num_classes:
        raise DataError(f"{labels}: label {int(y.max())} out of range; expected 0..{num_classes - 1}")
    return x.unsqueeze(1), y.long()
