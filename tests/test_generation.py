"""Generative p-DNNs: the VAE, its training task, pdnn generate / fid, the Inception loader."""
import hashlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
import zipfile

import pytest
import torch
from PIL import Image

from damage import corrupt_zip_member
from test_data import make_cifar_batches
from pdnn import SampledModel
from pdnn.cli import main
from pdnn.train_config import train_command
from pdnn.errors import UsageError
from pdnn.generation import SampledVAE, generate, generate_at, image_grid
from pdnn.models import create
from pdnn.nn import PBit, QuantConv2d, QuantLinear, Quantize
from pdnn.runs import load_checkpoint

VAE_TINY = ["--task", "vae", "--dataset", "demo", "--subset", "128", "--width", "4", "--latent", "4", "--quiet"]
CLF_TINY = ["--dataset", "demo", "--subset", "128", "--model", "cnn", "--neuron", "tanh", "--width", "2", "--quiet"]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
@pytest.mark.parametrize("neuron", ["pbit", "pbit-unipolar", "tanh", "sigmoid", "sign", "quant:2"])
def test_vae_builds_for_every_neuron_and_image_size(shape, neuron):
    vae = create("vae", neuron=neuron, weight_bits=3, input_shape=shape, width=4, latent=5).eval()
    mu, logvar = vae.encode(torch.randn(2, *shape))
    assert mu.shape == logvar.shape == (2, 5)
    images = SampledModel(vae.decoder, samples=3)(mu)
    assert images.shape == (2, *shape) and images.min() >= 0 and images.max() <= 1
    assert all(m.weight_bits == 3 for m in vae.decoder.modules() if isinstance(m, (QuantLinear, QuantConv2d)))


def test_neuron_reaches_the_decoders_hidden_layers_only():
    vae = create("vae", neuron="quant:3", width=4)
    assert sum(isinstance(m, Quantize) for m in vae.decoder.modules()) == 2
    assert not any(isinstance(m, Quantize) for m in vae.encoder.modules())
    assert sum(isinstance(m, PBit) for m in create("vae", neuron="pbit", width=4).decoder.modules()) == 2


def test_bad_vae_sizes_are_refused():
    with pytest.raises(ValueError, match="divisible by 4, got 30x30"):
        create("vae", input_shape=(1, 30, 30))
    with pytest.raises(ValueError, match="latent must be an integer >= 1, got 0"):
        create("vae", latent=0)


def test_a_loss_rule_a_generator_does_not_follow_is_refused(tmp_path, capsys):
    """--loss-rule mean-loss was recorded in a generator's config and trained as mean-output."""
    assert main(["train", *VAE_TINY, "--epochs", "1", "--loss-rule", "mean-loss", "--out", str(tmp_path / "v")]) == 2
    assert "loss rule 'mean-loss' is for classifiers" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
    old = tmp_path / "old"  # recorded so before it was refused: it resumes, and its command says what it did
    assert main(["train", *VAE_TINY, "--epochs", "1", "--out", str(old)]) == 0
    config = json.loads((old / "config.json").read_text())
    config["train"]["loss_rule"] = "mean-loss"
    (old / "config.json").write_text(json.dumps(config))
    assert main(["train", "--out", str(old), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert "--loss-rule mean-output" in train_command(config, old)


def test_generated_image_is_the_mean_of_t_decoder_samples():
    torch.manual_seed(0)
    vae = create("vae", neuron="pbit", width=4, latent=3).eval()
    images = generate_at(vae, [1, 4], n=6, seed=5)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(5))
    samples = SampledModel(vae.decoder, 4, reduce="none", seed=6)(z)  # the same draws as generate_at
    assert torch.allclose(images[4], samples.mean(0), atol=1e-6)
    assert torch.allclose(images[1], samples[0], atol=1e-6)
    assert torch.equal(generate(vae, 4, 6, seed=5), images[4])
    assert not torch.equal(generate(vae, 4, 6, seed=7), images[4])


def test_a_large_t_is_drawn_in_parts_of_at_most_max_rows(monkeypatch):
    torch.manual_seed(0)
    vae = create("vae", neuron="pbit", width=4, latent=3).eval()
    rows, forward = [], SampledModel.forward

    def counting(self, z, *args, **kwargs):
        out = forward(self, z, *args, **kwargs)  # [samples, latents, C, H, W]
        rows.append(out.shape[0] * out.shape[1])
        return out

    monkeypatch.setattr(SampledModel, "forward", counting)
    images = generate_at(vae, [1, 5, 11], n=2, seed=5, max_rows=4)
    monkeypatch.undo()
    assert rows and max(rows) <= 4 and sum(rows) == 2 * 11  # every sample of both latents, in parts
    assert {t: tuple(i.shape) for t, i in images.items()} == {t: (2, 1, 28, 28) for t in (1, 5, 11)}
    assert all(0 <= i.min() and i.max() <= 1 for i in images.values())
    # within max_rows the parts are one call: the images of a small T are as before
    assert torch.equal(generate_at(vae, [1, 4], n=6, seed=5, max_rows=24)[4], generate(vae, 4, 6, seed=5))
    with pytest.raises(UsageError, match="at least one T"):
        generate_at(vae, [], 4)
    for rows in (0, -5, 2.5):
        with pytest.raises(UsageError, match="max_rows"):
            generate_at(vae, [1, 4], 2, max_rows=rows)


def test_averaging_more_samples_reduces_the_pixel_variance():
    # pixels of a T-sample mean have variance Var/T around the decoder's mean image: with 4000
    # pixels the T=16 variance is below half the T=1 variance by a wide margin (ratio ~ 1/16)
    torch.manual_seed(0)
    vae = create("vae", neuron="pbit", width=4, latent=3).eval()
    mean_image = generate(vae, 2000, 5, seed=1)
    v1 = (generate(vae, 1, 5, seed=1) - mean_image).pow(2).mean()
    v16 = (generate(vae, 16, 5, seed=1) - mean_image).pow(2).mean()
    assert v16 < 0.5 * v1


def test_sample_aware_loss_is_the_elbo_of_the_averaged_image():
    torch.manual_seed(0)
    vae = create("vae", neuron="tanh", width=4, latent=2).eval()
    x = torch.rand(3, 1, 28, 28)
    reconstruction, kl = SampledVAE(vae, samples=2, seed=0)(x, x)
    mu, logvar = vae.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    image = vae.decoder(mu + eps * (0.5 * logvar).exp())  # deterministic decoder: mean of 2 = one
    expected = torch.nn.functional.binary_cross_entropy(image, x, reduction="none").flatten(1).sum(1)
    assert torch.allclose(reconstruction, expected, rtol=1e-5)
    assert torch.allclose(kl, 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1), rtol=1e-5)


