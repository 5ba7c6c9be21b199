"""The steps of scripts/noise_study.sh that need Python, and the summary of results/noise/.

    python scripts/noise_summary.py deterministic RUN --out FILE [--subset N]
        accuracy of a deterministic source run on the first N test images, written to FILE in the
        format of eval-network.json (the study's run directory is never written to)
    python scripts/noise_summary.py summary [--root results/noise]
        read every eval JSON / calibration.json / energy JSON under ROOT and write ROOT/summary.json,
        the generated tables of ROOT/README.md (between <!-- BEGIN name --> / <!-- END name -->
        markers) and ROOT/*.png
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from pdnn.cli.common import example_count, output_file
from pdnn.errors import UsageError
from pdnn.experiments.noise_rules import rows_by_samples, verdicts
from pdnn.interrupts import run_script
from pdnn.io import RunError, pyplot, save_figure, write_text

T_ALL = [1, 2, 5, 10, 20, 50]
NOISE_TITLE = "# Sampling a deterministically trained network"  # results/noise/README.md's first line


# ------------------------------------------------------------------------------------------------
# deterministic
# ------------------------------------------------------------------------------------------------

def deterministic(args) -> None:
    import time

    from pdnn.data import load
    from pdnn.evaluate import accuracy_vs_samples, is_deterministic
    from pdnn.runs import load_model, write_json

    model, config = load_model(args.run)
    if not is_deterministic(model):
        sys.exit(f"{args.run} is not deterministic")
    subset = args.subset if args.subset is not None else config["data"].get("subset")
    data = load(config["data"]["dataset"], subset=subset, progress=False)
    began = time.perf_counter()
    results = accuracy_vs_samples(model, data.test_x, data.test_y, [1], 1, prepare=data.normalize)
    doc = {"run": str(args.run), "dataset": config["data"]["dataset"], "split": "test",
           "examples": len(data.test_y), "aggregate": "network", "deterministic": True, "seed": 0,
           "device": "cpu", "time_s": time.perf_counter() - began, "results": results}
    write_json(args.out, doc)
    print(f"{args.run}: {100 * results[0]['accuracy_mean']:.2f}% on {len(data.test_y)} test images")


# ------------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------------

def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _rows(doc) -> dict[int, dict]:
    return rows_by_samples(doc) if doc else {}


def rules(examples: dict[str, int]) -> str:
    """The stated rules of the verdicts, with the test-set error of each dataset."""
    test_error = "; ".join(f"about ±{100 * binomial_stderr(0.5, n):.1f} points at most ({dataset}, {n} images)"
                           for dataset, n in examples.items())
    return (
        "Rules (accuracies are means over the 3 repeats; the ± in the tables is the standard deviation over repeats; "
        "SE = std / √3, the sampling noise on these test images; every bound is at least 0.1 points and one test "
        "image, so that a difference of a few hundredths of a point with a tiny repeat spread does not count): "
        "**gain at T=2** when acc(2) − acc(1) > 2·√(SE(1)² + SE(2)²); **monotonic** when no step between "
        "consecutive measured T decreases by more than 2·√(SE² + SE²) of its two ends and acc(Tmax) − acc(1) "
        "exceeds the same bound (a flat curve is not monotonic); *strictly* when every step goes up; **vs det.** "
        "compares acc(Tmax) (T = 50) with the deterministic source on the same images: *above* / *below* when the "
        "difference exceeds 2·SE(Tmax), else *tie*. These rules only account for the sampling noise. The finite test "
        f"set adds a binomial standard error ({test_error}) to any comparison with another network or another test "
        "set; comparisons of a conversion with its own source on the same images are paired and tighter, but the "
        "table does not quantify that."
    )


def binomial_stderr(accuracy: float, n: int) -> float:
    return math.sqrt(accuracy * (1 - accuracy) / n)


def _pct(x, digits=1, sign=False):
    if x is None:
        return "–"
    return f"{100 * x:+.{digits}f}" if sign else f"{100 * x:.{digits}f}"


def _cell(row, digits: int = 1) -> str:
    if row is None:
        return "–"
    return f"{100 * row['accuracy_mean']:.{digits}f} ± {100 * row['accuracy_std']:.{digits}f}"


def _digits(examples: int) -> int:
    return 2 if examples >= 5000 else 1


def _yes(v) -> str:
    return "–" if v is None else ("**yes**" if v else "no")


def _spec_text(config: dict) -> str:
    spec = config.get("convert", {})
    key = "beta" if spec.get("method") == "pbit" else "scale"
    value = spec.get(key)
    layers = spec.get("layers")
    parts = [spec.get("method", "trained p-DNN" if "copied_from" in config else "?")]
    symbol = {"beta": "β", "dither": "w", "gaussian": "σ"}.get(key if key == "beta" else spec.get("method"), "s")
    if isinstance(value, dict):
        parts.append(f"{symbol} per layer (" + ", ".join(f"{k}: {v:g}" for k, v in value.items()) + ")")
    elif value is not None:
        parts.append(f"{symbol} = {value:g}")
    if layers not in (None, "hidden"):
        parts.append(f"layers {','.join(layers) if isinstance(layers, list) else layers}")
    if spec.get("bn_stats"):
        parts.append("BN re-estimated")
    return ", ".join(parts)


_SOURCES = ("tanh", "quant1", "quant2", "pbit-s4")
_VARIANTS = ("pbit", "pbit-bn", "pbit-cal", "pbit-cal-bn", "pbit-perlayer", "pbit-last2-cal", "pbit-last-cal",
             "gaussian-cal", "gaussian-cal-bn", "logistic-cal", "logistic-cal-bn", "dither", "dither-cal",
             "dither-cal-bn", "")


def _order(d: Path):
    """tables list runs by dataset, source, then from the untouched conversion to the remedies"""
    name = d.name
    dataset = next((p for p in ("cifar10", "fashion-mnist") if name.startswith(p + "-")), "")
    rest = name[len(dataset) + 1:]
    src = next((i for i, s in enumerate(_SOURCES) if rest == s or rest.startswith(s + "-")), len(_SOURCES))
    variant = rest[len(_SOURCES[src]) + 1:] if src < len(_SOURCES) else rest
    return dataset, src, _VARIANTS.index(variant) if variant in _VARIANTS else len(_VARIANTS), name


def collect(root: Path) -> dict:
    runs = {}
    dets = {p.stem: _read(p) for p in sorted((root / "deterministic").glob("*.json"))}
    for d in sorted((root / "runs").iterdir(), key=_order):
        if not (d / "config.json").is_file():
            continue
        config = _read(d / "config.json")
        dataset = config["data"]["dataset"]
        source = config.get("source_run") or config.get("copied_from")
        src_name = f"{dataset}-{Path(source).name}" if source else None
        det_doc = dets.get(src_name) if "convert" in config else None
        det = det_doc["results"][0]["accuracy_mean"] if det_doc else None
        entry = {"dataset": dataset, "source": source, "conversion": _spec_text(config),
                 "convert": {k: v for k, v in config.get("convert", {}).items() if k != "bn_stats"},
                 "bn_stats_layers": sorted(config.get("convert", {}).get("bn_stats", {})),
                 "deterministic_source": det}
        for agg in ("network", "layer"):
            doc = _read(d / f"eval-{agg}.json")
            if doc:
                rows = _rows(doc)
                entry[agg] = {"examples": doc["examples"], "results": doc["results"],
                              "verdicts": verdicts(rows, det, doc["examples"])}
        cal = _read(d / "calibration.json")
        if cal:
            entry["calibration"] = {
                "parameter": cal["parameter"], "chosen": cal["chosen"], "recalibrate_bn": cal["recalibrate_bn"],
                "data": cal["data"], "target_samples": cal["target_samples"], "at_edge": cal.get("at_edge"),
                "per_layer": {r["name"]: r["chosen"] for r in cal["per_layer"]["layers"]} if cal.get("per_layer") else None,
                "deterministic_accuracy": cal["deterministic_accuracy"],
                "sweep": [{cal["parameter"]: r[cal["parameter"]],
                           "accuracy": {str(x["samples"]): x["accuracy_mean"] for x in x_rows}}
                          for r in cal["sweep"] for x_rows in [r["results"]]],
            }
        runs[d.name] = entry
    energy = {}
    for p in sorted((root / "energy").glob("*.json")):
        energy[p.stem] = _read(p)
    return {"deterministic": {k: {"examples": v["examples"], "accuracy": v["results"][0]["accuracy_mean"],
                                  "run": v["run"]} for k, v in dets.items()},
            "runs": runs, "energy_files": sorted(energy)}, energy


def table_accuracy(summary: dict, dataset: str) -> str:
    head = ("| run | conversion | det. | " + " | ".join(f"T={t}" for t in T_ALL)
            + " | gain T=1→2 (pts) | monotonic | vs det. at Tmax (pts) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, e in summary["runs"].items():
        if e["dataset"] != dataset or "network" not in e:
            continue
        rows = {r["samples"]: r for r in e["network"]["results"]}
        v = e["network"]["verdicts"]
        gain = f"{_pct(v.get('gain_T2_vs_T1'), 2, True)} → {_yes(v.get('gain_at_T2'))}"
        mono = _yes(v["monotonic"]) + (" (strictly)" if v["strictly_increasing"] else "")
        beats = "–" if v.get("beats_deterministic") is None else \
            ("**above**" if v["beats_deterministic"] else "below" if v["below_deterministic"] else "tie") \
            + f" ({_pct(v['Tmax_minus_deterministic'], 2, True)})"
        k = _digits(e["network"]["examples"])
        lines.append(f"| `{name}` | {e['conversion']} | {_pct(e['deterministic_source'], k)} | "
                     + " | ".join(_cell(rows.get(t), k) for t in T_ALL) + f" | {gain} | {mono} | {beats} |")
    return "\n".join(lines)


def table_calibration(summary: dict, dataset: str) -> str:
    lines = []
    for name, e in summary["runs"].items():
        cal = e.get("calibration")
        if e["dataset"] != dataset or not cal:
            continue
        key = cal["parameter"]
        ts = sorted({int(t) for r in cal["sweep"] for t in r["accuracy"]})
        data = cal["data"]
        k = _digits(data["examples"])
        lines.append(f"**`{name}`** — {key} sweep{' with BN re-estimated for every value' if cal['recalibrate_bn'] else ''}"
                     f", training images {data['start']}..{data['stop'] - 1}"
                     f"; deterministic {_pct(cal['deterministic_accuracy'], k)} %; chosen {key} = {cal['chosen']:g}\n")
        lines.append(f"| {key} | " + " | ".join(f"T={t}" for t in ts) + " |")
        lines.append("|---|" + "---|" * len(ts))
        for r in cal["sweep"]:
            mark = " ←" if r[key] == cal["chosen"] else ""
            lines.append(f"| {r[key]:g}{mark} | " + " | ".join(_pct(r["accuracy"].get(str(t)), k) for t in ts) + " |")
        if cal["at_edge"]:
            lines.append(f"\nThe chosen {key} is at the edge of the sweep.")
        if cal["per_layer"]:
            lines.append(f"\nThen one {key} per layer (coordinate-wise, same criterion): "
                         + ", ".join(f"layer {n}: {v:g}" for n, v in cal["per_layer"].items()) + ".")
        lines.append("")
    return "\n".join(lines).rstrip()


def table_layer(summary: dict) -> str:
    lines = []
    for name, e in summary["runs"].items():
        if "layer" not in e or "network" not in e:
            continue
        net = {r["samples"]: r for r in e["network"]["results"]}
        lay = {r["samples"]: r for r in e["layer"]["results"]}
        ts = sorted(set(net) | set(lay))
        lines.append(f"**`{name}`** ({e['conversion']}; {e['network']['examples']} test images)\n")
        lines.append("| aggregation | " + " | ".join(f"T={t}" for t in ts) + " |")
        lines.append("|---|" + "---|" * len(ts))
        k = _digits(e["network"]["examples"])
        lines.append("| network (p-DNN) | " + " | ".join(_cell(net.get(t), k) for t in ts) + " |")
        lines.append("| layer (bit stream) | " + " | ".join(_cell(lay.get(t), k) for t in ts) + " |")
        lines.append("| network − layer (pts) | " + " | ".join(
            _pct(net[t]["accuracy_mean"] - lay[t]["accuracy_mean"], k, True) if t in net and t in lay else "–"
            for t in ts) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def figure(summary: dict, dataset: str, out: Path, title: str, zoom: bool = False) -> None:
    plt = pyplot()

    entries = [(n, e) for n, e in summary["runs"].items() if e["dataset"] == dataset and "network" in e]
    dets = {}
    for _, e in entries:
        if e["deterministic_source"] is not None:
            dets[Path(e["source"]).name] = e["deterministic_source"]
    panels = 2 if zoom else 1
    fig, axes = plt.subplots(1, panels, figsize=(8 * panels if panels == 1 else 14, 7.0), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax in axes[0]:
        for i, (name, e) in enumerate(entries):
            rows = e["network"]["results"]
            trained = "convert" not in e or not e["convert"]
            ax.errorbar([r["samples"] for r in rows], [100 * r["accuracy_mean"] for r in rows],
                        yerr=[100 * r["accuracy_std"] for r in rows], marker="s" if trained else "o", ms=4, capsize=3,
                        color=cmap(i % 20), linestyle="--" if trained else "-",
                        label=f"{name.removeprefix(dataset + '-')} ({e['conversion']})")
        for j, (src, acc) in enumerate(sorted(dets.items())):
            ax.axhline(100 * acc, color="k", linestyle=[":", "--", "-."][j % 3], linewidth=1,
                       label=f"deterministic {src}: {100 * acc:.2f}%")
        ax.set_xscale("log")
        ax.set_xticks(T_ALL, [str(t) for t in T_ALL])
        ax.set_xlabel("samples T (network aggregation)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_title(title)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7)
    if zoom and dets:
        lo, hi = 100 * min(dets.values()), 100 * max(dets.values())
        axes[0][1].set_ylim(lo - 1.2, hi + 1.0)
        axes[0][1].set_title("zoom near the deterministic accuracies")
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    save_figure(fig, out, dpi=110)


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n).*?(<!-- END {re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        print(f"README has no block {name}; not written", file=sys.stderr)
        return text
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def summary_cmd(args) -> None:
    root = Path(args.root)
    summary, energy = collect(root)
    summary["energy"] = energy_table_data(summary, energy)
    examples = {}
    for e in summary["runs"].values():
        if "network" in e:
            examples.setdefault(e["dataset"], e["network"]["examples"])
    summary["rules"] = rules(examples)
    write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    blocks = {"rules": summary["rules"]}
    for dataset, pretty in (("cifar10", "CIFAR-10"), ("fashion-mnist", "Fashion-MNIST")):
        blocks[f"{dataset}-accuracy"] = table_accuracy(summary, dataset)
        blocks[f"{dataset}-calibration"] = table_calibration(summary, dataset)
        if any(e["dataset"] == dataset and "network" in e for e in summary["runs"].values()):
            figure(summary, dataset, root / f"{dataset}-accuracy-vs-T.png",
                   f"{pretty}: deterministic networks sampled without retraining", zoom=True)
    blocks["layer"] = table_layer(summary)
    figure_layer(summary, root / "network-vs-layer.png")
    blocks["energy"] = energy_table(summary)
    readme = root / "README.md"
    if readme.is_file():
        text = readme.read_text()
        for name, body in blocks.items():
            text = replace_block(text, name, body)
        write_text(readme, text)
    else:
        print("\n\n".join(f"## {k}\n{v}" for k, v in blocks.items()))


# energy: J per inference from `pdnn energy`, files energy/<run>-<aggregate>-<reuse>.json
REUSES = ("per-eo", "per-inference")


def _energy_by_t(doc) -> dict[int, float]:
    return {c["samples"]: c["total_j"] for c in doc["configs"]} if doc else {}


def _best_within(acc: dict[int, float], en: dict[int, float], budget: float):
    within = [t for t in acc if t in en and en[t] <= budget * (1 + 1e-9)]
    return max(within) if within else None  # spend the budget: the most samples it affords


def energy_table_data(summary: dict, energy: dict) -> dict:
    """Per run with both aggregations evaluated: µJ per inference per T for each aggregation and
    weight-fetch setting, and at equal energy (budget = the network aggregation's energy at each
    T) the accuracy of each aggregation at the largest measured T whose energy fits the budget."""
    out = {}
    for name, e in summary["runs"].items():
        if "layer" not in e or "network" not in e:
            continue
        acc = {agg: {r["samples"]: r["accuracy_mean"] for r in e[agg]["results"]} for agg in ("network", "layer")}
        entry = {"accuracy": acc, "energy_j": {}, "equal_energy": {}}
        for reuse in REUSES:
            en = {agg: _energy_by_t(energy.get(f"{name}-{agg}-{reuse}")) for agg in ("network", "layer")}
            if not en["network"] or not en["layer"]:
                continue
            entry["energy_j"][reuse] = en
            rows = []
            for t in sorted(acc["network"]):
                if t not in en["network"]:
                    continue
                budget = en["network"][t]
                bn, bl = _best_within(acc["network"], en["network"], budget), _best_within(acc["layer"], en["layer"], budget)
                rows.append({"budget_j": budget, "budget_of": f"network T={t}",
                             "network_T": bn, "network_accuracy": acc["network"].get(bn),
                             "layer_T": bl, "layer_accuracy": acc["layer"].get(bl)})
            entry["equal_energy"][reuse] = rows
        if entry["energy_j"]:
            out[name] = entry
    return out


def energy_table(summary: dict) -> str:
    data = summary.get("energy") or {}
    if not data:
        return "(no energy results: `pdnn energy` was not available or no run has both aggregations evaluated)"
    lines = []
    for name, d in data.items():
        k = _digits(summary["runs"][name]["network"]["examples"])
        reuses = [r for r in REUSES if r in d["energy_j"]]
        picks = {r: [(x["network_T"], x["layer_T"]) for x in d["equal_energy"][r]] for r in reuses}
        same = all(picks[r] == picks[reuses[0]] for r in reuses)
        eq_cols = [reuses[0]] if same else reuses
        eq_label = {r: ("both settings" if same and len(reuses) > 1 else r) for r in eq_cols}
        lines.append(f"**`{name}`** — µJ per inference; accuracy (%) of each aggregation at equal energy: within the "
                     "energy of network aggregation at T, at the most samples that energy affords (T in brackets)\n")
        head = "| T |" + "".join(f" µJ network ({r}) | µJ layer ({r}) |" for r in reuses) \
            + "".join(f" equal energy ({eq_label[r]}): network | layer |" for r in eq_cols)
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        for t in sorted(d["accuracy"]["network"]):
            cells = [str(t)]
            for r in reuses:
                en = d["energy_j"][r]
                cells += [f"{1e6 * en['network'][t]:.4g}" if t in en["network"] else "–",
                          f"{1e6 * en['layer'][t]:.4g}" if t in en["layer"] and t in d["accuracy"]["layer"] else "–"]
            for r in eq_cols:
                row = next((x for x in d["equal_energy"][r] if x["budget_of"] == f"network T={t}"), None)
                for agg in ("network", "layer"):
                    tt = row and row[f"{agg}_T"]
                    cells.append(f"{_pct(row[f'{agg}_accuracy'], k)} (T={tt})" if tt else "–")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def figure_layer(summary: dict, out: Path) -> None:
    plt = pyplot()

    data = summary.get("energy") or {}
    names = [n for n, e in summary["runs"].items() if "layer" in e and "network" in e]
    datasets = list(dict.fromkeys(summary["runs"][n]["dataset"] for n in names))
    if not names:
        return
    fig, axes = plt.subplots(len(datasets), 2, figsize=(12, 4.3 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        ax_t, ax_e = axes[row]
        for i, name in enumerate(n for n in names if summary["runs"][n]["dataset"] == dataset):
            e = summary["runs"][name]
            en = data.get(name, {}).get("energy_j", {}).get("per-eo")
            for agg, style in (("network", "-"), ("layer", "--")):
                rows = e[agg]["results"]
                ts = [r["samples"] for r in rows]
                accs = [100 * r["accuracy_mean"] for r in rows]
                label = f"{name.removeprefix(dataset + '-')} {agg}"
                ax_t.errorbar(ts, accs, yerr=[100 * r["accuracy_std"] for r in rows], marker="o", ms=3, capsize=2,
                              linestyle=style, color=f"C{i}", label=label)
                if en and en.get(agg):
                    pts = [(1e6 * en[agg][t], a) for t, a in zip(ts, accs) if t in en[agg]]
                    ax_e.plot(*zip(*pts), marker="o", ms=3, linestyle=style, color=f"C{i}", label=label)
        ax_t.set_xscale("log")
        ax_t.set_xticks(T_ALL, [str(t) for t in T_ALL])
        ax_t.set_xlabel("samples T")
        ax_t.set_ylabel(f"{dataset} test accuracy (%)")
        ax_t.set_title(f"{dataset}: network (p-DNN, solid) vs layer (bit stream, dashed)")
        ax_e.set_xlabel("µJ per inference (pdnn energy, weights fetched per EO)")
        ax_e.set_title(f"{dataset}: the same points against energy")
        for ax in (ax_t, ax_e):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("deterministic")
    d.add_argument("run")
    d.add_argument("--out", required=True)
    d.add_argument("--subset", type=example_count)
    d.set_defaults(fn=deterministic)
    s = sub.add_parser("summary")
    s.add_argument("--root", default="results/noise")
    s.set_defaults(fn=summary_cmd)
    args = p.parse_args(argv)
    if args.cmd == "summary":
        root, readme = Path(args.root), Path(args.root) / "README.md"
        if not (root / "runs").is_dir():
            p.error(f"--root {args.root} holds no runs/ folder; expected the noise study's folder")
        if (root / "spec.json").is_file() or (readme.is_file() and not readme.read_text(errors="replace").startswith(
                NOISE_TITLE)):  # another study's summary.json would be replaced
            p.error(f"--root {args.root} is another study's folder (its spec.json or README.md); expected the noise "
                    "study's folder")
    try:
        if args.cmd == "deterministic":  # said before the evaluation, not after it; a run's record is refused
            output_file("--out", args.out, "json")
        args.fn(args)
    except (UsageError, RunError) as err:  # a missing run, a subset below 1, ...: one line
        p.error(str(err))


if __name__ == "__main__":
    run_script(main)
