"""Samples or bits: the energy of the accuracy study's networks (32-bit float weights) from the
paper's EO energy model (:mod:`pdnn.energy`), joined with their measured accuracy -- the cost of
one more sample, and the cheapest p-DNN within one point of the 32-bit float network, in DRAM
and SRAM. Pure computation on the accuracy study's results: seconds."""
from __future__ import annotations

from pathlib import PureWindowsPath

from ...energy import Settings, plot_tradeoff, tradeoff_runs
from ...io import read_json, write_json
from ..lowbit import cheapest_within
from ..plan import Claim, Context, Figure, Section, Step, not_measured
from ..study import SLACK
from . import accuracy

NAME = "energy"
TITLE = "Energy: samples against bits (32-bit float weights)"
MEMORIES = ("dram", "sram")
TOLERANCE = 0.01  # "within 1 % accuracy": one percentage point
GAIN = 2.0  # the paper: more than 2x less energy
SAMPLE_COST_PCT = 1.0  # the paper's +0.7 % per sample, read as "at most 1 %"


def result_path(ctx: Context, dataset: str, memory: str):
    return ctx.dir(NAME, dataset, f"tradeoff-{memory}.json")


def _tradeoff(ctx: Context, dataset: str, memory: str) -> None:
    path = result_path(ctx, dataset, memory)
    if path.exists():
        return
    runs = sorted(p for p in ctx.dir(accuracy.NAME, dataset, "runs").iterdir() if p.is_dir())
    result = tradeoff_runs(runs, Settings(weight_memory=memory, activation_memory=memory), TOLERANCE)
    plot_tradeoff(result, path.with_suffix(".png"), title=f"{dataset}: accuracy against energy ({memory})")
    write_json(path, result)


def sources_missing(ctx: Context, result: dict) -> str | None:
    """Why a run whose evaluation the trade-off ``result`` joined has no readable evaluation now
    (see :meth:`Context.why_run_missing`), or None: a copy must not outlive its source. The runs
    are found by their last four parts (``<study>/<group>/runs/<name>``, with either separator),
    whatever folder the plan was run from; a point of a run outside a plan is not checked."""
    parts = (PureWindowsPath(point["run"]).parts[-4:] for point in result["points"] if point["aggregate"] == "network")
    runs = dict.fromkeys(ctx.work.joinpath(*p) for p in parts  # the plan's runs that trade-offs join; others unchecked
                         if len(p) == 4 and p[0] in (accuracy.NAME, "lowbit") and p[2] == "runs")
    return next(filter(None, map(ctx.why_run_missing, runs)), None)


def steps(ctx: Context) -> list[Step]:
    return [Step(f"{NAME}/{spec.dataset}/{memory}", 15,
                 lambda dataset=spec.dataset, memory=memory: _tradeoff(ctx, dataset, memory),
                 (f"data:{spec.dataset}",))
            for spec in accuracy.specs(ctx) for memory in MEMORIES]


def sample_cost(result: dict) -> tuple[float, float, str] | None:
    """(ΔE/E in %, accuracy gain in points, series) of T = 1 -> 2 for the p-DNN trained with the
    s nearest 2 (the paper's "+0.7 % energy for +2 % accuracy"), or None if not measured."""
    steps = [m for m in result["marginal"] if m["from_samples"] == 1 and m["to_samples"] == 2
             and m["series"].startswith("pbit-s") and m["aggregate"] == "network"]
    if not steps:
        return None
    best = min(steps, key=lambda m: (abs(int(m["series"].removeprefix("pbit-s")) - 2), m["series"]))
    return best["energy_increase_pct"], best["accuracy_gain_pct"], best["series"]


def section(ctx: Context) -> Section:
    section = Section(TITLE, text=(
        "Energy per inference from the paper's EO model (Horowitz 45 nm table, weights read once per "
        "EO for all T samples, the deterministic first layer computed once), joined with the accuracy "
        "study's measured accuracy. Reference: the most accurate 32-bit float deterministic network. "
        "The repository's docs/energy.md explains every term."))
    for spec in accuracy.specs(ctx):
        dataset = spec.dataset
        for memory in MEMORIES:
            path = result_path(ctx, dataset, memory)
            claim = f"{dataset}, {memory.upper()}: > 2x less energy than the 32-bit network within 1 % (float weights)"
            rule = f"cheapest p-DNN within {100 * TOLERANCE:g} point of the reference: E_ref / E > {GAIN:g}"
            sample_claim = f"{dataset}: one more sample (T 1→2) costs +0.7 % energy and buys +2 % accuracy"
            sample_rule = (f"ΔE/E(T 1→2, DRAM) ≤ {SAMPLE_COST_PCT:g} % and the gain ≥ 1 point "
                           "(p-DNN with s nearest 2)")
            gone = sources_missing(ctx, read_json(path)) if path.exists() else None
            if gone or not path.exists():
                why = gone or ctx.why_missing(f"{NAME}/{dataset}/{memory}")
                section.claims.append(not_measured(claim, "> 2x", why, rule))
                if memory == "dram":  # the sample cost is read from the same trade-off
                    section.claims.append(not_measured(sample_claim, "+0.7 % energy, +2 % accuracy", why, sample_rule))
                continue
            result = read_json(path)
            best = cheapest_within(result, lambda p: p["neuron"].startswith("pbit"))
            ref = result["reference"]
            if best is None:
                section.claims.append(Claim.decide(claim, "> 2x", f"no p-DNN within 1 point of {ref['label']} "
                                                   f"({100 * ref['accuracy']:.2f}%)", rule, False))
            else:
                gain = ref["energy_j"] / best["energy_j"]
                section.claims.append(Claim.decide(
                    claim, "> 2x", f"{gain:.2f}x: {best['label']} {100 * best['accuracy']:.2f}% vs "
                    f"{ref['label']} {100 * ref['accuracy']:.2f}%", rule, gain > GAIN))
            if memory == "dram":
                cost = sample_cost(result)
                if cost is None:
                    section.claims.append(not_measured(sample_claim, "+0.7 % energy, +2 % accuracy",
                                                       "no p-DNN evaluated at T = 1 and 2", sample_rule))
                else:
                    energy_pct, gain_pts, series = cost
                    section.claims.append(Claim.decide(
                        sample_claim, "+0.7 % energy, +2 % accuracy", f"{series}: +{energy_pct:.2f} % energy, "
                        f"{gain_pts:+.2f} points", sample_rule,
                        energy_pct <= SAMPLE_COST_PCT + SLACK and gain_pts >= 1.0 - SLACK))
            section.figures.append(Figure(path.with_suffix(".png"), (
                f"{dataset}: accuracy against energy per inference, {memory.upper()}, every run of the "
                f"accuracy study at every measured T (Pareto front marked); {accuracy.describe(spec)}"),
                f"{NAME}/{dataset}/{memory}"))
    return section
