"""Which weights an evaluation measured, so that a figure is never silently older than its run.

An evaluation records its run's checkpoint as ``"weights": {"checkpoint", "epoch", "sha256"}`` in
``eval-*.json`` (and, for a converted run, ``"conversion"``: the sha256 of its conversion spec, as
every conversion of one source keeps the same checkpoint). Commands that read evaluations
(``plot``, ``tradeoff``, ``study``) compare the record with the checkpoint (and conversion) now on
disk and warn, naming the run, when it has changed since -- after ``train --resume``, say, the old
curve would otherwise be plotted as the new one.
Evaluations written before the record existed are *unknown*: said once per command, never an
error, and still read as before.

What the weights do not say is which code measured them: a number can change when the code
does (a new random stream draws other bits from the same seed). So evaluations and every epoch
of a training history also record ``"code": {"pdnn", "commit", "modified"}`` (:func:`code_record`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import warnings
from pathlib import Path
from typing import Iterable

import torch

from . import __version__
from .io import CHECKPOINT, CONFIG, RunError, load_checkpoint, read_json

WEIGHTS = "weights"  # the key of the record in an eval-*.json document
CODE = "code"  # the key of the code record in an evaluation and in each epoch of metrics.json
PACKAGE = Path(__file__).resolve().parent


def _git(directory: Path, *args: str) -> str | None:
    """``git -C directory args``'s output, ``None`` where git is missing or fails."""
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def describe_code(package: Path) -> dict:
    """The commit that holds the source in ``package`` and whether that source differs from it
    (uncommitted or untracked files), or ``None`` for both when it is not a file git tracks
    there: an installed copy, even one that lies inside some other repository."""
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return {"commit": None, "modified": None}
    status = _git(package, "status", "--porcelain", "--", ".")
    return {"commit": _git(package, "rev-parse", "HEAD"), "modified": None if status is None else status != ""}


@functools.cache
def code_record() -> dict:
    """Which pdnn is running: its version and, from a git checkout, the commit and whether the
    package's source differs from it. Asked of git once per process."""
    return {"pdnn": __version__, **describe_code(PACKAGE)}


def file_sha256(path: str | Path) -> str:
    """The sha256 of the file at ``path``, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(state: dict) -> str:
    """The sha256 of a ``state_dict``'s names, dtypes, shapes and values, in hex: what identifies
    weights, where a checkpoint file's sha256 also covers its training record (the epochs'
    timings differ between two identical trainings)."""
    digest = hashlib.sha256()
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):  # a module's extra state
            digest.update(f"{name}|{value!r}|".encode())
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_sha256(run_dir: str | Path) -> str | None:
    """The sha256 of ``run_dir``'s checkpoint file, ``None`` if it has none."""
    path = Path(run_dir) / CHECKPOINT
    return file_sha256(path) if path.is_file() else None


def weights_record(run_dir: str | Path) -> dict | None:
    """What an evaluation of ``run_dir`` stores about the weights it measures (``None``: no
    checkpoint). ``epoch`` is ``None`` for a checkpoint that keeps none (a converted run)."""
    sha256 = checkpoint_sha256(run_dir)
    if sha256 is None:
        return None
    epoch = load_checkpoint(Path(run_dir) / CHECKPOINT).get("epoch")
    conversion = conversion_sha256(run_dir)
    return {"checkpoint": CHECKPOINT, "epoch": epoch, "sha256": sha256,
            **({} if conversion is None else {"conversion": conversion})}


