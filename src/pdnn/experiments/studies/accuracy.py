"""Accuracy against T and the train-test matrix (the paper's Section 2), on Fashion-MNIST and
CIFAR-10: float tanh and sigmoid, k-bit activations, bipolar and unipolar p-DNNs trained with s
samples, each evaluated at every T -- :mod:`pdnn.experiments.study`, one step per run."""
from __future__ import annotations

from dataclasses import replace

from ..plan import Claim, Context, Figure, Section, Step, not_measured
from ..study import StudySpec, evaluate_one, finish_study, study_models, summarise, train_one

NAME = "accuracy"
TITLE = "Accuracy against T and the train-test matrix"

# seconds per training example and sample, and per evaluated example and sample, on the reference
# machine (2 CPU cores), from the 5-epoch Fashion-MNIST and 4-epoch CIFAR-10 studies in results/
TRAIN_S = {"mlp": 1.3e-4, "cnn": 2.3e-3}
EVAL_S = {"mlp": 8e-6, "cnn": 4e-4}

_FASHION = StudySpec(dataset="fashion-mnist", model="mlp", width=256, beta=2.0, subset=54000, schedule="cosine")
_CIFAR = StudySpec(dataset="cifar10", model="cnn", width=16, beta=2.0, subset=45000, schedule="cosine")
SPECS = {
    "tiny": [replace(_FASHION, width=16, epochs=1, subset=256, eval_subset=128, test_samples=[1, 2, 5, 10],
                     train_samples=[1, 2], quant_bits=[1, 3], repeats=2),
             replace(_CIFAR, width=4, epochs=1, subset=256, eval_subset=128, test_samples=[1, 2, 5, 10],
                     train_samples=[1, 2], quant_bits=[3], pbit_neurons=["pbit"], repeats=2)],
    "small": [replace(_FASHION, epochs=3),
              replace(_CIFAR, epochs=2, subset=10000, eval_subset=1000, train_samples=[1, 2, 4],
                      pbit_neurons=["pbit"], repeats=2)],
    "full": [replace(_FASHION, epochs=100),
             replace(_CIFAR, epochs=1000, eval_subset=None, lr=1e-3)],
}

PAPER = {
    "T = 1 matches the 32-bit baseline": "a p-DNN sampled once matches the 32-bit network",
    "T = 2 surpasses the 32-bit baseline": "two samples surpass the 32-bit network",
    "T = 10 matches the 3-bit model": "ten samples match a 3-bit network",
    "training with s matching test T is best": "best when training s matches test T",
    "sigmoid (unipolar) and tanh (bipolar) p-bits perform alike": "sigmoid and tanh p-bits perform alike",
}


def specs(ctx: Context) -> list[StudySpec]:
    return SPECS[ctx.scale]


def study_dir(ctx: Context, spec: StudySpec):
    return ctx.dir(NAME, spec.dataset)


def model_name(spec: StudySpec) -> str:
    return f"{spec.model}-{spec.width}" if spec.width else spec.model


def train_step(ctx: Context, spec: StudySpec, name: str, samples: int, run) -> Step:
    """One run's training; its time is proportional to epochs x examples at a per-example rate
    of its model and s (the reference rates scale the 5-epoch Fashion-MNIST MLP-256 and 4-epoch
    CIFAR-10 CNN-16 studies in results/ by width and s)."""
    width = (spec.width or 256) / (256 if spec.model == "mlp" else 16)
    per_sample = 1 + 0.1 * (samples - 1) if spec.model == "mlp" else max(1.0, 0.75 * samples)
    rate, work = f"train/{model_name(spec)}/s{samples}", spec.epochs * (spec.subset or 50000)
    return Step(f"{NAME}/{spec.dataset}/{name}/train", ctx.estimate(rate, work, TRAIN_S[spec.model] * width * per_sample),
                run, (f"data:{spec.dataset}",), rate, work)


def eval_step(ctx: Context, spec: StudySpec, name: str, stochastic: bool, run) -> Step:
    """One run's evaluation: examples x (sum of T x repeats) forward passes of one sample."""
    width = (spec.width or 256) / (256 if spec.model == "mlp" else 16)
    passes = sum(spec.test_samples) * spec.repeats if stochastic else 1
    rate, work = f"eval/{model_name(spec)}", (spec.eval_subset or 10000) * passes
    return Step(f"{NAME}/{spec.dataset}/{name}/eval", ctx.estimate(rate, work, EVAL_S[spec.model] * width),
                run, (f"data:{spec.dataset}",), rate, work)


