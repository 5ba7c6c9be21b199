"""Tables, figures and the claim verdicts of a generation study (VAEs scored by fid-clf against T).

The rules of results/generation/README.md, written before any number was measured, for any set of
trained s and measured T (the study there: s = 1, 2, 4, 8 and T = 1, 2, 5, 10, 20, 50; ``pdnn
reproduce`` runs fewer). :func:`main` writes results/generation/ (``scripts/generation_summary.py
[DIR]``: DIR/summary.json, DIR/fid-vs-T.png, DIR/s-by-T.png, DIR/grids-*.png, DIR/tradeoff.json,
DIR/tradeoff.png and the results section of DIR/README.md). Missing runs are listed, not guessed.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..data import load as load_data
from ..energy.fid_tradeoff import fid_tradeoff_runs, plot_fid_tradeoff
from ..generation import check_generator, generate_at, image_grid, to_uint8
from ..io import pyplot, read_json, save_figure
from ..runs import load_model, write_json

BEGIN, END = "<!-- BEGIN results -->", "<!-- END results -->"
S_VALUES = (1, 2, 4, 8)
T_VALUES = (1, 2, 5, 10, 20, 50)
EXPECTED = ["tanh", *(f"pbit-s{s}" for s in S_VALUES), *(f"quant{k}" for k in range(1, 5)), "tanh-pbit", "tanh-lr1e-4"]
GRID_T = (1, 2, 10, 50)


def load(runs: Path, names=EXPECTED) -> dict[str, dict]:
    out = {}
    for name in names:
        path = runs / name / "fid-clf.json"
        if path.is_file():
            document = read_json(path)
            out[name] = {"document": document, "by_t": {r["samples"]: r for r in document["results"]}}
    return out


def cell(row: dict | None) -> str:
    return "" if row is None else f"{row['mean']:.2f} ± {row['std']:.2f}"


def nearest_on_log_scale(values, x: int) -> int:
    """The value closest to ``x`` on a log scale (the smaller one on a tie): the measured T that
    stands for "T = s", and the trained s that "matches" a test T."""
    return min(sorted(values), key=lambda v: abs(math.log(v) - math.log(x)))


def verdicts(scored: dict, s_values=S_VALUES, t_values=T_VALUES) -> list[dict]:
    """Claims 1-3 of results/generation/README.md for the p-bit decoders ``pbit-s{s}`` trained with
    ``s_values`` (``pbit-s1`` among them), measured at ``t_values``, and the 32-bit ``tanh``
    decoder; ``holds`` is None where a run it needs is missing."""
    def fid(name, t):
        row = scored.get(name, {}).get("by_t", {}).get(t)
        return None if row is None else (row["mean"], row["std"])

    results = []
    # claim 1: each sample-aware s beats s = 1 at "T = s" (the measured T closest to s) by more
    # than twice the larger repeat std, and the best of them closes half the gap to 32 bits
    aware = [s for s in s_values if s > 1]
    base_t1, baseline = fid("pbit-s1", 1), fid("tanh", 1)
    parts, missing, matched = [], [], []
    for s in aware:
        t = nearest_on_log_scale(t_values, s)
        a, b = fid(f"pbit-s{s}", t), fid("pbit-s1", t)
        if a is None or b is None:
            missing.append(f"s={s}")
            continue
        matched.append(a[0])
        parts.append({"s": s, "T": t, "sample_aware": a[0], "s1": b[0], "margin": 2 * max(a[1], b[1]),
                      "better": b[0] - a[0] > 2 * max(a[1], b[1])})
    closes = None
    if matched and base_t1 and baseline:
        gap = base_t1[0] - baseline[0]
        # no gap to close when s = 1 at T = 1 is already at or below the 32-bit decoder: (b) is then
        # not applicable and the verdict rests on (a), as the report says
        closes = "n/a: no gap" if gap <= 0 else (min(matched) - baseline[0]) <= gap / 2
    holds = None if missing or not aware or closes is None else (
        all(p["better"] for p in parts) and closes is not False)
    results.append({"claim": 1, "comparisons": parts, "best_sample_aware": min(matched) if matched else None,
                    "s1_at_T1": base_t1 and base_t1[0], "float32": baseline and baseline[0],
                    "closes_half_the_gap": closes, "missing": missing, "holds": holds})
    # claim 2: the lowest fid-clf at T belongs to the trained s closest to T, for two thirds of the T
    rows, missing = [], []
    for t in t_values:
        values = {s: fid(f"pbit-s{s}", t) for s in s_values}
        if any(v is None for v in values.values()):
            missing.append(f"T={t}")
            continue
        best = min(values, key=lambda s: values[s][0])
        match = nearest_on_log_scale(s_values, t)
        rows.append({"T": t, "best_s": best, "matching_s": match, "match": best == match})
    holds = None if missing else 3 * sum(r["match"] for r in rows) >= 2 * len(rows)
    results.append({"claim": 2, "rows": rows, "missing": missing, "holds": holds})
    # claim 3: no rise from one measured T to the next beyond twice the larger repeat std, and the
    # largest T below T = 1, for every p-bit decoder
    rows, missing = [], []
    for s in s_values:
        series = [fid(f"pbit-s{s}", t) for t in t_values]
        if any(v is None for v in series):
            missing.append(f"s={s}")
            continue
        rises = [(t_values[i], t_values[i + 1]) for i in range(len(series) - 1)
                 if series[i + 1][0] - series[i][0] > 2 * max(series[i][1], series[i + 1][1])]
        rows.append({"s": s, "rises": rises, "T_first": t_values[0], "first": series[0][0],
                     "T_last": t_values[-1], "last": series[-1][0],
                     "steady": not rises and series[-1][0] < series[0][0]})
    holds = None if missing else all(r["steady"] for r in rows)
    results.append({"claim": 3, "rows": rows, "missing": missing, "holds": holds})
    return results


def plot_fid_vs_t(scored: dict, out: Path, title: str, s_values=S_VALUES, t_values=T_VALUES) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in [*(f"pbit-s{s}" for s in s_values), "tanh-pbit"]:
        if name in scored:
            rows = [scored[name]["by_t"][t] for t in sorted(scored[name]["by_t"])]
            ax.errorbar([r["samples"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                        marker="o", ms=3, capsize=2, label=name if name != "tanh-pbit" else "tanh → p-bit (converted)")
    styles = {"tanh": ("k", "-"), "quant1": ("tab:red", ":"), "quant2": ("tab:orange", ":"),
              "quant3": ("tab:olive", ":"), "quant4": ("tab:gray", ":")}
    for name, (color, style) in styles.items():
        if name in scored:
            value = scored[name]["by_t"][1]["mean"]
            ax.axhline(value, color=color, linestyle=style, linewidth=1,
                       label=f"{'32-bit tanh' if name == 'tanh' else name.replace('quant', '') + '-bit'} decoder")
    ax.set_xscale("log")
    ax.set_xticks(t_values, [str(t) for t in t_values])
    ax.set_xlabel("decoder samples per image T")
    ax.set_ylabel("fid-clf (lower is better)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4)
    fig.tight_layout()
    save_figure(fig, out, dpi=150)


def plot_matrix(scored: dict, out: Path) -> list[list]:
    plt = pyplot()
    matrix = [[scored.get(f"pbit-s{s}", {}).get("by_t", {}).get(t, {}).get("mean", math.nan) for t in T_VALUES]
              for s in S_VALUES]
    fig, ax = plt.subplots(figsize=(6, 3))
    image = ax.imshow(matrix, cmap="viridis_r", aspect="auto")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(T_VALUES)), [str(t) for t in T_VALUES])
    ax.set_yticks(range(len(S_VALUES)), [str(s) for s in S_VALUES])
    ax.set_xlabel("decoder samples T averaged per image")
    ax.set_ylabel("training samples s")
    fig.colorbar(image, label="fid-clf")
    fig.tight_layout()
    save_figure(fig, out, dpi=150)
    return [[None if math.isnan(v) else v for v in row] for row in matrix]


def pixel_statistics(images: torch.Tensor) -> dict:
    """What separates averaged from single-sample images at a glance: brightness, contrast and the
    share of near-black pixels (Fashion-MNIST backgrounds are black)."""
    x = images.float()
    return {"mean": float(x.mean()), "pixel_std": float(x.std()), "near_black": float((x < 0.1).float().mean())}


def plot_grids(runs: Path, names: list[str], out_dir: Path, stats: dict, grid_t=GRID_T) -> list[str]:
    """One figure per run: the same 36 latents at each T of ``grid_t``; fills ``stats``."""
    plt = pyplot()
    written = []
    for name in names:
        vae = check_generator(load_model(runs / name)[0], name)
        images = generate_at(vae, list(grid_t), n=36, seed=0)
        stats[name] = {t: pixel_statistics(images[t]) for t in grid_t}
        fig, axes = plt.subplots(1, len(grid_t), figsize=(3 * len(grid_t), 3.2), squeeze=False)
        for ax, t in zip(axes[0], grid_t):
            grid = image_grid(to_uint8(images[t]), nrow=6)
            ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{name}, T={t}", fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / f"grids-{name}.png"
        save_figure(fig, path, dpi=80)
        written.append(path.name)
    return written


def num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def mark(holds) -> str:
    return {True: "**holds**", False: "**does not hold**", None: "**not decided** (runs missing)"}[holds]


def claim1_text(c1: dict) -> str:
    """Claim 1's evidence: each comparison at T = s, then part (b)."""
    text = "; ".join(f"s={p['s']}: {p['sample_aware']:.2f} vs s=1 {p['s1']:.2f} (a lead of more than "
                     f"{p['margin']:.2f} needed: twice the larger repeat std)" for p in c1["comparisons"])
    return (f"{text or 'n/a'}. (a) {'met' if all(p['better'] for p in c1['comparisons']) else 'not met'}. (b): best "
            f"sample-aware at T = s {num(c1['best_sample_aware'])}, s = 1 at T = 1 {num(c1['s1_at_T1'])}, 32-bit "
            f"{num(c1['float32'])}; closes half the gap: {c1['closes_half_the_gap']}")


