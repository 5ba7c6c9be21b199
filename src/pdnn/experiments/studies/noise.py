"""Sampling a deterministically trained network without retraining, and network (p-DNN) against
layer (random bit-stream) aggregation at equal T, on the runs of the accuracy study.

Per dataset: the accuracy study's float tanh network becomes p-bits (``pdnn.convert``, no weight
changes) with β calibrated on held-out *training* images (those after the run's training subset)
and its BatchNorm statistics re-estimated under sampling at each β -- of the all-layer single-β
p-bit conversions of ``results/noise/``, the best at T = 50 on both datasets -- and is evaluated
at the study's T. Its largest trained p-DNN is evaluated with layer aggregation beside its
network-aggregation evaluation of the accuracy study. The claims are decided by the rules of
``results/noise/README.md`` (:mod:`pdnn.experiments.noise_rules`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...convert import DEFAULT_VALUES, convert_run, restore_checkpoint
from ...io import CHECKPOINT, CONFIG, atomic_write, pyplot, read_json, save_figure, write_json
from ..noise_rules import (ABOVE_RULE, AGGREGATION_RULE, GAIN_RULE, aggregation_verdict, bound,
                           rows_by_samples, verdicts)
from ..plan import Claim, Context, Figure, Section, Step, not_measured
from ..runs import ensure_evaluated
from ..study import StudySpec
from . import accuracy

NAME = "noise"
TITLE = "Sampling without retraining; network against layer aggregation"

# BatchNorm re-estimation draws 4 samples per held-out image (pdnn.convert's default) in one pass per BatchNorm
# behind the noise: measured on the reference CNN, a sample costs about 5 evaluated samples (the MLP has fewer)
BN_COST = 4 * 5


@dataclass(frozen=True)
class Settings:
    values: tuple[float, ...]  # the β the calibration tries
    samples: tuple[int, ...]  # the T it measures; it compares at the largest
    holdout: dict[str, float | int]  # held-out training images per dataset: a count, or a fraction of the run's subset


SETTINGS = {
    "tiny": Settings((1.0, 2.0, 4.0), (1, 2), {"fashion-mnist": 0.25, "cifar10": 0.25}),
    # as results/noise/ (default grid, T = 1, 2, 5, 10), on 1000 held-out CIFAR-10 images (CPU budget)
    "small": Settings(DEFAULT_VALUES["pbit"], (1, 2, 5, 10), {"fashion-mnist": 0.1, "cifar10": 1000}),
    "full": Settings(DEFAULT_VALUES["pbit"], (1, 2, 5, 10), {"fashion-mnist": 0.1, "cifar10": 2000}),
}
PAPER = {
    "gains": "noise-based sampling improves a trained deterministic network without retraining: accuracy gains "
             "from T = 2 and rises with T",
    "beats": "noise-based sampling improves a trained deterministic network without retraining",
    "network": "averaging whole-network samples (p-DNN) beats the random bit-stream (stochastic computing) "
               "baseline at equal T",
}


def accuracy_run(ctx: Context, spec: StudySpec, name: str) -> Path:
    return accuracy.study_dir(ctx, spec) / "runs" / name


def pdnn_name(spec: StudySpec) -> str:
    """The accuracy study's p-DNN trained with the most samples."""
    return f"pbit-s{max(spec.train_samples)}"


def converted_dir(ctx: Context, spec: StudySpec) -> Path:
    return ctx.dir(NAME, spec.dataset, "runs", "tanh-pbit-cal-bn")


def layer_dir(ctx: Context, spec: StudySpec) -> Path:
    return ctx.dir(NAME, spec.dataset, "runs", pdnn_name(spec))


def figure_path(ctx: Context, spec: StudySpec) -> Path:
    return ctx.dir(NAME, spec.dataset, "accuracy-vs-T.png")


def _finished(run: Path) -> Path:
    """``run`` once the accuracy study has evaluated it (before that its checkpoint may be mid-training)."""
    if not (run / "eval-network.json").is_file():
        raise FileNotFoundError(f"{run} is not finished (no eval-network.json): run the accuracy study's steps first")
    return run


def _holdout_count(ctx: Context, spec: StudySpec) -> int:
    holdout = SETTINGS[ctx.scale].holdout[spec.dataset]
    return holdout if isinstance(holdout, int) else round(holdout * (spec.subset or 50000))


