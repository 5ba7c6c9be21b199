"""Channels-last against NCHW for the reference CNN on the CPU, measured in one run.

Usage: python benchmarks/bench_layout.py [--threads 2] [--repeats 7] [--clock wall|cpu] [--json FILE]

The reference CNN (width 16) is built twice from one seed: with NCHW convolution weights
(torch's default layout) and with channels-last ones (the reference CNN's own). With
channels-last weights oneDNN runs every convolution, and everything after it (batch norm, the
p-bit, average pooling) in channels-last order. Rows, interleaved within each repeat so that
load from other processes falls on both layouts alike:

* ``eval_T1`` / ``eval_T10``: ``SampledModel`` at T = 1 and T = 10 (``max_rows=MAX_ROWS``),
  batch 256, eval mode without autograd;
* ``train_s1`` / ``train_s8``: one Adam step on the sample-aware loss, batch 64.

Each row prints the median time of both layouts and nchw/channels_last (> 1: channels-last is
faster), with the spread of one repeat's ratio. Large freed buffers are kept for reuse, as the
``pdnn`` command keeps them (:func:`pdnn.malloc.keep_large_buffers`).
"""
from __future__ import annotations

import argparse
import os
import time

import bench_speed  # the interleaved timing of the speed benchmark (same folder)
import torch
from counts import output_file, positive_count, write_json

from pdnn import SampledModel
from pdnn.malloc import keep_large_buffers
from pdnn.models import create
from pdnn.sampling import MAX_ROWS, loss_of_samples

LAYOUTS = ("nchw", "channels_last")


def build(layout: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=16)
    layout = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return model.to(memory_format=layout)


def eval_pass(layout: str, samples: int):
    model = build(layout).eval()
    sampled = SampledModel(model, samples, seed=0, max_rows=MAX_ROWS)
    x = torch.randn(256, 3, 32, 32)
    return torch.no_grad()(lambda: sampled(x))


def train_step(layout: str, samples: int):
    model = build(layout)
    optimizer = torch.optim.Adam(model.parameters())
    sampled = SampledModel(model, samples, reduce="none", seed=0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step():
        loss, _ = loss_of_samples(sampled(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--repeats", type=positive_count, default=7)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--json", type=output_file, help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_buffers()
    bench_speed.CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}, {args.repeats} repeats, {args.clock} clock")
    print(f"{'row':10} {'nchw ms':>9} {'cl ms':>9} {'nchw/cl':>8}  spread", flush=True)
    rows = {}
    plans = {"eval_T1": (eval_pass, 1), "eval_T10": (eval_pass, 10), "train_s1": (train_step, 1),
             "train_s8": (train_step, 8)}
    for name, (make, samples) in plans.items():
        configs = {layout: make(layout, samples) for layout in LAYOUTS}
        row = bench_speed.compare(name, "nchw/channels_last > 1", configs, args.repeats, pairs=[LAYOUTS])
        rows[name] = row
        nchw, cl = (row["median_s"][k] * 1e3 for k in LAYOUTS)
        label = "/".join(LAYOUTS)
        low, high = row["spread"][label]
        print(f"{name:10} {nchw:9.1f} {cl:9.1f} {row['ratio'][label]:8.2f}  {low:.2f}-{high:.2f}", flush=True)
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": args.threads, "clock": args.clock,
                               "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
