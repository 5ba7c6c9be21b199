"""The argparse types of the benchmarks' count options (repeats, rounds, threads, rows, batches)
and of their ``--json`` files, and the writing of those files.

Kept free of pdnn: a benchmark may time an older checkout of it, and bench_startup's own process
must import neither pdnn nor torch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path


def positive_count(text: str) -> int:
    """An integer in [1, 2**31 - 1] (torch takes threads and sizes as C ints), else an argparse
    error that names the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"expected an integer in [1, 2**31 - 1], got {text!r}")
    return value


def output_file(text: str) -> Path:
    """A file to write the measurements to: its folder is made now, so that a path that cannot be
    written is refused before the measurement, not after it (its times would be lost)."""
    path = Path(text)
    try:
        folder = path.is_dir()
    except OSError as err:  # a name too long for the file system, say
        raise argparse.ArgumentTypeError(f"{text!r}: {err.strerror}") from None
    if folder:
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; expected a file")
    written = path  # where the file goes: a link's target
    if path.is_symlink():
        try:
            written = path.resolve()
        except (OSError, RuntimeError):  # a loop of links (RuntimeError before Python 3.13)
            written = None
        if written is None or not written.parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a link to {os.readlink(path)!r}, which cannot be "
                                             "reached; remove the link or name another file")
    try:
        written.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot make its folder ({err.strerror})") from None
    try:  # a file written and removed: a folder that exists may still take none (read-only, /proc)
        tempfile.TemporaryFile(dir=written.parent).close()
    except OSError as err:
        folder = "its folder" if written is path else f"{written.parent}, where it links"
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write into {folder} ({err.strerror})") from None
    return path


def cpu_model() -> str:
    """The processor's name and its vector extensions, which the ratios depend on (MKL's GEMV,
    tanh and the p-bit kernel scale differently on different processors); ``platform.processor()``
    is often empty on Linux."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    notable = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags]
    return f"{name} ({' '.join(notable)})"


def write_json(path: Path, record: dict) -> None:
    """Write ``record``, with the processor it was measured on first, to ``path`` (a link: to its
    target) through a file beside it renamed over it: a write that fails (a full disk, a kill)
    leaves the file that was there, not half of the new one."""
    target = path.resolve() if path.is_symlink() else path
    part = target.with_name(f".{target.name}.{os.getpid()}.part")  # (open: the permissions the umask gives)
    try:
        with open(part, "w") as f:
            f.write(json.dumps({"cpu": cpu_model(), **record}, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
