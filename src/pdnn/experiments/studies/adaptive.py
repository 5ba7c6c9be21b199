"""T chosen per input at run time (beyond the paper): accuracy against mean T for the stopping rule
of :mod:`pdnn.adaptive`, beside fixed T and the oracle, with energy per inference at each input's
own T -- :mod:`pdnn.experiments.adaptive_study`, on the accuracy study's p-DNN trained with the
most samples, per dataset.

Two steps per dataset: draw the pool of N samples of every test input once (kept in the study
folder, named by the checkpoint's digest, so a retrained run gets a new pool), then replay every
method on it and write ``<dataset>/adaptive.json``; the second step also redraws the study's one
figure and README from every dataset done so far.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...io import read_json, write_json, write_text
from .. import adaptive_study as study
from ..plan import Claim, Context, Figure, Section, Step, not_measured
from . import accuracy

NAME = "adaptive"
TITLE = "T chosen per input (adaptive sampling, beyond the paper)"
FIGURE = "accuracy-vs-mean-T.png"
PAPER = "— (beyond the paper)"


@dataclass(frozen=True)
class Settings:
    max_samples: int  # N: the samples drawn per input, the fixed T the rule protects
    seed: int = 0
    batch: int = 500  # inputs per batch, as `pdnn eval` folds them (rounds and per-batch weight reuse)
    memory: str = "dram"  # where weights and activations are read from, for the energy


SETTINGS = {"tiny": Settings(max_samples=10), "small": Settings(max_samples=50), "full": Settings(max_samples=50)}

# Seconds per test input and sample (one draw) on the reference machine (2 CPU cores), at width 256
# (mlp) and 16 (cnn), scaled by the width as in the accuracy study. Pool: the CPU time of
# record_pool with 2 threads, measured while the 2 cores were shared (load about 10, so wall time
# there meant nothing; CPU time is the upper bound used): Fashion-MNIST mlp 2000 x 50: 9.5 s;
# CIFAR-10 cnn pbit-s4 200 x 50: 16.8 s. Replay of the seven levels plus the energy model: 4.0 s
# CPU for CIFAR-10 1000 x 50, 6.3-8.7 s for Fashion-MNIST 10000 x 50 (time_s in
# results/adaptive/first-rule/adaptive.json).
POOL_S = {"mlp": 1.0e-4, "cnn": 1.7e-3}
REPLAY_S = 1.7e-5
POOL_OVERHEAD_S = 5  # loading the model and the test split
REPLAY_OVERHEAD_S = 4


def rule_text() -> str:
    return (f"the smallest mean T of an error level whose accuracy is within {study.GOAL_POINTS} points of fixed "
            f"T = N is ≤ {study.GOAL_MEAN_T:g} (same draws)")


def claim_text(dataset: str, n: int) -> str:
    return (f"{dataset}: adaptive T reaches the accuracy of fixed T = {n} within {study.GOAL_POINTS} points "
            f"at mean T ≤ {study.GOAL_MEAN_T:g}")


def run_dir(ctx: Context, spec: accuracy.StudySpec):
    """The accuracy study's bipolar p-DNN trained with the most samples."""
    return ctx.dir(accuracy.NAME, spec.dataset, "runs", f"pbit-s{max(spec.train_samples)}")


def result_path(ctx: Context, dataset: str):
    return ctx.dir(NAME, dataset, "adaptive.json")


def steps(ctx: Context) -> list[Step]:
    """Per dataset: the pool (time proportional to the draws, at a rate of the model and width) and
    the replay."""
    settings, out = SETTINGS[ctx.scale], []
    for spec in accuracy.specs(ctx):
        draws = (spec.eval_subset or 10000) * settings.max_samples
        width = (spec.width or 256) / (256 if spec.model == "mlp" else 16)
        need = (f"data:{spec.dataset}",)
        rate = f"{NAME}-pool/{accuracy.model_name(spec)}"
        out.append(Step(f"{NAME}/{spec.dataset}/pool",
                        ctx.estimate(rate, draws, POOL_S[spec.model] * width, POOL_OVERHEAD_S),
                        lambda spec=spec: draw_pool(ctx, spec), need, rate, draws))
        # the replay has no rate to learn: at tiny scale its time is all start-up and drawing the figure
        out.append(Step(f"{NAME}/{spec.dataset}/replay", REPLAY_OVERHEAD_S + draws * REPLAY_S,
                        lambda spec=spec: replay(ctx, spec), need))
    return out


