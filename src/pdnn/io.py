"""Run-directory I/O: the files the tool writes and reads back, atomic writes of JSON,
checkpoints and figures, and :class:`RunError`, the error of a missing or damaged file.

A run directory holds

* ``config.json``  -- everything needed to rebuild the model (``model``: a ``ModelConfig``),
  plus how it was trained (``train``), on what (``data``) and, for converted runs, how it was
  made stochastic (``convert``);
* ``checkpoint.pt`` -- ``{"model": state_dict, ...training state}``;
* ``metrics.json`` -- per-epoch training history;
* ``eval-*.json``  -- accuracy versus samples, one file per evaluation setting.
* ``adaptive.json``, ``calibration.json``, ``fid-clf.json``, ``fid.json`` -- what ``eval --adaptive``,
  ``convert --calibrate`` and ``fid`` measured, which reports and studies read back.

:func:`pdnn.runs.load_model` rebuilds a run's model from them.

Every write goes to a temporary file in the destination's directory, is flushed to disk and then
moved over the destination with ``os.replace``, so an interrupted command (or a reader in another
process) sees either the old file or the whole new one, never half of one. The new file gets the
permissions the user's umask gives any new file (``0o666 & ~umask``, usually 0644), not the
0600 of the temporary file, so runs, caches and figures can be shared like the user's other files.
A temporary file is named after its writer (machine and process); one whose writer died without
removing it (``kill -9``, a lost node) is removed by the next write to the same destination from
that machine, and never one whose writer still runs.

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_json(Path(folder) / "result.json", {"accuracy": 0.9})
    ...     read_json(Path(folder) / "result.json")
    {'accuracy': 0.9}
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import glob
import json
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch

from .checks import MAX_COUNT

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "RunError", "atomic_write", "eval_files", "file_mode", "is_run_record",
           "load_checkpoint", "read_config", "read_eval", "read_json", "save_checkpoint", "save_figure", "write_json",
           "write_text"]

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"


class RunError(Exception):
    """A run directory or one of its files is missing, incomplete or corrupt."""


def file_mode() -> int:
    """The permissions a new file gets under the current umask (``0o666 & ~umask``)."""
    try:  # Linux says it without changing it
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0)  # elsewhere the only way to read it is to set it, briefly
        os.umask(umask)
    return 0o666 & ~umask


def folder_mode() -> int:
    """The permissions a new folder gets under the current umask: a file's, searchable where
    readable (``mkdtemp`` makes its folders 0700, hidden from the user's group)."""
    mode = file_mode()
    return mode | (mode & 0o444) >> 2


def _writer_head(path: Path) -> str:
    """``.<name>.<host>.``, both cut short so that a temporary name stays within the 255
    characters a file name may have, whatever the destination's length."""
    return f".{path.name[:100]}.{socket.gethostname()[:40]}."


def temporary_prefix(path: Path) -> str:
    """The name a temporary file (or folder) for ``path`` starts with: hidden, beside ``path``, and
    naming its writer, so that :func:`remove_orphans` can tell whether the writer is gone."""
    return f"{_writer_head(path)}{os.getpid()}."


def remove_orphans(path: Path, any_ending: bool = False) -> None:
    """Remove the temporaries (:func:`temporary_prefix`) of writes to ``path`` whose process has
    ended; ``any_ending``: of writes to any path of its folder whose name starts with ``path``'s
    (the entries a changed source left behind)."""
    for tmp in orphans(path, any_ending):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def orphans(path: Path, any_ending: bool = False) -> list[Path]:
    """The temporaries :func:`remove_orphans` removes. Only this machine's are judged (another
    machine's process number means nothing here), and only where a process can be asked whether
    it runs without harming it (POSIX). Containers that share a folder and a host name but not
    their process numbers would misjudge each other: a live writer whose temporary went fails its
    write, and the destination stays as it was."""
    if os.name != "posix":
        return []
    host = f".{socket.gethostname()[:40]}."  # as _writer_head spells them
    pattern = f".{glob.escape(path.name[:100])}{'*' if any_ending else ''}{glob.escape(host)}*.tmp"
    found = []
    for tmp in path.parent.glob(pattern):
        pid = tmp.name.rsplit(host, 1)[-1].split(".", 1)[0]  # (after the host: <pid>.<random>.tmp)
        if pid.isdigit() and not _running(int(pid)):
            found.append(tmp)
    return found


LOCK = ".writing"  # in a folder one command is writing (see writer_lock)


@contextlib.contextmanager
def writer_lock(folder: Path | str, action: str = "write"):
    """Hold ``folder/.writing`` (created exclusively, naming this host and process) while a
    command writes the folder, so that a second command into the same folder is refused rather
    than interleaving its files with the first's. A lock whose process has ended on this host
    (``kill -9``) is taken over; one from another host is named, for the user to judge. A folder
    the lock created and nothing was written into is removed with it, and so are the parents
    created for it."""
    folder = Path(folder)
    created = [f for f in (folder, *folder.parents) if not f.exists()]  # this folder and any parent it needs
    folder.mkdir(parents=True, exist_ok=True)
    lock, mine = folder / LOCK, f"{socket.gethostname()} {os.getpid()}"
    taken = False
    try:
        try:
            with signals_held():  # an interrupt during the claim takes effect once the lock is known taken
                _take(lock, mine, action)
                taken = True
            yield
        finally:
            if taken and lock.exists() and lock.read_text() == mine:
                lock.unlink()
    finally:
        for made in created:  # a command that failed before writing leaves no folder, nor the parents it made
            try:
                made.rmdir()  # only an empty folder goes
            except OSError:
                break


def _take(lock: Path, mine: str, action: str) -> None:
    """Claim ``lock`` for ``mine``, taking over one whose process has ended on this host."""
    folder = lock.parent
    for _ in range(2):
        if _claim(lock, mine):
            return
        try:
            host, _, pid = lock.read_text().partition(" ")
        except FileNotFoundError:  # its writer has just released it
            continue
        if os.name == "posix" and host == socket.gethostname() and pid.isdigit() and not _running(int(pid)):
            lock.unlink(missing_ok=True)  # its writer is gone
            continue
        raise RunError(f"cannot {action} {folder}: another command (process {pid or '?'} on {host or '?'}) is "
                       f"writing it; wait for it to end, or, if no such process runs, delete {lock}")
    raise RunError(f"cannot {action} {folder}: {lock} keeps appearing; another command is starting there")


def _claim(lock: Path, owner: str) -> bool:
    """Create ``lock`` holding ``owner`` in one step, or return False if it exists. The owner is
    written to a temporary file that is then linked to the lock's name, so that no lock is ever
    seen without its owner (one that was would block the folder for good), whatever stops this
    process in between; a file system without hard links gets the lock created, then written."""
    remove_orphans(lock)
    with signals_held(), _named_os_errors(lock):
        fd, tmp = tempfile.mkstemp(dir=lock.parent, prefix=temporary_prefix(lock), suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            try:
                os.link(tmp, lock)
            except FileExistsError:
                return False
            except OSError:  # no hard links here
                try:
                    with open(lock, "x") as f:
                        f.write(owner)
                except FileExistsError:
                    return False
            return True
        finally:
            os.unlink(tmp)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, for one
        return True
    return True


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then move it over ``path``.

    Creates the parent directory. On any error the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_held(), _named_os_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
        try:
            os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide the file from the user's group
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    remove_orphans(path)


@contextlib.contextmanager
def staging_folder(path: Path | str):
    """A new hidden folder beside ``path`` for files that must appear together (an export, a set
    of images), moved into place by the caller once all are written. It is removed on any error
    or interruption, and, if this process is killed, by the next write to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    with _named_os_errors(path):
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp"))
    try:
        os.chmod(staging, folder_mode())
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def signals_held():
    """Ctrl-C (SIGINT) and SIGTERM wait until the block is done, then take effect as usual.

    A file's temporary is written and moved inside such a block. An interrupt raised inside
    torch's zip writer comes out as torch's ``RuntimeError`` rather than as the interrupt (or
    aborts the process), and one between creating the temporary and cleaning it up leaves it
    behind; either way the message that nothing was left half-written would not hold."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs signal handlers, and only it may set them
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not None}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)  # to the handler it was meant for


