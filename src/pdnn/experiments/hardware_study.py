"""Measurements of the p-bit datapath (:mod:`pdnn.hw`): synthesis counts, bit-exact co-simulation,
accuracy of the fixed-point network and switching activity.

One function per measurement, each keeping its results in a JSON file keyed by what was measured:
an entry already in the file is not measured again, and the file is rewritten atomically after
every entry, so an interrupted measurement resumes where it stopped. Used by the hardware study
of ``pdnn reproduce`` and by ``scripts/hw_*.py`` (which made ``results/hardware/``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from .. import interrupts
from ..energy.eo import synapse_pj
from ..energy.tech import DEFAULT_TABLE, load_table
from ..hw import export, fixed, rng, rtl, sim, synth, toggles
from ..errors import UsageError
from ..io import RunError, read_json, write_json

ACT_BITS = 8  # the MAC unit's activation width (the core reads 8-bit pixels)
Log = Callable[[str], None]


def _keyed(path: Path, section: str | None = None) -> tuple[dict, dict, Callable[[], None]]:
    """``(document, entries, save)`` of a results file: ``entries`` is ``document[section]`` (or
    the document itself), ``save()`` rewrites the file atomically."""
    path = Path(path)
    document = read_json(path) if path.exists() else ({"units": {}, "core": {}} if section else {})
    entries = document.setdefault(section, {}) if isinstance(document, dict) and section else document
    if not isinstance(entries, dict):  # (read before the work, which would otherwise be lost at the end)
        where = f" in {section!r}" if section else ""
        raise RunError(f"{path} is not this study's record (expected an object of entries{where}); move it away to "
                       "measure anew")
    return document, entries, lambda: write_json(path, document)


def _quiet(_: str) -> None:
    pass


def synth_units(path: Path, family: str, weight_bits=(4, 8, 16), fan_ins=(16, 64, 256), log: Log = _quiet) -> dict:
    """MAC against AC units, every ``(b_w, n)`` of the grid, for ``family``; into ``path``."""
    document, units, save = _keyed(path, "units")
    for bw in weight_bits:
        for n in fan_ins:
            for unit_name in synth.UNITS:
                key = f"{family}/{unit_name}/bw{bw}/n{n}"
                if key in units:
                    continue
                unit = synth.unit(unit_name, ACT_BITS, bw, n)
                start = time.time()
                with tempfile.TemporaryDirectory() as work:
                    r = synth.synthesize(unit, family, work)
                r.update(unit=unit_name, weight_bits=bw, n=n, act_bits=ACT_BITS if unit_name == "mac" else 1,
                         acc_bits=unit.acc_bits, seconds=round(time.time() - start, 1))
                units[key] = r
                save()
                log(f"{key} {r['lut']} {r['ff']} {r['carry']}")
    return document


def unit_ratios(units: dict, family: str) -> list[dict]:
    """``[{weight_bits, n, mac, ac, ratio}]`` (LUTs) for every setting with both units measured."""
    rows = []
    for key, mac in units.items():
        fam, name, bw, n = key.split("/")
        ac = units.get(f"{fam}/ac/{bw}/{n}")
        if fam == family and name == "mac" and ac:
            rows.append({"weight_bits": mac["weight_bits"], "n": mac["n"], "mac": mac["lut"], "ac": ac["lut"],
                         "ratio": mac["lut"] / ac["lut"]})
    return sorted(rows, key=lambda r: (r["weight_bits"], r["n"]))


def cut(net, width: int):
    """``net`` with only the first ``width`` neurons of each hidden layer (and their weights). A
    layer with fewer inputs has a narrower accumulator, so its thresholds are clipped to the
    narrower table (as :func:`pdnn.hw.fixed.thresholds_for` clips them: the accumulator never
    passes the bounds, so every decision stays)."""
    weights = []
    for k, layer in enumerate(net.layers):
        w = layer.weights
        if k > 0:  # inputs: the kept neurons of the layer before (and the output layer's bias row)
            keep = list(range(width)) + ([w.shape[1] - 1] if k == len(net.layers) - 1 else [])
            w = w[:, keep]
        weights.append(w if layer.thresholds is None else w[:width])
    sized = replace(net, layers=[fixed.Layer(w, None, layer.kind) for w, layer in zip(weights, net.layers)])
    layers = []
    for k, (w, layer) in enumerate(zip(weights, net.layers)):
        table = None
        if layer.thresholds is not None:
            bits = sized.threshold_bits(k)
            table = np.clip(layer.thresholds[:width], -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        layers.append(fixed.Layer(w, table, layer.kind))
    return replace(net, layers=layers)


def synth_core(path: Path, net, pieces=("core", "generators"), arrangements=("per-neuron", "shared"),
               log: Log = _quiet) -> dict:
    """The whole core of ``net`` and/or its generators alone (``synth_xilinx -nodsp``), for each
    generator arrangement; into ``path`` under ``xilinx/<piece>/<arrangement>``."""
    document, core, save = _keyed(path, "core")
    for arrangement in arrangements:
        variant = replace(net, rng=arrangement)
        for name in pieces:
            key = f"xilinx/{name}/{arrangement}"
            if key in core:
                continue
            component = (rtl.Core if name == "core" else rtl.Generators)(variant)
            start = time.time()
            with tempfile.TemporaryDirectory() as work:
                r = synth.synthesize(component, "xilinx", work)
            r.update(seconds=round(time.time() - start, 1))
            core[key] = r
            save()
            log(f"{key} {r['lut']} {r['ff']} {r['carry']} {r['ram']}")
    return document


def synth_parts(path: Path, net, log: Log = _quiet) -> dict:
    """The core's per-neuron parts one at a time (a lane of each layer, a p-bit neuron of each
    hidden layer with its real threshold table), with their counts in the core."""
    document, core, save = _keyed(path, "core")
    for k, layer in enumerate(net.layers):
        pieces = {"lane": (rtl.MACUnit(net.input_bits, net.weight_bits, layer.n_in, net.acc_bits(k))
                           if layer.kind == "mac" else rtl.ACUnit(net.weight_bits, layer.n_in, net.acc_bits(k)))}
        if layer.thresholds is not None:
            pieces["neuron"] = rtl.PBitNeuron(layer.thresholds[0], net.acc_bits(k), net.random_bits)
        for name, component in pieces.items():
            key = f"xilinx/layer{k}/{name}"
            if key in core:
                continue
            with tempfile.TemporaryDirectory() as work:
                r = synth.synthesize(component, "xilinx", work)
            r.update(count=layer.n_out)
            core[key] = r
            save()
            log(f"{key} {r['lut']} {r['ff']} {r['carry']}")
    return document


def generator_shares(core: dict) -> dict:
    """``{arrangement: {"logic": share, "ff": share}}`` of the generators in the whole core (logic:
    LUTs), for each arrangement whose core and generators were both synthesised."""
    shares = {}
    for arrangement in ("per-neuron", "shared"):
        c, g = core.get(f"xilinx/core/{arrangement}"), core.get(f"xilinx/generators/{arrangement}")
        if c and g:
            shares[arrangement] = {"logic": g["lut"] / c["lut"], "ff": g["ff"] / c["ff"] if c["ff"] else 0.0}
    return shares


def gate_parts(path: Path, net, layer: int = 1, log: Log = _quiet) -> dict:
    """One AC lane, one p-bit neuron (its real threshold table) and one xorshift32 generator of
    hidden layer ``layer``, each synthesised to generic gates (:func:`pdnn.hw.toggles.gate_netlist`,
    seconds where ``synth_xilinx`` takes minutes): ``{piece: {"gates": n, "ff": n}}`` in ``path``.
    A per-neuron core has one of each per neuron, so their sum prices a neuron's slice of it."""
    results, _, save = _keyed(path)
    k, spec = layer, net.layers[layer]
    pieces = {"lane": lambda: rtl.ACUnit(net.weight_bits, spec.n_in, net.acc_bits(k)),
              "neuron": lambda: rtl.PBitNeuron(spec.thresholds[0], net.acc_bits(k), net.random_bits),
              "generator": lambda: rtl.Xorshift32(int(rng.seeds(k, 1)[0]))}
    for name, build in pieces.items():
        key = f"generic/layer{k}/{name}"
        if key in results:
            continue
        with tempfile.TemporaryDirectory() as work:
            cells = toggles.gate_netlist(build(), work)["modules"]["top"]["cells"].values()
        flops = sum(c["type"] == "$_DFF_P_" for c in cells)
        results[key] = {"gates": len(cells) - flops, "ff": flops}
        save()
        log(f"{key} {results[key]}")
    return results


