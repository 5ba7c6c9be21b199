"""The FPGA datapath (the paper's hardware section): accumulate-only (AC) against multiply-accumulate
(MAC) synapse units in LUTs, the random-number generators' share of a core, bit-exact
co-simulation of the RTL against the fixed-point reference, and switching activity beside the
energy model -- on a small p-bit MLP trained here and exported by :mod:`pdnn.hw.export`; the
measurements are :mod:`pdnn.experiments.hardware_study`."""
from __future__ import annotations

import math
from pathlib import Path

from ...hw import export, fixed
from ...io import pyplot, read_json, save_figure
from ...models import ModelConfig
from ...train import TrainConfig
from .. import hardware_study as hs
from ..plan import Claim, Context, Figure, Section, Step, not_measured, pct
from ..runs import ensure_trained

NAME = "hardware"
TITLE = "FPGA datapath: AC against MAC units, generators, co-simulation, switching activity"
DATA = ("data:fashion-mnist",)

# The network: as results/hardware/run (784-64-64-10 p-bit MLP, s = 4, constant lr 1e-3, batch 64;
# 3 epochs there and at "small", the setting's epochs otherwise), exported with 8-bit weights and
# 8 random bits. ``core_width``: the hidden width the core is cut to for the generators' share
# (None: a neuron's slice in generic gates instead; a whole 64-neuron core took 56 minutes to
# synthesise, results/hardware/synth-core.json). ``cosim``: random vectors per generator arrangement
# for hidden layer 1 under Amaranth; ``core_sims``: (simulator, images, T) of whole-core runs.
SETTINGS = {
    "tiny": dict(width=8, epochs=1, subset=256, train_samples=2, weight_bits=(2,), fan_ins=(4,),
                 families=("ice40",), core_width=None, arrangements=(), cosim={"per-neuron": 20}, core_sims=(),
                 toggle_images=10, toggle_sampled=5, toggle_samples=2),
    "small": dict(width=64, epochs=3, subset=None, train_samples=4, weight_bits=(4, 8), fan_ins=(16, 64),
                  families=("xilinx",), core_width=8, arrangements=("per-neuron",), cosim={"per-neuron": 100},
                  core_sims=(("iverilog", 20, 2),), toggle_images=100, toggle_sampled=25, toggle_samples=10),
    "full": dict(width=64, epochs=100, subset=None, train_samples=4, weight_bits=(4, 8, 16), fan_ins=(16, 64, 256),
                 families=("xilinx", "ice40"), core_width=64, arrangements=("per-neuron", "shared"),
                 cosim={"per-neuron": 1000, "shared": 300},
                 core_sims=(("amaranth", 5, 2), ("iverilog", 200, 1), ("iverilog", 200, 10)),
                 toggle_images=200, toggle_sampled=50, toggle_samples=10),
}

# Rates on the reference machine (2 cores shared with other jobs), from results/hardware/*.json
# ("seconds") and single steps timed under nice: a unit synthesis 13-18 s (xilinx, b_w = 4, n = 16;
# 94 s for the pair at a load of 11; ice40 with b_w = 2, n = 4, the tiny pair: 2.5-3 s each); a whole core ~300 s whether cut to 8 or 16 neurons per hidden
# layer (layer 0's 784 inputs dominate: 307 s and 265 s; the 64-neuron core 3375 s, synth-core.json) and its
# generators 30-40 s; Amaranth's layer simulation ~1.05 s per 64x64 vector; Icarus 18 s for 5 images
# of the 64-neuron core at T = 2, 12 s of it turning the core into Verilog (1025 s for 200 images,
# T = 1 or 10 alike, at a heavier load), Amaranth 235 s for 5 images; the toggle measurement
# 69 s for 200 images (its Yosys runs ~1.5 s each).
UNIT_S = 15.0
CORE_S = {8: 300.0, 16: 300.0, 64: 3400.0}
GENERATORS_S = 40.0
LAYER_VECTOR_S = 1.05 / (64 * 64)
IVERILOG_IMAGE_S, AMARANTH_IMAGE_S = 2.0, 47.0
TOGGLE_S = 60 / (200 * 64)  # per image and hidden neuron
TRAIN_S = 1.3e-4  # the accuracy study's per-example-and-sample MLP rate (at width 64 overheads dominate)

