"""What the training step saves by not copying: the same step with and without two changes, in one run.

Usage: python benchmarks/bench_train_copies.py [--threads 2] [--rounds 5] [--repeats 15] [--json PATH]

The changes (both in the library): the p-bit's autograd function no longer has autograd fill a
zero gradient for its second output, the mean it keeps for the backward pass
(``ctx.set_materialize_grads(False)``); and the per-sample batch norm of a folded training pass
writes each sample's rows into one output instead of concatenating them
(:mod:`pdnn.per_sample_norm`). "before" switches both off inside this process (the zero fill
back on, the concatenating path forced), so the two versions are timed interleaved on the same
model, input and load. One Adam step on the sample-aware loss of the reference CNN (width 16,
batch 64), s = 1 and s = 8, large buffers kept as the ``pdnn`` command keeps them. Both are
built without the later rewrites that take p-bits past their autograd function
(``bench_speed.PAST_THE_PBIT_FUNCTION``: at s = 8 the zero fill had come back for one p-bit of
five), so the row times these changes, not today's step. Each round prints the medians and the
ratios; the JSON holds every round.
"""
from __future__ import annotations

from bench_speed import PAST_THE_PBIT_FUNCTION, adam_step, before_after_rounds, built_without, compare, training_problem

import pdnn.per_sample_norm as per_sample_norm
from pdnn.functional import _PBitFunction

FAST = per_sample_norm._fast
SETUP = _PBitFunction.setup_context
PAIRS = [("s=8 before", "s=1 before"), ("s=8 after", "s=1 after"), ("s=8 after", "s=8 before")]


def _setup_filling_zeros(ctx, inputs, output):
    SETUP(ctx, inputs, output)
    ctx.set_materialize_grads(True)


def use(changes: bool) -> None:
    per_sample_norm._fast = FAST if changes else (lambda *args: False)
    _PBitFunction.setup_context = staticmethod(SETUP if changes else _setup_filling_zeros)


def one_round(repeats: int) -> dict:
    x, y, model, optimizer = training_problem()
    samplers = {s: built_without(PAST_THE_PBIT_FUNCTION, model, s, x, y, optimizer) for s in (1, 8)}

    def step(s: int, changes: bool) -> None:
        use(changes)
        adam_step(samplers[s], x, y, optimizer)

    configs = {f"s={s} {version}": (lambda s=s, c=(version == "after"): step(s, c))
               for s in (1, 8) for version in ("before", "after")}
    row = compare("train_copies", "s=8/s=1 <= 6", configs, repeats, inner=2, pairs=PAIRS)
    use(True)
    return row


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=5, repeats=15)