def gate_share(parts: dict, layer: int = 1) -> dict:
    """``{"per-neuron": {"logic": share, "ff": share}}`` of the generator in a neuron's slice
    (lane + neuron + generator) of :func:`gate_parts`, or ``{}`` when a piece is missing."""
    pieces = [parts.get(f"generic/layer{layer}/{name}") for name in ("lane", "neuron", "generator")]
    if not all(pieces):
        return {}
    total = {kind: sum(piece[kind] for piece in pieces) for kind in ("gates", "ff")}
    share = {kind: pieces[2][kind] / total[kind] if total[kind] else 0.0 for kind in total}
    return {"per-neuron": {"logic": share["gates"], "ff": share["ff"]}}


def cosim_layer(path: Path, net, counts: dict, layer: int = 1, seed: int = 1, log: Log = _quiet) -> dict:
    """Hidden AC layer ``layer`` under Amaranth's simulator against :func:`pdnn.hw.fixed.layer_sample`,
    ``counts[arrangement]`` random +-1 vectors per generator arrangement; every output bit compared."""
    results, _, save = _keyed(path)
    for arrangement, count in counts.items():
        key = f"layer{layer}/{arrangement}"
        if key in results:
            continue
        variant = replace(net, rng=arrangement)
        vectors = np.random.default_rng(seed).choice([-1, 1], size=(count, variant.layers[layer].n_in))
        start = time.time()
        rtl_bits = sim.simulate_layer(variant, layer, vectors)
        ref_bits = fixed.layer_sample(variant, layer, vectors, 0)
        results[key] = {"vectors": count, "bits_compared": int(ref_bits.size),
                        "bits_different": int((rtl_bits != ref_bits).sum()),
                        "simulator": "amaranth", "seconds": round(time.time() - start, 1)}
        save()
        log(f"{key} {results[key]}")
    return results


