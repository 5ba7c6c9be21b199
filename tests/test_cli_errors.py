"""Values a new user mistypes end in one line naming the value, never a traceback or a write."""
import json
import shutil
from pathlib import Path
import warnings

import pytest
import torch

import pdnn
from pdnn.cli import main
from pdnn.devices import resolve_device
from pdnn.models import ModelConfig

TINY = ["--dataset", "demo", "--subset", "256", "--model", "mlp", "--width", "32", "--quiet"]
TINY_STUDY = ["--dataset", "demo", "--subset", "100", "--width", "8", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as a CPU-only one, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pdnn {command}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_resolve_device_names_the_value(no_gpu, monkeypatch):
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    assert resolve_device(torch.device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu9'; expected one of cpu, cuda "):
        resolve_device("tpu9")
    for mps in ("mps", "mps:0"):  # (accepted, it failed after the first epoch: float64 sums, R223)
        with pytest.raises(ValueError, match=f"device '{mps}' is not supported: pdnn sums accuracies and statistics "
                                             "in float64, which MPS lacks; use --device cpu"):
            resolve_device(mps)
    with pytest.raises(ValueError, match="device 'meta' is not supported"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None) == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="device 'cuda:2' is not available: this machine has 2 GPU"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["tpu9", "cuda"])
def test_every_command_with_device_rejects_a_bad_one_before_writing(device, trained_run, tmp_path, capsys, no_gpu):
    commands = {
        "train": ["train", *TINY, "--out", str(tmp_path / "new")],
        "eval": ["eval", str(trained_run), "--quiet"],
        "convert": ["convert", str(trained_run), "--method", "pbit", "--out", str(tmp_path / "converted")],
        "study": ["study", "--dataset", "demo", "--out", str(tmp_path / "study")],
    }
    checkpoint = (trained_run / "checkpoint.pt").read_bytes()
    for command, argv in commands.items():
        assert main([*argv, "--device", device]) == 2, command
        line = one_line_error(capsys, command)
        assert f"'{device}'" in line
        assert "checkpoint" not in line  # a missing GPU must not read as a damaged run
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert (trained_run / "checkpoint.pt").read_bytes() == checkpoint
    assert not list(trained_run.glob("eval-*.json"))


def test_eval_without_a_gpu_names_the_device_not_the_checkpoint(trained_run, capsys, no_gpu):
    from pdnn.runs import evaluate_run

    assert main(["eval", str(trained_run), "--device", "cuda", "--quiet"]) == 2
    assert one_line_error(capsys, "eval") == (
        "pdnn eval: error: device 'cuda' is not available: "
        f"{'this torch is built without CUDA' if torch.version.cuda is None else 'no GPU is visible'}; "
        "use --device cpu")
    with pytest.raises(ValueError, match="device 'cuda'"):  # the library function checks it too
        evaluate_run(trained_run, device="cuda", progress=False)


def test_classes_below_one_or_beside_a_dataset_are_one_line_errors(capsys):
    for classes in ("0", "-3"):  # 0 became the default 10; -3 was a traceback
        assert main(["energy", "--model", "mlp", "--input-shape", "1,28,28", "--num-classes", classes]) == 2
        assert one_line_error(capsys, "energy").endswith(f"--num-classes must be an integer >= 1, got {classes}")
    assert main(["energy", "--model", "mlp", "--dataset", "demo", "--num-classes", "3"]) == 2  # was ignored
    assert "--num-classes goes with --input-shape" in one_line_error(capsys, "energy")


def test_counts_beyond_torch_and_beyond_memory_are_one_line_errors(trained_run, tmp_path, capsys):
    """10**20 (beyond int64) gave OverflowError or torch's C++ frames, 10**12 MemoryError or its
    allocator's RuntimeError, each a traceback; now one line, exit 2, nothing written."""
    big = str(10**20)
    for argv, said in ((["eval", str(trained_run), "--samples", "1,2", "--repeats", big], "more than 2**63 - 1"),
                       (["eval", str(trained_run), "--samples", "1,2", "--repeats", str(10**12)], "out of memory"),
                       (["eval", str(trained_run), "--adaptive", "--prior-samples", big],
                        "--prior-samples must be an integer from 0 to 10000"),
                       (["train", *TINY[:-3], "-s", big, "--out", str(tmp_path / "s")], "more than 2**63 - 1"),
                       (["train", *TINY[:-3], "--width", big, "--out", str(tmp_path / "w")], "more than 2**63 - 1"),
                       (["energy", "--model", "mlp", "--dataset", "demo", "--samples", f"1,{big}"],
                        "--samples must be at most 2**53 to be priced"),
                       (["train", *TINY[:-3], "--width", str(10**12), "--out", str(tmp_path / "w")],
                        "out of memory (tried to allocate 3136000000000000 bytes)"),
                       (["eval", str(trained_run), "--aggregate", "layer", "--samples", str(2**63 - 1), "--repeats",
                         "1"], "out of memory (numel: integer multiplication overflow")):  # (more elements than int64)
        assert main([*argv, *(["--quiet"] if argv[0] != "energy" else [])]) == 2, argv
        assert said in one_line_error(capsys, argv[0])
    assert not list(tmp_path.iterdir()) and not list(trained_run.glob("eval-*.json"))


def test_a_gpu_running_out_of_memory_is_one_line(trained_run, monkeypatch, capsys):
    import pdnn.cli.evaluate

    def short_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    monkeypatch.setattr(pdnn.cli.evaluate, "evaluate_run", short_of_memory)
    assert main(["eval", str(trained_run), "--samples", "2", "--repeats", "1", "--quiet"]) == 2
    assert one_line_error(capsys, "eval").endswith("out of memory (Tried to allocate 2.00 GiB): the sizes or counts "
                                                   "asked for need more memory than this machine has")
    assert not list(trained_run.glob("eval-*.json"))


def test_caps_beyond_torch_s_counts_still_mean_all_the_data(tmp_path, capsys):
    """A subset, batch size or monitored count of 10**20 means all, as before the bound on counts:
    such a run trains, resumes and evaluates."""
    big, run = str(10**20), str(tmp_path / "run")
    assert main(["train", *TINY[:2], "--model", "mlp", "--width", "8", "--subset", big, "--batch-size", big,
                 "--monitor-examples", big, "--epochs", "1", "--quiet", "--out", run]) == 0
    assert main(["train", "--out", run, "--resume", "--epochs", "2", "--quiet"]) == 0
    assert main(["eval", run, "--samples", "1", "--repeats", "1", "--quiet"]) == 0
    from pdnn.experiments.study import StudySpec, study_models
    assert study_models(StudySpec(dataset="demo", model="mlp", subset=10**20, eval_subset=10**20))  # (was refused)


def test_an_empty_model_name_and_a_weight_decay_beyond_float32_are_named(tmp_path, capsys):
    """--model '' trained a cnn; 1e300 was called no finite number."""
    assert main(["train", *TINY[:-3], "--model", "", "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert one_line_error(capsys, "train").endswith("unknown model ''; expected one of cnn, mlp, vae")
    assert main(["train", *TINY, "--weight-decay", "1e300", "--out", str(tmp_path / "run")]) == 2
    assert one_line_error(capsys, "train").endswith("error: --weight-decay must be a number from 0 to 3.4e+38 (a float32), "
                                                    "got 1e+300")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("section, key, value", [("train", "samples", "2"), ("train", "bogus", 1),
                                                 ("data", "subset", -5)])
def test_a_bad_value_in_a_run_s_record_names_the_file_not_the_option(section, key, value, trained_run, tmp_path,
                                                                     capsys):
    """It was named as if given on the command line (after a warning that -s 2 was ignored as it
    kept '2'), and an unknown key as in "the run's configuration"."""
    import json

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    config[section][key] = value
    (run / "config.json").write_text(json.dumps(config))
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    assert main(["train", "--out", str(run), "--resume", "-s", "2", "--quiet"]) == 2
    assert f"{run}/config.json: bad 'train' or 'data' section (" in one_line_error(capsys, "train")
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before


def test_bit_widths_that_are_no_integers_or_too_long_are_one_line_errors(tmp_path, capsys):
    """--weight-bits 2.5 was called no comma-separated list; a quant:k of 5000 digits gave
    int()'s traceback (Python converts no more than 4300)."""
    assert main(["energy", "--model", "mlp", "--dataset", "demo", "--weight-bits", "4,2.5"]) == 2
    assert one_line_error(capsys, "energy").endswith("--weight-bits must be a comma-separated list of integers, "
                                                     "got '4,2.5' ('2.5' is not one)")
    assert main(["energy", "--model", "mlp", "--dataset", "demo", "--weight-bits", "9" * 5000]) == 2
    assert one_line_error(capsys, "energy").endswith("is out of range, an integer of more digits than can be read)")
    neuron = "quant:" + "9" * 5000
    assert main(["energy", "--model", "mlp", "--dataset", "demo", "--neuron", neuron]) == 2
    assert "bits in neuron 'quant:999" in one_line_error(capsys, "energy")
    assert main(["train", *TINY[:-3], "--neuron", neuron, "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert "must be an integer 1..8" in one_line_error(capsys, "train")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("width", ["0", "-5"])
def test_width_below_one_is_a_one_line_error(width, tmp_path, capsys):
    argv = [*TINY[:-3], "--width", width, "--quiet"]
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    assert one_line_error(capsys, "train").endswith(f"error: --width must be an integer >= 1 (or None for the model's own), "
                                                   f"got {width}")
    assert main(["energy", "--model", "cnn", "--dataset", "demo", "--width", width]) == 2
    assert f"got {width}" in one_line_error(capsys, "energy")
    assert main(["study", "--dataset", "demo", "--width", width, "--out", str(tmp_path / "study")]) == 2
    assert f"got {width}" in one_line_error(capsys, "study")
    assert not list(tmp_path.iterdir())


def test_model_config_checks_width():
    assert ModelConfig(width=None).width is None and ModelConfig(width=8).build() is not None
    for bad in (0, -5, 2.5, True, "8"):
        with pytest.raises(ValueError, match=f"width must be an integer >= 1.*got {bad!r}"):
            ModelConfig(width=bad)
    with pytest.raises(ValueError, match="got 0"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "width": 0})


@pytest.mark.parametrize("command", ["generate", "fid"])
def test_generators_name_a_bad_device_not_the_checkpoint(command, trained_run, tmp_path, capsys, no_gpu):
    argv = {"generate": ["generate", str(trained_run), "--out", str(tmp_path / "images")],
            "fid": ["fid", str(trained_run), "--classifier", str(trained_run), "--quiet"]}[command]
    assert main([*argv, "--device", "tpu9"]) == 2
    line = one_line_error(capsys, command)
    assert "'tpu9'" in line and "checkpoint" not in line
    assert not list(tmp_path.iterdir())


def test_extra_outputs_never_replace_a_runs_own_files(trained_run, tmp_path, capsys):
    """``--json``/``--png``/``plot --out`` name a copy of a result: never the run's checkpoint,
    configuration or history, and only a file of their format."""
    records = {name: (trained_run / name).read_bytes() for name in ("checkpoint.pt", "config.json", "metrics.json")}
    run = str(trained_run)
    attempts = [
        ("eval", ["eval", run, "--quiet", "--json", str(trained_run / "checkpoint.pt")], ".json"),
        ("eval", ["eval", run, "--quiet", "--json", str(trained_run / "config.json")], "record config.json"),
        ("energy", ["energy", str(trained_run), "--png", str(trained_run / "metrics.json")], ".png"),
        ("tradeoff", ["tradeoff", str(trained_run), "--json", str(trained_run / "checkpoint.pt")], ".json"),
        ("plot", ["plot", str(trained_run), "--out", str(trained_run / "checkpoint.pt")], ".png"),
        ("plot", ["plot", str(trained_run), "--out", str(tmp_path / "figure.xyz")], "expected a file ending in"),
        ("fid", ["fid", run, "--classifier", run, "--json", str(trained_run / "metrics.json")], "record metrics.json"),
        *[("energy", ["energy", "--model", "mlp", "--dataset", "demo", "--json", str(trained_run / name)], f"record {name}")
          for name in ("adaptive.json", "calibration.json", "fid-clf.json", "fid.json")],  # what other commands read
        ("tradeoff", ["tradeoff", str(trained_run), "--png", str(trained_run / "energy.png")], "record energy.png"),
        ("eval", ["eval", run, "--quiet", "--json", str(trained_run / "energy.json")], "record energy.json"),
    ]
    for command, argv, expected in attempts:
        assert main(argv) == 2, argv
        assert expected in one_line_error(capsys, command), argv
    assert {name: (trained_run / name).read_bytes() for name in records} == records
    assert not list(tmp_path.iterdir()) and not list(trained_run.glob("eval-*.json"))


@pytest.mark.parametrize("name", ["spec.json", "summary.json", "plan-state.json", "adaptive.json", "draws.json",
                                  "synth-core.json", "cosim-layer.json", "toggles.json", "headline.json"])
def test_extra_outputs_never_replace_a_study_export_or_plan_record(trained_run, tmp_path, capsys, name):
    """A hardware export's spec.json, a study's summary.json, a reproduce plan's state: records
    that cost hours, outside any run directory."""
    (tmp_path / name).write_text('{"kept": true}')
    for command, option in (("energy", "--json"), ("tradeoff", "--json")):
        assert main([command, str(trained_run), option, str(tmp_path / name)]) == 2
        assert f"{tmp_path / name} exists, and {name} is the name of a record" in one_line_error(capsys, command)
    assert (tmp_path / name).read_text() == '{"kept": true}'
    assert main(["energy", str(trained_run), "--json", str(tmp_path / "new" / name)]) == 0  # a new file is no record


def test_an_extra_output_that_cannot_be_written_is_refused_before_the_results_are(trained_run, tmp_path,
                                                                                   monkeypatch, capsys):
    """A read-only --json/--png folder failed after the command had rewritten the run's own
    result, leaving it out of step with its figure."""
    import os

    import pdnn.cli.common

    locked = tmp_path / "read-only"
    locked.mkdir()
    writable = os.access
    monkeypatch.setattr(pdnn.cli.common.os, "access", lambda path, mode: Path(path) != locked and writable(path, mode))
    run, before = str(trained_run), {f.name: f.read_bytes() for f in trained_run.iterdir()}
    for command, argv in (("eval", ["eval", run, "--quiet", "--json", str(locked / "e.json")]),
                          ("energy", ["energy", run, "--samples", "7", "--png", str(locked / "sub" / "e.png")]),
                          ("tradeoff", ["tradeoff", run, "--png", str(locked / "t.png")])):
        assert main(argv) == 2, argv
        assert f"cannot write into {locked}" in one_line_error(capsys, command)
    assert {f.name: f.read_bytes() for f in trained_run.iterdir()} == before and not list(locked.iterdir())


def test_an_evaluation_that_its_run_cannot_take_is_refused_before_it_runs(trained_run, monkeypatch, capsys):
    """A read-only (or, for root, immutable) run had been evaluated whole, then the result was
    lost at its write, with the table unprinted and the --json copy unwritten (review R103); the
    distance of pdnn fid alike."""
    import errno

    import pdnn.cli.common
    import pdnn.cli.evaluate
    import pdnn.cli.fid

    def locked(*args, dir=None, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(dir))

    def evaluated(*args, **kwargs):
        raise AssertionError("evaluated before the run was found read-only")

    monkeypatch.setattr(pdnn.cli.common.tempfile, "TemporaryFile", locked)
    monkeypatch.setattr(pdnn.cli.evaluate, "evaluate_run", evaluated)
    monkeypatch.setattr(pdnn.cli.evaluate, "evaluate_run_adaptive", evaluated)
    monkeypatch.setattr(pdnn.cli.fid, "fid_run", evaluated)
    run = str(trained_run)
    for argv, name in ((["eval", run], "eval-network.json"), (["eval", run, "--aggregate", "layer"], "eval-layer.json"),
                       (["eval", run, "--adaptive"], "adaptive.json"), (["fid", run, "--classifier", run], "fid-clf.json")):
        assert main([*argv, "--quiet"]) == 2
        assert one_line_error(capsys, argv[0]).endswith(f"{trained_run}: cannot write {name} into this run (Operation "
                                                       "not permitted); evaluate a copy of the run in a folder you "
                                                       "can write")


def test_a_result_its_run_does_not_take_is_still_printed_and_copied(trained_run, tmp_path, monkeypatch, capsys):
    """An immutable result file, or an append-only run folder, takes the temporary file the check
    before the work writes, then refuses the result: which was lost, the table unprinted and the
    --json copy unwritten (review R105)."""
    import errno

    import pdnn.runs

    written = pdnn.runs.write_json

    def refused_in_the_run(path, document):
        if Path(path).parent == trained_run:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        written(path, document)

    monkeypatch.setattr(pdnn.runs, "write_json", refused_in_the_run)
    before = {f.name: f.read_bytes() for f in trained_run.iterdir()}
    for options, name in ((["--samples", "1,2", "--repeats", "1"], "eval-network.json"),
                          (["--adaptive", "--max-samples", "4"], "adaptive.json")):
        copy = tmp_path / f"copy-{name}"
        assert main(["eval", str(trained_run), "--quiet", "--json", str(copy), *options]) == 2
        captured = capsys.readouterr()
        assert captured.out.startswith(f"{trained_run}  (demo test, ") and len(captured.out.splitlines()) >= 3
        assert captured.err.strip() == (f"pdnn eval: error: {trained_run / name}: operation not permitted; the run "
                                        "did not take this result")
        assert json.loads(copy.read_text())["run"] == str(trained_run)
    assert {f.name: f.read_bytes() for f in trained_run.iterdir()} == before


@pytest.mark.parametrize("option, value, expected", [
    ("--weight-decay", "-1", "--weight-decay must be a number from 0 to 3.4e+38 (a float32), got -1.0"),
    ("--weight-decay", "nan", "--weight-decay must be a number from 0 to 3.4e+38 (a float32), got nan"),
    ("--lr", "1e300", "--lr must be a finite number > 0 (at most 3.4e+37: Adam's first step is 10 x lr, a float32), "
                      "got 1e+300"),
    ("--lr", "1e38", "a float32), got 1e+38"),  # accepted, then overflowed in Adam's first step
    ("--seed", "18446744073709541610", "--seed must be an integer in [-2**63, 2**64 - 10007) (the seeds up to "
                                       "seed + 10007 are used), got 18446744073709541610"),
    ("--monitor-examples", "-1", "--monitor-examples must be an integer >= 1 (or none: every test example), got -1"),
    # each named the library's field (lr, batch_size), not the option typed
    ("--batch-size", "0", "error: --batch-size must be an integer >= 1, got 0"),
    ("--epochs", "0", "error: --epochs must be an integer >= 1, got 0"),
    ("--beta", "nan", "error: --beta must be a finite number > 0, got nan"),
    ("--weight-bits", "9", "error: --weight-bits must be an integer 1..8 or 32 (float), got 9"),
])
def test_training_options_torch_would_refuse_late_are_refused_first(option, value, expected, tmp_path, capsys):
    assert main(["train", *TINY, option, value, "--out", str(tmp_path / "run")]) == 2
    assert one_line_error(capsys, "train").endswith(expected)
    assert not list(tmp_path.iterdir())


def test_layer_evaluation_names_the_seeds_its_samplers_derive(trained_run, capsys):
    seed = 2**64 - 1
    assert main(["eval", str(trained_run), "--seed", str(seed), "--samples", "1,2", "--repeats", "2", "--subset",
                 "8", "--aggregate", "layer", "--quiet"]) == 2
    assert one_line_error(capsys, "eval").endswith(f"error: --seed must be an integer in [-2**63, 2**64 - 1002) (the "
                                                   f"seeds up to seed + 1002 are used), got {seed}")  # (it said seed)
    assert main(["eval", str(trained_run), "--samples", "1,2", "--repeats", str(2 * 10**16), "--subset", "8",
                 "--aggregate", "layer", "--quiet"]) == 2  # (it named the seed, with an empty range; R228)
    assert one_line_error(capsys, "eval").endswith(f"error: --repeats must leave 1000 x (repeats - 1) + the largest T "
                                                   f"below 2**63 under aggregate='layer', which seeds each repeat and T "
                                                   f"on its own, got {2 * 10**16} repeats")
    assert main(["eval", str(trained_run), "--seed", str(2**64), "--adaptive", "--quiet"]) == 2
    assert one_line_error(capsys, "eval").endswith(f"error: --seed must be an integer in [-2**63, 2**64), got {2**64}")


def test_eval_seeds_two_to_the_32_apart_draw_alike_as_its_help_says(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for mode in (["--samples", "1,4", "--repeats", "2"], ["--samples", "1,4", "--aggregate", "layer"],
                 ["--adaptive", "--max-samples", "8"]):
        drawn = []
        for seed in (3, 3 + 2**32, 4):
            copy = tmp_path / f"{seed}.json"
            assert main(["eval", str(run), *mode, "--seed", str(seed), "--subset", "64", "--json", str(copy),
                         "--quiet"]) == 0
            document = json.loads(copy.read_text())
            drawn.append(document["results"] if "results" in document else document["samples_histogram"])
        assert drawn[0] == drawn[1] != drawn[2], mode


@pytest.mark.filterwarnings("ignore:.*does not record which weights it measured")  # the evaluation written here
def test_plot_draws_rows_without_a_spread(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for rows in ([{"samples": 1, "accuracy_mean": 0.5}],  # read as one deterministic row
                 [{"samples": t, "accuracy_mean": 0.5} for t in (1, 2)]):
        (run / "eval-network.json").write_text(json.dumps({"results": rows}))
        assert main(["plot", str(run), "--out", str(tmp_path / "fig.png")]) == 0


@pytest.mark.filterwarnings("ignore:.*does not record which weights it measured")  # the evaluation written here
def test_plot_draws_the_curve_in_order_of_t(trained_run, tmp_path, monkeypatch):
    """Rows of a file written out of order (by hand, or another tool) had been joined in file
    order, a line back and forth."""
    import shutil

    from matplotlib.axes import Axes

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    rows = [{"samples": t, "accuracy_mean": a, "accuracy_std": 0.01} for t, a in ((10, 0.6), (1, 0.4), (2, 0.5))]
    (run / "eval-network.json").write_text(json.dumps({"results": rows}))
    drawn, errorbar = [], Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, *a, **k: drawn.append((list(x), list(y)))
                        or errorbar(self, x, y, *a, **k))
    assert main(["plot", str(run), "--out", str(tmp_path / "fig.png")]) == 0
    assert drawn == [([1, 2, 10], [40.0, 50.0, 60.0])]


def test_a_diverging_run_stops_without_saving_nan_weights(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--lr", "1e36", "--epochs", "2", "--out", str(run)]) == 2
    line = one_line_error(capsys, "train")
    assert "training diverged in epoch 1" in line and "the loss is nan" in line and "nothing is saved" in line
    assert not run.exists()  # not even the config.json, which refused the corrected rerun as "other settings"
    assert main(["train", *TINY, "--lr", "1e-3", "--epochs", "1", "--out", str(run)]) == 0


def test_resuming_from_another_models_checkpoint_names_the_mismatch(trained_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", *TINY[:-3], "--width", "16", "--quiet", "--epochs", "1", "--out", str(other)]) == 0
    (other / "checkpoint.pt").write_bytes((trained_run / "checkpoint.pt").read_bytes())
    assert main(["train", "--out", str(other), "--resume", "--epochs", "2", "--quiet"]) == 2
    line = one_line_error(capsys, "train")
    assert "checkpoint.pt does not match config.json: " in line and "size mismatch" in line
    assert main(["eval", str(other), "--quiet"]) == 2  # one line there too, not torch's fourteen
    line = one_line_error(capsys, "eval")
    assert "checkpoint.pt does not match config.json: " in line and "more)" in line


def test_study_checks_every_run_before_writing(tmp_path, capsys):
    base = ["study", "--dataset", "demo", "--out", str(tmp_path / "study")]
    for extra, expected in ((["--beta", "nan"], "error: --beta must be a finite number > 0, got nan"),
                            (["--lr", "nan"], "error: --lr must be a finite number > 0"),
                            (["--eval-subset", "0"], "error: --eval-subset must be an integer >= 1, got 0"),
                            (["--quant-bits", "a"], "--quant-bits must be integers >= 1 separated by commas, got 'a'"),
                            (["--quant-bits", "2,9"], "--quant-bits must be an integer 1..8, got 9")):
        assert main([*base, *extra]) == 2
        assert expected in one_line_error(capsys, "study")
    assert not list(tmp_path.iterdir())


def test_values_that_were_ignored_or_crashed(trained_run, tmp_path, capsys):
    assert main(["energy", str(trained_run), "--reference-weight-bits", "0", "--json", str(tmp_path / "e.json")]) == 2
    assert "got 0" in one_line_error(capsys, "energy")
    assert main(["train", *TINY, "--neuron", "tanh", "--epochs", "1", "--out", str(tmp_path / "tanh")]) == 0
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "tanh"), "--method", "pbit", "--recalibrate-bn", "--bn-samples", "0",
                 "--out", str(tmp_path / "converted")]) == 2
    assert "--bn-samples must be an integer >= 1, got 0" in one_line_error(capsys, "convert")
    assert not (tmp_path / "converted").exists()
    assert main(["eval", str(trained_run / "config.json"), "--quiet"]) == 2
    assert one_line_error(capsys, "eval").endswith("config.json is a file; expected a run directory "
                                                   "(one holding config.json)")


def test_a_damaged_evaluation_is_named_by_plot(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for results in ("null", '[{"samples": 1, "accuracy_mean": NaN, "accuracy_std": 0}]',
                    '[{"samples": -3, "accuracy_mean": 0.5}]', '[{"samples": 1, "accuracy_mean": 7.5}]',
                    '[{"samples": 100000000000000000000, "accuracy_mean": 0.5}]'):  # (a log axis' traceback)
        (run / "eval-network.json").write_text(f'{{"results": {results}}}')
        assert main(["plot", str(run), "--out", str(tmp_path / "fig.png")]) == 2
        assert str(run / "eval-network.json") in one_line_error(capsys, "plot")
    for examples in ("[1]", '"64"', "0", "1.5"):  # the count the readers compare between runs
        (run / "eval-network.json").write_text(f'{{"results": [{{"samples": 1, "accuracy_mean": 0.5}}], '
                                               f'"examples": {examples}}}')
        for argv in (["plot", str(run), "--out", str(tmp_path / "fig.png")],
                     ["tradeoff", str(run), "--json", str(tmp_path / "t.json")]):
            assert main(argv) == 2
            assert f"{run / 'eval-network.json'}: 'examples' must be" in one_line_error(capsys, argv[0])
    for flag in ('"no"', "0", "null"):  # a string "no" was drawn as a deterministic baseline
        (run / "eval-network.json").write_text(f'{{"results": [{{"samples": 1, "accuracy_mean": 0.5}}], '
                                               f'"deterministic": {flag}}}')
        assert main(["plot", str(run), "--out", str(tmp_path / "fig.png")]) == 2
        assert f"'deterministic' must be true or false, got {flag}" in one_line_error(capsys, "plot")
    assert not (tmp_path / "fig.png").exists()


@pytest.mark.filterwarnings("ignore:.*does not record which weights it measured")  # the evaluations written here
@pytest.mark.parametrize("deterministic, line", [(False, False), (True, True), (None, True)])
def test_plot_draws_a_line_only_for_a_deterministic_run(trained_run, tmp_path, monkeypatch, deterministic, line):
    """A p-DNN evaluated at T = 1 once is a point, not a baseline; files without the key fall
    back to the shape of a deterministic evaluation (one exact row at T = 1)."""
    import shutil

    from matplotlib.axes import Axes

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    evaluation = {"results": [{"samples": 1, "accuracy_mean": 0.5, "accuracy_std": 0.0}]}
    if deterministic is not None:
        evaluation["deterministic"] = deterministic
    (run / "eval-network.json").write_text(json.dumps(evaluation))
    lines, axhline = [], Axes.axhline
    monkeypatch.setattr(Axes, "axhline", lambda self, y, *a, **k: lines.append(y) or axhline(self, y, *a, **k))
    assert main(["plot", str(run), "--out", str(tmp_path / "fig.png")]) == 0
    assert lines == ([50.0] if line else [])


@pytest.mark.filterwarnings("ignore:.*does not record which weights it measured")  # the evaluations written here
@pytest.mark.parametrize("option, title", [([], "accuracy vs samples (network aggregation)"),
                                           (["--title", ""], ""), (["--title", "mine"], "mine")])
def test_plot_title_is_the_default_one_given_or_none(trained_run, tmp_path, monkeypatch, option, title):
    import shutil

    from matplotlib.axes import Axes

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "eval-network.json").write_text(json.dumps({"results": [{"samples": 1, "accuracy_mean": 0.5}]}))
    titles, set_title = [], Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, text, *a, **k: titles.append(text) or set_title(self, text))
    assert main(["plot", str(run), "--out", str(tmp_path / "fig.png"), *option]) == 0
    assert titles == [title]


def test_pgf_is_offered_only_where_its_tex_program_is_installed(trained_run, tmp_path, monkeypatch, capsys):
    """Without xelatex, a .pgf figure failed after the work with 'fig.pgf: no such file or directory'."""
    monkeypatch.setattr(shutil, "which", lambda program: None)
    assert main(["plot", str(trained_run), "--out", str(tmp_path / "fig.pgf")]) == 2
    message = one_line_error(capsys, "plot")
    assert "--out" in message and "expected a file ending in" in message and ".pgf" not in message.split(":")[-1]


def _evaluated_copy(trained_run, run, results):
    shutil.copytree(trained_run, run)
    (run / "eval-network.json").write_text(json.dumps({"results": results}))
    return run


@pytest.mark.filterwarnings("ignore:.*does not record which weights it measured")  # the evaluations written here
def test_plot_draws_names_and_titles_literally(trained_run, tmp_path, monkeypatch):
    """A name starting with '_' was drawn but left out of the legend; a '$' started TeX math (a
    parse error's traceback, or '$5 at T=1, $9' drawn as '5atT=1,9')."""
    figures = []
    monkeypatch.setattr(pdnn.plots, "save_figure", lambda fig, out, **kw: figures.append(fig) or Path(out))
    curve = [{"samples": t, "accuracy_mean": 0.5, "accuracy_std": 0.01} for t in (1, 2)]
    runs = [_evaluated_copy(trained_run, tmp_path / name, curve) for name in ("_baseline", "p$\\x$")]
    title = "energy: $5 at T=1, $9 at T=10 and $\\badcmd$"
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "fig.png"), "--title", title]) == 0
    (ax,) = figures[0].axes
    figures[0].canvas.draw()  # parses every text: a '$' read as math would fail or lose characters here
    assert [text.get_text().strip() for text in ax.get_legend().get_texts()] == ["_baseline", "p\\$\\x\\$"]
    assert ax.get_title() == title.replace("$", "\\$")


