"""``pdnn demo``: the quick end-to-end demo on embedded data (no download)."""
from __future__ import annotations

from ..experiments.demo import run_demo
from .common import named_path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train -> eval -> plot a small p-DNN on embedded data (13 s on 2 idle CPU cores)",
                       description="Train a p-bit MLP (s = 4) and its float tanh baseline on the embedded "
                                   "Fashion-MNIST subset, print accuracy versus T and plot it. 13 s on 2 idle "
                                   "CPU cores, a few seconds more the first time (it compiles the p-bit kernel); "
                                   "longer when other jobs share them. Rerunning reuses finished work.")
    p.add_argument("--out", type=named_path, default="runs/demo", metavar="DIR",
                   help="where the runs and figure go (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of each network (default: 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    run_demo(args.out, args.epochs, progress=not args.quiet)
    return 0
