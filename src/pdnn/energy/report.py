"""Energy reports for people: plain-text tables and figures (matplotlib, Agg backend).

A ratio whose denominator is zero (a technology table whose energies are all zero for a network)
is shown as ``n/a``, never divided.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..io import pyplot, save_figure
from ..labels import figure_text
from .account import LAYER_STEP_NOTE, TERMS

_TERM_LABELS = {"weight_memory_j": "weight mem", "activation_memory_j": "act. mem",
                "synapse_j": "synapse", "neuron_j": "neuron"}


def _uj(joules: float) -> str:
    return f"{joules * 1e6:.4g}"


def _share(config: dict, term: str) -> float | None:
    """Percent of the configuration's energy spent in ``term``."""
    return 100 * config["terms"][term] / config["total_j"] if config["total_j"] else None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _settings_line(report: dict) -> str:
    s = report["settings"]
    return (f"technology {s['technology']}; "
            f"weights in {s['weight_memory']} ({s['weight_memory_pj_per_bit']:.4g} pJ/bit), "
            f"activations in {s['activation_memory']} ({s['activation_memory_pj_per_bit']:.4g} pJ/bit); "
            f"reuse {s['reuse']}; {s['aggregate']} aggregation; "
            + ("each layer once" if s["aggregate"] == "layer" else
               f"prefix {'shared' if s['shared_prefix'] else 'repeated per sample'}"
               + (" (network aggregation)" if s["aggregate"] != "network" else "")))


