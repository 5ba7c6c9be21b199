"""``pdnn eval``: accuracy versus samples for a run directory."""
from __future__ import annotations

from ..checks import AGGREGATIONS
from ..evaluate import format_table, parse_samples
from ..io import write_json
from ..runs import evaluate_run
from ..train import default_device
from .common import add_data_options, add_device_option


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy vs number of samples T for a run",
                       description="Accuracy mean and std over independent sampling repeats for each T; "
                                   "writes RUN_DIR/eval-<aggregate>.json.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--samples", default="1,2,5,10,20,50", help="comma-separated T values (default: 1,2,5,10,20,50)")
    p.add_argument("--repeats", type=int, default=3, help="independent sampling repeats per T (default: 3)")
    p.add_argument("--aggregate", choices=AGGREGATIONS, default="network",
                   help="network: p-DNN (average outputs); layer: random bit-stream baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also copy the result JSON to FILE")
    add_data_options(p)
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    document = evaluate_run(args.run_dir, parse_samples(args.samples), args.repeats, args.aggregate, args.seed,
                            roots=args.data_dir, subset=args.subset, device=args.device or default_device(),
                            progress=not args.quiet)
    print(f"{args.run_dir}  ({document['dataset']} test, {document['examples']} examples, "
          f"{document['aggregate']} aggregation)")
    print(format_table(document))
    if args.json:
        write_json(args.json, document)
    return 0