@pytest.mark.filterwarnings("ignore:.*does not record which weights it measured")  # the evaluations written here
def test_labels_of_equal_deterministic_lines_do_not_print_over_each_other(trained_run, tmp_path, monkeypatch):
    """Four lines of equal accuracy put the fourth label on the first; with no p-DNN every label
    was at T = 1."""
    figures = []
    monkeypatch.setattr(pdnn.plots, "save_figure", lambda fig, out, **kw: figures.append(fig) or Path(out))
    line = [{"samples": 1, "accuracy_mean": 0.4, "accuracy_std": 0.0}]
    curve = [{"samples": t, "accuracy_mean": 0.5, "accuracy_std": 0.01} for t in (1, 10)]
    lines = [_evaluated_copy(trained_run, tmp_path / f"line{i}", line) for i in range(5)]
    pbit = _evaluated_copy(trained_run, tmp_path / "pbit", curve)
    for runs in ([pbit, *lines], lines):
        assert main(["plot", *map(str, runs), "--out", str(tmp_path / "fig.png")]) == 0
        (ax,) = figures[-1].axes
        figures[-1].canvas.draw()
        boxes = [text.get_window_extent() for text in ax.texts]
        assert len(boxes) == 5
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.filterwarnings("ignore:.*does not record which weights it measured")  # the evaluations written here
def test_plot_warns_about_runs_of_different_datasets(trained_run, tmp_path):
    import shutil

    evaluation = {"results": [{"samples": t, "accuracy_mean": 0.5, "accuracy_std": 0.01} for t in (1, 2)]}
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        shutil.copytree(trained_run, run)
        (run / "eval-network.json").write_text(json.dumps(evaluation))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["plot", *map(str, runs), "--out", str(tmp_path / "same.png")]) == 0
    assert not any("different datasets" in str(w.message) for w in caught)
    config = json.loads((runs[1] / "config.json").read_text())
    config["data"]["dataset"] = "cifar10"
    (runs[1] / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"different datasets \(.*a: demo, .*b: cifar10\)"):
        assert main(["plot", *map(str, runs), "--out", str(tmp_path / "mixed.png")]) == 0
    for run, examples in zip(runs, (200, 100)):
        (run / "eval-network.json").write_text(json.dumps({**evaluation, "examples": examples}))
    with pytest.warns(UserWarning, match=r"different numbers of test examples \(.*a: 200, .*b: 100\)"):
        assert main(["plot", *map(str, runs), "--out", str(tmp_path / "mixed.png")]) == 0


