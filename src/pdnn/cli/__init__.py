"""The ``pdnn`` command: parse arguments, call the library, print, return an exit code.

Each sub-command lives in its own module with ``add_parser(subparsers)``, which registers the
command and sets ``run`` (a function of the parsed arguments returning an exit code).
Expected failures -- a :class:`~pdnn.errors.UsageError` (bad values, names or data), a
:class:`~pdnn.runs.RunError` (a missing or damaged run), a :class:`~pdnn.errors.ToolError` (an
outside program such as a simulator failed), an ``OSError`` from the file system or memory running
out -- print one line naming the problem and exit with status 2; nothing is
written over an existing result in that case. Any other exception is a mistake in the program
and shows its traceback.
"""
from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

from .. import __version__
from ..errors import ToolError, UsageError, out_of_memory
from ..interrupts import Terminated, raise_terminated, say_interrupted
from ..io import RunError, broken_link
from ..malloc import keep_large_buffers
from . import convert, demo, energy, evaluate, fid, generate, hw, plot, reproduce, study, train
from .common import file_in_the_way

# command modules, in the order ``pdnn --help`` lists them
_COMMANDS = (demo, reproduce, train, evaluate, plot, study, convert, energy, generate, fid, hw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdnn",
        description="Probabilistic deep neural networks: train, sample, evaluate, account energy.",
    )
    parser.add_argument("--version", "-V", action="version", version=f"pdnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(sub)
    _name_command_parsers(parser)
    return parser


def _name_command_parsers(parser: argparse.ArgumentParser, depth: int = 1) -> None:
    """Make every (sub-)command's parser record ``(its name, itself)`` as ``command_parser<depth>``
    (``pdnn hw sim``: hw at depth 1, sim at 2), so that ``main`` can show the usage of the command
    an unknown argument was given to."""
    for action in parser._actions:  # (argparse lists a command's subcommands only there)
        if isinstance(action, argparse._SubParsersAction):
            for name, command_parser in action.choices.items():
                command_parser.set_defaults(**{f"command_parser{depth}": (name, command_parser)})
                _name_command_parsers(command_parser, depth + 1)


def _owner(parser: argparse.ArgumentParser, args, given: list[str], unknown: list[str]) -> argparse.ArgumentParser:
    """The parser of the innermost command named before the first unknown argument: ``pdnn
    --bogus eval`` is pdnn's error, ``pdnn eval RUN --bogus`` eval's, ``pdnn hw sim --bogus`` sim's
    (and ``pdnn hw sim DIR hw`` sim's: an unknown is sought where no command is named)."""
    chain, position, depth = [], -1, 1
    while (named := getattr(args, f"command_parser{depth}", None)) is not None:
        position = given.index(named[0], position + 1)
        chain.append((position, named[1]))
        depth += 1
    commands = {at for at, _ in chain}
    first = next((at for at, token in enumerate(given) if token == unknown[0] and at not in commands), len(given))
    return ([parser] + [command_parser for at, command_parser in chain if at < first])[-1]


def _one_line_warnings(command: str):
    """A ``warnings.formatwarning`` that prints ``pdnn <command>: warning: <message>``: the file,
    line and source line Python adds point into pdnn, which a user of the command cannot act on."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"pdnn {command}: warning: {message}\n"

    return format_warning


# what an interrupted command keeps: the commands that save their finished steps as they go
_CONTINUE = {"train": "every finished epoch was saved, and --resume continues from the last "
                      "(if none had finished, train anew)",
             "study": "its finished runs are saved; the same command continues",
             "reproduce": "its finished steps are saved; the same command continues",
             "demo": "its finished runs are saved; the same command continues",
             "convert": "a conversion stopped while writing its folder is replaced by the same command with --force"}


def _said(err: Exception) -> str:
    """The error in words: an ``OSError`` with its path first, and what a file standing where a
    folder should be means (``[Errno 20] Not a directory: 'out/pbit'`` said neither)."""
    if not isinstance(err, OSError) or err.filename is None or err.strerror is None:
        return str(err)
    said = f"{err.filename}: {err.strerror.lower()}"
    if err.errno in (errno.EEXIST, errno.ELOOP) and (link := broken_link(Path(err.filename))):
        return link
    if err.errno in (errno.EEXIST, errno.ENOTDIR) and (blocking := file_in_the_way(Path(err.filename))):
        where = f"{blocking} is a file where a folder is expected"  # (all there is to say where it is the path)
        return where if blocking == Path(err.filename) else f"{said}; {where}"
    return said


def _one_process(world_size: str) -> bool:
    """Whether ``WORLD_SIZE`` says one process, as :mod:`pdnn.train` reads it."""
    try:
        return int(world_size) == 1
    except ValueError:
        return False


def _quiet_stdout() -> None:
    """Standard output to nowhere: Python flushes it once more at exit, which a closed pipe would
    fail with a second error."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # (a stream without a descriptor: nothing is flushed to a pipe)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    given = sys.argv[1:] if argv is None else list(argv)
    args, unknown = parser.parse_known_args(given)
    if unknown:  # the usage of the command given it (argparse showed pdnn's for any)
        _owner(parser, args, given, unknown).error(f"unrecognized arguments: {' '.join(unknown)}")
    keep_large_buffers()
    command = " ".join(filter(None, (args.command, getattr(args, "hw_command", None))))  # (hw: its action too)
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warnings(command)
    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous_handler = signal.signal(signal.SIGTERM, raise_terminated) if in_main_thread else None
    try:
        if args.command != "train" and not _one_process(os.environ.get("WORLD_SIZE", "1")):
            raise UsageError(f"pdnn {command} runs in one process; under torchrun (WORLD_SIZE="
                             f"{os.environ['WORLD_SIZE']}) only `pdnn train` does, each process training its share")
        return int(args.run(args) or 0)
    except BrokenPipeError:  # the reader left (`pdnn energy ... | head`): what is not read is not wanted
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except (UsageError, RunError, ToolError, OSError) as err:
        print(f"pdnn {command}: error: {_said(err)}", file=sys.stderr)
        return 2
    except Exception as err:
        if not out_of_memory(err):
            raise
        # torch's message says where in its C++ it failed before what it asked for
        asked = re.search(r"tried to allocate [\d.]+ ?\w+", str(err), re.IGNORECASE)
        said = asked.group(0) if asked else str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"pdnn {command}: error: out of memory ({said}): the sizes or counts asked for need more "
              f"memory than this machine has", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as err:
        hint = _CONTINUE.get(args.command)
        if os.environ.get("RANK", "0") not in ("", "0"):  # a torchrun process other than 0, which writes nothing
            hint = "process 0 writes the run" if args.command == "train" else None
        return say_interrupted(f"pdnn {command}", err, hint)
    finally:
        warnings.formatwarning = previous  # the library's own callers keep Python's format
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
