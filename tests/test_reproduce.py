"""``pdnn reproduce``: the whole plan at tiny scale, end to end, on fake data; resuming; missing
data; a failing step; the report's claims table re-derived from the studies' own JSON."""
from __future__ import annotations

import json
import io
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_data import make_cifar_batches, make_idx

from pdnn.cli import main
from pdnn.devices import where_measured
from pdnn.experiments import reproduce
from pdnn.experiments import plan as plan_module
from pdnn.experiments.plan import STATE, VERDICTS, Claim, Context, rates_of, reference_rates
from pdnn.experiments.report import claims_table, code_lines, data_lines, device_text, machine_text, write_report
from pdnn.experiments.studies import STUDIES
from pdnn.io import read_json, write_json
from pdnn.provenance import code_record


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Fake Fashion-MNIST and CIFAR-10 (random pixels), and one data cache for the module."""
    root = tmp_path_factory.mktemp("data")
    make_idx(root / "fashion-mnist", gz=True, n_train=300, n_test=150)
    make_cifar_batches(root, per_batch=60)
    return root


@pytest.fixture(autouse=True)
def isolated(data, monkeypatch):
    monkeypatch.setenv("PDNN_CACHE", str(data / "cache"))
    monkeypatch.delenv("PDNN_DATA", raising=False)


@pytest.fixture(scope="module")
def tiny_run(data, tmp_path_factory):
    """The whole tiny plan, run once for the module; returns (context, log text)."""
    out = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDNN_CACHE", str(data / "cache"))
        mp.delenv("PDNN_DATA", raising=False)
        ctx = Context(out, "tiny", roots=[str(data)])
        log = io.StringIO()
        reproduce.run_plan(ctx, progress=True, log=log)
    return ctx, log.getvalue()


def test_tiny_plan_runs_every_step_and_reports_every_claim(tiny_run):
    ctx, log = tiny_run
    assert not ctx.failed and not ctx.skipped, log
    state = read_json(ctx.dir(STATE))
    assert set(state["done"]) == {step.key for _, step in reproduce.plan(ctx)}
    assert all(done["code"] == code_record() for done in state["done"].values())
    text = (ctx.out / "REPORT.md").read_text()
    assert code_lines(state["done"])[0] in text.splitlines()
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    sections = [study.section(ctx) for study in STUDIES]
    claims = [c for s in sections for c in s.claims]
    assert len(rows) == len(claims) > 0
    assert all(c.verdict in ("holds", "does not hold") for c in claims)  # every study measured something
    for study, section in zip(STUDIES, sections):
        assert f"## {section.title}" in text
        for figure in section.figures:
            assert figure.path.is_file(), figure.path
    html = (ctx.out / "REPORT.html").read_text()
    assert html.count("data:image/png;base64,") == sum(len(s.figures) for s in sections)
    assert "missing figure" not in html


def test_rerun_repeats_no_finished_step(tiny_run, monkeypatch):
    """A rerun only rewrites the report: it runs nothing, and says the machine that ran the
    steps, not the one that rewrote the report."""
    ctx, _ = tiny_run
    before, report = read_json(ctx.dir(STATE)), (ctx.out / "REPORT.md").read_text()
    monkeypatch.setattr(reproduce, "machine", lambda: {"processor": "another machine", "threads": 64})
    log = io.StringIO()
    reproduce.run_plan(Context(ctx.out, "tiny", roots=ctx.roots), progress=True, log=log)
    assert log.getvalue() == ""  # one line per step run; none ran
    assert read_json(ctx.dir(STATE)) == before and (ctx.out / "REPORT.md").read_text() == report


def test_a_finished_step_s_missing_result_is_named_with_the_way_to_redo_it(tiny_run, tmp_path):
    import shutil

    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    (out / "tiny" / "energy" / "fashion-mnist" / "tradeoff-dram.json").unlink()
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    claims = ("fashion-mnist, DRAM: > 2x less energy than the 32-bit network within 1 % (float weights)",
              "fashion-mnist: one more sample (T 1→2)")  # both read from that trade-off
    rows = [line for line in (out / "REPORT.md").read_text().splitlines() if any(c in line for c in claims)]
    assert len(rows) == 2 and all("not measured (a result is missing, though plan-state.json records "
                                  "energy/fashion-mnist/" in row and "to run again" in row for row in rows)


def test_a_record_holding_nan_makes_its_study_not_measured_not_a_verdict(tiny_run, tmp_path):
    """Python's json reads NaN, which pdnn never writes: a damaged toggles.json gave "toggles
    MAC/AC nanx ... does not hold", and a NaN accuracy in adaptive.json dropped a level and flipped
    the adaptive claim (R221)."""
    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    damaged = out / "tiny" / "hardware" / "toggles.json"
    damaged.write_text(damaged.read_text().replace('"ratio_mac_over_ac": ', '"ratio_mac_over_ac": NaN, "was": ', 1))
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    text = (out / "REPORT.md").read_text()
    assert "nanx" not in text.lower() and f"{damaged} holds NaN, which is not JSON: pdnn never writes one" in text
    assert "**Not built**: its records could not be read (RunError:" in text


def test_a_rerun_on_another_device_says_what_the_full_schedules_take_where_the_steps_ran(tiny_run, tmp_path):
    """A rerun on a GPU machine, which only rewrites the report, timed the full schedules as a GPU's
    at the CPU reference rates and dropped the steps the records had timed (R225)."""
    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    reports = []
    for device in ("cpu", "cuda"):
        reproduce.run_plan(Context(out, "tiny", roots=ctx.roots, device=device), progress=False, log=io.StringIO())
        reports.append((out / "REPORT.md").read_text())
    assert "would take on a CPU about" in reports[0] and reports[1] == reports[0]


def test_a_study_missing_a_run_s_result_says_so_in_its_section(tiny_run, tmp_path):
    """The claims said "not measured", but the section's line for the dataset vanished unsaid."""
    import shutil

    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    (out / "tiny" / "accuracy" / "fashion-mnist" / "runs" / "tanh" / "eval-network.json").unlink()
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    section = (out / "REPORT.md").read_text().split("## Accuracy")[1].split("\n## ")[0]
    assert re.search(r"- \*\*fashion-mnist\*\* \(.*\): not measured \(a result is missing", section)