def cosim_core(path: Path, net, images: np.ndarray, labels: np.ndarray, simulator: str, samples: int,
               log: Log = _quiet) -> dict:
    """The whole core on ``images`` at T = ``samples`` under ``simulator`` (``amaranth``, or
    ``iverilog``: the same RTL as Verilog under Icarus) against :func:`pdnn.hw.fixed.reference`;
    decisions and class totals compared."""
    results, _, save = _keyed(path)
    key = f"core/{simulator}/T{samples}"
    if key in results:
        return results
    start = time.time()
    if simulator == "amaranth":
        totals, decisions, _ = sim.simulate_core(net, images, samples)
    else:
        with tempfile.TemporaryDirectory() as work:
            totals, decisions = sim.simulate_core_verilog(net, images, samples, work)
    ref_totals, ref_decisions = fixed.reference(net, images, samples)
    results[key] = {"images": len(images), "samples": samples,
                    "totals_different": int((totals != ref_totals).sum()),
                    "decisions_different": int((decisions != ref_decisions).sum()),
                    "accuracy_rtl": float((decisions == labels).mean()),
                    "seconds": round(time.time() - start, 1)}
    save()
    log(f"{key} {results[key]}")
    return results


def accuracy_sweep(path: Path, net, run_dir: Path, images: np.ndarray, labels: np.ndarray,
                   samples=(1, 2, 4, 10, 32), roots=None, log: Log = _quiet) -> dict:
    """Accuracy of the fixed-point reference for several T, beside the float p-DNN it came from."""
    if Path(path).exists():
        return read_json(path)
    rows = []
    for t in samples:
        _, decisions = fixed.reference(net, images, t)
        rows.append({"samples": t, "fixed_point": float((decisions == labels).mean()),
                     "float": export.float_accuracy(run_dir, images, labels, t, roots=roots)})
        log(str(rows[-1]))
    document = {"test_images": len(images), "spec": net.describe() | {"meta": None}, "rows": rows}
    write_json(path, document)
    return document


def toggles_per_op(unit, netlist: dict, inputs: np.ndarray, weights: np.ndarray) -> dict:
    """Toggles per operation of ``unit`` (its gate ``netlist``) over sums of ``inputs [copies, n]``
    with the per-copy weight rows ``weights [copies, n]``; checks the sums against numpy."""
    sim = toggles.GateSim(netlist, len(inputs))
    sim.set("clear", 1)
    sim.set("en", 0)
    sim.cycle(count=False)
    sim.set("clear", 0)
    sim.set("en", 1)
    for j in range(inputs.shape[1]):
        sim.set("x", inputs[:, j])
        sim.set("w", weights[:, j])
        sim.cycle()
    sim.set("en", 0)
    sim.cycle(count=False)
    signed = inputs if isinstance(unit, rtl.MACUnit) else 2 * inputs - 1
    expect = (signed * weights).sum(1)
    got = sim.get("acc")
    bits = unit.acc_bits
    got = np.where(got >> (bits - 1), got - (1 << bits), got)
    if not (got == expect).all():
        raise AssertionError("gate-level sums differ from the arithmetic")
    ops = inputs.size
    return {"toggles_per_op": sim.toggles / ops, "operations": int(ops), "gates": len(sim.comb),
            "flip_flops": len(sim.flops)}


