"""Values a new user mistypes end in one line naming the value, never a traceback or a write."""
import pytest
import torch

from pdnn.cli import main
from pdnn.devices import resolve_device
from pdnn.models import ModelConfig

TINY = ["--dataset", "demo", "--subset", "256", "--model", "mlp", "--width", "32", "--quiet"]


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
    with pytest.raises(ValueError, match="unknown device 'tpu9'; expected one of cpu, cuda, mps"):
        resolve_device("tpu9")
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


@pytest.mark.parametrize("width", ["0", "-5"])
def test_width_below_one_is_a_one_line_error(width, tmp_path, capsys):
    argv = [*TINY[:-3], "--width", width, "--quiet"]
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    assert one_line_error(capsys, "train").endswith(f"width must be an integer >= 1 (or None for the model's own), "
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
