"""The report of ``pdnn reproduce``: ``REPORT.md`` and a self-contained ``REPORT.html``.

The Markdown is written first, from the studies' sections; the HTML is the same text converted
by the ``markdown`` library with every figure inlined as a data URI, so the page can be mailed
or archived as one file. Both are rewritten whole (atomically) on every run of the plan.
"""
from __future__ import annotations

import base64
import html
import re
from collections import Counter
from pathlib import Path

import markdown

from ..devices import processor_text
from ..io import RunError, json_reads, read_json, write_text
from ..provenance import CODE
from .plan import SCALES, STATE, Claim, Context, Section

PAPER = ('"Improving deep neural network performance through sampling" '
         "([arXiv 2507.07763](https://arxiv.org/abs/2507.07763))")
SCALE_TEXT = {
    "tiny": "**tiny**: a few hundred examples and one epoch per run. It checks that the plan runs end "
            "to end; its numbers say nothing about the paper.",
    "small": "**small**: reduced schedules chosen to fit in 2 hours on 2 CPU cores (each study states "
             "its own). Their numbers are evidence at that budget, not the paper's schedule.",
    "full": "**full**: the paper's schedules (long training on full datasets), meant for a GPU.",
}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_table(rows: list[tuple[str, Claim]]) -> list[str]:
    lines = ["| # | study | claim | paper | ours | rule | verdict |", "|---:|---|---|---|---|---|---|"]
    for i, (study, c) in enumerate(rows, 1):
        verdict = {"holds": "**holds**", "does not hold": "**does not hold**"}.get(c.verdict, "not measured")
        if c.reason:
            verdict += f" ({c.reason})"
        lines.append(f"| {i} | {_cell(study)} | {_cell(c.claim)} | {_cell(c.paper)} | {_cell(c.ours)} | "
                     f"{_cell(c.rule)} | {_cell(verdict)} |")
    return lines


def code_lines(done: dict) -> list[str]:
    """The report's line on which code ran its steps (none before steps recorded it)."""
    counts = Counter(_code_text(v[CODE]) for v in done.values() if CODE in v)
    if not counts:
        return []
    parts = [f"{text} ({n} step{'s' * (n != 1)})" for text, n in counts.most_common()]
    if (unrecorded := len(done) - sum(counts.values())):
        parts.append(f"not recorded ({unrecorded} step{'s' * (unrecorded != 1)} run by an earlier pdnn)")
    return [f"- Code: {'; '.join(parts)}."]


def data_lines(folder: Path) -> list[str]:
    """The report's line on which copy of each dataset the evaluations under ``folder`` read: a
    JPEG copy of CIFAR-10 scores slightly differently from the canonical batches, so it is said
    next to the numbers (an evaluation that cannot be read is the claims' business, not this line's)."""
    sources: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("eval-*.json")):
        try:
            document = read_json(path)
        except RunError:
            continue
        if isinstance(document, dict) and isinstance(document.get("dataset"), str) \
                and isinstance(document.get("data_source"), str):
            sources.setdefault(document["dataset"], set()).add(document["data_source"])
    said = [f"{name} from {' and '.join(sorted(read))}" for name, read in sorted(sources.items())]
    return [f"- Data: {'; '.join(said)}."] if said else []


def _code_text(code: dict) -> str:
    commit = code.get("commit")
    where = (f" at commit {commit[:12]}" + (" with uncommitted changes" if code.get("modified") else "")
             if commit else " (not from a git checkout)")
    return f"pdnn {code.get('pdnn', '?')}{where}"


def machine_text(machine: dict, done: dict, torch_version: bool = True) -> str:
    """The processor and threads (and torch) the steps ran with, from each step's record; steps
    that predate the record are said by the plan's machine record, as they were."""
    def describe(m: dict) -> str:
        return f"{processor_text(m)}, {m.get('threads', '?')} threads" + \
            (f", torch {m.get('torch', '?')}" if torch_version else "")

    machines = Counter(describe(step.get("machine", machine)) for step in done.values()) or Counter([describe(machine)])
    if len(machines) == 1:
        return next(iter(machines))
    return "; ".join(f"{text} ({count} step{'s' * (count != 1)})" for text, count in machines.items())


def device_text(machine: dict, done: dict) -> str:
    """Where the steps ran, from each step's record; a GPU visible but unused is said. A report of
    steps that predate the record says only whether a GPU was visible, as it did."""
    devices = Counter(step.get("device", "a device not recorded") for step in done.values())
    if not devices or set(devices) == {"a device not recorded"}:
        return "CUDA" if machine.get("cuda") else "CPU only"
    text = "ran on " + "; ".join(device + (f" ({count} step{'s' * (count != 1)})" if len(devices) > 1 else "")
                                 for device, count in devices.items())
    if machine.get("cuda") and not any(device.startswith("cuda") for device in devices):
        text += "; a GPU was visible, unused"
    return text


