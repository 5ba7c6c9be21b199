"""The noise study of ``pdnn reproduce``: its rules on synthetic evaluations, its claims read from
files, and its steps end to end at tiny scale on fake data."""
from __future__ import annotations

import warnings

import pytest

from pdnn.experiments import noise_rules
from pdnn.experiments.plan import Context
from pdnn.experiments.studies import accuracy, noise
from pdnn.io import CHECKPOINT, CONFIG, write_json
from test_data import make_cifar_batches, make_idx


def row(t: int, mean: float, std: float = 0.0, repeats: int = 4) -> dict:
    return {"samples": t, "accuracy_mean": mean, "accuracy_std": std, "repeats": repeats,
            "accuracies": [mean] * repeats}


def table(*rows: dict) -> dict[int, dict]:
    return {r["samples"]: r for r in rows}


def test_gain_at_t2_is_beyond_twice_the_standard_error_of_the_difference():
    # std 0.01 over 4 repeats: SE 0.005 each, bound 2·√2·0.005 = 0.01414
    assert noise_rules.verdicts(table(row(1, 0.50, 0.01), row(2, 0.52, 0.01)), None, 10000)["gain_at_T2"]
    assert not noise_rules.verdicts(table(row(1, 0.50, 0.01), row(2, 0.51, 0.01)), None, 10000)["gain_at_T2"]
    v = noise_rules.verdicts(table(row(1, 0.50, 0.01), row(2, 0.52, 0.01)), None, 10000)
    assert v["gain_T2_vs_T1_bound"] == pytest.approx(2 * (2 * 0.005 ** 2) ** 0.5)


def test_every_bound_is_at_least_one_test_image_and_a_tenth_of_a_point():
    # no repeat spread: the bound is the floor, max(0.1 points, 1 / examples)
    assert noise_rules.bound(100, row(1, 0.5), row(2, 0.5)) == pytest.approx(0.01)
    assert noise_rules.bound(100000, row(1, 0.5)) == pytest.approx(0.001)
    assert not noise_rules.verdicts(table(row(1, 0.50), row(2, 0.509)), None, 100)["gain_at_T2"]
    assert noise_rules.verdicts(table(row(1, 0.50), row(2, 0.511)), None, 100)["gain_at_T2"]


def test_monotonic_needs_no_significant_drop_and_an_overall_gain():
    rising = table(row(1, 0.50), row(2, 0.52), row(5, 0.5195), row(10, 0.54))  # a drop within the floor
    assert noise_rules.verdicts(rising, None, 10000)["monotonic"]
    assert not noise_rules.verdicts(rising, None, 10000)["strictly_increasing"]
    dropping = table(row(1, 0.50), row(2, 0.52), row(5, 0.50), row(10, 0.54))
    assert not noise_rules.verdicts(dropping, None, 10000)["monotonic"]
    flat = table(row(1, 0.50), row(2, 0.5005), row(10, 0.5009))
    assert not noise_rules.verdicts(flat, None, 10000)["monotonic"]


def test_beats_the_deterministic_source_beyond_twice_the_standard_error_at_tmax():
    rows = table(row(1, 0.50, 0.02), row(2, 0.55, 0.02), row(10, 0.60, 0.02))  # SE(10) 0.01: bound 0.02
    assert noise_rules.verdicts(rows, 0.579, 10000)["beats_deterministic"]
    v = noise_rules.verdicts(rows, 0.581, 10000)
    assert not v["beats_deterministic"] and not v["below_deterministic"]
    assert noise_rules.verdicts(rows, 0.621, 10000)["below_deterministic"]


def test_network_beats_layer_when_ahead_somewhere_and_behind_nowhere():
    network = table(row(1, 0.40), row(2, 0.50), row(5, 0.55), row(10, 0.58))
    ahead = table(row(1, 0.45), row(2, 0.50), row(5, 0.55), row(10, 0.56))  # T = 1 is not compared
    v = noise_rules.aggregation_verdict(network, ahead, 1000)
    assert v["beats"] and v["ahead"] == [10] and v["behind"] == [] and sorted(v["differences"]) == [2, 5, 10]
    behind_once = table(row(2, 0.52), row(5, 0.55), row(10, 0.56))
    assert not noise_rules.aggregation_verdict(network, behind_once, 1000)["beats"]
    level = table(row(2, 0.50), row(5, 0.5495), row(10, 0.58))
    assert not noise_rules.aggregation_verdict(network, level, 1000)["beats"]


