"""Does the rule gain from knowing how leads are spread over inputs? The predictive rule with the
flat prior on the mean lead over the runner-up replaced by an empirical one, replayed on one
network's pool of draws beside the rule as it is.

    PDNN_DATA=../shared/data python scripts/adaptive_mean_prior.py \
        results/adaptive/cifar10-runs/pbit-w32-s1-e30 --seed 0

The rule (docs/adaptive.md) puts a flat prior on each input's mean lead, so a lead seen after a
few samples is taken at its word. Most inputs of a trained network have a large lead, a few a
lead near 0; a lead seen small is then more likely one of the few (the winner's curse), and an
empirical-Bayes prior says so. Here the prior of the lead of the current leader over the runner-up
is the spread of that gap over the inputs, read at N = 50 on the other half of the images (index
parity) and taken with either sign, so that it never sees the inputs it judges: the best such a
prior can know, short of the inputs' own future. The other rivals keep the rule's term. The pool
is the one ``scripts/adaptive_study.py`` draws (same --cache, --seed, N = 50, batches of 500), and
each rule is replayed by the study's own code. The prior's rule takes the lead's spread as known
(normal tails, where the rule's are Student's t), so a control is replayed beside it: the flat
prior under that same known spread. Prints, per level, accuracy minus T = 50 (points, ± paired
SE), mean T and the share of inputs whose decision differs from the one at T = 50 (what the
level bounds) for the rule, the control and the prior, and the control's and the rule's points
at the prior's mean T (linear between their levels): a prior that helps lies above them.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pdnn.adaptive import StoppingRule, disagreement_probability, lead_moments, student_t_cdf
from pdnn.errors import UsageError
from pdnn.experiments.adaptive_study import BATCH, cached_pool, replay
from pdnn.interrupts import run_script
from pdnn.io import RunError

N = 50


@dataclass(frozen=True)
class MeanPriorRule(StoppingRule):
    """The predictive rule with the runner-up's term taken under a prior on the lead's mean: the
    values ``gaps`` (>= 0) with ``weights``, half of each at either sign. The lead's spread S is the
    rule's (its prior variance pooled with the input's own), taken as known, so the tails are
    normal where the rule's are Student's t. Without ``gaps``: the control, the flat prior under
    that same known spread, which tells the prior's effect from the normal tail's."""

    gaps: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()

    def settled(self, stats):
        t, n = stats.count, self.max_samples
        if not self.first_look() <= t < n or self.rule != "predictive" or self.error == 0:
            return StoppingRule.settled(self, stats)
        p = disagreement_probability(stats, n, self.prior_samples, self.prior_variance, self.prior_pool)
        prior_variance = self.prior_variance if self.prior_variance is not None else stats.prior_variance
        if prior_variance is None:  # (no spread learnt yet: no row settles, as in the rule)
            return p <= self.error
        leader, lead, _, variance = lead_moments(stats)
        rows = torch.arange(stats.rows)
        runner_up = stats.total.scatter(1, leader[:, None], -math.inf).argmax(1)
        m, v = lead[rows, runner_up], variance[rows, runner_up]
        dof = self.prior_samples + t - 1
        spread = ((self.prior_samples * prior_variance + (t - 1) * v) / dof).sqrt()
        z = m * math.sqrt(t * n / (n - t)) / spread
        flat = torch.where(torch.isnan(z), torch.full_like(z, 0.5), student_t_cdf(-z, dof))
        return p - flat + self.runner_up_term(m, spread, t, n) <= self.error

    def runner_up_term(self, m: torch.Tensor, spread: torch.Tensor, t: int, n: int) -> torch.Tensor:
        """P(the sum of all n leads < 0 | the mean m of t of them), the lead's mean drawn from the
        prior: each value's weight times the likelihood of m, normalised; then the normal tail of
        t·m plus n − t leads of that mean. Flat prior (no ``gaps``): the rule's formula with a
        normal tail, the limit of a wide even prior."""
        if not self.gaps:
            return torch.special.ndtr(-m * math.sqrt(t * n / (n - t)) / spread)
        gaps = torch.tensor(self.gaps, dtype=torch.float64)
        mu = torch.cat([gaps, -gaps])
        log_prior = torch.tensor(self.weights, dtype=torch.float64).log().repeat(2)
        posterior = torch.softmax(log_prior - 0.5 * ((m[:, None] - mu) * math.sqrt(t) / spread[:, None]) ** 2, 1)
        tail = torch.special.ndtr(-(t * m[:, None] + (n - t) * mu) / (spread[:, None] * math.sqrt(n - t)))
        return (posterior * tail).sum(1)


def gap_prior(outputs: torch.Tensor, bins: int = 400) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The gap of the leader over the runner-up at N of each input of ``outputs`` ``[N, B, C]``,
    as the centres and weights of a histogram of ``bins`` bins (its empty bins left out)."""
    top = outputs.double().mean(0).topk(2, -1).values
    gap = top[:, 0] - top[:, 1]
    edge = gap.max().item() * (1 + 1e-9) or 1.0
    counts = torch.histc(gap, bins, 0, edge)
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) * edge / bins
    kept = counts > 0
    return tuple(centres[kept].tolist()), tuple((counts[kept] / counts.sum()).tolist())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--errors", default="0.3,0.2,0.15,0.1,0.07,0.05,0.03,0.02")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache/pdnn/adaptive")
    args = p.parse_args()
    try:  # (read before the pool is drawn, which takes minutes)
        errors = list(map(float, args.errors.split(",")))
        rules = [StoppingRule(N, error) for error in errors]
        outputs, labels = cached_pool(args.run, None, N, args.seed, args.cache, batch_size=BATCH, progress=True)
    except (UsageError, RunError) as err:  # a level out of range, a missing run
        p.error(str(err))
    except ValueError as err:  # a level that is no number
        p.error(f"--errors are numbers separated by commas ({err})")
    final = outputs.double().sum(0).argmax(-1)
    at_n = (final == labels).double()
    halves = [torch.arange(len(labels)) % 2 == k for k in (0, 1)]
    priors = [gap_prior(outputs[:, halves[1 - k]]) for k in (0, 1)]  # each half's prior from the other half
    print(f"{args.run} (seed {args.seed}): T = 50 {100 * at_n.mean():.2f} %")
    measured = {"rule": [], "control": [], "prior": []}  # per level: (points per input, mean T, differs %)
    for rule in rules:
        decisions = {"rule": replay(outputs, rule, BATCH)[:2],
                     "control": replay(outputs, MeanPriorRule(N, rule.error), BATCH)[:2]}
        decision, taken = torch.empty_like(labels), torch.empty_like(labels)
        for half, (gaps, weights) in zip(halves, priors):
            d, t, _, _ = replay(outputs, MeanPriorRule(N, rule.error, gaps=gaps, weights=weights), BATCH)
            decision[half], taken[half] = d[half], t[half]
        decisions["prior"] = decision, taken
        for name, (d, t) in decisions.items():
            measured[name].append((100 * ((d == labels).double() - at_n), t.double().mean().item(),
                                   100 * (d != final).double().mean().item()))
    curves = {name: sorted((t, points.mean().item()) for points, t, _ in rows) for name, rows in measured.items()}
    for i, rule in enumerate(rules):
        line = [f"level {rule.error:<5g}:"]
        for name, rows in measured.items():
            points, t, differ = rows[i]
            line.append(f"{name} {points.mean():+.2f} ± {points.std() / len(points) ** 0.5:.2f} points at mean T "
                        f"{t:.3f}, differs {differ:.2f} %;")
        t = measured["prior"][i][1]
        at = [np.interp(t, *zip(*curves[name]), left=math.nan, right=math.nan) for name in ("control", "rule")]
        line.append("at the prior's mean T the curves give: " + ", ".join(
            f"{name} {'(beyond its levels)' if math.isnan(points) else f'{points:+.3f}'}"
            for name, points in zip(("control", "rule"), at)))
        print(" ".join(line))

if __name__ == "__main__":
    run_script(main)
