"""A linear layer on a few rows, ``x @ W.T`` against ``(W @ x.T).T``, in one run.

Usage: python benchmarks/bench_gemm_orientation.py [--threads 2] [--repeats 15] [--rounds 2] [--json PATH]

At batch 1, T samples make each layer after the prefix a GEMM of T rows against the whole
weight. ``F.linear`` hands MKL ``x @ W.T`` (the weight as the transposed right operand).
:mod:`pdnn.transposed_linear` computes the same product as ``W @ x.T`` (the weight as the left
operand), adding the bias into a contiguous output as ``F.linear``'s is. For every weight shape
and row count both are timed, interleaved (``repeats`` times, ``rounds`` times over the grid).
Prints the median time of ``F.linear`` and, per round, the ratio of medians transposed/plain
(below 1: the transposed GEMM is faster); the JSON keeps every time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from counts import output_file, positive_count, write_json

SHAPES = [(2048, 2048), (4096, 1024), (2048, 784), (1024, 1024), (512, 2048), (1024, 512)]  # (out, in)
ROWS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128]


def transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    product = torch.mm(weight, x.t()).t()
    return torch.add(product, bias, out=torch.empty(product.shape))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--repeats", type=positive_count, default=15)
    parser.add_argument("--rounds", type=positive_count, default=2)
    parser.add_argument("--json", type=output_file)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; transposed/plain, median of "
          f"{args.repeats} interleaved repeats, per round")
    print(f"{'weight':>11} {'rows':>5} {'plain ms':>9}  transposed/plain")
    records = []
    layers = {shape: (torch.randn(shape), torch.randn(shape[0])) for shape in SHAPES}
    for _ in range(args.rounds):
        for shape, (weight, bias) in layers.items():
            for rows in ROWS:
                x = torch.randn(rows, shape[1])
                plain_out, transposed_out = F.linear(x, weight, bias), transposed(x, weight, bias)
                torch.testing.assert_close(transposed_out, plain_out, rtol=1e-4, atol=1e-3)
                assert transposed_out.is_contiguous()
                times = {"plain": [], "transposed": []}
                for _ in range(args.repeats):
                    for name, fn in (("plain", F.linear), ("transposed", transposed)):
                        began = time.perf_counter()
                        fn(x, weight, bias)
                        times[name].append(time.perf_counter() - began)
                records.append({"out_features": shape[0], "in_features": shape[1], "rows": rows, "times_s": times})
    for shape in SHAPES:
        for rows in ROWS:
            mine = [r for r in records if (r["out_features"], r["in_features"], r["rows"]) == (*shape, rows)]
            plain = statistics.median(mine[0]["times_s"]["plain"])
            ratios = [statistics.median(r["times_s"]["transposed"]) / statistics.median(r["times_s"]["plain"])
                      for r in mine]
            print(f"{shape[0]:>5}x{shape[1]:<5} {rows:>5} {plain * 1e3:9.3f}  " + " ".join(f"{q:.2f}" for q in ratios))
    if args.json:
        record = {"torch": torch.__version__, "threads": args.threads, "records": records}
        write_json(args.json, record)


if __name__ == "__main__":
    main()