def test_train_vae_writes_a_run_and_resumes_bit_for_bit(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *VAE_TINY, "-s", "2", "--epochs", "2", "--out", str(straight)]) == 0
    assert main(["train", *VAE_TINY, "-s", "2", "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["train", "--out", str(resumed), "--resume", "--epochs", "2", "--quiet"]) == 0
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    metrics = json.loads((straight / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2] and all(m["test_loss"] > 0 for m in metrics)
    config = json.loads((straight / "config.json").read_text())
    assert config["model"]["name"] == "vae" and config["train"]["task"] == "vae"
    assert config["train"]["lr"] == 1e-4 and config["train"]["batch_size"] == 64  # the paper's generation runs
    assert all(m["train_reconstruction"] > 0 and m["train_kl"] >= 0 for m in metrics)


def test_task_and_model_must_agree(tmp_path, capsys):
    i = VAE_TINY.index("--latent")
    no_latent = VAE_TINY[:i] + VAE_TINY[i + 2 :]
    assert main(["train", *no_latent, "--model", "cnn", "--out", str(tmp_path / "a")]) == 2
    assert "task 'vae' trains the model 'vae', got model 'cnn'" in capsys.readouterr().err
    assert main(["train", *CLF_TINY, "--model", "vae", "--out", str(tmp_path / "b")]) == 2
    assert "is a generator; train it with --task vae" in capsys.readouterr().err
    assert main(["train", *CLF_TINY, "--latent", "3", "--out", str(tmp_path / "c")]) == 2
    assert "--latent applies to the model 'vae', not 'cnn'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", *VAE_TINY, "--epochs", "1", "--out", str(root / "vae")]) == 0
    assert main(["train", *CLF_TINY, "--epochs", "1", "--out", str(root / "clf")]) == 0
    return root


def test_generate_writes_images_and_a_grid(runs, tmp_path):
    out = tmp_path / "images"
    assert main(["generate", str(runs / "vae"), "--samples", "3", "--n", "7", "--nrow", "4", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:04d}.png" for i in range(7)] + ["grid.png"]
    assert Image.open(out / "0000.png").size == (28, 28)
    assert Image.open(out / "grid.png").size == (4 * 30 + 2, 2 * 30 + 2)
    from pdnn.cli.generate import image_name
    names = [image_name(i, 10_001) for i in range(10_001)]
    assert sorted(names) == names and names[0] == "00000.png" and image_name(9999, 10_000) == "9999.png"


def test_generate_shows_its_progress_on_a_terminal_unless_quiet(runs, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for quiet, shown in (([], True), (["--quiet"], False)):
        monkeypatch.setattr(sys, "stderr", Terminal())
        out = tmp_path / f"images{len(quiet)}"
        assert main(["generate", str(runs / "vae"), "--samples", "3", "--n", "5", "--out", str(out), *quiet]) == 0
        assert ("generating (T=3)" in sys.stderr.getvalue()) == shown


def test_an_interrupted_generate_leaves_no_folder_and_can_be_rerun(runs, tmp_path, monkeypatch):
    import pdnn.cli.generate as command

    out = tmp_path / "images"
    write = command.write_png

    def interrupted_at_the_third(path, image, calls=[]):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write(path, image)

    monkeypatch.setattr(command, "write_png", interrupted_at_the_third)
    assert main(["generate", str(runs / "vae"), "--n", "5", "--out", str(out)]) == 130  # as after Ctrl-C
    assert not list(tmp_path.iterdir())  # neither the images written so far nor their staging folder
    monkeypatch.setattr(command, "write_png", write)
    assert main(["generate", str(runs / "vae"), "--n", "5", "--out", str(out)]) == 0
    assert len(list(out.iterdir())) == 6


def test_seeds_torch_cannot_take_are_named_as_given(runs, tmp_path, capsys):
    """An out-of-range seed failed deep in torch.manual_seed, and one just below 2**64 was named
    as seed + 1, the p-bits' seed."""
    for seed, expected in ((10**23, f"error: --seed must be an integer in [-2**63, 2**64 - 1) (the seeds up to "
                                     f"seed + 1 are used), got {10**23}"),
                           (-(2**63) - 1, "--seed must be an integer in [-2**63, 2**64 - 1)"),
                           (2**64 - 1, f"[-2**63, 2**64 - 1) (the seeds up to seed + 1 are used), got {2**64 - 1}")):
        assert main(["generate", str(runs / "vae"), "--seed", str(seed), "--out", str(tmp_path / "images")]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "images").exists()


def test_generate_into_the_current_folder_or_a_linked_one(runs, tmp_path, monkeypatch):
    """Both empty folders were accepted, then refused after the work when a staged folder could
    not be moved over them."""
    (tmp_path / "here").mkdir()
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    monkeypatch.chdir(tmp_path / "here")
    assert main(["generate", str(runs / "vae"), "--n", "2", "--out", "."]) == 0
    assert main(["generate", str(runs / "vae"), "--n", "2", "--out", str(tmp_path / "link")]) == 0
    for folder in ("here", "target"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["0000.png", "0001.png", "grid.png"]


def test_generate_reruns_into_the_folder_a_killed_run_left(runs, tmp_path):
    """A run killed (SIGKILL) while it wrote left its lock and staging folder inside --out, and
    every rerun was refused as 'not an empty folder'."""
    out = tmp_path / "images"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pdnn.io import staging_folder, writer_lock
        out = Path({str(out)!r})
        with writer_lock(out), staging_folder(out / "grid.png") as staging:
            (staging / "0000.png").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    assert len(list(out.iterdir())) == 2  # the lock and the staging folder
    assert main(["generate", str(runs / "vae"), "--n", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "grid.png"]


@pytest.mark.parametrize("moved, other", [(2, None), (2, "notes.txt"), (4, None)])
def test_images_a_run_killed_while_moving_them_had_moved_are_removed_by_the_next(runs, tmp_path, moved, other):
    """SIGKILL while generate moved its images into --out left some of them there, a set that
    looked whole, and the rerun deleted the staged rest and refused the folder as not empty (R185).
    A file no run writes is kept, and the folder refused as before; and so is a whole set, whose
    grid (moved last) had arrived before the kill (R188)."""
    out = tmp_path / "images"
    names = ["0000.png", "0001.png", "0002.png", "grid.png"]
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pdnn.io import staging_folder, writer_lock
        out = Path({str(out)!r})
        with writer_lock(out), staging_folder(out / "grid.png") as staging:
            for name in {names!r}:
                (staging / name).write_bytes(b"old")
            for name in {names[:moved]!r}:
                os.replace(staging / name, out / name)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    if other:
        (out / other).write_text("kept")
    generate = ["generate", str(runs / "vae"), "--n", "2", "--out"]
    if moved == len(names):  # the whole set: kept
        assert main([*generate, str(out)]) == 2
        assert {p.name: p.read_bytes() for p in out.iterdir()} == dict.fromkeys(names, b"old")
        return
    with pytest.warns(UserWarning, match="removed the 2 images a killed run had moved into .* of an unfinished set"):
        assert main([*generate, str(out)]) == (2 if other else 0)
    if other:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == {other: b"kept"}
        return
    assert main([*generate, str(tmp_path / "fresh")]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes()
                                                                for p in (tmp_path / "fresh").iterdir()}


def test_a_grid_is_never_wider_than_its_images():
    images = torch.full((3, 1, 2, 2), 255, dtype=torch.uint8)
    assert torch.equal(image_grid(images, 10**20), image_grid(images, 3))
    assert image_grid(images, 3).shape == (1, 2 + 2 + 2, 3 * (2 + 2) + 2)
    assert image_grid(images[:0], 10).shape == (1, 2, 1 * (2 + 2) + 2)  # no image: an empty grid


def test_fid_with_inception_weights_defaults_to_more_images_than_features(tmp_path, monkeypatch):
    """The default --n, 2000, is below the 2049 images the covariance of Inception's 2048 features
    needs: the documented mode always failed."""
    import pdnn.cli.fid as fid_command

    asked = {}

    def record(run, classifier, inception, samples, n, *rest, **options):
        asked[inception is None] = n
        raise UsageError("recorded")

    monkeypatch.setattr(fid_command, "fid_run", record)
    assert main(["fid", str(tmp_path), "--inception-weights", str(tmp_path / "w.pth")]) == 2
    assert main(["fid", str(tmp_path), "--classifier", str(tmp_path)]) == 2
    assert asked == {False: 10000, True: 2000}


def test_generate_refuses_bad_input_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "images"
    assert main(["generate", str(runs / "clf"), "--out", str(out)]) == 2
    assert "a classifier); expected a generator" in capsys.readouterr().err
    assert main(["generate", str(runs / "vae"), "--samples", "0", "--out", str(out)]) == 2
    assert "--samples must be an integer >= 1, got 0" in capsys.readouterr().err  # (named as the option)
    assert main(["generate", str(runs / "vae"), "--n", "0", "--out", str(out)]) == 2
    assert "--n must be an integer >= 1, got 0" in capsys.readouterr().err
    for option, count, said in (("--n", 10**20, "error: --n must be an integer >= 1"),  # (tracebacks, then the
                                ("--n", 2**63 - 1, "error: --n must be an integer >= 1"),  # library's names)
                                ("--n", 2**60, "error: --n must be an integer >= 1"),  # bytes overflow
                                ("--samples", 2**63, "error: --samples must be an integer >= 1"),
                                ("--nrow", 0, "--nrow must be an integer >= 1, got 0")):
        assert main(["generate", str(runs / "vae"), option, str(count), "--out", str(out)]) == 2
        assert said in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["generate", str(runs / "vae"), "--out", str(out)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_fid_cli_names_its_features_and_reports_spread(runs, tmp_path, capsys):
    copy = tmp_path / "fid.json"
    # the classifier's penultimate layer has 4*2*3*3 = 72 features: n = 73 is the least allowed
    assert main(["fid", str(runs / "vae"), "--classifier", str(runs / "clf"), "--n", "73", "--samples", "1,3",
                 "--repeats", "2", "--json", str(copy), "--quiet"]) == 0
    document = json.loads(copy.read_text())
    assert document == json.loads((runs / "vae" / "fid-clf.json").read_text())
    assert document["metric"] == "fid-clf" and document["features"].startswith("fid-clf: penultimate features (72)")
    assert [r["samples"] for r in document["results"]] == [1, 3]
    for row in document["results"]:
        assert row["metric"] == "fid-clf" and row["n"] == 73 and len(row["values"]) == 2 and row["mean"] > 0
    assert "FID" not in capsys.readouterr().out
    vae = shutil.copytree(runs / "vae", tmp_path / "vae")  # (the shared run keeps its file)
    assert main(["fid", str(vae), "--classifier", str(runs / "clf"), "--n", "73", "--samples", "2",
                 "--repeats", "1", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[2] == "-"  # one repeat: no spread (it printed 0.000)
    assert main(["fid", str(runs / "vae"), "--classifier", str(runs / "clf"), "--repeats", "0", "--quiet"]) == 2
    assert "--repeats must be an integer >= 1, got 0" in capsys.readouterr().err  # (named as the option)


def test_fid_records_the_classifier_weights_it_used(runs, tmp_path, monkeypatch):
    """The classifier's record was taken after the distances: a classifier still training had
    its newer checkpoint recorded for features drawn from the older one."""
    import pdnn.runs

    clf, vae = tmp_path / "clf", tmp_path / "vae"
    shutil.copytree(runs / "clf", clf)
    shutil.copytree(runs / "vae", vae)
    used = hashlib.sha256((clf / "checkpoint.pt").read_bytes()).hexdigest()
    assert main(["train", *CLF_TINY, "--epochs", "1", "--seed", "1", "--out", str(tmp_path / "newer")]) == 0
    distances = pdnn.runs.fid_vs_samples

    def trained_on_meanwhile(*args, **kwargs):
        shutil.copy(tmp_path / "newer" / "checkpoint.pt", clf / "checkpoint.pt")
        return distances(*args, **kwargs)

    monkeypatch.setattr(pdnn.runs, "fid_vs_samples", trained_on_meanwhile)
    document = pdnn.runs.fid_run(vae, clf, None, [1], 73, 1, progress=False)
    assert document["feature_weights"]["sha256"] == used


def test_fid_shows_its_progress_on_a_terminal_unless_quiet(runs, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for quiet in ([], ["--quiet"]):
        monkeypatch.setattr(sys, "stderr", Terminal())
        assert main(["fid", str(runs / "vae"), "--classifier", str(runs / "clf"), "--n", "73", "--samples", "1,2",
                     "--repeats", "2", *quiet]) == 0
        assert ("fid: 100%" in sys.stderr.getvalue()) == (not quiet)


def test_a_score_is_reused_only_where_it_is_what_a_fresh_one_would_give(runs, tmp_path):
    from pdnn.experiments.runs import ensure_scored

    vae = tmp_path / "vae"
    shutil.copytree(runs / "vae", vae)
    first = ensure_scored(vae, runs / "clf", [1, 2, 5], 73, 2, progress=False)
    assert ensure_scored(vae, runs / "clf", [1, 5], 73, 2, progress=False) == first  # the same draws
    fewer = ensure_scored(vae, runs / "clf", [1, 5], 73, 1, progress=False)  # a mean over 1 repeat, not 2
    assert [r["repeats"] for r in fewer["results"]] == [1, 1]
    wider = ensure_scored(vae, runs / "clf", [1, 2, 5], 73, 1, progress=False)
    smaller = ensure_scored(vae, runs / "clf", [1, 2], 73, 1, progress=False)  # drawn with max(T) = 2, not 5
    assert [r["samples"] for r in wider["results"]] == [1, 2, 5]
    assert [r["samples"] for r in smaller["results"]] == [1, 2]
    assert ensure_scored(vae, runs / "clf", [1, 2], 73, 1, progress=False) == smaller


def test_a_decoder_with_non_finite_statistics_is_refused_not_drawn_black(runs, tmp_path, capsys):
    vae = tmp_path / "vae"
    shutil.copytree(runs / "vae", vae)
    state = torch.load(vae / "checkpoint.pt", weights_only=False)
    (name,) = [k for k in state["model"] if k.startswith("decoder.") and k.endswith("running_var")][:1]
    state["model"][name].fill_(float("nan"))
    torch.save(state, vae / "checkpoint.pt")
    assert main(["generate", str(vae), "-T", "2", "--n", "4", "--out", str(tmp_path / "images")]) == 2
    assert f"holds non-finite weights or statistics ({name})" in capsys.readouterr().err
    assert not (tmp_path / "images").exists()


def test_a_distance_of_nan_images_is_refused_not_measured_on_black_pixels():
    """The cast to uint8 made NaN pixels 0: ``fid_vs_samples`` of a decoder with one NaN weight
    gave an ordinary-looking 37.16 (R146)."""
    from pdnn.generation import fid_vs_samples, to_uint8

    vae = create("vae", neuron="pbit", weight_bits=32, input_shape=(1, 28, 28), latent=4)
    with torch.no_grad():
        vae.decoder[0].weight[0, 0] = float("nan")
    images = generate(vae, 2, 4)
    nan = int(images.isnan().sum())
    assert 0 < nan < images.numel()
    with pytest.raises(UsageError, match=f"{nan} of {images.numel()} pixels of the generated images are NaN"):
        to_uint8(images)
    extractor = lambda x: torch.randn(len(x), 4, dtype=torch.float64)  # noqa: E731  (any features: the real ones)
    extractor.dim, extractor.metric = 4, "test"
    with pytest.raises(UsageError, match="pixels of the generated images are NaN"):
        fid_vs_samples(vae, torch.zeros(8, 1, 28, 28, dtype=torch.uint8), extractor, [1], 8, repeats=1)
    assert torch.equal(to_uint8(torch.tensor([0.0, 0.5, 1.0, 2.0])),
                       torch.tensor([0, 128, 255, 255], dtype=torch.uint8))  # (a number is cast as before)


def test_features_that_are_not_finite_are_named_with_their_extractor_and_images():
    """"features hold NaN or infinite values" named neither the classifier nor which images (R210)."""
    from pdnn.generation import fid_vs_samples

    vae = create("vae", neuron="pbit", weight_bits=32, input_shape=(1, 28, 28), latent=4)
    real = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)

    def extractor(images):  # finite for the real images only (the first call)
        extractor.calls += 1
        return torch.full((len(images), 4), float("nan") if extractor.calls > extractor.finite else 1.0).add_(
            torch.randn(len(images), 4))

    extractor.dim, extractor.metric, extractor.source = 4, "fid-clf", "runs/clf"
    for finite, said in ((0, "the features (fid-clf) that runs/clf gives the first 8 real images hold NaN"),
                         (1, "the features (fid-clf) that runs/clf gives the images generated at T = 2 hold NaN")):
        extractor.calls, extractor.finite = 0, finite
        with pytest.raises(UsageError, match=re.escape(said)):
            fid_vs_samples(vae, real, extractor, [2], 8, repeats=1)


def test_convert_turns_a_tanh_decoder_into_p_bits(tmp_path, runs, capsys):
    assert main(["train", *VAE_TINY, "--epochs", "1", "--neuron", "tanh", "--out", str(tmp_path / "tanh")]) == 0
    out = tmp_path / "converted"
    assert main(["convert", str(tmp_path / "tanh"), "--method", "pbit", "--calibrate",
                 "--layers", "decoder.2,decoder.7", "--out", str(out), "--quiet"]) == 2
    assert "is a generator: --calibrate and --recalibrate-bn measure classification" in capsys.readouterr().err
    assert not out.exists()
    assert main(["convert", str(tmp_path / "tanh"), "--method", "pbit", "--layers", "decoder.2,decoder.7",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["fid", str(out), "--classifier", str(runs / "clf"), "--n", "73", "--samples", "1,2",
                 "--repeats", "1", "--quiet"]) == 0
    assert [r["samples"] for r in json.loads((out / "fid-clf.json").read_text())["results"]] == [1, 2]


def test_eval_refuses_a_generator(runs, capsys):
    assert main(["eval", str(runs / "vae"), "--quiet"]) == 2
    assert "is a generator, which has no accuracy; measure it with `pdnn fid" in capsys.readouterr().err


def test_fid_refuses_bad_input_and_writes_nothing(runs, tmp_path, capsys):
    before = sorted(p.name for p in (runs / "vae").iterdir())
    assert main(["fid", str(runs / "vae"), "--classifier", str(runs / "clf"), "--n", "72", "--quiet"]) == 2
    assert "--n 72 is below 73: the covariance of 72 features (fid-clf)" in capsys.readouterr().err
    assert main(["fid", str(runs / "clf"), "--classifier", str(runs / "clf"), "--quiet"]) == 2
    assert "expected a generator" in capsys.readouterr().err
    assert main(["fid", str(runs / "vae"), "--classifier", str(runs / "vae"), "--quiet"]) == 2
    assert "is a generator; expected a classifier run" in capsys.readouterr().err
    noisy = tmp_path / "clf-gaussian"  # its config's neuron is the source's, tanh: the noise is the conversion's
    assert main(["convert", str(runs / "clf"), "--method", "gaussian", "--out", str(noisy), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["fid", str(runs / "vae"), "--classifier", str(noisy), "--quiet"]) == 2
    assert f"feature classifier {noisy} has stochastic neurons (GaussianNoise); expected a deterministic" in (
        capsys.readouterr().err)  # (it said "(tanh)")
    assert main(["fid", str(runs / "vae"), "--classifier", str(runs / "clf"), "--n", "73", "--seed", str(2**64),
                 "--quiet"]) == 2
    assert "error: --seed must be an integer in [-2**63, 2**64 - 5)" in capsys.readouterr().err  # (it said seed)
    assert main(["fid", str(runs / "vae"), "--inception-weights", str(tmp_path / "none.pth"), "--quiet"]) == 2
    assert "none.pth does not exist; expected the FID weights file" in capsys.readouterr().err
    edited = tmp_path / "clf-edited"  # a classifier of CIFAR-10's inputs whose config names the generator's data
    make_cifar_batches(tmp_path / "cifar")
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--model", "mlp", "--neuron",
                 "tanh", "--width", "2", "--epochs", "1", "--quiet", "--out", str(edited)]) == 0
    config = json.loads((edited / "config.json").read_text())
    config["data"]["dataset"] = "demo"
    (edited / "config.json").write_text(json.dumps(config))
    assert main(["fid", str(runs / "vae"), "--classifier", str(edited), "--n", "73", "--quiet"]) == 2
    assert (f"{edited / 'config.json'}: its model takes inputs of shape (3, 32, 32), but demo has images of shape "
            "(1, 28, 28)") in capsys.readouterr().err  # (conv2d's traceback)
    assert main(["fid", str(runs / "vae"), "--classifier", str(runs / "clf"), "--repeats", str(10**20), "--quiet"]) == 2
    assert "error: --repeats must be an integer" in capsys.readouterr().err  # (named as the library's argument)
    (tmp_path / "weights").mkdir()
    assert main(["fid", str(runs / "vae"), "--inception-weights", str(tmp_path / "weights"), "--quiet"]) == 2
    assert "weights is a folder; expected the FID weights file" in capsys.readouterr().err
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert main(["fid", str(runs / "vae"), "--inception-weights", str(tmp_path / "bad.pth"), "--quiet"]) == 2
    assert "bad.pth is not a readable torch file" in capsys.readouterr().err
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    assert main(["fid", str(runs / "vae"), "--inception-weights", str(tmp_path / "other.pth"), "--quiet"]) == 2
    err = capsys.readouterr().err  # (torch's message listed all ~480 keys on one line of 17,565 characters)
    from pdnn.inception import FIDInceptionV3

    state = FIDInceptionV3().state_dict()
    assert "other.pth does not hold the FID Inception-v3 weights" in err and len(err) < 400
    assert f"({len(state) - 1} tensors of its {len(state)} missing ('Conv2d_1a_3x3.conv.weight', " in err
    assert err.rstrip().endswith("; 1 tensor of another shape ('fc.weight'))")  # (that one key is there)
    state["fc.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "reshaped.pth")
    assert main(["fid", str(runs / "vae"), "--inception-weights", str(tmp_path / "reshaped.pth"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not hold the FID Inception-v3 weights (1 tensor of another shape ('fc.bias'))" in err
    torch.save({**state, 1: torch.zeros(1)}, tmp_path / "numbered.pth")  # (torch's AttributeError: a traceback)
    assert main(["fid", str(runs / "vae"), "--inception-weights", str(tmp_path / "numbered.pth"), "--quiet"]) == 2
    assert "numbered.pth holds keys that are not tensor names (1); expected a state_dict" in capsys.readouterr().err
    clf_checkpoint = runs / "clf" / "checkpoint.pt"  # (it said: not a readable torch file)
    assert main(["fid", str(runs / "vae"), "--inception-weights", str(clf_checkpoint), "--quiet"]) == 2
    assert (f"--inception-weights {clf_checkpoint} is a pdnn run's checkpoint, not the FID Inception-v3 weights; "
            "to measure with the features of a pdnn classifier run, give that run as --classifier RUN") in (
        capsys.readouterr().err)  # (not the run itself, which may be a generator: R160)
    assert sorted(p.name for p in (runs / "vae").iterdir()) == before


def test_inception_loads_a_state_dict_in_the_fid_format(tmp_path, monkeypatch):
    import pdnn.features
    from pdnn.features import InceptionFeatures
    from pdnn.inception import FIDInceptionV3
    from pdnn.provenance import file_sha256

    torch.manual_seed(0)
    reference = FIDInceptionV3().eval()
    for m in reference.modules():  # non-trivial running statistics, so loading them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception.pth")
    # other weights of the network's shapes load, but are recorded, and said not to be the standard
    # file (they had been labelled as the FID weights, their sha256 unrecorded)
    with pytest.warns(UserWarning, match=r"pt_inception.pth has sha256 \w{8}\.\.\., not the standard FID weights' "
                                         r"6726825d\.\.\. .*: not comparable with published FIDs"):
        extractor = InceptionFeatures(tmp_path / "pt_inception.pth")
    assert extractor.metric == "fid" and "Inception-v3 pool3" in extractor.name
    assert extractor.weights == {"sha256": file_sha256(tmp_path / "pt_inception.pth"), "standard": False}
    assert extractor.name.endswith("not comparable with published FIDs)")
    monkeypatch.setattr(pdnn.features, "file_sha256", lambda path: "6726825d" + "0" * 56)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        standard = InceptionFeatures(tmp_path / "pt_inception.pth")
    assert standard.name == "fid: Inception-v3 pool3 features (2048) from pt_inception.pth"
    assert standard.weights["standard"]
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    features = extractor(images)
    assert features.shape == (2, 2048)
    with torch.no_grad():
        assert torch.allclose(features.float(), reference(images), atol=1e-5)


def test_image_grid_places_every_image():
    images = torch.arange(1, 6, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2)
    grid = image_grid(images, nrow=2, pad=1)
    assert grid.shape == (1, 3 * 3 + 1, 2 * 3 + 1)
    assert grid[0, 1, 1] == 1 and grid[0, 1, 4] == 2 and grid[0, 7, 1] == 5 and grid[0, 7, 4] == 0


def test_energy_counts_transposed_convolutions_and_upsampling():
    from torch import nn

    from pdnn.energy import analyze

    model = nn.Sequential(nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1), PBit(),
                          nn.Upsample(scale_factor=2), nn.Conv2d(4, 2, 3, padding=1),
                          nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2, 1, 1))
    net = analyze(model, (6, 5, 5))
    first, second, third = net.layers
    # 4x4 kernel at stride 2: every output sums 6 channels x 2 x 2 taps; output 4 x 10 x 10
    assert (first.kind, first.fan_in, first.eos) == ("conv-transpose2d", 6 * 2 * 2, 4 * 10 * 10)
    # nearest upsampling copies the 1-bit p-bit outputs: the conv after it reads 1-bit values
    assert (second.fan_in, second.eos, second.activation_bits) == (4 * 9, 2 * 20 * 20, 1)
    assert third.activation_bits == 32 and any("bilinear" in note for note in net.notes)


def test_energy_of_a_generator_run_is_its_decoder(tmp_path):
    from pdnn.energy import analyze, run_network

    assert main(["train", *VAE_TINY, "--epochs", "1", "--out", str(tmp_path / "vae")]) == 0
    net, _ = run_network(tmp_path / "vae")
    vae = create("vae", width=4, latent=4)
    assert net.to_dict() == analyze(vae.decoder, (4,), 32).to_dict()
    assert net.layers[0].fan_in == 4 and not net.layers[0].stochastic_input  # the prefix, once per latent
    assert all(layer.stochastic_input for layer in net.layers[1:])


def test_tradeoff_ranks_generators_by_distance_and_refuses_mixed_measurements(runs, tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["train", *VAE_TINY, "--epochs", "1", "--neuron", "tanh" if name == "a" else "pbit",
                     "--out", str(tmp_path / name)]) == 0
        assert main(["fid", str(tmp_path / name), "--classifier", str(runs / "clf"), "--n", "80",
                     "--samples", "1,4", "--repeats", "1", "--quiet"]) == 0
    out = tmp_path / "t.json"
    assert main(["tradeoff", str(tmp_path / "a"), str(tmp_path / "b"), "--tolerance", "1000",
                 "--json", str(out), "--png", str(tmp_path / "t.png")]) == 0
    result = json.loads(out.read_text())
    assert result["metric"] == "fid-clf" and result["lower_is_better"]
    assert result["reference"]["label"] == "a T=1"  # the only 32-bit float deterministic decoder
    labels = {p["label"] for p in result["points"]}
    assert labels == {"a T=1", "b T=1", "b T=4"}
    cheapest = min(result["points"], key=lambda p: p["energy_j"])
    assert result["best"]["label"] == cheapest["label"]  # every point is within a tolerance of 1000
    front = [result["points"][i] for i in result["pareto_front"]]
    assert all(not (q["energy_j"] <= p["energy_j"] and q["fid"] < p["fid"]) for p in front for q in result["points"])
    assert main(["fid", str(tmp_path / "b"), "--classifier", str(runs / "clf"), "--n", "90",
                 "--samples", "1", "--repeats", "1", "--quiet"]) == 0
    assert main(["tradeoff", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out),
                 "--png", str(tmp_path / "t.png")]) == 2
    assert "measured differently" in capsys.readouterr().err
    # the classifier is known by its weights: the same one written another way is accepted,
    # another one under the same folder name refused
    clf = tmp_path / "clf"
    shutil.copytree(runs / "clf", clf)
    for name, written in (("a", clf), ("b", f"{clf}/.")):
        assert main(["fid", str(tmp_path / name), "--classifier", str(written), "--n", "80",
                     "--samples", "1", "--repeats", "1", "--quiet"]) == 0
    assert main(["tradeoff", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out),
                 "--png", str(tmp_path / "t.png")]) == 0
    shutil.rmtree(clf)
    assert main(["train", *CLF_TINY, "--epochs", "1", "--seed", "3", "--out", str(clf)]) == 0
    assert main(["fid", str(tmp_path / "b"), "--classifier", str(clf), "--n", "80",
                 "--samples", "1", "--repeats", "1", "--quiet"]) == 0
    assert main(["tradeoff", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out),
                 "--png", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert "measured differently" in err and "weights sha256" in err
    # a record made before the classifier's weights were recorded is compared by its path
    document = json.loads((tmp_path / "a" / "fid-clf.json").read_text())
    del document["feature_weights"]
    (tmp_path / "a" / "fid-clf.json").write_text(json.dumps(document))
    assert main(["tradeoff", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out),
                 "--png", str(tmp_path / "t.png")]) == 0
    # and by its number of features where recorded
    dim = document["feature_dim"]
    (tmp_path / "a" / "fid-clf.json").write_text(json.dumps({**document, "feature_dim": dim // 2}))
    assert main(["tradeoff", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out),
                 "--png", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert "measured differently" in err and f"({dim // 2} features" in err and f"({dim} features" in err
    assert main(["tradeoff", str(tmp_path / "a"), str(runs / "clf"), "--json", str(out),
                 "--png", str(tmp_path / "t.png")]) == 2
    assert "mix generators and classifiers" in capsys.readouterr().err


def _write_celeba(root, numbers, as_zip=False, partition=None):
    """Aligned-CelebA look-alikes: 178x218 JPEGs whose central 140x140 square is one colour
    per image and whose border is black (so a wrong crop shows in the pixels)."""
    folder = root / "celeba"
    folder.mkdir(parents=True)
    files = {}
    for i, number in enumerate(numbers):
        image = Image.new("RGB", (178, 218))
        image.paste((40 * i % 256, 200, 100), (19, 39, 159, 179))
        name = f"{number:06d}.jpg"
        buffer = __import__("io").BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        files[name] = buffer.getvalue()
    if as_zip:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as zf:
            for name, data in files.items():
                zf.writestr(f"img_align_celeba/{name}", data)
    else:
        (folder / "img_align_celeba").mkdir()
        for name, data in files.items():
            (folder / "img_align_celeba" / name).write_bytes(data)
    if partition:
        (folder / "list_eval_partition.txt").write_text("".join(f"{n:06d}.jpg {p}\n" for n, p in partition.items()))


@pytest.mark.parametrize("as_zip", [False, True])
def test_celeba_loader_crops_resizes_and_splits_officially(tmp_path, as_zip):
    from pdnn.data import load

    _write_celeba(tmp_path / "root", [1, 2, 162770, 162771, 182638], as_zip=as_zip)
    ds = load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)
    assert ds.train_x.shape == (3, 3, 64, 64) and ds.test_x.shape == (1, 3, 64, 64)  # 162771 is validation
    assert ds.train_x.dtype == torch.uint8 and ds.num_classes == 1
    # the 140x140 crop is exactly the coloured square: a crop one pixel off would bring a black
    # column in, pulling the resized edge pixels down to ~200 * (1 - 64/140) ~ 110 (JPEG ringing
    # alone keeps them above 170)
    assert ds.train_x[:, 1].min() > 150 and abs(int(ds.test_x[0, 2].float().mean()) - 100) < 8


def test_celeba_zip_with_its_folder_deeper_and_a_macos_fork(tmp_path):
    from pdnn.data import load

    _write_celeba(tmp_path / "flat", [1, 2, 182638], as_zip=True)
    _write_celeba(tmp_path / "deep", [1, 2, 182638], as_zip=False)
    archive = tmp_path / "deep" / "celeba" / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tmp_path / "deep" / "celeba" / "img_align_celeba").iterdir()):
            zf.write(path, f"CelebA/Img/img_align_celeba/{path.name}")
        zf.writestr("__MACOSX/CelebA/Img/img_align_celeba/._000001.jpg", b"resource fork")
    __import__("shutil").rmtree(tmp_path / "deep" / "celeba" / "img_align_celeba")
    flat = load("celeba", roots=[tmp_path / "flat"], cache_dir=tmp_path / "cache-flat", progress=False)
    deep = load("celeba", roots=[tmp_path / "deep"], cache_dir=tmp_path / "cache-deep", progress=False)
    assert torch.equal(flat.train_x, deep.train_x) and torch.equal(flat.test_x, deep.test_x)


def test_celeba_damaged_zip_entry_names_it(tmp_path):
    from pdnn.data import DataError, load

    _write_celeba(tmp_path / "root", [1, 2, 182638], as_zip=True)
    archive = tmp_path / "root" / "celeba" / "img_align_celeba.zip"
    with zipfile.ZipFile(archive) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:  # compressed: zlib meets the damage first
        for name, data in members.items():
            zf.writestr(name, data)
    corrupt_zip_member(archive, "img_align_celeba/000002.jpg")
    with pytest.raises(DataError, match=r"cannot read or decode 'img_align_celeba/000002\.jpg'"):
        load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)


def test_a_celeba_image_that_is_no_image_is_named_without_a_memory_address(tmp_path):
    """Pillow's message named the buffer it was given: '(cannot identify image file <_io.BytesIO
    object at 0x7f...>)' (R163)."""
    from pdnn.data import DataError, load

    _write_celeba(tmp_path / "root", [1, 2, 182638])
    (tmp_path / "root" / "celeba" / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match=r"cannot read or decode '000002\.jpg' \(not an image format Pillow "
                                        r"recognises\)$"):
        load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)


def test_celeba_zip_entries_spelt_with_a_leading_dot_are_read(tmp_path):
    """'./img_align_celeba/000001.jpg' was listed, then read as 'img_align_celeba/000001.jpg',
    which the archive does not hold by that name."""
    from pdnn.data import load

    _write_celeba(tmp_path / "plain", [1, 2, 182638], as_zip=True)
    _write_celeba(tmp_path / "dotted", [1, 2, 182638], as_zip=True)
    archive = tmp_path / "dotted" / "celeba" / "img_align_celeba.zip"
    with zipfile.ZipFile(tmp_path / "plain" / "celeba" / "img_align_celeba.zip") as source, \
            zipfile.ZipFile(archive, "w") as zf:
        for info in source.infolist():
            zf.writestr(f"./{info.filename}", source.read(info))
    plain = load("celeba", roots=[tmp_path / "plain"], cache_dir=tmp_path / "cache", progress=False)
    dotted = load("celeba", roots=[tmp_path / "dotted"], cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(plain.train_x, dotted.train_x) and torch.equal(plain.test_x, dotted.test_x)


def test_a_celeba_partition_file_or_image_name_that_cannot_be_read_is_named(tmp_path):
    from pdnn.data import DataError, load

    _write_celeba(tmp_path / "binary", [1, 2, 182638])
    (tmp_path / "binary" / "celeba" / "list_eval_partition.txt").write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(DataError, match=r"list_eval_partition\.txt: not a readable text file \('utf-8' codec"):
        load("celeba", roots=[tmp_path / "binary"], cache_dir=tmp_path / "cache", progress=False)
    _write_celeba(tmp_path / "unnumbered", [1, 2, 182638])
    folder = tmp_path / "unnumbered" / "celeba" / "img_align_celeba"
    (folder / "000002.jpg").rename(folder / "face.jpg")
    with pytest.raises(DataError, match=f"{re.escape(str(folder))}: 'face.jpg' is not a numbered CelebA image, "
                                        "and there is no list_eval_partition.txt beside it"):
        load("celeba", roots=[tmp_path / "unnumbered"], cache_dir=tmp_path / "cache", progress=False)


def test_celeba_image_of_another_size_is_refused_by_name(tmp_path):
    from pdnn.data import DataError, load

    _write_celeba(tmp_path / "root", [1, 2, 182638])
    Image.new("RGB", (1000, 800)).save(tmp_path / "root" / "celeba" / "img_align_celeba" / "000002.jpg")
    with pytest.raises(DataError, match=r"'000002\.jpg' is 1000x800 pixels; expected the aligned images' 178x218"):
        load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)
    wide = Image.fromarray((torch.arange(218 * 178).reshape(218, 178) % 60000).numpy().astype("uint16"))
    wide.save(tmp_path / "root" / "celeba" / "img_align_celeba" / "000002.jpg", format="PNG")  # (read by content)
    with pytest.raises(DataError, match=r"'000002\.jpg' has I;16 pixels, not 8-bit ones"):
        load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)


def test_a_celeba_partition_file_added_replaces_the_cache_entry(tmp_path):
    from pdnn.data import load

    _write_celeba(tmp_path / "root", [1, 2, 182638])
    load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)
    (tmp_path / "root" / "celeba" / "list_eval_partition.txt").write_text(
        "000001.jpg 0\n000002.jpg 2\n182638.jpg 2\n")
    assert len(load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False).test_x) == 2
    assert len(list((tmp_path / "cache").glob("celeba-*"))) == 1  # the entry without the file is gone


def test_celeba_partition_file_overrides_file_numbers(tmp_path):
    from pdnn.data import load

    _write_celeba(tmp_path / "root", [1, 2, 3], partition={1: 0, 2: 2, 3: 2})
    ds = load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)
    assert len(ds.train_x) == 1 and len(ds.test_x) == 2


def test_a_celeba_partition_that_leaves_an_image_out_or_lists_one_twice_is_refused(tmp_path):
    """Images the partition does not list had been dropped without a word (a partition of another
    release, or a truncated one), and one listed twice took its last split."""
    from pdnn.data import DataError, load

    _write_celeba(tmp_path / "short", [1, 2, 182638], partition={1: 0, 182638: 2})
    with pytest.raises(DataError, match=r"list_eval_partition\.txt gives no split for 1 of the 3 images in .* "
                                        r"\(000002\.jpg\)"):
        load("celeba", roots=[tmp_path / "short"], cache_dir=tmp_path / "cache", progress=False)
    _write_celeba(tmp_path / "twice", [1, 2, 182638], partition={1: 0, 2: 0, 182638: 2})
    with open(tmp_path / "twice" / "celeba" / "list_eval_partition.txt", "a") as f:
        f.write("000002.jpg 2\n")
    with pytest.raises(DataError, match=r"000002\.jpg is listed in splits 0 and 2; expected each image once"):
        load("celeba", roots=[tmp_path / "twice"], cache_dir=tmp_path / "cache", progress=False)


def test_missing_celeba_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    from pdnn.data import DatasetNotFound, load

    monkeypatch.setenv("PDNN_DATA", str(tmp_path))
    (tmp_path / "root").mkdir()  # a root without the dataset (a given root must exist)
    with pytest.raises(DatasetNotFound) as info:
        load("celeba", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert f"{tmp_path / 'root' / 'celeba'}: neither img_align_celeba/ nor img_align_celeba.zip" in message
    assert "img_align_celeba.zip" in message and "--data-dir ROOT" in message
    assert main(["train", "--task", "vae", "--dataset", "celeba", "--data-dir", str(tmp_path / "root"),
                 "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert not (tmp_path / "run").exists()


def test_tradeoff_warns_when_a_generator_changed_after_its_distance_was_measured(runs, tmp_path, capsys):
    """As for a classifier's eval-*.json: fid-clf.json records the weights it scored, and a run
    trained on after it had been ranked by the old distance in silence."""
    vae = tmp_path / "vae"
    shutil.copytree(runs / "vae", vae)
    assert main(["fid", str(vae), "--classifier", str(runs / "clf"), "--n", "80", "--samples", "1",
                 "--repeats", "1", "--quiet"]) == 0
    tradeoff = ["tradeoff", str(vae), "--json", str(tmp_path / "t.json"), "--png", str(tmp_path / "t.png")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(tradeoff) == 0
    assert not [w for w in caught if "changed since" in str(w.message)]
    assert main(["train", "--out", str(vae), "--resume", "--epochs", "2", "--quiet"]) == 0
    said = (f"{vae}: fid-clf.json measured epoch 1, but checkpoint.pt has changed since (it now holds epoch 2); "
            f"rerun `pdnn fid {vae} --classifier {runs / 'clf'}`")  # (the features it was measured in)
    with pytest.warns(UserWarning, match=re.escape(said)):
        assert main(tradeoff) == 0
    document = json.loads((vae / "fid-clf.json").read_text())
    del document["weights"]  # as written by an earlier pdnn (the committed generation runs)
    (vae / "fid-clf.json").write_text(json.dumps(document))
    with pytest.warns(UserWarning, match=re.escape("the distance does not record which weights it measured (written by "
                                                   "an earlier pdnn), so whether it matches the checkpoint is unknown; "
                                                   "`pdnn fid` records it")):
        assert main(tradeoff) == 0
    for damaged in ("null", "5"):  # valid JSON of another shape: one line, as before the check of the weights
        (vae / "fid-clf.json").write_text(damaged)
        assert main(tradeoff) == 2
        assert "fid-clf.json has no 'results' list" in capsys.readouterr().err
    (vae / "fid-clf.json").write_text(json.dumps({**document, "results": []}))  # (it was said to have none)
    assert main(tradeoff) == 2
    assert "fid-clf.json has an empty 'results' list" in capsys.readouterr().err
