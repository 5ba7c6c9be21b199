"""The accuracy-versus-samples study of the paper's Section 2, for one dataset.

Same architecture for every run: float tanh and sigmoid (the 32-bit baselines), k-bit
quantised activations, and p-DNNs (bipolar and unipolar) trained with s samples, every p-DNN
evaluated at every test T -- which also gives the s x T train-test matching matrix. Every step
is skipped when its result already exists, so an interrupted study is resumed by rerunning it.
The paper's claims are assessed from the numbers, with a stated tolerance, never tuned.
"""
from __future__ import annotations

import shlex

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..checks import positive_int
from ..data import describe
from ..devices import processor_text
from ..errors import UsageError
from ..io import RunError, pyplot, read_eval, read_json, read_metrics, save_figure, write_text, writer_lock
from ..models import ModelConfig, is_generator
from ..plots import plot_accuracy_vs_samples
from ..runs import CONFIG, write_json
from ..train import TrainConfig, check_same_run, run_config
from .plan import STATE
from .runs import ensure_evaluated, ensure_trained

TOLERANCE = 0.01  # "matches" = within one percentage point
SLACK = 1e-12  # a rule's boundary is met at it: 87.74 % - 86.74 % computes as 0.010000000000000009


@dataclass
class StudySpec:
    dataset: str = "cifar10"
    model: str = "cnn"
    width: int | None = None
    beta: float = 1.0  # inverse temperature of the p-bit runs (the deterministic ones keep 1)
    epochs: int = 10
    subset: int | None = None
    eval_subset: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    schedule: str = "constant"
    seed: int = 0
    test_samples: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50])
    train_samples: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    quant_bits: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    pbit_neurons: list[str] = field(default_factory=lambda: ["pbit", "pbit-unipolar"])
    repeats: int = 3

    def runs(self) -> dict[str, tuple[str, int]]:
        """Run name -> (neuron, training samples)."""
        runs = {"tanh": ("tanh", 1), "sigmoid": ("sigmoid", 1)}
        runs.update({f"quant{k}": (f"quant:{k}", 1) for k in self.quant_bits})
        for neuron in self.pbit_neurons:
            runs.update({f"{neuron}-s{s}": (neuron, s) for s in self.train_samples})
        return runs


DEFAULT = StudySpec()  # the options a study's recorded command leaves out
# the option of `pdnn study` that sets each setting of its runs' config.json (the neuron and bits
# follow from the run's name)
STUDY_OPTIONS = {"name": "--model", "width": "--width", "beta": "--beta", "dataset": "--dataset",
                 "input_shape": "--dataset", "num_classes": "--dataset", "subset": "--subset",
                 "samples": "--train-samples", "batch_size": "--batch-size", "lr": "--lr", "schedule": "--schedule",
                 "seed": "--seed", "monitor_examples": "--eval-subset"}


def run_study(out: str | Path, spec: StudySpec, roots=None, device: str = "cpu", progress: bool = True) -> dict:
    """Train and evaluate every run of ``spec`` under ``out/runs``; write the summary, figures and
    README under ``out``. Returns the summary."""
    out = Path(out)
    models = study_models(spec)  # bad sizes fail before anything is written,
    check_study_folder(out)
    with writer_lock(out, "run a study in"):  # a second study into the folder is refused while one runs
        return _run_study(out, spec, models, roots, device, progress)


def _run_study(out: Path, spec: StudySpec, models: dict, roots, device: str, progress: bool) -> dict:
    for name, model in models.items():  # and so do runs an earlier study left with other settings
        if (out / "runs" / name / CONFIG).exists():
            wanted = run_config(model, spec.dataset, train_config(spec, spec.runs()[name][1]), spec.subset)
            check_same_run(out / "runs" / name, wanted, "reuse", STUDY_OPTIONS)
    for name in spec.runs():
        if progress:
            neuron, samples = spec.runs()[name]
            print(f"== {name}: neuron {neuron}, s = {samples}")
        train_one(out, spec, name, models[name], roots=roots, device=device, progress=progress)
        evaluate_one(out, spec, name, roots=roots, device=device, progress=progress)
    return finish_study(out, spec)


