"""The adaptive-T study of ``pdnn reproduce``: its claim rule on synthetic results, the energy
accounting exactly, and its steps and section end to end at tiny scale on fake data."""
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pdnn.adaptive import CHECKPOINTS, StoppingRule, rounds_taken, simulate
from pdnn.energy.per_input import energies
from pdnn.experiments import adaptive_study
from pdnn.experiments.plan import Context
from pdnn.experiments.studies import STUDIES, accuracy, adaptive
from pdnn.io import RunError
from test_data import make_cifar_batches, make_idx


def synthetic_run(fixed, levels, oracle_t=2.0, n=None):
    """A result of adaptive_study.study_run with fixed-T accuracies ``fixed`` (T = 1..N) and
    adaptive levels ``(error, accuracy, mean T)``."""
    n = n or len(fixed)
    return {
        "dataset": "fake", "run": "accuracy/fake/runs/pbit-s2", "examples": 1000, "max_samples": n,
        "fixed": [{"samples": t, "accuracy": a, "energy_j": {"per-eo held": 1e-3 * t}} for t, a in enumerate(fixed, 1)],
        "adaptive": [{"error": e, "accuracy": a, "mean_samples": m, "accuracy_minus_T_max": a - fixed[-1],
                      "accuracy_minus_T_max_stderr": 0.001, "energy_j": {"per-eo held": 1e-3 * m}}
                     for e, a, m in levels],
        "oracle": {"accuracy": fixed[-1], "mean_samples": oracle_t},
    }


FIXED = [0.80, 0.84, 0.86, 0.87, 0.875, 0.878, 0.879, 0.88, 0.88, 0.88]  # T = 1..10, 88 % at T = N


def test_goal_holds_when_a_level_is_within_the_points_at_mean_t_at_most_five():
    run = synthetic_run(FIXED, [(0.3, 0.870, 2.5), (0.1, 0.879, 4.2), (0.01, 0.880, 7.0)], oracle_t=1.93)
    claim = adaptive.claim_for(run)
    assert claim.verdict == "holds"
    assert claim.paper == "— (beyond the paper)"
    assert "mean T 4.20 at error 0.1" in claim.ours and "oracle mean T 1.93" in claim.ours
    assert "smallest fixed T within 0.2 points: 6" in claim.ours  # 87.8 % is the first fixed T within 0.2 points of 88 %
    assert "fixed T = 10" in claim.claim


def test_goal_boundaries_are_inclusive():
    exactly = synthetic_run(FIXED, [(0.1, 0.878, 5.0)])  # 0.2 points below, at mean T 5
    assert adaptive.claim_for(exactly).verdict == "holds"


@pytest.mark.parametrize("levels", [
    [(0.1, 0.8779, 3.0), (0.01, 0.880, 7.0)],  # within 0.2 points only above mean T 5
    [(0.3, 0.86, 2.0), (0.1, 0.875, 4.0)],  # never within 0.2 points
])
def test_goal_does_not_hold_otherwise(levels):
    claim = adaptive.claim_for(synthetic_run(FIXED, levels))
    assert claim.verdict == "does not hold"
    assert "oracle mean T" in claim.ours


def test_the_smallest_mean_t_within_the_points_decides():
    run = synthetic_run(FIXED, [(0.3, 0.8785, 5.5), (0.2, 0.8790, 4.9), (0.1, 0.881, 8.0)])
    assert adaptive_study.best_within_goal(run)["error"] == 0.2
    assert adaptive_study.fixed_t_for(run, 0.879) == 7


def test_summary_says_when_no_fixed_t_reaches_the_adaptive_accuracy():
    run = synthetic_run(FIXED, [(0.1, 0.885, 4.0)])
    row = adaptive_study.summary_table({"runs": [run]}).splitlines()[-1]
    assert "| 0.1, 88.50 %, 4.00 | 6 / none ≤ 10 |" in row and "| met | 4.000 / 10.00 |" in row


def test_summary_gives_the_goal_with_the_level_chosen_on_held_out_inputs_too():
    """The column read the level picked on the inputs it is judged on alone: "met" for a network
    whose held-out level misses the goal (Fashion-MNIST pbit-s2-r2: -0.44 points; R170)."""
    run = synthetic_run(FIXED, [(0.1, 0.885, 4.0)])
    run["held_out"] = {"accuracy_minus_T_max": -0.0044, "accuracy_minus_T_max_stderr": 0.0012, "mean_samples": 3.42,
                       "folds": 2, "errors": [0.02, 0.3]}
    assert "| met (not met) |" in adaptive_study.summary_table({"runs": [run]}).splitlines()[-1]


def linear_energy(n: int, batch: int) -> dict:
    """An energy model with E(T) = 10 + T and a weight term of 8 (per-eo); per batch E(T) = 4 + T
    with a weight term of 2 whatever T."""
    t = torch.arange(1, n + 1, dtype=torch.float64)
    return {"per-eo": {"samples": t.long(), "total": 10 + t, "weight": torch.full((n,), 8.0, dtype=torch.float64), "settings": {}},
            f"per-batch:{batch}": {"samples": t.long(), "total": 4 + t, "weight": torch.full((n,), 2.0, dtype=torch.float64),
                                   "settings": {}}}


