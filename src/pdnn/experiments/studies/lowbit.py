"""Low-bit weights: the paper's "more than 2× less energy than a 32-bit DNN within 1 % accuracy",
and sigmoid against tanh p-bits at matched temperature.

The networks of the accuracy study, retrained with b_w-bit weights (a learned scale per output
channel, :class:`pdnn.nn.WeightQuantizer`) and nothing else changed: same data, schedule and
evaluation. Their trade-off against the accuracy study's float-weight runs, in DRAM and SRAM,
gives the cheapest p-DNN within one point of the 32-bit float network and the term of the EO
energy that limits its gain (:mod:`pdnn.experiments.lowbit`). A unipolar p-bit at β has mean
σ(βx) = (1 + tanh(βx/2))/2, the bipolar p-bit at β/2: so unipolar p-bits at twice the bipolar β
are compared with the accuracy study's bipolar runs at the same temperature.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ...energy import plot_tradeoff, tradeoff_runs
from ...energy.tradeoff import FLOAT_BASIS
from ...io import read_json, write_json, write_text
from ...plots import plot_accuracy_vs_samples
from ..lowbit import alike, headline, headline_rows, matched_gaps, matched_rows, memory_settings, run_table, term_name
from ..plan import Claim, Context, Figure, Section, Step, not_measured
from ..runs import ensure_evaluated, ensure_trained
from ..study import StudySpec, study_models, train_config
from . import accuracy, energy

NAME = "lowbit"
TITLE = "Low-bit weights: energy within one point of the 32-bit network; sigmoid against tanh at matched temperature"

# training time with k-bit weights over float weights, from the b_w = 8 runs of results/lowbit (s per
# example: w8-tanh 1.25e-4 against tanh 1.08e-4, w8-pbit-s4 1.93e-4 against pbit-s4 1.53e-4)
QUANTISER = 1.2
TRADEOFF_S = 20  # two trade-offs over about 30 runs: building each model and pricing every T
MEMORIES = ("dram", "sram")
TOLERANCE = 0.01  # "within 1 % accuracy" = within one percentage point
GAIN = 2.0  # the paper's "more than 2x"


@dataclass(frozen=True)
class Grid:
    """The low-bit runs of one dataset: every weight width times float tanh, the k-bit
    activations and bipolar p-DNNs trained with s samples."""

    bits: tuple[int, ...]
    quant_bits: tuple[int, ...]
    train_samples: tuple[int, ...]


# small, by the estimates below: b_w in {1, 2, 4} x {tanh, quant1, quant2, p-bit s = 4} on Fashion-MNIST
# 7.8 minutes, the matched runs 1.6, trade-off and tables 0.5: 9.9 of the study's 12-minute share of
# the small plan. CIFAR-10's w4-tanh and w4-pbit-s4 would add 5 (60 s and 240 s), so they are left out.
GRIDS = {
    "tiny": {"fashion-mnist": Grid((2,), (1,), (2,)), "cifar10": Grid((4,), (), (2,))},
    "small": {"fashion-mnist": Grid((1, 2, 4), (1, 2), (4,)), "cifar10": Grid((4,), (), (4,))},
    "full": {"fashion-mnist": Grid((1, 2, 4, 8), (1, 2, 4), (1, 4, 8)),
             "cifar10": Grid((1, 2, 4, 8), (1, 2, 4), (1, 4, 8))},
}
NOT_PLANNED = "not in the {scale} plan: its runs do not fit this study's share of the {scale} budget"
MATCHED = {"tiny": (2,), "small": (1, 4), "full": (1, 2, 4, 8)}  # s of the matched-temperature runs

PAPER_GAIN = "> 2× less energy than a 32-bit DNN within 1 % accuracy"
RULE_GAIN = ("E(32-bit float network) / E(cheapest p-DNN with b_w < 32 within 1 point of its accuracy, any measured T) "
             "> 2; limiting term: the EO term that alone would allow the smallest gain")
PAPER_ALIKE = "sigmoid and tanh p-bits perform alike"
RULE_ALIKE = "|bipolar(β) − unipolar(2β)| ≤ 1 point at every (s, T)"


def specs(ctx: Context) -> dict[str, StudySpec]:
    """The accuracy study's spec of every dataset this study has a grid for at ``ctx.scale``."""
    return {s.dataset: s for s in accuracy.specs(ctx) if s.dataset in GRIDS[ctx.scale]}