def test_plot_names_the_evaluation_a_missing_layer_curve_needs(trained_run, tmp_path, capsys):
    assert main(["plot", str(trained_run), "--aggregate", "layer", "--out", str(tmp_path / "fig.png")]) == 2
    assert f"run `pdnn eval {trained_run} --aggregate layer` first" in capsys.readouterr().err


def test_a_damaged_hardware_export_is_named(tmp_path):
    from pdnn.errors import UsageError
    from pdnn.hw import fixed
    from pdnn.io import RunError

    (tmp_path / "spec.json").write_text('{"format": "pdnn-hw-1", "layers": [')
    with pytest.raises(RunError, match="spec.json is not valid JSON"):
        fixed.load(tmp_path)
    for bits, said, match in (("NaN", RunError, r"spec.json holds NaN, which is not JSON"),
                              ("2.5", UsageError, "input_bits in .*spec.json must be an integer >= 1, got 2.5")):
        (tmp_path / "spec.json").write_text(f'{{"format": "pdnn-hw-1", "input_bits": {bits}, "weight_bits": 4, '
                                            '"random_bits": 8, "max_samples": 10, "rng": "lfsr", "layers": []}')
        with pytest.raises(said, match=match):
            fixed.load(tmp_path)
    (tmp_path / "spec.json").write_text('{"format": "pdnn-hw-1", "input_bits": 8}')
    with pytest.raises(UsageError, match=r"spec.json is not a complete export \(KeyError: 'weight_bits'\)"):
        fixed.load(tmp_path)