def test_a_deleted_readme_is_named_with_its_step_not_linked(tiny_run, tmp_path):
    """The report linked every study's README whether it was there or not."""
    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    readmes = {"accuracy/fashion-mnist/README.md": "accuracy/fashion-mnist/summary",
               "lowbit/README.md": "lowbit/summary", "adaptive/README.md": "adaptive/cifar10/replay"}
    readmes.update({str(path.relative_to(out / "tiny").as_posix()): f"generation/{path.parent.name}/summary"
                    for path in (out / "tiny" / "generation").glob("*/README.md")})
    assert len(readmes) == 4
    linked = (out / "REPORT.md").read_text()
    assert all(f"(tiny/{readme})" in linked for readme in readmes)
    for readme in readmes:
        (out / "tiny" / readme).unlink()
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    report = (out / "REPORT.md").read_text()
    for readme, step in readmes.items():
        assert f"(tiny/{readme})" not in report
        assert (f"*Missing `tiny/{readme}`: a result is missing, though plan-state.json records {step} as done: "
                "remove that entry from it to run again.*") in report


def test_a_deleted_adaptive_result_takes_the_figure_drawn_with_it(tiny_run, tmp_path):
    """The figure of both datasets stayed, under a caption naming the other dataset alone; the
    claim named the pool's step too, which does not make the result."""
    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    (out / "tiny" / "adaptive" / "fashion-mnist" / "adaptive.json").unlink()
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    section = (out / "REPORT.md").read_text().split("## T chosen per input")[1].split("\n## ")[0]
    assert "accuracy-vs-mean-T.png" not in section and "README.md" not in section
    assert "The figure and the README are left out: they were drawn with a result that is missing" in section
    row = next(line for line in (out / "REPORT.md").read_text().splitlines() if "| fashion-mnist: adaptive T" in line)
    assert ("not measured (a result is missing, though plan-state.json records adaptive/fashion-mnist/replay as "
            "done: remove that entry from it to run again)") in row
    state = read_json(out / "tiny" / STATE)
    del state["done"]["adaptive/fashion-mnist/replay"]  # as the claim says
    write_json(out / "tiny" / STATE, state)
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    assert (out / "REPORT.md").read_text().count("accuracy-vs-mean-T.png") == 1
    assert "left out" not in (out / "REPORT.md").read_text().split("## T chosen per input")[1].split("\n## ")[0]


def test_a_deleted_figure_is_named_with_its_step_not_dropped_or_linked(tiny_run, tmp_path):
    """The noise and hardware sections dropped a deleted figure, caption and all; the others kept a
    link to nothing, and the HTML page a stray '/>'."""
    import shutil

    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    figures = {"noise/fashion-mnist/accuracy-vs-T.png": "noise/fashion-mnist/figure",
               "hardware/units.png": "hardware/figure", "energy/fashion-mnist/tradeoff-dram.png":
               "energy/fashion-mnist/dram"}
    for figure in figures:
        (out / "tiny" / figure).unlink()
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    report, page = (out / "REPORT.md").read_text(), (out / "REPORT.html").read_text()
    for figure, step in figures.items():
        assert (f"*Missing figure `tiny/{figure}`: a result is missing, though plan-state.json records {step} as "
                "done: remove that entry from it to run again.*") in report
        assert f"({figure})" not in report.replace("tiny/", "")
    assert "/>" not in re.sub(r"<img [^>]*/>", "", page)