def lowbit_runs(ctx: Context, spec: StudySpec) -> list[tuple[Path, object, int]]:
    """(run folder, model, training samples) of every low-bit run of ``spec``'s dataset."""
    grid = GRIDS[ctx.scale][spec.dataset]
    plain = replace(spec, quant_bits=list(grid.quant_bits), train_samples=list(grid.train_samples), pbit_neurons=["pbit"])
    models = study_models(plain)
    return [(ctx.dir(NAME, spec.dataset, "runs", f"w{b}-{name}"), replace(models[name], weight_bits=b), s)
            for b in grid.bits for name, (_, s) in plain.runs().items() if name != "sigmoid"]


def matched_runs(ctx: Context) -> list[tuple[Path, object, int]]:
    """(run folder, model, s): unipolar p-DNNs at twice the bipolar β of the accuracy study."""
    spec = accuracy.specs(ctx)[0]
    hot = replace(spec, beta=2 * spec.beta, train_samples=list(MATCHED[ctx.scale]))
    models = study_models(hot)
    return [(matched_dir(ctx, spec, s), models[f"pbit-unipolar-s{s}"], s) for s in MATCHED[ctx.scale]]


def matched_dir(ctx: Context, spec: StudySpec, s: int) -> Path:
    return ctx.dir(NAME, "matched", "runs", f"pbit-unipolar-beta{2 * spec.beta:g}-s{s}")


def _run_steps(ctx: Context, key: str, spec: StudySpec, run_dir: Path, model, s: int, quantised: bool) -> list[Step]:
    """Training and evaluation of one run, timed as the accuracy study's runs of the same model and
    s; training with k-bit weights has a rate of its own, QUANTISER times the float one until a
    k-bit run has been measured."""
    kw = dict(roots=ctx.roots, device=ctx.device, progress=False)
    train = accuracy.train_step(ctx, spec, run_dir.name, s, lambda: ensure_trained(
        run_dir, model, spec.dataset, train_config(spec, s), subset=spec.subset, label=run_dir.name, **kw))
    if quantised:
        rate = f"{train.rate}/kbit"
        train = replace(train, rate=rate, estimate_s=ctx.estimate(rate, train.work, QUANTISER * train.estimate_s / train.work))
    evaluate = accuracy.eval_step(ctx, spec, run_dir.name, model.neuron.startswith("pbit"), lambda: ensure_evaluated(
        run_dir, spec.test_samples, spec.repeats, subset=spec.eval_subset, **kw))
    return [replace(train, key=f"{key}/train"), replace(evaluate, key=f"{key}/eval")]


def steps(ctx: Context) -> list[Step]:
    out = []
    for dataset, spec in specs(ctx).items():
        for run_dir, model, s in lowbit_runs(ctx, spec):
            out += _run_steps(ctx, f"{NAME}/{dataset}/{run_dir.name}", spec, run_dir, model, s, quantised=True)
        out.append(Step(f"{NAME}/{dataset}/tradeoff", TRADEOFF_S, lambda spec=spec: write_tradeoffs(ctx, spec),
                        (f"data:{dataset}",)))
    fashion = accuracy.specs(ctx)[0]
    for run_dir, model, s in matched_runs(ctx):
        out += _run_steps(ctx, f"{NAME}/matched/{run_dir.name}", fashion, run_dir, model, s, quantised=False)
    out.append(Step(f"{NAME}/summary", 10, lambda: write_summary(ctx), (f"data:{fashion.dataset}",)))
    return out


def write_tradeoffs(ctx: Context, spec: StudySpec) -> None:
    """Accuracy against energy of the accuracy study's runs and the low-bit runs, in DRAM and in
    SRAM (JSON and figure), and ``headline.json``: what each says about the cheapest p-DNN within
    one point. Written last, ``headline.json`` marks the step done."""
    folder = ctx.dir(NAME, spec.dataset)
    if (folder / "headline.json").exists():
        return
    reference = ctx.dir(accuracy.NAME, spec.dataset, "runs", "tanh")
    if not (reference / "eval-network.json").exists():
        raise FileNotFoundError(f"{reference} has no evaluation: the 32-bit reference comes from the accuracy study")
    floats = sorted(p for p in ctx.dir(accuracy.NAME, spec.dataset, "runs").iterdir() if (p / "config.json").exists())
    lowbit = [run for run, _, _ in lowbit_runs(ctx, spec) if (run / "config.json").exists()]
    headlines = {}
    for memory in MEMORIES:
        settings = memory_settings(memory)
        result = tradeoff_runs(floats + lowbit, settings, TOLERANCE)
        if result["reference"]["basis"] != FLOAT_BASIS:
            raise ValueError(f"{spec.dataset}: no evaluated 32-bit float run to compare with")
        write_json(folder / f"tradeoff-{memory}.json", result)
        plot_tradeoff(result, folder / f"tradeoff-{memory}.png",
                      title=f"{spec.dataset}, {memory.upper()}: accuracy vs energy, float and low-bit weights")
        headlines[memory] = headline(result, settings)
    write_json(folder / "headline.json", headlines)


