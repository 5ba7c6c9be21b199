"""How many rows one folded pass should hold: the reference CNN at T = 10 split at several
``max_rows``, against T = 1, in one run.

Usage: python benchmarks/bench_pass_rows.py [--width 16] [--rows 256 512 1280 2560] [--threads 2]
       [--rounds 3] [--repeats 7] [--json PATH]

Evaluation splits a folded batch into passes of at most ``MAX_ROWS`` (256) samples x inputs
(:class:`pdnn.SampledModel`'s ``max_rows``). With large freed buffers kept for reuse
(:func:`pdnn.malloc.keep_large_buffers`, which the ``pdnn`` command and this script call), a
larger pass may be faster: fewer calls, and larger GEMMs for the convolutions. This measures it for
the reference CNN (batch 256, eval mode, no autograd): ``T=10 rows R`` is T = 10 split at
``max_rows=R``, divided by T = 1 (one pass of 256 rows). 2560 rows is the whole folded batch.
Stacked passes (:mod:`pdnn.stacked_passes`) are turned off here: this measures the passes alone.

A different split draws the samples in another order (each pass is drawn in turn), so the seeded
samples, and every committed evaluation's numbers, depend on ``max_rows``: this is a measure of
speed only. One activation of the first layers is ``rows x width x 32 x 32`` floats: 16.8 MB for
256 rows at width 16, 671 MB for 2560 rows at width 64.
"""
from __future__ import annotations

import torch
from bench_speed import before_after_rounds, compare
from counts import positive_count

from pdnn import SampledModel, stacked_passes
from pdnn.models import create

ROWS = (256, 512, 1280, 2560)


def add_options(parser) -> None:
    parser.add_argument("--width", type=positive_count, default=16, help="the CNN's width (16 or 64 in the speed table)")
    parser.add_argument("--rows", type=positive_count, nargs="+", default=ROWS, help="the max_rows values to time")


def pairs(args) -> list[tuple[str, str]]:
    return [(f"T=10 rows {rows}", "T=1") for rows in args.rows]


@torch.no_grad()
def one_round(repeats: int, args) -> dict:
    stacked_passes.STACK_BYTES = stacked_passes.STACK_BYTES_SYSTEM_MALLOC = 0  # every pass alone
    torch.manual_seed(0)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=args.width).eval()
    images = torch.randn(256, 3, 32, 32)
    configs = {"T=1": lambda m=SampledModel(model, 1, seed=0): m(images)}
    for rows in args.rows:
        configs[f"T=10 rows {rows}"] = lambda m=SampledModel(model, 10, seed=0, max_rows=rows): m(images)
    return compare(f"cnn{args.width}_b256_pass_rows", "T=10/T=1 <= 9", configs, repeats)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, pairs, rounds=3, repeats=7, add_options=add_options)
