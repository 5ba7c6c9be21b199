"""Evaluations record the weights they measured and the code that measured them; readers warn
when a run changed since, and warnings print as one line."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import pdnn
from pdnn.cli import main
from pdnn.experiments.runs import ensure_evaluated
from pdnn.provenance import code_record, describe_code, remeasure

TINY = ["--dataset", "demo", "--subset", "256", "--model", "mlp", "--width", "32", "--quiet"]
EVAL = ["--samples", "1,2", "--repeats", "1", "--quiet"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``current``: evaluated at epoch 1 and unchanged; ``resumed``: the same evaluation, then
    trained on to epoch 2 (as after ``train --resume``)."""
    root = tmp_path_factory.mktemp("runs")
    current, resumed = root / "current", root / "resumed"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(current)]) == 0
    assert main(["eval", str(current), *EVAL]) == 0
    shutil.copytree(current, resumed)
    assert main(["train", "--out", str(resumed), "--resume", "--epochs", "2", "--quiet"]) == 0
    return current, resumed


def without_record(run: Path, to: Path) -> Path:
    """A copy of ``run`` whose evaluation was written before the weights were recorded."""
    shutil.copytree(run, to)
    document = json.loads((to / "eval-network.json").read_text())
    del document["weights"]
    (to / "eval-network.json").write_text(json.dumps(document))
    return to


def messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_eval_records_epoch_and_sha256_of_the_checkpoint(runs):
    current, _ = runs
    weights = json.loads((current / "eval-network.json").read_text())["weights"]
    assert weights == {"checkpoint": "checkpoint.pt", "epoch": 1,
                       "sha256": hashlib.sha256((current / "checkpoint.pt").read_bytes()).hexdigest()}


