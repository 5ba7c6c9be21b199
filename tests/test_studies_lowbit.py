"""The low-bit study of ``pdnn reproduce``: its claim rules on synthetic numbers, the analysis it
shares with scripts/lowbit_summary.py, and its steps and section at tiny scale on fake data."""
from __future__ import annotations

import json

import pytest

from pdnn.energy import tradeoff
from pdnn.experiments.lowbit import alike, cheapest_within, energy_limits, is_lowbit_pbit, matched_gaps
from pdnn.experiments.plan import Context
from pdnn.experiments.studies import accuracy, lowbit
from test_data import make_cifar_batches, make_idx


def _point(label, energy, acc, neuron="pbit", bits=4, float32=False):
    return {"label": label, "run": label, "energy_j": energy, "accuracy": acc, "neuron": neuron,
            "weight_bits": bits, "samples": 1, "float32": float32}


def _headline(gain=None, share=0.8):
    ref = {"label": "tanh T=1", "accuracy": 0.88, "energy_j": 10.0}
    best = {"label": "w1-quant4 T=1", "weight_bits": 1, "accuracy": 0.875, "gain": 6.0}
    low = None if gain is None else {
        "label": "w2-pbit-s4 T=5", "weight_bits": 2, "accuracy": 0.872, "gain": gain,
        "limits": {"limiting_term": "activation_memory", "limiting_share": share,
                   "gain_cap_by_term": {"activation_memory": gain / share}}}
    most = {"label": "w2-pbit-s4 T=50", "accuracy": 0.85, "gain": 1.0}
    return {"reference": ref, "best": best, "best_lowbit_pbit": low, "most_accurate_lowbit_pbit": most}


def test_gain_claim_holds_only_above_two():
    assert lowbit.judge_gain("c", _headline(2.01)).verdict == "holds"
    claim = lowbit.judge_gain("c", _headline(2.0))  # "more than 2x": exactly 2 is not enough
    assert claim.verdict == "does not hold"
    assert "activation memory (80% of its energy; alone it allows ≤ 2.5×)" in claim.ours


def test_gain_claim_without_a_low_bit_pdnn_in_tolerance_does_not_hold():
    claim = lowbit.judge_gain("c", _headline(None))
    assert claim.verdict == "does not hold"
    assert claim.ours.startswith("no p-DNN with low-bit weights within 1 point (most accurate: w2-pbit-s4 T=50, 85.00%")


def test_alike_rule_is_one_point_at_every_s_and_t():
    gaps = [{"s": 1, "T": t, "gap": g} for t, g in ((1, 0.01), (10, -0.01), (50, 0.0))]
    assert alike(gaps)
    assert not alike(gaps + [{"s": 4, "T": 1, "gap": -0.0101}])
    assert not alike([])  # nothing measured is not "alike"
    claim = lowbit.judge_alike("c", gaps, [{"gap": 0.014}])
    assert claim.verdict == "holds" and claim.ours.startswith("largest |gap| 1.00 points (s = 1, T = 1)")
    assert "up to 1.40" in claim.ours


def test_cheapest_within_keeps_the_tolerance_and_the_filter():
    points = [_point("tanh", 10.0, 0.880, "tanh", 32, float32=True), _point("w1-quant4", 1.0, 0.875, "quant:4", 1),
              _point("w2-pbit-cheap", 1.5, 0.869, bits=2), _point("w2-pbit", 2.0, 0.871, bits=2),
              _point("pbit-float", 1.8, 0.879, bits=32)]
    result = tradeoff(points, 0.01)
    assert cheapest_within(result)["label"] == "w1-quant4"
    assert cheapest_within(result, is_lowbit_pbit)["label"] == "w2-pbit"  # 0.869 is 1.1 points below
    assert cheapest_within(result, lambda p: p["neuron"] == "sign") is None


def _write_eval(run, accs):
    run.mkdir(parents=True)
    (run / "eval-network.json").write_text(json.dumps(
        {"results": [{"samples": t, "accuracy_mean": a, "accuracy_std": 0.0, "repeats": 3} for t, a in accs.items()]}))


def test_matched_gaps_pair_every_common_t(tmp_path):
    _write_eval(tmp_path / "bi", {1: 0.86, 10: 0.88, 50: 0.885})
    _write_eval(tmp_path / "uni", {1: 0.87, 10: 0.875})
    gaps = matched_gaps({4: (tmp_path / "bi", tmp_path / "uni")})
    assert [(g["s"], g["T"]) for g in gaps] == [(4, 1), (4, 10)]
    assert [round(g["gap"], 6) for g in gaps] == [-0.01, 0.005]


