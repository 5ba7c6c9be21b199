"""What the fused backward pass of a p-bit and its 2 x 2 average pool saves in a sample-aware
training step, in one run.

Usage: python benchmarks/bench_pooled_pbit.py [--threads 2] [--rounds 3] [--repeats 9] [--clock wall|cpu] [--json PATH]

The change (:mod:`pdnn.pooled_pbit`, exact: the same outputs and gradients, tested): where a
p-bit's bits are read only by a 2 x 2 average pool, one kernel writes the input gradient from the
pooled gradient and ``p``, in place of the pool's full-size share, the p-bit's
``sigmoid_backward`` and its multiply. "before" builds the graphs with that rewrite switched off,
so the versions are timed interleaved on the same model, batch and load: one Adam step on the
sample-aware loss of the reference CNN (width 16, batch 64, as ``bench_speed.py``'s training
row), s = 1 and s = 8 (at s = 1 the model runs unfolded either way). Each round prints the
medians, s=8/s=1 before and after, and s=8 after/before; the JSON holds every round.
"""
from __future__ import annotations

import torch
from bench_speed import before_after_rounds, compare, rewrite_ab_step

PAIRS = [("s=8 before", "s=1 before"), ("s=8 after", "s=1 after"), ("s=8 after", "s=8 before")]


def one_round(repeats: int) -> dict:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    configs = {f"s={s} {version}": rewrite_ab_step(s, x, y, () if version == "after" else ("use_pooled_pbits",))
               for s in (1, 8) for version in ("before", "after")}
    return compare("pooled_pbit", "s=8/s=1 <= 6", configs, repeats, inner=2, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=9)
