"""Training end to end on the embedded data: checkpoints, bit-for-bit resume, DDP, CLI runs."""
import io
import json
import os
import pickle
import re
import shlex
import signal
import socket
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pdnn
from pdnn.cli import build_parser, main
from pdnn.data import load
from pdnn.data.cifar import CLASSES
from pdnn.data.idx import idx_bytes
from pdnn.devices import where_measured
from pdnn.errors import UsageError
from pdnn.evaluate import running_sums
from pdnn.models import ModelConfig
from pdnn.runs import RunError, load_checkpoint, load_model
from pdnn.tasks import TASKS
from pdnn.train import TrainConfig, batches_per_epoch, check_batch_shares

TINY = ["--dataset", "demo", "--subset", "256", "--model", "mlp", "--width", "32", "--quiet"]


def train(out, *extra):
    return main(["train", *TINY, "--out", str(out), *extra])


def make_cifar(root, per_batch=24, seed=0):
    """A tiny CIFAR-10 (random 32x32 colour images) in the python-pickle layout under ``root``; its
    augmentation is crop and flip."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return ["--dataset", "cifar10", "--data-dir", str(root), "--model", "mlp", "--width", "32", "--quiet"]


def assert_same_run(a_dir, b_dir):
    a, b = load_checkpoint(a_dir / "checkpoint.pt"), load_checkpoint(b_dir / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda ms: [{k: v for k, v in m.items() if "time" not in k and "per_s" not in k} for m in ms]
    assert strip(a["metrics"]) == strip(b["metrics"])


def test_train_writes_a_complete_run_directory(tmp_path):
    run = tmp_path / "run"
    assert train(run, "--epochs", "2", "--train-samples", "2") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["neuron"] == "pbit" and config["train"]["samples"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(0 <= m["test_accuracy"] <= 1 and m["train_loss"] > 0 for m in metrics)
    assert all(m["device"] == "cpu" and m["processes"] == 1 for m in metrics)  # where the speed was measured
    assert all({k: m[k] for k in where_measured()} == where_measured() for m in metrics)
    model, _ = load_model(run)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_resume_continues_bit_for_bit(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(straight, "--epochs", "2", "--train-samples", "2", "--seed", "3") == 0
    assert train(resumed, "--epochs", "1", "--train-samples", "2", "--seed", "3") == 0
    assert main(["train", "--out", str(resumed), "--resume", "--epochs", "2", "--quiet"]) == 0
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda ms: [{k: v for k, v in m.items() if "time" not in k and "per_s" not in k} for m in ms]
    assert strip(a["metrics"]) == strip(b["metrics"])


def test_a_checkpoint_of_the_weights_alone_is_not_resumed_and_stays(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    path = run / "checkpoint.pt"
    state = load_checkpoint(path)
    torch.save({key: state[key] for key in ("model", "epoch", "metrics")}, path)  # as committed for evaluation
    kept = path.read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) != 0
    said = capsys.readouterr().err
    assert "holds no optimizer, generators (a copy of the weights for evaluation)" in said
    assert path.read_bytes() == kept
    model, _ = load_model(run)  # evaluation reads it
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    # the advice works: "train it again without --resume" was refused while the checkpoint was there (R215)
    assert said.strip().endswith(f"so the run cannot be resumed; to train it anew, delete {path} (or train into "
                                 "another folder)")
    path.write_bytes(kept[:1000])  # cut short: the same advice
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"; to train it anew, delete {path} (or train into another folder)")
    path.unlink()
    assert train(run, "--epochs", "1") == 0


def test_task_is_recorded_and_runs_from_before_tasks_resume_bit_for_bit(tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert train(straight, "--epochs", "2") == 0
    assert train(run, "--epochs", "1", "--task", "classify") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["task"] == "classify"
    del config["train"]["task"]  # as written before tasks existed, with the streams of process 0 only
    (run / "config.json").write_text(json.dumps(config))
    state = load_checkpoint(run / "checkpoint.pt")
    [state["generators"]] = state["generators"]
    torch.save(state, run / "checkpoint.pt")
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["task"] == "classify"
    assert_same_run(straight, run)


def test_process_0_of_several_or_the_only_one_speaks_for_the_run(monkeypatch):
    """A process alone with RANK set had its warnings about the options left unsaid (R188)."""
    from pdnn.train import speaks_for_the_run

    for world, rank, speaks in ((None, None, True), (None, "1", True), (" 1", "1", True), ("2", "0", True),
                                ("2", "1", False), ("2", None, True), ("x", "1", True)):
        for name, value in (("WORLD_SIZE", world), ("RANK", rank)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert speaks_for_the_run() is speaks, (world, rank)


def test_each_process_trains_on_its_own_device(monkeypatch):
    """Under torchrun, ``cuda`` means ``cuda:<LOCAL_RANK>`` (nccl); the CPU stays the CPU (gloo)."""
    import pdnn.train as training

    calls = []
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost",
                        "MASTER_PORT": "29500"}.items():  # as torchrun sets them
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(device))
    monkeypatch.setattr(training.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(training.dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(training.dist, "get_rank", lambda: 1)
    assert training._distributed("cuda") == ("cuda:1", 1, 2) and calls == ["cuda:1", "nccl"]
    calls.clear()
    assert training._distributed("cpu") == ("cpu", 1, 2) and calls == ["gloo"]
    with pytest.raises(UsageError, match="--device cuda:0 under torchrun would train the 2 processes of this machine"):
        training._distributed("cuda:0")
    calls.clear()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one process per machine: its GPU may be named
    assert training._distributed("cuda:0") == ("cuda:0", 1, 2) and calls == ["cuda:0", "nccl"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # process 1 on a machine of one GPU
    with pytest.raises(UsageError, match="device 'cuda:1' is not available: this machine has 1 GPU"):
        training._distributed("cuda")


@pytest.mark.parametrize("environment,message", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is 2, but RANK and MASTER_ADDR and MASTER_PORT are not set: start "
                          "multi-process training with torchrun"),
    ({"WORLD_SIZE": "abc"}, "the environment variable WORLD_SIZE='abc' is not a count of processes"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' is not a count of processes"),
    ({"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "a", "MASTER_PORT": "1"},
     "the environment variable RANK='x' is not a process index"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "a", "MASTER_PORT": "http"},
     "the environment variable MASTER_PORT='http' is not a port (torchrun sets it)"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "a", "MASTER_PORT": "70000"},
     "the environment variable MASTER_PORT='70000' is not a port (1 to 65535; torchrun sets it)"),
    ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "a", "MASTER_PORT": "1"},  # it had waited half an hour
     "the environment variable RANK=5 is not a process of WORLD_SIZE=2 (0 to 1; torchrun sets both)"),
])
def test_a_partial_or_malformed_torchrun_environment_is_said_in_one_line(monkeypatch, tmp_path, capsys,
                                                                         environment, message):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert train(tmp_path / "run", "--epochs", "1") == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_the_task_registry_drives_the_loop_and_the_cli():
    assert set(TASKS) >= {"classify"} and all(TASKS[name].name == name for name in TASKS)
    choices = next(a.choices for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                   if a.dest == "task")
    assert tuple(choices) == tuple(TASKS)
    with pytest.raises(ValueError, match="unknown task 'paint'; expected one of classify"):
        TrainConfig(task="paint").validate()


def test_existing_run_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    before = (run / "checkpoint.pt").read_bytes()
    assert train(run, "--epochs", "1") == 2
    assert "already holds a checkpoint; pass --resume (in Python, resume=True)" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before
    with pytest.warns(UserWarning, match=r"ignored: --neuron tanh \(it keeps pbit\)"):
        assert train(run, "--epochs", "1", "--neuron", "tanh", "--resume") == 0  # --resume reuses config.json


def test_a_finished_run_kept_without_its_checkpoint_names_the_command_that_trains_it_again(tmp_path, monkeypatch,
                                                                                             capsys):
    """Studies keep runs without their weights; the command that rebuilds one is the run's own
    options, which the refusal to resume spells out (and which retrain it bit for bit here)."""
    monkeypatch.chdir(tmp_path)
    assert train("run", "--epochs", "1", "--neuron", "pbit-unipolar", "-s", "2", "--schedule", "cosine") == 0
    before = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    (tmp_path / "run" / "checkpoint.pt").unlink()
    assert main(["train", "--out", "run", "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    command = shlex.split(re.search("`([^`]*)`", err).group(1))
    assert "nothing to resume" in err and command[:2] == ["pdnn", "train"] and command[-2:] == ["--out", "run"]
    assert main([*command[1:], "--quiet"]) == 0
    after = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    (tmp_path / "run" / "checkpoint.pt").unlink()
    assert main(["train", "--out", "run", "--resume", "--epochs", "3", "--quiet"]) == 2
    command = shlex.split(re.search("`([^`]*)`", capsys.readouterr().err).group(1))
    assert command[command.index("--epochs") + 1] == "3"  # as asked now, not the run's 1 (R168)


def test_the_command_that_trains_a_run_again_keeps_its_values_and_processes(tmp_path):
    """A label that starts with "-" was read by argparse as an option; a run trained by 2 processes
    was named a one-process command, which trains other weights."""
    from pdnn.cli import build_parser
    from pdnn.train_config import recorded_processes, train_command

    run = tmp_path / "run"
    assert main(["train", "--dataset", "demo", "--subset", "64", "--model", "mlp", "--width", "4", "--epochs", "1",
                 "--seed", "-5", "--label=-v2", "--quiet", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    command = shlex.split(train_command(config, run))
    parsed = build_parser().parse_args(command[1:])
    assert (parsed.label, parsed.seed, parsed.subset, parsed.width) == ("-v2", -5, 64, 4)
    assert recorded_processes(run) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps([{**m, "processes": 2} for m in metrics]))
    assert recorded_processes(run) == 2
    assert shlex.split(train_command(config, run, 2))[:6] == ["torchrun", "--standalone", "--nproc_per_node=2", "-m",
                                                             "pdnn", "train"]


def test_held_out_monitoring_records_the_examples_it_measured(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "demo", "--subset", "100", "--model", "mlp", "--width", "8", "--epochs", "1",
                 "--monitor-examples", "5000", "--quiet", "--out", str(run)]) == 0
    epoch, = json.loads((run / "metrics.json").read_text())
    assert epoch["test_examples"] == 100  # the test split holds 100; 5000 were asked for
    assert epoch["test_accuracy"] * 100 == pytest.approx(round(epoch["test_accuracy"] * 100))


def test_a_last_batch_of_one_joins_the_one_before():
    assert [batches_per_epoch(n, 64) for n in (1, 2, 64, 65, 66, 129, 130)] == [1, 1, 1, 1, 2, 2, 3]
    assert batches_per_epoch(5, 1) == 5  # batches of one are the user's choice
    # under torchrun every process must get two examples of the last batch, or it joins the one before
    assert [batches_per_epoch(n, 32, world=2) for n in (65, 66, 67, 68, 69)] == [2, 2, 2, 3, 3]
    assert [batches_per_epoch(n, 32, world=4) for n in (71, 72)] == [2, 3]


def test_a_training_set_one_more_than_a_multiple_of_the_batch_trains(tmp_path, capsys):
    """The MLP's batch norm cannot take statistics of one example: a set of 65 crashed at the end of its
    first epoch; a batch size of one is refused at the first step, naming the option."""
    assert main(["train", "--model", "mlp", "--epochs", "1", "--subset", "65", "--out", str(tmp_path / "a"),
                 "--quiet"]) == 0
    assert main(["train", "--model", "mlp", "--epochs", "1", "--subset", "8", "--batch-size", "1",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "use a --batch-size of at least 2" in capsys.readouterr().err
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    assert main(["train", "--model", "mlp", "--epochs", "1", "--subset", "1", "--out", str(tmp_path / "c"),
                 "--quiet"]) == 2  # the batch size cannot help a training set of one example
    assert "train on at least 2 examples (the training set holds 1)" in capsys.readouterr().err
    assert main(["train", "--model", "mlp", "--epochs", "1", "--subset", "1", "--batch-size", "1",
                 "--out", str(tmp_path / "d"), "--quiet"]) == 2  # both are too small: both named
    assert ("use a --batch-size of at least 2 and train on at least 2 examples (the training set holds 1)"
            in capsys.readouterr().err)


def test_bad_options_exit_2_with_a_message(tmp_path, capsys):
    assert train(tmp_path / "a", "--neuron", "relu") == 2
    assert "unknown neuron 'relu'" in capsys.readouterr().err
    assert train(tmp_path / "b", "--train-samples", "0") == 2
    assert "samples (s, the training samples: -s/--train-samples) must be an integer >= 1, got 0" \
        in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "c"), "--resume"]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_programming_mistake_shows_its_traceback(tmp_path, monkeypatch, capsys):
    """Only errors of the user's input become one-line messages; a TypeError from a bug propagates."""
    import pdnn.cli.train

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(pdnn.cli.train, "train", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        train(tmp_path / "run", "--epochs", "1")
    assert train(tmp_path / "run", "--epochs", "1", "--neuron", "relu") == 2  # checked before the loop runs
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("pdnn train: error: unknown neuron 'relu'; expected one of pbit")


def test_zero_or_fewer_epochs_are_rejected(tmp_path, capsys):
    assert train(tmp_path / "a", "--epochs", "0") == 2
    assert "error: --epochs must be an integer >= 1, got 0" in capsys.readouterr().err  # (it said epochs)
    assert not (tmp_path / "a").exists()
    run = tmp_path / "run"
    assert train(run, "--epochs", "2") == 0
    config, checkpoint = (run / "config.json").read_bytes(), (run / "checkpoint.pt").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "0", "--quiet"]) == 2
    assert "error: --epochs must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--epochs", "1", "--quiet"]) == 2
    assert "has trained 2 epochs; epochs 1 would end before that" in capsys.readouterr().err
    assert (run / "config.json").read_bytes() == config and (run / "checkpoint.pt").read_bytes() == checkpoint