def _pool_args(ctx: Context, spec: accuracy.StudySpec) -> dict:
    s = SETTINGS[ctx.scale]
    return dict(run_dir=run_dir(ctx, spec), subset=spec.eval_subset, samples=s.max_samples, seed=s.seed,
                cache=ctx.dir(NAME, spec.dataset, "pool"))


def draw_pool(ctx: Context, spec: accuracy.StudySpec) -> None:
    """Draw (or find) the pool of N samples per test input."""
    study.cached_pool(**_pool_args(ctx, spec), batch_size=SETTINGS[ctx.scale].batch, roots=ctx.roots,
                      device=ctx.device)


def replay(ctx: Context, spec: accuracy.StudySpec) -> None:
    """Every method on the pool -> ``<dataset>/adaptive.json``; then the figure and README."""
    s, path, pool = SETTINGS[ctx.scale], result_path(ctx, spec.dataset), _pool_args(ctx, spec)
    # names the checkpoint's digest (a retrained run is studied again) and a device other than the CPU
    drawn = study.pool_path(**pool, device=ctx.device, batch_size=s.batch).name
    if not path.exists() or read_json(path).get("pool") != drawn:
        result = study.study_run(spec.dataset, pool["run_dir"], pool["cache"], spec.eval_subset, s.max_samples,
                                 study.ERRORS, s.seed, s.memory, s.batch, roots=ctx.roots, device=ctx.device)
        result["run"] = str(pool["run_dir"].relative_to(ctx.work))
        result["schedule"] = schedule(spec)
        result["pool"] = drawn
        write_json(path, result)
    write_summary(ctx)


def document(ctx: Context) -> dict:
    """The results of every dataset done so far, in the accuracy study's order."""
    paths = [result_path(ctx, spec.dataset) for spec in accuracy.specs(ctx)]
    return {"runs": [read_json(p) for p in paths if p.exists()]}


def write_summary(ctx: Context) -> None:
    """The figure and README of every dataset done so far, unless they are newer than every result."""
    results = [p for p in (result_path(ctx, spec.dataset) for spec in accuracy.specs(ctx)) if p.exists()]
    outputs = [ctx.dir(NAME, FIGURE), ctx.dir(NAME, "README.md")]
    if not results or all(o.exists() and o.stat().st_mtime_ns >= max(r.stat().st_mtime_ns for r in results)
                          for o in outputs):
        return
    doc = document(ctx)
    study.write_figure(doc, ctx.dir(NAME, FIGURE))
    header = (f"Generated by `pdnn reproduce --scale {ctx.scale}` (study `{NAME}`) from the runs "
              f"of the accuracy study; the rule and its derivation: `docs/adaptive.md`.\n\n"
              + "\n".join(f"- {r['dataset']}: `{r['run']}` — {r['schedule']}" for r in doc["runs"]))
    write_text(ctx.dir(NAME, "README.md"), study.render_readme(doc, header))


def schedule(spec: accuracy.StudySpec) -> str:
    return (f"{spec.model}{f' width {spec.width}' if spec.width else ''} p-bit network trained on the mean of "
            f"{max(spec.train_samples)} samples, {spec.epochs} epoch{'s' if spec.epochs != 1 else ''} on "
            f"{f'the first {spec.subset}' if spec.subset else 'all'} training images; "
            f"{f'the first {spec.eval_subset}' if spec.eval_subset else 'all'} test images")