@contextlib.contextmanager
def _named_os_errors(path: Path):
    """An ``OSError`` (a full disk, a read-only file system) raised while writing ``path``, or one
    behind another error (torch's zip writer reports a full disk as a ``RuntimeError``), raised as
    an ``OSError`` naming ``path``, the user's file, not the hidden temporary one."""
    try:
        yield
    except Exception as err:
        cause = next((e for e in (err, err.__cause__, err.__context__) if isinstance(e, OSError)), None)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err


def broken_link(path: Path) -> str | None:
    """What is wrong with the first of ``path`` and its parents that is a symbolic link to nothing
    or a link that loops, if any: making a folder there fails with "file exists", or "too many
    levels of symbolic links" further on, which name neither the link nor where it points."""
    for link in (path, *path.parents):
        if not link.is_symlink():
            continue
        try:
            os.stat(link)
        except OSError as err:
            target = link.parent / os.readlink(link)  # (a relative target is relative to the link's folder)
            if err.errno == errno.ELOOP:
                return f"{link} is a link that loops (to {target})"
            return f"{link} is a link to {target}, which does not exist"
    return None


def write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN and infinity are refused, as JSON has none)."""
    data = (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8), atomically."""
    data = text.encode("utf-8", "surrogateescape")  # a path Python read under an ASCII locale keeps its bytes
    atomic_write(path, lambda f: f.write(data))


