"""Generated image quality against T (the paper: FID against T on CelebA 64x64): Fashion-MNIST VAEs
whose decoders use p-bits trained with s samples, and a 32-bit (tanh) decoder, scored by fid-clf --
the Fréchet distance in the penultimate features of a classifier the study trains, since the
Inception-v3 weights of the FID cannot be downloaded here. One step per training run and per
scored decoder; the rules are those of results/generation/README.md
(:mod:`pdnn.experiments.generation_summary`)."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from ...data import describe, load
from ...io import read_json, write_json, write_text
from ...models import ModelConfig
from ...train import TrainConfig
from ..generation_summary import (cell, claim1_text, claim2_text, claim3_text, load as load_scored, mark, plot_fid_vs_t,
                                  plot_grids, verdicts)
from ..plan import Claim, Context, Figure, Section, Step, not_measured
from ..runs import ensure_scored, ensure_trained

NAME = "generation"
TITLE = "Generated image quality against T (fid-clf, Fashion-MNIST VAEs)"

# seconds on the reference machine (2 shared CPU cores), from results/generation/runs/*: a width-8
# VAE trains at ~1.2e-2 s per image and epoch with s = 1 (tanh 21.8 s, pbit-s1 29.1 s per epoch of
# 2000 images), each further training sample adding ~40 % (pbit-s4 59.6 s, pbit-s8 98 s); the
# width-8 CNN classifier at 2.2e-3 s per image and epoch (13.4 s per epoch of 6000); scoring costs
# ~2e-3 s per generated image and decoder sample (pbit-s1: 61.7 s for 2 x 500 images x 50
# samples; 123-161 s for the others on a busier machine). The VAE's cost grows with the square of its
# width (its convolutions), the classifiers' linearly (a safe side for the CNN); the fixed parts are
# the tiny scale's measured overheads (0.1-0.6 s a step, 2 s for the figures).
VAE_TRAIN_S = 1.2e-2
CNN_TRAIN_S = 2.2e-3
MLP_TRAIN_S = 1.3e-4 / 256  # per unit of width (the accuracy study's MLP rate at width 256)
SCORE_S = 2e-3


@dataclass(frozen=True)
class GenerationSpec:
    dataset: str = "fashion-mnist"
    subset: int | None = 2000
    epochs: int = 3
    width: int = 8
    latent: int = 16
    lr: float = 1e-3
    batch_size: int = 64
    monitor_examples: int | None = 500
    seed: int = 0
    classifier: str = "cnn"  # the fid-clf feature network: a deterministic tanh classifier
    classifier_width: int = 8
    classifier_subset: int | None = 6000
    classifier_epochs: int = 4
    classifier_monitor: int | None = 1000  # test examples of its per-epoch accuracy (results/generation: 1000)
    train_samples: tuple[int, ...] = (1, 4)
    quant_bits: tuple[int, ...] = ()
    test_samples: tuple[int, ...] = (1, 2, 5, 10, 20, 50)
    n: int = 500  # generated and real images per distance
    repeats: int = 2
    grid_samples: tuple[int, ...] = (1, 2, 10, 50)

    def decoders(self) -> dict[str, tuple[str, int]]:
        """Run name -> (decoder neuron, training samples)."""
        runs = {"tanh": ("tanh", 1)}
        runs.update({f"pbit-s{s}": ("pbit", s) for s in self.train_samples})
        runs.update({f"quant{k}": (f"quant:{k}", 1) for k in self.quant_bits})
        return runs


# small: the schedule of results/generation (its tanh, pbit-s1 and pbit-s4 runs, same seeds),
# within ~10 minutes; full: the paper's generation lr (1e-4) and batch (64) on all images, with an
# epoch count, width and N of ours (the paper's CelebA runs need Inception FIDs, see the section)
_SMALL = GenerationSpec()
SPECS = {
    "tiny": replace(_SMALL, subset=256, epochs=1, width=4, latent=4, monitor_examples=64, classifier="mlp",
                    classifier_subset=256, classifier_epochs=1, classifier_monitor=64, train_samples=(1, 2),
                    test_samples=(1, 2, 5, 10), n=32, grid_samples=(1, 10)),
    "small": _SMALL,
    "full": replace(_SMALL, subset=None, epochs=50, width=32, lr=1e-4, monitor_examples=None, classifier_subset=None,
                    classifier_monitor=None, classifier_width=16, classifier_epochs=20, train_samples=(1, 2, 4, 8),
                    quant_bits=(1, 2, 3, 4), n=5000, repeats=3),
}

CLAIMS = {
    1: ("sample-aware training improves generated image quality, FID approaching the 32-bit baseline",
        "sample-aware training (s > 1) lowers FID towards the 32-bit decoder's (CelebA 64x64)",
        "(a) for every s > 1, fid-clf(s, T = s) < fid-clf(s = 1, same T) by more than twice the larger repeat std "
        "(T = s: the measured T closest to s on a log scale), and (b) the best of them closes at least half the gap "
        "between s = 1 at T = 1 and the 32-bit tanh decoder (or there is no gap)"),
    3: ("FID falls as T grows", "FID decreases with T (CelebA 64x64)",
        "for every p-bit decoder, fid-clf never rises from one measured T to the next by more than twice the larger "
        "repeat std, and fid-clf at the largest T is below T = 1"),
}


# claim 2 of results/generation/README.md: the report decides it on classifiers (the accuracy study's
# train-test matrix), so it has no row here; the study's README gives the decoders' verdict beside it
MATCHING_CLAIM = "best when training s matches test T"
MATCHING_NOTE = "The report decides this claim on classifiers, in the accuracy study's train-test matrix."


def spec(ctx: Context) -> GenerationSpec:
    return SPECS[ctx.scale]


def study_dir(ctx: Context, spec: GenerationSpec) -> Path:
    return ctx.dir(NAME, spec.dataset)


def _schedule(spec: GenerationSpec) -> str:
    data = f"the first {spec.subset}" if spec.subset else "all"
    return (f"{spec.dataset}: VAE width {spec.width}, latent {spec.latent}, {spec.epochs} epochs on {data} training "
            f"images, Adam lr {spec.lr:g}, batch {spec.batch_size}; fid-clf of {spec.n} generated against the first "
            f"{spec.n} test images, {spec.repeats} repeats, features of a tanh {spec.classifier} classifier "
            f"(width {spec.classifier_width}, {spec.classifier_epochs} epochs on "
            f"{spec.classifier_subset or 'all'} training images)")


def _train(folder: Path, spec: GenerationSpec, name: str, ctx: Context) -> None:
    info = describe(spec.dataset)
    shape, classes = tuple(info["input_shape"]), info["num_classes"]
    common = dict(batch_size=spec.batch_size, seed=spec.seed)
    if name == "classifier":
        model = ModelConfig(name=spec.classifier, neuron="tanh", input_shape=shape, num_classes=classes,
                            width=spec.classifier_width)
        config = TrainConfig(epochs=spec.classifier_epochs, lr=1e-3, monitor_examples=spec.classifier_monitor, **common)
        subset = spec.classifier_subset
    else:
        neuron, s = spec.decoders()[name]
        model = ModelConfig(name="vae", neuron=neuron, input_shape=shape, num_classes=classes, width=spec.width,
                            extra={"latent": spec.latent})
        config = TrainConfig(samples=s, epochs=spec.epochs, lr=spec.lr, task="vae", monitor_examples=spec.monitor_examples,
                             **common)
        subset = spec.subset
    ensure_trained(folder / "runs" / name, model, spec.dataset, config, subset=subset, label=name, roots=ctx.roots,
                   device=ctx.device, progress=False)


def _score(folder: Path, spec: GenerationSpec, name: str, ctx: Context) -> None:
    """fid-clf of decoder ``name`` at every T (at most as many images as the test split has),
    unless its file already holds these scores of the weights now in both runs."""
    n = min(spec.n, len(load(spec.dataset, roots=ctx.roots, progress=False).test_x))
    ensure_scored(folder / "runs" / name, folder / "runs" / "classifier", spec.test_samples, n, spec.repeats,
                  spec.seed, roots=ctx.roots, device=ctx.device, progress=False)


def summarise(folder: Path, spec: GenerationSpec) -> dict:
    """summary.json (the scores and the claims' evidence), fid-vs-T.png, grids-*.png, README.md."""
    runs = folder / "runs"
    names = list(spec.decoders())
    scored = load_scored(runs, names)
    claims = verdicts(scored, spec.train_samples, spec.test_samples)
    title = "\n".join(textwrap.wrap(f"fid-clf against T; {_schedule(spec)}", 100))
    plot_fid_vs_t(scored, folder / "fid-vs-T.png", title, spec.train_samples, spec.test_samples)
    stats: dict = {}
    grids = plot_grids(runs, [n for n in names if n.startswith("pbit") and n in scored], folder, stats,
                       spec.grid_samples)
    summary = {"metric": "fid-clf", "schedule": _schedule(spec), "missing": [n for n in names if n not in scored],
               "runs": {n: scored[n]["document"]["results"] for n in scored}, "claims": claims, "grids": grids,
               "pixel_statistics": {n: {str(t): v for t, v in by_t.items()} for n, by_t in stats.items()}}
    write_json(folder / "summary.json", summary)
    ts = spec.test_samples
    lines = [f"# {TITLE}", "", f"Schedule: {_schedule(spec)}. fid-clf is comparable only with other fid-clf numbers "
             "of the same classifier run, never with published FIDs.", "",
             "| decoder | " + " | ".join(f"T={t}" for t in ts) + " |", "|---" * (len(ts) + 1) + "|"]
    for name in scored:
        by_t = scored[name]["by_t"]
        lines.append(f"| {name} | " + " | ".join(cell(by_t.get(t)) for t in ts) + " |")
    c1, c2, c3 = claims
    lines += ["", "![fid-clf against T](fid-vs-T.png)", "", f"- Claim 1 ({CLAIMS[1][0]}): {claim1_text(c1)}.",
              f"- Claim 2 ({MATCHING_CLAIM}): {mark(c2['holds'])} by its rule (the s nearest T, on a log scale, is "
              f"best at two thirds of the T or more). {claim2_text(c2)}. {MATCHING_NOTE}",
              f"- Claim 3 ({CLAIMS[3][0]}): {claim3_text(c3)}.", "", *(f"![{g}]({g})" for g in grids)]
    write_text(folder / "README.md", "\n".join(lines) + "\n")
    return summary


def steps(ctx: Context) -> list[Step]:
    s = spec(ctx)
    folder, need = study_dir(ctx, s), (f"data:{s.dataset}",)
    train_n = s.subset or 60000
    clf_n = s.classifier_subset or 60000
    clf_rate = CNN_TRAIN_S * s.classifier_width / 8 if s.classifier == "cnn" else MLP_TRAIN_S * s.classifier_width
    key = f"{NAME}/{s.dataset}"
    clf = f"{NAME}-train/{s.classifier}-{s.classifier_width}"
    out = [Step(f"{key}/classifier/train", ctx.estimate(clf, s.classifier_epochs * clf_n, clf_rate, 0.5),
                lambda: _train(folder, s, "classifier", ctx), need, clf, s.classifier_epochs * clf_n)]
    for name, (neuron, samples) in s.decoders().items():
        per_image = VAE_TRAIN_S * (s.width / 8) ** 2 * (1 + 0.4 * (samples - 1))
        rate, work = f"{NAME}-train/vae-{s.width}/{neuron}-s{samples}", s.epochs * train_n
        out.append(Step(f"{key}/{name}/train", ctx.estimate(rate, work, per_image, 0.5),
                        lambda name=name: _train(folder, s, name, ctx), need, rate, work))
        draws = max(s.test_samples) if neuron == "pbit" else 3  # deterministic: 5-8 s for 2 x 500 images
        rate, work = f"{NAME}-score/vae-{s.width}", s.repeats * s.n * draws
        out.append(Step(f"{key}/{name}/fid-clf", ctx.estimate(rate, work, SCORE_S * (s.width / 8) ** 2, 0.5),
                        lambda name=name: _score(folder, s, name, ctx), need, rate, work))
    # the grids: 36 images at max(T) samples per p-bit decoder, and the figures
    out.append(Step(f"{key}/summary", 2 + 36 * max(s.grid_samples) * SCORE_S * len(s.train_samples),
                    lambda: summarise(folder, s), need))
    return out


def section(ctx: Context) -> Section:
    s = spec(ctx)
    folder = study_dir(ctx, s)
    section = Section(TITLE, text=(
        "VAEs whose decoders use p-bits, trained on the mean of s decoder samples, and a 32-bit tanh decoder; each "
        "generated image is the mean of T decoder samples. The paper measures FID on CelebA 64x64; here CelebA has "
        "no labels to train the fid-clf classifier on and the Inception-v3 FID weights are not available offline, so "
        "the study uses Fashion-MNIST and fid-clf, whose numbers compare only with each other. The rules are those "
        "fixed in results/generation/README.md before its runs were measured."))
    path = folder / "summary.json"
    scores = (ctx.why_unreadable(folder / "runs" / name / "fid-clf.json", f"{NAME}/{s.dataset}/{name}/fid-clf")
              for name in s.decoders())  # what summary.json was made from: a copy must not outlive them
    reason = next(filter(None, scores), None) or (
        None if path.exists() else ctx.why_missing(f"{NAME}/{s.dataset}/summary"))
    if reason == "not run yet":  # a step they need, the classifier's, may say why
        reason = ctx.why_missing(f"{NAME}/{s.dataset}/", finished=False)
    if reason:
        section.claims += [not_measured(c, p, reason, rule) for c, p, rule in CLAIMS.values()]
        return section
    summary = read_json(path)
    by_number = {c["claim"]: c for c in summary["claims"]}
    texts = {1: claim1_text, 3: claim3_text}
    for number, (claim, paper, rule) in CLAIMS.items():
        found = by_number[number]
        if found["holds"] is None:
            missing = ", ".join(summary["missing"] or found["missing"])
            section.claims.append(not_measured(claim, paper, f"not scored: {missing}", rule))
        else:
            section.claims.append(Claim.decide(claim, paper, texts[number](found), rule, found["holds"]))
    step = f"{NAME}/{s.dataset}/summary"
    section.figures.append(Figure(folder / "fid-vs-T.png", f"fid-clf against T per decoder; {summary['schedule']}",
                                  step))
    section.figures += [Figure(folder / g, f"the same 36 latents at T = {', '.join(map(str, s.grid_samples))}; "
                                           f"{summary['schedule']}", step) for g in summary["grids"]]
    section.text += "\n\n" + ctx.link(folder / "README.md", "README with every number", step)
    return section
