"""Split passes stacked into one pass against the same passes run in turn, in one run.

Usage: python benchmarks/bench_stacked_passes.py [--width 16] [--threads 2] [--rounds 3] [--repeats 7] [--json PATH]

The change (in the library, :mod:`pdnn.stacked_passes`): without autograd on the CPU,
``SampledModel(max_rows=...)`` runs consecutive passes of a split batch as one stacked pass, each
pass's rows drawn with the keys that pass would have drawn, up to 64 MiB per p-bit output where
large buffers are kept (this script keeps them, as the ``pdnn`` command does). "in turn" is the
same library with stacking off (``STACK_BYTES = 0`` while the sampler learns its stacks), as
before the change. Both give the same numbers (checked here before timing, on fresh streams).

Rows: the reference CNN (eval mode), batch 256 at T = 10 split at ``MAX_ROWS`` (256) rows, as
``bench_speed.py``'s row ``cnn{w}_b256`` runs it, beside T = 1; and batch 64 at T = 50 in passes
of 5 inputs, as ``pdnn eval`` runs a batch of its test set.
"""
from __future__ import annotations

import torch
from bench_speed import before_after_rounds, compare
from counts import positive_count

from pdnn import SampledModel, stacked_passes
from pdnn.models import create
from pdnn.sampling import MAX_ROWS

PAIRS = [("T=10 stacked", "T=10 in turn"), ("T=10 in turn", "T=1"), ("T=10 stacked", "T=1"),
         ("T=50 stacked", "T=50 in turn")]


def add_options(parser) -> None:
    parser.add_argument("--width", type=positive_count, default=16, help="the CNN's width (16 or 64 in the speed table)")


def sampler(model, samples: int, stacked: bool, x: torch.Tensor) -> SampledModel:
    """A seeded sampler that has learnt its stacks on ``x`` (with stacking off if not ``stacked``)."""
    sampled = SampledModel(model, samples, seed=0, max_rows=MAX_ROWS)
    limit = stacked_passes.STACK_BYTES
    stacked_passes.STACK_BYTES = limit if stacked else 0
    try:
        sampled(x)
    finally:
        stacked_passes.STACK_BYTES = limit
    return sampled


@torch.no_grad()
def one_round(repeats: int, args) -> dict:
    torch.manual_seed(0)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=args.width).eval()
    images = torch.randn(256, 3, 32, 32)
    batch = images[:64]
    configs = {"T=1": lambda m=SampledModel(model, 1, seed=0): m(images)}
    for samples, x in ((10, images), (50, batch)):
        for stacked in (False, True):
            label = f"T={samples} {'stacked' if stacked else 'in turn'}"
            configs[label] = lambda m=sampler(model, samples, stacked, x), v=x: m(v)
        check = [sampler(model, samples, stacked, x)(x) for stacked in (False, True)]  # each its second call
        assert torch.equal(*check), f"stacked passes differ from the passes in turn at T = {samples}"
    return compare(f"cnn{args.width}_stacked_passes", "stacked/in turn < 1", configs, repeats, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, lambda args: PAIRS, rounds=3, repeats=7, add_options=add_options)
