"""Synthesis measurements of the p-bit datapath (results/hardware/synth.json).

Usage: python scripts/hw_synth.py PART [OUT_DIR]   PART: xilinx | ice40 (the unit sweep for that
family, OUT_DIR/synth-units-PART.json), core, generators or parts (OUT_DIR/synth-PART.json); OUT_DIR
defaults to results/hardware; entries already in the file are kept (the parts can run in parallel)

* MAC against AC units over b_w in {4, 8, 16} and n in {16, 64, 256}, b_a = 8, for Yosys's
  synth_xilinx (-nodsp) and synth_ice40;
* the whole core of the exported network (OUT_DIR/export) and its generators alone, for one
  generator per neuron and one shared generator with taps (synth_xilinx);
* parts: the core's per-neuron parts one at a time (a lane of each layer, a p-bit neuron of each
  hidden layer with its real threshold table), so that the core's datapath can be counted as
  lanes x count + neurons x count when the whole core is too slow to synthesise.
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
    if part not in (*synth.FAMILIES, "core", "generators", "parts"):
        raise SystemExit(f"part must be one of {', '.join(synth.FAMILIES)}, core, generators, parts; got {part!r}")
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
    for arrangement in ("per-neuron", "shared"):
        variant = replace(net, rng=arrangement)
        key = f"xilinx/{part}/{arrangement}"
        if key not in results["core"]:
            component = rtl.Core(variant) if part == "core" else rtl.Generators(variant)
            start = time.time()
            with tempfile.TemporaryDirectory() as work:
                r = synth.synthesize(component, "xilinx", work)
            r.update(seconds=round(time.time() - start, 1))
            results["core"][key] = r
            save()
            print(key, r["lut"], r["ff"], r["carry"], r["ram"], flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "results/hardware"))
