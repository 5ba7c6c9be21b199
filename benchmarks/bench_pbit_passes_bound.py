"""What the training step's s=8/s=1 would be if the p-bit's elementwise passes for its gradient
cost nothing, in one run: a bound on fusing them.

Usage: python benchmarks/bench_pbit_passes_bound.py [--threads 2] [--rounds 3] [--repeats 9] [--json PATH]

Under autograd a p-bit keeps ``p = P(b = 1 | x)`` for its straight-through gradient: in the forward
pass two elementwise passes (``x * 2*beta``, then ``sigmoid_``), in the backward pass two more
(``sigmoid_backward``, then ``* 4*beta``). At s = 8 the reference CNN's largest of these tensors
(512 x 16 x 32 x 32 floats, 33.5 MB) outgrow a 32 MB L3 cache, so they are the training row's
first suspects. "bound" replaces the forward's two passes by nothing (the input itself is kept)
and the backward's by one product: no fused kernel can do less (its gradients are wrong, so it
is timed only, on a network of its own). The configurations alternate within each repeat, one Adam step each on the
sample-aware loss of ``bench_speed.py``'s training row (CNN width 16, batch 64). Both are built
without the later rewrites that take p-bits past these passes
(``bench_speed.PAST_THE_PBIT_FUNCTION``: at s = 8 the bound had reached two p-bits' backward of
five), so the row bounds these passes, not today's step.
"""
from __future__ import annotations

from bench_speed import PAST_THE_PBIT_FUNCTION, adam_step, before_after_rounds, built_without, compare, training_problem

from pdnn import functional as F

PAIRS = [("s=8", "s=1"), ("s=8 bound", "s=1 bound"), ("s=1 bound", "s=1"), ("s=8 bound", "s=8")]
LIBRARY = (F._probability, F._surrogate_gradient)
BOUND = (lambda x, mode, beta: x.detach(), lambda grad, saved, mode, beta, ste, dtype: grad * saved)


def step_with(passes, sampled, x, y, optimizer) -> None:
    """One Adam step with the p-bit's probability and surrogate gradient replaced by ``passes``."""
    F._probability, F._surrogate_gradient = passes
    try:
        adam_step(sampled, x, y, optimizer)
    finally:
        F._probability, F._surrogate_gradient = LIBRARY


def one_round(repeats: int) -> dict:
    configs = {}
    for name, passes in (("", LIBRARY), (" bound", BOUND)):
        x, y, model, optimizer = training_problem()  # a network of its own: the bound's steps are wrong
        for s in (1, 8):
            sampled = built_without(PAST_THE_PBIT_FUNCTION, model, s, x, y, optimizer)
            configs[f"s={s}{name}"] = lambda p=passes, m=sampled, d=(x, y), o=optimizer: step_with(p, m, *d, o)
    return compare("train_cnn16_b64_pbit_passes", "s=8/s=1 <= 6", configs, repeats, inner=2, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=9)