def convert(ctx: Context, spec: StudySpec) -> None:
    """The tanh run as p-bits with calibrated β and BatchNorm re-estimated, unless
    converted already; an interrupted conversion (no config.json) is replaced."""
    out = converted_dir(ctx, spec)
    if (out / CONFIG).is_file():
        if not (out / CHECKPOINT).is_file():
            restore_checkpoint(out)
        return
    settings = SETTINGS[ctx.scale]
    holdout = settings.holdout[spec.dataset]
    # read only as far as the held-out images after the run's training subset
    subset = spec.subset + holdout if spec.subset and isinstance(holdout, int) else None
    convert_run(_finished(accuracy_run(ctx, spec, "tanh")), out, "pbit", calibrate=True, values=settings.values,
                samples=settings.samples, target=max(settings.samples), holdout=holdout,
                recalibrate_bn=True, seed=spec.seed, roots=ctx.roots, subset=subset,
                device=ctx.device, force=out.exists(), label=f"{spec.dataset} tanh -> p-bits", progress=False)


def evaluate_converted(ctx: Context, spec: StudySpec) -> None:
    ensure_evaluated(converted_dir(ctx, spec), spec.test_samples, spec.repeats, subset=spec.eval_subset,
                     roots=ctx.roots, device=ctx.device, progress=False)


def evaluate_layer(ctx: Context, spec: StudySpec) -> None:
    """The trained p-DNN with layer aggregation, on a copy of its run (the accuracy study's folder
    is only read); the checkpoint is copied first and config.json last, so a copy with a config
    is whole."""
    run = layer_dir(ctx, spec)
    if not (run / CONFIG).is_file():
        source = _finished(accuracy_run(ctx, spec, pdnn_name(spec)))
        run.mkdir(parents=True, exist_ok=True)
        weights = (source / CHECKPOINT).read_bytes()
        atomic_write(run / CHECKPOINT, lambda f: f.write(weights))
        config = read_json(source / CONFIG)
        config["copied_from"] = str(source)
        write_json(run / CONFIG, config)
    ensure_evaluated(run, spec.test_samples, spec.repeats, aggregate="layer", subset=spec.eval_subset,
                     roots=ctx.roots, device=ctx.device, progress=False)


def _curves(ctx: Context, spec: StudySpec) -> dict:
    """The evaluations the claims and the figure read, those that exist: ``deterministic`` (the
    tanh source's accuracy), ``converted``, ``network`` and ``layer`` (the p-DNN's), as
    eval-*.json documents."""
    runs = {"deterministic": accuracy_run(ctx, spec, "tanh"), "network": accuracy_run(ctx, spec, pdnn_name(spec))}
    files = {"converted": converted_dir(ctx, spec) / "eval-network.json",
             "layer": layer_dir(ctx, spec) / "eval-layer.json"}
    curves = {k: read_json(p) for k, p in files.items() if p.is_file()}
    # the accuracy study's evaluations, those readable: the claims name what is wrong with the others
    readable = {k: run for k, run in runs.items() if not ctx.why_run_missing(run)}
    return {**curves, **{k: read_json(run / "eval-network.json") for k, run in readable.items()}}


def _conversion_unread(ctx: Context, spec: StudySpec) -> str | None:
    """Why the converted run's records of how it was made cannot be read, or None: the claims read
    only its evaluation, so a run whose config.json or calibration.json is gone loses the words
    that describe it, not its claims."""
    run, step = converted_dir(ctx, spec), f"{NAME}/{spec.dataset}/convert"
    return ctx.why_unreadable(run / CONFIG, step) or ctx.why_unreadable(run / "calibration.json", step)


def _conversion_text(ctx: Context, spec: StudySpec) -> str:
    run = converted_dir(ctx, spec)
    beta = read_json(run / CONFIG)["convert"]["beta"]
    data = read_json(run / "calibration.json")["data"]
    return (f"β = {beta:g} calibrated on training images {data['start']}..{data['stop'] - 1}"
            f"{' (seen in training)' if data['seen_in_training'] else ''}, BatchNorm re-estimated")