def test_small_plan_covers_both_datasets_within_its_budget(tmp_path):
    ctx = Context(tmp_path, "small")
    keys = [step.key for step in lowbit.steps(ctx)]
    assert all(k.startswith("lowbit/") for k in keys)
    grid = {f"lowbit/fashion-mnist/w{b}-{n}/train" for b in (1, 2, 4) for n in ("tanh", "quant1", "quant2", "pbit-s4")}
    grid |= {f"lowbit/cifar10/w4-{n}/train" for n in ("tanh", "pbit-s4")}
    assert grid <= set(keys)
    assert sum(step.estimate_s for step in lowbit.steps(ctx)) < 16 * 60
    claims = lowbit.section(ctx).claims
    assert len([c for c in claims if c.claim.startswith("cifar10")]) == 2
    assert all(c.verdict == "not measured" for c in claims), claims  # nothing has run


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PDNN_DATA", raising=False)
    make_idx(tmp_path / "data" / "fashion-mnist", gz=False, n_train=64, n_test=32)
    make_cifar_batches(tmp_path / "data", per_batch=8)
    return Context(tmp_path / "out", "tiny", roots=[str(tmp_path / "data")])


def test_tiny_steps_and_section_on_fake_data(tiny):
    needed = {f"accuracy/fashion-mnist/{n}/{w}" for n in ("tanh", "pbit-s2") for w in ("train", "eval")}
    needed |= {"accuracy/cifar10/tanh/train", "accuracy/cifar10/tanh/eval"}
    for step in accuracy.steps(tiny):
        if step.key in needed:
            step.run()
    steps = lowbit.steps(tiny)
    for step in steps:
        step.run()
    headline = tiny.dir("lowbit", "fashion-mnist", "headline.json")
    stamp = headline.stat().st_mtime_ns
    for step in steps:  # a finished plan is not redone
        step.run()
    assert headline.stat().st_mtime_ns == stamp
    section = lowbit.section(tiny)
    assert [c.verdict != "not measured" for c in section.claims] == [True] * 5, [c.reason for c in section.claims]
    assert all(f.path.exists() for f in section.figures) and len(section.figures) == 5
    readme = tiny.dir("lowbit", "README.md").read_text()
    assert all(f"| {name} | 2 |" in readme for name in ("w2-tanh", "w2-quant1", "w2-pbit-s2"))
    h = json.loads(headline.read_text())["dram"]
    limits = h["best"]["limits"]
    term = max(limits["terms"], key=limits["terms"].get).removesuffix("_j")
    assert limits["limiting_term"] == term  # the largest term allows the smallest gain
    assert limits["gain_cap_by_term"][term] * limits["terms"][f"{term}_j"] == pytest.approx(h["reference"]["energy_j"])
    again = energy_limits(h["best"], lowbit.memory_settings("dram"), h["reference"]["energy_j"])
    assert again["total_j"] == pytest.approx(h["best"]["energy_j"])  # the trade-off's energy, term by term


def test_a_missing_matched_evaluation_is_explained_by_the_steps_that_make_it(tmp_path):
    from pdnn.experiments.plan import Context

    for case in ("matched run finished, its evaluation deleted", "accuracy evaluation failed"):
        ctx = Context(tmp_path / case.split()[0], "tiny")
        fashion = next(s for s in accuracy.specs(ctx) if s.dataset == "fashion-mnist")
        run = ctx.dir(accuracy.NAME, fashion.dataset, "runs", "pbit-s2")
        run.mkdir(parents=True)
        if case.startswith("matched"):
            (run / "eval-network.json").write_text('{"results": [{"samples": 1, "accuracy_mean": 0.5}]}')
            ctx.done = {"lowbit/matched/pbit-unipolar-beta4-s2/train", "lowbit/matched/pbit-unipolar-beta4-s2/eval"}
            expected = "records lowbit/matched/pbit-unipolar-beta4-s2/eval as done"  # the step that made it
        else:
            ctx.skipped = {"accuracy/fashion-mnist/pbit-s2/eval": "failed: RuntimeError: boom"}
            expected = "failed: RuntimeError: boom"
        assert expected in lowbit._alike_claim(ctx, fashion).reason, case