def _not_a_file(path: Path) -> RunError:
    """The error for a file that is missing, or is a folder (a folder said to be missing misleads)."""
    return RunError(f"{path} is a folder; expected a file" if path.is_dir() else f"{path} does not exist")


_READS: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("reads", default=None)


@contextlib.contextmanager
def json_reads() -> Iterator[list[Path]]:
    """The files :func:`read_json` reads inside the block, in order: what a reader whose record
    held something else than it expected (a ``KeyError`` from the content, not the file) names."""
    reads: list[Path] = []
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


class _NotFinite(ValueError):
    """A number of a document being read that is not finite: ``NaN`` or ``Infinity``, which
    Python's json module accepts, or one beyond float's range (``1e999``), which it reads as inf."""


def _refuse_constant(name: str):
    raise _NotFinite(f"{name}, which is not JSON")


def _beyond_range(text: str) -> _NotFinite:
    return _NotFinite(f"{text if len(text) <= 40 else text[:37] + '...'}, a number beyond float's range")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _beyond_range(text)
    return value


def _float_sized_int(text: str) -> int:
    """An integer a float can hold the size of: a longer one (a damaged digit string) overflowed
    where a reader took it as a number, or, past 4300 digits, failed in Python's int()."""
    if len(text.lstrip("-")) > 309:
        raise _beyond_range(text)
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise _beyond_range(text) from None
    return value


def read_json(path: Path | str) -> Any:
    """The JSON document at ``path``; :class:`RunError` names the file if it is missing or invalid.

    ``NaN`` and ``Infinity`` are not JSON, and :func:`write_json` never writes them, nor a number
    that overflows to infinity: in a record they are damage, which a reader took for a number and
    turned into a verdict."""
    path = Path(path)
    if (reads := _READS.get()) is not None and path not in reads:
        reads.append(path)
    if not path.is_file():
        raise _not_a_file(path)
    try:
        return json.loads(path.read_text(), parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_float_sized_int)
    except _NotFinite as err:
        raise RunError(f"{path} holds {err}: pdnn never writes one (a damaged or hand-edited file)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} is not valid JSON ({err})") from err
    except RecursionError:
        raise RunError(f"{path} is nested too deeply to be read as JSON") from None


def save_checkpoint(path: Path | str, state: dict) -> None:
    """``torch.save(state)`` to ``path``, atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def checkpoint_mismatch(path: Path | str, err: Exception) -> RunError:
    """A one-line :class:`RunError` for a checkpoint that ``load_state_dict`` refused: torch lists
    every missing key and size on a line of its own; the first two say what happened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return RunError(f"{path} does not match {CONFIG}: {' '.join(lines[:2])}{more}")


def load_checkpoint(path: Path | str, map_location="cpu") -> dict:
    """A checkpoint written by :func:`save_checkpoint`: a dict with at least ``"model"``."""
    path = Path(path)
    if not path.is_file():
        raise _not_a_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        said = str(err).split(". ")[0] or type(err).__name__  # (miniz's first sentence; then a paragraph)
        raise RunError(f"{path} is not a readable checkpoint: damaged, cut short, or not one torch.save wrote "
                       f"({said})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise RunError(f"{path} holds no model state")
    return state


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, imported when a figure is first drawn:
    the import takes about half a second, which commands that draw nothing should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path | str, dpi: int = 120) -> Path:
    """Write the matplotlib figure ``fig`` to ``out`` atomically and close it. The format follows
    the suffix (PNG when matplotlib does not know it). Returns ``out`` as a ``Path``."""
    plt = pyplot()

    out = Path(out)
    suffix = out.suffix.lstrip(".").lower()
    fmt = suffix if suffix in fig.canvas.get_supported_filetypes() else "png"
    try:
        atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    finally:
        plt.close(fig)
    return out


