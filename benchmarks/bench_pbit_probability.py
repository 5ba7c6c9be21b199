"""What a training step saves when a p-bit keeps ``P(b = 1)``, a sigmoid, for its backward pass
instead of its mean ``tanh``, in one run.

Usage: python benchmarks/bench_pbit_probability.py [--threads 2] [--rounds 3] [--repeats 9] [--json PATH]

The change (in the library, :mod:`pdnn.functional`): under autograd a bipolar p-bit keeps
``p = sigmoid(2*beta*x)`` and its backward pass multiplies by ``4*beta*p*(1 - p)``; before, it
kept ``tanh(beta*x)`` and multiplied by ``beta*(1 - tanh**2)``, the same derivative. On the CPU
torch's ``tanh`` costs several times a ``sigmoid``, and the bits themselves come from the fused
kernel, which needs neither. "before" swaps the two old functions back in for its steps, so both
versions are timed interleaved on the same model, batch and load: one Adam step on the
sample-aware loss of the reference CNN (width 16, batch 64) at s = 1 and s = 8, the row
``train_cnn16_b64`` of ``bench_speed.py`` measures. Both are built without the later rewrites
that take p-bits past these functions (``bench_speed.PAST_THE_PBIT_FUNCTION``: at s = 8 the swap
had reached two p-bits of five), so the row times this change, not today's step. Each round
prints the medians and the ratios; the JSON holds every round.
"""
from __future__ import annotations

import torch
from bench_speed import PAST_THE_PBIT_FUNCTION, adam_step, before_after_rounds, built_without, compare, training_problem

import pdnn.functional as functional

PAIRS = [("s=1 after", "s=1 before"), ("s=8 after", "s=8 before"), ("s=8 before", "s=1 before"),
         ("s=8 after", "s=1 after")]
AFTER = functional._probability, functional._surrogate_gradient


def tanh_mean(x: torch.Tensor, mode: str, beta: float) -> torch.Tensor:
    """What the p-bit kept before: its mean, in at least single precision."""
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    scaled = wide if beta == 1.0 else wide * beta
    return torch.tanh(scaled) if mode == "bipolar" else torch.sigmoid(scaled)


def tanh_gradient(grad, saved, mode, beta, ste, dtype):
    """The backward pass before, from the kept mean (the ``"mean"`` surrogate, which this row uses)."""
    slope = (grad if beta == 1.0 else grad * beta).to(saved.dtype)
    backward = torch.ops.aten.tanh_backward if mode == "bipolar" else torch.ops.aten.sigmoid_backward
    return backward(slope, saved).to(dtype)


def one_round(repeats: int) -> dict:
    x, y, model, optimizer = training_problem()

    def step(sampled, before: bool) -> None:
        functional._probability, functional._surrogate_gradient = (tanh_mean, tanh_gradient) if before else AFTER
        try:
            adam_step(sampled, x, y, optimizer)
        finally:
            functional._probability, functional._surrogate_gradient = AFTER

    one, eight = (built_without(PAST_THE_PBIT_FUNCTION, model, s, x, y, optimizer) for s in (1, 8))
    configs = {f"s={s} {version}": (lambda run=run, before=version == "before": step(run, before))
               for s, run in ((1, one), (8, eight)) for version in ("before", "after")}
    return compare("pbit_probability", "after/before < 1", configs, repeats, inner=2, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=9)
