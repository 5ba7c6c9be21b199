"""``pdnn reproduce``: every study of pdnn run as one resumable plan, then one report.

The plan is the steps of every study in :data:`pdnn.experiments.studies.STUDIES`, in order. A
finished step is written to ``OUT/<scale>/plan-state.json`` with its measured wall time and is
never run again; a step that was interrupted is run again and finishes what it had started (a
training run continues from its checkpoint). A step whose data or program is missing is skipped,
with the reason, and its claims are reported as not measured. The report is rewritten from the
result files after every run of the plan, so it always describes what is on disk.

One progress line covers the whole plan. Its time left is the estimate of the remaining steps
scaled by this machine's pace so far (measured wall time over estimated time of the finished
steps), so it corrects itself as the plan runs.
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import time
import traceback
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..devices import where_measured
from ..errors import UsageError
from ..io import broken_link, write_json, writer_lock
from ..progress import progress_bar
from ..provenance import CODE, code_record
from .plan import STATE, Context, Step, device_noun, device_type, read_plan_state
from .report import report_name, write_report
from .studies import STUDIES


def plan(ctx: Context) -> list[tuple[str, Step]]:
    """(study name, step) for every step of every study, in the order they run."""
    steps = []
    for study in STUDIES:
        for step in study.steps(ctx):
            steps.append((study.NAME, step))
    keys = [step.key for _, step in steps]
    duplicated = {k for k in keys if keys.count(k) > 1}
    if duplicated:
        raise ValueError(f"step keys must be unique; repeated: {sorted(duplicated)}")
    return steps


def read_state(ctx: Context) -> dict:
    """The plan's record under ``OUT/<scale>/`` (empty if none), refused if it is another scale's."""
    path = ctx.dir(STATE)
    state = read_plan_state(path) if path.exists() else {"scale": ctx.scale, "done": {}}
    if state.get("scale", ctx.scale) != ctx.scale:
        raise UsageError(f"{path} belongs to scale {state['scale']!r}, not {ctx.scale!r}")
    return state


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def pace(steps: list[tuple[str, Step]], done: dict) -> float:
    """Measured over estimated wall time of the finished steps (1 before any has finished)."""
    estimated = sum(step.estimate_s for _, step in steps if step.key in done)
    measured = sum(done[step.key]["wall_s"] for _, step in steps if step.key in done)
    return measured / estimated if estimated > 0 and measured > 0 else 1.0


def describe_plan(ctx: Context) -> str:
    """The plan as text: every step, its estimate and whether it is done (``--dry-run``)."""
    if blocking := next((p for p in (ctx.work, *ctx.work.parents) if p.is_file()), None):
        raise UsageError(f"{blocking} is a file where a folder is expected")  # as the run itself would say
    if link := broken_link(ctx.work):
        raise UsageError(link)
    steps = plan(ctx)
    done = read_state(ctx)["done"]
    missing = _missing(ctx, [step for _, step in steps if step.key not in done])
    lines, study = [], None
    for name, step in steps:
        if name != study:
            study = name
            lines.append(f"{name}:")
        status = f"done in {_duration(done[step.key]['wall_s'])}" if step.key in done else f"~{_duration(step.estimate_s)}"
        lines.append(f"  {step.key:<52} {status:>14}" + (f"  skipped: {missing[step.key]}" if step.key in missing else ""))
    todo = [step for _, step in steps if step.key not in done and step.key not in missing]
    skipped = f", {len(missing)} skipped (what they need is missing)" if missing else ""
    lines += ["", f"{len(steps)} steps, {len(todo)} to run{skipped}: {outlook(ctx, todo)}; the report goes to "
              f"{ctx.out / report_name(ctx)}.md."]
    return "\n".join(lines)


def unwritable(ctx: Context) -> str | None:
    """Why the run could not write under ``OUT``, if it could not (``--dry-run`` says it after the
    plan: a finished plan in a folder only readable here is still worth reading)."""
    for folder in dict.fromkeys(next(p for p in (path, *path.parents) if p.exists()) for path in (ctx.out, ctx.work)):
        if not os.access(folder, os.W_OK | os.X_OK):  # the run would fail there on its first write
            return (f"{folder} is not writable here: the run writes its steps under {ctx.work} and its report to "
                    f"{ctx.out / report_name(ctx)}.md")
    return None


def _missing(ctx: Context, steps: list[Step]) -> dict[str, str]:
    """Why each of ``steps`` that cannot run here would be skipped (its data or tool is missing)."""
    reasons = {step.key: "; ".join(m for m in (ctx.missing(n) for n in step.needs) if m) for step in steps}
    return {key: reason for key, reason in reasons.items() if reason}


def outlook(ctx: Context, steps: list[Step]) -> str:
    """The expected time of ``steps`` in words, saying where its rates come from, and how much of
    it is of kinds no finished step has timed (their studies' figures are pessimistic)."""
    if not steps:
        return "nothing left to run"
    total = sum(step.estimate_s for step in steps)
    measured = ctx.measured_rates()
    known = sum(1 for step in steps if step.rate in measured)
    reference = "the rates of the reference machine (2 CPU cores" + (
        ")" if device_type(ctx.device) == "cpu" else f"; a {device_noun(ctx.device)}'s are shorter)")
    text = (f"about {_duration(total)} at {reference}" if known == 0 else
            f"about {_duration(total)}; {known} of these {len(steps)} steps are timed from finished steps of the same "
            f"kind on a {device_noun(ctx.device)} recorded under {ctx.out} (on the machines their records name), "
            f"the others at {reference}")
    guessed = [step for step in steps if step.rate and not ctx.rated(step)]
    if guessed:
        many = len(guessed) > 1
        text += (f"; {_duration(sum(step.estimate_s for step in guessed))} of it {'are' if many else 'is'} "
                 f"{len(guessed)} step{'s' * many} of kinds no finished step has timed, at their studies' own "
                 "figures (measured before the speed work, pessimistic by up to 80×)")
    return text


def run_plan(ctx: Context, progress: bool = True, log=sys.stderr) -> Path:
    """Run every step not yet done, then write ``OUT/REPORT.md`` and ``OUT/REPORT.html``
    (:func:`pdnn.experiments.report.report_name`). Returns the path of the ``.md``. A second
    command on the same ``OUT/<scale>`` is refused while one runs (:func:`pdnn.io.writer_lock`):
    each would rewrite the plan's state without the other's steps."""
    with writer_lock(ctx.work, "reproduce into"):
        return _run_plan(ctx, progress, log)


def _run_plan(ctx: Context, progress: bool, log) -> Path:
    steps = plan(ctx)
    ctx.work.mkdir(parents=True, exist_ok=True)
    state = read_state(ctx)
    done = state["done"]
    todo = [(name, step) for name, step in steps if step.key not in done]
    missing = _missing(ctx, [step for _, step in todo])
    total = sum(step.estimate_s for _, step in todo if step.key not in missing)
    bar = progress_bar(total=round(total), unit="s", enabled=progress, dynamic_ncols=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
    bar.set_description(f"reproduce {ctx.scale}")
    started = time.monotonic()
    for i, (name, step) in enumerate(todo, 1):
        bar.set_postfix_str(step.key)
        if step.key in missing:
            ctx.skipped[step.key] = missing[step.key]
            print(f"[{i}/{len(todo)}] {step.key}: skipped ({ctx.skipped[step.key]})", file=log)
            continue
        t0 = time.monotonic()
        try:
            with _quiet(bar.disable):
                step.run()
        except Exception as err:  # one broken step must not cost the rest of a long plan
            ctx.failed[step.key] = ctx.skipped[step.key] = f"failed: {type(err).__name__}: {err}"
            print(f"[{i}/{len(todo)}] {step.key}: {ctx.failed[step.key]}", file=log)
            traceback.print_exc(file=log)
            bar.update(round(step.estimate_s))
            continue
        wall = time.monotonic() - t0
        done[step.key] = {"wall_s": round(wall, 2), "estimate_s": round(step.estimate_s, 2),
                          "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), CODE: code_record(),
                          "device": device_record(ctx.device), "machine": where_measured()}
        if step.rate:
            done[step.key].update(rate=step.rate, work=step.work)
        write_json(ctx.dir(STATE), state)
        bar.update(round(step.estimate_s))
        left = sum(s.estimate_s for _, s in todo[i:] if s.key not in missing) * pace(steps, done)
        if bar.disable and progress:
            print(f"[{i}/{len(todo)}] {step.key}: {_duration(wall)}; about {_duration(left)} left", file=log)
    bar.close()
    if any(step.key in done for _, step in todo):  # a rerun that only rewrites the report keeps the record
        state["machine"] = machine()
        state["last_run_wall_s"] = round(time.monotonic() - started, 1)
        write_json(ctx.dir(STATE), state)
    ctx.done = set(done)
    # the full schedules timed on the device the steps ran on, so that a rerun elsewhere, which
    # only rewrites the report, says the same
    ran_on = Counter(device_type(str(entry.get("device") or "cpu")) for entry in done.values())
    full = Context(ctx.out, "full", roots=ctx.roots, device=max(ran_on, key=ran_on.get) if ran_on else ctx.device)
    full_outlook = f"on a {device_noun(full.device)} {outlook(full, [step for _, step in plan(full)])}"
    return write_report(ctx, STUDIES, state, full_outlook=full_outlook)


@contextlib.contextmanager
def _quiet(keep_output: bool):
    """Silence the steps' own printed lines under the plan's progress bar (on a terminal); in a
    log (no bar) they stay, since they tell a reader where the plan is. Warnings always show."""
    if keep_output:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def machine() -> dict:
    """The machine of the last run that ran a step (``cuda``: whether a GPU was visible; each
    step records the device it ran on, :func:`device_record`, and the processor, its vector
    instructions, threads and torch, :func:`pdnn.devices.where_measured`)."""
    return {**where_measured(), "cuda": torch.cuda.is_available(), "python": platform.python_version()}


def device_record(device: str) -> str:
    """The device a step runs on, with the GPU's name: ``cpu``, ``cuda, NVIDIA H200``."""
    if torch.device(device).type == "cuda":
        return f"{device}, {torch.cuda.get_device_name(device)}"
    return str(device)