def render(ctx: Context, studies, sections: list[Section], state: dict, full_outlook: str = "") -> str:
    done = state.get("done", {})
    wall = sum(v["wall_s"] for v in done.values())
    m = state.get("machine", {})
    rows = [(s.title, c) for s in sections for c in s.claims]
    counts = {v: sum(c.verdict == v for _, c in rows) for v in ("holds", "does not hold", "not measured")}
    lines = [
        "# pdnn reproduces the paper",
        "",
        f"Every claim of {PAPER} that pdnn can test, measured by one command:",
        "",
        "```",
        f"pdnn reproduce --scale {ctx.scale} --out {ctx.out}",
        "```",
        "",
        f"- Scale {SCALE_TEXT[ctx.scale]}",
        f"- Machine: {machine_text(m, done)} ({device_text(m, done)}). Wall time of all steps: {wall / 3600:.2f} h"
        f" ({len(done)} steps; per study below).",
        *code_lines(done),
        *data_lines(ctx.out / ctx.scale),
        f"- Verdicts: {counts['holds']} hold, {counts['does not hold']} do not hold, "
        f"{counts['not measured']} not measured. A verdict follows the stated rule, decided before the "
        "numbers; the study sections give the evidence.",
        *([f"- The paper's schedules (`--scale full`, meant for a GPU) would take {full_outlook}. "
            "On a GPU, `pdnn reproduce --scale full --out DIR --device cuda --dry-run` prints the plan; "
            "its estimate is corrected by every step that finishes there.", ""]
          if full_outlook and ctx.scale != "full" else [""]),
        "## The paper's claims",
        "",
        *claims_table(rows),
        "",
    ]
    for study, section in zip(studies, sections):
        keys = [k for k in done if k.startswith(study.NAME + "/")]
        machine_line = (f"{machine_text(m, {k: done[k] for k in keys}, torch_version=False)}, "
                        f"{device_text(m, {k: done[k] for k in keys})}.")
        study_wall = sum(done[k]["wall_s"] for k in keys)
        lines += [f"## {section.title}", "",
                  f"Folder: [`{ctx.scale}/{study.NAME}/`]({ctx.scale}/{study.NAME}/) · {len(keys)} steps, "
                  f"{study_wall / 60:.1f} min wall.", ""]
        if section.text:
            lines += [section.text.strip(), ""]
        for figure in section.figures:
            rel = Path(figure.path).relative_to(ctx.out)
            if not Path(figure.path).is_file():  # named with the step to run again, not dropped or linked
                lines += [f"*Missing figure `{rel.as_posix()}`: {ctx.why_missing(figure.step)}.*", ""]
                continue
            lines += [f"![{rel.stem}]({rel.as_posix()})", "",
                      f"*{figure.caption.rstrip('.')}. {machine_line} Study wall time {study_wall / 60:.1f} min.*", ""]
    return "\n".join(lines) + "\n"


def to_html(text: str, base: Path) -> str:
    """REPORT.md as one HTML page, figures inlined (a missing figure is named, not dropped)."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])

    def inline(match: re.Match) -> str:
        path = base / html.unescape(match.group(2))
        if not path.is_file():
            return f'<strong>[missing figure {html.escape(match.group(2))}]</strong>'
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img{match.group(1)}src="data:image/png;base64,{data}"{match.group(3)}>'

    body = re.sub(r'<img([^>]*?)src="([^"]+)"([^>]*)>', inline, body)  # the whole tag: no stray "/>"
    style = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:.25em .5em;"
             "vertical-align:top}img{max-width:100%}code,pre{background:#f4f4f4}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>pdnn reproduce</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def write_report(ctx: Context, studies, state: dict, full_outlook: str = "") -> Path:
    sections = [_section(study, ctx) for study in studies]
    text = render(ctx, studies, sections, state, full_outlook)
    path = ctx.out / f"{report_name(ctx)}.md"
    html = to_html(text, ctx.out)  # first: an interrupt while it reads the figures leaves both files as they were
    write_text(path, text)
    write_text(path.with_suffix(".html"), html)
    return path


def report_name(ctx: Context) -> str:
    """``REPORT``, unless ``OUT`` holds the plan of a larger scale (tiny < small < full): then
    ``REPORT-<scale>``, so that checking the plan at ``tiny`` in a folder of ``small`` results
    does not replace their report (it did)."""
    larger = SCALES[SCALES.index(ctx.scale) + 1:]
    return f"REPORT-{ctx.scale}" if any((ctx.out / scale / STATE).exists() for scale in larger) else "REPORT"


def _section(study, ctx: Context) -> Section:
    """The study's section, or one that says its records could not be read (a file damaged or
    replaced by hand): the report is still rewritten, and names the damage instead of a verdict."""
    try:
        with json_reads() as reads:
            return study.section(ctx)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, ArithmeticError, RunError, OSError) as err:
        reason = f"its records could not be read ({type(err).__name__}: {err})"
        damaged = "the damaged file"
        if not isinstance(err, (RunError, OSError)) and reads:  # (those name their file) the content of one
            named = ", ".join(f"`{_relative(path, ctx.out)}`" for path in reads)  # held something else
            damaged += f" (one of those read, in order: {named})"
        return Section(study.TITLE, claims=[Claim("every claim of this study", "–", reason=reason)],
                       text=f"**Not built**: {reason}. Restore {damaged}, or delete it and this study's "
                            f"steps from `{ctx.scale}/plan-state.json` to measure them again.")


def _relative(path: Path, folder: Path) -> str:
    """``path`` from ``folder`` where it lies inside it (the report's own links are), else as it is."""
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)
