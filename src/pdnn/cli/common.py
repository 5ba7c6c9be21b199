"""Options shared by several commands."""
from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UsageError
from ..evaluate import parse_samples
from ..io import is_folder_record, is_run_record
from ..labels import checked_label
from ..runs import UnwrittenResult


def file_in_the_way(folder: Path) -> Path | None:
    """The file standing where ``folder`` or one of its parents should be a folder, if any."""
    return next((q for q in (folder, *folder.parents) if q.is_file()), None)


def existing_folder(text: str) -> str:
    """A ``--data-dir`` that exists: a mistyped one would otherwise be passed over silently for
    the next root that holds the dataset."""
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return text


def named_path(text: str) -> str:
    """A path that names something: an empty one is the current folder (an ``--out`` written into
    unasked, a run read as "config.json does not exist"), and a message would name it as nothing."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text


def label_text(text: str) -> str:
    """A ``--label``: a name to show in plots and tables (:func:`pdnn.labels.checked_label`)."""
    try:
        return checked_label(text)
    except UsageError:
        raise argparse.ArgumentTypeError("expected a name, got an empty one") from None


def example_count(text: str) -> int:
    """A ``--subset``: how many examples, at least one. Checked as the option is read, so that the
    error names the option, not the library's argument (``subset ... or None``)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (leave it out for every example), got {count}")
    return count


# a training setting's name in the library's checks, and the option that sets it
TRAINING_OPTIONS = {"lr": "--lr", "batch_size": "--batch-size", "epochs": "--epochs", "weight_decay": "--weight-decay",
                    "monitor_examples": "--monitor-examples", "seed": "--seed", "width": "--width",
                    "weight bits": "--weight-bits", "beta": "--beta", "latent": "--latent"}
SEED_OPTION = {"seed": "--seed"}


def samples_option(text: str, **checked) -> list[int]:
    """``--samples`` as a sorted list of T (:func:`pdnn.evaluate.parse_samples`), its errors
    naming the option as its siblings' do (the library calls the value ``samples``)."""
    with options_named({"samples (T)": "--samples", "samples": "--samples"}):
        return parse_samples(text, **checked)


@contextmanager
def options_named(options: dict[str, str]) -> Iterator[None]:
    """A library check's error about a value typed on the command line names the option typed
    (``lr must be ...`` becomes ``--lr must be ...``, and ``samples lists ...`` ``--samples lists
    ...``): only where every value checked inside is one the user typed, never a run's recorded
    setting."""
    try:
        yield
    except UsageError as err:
        text = str(err)
        field = next((f for f in options if text.startswith((f + " must ", f + " lists "))), None)
        if field is None:
            raise
        raise UsageError(options[field] + text[len(field):]) from None


def add_data_options(parser: argparse.ArgumentParser,
                     subset_help: str = "use only the first N examples of each split, in the loader's order "
                                        "(a class-folder copy takes the classes in turn; README, Data) (default: "
                                        "all; an N beyond a split's size takes all of it)") -> None:
    parser.add_argument("--data-dir", action="append", metavar="ROOT", type=existing_folder,
                        help="a root holding datasets in their conventional folders (repeatable; "
                             "searched before $PDNN_DATA and the default roots)")
    parser.add_argument("--subset", type=example_count, metavar="N", help=subset_help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")


def output_file(option: str, path: str | None, kind: str) -> Path | None:
    """``path`` given to ``option`` as a file to write of ``kind`` (``"json"`` or ``"figure"``),
    checked before any work: its suffix names the format, and it is not a directory, a run's own
    record (``checkpoint.pt``, ``config.json``, ...) nor an existing record of a study, export or
    plan (``summary.json``, ``spec.json``, ...), which a copy of a result must not replace."""
    if path is None:
        return None
    out = Path(path)
    suffixes = [".json"] if kind == "json" else _figure_suffixes()
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: expected a file ending in {', '.join(suffixes)}")
    if out.is_dir():
        raise UsageError(f"{option} {path} is a directory; expected a file")
    if (blocking := file_in_the_way(out.parent)) is not None:  # said before any work, not after it
        raise UsageError(f"{option} {path}: {blocking} is a file where a folder is expected")
    if is_run_record(out):
        raise UsageError(f"{option} {path} is the record {out.name} of the run in {out.parent}; choose another file")
    if is_folder_record(out):
        raise UsageError(f"{option} {path} exists, and {out.name} is the name of a record that studies, exports and "
                         "plans keep; choose another file")
    folder = next(f for f in (out.parent.absolute(), *out.parent.absolute().parents) if f.exists())
    if not os.access(folder, os.W_OK | os.X_OK):  # found now, not after the command's own results are written
        raise UsageError(f"{option} {path}: cannot write into {folder} (read-only, or not yours)")
    return out


def writable_run(run_dir: str, name: str) -> None:
    """Check, before any work, that the run ``run_dir`` (if it exists: reading it says what is
    missing) takes the file ``name`` a command writes into it, by writing a temporary file as the
    atomic write will: a read-only or immutable folder (which ``os.access`` passes for root) had
    been found only after the whole evaluation, whose result was then lost."""
    if not Path(run_dir).is_dir():
        return
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise UsageError(f"{run_dir}: cannot write {name} into this run ({err.strerror or err}); evaluate a copy of "
                         "the run in a folder you can write") from None


def kept_result(measure: Callable[[], dict]) -> tuple[dict, UnwrittenResult | None]:
    """The result of ``measure`` (a measurement of a run, which writes its file into the run), and
    the failure to write it there, if any: the command prints and copies a result its run did not
    take, then reports that failure (:func:`writable_run` finds most such runs before the work)."""
    try:
        return measure(), None
    except UnwrittenResult as unwritten:
        return unwritten.document, unwritten


def _figure_suffixes() -> list[str]:
    """matplotlib's formats, but PGF where the TeX program it runs is not installed (its failure
    named that missing program as if the output file were missing)."""
    import shutil

    import matplotlib
    from matplotlib.backend_bases import FigureCanvasBase

    latex = shutil.which(matplotlib.rcParams["pgf.texsystem"]) is not None
    return [f".{suffix}" for suffix in FigureCanvasBase.get_supported_filetypes() if suffix != "pgf" or latex]