def test_energy_accounting_is_exact():
    n, batch = 8, 2
    energy = linear_energy(n, batch)
    taken = torch.tensor([2, 8, 3, 3])
    rounds = rounds_taken(taken, StoppingRule(n).schedule())
    assert rounds.tolist() == [1, 6, 2, 2]  # looks at 2, 3, 4, 5, 6, 8
    e = energies(taken, rounds, energy, batch)
    assert e["per-eo held"] == pytest.approx((12 + 18 + 13 + 13) / 4)
    assert e["per-eo per round"] == pytest.approx((12 + 18 + 40 + 13 + 8 + 13 + 8) / 4)
    # the rest (2 + T) per input, plus 2 per round of the batch's slowest input: batches (2, 8), (3, 3)
    assert e[f"per-batch:{batch}"] == pytest.approx((4 + 10 + 5 + 5 + 2 * (6 + 6 + 2 + 2)) / 4)
    # the batches' weight share is summed in float64: a weight term float32 cannot hold (0.1 J) stays exact
    w = 0.1
    energy[f"per-batch:{batch}"]["weight"] = torch.full((n,), w, dtype=torch.float64)
    e = energies(taken, rounds, energy, batch)  # (6 + 12 + 7 + 7 - 4w + w (6 + 6 + 2 + 2)) / 4
    assert e[f"per-batch:{batch}"] == pytest.approx(8 + 3 * w, rel=1e-15)
    # a last batch of fewer inputs shares its weight read among fewer: batches (2, 8), (3, 3), (5)
    energy = linear_energy(n, batch)
    taken = torch.tensor([2, 8, 3, 3, 5])
    rounds = rounds_taken(taken, StoppingRule(n).schedule())
    e = energies(taken, rounds, energy, batch)  # per-batch weight 2 is a read of 4 over 2 inputs
    assert e[f"per-batch:{batch}"] == pytest.approx((4 + 10 + 5 + 5 + 7 + 2 * (6 + 6 + 2 + 2) + 4 * rounds[4]) / 5)


def _synthetic_pool(monkeypatch, n: int, batch: int) -> torch.Tensor:
    """The study's pool replaced by n noisy one-hot draws of 200 inputs of 3 classes (and a linear
    energy): returns their labels."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (200,), generator=generator)
    outputs = torch.nn.functional.one_hot(labels, 3).double() + 2 * torch.randn(n, 200, 3, generator=generator)
    monkeypatch.setattr(adaptive_study, "cached_pool", lambda *args, **kwargs: (outputs.float(), labels))
    monkeypatch.setattr(adaptive_study, "energy_curves", lambda *args: linear_energy(n, batch))
    return labels


def test_study_run_looks_at_the_checkpoints_it_is_given(monkeypatch):
    """Every input stops at a given checkpoint or at N, and the rounds counted are those looks."""
    n, batch = 12, 50
    labels = _synthetic_pool(monkeypatch, n, batch)
    every = tuple(range(3, n))  # the same first look as (3, 7), so the same prior spread
    results = {}
    for checkpoints in ((3, 7), every):
        result = results[checkpoints] = adaptive_study.study_run(
            "synthetic", None, None, max_samples=n, errors=(0.3, 0.01), batch=batch, checkpoints=checkpoints)
        assert result["checkpoints"] == [*checkpoints, n]
        for level in result["adaptive"]:
            histogram = {int(t): count for t, count in level["samples_histogram"].items()}
            assert set(histogram) <= {*checkpoints, n}
            looks = sum(count * sum(c <= t for c in result["checkpoints"]) for t, count in histogram.items())
            assert level["mean_rounds"] == pytest.approx(looks / len(labels))
        held = result["held_out"]  # each half at the level chosen on the other: one of the two
        assert held["folds"] == 2 and set(held["errors"]) <= {0.3, 0.01}
        assert "| adaptive, error chosen on the other half (" in adaptive_study.write_tables({"runs": [result]})
    # looking after every sample from 3 on can only stop an input earlier than looking at 3 and 7
    for dense, sparse in zip(results[every]["adaptive"], results[3, 7]["adaptive"]):
        assert dense["mean_samples"] <= sparse["mean_samples"]


def test_the_rule_recorded_is_that_of_the_levels_that_look_whatever_their_order(monkeypatch):
    """With error 0 (never stop before N) last in --errors, the record took that level's rule,
    which learns no prior: the README said the rule never looked at T = 1 while the levels before
    it stopped inputs there (R213 D1)."""
    n, batch = 12, 50
    _synthetic_pool(monkeypatch, n, batch)
    recorded = []
    for errors in ((0.3, 0), (0, 0.3), (0.3,)):
        result = adaptive_study.study_run("synthetic", None, None, max_samples=n, errors=errors, batch=batch)
        recorded.append((result["checkpoints"], result["prior_variance"]))
        stopped_at_one = [level["samples_histogram"].get("1", 0) for level in result["adaptive"] if level["error"]]
        assert stopped_at_one[0] > 0 and result["checkpoints"][0] == 1
    assert recorded[0] == recorded[1] == recorded[2] and recorded[0][1] is not None
    only_zero = adaptive_study.study_run("synthetic", None, None, max_samples=n, errors=(0,), batch=batch)
    assert only_zero["prior_variance"] is None and only_zero["checkpoints"][0] == 2  # (what that rule did)


def test_replay_learns_the_prior_on_the_first_batch_and_looks_at_one_sample_after_it():
    """Batches run as in ``pdnn eval``: the first from T = 2 (it learns the prior variance), the
    others from T = 1; each input's rounds are the looks of its own batch up to its T."""
    n, batch = 10, 100
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=generator)
    outputs = 4 * torch.nn.functional.one_hot(labels, 3).double() + torch.randn(n, 300, 3, generator=generator)
    rule = StoppingRule(n, 0.1, checkpoints=(1, 2, 3, 5))
    decision, taken, rounds, learnt = adaptive_study.replay(outputs, rule, batch)
    first, simulated, _ = simulate(outputs[:, :batch], rule)
    assert torch.equal(taken[:batch], simulated) and taken[:batch].min() >= 2
    assert learnt.prior_variance is not None and learnt.schedule() == [1, 2, 3, 5, n]
    rest, simulated_rest, _ = simulate(outputs[:, batch:], replace(rule, prior_variance=learnt.prior_variance))
    assert torch.equal(taken[batch:], simulated_rest) and (taken[batch:] == 1).any()
    assert torch.equal(decision, torch.cat([first.argmax(-1), rest.argmax(-1)]))
    looks = {t: sum(c <= t for c in (2, 3, 5, n)) for t in (2, 3, 5, n)}
    assert rounds[:batch].tolist() == [looks[t] for t in taken[:batch].tolist()]
    assert rounds[batch:].tolist() == [1 + looks.get(t, 0) for t in taken[batch:].tolist()]


