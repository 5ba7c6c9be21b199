"""The benchmark scripts still fit the library: each imports (the names it takes from pdnn exist),
and the one that patches the p-bit's internals runs a round. Their timings are not tested here."""
import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("bench_*.py"))


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))


@pytest.mark.parametrize("name", SCRIPTS)
def test_imports(name):
    assert importlib.import_module(name).__doc__


def test_the_fusion_bound_runs_a_round():
    """It swaps the p-bit's probability for a pass-through, which the autograd function must
    accept (it saves that output for the backward pass)."""
    row = importlib.import_module("bench_pbit_passes_bound").one_round(1)
    assert set(row["median_s"]) == {"s=1", "s=8", "s=1 bound", "s=8 bound"}
    assert sys.modules["pdnn.functional"]._probability is importlib.import_module("bench_pbit_passes_bound").LIBRARY[0]


def test_a_count_option_below_one_is_named():
    import argparse

    counts = importlib.import_module("counts")
    assert counts.positive_count("3") == 3
    for text in ("0", "-2", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected an integer >= 1, got '{text}'"):
            counts.positive_count(text)
