"""The fixed cost of a call: a p-bit layer against ``nn.Tanh``, and ``SampledModel`` against the
plain forward, on inputs small enough that the arithmetic does not hide it.

Usage: python benchmarks/bench_call_overhead.py [--threads 2] [--number 2000] [--json PATH]

Rows (no autograd; each time is the best of 7 runs of ``--number`` calls, per call):

* ``pbit``/``tanh`` on 1 x 16, 1 x 2048, 16 x 2048 and 256 x 2048 inputs (a seeded ``PBit``
  against ``nn.Tanh``);
* ``plain``/``T=1``/``T=16``: the MLP 784-16-16-16-10 at batch 1, a plain forward against
  ``SampledModel`` at T = 1 and T = 16 (its per-call work: the plan key, the generators, the
  folded graph's call, the unfolding and the mean).

Only public API is used, so the same script times an older checkout (``PYTHONPATH=<it>/src``).
"""
from __future__ import annotations

import argparse
import timeit

import torch
from counts import output_file, positive_count, write_json
from torch import nn

from pdnn import SampledModel
from pdnn.malloc import keep_large_buffers
from pdnn.models import create
from pdnn.nn import PBit


def per_call(fn, number: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=7)) / number


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--number", type=positive_count, default=2000)
    parser.add_argument("--json", type=output_file)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_buffers()
    pbit, tanh = PBit(), nn.Tanh()
    pbit.generator = torch.Generator().manual_seed(0)
    rows = []
    for shape in [(1, 16), (1, 2048), (16, 2048), (256, 2048)]:
        x = torch.randn(shape)
        number = max(20, args.number * 16 // max(16, x.numel() // 128))
        times = {"pbit": per_call(lambda: pbit(x), number), "tanh": per_call(lambda: tanh(x), number)}
        rows.append({"row": f"activation {shape[0]}x{shape[1]}", "us": {k: v * 1e6 for k, v in times.items()},
                     "ratio": times["pbit"] / times["tanh"]})
    torch.manual_seed(0)
    model = create("mlp", neuron="pbit", input_shape=(1, 28, 28), width=16, depth=3).eval()
    x = torch.randn(1, 1, 28, 28)
    one, many = SampledModel(model, 1, seed=0), SampledModel(model, 16, seed=0)
    times = {"plain": per_call(lambda: model(x), args.number), "T=1": per_call(lambda: one(x), args.number),
             "T=16": per_call(lambda: many(x), args.number)}
    rows.append({"row": "mlp16 batch 1", "us": {k: v * 1e6 for k, v in times.items()},
                 "ratio": times["T=1"] / times["plain"]})
    for row in rows:
        us = ", ".join(f"{k} {v:.1f} us" for k, v in row["us"].items())
        print(f"{row['row']:22} {us}; ratio {row['ratio']:.2f}", flush=True)
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
