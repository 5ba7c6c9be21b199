"""The fused p-bit kernel's two ways to the same bits, timed against each other in one run: every
threshold looked up ("table"), or most bits decided from a float32 estimate ("estimate").

Usage: python benchmarks/bench_pbit_estimate.py [--threads 2] [--rounds 3] [--repeats 15] [--json PATH]

In the library (:mod:`pdnn.pbit_kernel`) a bit is ``x > t_r``, with ``t_r`` read from a table of
2**16 thresholds at the drawn word ``r``. Reading it is a gather, which some processors do fast
and others slowly. The estimate kernel computes ``g(x) = 2**16 * P(b = 1 | x) - 1/2`` in float32
arithmetic and compares it with ``r``, reading the table only for the draws within one step of
the estimate. :func:`pdnn.pbit_kernel.kernel_for` times both on first use and keeps the faster
for single tensors (copies of a large repeated input take the estimate kernel either way); here each is
forced in turn (the bits are checked equal on every input before timing).
Interleaved on the same inputs and load: the p-bit layer alone on 256 x 2048 (the goal's row,
beside ``torch.tanh`` and ``torch.sigmoid``) and on the CNN's first activations, 256 x 16 x 32 x
32 channels-last; and the reference CNN (width 16, batch 256) evaluated at T = 1 and T = 10 (as
``bench_speed.py``'s row ``cnn16_b256``). Each round prints the medians and the ratios, and the
kernel the library chose; the JSON holds every round.
"""
from __future__ import annotations

import torch
from bench_speed import before_after_rounds, compare

from pdnn import SampledModel
from pdnn import pbit_kernel as K
from pdnn.models import create
from pdnn.nn import PBit
from pdnn.sampling import MAX_ROWS

PAIRS = [("act table", "act estimate"), ("act table", "tanh"), ("act estimate", "tanh"), ("act table", "sigmoid"),
         ("cnn-layer table", "cnn-layer estimate"), ("T=1 table", "T=1 estimate"),
         ("T=10 table", "T=10 estimate"), ("T=10 estimate", "T=1 estimate"), ("T=10 table", "T=1 table")]
CHOSEN, ESTIMATE = K.kernel_for, K._kernel


def with_kernel(name: str, fn, estimate=ESTIMATE):
    """``fn()`` in inference mode with the p-bits on the kernel ``name`` (``"table"`` or
    ``"estimate"``, the latter as the function ``estimate``)."""
    K.kernel_for, K._kernel = (lambda dtype: name), estimate
    try:
        with torch.inference_mode():
            return fn()
    finally:
        K.kernel_for, K._kernel = CHOSEN, ESTIMATE


def timed_versions(work: dict, check: dict, versions: dict) -> dict:
    """The configurations ``"<name> <version>"`` of every function in ``work``, for every
    ``version: (kernel, estimate)`` of ``versions`` (:func:`with_kernel`'s arguments), once the
    functions in ``check`` (``work``'s, or a fresh-stream version of them) have given the same
    bits every way."""
    for name, fn in check.items():
        results = []
        for kernel, estimate in versions.values():
            torch.manual_seed(1)
            results.append(with_kernel(kernel, fn, estimate))
        assert all(torch.equal(r, results[0]) for r in results), f"{name}: the kernels' bits differ"
    return {f"{name} {version}": (lambda fn=fn, kernel=kernel, estimate=estimate: with_kernel(kernel, fn, estimate))
            for name, fn in work.items() for version, (kernel, estimate) in versions.items()}


def one_round(repeats: int) -> dict:
    chosen = CHOSEN(torch.float32)  # compiles both kernels and times them once
    torch.manual_seed(0)
    pbit = PBit()
    act = torch.randn(256, 2048)
    layer = torch.randn(256, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=16).eval()
    images = torch.randn(256, 3, 32, 32)
    one, ten = (SampledModel(model, t, seed=0, max_rows=MAX_ROWS) for t in (1, 10))
    result = torch.empty_like(act)
    work = {"act": lambda: pbit(act), "cnn-layer": lambda: pbit(layer), "T=1": lambda: one(images),
            "T=10": lambda: ten(images)}
    check = {**work, "T=1": lambda: SampledModel(model, 1, seed=0)(images),  # fresh streams
             "T=10": lambda: SampledModel(model, 10, seed=0, max_rows=MAX_ROWS)(images)}
    configs = timed_versions(work, check, {"table": ("table", ESTIMATE), "estimate": ("estimate", ESTIMATE)})
    configs["tanh"] = lambda: torch.tanh(act, out=result)
    configs["sigmoid"] = lambda: torch.sigmoid(act, out=result)
    return {**compare("pbit_estimate", "the chosen kernel is the faster", configs, repeats, pairs=PAIRS),
            "chosen": chosen}


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=15)
