"""The pieces of ``pdnn reproduce``: a plan of steps, claims with verdicts, report sections.

Every study of pdnn is a module of :mod:`pdnn.experiments.studies` with a ``NAME``, a ``TITLE``,
``steps(ctx)`` (the work, as :class:`Step` s) and ``section(ctx)`` (what the finished work shows,
as a :class:`Section` holding :class:`Claim` s). A step is small -- one training run, one
evaluation, one synthesis -- so that an interrupted plan loses at most one step's work, and it is
idempotent: it finishes what an interrupted attempt started (training resumes from its checkpoint)
and does nothing when its result is already there. ``section`` only reads files: a result that is
missing gives a claim that is *not measured*, with the reason, never a guess.
"""
from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..data import DatasetNotFound, data_roots
from ..data.catalog import find
from ..errors import UsageError
from ..io import RunError, read_eval, read_json
from ..runs import CONFIG

SCALES = ("tiny", "small", "full")
STATE = "plan-state.json"  # under OUT/<scale>/: the finished steps, their wall time and work
VERDICTS = ("holds", "does not hold", "not measured")
REFERENCE_RATES = Path(__file__).with_name("reference-rates.json")
MIN_STEP_S = 0.5  # the least a step takes: loading what it reads, writing its record


def read_plan_state(path: Path) -> dict:
    """A plan's ``STATE`` file, checked as far as the plan reads it: an object whose ``done`` maps
    each finished step to its record, with a number ``wall_s`` (and, for a step with a rate, a
    number ``work``); anything else is a :class:`RunError` that says how to start the record
    anew (the steps' results stay, and the plan finds and reuses them)."""
    anew = ("delete it to start the record anew: the steps' results stay and are reused (and are recorded with "
            "the seconds it took to find them, not to make them)")
    try:
        state = read_json(path)
    except RunError as err:  # (not JSON: the same remedy)
        raise RunError(f"{err}; {anew}") from None
    done = state.get("done") if isinstance(state, dict) else None
    number = (int, float)
    broken = not isinstance(done, dict) or any(
        not isinstance(entry, dict) or not isinstance(entry.get("wall_s"), number)
        or entry.get("rate") and not isinstance(entry.get("work"), number) for entry in done.values())
    if broken:
        raise RunError(f"{path} is not a plan's record (expected {{'done': {{step: {{'wall_s': seconds, ...}}}}}}); "
                       f"{anew}")
    return state


@dataclass(frozen=True)
class Step:
    """One unit of work: ``run()`` does it (and must be safe to call again after an interruption).

    ``estimate_s`` is its expected wall time (see :meth:`Context.estimate`); ``needs`` names the
    datasets (``data:NAME``) or programs (``tool:NAME``) it cannot run without -- a step whose
    need is missing is skipped with the reason, not failed. ``rate`` and ``work`` (optional) say
    what its time is proportional to -- e.g. ``"train/cnn-16/s4"`` and epochs x examples -- so the
    time it takes teaches the plan the rate of every other step of that kind, at any scale.
    """

    key: str
    estimate_s: float
    run: Callable[[], object]
    needs: tuple[str, ...] = ()
    rate: str = ""
    work: float = 0.0


@dataclass
class Claim:
    """One claim, the paper's figure for it, ours, the rule that decides, and the verdict."""

    claim: str
    paper: str
    ours: str = "–"
    rule: str = ""
    verdict: str = "not measured"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: expected one of {VERDICTS}")

    @classmethod
    def decide(cls, claim: str, paper: str, ours: str, rule: str, holds: bool, reason: str = "") -> "Claim":
        return cls(claim, paper, ours, rule, "holds" if holds else "does not hold", reason)


@dataclass(frozen=True)
class Figure:
    """A PNG and its caption, which states the schedule and data it shows (the report adds the
    machine and the study's wall time), and the plan step that draws it (named if it is missing)."""

    path: Path
    caption: str
    step: str