def claim_for(run: dict) -> Claim:
    """The claim of one dataset, decided by :func:`pdnn.experiments.adaptive_study.goal_met`."""
    n, best, oracle = run["max_samples"], study.best_within_goal(run), run["oracle"]
    full = run["fixed"][-1]["accuracy"]
    if best is None:
        closest = max(run["adaptive"], key=lambda a: a["accuracy"])
        ours = (f"no error level within {study.GOAL_POINTS} points of T = {n} ({100 * full:.2f}%); closest "
                f"{100 * closest['accuracy']:.2f}% at mean T {closest['mean_samples']:.2f}")
    else:
        within = study.fixed_t_for(run, full - study.GOAL_POINTS / 100)
        ours = (f"mean T {best['mean_samples']:.2f} at error {best['error']:g}: {100 * best['accuracy']:.2f}% vs "
                f"{100 * full:.2f}% (paired {100 * best['accuracy_minus_T_max']:+.2f} ± "
                f"{100 * best['accuracy_minus_T_max_stderr']:.2f} points); smallest fixed T within {study.GOAL_POINTS} "
                f"points: {within}")
    held = run.get("held_out")
    if held:
        ours += (f"; with the level chosen on the other {study.held_out_name(held)} of the images, "
                 f"{100 * held['accuracy_minus_T_max']:+.2f} ± {100 * held['accuracy_minus_T_max_stderr']:.2f} points "
                 f"at mean T {held['mean_samples']:.2f}")
    ours += f"; oracle mean T {oracle['mean_samples']:.2f} ({run['examples']} test images)"
    return Claim.decide(claim_text(run["dataset"], n), PAPER, ours, rule_text(), study.goal_met(run))


def section(ctx: Context) -> Section:
    settings = SETTINGS[ctx.scale]
    n = settings.max_samples
    section = Section(TITLE, text=(
        f"Per dataset, the accuracy study's p-DNN trained with the most samples: N = {n} samples of every "
        f"test input drawn once (seed {settings.seed}); fixed T uses the first T of them, the stopping rule of "
        f"`pdnn.adaptive` (predictive, docs/adaptive.md) is replayed on them at error levels "
        f"{', '.join(f'{e:g}' for e in study.ERRORS)}, and the oracle stops each input once its decision never "
        f"changes again. Energy per inference at each input's own T, weights and activations in "
        f"{settings.memory.upper()}, in the study folder's README (three accountings of the weight read). "
        f"This goes beyond the paper, which samples every input T times. The rule compares accuracies on the "
        f"same draws; the paired standard error beside each difference says whether {study.GOAL_POINTS} points "
        f"are resolved on this many test images."))
    doc, lost = {"runs": []}, False
    for spec in accuracy.specs(ctx):
        path, step = result_path(ctx, spec.dataset), f"{NAME}/{spec.dataset}/replay"
        reason = ctx.why_unreadable(path, step)
        if reason:
            section.claims.append(not_measured(claim_text(spec.dataset, n), PAPER, reason, rule_text()))
            lost |= step in ctx.done  # the figure and README were drawn with it
            continue
        doc["runs"].append(read_json(path))
        section.claims.append(claim_for(doc["runs"][-1]))
    if lost:
        section.text += ("\n\nThe figure and the README are left out: they were drawn with a result that is missing "
                         "or damaged now (the claims say which step makes it again).")
    elif doc["runs"]:
        # any replay draws the figure and README again: named, a finished one (a skipped one's dataset would not)
        replays = [f"{NAME}/{spec.dataset}/replay" for spec in accuracy.specs(ctx)]
        drawn_by = next((step for step in reversed(replays) if step in ctx.done), replays[-1])
        section.figures.append(Figure(ctx.dir(NAME, FIGURE), (
            "Accuracy against mean samples per input: fixed T (line), the stopping rule at each error level "
            "(dashed), the oracle (star); " + "; ".join(f"{r['dataset']}: {r['schedule']}" for r in doc["runs"])
            + f"; N = {n} draws per input, seed {settings.seed}, every method on the same draws."), drawn_by))
        section.text += (f"\n\n{study.summary_table(doc)}\n\n"
                         + ctx.link(ctx.dir(NAME, "README.md"), "README with every level, T distribution and energy",
                                    drawn_by))
    return section