PAPER_RATIO = 2.9
GENERATOR_LIMIT = 0.05
TOGGLE_TOLERANCE = 0.25

RULES = {
    "units": (f"AC needs fewer LUTs than MAC at every (b_w, n) of the grid (Yosys, the scale's first FPGA family; "
              "small and full: synth_xilinx -nodsp) and the "
              f"geometric mean of the MAC/AC ratios is within a factor 2 of the paper's {PAPER_RATIO}x "
              f"({PAPER_RATIO / 2:.2f}x to {PAPER_RATIO * 2:.1f}x): our units are single lanes, the paper's a "
              "whole design's MAC-related LUTs, so only the order of magnitude is comparable"),
    "generators": (f"negligible = under {pct(GENERATOR_LIMIT, 0)} of the whole core's LUTs and under "
                   f"{pct(GENERATOR_LIMIT, 0)} of its FFs, with one generator per neuron (the export's default); "
                   "results/hardware/README.md measured 13.5% / 53.6% there, which docs/hardware.md calls not "
                   "negligible"),
    "cosim": "every co-simulation run compares its output bits (layer) or decisions and class totals (core) "
             "with the numpy fixed-point reference and none differs",
    "toggles": (f"AC toggles less than MAC per synaptic operation, and the energy model's MAC/AC synapse ratio "
                f"is within ±{TOGGLE_TOLERANCE:.0%} of the measured toggle ratio (the paper: 2.3x predicted "
                "against 2.5x measured, 8% apart)"),
}
CLAIMS = {
    "units": ("AC units need fewer LUTs than MAC units (2.9x)", "2.9x fewer MAC-related LUTs"),
    "generators": ("the random-number generators' share of the core is negligible", "negligible"),
    "cosim": ("the RTL matches the fixed-point reference bit for bit", "– (our check)"),
    "toggles": ("switching activity (toggles) of MAC/AC matches the energy model's synapse ratio",
                "2.5x measured against 2.3x predicted"),
}


def settings(ctx: Context) -> dict:
    return SETTINGS[ctx.scale]


def paths(ctx: Context) -> dict[str, Path]:
    folder = ctx.dir(NAME)
    return {"run": folder / "run", "export": folder / "export", "core": folder / "synth-core.json",
            "cosim-layer": folder / "cosim-layer.json", "cosim-core": folder / "cosim-core.json",
            "toggles": folder / "toggles.json",
            "gate-parts": folder / "gate-parts.json", "figure": folder / "units.png",
            **{f"units-{f}": folder / f"synth-units-{f}.json" for f in ("xilinx", "ice40")}}


def train(ctx: Context) -> None:
    s = settings(ctx)
    model = ModelConfig(name="mlp", neuron="pbit", width=s["width"], input_shape=(1, 28, 28), num_classes=10)
    config = TrainConfig(samples=s["train_samples"], epochs=s["epochs"], batch_size=64, lr=1e-3, schedule="constant")
    ensure_trained(paths(ctx)["run"], model, "fashion-mnist", config, roots=ctx.roots, subset=s["subset"],
                   device=ctx.device, progress=False, label=NAME)


def export_run(ctx: Context) -> None:
    folder = paths(ctx)["export"]
    if (folder / fixed.SPEC).exists():  # written last by fixed.save
        return
    net, _ = export.from_run(paths(ctx)["run"], ctx.roots, weight_bits=8, random_bits=8)
    fixed.save(net, folder)


def _net(ctx: Context):
    return fixed.load(paths(ctx)["export"])