@dataclass
class Section:
    """A study's part of the report: its claims, its figures and its text (Markdown whose links
    are relative to the report's folder)."""

    title: str
    claims: list[Claim] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    text: str = ""


@dataclass
class Context:
    """Where a plan writes, at which scale, and how it finds data and runs models."""

    out: Path  # the report's folder; the work goes under out/<scale>/
    scale: str
    roots: list[str] | None = None
    device: str = "cpu"
    skipped: dict[str, str] = field(default_factory=dict)  # step key -> why it did not run
    done: set[str] = field(default_factory=set)  # the steps the plan's record holds as finished
    failed: dict[str, str] = field(default_factory=dict)  # step key -> the error it raised
    _rates: dict[str, float] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise UsageError(f"scale {self.scale!r}: expected one of {', '.join(SCALES)}")
        self.out = Path(self.out)
        if (self.out / CONFIG).is_file():  # (its REPORT.md and SCALE/ would go among the run's files)
            raise UsageError(f"{self.out} is a run directory; a reproduce plan goes into a folder of its own")

    @property
    def work(self) -> Path:
        return self.out / self.scale

    def dir(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def missing(self, need: str) -> str | None:
        """Why ``need`` (``data:NAME`` or ``tool:NAME``) is not available here, or None."""
        kind, _, name = need.partition(":")
        if kind == "data":
            roots = data_roots(self.roots)
            try:
                find(name, roots)
            except DatasetNotFound:  # its message lists every folder tried: one line says where, for the report
                return (f"dataset {name!r} not found under {', '.join(map(str, roots)) or 'no data root'}; pass "
                        f"--data-dir ROOT or set PDNN_DATA (`pdnn train --dataset {name}` says how to get it)")
            return None
        if kind == "tool":
            return None if shutil.which(name) else f"{name} is not installed"
        raise ValueError(f"need {need!r}: expected data:NAME or tool:NAME")

    def measured_rates(self) -> dict[str, float]:
        """Seconds per unit of work of every rate measured by a finished step in this report's
        folder, at any scale, on this plan's type of device (see :func:`rates_of`): a GPU's rates
        would make a CPU plan look far shorter than it is, and a CPU's a GPU plan longer."""
        return rates_of(self.out.glob(f"*/{STATE}"), device_type(self.device))

    def rated(self, step: Step) -> bool:
        """Whether ``step`` is timed at a measured rate, this folder's or the reference machine's,
        rather than at its study's own figure (see :meth:`estimate`)."""
        return bool(step.rate) and step.rate in self._known_rates()

    def _known_rates(self) -> dict[str, float]:
        if self._rates is None:
            self._rates = {**reference_rates(), **self.measured_rates()}
        return self._rates

    def estimate(self, rate: str, work: float, reference: float, overhead: float = 2.0) -> float:
        """Expected seconds of ``work`` units: at the rate measured here if any step of that kind
        has finished (see :meth:`measured_rates`), else at the rate the committed small-scale
        report measured on the reference machine (2 CPU cores; :func:`reference_rates`) -- both
        include the steps' fixed costs, and no step is estimated below ``MIN_STEP_S`` -- else
        ``overhead`` plus ``reference`` seconds per unit, the study's own figure for a kind that
        report does not run."""
        rates = self._known_rates()
        if rate in rates:  # no step takes less than its start-up, whatever its work
            return max(work * rates[rate], MIN_STEP_S)
        return overhead + work * reference

    def link(self, path: Path, text: str, step: str) -> str:
        """A Markdown link to ``path``, a file under the report's folder written by ``step``, or,
        if it is gone, a note naming it and why (:meth:`why_missing`), as a missing figure gets:
        the report linked a deleted README."""
        rel = Path(path).relative_to(self.out).as_posix()
        return f"[{text}]({rel})" if Path(path).is_file() else f"*Missing `{rel}`: {self.why_missing(step)}.*"

    def why_missing(self, prefix: str, finished: bool = True) -> str:
        """The reason recorded for the first skipped step under ``prefix`` (for 'not measured'),
        or, with ``finished``, the finished steps under it whose result has gone missing since
        (a caller that looks under a wider prefix when told 'not run yet' passes False first)."""
        for key, reason in self.skipped.items():
            if key.startswith(prefix):
                return reason
        steps = sorted(key for key in self.done if key.startswith(prefix)) if finished else []
        if steps:
            return (f"a result is missing, though {STATE} records {', '.join(steps)} as done: remove "
                    f"{'that entry' if len(steps) == 1 else 'those entries'} from it to run again")
        return "not run yet"

    def why_unreadable(self, path: Path, step: str, read: Callable[[Path], object] = read_json) -> str | None:
        """Why ``path``, the result of ``step``, cannot be ``read`` now, or None if it can: the
        reason a step of the same run (``step``'s prefix: its training too) was skipped or failed,
        else the finished ``step`` whose result is gone or damaged -- the step to run again, not a
        step that reads it."""
        if path.is_file():
            try:
                read(path)
                return None
            except RunError as err:
                return f"{err}: delete it, and remove {step} from {STATE}, to run again"
        reason = self.why_missing(step.rsplit("/", 1)[0] + "/", finished=False)
        return reason if reason != "not run yet" else self.why_missing(step)

    def why_run_missing(self, run: Path) -> str | None:
        """Why the run folder ``run`` (``<study>/<group>/runs/<name>`` under the scale's folder) has
        no readable ``eval-network.json``, made by the step ``<study>/<group>/<name>/eval``, or None
        (see :meth:`why_unreadable`)."""
        study, group, _, name = run.relative_to(self.work).parts
        return self.why_unreadable(run / "eval-network.json", f"{study}/{group}/{name}/eval", read_eval)


def device_type(device: str) -> str:
    """The type of a device as a plan's record names it: ``cuda`` for ``cuda:0, NVIDIA H200``."""
    return device.split(",")[0].split(":")[0].strip()


def device_noun(device: str) -> str:
    """What a plan runs on, in words: ``CPU`` for ``cpu``, ``GPU`` for ``cuda:1``."""
    kind = device_type(device)
    return {"cpu": "CPU", "cuda": "GPU"}.get(kind, kind)


def rates_of(states: Iterable[Path], device: str | None = None) -> dict[str, float]:
    """Seconds per unit of work of every rate in the plan records ``states``: the wall time over
    the work of that kind's finished steps, taken from the record with the most work of the kind
    (small runs say more about a full run than tiny ones, whose time is mostly start-up). With
    ``device`` (a type: ``cpu``, ``cuda``), steps recorded on another type are left out; a step
    whose record names no device counts for every type."""
    best: dict[str, tuple[float, float]] = {}
    for state in states:
        totals: dict[str, list[float]] = {}
        for entry in read_plan_state(state)["done"].values():
            elsewhere = device is not None and device_type(str(entry.get("device") or device)) != device
            if entry.get("rate") and entry.get("work", 0) > 0 and not elsewhere:
                total = totals.setdefault(entry["rate"], [0.0, 0.0])
                total[0] += entry["wall_s"]
                total[1] += entry["work"]
        for rate, (wall, work) in totals.items():
            if work > best.get(rate, (0.0, 0.0))[1]:
                best[rate] = (wall / work, work)
    return {rate: value for rate, (value, _) in best.items()}


@functools.cache
def reference_rates() -> dict[str, float]:
    """The rates of the committed small-scale report (``results/small``), as packaged in
    ``REFERENCE_RATES`` by ``scripts/reference_rates.py``: the estimates of a fresh folder."""
    return dict(json.loads(REFERENCE_RATES.read_text())["rates"])


def not_measured(claim: str, paper: str, reason: str, rule: str = "") -> Claim:
    return Claim(claim, paper, rule=rule, reason=reason)


def pct(fraction: float, digits: int = 2) -> str:
    return f"{100 * fraction:.{digits}f}%"