def check_study_folder(out: Path) -> None:
    """Refuse a folder that holds another command's results: a study writes spec.json,
    summary.json, README.md and figures into it (a hardware export's spec.json, a run's files, a
    reproduce plan's record or another study's summary and README would be replaced). A study
    writes its spec.json before its summary and README, so a folder with those but no spec.json
    is not one."""
    if (out / CONFIG).is_file():
        raise UsageError(f"{out} is a run directory; a study goes into a folder of its own")
    if (out / STATE).is_file():
        raise UsageError(f"{out} holds a reproduce plan ({STATE}); a study goes into a folder of its own")
    if (out / "spec.json").is_file():
        found = read_json(out / "spec.json")
        if not (isinstance(found, dict) and {"dataset", "model"} <= set(found) <= set(asdict(DEFAULT))):
            raise UsageError(f"{out / 'spec.json'} is not a study's (a hardware export's?); a study goes into a "
                             "folder of its own")
    elif written := [name for name in ("summary.json", "README.md") if (out / name).is_file()]:
        raise UsageError(f"{out} holds {' and '.join(written)} but no study's spec.json: another command's results "
                         "(a low-bit, noise or adaptive study?); a study goes into a folder of its own")


def study_models(spec: StudySpec) -> dict[str, ModelConfig]:
    """The model of every run of ``spec`` (validating the spec)."""
    if ("pbit" not in spec.pbit_neurons or not set(spec.pbit_neurons) <= {"pbit", "pbit-unipolar"}
            or len(set(spec.pbit_neurons)) < len(spec.pbit_neurons)):
        raise UsageError(f"p-bit neurons {spec.pbit_neurons}: expected 'pbit', optionally with 'pbit-unipolar', "
                         "each once")
    info = describe(spec.dataset)
    if info["num_classes"] < 2:
        raise UsageError(f"{spec.dataset} has {info['num_classes']} class: the study compares classifiers, and "
                         "there is nothing to classify")
    models = {name: ModelConfig(name=spec.model, neuron=neuron, input_shape=tuple(info["input_shape"]),
                                num_classes=info["num_classes"], width=spec.width,
                                beta=spec.beta if neuron.startswith("pbit") else 1.0)
              for name, (neuron, _) in spec.runs().items()}
    for name, value in (("subset", spec.subset), ("eval_subset", spec.eval_subset)):
        if value is not None:
            positive_int(name.replace("_", "-"), value, "an integer >= 1", most=None)  # a cap: any larger means all
    positive_int("repeats", spec.repeats)
    for name, (_, samples) in spec.runs().items():  # a bad beta, bit width or schedule fails here, not hours in
        if is_generator(models[name].build()):
            raise UsageError(f"the model {spec.model!r} is a generator; the study compares classifiers' accuracy "
                             "(generators are measured by FID: docs/generation.md)")
        train_config(spec, samples).validate()
    return models


def train_config(spec: StudySpec, samples: int) -> TrainConfig:
    """The schedule every run of ``spec`` trains with, for a run trained on ``samples`` samples."""
    return TrainConfig(samples=samples, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                       schedule=spec.schedule, seed=spec.seed, monitor_examples=spec.eval_subset)


def train_one(out: Path, spec: StudySpec, name: str, model: ModelConfig, **kwargs) -> None:
    """Train run ``name`` of the study (resuming or skipping it as far as it got)."""
    config = train_config(spec, spec.runs()[name][1])
    ensure_trained(Path(out) / "runs" / name, model, spec.dataset, config, subset=spec.subset, label=name, **kwargs)


def evaluate_one(out: Path, spec: StudySpec, name: str, **kwargs) -> None:
    """Evaluate run ``name`` at every test T, unless that evaluation exists."""
    ensure_evaluated(Path(out) / "runs" / name, spec.test_samples, spec.repeats, subset=spec.eval_subset, **kwargs)