def claim2_text(c2: dict) -> str:
    """Claim 2's evidence: per T, the best trained s and the s nearest it."""
    return "; ".join(f"T={r['T']}: best s={r['best_s']} (matching {r['matching_s']})" for r in c2["rows"]) or "n/a"


def claim3_text(c3: dict) -> str:
    """Claim 3's evidence: per decoder, first and last T and where fid-clf rises."""
    return "; ".join(f"s={r['s']}: T={r['T_first']} {r['first']:.2f} → T={r['T_last']} {r['last']:.2f}, rises "
                     f"beyond the spread at {[tuple(pair) for pair in r['rises']] or 'none'}" for r in c3["rows"]) or "n/a"


def report(scored: dict, claims: list[dict], trade: dict | None, missing: list[str], grids: list[str],
           train: dict, stats: dict) -> str:
    lines = ["## Results", ""]
    if missing:
        lines += [f"Missing (not trained or not scored within the CPU time available): {', '.join(missing)}.", ""]
    lines += ["fid-clf (mean ± std over 2 repeats, 500 images each; deterministic decoders at T = 1):", "",
              "| run | held-out loss (nats/image, T=s) | " + " | ".join(f"T={t}" for t in T_VALUES) + " |",
              "|---" * (len(T_VALUES) + 2) + "|"]
    for name in EXPECTED:
        if name in scored:
            by_t = scored[name]["by_t"]
            loss = train.get(name)
            lines.append(f"| {name} | {'' if loss is None else f'{loss:.1f}'} | "
                         + " | ".join(cell(by_t.get(t)) for t in T_VALUES) + " |")
    lines += ["", "![fid-clf against T](fid-vs-T.png)", "", "The s × T matrix (p-bit decoders):", "",
              "![s by T](s-by-T.png)", ""]
    c1, c2, c3 = claims
    lines += ["### The claims", ""]
    text1 = claim1_text(c1)
    lines.append(f"1. Sample-aware training improves quality, approaching the 32-bit baseline: {mark(c1['holds'])}. "
                 f"At T = s (T = 5 for s = 4 and T = 10 for s = 8, the measured T closest to s): {text1}.")
    lines.append(f"2. Best when training s matches test T: {mark(c2['holds'])}. {claim2_text(c2)}.")
    text3 = claim3_text(c3)
    lines.append(f"3. Quality improves steadily with T: {mark(c3['holds'])}. {text3}.")
    if trade:
        lines += ["", "### Energy per generated image against fid-clf", "",
                  f"Decoder only (the encoder is not used to generate), default technology settings "
                  f"({trade['settings']['technology']}, weights and activations in {trade['settings']['weight_memory']}), "
                  f"latent read as 32-bit floats. Reference: "
                  f"{trade['reference']['label']} ({trade['reference']['basis']}); cheapest point within "
                  f"{trade['tolerance']:g} fid-clf of it: {trade['best']['label']}, "
                  f"{trade['best']['energy_j'] * 1e6:.3g} µJ against {trade['reference']['energy_j'] * 1e6:.3g} µJ.",
                  "", "| point | energy µJ | fid-clf | Pareto |", "|---|---|---|---|"]
        for p in sorted(trade["points"], key=lambda p: p["energy_j"]):
            lines.append(f"| {p['label']} | {p['energy_j'] * 1e6:.3g} | {p['fid']:.2f} ± {p['fid_std']:.2f} | "
                         f"{'*' if p['pareto'] else ''} |")
        lines += ["", "![energy against fid-clf](tradeoff.png)"]
    if grids:
        lines += ["", "### Samples (the same 36 latents at T = 1, 2, 10, 50)", ""]
        lines += [f"![{g}]({g})" for g in grids]
        lines += ["", "Pixel statistics of those 36 images (intensities in [0, 1]):", "",
                  "| images | T | mean | pixel std | share < 0.1 |", "|---|---|---|---|---|"]
        for name, by_t in stats.items():
            for t, st in by_t.items():
                lines.append(f"| {name} | {t} | {st['mean']:.3f} | {st['pixel_std']:.3f} | {st['near_black']:.3f} |")
    return "\n".join(lines)