def draw_figure(ctx: Context, spec: StudySpec) -> None:
    plt = pyplot()
    curves = _curves(ctx, spec)
    missing = {"deterministic", "converted", "network", "layer"} - set(curves)
    if missing:
        raise FileNotFoundError(f"{spec.dataset}: no evaluation of {', '.join(sorted(missing))} to draw")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(100 * curves["deterministic"]["results"][0]["accuracy_mean"], color="k", linestyle=":",
               label="deterministic tanh (source)")
    styles = {"converted": ("C0", "-", f"tanh → p-bits, no retraining ({_conversion_text(ctx, spec)})"),
              "network": ("C1", "-", f"trained p-DNN {pdnn_name(spec)}, network aggregation"),
              "layer": ("C1", "--", f"trained p-DNN {pdnn_name(spec)}, layer aggregation (bit stream)")}
    for key, (color, style, label) in styles.items():
        rows = curves[key]["results"]
        ax.errorbar([r["samples"] for r in rows], [100 * r["accuracy_mean"] for r in rows],
                    yerr=[100 * r["accuracy_std"] for r in rows], color=color, linestyle=style, marker="o", ms=3,
                    capsize=2, label=label)
    ax.set_xscale("log")
    ax.set_xticks(spec.test_samples, [str(t) for t in spec.test_samples])
    ax.set_xlabel("samples T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{spec.dataset}: sampling without retraining; network vs layer aggregation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, figure_path(ctx, spec))


def steps(ctx: Context) -> list[Step]:
    """Per dataset: convert, evaluate the conversion, evaluate the p-DNN with layer aggregation, draw.

    Their time is proportional to evaluated examples x samples: a value of the calibration costs its
    largest T (the T are nested) and the BatchNorm passes; an evaluation is counted as the accuracy
    study counts its own (examples x sum of T x repeats), so that both share the measured rate, and
    layer aggregation draws every T anew. The reference rate is the accuracy study's (``EVAL_S``)."""
    out = []
    settings = SETTINGS[ctx.scale]
    for spec in accuracy.specs(ctx):
        key, need, model = f"{NAME}/{spec.dataset}", (f"data:{spec.dataset}",), accuracy.model_name(spec)
        reference = accuracy.EVAL_S[spec.model] * (spec.width or 256) / (256 if spec.model == "mlp" else 16)
        evaluations = (spec.eval_subset or 10000) * sum(spec.test_samples) * spec.repeats
        calibration = len(settings.values) * (max(settings.samples) + BN_COST) * _holdout_count(ctx, spec)
        work = {"convert": (f"convert/{model}", calibration), "eval-converted": (f"eval/{model}", evaluations),
                "eval-layer": (f"eval-layer/{model}", evaluations)}
        run = {"convert": convert, "eval-converted": evaluate_converted, "eval-layer": evaluate_layer}
        for name, (rate, units) in work.items():
            out.append(Step(f"{key}/{name}", ctx.estimate(rate, units, reference),
                            lambda spec=spec, fn=run[name]: fn(ctx, spec), need, rate, units))
        out.append(Step(f"{key}/figure", 3, lambda spec=spec: draw_figure(ctx, spec), need))
    return out


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def sampling_claims(ctx: Context, spec: StudySpec, curves: dict) -> list[Claim]:
    """Gains from T, and beats its deterministic source, for the converted network (the first
    needs only the converted network's evaluation)."""
    ds = spec.dataset
    claims = {"gains": f"{ds}: sampling without retraining: converted network gains from T",
              "beats": f"{ds}: sampling without retraining: converted network at the largest T beats its "
                       "deterministic source"}
    rules = {"gains": GAIN_RULE, "beats": ABOVE_RULE}
    if "converted" not in curves or "deterministic" not in curves:
        if "deterministic" in curves:  # the conversion's steps, or any of the study's that failed
            reason = ctx.why_missing(f"{NAME}/{ds}/convert", finished=False)
            if reason == "not run yet":
                reason = ctx.why_missing(f"{NAME}/{ds}/eval-converted")
        else:
            reason = ctx.why_run_missing(accuracy_run(ctx, spec, "tanh"))
        if reason == "not run yet":
            reason = ctx.why_missing(f"{NAME}/{ds}/")
        if "converted" not in curves:
            return [not_measured(claims[k], PAPER[k], reason, rules[k]) for k in claims]
    document = curves["converted"]
    rows, n = rows_by_samples(document), document["examples"]
    det = curves["deterministic"]["results"][0]["accuracy_mean"] if "deterministic" in curves else None
    v = verdicts(rows, det, n)
    ts = sorted(rows)
    acc = lambda t: f"{100 * rows[t]['accuracy_mean']:.2f}%"  # noqa: E731
    gains = (f"T=1 {acc(1)}, T=2 {acc(2)}, T={ts[-1]} {acc(ts[-1])}: {_pts(v['gain_T2_vs_T1'])} pts at T=2 "
             f"(bound {100 * v['gain_T2_vs_T1_bound']:.2f}), {'monotonic' if v['monotonic'] else 'not monotonic'}"
             + (f" (drops {v['significant_drops']})" if v["significant_drops"] else ""))
    measured = Claim.decide(claims["gains"], PAPER["gains"], gains, GAIN_RULE, v["gain_at_T2"] and v["monotonic"])
    if det is None:
        return [measured, not_measured(claims["beats"], PAPER["beats"], reason, ABOVE_RULE)]
    beats = (f"T={ts[-1]} {acc(ts[-1])} vs deterministic {100 * det:.2f}%: {_pts(v['Tmax_minus_deterministic'])} pts "
             f"(bound {100 * bound(n, rows[ts[-1]]):.2f})")
    return [measured, Claim.decide(claims["beats"], PAPER["beats"], beats, ABOVE_RULE, v["beats_deterministic"])]


def aggregation_claim(ctx: Context, spec: StudySpec, curves: dict) -> Claim:
    claim = f"{spec.dataset}: network (p-DNN) aggregation beats layer (bit-stream) aggregation at equal T"
    if "network" not in curves or "layer" not in curves:  # (the layer evaluation needs the network's)
        reason = (ctx.why_run_missing(accuracy_run(ctx, spec, pdnn_name(spec))) if "network" not in curves
                  else ctx.why_missing(f"{NAME}/{spec.dataset}/eval-layer"))
        return not_measured(claim, PAPER["network"], reason, AGGREGATION_RULE)
    n = curves["layer"]["examples"]
    v = aggregation_verdict(rows_by_samples(curves["network"]), rows_by_samples(curves["layer"]), n)
    ours = (f"{pdnn_name(spec)}, network − layer: " + ", ".join(
        f"T={t} {_pts(d)} (±{100 * v['bounds'][t]:.2f})" for t, d in v["differences"].items()) + " pts")
    return Claim.decide(claim, PAPER["network"], ours, AGGREGATION_RULE, v["beats"])


def _table(spec: StudySpec, curves: dict) -> list[str]:
    ts = spec.test_samples
    lines = [f"| {spec.dataset} (%) | " + " | ".join(f"T={t}" for t in ts) + " |", "|---|" + "---|" * len(ts)]
    names = {"deterministic": "deterministic tanh (source)", "converted": "tanh → p-bits, no retraining",
             "network": f"p-DNN {pdnn_name(spec)}, network aggregation",
             "layer": f"p-DNN {pdnn_name(spec)}, layer aggregation"}
    for key, name in names.items():
        if key not in curves:
            continue
        rows = rows_by_samples(curves[key])
        cells = [f"{100 * rows[t]['accuracy_mean']:.2f} ± {100 * rows[t]['accuracy_std']:.2f}" if t in rows else ""
                 for t in ts]
        if key == "deterministic":
            cells = [f"{100 * rows[1]['accuracy_mean']:.2f}"] + [""] * (len(ts) - 1)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def section(ctx: Context) -> Section:
    settings = SETTINGS[ctx.scale]
    section = Section(TITLE, text=(
        "The accuracy study's float tanh network is made stochastic without retraining: every hidden tanh becomes "
        f"a p-bit, β chosen from {', '.join(f'{b:g}' for b in settings.values)} on training images the network "
        f"never saw (those after its training subset): among the values within one binomial standard error of "
        f"the best held-out accuracy at T = {max(settings.samples)}, the one with the best mean over "
        f"T = {', '.join(map(str, settings.samples))}, with the BatchNorm statistics re-estimated under "
        "sampling at each β (`pdnn.convert`; of the all-layer single-β p-bit conversions in `results/noise/`, "
        "the best at T = 50 on both datasets). The accuracy study's "
        "p-DNN trained with the most samples is evaluated with layer aggregation (each layer's T bits averaged "
        "before the next layer: a random bit stream) beside its network aggregation (T whole-network samples "
        "averaged at the output). Accuracies are mean ± std over sampling repeats on the accuracy study's test "
        "images."))
    for spec in accuracy.specs(ctx):
        curves = _curves(ctx, spec)
        section.claims += sampling_claims(ctx, spec, curves)
        section.claims.append(aggregation_claim(ctx, spec, curves))
        conversion = None  # (how it was made, where its run and records are there to say it)
        if "converted" in curves:
            unread = _conversion_unread(ctx, spec)
            conversion = _conversion_text(ctx, spec) if unread is None else None
            section.text += f"\n\n**{spec.dataset}** — conversion: {conversion or f'not described ({unread})'}.\n\n"
        else:
            section.text += f"\n\n**{spec.dataset}**\n\n"
        section.text += "\n".join(_table(spec, curves))
        step = f"{NAME}/{spec.dataset}/figure"
        if figure_path(ctx, spec).is_file() or step in ctx.done:  # (a figure deleted since is named, not dropped)
            how = f" ({conversion})" if conversion else ""
            section.figures.append(Figure(figure_path(ctx, spec), (
                f"{spec.dataset}: accuracy against T of the deterministic tanh network, its p-bit conversion "
                f"without retraining{how}, and the trained p-DNN {pdnn_name(spec)} with "
                f"network and layer aggregation; {accuracy.describe(spec)}"), step))
    return section