def steps(ctx: Context) -> list[Step]:
    out = []
    for spec in specs(ctx):
        folder = study_dir(ctx, spec)
        models = study_models(spec)
        kw = dict(roots=ctx.roots, device=ctx.device, progress=False)
        for name, (neuron, s) in spec.runs().items():
            out.append(train_step(ctx, spec, name, s, lambda spec=spec, name=name, folder=folder, models=models:
                                   train_one(folder, spec, name, models[name], **kw)))
            out.append(eval_step(ctx, spec, name, neuron.startswith("pbit"), lambda spec=spec, name=name, folder=folder:
                                  evaluate_one(folder, spec, name, **kw)))
        out.append(Step(f"{NAME}/{spec.dataset}/summary", 10, lambda spec=spec, folder=folder: finish_study(folder, spec),
                        (f"data:{spec.dataset}",)))
    return out


def section(ctx: Context) -> Section:
    section = Section(TITLE, text=(
        "Per dataset: float tanh and sigmoid networks (32-bit baselines), k-bit activations, and p-DNNs "
        "trained on the mean of s samples, each p-DNN evaluated at every test T (mean ± std over "
        "independent sampling repeats). The study folder's README has every number and its schedule."))
    lines = []
    for spec in specs(ctx):
        folder = study_dir(ctx, spec)
        reason = runs_missing(ctx, spec) or (None if (folder / "summary.json").exists()  # (the figures' step)
                                              else ctx.why_missing(f"{NAME}/{spec.dataset}/summary"))
        if reason:
            section.claims += [not_measured(f"{spec.dataset}: {c}", p, reason) for c, p in PAPER.items()
                               if "unipolar" not in c or "pbit-unipolar" in spec.pbit_neurons]
            lines.append(f"- **{spec.dataset}** ({describe(spec)}): not measured ({reason}).")
            continue
        summary = summarise(folder, spec)  # from the runs' files, not the summary step's copy of them
        for c in summary["claims"]:
            section.claims.append(Claim.decide(f"{spec.dataset}: {c['claim']}", PAPER.get(c["claim"], "–"),
                                               c["ours"], c["rule"], c["holds"]))
        section.figures += [Figure(folder / "accuracy_vs_samples_pbit.png",
                                   f"{spec.dataset}: accuracy against T, p-DNNs and baselines; {describe(spec)}",
                                   f"{NAME}/{spec.dataset}/summary"),
                            Figure(folder / "train_test_matrix.png",
                                   f"{spec.dataset}: accuracy by training s and test T; {describe(spec)}",
                                   f"{NAME}/{spec.dataset}/summary")]
        tanh = summary["runs"]["tanh"]["accuracy"]["1"]["mean"]
        best = max(((name, t, v["mean"]) for name, r in summary["runs"].items() if name.startswith("pbit")
                    for t, v in r["accuracy"].items()), key=lambda x: x[2])
        lines.append(f"- **{spec.dataset}** ({describe(spec)}): tanh {100 * tanh:.2f}%; best p-DNN "
                     f"{best[0]} at T = {best[1]}: {100 * best[2]:.2f}%. "
                     + ctx.link(folder / "README.md", "README", f"{NAME}/{spec.dataset}/summary"))
    section.text += "\n\n" + "\n".join(lines)
    return section


def runs_missing(ctx: Context, spec: StudySpec) -> str | None:
    """Why a run of the study of ``spec`` has no readable evaluation (see :meth:`Context.why_run_missing`),
    or None when all have one: the claims are computed from them, not from the summary step's copy,
    which would outlive its source."""
    return next(filter(None, (ctx.why_run_missing(study_dir(ctx, spec) / "runs" / name) for name in spec.runs())), None)


def describe(spec: StudySpec) -> str:
    """The schedule and data of ``spec`` in words, for captions."""
    return (f"{spec.model}{f' width {spec.width}' if spec.width else ''}, {spec.epochs} epochs on "
            f"{f'the first {spec.subset}' if spec.subset else 'all'} training images, accuracy on "
            f"{f'the first {spec.eval_subset}' if spec.eval_subset else 'all'} test images, "
            f"{spec.repeats} repeats")