def finish_study(out: Path, spec: StudySpec) -> dict:
    """Write ``spec.json``, ``summary.json``, the figures and ``README.md`` from the runs."""
    out = Path(out)
    summary = summarise(out, spec)  # (a damaged run fails here, before any file changes)
    write_json(out / "spec.json", asdict(spec))
    write_json(out / "summary.json", summary)
    draw_figures(out, spec, summary)
    write_text(out / "README.md", render_readme(out, spec, summary))
    return summary


def summarise(out: Path, spec: StudySpec) -> dict:
    runs = {}
    for name in spec.runs():
        run_dir = out / "runs" / name
        metrics = read_metrics(run_dir / "metrics.json", ("train_loss", "epoch_time_s"))
        evaluation = read_eval(run_dir / "eval-network.json")
        if not metrics:
            raise RunError(f"{run_dir / 'metrics.json'} records no epoch: the run has not trained")
        missing = [key for key in ("time_s", "examples") if key not in evaluation]
        missing += sorted({"accuracy_std" for r in evaluation["results"] if "accuracy_std" not in r})
        if missing:  # (written by `pdnn eval`, which records them all)
            raise RunError(f"{run_dir / 'eval-network.json'} lacks {', '.join(missing)}; evaluate the run again with "
                           f"`pdnn eval {run_dir}` after deleting it")
        runs[name] = {
            "epochs": metrics[-1]["epoch"],
            "final_train_loss": metrics[-1]["train_loss"],
            "train_time_s": sum(m["epoch_time_s"] for m in metrics),
            "eval_time_s": evaluation["time_s"],
            "trained_on": _recorded(metrics, "device"),
            "threads": _recorded(metrics, "threads"),
            "processors": _recorded(metrics, "processor", processor_text),
            "torch": _recorded(metrics, "torch"),
            "evaluated_on": evaluation.get("device"),
            "test_examples": evaluation["examples"],
            "data_source": evaluation.get("data_source"),  # a JPEG CIFAR-10 scores otherwise: said in the README
            "accuracy": {str(r["samples"]): {"mean": r["accuracy_mean"], "std": r["accuracy_std"]}
                         for r in evaluation["results"]  # (an evaluation kept may hold T the study did not ask)
                         if r["samples"] in spec.test_samples or evaluation.get("deterministic")},
        }
    summary = {"runs": runs}
    summary["claims"] = assess_claims(spec, runs)
    return summary


def _acc(runs: dict, name: str, t: int) -> float:
    return runs[name]["accuracy"][str(t)]["mean"]


