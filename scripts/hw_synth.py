"""Synthesis measurements of the p-bit datapath (results/hardware/synth.json).

Usage: python scripts/hw_synth.py [OUT_DIR]   (default results/hardware; resumes: entries already
in synth.json are kept)

* MAC against AC units over b_w in {4, 8, 16} and n in {16, 64, 256}, b_a = 8, for Yosys's
  synth_xilinx (-nodsp) and synth_ice40;
* the whole core of the exported network (OUT_DIR/export) and its generators alone, for one
  generator per neuron and one shared generator with taps (synth_xilinx).
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


def main(out: Path) -> None:
    path = out / "synth.json"
    results = json.loads(path.read_text()) if path.exists() else {"units": {}, "core": {}}

    def save():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(path)

    for family in synth.FAMILIES:
        for bw in (4, 8, 16):
            for n in (16, 64, 256):
                for unit_name, unit in synth.units(ACT_BITS, bw, n).items():
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
    net = fixed.load(out / "export")
    for arrangement in ("per-neuron", "shared"):
        variant = replace(net, rng=arrangement)
        for part, component in (("core", rtl.Core(variant)), ("generators", rtl.Generators(variant))):
            key = f"xilinx/{part}/{arrangement}"
            if key in results["core"]:
                continue
            start = time.time()
            with tempfile.TemporaryDirectory() as work:
                r = synth.synthesize(component, "xilinx", work)
            r.update(seconds=round(time.time() - start, 1))
            results["core"][key] = r
            save()
            print(key, r["lut"], r["ff"], r["carry"], r["ram"], flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/hardware"))
