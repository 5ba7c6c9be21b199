"""Tables of the hardware measurements: results/hardware/README.md from the JSON files there.

Usage: python scripts/hw_summary.py [OUT_DIR]   (default results/hardware; rewrites the text
between the markers of OUT_DIR/README.md, creating the file if needed)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pdnn.cli.common import existing_folder
from pdnn.errors import UsageError
from pdnn.hw import export, fixed
from pdnn.interrupts import run_script
from pdnn.io import RunError, read_json, write_text

BEGIN, END = "<!-- BEGIN tables -->", "<!-- END tables -->"
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST",  # as the datasets' authors write them
                 "demo": "embedded Fashion-MNIST subset's"}


def _load(path: Path) -> dict | None:
    """The record at ``path`` (a JSON object), or None if the measurement has not been made."""
    if not path.exists():
        return None
    record = read_json(path)
    if not isinstance(record, dict):
        raise RunError(f"{path} holds a JSON {type(record).__name__}, not a record of the hardware study's scripts")
    return record


def network_label(net: fixed.FixedNet, width: int | None = None) -> str:
    """``784-64-64-10`` for the exported network ``net``; with ``width``, its hidden layers cut to
    their first ``width`` neurons (:func:`pdnn.experiments.hardware_study.cut`)."""
    hidden = [layer.n_out if width is None else min(width, layer.n_out) for layer in net.layers[:-1]]
    return "-".join(map(str, [net.layers[0].n_in, *hidden, net.layers[-1].n_out]))


def units_table(out: Path) -> list[str]:
    lines = []
    for family in ("xilinx", "ice40"):
        data = _load(out / f"synth-units-{family}.json")
        if not data:
            lines += [f"No {family} unit counts yet.", ""]
            continue
        units = data["units"]
        flow = "synth_xilinx -nodsp" if family == "xilinx" else "synth_ice40"
        lines += [f"**{family}** (`{flow}`; LUT = {'LUT1..LUT6 and INV' if family == 'xilinx' else 'SB_LUT4'}):", "",
                  "| b_w | n | MAC acc bits | MAC LUT / FF / CARRY | AC acc bits | AC LUT / FF / CARRY | LUT ratio MAC/AC | LUT+FF ratio |",
                  "|---:|---:|---:|---|---:|---|---:|---:|"]
        for bw in (4, 8, 16):
            for n in (16, 64, 256):
                mac, ac = units.get(f"{family}/mac/bw{bw}/n{n}"), units.get(f"{family}/ac/bw{bw}/n{n}")
                if not mac or not ac:
                    lines.append(f"| {bw} | {n} | not measured | | | | | |")
                    continue
                lines.append(
                    f"| {bw} | {n} | {mac['acc_bits']} | {mac['lut']} / {mac['ff']} / {mac['carry']} | {ac['acc_bits']} | "
                    f"{ac['lut']} / {ac['ff']} / {ac['carry']} | {mac['lut'] / ac['lut']:.2f} | "
                    f"{(mac['lut'] + mac['ff']) / (ac['lut'] + ac['ff']):.2f} |")
        pairs = [(units[f"{family}/mac/bw{bw}/n{n}"], units[f"{family}/ac/bw{bw}/n{n}"]) for bw in (4, 8, 16)
                 for n in (16, 64, 256) if f"{family}/mac/bw{bw}/n{n}" in units and f"{family}/ac/bw{bw}/n{n}" in units]
        if pairs:
            ratios = sorted(m["lut"] / a["lut"] for m, a in pairs)
            lines += ["", f"LUT ratio MAC/AC over the {len(pairs)} settings: {ratios[0]:.2f} to {ratios[-1]:.2f} "
                          f"(the paper: 2.9x fewer MAC-related CLB LUTs).", ""]
    return lines


def core_table(out: Path, net: fixed.FixedNet) -> list[str]:
    lines = ["Whole cores synthesised in one piece (`synth_xilinx -nodsp`; RAM = block RAMs of the weight and "
             "image memories):", "",
             "| core | generators | core LUT / FF / CARRY / RAM | generators LUT / FF | generators' share of LUTs / FFs |",
             "|---|---|---|---|---:|"]
    generators = (_load(out / "synth-generators.json") or {}).get("core", {})
    for name, label in (("synth-core.json", network_label(net)),
                        ("synth-core16.json", f"{network_label(net, 16)} (first 16 neurons of each hidden layer)")):
        core = (_load(out / name) or {}).get("core", {})
        if name == "synth-core.json":
            core = {**generators, **core}
        for arrangement in ("per-neuron", "shared"):
            c, g = core.get(f"xilinx/core/{arrangement}"), core.get(f"xilinx/generators/{arrangement}")
            if not c or not g:
                counts = f"{g['lut']} / {g['ff']}" if g else ""
                lines.append(f"| {label} | {arrangement} | not measured | {counts} | |")
                continue
            lines.append(f"| {label} | {arrangement} | {c['lut']} / {c['ff']} / {c['carry']} / {c['ram']} | "
                         f"{g['lut']} / {g['ff']} | {100 * g['lut'] / c['lut']:.1f}% / {100 * g['ff'] / c['ff']:.1f}% |")
    core = generators
    parts = (_load(out / "synth-parts.json") or {}).get("core", {})
    if parts:
        lines += ["", "Sum of parts (each part synthesised alone with `synth_xilinx -nodsp`, times its count in "
                  "the core; the control, shift registers, arg-max and weight/image memories are left out):", "",
                  "| part | LUT / FF / CARRY each | count |", "|---|---|---:|"]
        lut = ff = 0
        for key, r in parts.items():
            lines.append(f"| {key.split('/', 1)[1]} | {r['lut']} / {r['ff']} / {r['carry']} | {r['count']} |")
            lut += r["lut"] * r["count"]
            ff += r["ff"] * r["count"]
        lines += ["", f"Datapath without generators: {lut} LUTs, {ff} FFs.", "",
                  "| generators | generators LUT / FF | share of datapath + generators, LUTs / FFs |", "|---|---|---:|"]
        for arrangement in ("per-neuron", "shared"):
            g = core.get(f"xilinx/generators/{arrangement}")
            if g:
                lines.append(f"| {arrangement} | {g['lut']} / {g['ff']} | {100 * g['lut'] / (lut + g['lut']):.1f}% / "
                             f"{100 * g['ff'] / (ff + g['ff']):.1f}% |")
    return lines + [""]


def cosim_table(out: Path, net: fixed.FixedNet) -> list[str]:
    data = {**(_load(out / "cosim-layer.json") or {}), **(_load(out / "cosim-core.json") or {})}
    if not data:
        return ["No co-simulation yet.", ""]
    lines = ["| what | simulator | compared | different |", "|---|---|---|---:|"]
    for key, r in data.items():
        if key.startswith("layer"):
            index, arrangement = key.removeprefix("layer").split("/")
            if not 0 <= int(index) < len(net.layers) - 1:
                raise IndexError(f"{key}: the export has hidden layers 0..{len(net.layers) - 2}")
            layer = net.layers[int(index)]
            lines.append(f"| hidden layer {index} ({layer.n_in} -> {layer.n_out}, {layer.kind.upper()}), "
                         f"{arrangement} generators, {r['vectors']} random +-1 "
                         f"input vectors | {r['simulator']} | {r['bits_compared']} output bits | {r['bits_different']} |")
        else:
            sim = key.split("/")[1]
            lines.append(f"| core, {r['images']} test images, T = {r['samples']} | {sim} | decisions and "
                         f"{r['images']} x {net.layers[-1].n_out} class totals | {r['decisions_different']} decisions, "
                         f"{r['totals_different']} totals |")
    return lines + [""]


def accuracy_table(out: Path, dataset: str) -> list[str]:
    data = _load(out / "accuracy.json")
    if not data:
        return ["No accuracy sweep yet.", ""]
    lines = [f"Test accuracy on the {data['test_images']} {DATASET_NAMES.get(dataset, dataset)} test images:", "",
             "| T | fixed point (core) | float p-DNN |", "|---:|---:|---:|"]
    for row in data["rows"]:
        lines.append(f"| {row['samples']} | {100 * row['fixed_point']:.2f}% | {100 * row['float']:.2f}% |")
    return lines + [""]


def toggles_table(out: Path) -> list[str]:
    data = _load(out / "toggles.json")
    if not data:
        return ["No toggle counts yet.", ""]
    net, rnd, em = data["network"], data["uniform_random"], data["energy_model"]
    return [
        "| inputs | MAC toggles/op | AC toggles/op | MAC/AC |", "|---|---:|---:|---:|",
        f"| trained network, layer {data['layer']} (n = {data['n']}, b_w = {data['weight_bits']}) | "
        f"{net['mac']['toggles_per_op']:.1f} | {net['ac']['toggles_per_op']:.1f} | {net['ratio_mac_over_ac']:.2f} |",
        f"| uniform random | {rnd['mac']['toggles_per_op']:.1f} | {rnd['ac']['toggles_per_op']:.1f} | "
        f"{rnd['ratio_mac_over_ac']:.2f} |",
        "",
        f"pdnn's energy model ({em['table']}) prices one synaptic operation at {em['synapse_pj_mac']:.3f} pJ (MAC, "
        f"8-bit x {data['weight_bits']}-bit multiply and add) against {em['synapse_pj_ac']:.4f} pJ (AC): "
        f"{em['ratio_mac_over_ac']:.2f}x; the paper: 2.5x measured against 2.3x predicted.", ""]


def main(out: Path, net: fixed.FixedNet, dataset: str) -> None:
    """Rewrite the tables of ``out``'s README for the export ``net`` of ``dataset`` it holds."""
    body = ["## Synapse units: MAC against AC", "", *units_table(out),
            "## Generators' share of the core", "", *core_table(out, net),
            "## Bit-exact co-simulation", "", *cosim_table(out, net),
            "## Accuracy against T", "", *accuracy_table(out, dataset),
            "## Switching activity (gate level)", "", *toggles_table(out)]
    readme = out / "README.md"
    text = readme.read_text() if readme.exists() else f"# Hardware measurements\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_text(readme, head + BEGIN + "\n" + "\n".join(body) + "\n" + END + tail)  # (the prose around it is kept)


