"""The argparse type of the benchmarks' count options (repeats, rounds, threads, rows, batches).

Kept free of pdnn: a benchmark may time an older checkout of it, and bench_startup's own process
must import neither pdnn nor torch.
"""
from __future__ import annotations

import argparse


def positive_count(text: str) -> int:
    """An integer >= 1, else an argparse error that names the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value
