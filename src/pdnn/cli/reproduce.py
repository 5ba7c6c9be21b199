"""``pdnn reproduce``: every study as one resumable plan, and REPORT.md with a verdict per claim."""
from __future__ import annotations

from ..devices import resolve_device
from ..errors import UsageError
from ..experiments.plan import SCALES, Context
from ..experiments.reproduce import describe_plan, run_plan, unwritable
from .common import add_device_option, existing_folder, named_path


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run every study of the paper and write one report of its claims",
                       description="Runs every study pdnn has as one resumable plan (a finished step is never "
                                   "repeated; an interrupted one continues) and writes OUT/REPORT.md and a "
                                   "self-contained OUT/REPORT.html: one row per claim of the paper with its "
                                   "verdict, then one section per study (OUT/REPORT-SCALE.md and .html where OUT "
                                   "holds the plan of a larger scale). The work goes under OUT/SCALE/.")
    p.add_argument("--scale", choices=SCALES, default="small",
                   help="tiny: minutes, a check of the plan; small: reduced schedules, within 2 h on 2 CPU "
                        "cores; full: the paper's schedules, for a GPU (default: small)")
    p.add_argument("--out", type=named_path, required=True, metavar="DIR",
                   help="where REPORT.md, REPORT.html and SCALE/ go; rerun to resume")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time; run nothing")
    p.add_argument("--data-dir", action="append", metavar="ROOT", type=existing_folder,
                   help="a root holding datasets in their conventional folders (repeatable; searched before "
                        "$PDNN_DATA and the default roots)")
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=run)


def run(args) -> int:
    ctx = Context(args.out, args.scale, roots=args.data_dir, device=resolve_device(args.device))
    if args.dry_run:
        print(describe_plan(ctx), flush=True)
        if problem := unwritable(ctx):
            raise UsageError(problem)
        return 0
    report = run_plan(ctx, progress=not args.quiet)
    print(report)
    return 1 if ctx.failed else 0