def test_a_checkpoint_replaced_while_it_is_read_is_recorded_as_the_one_measured(runs, tmp_path, monkeypatch):
    """Training replaces checkpoint.pt between any two reads of an evaluation: the record must
    name the weights that were loaded, never the ones before them."""
    import pdnn.convert.rundir
    import pdnn.runs

    current, resumed = runs
    run = tmp_path / "run"
    shutil.copytree(current, run)
    newer = (resumed / "checkpoint.pt").read_bytes()  # epoch 2
    load = pdnn.convert.rundir.load_model
    calls = []

    def load_then_train_on(run_dir, device="cpu", replace_every_time=False):
        calls.append(run_dir)
        model = load(run_dir, device)
        path = Path(run_dir) / "checkpoint.pt"
        if len(calls) == 1:  # the epoch-1 weights were read, then training wrote on
            path.write_bytes(newer)
        elif replace_every_time:
            path.write_bytes((current / "checkpoint.pt").read_bytes() if path.read_bytes() == newer else newer)
        return model

    monkeypatch.setattr(pdnn.convert.rundir, "load_model", load_then_train_on)
    model, _, weights = pdnn.runs.load_measured(run, "cpu")
    assert len(calls) == 2 and weights["epoch"] == 2
    assert weights["sha256"] == hashlib.sha256(newer).hexdigest()
    state = pdnn.runs.load_checkpoint(resumed / "checkpoint.pt")["model"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # a checkpoint that keeps changing is named, not guessed at
    monkeypatch.setattr(pdnn.convert.rundir, "load_model", lambda run_dir, device: load_then_train_on(run_dir, device, True))
    with pytest.raises(pdnn.runs.RunError, match="changed three times while it was read"):
        pdnn.runs.load_measured(run, "cpu")


def test_an_evaluation_of_another_conversion_of_the_same_source_is_stale(tmp_path):
    """Every conversion of one source keeps the source's checkpoint byte for byte, so the
    checkpoint's sha256 could not tell an evaluation of the replaced conversion (one that ran
    while `convert --force` replaced it) from one of the new: the record names the spec too."""
    source, converted = tmp_path / "tanh", tmp_path / "converted"
    assert main(["train", *TINY, "--neuron", "tanh", "--epochs", "1", "--out", str(source)]) == 0
    assert main(["convert", str(source), "--method", "gaussian", "--scale", "2", "--out", str(converted),
                 "--quiet"]) == 0
    assert main(["eval", str(converted), *EVAL]) == 0
    document = json.loads((converted / "eval-network.json").read_text())
    assert len(document["weights"]["conversion"]) == 64
    config = json.loads((converted / "config.json").read_text())
    config["convert"] = {**config["convert"], "scale": 0.5}  # converted again, as --force would leave it
    (converted / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="eval-network.json measured another conversion than config.json now names"):
        assert main(["plot", str(converted), "--out", str(tmp_path / "plot.png")]) == 0


def test_evaluation_and_every_epoch_record_the_code_that_ran(runs):
    current, resumed = runs
    code = code_record()
    assert code["pdnn"] == pdnn.__version__ and set(code) == {"pdnn", "commit", "modified"}
    assert json.loads((current / "eval-network.json").read_text())["code"] == code
    assert [epoch["code"] for epoch in json.loads((resumed / "metrics.json").read_text())] == [code, code]


def git(directory: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_code_record_names_the_commit_and_says_when_the_source_differs(tmp_path):
    repo, package = tmp_path / "repo", tmp_path / "repo" / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (repo / "README").write_text("a\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    assert describe_code(package) == {"commit": head, "modified": False}
    (repo / "README").write_text("b\n")  # outside the package: not the code that ran
    assert describe_code(package) == {"commit": head, "modified": False}
    (package / "__init__.py").write_text("x = 2\n")
    assert describe_code(package) == {"commit": head, "modified": True}
    git(repo, "checkout", "-q", "--", ".")
    (package / "new.py").write_text("")
    assert describe_code(package) == {"commit": head, "modified": True}
    installed = repo / "venv" / "pkg"  # a copy inside the repository that git does not track
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("x = 1\n")
    assert describe_code(installed) == {"commit": None, "modified": None}
    assert describe_code(tmp_path / "elsewhere") == {"commit": None, "modified": None}


def test_plot_and_tradeoff_warn_naming_the_run_evaluated_before_a_resume(runs, tmp_path):
    current, resumed = runs
    for argv in (["plot", str(current), str(resumed), "--out", str(tmp_path / "fig.png")],
                 ["tradeoff", str(current), str(resumed), "--json", str(tmp_path / "t.json"),
                  "--png", str(tmp_path / "t.png")]):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert main(argv) == 0
        assert messages(record) == [f"{resumed}: eval-network.json measured epoch 1, but checkpoint.pt has changed "
                                    f"since (it now holds epoch 2); rerun `pdnn eval {resumed} --samples 1,2 "
                                    "--repeats 1 --subset 256`"], argv[0]
    again = tmp_path / "again"
    shutil.copytree(resumed, again)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(["eval", str(again), *EVAL]) == 0  # evaluated again: current
        assert main(["plot", str(current), str(again), "--out", str(tmp_path / "fig.png")]) == 0
    assert messages(record) == []


def test_the_command_a_stale_evaluation_names_measures_that_file_again(runs, tmp_path):
    """It had named ``pdnn eval RUN`` for every file, which writes eval-network.json: a stale
    eval-layer.json kept its warning however often it was followed, and an eval-network.json
    was measured again at other T values, repeats and draws than it held (review R103)."""
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    assert main(["eval", str(run), "--aggregate", "layer", "--samples", "1,3", "--repeats", "2", "--seed", "5",
                 "--subset", "128", "--quiet"]) == 0
    layer = json.loads((run / "eval-layer.json").read_text())
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    for _ in range(2):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert main(["plot", str(run), "--aggregate", "layer", "--out", str(tmp_path / "fig.png")]) == 0
        if not record:
            break
        (message,) = messages(record)
        command = message.rpartition("rerun `")[2].rstrip("`").split()
        assert command[:3] == ["pdnn", "eval", str(run)]
        assert main([*command[1:], "--quiet"]) == 0
    else:
        raise AssertionError(f"the warning stayed after its command ran: {message}")
    again = json.loads((run / "eval-layer.json").read_text())
    assert [(r["samples"], r["repeats"]) for r in again["results"]] == [(1, 2), (3, 2)]
    assert (again["seed"], again["examples"]) == (layer["seed"], layer["examples"]) == (5, 128)


def test_a_plot_of_a_run_whose_checkpoint_was_damaged_since_is_drawn_with_a_warning(runs, tmp_path):
    """Reading the checkpoint to name its epoch stopped the figure (``is not a readable
    checkpoint``), which a missing checkpoint did not: the evaluation plotted is intact."""
    damaged = tmp_path / "damaged"
    shutil.copytree(runs[0], damaged)
    with open(damaged / "checkpoint.pt", "r+b") as checkpoint:
        checkpoint.truncate(1000)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(["plot", str(damaged), "--out", str(tmp_path / "fig.png")]) == 0
    (message,) = messages(record)
    assert message.startswith(f"{damaged}: eval-network.json measured epoch 1, but checkpoint.pt has changed since, "
                              f"and {damaged / 'checkpoint.pt'} is not a readable checkpoint")
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_evaluations_without_a_record_are_unknown_said_once(runs, tmp_path):
    old_a, old_b = without_record(runs[0], tmp_path / "a"), without_record(runs[1], tmp_path / "b")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(["plot", str(old_a), str(old_b), str(runs[0]), "--out", str(tmp_path / "fig.png")]) == 0
    (message,) = messages(record)
    assert message.startswith(f"{old_a}, {old_b}: the evaluation does not record which weights it measured")
    assert "unknown" in message


def test_committed_results_stay_readable(tmp_path):
    """The study's evaluations predate the record: they plot and trade off, with one 'unknown' line."""
    committed = [REPO / "results" / "cifar10" / "runs" / name for name in ("pbit-s1", "pbit-s2", "tanh")]
    committed = [run for run in committed if (run / "eval-network.json").is_file()]
    assert committed, "results/cifar10 has no evaluated runs"
    for argv in (["plot", *map(str, committed), "--out", str(tmp_path / "fig.png")],
                 ["tradeoff", *map(str, committed), "--json", str(tmp_path / "t.json"),
                  "--png", str(tmp_path / "t.png")]):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert main(argv) == 0
        with_checkpoint = [str(run) for run in committed if (run / "checkpoint.pt").is_file()]
        assert len(record) == (1 if with_checkpoint else 0)
        if with_checkpoint:
            assert messages(record)[0].startswith(", ".join(with_checkpoint) + ": the evaluation does not record")


def test_ensure_evaluated_reevaluates_a_changed_run_only(runs, tmp_path):
    current, resumed = runs
    stale = tmp_path / "stale"
    shutil.copytree(resumed, stale)
    document = json.loads((current / "eval-network.json").read_text())
    assert ensure_evaluated(current, [1, 2], 1, progress=False) == document  # kept
    assert json.loads((stale / "eval-network.json").read_text())["weights"]["epoch"] == 1
    assert ensure_evaluated(stale, [1, 2], 1, progress=False)["weights"]["epoch"] == 2  # redone
    old = without_record(current, tmp_path / "old")
    assert "weights" not in ensure_evaluated(old, [1, 2], 1, progress=False)  # unknown: kept, not redone


def test_ensure_evaluated_never_reuses_other_draws(runs, tmp_path):
    """An evaluation of the same weights with another seed or on other test examples (a user's
    `pdnn eval --subset 16 --seed 7` in a study's run) is redone, not reported as the study's."""
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    assert main(["eval", str(run), "--samples", "1,2", "--repeats", "1", "--seed", "7", "--subset", "16",
                 "--quiet"]) == 0
    document = ensure_evaluated(run, [1, 2], 1, progress=False)
    assert (document["seed"], document["subset"]) == (0, 256)  # the run's own subset, as evaluate_run takes it
    assert document["examples"] > 16 and ensure_evaluated(run, [1, 2], 1, progress=False) == document  # then kept


def test_warnings_print_as_one_line_from_the_command(runs, tmp_path):
    old = without_record(runs[0], tmp_path / "old")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pdnn", "plot", str(old), "--out", str(tmp_path / "fig.png")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"pdnn plot: warning: {old}: the evaluation does not record which weights "
                                        "it measured (written by an earlier pdnn), so whether it matches the "
                                        "checkpoint is unknown; `pdnn eval` records it"]
    # after the command, the library's callers get Python's own format back
    assert main(["plot", str(runs[0]), "--out", str(tmp_path / "fig.png")]) == 0
    assert warnings.formatwarning("m", UserWarning, "file.py", 7) == "file.py:7: UserWarning: m\n"


def test_the_command_that_measures_an_evaluation_again_asks_for_the_subset_it_asked_for():
    """An evaluation of the whole test split was named with `--subset` of its size (harmless
    there, but not the command that made it); a file older than the subset's record keeps it."""
    rows = [{"samples": 1, "accuracy_mean": 0.5, "repeats": 2}]
    whole, part = {"results": rows, "subset": None, "examples": 1000}, {"results": rows, "subset": 16, "examples": 16}
    assert remeasure("r", "eval-network.json", whole) == "`pdnn eval r --samples 1 --repeats 2`"
    assert remeasure("r", "eval-network.json", part) == "`pdnn eval r --samples 1 --repeats 2 --subset 16`"
    older = {"results": rows, "examples": 1000}
    assert remeasure("r", "eval-network.json", older) == "`pdnn eval r --samples 1 --repeats 2 --subset 1000`"
