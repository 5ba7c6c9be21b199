"""Synthesis measurements of the p-bit datapath (results/hardware/synth.json).

Usage: python scripts/hw_synth.py PART [OUT_DIR]   PART: xilinx | ice40 (the unit sweep for that
family, OUT_DIR/synth-units-PART.json), core, core16, generators or parts (OUT_DIR/synth-PART.json); OUT_DIR
defaults to results/hardware; entries already in the file are kept (the parts can run in parallel)

* MAC against AC units over b_w in {4, 8, 16} and n in {16, 64, 256}, b_a = 8, for Yosys's
  synth_xilinx (-nodsp) and synth_ice40;
* the whole core of the exported network (OUT_DIR/export) and its generators alone, for one
  generator per neuron and one shared generator with taps (synth_xilinx);
* parts: the core's per-neuron parts one at a time (a lane of each layer, a p-bit neuron of each
  hidden layer with its real threshold table), so that the core's datapath can be counted as
  lanes x count + neurons x count when the whole core is too slow to synthesise;
* core16: the core and its generators for the network cut to its first 16 neurons per hidden
  layer (784-16-16-10, the trained weights and tables of those neurons): a whole core small
  enough to synthesise in one piece.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pdnn.hw import fixed, rtl, synth

ACT_BITS = 8


def main(part: str, out: Path) -> None:
    if part not in (*synth.FAMILIES, "core", "core16", "generators", "parts"):
        raise SystemExit(f"part must be one of {', '.join(synth.FAMILIES)}, core, core16, generators, parts; "
                         f"got {part!r}")
    path = out / (f"synth-units-{part}.json" if part in synth.FAMILIES else f"synth-{part}.json")
    results = json.loads(path.read_text()) if path.exists() else {"units": {}, "core": {}}

    def save():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(path)

    for family in [part] if part in synth.FAMILIES else []:
        for bw in (4, 8, 16):
            for n in (16, 64, 256):
                for unit_name in synth.UNITS:
                    unit = synth.unit(unit_name, ACT_BITS, bw, n)
                    key = f"{family}/{unit_name}/bw{bw}/n{n}"
                    if key in results["units"]:
                        continue
                    start = time.time()
                    with tempfile.TemporaryDirectory() as work:
                        r = synth.synthesize(unit, family, work)
                    r.update(unit=unit_name, weight_bits=bw, n=n, act_bits=ACT_BITS if unit_name == "mac" else 1,
                             acc_bits=unit.acc_bits, seconds=round(time.time() - start, 1))
                    results["units"][key] = r
                    save()
                    print(key, r["lut"], r["ff"], r["carry"], flush=True)
    if part in synth.FAMILIES:
        return
    net = fixed.load(out / "export")
    if part == "parts":
        for k, layer in enumerate(net.layers):
            pieces = {"lane": (rtl.MACUnit(net.input_bits, net.weight_bits, layer.n_in, net.acc_bits(k))
                               if layer.kind == "mac" else rtl.ACUnit(net.weight_bits, layer.n_in, net.acc_bits(k)))}
            if layer.thresholds is not None:
                pieces["neuron"] = rtl.PBitNeuron(layer.thresholds[0], net.acc_bits(k), net.random_bits)
            for name, component in pieces.items():
                key = f"xilinx/layer{k}/{name}"
                if key in results["core"]:
                    continue
                with tempfile.TemporaryDirectory() as work:
                    r = synth.synthesize(component, "xilinx", work)
                r.update(count=layer.n_out)
                results["core"][key] = r
                save()
                print(key, r["lut"], r["ff"], r["carry"], flush=True)
        return
    if part == "core16":
        net = cut(net, 16)
    for arrangement in ("per-neuron", "shared"):
        variant = replace(net, rng=arrangement)
        pieces = {"core": rtl.Core, "generators": rtl.Generators} if part == "core16" else {part: None}
        for name in pieces:
            key = f"xilinx/{name}/{arrangement}"
            if key in results["core"]:
                continue
            component = (rtl.Core if name == "core" else rtl.Generators)(variant)
            start = time.time()
            with tempfile.TemporaryDirectory() as work:
                r = synth.synthesize(component, "xilinx", work)
            r.update(seconds=round(time.time() - start, 1))
            results["core"][key] = r
            save()
            print(key, r["lut"], r["ff"], r["carry"], r["ram"], flush=True)


def cut(net: fixed.FixedNet, width: int) -> fixed.FixedNet:
    """``net`` with only the first ``width`` neurons of each hidden layer (and their weights)."""
    layers = []
    for k, layer in enumerate(net.layers):
        w = layer.weights
        if k > 0:  # inputs: the kept neurons of the layer before (and the output layer's bias row)
            keep = list(range(width)) + ([w.shape[1] - 1] if k == len(net.layers) - 1 else [])
            w = w[:, keep]
        if layer.thresholds is not None:
            layers.append(fixed.Layer(w[:width], layer.thresholds[:width], layer.kind))
        else:
            layers.append(fixed.Layer(w, None, layer.kind))
    return replace(net, layers=layers)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "results/hardware"))