def test_each_half_takes_the_level_chosen_on_the_other_half():
    labels = torch.zeros(8, dtype=torch.long)
    final = labels.clone()  # T = N decides every input right
    # (decision, T, rounds) per input
    loose = (torch.tensor([1, 0, 1, 0, 0, 0, 0, 0]), torch.full((8,), 2), torch.full((8,), 1))  # wrong on 0 and 2
    careful = (labels.clone(), torch.full((8,), 4), torch.full((8,), 3))
    levels, decision, taken, rounds = adaptive_study.level_chosen_elsewhere([loose, careful], [0.3, 0.1], final,
                                                                            labels)
    # the even half is judged at the level the odd half picks (0.3: right on every odd input, at T = 2);
    # the odd half at the one the even half picks (0.3 loses 50 points there, so 0.1)
    assert levels == [0.3, 0.1]
    assert decision.tolist() == [1, 0, 1, 0, 0, 0, 0, 0] and taken.tolist() == [2, 4] * 4
    assert rounds.tolist() == [1, 3] * 4
    # where no level is within the points, the smallest error level, in whatever order the levels come
    wrong = (torch.ones(8, dtype=torch.long), torch.full((8,), 3), torch.full((8,), 2))
    levels, _, taken, _ = adaptive_study.level_chosen_elsewhere([wrong, loose], [0.05, 0.2], final, labels)
    assert levels == [0.2, 0.05] and taken.tolist() == [2, 3] * 4
    # four folds: the other folds' inputs include input 0 or 2 for every fold, where the loose level is wrong
    levels, *_ = adaptive_study.level_chosen_elsewhere([loose, careful], [0.3, 0.1], final, labels, folds=4)
    assert levels == [0.1, 0.1, 0.1, 0.1]


def test_the_study_runs_after_the_accuracy_study_and_claims_beyond_the_paper():
    assert STUDIES.index(adaptive) > STUDIES.index(accuracy)
    ctx = Context("/nowhere", "tiny")
    steps = adaptive.steps(ctx)
    assert all(s.key.startswith("adaptive/") and s.estimate_s > 0 for s in steps)
    pools = [s for s in steps if s.key.endswith("/pool")]
    assert [(s.rate, s.work) for s in pools] == [("adaptive-pool/mlp-16", 128 * 10), ("adaptive-pool/cnn-4", 128 * 10)]
    section = adaptive.section(ctx)
    assert [c.verdict for c in section.claims] == ["not measured", "not measured"]
    assert all(c.paper == adaptive.PAPER and c.reason == "not run yet" for c in section.claims)