def test_options_a_resume_ignores_are_named_with_the_value_kept(tmp_path, recwarn):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--model", "mlp", "--lr", "0.001",
                 "--quiet"]) == 0  # the run's own values: nothing is ignored
    assert not [w for w in recwarn if "ignored" in str(w.message)]
    with pytest.warns(UserWarning) as caught:
        assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--model", "cnn", "--lr", "0.1",
                     "--no-augment", "--quiet"]) == 0
    [message] = [str(w.message) for w in caught if "ignored" in str(w.message)]
    assert message.endswith("ignored: --model cnn (it keeps mlp), --lr 0.1 (it keeps 0.001), --no-augment "
                            "(it keeps augmentation)")
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "mlp" and config["train"]["lr"] == 0.001 and config["train"]["epochs"] == 3
    with pytest.warns(UserWarning) as caught:  # options the run was given no value for keep what that means
        assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--monitor-examples", "5", "--label",
                     "x", "--quiet"]) == 0
    [message] = [str(w.message) for w in caught if "ignored" in str(w.message)]
    assert message.endswith("ignored: --monitor-examples 5 (it keeps every test example), --label x (it keeps no "
                            "label)")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal_else_one_line_per_epoch(tmp_path, capsys, monkeypatch):
    args = [a for a in TINY if a != "--quiet"]
    assert main(["train", *args, "--epochs", "2", "--out", str(tmp_path / "log")]) == 0
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch")] == ["epoch 1", "epoch 2"]
    assert "\r" not in err and "it/s" not in err  # stderr is not a terminal here: no bar
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", *args, "--epochs", "1", "--out", str(tmp_path / "tty")]) == 0
    assert "epoch 1/1" in terminal.getvalue() and "\r" in terminal.getvalue()


