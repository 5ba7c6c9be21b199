"""Table of an ablation directory: every run's settings that differ from the base, and accuracy.

Usage: python scripts/ablation_summary.py DIR   (reads DIR/runs/*/, writes DIR/summary.json and
the table between the markers of DIR/README.md, creating the file if needed)
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pdnn.cli.common import existing_folder
from pdnn.interrupts import run_script
from pdnn.io import RunError, read_eval, read_json, read_metrics, write_text

BEGIN, END = "<!-- BEGIN table -->", "<!-- END table -->"


SETTINGS = {"neuron": ("model", "neuron"), "width": ("model", "width"), "beta": ("model", "beta"),
            "s": ("train", "samples"), "epochs": ("train", "epochs"), "lr": ("train", "lr"),
            "schedule": ("train", "schedule"), "loss": ("train", "loss_rule"), "augment": ("train", "augment")}


def row(run: Path) -> dict:
    """The table's row of one trained and evaluated run; a :class:`RunError` names the file that
    cannot give it (a converted run has no training to tabulate)."""
    if not (run / "metrics.json").is_file():
        raise RunError(f"{run} has no metrics.json: expected a trained run (a converted run, as in a noise "
                       "study, has no training to tabulate)")
    evaluation = read_eval(run / "eval-network.json")
    metrics = read_metrics(run / "metrics.json", ("epoch_time_s",))
    if not all(isinstance(m["epoch_time_s"], (int, float)) and math.isfinite(m["epoch_time_s"]) for m in metrics):
        raise RunError(f"{run / 'metrics.json'}: every epoch's epoch_time_s must be a finite number of seconds")
    config = read_json(run / "config.json")
    try:
        chosen = {key: config[part][name] for key, (part, name) in SETTINGS.items()}
    except (KeyError, TypeError):
        raise RunError(f"{run / 'config.json'} is not a run's config: expected "
                       + ", ".join(f"{part}.{name}" for part, name in SETTINGS.values())) from None
    return {"run": run.name, **chosen, "train_time_s": round(sum(m["epoch_time_s"] for m in metrics)),
            "test_examples": evaluation["examples"],
            "accuracy": {r["samples"]: (r["accuracy_mean"], r.get("accuracy_std", 0.0)) for r in evaluation["results"]}}


def main(out: Path) -> None:
    rows = [row(run) for run in sorted((out / "runs").iterdir()) if (run / "eval-network.json").exists()]
    ts = sorted({t for r in rows for t in r["accuracy"]})
    keys = list(SETTINGS)
    lines = ["| run | " + " | ".join(keys) + " | " + " | ".join(f"T={t}" for t in ts) + " | train s |",
             "|---" * (len(keys) + len(ts) + 2) + "|"]
    for r in rows:
        cells = [f"{100 * r['accuracy'][t][0]:.1f} ± {100 * r['accuracy'][t][1]:.1f}" if t in r["accuracy"] else ""
                 for t in ts]
        lines.append(f"| {r['run']} | " + " | ".join(str(r[k]) for k in keys) + " | " + " | ".join(cells)
                     + f" | {r['train_time_s']} |")
    table = "\n".join(lines)
    readme = out / "README.md"
    text = readme.read_text() if readme.exists() else f"# Ablation\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN)
    write_text(out / "summary.json", json.dumps(rows, indent=2) + "\n")  # (once every row was read)
    write_text(readme, f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}")
    print(table)


def command_line() -> None:
    """The command line: its options checked, then the work, its errors in one line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=existing_folder, help="the ablation folder (its runs in DIR/runs)")
    folder = Path(parser.parse_args().dir)
    if not (folder / "runs").is_dir() or (folder / "spec.json").is_file():  # (a study's folder has runs/ too)
        parser.error(f"{folder} is not an ablation folder (expected runs/ and no study's spec.json)")
    if (folder / "README.md").is_file() and not all(m in (folder / "README.md").read_text() for m in (BEGIN, END)):
        parser.error(f"{folder / 'README.md'} lacks the {BEGIN} ... {END} markers; expected an ablation's README")
    try:
        main(folder)
    except RunError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


if __name__ == "__main__":
    run_script(command_line)
