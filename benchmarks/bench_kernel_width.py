"""The fused p-bit kernel with its loops at 16 lanes, as the library compiles them, and at LLVM's own vector width (8 lanes on AVX2 and AVX-512 CPUs), in one run; and the table kernel beside them.

Usage: python benchmarks/bench_kernel_width.py [--threads 2] [--rounds 3] [--repeats 200] [--json PATH]

The library compiles the loops over a chunk's elements (:func:`pdnn.pbit_kernel.loop_signatures`)
with LLVM's ``-force-vector-width=16``. This script compiles the same Python functions once more
without it and a copy of the parallel kernel that calls them (:func:`at_llvms_width`), checks that
both kernels give the library's bits, and times them interleaved on a 256 x 2048 float32 input
with ``torch.tanh`` beside them (the best and the median of ``--repeats`` calls each). "16 lanes"
and "default lanes" are the estimate kernel; "table kernel" is the library's other kernel, every
threshold looked up (:func:`pdnn.pbit_kernel.kernel_for` keeps the faster of the two), called as
the library calls it for one copy.
"""
from __future__ import annotations

import argparse
import statistics
import time
import types

import numba
import numpy as np
import torch
from counts import output_file, positive_count, write_json

from pdnn import pbit_kernel as K


def at_llvms_width():
    """The library's parallel kernel calling its chunk loops compiled without a forced width."""
    loops = {loop.__name__: numba.njit(fastmath={"contract"})(loop.py_func) for loop in K.loop_signatures(torch.float32)}
    kernel = K._kernel.py_func
    return numba.njit(parallel=True)(types.FunctionType(kernel.__code__, {**kernel.__globals__, **loops}, kernel.__name__))


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
    kernels = {"16 lanes": K._kernel, "default lanes": at_llvms_width()}
    for name, kernel in kernels.items():
        out = np.empty_like(x.numpy())
        kernel(x.numpy(), table, 2.0, *K._halves(12345), 1, high, low, out)  # compiles here
        assert np.array_equal(out, expected.numpy())
        kernels[name] = lambda kernel=kernel, out=out: kernel(x.numpy(), table, 2.0, *K._halves(12345), 1, high, low, out)
    looked_up = np.empty_like(x.numpy())
    K._table_copy(x.numpy(), table, *K._halves(12345), high, low, looked_up)
    assert np.array_equal(looked_up, expected.numpy())
    kernels["table kernel"] = lambda: K._table_copy(x.numpy(), table, *K._halves(12345), high, low, looked_up)
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
        write_json(args.json, {"torch": torch.__version__, "numba": numba.__version__, "threads": args.threads,
                               "rounds": rounds})


if __name__ == "__main__":
    main()
