"""Tables of the low-bit weight study, from its JSON files: writes results/lowbit/summary.md and
results/lowbit/summary.json.

    python scripts/lowbit_summary.py

Reads what ``scripts/lowbit_study.sh`` wrote (runs, ``tradeoff-<memory>.json``) and the 32-bit
runs of results/fashion-mnist and results/cifar10; prices the cheapest configuration within one
point with ``pdnn energy`` to say which term of the EO energy limits its gain. Nothing here is
typed in by hand: every number is read from a JSON file or computed from one.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "lowbit"
GOAL = 4.0  # the goal: at least 4x less energy within one point
TS = (1, 2, 5, 10, 50)


def accuracy_by_t(run: Path) -> dict[int, float]:
    doc = json.loads((run / "eval-network.json").read_text())
    return {r["samples"]: 100 * r["accuracy_mean"] for r in doc["results"]}


def run_table(dataset: str) -> list[str]:
    rows = ["| run | b_w | neuron | s | " + " | ".join(f"T={t}" for t in TS) + " |",
            "|---|---|---|---|" + "---|" * len(TS)]
    for run in sorted((OUT / dataset / "runs").glob("*"), key=lambda p: (p.name.split("-")[0], p.name)):
        if not (run / "eval-network.json").is_file():
            continue
        config = json.loads((run / "config.json").read_text())
        acc = accuracy_by_t(run)
        cells = [f"{acc[t]:.2f}" if t in acc else "" for t in TS]
        rows.append(f"| {run.name} | {config['model']['weight_bits']} | {config['model']['neuron']} | "
                    f"{config['train']['samples']} | " + " | ".join(cells) + " |")
    return rows


def energy_terms(run: str, samples: int, memory: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e.json"
        subprocess.run([sys.executable, "-m", "pdnn", "energy", run, "--samples", str(samples), "--memory", memory,
                        "--json", str(out), "--png", str(Path(tmp) / "e.png")], check=True, capture_output=True,
                       cwd=ROOT)
        doc = json.loads(out.read_text())
    config = doc["configs"][0]
    first = config["layers"][0]
    return {"total_j": config["total_j"], "terms": config["terms"], "reference_j": doc["reference"]["total_j"],
            "first_layer_j": first["total_j"], "first_layer_terms": first["terms"]}


def best_within_one_point(dataset: str, memory: str) -> dict | None:
    path = OUT / dataset / f"tradeoff-{memory}.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    best, ref = doc["best"], doc["reference"]
    terms = energy_terms(best["run"], best["samples"], memory)
    # the gain if every term but one were free: what that term alone allows
    caps = {k.removesuffix("_j"): terms["reference_j"] / v for k, v in terms["terms"].items() if v > 0}
    limiting = min(caps, key=caps.get)
    p_bits = [p for p in doc["points"] if p["neuron"].startswith("pbit") and
              ref["accuracy"] - p["accuracy"] <= doc["tolerance"] + 1e-12]
    best_pbit = min(p_bits, key=lambda p: p["energy_j"]) if p_bits else None
    return {"memory": memory, "reference": {k: ref[k] for k in ("label", "run", "accuracy", "energy_j")},
            "best": {k: best[k] for k in ("label", "run", "accuracy", "energy_j", "weight_bits", "neuron", "samples")},
            "gain": ref["energy_j"] / best["energy_j"],
            "best_pbit": None if best_pbit is None else {
                "label": best_pbit["label"], "accuracy": best_pbit["accuracy"], "weight_bits": best_pbit["weight_bits"],
                "gain": ref["energy_j"] / best_pbit["energy_j"]},
            "terms_of_best": terms, "gain_cap_by_term": caps, "limiting_term": limiting,
            "goal_met": ref["energy_j"] / best["energy_j"] >= GOAL}


def headline_rows(results: list[dict]) -> list[str]:
    rows = ["| dataset | memory | 32-bit reference | cheapest within 1 point | accuracy | gain | cheapest p-DNN within 1 point "
            "(gain) | limiting term: its share, the gain it alone allows |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        terms = r["terms_of_best"]
        share = 100 * terms["terms"][f"{r['limiting_term']}_j"] / terms["total_j"]
        pbit = "none" if r["best_pbit"] is None else f"{r['best_pbit']['label']} ({r['best_pbit']['gain']:.2f}×)"
        rows.append(f"| {r['dataset']} | {r['memory']} | {r['reference']['label']} {100 * r['reference']['accuracy']:.2f} % "
                    f"| {r['best']['label']} (b_w = {r['best']['weight_bits']}) | {100 * r['best']['accuracy']:.2f} % "
                    f"| **{r['gain']:.2f}×** | {pbit} | {r['limiting_term'].replace('_', ' ')}: {share:.0f} %, "
                    f"≤ {r['gain_cap_by_term'][r['limiting_term']]:.1f}× |")
    return rows


def matched_rows() -> list[str]:
    base, matched = ROOT / "results" / "fashion-mnist" / "runs", OUT / "matched" / "runs"
    rows = ["| s | bipolar β = 2 (mean tanh(2x)) | unipolar β = 2 (mean σ(2x) = tanh-p-bit at β = 1) "
            "| unipolar β = 4 (mean σ(4x), the temperature of bipolar β = 2) |", "|---|---|---|---|"]
    for s in (1, 2, 4, 8):
        runs = [base / f"pbit-s{s}", base / f"pbit-unipolar-s{s}", matched / f"pbit-unipolar-beta4-s{s}"]
        cells = []
        for run in runs:
            if (run / "eval-network.json").is_file():
                acc = accuracy_by_t(run)
                cells.append(" / ".join(f"{acc[t]:.2f}" for t in (1, 10, 50)))
            else:
                cells.append("not run")
        rows.append(f"| {s} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    results = []
    for dataset in ("fashion-mnist", "cifar10"):
        for memory in ("dram", "sram"):
            r = best_within_one_point(dataset, memory)
            if r is not None:
                results.append({"dataset": dataset, **r})
    lines = ["# Low-bit weight study: tables (generated by scripts/lowbit_summary.py)", ""]
    lines += ["## Cheapest configuration within one point of the 32-bit float network", ""]
    lines += headline_rows(results) + [""]
    lines += ["The limiting term is the one whose energy alone, were every other term free, would allow the "
              "smallest gain over the reference.", ""]
    for dataset in ("fashion-mnist", "cifar10"):
        if (OUT / dataset / "runs").is_dir():
            lines += [f"## {dataset}: accuracy (%) against T, mean of 3 sampling repeats", ""]
            lines += run_table(dataset) + [""]
    lines += ["## Sigmoid against tanh p-bits at matched temperature (Fashion-MNIST; accuracy % at T = 1 / 10 / 50)", ""]
    lines += matched_rows() + [""]
    (OUT / "summary.md").write_text("\n".join(lines))
    (OUT / "summary.json").write_text(json.dumps({"goal_gain": GOAL, "results": results}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
