"""Does the p-DNN's gap close with training length or width? results/lowbit/gap.{json,png,md}

    python scripts/gap_summary.py

Reads the Fashion-MNIST studies made by ``scripts/length_study.sh`` (15 and 50 epochs; width 64,
128, 512, 1024) and the 5-epoch, width-256 study of results/fashion-mnist, which they extend
(same schedule otherwise). For each study and each claim of the paper's Section 2 it computes
the margin by which the claim holds (positive) or fails (negative), in points, with the rule of
``pdnn.experiments.study.assess_claims``:

* T = 1 matches: 1 − |p-DNN(s=1, T=1) − tanh|;
* T = 2 surpasses: p-DNN(s=2, T=2) − tanh;
* T = 10 matches 3-bit: p-DNN(s=8, T=10) − (3-bit − 1);
* train-test matching: the fraction of test T at which the s nearest T is within one std (or 0.2
  point) of the best s (1 = holds), drawn on its own axis.

CIFAR-10 (``scripts/length_study.sh cifar10``) has only the tanh network and the p-DNN trained with
s = 4 per setting (width 16 or 32; 4 or 20 epochs; first 45000 training images, 5000 test images,
3 repeats): its table gives p-DNN(s=4, T) − tanh at each test T, which is not one of the claims
above (they need s = 1, 2, 8 and 3-bit runs) but the same gap.

A study that has not finished is listed as missing, not guessed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pdnn.experiments.lowbit import accuracy_by_t  # noqa: E402
from pdnn.experiments.study import StudySpec, assess_claims  # noqa: E402
from pdnn.interrupts import run_script  # noqa: E402
from pdnn.io import save_figure, write_json, write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "results"
OUT = ROOT / "lowbit"
LENGTH = {5: ROOT / "fashion-mnist", 15: OUT / "length" / "epochs-15", 50: OUT / "length" / "epochs-50"}
WIDTH = {64: OUT / "width" / "width-64", 128: OUT / "width" / "width-128", 256: ROOT / "fashion-mnist",
         512: OUT / "width" / "width-512", 1024: OUT / "width" / "width-1024"}
CLAIMS = ("T = 1 matches", "T = 2 surpasses", "T = 10 matches 3-bit")
CIFAR = {"width 16, 4 epochs": ROOT / "cifar10" / "runs", "width 32, 4 epochs": OUT / "cifar10" / "width-32",
         "width 16, 20 epochs": OUT / "cifar10" / "epochs-20"}
CIFAR_T = (1, 2, 5, 10, 50)


def margins(study: Path) -> dict | None:
    """Per claim, the margin in points by which it holds (>0) or fails; None if unfinished."""
    spec_path, summary_path = study / "spec.json", study / "summary.json"
    if not summary_path.exists():
        return None
    spec = json.loads(spec_path.read_text())
    spec = StudySpec(**spec)
    runs = json.loads(summary_path.read_text())["runs"]
    acc = lambda name, t: 100 * runs[name]["accuracy"][str(t)]["mean"]  # noqa: E731
    tanh = acc("tanh", 1)
    matching = next(c for c in assess_claims(spec, runs) if c["claim"].startswith("training with s"))
    wins, total = (int(x) for x in matching["ours"].split(" T values")[0].split("/"))
    return {
        "T = 1 matches": 1 - abs(acc("pbit-s1", 1) - tanh),
        "T = 2 surpasses": acc("pbit-s2", 2) - tanh,
        "T = 10 matches 3-bit": acc("pbit-s8", 10) - (acc("quant3", 1) - 1),
        "matching": wins / total,
        "tanh": tanh,
        "epochs": spec.epochs,
        "width": spec.width,
        "train_time_s": sum(r["train_time_s"] for r in runs.values()),
    }


def cifar_gap(runs: Path) -> dict | None:
    """tanh (T = 1) and p-DNN(s = 4) − tanh at each test T, in points; None if unfinished."""
    if not all((runs / name / "eval-network.json").exists() for name in ("tanh", "pbit-s4")):
        return None
    tanh, pbit = ({t: 100 * a for t, a in accuracy_by_t(runs / name).items()} for name in ("tanh", "pbit-s4"))
    metrics = [json.loads((runs / name / "metrics.json").read_text()) for name in ("tanh", "pbit-s4")]
    return {"tanh": tanh[1], "pbit-s4": {t: pbit[t] for t in CIFAR_T},
            "gap": {t: pbit[t] - tanh[1] for t in CIFAR_T},
            "train_time_s": {name: sum(e["epoch_time_s"] for e in m) for name, m in zip(("tanh", "pbit-s4"), metrics)}}


def cifar_table(rows: dict) -> list[str]:
    lines = ["| CIFAR-10 CNN | tanh (%) | " + " | ".join(f"T = {t} (pts)" for t in CIFAR_T) + " | train time tanh / s = 4 |",
             "|---|---:|" + "---:|" * len(CIFAR_T) + "---:|"]
    for key, m in rows.items():
        if m is None:
            lines.append(f"| {key} | not finished |" + " |" * (len(CIFAR_T) + 1))
            continue
        times = " / ".join(f"{m['train_time_s'][n] / 60:.0f} min" for n in ("tanh", "pbit-s4"))
        lines.append(f"| {key} | {m['tanh']:.2f} | " + " | ".join(f"{m['gap'][t]:+.2f}" for t in CIFAR_T)
                     + f" | {times} |")
    return lines


def table(name: str, rows: dict) -> list[str]:
    lines = [f"| {name} | tanh (%) | " + " | ".join(f"{c} (pts)" for c in CLAIMS) + " | matching (T won) | train time |",
             "|---:|---:|" + "---:|" * len(CLAIMS) + "---:|---:|"]
    for key, m in rows.items():
        if m is None:
            lines.append(f"| {key} | " + " | ".join(["not finished"] + [""] * (len(CLAIMS) + 2)) + " |")
            continue
        lines.append(f"| {key} | {m['tanh']:.2f} | " + " | ".join(f"{m[c]:+.2f}" for c in CLAIMS)
                     + f" | {m['matching']:.2f} | {m['train_time_s'] / 60:.1f} min |")
    return lines


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    length = {e: margins(p) for e, p in LENGTH.items()}
    width = {w: margins(p) for w, p in WIDTH.items()}
    cifar = {key: cifar_gap(p) for key, p in CIFAR.items()}
    write_json(OUT / "gap.json", {"length": length, "width": width, "cifar10": cifar,
                                  "units": "margins in percentage points; matching: fraction of test T"})
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    axes[1].sharey(axes[0])
    twins = []
    for ax, (label, rows) in zip(axes, (("epochs (width 256)", length), ("hidden width (5 epochs)", width))):
        done = {k: m for k, m in rows.items() if m is not None}
        for claim in CLAIMS:
            ax.plot(list(done), [m[claim] for m in done.values()], "o-", label=claim)
        ax.axhline(0, color="k", lw=0.8)
        share = ax.twinx()  # train-test matching is a count of T values, not points: its own axis
        twins.append(share)
        share.plot(list(done), [m["matching"] for m in done.values()], "s--", color="tab:purple",
                   label="s matching T is best (right axis)")
        share.set_ylim(0, 1.05)
        share.set_ylabel("fraction of test T where matched s is best", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(rows), [str(k) for k in rows])
        ax.set_xlabel(f"{label}, log scale")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("margin by which the claim holds (points; < 0: fails)")
    handles = [h for ax in (axes[0], twins[0]) for h in ax.get_legend_handles_labels()[0]]
    axes[0].legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower right")
    ax = axes[2]
    for key, m in cifar.items():
        if m is not None:
            ax.plot(CIFAR_T, [m["gap"][t] for t in CIFAR_T], "o-", label=key)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(CIFAR_T, [str(t) for t in CIFAR_T])
    ax.set_xlabel("test T, log scale")
    ax.set_ylabel("p-DNN (s = 4) − tanh (points)")
    ax.set_title("CIFAR-10 CNN (45000 images; 5000 test)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Left, middle: Fashion-MNIST MLP, p-bit β = 2, first 54000 training images, cosine Adam lr 1e-3; "
                 "10000 test images, 3 repeats", fontsize=9)
    fig.tight_layout()
    save_figure(fig, OUT / "gap.png")
    text = ["# The gap against training length and width", "",
            "Made by `scripts/length_study.sh length|width` and `python scripts/gap_summary.py`. "
            "Fashion-MNIST first, CIFAR-10 below.", "",
            "![gap](gap.png)", "", *table("epochs", length), "", *table("width", width), "",
            "## CIFAR-10: p-DNN (s = 4) − tanh at each test T", "",
            "Made by `scripts/length_study.sh cifar10`. First 45000 training images, cosine Adam lr 1e-3, "
            "batch 64, p-bit β = 2; 5000 test images, 3 repeats. Times are wall clock on 2 shared CPU cores.", "",
            *cifar_table(cifar), ""]
    write_text(OUT / "gap.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    run_script(main)