def _images(ctx: Context, count: int):
    return export.test_images("fashion-mnist", count, ctx.roots)


def steps(ctx: Context) -> list[Step]:
    """The plan; each timed step names its rate and work (see :meth:`Context.estimate`), so a
    finished step corrects the estimates of the others of its kind."""
    s, p = settings(ctx), paths(ctx)

    def step(key, rate, work, reference, run, needs=DATA, overhead=5.0):
        return Step(f"{NAME}/{key}", ctx.estimate(rate, work, reference, overhead), run, needs, rate, work)

    train_rate = TRAIN_S * s["width"] / 256 * (1 + 0.1 * (s["train_samples"] - 1))  # as the accuracy study's
    out = [step("train", f"train/mlp-{s['width']}/s{s['train_samples']}", s["epochs"] * (s["subset"] or 60000),
                train_rate, lambda: train(ctx)),
           Step(f"{NAME}/export", 5, lambda: export_run(ctx), DATA)]
    for family in s["families"]:
        out.append(step(f"units/{family}", f"hw/synth-unit/{family}", 2 * len(s["weight_bits"]) * len(s["fan_ins"]),
                        UNIT_S, lambda family=family: hs.synth_units(p[f"units-{family}"], family, s["weight_bits"],
                                                                     s["fan_ins"]), needs=(), overhead=0.0))
    out.append(Step(f"{NAME}/figure", 3, lambda: draw_units(ctx)))
    if not s["core_width"]:  # a whole core takes minutes to synthesise: a neuron's slice in generic gates
        out.append(Step(f"{NAME}/generators", 6, lambda: hs.gate_parts(p["gate-parts"], _net(ctx)), DATA))
    else:
        out.append(step("generators", f"hw/synth-core/w{s['core_width']}", len(s["arrangements"]),
                        CORE_S[s["core_width"]] + GENERATORS_S,
                        lambda: hs.synth_core(p["core"], hs.cut(_net(ctx), s["core_width"]),
                                              arrangements=s["arrangements"]), overhead=0.0))
    out.append(step("cosim/layer", "hw/sim-layer", sum(s["cosim"].values()) * s["width"] ** 2, LAYER_VECTOR_S,
                    lambda: hs.cosim_layer(p["cosim-layer"], _net(ctx), s["cosim"])))
    for simulator, images, samples in s["core_sims"]:
        out.append(step(f"cosim/core-{simulator}-T{samples}", f"hw/sim-core/{simulator}", images,
                        IVERILOG_IMAGE_S if simulator == "iverilog" else AMARANTH_IMAGE_S,
                        lambda simulator=simulator, images=images, samples=samples: hs.cosim_core(
                            p["cosim-core"], _net(ctx), *_images(ctx, images), simulator, samples),
                        DATA + (("tool:iverilog",) if simulator == "iverilog" else ()), overhead=15.0))
    out.append(step("toggles", "hw/toggles", s["toggle_images"] * s["width"], TOGGLE_S,
                    lambda: hs.switching_activity(p["toggles"], _net(ctx), _images(ctx, s["toggle_images"])[0],
                                                  s["toggle_sampled"], s["toggle_samples"]), overhead=8.0))
    return out


