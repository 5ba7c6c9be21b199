"""The stopping rule where mean leads crowd near zero: how often the decision at stopping differs
from the decision at N, beside the error level δ (docs/adaptive.md, "Where mean leads crowd near
zero"). The network is a 16-64-C MLP with one p-bit layer whose input weights have standard
deviation SCALE/4: at a small SCALE its bits are nearly fair coins and most inputs near ties.

Usage: python scripts/adaptive_near_ties.py [--classes 2] [--scale 0.1] [--inputs 10000]
(about 30 s on 2 cores; every draw is seeded, so a rerun prints the same table)
"""
from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from pdnn import SampledModel
from pdnn.adaptive import StoppingRule
from pdnn.experiments.adaptive_study import replay
from pdnn.interrupts import run_script
from pdnn.nn import PBit

N, BATCH = 50, 500  # as pdnn eval --adaptive runs the rule


def near_tie_net(classes: int, scale: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    hidden, out = nn.Linear(16, 64), nn.Linear(64, classes)
    with torch.no_grad():
        hidden.weight.normal_(0, scale / 4, generator=g)
        hidden.bias.zero_()
        out.weight.normal_(0, 1 / 8, generator=g)
        out.bias.zero_()
    return nn.Sequential(hidden, PBit(), out).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--inputs", type=int, default=10_000)
    args = parser.parse_args()
    for option, value, least in (("--classes", args.classes, 2), ("--inputs", args.inputs, 1)):
        if value < least:
            parser.error(f"{option} must be an integer >= {least}, got {value}")
    if not (math.isfinite(args.scale) and args.scale >= 0):
        parser.error(f"--scale must be a finite number >= 0, got {args.scale}")
    x = torch.randn(args.inputs, 16, generator=torch.Generator().manual_seed(5))
    sampler = SampledModel(near_tie_net(args.classes, args.scale, seed=1), samples=N, reduce="none", seed=3)
    with torch.no_grad():
        outputs = torch.cat([sampler(x[i : i + 1000]) for i in range(0, args.inputs, 1000)], 1)
    final = outputs.double().sum(0).argmax(-1)
    print(f"{'ν₀':>3} {'δ':>5}  differs %  δ+4SE %  first batch %  mean T  wrong/stopped at T = 1, 2, 32")
    for prior_samples in (2, 0):
        for error in (0.1, 0.05):
            decision, taken, _, _ = replay(outputs, StoppingRule(N, error, prior_samples=prior_samples), BATCH)
            wrong = decision != final
            bound = error + 4 * math.sqrt(error * (1 - error) / args.inputs)
            at = "  ".join(f"{int(wrong[taken == t].sum())}/{int((taken == t).sum())}" for t in (1, 2, 32))
            print(f"{prior_samples:>3} {error:>5}  {100 * wrong.double().mean():9.2f}  {100 * bound:7.2f}  "
                  f"{100 * wrong[:BATCH].double().mean():13.2f}  {taken.double().mean():6.2f}  {at}")


if __name__ == "__main__":
    run_script(main)