def evaluation(*rows: dict, examples: int = 1000) -> dict:
    return {"examples": examples, "results": list(rows)}


def test_claims_are_read_from_the_evaluations_and_not_measured_without_them(tmp_path):
    ctx = Context(tmp_path, "tiny")
    spec = accuracy.specs(ctx)[1]  # cifar10
    assert all(c.verdict == "not measured" for c in noise.section(ctx).claims)
    assert len(noise.section(ctx).claims) == 3 * len(accuracy.specs(ctx))
    ts = spec.test_samples
    write_json(noise.accuracy_run(ctx, spec, "tanh") / "eval-network.json", evaluation(row(1, 0.60, repeats=1)))
    write_json(noise.converted_dir(ctx, spec) / "eval-network.json",
               evaluation(*(row(t, 0.50 + 0.01 * i, 0.001) for i, t in enumerate(ts))))
    write_json(noise.accuracy_run(ctx, spec, noise.pdnn_name(spec)) / "eval-network.json",
               evaluation(*(row(t, 0.55, 0.001) for t in ts)))
    write_json(noise.layer_dir(ctx, spec) / "eval-layer.json", evaluation(*(row(t, 0.55, 0.001) for t in ts)))
    curves = noise._curves(ctx, spec)
    gains, beats = noise.sampling_claims(ctx, spec, curves)
    assert gains.verdict == "holds" and "monotonic" in gains.ours  # +1 point per T, bound 0.1
    assert beats.verdict == "does not hold"  # 0.53 against 0.60
    assert noise.aggregation_claim(ctx, spec, curves).verdict == "does not hold"  # level at every T


@pytest.mark.slow
def test_tiny_steps_end_to_end_on_fake_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    make_idx(tmp_path / "data" / "fashion-mnist", gz=False, n_train=40, n_test=16)
    make_cifar_batches(tmp_path / "data", per_batch=8)
    ctx = Context(tmp_path / "out", "tiny", roots=[str(tmp_path / "data")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fake data: the held-out images were seen in training, and so on
        for spec in accuracy.specs(ctx):
            for step in accuracy.steps(ctx):  # only the runs the noise study reads
                if step.key.startswith(f"accuracy/{spec.dataset}/") and step.key.split("/")[2] in (
                        "tanh", noise.pdnn_name(spec)):
                    step.run()
        for step in noise.steps(ctx):
            assert step.key.startswith("noise/") and step.estimate_s > 0 and step.needs
            step.run()
        spec = accuracy.specs(ctx)[1]
        converted = noise.converted_dir(ctx, spec)
        stamp = (converted / CONFIG).stat().st_mtime_ns
        (converted / CHECKPOINT).unlink()
        noise.convert(ctx, spec)  # done already: the checkpoint is restored, nothing converted again
        assert (converted / CHECKPOINT).is_file() and (converted / CONFIG).stat().st_mtime_ns == stamp
        (converted / CONFIG).unlink()  # an interrupted conversion: converted again over it
        noise.convert(ctx, spec)
        assert (converted / CONFIG).is_file() and (converted / "calibration.json").is_file()
        assert not (converted / "eval-network.json").exists()  # the replaced conversion's evaluation is stale
        noise.evaluate_converted(ctx, spec)
    section = noise.section(ctx)
    assert [c.verdict != "not measured" for c in section.claims] == [True] * 6
    assert len(section.figures) == 2 and all(f.path.is_file() for f in section.figures)
    assert "BatchNorm re-estimated" in section.text


def test_a_missing_curve_is_explained_by_the_steps_that_make_it(tmp_path):
    from pdnn.experiments.study import StudySpec

    ctx = Context(tmp_path, "tiny")
    ctx.done = {"accuracy/ds/tanh/train", "accuracy/ds/tanh/eval", "noise/ds/convert", "noise/ds/eval-converted"}
    converted = evaluation(*(row(t, 0.50 + 0.01 * i, 0.001) for i, t in enumerate((1, 2, 4))))
    gains, beats = noise.sampling_claims(ctx, StudySpec(dataset="ds"), {"converted": converted})
    assert gains.verdict == "holds"  # its own evaluation is all it needs
    assert "records accuracy/ds/tanh/eval as done" in beats.reason  # the step that made it, not its training
    ctx.skipped = {"noise/ds/eval-converted": "failed: RuntimeError: boom"}
    assert noise.sampling_claims(ctx, StudySpec(dataset="ds"), {"deterministic": {}})[0].reason == \
        "failed: RuntimeError: boom"