def write_summary(ctx: Context) -> None:
    """The study's README (tables of every number behind the claims) and the matched-temperature
    figure."""
    fashion = accuracy.specs(ctx)[0]
    triples = {s: (ctx.dir(accuracy.NAME, fashion.dataset, "runs", f"pbit-s{s}"),
                   ctx.dir(accuracy.NAME, fashion.dataset, "runs", f"pbit-unipolar-s{s}"), matched_dir(ctx, fashion, s))
               for s in MATCHED[ctx.scale]}
    measured = [run for runs in triples.values() for run in runs if (run / "eval-network.json").exists()]
    if measured:
        plot_accuracy_vs_samples(measured, ctx.dir(NAME, "matched", "accuracy_vs_samples.png"),
                                 title=f"{fashion.dataset}: bipolar β = {fashion.beta:g} against unipolar β = "
                                       f"{fashion.beta:g} and {2 * fashion.beta:g}")
    lines = [f"# {TITLE}", "", f"Scale `{ctx.scale}`. Generated by `pdnn reproduce`; every number is read from the runs' "
             "JSON files.", "", "## Cheapest configuration within one point of the 32-bit float network", ""]
    headlines = [{**h, "dataset": dataset} for dataset in specs(ctx)
                 if (ctx.dir(NAME, dataset, "headline.json")).exists()
                 for h in read_json(ctx.dir(NAME, dataset, "headline.json")).values()]
    lines += (headline_rows(headlines) if headlines else ["Not measured."]) + [""]
    for dataset, spec in specs(ctx).items():
        lines += [f"## {dataset}: accuracy (%) against T ({accuracy.describe(spec)})", ""]
        lines += run_table([run for run, _, _ in lowbit_runs(ctx, spec)], spec.test_samples) + [""]
    lines += [f"## Sigmoid against tanh p-bits at matched temperature ({fashion.dataset}; accuracy % at T = "
              f"{' / '.join(map(str, fashion.test_samples))})", ""]
    lines += matched_rows(triples, (f"bipolar β = {fashion.beta:g}", f"unipolar β = {fashion.beta:g} (mismatched)",
                                    f"unipolar β = {2 * fashion.beta:g} (matched)"), fashion.test_samples) + [""]
    write_text(ctx.dir(NAME, "README.md"), "\n".join(lines))


def judge_gain(claim: str, h: dict) -> Claim:
    """The "> 2× within one point with low-bit weights" claim from one memory's headline."""
    ref, best, low = h["reference"], h["best"], h["best_lowbit_pbit"]
    cheapest = (f"cheapest of all within 1 point: {best['label']} ({best['weight_bits']}-bit weights), "
                f"{best['gain']:.2f}×")
    if low is None:
        m = h["most_accurate_lowbit_pbit"]
        closest = ("" if m is None else
                   f" (most accurate: {m['label']}, {100 * m['accuracy']:.2f}% vs {100 * ref['accuracy']:.2f}%)")
        return Claim.decide(claim, PAPER_GAIN, f"no p-DNN with low-bit weights within 1 point{closest}: accuracy "
                            f"limits it, not energy; {cheapest}", RULE_GAIN, False)
    limits = low["limits"]
    term = limits["limiting_term"]
    ours = (f"{low['label']} ({low['weight_bits']}-bit weights, {100 * low['accuracy']:.2f}% vs "
            f"{100 * ref['accuracy']:.2f}%): **{low['gain']:.2f}×**; limited by {term_name(term)} "
            f"({100 * limits['limiting_share']:.0f}% of its energy; alone it allows ≤ "
            f"{limits['gain_cap_by_term'][term]:.1f}×); {cheapest}")
    return Claim.decide(claim, PAPER_GAIN, ours, RULE_GAIN, low["gain"] > GAIN)


def judge_alike(claim: str, gaps: list[dict], mismatched: list[dict]) -> Claim:
    """The matched-temperature claim from the bipolar − unipolar gaps at every (s, T)."""
    worst = max(gaps, key=lambda g: abs(g["gap"]))
    ours = (f"largest |gap| {100 * abs(worst['gap']):.2f} points (s = {worst['s']}, T = {worst['T']}), mean "
            f"{100 * sum(abs(g['gap']) for g in gaps) / len(gaps):.2f}")
    if mismatched:
        ours += f"; at mismatched temperature (unipolar β) up to {100 * max(abs(g['gap']) for g in mismatched):.2f}"
    return Claim.decide(claim, PAPER_ALIKE, ours, RULE_ALIKE, alike(gaps, TOLERANCE))