def assess_claims(spec: StudySpec, runs: dict) -> list[dict]:
    """The paper's Section-2 claims, each marked holds / does not hold by a stated rule."""
    base = _acc(runs, "tanh", 1)
    ts, ss = spec.test_samples, spec.train_samples
    nearest = lambda t: min(ss, key=lambda s: (abs(s - t), -s))  # noqa: E731
    claims = []

    def claim(text: str, rule: str, holds: bool, ours: str) -> None:
        claims.append({"claim": text, "rule": rule, "holds": bool(holds), "ours": ours})

    if 1 in ts and 1 in ss:
        a = _acc(runs, "pbit-s1", 1)
        claim("T = 1 matches the 32-bit baseline", "abs(p-DNN(s=1, T=1) − tanh) ≤ 1 point",
              abs(a - base) <= TOLERANCE + SLACK, f"{100 * a:.2f}% vs {100 * base:.2f}%")
    if 2 in ts:
        s = nearest(2)
        a = _acc(runs, f"pbit-s{s}", 2)
        claim("T = 2 surpasses the 32-bit baseline", f"p-DNN(s={s}, T=2) > tanh", a > base + SLACK,
              f"{100 * a:.2f}% vs {100 * base:.2f}%")
    if 10 in ts and 3 in spec.quant_bits:
        s = nearest(10)
        a, q3 = _acc(runs, f"pbit-s{s}", 10), _acc(runs, "quant3", 1)
        claim("T = 10 matches the 3-bit model", f"p-DNN(s={s}, T=10) >= 3-bit - 1 point", a >= q3 - TOLERANCE - SLACK,
              f"{100 * a:.2f}% vs {100 * q3:.2f}%")
    wins, details = 0, []
    for t in ts:
        best = max(ss, key=lambda s: _acc(runs, f"pbit-s{s}", t))
        match = nearest(t)
        spread = runs[f"pbit-s{match}"]["accuracy"][str(t)]["std"]
        ok = _acc(runs, f"pbit-s{match}", t) >= _acc(runs, f"pbit-s{best}", t) - max(spread, 0.002) - SLACK
        wins += ok
        details.append(f"T={t}: best s={best}, matched s={match}{'' if ok else ' (worse)'}")
    if len(ss) > 1:  # (with one s, the best and the matched are the same run: it held by construction)
        claim("training with s matching test T is best",
              "for every T, the s nearest T is within one std (or 0.2 point) of the best s", wins == len(ts),
              f"{wins}/{len(ts)} T values; " + "; ".join(details))
    if "pbit-unipolar" not in spec.pbit_neurons:
        return claims
    gaps = [abs(_acc(runs, f"pbit-s{s}", t) - _acc(runs, f"pbit-unipolar-s{s}", t)) for s in ss for t in ts]
    claim("sigmoid (unipolar) and tanh (bipolar) p-bits perform alike",
          "abs(bipolar − unipolar) ≤ 1 point for every (s, T)", max(gaps) <= TOLERANCE + SLACK,
          f"largest gap {100 * max(gaps):.2f} points, mean {100 * sum(gaps) / len(gaps):.2f}")
    return claims


def draw_figures(out: Path, spec: StudySpec, summary: dict) -> None:
    plt = pyplot()
    baselines = ["tanh", "sigmoid", *[f"quant{k}" for k in spec.quant_bits]]
    for neuron in {"pbit", "pbit-unipolar"} - set(spec.pbit_neurons):  # an earlier spec's, of runs no longer summarised
        (out / f"accuracy_vs_samples_{neuron}.png").unlink(missing_ok=True)
    for neuron in spec.pbit_neurons:
        runs = [out / "runs" / f"{neuron}-s{s}" for s in spec.train_samples]
        plot_accuracy_vs_samples(runs + [out / "runs" / b for b in baselines], out / f"accuracy_vs_samples_{neuron}.png",
                                 title=f"{spec.dataset}: {neuron} p-DNNs (s = training samples) vs baselines",
                                 samples=spec.test_samples)
    fig, axes = plt.subplots(1, len(spec.pbit_neurons), figsize=(5.5 * len(spec.pbit_neurons), 4), squeeze=False)
    for ax, neuron in zip(axes[0], spec.pbit_neurons):
        matrix = [[100 * _acc(summary["runs"], f"{neuron}-s{s}", t) for t in spec.test_samples] for s in spec.train_samples]
        image = ax.imshow(matrix, cmap="viridis", aspect="auto")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color="w")
        ax.set_xticks(range(len(spec.test_samples)), [str(t) for t in spec.test_samples])
        ax.set_yticks(range(len(spec.train_samples)), [str(s) for s in spec.train_samples])
        ax.set_xlabel("test samples T")
        ax.set_ylabel("training samples s")
        ax.set_title(f"{spec.dataset}, {neuron}: accuracy (%)")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, out / "train_test_matrix.png")


def _recorded(epochs: list[dict], key: str, shown: Callable[[dict], object] | None = None) -> list | None:
    """The values of ``key`` over a run's epochs (each epoch as ``shown`` says it, where given);
    None for a run trained before epochs recorded it."""
    if not all(key in epoch for epoch in epochs):
        return None
    return sorted({shown(epoch) if shown else epoch[key] for epoch in epochs})


def _union(runs: dict, key: str) -> list | None:
    """The values of ``key`` over all runs; None where a run lacks the record."""
    values = [r.get(key) for r in runs.values()]
    return None if None in values else sorted({v for value in values for v in value})


