"""``pdnn convert``: make a trained deterministic run stochastic without retraining."""
from __future__ import annotations

import math
from pathlib import Path

from ..convert import (CALIBRATION, DEFAULT_SCALE, DEFAULT_VALUES, LAYER_SETS, METHODS, convert_run,
                       find_activations, format_calibration, restore_checkpoint)
from ..checks import positive_int, torch_seed
from ..devices import resolve_device
from ..errors import UsageError
from ..io import CHECKPOINT
from ..runs import load_model
from .common import add_data_options, add_device_option, example_count, label_text, named_path, samples_option


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="make a trained deterministic run stochastic (noise injection, no retraining)",
        description="Write a new run directory whose model is the source run's, weights unchanged, with "
                    "stochastic activations. `pdnn eval` and `pdnn energy` read it like any other run. "
                    "See docs/convert.md.",
        conflict_handler="resolve")  # --subset below replaces the shared one's help
    p.add_argument("run_dir", type=named_path, metavar="RUN_DIR",
                   help="a trained (deterministic) run directory; with --restore, a converted one")
    p.add_argument("--method", choices=METHODS,
                   help="pbit: tanh/sigmoid/hardtanh/quantiser -> p-bits of equal mean; dither: k-bit quantiser + "
                        "uniform noise before rounding; gaussian/logistic: noise added to pre-activations")
    p.add_argument("--scale", metavar="S",
                   help="noise scale: gaussian std, logistic scale, dither width in steps (defaults: "
                        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_SCALE.items())
                        + "); per layer as NAME=S,NAME=S,*=S")
    p.add_argument("--beta", metavar="B",
                   help="pbit inverse temperature (default 1: equal mean); per layer as NAME=B,...")
    p.add_argument("--layers",
                   help="hidden (default: activations followed by another weight layer), all, or comma-separated "
                        "names from --list-layers")
    p.add_argument("--list-layers", action="store_true", help="print the activations found in RUN_DIR and exit")
    p.add_argument("--restore", action="store_true",
                   help="RUN_DIR is a converted run without its checkpoint.pt: recreate it from the source run "
                        "(checked against the recorded sha256) and exit")
    p.add_argument("--calibrate", action="store_true",
                   help=f"choose the scale (beta for pbit) by a sweep on held-out training data; writes {CALIBRATION}")
    p.add_argument("--values", metavar="V,V,...",
                   help="values tried by --calibrate (defaults: "
                        + "; ".join(f"{k} {','.join(f'{v:g}' for v in vs)}" for k, vs in DEFAULT_VALUES.items()) + ")")
    p.add_argument("--samples", help="T values measured by --calibrate (default: 1,2,5,10,20)")
    p.add_argument("--target-samples", type=int, metavar="T",
                   help="T at which --calibrate compares accuracies (default: the largest of --samples)")
    p.add_argument("--repeats", type=int, help="sampling repeats per T in --calibrate (default: 1)")
    p.add_argument("--per-layer", action="store_true",
                   help="after --calibrate's sweep, refine the value one activation at a time (coordinate-wise, "
                        "in execution order; up to layers x (values - 1) more trials); the spec gets a value per layer")
    p.add_argument("--holdout", metavar="N|FRACTION",
                   help="how many TRAINING examples --calibrate/--recalibrate-bn use: a count, or a fraction of the "
                        "examples the run was trained on (default: 0.1). They are those after the run's own "
                        "training subset, which it never saw (as many as exist, up to the count); only if there are "
                        "none, the last ones it was trained on (with a warning). The test split is never read")
    p.add_argument("--recalibrate-bn", action="store_true",
                   help="re-estimate the running statistics of BatchNorm layers behind the noise under sampling, "
                        "on the held-out training examples (weights and affine parameters do not change)")
    p.add_argument("--bn-samples", type=int, help="samples per example for --recalibrate-bn (default: 4)")
    p.add_argument("--seed", type=int, help="fixes the draws of calibration and --recalibrate-bn (default: 0)")
    p.add_argument("--label", type=label_text,
                   help="name used in plots and tables (default: '<source label> (<method>)')")
    p.add_argument("--out", type=named_path, metavar="NEW_RUN_DIR", help="run directory to create")
    p.add_argument("--force", action="store_true",
                   help="replace an existing NEW_RUN_DIR that is a converted run (or an interrupted conversion "
                        "without config.json); a trained run is never replaced")
    add_data_options(p)
    p.add_argument("--subset", type=example_count, metavar="N",
                   help="read only the first N examples of the training split (default: all of it), as --subset "
                        "does elsewhere; the held-out examples come from those after the run's own training subset")
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def parse_value(text: str | None, what: str):
    """``"0.5"`` -> 0.5; ``"3=0.2,*=0.5"`` -> ``{"3": 0.2, "*": 0.5}``; ``None`` -> ``None``."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return float(text)
        pairs = [(name.strip(), float(value))
                 for name, value in (part.split("=", 1) for part in text.split(",") if part)]
    except ValueError:
        raise UsageError(f"{what} must be a number or NAME=NUMBER,... pairs, got {text!r}") from None
    names = [name for name, _ in pairs]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise UsageError(f"{what} gives layer {', '.join(map(repr, twice))} more than one value: {text!r}")
    return dict(pairs)


def parse_holdout(text: str) -> float | int:
    """``--holdout`` as the count or fraction ``holdout_indices`` takes; a bad one named as typed
    (``0``, not the float ``0.0`` it reads as)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < 1 or (value >= 1 and value.is_integer())):  # (nan, inf: neither)
        raise UsageError(f"--holdout must be a count >= 1 or a fraction in (0, 1), got {text!r}")
    return int(value) if value >= 1 else value


