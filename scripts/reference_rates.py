"""Package the rates of the committed small-scale report as the estimates of a fresh plan.

    python scripts/reference_rates.py [results/small/plan-state.json]

``pdnn reproduce`` estimates a step at the rate measured by finished steps of its kind; in a
fresh folder there are none, so it falls back to ``src/pdnn/experiments/reference-rates.json``,
which this script writes from the plan record of the committed report (made on the reference
machine, 2 CPU cores). Rerun it whenever ``results/small`` is made anew: a test compares the two.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pdnn.errors import UsageError
from pdnn.experiments.plan import REFERENCE_RATES, rates_of, read_plan_state
from pdnn.interrupts import run_script
from pdnn.io import RunError, read_json, write_text

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "src" / "pdnn" / "experiments" / REFERENCE_RATES.name  # this checkout's, whichever pdnn runs


def main(state: Path) -> None:
    machines = {json.dumps(entry.get("machine"), sort_keys=True) for entry in read_plan_state(state)["done"].values()}
    document = {"from": os.path.relpath(state.resolve(), ROOT),
                "machines": [json.loads(m) for m in sorted(machines)],
                "rates": dict(sorted(rates_of([state], "cpu").items()))}
    write_text(PACKAGED, json.dumps(document, indent=1) + "\n")
    print(f"{PACKAGED}: {len(document['rates'])} rates from {state}")


def command_line() -> None:
    """The command line: its options checked, then the work, its errors in one line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", nargs="?", type=Path, default=ROOT / "results" / "small" / "plan-state.json",
                        help="the plan record to take the rates from (default: results/small/plan-state.json)")
    args = parser.parse_args()
    try:
        record = read_json(args.state)
        if not (isinstance(record, dict) and isinstance(record.get("done"), dict)):  # another file given by mistake
            parser.error(f"{args.state} is not a plan's record (the plan-state.json of `pdnn reproduce`)")
        main(args.state)
    except (UsageError, RunError, OSError) as err:  # a mistyped path, in one line
        parser.error(str(err))


if __name__ == "__main__":
    run_script(command_line)
