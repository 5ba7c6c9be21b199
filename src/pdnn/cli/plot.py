"""``pdnn plot``: accuracy versus samples for one or more runs."""
from __future__ import annotations

from ..checks import AGGREGATIONS
from ..plots import plot_accuracy_vs_samples
from .common import named_path, output_file


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="plot accuracy vs T for evaluated runs",
                       description="p-DNN runs as curves (log T axis), deterministic runs as horizontal lines.")
    p.add_argument("run_dirs", type=named_path, nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", type=named_path, required=True, metavar="FIG.png",
                   help="the figure to write (its suffix names the format)")
    p.add_argument("--aggregate", choices=AGGREGATIONS, default="network",
                   help="which evaluation to plot, eval-<aggregate>.json (default: network)")
    p.add_argument("--title", help="the figure's title, \"\" for none "
                                   "(default: \"accuracy vs samples (AGGREGATE aggregation)\")")
    p.set_defaults(run=run)


def run(args) -> int:
    output_file("--out", args.out, "figure")
    print(plot_accuracy_vs_samples(args.run_dirs, args.out, args.aggregate, args.title))
    return 0