def test_tiny_steps_and_section_on_fake_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PDNN_DATA", raising=False)
    make_idx(tmp_path / "data" / "fashion-mnist", gz=False, n_train=64, n_test=24)
    make_cifar_batches(tmp_path / "data", per_batch=6)
    ctx = Context(tmp_path / "out", "tiny", roots=[str(tmp_path / "data")])
    for step in accuracy.steps(ctx):  # only the runs this study reads
        if step.key.endswith(("pbit-s2/train",)):
            step.run()
    steps = adaptive.steps(ctx)
    for step in steps:
        step.run()
    n = adaptive.SETTINGS["tiny"].max_samples
    for dataset, examples in (("fashion-mnist", 24), ("cifar10", 6)):
        result = json.loads(adaptive.result_path(ctx, dataset).read_text())
        assert result["examples"] == examples and result["max_samples"] == n
        assert [f["samples"] for f in result["fixed"]] == list(range(1, n + 1))
        assert [a["error"] for a in result["adaptive"]] == list(adaptive_study.ERRORS)
        assert all(2 <= a["mean_samples"] <= n for a in result["adaptive"])
        assert 1 <= result["oracle"]["mean_samples"] <= n
        assert result["oracle"]["accuracy"] == result["fixed"][-1]["accuracy"]
        assert len(list(ctx.dir("adaptive", dataset, "pool").glob("pbit-s2-*.pt"))) == 1
    written = {p: p.stat().st_mtime_ns for p in ctx.dir("adaptive").rglob("*") if p.is_file()}
    for step in steps:  # a rerun draws nothing, recomputes nothing and redraws nothing
        step.run()
    assert {p: p.stat().st_mtime_ns for p in ctx.dir("adaptive").rglob("*") if p.is_file()} == written
    ctx.dir("adaptive", adaptive.FIGURE).unlink()  # a summary lost after its results is drawn again
    steps[-1].run()
    assert ctx.dir("adaptive", adaptive.FIGURE).exists()
    stale = json.loads(adaptive.result_path(ctx, "cifar10").read_text())
    assert stale["pool"].startswith("pbit-s2-") and stale["pool"].endswith("-n128-T10-seed0.pt")
    adaptive.result_path(ctx, "cifar10").write_text(json.dumps(stale | {"pool": "of-other-weights.pt"}))
    steps[-1].run()  # a result of other weights (a retrained run) is computed again
    assert json.loads(adaptive.result_path(ctx, "cifar10").read_text())["pool"] == stale["pool"]

    section = adaptive.section(ctx)
    assert [c.verdict in ("holds", "does not hold") for c in section.claims] == [True, True]
    assert section.claims[0].claim.startswith("fashion-mnist: adaptive T reaches the accuracy of fixed T = 10")
    assert len(section.figures) == 1 and section.figures[0].path.stat().st_size > 1000
    caption = section.figures[0].caption
    assert "the first 128 test images" in caption and "1 epoch on" in caption and f"N = {n}" in caption
    readme = ctx.dir("adaptive", "README.md").read_text()
    assert "### cifar10: `accuracy/cifar10/runs/pbit-s2`" in readme and "oracle" in readme

    # CIFAR-10's steps skipped (no data), Fashion-MNIST's done: the figure is named by the step that draws it
    adaptive.result_path(ctx, "cifar10").unlink()
    ctx.done = {step.key for step in steps if "fashion-mnist" in step.key}
    ctx.skipped = {"adaptive/cifar10/pool": "dataset 'cifar10' not found"}
    section = adaptive.section(ctx)
    assert [c.reason for c in section.claims] == ["", "dataset 'cifar10' not found"]
    assert [f.step for f in section.figures] == ["adaptive/fashion-mnist/replay"]


def test_a_run_not_trained_is_named(tmp_path):
    with pytest.raises(RunError, match=r"pbit-s2/checkpoint.pt does not exist: the run must be trained"):
        adaptive_study.cached_pool(tmp_path / "pbit-s2", None, 10, 0, tmp_path / "pool")
    assert not (tmp_path / "pool").exists()


def test_a_pool_drawn_on_another_device_is_kept_apart(tmp_path):
    """A GPU draws other numbers than the CPU: its pool must not be read back by a CPU study (the
    CPU's name stays what the committed results record)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"weights")
    names = {device: adaptive_study.pool_path(tmp_path / "run", None, 10, 0, tmp_path, device).name
             for device in ("cpu", "cuda", "cuda:1")}
    assert names["cpu"].endswith("-n None-T10-seed0.pt".replace(" ", ""))
    assert names["cuda"] == names["cuda:1"] == names["cpu"].replace(".pt", "-cuda.pt")
    # the draws follow the batch size too; the default keeps the name the committed results record
    assert adaptive_study.pool_path(tmp_path / "run", None, 10, 0, tmp_path, batch_size=500).name == names["cpu"]
    assert adaptive_study.pool_path(tmp_path / "run", None, 10, 0, tmp_path, batch_size=128).name == \
        names["cpu"].replace(".pt", "-batch128.pt")


def test_two_conversions_of_one_source_have_pools_of_their_own(tmp_path):
    """Every conversion of one source keeps its checkpoint byte for byte: a second conversion read
    the first one's draws back. A run that is not converted keeps its name."""
    names = []
    for spec in (None, {"method": "pbit", "beta": 1.0}, {"method": "gaussian", "scale": 2.0}):
        run = tmp_path / "conv"
        run.mkdir(exist_ok=True)
        (run / "checkpoint.pt").write_bytes(b"the source's weights")
        (run / "config.json").write_text(json.dumps({"model": {}} | ({} if spec is None else {"convert": spec})))
        names.append(adaptive_study.pool_path(run, None, 10, 0, tmp_path).name)
    assert "convert" not in names[0] and len(set(names)) == 3


