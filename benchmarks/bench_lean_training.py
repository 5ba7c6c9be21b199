"""What the lean backward passes save in a sample-aware training step, in one run.

Usage: python benchmarks/bench_lean_training.py [--threads 2] [--rounds 3] [--repeats 7] [--clock wall|cpu] [--json PATH]

The changes (in the library), both exact (the same outputs and gradients, tested):

* a p-bit that reads a tensor repeated s times (the first p-bit after the deterministic prefix)
  draws from the tensor itself under autograd too: the copy is not made, the mean is computed
  and kept once, and the copies' gradients are summed in autograd's order
  (:class:`pdnn.sampling.SharedInputPBit`, ``_PBitFunction`` with ``repeats``);
* average pools with disjoint windows keep no input and do not zero-fill their input gradient
  (:mod:`pdnn.pooling`).

"before" builds the graphs with both rewrites switched off (and the later fusion of a p-bit with
its pool, :mod:`pdnn.pooled_pbit`, which would otherwise take the pools), so the versions are timed
interleaved on the same model, batch and load: one Adam step on the sample-aware loss of the
reference CNN (width 16, batch 64, as ``bench_speed.py``'s training row), s = 1 and s = 8. Each
round prints the medians, s=8/s=1 before and after, and s=8 after/before; the JSON holds every round.
"""
from __future__ import annotations

import torch
from bench_speed import before_after_rounds, compare, rewrite_ab_step

REWRITES = ("_share_repeated_inputs", "use_disjoint_pools", "use_pooled_pbits")  # the last takes pools after p-bits
PAIRS = [("s=8 before", "s=1 before"), ("s=8 after", "s=1 after"), ("s=8 after", "s=8 before")]


def one_round(repeats: int) -> dict:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    configs = {f"s={s} {version}": rewrite_ab_step(s, x, y, () if version == "after" else REWRITES)
               for s in (1, 8) for version in ("before", "after")}
    return compare("lean_training", "s=8/s=1 <= 6", configs, repeats, inner=2, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=7)
