"""Accuracy against mean T when T is chosen per input, beside fixed T and the oracle.

For a trained p-DNN, N = ``max_samples`` samples of every test input are drawn once (seeded, in
chunks, as ``pdnn eval`` draws its pool) and stored in a cache folder (a stored pool is reused).
Everything else is computed from these recorded samples in seconds, so every method sees the
same draws:

* fixed T: the accuracy of the mean of the first T samples, T = 1..N;
* adaptive: the stopping rule replayed on the samples (:func:`pdnn.adaptive.simulate`: the
  decisions and T that ``SampledModel(samples="auto")`` gives when the network draws these
  samples), at each error level, with the fraction of inputs whose decision differs from the one
  at N;
* oracle: for each input, the T after which the running decision never changes again.

Energy per inference at each input's own T comes from the energy model (:mod:`pdnn.energy`) in
three accountings of how the weight read is shared (:func:`pdnn.energy.per_input.energies`). ``scripts/adaptive_study.py``
(results/adaptive/) and the ``adaptive`` study of ``pdnn reproduce`` both run :func:`study_run`.
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
from pathlib import Path

import torch

from ..adaptive import CHECKPOINTS, StoppingRule, oracle_samples, rounds_taken, simulate
from ..data import load
from ..energy.per_input import curve_settings, energies, energy_curves, mj
from ..evaluate import ADAPTIVE_BATCH, FOLD_ROWS, drawn
from ..io import CHECKPOINT, RunError, atomic_write, pyplot, run_dataset, save_figure
from ..provenance import conversion_sha256
from ..runs import load_model
from ..sampling import SampledModel

ERRORS = (0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001)
GOAL_POINTS, GOAL_MEAN_T = 0.2, 5.0  # the goal: the accuracy of T = N within 0.2 points at mean T <= 5
HELD_OUT_FOLDS = 2  # the level judged on each half of the inputs is chosen on the other half
BATCH = ADAPTIVE_BATCH  # inputs per batch, as `pdnn eval --adaptive` runs them


@torch.no_grad()
def record_pool(run_dir: Path, subset: int | None, samples: int, seed: int, batch_size: int = BATCH,
                roots=None, device: str = "cpu", progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample outputs ``[samples, examples, classes]`` of a run on its test split, and the labels."""
    model, config = load_model(run_dir, device)
    data = load(run_dataset(run_dir, config), roots=roots, subset=subset, progress=False)
    x, y = data.test_x, data.test_y
    sampler = SampledModel(model.eval(), reduce="none", seed=seed)
    parts = []
    for start in range(0, len(x), batch_size):
        xb = data.normalize(x[start : start + batch_size]).to(device)
        chunk = max(1, FOLD_ROWS // len(xb))
        parts.append(torch.cat([out.cpu() for out in drawn(sampler, xb, samples, chunk)]))
        if progress:
            print(f"  {run_dir}: {start + len(xb)}/{len(x)} inputs", file=sys.stderr, flush=True)
    return torch.cat(parts, 1), y


def pool_path(run_dir: Path, subset: int | None, samples: int, seed: int, cache: Path, device: str = "cpu",
              batch_size: int = BATCH) -> Path:
    """Where the pool of these weights (named by a digest of the checkpoint, and of the conversion
    of a converted run, whose checkpoint is its source's), inputs, N and seed is kept; a device
    other than the CPU, or a batch size other than :data:`BATCH`, draws other numbers, so it is
    named too (the defaults keep the names the committed results record)."""
    checkpoint = Path(run_dir) / CHECKPOINT
    if not checkpoint.is_file():
        raise RunError(f"{checkpoint} does not exist: the run must be trained before its samples are drawn")
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    conversion = conversion_sha256(run_dir)
    digest += "" if conversion is None else f"-convert{conversion[:12]}"
    kind = torch.device(device).type
    drawn_on = ("" if kind == "cpu" else f"-{kind}") + ("" if batch_size == BATCH else f"-batch{batch_size}")
    return Path(cache) / f"{Path(run_dir).name}-{digest}-n{subset}-T{samples}-seed{seed}{drawn_on}.pt"


def cached_pool(run_dir: Path, subset: int | None, samples: int, seed: int, cache: Path, **kwargs):
    """:func:`record_pool`, drawn once and then read back from ``cache`` (written atomically)."""
    path = pool_path(run_dir, subset, samples, seed, cache, kwargs.get("device", "cpu"), kwargs.get("batch_size", BATCH))
    if path.is_file():
        stored = torch.load(path)
        return stored["outputs"], stored["labels"]
    outputs, labels = record_pool(run_dir, subset, samples, seed, **kwargs)
    if pool_path(run_dir, subset, samples, seed, cache, kwargs.get("device", "cpu"),
                 kwargs.get("batch_size", BATCH)) != path:  # named by weights other than those drawn
        raise RunError(f"{Path(run_dir) / CHECKPOINT} changed while its samples were drawn: the run is being "
                       "trained; draw them when training has stopped")
    atomic_write(path, lambda f: torch.save({"outputs": outputs, "labels": labels}, f))
    return outputs, labels


def histogram(taken: torch.Tensor) -> dict[str, int]:
    values, counts = taken.unique(return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def quantiles(taken: torch.Tensor) -> dict[str, float]:
    t = taken.double()
    return {f"p{q}": float(t.quantile(q / 100)) for q in (50, 90, 99)} | {"max": int(taken.max())}


def study_run(dataset: str, run_dir: Path, cache: Path, subset: int | None = None, max_samples: int = 50,
              errors=ERRORS, seed: int = 0, memory: str = "dram", batch: int = BATCH,
              checkpoints: tuple[int, ...] = CHECKPOINTS, prior_samples: int = 2, **pool_kwargs) -> dict:
    """Fixed T, the adaptive rule at each error level and the oracle for one run, from one pool of
    ``max_samples`` draws per test input (the first ``subset`` inputs; all when None); the rule
    looks at ``checkpoints`` (the T values where its rounds end) with ``prior_samples``
    pseudo-samples in its prior, whose variance the first batch learns for the batches after it."""
    began = time.perf_counter()
    n = max_samples
    outputs, labels = cached_pool(run_dir, subset, n, seed, cache, batch_size=batch, **pool_kwargs)
    correct = outputs.double().cumsum(0).argmax(-1) == labels  # [N, B]: decision after T samples
    fixed = correct.double().mean(1)
    final = outputs.double().sum(0).argmax(-1)
    oracle = oracle_samples(outputs)
    energy = energy_curves(run_dir, memory, list(range(1, n + 1)), batch)
    one_round = torch.ones_like(labels)

    def outcome(decision: torch.Tensor, taken: torch.Tensor, rounds: torch.Tensor) -> dict:
        gain = (decision == labels).double() - (final == labels).double()  # paired with T = N, per input
        return {"accuracy": (decision == labels).double().mean().item(),
                "mean_samples": taken.double().mean().item(), "samples_quantiles": quantiles(taken),
                "samples_histogram": histogram(taken),
                "differs_from_T_max": (decision != final).double().mean().item(),
                "accuracy_minus_T_max": gain.mean().item(),
                "accuracy_minus_T_max_stderr": (gain.std() / len(gain) ** 0.5).item(),
                "mean_rounds": rounds.double().mean().item(), "energy_j": energies(taken, rounds, energy, batch)}

    adaptive, replays = [], []
    for error in errors:
        rule = StoppingRule(n, error, "predictive", checkpoints, prior_samples)
        replays.append(replay(outputs, rule, batch))
        adaptive.append({"error": error} | outcome(*replays[-1][:3]))
    # the rule as the last level that looks left it (at error 0 it neither looks nor learns σ₀²)
    looking = [played for played, error in zip(replays, errors) if error > 0] or replays
    rule = looking[-1][3] if looking else StoppingRule(n, checkpoints=checkpoints, prior_samples=prior_samples)
    levels, decision, taken, rounds = level_chosen_elsewhere(replays, errors, final, labels)
    held_out = {"folds": HELD_OUT_FOLDS, "errors": levels} | outcome(decision, taken, rounds)
    return {
        "dataset": dataset, "run": str(run_dir), "examples": len(labels), "max_samples": n, "seed": seed,
        "checkpoints": rule.schedule(), "prior_samples": prior_samples, "prior_variance": rule.prior_variance,
        "fixed": [{"samples": t, "accuracy": fixed[t - 1].item(),
                   "energy_j": energies(torch.full_like(labels, t), one_round, energy, batch)}
                  for t in range(1, n + 1)],
        "oracle": {"accuracy": fixed[-1].item(), "mean_samples": oracle.double().mean().item(),
                   "samples_quantiles": quantiles(oracle), "samples_histogram": histogram(oracle),
                   "energy_j": energies(oracle, one_round, energy, batch)},
        "adaptive": adaptive,
        "held_out": held_out,
        "energy_settings": curve_settings(energy),
        "time_s": time.perf_counter() - began,
    }


def replay(outputs: torch.Tensor, rule: StoppingRule, batch: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, StoppingRule]:
    """The rule on recorded outputs ``[N, inputs, C]`` in batches of ``batch`` inputs, as ``pdnn
    eval`` runs it: the first batch learns the prior variance the later ones use. Returns each
    input's decision, T and rounds, and the rule as the last batch had it."""
    decisions, taken, rounds = [], [], []
    for part in outputs.split(batch, 1):
        mean, t, learnt = simulate(part, rule)
        decisions.append(mean.argmax(-1))
        taken.append(t)
        rounds.append(rounds_taken(t, rule.schedule()))
        rule = learnt
    return torch.cat(decisions), torch.cat(taken), torch.cat(rounds), rule


def level_chosen_elsewhere(replays: list[tuple[torch.Tensor, ...]], errors, final: torch.Tensor,
                           labels: torch.Tensor, folds: int = HELD_OUT_FOLDS
                           ) -> tuple[list, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rule at an error level chosen without the inputs it is judged on.

    The study's tables pick, after the fact, the level with the smallest mean T within
    ``GOAL_POINTS`` of T = N (:func:`best_within_goal`). Here the inputs are split into ``folds``
    folds by index (input ``i`` in fold ``i % folds``) and each fold takes the level that rule picks
    on the other folds' inputs (the smallest error level where none is within the points).
    ``replays``: per level of ``errors``, each input's decision, T and rounds (:func:`replay`).
    Returns each fold's level and each input's decision, T and rounds under its fold's level."""
    fold = torch.arange(len(labels)) % folds
    decision, taken, rounds, chosen = (torch.empty_like(labels), torch.empty_like(labels),
                                       torch.empty_like(labels), [])
    for f in range(folds):
        seen, judged = fold != f, fold == f
        target = (final[seen] == labels[seen]).double().mean().item() - GOAL_POINTS / 100
        fits = [j for j, (d, *_) in enumerate(replays)
                if (d[seen] == labels[seen]).double().mean().item() >= target - 1e-12]
        j = (min(fits, key=lambda j: replays[j][1][seen].double().mean().item()) if fits
             else min(range(len(errors)), key=lambda j: errors[j]))
        chosen.append(errors[j])
        decision[judged], taken[judged], rounds[judged] = (replays[j][i][judged] for i in range(3))
    return chosen, decision, taken, rounds


def best_within_goal(run: dict) -> dict | None:
    """The adaptive level with the smallest mean T whose accuracy is within GOAL_POINTS of T = N."""
    target = run["fixed"][-1]["accuracy"] - GOAL_POINTS / 100
    fits = [a for a in run["adaptive"] if a["accuracy"] >= target - 1e-12]
    return min(fits, key=lambda a: a["mean_samples"]) if fits else None


def prior_text(runs: list[dict]) -> str:
    """The rule's prior on the spread, as the study ran it: each run learns its own σ₀² (studies
    written before ``prior_samples`` was recorded ran one pseudo-sample of each batch's spread,
    with no look at T = 1)."""
    run = runs[0]
    if "prior_samples" not in run:
        return "prior one pseudo-sample of the batch's spread"
    first = "T = 1 from the second batch on" if run["checkpoints"][0] == 1 else "no look at T = 1"
    learnt = [r["prior_variance"] for r in runs if r["prior_variance"] is not None]
    spread = ("σ₀²" if not learnt else f"σ₀² = {learnt[0]:.4g}" if len(runs) == 1 else
              f"σ₀² ({min(learnt):.4g}–{max(learnt):.4g} over the runs)")
    where = "the first batch's first look" if len(runs) == 1 else "each run's first batch's first look"
    where += " showing a spread"
    return f"prior {run['prior_samples']} pseudo-samples of the spread {spread} learnt at {where} ({first})"


def held_out_met(held: dict) -> bool:
    """The goal for the level chosen on the other folds: within GOAL_POINTS of T = N at mean T <= GOAL_MEAN_T."""
    return held["accuracy_minus_T_max"] >= -GOAL_POINTS / 100 - 1e-12 and held["mean_samples"] <= GOAL_MEAN_T


def held_out_name(held: dict) -> str:
    return "half" if held["folds"] == 2 else f"{held['folds'] - 1} of {held['folds']} folds"


def goal_met(run: dict) -> bool:
    """The goal: some error level is within GOAL_POINTS of T = N at a mean T of at most GOAL_MEAN_T."""
    best = best_within_goal(run)
    return best is not None and best["mean_samples"] <= GOAL_MEAN_T


def fixed_t_for(run: dict, accuracy: float) -> int | None:
    """The smallest fixed T whose accuracy reaches ``accuracy``."""
    return next((f["samples"] for f in run["fixed"] if f["accuracy"] >= accuracy - 1e-12), None)


def write_figure(document: dict, path: Path) -> None:
    """Accuracy against mean T per dataset: fixed T, the adaptive rule at each level, the oracle."""
    plt = pyplot()
    datasets = list(dict.fromkeys(r["dataset"] for r in document["runs"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 6.5), squeeze=False,
                             layout="constrained")
    # one colour per run across the panels, whose entries share one legend (runs of one folder name
    # are told apart by their paths)
    colors = {id(run): f"C{i % 10}" for i, run in enumerate(document["runs"])}
    names = [Path(run["run"]).name for run in document["runs"]]
    for ax, dataset in zip(axes[0], datasets):
        for run in (r for r in document["runs"] if r["dataset"] == dataset):
            name = Path(run["run"]).name
            color, label = colors[id(run)], name if names.count(name) == 1 else run["run"]
            ts = [f["samples"] for f in run["fixed"]]
            ax.plot(ts, [100 * f["accuracy"] for f in run["fixed"]], color=color, lw=1, label=f"{label} fixed T")
            ax.plot([a["mean_samples"] for a in run["adaptive"]], [100 * a["accuracy"] for a in run["adaptive"]],
                    color=color, ls="--", marker="o", ms=4, label=f"{label} adaptive (error levels)")
            ax.plot(run["oracle"]["mean_samples"], 100 * run["oracle"]["accuracy"], color=color, marker="*",
                    ms=12, ls="none", label=f"{label} oracle")
        ax.axvline(GOAL_MEAN_T, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("mean samples per input T")
        ax.set_ylabel("test accuracy (%)")
        examples = sorted({r["examples"] for r in document["runs"] if r["dataset"] == dataset})
        ax.set_title(f"{dataset} ({' or '.join(map(str, examples))} test inputs)")
        ax.grid(alpha=0.3)
    legend = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=3, fontsize=8)
    save_figure(fig, path)


def write_tables(document: dict) -> str:
    lines = []
    for run in document["runs"]:
        name, n = run["run"], run["max_samples"]
        fixed = {f["samples"]: f for f in run["fixed"]}
        batch = next(k for k in run["fixed"][0]["energy_j"] if k.startswith("per-batch"))
        lines += [f"### {run['dataset']}: `{name}` ({run['examples']} test inputs, N = {n})", "",
                  f"| method | accuracy % | − T={n} (± paired SE) | mean T | T p50 / p90 / p99 / max | differs from T={n} % | mean rounds "
                  f"| energy mJ: per-eo held | per-eo per round | {batch} |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for t in sorted({1, 2, 3, 5, 10, 20, n}):
            if t in fixed:
                e = fixed[t]["energy_j"]
                lines.append(f"| fixed T={t} | {100 * fixed[t]['accuracy']:.2f} | | {t} | | | 1 | {mj(e['per-eo held'])} "
                             f"| {mj(e['per-eo per round'])} | {mj(e[batch])} |")
        rows = [(f"adaptive, error {a['error']:g}", a) for a in run["adaptive"]]
        held = run.get("held_out")  # absent from studies written before it was added
        if held:
            rows.append((f"adaptive, error chosen on the other {held_out_name(held)} "
                         f"({' / '.join(f'{e:g}' for e in held['errors'])})", held))
        for label, a in rows:
            q, e = a["samples_quantiles"], a["energy_j"]
            lines.append(f"| {label} | {100 * a['accuracy']:.2f} "
                         f"| {100 * a['accuracy_minus_T_max']:+.2f} ± {100 * a['accuracy_minus_T_max_stderr']:.2f} "
                         f"| {a['mean_samples']:.2f} "
                         f"| {q['p50']:g} / {q['p90']:g} / {q['p99']:g} / {q['max']} | {100 * a['differs_from_T_max']:.2f} "
                         f"| {a['mean_rounds']:.2f} | {mj(e['per-eo held'])} | {mj(e['per-eo per round'])} | {mj(e[batch])} |")
        o = run["oracle"]
        q = o["samples_quantiles"]
        lines.append(f"| oracle | {100 * o['accuracy']:.2f} | 0 | {o['mean_samples']:.2f} | {q['p50']:g} / {q['p90']:g} / "
                     f"{q['p99']:g} / {q['max']} | 0.00 | | {mj(o['energy_j']['per-eo held'])} | | |")
        best = best_within_goal(run)
        if best is None:
            verdict = f"no error level reaches the accuracy of T={n} within {GOAL_POINTS} points"
        else:
            met = "met" if best["mean_samples"] <= GOAL_MEAN_T else "not met"
            verdict = (f"within {GOAL_POINTS} points of T={n} at mean T {best['mean_samples']:.2f} (error "
                       f"{best['error']:g}, {100 * best['accuracy']:.2f} % vs {100 * run['fixed'][-1]['accuracy']:.2f} %): "
                       f"goal (mean T <= {GOAL_MEAN_T:g}) {met}; fixed T needs T = "
                       f"{fixed_t_for(run, best['accuracy']) or f'more than {n}'} for that accuracy and T = "
                       f"{fixed_t_for(run, run['fixed'][-1]['accuracy'] - GOAL_POINTS / 100)} to be within "
                       f"{GOAL_POINTS} points; the oracle needs mean T "
                       f"{o['mean_samples']:.2f}")
        if held:
            met = "met" if held_out_met(held) else "not met"
            verdict += (f". With the error level chosen on the other {held_out_name(held)} of the inputs for each "
                        f"(so not after the fact): {100 * held['accuracy_minus_T_max']:+.2f} ± "
                        f"{100 * held['accuracy_minus_T_max_stderr']:.2f} points at mean T {held['mean_samples']:.2f}, "
                        f"goal {met}")
        hist = run["adaptive"][len(run["adaptive"]) // 2]
        lines += ["", f"Goal: {verdict}.", "",
                  f"T distribution, adaptive at error {hist['error']:g} (T: inputs): "
                  + ", ".join(f"{t}: {c}" for t, c in hist["samples_histogram"].items()) + ".",
                  "", "Oracle T distribution (T: inputs): "
                  + ", ".join(f"{t}: {c}" for t, c in o["samples_histogram"].items()) + ".", ""]
    return "\n".join(lines)


def summary_table(document: dict) -> str:
    lines = [f"| dataset | run | test inputs | fixed T=N | adaptive within {GOAL_POINTS} points: error, accuracy, mean T "
             f"| fixed T: smallest within {GOAL_POINTS} points / reaching the adaptive accuracy | oracle mean T "
             f"| goal (mean T <= {GOAL_MEAN_T:g}), error level after the fact (chosen on held-out inputs) "
             "| energy mJ (per-eo, weights held): adaptive / T=N |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in document["runs"]:
        n, best, o = run["max_samples"], best_within_goal(run), run["oracle"]
        fixed = run["fixed"][-1]
        if best is None:
            cells, energy = "none", f"– / {mj(fixed['energy_j']['per-eo held'])}"
        else:
            cells = f"{best['error']:g}, {100 * best['accuracy']:.2f} %, {best['mean_samples']:.2f}"
            energy = f"{mj(best['energy_j']['per-eo held'])} / {mj(fixed['energy_j']['per-eo held'])}"
        goal = "met" if goal_met(run) else "not met"
        if held := run.get("held_out"):  # (the after-the-fact level is picked on the inputs it is judged on)
            goal += f" ({'met' if held_out_met(held) else 'not met'})"
        within = fixed_t_for(run, fixed["accuracy"] - GOAL_POINTS / 100)
        reaching = (fixed_t_for(run, best["accuracy"]) or f"none ≤ {n}") if best else "–"
        lines.append(f"| {run['dataset']} | {Path(run['run']).name} | {run['examples']} | {100 * fixed['accuracy']:.2f} % "
                     f"(N={n}) | {cells} | {within} / {reaching} "
                     f"| {o['mean_samples']:.2f} | {goal} | {energy} |")
    return "\n".join(lines)


TITLE = "T chosen per input (adaptive sampling)"  # the README's first line: what scripts/adaptive_study.py rewrites


def render_readme(document: dict, header: str) -> str:
    """The study's README: ``header`` (how it was made), what every column means, the summary,
    the figure and the per-run tables."""
    first = document["runs"][0]
    energy = first["energy_settings"]["per-eo"]
    return f"""# {TITLE}

{header}

- **Samples.** N = {first["max_samples"]} samples of every test input are drawn once per run (seed
  {first["seed"]}, folded into batches as `pdnn eval` does) and every method below is computed from
  these same draws: fixed T uses the first T; the adaptive rule is replayed on them
  (`pdnn.adaptive.simulate`, the decisions `SampledModel(samples="auto")` makes when the network
  draws these samples); the oracle knows all N. Accuracy differences between methods are
  therefore not sampling noise between separate evaluations.
- **Rule.** `predictive` (docs/adaptive.md) at error levels
  {", ".join(f"{a['error']:g}" for a in first["adaptive"])}; checkpoints (rounds end at)
  T = {", ".join(map(str, first["checkpoints"]))}; {prior_text(document["runs"])};
  batches of {next(k for k in first["fixed"][0]["energy_j"] if k.startswith("per-batch")).split(":")[1]} inputs.
- **− T=N**: accuracy minus that of T = N on the same draws, with the standard error of this
  paired difference (only inputs whose decision differs contribute to it).
- **Differs from T=N**: the fraction of inputs whose adaptive decision is not the decision at N on
  the same draws — what the error level bounds (in the posterior sense of docs/adaptive.md).
- **Oracle**: per input, the T after which the running decision never changes again (so its
  accuracy is that of T = N); the least any rule could spend without differing from T = N.
- **Energy** per inference from `pdnn.energy` ({energy["technology"]}, weights and activations in
  {energy["weight_memory"].upper()}, network aggregation), at each input's own T, averaged over the
  inputs, in three accountings of the weight read: *per-eo held* — each EO's weights read once per
  inference and kept while its samples stream until the input stops, E(T_i); *per-eo per round* —
  read again in every round the input takes part in; *per-batch:B* — read once per round for the
  whole batch, so a batch pays a weight read per round until its slowest input stops. Fixed T is
  one round.

## Summary

{summary_table(document)}

![accuracy vs mean T](accuracy-vs-mean-T.png)

## Per run

{write_tables(document)}
"""


def over_draws(documents: list[dict]) -> list[dict]:
    """The studies ``documents`` (each one ``adaptive.json``) of the same runs, inputs, levels and
    looks with different sampling seeds, per run and level: each draw's loss against T = N (in
    points) and mean T, their means over the draws, and the standard error of each mean over the
    draws (standard deviation / sqrt(draws)). One draw's paired standard error mixes the test
    inputs with the draw; the spread over draws is that of the draw alone, for these inputs.
    The goal is judged on the means; fixed T is summarised alike, as the baseline on the same
    draws."""
    if len(documents) < 2:
        raise RunError(f"a summary over draws needs at least two studies, got {len(documents)}")
    same = ("dataset", "run", "examples", "max_samples", "checkpoints", "prior_samples")
    compared = (*same, "energy_settings")  # the settings name --batch (per-batch:B) and the memories too
    shape = [[tuple(map(str, (r.get(k) for k in compared))) + tuple(a["error"] for a in r["adaptive"])
              for r in d["runs"]] for d in documents]
    if any(s != shape[0] for s in shape):
        raise RunError("the studies differ in their runs, test inputs, N, looks, prior weight, error levels, "
                       "batch or energy settings; a summary over draws compares draws of one study")
    seeds = [d["runs"][0]["seed"] for d in documents]
    if len(set(seeds)) != len(seeds):
        raise RunError(f"the studies repeat a sampling seed ({seeds}); each draw must be new")
    k = len(documents)

    def mean_se(values: list[float]) -> tuple[float, float]:
        mean = sum(values) / k
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1) / k)

    summary = []
    for i, first in enumerate(documents[0]["runs"]):
        runs = [d["runs"][i] for d in documents]
        levels = []
        for j, level in enumerate(first["adaptive"]):
            loss = [100 * r["adaptive"][j]["accuracy_minus_T_max"] for r in runs]
            taken = [r["adaptive"][j]["mean_samples"] for r in runs]
            (loss_mean, loss_se), (t_mean, t_se) = mean_se(loss), mean_se(taken)
            levels.append({"error": level["error"], "loss_points": loss, "mean_samples": taken,
                           "loss_points_mean": loss_mean, "loss_points_se": loss_se,
                           "mean_samples_mean": t_mean, "mean_samples_se": t_se,
                           "goal": loss_mean >= -GOAL_POINTS - 1e-12 and t_mean <= GOAL_MEAN_T})
        fixed = []
        for j, point in enumerate(first["fixed"]):
            loss = [100 * (r["fixed"][j]["accuracy"] - r["fixed"][-1]["accuracy"]) for r in runs]
            loss_mean, loss_se = mean_se(loss)
            fixed.append({"samples": point["samples"], "loss_points": loss, "loss_points_mean": loss_mean,
                          "loss_points_se": loss_se})
        held_out = None
        if all("held_out" in r for r in runs):  # studies written before it was added lack it
            loss = [100 * r["held_out"]["accuracy_minus_T_max"] for r in runs]
            taken = [r["held_out"]["mean_samples"] for r in runs]
            (loss_mean, loss_se), (t_mean, t_se) = mean_se(loss), mean_se(taken)
            held_out = {"folds": runs[0]["held_out"]["folds"], "errors": [r["held_out"]["errors"] for r in runs],
                        "loss_points": loss, "mean_samples": taken, "loss_points_mean": loss_mean,
                        "loss_points_se": loss_se, "mean_samples_mean": t_mean, "mean_samples_se": t_se,
                        "goal": loss_mean >= -GOAL_POINTS - 1e-12 and t_mean <= GOAL_MEAN_T}
        summary.append({key: first.get(key) for key in same} | {
            "seeds": seeds, "accuracy_T_max": [r["fixed"][-1]["accuracy"] for r in runs],
            "oracle_mean_samples": [r["oracle"]["mean_samples"] for r in runs], "levels": levels,
            "held_out": held_out, "fixed": fixed})
    return summary


def over_draws_table(summary: list[dict]) -> str:
    """Markdown: per run, one row per level with every draw and the mean ± its standard error."""
    lines = []
    for run in summary:
        n, seeds = run["max_samples"], ", ".join(map(str, run["seeds"]))
        accuracy = ", ".join(f"{100 * a:.2f}" for a in run["accuracy_T_max"])
        oracle = ", ".join(f"{t:.2f}" for t in run["oracle_mean_samples"])
        lines += [f"### {run['dataset']}: `{Path(run['run']).name}` ({run['examples']} test inputs, N = {n}, "
                  f"seeds {seeds})", "", f"T = {n}: {accuracy} %; oracle mean T: {oracle}.", "",
                  f"| error | − T={n}, points, per draw | mean ± SE | mean T per draw | mean ± SE "
                  f"| goal on the means (within {GOAL_POINTS} at mean T ≤ {GOAL_MEAN_T:g}) |",
                  "|---|---|---|---|---|---|"]
        rows = [(f"{level['error']:g}", level) for level in run["levels"]]
        held = run.get("held_out")
        if held:
            chosen = ", ".join("/".join(f"{e:g}" for e in errors) for errors in held["errors"])
            rows.append((f"chosen on the other {held_out_name(held)} ({chosen})", held))
        for name, level in rows:
            lines.append(f"| {name} | {' '.join(f'{v:+.2f}' for v in level['loss_points'])} "
                         f"| {level['loss_points_mean']:+.3f} ± {level['loss_points_se']:.3f} "
                         f"| {' '.join(f'{t:.3f}' for t in level['mean_samples'])} "
                         f"| {level['mean_samples_mean']:.3f} ± {level['mean_samples_se']:.3f} "
                         f"| {'met' if level['goal'] else 'not met'} |")
        within = next((f["samples"] for f in run["fixed"] if f["loss_points_mean"] >= -GOAL_POINTS - 1e-12), None)
        lines += ["", f"Fixed T on the same draws (the smallest within {GOAL_POINTS} points on the means: T = {within}):",
                  "", f"| fixed T | − T={n}, points, per draw | mean ± SE |", "|---|---|---|"]
        for f in run["fixed"]:
            if f["samples"] in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20) or f["samples"] == within:
                lines.append(f"| {f['samples']} | {' '.join(f'{v:+.2f}' for v in f['loss_points'])} "
                             f"| {f['loss_points_mean']:+.3f} ± {f['loss_points_se']:.3f} |")
        lines.append("")
    return "\n".join(lines)