def draw(seed, levels, fixed=(0.88,)):
    """One study's document (seed ``seed``) whose run has fixed-T accuracies ``fixed`` (T = 1..N)
    and adaptive levels ``(error, loss against T = N, mean T)``."""
    run = synthetic_run(list(fixed), [(e, fixed[-1] + loss, t) for e, loss, t in levels])
    return {"runs": [run | {"seed": seed, "checkpoints": list(range(1, len(fixed) + 1))}]}


def test_over_draws_gives_each_draw_the_means_and_their_standard_errors():
    summary = adaptive_study.over_draws([draw(0, [(0.1, -0.001, 4.9), (0.2, -0.004, 3.0)], fixed=(0.870, 0.880)),
                                         draw(3, [(0.1, -0.003, 5.1), (0.2, -0.002, 3.0)], fixed=(0.881, 0.885))])
    (run,) = summary
    assert run["seeds"] == [0, 3] and run["accuracy_T_max"] == [0.880, 0.885]
    one, last = run["fixed"]  # fixed T = 1: -1.0 and -0.4 points against T = N; T = N: 0
    assert one["samples"] == 1 and one["loss_points"] == pytest.approx([-1.0, -0.4])
    assert one["loss_points_mean"] == pytest.approx(-0.7) and one["loss_points_se"] == pytest.approx(0.3)
    assert last["loss_points"] == [0, 0] and last["loss_points_se"] == 0
    level, cheaper = run["levels"]
    assert level["error"] == 0.1 and level["loss_points"] == pytest.approx([-0.1, -0.3])
    # mean -0.2; standard deviation sqrt((0.1² + 0.1²) / 1), over sqrt(2) draws: 0.1
    assert level["loss_points_mean"] == pytest.approx(-0.2) and level["loss_points_se"] == pytest.approx(0.1)
    assert level["mean_samples_mean"] == pytest.approx(5.0) and level["mean_samples_se"] == pytest.approx(0.1)
    assert level["goal"]  # both bounds are inclusive
    assert cheaper["loss_points_mean"] == pytest.approx(-0.3) and cheaper["mean_samples_se"] == 0 and not cheaper["goal"]
    table = adaptive_study.over_draws_table(summary)
    assert "| 0.1 | -0.10 -0.30 | -0.200 ± 0.100 | 4.900 5.100 | 5.000 ± 0.100 | met |" in table
    assert "the smallest within 0.2 points on the means: T = 2" in table
    assert "| 1 | -1.00 -0.40 | -0.700 ± 0.300 |" in table


def test_over_draws_summarises_the_level_chosen_on_the_other_half_where_every_draw_has_it():
    documents = [draw(0, [(0.1, -0.001, 4.9)]), draw(1, [(0.1, -0.003, 5.1)])]
    for document, loss, taken in zip(documents, (-0.001, -0.002), (4.0, 4.2)):
        document["runs"][0]["held_out"] = {"folds": 2, "errors": [0.1, 0.2], "accuracy_minus_T_max": loss,
                                           "mean_samples": taken}
    (run,) = adaptive_study.over_draws(documents)
    held = run["held_out"]
    assert held["loss_points_mean"] == pytest.approx(-0.15) and held["loss_points_se"] == pytest.approx(0.05)
    assert held["mean_samples_mean"] == pytest.approx(4.1) and held["goal"]
    assert ("| chosen on the other half (0.1/0.2, 0.1/0.2) | -0.10 -0.20 | -0.150 ± 0.050 | 4.000 4.200 "
            "| 4.100 ± 0.100 | met |") in adaptive_study.over_draws_table([run])
    del documents[1]["runs"][0]["held_out"]  # a study written before the level was chosen this way
    assert adaptive_study.over_draws(documents)[0]["held_out"] is None


@pytest.mark.parametrize("documents, message", [
    ([draw(0, [(0.1, 0, 5)])], "at least two"),
    ([draw(0, [(0.1, 0, 5)]), draw(0, [(0.1, 0, 5)])], "repeat a sampling seed"),
    ([draw(0, [(0.1, 0, 5)]), draw(1, [(0.2, 0, 5)])], "differ in"),
    ([draw(0, [(0.1, 0, 5)]), draw(1, [(0.1, 0, 5)], fixed=(0.8, 0.9))], "differ in"),
])
def test_over_draws_refuses_what_is_not_draws_of_one_study(documents, message):
    with pytest.raises(RunError, match=message):
        adaptive_study.over_draws(documents)


def test_over_draws_refuses_studies_replayed_in_other_batches():
    """--batch changes what the rule does (the batch that learns the prior, the looks at T = 1);
    the settings record it, as per-batch:B (studies of --batch 300 and 100 were averaged)."""
    documents = [draw(0, [(0.1, 0, 5)]), draw(1, [(0.1, 0, 5)])]
    for document, batch in zip(documents, (300, 100)):
        document["runs"][0]["energy_settings"] = {f"per-batch:{batch}": {"reuse": f"per-batch:{batch}"}}
    with pytest.raises(RunError, match="batch or energy settings"):
        adaptive_study.over_draws(documents)