def _hardware_text(runs: dict) -> str:
    """The processors, threads, torch versions and devices the runs recorded; what a run made
    before pdnn recorded it lacks is said to be not recorded (this machine's, which had stood in,
    need not be the one that ran it)."""
    def listed(key: str, join: str, unknown: str) -> str:
        values = _union(runs, key)
        return unknown if values is None else join.join(map(str, values))

    threads = _union(runs, "threads")
    threads_text = ("threads not recorded" if threads is None
                    else f"{'/'.join(map(str, threads))} thread{'s' * (threads != [1])}")
    trained = _union(runs, "trained_on")
    if trained is None:
        devices = "devices not recorded"
    else:
        evaluated = sorted({r.get("evaluated_on") or "a device not recorded" for r in runs.values()})
        devices = (f"ran on {', '.join(trained)}" if trained == evaluated
                   else f"trained on {', '.join(trained)}; evaluated on {', '.join(evaluated)}")
    return (f"{listed('processors', '; ', 'processor not recorded')}, {threads_text}, "
            f"torch {listed('torch', '/', 'not recorded')} ({devices})")


def _epochs_text(spec: StudySpec, runs: dict) -> str:
    """The epochs the runs trained: ``--epochs``, unless runs kept from an earlier study trained
    more (a finished run is never cut back)."""
    trained = sorted({r.get("epochs", spec.epochs) for r in runs.values()})  # summaries before the record
    if trained == [spec.epochs]:
        return f"{spec.epochs} epoch{'s' * (spec.epochs != 1)}"
    return (f"{' / '.join(map(str, trained))} epochs as the runs trained them (--epochs {spec.epochs}; "
            "runs trained longer by an earlier command are kept as they are)")


def _repeats_text(out: Path, spec: StudySpec, runs: dict) -> str:
    """The sampling repeats behind the numbers: ``--repeats``, unless evaluations kept from an
    earlier command have more (an evaluation with at least the repeats asked for is reused)."""
    measured = {}
    for name in runs:
        document = read_eval(out / "runs" / name / "eval-network.json")
        if not document.get("deterministic"):
            measured[name] = min(r.get("repeats", spec.repeats) for r in document["results"])
    if set(measured.values()) <= {spec.repeats}:
        return f"{spec.repeats} independent sampling repeats"
    return (f"{' / '.join(map(str, sorted(set(measured.values()))))} independent sampling repeats as the runs were "
            f"evaluated (--repeats {spec.repeats}; evaluations with more, made by an earlier command, are kept: "
            + ", ".join(f"{name} {n}" for name, n in measured.items() if n != spec.repeats) + ")")


def recorded_command(out: Path, spec: StudySpec) -> str:
    """The ``pdnn study`` command that asks for ``spec`` into ``out``: every option that differs
    from its default (what the README records, so that running it again rebuilds this study)."""
    ts = spec.test_samples
    return (f"pdnn study --dataset {spec.dataset} --model {spec.model} --epochs {spec.epochs}"
            + (f" --width {spec.width}" if spec.width else "")
            + (f" --beta {_number(spec.beta)}" if spec.beta != DEFAULT.beta else "")
            + (f" --subset {spec.subset}" if spec.subset else "")
            + (f" --eval-subset {spec.eval_subset}" if spec.eval_subset else "")
            + f" --schedule {spec.schedule}"
            + (f" --batch-size {spec.batch_size}" if spec.batch_size != DEFAULT.batch_size else "")
            + (f" --lr {_number(spec.lr)}" if spec.lr != DEFAULT.lr else "")
            + (f" --seed {spec.seed}" if spec.seed != DEFAULT.seed else "")
            + (f" --samples {','.join(map(str, ts))}" if ts != DEFAULT.test_samples else "")
            + (f" --repeats {spec.repeats}" if spec.repeats != DEFAULT.repeats else "")
            + (f" --train-samples {','.join(map(str, spec.train_samples))}"
               if spec.train_samples != DEFAULT.train_samples else "")
            + (f" --quant-bits {','.join(map(str, spec.quant_bits))}" if spec.quant_bits != DEFAULT.quant_bits else "")
            + (f" --pbit-neurons {','.join(spec.pbit_neurons)}" if spec.pbit_neurons != DEFAULT.pbit_neurons else "")
            + f" --out {shlex.quote(str(out))}")