def format_report(report: dict, layers: bool | None = None) -> str:
    """Energy per inference of every configuration (µJ, share of each term, ratio to the
    reference, marginal cost of one more sample) and, if ``layers`` (default: when the report
    holds one network), a per-layer table in µJ with one column per T."""
    ref = report["reference"]
    lines = [_settings_line(report), f"reference: {ref['description']}: {_uj(ref['total_j'])} µJ", ""]
    width = max([len(c.get("network", "")) for c in report["configs"]] + [7])
    step = "ΔE(T→T+1)/E" + ("†" if LAYER_STEP_NOTE in report.get("notes", []) else "")
    lines.append(f"{'network':<{width}}  {'T':>4}  {'total µJ':>10}  "
                 + "  ".join(f"{_TERM_LABELS[k]:>10}" for k in TERMS) + f"  {'x ref':>7}  {step:>12}")
    for c in report["configs"]:
        shares = "  ".join(f"{_fmt(_share(c, k), '.1f', '%'):>10}" for k in TERMS)
        lines.append(f"{c.get('network', ''):<{width}}  {c['samples']:>4}  {_uj(c['total_j']):>10}  {shares}  "
                     f"{_fmt(c['ratio_to_reference'], '.4f'):>7}  "
                     f"{_fmt(c['next_sample_increase_pct'], '.3f', '%'):>12}")
    networks = list(dict.fromkeys(c.get("network", "") for c in report["configs"]))
    if layers if layers is not None else len(networks) == 1:
        for name in networks:
            group = [c for c in report["configs"] if c.get("network", "") == name]
            # under layer aggregation b_a grows with T (the averaged bits): one value per T, as 1/2/3
            b_as = [("/".join(dict.fromkeys(str(c["layers"][i]["activation_bits"]) for c in group))
                     + ("" if layer["activation_bits_known"] else "?")) for i, layer in enumerate(group[0]["layers"])]
            width = max([4, *map(len, b_as)])
            named = max([12, *(len(layer["name"]) for layer in group[0]["layers"])])  # never cut: names stay apart
            typed = max([12, *(len(layer["module_type"]) for layer in group[0]["layers"])])
            lines += ["", f"per layer{' of ' + name if name else ''} (µJ per inference):",
                      f"{'layer':<{named}} {'type':<{typed}} {'n':>6} {'EOs':>8} {'b_w':>4} {'b_a':>{width}}  "
                      + "  ".join(f"{'T=' + str(c['samples']):>9}" for c in group)]
            for i, layer in enumerate(group[0]["layers"]):
                cells = "  ".join(f"{_uj(c['layers'][i]['total_j']):>9}" for c in group)
                lines.append(f"{layer['name']:<{named}} {layer['module_type']:<{typed}} {layer['fan_in']:>6} "
                             f"{layer['eos']:>8} {layer['weight_bits']:>4} {b_as[i]:>{width}}  {cells}")
    if report.get("unresolved"):
        lines.append(f"input precision not determined (priced at 32 bits): {', '.join(report['unresolved'])}")
    for note in report.get("notes", []):
        lines.append(f"{'†' if note == LAYER_STEP_NOTE else 'note:'} {note}")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The configuration table of :func:`format_report` as Markdown (for docs)."""
    mark = "†" if LAYER_STEP_NOTE in report.get("notes", []) else ""  # as format_report marks it
    lines = [f"*{_settings_line(report)}; reference ({report['reference']['description']}): "
             f"{_uj(report['reference']['total_j'])} µJ*", "",
             "| network | T | µJ / inference | weight mem % | act. mem % | synapse % | neuron % | × ref "
             f"| ΔE(T→T+1)/E %{mark} |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for c in report["configs"]:
        shares = " | ".join(_fmt(_share(c, k), ".1f") for k in TERMS)
        lines.append(f"| {c.get('network', '')} | {c['samples']} | {_uj(c['total_j'])} | {shares} | "
                     f"{_fmt(c['ratio_to_reference'], '.3f')} | {_fmt(c['next_sample_increase_pct'], '.3f')} |")
    if mark:
        lines += ["", f"*† ΔE(T→T+1)/E under {LAYER_STEP_NOTE}.*"]
    return "\n".join(lines)


def plot_energy(report: dict, out: str | Path, title: str | None = None) -> Path:
    """Stacked bars of the energy per inference of every configuration: by term (top) and, when
    all configurations share their layers, by layer (bottom); the reference as a dashed line."""
    plt = pyplot()
    configs = report["configs"]
    labels = [figure_text(c.get("label") or f"T={c['samples']}") for c in configs]
    names = [layer["name"] for layer in configs[0]["layers"]]
    same_layers = all([layer["name"] for layer in c["layers"]] == names for c in configs)
    panels = [([(_TERM_LABELS[k], k) for k in TERMS], lambda c, key: c["terms"][key], "by term")]
    if same_layers:
        layer_names = [f"{layer['name']} ({layer['module_type']})" for layer in configs[0]["layers"]]
        panels.append(([(name, i) for i, name in enumerate(layer_names)],
                       lambda c, i: c["layers"][i]["total_j"], "by layer"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(7.0, 0.6 * len(configs) + 4), 3.8 * len(panels)),
                             squeeze=False)
    ref = report["reference"]["total_j"] * 1e6
    for ax, (groups, getter, panel_title) in zip(axes[:, 0], panels):
        bottom = [0.0] * len(configs)
        for name, key in groups:
            values = [getter(c, key) * 1e6 for c in configs]
            ax.bar(range(len(configs)), values, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.axhline(ref, color="k", linestyle="--", linewidth=1, label="reference")
        ax.set_xticks(range(len(configs)), labels, rotation=45 if len(configs) > 6 else 0, ha="right"
                      if len(configs) > 6 else "center", fontsize=7)
        ax.set_ylabel("energy per inference (µJ)")
        ax.set_title(panel_title)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(True, axis="y", alpha=0.3)
    s = report["settings"]
    fig.suptitle(figure_text(title) if title else f"{s['technology']}: weights {s['weight_memory']}, activations "
                 f"{s['activation_memory']}, reuse {s['reuse']}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_tradeoff(result: dict, out: str | Path, title: str | None = None) -> Path:
    """Accuracy versus energy per inference (log axis), the Pareto front as a step line, the
    reference and the chosen minimum-energy configuration highlighted."""
    plt = pyplot()
    series: dict[str, list[dict]] = {}
    for p in result["points"]:  # (points of the bare tradeoff() have no series nor samples)
        series.setdefault(p.get("series", ""), []).append(p)
    many = len(series) > 12
    fig, ax = plt.subplots(figsize=(12, 6.5) if many else (9, 4.8), layout="constrained")
    colors = plt.get_cmap("tab20" if len(series) > 10 else "tab10")
    for k, (name, points) in enumerate(series.items()):
        ax.plot([p["energy_j"] * 1e6 for p in points], [100 * p["accuracy"] for p in points],
                marker=_series_marker(k // colors.N, len(points) > 1), ms=4 if len(points) > 1 else 6,
                linestyle=("-", "--", ":")[k // colors.N % 3] if len(points) > 1 else "none", linewidth=0.8,
                label=figure_text(name), alpha=0.85, color=colors(k % colors.N))
        for p in (p for p in points if "samples" in p):
            ax.annotate(f"T={p['samples']}", (p["energy_j"] * 1e6, 100 * p["accuracy"]), fontsize=6,
                        xytext=(2, 2), textcoords="offset points")
    front = [result["points"][i] for i in result["pareto_front"]]
    ax.step([p["energy_j"] * 1e6 for p in front], [100 * p["accuracy"] for p in front], where="post",
            color="k", linewidth=1.5, label="Pareto front")
    if result.get("reference"):
        r = result["reference"]
        points = 100 * result["tolerance"]
        ax.axhline(100 * (r["accuracy"] - result["tolerance"]), color="gray", linestyle=":", linewidth=1,
                   label=f"reference − {points:g} point{'' if points == 1 else 's'}\n({r['basis']})")
    if result.get("best"):
        b = result["best"]
        ax.plot([b["energy_j"] * 1e6], [100 * b["accuracy"]], "*", ms=14, color="gold", markeredgecolor="k",
                label="min energy within tolerance")
    log = all(p["energy_j"] > 0 for p in result["points"])  # a zero energy has no place on a log axis
    if log:
        ax.set_xscale("log")
        energies = [p["energy_j"] for p in result["points"]]
        wide = max(energies) >= 10 * min(energies)  # over a decade, label only the minor ticks 2 and 5

        def label(v, _):
            return f"{v:g}" if not wide or round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""

        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(plt.FuncFormatter(label))
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"energy per inference (µJ{', log scale' if log else ''})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(figure_text(title) if title else _tradeoff_title(result.get("settings")), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    # beside the axes, never over the points (low accuracy at high energy lies where a legend inside would)
    fig.legend(fontsize=7, loc="outside right upper", ncol=2 if len(series) > 24 else 1)
    return save_figure(fig, out)


def _series_marker(block: int, line: bool) -> str:
    """The marker of a series in the ``block``-th round of the colour map: the colours repeat after
    10 or 20 series, so each round has its own marker (and line style), and no two entries of the
    legend look alike."""
    return ("o" if line else "s", "^", "D", "v", "P", "X")[block % 6]


def _tradeoff_title(settings: dict | None) -> str:
    """What the energies were priced with (DRAM and SRAM figures differ ~100x and look alike)."""
    if not settings:
        return "accuracy vs energy"
    return (f"accuracy vs energy\nweights in {settings.get('weight_memory', '?')}, activations in "
            f"{settings.get('activation_memory', '?')} ({settings.get('technology', '?')})")
