"""How long a command takes to start, against importing torch alone, in one run.

Usage: python benchmarks/bench_startup.py [--src DIR ...] [--repeats 7] [--json PATH]

Each row is a fresh interpreter, timed from launch to exit (the median of ``--repeats``; the
sources alternate within each repeat, so they share the machine's state):

* ``import torch``: the floor every command pays;
* ``import pdnn``: the library as a script imports it;
* ``pdnn --help``: the command's parser, every sub-command registered;
* ``eager sample``: ``import pdnn``, then one sample-aware loss and one ``SampledModel`` pass of a
  small p-bit MLP: what a command that trains or evaluates pays before its real work.

``--src`` names the ``src`` folders to time (default: this checkout's), so an older checkout is
timed beside this one (``git worktree add /tmp/old <commit>``, then ``--src src /tmp/old/src``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from counts import output_file, positive_count, write_json

ROWS = {
    "import torch": "import torch",
    "import pdnn": "import pdnn",
    "pdnn --help": "import sys; sys.argv = ['pdnn', '--help']; from pdnn.cli import main; main()",
    "eager sample": "import torch; from torch import nn; from pdnn import SampledModel, sample_aware_loss; "
                    "from pdnn.nn import PBit; net = nn.Sequential(nn.Linear(4, 8), PBit(), nn.Linear(8, 3)); "
                    "sample_aware_loss(net, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), samples=4)[0].backward(); "
                    "SampledModel(net.eval(), 10)(torch.randn(5, 4))",
}


def seconds(code: str, src: str) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", nargs="+", default=[str(Path(__file__).resolve().parents[1] / "src")])
    parser.add_argument("--repeats", type=positive_count, default=7)
    parser.add_argument("--json", type=output_file)
    args = parser.parse_args()
    if missing := [src for src in args.src if not (Path(src) / "pdnn" / "__init__.py").is_file()]:
        parser.error(f"--src {' '.join(missing)}: no pdnn package there (expected a checkout's src folder); the "
                     "installed pdnn would be timed under its name")
    times: dict[str, dict[str, list[float]]] = {src: {row: [] for row in ROWS} for src in args.src}
    for _ in range(args.repeats):
        for row, code in ROWS.items():
            for src in args.src:
                times[src][row].append(seconds(code, src))
    result = {"python": sys.version.split()[0], "repeats": args.repeats, "sources": {}}
    for src in args.src:
        median = {row: statistics.median(t) for row, t in times[src].items()}
        commit = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        result["sources"][src] = {"commit": commit.stdout.strip() or None, "median_s": median, "times_s": times[src]}
        print(f"{src} ({commit.stdout.strip() or 'not in git'})")
        for row, value in median.items():
            print(f"  {row:<14} {value:6.2f} s   {value / median['import torch']:5.2f} x import torch")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