def test_a_checkpoint_with_non_finite_weights_is_named(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.dim() == 2)
    state["model"][name][0, 0] = float("nan")
    torch.save(state, run / "checkpoint.pt")
    assert main(["eval", str(run), "--quiet"]) == 2
    assert one_line_error(capsys, "eval").endswith(f"holds non-finite weights or statistics ({name}): the run "
                                                   "diverged; train it again with a smaller learning rate")


def test_a_file_where_a_folder_is_expected_is_said_so(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["train", *TINY, "--out", str(tmp_path / "afile")]) == 2
    assert one_line_error(capsys, "train").endswith(f"error: {tmp_path / 'afile'} is a file where a folder is "
                                                    "expected")  # was: [Errno 17] File exists; then said twice
    assert main(["demo", "--out", str(tmp_path / "afile"), "--quiet"]) == 2
    assert f"{tmp_path / 'afile'} is a file where a folder is expected" in one_line_error(capsys, "demo")
    assert main(["energy", "--model", "mlp", "--dataset", "demo", "--json", str(tmp_path / "afile" / "e.json")]) == 2
    assert f"{tmp_path / 'afile'} is a file where a folder is expected" in one_line_error(capsys, "energy")


def test_a_hand_edited_config_is_a_one_line_error(trained_run, tmp_path, capsys):
    config = json.loads((trained_run / "config.json").read_text())
    edits = {"data": ({**config, "data": 5}, "its 'data' section is 5; expected an object"),
             "train": ({**config, "train": None}, "its 'train' section is None; expected an object"),
             "extra": ({**config, "model": {**config["model"], "extra": {"foo": 1}}},
                       "bad 'model' section (mlp() got an unexpected keyword argument 'foo')")}
    for name, (edited, said) in edits.items():  # each was a TypeError's traceback
        run = tmp_path / name
        shutil.copytree(trained_run, run)
        (run / "config.json").write_text(json.dumps(edited))
        checkpoint = (run / "checkpoint.pt").read_bytes()
        assert main(["eval", str(run), "--quiet"]) == 2
        assert said in one_line_error(capsys, "eval")
        assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 2
        assert said in one_line_error(capsys, "train")
        assert (run / "checkpoint.pt").read_bytes() == checkpoint


