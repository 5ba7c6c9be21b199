"""Switching activity of a synthesised unit: a zero-delay gate-level simulation that counts toggles.

Yosys maps the unit to generic gates (``synth -flatten; dffunmap; abc -g ...``: AND, OR, XOR,
MUX, ... and plain D flip-flops) and writes the netlist as JSON; :class:`GateSim` evaluates it
cycle by cycle on many independent copies at once (numpy, one column per copy) and counts, per
cycle, the nets whose value changed. Dynamic energy is proportional to switched capacitance, so
toggles per operation are a proxy of energy per operation (glitches and wire loads are left out).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .synth import yosys

GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"
_OPS = {
    "$_NOT_": lambda a: 1 - a["A"],
    "$_BUF_": lambda a: a["A"],
    "$_AND_": lambda a: a["A"] & a["B"],
    "$_NAND_": lambda a: 1 - (a["A"] & a["B"]),
    "$_OR_": lambda a: a["A"] | a["B"],
    "$_NOR_": lambda a: 1 - (a["A"] | a["B"]),
    "$_XOR_": lambda a: a["A"] ^ a["B"],
    "$_XNOR_": lambda a: 1 - (a["A"] ^ a["B"]),
    "$_ANDNOT_": lambda a: a["A"] & (1 - a["B"]),
    "$_ORNOT_": lambda a: a["A"] | (1 - a["B"]),
    "$_MUX_": lambda a: np.where(a["S"] == 1, a["B"], a["A"]),
}


def gate_netlist(component, workdir) -> dict:
    """Synthesise an Amaranth component to generic gates; return Yosys's JSON netlist."""
    from amaranth.back import rtlil

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.il").write_text(rtlil.convert(component, name="top"))
    yosys(f"read_rtlil top.il; synth -flatten -top top; dffunmap; abc -g {GATES}; opt_clean; "
          "write_json gates.json", work)
    return json.loads((work / "gates.json").read_text())


class GateSim:
    """Cycle-based simulation of a gate netlist on ``copies`` independent copies."""

    def __init__(self, netlist: dict, copies: int):
        module = netlist["modules"]["top"]
        self.ports = {name: p["bits"] for name, p in module["ports"].items()}
        nets = {b for p in module["ports"].values() for b in p["bits"] if isinstance(b, int)}
        self.comb, self.flops = [], []
        for cell in module["cells"].values():
            conn = cell["connections"]
            nets |= {b for bits in conn.values() for b in bits if isinstance(b, int)}
            if cell["type"] == "$_DFF_P_":
                self.flops.append((conn["D"][0], conn["Q"][0]))
            elif cell["type"] in _OPS:
                self.comb.append((cell["type"], {k: v[0] for k, v in conn.items() if k != "Y"}, conn["Y"][0]))
            else:
                raise ValueError(f"unexpected cell {cell['type']} in the gate netlist")
        self.index = {n: i for i, n in enumerate(sorted(nets))}
        self.values = np.zeros((len(self.index) + 2, copies), dtype=np.uint8)
        self.values[-1] = 1  # constant "1"; the row before it is constant "0"
        self.comb = self._ordered()
        self._flops = (np.array([self._row(d) for d, _ in self.flops], dtype=np.int64),
                       np.array([self._row(q) for _, q in self.flops], dtype=np.int64))
        self._settled: np.ndarray | None = None
        self.toggles = 0

    def _row(self, bit) -> int:
        if bit == "1":
            return len(self.index) + 1
        if isinstance(bit, str):
            return len(self.index)  # "0" and "x"
        return self.index[bit]

    def _ordered(self) -> list:
        """Combinational cells in evaluation order (inputs and flip-flop outputs first)."""
        driver = {y: i for i, (_, _, y) in enumerate(self.comb)}
        done, order = set(), []

        def visit(i, stack=()):
            if i in done:
                return
            if i in stack:
                raise ValueError("combinational loop in the gate netlist")
            for b in self.comb[i][1].values():
                if b in driver:
                    visit(driver[b], (*stack, i))
            done.add(i)
            order.append(i)

        sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
        for i in range(len(self.comb)):
            visit(i)
        return [(t, {k: self._row(b) for k, b in ins.items()}, self._row(y)) for t, ins, y in
                (self.comb[i] for i in order)]

    def set(self, port: str, values: np.ndarray) -> None:
        """Drive input ``port`` with one integer per copy (two's complement for negatives)."""
        values = np.asarray(values, dtype=np.int64)
        for k, bit in enumerate(self.ports[port]):
            if isinstance(bit, int):
                self.values[self.index[bit]] = (values >> k) & 1

    def get(self, port: str) -> np.ndarray:
        out = np.zeros(self.values.shape[1], dtype=np.int64)
        for k, bit in enumerate(self.ports[port]):
            out |= self.values[self._row(bit)].astype(np.int64) << k
        return out

    def cycle(self, count: bool = True) -> None:
        """Settle the logic for the current inputs, count the nets that differ from the previous
        cycle's settled values (inputs, gates and flip-flops), then clock the flip-flops."""
        v = self.values
        for kind, ins, y in self.comb:
            v[y] = _OPS[kind]({k: v[r] for k, r in ins.items()})
        if count and self._settled is not None:
            self.toggles += int((v != self._settled).sum())
        self._settled = v.copy()
        d, q = self._flops
        v[q] = v[d]
