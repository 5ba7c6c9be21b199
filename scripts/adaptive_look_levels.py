"""Does the error level want to change with T? The predictive rule at a level that grows or shrinks
with the look, error·T^a, replayed on one network's pool of draws beside the rule as it is (a = 0).

    PDNN_DATA=../shared/data python scripts/adaptive_look_levels.py \
        results/adaptive/cifar10-runs/pbit-w32-s1-e30 --shapes=-0.5,0,0.5,1

The pool is the one ``scripts/adaptive_study.py`` draws (same --cache, --seed, N = 50, batches of
500); each rule is replayed by the study's own code (:func:`pdnn.experiments.adaptive_study.replay`:
the first batch learns σ₀² for the later ones). At T = 1 every shape has the level given; a > 0
loosens the later looks against the first, a < 0 tightens them. If the rule's level were
misallocated over the looks, some a != 0 would reach the same accuracy at a smaller mean T.
Prints accuracy minus T = 50 (points, ± paired SE) and mean T per shape and level.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from pdnn.adaptive import StoppingRule
from pdnn.errors import UsageError
from pdnn.experiments.adaptive_study import BATCH, cached_pool, replay
from pdnn.interrupts import run_script
from pdnn.io import RunError


@dataclass(frozen=True)
class LookShapedRule(StoppingRule):
    """The predictive rule at the level ``error·T^shape`` at the look after T samples, at most 0.5
    (a level of 1 or more would stop every input at its first look)."""

    shape: float = 0.0

    def settled(self, stats):
        level = min(self.error * stats.count**self.shape, 0.5)
        return StoppingRule.settled(replace(self, error=level), stats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--shapes", default="-0.5,0,0.5,1")
    p.add_argument("--errors", default="0.3,0.2,0.15,0.1,0.07,0.05,0.03,0.02,0.01")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache/pdnn/adaptive")
    args = p.parse_args()
    try:  # (read before the pool is drawn, which takes minutes)
        shapes, errors = (list(map(float, text.split(","))) for text in (args.shapes, args.errors))
        rules = [[LookShapedRule(50, error, shape=shape) for error in errors] for shape in shapes]
        outputs, labels = cached_pool(args.run, None, 50, args.seed, args.cache, batch_size=BATCH, progress=True)
    except (UsageError, RunError) as err:  # a level out of range, a missing run
        p.error(str(err))
    except ValueError as err:  # a shape or level that is no number
        p.error(f"--shapes and --errors are numbers separated by commas ({err})")
    at_n = (outputs.double().sum(0).argmax(-1) == labels).double()
    print(f"{args.run} (seed {args.seed}): T = 50 {100 * at_n.mean():.2f} %")
    for shape, row in zip(shapes, rules):
        for error, rule in zip(errors, row):
            decision, taken, _, _ = replay(outputs, rule, BATCH)
            gain = 100 * ((decision == labels).double() - at_n)
            print(f"a = {shape:+.1f}, level {error:<5g}: {gain.mean():+.2f} ± {gain.std() / len(gain) ** 0.5:.2f} "
                  f"points at mean T {taken.double().mean():.3f}")


if __name__ == "__main__":
    run_script(main)
