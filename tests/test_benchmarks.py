"""The benchmark scripts still fit the library: each imports (the names it takes from pdnn exist),
the one that patches the p-bit's internals runs a round, and the speed table's timing and ratios
are checked on a fake clock. Their timings are not tested here."""
import importlib
import json
import re
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


def test_the_benchmarks_swapping_pbit_internals_reach_every_pbit(monkeypatch):
    """bench_pbit_probability, bench_pbit_passes_bound and bench_train_copies swap the p-bit's
    functions; at s = 8 the pooled p-bits (a backward of their own) and the shared-input one had
    taken three or four of the five p-bits past them, so "before" timed a mix (R232). Built as they
    build their samplers, every p-bit calls each swapped function once per step."""
    import collections

    import pdnn.functional as F
    from pdnn.nn import PBit

    bench = importlib.import_module("bench_speed")
    x, y, model, optimizer = bench.training_problem()
    sampled = bench.built_without(bench.PAST_THE_PBIT_FUNCTION, model, 8, x, y, optimizer)
    calls = collections.Counter()
    probability, gradient, setup = F._probability, F._surrogate_gradient, F._PBitFunction.setup_context

    def counted(name, function):
        return lambda *args: calls.update([name]) or function(*args)

    monkeypatch.setattr(F, "_probability", counted("probability", probability))
    monkeypatch.setattr(F, "_surrogate_gradient", counted("gradient", gradient))
    monkeypatch.setattr(F._PBitFunction, "setup_context", staticmethod(counted("setup", setup)))
    bench.adam_step(sampled, x, y, optimizer)
    pbits = sum(isinstance(m, PBit) for m in model.modules())
    assert pbits == 5 and calls == {"probability": pbits, "gradient": pbits, "setup": pbits}


def test_a_ratio_is_printed_beside_its_own_goal_only():
    """Each ratio was printed with its row's whole goal, so ``sigmoid/tanh`` seemed to have one (R232)."""
    goal_of = importlib.import_module("bench_speed").goal_of
    assert goal_of("T=16/T=1 <= 2; loop16/T=16 >= 8", "loop16/T=16") == "loop16/T=16 >= 8"
    assert goal_of("T=16/T=1 <= 2; loop16/T=16 >= 8", "T=16/T=1") == "T=16/T=1 <= 2"
    assert goal_of("T=16/T=1 <= 2; loop16/T=16 >= 8", "loop16/T=16 packed") == ""
    assert goal_of("pbit/tanh <= 2", "sigmoid/tanh") == ""


def test_a_count_option_below_one_is_named():
    import argparse

    counts = importlib.import_module("counts")
    assert counts.positive_count("3") == 3
    for text in ("0", "-2", "x", str(2**31), str(10**20)):  # (the last two: torch.set_num_threads' overflow)
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"expected an integer in [1, 2**31 - 1], "
                                                                      f"got '{text}'")):
            counts.positive_count(text)
    assert counts.positive_count(str(2**31 - 1)) == 2**31 - 1


def test_a_json_file_is_refused_before_the_measurement_or_its_folder_made(tmp_path):
    import argparse

    counts = importlib.import_module("counts")
    assert counts.output_file(str(tmp_path / "new" / "deeper" / "x.json")) == tmp_path / "new" / "deeper" / "x.json"
    assert (tmp_path / "new" / "deeper").is_dir()
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder; expected a file"):
        counts.output_file(str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="cannot make its folder"):
        counts.output_file(str(tmp_path / "file" / "x.json"))
    with pytest.raises(argparse.ArgumentTypeError, match=r"\.json': File name too long"):
        counts.output_file(str(tmp_path / ("x" * 300 + ".json")))
    if Path("/proc/self").is_dir():  # a folder that exists and takes no file, even for root
        with pytest.raises(argparse.ArgumentTypeError, match="cannot write into its folder"):
            counts.output_file("/proc/x.json")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "missing" / "x.json")
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    for link in ("dangling.json", "loop.json"):  # the write at the end would fail through the link
        with pytest.raises(argparse.ArgumentTypeError, match=f"{link}' is a link to .*, which cannot be reached"):
            counts.output_file(str(tmp_path / link))
    (tmp_path / "ahead.json").symlink_to(tmp_path / "new" / "made-by-the-write.json")  # its folder exists
    assert counts.output_file(str(tmp_path / "ahead.json")) == tmp_path / "ahead.json"
    if Path("/proc/self").is_dir():  # a link into a folder that takes no file
        (tmp_path / "into-proc.json").symlink_to("/proc/x.json")
        with pytest.raises(argparse.ArgumentTypeError, match="cannot write into /proc, where it links"):
            counts.output_file(str(tmp_path / "into-proc.json"))


