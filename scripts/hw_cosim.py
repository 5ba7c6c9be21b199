"""Bit-exact co-simulation of the RTL against the fixed-point reference, and accuracy against T.

Usage: python scripts/hw_cosim.py PART [OUT_DIR]   PART: layer, core or accuracy (they can run in
parallel); OUT_DIR defaults to results/hardware; reads OUT_DIR/export and OUT_DIR/run, writes
OUT_DIR/cosim-PART.json (accuracy: OUT_DIR/accuracy.json); entries already there are kept

* layer: hidden layer 1 (64 -> 64, AC, in the committed network) under Amaranth's simulator on
  1000 random +-1 vectors with one generator per neuron, and 300 with the shared generator;
  every output bit compared;
* core: the whole core as Verilog (Amaranth -> Yosys) under Icarus Verilog on the first 200 test
  images of the dataset the export names, at T = 1 and T = 10; decisions and class totals
  compared; the first 5 images also under Amaranth's own simulator;
* accuracy: the fixed-point reference on the 10000 test images for several T, beside the float
  p-DNN (SampledModel) it came from.
(the measurements live in pdnn.experiments.hardware_study)
"""
from __future__ import annotations

from pathlib import Path

from pdnn.experiments import hardware_study as hs
from pdnn.hw import export, fixed


def main(part: str, out: Path) -> None:
    path = out / f"cosim-{part}.json"
    net = fixed.load(out / "export")
    if part == "layer":  # (random input vectors: no dataset)
        hs.cosim_layer(path, net, {"per-neuron": 1000, "shared": 300}, log=print)
        return
    images, labels = export.test_images(export.dataset_of(net, out / "export"))
    if part == "core":
        hs.cosim_core(path, net, images[:5], labels[:5], "amaranth", 2, log=print)
        for samples in (1, 10):
            hs.cosim_core(path, net, images[:200], labels[:200], "iverilog", samples, log=print)
    else:
        hs.accuracy_sweep(out / "accuracy.json", net, out / "run", images, labels, log=print)


if __name__ == "__main__":
    hs.run_script(__doc__, main, ("layer", "core", "accuracy"))
