"""``pdnn fid``: Fréchet distance of a generator run's images against held-out real images."""
from __future__ import annotations

from ..checks import positive_int
from ..devices import resolve_device
from ..io import write_json
from ..runs import fid_run
from .common import (SEED_OPTION, add_data_options, add_device_option, kept_result, named_path, options_named,
                     output_file, samples_option, writable_run)


def add_parser(sub) -> None:
    p = sub.add_parser("fid", help="Fréchet distance of generated against real images, per T",
                       description="Generated images (each the mean of T decoder samples) against the first N "
                                   "test images, in the features of a classifier run (reported as fid-clf) or of "
                                   "Inception-v3 (fid). Writes RUN_DIR/<metric>.json.")
    p.add_argument("run_dir", type=named_path, metavar="RUN_DIR")
    p.add_argument("--samples", default="1,2,5,10,20,50",
                   help="comma-separated T values (default: 1,2,5,10,20,50; a deterministic decoder: T=1 only)")
    p.add_argument("--n", type=int, help="generated and real images per distance (default: 2000 with --classifier; "
                                         "10000 with --inception-weights, whose 2048 features need more than 2048)")
    p.add_argument("--repeats", type=int, default=3, help="independent generations per T (default: 3)")
    features = p.add_mutually_exclusive_group(required=True)
    features.add_argument("--classifier", metavar="CLF_RUN",
                          help="deterministic classifier run on the same dataset: its penultimate features (fid-clf)")
    features.add_argument("--inception-weights", metavar="FILE",
                          help="the FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth): fid")
    p.add_argument("--seed", type=int, default=0,
                   help="fixes the latents and the decoder's draws, with --n and --samples (default: 0); torch's CPU "
                        "generator reads its low 32 bits, so seeds 2**32 apart draw alike")
    p.add_argument("--json", metavar="FILE", help="also copy the result JSON to FILE")
    add_data_options(p)
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args) -> int:
    samples = samples_option(args.samples)
    output_file("--json", args.json, "json")
    writable_run(args.run_dir, "fid-clf.json" if args.classifier else "fid.json")
    device = resolve_device(args.device)
    if args.n is None:
        args.n = 2000 if args.classifier else 10000
    positive_int("--repeats", args.repeats, most=None)  # (named as the option)
    with options_named({**SEED_OPTION, "repeats": "--repeats"}):  # (a huge --repeats, which the check above allows)
        document, unwritten = kept_result(lambda: fid_run(
            args.run_dir, args.classifier, args.inception_weights, samples, args.n, args.repeats, args.seed,
            args.data_dir, args.subset, device, progress=not args.quiet))
    if args.json:
        write_json(args.json, document)
    print(f"{args.run_dir}  {document['metric']} ({document['features']}; n={args.n}, {args.repeats} repeats)")
    print(f"{'T':>5}  {document['metric']:>10}  {'std':>8}")
    for row in document["results"]:
        std = f"{row['std']:.3f}" if row["repeats"] > 1 else "-"  # one repeat has no spread
        print(f"{row['samples']:>5}  {row['mean']:>10.3f}  {std:>8}")
    if unwritten:
        raise unwritten
    return 0
