"""What a p-bit saves by drawing for a repeated tensor from the tensor itself, in one run.

Usage: python benchmarks/bench_shared_input.py [--threads 2] [--rounds 3] [--repeats 9] [--json PATH]

The change (in the library): where the folded graph repeats a tensor T times and a ``PBit``
reads the copy, the p-bit is called on the tensor with ``repeats=T`` and draws the same bits
without the copy (:class:`pdnn.sampling.SharedInputPBit`). "before" builds the graphs with that
rewrite switched off, so both versions are timed interleaved on the same model, input and load:
the reference CNN (width 16, batch 256, eval mode, no autograd), T = 10, ``max_rows=MAX_ROWS`` as
evaluation uses it, network aggregation (only the first p-bit reads a copy) and layer
aggregation (every p-bit does). Each round prints the medians and the after/before ratios; the
JSON holds every round.
"""
from __future__ import annotations

import torch
from bench_speed import before_after_rounds, compare, rewrites_off

from pdnn import SampledModel
from pdnn.models import create
from pdnn.sampling import MAX_ROWS

PAIRS = [("network after", "network before"), ("layer after", "layer before")]


def built(model, aggregate: str, x: torch.Tensor, shared: bool) -> SampledModel:
    """A ``SampledModel`` whose graphs were built with the rewrite on or off (its first call)."""
    sampled = SampledModel(model, 10, aggregate=aggregate, seed=0, max_rows=MAX_ROWS)
    with rewrites_off(() if shared else ("_share_repeated_inputs",)):
        sampled(x)
    return sampled


@torch.no_grad()
def one_round(repeats: int) -> dict:
    torch.manual_seed(0)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=16).eval()
    x = torch.randn(256, 3, 32, 32)
    runs = {f"{aggregate} {version}": built(model, aggregate, x, version == "after")
            for aggregate in ("network", "layer") for version in ("before", "after")}
    configs = {key: (lambda run=run: run(x)) for key, run in runs.items()}
    return compare("shared_input", "after/before < 1", configs, repeats, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=9)