def command_line() -> None:
    """The command line: its options checked, then the work, its errors in one line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=existing_folder, default="results/hardware",
                        help="the hardware results folder (default: results/hardware)")
    folder = Path(parser.parse_args().out)
    if not (folder / "export").is_dir():
        parser.error(f"{folder} holds no export/ folder; expected the hardware study's folder")
    readme = folder / "README.md"
    try:
        marked = not readme.is_file() or all(m in readme.read_text() for m in (BEGIN, END))
    except UnicodeDecodeError as err:
        parser.error(f"{readme} is not UTF-8 text ({err}); expected the hardware study's README")
    if not marked:
        parser.error(f"{readme} lacks the {BEGIN} ... {END} markers; expected the hardware study's "
                     "README")
    try:  # the tables name the network and dataset of the export the folder holds
        exported = fixed.load(folder / "export")
        main(folder, exported, export.dataset_of(exported, folder / "export"))
    except (UsageError, RunError, OSError) as err:
        parser.error(str(err))
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, ArithmeticError) as err:  # a record edited
        # or of other code (a count of 0 LUTs divides by zero)
        parser.error(f"a record under {folder} is not of the shape this script reads ({type(err).__name__}: {err}); "
                     "run the script that writes it again")


if __name__ == "__main__":
    run_script(command_line)