@pytest.mark.parametrize("command", [["train", "--out", "RUN"], ["study", "--out", "RUN"], ["reproduce", "--out", "RUN"],
                                     ["eval", "RUN"]])
def test_a_data_dir_that_is_not_a_folder_is_refused(command, tmp_path, capsys):
    """A mistyped root was passed over for the next root holding the dataset, unsaid."""
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in command]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--data-dir", str(tmp_path / "no-such-root")])
    assert stop.value.code == 2 and "no-such-root is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_plot_says_a_folder_is_missing_or_a_generator(tmp_path, capsys):
    out = str(tmp_path / "p.png")
    assert main(["plot", str(tmp_path / "nowhere"), "--out", out]) == 2  # was: run `pdnn eval` first
    assert one_line_error(capsys, "plot").endswith(f"run directory {tmp_path / 'nowhere'} does not exist")
    vae = tmp_path / "vae"
    assert main(["train", "--task", "vae", "--dataset", "demo", "--subset", "64", "--epochs", "1", "--quiet",
                 "--out", str(vae)]) == 0
    capsys.readouterr()
    assert main(["plot", str(vae), "--out", out]) == 2  # was: run `pdnn eval`, which refuses a generator
    assert "is a generator, which has no accuracy versus T" in one_line_error(capsys, "plot")
    assert not (tmp_path / "p.png").exists()


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"pdnn {pdnn.__version__}\n"