def test_eval_and_plot_cli(tmp_path, capsys):
    pdnn_run, det_run = tmp_path / "p", tmp_path / "d"
    assert train(pdnn_run, "--epochs", "1") == 0
    assert train(det_run, "--epochs", "1", "--neuron", "tanh") == 0
    copy = tmp_path / "copy.json"
    assert main(["eval", str(pdnn_run), "--samples", "1,4", "--repeats", "2", "--json", str(copy), "--quiet"]) == 0
    document = json.loads(copy.read_text())
    assert [r["samples"] for r in document["results"]] == [1, 4]
    assert all(r["repeats"] == 2 and 0 <= r["accuracy_mean"] <= 1 for r in document["results"])
    source = load("demo", progress=False).source  # which copy of the data was read, as the run's epochs say
    assert document["data_source"] == source and source.endswith("(IDX)")
    assert [e["data_source"] for e in json.loads((pdnn_run / "metrics.json").read_text())] == [source]
    assert {k: document[k] for k in where_measured()} == where_measured()
    capsys.readouterr()
    assert main(["eval", str(det_run), "--quiet"]) == 0
    assert [r["samples"] for r in json.loads((det_run / "eval-network.json").read_text())["results"]] == [1]
    out = capsys.readouterr().out
    row = out.splitlines()[-1].split()
    assert row[0] == "1" and row[2:] == ["-", "1"]  # one repeat has no spread to print (it printed 0.00)
    assert ("deterministic: every sample is the same, so T = 1 is measured once for T = 1, 2, 5, 10, 20, 50"
            in out)  # the T values asked for are not dropped without a word
    assert main(["eval", str(pdnn_run), "--samples", "1,2", "--aggregate", "layer", "--quiet"]) == 0
    assert (pdnn_run / "eval-layer.json").exists()
    figure = tmp_path / "fig.png"
    assert main(["plot", str(pdnn_run), str(det_run), "--out", str(figure)]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["eval", str(pdnn_run), "--samples", "0,2", "--quiet"]) == 2
    assert "got 0" in capsys.readouterr().err


def test_plot_gives_baselines_colours_no_curve_has(tmp_path, monkeypatch):
    """Six baselines beside a curve: the sixth took the first curve's colour."""
    import pdnn.plots
    from matplotlib.colors import to_hex
    pdnn_run, det_run = tmp_path / "p", tmp_path / "d0"
    assert train(pdnn_run, "--epochs", "1") == 0
    assert train(det_run, "--epochs", "1", "--neuron", "tanh") == 0
    assert main(["eval", str(pdnn_run), "--samples", "1,2", "--quiet"]) == 0
    assert main(["eval", str(det_run), "--quiet"]) == 0
    baselines = [det_run] + [shutil.copytree(det_run, tmp_path / f"d{i}") for i in range(1, 6)]
    figures = []
    monkeypatch.setattr(pdnn.plots, "save_figure", lambda fig, out: figures.append(fig))
    pdnn.plots.plot_accuracy_vs_samples([pdnn_run, *baselines], tmp_path / "fig.png")
    ax = figures[0].axes[0]
    curve = [to_hex(line.get_color()) for line in ax.get_lines() if line.get_linestyle() != "--"]
    dashed = [to_hex(line.get_color()) for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 6 and len(set(dashed)) == 6 and not set(dashed) & set(curve)


def test_corrupt_checkpoint_is_named_and_kept(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(run), "--quiet"]) == 2
    assert "checkpoint.pt is not a readable checkpoint" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == b"not a checkpoint"
    assert main(["eval", str(tmp_path / "nowhere"), "--quiet"]) == 2


def test_resume_with_crop_and_flip_continues_bit_for_bit(tmp_path, monkeypatch):
    """Augmentation draws from its own stream, which the checkpoint must carry across a resume."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    data = make_cifar(tmp_path / "data")
    options = [*data, "--train-samples", "2", "--batch-size", "16", "--seed", "2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *options, "--epochs", "2", "--out", str(straight)]) == 0
    assert main(["train", *options, "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["train", "--out", str(resumed), "--resume", "--epochs", "2", "--data-dir", data[3], "--quiet"]) == 0
    assert json.loads((straight / "config.json").read_text())["train"]["augment"]
    assert_same_run(straight, resumed)


def torchrun(*args, succeeds=True, path=()) -> str:
    """``torchrun`` with 2 CPU processes running this checkout's pdnn (whatever is installed), with
    the folders ``path`` first on the module search path; its standard error."""
    source = str(Path(pdnn.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [*map(str, path), source, os.environ.get("PYTHONPATH")]))}
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "pdnn", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == succeeds, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.slow
def test_two_process_resume_continues_bit_for_bit(tmp_path, monkeypatch):
    """Every process's augmentation and sampling streams are saved and restored: a 2-process run
    stopped after epoch 1 and resumed ends where an uninterrupted one does."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    data = make_cifar(tmp_path / "data")
    options = [*data, "--train-samples", "2", "--batch-size", "16", "--seed", "4"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    torchrun("train", *options, "--epochs", "2", "--out", str(straight))
    torchrun("train", *options, "--epochs", "1", "--out", str(resumed))
    assert len(load_checkpoint(resumed / "checkpoint.pt")["generators"]) == 2
    err = torchrun("train", "--out", str(resumed), "--resume", "--epochs", "2", "--data-dir", data[3], "--quiet",
                   "--seed", "5")
    assert err.count("is resumed with its own configuration; ignored: --seed 5 (it keeps 4)") == 1  # (not per process)
    assert_same_run(straight, resumed)


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) against one process: same data order and global
    batch; only batch-norm statistics (per-process halves) and summation order differ."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    args = [*TINY, "--neuron", "tanh", "--epochs", "2", "--seed", "1", "--beta", "2"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["train", *args, "--out", str(single)]) == 0
    said = torchrun("train", *args, "--out", str(ddp))
    assert said.count("--beta 2.0 does nothing to tanh neurons") == 1  # (every process had said it)
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    for x, y in zip(a, b):
        assert abs(x["train_loss"] - y["train_loss"]) <= 0.1 * x["train_loss"]
        assert abs(x["test_accuracy"] - y["test_accuracy"]) <= 0.08


