"""Switching activity of the MAC and AC units on the trained network's real activations
(results/hardware/toggles.json), beside the synapse-energy ratio of pdnn's energy model.

Usage: python scripts/hw_toggles.py [OUT_DIR]   (default results/hardware; reads OUT_DIR/export)

Both units compute hidden layer 1 (64 -> 64, 8-bit weights, in the committed network) of the
exported network on test images of the dataset the export names, lane by lane, inputs in the
core's order, with the accumulator cleared before each sum:
* AC: the p-bit samples of layer 0 (+-1), T = 10 samples of the first 50 test images, exactly
  the bits the core draws (pdnn.hw.fixed);
* MAC: the deterministic counterpart's 8-bit activations: each layer-0 neuron's firing
  probability as the core defines it (the fraction of its 256 thresholds below the sum), in
  0..255, for the first 200 test images.
Each unit is synthesised to generic gates by Yosys and simulated at gate level (pdnn.hw.toggles);
toggles per synaptic operation are counted over all nets. Uniform random inputs are reported
for contrast.
(the measurement lives in pdnn.experiments.hardware_study.switching_activity)
"""
from __future__ import annotations

import json
from pathlib import Path

from pdnn.experiments import hardware_study as hs
from pdnn.hw import export, fixed


def main(out: Path) -> None:
    net = fixed.load(out / "export")
    images, _ = export.test_images(export.dataset_of(net, out / "export"), 200)
    report = hs.switching_activity(out / "toggles.json", net, images)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    hs.run_script(__doc__, main)
