"""What a training step saves when the layer after the first p-bit passes its input gradient once
for the summed samples, in one run.

Usage: python benchmarks/bench_summed_gradient.py [--threads 2] [--rounds 3] [--repeats 9] [--json PATH]

The change (in the library): in a folded graph, a linear layer or convolution that reads a
shared-input p-bit's T samples computes the gradient that flows back to the prefix for the sum
of the samples' output gradients (:class:`pdnn.shared_bits_layer.SharedBitsLayer`). "before"
builds the graph with that rewrite switched off, so both versions are timed interleaved on the
same model, batch and load: one Adam step on the sample-aware loss of the reference CNN (width
16, batch 64) at s = 8, the row ``train_cnn16_b64`` of ``bench_speed.py`` measures, and s = 1
(which the rewrite does not touch: there is nothing to sum) for the ratios. Each round prints
the medians and the ratios; the JSON holds every round.
"""
from __future__ import annotations

from bench_speed import adam_step, before_after_rounds, built_without, compare, training_problem

PAIRS = [("s=8 after", "s=8 before"), ("s=8 before", "s=1"), ("s=8 after", "s=1")]


def one_round(repeats: int) -> dict:
    x, y, model, optimizer = training_problem()
    runs = {key: built_without(off, model, samples, x, y, optimizer)
            for key, samples, off in (("s=1", 1, ()), ("s=8 before", 8, ("_pass_summed_gradients",)),
                                      ("s=8 after", 8, ()))}
    configs = {key: (lambda run=run: adam_step(run, x, y, optimizer)) for key, run in runs.items()}
    return compare("summed_gradient", "s=8 after/before < 1", configs, repeats, inner=2, pairs=PAIRS)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=9)