def test_draws_script_writes_its_table_and_json(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "adaptive_draws", Path(__file__).resolve().parents[1] / "scripts" / "adaptive_draws.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folders = []
    for seed, loss in ((0, -0.001), (1, -0.002)):
        folders.append(tmp_path / f"seed{seed}")
        folders[-1].mkdir()
        (folders[-1] / "adaptive.json").write_text(json.dumps(draw(seed, [(0.1, loss, 4.0)])))
    assert script.main([*map(str, folders), "--out", str(tmp_path / "draws")]) == 0
    written = json.loads((tmp_path / "draws" / "draws.json").read_text())
    assert written["runs"][0]["levels"][0]["loss_points_mean"] == pytest.approx(-0.15)
    assert "-0.150 ± 0.050" in (tmp_path / "draws" / "README.md").read_text()
    with pytest.raises(SystemExit):
        script.main([str(folders[0]), str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert "missing/adaptive.json does not exist" in capsys.readouterr().err


def test_draws_script_summarises_one_run_of_studies_that_hold_several(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "adaptive_draws", Path(__file__).resolve().parents[1] / "scripts" / "adaptive_draws.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    both, alone = draw(0, [(0.1, -0.001, 4.0)]), draw(1, [(0.1, -0.002, 4.0)])
    other = draw(0, [(0.1, -0.009, 9.0)])["runs"][0] | {"run": "accuracy/fake/runs/wider"}
    both["runs"].append(other)  # a study of two networks beside a study of the first alone
    folders = []
    for name, document in (("both", both), ("alone", alone)):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        (folders[-1] / "adaptive.json").write_text(json.dumps(document))
    with pytest.raises(SystemExit):
        script.main([*map(str, folders), "--out", str(tmp_path / "x")])
    assert "differ in their runs" in capsys.readouterr().err
    assert script.main([*map(str, folders), "--run", "pbit-s2", "--out", str(tmp_path / "draws")]) == 0
    (run,) = json.loads((tmp_path / "draws" / "draws.json").read_text())["runs"]
    assert run["run"] == "accuracy/fake/runs/pbit-s2" and run["levels"][0]["loss_points_mean"] == pytest.approx(-0.15)
    with pytest.raises(SystemExit):
        script.main([*map(str, folders), "--run", "missing", "--out", str(tmp_path / "y")])
    assert "has no run named 'missing' (it has: pbit-s2, wider)" in capsys.readouterr().err


def test_a_pool_drawn_while_the_run_trains_on_is_not_kept(tmp_path, monkeypatch):
    """The pool was named by the checkpoint read before drawing: drawn from weights a training
    had replaced meanwhile, it was kept under the old weights' name."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"epoch 1")

    def drawn_as_training_writes(*args, **kwargs):
        (run / "checkpoint.pt").write_bytes(b"epoch 2")
        return torch.zeros(2, 3, 10), torch.zeros(3, dtype=torch.long)

    monkeypatch.setattr(adaptive_study, "record_pool", drawn_as_training_writes)
    with pytest.raises(RunError, match="changed while its samples were drawn"):
        adaptive_study.cached_pool(run, None, 2, 0, tmp_path / "pool")
    assert not (tmp_path / "pool").exists()


def test_the_readme_states_the_prior_each_run_learnt():
    """Each run learns its own sigma_0^2; the README gave the first run's as the study's."""
    runs = [{"prior_samples": 2, "checkpoints": [1, 2], "prior_variance": v} for v in (1.119, 0.4206, 2.972)]
    assert "σ₀² (0.4206–2.972 over the runs) learnt at each run's first batch's first look showing a spread" in \
        adaptive_study.prior_text(runs)
    assert "σ₀² = 1.119 learnt at the first batch's first look showing a spread" in adaptive_study.prior_text(runs[:1])


@pytest.mark.parametrize("option, named", [
    (["--max-samples", "0"], "--max-samples must be an integer >= 1, got 0"),
    (["--batch", "0"], "--batch must be an integer >= 1, got 0"),
    (["--errors", "0.2,x"], "--errors: 'x' is not a number"),
    (["--errors", "1.5"], r"--errors must be 0 .* or a number in \[1e-12, 1\) .*, got 1.5"),
    (["--errors", "0.1,0.2,0.1"], "--errors lists 0.1 more than once"),
    (["--checkpoints", "0,5"], "--checkpoints must be increasing integers >= 1, got '0,5'"),
    (["--checkpoints", "2,100"], "--checkpoints 2,100 looks at T = 100, beyond --max-samples 50"),  # (dropped; R213)
    (["--checkpoints", ",".join(map(str, CHECKPOINTS)), "--max-samples", "20"],  # the default typed out (R217)
     f"--checkpoints {','.join(map(str, CHECKPOINTS))} looks at T = "
     f"{', '.join(str(t) for t in CHECKPOINTS if t > 20)}, beyond --max-samples 20"),
    (["--prior-samples", "-1"], r"--prior-samples must be an integer from 0 to 10000 .*, got -1"),
    (["--subset", "demo"], "--subset must be DATASET=N, got 'demo'"),
    (["--run", "demo"], "--run must be DATASET:RUN_DIR, got 'demo'"),
    (["--memory", "bogus"], "--memory: unknown memory level 'bogus'"),
    (["--subset", "cifar10=100"], "--subset names cifar10, which no --run is of"),
    (["--subset", "demo=1"], r"--subset must be at least 2 inputs per dataset, got \{'demo': 1\}"),
])
def test_study_script_names_a_bad_option_before_reading_a_run(option, named, capsys):
    with pytest.raises(SystemExit):
        _study_script().parse_args(["--run", "demo:missing", *option])
    assert re.search(named, capsys.readouterr().err)


def test_study_script_names_an_untrained_or_damaged_run_in_one_line(tmp_path, capsys):
    script = _study_script()
    with pytest.raises(SystemExit):  # before any other run is drawn
        script.main(["--run", f"demo:{tmp_path / 'untrained'}", "--out", str(tmp_path / "out")])
    assert f"--run {tmp_path / 'untrained'}: no checkpoint.pt" in capsys.readouterr().err
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "damaged" / "config.json").write_text('{"model": {"name": "mlp"}, "data": {"dataset": "demo"}}')
    with pytest.raises(SystemExit) as exit_:
        script.main(["--run", f"demo:{tmp_path / 'damaged'}", "--out", str(tmp_path / "out"),
                     "--cache", str(tmp_path / "cache")])
    assert str(exit_.value.code).startswith("adaptive_study.py: error: ") and "\n" not in str(exit_.value.code)
    assert not (tmp_path / "out").exists()


def test_study_script_checks_the_runs_dataset_and_its_folders_before_any_draw(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "config.json").write_text('{"model": {"name": "mlp"}, "data": {"dataset": "fashion-mnist"}}')
    (tmp_path / "file").write_text("")
    (tmp_path / "study").mkdir()  # another study's, whose README it rewrote (R171)
    (tmp_path / "study" / "README.md").write_text("# Accuracy versus samples on demo\n")
    script = _study_script()
    for argv, named in (([], f"--run cifar10:{run}: the run was trained on fashion-mnist; expected --run "
                              f"fashion-mnist:{run}"),
                        (["--out", str(tmp_path / "file")], None), (["--cache", str(tmp_path / "file" / "pools")], None),
                        (["--out", str(tmp_path / "study")], f"--out {tmp_path / 'study'} holds a README.md that is "
                                                             "not an adaptive study's; choose a folder of its own")):
        run_option = ["--run", f"cifar10:{run}"] if not argv else ["--run", f"fashion-mnist:{run}"]
        with pytest.raises(SystemExit):
            script.parse_args([*run_option, *argv])
        error = capsys.readouterr().err
        assert (named or f"{argv[0]} {argv[1]}: {tmp_path / 'file'} is a file where a folder is expected") in error


def _study_script():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "adaptive_study_script", Path(__file__).resolve().parents[1] / "scripts" / "adaptive_study.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_figure_gives_every_run_its_own_colour_and_legend_entry(monkeypatch):
    """The panels share one legend: a colour restarting in each panel made two datasets' runs look
    alike there, and one folder name in two panels merged their entries."""
    figures = []
    monkeypatch.setattr(adaptive_study, "save_figure", lambda fig, path: figures.append(fig))
    runs = [synthetic_run(FIXED, [(0.1, 0.87, 3.0)]) for _ in range(3)]
    runs[0]["run"], runs[1]["run"], runs[2]["run"] = "a/pbit-s2", "b/pbit-s4", "c/pbit-s2"
    runs[2]["dataset"] = "other"
    adaptive_study.write_figure({"runs": runs}, None)
    legend = figures[0].legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert {"a/pbit-s2 fixed T", "pbit-s4 fixed T", "c/pbit-s2 fixed T"} <= set(texts)
    colours = {t.split(" fixed T")[0]: h.get_color() for t, h in zip(texts, legend.legend_handles)
               if t.endswith("fixed T")}
    assert len(set(colours.values())) == 3


def test_figure_titles_a_panel_with_every_run_s_count_of_test_inputs(monkeypatch):
    """Two runs of one dataset measured on different test subsets: the panel names both counts,
    not the first run's alone."""
    figures = []
    monkeypatch.setattr(adaptive_study, "save_figure", lambda fig, path: figures.append(fig))
    runs = [synthetic_run(FIXED, [(0.1, 0.87, 3.0)]) for _ in range(2)]
    runs[0]["run"], runs[1]["run"], runs[1]["examples"] = "a/pbit-s2", "b/pbit-s4", 2000
    adaptive_study.write_figure({"runs": runs}, None)
    assert [ax.get_title() for ax in figures[0].axes] == ["fake (1000 or 2000 test inputs)"]


REPO = Path(__file__).resolve().parents[1]


STUDY_FOLDERS = sorted(path.parent for path in REPO.glob("results/adaptive/**/adaptive.json")
                       if path.with_name("README.md").is_file())  # a run's own adaptive.json has none


@pytest.mark.parametrize("folder", STUDY_FOLDERS, ids=lambda path: str(path.relative_to(REPO)))
def test_a_committed_adaptive_readme_says_what_its_json_holds(folder):
    """Every table and sentence after the header is the renderer's output from the folder's
    adaptive.json: a cell patched by hand (as the archived first-rule/ once was, its mean rounds
    at one level given another column's figure) shows here. A header says how the folder was
    made, which an archived one extends, so it is left out."""
    document, readme = folder / "adaptive.json", folder / "README.md"
    marker = "\0header\0"
    body = adaptive_study.render_readme(json.loads(document.read_text()), marker).split(marker, 1)[1]
    assert readme.read_text().endswith(body)


def _script(name: str, monkeypatch):
    """The module of ``scripts/<name>.py``, registered under its name (a dataclass looks its module up)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, script)
    spec.loader.exec_module(script)
    return script


def test_look_levels_script_replays_the_rule_at_a_level_that_changes_with_t(monkeypatch):
    """scripts/adaptive_look_levels.py (results/adaptive/NOTES.md, finding 20): at shape 0 its rule
    is the rule; at shape a it stops where the rule at level error·T^a would, look by look."""
    script = _script("adaptive_look_levels", monkeypatch)
    g = torch.Generator().manual_seed(0)
    outputs = torch.rand(20, 600, 4, generator=g) + torch.rand(1, 600, 4, generator=g)  # leads of every size
    plain = adaptive_study.replay(outputs, StoppingRule(20, 0.1), 300)
    shaped = adaptive_study.replay(outputs, script.LookShapedRule(20, 0.1, shape=0.0), 300)
    assert all(torch.equal(a, b) for a, b in zip(plain[:3], shaped[:3]))
    _, taken, _, last = adaptive_study.replay(outputs, script.LookShapedRule(20, 0.1, shape=0.5), 300)
    assert isinstance(last, script.LookShapedRule) and last.shape == 0.5  # (the later batches keep it)
    prior = plain[3].prior_variance
    for row in (0, 350, 599):
        looks = StoppingRule(20, 0.1, prior_variance=prior if row >= 300 else None).schedule()  # (batch 1: T >= 2)
        stop = next(t for t in looks if t == 20 or StoppingRule(20, min(0.1 * t**0.5, 0.5), prior_variance=prior)
                    .settled(_stats(outputs[:t, row:row + 1]))[0])
        assert taken[row] == stop
    assert taken.double().mean() < plain[1].double().mean()  # a looser level after the first looks


def test_mean_prior_script_is_the_control_without_a_prior_and_bayes_with_one(monkeypatch):
    """scripts/adaptive_mean_prior.py (results/adaptive/NOTES.md, finding 21): without a prior its
    rule is the control, the rule's formula with a normal tail; with one, the runner-up's term is
    the posterior mixture of normal tails."""
    import math

    script = _script("adaptive_mean_prior", monkeypatch)
    g = torch.Generator().manual_seed(0)
    outputs = torch.rand(20, 600, 4, generator=g) + torch.rand(1, 600, 4, generator=g)
    plain = adaptive_study.replay(outputs, StoppingRule(20, 0.1), 300)
    m, spread, t, n = torch.tensor([0.05, 0.8]).double(), torch.tensor([0.5, 0.5]).double(), 4, 20  # (as the stats)
    # the control: the rule's formula with a normal tail, which a wide even prior approaches
    control = script.MeanPriorRule(20, 0.1).runner_up_term(m, spread, t, n)
    assert torch.allclose(control, 0.5 * torch.erfc(m * math.sqrt(t * n / (n - t)) / spread / math.sqrt(2)))
    wide = script.MeanPriorRule(20, 0.1, gaps=tuple(torch.linspace(0, 20, 40001).tolist()),
                                weights=(1 / 40001,) * 40001)
    assert torch.allclose(wide.runner_up_term(m, spread, t, n), control, rtol=2e-3, atol=0)  # (a grid of 5e-4)
    # two values of the lead's mean, 0.1 and 2, either sign: the posterior weights and tails by hand
    rule = script.MeanPriorRule(20, 0.1, gaps=(0.1, 2.0), weights=(0.75, 0.25))
    for row in range(2):
        weights = [w / 2 * math.exp(-0.5 * ((m[row].item() - mu) * math.sqrt(t) / 0.5) ** 2)
                   for mu, w in ((0.1, 0.75), (2.0, 0.25), (-0.1, 0.75), (-2.0, 0.25))]
        tails = [0.5 * math.erfc((t * m[row].item() + (n - t) * mu) / (0.5 * math.sqrt(n - t)) / math.sqrt(2))
                 for mu in (0.1, 2.0, -0.1, -2.0)]
        expected = sum(w * p for w, p in zip(weights, tails)) / sum(weights)
        assert rule.runner_up_term(m, spread, t, n)[row].item() == pytest.approx(expected, rel=1e-12)
    gaps, weights = script.gap_prior(outputs, bins=50)
    top = outputs.double().mean(0).topk(2, -1).values
    assert sum(weights) == pytest.approx(1) and max(gaps) < (top[:, 0] - top[:, 1]).max() and len(gaps) <= 50
    prior = adaptive_study.replay(outputs, script.MeanPriorRule(20, 0.1, gaps=gaps, weights=weights), 300)
    assert not torch.equal(prior[1], plain[1])  # (it decides otherwise somewhere)


def _stats(outputs):
    from pdnn.adaptive import SampleStats
    stats = SampleStats(outputs.shape[1], outputs.shape[2])
    stats.add(outputs)
    return stats
