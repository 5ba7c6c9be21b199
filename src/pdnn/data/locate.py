"""Where datasets are looked for, and the error that says where they were not found.

Roots, in order: the ``--data-dir`` values, then the ``:``-separated ``$PDNN_DATA``, then the
default roots (``/usr/share/datasets`` is where Debian's ``dataset-*`` packages install). All are
searched, so a ``--data-dir`` takes precedence over ``$PDNN_DATA`` without hiding a dataset that
only ``$PDNN_DATA`` (or the system) has. Under a root every
dataset lives in its conventional folder (``fashion-mnist/``, ``mnist/``,
``cifar-10-batches-py/``, ``cifar10-jpeg/``, ``celeba/``); the first root holding a complete copy wins.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import UsageError

DEFAULT_ROOTS = ("~/.local/share/datasets", "/usr/local/share/datasets", "/usr/share/datasets")


class DatasetNotFound(FileNotFoundError):
    """No complete copy of a dataset under any data root. The message lists every place looked
    at (and what was missing there) and how to get the data."""

    def __init__(self, name: str, looked: list[tuple[Path, str]], how_to_get: str):
        self.name, self.looked = name, looked
        places = "\n".join(f"  {path}: {why}" for path, why in looked) or "  (no data roots)"
        super().__init__(f"dataset {name!r} not found. Looked in:\n{places}\n{how_to_get}")

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno None] None"
        return self.args[0]


def data_roots(cli_dirs: list[str | Path] | str | Path | None = None) -> list[Path]:
    """The data roots to search, in order (see the module docstring); duplicates removed.

    A root given here must be a folder, and an entry of ``$PDNN_DATA`` must not be a file: a
    mistyped root would otherwise be passed over silently for the next one that holds the dataset
    (:class:`UsageError`). An entry of ``$PDNN_DATA`` that does not exist is skipped with a warning
    (one variable may serve machines that mount different folders); so are default roots, silently."""
    if isinstance(cli_dirs, (str, os.PathLike)):  # one directory, not a list of characters
        cli_dirs = [cli_dirs]
    env = [p for p in os.environ.get("PDNN_DATA", "").split(os.pathsep) if p.strip()]
    given = [*((entry, "a data root") for entry in cli_dirs or []), *((p, "an entry of $PDNN_DATA") for p in env)]
    roots: list[Path] = []
    for entry, what in [*given, *((d, "") for d in DEFAULT_ROOTS)]:
        try:
            path = Path(entry).expanduser()
        except RuntimeError:  # no home directory (a container's user without one): no ~ root
            continue
        if what and path.exists() and not path.is_dir():
            raise UsageError(f"{what}, {str(entry)!r}, is a file; expected a folder holding datasets")
        if what == "a data root" and not path.exists():
            raise UsageError(f"{what}, {str(entry)!r}, does not exist; expected a folder holding datasets")
        if what and not path.exists():
            warnings.warn(f"{what}, {str(entry)!r}, does not exist; skipped", stacklevel=2)
        # absolute, as a run records where it read its data; one folder however spelled (a link to
        # a folder is kept as named: the cache keeps a dataset's place as found)
        if os.path.realpath(path) not in {os.path.realpath(root) for root in roots}:
            roots.append(path.absolute())  # (not abspath: "link/.." is where the link's target's parent is)
    return roots


def find_variant(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (raw preferred: no gunzip)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(folder: Path, names: list[str]) -> tuple[list[Path] | None, str]:
    """The IDX files ``names`` (each raw or gzipped) in ``folder``, or ``None`` and why not."""
    if not folder.is_dir():
        return None, "no such folder"
    found = [find_variant(folder, n) for n in names]
    missing = [f"{n}[.gz]" for n, f in zip(names, found) if f is None]
    if missing:
        return None, "missing " + ", ".join(missing)
    return found, "ok"
