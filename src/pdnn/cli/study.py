"""``pdnn study``: the accuracy-versus-samples study (baselines, k-bit, p-DNNs, s x T matrix)."""
from __future__ import annotations

from ..checks import SCHEDULES
from ..devices import resolve_device
from ..evaluate import parse_samples
from ..experiments.study import StudySpec, run_study
from ..functional import check_bits
from .common import (TRAINING_OPTIONS, add_device_option, example_count, existing_folder, named_path, options_named,
                     samples_option)


def add_parser(sub) -> None:
    p = sub.add_parser("study", help="train and evaluate the whole accuracy-vs-T study for one dataset",
                       description="Float tanh/sigmoid, k-bit quantised and p-DNNs trained with s samples, "
                                   "each p-DNN evaluated at every T; resumable; writes OUT/README.md.")
    p.add_argument("--dataset", default="cifar10", help="fashion-mnist | mnist | cifar10 | demo (default: cifar10)")
    p.add_argument("--model", default="cnn", help="reference model of every run (default: cnn)")
    p.add_argument("--width", type=int, help="base width (default: the model's own)")
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature of the p-bit runs (default: 1)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of every run (default: 10)")
    p.add_argument("--subset", type=example_count, metavar="N", help="train on the first N training examples")
    p.add_argument("--eval-subset", type=int, metavar="N", help="evaluate on the first N test examples")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step (default: 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning rate over each run: constant, or cosine from --lr down to 0, set at every step "
                        "(default: constant)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every run (default: 0)")
    p.add_argument("--samples", default="1,2,5,10,20,50", help="test T values (default: 1,2,5,10,20,50)")
    p.add_argument("--train-samples", default="1,2,4,8", help="training s values (default: 1,2,4,8)")
    p.add_argument("--quant-bits", default="1,2,3,4", help="k of the k-bit baselines (default: 1,2,3,4)")
    p.add_argument("--pbit-neurons", default="pbit,pbit-unipolar",
                   help="p-bit families trained at every s: pbit, optionally pbit-unipolar "
                        "(default: pbit,pbit-unipolar)")
    p.add_argument("--repeats", type=int, default=3, help="independent sampling repeats per T (default: 3)")
    p.add_argument("--data-dir", action="append", metavar="ROOT", type=existing_folder,
                   help="a root holding datasets in their conventional folders (repeatable)")
    p.add_argument("--out", type=named_path, required=True, metavar="DIR",
                   help="where the runs and README.md go; rerun to resume")
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def spec_of(args) -> StudySpec:
    """The study the parsed command line asks for."""
    return StudySpec(dataset=args.dataset, model=args.model, width=args.width, beta=args.beta, epochs=args.epochs,
                     subset=args.subset, eval_subset=args.eval_subset, batch_size=args.batch_size, lr=args.lr,
                     schedule=args.schedule, seed=args.seed, test_samples=samples_option(args.samples),
                     train_samples=parse_samples(args.train_samples, "--train-samples"),
                     quant_bits=[check_bits(k, "--quant-bits") for k in parse_samples(args.quant_bits, "--quant-bits")],
                     pbit_neurons=args.pbit_neurons.split(","), repeats=args.repeats)


def run(args) -> int:
    spec = spec_of(args)
    # every setting run_study checks is one typed here (a kept run's are compared with them first)
    with options_named({**TRAINING_OPTIONS, "monitor_examples": "--eval-subset", "eval-subset": "--eval-subset",
                        "repeats": "--repeats"}):
        summary = run_study(args.out, spec, roots=args.data_dir, device=resolve_device(args.device),
                            progress=not args.quiet)
    for c in summary["claims"]:
        print(f"{'holds' if c['holds'] else 'does not hold':>14}: {c['claim']} ({c['ours']})")
    print(f"{args.out}/README.md")
    return 0
