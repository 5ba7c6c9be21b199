"""The ``pdnn`` command: parse arguments, call the library, print, return an exit code.

Each sub-command lives in its own module with ``add_parser(subparsers)``, which registers the
command and sets ``run`` (a function of the parsed arguments returning an exit code).
Expected failures (bad values, missing files or data) print one line naming the problem and
exit with status 2; nothing is written over an existing result in that case.
"""
from __future__ import annotations

import argparse
import sys

from ..malloc import keep_large_buffers
from ..runs import RunError

# command modules, in the order ``pdnn --help`` lists them
_COMMANDS = ("demo", "train", "evaluate", "plot", "study", "convert", "energy", "hw")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="pdnn",
        description="Probabilistic deep neural networks: train, sample, evaluate, account energy.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_large_buffers()
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, RunError, FileNotFoundError, OSError) as err:
        print(f"pdnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pdnn {args.command}: interrupted; finished work is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
