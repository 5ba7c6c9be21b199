"""The demo and the study, end to end on tiny slices of the embedded data."""
import json
import shlex
import warnings

import numpy as np
import pytest
import torch

from pdnn.cli import main
from pdnn.devices import processor_name, processor_text, where_measured
from pdnn.experiments.runs import ensure_evaluated, ensure_trained
from pdnn.io import RunError
from pdnn.models import ModelConfig
from pdnn.train import TrainConfig
from pdnn.experiments.study import StudySpec, _epochs_text, _hardware_text, assess_claims


def test_demo_trains_evaluates_and_plots(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "p-DNN (p-bit, s=4)" in out and "32-bit tanh" in out
    assert (tmp_path / "accuracy_vs_samples.png").stat().st_size > 1000
    assert [r["samples"] for r in json.loads((tmp_path / "pbit" / "eval-network.json").read_text())["results"]] == [
        1, 2, 5, 10, 20, 50]
    config = json.loads((tmp_path / "pbit" / "config.json").read_text())
    config["model"]["width"] += 1  # a run of other settings in the demo's folder: refused, named by its key
    (tmp_path / "pbit" / "config.json").write_text(json.dumps(config))
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err  # (not "--width": pdnn demo has no such option; R161)
    assert f"its model configuration differs from the requested one (in width: {config['model']['width']} -> " in err


def test_study_is_resumable_and_reports_claims(tmp_path, capsys):
    args = ["study", "--dataset", "demo", "--model", "mlp", "--width", "16", "--epochs", "1", "--subset", "200",
            "--eval-subset", "100", "--train-samples", "1,2", "--samples", "1,2,10", "--beta", "2", "--out", str(tmp_path),
            "--quiet"]
    assert main(args) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "| pbit-s2 | 2 |" in readme and "## The paper's claims beside our numbers" in readme
    # which copy of the data: a JPEG CIFAR-10 scores otherwise, and its README asks for it to be said
    assert "- Data: `demo` from " in readme and "embedded" in readme.split("- Data:")[1].splitlines()[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["runs"]) >= {"tanh", "sigmoid", "quant3", "pbit-s1", "pbit-unipolar-s2"}
    for name in ("accuracy_vs_samples_pbit.png", "train_test_matrix.png"):
        assert (tmp_path / name).exists()
    beta = {name: json.loads((tmp_path / "runs" / name / "config.json").read_text())["model"]["beta"]
            for name in ("tanh", "quant3", "pbit-s1", "pbit-unipolar-s2")}
    assert beta == {"tanh": 1.0, "quant3": 1.0, "pbit-s1": 2.0, "pbit-unipolar-s2": 2.0}  # p-bit runs only
    assert "--beta 2" in readme
    assert f"{torch.get_num_threads()} thread" in readme and "(ran on cpu)." in readme  # what the runs recorded
    # the vector instructions beside the model name, which alone does not tell a Zen 3 from a Zen 4
    assert f"{processor_name()} ({torch.backends.cpu.get_cpu_capability()}), " in readme
    assert summary["runs"]["tanh"]["processors"] == [processor_text(where_measured())]
    stamp = (tmp_path / "runs" / "pbit-s2" / "checkpoint.pt").stat().st_mtime_ns
    assert main(args) == 0  # a rerun reuses every finished run
    assert (tmp_path / "runs" / "pbit-s2" / "checkpoint.pt").stat().st_mtime_ns == stamp
    spec = (tmp_path / "spec.json").read_bytes()
    for other, named in ((["--lr", "0.01"], "(in --lr: 0.001 -> 0.01;"), (["--seed", "3"], "(in --seed: 0 -> 3;"),
                         (["--width", "8"], "model configuration differs from the requested one (in --width: "),
                         (["--subset", "150"], "data configuration differs from the requested one (in --subset: "),
                         (["--beta", "3"], "(in --beta: 2.0 -> 3.0)"),  # (it named the settings' keys, R157)
                         (["--eval-subset", "50"], "monitor_examples (set by --eval-subset): 100 -> 50")):
        changed = list(args)
        if other[0] in changed:
            changed[changed.index(other[0]) + 1] = other[1]
        else:
            changed += other
        assert main(changed) == 2  # never the old runs under the new settings
        err = capsys.readouterr().err
        assert "cannot reuse" in err and named in err
        assert (tmp_path / "spec.json").read_bytes() == spec
        assert (tmp_path / "runs" / "pbit-s2" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert main([*args[:-3], "--repeats", "0", "--out", str(tmp_path / "new"), "--quiet"]) == 2
    assert not (tmp_path / "new").exists()  # refused before anything is written
    assert main([*args[:-3], "--train-samples", "1,0", "--out", str(tmp_path / "new"), "--quiet"]) == 2
    assert "--train-samples must be" in capsys.readouterr().err
    assert (tmp_path / "accuracy_vs_samples_pbit-unipolar.png").exists()
    assert main([*args, "--pbit-neurons", "pbit"]) == 0  # fewer runs summarised: their figure goes (it stayed, R189)
    assert not (tmp_path / "accuracy_vs_samples_pbit-unipolar.png").exists()


def test_a_study_without_its_data_changes_no_file(tmp_path, monkeypatch, capsys):
    """spec.json is written with the summary it describes, not before the runs it names."""
    monkeypatch.setattr("pdnn.data.locate.DEFAULT_ROOTS", ())
    monkeypatch.delenv("PDNN_DATA", raising=False)
    args = ["study", "--dataset", "cifar10", "--model", "mlp", "--width", "8", "--epochs", "1", "--subset", "20",
            "--out", str(tmp_path), "--quiet"]
    assert main(args) == 2
    assert "dataset 'cifar10' not found" in capsys.readouterr().err
    assert not (tmp_path / "spec.json").exists()
    (tmp_path / "spec.json").write_text("an earlier study's")
    assert main([*args, "--samples", "1,3"]) == 2
    assert (tmp_path / "spec.json").read_text() == "an earlier study's"


@pytest.mark.parametrize("holds, named", [
    ({"spec.json": '{"format": "pdnn-hw-1", "layers": []}'}, "spec.json is not a study's"),
    ({"config.json": "{}"}, "is a run directory"),
    ({"plan-state.json": "{}"}, "holds a reproduce plan"),
    ({"summary.json": "{}", "README.md": "# low-bit"}, "holds summary.json and README.md but no study's spec.json"),
])
def test_a_study_refuses_a_folder_of_another_commands_results(tmp_path, capsys, holds, named):
    for name, text in holds.items():
        (tmp_path / name).write_text(text)
    args = ["study", "--dataset", "demo", "--model", "mlp", "--width", "8", "--epochs", "1", "--subset", "50",
            "--out", str(tmp_path), "--quiet"]
    assert main(args) == 2
    assert named in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(holds)
    assert all((tmp_path / name).read_text() == text for name, text in holds.items())


def test_the_command_a_study_records_asks_for_the_same_study(tmp_path):
    from dataclasses import asdict

    from pdnn.cli import build_parser
    from pdnn.cli.study import spec_of
    from pdnn.experiments.study import recorded_command

    for spec in (StudySpec(), StudySpec(dataset="demo", model="mlp", width=16, beta=1.2345678901, epochs=3,
                                        subset=200, eval_subset=100, batch_size=32, lr=0.0005, schedule="cosine",
                                        seed=7, test_samples=[1, 3], train_samples=[2], quant_bits=[2],
                                        pbit_neurons=["pbit"], repeats=2)):
        command = recorded_command(tmp_path, spec).split()
        assert command[:2] == ["pdnn", "study"]
        assert asdict(spec_of(build_parser().parse_args(command[1:]))) == asdict(spec)
    spaced = shlex.split(recorded_command(tmp_path / "a b", StudySpec()))  # a folder with a space read back whole
    assert build_parser().parse_args(spaced[1:]).out == str(tmp_path / "a b")


def test_a_study_names_a_damaged_run_record(tmp_path, capsys):
    args = ["study", "--dataset", "demo", "--model", "mlp", "--width", "8", "--epochs", "1", "--subset", "100",
            "--train-samples", "1", "--quant-bits", "1", "--pbit-neurons", "pbit", "--samples", "1,2", "--repeats",
            "1", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    for name, text, message in (("metrics.json", '{"epoch": 1}', "is not a run's metrics"),
                                ("metrics.json", '[{"epoch": 1}]', "with epoch, train_loss, epoch_time_s"),
                                ("eval-network.json", "[]", "has no 'results' list"),
                                ("eval-network.json", '{"seed": 0, "deterministic": true, "results": '
                                 '[{"samples": 1, "accuracy_mean": 0.5, "repeats": 1}]}',
                                 "lacks time_s, examples, accuracy_std"),  # reused as it is: a deterministic run
                                ("eval-network.json", '{"results": [{"samples": 1, "accuracy_mean": 0.5, "repeats": "1"}]}',
                                 "an integer 'repeats' >= 1"),
                                ("config.json", None, "has no 'train' section")):
        record = tmp_path / "runs" / "tanh" / name
        kept = record.read_text()
        if text is None:  # the config without its training section
            text = json.dumps({k: v for k, v in json.loads(kept).items() if k != "train"})
        record.write_text(text)
        assert main(args) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
        record.write_text(kept)


def test_the_study_readme_names_the_hardware_its_runs_recorded(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # this machine never stands in for a run's
    monkeypatch.setattr("torch.get_num_threads", lambda: 7)
    one = {"trained_on": ["cpu"], "evaluated_on": "cpu", "threads": [1], "processors": ["EPYC"], "torch": ["2.13"]}
    assert _hardware_text({"a": one}) == "EPYC, 1 thread, torch 2.13 (ran on cpu)"
    two = {"trained_on": ["cpu", "cuda:0"], "evaluated_on": "cpu", "threads": [4], "processors": ["Xeon"],
           "torch": ["2.13", "2.14"]}
    assert (_hardware_text({"a": {**one, "trained_on": ["cuda:0"], "threads": [2]}, "b": two})
            == "EPYC; Xeon, 2/4 threads, torch 2.13/2.14 (trained on cpu, cuda:0; evaluated on cpu)")
    # a run that predates the records: not recorded, not this machine's
    old = {"trained_on": None, "evaluated_on": "cpu", "threads": None, "processors": None, "torch": None}
    assert _hardware_text({"a": one, "b": old}) == (
        "processor not recorded, threads not recorded, torch not recorded (devices not recorded)")
    # runs of the code before processors and versions were recorded
    older = {key: value for key, value in one.items() if key not in ("processors", "torch")}
    assert _hardware_text({"a": older}) == "processor not recorded, 1 thread, torch not recorded (ran on cpu)"


def test_the_study_readme_says_which_copy_of_the_data_its_runs_read():
    from pdnn.experiments.study import _data_source_text

    jpeg = "/data/cifar10-jpeg (class-folder zip)"
    assert _data_source_text({"a": {"data_source": jpeg}, "b": {"data_source": jpeg}}) == f" from {jpeg}"
    assert _data_source_text({"a": {"data_source": jpeg}, "b": {"data_source": None}}) == (
        f" from {jpeg} (1 of the runs' evaluations do not record theirs)")  # not said as if of every run
    assert _data_source_text({"a": {}, "b": {"data_source": None}}) == ""  # summaries before the record


def test_the_study_readme_says_the_epochs_its_runs_trained():
    spec = StudySpec(dataset="demo", model="mlp", epochs=1)
    assert _epochs_text(spec, {"a": {"epochs": 1}, "b": {}}) == "1 epoch"  # b predates the record
    assert _epochs_text(spec, {"a": {"epochs": 2}, "b": {"epochs": 1}}) == (
        "1 / 2 epochs as the runs trained them (--epochs 1; runs trained longer by an earlier command are kept "
        "as they are)")


def test_the_study_readme_says_the_repeats_its_evaluations_have(tmp_path):
    args = ["study", "--dataset", "demo", "--model", "mlp", "--width", "8", "--epochs", "1", "--subset", "100",
            "--eval-subset", "50", "--train-samples", "1", "--quant-bits", "1", "--pbit-neurons", "pbit",
            "--samples", "1,2", "--out", str(tmp_path), "--quiet"]
    assert main([*args, "--repeats", "2"]) == 0
    assert "mean ± std over 2 independent sampling repeats." in (tmp_path / "README.md").read_text()
    assert main([*args, "--repeats", "1"]) == 0  # the evaluations with 2 are kept
    assert ("mean ± std over 2 independent sampling repeats as the runs were evaluated (--repeats 1; evaluations "
            "with more, made by an earlier command, are kept: pbit-s1 2)") in (tmp_path / "README.md").read_text()


def acc(mean):
    return {"mean": mean, "std": 0.0}


def test_claims_are_judged_by_their_stated_rules():
    spec = StudySpec(test_samples=[1, 2, 10], train_samples=[1, 2, 8], quant_bits=[3])
    runs = {"tanh": {"accuracy": {"1": acc(0.80)}}, "quant3": {"accuracy": {"1": acc(0.78)}}}
    table = {1: [0.795, 0.83, 0.79], 2: [0.78, 0.84, 0.80], 8: [0.70, 0.80, 0.83]}  # s -> acc at T=1,2,10
    for s, row in table.items():
        for neuron, shift in (("pbit", 0.0), ("pbit-unipolar", -0.02)):
            runs[f"{neuron}-s{s}"] = {"accuracy": {str(t): acc(a + shift) for t, a in zip([1, 2, 10], row)}}
    verdicts = {c["claim"]: c["holds"] for c in assess_claims(spec, runs)}
    assert verdicts["T = 1 matches the 32-bit baseline"]          # 79.5 vs 80.0
    assert verdicts["T = 2 surpasses the 32-bit baseline"]        # s=2 at T=2: 84 > 80
    assert verdicts["T = 10 matches the 3-bit model"]             # s=8 at T=10: 83 >= 77
    assert verdicts["training with s matching test T is best"]    # diagonal is best
    assert not verdicts["sigmoid (unipolar) and tanh (bipolar) p-bits perform alike"]  # 2-point gap


def test_a_rule_s_boundary_is_met_whatever_the_rounding():
    """Accuracies are counts over the test set: 86.74 % and 87.74 % are 1.00 point apart, which
    floating point computes as 0.010000000000000009."""
    spec = StudySpec(test_samples=[1], train_samples=[1], quant_bits=[3])
    runs = {"tanh": {"accuracy": {"1": acc(8774 / 10000)}}, "quant3": {"accuracy": {"1": acc(0.5)}},
            "pbit-s1": {"accuracy": {"1": acc(8674 / 10000)}}, "pbit-unipolar-s1": {"accuracy": {"1": acc(8574 / 10000)}}}
    verdicts = {c["claim"]: c["holds"] for c in assess_claims(spec, runs)}
    assert verdicts["T = 1 matches the 32-bit baseline"]
    assert verdicts["sigmoid (unipolar) and tanh (bipolar) p-bits perform alike"]


def test_a_tie_does_not_surpass():
    """The mean of 20 % and 22 % computes as 0.21000000000000002: a tie with 21 % read as surpassing."""
    spec = StudySpec(test_samples=[1, 2], train_samples=[2], quant_bits=[3], pbit_neurons=["pbit"])
    runs = {"tanh": {"accuracy": {"1": acc(0.21)}}, "pbit-s2": {"accuracy": {"1": acc(0.2), "2": acc((0.2 + 0.22) / 2)}}}
    assert not {c["claim"]: c["holds"] for c in assess_claims(spec, runs)}["T = 2 surpasses the 32-bit baseline"]


def test_one_training_s_leaves_the_matching_claim_unjudged():
    """With one s the best s and the matched s are the same run: the claim held by construction (R189)."""
    spec = StudySpec(test_samples=[1, 2], train_samples=[2], quant_bits=[3], pbit_neurons=["pbit"])
    runs = {"tanh": {"accuracy": {"1": acc(0.21)}}, "pbit-s2": {"accuracy": {"1": acc(0.2), "2": acc(0.25)}}}
    assert [c["claim"] for c in assess_claims(spec, runs)] == ["T = 2 surpasses the 32-bit baseline"]


def test_a_finished_cosine_run_is_not_extended_and_a_shorter_t_list_is_evaluated_again(tmp_path):
    """Extended, a cosine schedule restarted midway under the study's record of a longer one; an
    evaluation kept for a shorter T list came from a pool of another largest T (other draws)."""
    run = tmp_path / "run"
    model = ModelConfig(name="mlp", input_shape=(1, 28, 28), num_classes=10, width=16)
    ensure_trained(run, model, "demo", TrainConfig(epochs=1, schedule="cosine"), subset=128, progress=False)
    with pytest.raises(RunError, match="it trained 1 of a cosine schedule of 1, which is no 2-epoch schedule"):
        ensure_trained(run, model, "demo", TrainConfig(epochs=2, schedule="cosine"), subset=128, progress=False)
    config = json.loads((run / "config.json").read_text())
    config["train"]["epochs"] = 30  # as a 30-epoch run stopped after its first records it
    (run / "config.json").write_text(json.dumps(config))
    for epochs in (2, 1):  # continued or taken as it is, neither is a run of that schedule
        with pytest.raises(RunError, match=f"it trained 1 of a cosine schedule of 30, which is no {epochs}-epoch"):
            ensure_trained(run, model, "demo", TrainConfig(epochs=epochs, schedule="cosine"), subset=128, progress=False)
    ensure_evaluated(run, [1, 2, 5], 2, subset=50, progress=False)
    again = ensure_evaluated(run, [1, 2], 2, subset=50, progress=False)
    assert [r["samples"] for r in again["results"]] == [1, 2]


def test_a_longer_finished_run_is_kept_with_a_warning(tmp_path):
    """What ``demo --epochs 3`` over a 10-epoch demo does: the run is reused and the option named."""
    run = tmp_path / "run"
    model = ModelConfig(name="mlp", input_shape=(1, 28, 28), num_classes=10, width=16)
    ensure_trained(run, model, "demo", TrainConfig(epochs=2), subset=128, progress=False)
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    with pytest.warns(UserWarning, match=r"has trained 2 epochs and is kept as it is; --epochs 1 is ignored"):
        metrics = ensure_trained(run, model, "demo", TrainConfig(epochs=1), subset=128, progress=False)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert (run / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_a_finished_run_without_its_checkpoint_keeps_its_records_and_is_measured_with_advice(tmp_path):
    """A new evaluation said only that checkpoint.pt did not exist (R189); a run yet to write its
    first checkpoint is not given that advice (R191), and a study keeps such a run in silence, as
    the committed results, which hold no checkpoints, need."""
    run = tmp_path / "run"
    model = ModelConfig(name="mlp", input_shape=(1, 28, 28), num_classes=10, width=16)
    ensure_trained(run, model, "demo", TrainConfig(epochs=1), subset=128, progress=False)
    ensure_evaluated(run, [1, 2], 1, subset=50, progress=False)
    (run / "checkpoint.pt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_trained(run, model, "demo", TrainConfig(epochs=1), subset=128, progress=False)
    assert [r["samples"] for r in ensure_evaluated(run, [1, 2], 1, subset=50, progress=False)["results"]] == [1, 2]
    with pytest.raises(RunError, match=r"checkpoint.pt does not exist: the run's weights were not kept \(its records "
                                       r"stand\), so it cannot be measured anew; train the run again to measure it"):
        ensure_evaluated(run, [1, 2, 5], 1, subset=50, progress=False)
    (run / "metrics.json").unlink()  # as a run before its first epoch's end has it
    with pytest.raises(RunError, match=r"checkpoint.pt does not exist$"):
        ensure_evaluated(run, [1, 2, 5], 1, subset=50, progress=False)


@pytest.mark.parametrize("script, named", [("hw_summary.py", "holds no export/ folder"),
                                           ("ablation_summary.py", "is not an ablation folder"),
                                           ("generation_summary.py", "is not the generation study's folder")])
def test_the_summary_scripts_refuse_a_missing_or_foreign_folder_and_write_nothing(script, named, tmp_path):
    """A missing folder, an empty one, and a study's (runs/ and spec.json), whose summary.json the
    ablation and generation summaries would replace."""
    import subprocess
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    study = tmp_path / "study"
    (study / "runs").mkdir(parents=True)
    (study / "spec.json").write_text("{}")
    (study / "summary.json").write_text("{}")
    for folder, message in ((tmp_path / "missing", "is not a folder"), (tmp_path / "study", named)):
        done = subprocess.run([sys.executable, str(scripts / script), str(folder)], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1].startswith(f"{script}: error: ") and message in done.stderr
    assert sorted(p.name for p in study.iterdir()) == ["runs", "spec.json", "summary.json"]
    assert (study / "summary.json").read_text() == "{}" and not (tmp_path / "missing").exists()


def test_scripts_name_bad_arguments_in_one_line_and_write_nothing(tmp_path):
    """Each of these ended in a traceback (one of them after its evaluation had run)."""
    import subprocess
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    run = tmp_path / "empty" / "run"  # a run's records are never an output
    run.mkdir()
    for record in ("checkpoint.pt", "config.json"):
        (run / record).write_text("kept")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a whole module, not a state dict
    torch.save({"model": {"q.initialised": torch.zeros(2, 2)}, "epoch": 1}, tmp_path / "flags.pt")  # (one line)
    (tmp_path / "odd" / "README.md").mkdir(parents=True)  # a folder where the draws' README goes
    torch.save({"model": {"q.initialised": torch.zeros(())}, "epoch": "1"}, tmp_path / "epoch.pt")
    torch.save({"model": {"q.initialised": torch.zeros(())}, "epoch": True}, tmp_path / "true.pt")
    torch.save({"model": {"q.initialised": False}, "epoch": 1}, tmp_path / "bool.pt")
    torch.save({"model": {"q.initialised": np.eye(2)}, "epoch": 1}, tmp_path / "array.pt")  # (its repr: 2 lines)
    long_out = str(tmp_path / "o") + "/" + "/".join(["y" * 200] * 21)
    long_out += "/" + "z" * (4090 - len(long_out) - 1)
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "adaptive.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "study").mkdir()  # another study's folder, whose README the draws' would replace
    (tmp_path / "study" / "adaptive.json").write_text("{}")
    (tmp_path / "a-study").mkdir()  # pdnn study's, say
    (tmp_path / "a-study" / "README.md").write_text("# Accuracy versus samples on demo\n")
    (tmp_path / "a-study" / "runs").mkdir()  # whose summary.json the noise summary replaced (R171)
    (tmp_path / "idx").mkdir()  # a Fashion-MNIST whose first file is no IDX
    (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(b"x" * 100)
    cases = [(["noise_summary.py", "summary", "--root", str(tmp_path / "missing")], "holds no runs/ folder"),
             (["noise_summary.py", "summary", "--root", str(tmp_path / "empty")], "holds no runs/ folder"),
             (["noise_summary.py", "summary", "--root", str(tmp_path / "a-study")],
              "is another study's folder (its spec.json or README.md)"),
             (["noise_summary.py", "deterministic", str(tmp_path / "missing"), "--out", str(tmp_path / "d.json"),
               "--subset", "0"], "argument --subset: expected an integer >= 1"),  # not the library's words (R171)
             (["adaptive_near_ties.py", "--inputs", "0"], "--inputs must be an integer >= 1, got 0"),
             (["adaptive_near_ties.py", "--classes", "1"], "--classes must be an integer >= 2, got 1"),
             (["adaptive_near_ties.py", "--scale", "nan"], "--scale must be a finite number >= 0, got nan"),
             (["adaptive_look_levels.py", str(tmp_path / "missing")], "checkpoint.pt does not exist"),
             (["adaptive_look_levels.py", str(tmp_path / "missing"), "--shapes", "0,x"],
              "--shapes and --errors are numbers separated by commas"),
             (["adaptive_look_levels.py", str(tmp_path / "missing"), "--errors", "2"], "error level must be 0"),
             (["adaptive_mean_prior.py", str(tmp_path / "missing")], "checkpoint.pt does not exist"),
             (["adaptive_mean_prior.py", str(tmp_path / "missing"), "--errors", "0.1,x"],
              "--errors are numbers separated by commas"),
             (["adaptive_mean_prior.py", str(tmp_path / "missing"), "--errors", "2"], "error level must be 0"),
             (["make_embedded_demo.py", "--source", str(tmp_path / "idx"), "--out", str(tmp_path / "demo")],
              "bad IDX magic number"),
             (["noise_summary.py", "deterministic", str(tmp_path / "missing"), "--out", str(tmp_path / "d.json")],
              "does not exist"),
             (["noise_summary.py", "deterministic", str(tmp_path / "missing"), "--out", str(tmp_path / "empty")],
              "expected a file ending in .json"),
             (["repair_quantizer_flags.py", str(tmp_path / "missing.pt")], "does not exist"),
             (["repair_quantizer_flags.py", str(tmp_path / "a-file")], "is not a readable checkpoint"),
             (["noise_summary.py", "deterministic", str(tmp_path / "missing"), "--out",
               str(tmp_path / "a-file" / "d.json")], "is a file where a folder is expected"),
             (["noise_summary.py", "deterministic", str(run), "--out", str(run / "checkpoint.pt")],
              "expected a file ending in .json"),
             (["noise_summary.py", "deterministic", str(run), "--out", str(run / "config.json")],
              "is the record config.json of the run"),
             (["repair_quantizer_flags.py", str(tmp_path / "module.pt")], "is not a pdnn checkpoint"),
             (["make_embedded_demo.py", "--out", str(tmp_path / "a-file")], "is a file where a folder is expected"),
             (["make_embedded_demo.py", "--out", str(tmp_path / "a-file" / "x")], "is a file where a folder"),
             (["adaptive_draws.py", str(tmp_path / "empty"), "--out", str(tmp_path / "a-file")],
              "is a file where a folder is expected"),
             (["adaptive_draws.py", str(tmp_path / "empty"), "--out", str(tmp_path / "study")],
              "holds a study (adaptive.json)"),
             (["adaptive_draws.py", str(tmp_path / "empty"), "--out", str(tmp_path / "a-study")],
              "holds a README.md that is not a draws summary"),
             (["repair_quantizer_flags.py", str(tmp_path / "flags.pt")],
              "flag q.initialised is a tensor of shape [2, 2]; expected a tensor of one value"),
             (["adaptive_draws.py", str(tmp_path / "empty"), "--out", str(tmp_path / "odd")],
              "README.md is a folder where a file is written"),
             (["adaptive_draws.py", str(tmp_path / "empty"), "--out", str(tmp_path / ("x" * 300))],
              "File name too long"),
             (["repair_quantizer_flags.py", str(tmp_path / "bool.pt")],
              "flag q.initialised is False; expected a tensor of one value"),
             (["repair_quantizer_flags.py", str(tmp_path / "array.pt")],
              "flag q.initialised is array([[1., 0.], [0., 1.]])"),
             (["adaptive_draws.py", str(deep), "--out", str(tmp_path / "o")],
              "is nested too deeply to be read as JSON"),
             (["adaptive_draws.py", str(tmp_path / ("x" * 300)), "--out", str(tmp_path / "o")], "File name too long"),
             (["adaptive_draws.py", str(tmp_path / "empty"), "--out", long_out],
              "File name too long"),  # a folder name the system takes, but not with draws.json in it
             (["repair_quantizer_flags.py", str(tmp_path / "epoch.pt")], "'epoch' is '1'; expected a whole number"),
             (["repair_quantizer_flags.py", str(tmp_path / "true.pt")], "'epoch' is True; expected a whole number")]
    for (script, *argv), said in cases:
        done = subprocess.run([sys.executable, str(scripts / script), *argv], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (script, done.stderr)
        last = done.stderr.splitlines()[-1]  # (argparse names a subcommand's parser "script subcommand")
        assert last.startswith(script) and ": error: " in last and said in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-study", "array.pt", "bool.pt", "deep", "empty",
                                                          "epoch.pt", "flags.pt", "idx", "module.pt", "odd", "study",
                                                          "true.pt"]
    assert sorted(p.name for p in (tmp_path / "a-study").iterdir()) == ["README.md", "runs"]
    assert [p.name for p in (tmp_path / "odd").iterdir()] == ["README.md"]  # no draws.json left alone
    assert (tmp_path / "a-study" / "README.md").read_text() == "# Accuracy versus samples on demo\n"
    assert [p.name for p in (tmp_path / "study").iterdir()] == ["adaptive.json"]
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["run"]
    assert all((run / record).read_text() == "kept" for record in ("checkpoint.pt", "config.json"))
    done = subprocess.run([sys.executable, str(scripts / "repair_quantizer_flags.py"), "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "CHECKPOINT" in done.stdout


def test_the_ablation_script_takes_no_arguments():
    """It ignored them: --help or a typo started the ablation (R171)."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "cifar10_ablation.sh"
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and shown.stdout.startswith("What moves a CIFAR-10 p-DNN")
    typo = subprocess.run(["bash", str(script), "--resmue"], capture_output=True, text=True, timeout=30)
    assert typo.returncode == 2 and typo.stderr.strip().endswith("takes no arguments, got --resmue")


@pytest.mark.parametrize("script", ["lowbit_summary.py", "gap_summary.py"])
def test_the_summary_scripts_without_options_refuse_one(script):
    """They took no options and ignored every argument: --help or a typo rewrote the committed
    results instead of printing help or an error."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / script
    done = subprocess.run([sys.executable, str(path), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and f"python scripts/{script}" in done.stdout


@pytest.mark.parametrize("script, begin", [("ablation_summary.py", "<!-- BEGIN table -->"),
                                           ("generation_summary.py", "<!-- BEGIN results -->")])
def test_the_summary_scripts_refuse_a_readme_without_both_markers(script, begin, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "runs").mkdir()
    (tmp_path / "README.md").write_text(f"# kept\n{begin}\n")
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / script),
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "lacks the" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "runs"]


def test_the_ablation_summary_names_a_run_it_cannot_tabulate_and_writes_nothing(tmp_path):
    """A converted run (a noise study's: no metrics.json) or a damaged record: one line naming the
    file, and no summary.json written (it had been, with the damaged value, before a traceback)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "ablation_summary.py"
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    config = {"model": {"neuron": "pbit", "width": 8, "beta": 1.0},
              "train": {"samples": 1, "epochs": 1, "lr": 0.01, "schedule": "cosine", "loss_rule": "mean-output",
                        "augment": False}}
    evaluation = {"examples": 10, "results": [{"samples": 1, "accuracy_mean": 0.5, "accuracy_std": 0.1}]}
    metrics = [{"epoch": 1, "epoch_time_s": 2.0}]
    files = {"config.json": config, "eval-network.json": evaluation}
    for name, document in files.items():
        (run / name).write_text(json.dumps(document))
    cases = [(None, None, "has no metrics.json: expected a trained run"),
             ("metrics.json", "not json", "metrics.json is not valid JSON"),
             ("metrics.json", [{"epoch": 1, "epoch_time_s": "2.0"}], "epoch_time_s must be a finite number"),
             ("metrics.json", [{"epoch": 1, "epoch_time_s": float("nan")}], "metrics.json holds NaN, which is not JSON"),
             ("eval-network.json", [], "eval-network.json has no 'results' list"),
             ("eval-network.json", {**evaluation, "results": []}, "eval-network.json has an empty 'results' list"),
             ("eval-network.json", {**evaluation, "results": [{"samples": 1, "accuracy_mean": "0.5"}]},
              "each result needs an integer 'samples' in [1, 2**63 - 1], an 'accuracy_mean' in [0, 1]"),
             ("eval-network.json", {**evaluation, "results": [{"samples": 1, "accuracy_mean": 0.5,
                                                                "accuracy_std": None}]}, "a finite 'accuracy_std'"),
             ("eval-network.json", {**evaluation, "results": [{"samples": "1", "accuracy_mean": 0.5}]},
              "an integer 'samples' in"),
             ("eval-network.json", {**evaluation, "results": [{"samples": 10**20, "accuracy_mean": 0.5}]},
              "an integer 'samples' in [1, 2**63 - 1]"),
             ("eval-network.json", {**evaluation, "results": [*evaluation["results"], {"samples": 1,
                                                                                     "accuracy_mean": 0.1}]},
              "eval-network.json lists T = 1 more than once; an evaluation measures each T once"),
             ("config.json", {**config, "train": None}, "config.json is not a run's config: expected model.neuron")]
    for name, damage, named in cases:
        for good, document in {**files, "metrics.json": metrics}.items():  # all sound but the damaged one
            if name is not None:
                (run / good).write_text(json.dumps(document))
        if name is not None:
            (run / name).write_text(damage if isinstance(damage, str) else json.dumps(damage))
        done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines()[-1].startswith("ablation_summary.py: error: ") and named in done.stderr
        assert str(run) in done.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_the_generation_script_replaces_an_interrupted_conversion_and_copies_a_run_whole(tmp_path):
    """A conversion interrupted while writing its folder (no config.json) stopped every rerun of
    the script with convert's refusal: it is replaced with --force, as the noise study's are
    (R236). pbit-s8-clf60k's copy of pbit-s8 appears whole, as a folder moved into place."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "generation_study.sh"
    fake = tmp_path / "pdnn"
    fake.write_text('#!/bin/sh\necho "$@" >> "$LOG"\n')  # every pdnn command it runs, recorded
    fake.chmod(0o755)
    runs = tmp_path / "out" / "runs"
    for name, files in (("classifier", ["checkpoint.pt"]), ("tanh-pbit", ["checkpoint.pt"]),
                        ("pbit-s8", ["config.json", "checkpoint.pt", "metrics.json"])):
        (runs / name).mkdir(parents=True)
        for file in files:
            (runs / name / file).write_text(f"{name}/{file}")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PDNN": str(fake), "LOG": str(tmp_path / "log")}
    done = subprocess.run(["bash", str(script), "tanh-pbit", "pbit-s8-clf60k"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    converts = [line for line in (tmp_path / "log").read_text().splitlines() if line.startswith("convert")]
    assert len(converts) == 1 and converts[0].endswith(f"--out {runs}/tanh-pbit --force --quiet")
    assert sorted(p.name for p in (runs / "pbit-s8-clf60k").iterdir()) == ["checkpoint.pt", "config.json",
                                                                            "metrics.json"]
    assert (runs / "pbit-s8-clf60k" / "checkpoint.pt").read_text() == "pbit-s8/checkpoint.pt"
    assert not any(p.name.startswith(".") for p in runs.iterdir())