@pytest.mark.slow
def test_two_processes_record_the_whole_epoch_and_take_a_short_last_batch(tmp_path):
    """The training statistics are the epoch's, over both processes' shares (they had been process
    0's half), and a last batch of 3 examples (one for process 1) joins the one before (it had
    crashed in the batch norm, advising a larger --batch-size)."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    run = tmp_path / "ddp"
    site = tmp_path / "site"  # what threads each process has left at its last exit handler (the first registered)
    site.mkdir()
    (site / "sitecustomize.py").write_text(  # (a file per process: two writing to one stderr ran their lines together)
        "import atexit, os\n"
        "def threads():\n"
        "    names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        f"    with open(os.path.join({str(site)!r}, 'threads-' + os.environ['RANK']), 'w') as f:\n"
        "        f.write(' '.join(sorted(names)))\n"
        "if 'RANK' in os.environ:\n"
        "    atexit.register(threads)\n")
    torchrun("train", "--dataset", "demo", "--subset", "67", "--model", "mlp", "--width", "8", "-s", "2",
             "--epochs", "1", "--batch-size", "32", "--quiet", "--out", str(run), path=[site])
    if Path("/proc/self/task").is_dir():  # gloo's threads ran on into the teardown, which aborted a process at times
        left = {p.name: p.read_text() for p in site.glob("threads-*")}
        assert sorted(left) == ["threads-0", "threads-1"] and not any("gloo" in names for names in left.values()), left
    epoch, = json.loads((run / "metrics.json").read_text())
    assert epoch["processes"] == 2
    assert epoch["examples_per_s"] * epoch["epoch_time_s"] == pytest.approx(67)  # not 2 x process 0's 34
    correct = epoch["train_accuracy"] * 67
    assert correct == pytest.approx(round(correct), abs=1e-9)  # a count over all 67 examples


@pytest.mark.slow
def test_two_processes_refuse_a_batch_too_small_alike_and_train_on_cpu_0(tmp_path):
    """A batch of 3 gave process 1 one example: it named the batch norm while process 0, waiting
    in the gradient's all-reduce, died with gloo's traceback (and a batch of 1 left process 1
    none, which it called divergence). And ``--device cpu:0`` reached DDP as a GPU's id."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    tiny = ["train", "--dataset", "demo", "--subset", "40", "--model", "mlp", "--width", "4", "--epochs", "1",
            "--quiet"]
    err = torchrun(*tiny, "--batch-size", "3", "--out", str(tmp_path / "a"), succeeds=False)
    assert err.count("a training batch of 3 example(s) shared by 2 processes is too small for the model's batch "
                     "norm, which needs at least 2 values per channel in each process: use a --batch-size of at "
                     "least 4") == 2 and "Connection closed" not in err and "[rank0]: Traceback" not in err
    assert not (tmp_path / "a").exists()
    torchrun(*tiny, "--device", "cpu:0", "--out", str(tmp_path / "b"))
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())[0]["processes"] == 2


def two_processes(*options_of_each, cwd=None) -> list[tuple[subprocess.Popen, str]]:
    """Processes 0 and 1 of a 2-process ``pdnn train`` of demo data started by hand (not by torchrun,
    which ends the others when one fails), each with its options; each process and its standard error."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    source = str(Path(pdnn.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pdnn", "train", "--dataset", "demo", "--subset", "40", "--model", "mlp",
               "--width", "4", "--epochs", "1", "--quiet"]
    processes = [subprocess.Popen([*command, *options], env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                  cwd=cwd, stderr=subprocess.PIPE, text=True)
                 for rank, options in enumerate(options_of_each)]
    try:
        return [(p, p.communicate(timeout=120)[1]) for p in processes]
    finally:  # (a hang, as before, leaves no process behind)
        for process in processes:
            process.kill()


@pytest.mark.slow
def test_processes_started_by_hand_with_different_options_are_refused_alike(tmp_path):
    """Two processes started without torchrun, one with --seed 2: it trained silently with the
    batches split by two orders, and another --batch-size hung both in a collective (R151). The
    same run folder spelt two ways is no difference (R154)."""

    run = tmp_path / "run"
    for process, err in two_processes(["--out", str(run), "--seed", "1", "--batch-size", "8"],
                                      ["--out", str(run), "--seed", "2", "--batch-size", "16"]):
        assert process.returncode == 2, err
        assert err.strip() == ("pdnn train: error: the 2 processes were given different options (--batch-size, "
                               "--seed); start them with one command: torchrun --nproc_per_node N -m pdnn train ...")
    assert not run.exists()
    for process, err in two_processes(["--out", "run"], ["--out", str(run)], cwd=tmp_path):
        assert process.returncode == 0, err
    assert json.loads((run / "metrics.json").read_text())[0]["processes"] == 2


def fashion_copy(folder: Path, train: int, seed: int) -> Path:
    """A Fashion-MNIST of ``train`` random training images (and 8 test images) as IDX files."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", train), ("t10k", 8)):
        (folder / f"{split}-images-idx3-ubyte").write_bytes(
            idx_bytes(torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(torch.arange(n, dtype=torch.uint8) % 10))
    return folder.parent


@pytest.mark.slow
def test_processes_given_different_copies_of_the_data_are_refused_alike(tmp_path, monkeypatch):
    """--data-dir may differ between processes (each machine has its own copy), but copies of
    different sizes hung both processes in a collective, and copies of one size trained on a mix
    of two datasets without a word (R160)."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    first, same, other, smaller = (fashion_copy(tmp_path / name / "fashion-mnist", train, seed)
                                   for name, train, seed in (("a", 60, 0), ("b", 60, 0), ("c", 60, 1), ("d", 30, 0)))
    for copy in (other, smaller):
        run = tmp_path / f"run-{copy.name}"
        processes = two_processes(*(["--dataset", "fashion-mnist", "--data-dir", str(root), "--out", str(run)]
                                    for root in (first, copy)))
        for rank, (process, err) in enumerate(processes):
            assert process.returncode == 2, err
            assert err.startswith("pdnn train: error: the 2 processes read different data (process 0: "
                                  f"{first / 'fashion-mnist'} (IDX), "), err
            assert "Traceback" not in err
        assert not run.exists()
    run = tmp_path / "run"
    for process, err in two_processes(*(["--dataset", "fashion-mnist", "--data-dir", str(root), "--out", str(run)]
                                        for root in (first, same))):
        assert process.returncode == 0, err


@pytest.mark.slow
def test_a_refusal_of_process_0_alone_ends_the_others_in_one_line(tmp_path):
    """Only process 0 takes the run's lock: refused it, it ended while process 1 went on to wait in
    the model's first collective and died with gloo's traceback (R151, R154)."""
    run = tmp_path / "run"
    run.mkdir()
    held = f"{socket.gethostname()} {os.getpid()}"  # this test's process: alive, so the lock stands
    (run / ".writing").write_text(held)
    (zero, err0), (one, err1) = two_processes(["--out", str(run)], ["--out", str(run)])
    refusal = f"cannot train {run}: another command (process {os.getpid()} on {socket.gethostname()}) is writing it"
    assert zero.returncode == 2 and err0.startswith(f"pdnn train: error: {refusal}"), err0
    assert one.returncode == 2 and err1.startswith(f"pdnn train: error: process 0 stopped before training: {refusal}"), err1
    assert "Traceback" not in err0 + err1
    assert sorted(p.name for p in run.iterdir()) == [".writing"] and (run / ".writing").read_text() == held


@pytest.mark.slow
def test_a_master_port_in_use_is_named_in_one_line(tmp_path):
    """Process 0 started by hand on a MASTER_PORT another program listens on printed torch's
    traceback of some 30 lines ending in EADDRINUSE (R187)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        source = str(Path(pdnn.__file__).resolve().parents[1])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, "-m", "pdnn", "train", "--dataset", "demo", "--subset", "40", "--model",
                               "mlp", "--width", "4", "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")],
                              env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"pdnn train: error: MASTER_PORT {port} is in use on this machine, so process 0 cannot "
                           "serve the processes' meeting point there; choose a free port (torchrun --standalone "
                           "picks one)\n")
    assert not (tmp_path / "run").exists()