def read_config(run_dir: Path | str) -> dict:
    """A run's ``config.json``, which must have a ``model`` section."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file; expected a run directory (one holding {CONFIG})")
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not (run_dir / CONFIG).exists() and any((run_dir / "runs").glob(f"*/{CONFIG}")):  # (a study's, given whole)
        raise RunError(f"{run_dir} holds no {CONFIG}: it is a folder of runs, under {run_dir / 'runs'}; give those "
                       f"(e.g. {run_dir / 'runs' / '*'})")
    config = read_json(run_dir / CONFIG)
    if not isinstance(config, dict):
        text = json.dumps(config)
        raise RunError(f"{run_dir / CONFIG} holds {text if len(text) <= 60 else text[:57] + '...'}; expected a run's "
                       "configuration (a JSON object with a 'model' section)")
    if "model" not in config:
        raise RunError(f"{run_dir / CONFIG} has no 'model' section")
    for section in ("model", "data", "train"):  # (data and train are optional: a converted or exported run)
        if section in config and not isinstance(config[section], dict):
            raise RunError(f"{run_dir / CONFIG}: its '{section}' section is {config[section]!r}; expected an object")
    return config


def config_dataset(config: dict) -> str | None:
    """The dataset a run's config records, ``None`` if it records none."""
    data = config.get("data")
    return data.get("dataset") if isinstance(data, dict) else None


def run_dataset(run_dir: Path | str, config: dict) -> str:
    """The dataset the run ``run_dir`` (its ``config``) was trained on, for a command that reads
    its data; a :class:`RunError` naming the file if the config records none."""
    dataset = config_dataset(config)
    if not isinstance(dataset, str):
        raise RunError(f"{Path(run_dir) / CONFIG} records no dataset ('data': {{'dataset': ...}}), which this "
                       "command reads the run's test images from")
    return dataset


_RECORDS = (CONFIG, CHECKPOINT, METRICS, "adaptive.json", "calibration.json", "fid-clf.json", "fid.json")
ENERGY_FILES = ("energy.json", "energy.png")  # what `pdnn energy RUN_DIR` writes into the run by default


def measurements(run_dir: Path | str) -> list[Path]:
    """The files in ``run_dir`` that commands measured on its model: evaluations, adaptive,
    calibration and FID records, and ``pdnn energy``'s default outputs. Replacing the model
    (``pdnn convert --force``) must remove them all, or they would be read as the new model's."""
    names = (set(_RECORDS) - {CONFIG, CHECKPOINT, METRICS}) | set(ENERGY_FILES)
    return sorted(path for path in Path(run_dir).iterdir() if path.is_file() and
                  (path.name in names or (path.name.startswith("eval-") and path.suffix == ".json")))


def is_run_record(path: Path | str) -> bool:
    """Whether ``path`` is one of the files above in a run directory (one that holds a
    ``config.json``), ``pdnn energy``'s defaults among them: what a command's extra output
    (``--json``, ``--png``) must never replace (``pdnn energy RUN_DIR`` writes those by default)."""
    path = Path(path)
    own = path.name in (*_RECORDS, *ENERGY_FILES) or (path.name.startswith("eval-") and path.suffix == ".json")
    return own and (path.parent / CONFIG).is_file()


# what studies (spec, summary), hardware exports (spec), reproduce plans (plan-state), the
# adaptive study (adaptive, draws), the hardware study (toggles, accuracy, gate-parts, synth-*,
# cosim-*), the low-bit study (headline) and the ablation (gap) keep beside their runs
FOLDER_RECORDS = ("spec.json", "summary.json", "plan-state.json", "adaptive.json", "draws.json", "toggles.json",
                  "accuracy.json", "gate-parts.json", "headline.json", "gap.json")
FOLDER_RECORD_PREFIXES = ("synth-", "cosim-")


