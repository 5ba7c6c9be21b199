"""Figures people would rather look at than read: accuracy versus the number of samples."""
from __future__ import annotations

import warnings
from pathlib import Path

from .io import RunError, config_dataset, pyplot, read_config, read_eval, save_figure
from .labels import figure_text, series_labels
from .provenance import warn_if_stale


def plot_accuracy_vs_samples(run_dirs, out: str | Path, aggregate: str = "network", title: str | None = None,
                             samples=None) -> Path:
    """Accuracy (%) versus T on a log axis; deterministic runs as labelled horizontal lines; only
    the T in ``samples`` where given (an evaluation may hold more).

    Reads ``eval-<aggregate>.json`` from every run directory; a run without one is an error that
    names it, a run whose checkpoint changed since its evaluation is warned about, and so are runs
    of different datasets (their curves share an axis, but not a scale of difficulty) and
    evaluations on different numbers of test examples.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    horizontals = []
    curves = 0
    measured: set[int] = {1}
    evaluations = []
    for run_dir in map(Path, run_dirs):
        config = read_config(run_dir)  # a missing folder is said as such, not as a missing evaluation
        if (config.get("train") or {}).get("task") == "vae":
            raise RunError(f"{run_dir} is a generator, which has no accuracy versus T; plot its distance with "
                           f"`pdnn fid {run_dir}` and `pdnn tradeoff {run_dir}`")
        path = run_dir / f"eval-{aggregate}.json"
        if not path.is_file():
            option = "" if aggregate == "network" else f" --aggregate {aggregate}"
            raise FileNotFoundError(f"{path} does not exist; run `pdnn eval {run_dir}{option}` first")
        evaluations.append((run_dir, path.name, read_eval(path)))
    warn_if_stale(evaluations)
    configs = {run_dir: read_config(run_dir) for run_dir, _, _ in evaluations}
    datasets = {run_dir: config_dataset(config) for run_dir, config in configs.items()}
    if len(set(datasets.values()) - {None}) > 1:
        warnings.warn("the runs are on different datasets ("
                      + ", ".join(f"{run}: {dataset}" for run, dataset in datasets.items())
                      + "): their accuracies share one axis but are not comparable", stacklevel=2)
    examples = {run_dir: document.get("examples") for run_dir, _, document in evaluations}
    if len(set(examples.values()) - {None}) > 1:  # (evaluations written before the count have none)
        warnings.warn("the runs were evaluated on different numbers of test examples ("
                      + ", ".join(f"{run}: {n}" for run, n in examples.items())
                      + "), so their accuracies are not measured alike", stacklevel=2)
    labels = series_labels([(str(run_dir), configs[run_dir]) for run_dir, _, _ in evaluations])
    for run_dir, _, document in evaluations:
        label = labels[str(run_dir)]
        rows = document["results"]
        deterministic = document.get("deterministic")
        if deterministic is None:  # files written before the key: one exact row at T = 1
            deterministic = len(rows) == 1 and rows[0]["samples"] == 1 and rows[0].get("accuracy_std", 0) == 0
        if deterministic:
            horizontals.append((label, 100 * rows[0]["accuracy_mean"]))
            continue
        rows = [r for r in rows if samples is None or r["samples"] in samples]
        ts = [r["samples"] for r in rows]
        measured.update(ts)
        ax.errorbar(ts, [100 * r["accuracy_mean"] for r in rows],
                    yerr=[100 * r.get("accuracy_std", 0.0) for r in rows], capsize=3, label=figure_text(label),
                    **_series_style(curves))
        curves += 1
    ax.set_xscale("log")
    ax.set_xlim(0.9, max(measured) * 1.1)
    # the baselines take the colours after the curves', so none shares one with a curve (up to 10 in all)
    lines = [(label, acc, ax.axhline(acc, linestyle="--", linewidth=1, color=f"C{(curves + i) % 10}"))
             for i, (label, acc) in enumerate(horizontals)]
    # Labels of lines closer than 3 % of the axis height would print over each other: move each
    # such label a third of the (log) axis further right than the one below it (from T = 1, or
    # from the axis' left end when only T = 1 was measured), and every fourth one a line higher.
    low, high = ax.get_ylim()
    start, end = (1, max(measured)) if max(measured) > 1 else ax.get_xlim()
    slot, previous = 0, None
    for label, acc, line in sorted(lines, key=lambda item: item[1]):
        slot = slot + 1 if previous is not None and acc - previous < 0.03 * (high - low) else 0
        previous = acc
        ax.annotate(figure_text(f"{label} {acc:.1f}%"), xy=(start * (end / start) ** (slot % 3 / 3), acc),
                    xytext=(2, 2 + 10 * (slot // 3)), textcoords="offset points", fontsize=8,
                    color=line.get_color())
    ax.set_xticks(sorted(measured), [str(t) for t in sorted(measured)])
    ax.minorticks_off()
    ax.set_xlabel("samples T (log scale)")
    ax.set_ylabel("test accuracy (%)")
    default = f"accuracy vs samples ({aggregate} aggregation)"
    ax.set_title(default if title is None else figure_text(title))  # "": none
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")  # (wherever it covers the fewest points and error bars)
    fig.tight_layout()
    return save_figure(fig, out)


def _series_style(k: int) -> dict:
    """The colour and marker of the ``k``-th curve: the ten colours repeat, each round with its own
    marker, so no two legend entries look alike."""
    return {"color": f"C{k % 10}", "marker": ("o", "^", "s", "D", "v", "P")[k // 10 % 6]}