def test_a_json_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """Every script took ``--json`` with ``write_text`` or ``open(..., "w")``: a write that failed
    (a full disk, a file-size limit) left half a file where the last run's had been (R232). Now the
    record, with the processor first, replaces the file only once all of it is on disk."""
    import os

    counts = importlib.import_module("counts")
    path = tmp_path / "speed.json"
    counts.write_json(path, {"rows": [1, 2]})
    written = path.read_text()
    assert list(json.loads(written)) == ["cpu", "rows"]

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        counts.write_json(path, {"rows": [3]})
    assert path.read_text() == written and [p.name for p in tmp_path.iterdir()] == ["speed.json"]
    monkeypatch.undo()
    (tmp_path / "link.json").symlink_to(path)  # a link keeps linking: its target is replaced
    counts.write_json(tmp_path / "link.json", {"rows": [4]})
    assert (tmp_path / "link.json").is_symlink() and "4" in path.read_text()
    takes_json = [name for name in SCRIPTS if '"--json"' in (BENCHMARKS / f"{name}.py").read_text()]
    assert len(takes_json) > 5 and all("write_json(args.json" in (BENCHMARKS / f"{name}.py").read_text()
                                       for name in takes_json)


def test_startup_refuses_a_source_folder_without_pdnn(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_startup.py", "--src", str(tmp_path), "--repeats", "1"])
    with pytest.raises(SystemExit):
        importlib.import_module("bench_startup").main()
    assert f"--src {tmp_path}: no pdnn package there" in capsys.readouterr().err


def test_delta_sampling_refuses_a_run_that_is_no_pbit_cnn(tmp_path):
    import argparse

    from pdnn.cli import main

    run = tmp_path / "tanh"
    assert main(["train", "--dataset", "demo", "--subset", "32", "--model", "mlp", "--width", "8", "--neuron", "tanh",
                 "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    args = argparse.Namespace(weights="trained", run=str(run), data_dir=None)
    with pytest.raises(SystemExit, match="is a tanh mlp; the delta passes take the reference CNN"):
        importlib.import_module("bench_delta_sampling").problem(args)
    with pytest.raises(SystemExit, match="does not exist"):
        importlib.import_module("bench_delta_sampling").problem(argparse.Namespace(**{**vars(args), "run": str(
            tmp_path / "missing")}))


def test_the_speed_table_times_each_configuration_and_divides_as_it_labels(monkeypatch):
    """Its ratios were only imported, never computed: a loop of one forward, or ratios taken the
    other way round, passed."""
    import torch

    bench = importlib.import_module("bench_speed")
    now, calls = [0.0], []
    monkeypatch.setattr(bench, "CLOCK", lambda: now[0])

    def config(name, seconds):
        return lambda: calls.append(name) or now.__setitem__(0, now[0] + seconds)
    row = bench.compare("r", "goal", {"T=1": config("one", 1.0), "T=10": config("ten", 3.0)}, repeats=4)
    assert row["ratio"] == {"T=10/T=1": 3.0} and row["spread"]["T=10/T=1"] == [3.0, 3.0]
    assert calls == ["one", "ten"] * 5  # a warm-up, then the repeats interleaved
    forwards = []
    out = bench.loop(lambda x: forwards.append(x) or x + len(forwards), torch.zeros(2), 16)
    assert len(forwards) == 16 and torch.equal(out, torch.full((2,), 8.5))  # 16 forwards, averaged