def parse_layers(text: str):
    """``--layers``: a set's name or comma-separated layer names (at least one)."""
    if text in LAYER_SETS:
        return text
    if not (names := [name.strip() for name in text.split(",") if name.strip()]):
        raise UsageError(f"--layers must be {', '.join(map(repr, LAYER_SETS))} or comma-separated layer names (see "
                         f"--list-layers), got {text!r}")
    return names


def _refuse_unused(args) -> None:
    """Options of a calibration step that will not run are refused, not silently ignored (their
    values would go unchecked too)."""
    uses = {"--values": "--calibrate", "--samples": "--calibrate", "--target-samples": "--calibrate",
            "--repeats": "--calibrate", "--bn-samples": "--recalibrate-bn",
            "--holdout": "--calibrate or --recalibrate-bn", "--subset": "--calibrate or --recalibrate-bn",
            "--seed": "--calibrate or --recalibrate-bn"}
    runs = {"--calibrate": args.calibrate, "--recalibrate-bn": args.recalibrate_bn,
            "--calibrate or --recalibrate-bn": args.calibrate or args.recalibrate_bn}
    for flag, needs in uses.items():
        if getattr(args, flag[2:].replace("-", "_")) is not None and not runs[needs]:
            raise UsageError(f"{flag} is only used with {needs}")


# every option of a conversion, refused with --restore and --list-layers, which only read RUN_DIR
_CONVERSION_OPTIONS = ("method", "scale", "beta", "layers", "calibrate", "values", "samples", "target_samples",
                       "repeats", "per_layer", "holdout", "recalibrate_bn", "bn_samples", "seed", "label", "out",
                       "force", "data_dir", "subset", "device")


def _refuse_conversion_options(args) -> None:
    steps = [flag for flag in ("--restore", "--list-layers") if getattr(args, flag[2:].replace("-", "_"))]
    given = [f"--{dest.replace('_', '-')}" for dest in _CONVERSION_OPTIONS
             if getattr(args, dest) is not None and getattr(args, dest) is not False]  # (0 == False: --repeats 0)
    if len(steps) > 1 or given:
        raise UsageError(f"{steps[0]} only reads RUN_DIR and exits, so {', '.join(steps[1:] + given)} would be "
                         "ignored: convert in a command of its own")


def run(args) -> int:
    if args.restore or args.list_layers:
        _refuse_conversion_options(args)
    if args.restore:
        present = (Path(args.run_dir) / CHECKPOINT).is_file()
        path = restore_checkpoint(args.run_dir)
        print(f"{path} is there already; left as it is" if present else f"restored {path}")
        return 0
    if args.list_layers:
        model, _ = load_model(args.run_dir)
        print(f"{'name':<24} {'op':<20} {'hidden':<6} methods")
        for site in find_activations(model):
            print(f"{site['name']:<24} {site['op']:<20} {str(site['hidden']):<6} {', '.join(site['methods']) or '-'}")
        return 0
    device = resolve_device(args.device)
    if args.method is None or args.out is None:
        raise UsageError("--method and --out are required (or pass --list-layers)")
    _refuse_unused(args)
    values = None
    if args.values is not None:
        try:
            values = [float(v) for v in args.values.split(",")]
        except ValueError:
            raise UsageError(f"--values must be numbers separated by commas, got {args.values!r}") from None
    counts = {"target": ("--target-samples", args.target_samples), "repeats": ("--repeats", args.repeats),
              "bn_samples": ("--bn-samples", args.bn_samples)}
    given = {key: positive_int(flag, value) for key, (flag, value) in counts.items() if value is not None}
    given |= {key: value for key, value in (  # options not given keep convert_run's defaults
        ("samples", None if args.samples is None else samples_option(args.samples)),
        ("holdout", None if args.holdout is None else parse_holdout(args.holdout)),
        ("seed", None if args.seed is None else torch_seed("--seed", args.seed)))
        if value is not None}  # (every value is checked here, before any data is read)
    result = convert_run(
        args.run_dir, args.out, args.method,
        scale=parse_value(args.scale, "--scale"), beta=parse_value(args.beta, "--beta"),
        layers=parse_layers("hidden" if args.layers is None else args.layers), calibrate=args.calibrate, values=values,
        recalibrate_bn=args.recalibrate_bn, roots=args.data_dir, subset=args.subset, device=device,
        force=args.force, label=args.label, progress=not args.quiet, per_layer=args.per_layer, **given,
    )
    if result["calibration"] is not None:
        print(format_calibration(result["calibration"]))
    print(f"{result['out']}: {args.method} on {', '.join(result['converted'])}")
    print(f"convert: {result['spec']}")
    return 0
