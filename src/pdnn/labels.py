"""How runs are named in tables and legends: their own label, unless two would share one."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from .errors import UsageError


def run_label(run_dir: Path, config: dict) -> str:
    """``config["label"]`` if set, else the directory's name as given (that of ``.`` and ``..``
    too; a link's own, not its target's)."""
    return config.get("label") or Path(os.path.abspath(run_dir)).name


def checked_label(label):
    """``label`` as given (None: none), refused unless it is a name with something to show: an
    empty or blank one showed nothing in legends, and the command pdnn suggests for retraining
    the run (``--label ' '``) was refused."""
    if label is not None and not (isinstance(label, str) and label.strip()):
        raise UsageError(f"label must be a name to show in plots and tables, or None, got {label!r}")
    return label


def series_labels(runs: Sequence[tuple[str, dict]], suffixes: Sequence[str] = ("",)) -> dict[str, str]:
    """Each run's name in tables and legends: its config's ``label``, else its folder's name;
    runs that would share a name are named by their paths instead (by their full paths if those
    clash with another's name too), so that no two runs merge into one series (in a legend, or in
    a trade-off, whose marginal costs would pair T across runs). ``suffixes``: the series a run
    gives, as its name plus each (a trade-off's ``" (layer)"``); those of two runs must differ as
    well. A run given twice is an error."""
    seen: dict[Path, str] = {}
    for run, _ in runs:
        if (where := Path(run).resolve()) in seen:
            spelt = "" if str(run) == str(seen[where]) else f" (as {seen[where]} before)"
            raise UsageError(f"{run} is given twice{spelt}; expected each run once")
        seen[where] = run
    names = {run: run_label(run, config) for run, config in runs}

    def clashing() -> list[str]:
        series = Counter(name + suffix for name in names.values() for suffix in suffixes)
        return sorted(run for run, name in names.items() if any(series[name + s] > 1 for s in suffixes))

    for rename in (str, lambda run: str(Path(run).resolve())):
        names.update({run: rename(run) for run in clashing()})
    if alike := clashing():
        raise UsageError(f"the runs {', '.join(alike)} would be named alike even by their paths (with "
                         f"{' or '.join(map(repr, suffixes))} after them); give them other labels")
    return names


def figure_text(text: str) -> str:
    """``text`` as matplotlib should draw it, literally: a ``$`` would start TeX math (a run named
    ``p$\\x$`` stopped the plot with a parse error; ``$5 at T=1, $9`` lost its dollars and spaces),
    and a legend leaves out every label that starts with ``_`` (a run named ``_baseline`` was drawn
    without a name)."""
    text = str(text).replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text