def section(ctx: Context) -> Section:
    fashion = accuracy.specs(ctx)[0]
    section = Section(TITLE, text=(
        "The accuracy study's networks retrained with b_w-bit weights (one learned scale per output channel), "
        "nothing else changed, priced with the 45 nm table (Horowitz, ISSCC 2014), weights read per EO, the "
        "deterministic prefix shared by the T samples, 8-bit inputs. Grid per dataset: "
        + "; ".join(f"{d}: b_w ∈ {{{', '.join(map(str, g.bits))}}} × tanh, "
                    + "".join(f"quant{k}, " for k in g.quant_bits)
                    + f"p-bit s ∈ {{{', '.join(map(str, g.train_samples))}}}" for d, g in GRIDS[ctx.scale].items())
        + ". The limiting term is the EO term that, were every other term free, would allow the smallest gain. "
        f"Unipolar p-bits at β = {2 * fashion.beta:g} have the temperature of the bipolar p-bits at β = "
        f"{fashion.beta:g} (σ(2βx) = (1 + tanh(βx))/2). "
        + ctx.link(ctx.dir(NAME, "README.md"), "Tables", f"{NAME}/summary")))
    for dataset in ("fashion-mnist", "cifar10"):
        spec = next(s for s in accuracy.specs(ctx) if s.dataset == dataset)
        path = ctx.dir(NAME, dataset, "headline.json")
        for memory in MEMORIES:
            claim = (f"{dataset}, {memory.upper()}: > 2× less energy than the 32-bit network within 1 %, "
                     "with low-bit weights")
            if dataset not in GRIDS[ctx.scale]:
                section.claims.append(not_measured(claim, PAPER_GAIN, NOT_PLANNED.format(scale=ctx.scale), RULE_GAIN))
                continue
            result = ctx.dir(NAME, dataset, f"tradeoff-{memory}.json")  # the points headline.json was made from
            if path.exists() and result.exists():
                gone = energy.sources_missing(ctx, read_json(result))
            else:
                gone = ctx.why_missing(f"{NAME}/{dataset}/tradeoff")
            if gone:
                section.claims.append(not_measured(claim, PAPER_GAIN, gone, RULE_GAIN))
            else:
                section.claims.append(judge_gain(claim, read_json(path)[memory]))
                section.figures.append(Figure(ctx.dir(NAME, dataset, f"tradeoff-{memory}.png"), (
                    f"{dataset}, {memory.upper()}: accuracy against energy per inference of every float- and low-bit-"
                    f"weight run at every T, Pareto front in black, the cheapest configuration within one point "
                    f"starred; {accuracy.describe(spec)}"), f"{NAME}/{dataset}/tradeoff"))
    section.claims.append(_alike_claim(ctx, fashion))
    figure = ctx.dir(NAME, "matched", "accuracy_vs_samples.png")
    if figure.exists() or f"{NAME}/summary" in ctx.done:  # (a figure deleted since is named, not dropped)
        section.figures.append(Figure(figure, f"{fashion.dataset}: bipolar p-DNNs against unipolar ones at the same "
                                              f"and at the matched temperature, by T; {accuracy.describe(fashion)}",
                                      f"{NAME}/summary"))
    return section


def _alike_claim(ctx: Context, spec: StudySpec) -> Claim:
    claim = f"{spec.dataset}: sigmoid and tanh p-bits perform alike at matched temperature"
    runs = ctx.dir(accuracy.NAME, spec.dataset, "runs")
    pairs = {s: (runs / f"pbit-s{s}", matched_dir(ctx, spec, s)) for s in MATCHED[ctx.scale]}
    reasons = {run: ctx.why_run_missing(run) for pair in pairs.values() for run in pair}
    if missing := [run for run, reason in reasons.items() if reason]:
        reason = reasons[missing[0]]
        return not_measured(claim, PAPER_ALIKE, f"{missing[0]} has no evaluation" if reason == "not run yet" else reason,
                            RULE_ALIKE)
    same = {s: (runs / f"pbit-s{s}", runs / f"pbit-unipolar-s{s}") for s in pairs}
    mismatched = matched_gaps({s: p for s, p in same.items() if (p[1] / "eval-network.json").exists()})
    return judge_alike(claim, matched_gaps(pairs), mismatched)