def test_a_collective_failing_because_another_process_ended_is_one_line():
    """What gloo raises in the survivor when the other process is killed mid-epoch (R187), as one
    line; any other error, and any error of a single process, as it was."""
    import pdnn.train as training

    for gloo in ("[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:29100: Connection "
                 "reset by peer", "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                 "[127.0.0.1]:7795"):
        with pytest.raises(RunError, match=r"^another process of this run ended \(its own message, or torchrun's "
                                           r"summary, says why\); every finished epoch is saved, and --resume"):
            with training._another_process_ended_said(2):
                raise RuntimeError(gloo)
        with pytest.raises(RuntimeError, match="Connection"), training._another_process_ended_said(1):
            raise RuntimeError(gloo)
    with pytest.raises(RuntimeError, match="^mat1 and mat2"), training._another_process_ended_said(2):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


@pytest.mark.slow
def test_a_process_waiting_for_others_that_never_come_ends_on_sigterm(tmp_path):
    """Process 1 of 2 started by hand, whose process 0 never starts (as when it failed on a bad
    option), waited in the process group's start past SIGTERM, for the store's half hour (R154)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    source = str(Path(pdnn.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "pdnn", "train", "--dataset", "demo", "--subset", "40",
                                "--model", "mlp", "--width", "4", "--epochs", "1", "--quiet",
                                "--out", str(tmp_path / "run")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(15)  # past the imports (about 5 s), into the wait; a SIGTERM before it ends the process too
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM
    assert not (tmp_path / "run").exists()


def test_every_process_gets_its_share_of_every_batch():
    norm, plain = torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2)
    for examples, batch_size in ((100, 4), (67, 32), (4, 64)):  # the short last batch of 67 joins the one before
        check_batch_shares(norm, examples, batch_size, world=2)
    check_batch_shares(plain, 100, 2, world=2)  # one example each: no batch norm to starve
    check_batch_shares(plain, 100, 1)
    with pytest.raises(UsageError, match=r"a training batch of 3 example\(s\) shared by 2 processes is too small "
                                         r"for the model's batch norm, which needs at least 2 values per channel in "
                                         r"each process: use a --batch-size of at least 4$"):
        check_batch_shares(norm, 100, 3, world=2)
    with pytest.raises(UsageError, match=r"a training batch of 1 example\(s\) shared by 2 processes leaves a "
                                         r"process without an example: use a --batch-size of at least 2$"):
        check_batch_shares(plain, 100, 1, world=2)
    with pytest.raises(UsageError, match=r"of 3 example\(s\) shared by 2 processes .*: train on at least 4 "
                                         r"examples \(the training set holds 3\)$"):
        check_batch_shares(norm, 3, 64, world=2)
    with pytest.raises(UsageError, match=r"a training batch of 1 example\(s\) is too small for the model's batch "
                                         r"norm, which needs at least 2 values per channel: use a --batch-size"):
        check_batch_shares(norm, 100, 1)
    check_batch_shares(torch.nn.BatchNorm2d(2), 100, 2, world=2)  # an image gives each channel many values


def test_numpy_numbers_train_and_are_recorded_as_python_numbers(tmp_path):
    """numpy's integers passed every check and then failed to seed torch's generator or to go into
    config.json."""
    from pdnn.train import train as train_run

    model = ModelConfig(name="vae", neuron="pbit", input_shape=(1, 28, 28), num_classes=10, width=np.int64(4),
                        extra={"latent": np.int64(3)})
    options = TrainConfig(samples=np.int64(2), epochs=np.int64(1), batch_size=np.int64(32), seed=np.int64(3),
                          monitor_examples=np.int64(16), task="vae", lr=np.float32(1e-4), weight_decay=np.float64(0))
    train_run(tmp_path / "run", model, "demo", options, subset=64, progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["extra"] == {"latent": 3} and config["train"]["seed"] == 3
    assert all(type(config["train"][k]) is int for k in ("samples", "epochs", "batch_size", "monitor_examples"))
    assert config["train"]["lr"] == pytest.approx(1e-4) and config["train"]["weight_decay"] == 0
    for bad in ({"lr": True}, {"weight_decay": True}, {"lr": 10**400}, {"weight_decay": 10**400}):
        with pytest.raises(UsageError, match=f"{next(iter(bad))} must be a (finite )?number"):  # lr True had trained
            TrainConfig(**bad).validate()  # at 1, weight decay True crashed Adam, 10**400 overflowed a float


def test_the_cnn_trains_on_batches_of_one(tmp_path):
    """Its batch norms take a value per pixel: one image is enough (refused for a while by a check
    that counted examples)."""
    assert main(["train", "--dataset", "demo", "--subset", "3", "--model", "cnn", "--width", "2", "--batch-size", "1",
                 "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")]) == 0


def test_a_run_is_loaded_onto_the_device_asked(tmp_path):
    """``load_model(run, device)`` moves the model, not only the weights it reads: callers feed it
    data on that device (on a CPU-only machine the meta device stands in for a GPU)."""
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    model, _ = load_model(run, "meta")
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}


def test_cuda_and_its_index_name_one_stream(monkeypatch):
    """Training sets up the stream of ``cuda``, and the draws ask for the device of their tensors,
    ``cuda:<current>``: both must be the same stream, or a resumed run restarts its sampling."""
    from pdnn import SampledModel
    from pdnn.devices import indexed

    class Generator:  # a stand-in: this machine has no CUDA generator to make
        def __init__(self, device):
            self.device = device

        def manual_seed(self, seed):
            return self

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch, "Generator", Generator)
    assert indexed("cuda") == indexed("cuda:1") == torch.device("cuda:1")
    assert indexed("cuda:0") == torch.device("cuda:0") and indexed("cpu") == torch.device("cpu")
    assert indexed("mps") == torch.device("mps:0")
    sampler = SampledModel(torch.nn.Identity(), 2, seed=0)
    assert sampler.generator("cuda") is sampler.generator(torch.device("cuda", 1))
    assert sampler.generator("cuda:0") is not sampler.generator("cuda")


def test_a_resume_on_another_number_of_processes_says_what_becomes_of_their_streams(tmp_path):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1", "--train-samples", "2") == 0
    state = load_checkpoint(run / "checkpoint.pt")
    state["generators"] = state["generators"] * 3  # as if trained by 3 processes
    torch.save(state, run / "checkpoint.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to train: nothing to say
        assert main(["train", "--out", str(run), "--resume", "--epochs", "1", "--quiet"]) == 0
    with pytest.warns(UserWarning, match=r"holds the random streams of 3 processes and this run has 1: the streams "
                                         r"of processes 1 to 2 go unused and the batches are split among 1 "
                                         r"process, not 3, so the run does not continue bit for bit"):
        assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0


def test_streams_saved_on_another_device_type_restart_with_a_warning(tmp_path):
    """A GPU's generator state (16 bytes of Philox) cannot be loaded into a CPU generator: a run
    resumed on the CPU warns and reseeds those streams instead of crashing."""
    run = tmp_path / "run"
    assert train(run, "--epochs", "1", "--train-samples", "2") == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["generators"][0]["devices"] == {"order": "cpu", "augment": "cpu", "sample": "cpu"}
    state["generators"][0]["sample"] = torch.zeros(16, dtype=torch.uint8)
    state["generators"][0]["devices"]["sample"] = "cuda"
    torch.save(state, run / "checkpoint.pt")
    shutil.copytree(run, tmp_path / "older")
    with pytest.warns(UserWarning, match="the sample streams were saved on another type of device than this run's cpu"):
        assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert [m["epoch"] for m in json.loads((run / "metrics.json").read_text())] == [1, 2]
    older = load_checkpoint(tmp_path / "older" / "checkpoint.pt")  # as written before the types were recorded
    del older["generators"][0]["devices"]
    torch.save(older, tmp_path / "older" / "checkpoint.pt")
    with pytest.warns(UserWarning, match="the sample streams were saved on another type of device"):
        assert main(["train", "--out", str(tmp_path / "older"), "--resume", "--epochs", "2", "--quiet"]) == 0


@pytest.mark.parametrize("signum, status, said", [(signal.SIGINT, 130, "interrupted"),
                                                  (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_a_signalled_run_says_what_it_kept_and_resumes(signum, status, said, tmp_path):
    """Ctrl-C, or a batch system's SIGTERM at its time limit, in the middle of training: one line
    says what was kept, the saved epochs stay whole, and --resume continues from the last."""
    run = tmp_path / "run"
    source = str(Path(pdnn.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "pdnn", "train", *TINY, "--epochs", "200", "--out", str(run)],
                            env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == (f"pdnn train: {said}; no file was left half-written; every finished "
                                            "epoch was saved, and --resume continues from the last (if none had "
                                            "finished, train anew)")
    saved = load_checkpoint(run / "checkpoint.pt")  # metrics.json is written with it, before the signal is taken
    assert 1 <= saved["epoch"] < 200 and len(saved["metrics"]) == saved["epoch"]
    assert json.loads((run / "metrics.json").read_text()) == saved["metrics"]
    assert main(["train", "--out", str(run), "--resume", "--epochs", str(saved["epoch"] + 1), "--quiet"]) == 0
    assert len(json.loads((run / "metrics.json").read_text())) == saved["epoch"] + 1


def test_an_interrupted_process_other_than_0_does_not_say_it_saved_epochs(tmp_path, monkeypatch, capsys):
    """Under torchrun only process 0 writes the run; the others had said "every finished epoch
    was saved" too."""
    import pdnn.cli.train as train_command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run", interrupted)
    for rank, said in (("0", "every finished epoch was saved"), ("1", "process 0 writes the run")):
        monkeypatch.setenv("RANK", rank)
        assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 130
        assert capsys.readouterr().err.strip() == f"pdnn train: interrupted; no file was left half-written; {said}" + (
            ", and --resume continues from the last (if none had finished, train anew)" if rank == "0" else "")


def test_training_leaves_the_callers_global_generator_as_it_was(tmp_path):
    """``train`` seeded torch's global generator for the initial weights and left it so (R235);
    nor does it seed the devices' generators, which the CPU's fork did not restore (R240)."""
    torch.manual_seed(123)
    state, device_seeds = torch.get_rng_state(), []
    model = ModelConfig(name="mlp", neuron="pbit", input_shape=(1, 28, 28), num_classes=10, width=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "manual_seed_all", device_seeds.append)
        pdnn.train.train(tmp_path / "run", model, "demo", TrainConfig(epochs=1, seed=4), subset=32, progress=False)
    assert torch.equal(torch.get_rng_state(), state) and device_seeds == []


def test_an_interrupt_during_the_checkpoint_write_waits_for_the_history_too(tmp_path, monkeypatch):
    """Each write held interrupts for itself only: one arriving while the checkpoint was written
    took effect between the two, and the run stopped with a checkpoint at epoch 2 and a history
    of epoch 1, or none (R233)."""
    saved = pdnn.train.save_checkpoint

    def interrupted_while_saving(path, state):
        saved(path, state)
        if state["epoch"] == 2:
            signal.raise_signal(signal.SIGINT)  # (held by the write's own block: taken as it ends)

    monkeypatch.setattr(pdnn.train, "save_checkpoint", interrupted_while_saving)
    run = tmp_path / "run"
    assert train(run, "--epochs", "3") == 130
    history = json.loads((run / "metrics.json").read_text())
    assert [m["epoch"] for m in history] == [1, 2] and load_checkpoint(run / "checkpoint.pt")["metrics"] == history


def test_resuming_restores_a_history_the_interruption_left_behind(tmp_path):
    """A kill between the checkpoint's write and the history's leaves metrics.json one epoch
    behind (or absent); resuming, even with nothing left to train, writes it from the checkpoint."""
    run = tmp_path / "run"
    assert train(run, "--epochs", "2") == 0
    history = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(history[:1]))
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text()) == history
    (run / "metrics.json").unlink()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text()) == history