def draw_units(ctx: Context) -> None:
    """LUTs of the MAC and AC units against n: a colour per b_w, MAC solid and AC dashed, a marker
    per FPGA family."""
    plt = pyplot()
    p = paths(ctx)
    if not any(p[f"units-{family}"].exists() for family in ("xilinx", "ice40")):
        raise FileNotFoundError(f"no unit counts to draw: {p['units-xilinx']} is missing")
    fig, ax = plt.subplots(figsize=(7, 4))
    for family, marker in (("xilinx", "o"), ("ice40", "^")):
        if not p[f"units-{family}"].exists():
            continue
        rows = hs.unit_ratios(read_json(p[f"units-{family}"])["units"], family)
        for i, bw in enumerate(sorted({r["weight_bits"] for r in rows})):
            line = [r for r in rows if r["weight_bits"] == bw]
            n = [r["n"] for r in line]
            for unit, style in (("mac", "-"), ("ac", "--")):
                ax.plot(n, [r[unit] for r in line], style, marker=marker, color=f"C{i}",
                        label=f"{unit.upper()} b_w={bw} ({family})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("fan-in n")
    ax.set_ylabel("LUTs per unit")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    save_figure(fig, p["figure"])


# -- the rules, on the result files' contents ---------------------------------------------------------


def units_claim(units: dict, family: str = "xilinx") -> Claim:
    claim, paper = CLAIMS["units"]
    rows = hs.unit_ratios(units, family)
    if not rows:
        return not_measured(claim, paper, f"no {family} unit pair synthesised", RULES["units"])
    ratios = [r["ratio"] for r in rows]
    mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    ours = (f"MAC/AC LUTs {min(ratios):.2f}x to {max(ratios):.2f}x (geometric mean {mean:.2f}x) over "
            + ", ".join(f"b_w={r['weight_bits']} n={r['n']}" for r in rows))
    holds = min(ratios) > 1 and PAPER_RATIO / 2 <= mean <= PAPER_RATIO * 2
    return Claim.decide(claim, paper, ours, RULES["units"], holds)


def generators_claim(shares: dict, what: str, logic: str = "LUTs") -> Claim:
    """``shares``: :func:`hs.generator_shares` (whole cores, LUTs) or :func:`hs.gate_share`."""
    claim, paper = CLAIMS["generators"]
    if "per-neuron" not in shares:
        return not_measured(claim, paper, "the core with per-neuron generators was not synthesised", RULES["generators"])
    ours = "; ".join(f"{a} generators: {pct(v['logic'], 1)} of {logic}, {pct(v['ff'], 1)} of FFs"
                     for a, v in shares.items())
    share = shares["per-neuron"]
    return Claim.decide(claim, paper, f"{ours} ({what})", RULES["generators"],
                        share["logic"] < GENERATOR_LIMIT and share["ff"] < GENERATOR_LIMIT)


def cosim_claim(layer: dict, core: dict) -> Claim:
    claim, paper = CLAIMS["cosim"]
    if not layer and not core:
        return not_measured(claim, paper, "no co-simulation ran", RULES["cosim"])
    parts, different = [], 0
    for key, r in layer.items():
        parts.append(f"{key}: {r['bits_different']} of {r['bits_compared']} bits differ ({r['vectors']} vectors)")
        different += r["bits_different"]
    for key, r in core.items():
        parts.append(f"{key}: {r['decisions_different']} decisions, {r['totals_different']} totals differ "
                     f"({r['images']} images)")
        different += r["decisions_different"] + r["totals_different"]
    return Claim.decide(claim, paper, "; ".join(parts), RULES["cosim"], different == 0)


def toggles_claim(toggles: dict) -> Claim:
    claim, paper = CLAIMS["toggles"]
    measured = toggles["network"]["ratio_mac_over_ac"]
    model = toggles["energy_model"]["ratio_mac_over_ac"]
    ours = (f"toggles MAC/AC {measured:.2f}x (trained network, layer 1, n = {toggles['n']}, b_w = "
            f"{toggles['weight_bits']}); energy model {model:.2f}x ({toggles['energy_model']['table']})")
    holds = measured > 1 and abs(model - measured) <= TOGGLE_TOLERANCE * measured
    return Claim.decide(claim, paper, ours, RULES["toggles"], holds)


def section(ctx: Context) -> Section:
    s, p = settings(ctx), paths(ctx)
    images = f"the first {s['subset']}" if s["subset"] else "all"
    schedule = (f"{ctx.scale} scale: 784-{s['width']}-{s['width']}-10 p-bit MLP trained with s = {s['train_samples']}, "
                f"{s['epochs']} epoch(s) on {images} Fashion-MNIST training images, exported with 8-bit weights "
                "and 8 random bits")
    section = Section(TITLE, text=(
        f"{schedule}. Units: one MAC lane (8-bit activation times b_w-bit weight) against one AC lane "
        f"(±w), b_w in {list(s['weight_bits'])}, n in {list(s['fan_ins'])}, Yosys "
        f"{' and '.join(s['families'])}. Generators: "
        + (f"the core cut to {s['core_width']} neurons per hidden layer, {', '.join(s['arrangements'])} "
           "generators, synthesised whole and the generators alone. " if s["core_width"] else
           "one AC lane, one p-bit neuron and one xorshift32 generator of hidden layer 1 in generic gates "
           "(a neuron's slice of a per-neuron core; whole cores take minutes to synthesise). ")
        + "Co-simulation: hidden layer 1 under Amaranth on "
        + ", ".join(f"{n} random ±1 vectors with {a} generators" for a, n in s["cosim"].items())
        + "".join(f"; the whole core under {sim} on {n} test images at T = {t}" for sim, n, t in s["core_sims"])
        + f". Toggles: gate-level simulation of both units over layer 1's inputs ({s['toggle_images']} test "
          f"images for MAC, {s['toggle_sampled']} images x T = {s['toggle_samples']} for AC). "
          "The full-scale measurements of results/hardware/README.md were made the same way."))
    family = s["families"][0]
    units = read_json(p[f"units-{family}"])["units"] if p[f"units-{family}"].exists() else None
    section.claims.append(units_claim(units, family) if units else
                          not_measured(*CLAIMS["units"], ctx.why_missing(f"{NAME}/units"), RULES["units"]))
    if not s["core_width"] and p["gate-parts"].exists():
        section.claims.append(generators_claim(
            hs.gate_share(read_json(p["gate-parts"])), "one lane + neuron + generator of hidden layer 1 in generic "
            "gates, not a whole core: the tiny plan's stand-in", logic="gates"))
    elif s["core_width"] and p["core"].exists():
        section.claims.append(generators_claim(hs.generator_shares(read_json(p["core"])["core"]),
                                               f"784-{s['core_width']}-{s['core_width']}-10 core, synth_xilinx -nodsp"))
    else:
        section.claims.append(not_measured(*CLAIMS["generators"], ctx.why_missing(f"{NAME}/generators"),
                                           RULES["generators"]))
    missing = (ctx.why_missing(f"{NAME}/cosim/{kind}") for kind in ("layer", "core") if not p[f"cosim-{kind}"].exists())
    gone = next((reason for reason in missing if reason != "not run yet"), None)  # a record deleted, or not made
    layer = read_json(p["cosim-layer"]) if p["cosim-layer"].exists() else {}
    core = read_json(p["cosim-core"]) if p["cosim-core"].exists() else {}
    section.claims.append(cosim_claim(layer, core) if (layer or core) and not gone else
                          not_measured(*CLAIMS["cosim"], gone or ctx.why_missing(f"{NAME}/cosim"), RULES["cosim"]))
    section.claims.append(toggles_claim(read_json(p["toggles"])) if p["toggles"].exists() else
                          not_measured(*CLAIMS["toggles"], ctx.why_missing(f"{NAME}/toggles"), RULES["toggles"]))
    if p["figure"].exists() or f"{NAME}/figure" in ctx.done:  # (a figure deleted since is named, not dropped)
        section.figures.append(Figure(p["figure"], (
            f"LUTs of one MAC lane (8-bit activation) and one AC lane against fan-in n, per weight width b_w "
            f"(Yosys {', '.join(s['families'])}; xilinx: synth_xilinx -nodsp, LUT1..LUT6 and INV). "
            "n only sizes the accumulators; no training data involved."), f"{NAME}/figure"))
    return section
