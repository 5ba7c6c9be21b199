"""Keep large freed CPU buffers in the process instead of returning them to the OS.

T samples folded into the batch make activation tensors of tens of megabytes. glibc serves
every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it
on ``free``, so each such tensor is page-faulted in from zero on every use: at T = 8 on a CPU
that costs more than the arithmetic (``benchmarks/bench_train_step.py`` measures it).
Raising the mmap and trim thresholds makes glibc reuse those buffers, as PyTorch's CUDA caching
allocator does on the GPU. The setting is process-wide, so only entry points (the ``pdnn``
command, benchmarks) call it, never the library on import.
"""
from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
LIMIT = 1 << 30  # buffers up to 1 GiB are kept for reuse
_kept = False


def keep_large_buffers() -> bool:
    """Tell glibc's allocator to reuse buffers up to 1 GiB; ``False`` where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    global _kept
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, LIMIT))
    return _kept


def large_buffers_kept() -> bool:
    """Whether :func:`keep_large_buffers` has told the allocator to keep them in this process."""
    return _kept
