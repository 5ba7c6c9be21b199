"""Synthesis measurements of the p-bit datapath (results/hardware/synth-*.json).

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
(the measurements live in pdnn.experiments.hardware_study)
"""
from __future__ import annotations

from pathlib import Path

from pdnn.experiments import hardware_study as hs
from pdnn.hw import fixed, synth


def main(part: str, out: Path) -> None:
    path = out / (f"synth-units-{part}.json" if part in synth.FAMILIES else f"synth-{part}.json")
    if part in synth.FAMILIES:
        hs.synth_units(path, part, log=print)
        return
    net = fixed.load(out / "export")
    if part == "parts":
        hs.synth_parts(path, net, log=print)
    elif part == "core16":
        hs.synth_core(path, hs.cut(net, 16), log=print)
    else:
        hs.synth_core(path, net, pieces=(part,), log=print)


if __name__ == "__main__":
    hs.run_script(__doc__, main, (*synth.FAMILIES, "core", "core16", "generators", "parts"))