def _number(x: float) -> str:
    """``x`` as short as it reads back exactly (2 for 2.0, 0.0005; all digits where needed)."""
    return text if float(text := f"{x:g}") == x else repr(x)


def _data_source_text(runs: dict) -> str:
    """`` from <the copy of the dataset the runs' evaluations read>``; empty for summaries written
    before evaluations recorded it."""
    sources = sorted({r["data_source"] for r in runs.values() if r.get("data_source")})
    unrecorded = sum(not r.get("data_source") for r in runs.values())
    return (f" from {' and '.join(sources)}" + (f" ({unrecorded} of the runs' evaluations do not record theirs)"
                                                  if unrecorded else "")) if sources else ""


def render_readme(out: Path, spec: StudySpec, summary: dict) -> str:
    runs = summary["runs"]
    ts = spec.test_samples
    train_h = sum(r["train_time_s"] for r in runs.values()) / 3600
    eval_h = sum(r["eval_time_s"] for r in runs.values()) / 3600
    examples = next(iter(runs.values()))["test_examples"]
    command = recorded_command(out, spec)
    lines = [
        f"# Accuracy versus samples on {spec.dataset}",
        "",
        "Generated by the study command; rerunning it reuses finished runs and rewrites this file.",
        "",
        "```",
        command,
        "```",
        "",
        f"- Hardware: {_hardware_text(runs)}.",
        f"- Model `{spec.model}`" + (f" (width {spec.width})" if spec.width else "")
        + (f", p-bit β = {spec.beta:g}" if spec.beta != 1.0 else "") +
        f", {_epochs_text(spec, runs)}, batch {spec.batch_size}, Adam lr {spec.lr} ({spec.schedule}), seed {spec.seed}.",
        f"- Data: `{spec.dataset}`{_data_source_text(runs)}"
        + (f", first {spec.subset} training examples" if spec.subset else ", full splits")
        + f"; accuracy on {examples} test examples, mean ± std over {_repeats_text(out, spec, runs)}.",
        f"- Wall time: {train_h:.2f} h training, {eval_h:.2f} h evaluation.",
        "",
        "![accuracy vs samples](accuracy_vs_samples_pbit.png)",
        "",
        "## Accuracy (%) by test samples T",
        "",
        "| run | s | " + " | ".join(f"T={t}" for t in ts) + " |",
        "|---|---|" + "---|" * len(ts),
    ]
    for name, (neuron, s) in spec.runs().items():
        acc = runs[name]["accuracy"]
        if neuron.startswith("pbit"):
            cells = [f"{100 * acc[str(t)]['mean']:.2f} ± {100 * acc[str(t)]['std']:.2f}" for t in ts]
        else:
            cells = [f"{100 * acc['1']['mean']:.2f}"] + ["" for _ in ts[1:]]
        lines.append(f"| {name} | {s if neuron.startswith('pbit') else '–'} | " + " | ".join(cells) + " |")
    lines += ["", "Deterministic baselines are measured once (T = 1).", "",
              "## The paper's claims beside our numbers", "",
              "| claim | rule | ours | verdict |", "|---|---|---|---|"]
    for c in summary["claims"]:
        lines.append(f"| {c['claim']} | {c['rule']} | {c['ours']} | {'holds' if c['holds'] else 'does not hold'} |")
    lines += ["", "![train-test matrix](train_test_matrix.png)", ""]
    if "pbit-unipolar" in spec.pbit_neurons:
        lines += ["![unipolar](accuracy_vs_samples_pbit-unipolar.png)", ""]
    notes = out / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    return "\n".join(lines) + "\n"