def main(out: Path) -> None:
    runs = out / "runs"
    scored = load(runs)
    missing = [n for n in EXPECTED if n not in scored]
    claims = verdicts(scored)
    train = {}
    for name in scored:
        metrics = runs / name / "metrics.json"
        if metrics.is_file():
            train[name] = read_json(metrics)[-1]["test_loss"]
    plot_fid_vs_t(scored, out / "fid-vs-T.png",
                  "Fashion-MNIST VAE: fid-clf against T (2000 images, 3 epochs; 500 images per distance)")
    matrix = plot_matrix(scored, out / "s-by-T.png")
    stats: dict = {}
    grids = plot_grids(runs, [n for n in [*(f"pbit-s{s}" for s in S_VALUES), "tanh-pbit"] if n in scored], out, stats)
    real = load_data("fashion-mnist", progress=False).test_x[:500].float() / 255
    stats["real (first 500 test images)"] = {"-": pixel_statistics(real)}
    trade = None
    if scored:
        trade = fid_tradeoff_runs([str(runs / n) for n in scored], tolerance=1.0)
        write_json(out / "tradeoff.json", trade)
        plot_fid_tradeoff(trade, out / "tradeoff.png", "Fashion-MNIST VAE decoders: fid-clf against energy per image")
    write_json(out / "summary.json", {
        "metric": "fid-clf", "missing": missing, "s_by_T": {"s": list(S_VALUES), "T": list(T_VALUES), "fid_clf": matrix},
        "runs": {n: {"held_out_loss": train.get(n), "results": scored[n]["document"]["results"]} for n in scored},
        "claims": claims, "pixel_statistics": {n: {str(t): v for t, v in by_t.items()} for n, by_t in stats.items()},
    })
    readme = out / "README.md"
    text = readme.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    readme.write_text(head + BEGIN + "\n" + report(scored, claims, trade, missing, grids, train, stats) + "\n" + END + tail)
