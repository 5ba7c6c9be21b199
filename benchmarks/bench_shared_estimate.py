"""What the fused p-bit kernel saves by estimating P(b = 1 | x) once for all the copies of a
repeated input, in one run.

Usage: python benchmarks/bench_shared_estimate.py [--threads 2] [--rounds 3] [--repeats 9] [--json PATH]

The change (in the library, :mod:`pdnn.pbit_kernel`): a p-bit that draws T copies of one tensor
(the first p-bit of a folded network, whose input all samples share) computes the float32
estimate of ``1 + exp(-gain x)`` for a chunk once and compares it with the T copies' random
words, instead of a kernel call per copy that estimated again. The bits are the same (checked here
before timing). "before" calls the same compiled kernel once per copy, as the library did; copies
of a large input take the estimate kernel (the library's other kernel, chosen for single tensors where it is
faster, is forced off here for the whole network: ``bench_pbit_estimate.py`` times the two). Timed
interleaved on the same inputs and load: that p-bit alone at the CNN's first layer as evaluation
runs it at T = 10 (25 inputs x 16 x 32 x 32, channels-last, 10 copies), and the reference CNN
(width 16, batch 256) at T = 10 beside T = 1 (``bench_speed.py``'s row ``cnn16_b256``).
"""
from __future__ import annotations

import torch
from bench_pbit_estimate import ESTIMATE, timed_versions, with_kernel
from bench_speed import before_after_rounds, compare

from pdnn import SampledModel
from pdnn import pbit_kernel as K
from pdnn.models import create
from pdnn.nn import PBit
from pdnn.sampling import MAX_ROWS

PAIRS = [("copies after", "copies before"), ("T=10 after", "T=10 before"), ("T=10 before", "T=1"),
         ("T=10 after", "T=1")]


def per_copy(x, table, gain, low_key, high_key, repeats, high, low, out):
    """The kernel before: a call per copy, each estimating again."""
    n = x.size
    for s in range(repeats):
        ESTIMATE(x, table, gain, (low_key + s * n) & 0xFFFFFFFF, high_key, 1, high, low, out[s * n:(s + 1) * n])


def one_round(repeats: int) -> dict:
    K._compile(torch.float32)
    torch.manual_seed(0)
    pbit = PBit()
    layer = torch.randn(MAX_ROWS // 10, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=16).eval()
    images = torch.randn(256, 3, 32, 32)
    one, ten = (SampledModel(model, t, seed=0, max_rows=MAX_ROWS) for t in (1, 10))
    work = {"copies": lambda: pbit(layer, repeats=10), "T=10": lambda: ten(images)}
    check = {**work, "T=10": lambda: SampledModel(model, 10, seed=0, max_rows=MAX_ROWS)(images)}  # fresh streams
    configs = timed_versions(work, check, {"before": ("estimate", per_copy), "after": ("estimate", ESTIMATE)})
    configs["T=1"] = lambda: with_kernel("estimate", lambda: one(images))
    return compare("shared_estimate", "after/before < 1", configs, repeats, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=9)
