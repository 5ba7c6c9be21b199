"""Bit-exact co-simulation of the RTL against the fixed-point reference, and accuracy against T.

Usage: python scripts/hw_cosim.py PART [OUT_DIR]   PART: layer, core or accuracy (they can run in
parallel); OUT_DIR defaults to results/hardware; reads OUT_DIR/export and OUT_DIR/run, writes
OUT_DIR/cosim-PART.json (accuracy: OUT_DIR/accuracy.json); entries already there are kept

* layer: hidden layer 1 (64 -> 64, AC) under Amaranth's simulator on 1000 random +-1 vectors
  with one generator per neuron, and 300 with the shared generator; every output bit compared;
* core: the whole core as Verilog (Amaranth -> Yosys) under Icarus Verilog on the first 200
  test images at T = 1 and T = 10; decisions and class totals compared; the first 5 images
  also under Amaranth's own simulator;
* accuracy: the fixed-point reference on the 10000 test images for several T, beside the float
  p-DNN (SampledModel) it came from.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pdnn.hw import export, fixed, sim


def main(part: str, out: Path) -> None:
    if part not in ("layer", "core", "accuracy"):
        raise SystemExit(f"part must be layer, core or accuracy; got {part!r}")
    path = out / f"cosim-{part}.json"
    results = json.loads(path.read_text()) if path.exists() else {}

    def save(name, obj, target=path):
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=1) + "\n")
        tmp.replace(target)

    net = fixed.load(out / "export")
    images, labels = export.test_images("fashion-mnist")
    for arrangement, count in (("per-neuron", 1000), ("shared", 300)) if part == "layer" else ():
        key = f"layer1/{arrangement}"
        if key in results:
            continue
        variant = replace(net, rng=arrangement)
        vectors = np.random.default_rng(1).choice([-1, 1], size=(count, variant.layers[1].n_in))
        start = time.time()
        rtl_bits = sim.simulate_layer(variant, 1, vectors)
        ref_bits = fixed.layer_sample(variant, 1, vectors, 0)
        results[key] = {"vectors": count, "bits_compared": int(ref_bits.size),
                        "bits_different": int((rtl_bits != ref_bits).sum()),
                        "simulator": "amaranth", "seconds": round(time.time() - start, 1)}
        save(key, results)
        print(key, results[key], flush=True)
    key = "core/amaranth/T2"
    if part == "core" and key not in results:
        start = time.time()
        totals, decisions, cycles = sim.simulate_core(net, images[:5], 2)
        ref_totals, ref_decisions = fixed.reference(net, images[:5], 2)
        results[key] = {"images": 5, "samples": 2, "cycles": cycles,
                        "totals_different": int((totals != ref_totals).sum()),
                        "decisions_different": int((decisions != ref_decisions).sum()),
                        "seconds": round(time.time() - start, 1)}
        save(key, results)
        print(key, results[key], flush=True)
    for samples in (1, 10) if part == "core" else ():
        key = f"core/iverilog/T{samples}"
        if key in results:
            continue
        start = time.time()
        with tempfile.TemporaryDirectory() as work:
            totals, decisions = sim.simulate_core_verilog(net, images[:200], samples, work)
        ref_totals, ref_decisions = fixed.reference(net, images[:200], samples)
        results[key] = {"images": 200, "samples": samples,
                        "totals_different": int((totals != ref_totals).sum()),
                        "decisions_different": int((decisions != ref_decisions).sum()),
                        "accuracy_rtl": float((decisions == labels[:200]).mean()),
                        "seconds": round(time.time() - start, 1)}
        save(key, results)
        print(key, results[key], flush=True)
    acc_path = out / "accuracy.json"
    if part == "accuracy" and not acc_path.exists():
        rows = []
        for samples in (1, 2, 4, 10, 32):
            _, decisions = fixed.reference(net, images, samples)
            rows.append({"samples": samples, "fixed_point": float((decisions == labels).mean()),
                         "float": export.float_accuracy(out / "run", images, labels, samples)})
            print(rows[-1], flush=True)
        save("accuracy", {"test_images": len(images), "spec": net.describe() | {"meta": None}, "rows": rows}, acc_path)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "results/hardware"))