def switching_activity(path: Path, net, images: np.ndarray, sampled_images: int = 50, samples: int = 10) -> dict:
    """Switching activity of the MAC and AC units computing hidden layer 1 of ``net`` on real
    activations, beside the synapse-energy ratio of pdnn's energy model; written to ``path``.

    Both units compute the layer lane by lane, inputs in the core's order, the accumulator cleared
    before each sum. AC: the p-bit samples of layer 0 (+-1), T = ``samples`` samples of the first
    ``sampled_images`` images, exactly the bits the core draws; MAC: the deterministic
    counterpart's 8-bit activations (each layer-0 neuron's firing probability as the core defines
    it: the fraction of its thresholds below the sum, in 0..255) for all ``images``. Each unit is
    synthesised to generic gates and simulated at gate level; uniform random inputs for contrast.
    """
    if Path(path).exists():
        return read_json(path)
    start = time.time()
    w1 = net.layers[1].weights
    h, n = w1.shape
    acc0 = images.astype(np.int64) @ net.layers[0].weights.T
    t0 = net.layers[0].thresholds
    probability = np.minimum((acc0[:, :, None] > t0[None]).sum(-1), 255)  # in 0..255
    g = sampled_images * samples
    u = rng.random_indices(net.rng, 0, h, net.random_bits, 0, g)
    bits = (fixed.fire(np.repeat(acc0[:sampled_images], samples, axis=0), t0, u) > 0).astype(np.int64)

    def lanes(x):  # every input vector against every output neuron's weight row
        return np.repeat(x, h, axis=0), np.tile(w1, (len(x), 1))

    r = np.random.default_rng(0)
    table = load_table(DEFAULT_TABLE)
    report = {"layer": 1, "n": n, "weight_bits": net.weight_bits, "act_bits_mac": ACT_BITS,
              "images": len(images), "sampled_images": sampled_images, "samples": samples}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        mac, ac = rtl.MACUnit(ACT_BITS, net.weight_bits, n), rtl.ACUnit(net.weight_bits, n)
        gates = {"mac": toggles.gate_netlist(mac, work / "mac"), "ac": toggles.gate_netlist(ac, work / "ac")}
        report["network"] = {"mac": toggles_per_op(mac, gates["mac"], *lanes(probability)),
                             "ac": toggles_per_op(ac, gates["ac"], *lanes(bits))}
        report["uniform_random"] = {
            "mac": toggles_per_op(mac, gates["mac"], *lanes(r.integers(0, 256, size=(len(images), n)))),
            "ac": toggles_per_op(ac, gates["ac"], *lanes(r.integers(0, 2, size=(g, n))))}
    for part in ("network", "uniform_random"):
        report[part]["ratio_mac_over_ac"] = (report[part]["mac"]["toggles_per_op"]
                                             / report[part]["ac"]["toggles_per_op"])
    em = report["energy_model"] = {"table": DEFAULT_TABLE,
                                   "synapse_pj_mac": synapse_pj(n, ACT_BITS, net.weight_bits, table) / n,
                                   "synapse_pj_ac": synapse_pj(n, 1, net.weight_bits, table) / n}
    em["ratio_mac_over_ac"] = em["synapse_pj_mac"] / em["synapse_pj_ac"]
    report["paper"] = {"measured": 2.5, "predicted": 2.3}
    report["seconds"] = round(time.time() - start, 1)
    write_json(path, report)
    return report


def run_script(doc: str, main: Callable, parts: tuple[str, ...] | None = None) -> None:
    """The command line of the hardware study's scripts: ``[PART] [OUT_DIR]`` (OUT_DIR defaults
    to results/hardware), ``main(part, out)`` or ``main(out)``; a missing export or run folder is
    one line, not a traceback, and so is an interrupt (:func:`pdnn.interrupts.run_script`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if parts:
        parser.add_argument("part", choices=parts)
    parser.add_argument("out", nargs="?", type=Path, default=Path("results/hardware"),
                        help="the hardware results folder (default: results/hardware)")
    args = parser.parse_args()

    def one_part() -> None:
        try:
            main(*([args.part] if parts else []), args.out)
        except (UsageError, RunError, OSError) as err:
            parser.error(str(err))

    interrupts.run_script(one_part)