def test_every_command_names_its_samples_option_in_its_errors(trained_run, capsys):
    """``--repeats``, ``--seed`` and ``--checkpoints`` named themselves; ``--samples`` was called
    ``samples`` (the library's argument), in eval, energy, fid, study and convert alike."""
    for command, argv in (("eval", ["eval", str(trained_run), "--quiet"]),
                          ("energy", ["energy", "--model", "mlp", "--dataset", "demo"]),
                          ("fid", ["fid", str(trained_run), "--classifier", str(trained_run)]),
                          ("study", ["study", "--dataset", "demo", "--out", "unwritten"]),
                          ("convert", ["convert", str(trained_run), "--method", "pbit", "--out", "unwritten",
                                       "--calibrate"])):
        for samples, said in (("0", "--samples must be an integer >= 1, got 0"),
                              ("1,,2", "--samples must be integers >= 1 separated by commas, got '1,,2'"),
                              ("1,1", "--samples lists 1 more than once")):
            assert main([*argv, "--samples", samples]) == 2, (argv, samples)
            assert said in one_line_error(capsys, command), (argv, samples)


def test_a_value_or_run_given_twice_is_refused(trained_run, tmp_path, capsys):
    """Each was merged silently (or, for plot, drawn as identical curves of one label)."""
    run, copy = str(trained_run), tmp_path / "runs" / "run"
    shutil.copytree(trained_run, copy)
    assert main(["eval", str(copy), "--samples", "1,2", "--repeats", "1", "--quiet"]) == 0
    figures = tmp_path / "figures"
    for command, argv, said in (
            ("eval", ["eval", run, "--samples", "1,2,1", "--quiet"], "--samples lists 1 more than once, got '1,2,1'"),
            ("energy", ["energy", "--model", "mlp", "--dataset", "demo", "--neuron", "pbit,tanh,pbit"],
             "--neuron lists pbit more than once"),
            ("energy", ["energy", "--model", "mlp", "--dataset", "demo", "--weight-bits", "4,4"],
             "--weight-bits lists 4 more than once"),
            ("plot", ["plot", str(copy), str(copy / ".." / "run"), "--out", str(figures / "a.png")],
             f"{copy / '..' / 'run'} is given twice (as {copy} before); expected each run once"),
            ("plot", ["plot", str(copy), str(copy), "--out", str(figures / "a.png")],
             f"{copy} is given twice; expected each run once")):
        assert main(argv) == 2, argv
        assert said in one_line_error(capsys, command)
    assert not figures.exists() and not list(trained_run.glob("eval-*.json"))