def is_folder_record(path: Path | str) -> bool:
    """Whether ``path`` is an existing record of a study, export or plan (by its name): what a
    command's extra output must not replace either (the record may have cost hours)."""
    path = Path(path)
    named = path.name in FOLDER_RECORDS or (path.name.startswith(FOLDER_RECORD_PREFIXES) and path.suffix == ".json")
    return named and path.is_file()


def result_rows(document, path: Path | str) -> list:
    """The non-empty ``results`` list of a result file's ``document`` (an evaluation, a distance),
    else a :class:`RunError` naming ``path`` (an empty list is named as such, not as missing)."""
    rows = document.get("results") if isinstance(document, dict) else None
    if not isinstance(rows, list) or not rows:
        raise RunError(f"{path} has {'an empty' if rows == [] else 'no'} 'results' list")
    return rows


def read_eval(path: Path | str) -> dict:
    """An ``eval-*.json`` document, checked as far as readers use it: a non-empty ``results``
    list of rows with an integer ``samples`` in [1, 2**63 - 1] (what an evaluation takes; a plot's
    log axis fails on larger integers), an ``accuracy_mean`` in [0, 1] and, if given,
    a finite ``accuracy_std`` >= 0 and an integer ``repeats`` >= 1, each ``samples`` once, and if
    given an integer ``examples`` >= 1 and a boolean ``deterministic``; anything else is a
    :class:`RunError` naming the file. Its rows are returned in order of T, as ``pdnn eval`` writes
    them (a curve drawn through a file written otherwise went back and forth)."""
    document = read_json(path)
    rows = result_rows(document, path)
    examples = document.get("examples", 1)
    if not (_is_int(examples) and examples >= 1):
        raise RunError(f"{path}: 'examples' must be the number of test examples, an integer >= 1, got {examples!r}")
    if not isinstance(deterministic := document.get("deterministic", False), bool):  # ("no" read as true)
        raise RunError(f"{path}: 'deterministic' must be true or false, got {json.dumps(deterministic)}")
    for row in rows:
        samples = row.get("samples") if isinstance(row, dict) else None
        mean = row.get("accuracy_mean") if isinstance(row, dict) else None
        std = row.get("accuracy_std", 0.0) if isinstance(row, dict) else None
        repeats = row.get("repeats", 1) if isinstance(row, dict) else None
        if not (_is_int(samples) and 1 <= samples <= MAX_COUNT and _is_real(mean) and 0 <= mean <= 1
                and _is_real(std) and std >= 0 and _is_int(repeats) and repeats >= 1):
            raise RunError(f"{path}: each result needs an integer 'samples' in [1, 2**63 - 1], an 'accuracy_mean' "
                           f"in [0, 1], a finite 'accuracy_std' >= 0 and an integer 'repeats' >= 1, got {row!r}")
    seen = [row["samples"] for row in rows]
    if twice := sorted({t for t in seen if seen.count(t) > 1}):  # (which of two accuracies would a curve take?)
        raise RunError(f"{path} lists T = {', '.join(map(str, twice))} more than once; an evaluation measures each "
                       "T once")
    return {**document, "results": sorted(rows, key=lambda row: row["samples"])}


def is_epoch_history(metrics, keys: tuple[str, ...] = ()) -> bool:
    """Whether ``metrics`` is a run's history: a list of one record per epoch (``epoch`` 1, 2,
    ...), each holding ``keys`` (what ``metrics.json`` and a checkpoint's ``metrics`` hold)."""
    return isinstance(metrics, list) and all(isinstance(m, dict) and m.get("epoch") == i + 1
                                             and all(k in m for k in keys) for i, m in enumerate(metrics))


def read_metrics(path: Path | str, keys: tuple[str, ...] = ()) -> list[dict]:
    """A run's ``metrics.json``, checked as far as readers use it (:func:`is_epoch_history`);
    anything else is a :class:`RunError` naming the file."""
    metrics = read_json(path)
    if not is_epoch_history(metrics, keys):
        raise RunError(f"{path} is not a run's metrics: expected a list of one record per epoch 1, 2, ... "
                       f"with {', '.join(('epoch', *keys))}")
    return metrics


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def eval_files(run_dir: Path | str) -> list[Path]:
    """A run's evaluation documents (``eval-*.json``), sorted by name."""
    return sorted(Path(run_dir).glob("eval-*.json"))