def test_a_deleted_evaluation_unmeasures_every_claim_made_from_it_and_names_its_own_step(tiny_run, tmp_path):
    """The accuracy claims were read from the summary step's copy (a verdict whose source was
    gone), the energy ones from the trade-off made from it, and the aggregation claim named the
    layer evaluation, so that doing what it said changed nothing. Doing what the report says
    now gives back the report; a step that then fails is each claim's reason."""
    import json
    import shutil

    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    run, step = out / "tiny" / "accuracy" / "cifar10" / "runs" / "pbit-s2", "accuracy/cifar10/pbit-s2/eval"
    (run / "eval-network.json").unlink()
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    rows = [line for line in (out / "REPORT.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    gone = [row for row in rows if "not measured" in row]
    studies = {row.split(" | ")[1] for row in gone}
    assert all(f"records {step} as done: remove that entry" in row for row in gone), gone
    assert all("cifar10" in row for row in gone) and len(studies) >= 3, studies  # accuracy, energy, noise
    assert any("network (p-DNN) aggregation beats layer" in row for row in gone)

    record = out / "tiny" / STATE
    state = read_json(record)
    del state["done"][step]
    record.write_text(json.dumps(state))
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    again = [line for line in (out / "REPORT.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    assert again == [line for line in (ctx.out / "REPORT.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]

    (run / "eval-network.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"damaged")
    state = read_json(record)
    del state["done"][step]
    record.write_text(json.dumps(state))
    failed = Context(out, "tiny", roots=ctx.roots)
    reproduce.run_plan(failed, progress=False, log=io.StringIO())
    assert list(failed.failed) == [step]
    rows = [line for line in (out / "REPORT.md").read_text().splitlines() if "not measured" in line and "| " in line]
    assert len(rows) == len(gone) and all("not measured (failed: RunError" in row for row in rows)


def test_a_damaged_evaluation_or_a_deleted_summary_names_the_one_step_to_run_again(tiny_run, tmp_path):
    """A damaged evaluation left the trade-offs made from it standing (and took the noise study's
    every claim); a deleted summary named all 29 steps of its dataset, training included."""
    import shutil

    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    accuracy = out / "tiny" / "accuracy"
    (accuracy / "fashion-mnist" / "runs" / "tanh" / "eval-network.json").write_text("{")
    (accuracy / "cifar10" / "summary.json").unlink()
    (out / "tiny" / "generation" / "fashion-mnist" / "runs" / "tanh" / "fid-clf.json").unlink()
    (out / "tiny" / "hardware" / "cosim-layer.json").unlink()
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    rows = [line for line in (out / "REPORT.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    original = [line for line in (ctx.out / "REPORT.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(original)  # no study lost its claims to one row
    damaged = [row for row in rows if "tanh/eval-network.json is not valid JSON" in row]
    assert {row.split(" | ")[1] for row in damaged} >= {"Accuracy against T and the train-test matrix",
                                                       "Energy: samples against bits (32-bit float weights)"}
    assert all("remove accuracy/fashion-mnist/tanh/eval from plan-state.json, to run again" in row for row in damaged)
    summary = [row for row in rows if "cifar10" in row and "not measured" in row]
    assert summary and all("records accuracy/cifar10/summary as done: remove that entry" in row for row in summary)
    generation = [row for row in rows if " | Generated image quality against T" in row]  # (kept their verdicts)
    assert generation and all("records generation/fashion-mnist/tanh/fid-clf as done" in row for row in generation)
    assert any("records hardware/cosim/layer as done" in row for row in rows)  # (held on the core's record alone)


@pytest.mark.parametrize("deleted", ["", "config.json", "calibration.json"])
def test_a_deleted_converted_run_unmeasures_its_own_claims_not_the_study(tiny_run, tmp_path, deleted):
    """The figure's caption read the converted run's config.json and calibration.json, so deleting
    that run, or either file, made the whole noise study "could not be read ... Restore the damaged
    file", its other claims lost with it. The claims read the run's evaluation only."""
    import shutil

    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    run = out / "tiny" / "noise" / "fashion-mnist" / "runs" / "tanh-pbit-cal-bn"
    (run / deleted).unlink() if deleted else shutil.rmtree(run)
    reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    section = (out / "REPORT.md").read_text().split("\n## Sampling without retraining")[1].split("\n## ")[0]
    assert "could not be read" not in section and "Not built" not in section
    rows = [line for line in (out / "REPORT.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    noise = [row for row in rows if "fashion-mnist" in row and ("conver" in row or "aggregation" in row)]
    missing = "a result is missing, though plan-state.json records noise/fashion-mnist/"
    if deleted:  # its evaluation is there: measured, and only the words of how it was made are gone
        assert not any("not measured" in row for row in noise)
        assert f"**fashion-mnist** — conversion: not described ({missing}convert as done" in section
    else:
        assert any(missing in row for row in noise)
        assert any("not measured" not in row for row in noise)  # the aggregation claim, from runs left alone
    assert "tiny/noise/fashion-mnist/accuracy-vs-T.png" in section  # the figure, still there, still shown


def test_another_scale_s_report_is_not_replaced(tiny_run, tmp_path):
    """Checking the plan at ``tiny`` in a folder of ``small`` results replaced their REPORT.md; a
    scale's report now goes to REPORT-<scale>.md where the folder holds a larger scale's plan."""
    import shutil

    ctx, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(ctx.out, out)
    (out / "small").mkdir()
    write_json(out / "small" / STATE, {"done": {}})
    (out / "REPORT.md").write_text("the small report\n")
    (out / "REPORT.html").write_text("its page\n")
    path = reproduce.run_plan(Context(out, "tiny", roots=ctx.roots), progress=False, log=io.StringIO())
    assert path == out / "REPORT-tiny.md" and (out / "REPORT-tiny.html").is_file()
    assert path.read_text() == (ctx.out / "REPORT.md").read_text().replace(str(ctx.out), str(out))
    assert (out / "REPORT.md").read_text() == "the small report\n" and (out / "REPORT.html").read_text() == "its page\n"
    for scale, report in (("tiny", "REPORT-tiny.md"), ("small", "REPORT.md")):  # what --dry-run says it will write
        assert reproduce.describe_plan(Context(out, scale, roots=ctx.roots)).endswith(
            f"; the report goes to {out / report}.")


def test_a_trade_off_s_runs_are_found_whatever_separator_or_depth_their_paths_have(tiny_run):
    """A path of fewer than four parts (`pdnn tradeoff runs/*` in a study folder) raised a
    ValueError that took every claim of the study; one written on Windows was not found."""
    from pdnn.experiments.studies import energy

    ctx, _ = tiny_run
    result = read_json(ctx.dir("energy", "fashion-mnist", "tradeoff-dram.json"))
    assert energy.sources_missing(ctx, result) is None
    for point in result["points"]:
        point["run"] = "C:\\plans\\tiny\\" + "\\".join(Path(point["run"]).parts[-4:])
    assert energy.sources_missing(ctx, result) is None  # each found under this plan's folder
    result["points"][0]["run"] = "C:\\plans\\tiny\\accuracy\\fashion-mnist\\runs\\gone"
    assert energy.sources_missing(ctx, result) == "not run yet"  # and checked
    for elsewhere in ("runs/pbit-s1", "/home/me/exp/mystudy/runs/x"):  # not a plan's run: not checked
        result["points"][0]["run"] = elsewhere
        assert energy.sources_missing(ctx, result) is None


def test_a_failed_step_is_the_reason_before_a_finished_one_with_a_missing_result(tmp_path):
    ctx = Context(tmp_path, "tiny")
    ctx.done, ctx.skipped = {"noise/ds/convert"}, {"noise/ds/eval-converted": "failed: RuntimeError: boom"}
    assert ctx.why_missing("noise/ds/convert", finished=False) == "not run yet"  # so a caller looks wider,
    assert ctx.why_missing("noise/ds/") == "failed: RuntimeError: boom"  # and finds the failure first
    assert "records noise/ds/convert as done" in ctx.why_missing("noise/ds/convert")


def test_accuracy_claims_in_the_report_agree_with_the_study_summary(tiny_run):
    ctx, _ = tiny_run
    text = (ctx.out / "REPORT.md").read_text()
    summary = read_json(ctx.dir("accuracy", "fashion-mnist", "summary.json"))
    for c in summary["claims"]:
        verdict = "**holds**" if c["holds"] else "**does not hold**"
        row = next(line for line in text.splitlines() if f"fashion-mnist: {c['claim']}" in line)
        assert c["ours"] in row and row.rstrip(" |").endswith(verdict)


def _only(monkeypatch, keep):
    """Restrict the plan to the steps for which ``keep(step)`` is true (the report still covers
    every study), so a test exercises the runner without training the whole tiny plan again."""
    full = reproduce.plan
    monkeypatch.setattr(reproduce, "plan", lambda ctx: [(n, s) for n, s in full(ctx) if keep(s)])


def test_missing_dataset_skips_its_steps_and_says_why(data, tmp_path, monkeypatch):
    only_fashion = tmp_path / "roots"
    (only_fashion / "fashion-mnist").mkdir(parents=True)
    for f in (data / "fashion-mnist").iterdir():
        (only_fashion / "fashion-mnist" / f.name).symlink_to(f)
    _only(monkeypatch, lambda step: "data:cifar10" in step.needs)
    ctx = Context(tmp_path / "out", "tiny", roots=[str(only_fashion)])
    reproduce.run_plan(ctx, progress=False, log=io.StringIO())
    assert ctx.skipped and all(f"dataset 'cifar10' not found under {only_fashion}" in reason
                               and "; pass --data-dir ROOT" in reason  # where it looked, not a dangling "Looked in:"
                               for reason in ctx.skipped.values())
    assert not (ctx.dir(STATE).exists() and read_json(ctx.dir(STATE))["done"])
    text = (ctx.out / "REPORT.md").read_text()
    cifar_rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line) and "cifar10" in line]
    assert cifar_rows and all("not measured (dataset 'cifar10' not found" in line for line in cifar_rows)
    assert any("cifar10: one more sample (T 1→2)" in line for line in cifar_rows)  # read from a missing trade-off


def test_a_failing_step_is_reported_and_the_rest_still_runs(data, tmp_path, monkeypatch):
    broken, other = "accuracy/fashion-mnist/tanh/train", "accuracy/cifar10/tanh/train"
    full = reproduce.plan
    monkeypatch.setattr(reproduce, "plan", lambda ctx: [
        (n, reproduce.Step(s.key, s.estimate_s, lambda: 1 / 0) if s.key == broken else s)
        for n, s in full(ctx) if s.key in (broken, other)])
    ctx = Context(tmp_path, "tiny", roots=[str(data)])
    log = io.StringIO()
    reproduce.run_plan(ctx, progress=False, log=log)
    assert list(ctx.failed) == [broken] and "ZeroDivisionError" in log.getvalue()
    assert list(read_json(ctx.dir(STATE))["done"]) == [other]
    row = next(line for line in (tmp_path / "REPORT.md").read_text().splitlines()
               if "fashion-mnist: T = 1 matches" in line)
    assert "not measured (failed: ZeroDivisionError" in row


def test_dry_run_lists_every_step_with_an_estimate(data, tmp_path, capsys):
    assert main(["reproduce", "--scale", "small", "--out", str(tmp_path), "--data-dir", str(data), "--dry-run"]) == 0
    out = capsys.readouterr().out
    ctx = Context(tmp_path, "small", roots=[str(data)])
    for _, step in reproduce.plan(ctx):
        assert step.key in out
    total = sum(step.estimate_s for _, step in reproduce.plan(ctx))
    assert f"{len(reproduce.plan(ctx))} steps" in out and reproduce._duration(total) in out
    assert not (tmp_path / "small").exists()  # a dry run writes nothing


def test_dry_run_leaves_steps_without_their_data_out_of_the_time(data, tmp_path, capsys):
    only_fashion = tmp_path / "roots"
    (only_fashion / "fashion-mnist").mkdir(parents=True)
    for f in (data / "fashion-mnist").iterdir():
        (only_fashion / "fashion-mnist" / f.name).symlink_to(f)
    assert main(["reproduce", "--scale", "small", "--out", str(tmp_path / "out"), "--data-dir", str(only_fashion),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    ctx = Context(tmp_path / "out", "small", roots=[str(only_fashion)])
    steps = [step for _, step in reproduce.plan(ctx)]
    runnable = [step for step in steps if not any(ctx.missing(need) for need in step.needs)]  # tools may lack too
    assert runnable and all(step in runnable for step in steps if not step.needs)
    assert not any("data:cifar10" in step.needs for step in runnable)
    assert (f"{len(steps)} steps, {len(runnable)} to run, {len(steps) - len(runnable)} skipped (what they need is "
            f"missing): about {reproduce._duration(sum(step.estimate_s for step in runnable))}") in out


def test_every_scale_has_a_plan_and_small_fits_two_hours(data, tmp_path):
    for scale in ("tiny", "small", "full"):
        assert reproduce.plan(Context(tmp_path, scale, roots=[str(data)]))
    small = sum(step.estimate_s for _, step in reproduce.plan(Context(tmp_path, "small")))
    assert small <= 2 * 3600


COMMITTED = Path(__file__).resolve().parents[1] / "results" / "small" / STATE


def test_a_fresh_folder_is_estimated_at_the_committed_reports_rates(tmp_path):
    """The packaged rates are those of the committed small run (``scripts/reference_rates.py``
    refreshes them), and with them the estimate of a fresh small plan is near that run's time."""
    assert reference_rates() == rates_of([COMMITTED], "cpu")
    done = read_json(COMMITTED)["done"]
    machines = {json.dumps(entry.get("machine"), sort_keys=True) for entry in done.values()}
    packaged = json.loads(plan_module.REFERENCE_RATES.read_text())["machines"]  # (it named one of two, R190)
    assert sorted(json.dumps(m, sort_keys=True) for m in packaged) == sorted(machines)
    steps = [step for _, step in reproduce.plan(Context(tmp_path, "small"))]
    assert {step.key for step in steps} == set(done)
    unrated = [step.key for step in steps if not step.rate]
    assert sum(done[key]["wall_s"] for key in unrated) < 0.1 * sum(entry["wall_s"] for entry in done.values())
    estimated, measured = sum(step.estimate_s for step in steps), sum(entry["wall_s"] for entry in done.values())
    assert measured <= estimated <= 1.3 * measured


def test_an_estimate_takes_this_folders_rate_then_the_reference_then_the_studys(tmp_path, monkeypatch):
    monkeypatch.setattr(plan_module, "reference_rates", lambda: {"kind": 2.0})
    assert Context(tmp_path, "small").estimate("kind", 10, 5.0, overhead=1.0) == 20.0  # fixed costs are in the rate
    assert Context(tmp_path, "small").estimate("other", 10, 5.0, overhead=1.0) == 51.0
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / STATE).write_text('{"done": {"a": {"wall_s": 30, "rate": "kind", "work": 10}}}')
    assert Context(tmp_path, "small").estimate("kind", 10, 5.0, overhead=1.0) == 30.0
    assert Context(tmp_path, "small").estimate("kind", 0.01, 5.0, overhead=1.0) == plan_module.MIN_STEP_S


def test_a_plan_is_timed_only_by_steps_finished_on_its_type_of_device(tmp_path, monkeypatch):
    """One step finished on a GPU timed every step of its kind in a CPU plan at the GPU's rate
    (R223); a record that names no device counts for every type."""
    monkeypatch.setattr(plan_module, "reference_rates", lambda: {"kind": 2.0})
    (tmp_path / "full").mkdir()
    done = {"a": {"wall_s": 30, "rate": "kind", "work": 10, "device": "cuda:0, NVIDIA H200"},
            "b": {"wall_s": 40, "rate": "unnamed", "work": 10}}
    (tmp_path / "full" / STATE).write_text(json.dumps({"done": done}))
    for device, kind, unnamed in (("cpu", 20.0, 40.0), ("cuda", 30.0, 40.0), ("cuda:1", 30.0, 40.0)):
        ctx = Context(tmp_path, "small", device=device)
        assert (ctx.estimate("kind", 10, 5.0), ctx.estimate("unnamed", 10, 5.0)) == (kind, unnamed)
    assert rates_of([tmp_path / "full" / STATE], "cpu") == {"unnamed": 4.0}


def test_an_outlook_says_how_much_of_it_is_timed_at_the_studies_own_figures(tmp_path, monkeypatch):
    """The full plan's 154 days were 140 days of kinds no step had timed, at figures the docs call
    pessimistic by up to 80x; the outlook did not say so (R223)."""
    monkeypatch.setattr(plan_module, "reference_rates", lambda: {"kind": 2.0})
    ctx = Context(tmp_path, "full")
    steps = [plan_module.Step("a", ctx.estimate("kind", 3600, 0.1), print, rate="kind", work=3600),
             plan_module.Step("b", ctx.estimate("new", 1, 4 * 86400.0), print, rate="new", work=1),
             plan_module.Step("c", 60.0, print)]
    assert reproduce.outlook(ctx, steps) == (
        "about 4 days at the rates of the reference machine (2 CPU cores); 4 days of it is 1 step of kinds no "
        "finished step has timed, at their studies' own figures (measured before the speed work, pessimistic by "
        "up to 80×)")
    assert reproduce.outlook(Context(tmp_path, "full", device="cuda"), steps[:1]) == (
        "about 2.0 h at the rates of the reference machine (2 CPU cores; a GPU's are shorter)")


def test_an_estimate_from_a_folder_s_records_does_not_claim_this_machine_measured_them(tmp_path):
    """The records under OUT may come from another machine (the committed results/ ran on two);
    the estimate said that they were measured on this one."""
    small = tmp_path / "small"
    shutil.copytree(COMMITTED.parent, small, ignore=lambda folder, names: [n for n in names if n != STATE])
    steps = [step for _, step in reproduce.plan(Context(tmp_path, "full"))]
    said = reproduce.outlook(Context(tmp_path, "full"), steps)
    assert "this machine" not in said
    assert f"steps are timed from finished steps of the same kind on a CPU recorded under {tmp_path} (on the machines their " \
           "records name), the others at the rates of the reference machine" in said


def test_bad_scale_and_verdict_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--scale", "huge", "--out", str(tmp_path)])
    assert "huge" in capsys.readouterr().err
    with pytest.raises(ValueError, match="verdict"):
        Claim("c", "p", verdict="maybe")
    assert set(VERDICTS) == {"holds", "does not hold", "not measured"}


def test_the_report_says_which_code_ran_its_steps():
    at = {"pdnn": "0.1.0", "commit": "0123456789abcdef" * 2 + "01234567", "modified": False}
    changed, installed = {**at, "modified": True}, {"pdnn": "0.1.0", "commit": None, "modified": None}
    done = {"a": {"code": at}, "b": {"code": at}, "c": {"code": changed}, "d": {"code": installed}, "e": {}}
    assert code_lines(done) == ["- Code: pdnn 0.1.0 at commit 0123456789ab (2 steps); pdnn 0.1.0 at commit "
                                "0123456789ab with uncommitted changes (1 step); pdnn 0.1.0 (not from a git "
                                "checkout) (1 step); not recorded (1 step run by an earlier pdnn)."]
    assert code_lines({"e": {}}) == []  # a report of steps that predate the record stays as it was


def test_the_report_says_which_copy_of_each_dataset_its_evaluations_read(tmp_path):
    """A JPEG copy of CIFAR-10 scores slightly differently from the canonical batches: the data's
    own README asks for it to be said next to the results."""
    jpeg = "/data/cifar10-jpeg (class-folder zip; JPEG copies differ slightly from the canonical pixels)"
    for run, dataset, source in (("a", "cifar10", jpeg), ("b", "fashion-mnist", "/data/fashion-mnist (IDX)"),
                                 ("c", "cifar10", jpeg)):
        write_json(tmp_path / "study" / "runs" / run / "eval-network.json", {"dataset": dataset, "data_source": source})
    (tmp_path / "study" / "runs" / "d").mkdir()
    (tmp_path / "study" / "runs" / "d" / "eval-network.json").write_text("{damaged")
    assert data_lines(tmp_path) == [f"- Data: cifar10 from {jpeg}; fashion-mnist from /data/fashion-mnist (IDX)."]
    assert data_lines(tmp_path / "study" / "runs" / "d") == []


def test_the_report_says_which_device_ran_its_steps(tiny_run):
    ctx, _ = tiny_run
    done = read_json(ctx.dir(STATE))["done"]
    assert {step["device"] for step in done.values()} == {"cpu"} and "ran on cpu" in (ctx.out / "REPORT.md").read_text()
    gpu = {"device": "cuda, NVIDIA H200"}
    assert device_text({"cuda": True}, {"a": {"device": "cpu"}}) == "ran on cpu; a GPU was visible, unused"
    assert device_text({"cuda": False}, {"a": gpu, "b": gpu}) == "ran on cuda, NVIDIA H200"  # as resumed on a CPU
    assert device_text({}, {"a": gpu, "b": {"device": "cpu"}, "c": {}}) == \
        "ran on cuda, NVIDIA H200 (1 step); cpu (1 step); a device not recorded (1 step)"
    # steps that predate the record keep their report's words
    assert device_text({"cuda": True}, {"a": {}}) == "CUDA" and device_text({"cuda": False}, {}) == "CPU only"


def test_the_report_says_which_processor_and_threads_ran_its_steps(tiny_run):
    ctx, _ = tiny_run
    done = read_json(ctx.dir(STATE))["done"]
    assert all(step["machine"] == where_measured() for step in done.values())
    here = (f"{where_measured()['processor']} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{where_measured()['threads']} threads, torch {torch.__version__}")
    assert f"- Machine: {here} (ran on cpu)." in (ctx.out / "REPORT.md").read_text()
    plan_record = {"processor": "old", "threads": 2, "torch": "1.0"}
    other = {"machine": {"processor": "AMD EPYC", "threads": 16, "torch": "2.13.0"}}
    assert machine_text(plan_record, {"a": other, "b": other, "c": {}}) == \
        "AMD EPYC, 16 threads, torch 2.13.0 (2 steps); old, 2 threads, torch 1.0 (1 step)"
    assert machine_text(plan_record, {"c": {}}, torch_version=False) == "old, 2 threads"  # steps that predate it
    assert machine_text(plan_record, {}) == "old, 2 threads, torch 1.0"
    wide = {"machine": {"processor": "AMD EPYC", "cpu_capability": "AVX512", "threads": 2, "torch": "2.13.0"}}
    assert machine_text(plan_record, {"a": wide, "b": other}) == \
        "AMD EPYC (AVX512), 2 threads, torch 2.13.0 (1 step); AMD EPYC, 16 threads, torch 2.13.0 (1 step)"


def test_claims_table_escapes_pipes_and_states_reasons():
    rows = claims_table([("study", Claim("a | b", "paper", reason="no data"))])
    assert "a \\| b" in rows[2] and "not measured (no data)" in rows[2]


def test_a_second_command_into_one_plan_or_study_is_refused(data, tmp_path):
    """Each would rewrite the plan's state (or the study's summary) without the other's steps."""
    from pdnn.experiments.study import StudySpec, run_study
    from pdnn.io import RunError, writer_lock

    ctx = Context(tmp_path / "out", "tiny", roots=[str(data)])
    with writer_lock(ctx.work, "reproduce into"):  # as a first command holds it
        with pytest.raises(RunError, match=r"cannot reproduce into .*tiny: another command"):
            reproduce.run_plan(ctx, progress=False, log=io.StringIO())
    with writer_lock(tmp_path / "study", "run a study in"):
        with pytest.raises(RunError, match=r"cannot run a study in .*study: another command"):
            run_study(tmp_path / "study", StudySpec(dataset="demo", model="mlp", width=8), progress=False)
        assert [p.name for p in (tmp_path / "study").iterdir()] == [".writing"]  # nothing written


def test_a_damaged_plan_record_is_named_by_every_reader(data, tmp_path, capsys):
    """Each was an AttributeError, KeyError or TypeError traceback, from --dry-run too."""
    (tmp_path / "small").mkdir()
    for text in ("[]", "null", '{"done": []}', '{"done": {"x": 5}}', '{"done": {"x": {}}}',
                 '{"done": {"x": {"wall_s": "x"}}}', '{"done": {"x": {"wall_s": 1, "rate": "r"}}}'):
        (tmp_path / "small" / STATE).write_text(text)
        assert main(["reproduce", "--scale", "small", "--out", str(tmp_path), "--data-dir", str(data), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert f"{STATE} is not a plan's record" in err and "delete it to start the record anew" in err, text
    (tmp_path / "small" / STATE).write_text('{"done": {')  # not JSON: it was named without the remedy (R175)
    assert main(["reproduce", "--scale", "small", "--out", str(tmp_path), "--data-dir", str(data), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{STATE} is not valid JSON" in err and "delete it to start the record anew" in err


def test_dry_run_refuses_what_the_run_would(data, tmp_path, capsys):
    """It planned, and exited 0, into an --out that is a file or a record of another scale; and
    it wrote its SCALE/ folder into a run directory."""
    (tmp_path / "file").write_text("")
    (tmp_path / "out" / "small").mkdir(parents=True)
    (tmp_path / "out" / "small" / STATE).write_text('{"scale": "tiny", "done": {}}')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")  # (a run directory: its REPORT.md would go among its files)
    for out, said in ((tmp_path / "file", "file is a file where a folder is expected"),
                      (tmp_path / "out", "belongs to scale 'tiny', not 'small'"),
                      (tmp_path / "run", "run is a run directory; a reproduce plan goes into a folder of its own")):
        assert main(["reproduce", "--scale", "small", "--out", str(out), "--data-dir", str(data), "--dry-run"]) == 2
        assert said in capsys.readouterr().err


def test_dry_run_shows_the_plan_then_refuses_an_out_it_could_not_write(data, tmp_path, capsys, monkeypatch):
    """It planned, and exited 0, into a folder the run then failed to write (a read-only mount, or
    another user's folder); the plan is still shown, as a finished plan there is worth reading
    (R214). Tests run as root, for whom only a read-only mount refuses a write, so the permission
    is what ``os.access`` is made to say."""
    locked = tmp_path / "locked"
    (locked / "small").mkdir(parents=True)
    real_access = os.access
    deep = locked / "new" / "deeper"  # (made in locked)
    for refused, out, named in (([locked], locked, locked), ([locked], deep, locked),
                                ([locked / "small"], locked, locked / "small"), ([locked / "small"], deep, None),
                                ([locked / "small", locked], locked, locked)):  # (OUT named first, whatever the order)
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) not in refused and real_access(path, mode))
        rc = main(["reproduce", "--scale", "small", "--out", str(out), "--data-dir", str(data), "--dry-run"])
        said = capsys.readouterr()
        assert "steps, " in said.out and rc == (0 if named is None else 2)
        assert named is None or said.err.strip().endswith(
            f"error: {named} is not writable here: the run writes its steps under {out / 'small'} and its report "
            f"to {out / 'REPORT.md'}")
    assert main(["reproduce", "--scale", "small", "--out", str(tmp_path / "free"), "--data-dir", str(data),
                 "--dry-run"]) == 0
    assert sorted(p.name for p in locked.iterdir()) == ["small"] and not (tmp_path / "free").exists()


def test_an_out_that_is_a_link_to_nothing_is_named_as_such_by_the_dry_run_and_the_run(data, tmp_path, capsys):
    """The dry run planned into it and the run said "file exists" (R214 D4); a link that loops is
    said to loop (R216 D2), and a relative target is shown from the link's folder."""
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "relative").symlink_to("nowhere")
    (tmp_path / "links" / "loop").symlink_to("loop")
    cases = ((tmp_path / "out", f"{tmp_path / 'out'} is a link to {tmp_path / 'nowhere'}, which does not exist"),
             (tmp_path / "links" / "relative",
              f"{tmp_path / 'links' / 'relative'} is a link to {tmp_path / 'links' / 'nowhere'}, which does not exist"),
             (tmp_path / "links" / "loop", f"{tmp_path / 'links' / 'loop'} is a link that loops (to "
                                           f"{tmp_path / 'links' / 'loop'})"))
    for out, said in cases:
        for dry in (["--dry-run"], ["--quiet"]):
            assert main(["reproduce", "--scale", "tiny", "--out", str(out / "deeper"), "--data-dir", str(data),
                         *dry]) == 2
            assert capsys.readouterr().err.strip().endswith(f"error: {said}")
        assert main(["train", "--dataset", "demo", "--subset", "64", "--epochs", "1", "--quiet", "--out",
                     str(out)]) == 2
        assert capsys.readouterr().err.strip().endswith(f"error: {said}")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "links" / "nowhere").exists()


def test_a_record_damaged_by_hand_gives_a_section_that_names_it_not_a_traceback(tmp_path):
    """A study record replaced by another command's JSON (``{"units": "J"}`` where the low-bit
    headline's memory levels were): the report is still written, and says what it could not read."""
    ctx = Context(tmp_path, "tiny")
    studies = [study for study in STUDIES if study.NAME == "lowbit"]

    class Damaged:
        NAME, TITLE = "damaged", "A study whose record was replaced"

        @staticmethod
        def section(ctx):
            return {"units": "J"}["dram"]

    class ZeroLuts(Damaged):
        TITLE = "A study whose unit has 0 LUTs"

        @staticmethod
        def section(ctx):
            return 1 / 0  # (a ratio of LUTs over a count set to 0 by hand)

    class Replaced(Damaged):
        TITLE = "A study whose summary holds another command's JSON"

        @staticmethod
        def section(ctx):
            write_json(ctx.out / "fine.json", {"claims": 1})
            write_json(ctx.out / "replaced.json", {"units": "J"})
            return read_json(ctx.out / "fine.json")["claims"] + read_json(ctx.out / "replaced.json")["dram"]

    report = write_report(ctx, [*studies, Damaged, ZeroLuts, Replaced], {"done": {}})
    text = report.read_text()
    assert ("Restore the damaged file (one of those read, in order: `fine.json`, `replaced.json`), or delete it"
            in text)  # (it named no file: which of the study's records to restore was left to guess)
    assert "(ZeroDivisionError: division by zero)" in text
    assert "**Not built**: its records could not be read (KeyError: 'dram')" in text
    assert "| every claim of this study | – | – |" in text and "not measured (its records could not be read" in text


def test_reference_rates_names_a_file_that_is_no_plan_record_without_advising_to_delete_it(tmp_path):
    import subprocess
    import sys

    summary = tmp_path / "summary.json"
    summary.write_text('{"runs": {}}')  # a study's summary, given by mistake
    script = Path(__file__).resolve().parents[1] / "scripts" / "reference_rates.py"
    done = subprocess.run([sys.executable, str(script), str(summary)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{summary} is not a plan's record" in done.stderr and "delete it" not in done.stderr
    assert summary.read_text() == '{"runs": {}}'


def test_an_interrupt_while_the_page_is_made_leaves_both_reports_as_they_were(tmp_path, monkeypatch):
    """REPORT.md was written before the figures were read into REPORT.html: an interrupt there
    left the page one run older than the report beside it."""
    from pdnn.experiments import report as report_module

    ctx = Context(tmp_path, "small")
    (tmp_path / "REPORT.md").write_text("the last report\n")
    (tmp_path / "REPORT.html").write_text("its page\n")

    def interrupted(text, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "to_html", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(ctx, [], {"scale": "small", "done": {}})
    assert (tmp_path / "REPORT.md").read_text() == "the last report\n"
    assert (tmp_path / "REPORT.html").read_text() == "its page\n"
    monkeypatch.undo()
    write_report(ctx, [], {"scale": "small", "done": {}})
    assert "<html>" in (tmp_path / "REPORT.html").read_text() and (tmp_path / "REPORT.md").read_text() != "the last report\n"