def conversion_sha256(run_dir: str | Path) -> str | None:
    """The sha256 of a converted run's conversion spec (``"convert"`` in its ``config.json``),
    ``None`` for a run that is not converted (or has no readable config). Every conversion of one
    source keeps the source's weights, byte for byte: only the spec tells them apart."""
    try:
        config = read_json(Path(run_dir) / CONFIG)
    except (RunError, OSError):
        return None
    spec = config.get("convert") if isinstance(config, dict) else None
    return None if spec is None else hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def stale_reason(run_dir: str | Path, name: str, document: dict, now: str | None = None) -> str | None:
    """Why the evaluation ``document`` (file ``name``) no longer describes ``run_dir``'s weights,
    or ``None`` when it matches them or cannot be checked (no record, or no checkpoint).
    ``now``: the checkpoint's sha256, if already known."""
    record = document.get(WEIGHTS) if isinstance(document, dict) else None
    if isinstance(record, dict) and record.get("conversion") not in (None, conversion_sha256(run_dir)):
        return f"{run_dir}: {name} measured another conversion than {CONFIG} now names (the run was converted " \
               f"again since); rerun {remeasure(run_dir, name, document)}"
    now = now or checkpoint_sha256(run_dir)
    if not isinstance(record, dict) or now is None or record.get("sha256") == now:
        return None
    measured = f"epoch {record['epoch']}" if record.get("epoch") is not None else "earlier weights"
    try:
        current = load_checkpoint(Path(run_dir) / CHECKPOINT).get("epoch")
    except RunError as err:  # (the evaluation itself is intact: what it measured is still shown)
        return f"{run_dir}: {name} measured {measured}, but {CHECKPOINT} has changed since, and {err}"
    holds = ("" if current is None else f" (it now holds other weights of epoch {current})"
             if current == record.get("epoch") else f" (it now holds epoch {current})")
    return f"{run_dir}: {name} measured {measured}, but {CHECKPOINT} has changed since{holds}; rerun " \
           f"{remeasure(run_dir, name, document)}"


def remeasure(run_dir: str | Path, name: str, document: dict) -> str:
    """The command that measures ``run_dir`` as its evaluation file ``name`` (``document``) did:
    ``pdnn eval`` with the aggregation (the file it writes), the T values, repeats, examples and
    seed it recorded, or ``pdnn fid`` with the features the distance was measured in."""
    if not name.startswith("fid"):
        recorded = document if isinstance(document, dict) else {}
        results = [r for r in recorded.get("results", ()) if isinstance(r, dict)]
        samples = [r.get("samples") for r in results]
        repeats = {r.get("repeats") for r in results}
        options = [f"--aggregate {recorded['aggregate']}" if recorded.get("aggregate") not in (None, "network") else "",
                   f"--samples {','.join(map(str, samples))}" if samples and all(type(t) is int for t in samples) else "",
                   f"--repeats {repeats.pop()}" if len(repeats) == 1 and type(next(iter(repeats))) is int else "",
                   f"--subset {subset}" if type(subset := recorded.get("subset", recorded.get("examples"))) is int
                   else "",  # (the subset asked, None for the whole split; older files record only examples)
                   f"--seed {recorded['seed']}" if type(recorded.get("seed")) is int and recorded["seed"] else ""]
        return f"`pdnn eval {' '.join([str(run_dir), *filter(None, options)])}`"
    source = document.get("feature_source")
    option = "--inception-weights" if name == "fid.json" else "--classifier"
    return f"`pdnn fid {run_dir} {option} {source if isinstance(source, str) else option[2:].upper()}`"


def warn_if_stale(evaluations: Iterable[tuple[str | Path, str, dict]]) -> None:
    """Warn for each ``(run_dir, file name, document)`` whose run has changed since it was
    evaluated, and once for all whose record is missing while the run has a checkpoint."""
    unknown, hashes = {}, {}  # one hash per run, however many evaluations it has
    for run_dir, name, document in evaluations:
        if str(run_dir) not in hashes:
            hashes[str(run_dir)] = checkpoint_sha256(run_dir)
        reason = stale_reason(run_dir, name, document, hashes[str(run_dir)])
        if reason:
            warnings.warn(reason, stacklevel=2)
        elif isinstance(document, dict) and WEIGHTS not in document and hashes[str(run_dir)] is not None:
            unknown.setdefault("fid" if name.startswith("fid") else "eval", []).append(str(run_dir))
    for command, runs in unknown.items():
        warnings.warn(f"{', '.join(dict.fromkeys(runs))}: the {'distance' if command == 'fid' else 'evaluation'} does "
                      "not record which weights it measured (written by an earlier pdnn), so whether it matches the "
                      f"checkpoint is unknown; `pdnn {command}` records it", stacklevel=2)