def test_a_second_command_into_a_folder_being_trained_is_refused(tmp_path, capsys):
    """Two trainings into one folder interleaved their files (one's config, the other's
    checkpoint); the folder's lock refuses the second. A lock whose process has ended is taken over."""
    run = tmp_path / "run"
    source = str(Path(pdnn.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "pdnn", "train", *TINY, "--epochs", "200", "--out", str(run)],
                            env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert train(run, "--epochs", "1", "--width", "16") == 2
        assert f"another command (process {proc.pid} on " in capsys.readouterr().err
        assert load_model(run)[0][1].out_features == 32  # still the first command's run, whole
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    assert not (run / ".writing").exists()  # released as the first command stopped
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / ".writing").write_text(f"{socket.gethostname()} {gone.stdout.strip()}")  # a writer killed with -9
    epochs = load_checkpoint(run / "checkpoint.pt")["epoch"] + 1
    assert main(["train", "--out", str(run), "--resume", "--epochs", str(epochs), "--quiet"]) == 0


def test_training_never_writes_over_another_runs_or_a_users_config(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    assert train(mine, "--epochs", "1") == 2
    assert "config.json is not a pdnn run's configuration" in capsys.readouterr().err
    assert (mine / "config.json").read_text() == '{"my": "settings"}'
    other = tmp_path / "other"
    assert train(other, "--epochs", "1", "--width", "16", "--neuron", "tanh") == 0
    (other / "checkpoint.pt").unlink()  # another run's start, interrupted before its first epoch
    assert train(other, "--epochs", "1") == 2
    err = capsys.readouterr().err  # only what differs (it printed both whole sections)
    assert f"cannot train into {other}: its model configuration differs from the requested one (in --neuron: " \
           "'tanh' -> 'pbit'; --width: 16 -> 32)" in err and "{" not in err and load_config_width(other) == 16
    assert train(other, "--epochs", "1", "--width", "16", "--neuron", "tanh", "--dataset", "cifar10") == 2
    assert "(in input_shape (set by --dataset): [1, 28, 28] -> [3, 32, 32])" in capsys.readouterr().err  # (R160)
    assert train(other, "--epochs", "1", "--width", "16", "--neuron", "tanh") == 0  # its own start: trained anew
    (other / "checkpoint.pt").unlink()  # trained anew once more, and that start interrupted: what the
    kept = {name: (other / name).read_bytes() for name in ("config.json", "metrics.json")}  # run had stays
    with monkeypatch.context() as patch:
        patch.setattr(pdnn.train, "_train_epoch", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        assert train(other, "--epochs", "1", "--width", "16", "--neuron", "tanh") == 130
    assert {name: (other / name).read_bytes() for name in kept} == kept
    assert train(other, "--epochs", "1", "--width", "16", "--neuron", "tanh") == 0  # and a rerun trains
    converted = tmp_path / "converted"
    assert main(["convert", str(other), "--method", "pbit", "--out", str(converted), "--quiet"]) == 0
    for options in (TINY, ["--resume", "--quiet"]):
        assert main(["train", *options, "--out", str(converted)]) == 2
        assert "is a converted run (pdnn convert)" in capsys.readouterr().err
    (converted / "checkpoint.pt").unlink()  # restorable with convert --restore: still not a place to train
    assert train(converted, "--epochs", "1") == 2 and "converted run" in capsys.readouterr().err
    assert "convert" in json.loads((converted / "config.json").read_text())


def test_a_signal_as_the_config_is_written_leaves_no_run_in_the_way(tmp_path, monkeypatch, capsys):
    """A SIGTERM held while config.json was written was raised as the write returned, before the
    code that removes a config nothing was trained with: the message said "train anew", and training
    anew with other settings was refused (R194)."""
    run, write = tmp_path / "run", pdnn.train.write_json

    def interrupted_after(path, document):
        write(path, document)
        if Path(path).name == "config.json":
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pdnn.train, "write_json", interrupted_after)
        assert train(run, "--epochs", "1", "--seed", "0") == 130
    assert not (run / "config.json").exists()
    assert train(run, "--epochs", "1", "--seed", "7") == 0  # another setting: a fresh start
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 7


def test_a_study_or_export_folder_is_no_place_to_train(tmp_path, capsys):
    """A run trained into a study's folder mixed its files into the study's, and --resume there
    said only that config.json did not exist (R168)."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "spec.json").write_text('{"dataset": "demo"}')
    (study / "summary.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in study.iterdir()}
    for options in (["--epochs", "1"], ["--resume"]):
        assert train(study, *options) == 2
        assert (f"{study} holds spec.json, summary.json and no config.json: another command's results (a study, an "
                "export, a plan), not a run; choose another folder") in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in study.iterdir()} == before


def load_config_width(run):
    return json.loads((run / "config.json").read_text())["model"]["width"]


def test_a_metrics_file_this_run_did_not_write_is_refused_not_replaced(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"experiment": "my own measurements"}')
    assert train(folder, "--epochs", "1") == 2
    assert "metrics.json is not a run's record (there is no config.json beside it)" in capsys.readouterr().err
    assert (folder / "metrics.json").read_text() == '{"experiment": "my own measurements"}'
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json"]


def test_a_checkpoint_loads_with_torch_s_safe_default(tmp_path):
    """``torch.load(path)`` (``weights_only=True``) is how a user looks into a checkpoint; the
    record of the machine held torch's version as a ``TorchVersion``, which it refuses."""
    assert train(tmp_path / "run", "--epochs", "1") == 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt")
    assert state["metrics"][0]["torch"] == torch.__version__
    # a run checkpointed before, resumed now: its first epoch's record is mended too
    state["metrics"][0]["torch"] = torch.torch_version.TorchVersion(torch.__version__)
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    assert train(tmp_path / "run", "--epochs", "2", "--resume") == 0
    assert [type(m["torch"]) for m in torch.load(tmp_path / "run" / "checkpoint.pt")["metrics"]] == [str, str]


@pytest.mark.parametrize("key, value, message", [
    ("metrics", {"not": "a list"}, "its metrics are not one record per epoch 1..2"),
    ("epoch", "x", "its epoch is 'x', not a count of epochs"),
    ("generators", [{}], "its random streams are not the order, augmentation and sampling states"),
    # these had ended in torch's tracebacks
    ("model", None, "its model state is NoneType, not a state_dict"),
    ("optimizer", {}, "its optimizer state is not an optimizer's state_dict (with 'state' and 'param_groups')"),
    ("optimizer", None, "its optimizer state is not an optimizer's state_dict"),
    ("generators", lambda g: [{**g[0], "sample": torch.zeros_like(g[0]["sample"])}],
     "its random streams are not valid generator states"),
    ("generators", lambda g: [{**g[0], "order": torch.zeros(16, dtype=torch.uint8)}],
     "its random streams are not valid generator states"),
    ("generators", lambda g: [{**g[0], "order": g[0]["order"].float()}], "its random streams are not valid generator"),
    ("generators", lambda g: [{**g[0], "devices": "cpu"}], "its random streams are not valid generator states"),
])
def test_a_malformed_training_state_is_named_before_anything_is_rewritten(tmp_path, capsys, key, value, message):
    run = tmp_path / "run"
    assert train(run, "--epochs", "2") == 0
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    state[key] = value(state[key]) if callable(value) else value
    torch.save(state, run / "checkpoint.pt")
    kept = {name: (run / name).read_bytes() for name in ("config.json", "metrics.json", "checkpoint.pt")}
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_a_resume_on_a_config_edited_for_another_dataset_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    config = json.loads((run / "config.json").read_text())
    config["model"]["input_shape"] = [3, 32, 32]  # as CIFAR-10's (it had failed deep in torch)
    (run / "config.json").write_text(json.dumps(config))
    kept = {name: (run / name).read_bytes() for name in ("metrics.json", "checkpoint.pt")}
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 2
    assert "its model takes inputs of shape (3, 32, 32), but demo has images of shape (1, 28, 28)" in \
        capsys.readouterr().err
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_a_resume_on_other_data_says_so_and_on_an_identical_copy_does_not(tmp_path, monkeypatch):
    """--data-dir and $PDNN_DATA are not recorded: a resume that found another copy trained on it
    without a word (metrics.json alone showed each epoch's source). The copy was then told by its
    folder, so a byte-identical copy elsewhere was warned about and labels rewritten in place were
    not (R215 D2): it is told by the data's SHA-256, and by the folder for records without one."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    first, same, other = (make_cifar(tmp_path / name, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    run = tmp_path / "run"
    assert main(["train", *first, "--epochs", "1", "--out", str(run)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same images and labels elsewhere: the run continues bit for bit
        assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--data-dir", same[3], "--quiet"]) == 0
    with pytest.warns(UserWarning, match=rf"trained on {re.escape(str(tmp_path / 'b'))}.* and now reads "
                                         rf"{re.escape(str(tmp_path / 'c'))}.* \(their SHA-256 differs\)"):
        assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--data-dir", other[3], "--quiet"]) == 0
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_1"  # labels rewritten in place
    content = pickle.loads(batch.read_bytes())
    batch.write_bytes(pickle.dumps({**content, b"labels": [(y + 1) % 10 for y in content[b"labels"]]}, protocol=2))
    with pytest.warns(UserWarning, match=rf"trained on {re.escape(str(tmp_path / 'c'))}.* and its files now hold "
                                         r"other images or labels \(their SHA-256 differs\)"):
        assert main(["train", "--out", str(run), "--resume", "--epochs", "4", "--data-dir", other[3], "--quiet"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same folder, spelled otherwise
        monkeypatch.chdir(tmp_path)
        assert main(["train", "--out", str(run), "--resume", "--epochs", "5", "--data-dir", "c", "--quiet"]) == 0
        monkeypatch.chdir(run)  # recorded whole: a relative --data-dir from another folder is no other copy
        assert main(["train", "--out", str(run), "--resume", "--epochs", "6", "--data-dir", "../c", "--quiet"]) == 0
    recorded = json.loads((run / "metrics.json").read_text())[-1]["data_source"].split(" (")[0]
    assert os.path.isabs(recorded) and os.path.samefile(recorded, tmp_path / "c" / "cifar-10-batches-py")
    state = load_checkpoint(run / "checkpoint.pt")  # a record from before the SHA-256: told by the folder
    state["metrics"] = [{k: v for k, v in m.items() if k != "data_sha256"} for m in state["metrics"]]
    torch.save(state, run / "checkpoint.pt")
    with pytest.warns(UserWarning, match=r"trained on \S*/c/cifar-10-batches-py .* and now reads "
                                         rf"{re.escape(str(tmp_path / 'b'))}.*: another copy of the data"):
        assert main(["train", "--out", str(run), "--resume", "--epochs", "7", "--data-dir", same[3], "--quiet"]) == 0


def test_a_resume_says_what_the_model_keeps_and_where_it_was_trained(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "demo", "--subset", "64", "--model", "mlp", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0
    with pytest.warns(UserWarning, match=r"ignored: --width 16 \(it keeps 256\)") as said:
        assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--width", "16", "--quiet"]) == 0
    assert not any("was trained with" in str(w.message) for w in said)  # the same threads, processor, torch
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model's own default width is no change
        assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--width", "256", "--quiet"]) == 0
    monkeypatch.setattr(pdnn.train, "where_measured", lambda: {**where_measured(), "threads": 7,
                                                               "processor": "elsewhere"})
    with pytest.warns(UserWarning, match=r"checkpoint.pt was trained with threads \d+ \(now 7\) and processor "
                                         r".* \(now 'elsewhere'\): sums may round otherwise"):
        assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 0


def test_a_resume_with_other_vector_instructions_warns_and_an_older_record_is_not_compared(monkeypatch):
    """An AMD Zen 3 (AVX2) and a Zen 4 (AVX-512) report the same model name, "AMD EPYC"; torch's
    kernels round sums by the vector width, so a run moved between the two does not continue bit
    for bit. A record written before the instructions were recorded lacks the key."""
    here = {"threads": 2, "processor": "AMD EPYC", "cpu_capability": "AVX2", "torch": "2.13.0"}
    monkeypatch.setattr(pdnn.train, "where_measured", lambda: here)
    with pytest.warns(UserWarning, match=r"ck.pt was trained with cpu_capability 'AVX512' \(now 'AVX2'\): "):
        pdnn.train._warn_if_elsewhere(Path("ck.pt"), {**here, "cpu_capability": "AVX512"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdnn.train._warn_if_elsewhere(Path("ck.pt"), {k: v for k, v in here.items() if k != "cpu_capability"})
        pdnn.train._warn_if_elsewhere(Path("ck.pt"), here)


def test_beta_is_a_finite_positive_number_for_every_neuron(tmp_path, capsys):
    """A float neuron ignores beta, but config.json records it: nan had ended in the JSON writer's
    traceback after the data was read, and -1 was recorded."""
    for beta in ("nan", "inf", "-1"):
        assert train(tmp_path / "run", "--neuron", "tanh", "--beta", beta, "--epochs", "1") == 2
        assert f"error: --beta must be a finite number > 0, got {float(beta)}" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_a_run_that_stopped_early_is_measured_with_a_warning(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    config = json.loads((run / "config.json").read_text())
    config["train"]["epochs"] = 3  # as a run interrupted after its first of three epochs records it
    (run / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="has trained 1 of its 3 epochs"):
        assert main(["eval", str(run), "--samples", "1", "--repeats", "1", "--quiet"]) == 0


def test_running_sums_are_one_cumsum_over_the_pool_bit_for_bit():
    """pdnn eval sums T samples from calls of at most 1024: kept at the repeats' ends only, its
    memory is one call's samples, and the sums are those of one cumsum over all (same order)."""
    torch.manual_seed(0)
    pool = torch.randn(2500, 3, 4) * torch.logspace(-6, 6, 2500).reshape(-1, 1, 1)  # rounding order matters
    ends = [1, 7, 1024, 1025, 2048, 2500]
    whole = torch.cat([torch.zeros(1, 3, 4, dtype=torch.float64), pool.double().cumsum(0)])
    sums = running_sums(iter(pool.split(1024)), ends)
    assert sorted(sums) == [0, *ends]
    for k in [0, *ends]:
        assert torch.equal(sums[k], whole[k])


def test_running_sums_keep_no_part_alive():
    """The sums kept at the ends are copies: a view would hold its whole part (1024 samples) in memory."""
    parts = [torch.randn(1024, 4, 3) for _ in range(3)]
    sums = running_sums(iter(parts), [1, 1025, 2049])
    assert all(s._base is None and s.untyped_storage().nbytes() == 4 * 3 * 8 for s in sums.values())


def test_training_a_kept_run_again_warns_that_its_history_is_replaced(tmp_path):
    """A finished run kept without its checkpoint is trained again by the command its error gives;
    its metrics.json was then replaced after the first new epoch without a word."""
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    (run / "checkpoint.pt").unlink()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2  # (nothing to resume: train anew)
    with pytest.warns(UserWarning, match="holds a run's history \\(metrics.json\\) kept without its checkpoint: "
                                         "training it again replaces that history"):
        assert train(run, "--epochs", "1") == 0


def test_a_refusal_names_each_setting_by_the_option_that_sets_it(tmp_path):
    """config.json's keys as `pdnn train` options: --latent sets the model's extra settings and
    --dataset its input shape and classes; a command given other options names them by those."""
    from pdnn.io import RunError as Refused
    from pdnn.train import TRAIN_OPTIONS, check_same_run, run_config

    plain = ModelConfig(name="mlp", neuron="tanh", input_shape=(1, 28, 28), num_classes=10, width=8)
    (tmp_path / "config.json").write_text(json.dumps(run_config(plain, "demo", TrainConfig(epochs=1))))
    latent = ModelConfig(name="mlp", neuron="tanh", input_shape=(1, 28, 28), num_classes=10, width=8,
                         extra={"latent": 4})
    with pytest.raises(Refused, match=re.escape("(in extra (set by --latent): {} -> {'latent': 4})")):
        check_same_run(tmp_path, run_config(latent, "demo", TrainConfig(epochs=1)))
    with pytest.raises(Refused, match=re.escape("(in extra: {} -> {'latent': 4})")):  # a plan's settings
        check_same_run(tmp_path, run_config(latent, "demo", TrainConfig(epochs=1)), options={})
    with pytest.raises(Refused, match=re.escape("(in --seed: 0 -> 3; only the epochs may change)")):
        check_same_run(tmp_path, run_config(plain, "demo", TrainConfig(epochs=1, seed=3)))
    assert all(option.startswith("--") for option in TRAIN_OPTIONS.values())
    from pdnn.train_config import recorded_options  # the same options, read the other way
    recorded = {f"--{name.replace('_', '-')}" for name in recorded_options(json.loads((tmp_path / "config.json")
                                                                                       .read_text()))}
    assert set(TRAIN_OPTIONS.values()) <= recorded
