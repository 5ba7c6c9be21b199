"""Switching activity of the MAC and AC units on the trained network's real activations
(results/hardware/toggles.json), beside the synapse-energy ratio of pdnn's energy model.

Usage: python scripts/hw_toggles.py [OUT_DIR]   (default results/hardware; reads OUT_DIR/export)

Both units compute hidden layer 1 (64 -> 64, 8-bit weights) of the exported network, lane by
lane, inputs in the core's order, with the accumulator cleared before each sum:
* AC: the p-bit samples of layer 0 (+-1), T = 10 samples of the first 50 test images, exactly
  the bits the core draws (pdnn.hw.fixed);
* MAC: the deterministic counterpart's 8-bit activations: each layer-0 neuron's firing
  probability as the core defines it (the fraction of its 256 thresholds below the sum), in
  0..255, for the first 200 test images.
Each unit is synthesised to generic gates by Yosys and simulated at gate level (pdnn.hw.toggles);
toggles per synaptic operation are counted over all nets. Uniform random inputs are reported
for contrast.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pdnn.energy.eo import synapse_pj
from pdnn.energy.tech import DEFAULT_TABLE, load_table
from pdnn.hw import export, fixed, rng, rtl, toggles


def per_op(unit, inputs: np.ndarray, weights: np.ndarray, work: Path) -> dict:
    """Toggles per operation of ``unit`` over sums of ``inputs [copies, n]`` with the per-copy
    weight rows ``weights [copies, n]``; checks the sums against numpy."""
    sim = toggles.GateSim(toggles.gate_netlist(unit, work), len(inputs))
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


def main(out: Path) -> None:
    start = time.time()
    net = fixed.load(out / "export")
    images, _ = export.test_images("fashion-mnist", 200)
    w1 = net.layers[1].weights  # [64, 64]
    h, n = w1.shape
    acc0 = images.astype(np.int64) @ net.layers[0].weights.T  # [200, 64]
    t0 = net.layers[0].thresholds
    probability = np.minimum((acc0[:, :, None] > t0[None]).sum(-1), 255)  # [200, 64] in 0..255
    samples = 10
    g = 50 * samples
    u = rng.random_indices(net.rng, 0, h, net.random_bits, 0, g)
    bits = (fixed.fire(np.repeat(acc0[:50], samples, axis=0), t0, u) > 0).astype(np.int64)  # [500, 64]

    def lanes(x):  # every input vector against every output neuron's weight row
        return np.repeat(x, h, axis=0), np.tile(w1, (len(x), 1))

    r = np.random.default_rng(0)
    table = load_table(DEFAULT_TABLE)
    report = {"layer": 1, "n": n, "weight_bits": net.weight_bits, "act_bits_mac": 8}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        mac, ac = rtl.MACUnit(8, net.weight_bits, n), rtl.ACUnit(net.weight_bits, n)
        report["network"] = {
            "mac": per_op(mac, *lanes(probability), work / "mac"),
            "ac": per_op(ac, *lanes(bits), work / "ac"),
        }
        report["uniform_random"] = {
            "mac": per_op(mac, *lanes(r.integers(0, 256, size=(200, n))), work / "mac2"),
            "ac": per_op(ac, *lanes(r.integers(0, 2, size=(500, n))), work / "ac2"),
        }
    for part in ("network", "uniform_random"):
        report[part]["ratio_mac_over_ac"] = report[part]["mac"]["toggles_per_op"] / report[part]["ac"]["toggles_per_op"]
    report["energy_model"] = {
        "table": DEFAULT_TABLE,
        "synapse_pj_mac": synapse_pj(n, 8, net.weight_bits, table) / n,
        "synapse_pj_ac": synapse_pj(n, 1, net.weight_bits, table) / n,
    }
    em = report["energy_model"]
    em["ratio_mac_over_ac"] = em["synapse_pj_mac"] / em["synapse_pj_ac"]
    report["paper"] = {"measured": 2.5, "predicted": 2.3}
    report["seconds"] = round(time.time() - start, 1)
    (out / "toggles.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/hardware"))
