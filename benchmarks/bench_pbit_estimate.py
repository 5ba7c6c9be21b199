"""What the fused p-bit kernel saves by deciding most bits from a float32 estimate instead of
looking every threshold up, in one run.

Usage: python benchmarks/bench_pbit_estimate.py [--threads 2] [--rounds 3] [--repeats 15] [--json PATH]

The change (in the library, :mod:`pdnn.pbit_kernel`): a bit is ``x > t_r``, with ``t_r`` read
from a table of 2**16 thresholds at the drawn word ``r``. Without AVX-512 that read, a gather,
kept the whole loop scalar. The kernel now estimates ``g(x) = 2**16 * P(b = 1 | x) - 1/2`` in
float32 arithmetic that vectorises and compares it with ``r``, and reads the table only for the
draws within one step of the estimate: the same bits (checked here on every input before timing).

"before" swaps the table-only kernel back in for its calls. Interleaved on the same inputs and
load: the p-bit layer alone on 256 x 2048 (the goal's row, beside ``torch.tanh`` and
``torch.sigmoid``) and on the CNN's first activations, 256 x 16 x 32 x 32 channels-last; and the
reference CNN (width 16, batch 256) evaluated at T = 1 and T = 10 (as ``bench_speed.py``'s row
``cnn16_b256``). Each round prints the medians and the ratios; the JSON holds every round.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
import torch
from bench_speed import before_after_rounds, compare

from pdnn import SampledModel
from pdnn import pbit_kernel as K
from pdnn.models import create
from pdnn.nn import PBit
from pdnn.sampling import MAX_ROWS

PAIRS = [("act after", "act before"), ("act after", "tanh"), ("act after", "sigmoid"), ("act before", "tanh"),
         ("cnn-layer after", "cnn-layer before"), ("T=1 after", "T=1 before"), ("T=10 after", "T=10 before"),
         ("T=10 before", "T=1 before"), ("T=10 after", "T=1 after")]
AFTER = K._kernel


@numba.njit(parallel=True)
def table_copy(x, table, low_key, high_key, high, low, out):
    k0, k1 = np.uint32(low_key), np.uint32(high_key)
    for i in numba.prange(x.size):
        v = x[i]
        bit = high if v > table[K._word(i, k0, k1)] else low
        out[i] = v if v != v else bit


def table_kernel(x, table, gain, low_key, high_key, repeats, high, low, out):
    """The kernel before: every bit from the looked-up threshold (``gain`` is not needed), a call
    per copy."""
    n = x.size
    for s in range(repeats):
        table_copy(x, table, (low_key + s * n) & 0xFFFFFFFF, high_key, high, low, out[s * n:(s + 1) * n])


def with_kernel(kernel, fn):
    """``fn()`` in inference mode with ``kernel`` in the library kernel's place."""
    K._kernel = kernel
    try:
        with torch.inference_mode():
            return fn()
    finally:
        K._kernel = AFTER


def before_after(work: dict, check: dict, before) -> dict:
    """The timed configurations ``"<name> before"`` (the kernel ``before``) and ``"<name> after"``
    (the library's) of every function in ``work``, once the functions in ``check`` (``work``'s,
    or a fresh-stream version of them) have given the same bits both ways."""
    for name, fn in check.items():
        torch.manual_seed(1)
        expected = with_kernel(before, fn)
        torch.manual_seed(1)
        assert torch.equal(with_kernel(AFTER, fn), expected), f"{name}: the change altered the bits"
    return {f"{name} {version}": (lambda fn=fn, kernel=before if version == "before" else AFTER: with_kernel(kernel, fn))
            for name, fn in work.items() for version in ("before", "after")}


def one_round(repeats: int) -> dict:
    K._compile(torch.float32)  # the library's kernel, before _kernel is swapped for the calls below
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
    features = (numba.config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()).split(",")
    with K.vector_width(16 if "+avx512f" in features else 0):  # as the library compiled the table kernel
        configs = before_after(work, check, table_kernel)  # also compiles the table kernel
    configs["tanh"] = lambda: torch.tanh(act, out=result)
    configs["sigmoid"] = lambda: torch.sigmoid(act, out=result)
    return compare("pbit_estimate", "after/before < 1", configs, repeats, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=15)
