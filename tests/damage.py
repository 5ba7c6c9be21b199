"""Damaged files for the loaders' tests."""
from __future__ import annotations

import zipfile
from pathlib import Path


def corrupt_zip_member(archive: Path, member: str) -> None:
    """Flip one byte in the middle of ``member``'s stored data, so that its CRC no longer
    matches (the zip's directory stays readable)."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    raw = bytearray(archive.read_bytes())
    header = info.header_offset
    name_and_extra = int.from_bytes(raw[header + 26:header + 28], "little") + \
        int.from_bytes(raw[header + 28:header + 30], "little")
    raw[header + 30 + name_and_extra + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
