"""Tables, figures and the claim verdicts of results/generation/ from its scored runs
(:func:`pdnn.experiments.generation_summary.main`).

Usage: python scripts/generation_summary.py [DIR]   (default results/generation)
"""
import argparse
from pathlib import Path

import torch

from pdnn.cli.common import existing_folder
from pdnn.experiments.generation_summary import BEGIN, END, main
from pdnn.interrupts import run_script
from pdnn.io import RunError


def command_line() -> None:
    """The command line: its options checked, then the work, its errors in one line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", type=existing_folder, default="results/generation",
                        help="the generation study's folder, its runs in DIR/runs (default: results/generation)")
    folder = Path(parser.parse_args().dir)
    if not (folder / "runs").is_dir() or (folder / "spec.json").is_file():  # (a study's folder has runs/ too)
        parser.error(f"{folder} is not the generation study's folder (expected runs/ and no study's spec.json)")
    if not (folder / "README.md").is_file() or not all(m in (folder / "README.md").read_text() for m in (BEGIN, END)):
        parser.error(f"{folder / 'README.md'} does not exist or lacks the {BEGIN} ... {END} markers; expected the "
                     "generation study's README")
    torch.set_num_threads(1)
    try:
        main(folder)
    except RunError as err:  # a damaged record, in one line
        parser.error(str(err))


if __name__ == "__main__":
    run_script(command_line)
