"""How a pdnn command, or a script of scripts/, ends when Ctrl-C or SIGTERM stops it: with one line
saying so, not a traceback. The line's claim that no file was left half-written holds because pdnn
writes every file through :mod:`pdnn.io`, whose files are whole or absent."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn


class Terminated(BaseException):
    """SIGTERM (a batch system's time limit, ``kill``, ``timeout``), raised where Python next runs
    so that the command ends as Ctrl-C ends it: with a line saying what was kept. Not an
    ``Exception``, as ``KeyboardInterrupt`` is not, so that no ``except Exception`` swallows it."""


def raise_terminated(signum, frame) -> NoReturn:
    """The SIGTERM handler that raises :class:`Terminated`."""
    raise Terminated


def say_interrupted(who: str, err: KeyboardInterrupt | Terminated, hint: str | None = None) -> int:
    """Print the line that ends ``who`` (``pdnn train``, ``adaptive_study.py``) stopped by ``err``,
    with ``hint`` on what to do next; returns the exit status a shell gives such a stop."""
    how = "interrupted" if isinstance(err, KeyboardInterrupt) else "stopped by SIGTERM"
    print(f"{who}: {how}; no file was left half-written{'; ' + hint if hint else ''}", file=sys.stderr)
    return 130 if isinstance(err, KeyboardInterrupt) else 128 + signal.SIGTERM


def run_script(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main`` and exit with its status; Ctrl-C or SIGTERM ends it as it ends a
    pdnn command. The files it had finished stay as they were."""
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        status = main()
    except (KeyboardInterrupt, Terminated) as err:
        status = say_interrupted(Path(sys.argv[0]).name, err)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(status)