def test_a_config_naming_a_dataset_of_other_images_is_a_one_line_error(trained_run, monkeypatch, capsys):
    """A config.json edited to name a dataset of other shapes failed in the first layer's matmul."""
    import dataclasses

    import pdnn.runs

    load = pdnn.runs.load

    def colour(*args, **kwargs):  # the run's dataset, as if its images had three channels
        data = load(*args, **kwargs)
        return dataclasses.replace(data, test_x=data.test_x.expand(-1, 3, -1, -1))

    monkeypatch.setattr(pdnn.runs, "load", colour)
    for argv in (["eval", str(trained_run), "--quiet"], ["eval", str(trained_run), "--adaptive", "--quiet"]):
        assert main(argv) == 2
        assert one_line_error(capsys, "eval").endswith(
            "config.json: its model takes inputs of shape (1, 28, 28), but demo has images of shape (3, 28, 28)")
    assert not list(trained_run.glob("eval-*.json")) and not (trained_run / "adaptive.json").exists()


def test_train_and_study_refuse_what_cannot_be_classified_or_named(tmp_path, capsys):
    """A dataset of one class trained to 100 % as a classifier; an empty --out wrote into the
    current folder; a p-bit neuron given twice trained and plotted twice."""
    for argv, command, said in (
            (["train", "--dataset", "celeba", "--out", str(tmp_path / "run")], "train",
             "celeba has 1 class: there is nothing to classify"),
            (["study", "--dataset", "celeba", "--out", str(tmp_path / "study")], "study",
             "celeba has 1 class: the study compares classifiers"),
            (["study", *TINY_STUDY, "--pbit-neurons", "pbit,pbit", "--out", str(tmp_path / "study")], "study",
             "expected 'pbit', optionally with 'pbit-unipolar', each once"),
            (["study", *TINY_STUDY, "--model", "vae", "--out", str(tmp_path / "study")], "study",
             "the model 'vae' is a generator; the study compares classifiers")):
        assert main(argv) == 2, argv
        assert said in one_line_error(capsys, command)
    for command in (["train", *TINY], ["study", *TINY_STUDY], ["demo"], ["reproduce"]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--out", ""])
        assert info.value.code == 2 and "--out: expected a path, got an empty one" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_resuming_from_a_damaged_config_is_a_one_line_error(trained_run, tmp_path, capsys):
    config = json.loads((trained_run / "config.json").read_text())
    edits = {"no dataset": ({**config, "data": {}}, "its 'data' section names no dataset to resume on"),
             "no subset": ({**config, "data": {"dataset": "demo"}}, "its data configuration differs from the requested one (in --subset: '(absent)' -> None)"),
             "extra": ({**config, "model": {**config["model"], "extra": []}}, "bad 'model' section"),
             "augment": ({**config, "train": {**config["train"], "augment": "no"}},
                         "augment must be true or false, got 'no'")}
    for name, (edited, said) in edits.items():  # each was a traceback, or accepted as augment on
        run = tmp_path / name
        shutil.copytree(trained_run, run)
        (run / "config.json").write_text(json.dumps(edited))
        checkpoint = (run / "checkpoint.pt").read_bytes()
        assert main(["train", "--out", str(run), "--resume", "--epochs", "1", "--quiet"]) == 2, name
        assert said in one_line_error(capsys, "train")
        assert (run / "checkpoint.pt").read_bytes() == checkpoint


def test_a_config_that_is_not_an_object_is_named_as_such(trained_run, tmp_path, capsys):
    """A config.json holding a list or a string was said to have "no 'model' section", as if it
    had other sections (R164)."""
    for name, text in (("list", "[1, 2]"), ("string", '"hello"'), ("null", "null")):
        run = tmp_path / name
        shutil.copytree(trained_run, run)
        (run / "config.json").write_text(text)
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        for argv in (["eval", str(run), "--samples", "1", "--quiet"], ["energy", str(run)]):
            assert main(argv) == 2, argv
            assert (f"{run / 'config.json'} holds {text}; expected a run's configuration (a JSON object with a "
                    "'model' section)") in one_line_error(capsys, argv[0])
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (run / "config.json").write_text('{"model": 3}')
    assert main(["energy", str(run)]) == 2  # (said to have no 'model' section, R166)
    assert f"{run / 'config.json'}: its 'model' section is 3; expected an object" in one_line_error(capsys, "energy")


def test_a_model_section_missing_an_option_is_refused_not_defaulted(trained_run, tmp_path, capsys):
    """A config.json whose model section lost its neuron was read with the default, a p-bit: a
    tanh run was evaluated and priced as a p-bit network, its eval written, with nothing said
    (R138). Every run records every option, so a missing one is damage."""
    config = json.loads((trained_run / "config.json").read_text())
    for key in ("neuron", "beta", "width"):
        run = tmp_path / key
        shutil.copytree(trained_run, run)
        (run / "config.json").write_text(json.dumps({**config, "model": {k: v for k, v in config["model"].items()
                                                                       if k != key}}))
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        for argv in (["eval", str(run), "--samples", "1", "--quiet"], ["energy", str(run)],
                     ["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]):
            assert main(argv) == 2, argv
            assert f"config.json: its 'model' section lacks {key}; every run's config.json records them all" \
                in one_line_error(capsys, argv[0])
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_loading_a_run_onto_a_device_names_a_device_it_cannot_use(trained_run):
    """``load_model(run, "gpu")`` gave torch's RuntimeError, and "cuda" on a machine without it an
    AssertionError from deep in torch (R144 D8)."""
    from pdnn.convert import load_model
    from pdnn.errors import UsageError

    with pytest.raises(UsageError, match="unknown device 'gpu'; expected one of cpu, cuda "):
        load_model(trained_run, "gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="device 'cuda' is not available"):
            load_model(trained_run, "cuda")
    assert next(load_model(trained_run, "cpu")[0].parameters()).device.type == "cpu"


def test_options_a_neuron_does_not_use_are_said(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", *TINY, "--epochs", "1", "--neuron", "tanh", "--beta", "3", "-s", "2",
                     "--out", str(tmp_path / "run")]) == 0
        said = " ".join(str(w.message) for w in caught)
        assert "--beta 3.0 does nothing to tanh neurons" in said
        assert "-s 2 with deterministic tanh neurons: every sample is the same" in said
        caught.clear()
        assert main(["train", *TINY, "--epochs", "1", "--neuron", "pbit", "--beta", "3", "-s", "2",
                     "--out", str(tmp_path / "pbit")]) == 0
        assert not [w for w in caught if "does nothing" in str(w.message) or "every sample" in str(w.message)]
        caught.clear()  # a generator's latent is drawn once for its s samples: a tanh decoder's are one
        assert main(["train", "--task", "vae", "--dataset", "demo", "--subset", "64", "--epochs", "1", "--quiet",
                     "--width", "4", "--latent", "4", "--neuron", "tanh", "-s", "3", "--out", str(tmp_path / "vae")]) == 0
        assert "-s 3 with deterministic tanh neurons: every sample is the same" in " ".join(map(str, caught))


def test_only_train_runs_under_torchrun(trained_run, tmp_path, monkeypatch, capsys):
    """Under torchrun every process ran ``pdnn study`` as if alone: one found the other's lock and
    the study died after torchrun's timeout, leaving its lock behind."""
    run = shutil.copytree(trained_run, tmp_path / "run")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["study", *TINY_STUDY, "--out", str(tmp_path / "study")]) == 2
    assert "pdnn study runs in one process; under torchrun (WORLD_SIZE=2) only `pdnn train` does" in \
        one_line_error(capsys, "study")
    assert main(["eval", str(run), "--samples", "1"]) == 2
    assert not (tmp_path / "study").exists() and not (run / "eval-network.json").exists()
    monkeypatch.setenv("WORLD_SIZE", "01")  # torchrun with one process, as pdnn train reads it
    assert main(["eval", str(run), "--samples", "1", "--subset", "10"]) == 0


@pytest.mark.parametrize("damage", ["no data section", "no dataset"])
def test_a_config_that_records_no_dataset_is_named_by_the_commands_that_read_the_data(trained_run, tmp_path,
                                                                                       capsys, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    if damage == "no data section":
        del config["data"]
    else:
        del config["data"]["dataset"]
    (run / "config.json").write_text(json.dumps(config))
    for argv in (["eval", str(run), "--samples", "1", "--quiet"],
                 ["eval", str(run), "--adaptive", "--max-samples", "3", "--quiet"]):
        assert main(argv) == 2
        assert f"{run / 'config.json'} records no dataset" in one_line_error(capsys, "eval")


def test_hw_sim_of_a_run_directory_gives_an_export_command_that_works(trained_run, tmp_path, capsys):
    import shlex

    run = tmp_path / "a run"  # a space in the path: the command is quoted
    shutil.copytree(trained_run, run)
    assert main(["hw", "sim", str(run)]) == 2
    error = one_line_error(capsys, "hw sim")
    assert f"{run} is a run directory, not an export" in error
    command = shlex.split(error.split("`")[1])
    assert command[:4] == ["pdnn", "hw", "export", str(run)] and command[4] == "--out"
    assert Path(command[5]).parent == run.parent  # beside the run, not inside it


def test_energy_may_name_its_own_default_files_of_the_run(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["energy", str(run), "--json", str(run / "energy.json"), "--png", str(run / "energy.png")]) == 0
    assert json.loads((run / "energy.json").read_text())["configs"]
    capsys.readouterr()
    assert main(["energy", str(run), "--json", str(run / "energy.png")]) == 2  # the figure's name for the JSON
    assert "expected a file ending in .json" in one_line_error(capsys, "energy")


def test_energy_refuses_a_folder_where_a_default_file_of_the_run_goes_before_writing_either(trained_run, tmp_path,
                                                                                             capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "energy.json").write_text('{"old": true}')
    (run / "energy.png").unlink(missing_ok=True)  # (the shared run may hold one drawn by another test)
    (run / "energy.png").mkdir()
    assert main(["energy", str(run), "--samples", "1", "--no-layers"]) == 2
    assert "energy.png is a folder where the run's PNG goes" in one_line_error(capsys, "energy")
    assert (run / "energy.json").read_text() == '{"old": true}'


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    """`pdnn energy ... | head -1`: the write after the reader left ended in "error: [Errno 32]
    Broken pipe" and status 2, as if the command had failed."""
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "pdnn", "energy", "--model", "mlp", "--dataset", "fashion-mnist",
               "--samples", "1,2,5,10,20,50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader leaves before the first line
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGPIPE and b"error" not in stderr and b"Traceback" not in stderr


@pytest.mark.parametrize("command", [["train", "--dataset", "demo", "--out", "unused"], ["eval", "unused"],
                                     ["study", "--dataset", "demo", "--out", "unused"],
                                     ["convert", "unused", "--method", "pbit", "--recalibrate-bn", "--out", "new"]])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_subset_below_one_names_the_option(command, value, capsys):
    """The library's check named its argument, 'subset must be an integer >= 1 or None' (review R103;
    pdnn convert's, R162)."""
    with pytest.raises(SystemExit) as stop:
        main([*command, "--subset", value, "--quiet"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        f"error: argument --subset: expected an integer >= 1 (leave it out for every example), got {value}")


@pytest.mark.parametrize("argv, command, unknown", [
    (["eval", "runs/x", "--bogus"], "eval", "--bogus"),
    (["eval", "runs/p", "runs/t"], "eval", "runs/t"),
    (["train", "--out", "runs/x", "--bogus-opt", "3"], "train", "--bogus-opt 3"),
    (["hw", "sim", "d", "--bogus"], "hw sim", "--bogus"),
    (["hw", "--bogus", "sim", "d"], "hw", "--bogus"),
    (["hw", "sim", "d", "hw"], "hw sim", "hw"),  # (an unknown spelt as a command is no command)
    (["--bogus", "eval", "runs/x"], "", "--bogus"),  # pdnn's own: not eval's
])
def test_an_unknown_argument_shows_its_command_s_usage(argv, command, unknown, capsys, tmp_path, monkeypatch):
    """argparse left unknown arguments to the top-level parser, which showed pdnn's usage
    (``COMMAND ...``) instead of the command's (R138 minor)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    said = f"pdnn {command}".strip()
    assert err.startswith(f"usage: {said} ") and f"{said}: error: unrecognized arguments: {unknown}\n" in err


@pytest.mark.parametrize("argv, said", [
    (["eval", ""], "argument RUN_DIR: expected a path, got an empty one"),
    (["plot", "runs/a", " "], "argument RUN_DIR: expected a path, got an empty one"),
    (["hw", "sim", ""], "argument DIR: expected a path, got an empty one"),
    (["train", "--out", "runs/x", "--label", ""], "argument --label: expected a name, got an empty one"),
])
def test_an_empty_path_or_label_is_named_as_empty(argv, said, capsys, tmp_path, monkeypatch):
    """``eval ""`` read the current folder ("config.json does not exist"), ``--label ""`` gave
    plots an empty name (R138 minors)."""
    monkeypatch.chdir(tmp_path)  # (where the command would have written)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and f"error: {said}\n" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, said", [
    (["train", *TINY, "--out", "runs/x", "--neuron", "quant:-2"],
     "bits in neuron 'quant:-2' must be an integer 1..8, got -2"),
    (["energy", "--model", "mlp", "--dataset", "demo", "--neuron", ""], "unknown neuron ''; expected one of pbit,"),
    (["energy", "--model", "mlp", "--dataset", "demo", "--reference-neuron="], "unknown neuron ''; expected one of"),
])
def test_a_negative_width_or_an_empty_neuron_is_named(argv, said, capsys, tmp_path, monkeypatch):
    """quant:-2 was "unknown" where quant:0 named the width; an empty --neuron priced the
    default, where an empty item in a list was refused (R138 minors)."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert said in one_line_error(capsys, argv[0])
    assert not any(tmp_path.iterdir())
