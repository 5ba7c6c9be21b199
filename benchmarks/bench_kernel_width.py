"""The fused p-bit kernel compiled with LLVM's choice of vector width (8 lanes on AVX2 and AVX-512 CPUs) and with 16 lanes, in one run.

Usage: python benchmarks/bench_kernel_width.py [--threads 2] [--rounds 3] [--repeats 200] [--json PATH]

The library leaves the width of :func:`pdnn.pbit_kernel._kernel` to LLVM. This script compiles
the same Python function twice more, without a setting and with LLVM's ``-force-vector-width=16``
(:func:`vector_width`), checks that both give the library's bits, and times them interleaved on
a 256 x 2048 float32 input with ``torch.tanh`` beside them (the best and the median of
``--repeats`` calls each).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager

import llvmlite.binding as llvm
import numba
import numpy as np
import torch
from counts import output_file, positive_count

from pdnn import pbit_kernel as K


@contextmanager
def vector_width(lanes: int):
    """Make LLVM's loop vectoriser use ``lanes`` lanes for what numba compiles inside (0: its
    cost model decides, the default). The setting is process-wide, so it is held only while a
    kernel compiles."""
    if lanes:
        llvm.set_option("", f"-force-vector-width={lanes}")
    try:
        yield
    finally:
        if lanes:
            llvm.set_option("", "-force-vector-width=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--rounds", type=positive_count, default=3)
    parser.add_argument("--repeats", type=positive_count, default=200)
    parser.add_argument("--json", type=output_file)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(256 * 2048)
    expected = K.bits(x, "bipolar", 1.0, 12345)  # also starts numba's threads at --threads
    table, (high, low) = K.thresholds("bipolar", 1.0, torch.float32), K._LEVELS["bipolar", torch.float32]
    kernels = {}
    for lanes in (0, 16):
        with vector_width(lanes):
            kernel = numba.njit(parallel=True, fastmath={"contract"})(K._kernel.py_func)
            out = np.empty_like(x.numpy())
            kernel(x.numpy(), table, 2.0, *K._halves(12345), 1, high, low, out)  # compiles here
        assert np.array_equal(out, expected.numpy())
        kernels[f"{lanes or 'default'} lanes"] = lambda kernel=kernel, out=out: kernel(
            x.numpy(), table, 2.0, *K._halves(12345), 1, high, low, out)
    result = torch.empty_like(x)
    kernels["torch.tanh"] = lambda: torch.tanh(x, out=result)
    rounds = []
    for number in range(1, args.rounds + 1):
        times = {name: [] for name in kernels}
        for _ in range(args.repeats):
            for name, run in kernels.items():
                began = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - began)
        row = {name: {"best_us": min(t) * 1e6, "median_us": statistics.median(t) * 1e6} for name, t in times.items()}
        rounds.append(row)
        wide, narrow = row["16 lanes"], row["default lanes"]
        print(f"round {number}: " + ", ".join(f"{n} {r['best_us']:.0f}/{r['median_us']:.0f} us" for n, r in row.items())
              + f"; 16/default lanes {wide['best_us'] / narrow['best_us']:.3f} (best), "
              f"{wide['median_us'] / narrow['median_us']:.3f} (median)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "numba": numba.__version__,
                                         "threads": args.threads, "rounds": rounds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
