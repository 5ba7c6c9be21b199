"""``pdnn energy`` (J per inference vs samples and bits) and ``pdnn tradeoff`` (accuracy vs energy)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..energy import (Reuse, Settings, energy_sweep, format_markdown, format_report, format_tradeoff, load_table,
                      model_network, parse_tolerance, plot_energy, plot_tradeoff, run_network, tradeoff_runs)
from ..checks import AGGREGATIONS, positive_int, positive_ints, shown
from ..data import describe
from ..errors import UsageError
from ..functional import check_bits
from ..energy.eo import check_bit_width, check_energy_samples
from ..energy.fid_tradeoff import fid_tradeoff_runs, format_fid_tradeoff, plot_fid_tradeoff
from ..io import ENERGY_FILES, read_config, write_json
from ..labels import run_label
from .common import named_path, output_file, samples_option
from ..models import ModelConfig, available


INPUT_BITS = 8  # --input-bits when not given: 8-bit pixels


def _add_settings_options(p, aggregate: bool = True) -> None:
    g = p.add_argument_group("technology and architecture")
    g.add_argument("--tech", metavar="FILE", help="technology table (TOML); default: the shipped 45 nm table "
                                                  "(Horowitz, ISSCC 2014)")
    g.add_argument("--memory", default="dram", metavar="LEVEL",
                   help="memory level for weights and activations: dram, dram_high, sram (= sram_8kb), sram_32kb, "
                        "sram_1mb, or a level of --tech (default: dram)")
    g.add_argument("--weight-memory", metavar="LEVEL", help="memory level for weights (overrides --memory)")
    g.add_argument("--activation-memory", metavar="LEVEL", help="memory level for activations (overrides --memory)")
    g.add_argument("--reuse", default="per-eo", metavar="MODE",
                   help="weight fetches: per-eo (the paper's formula), per-inference, or per-batch:B (default: per-eo)")
    g.add_argument("--input-bits", type=int, default=INPUT_BITS, metavar="B",
                   help="precision of the network input (default: 8, for 8-bit pixels; 32 = float)")
    g.add_argument("--no-shared-prefix", action="store_true",
                   help="the paper's formula applied literally to every layer: the deterministic prefix (by "
                        "default computed once and shared by the T samples) is priced T times")
    if aggregate:
        g.add_argument("--aggregate", choices=AGGREGATIONS, default="network",
                       help="network: p-DNN sampling; layer: random bit-stream baseline (default: network)")


def _settings(args, aggregate: str = "network") -> Settings:
    if aggregate == "layer" and args.no_shared_prefix:
        raise UsageError("--no-shared-prefix has no effect with --aggregate layer, which computes every layer once "
                         "per inference; leave it out")
    check_bit_width(args.input_bits, "--input-bits")  # (its check in the model's analysis names no option)
    tech = load_table(args.tech)
    levels = {}
    for role in ("weight", "activation"):
        own = getattr(args, f"{role}_memory")
        option = f"--{role}-memory" if own is not None else "--memory"
        levels[role] = args.memory if own is None else own  # (an empty one is checked, not taken as unset)
        tech.memory(levels[role], f"{option} ({role} memory)")  # names the option in the error
    return Settings(tech, weight_memory=levels["weight"], activation_memory=levels["activation"],
                    reuse=Reuse.parse(args.reuse), aggregate=aggregate, shared_prefix=not args.no_shared_prefix)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "energy", help="energy per inference (J) vs samples T and bit widths",
        description="Energy per inference from the paper's elementary-operation energy, per layer and per term "
                    "(weight memory, activation memory, synapse, neuron), for a run directory or an untrained "
                    "reference model, with the ratio to a 32-bit float deterministic reference and the cost of "
                    "one more sample. Deterministic networks are priced at T=1 only. By default the deterministic "
                    "prefix (the layers before the first random draw) is computed once and shared by the T "
                    "samples; --no-shared-prefix gives the paper's formula applied literally to every layer. "
                    "RUN_DIR: prints the tables and writes RUN_DIR/energy.json and RUN_DIR/energy.png (only those "
                    "two files; weights are not read), or, given --json or --png elsewhere, only what they name. "
                    "--model: prints the tables and writes JSON/PNG only where "
                    "--json/--png say. See docs/energy.md.")
    p.add_argument("run_dir", type=named_path, nargs="?", metavar="RUN_DIR",
                   help="a run directory (its config.json gives the network)")
    g = p.add_argument_group("an untrained network instead of RUN_DIR")
    g.add_argument("--model", metavar="NAME", help="reference model, e.g. cnn or mlp")
    g.add_argument("--dataset", metavar="NAME", help="dataset giving the input shape and classes (no data is read)")
    g.add_argument("--input-shape", metavar="C,H,W", help="input shape instead of --dataset")
    g.add_argument("--num-classes", type=int, metavar="K", help="classes (with --input-shape; default 10)")
    g.add_argument("--neuron", metavar="N[,N...]",
                   help="neuron type(s): pbit, tanh, sign, quant:k, ... (default: pbit)")
    g.add_argument("--weight-bits", metavar="B[,B...]", help="weight bits (1..8, or 32 for float; default: 32)")
    g.add_argument("--width", type=int, help="model width (default: the model's own)")
    p.add_argument("--samples", default="1,2,5,10", help="comma-separated T values (default: 1,2,5,10)")
    _add_settings_options(p)
    r = p.add_argument_group("reference configuration (default: the same network, 32-bit float, deterministic; "
                              "either option alone keeps the network's other setting, the first listed "
                              "network's where --neuron or --weight-bits lists several)")
    r.add_argument("--reference-neuron", metavar="N",
                   help="neuron of the reference network (e.g. tanh, quant:8; given only --reference-weight-bits: "
                        "the network's own)")
    r.add_argument("--reference-weight-bits", type=int, metavar="B",
                   help="weight bits of the reference network (given only --reference-neuron: the network's own)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE",
                   help="write the report as JSON (default for RUN_DIR: RUN_DIR/energy.json, unless --png names "
                        "another file; for --model: none)")
    o.add_argument("--png", metavar="FILE",
                   help="write stacked bars by term and by layer (default for RUN_DIR: RUN_DIR/energy.png, unless "
                        "--json names another file; for --model: none)")
    o.add_argument("--markdown", action="store_true", help="print the configuration table as Markdown")
    o.add_argument("--layers", action=argparse.BooleanOptionalAction, default=None,
                   help="print the per-layer table (default: when there is one network)")
    p.set_defaults(run=run_energy)

    t = sub.add_parser(
        "tradeoff", help="accuracy vs energy with the Pareto front",
        description="Joins each run's measured accuracies (eval-*.json) with computed energies; draws accuracy "
                    "against energy with the Pareto front and names the lowest-energy configuration within "
                    "--tolerance of the best 32-bit float deterministic accuracy (of the most accurate point, "
                    "said so, when no such run is given), with its energy gain. The runs must share one dataset; "
                    "runs without eval-*.json are skipped with a warning. Writes tradeoff.json and tradeoff.png "
                    "in the current directory unless --json/--png say otherwise.")
    t.add_argument("run_dirs", type=named_path, nargs="+", metavar="RUN_DIR")
    t.add_argument("--tolerance", default="1", metavar="POINTS",
                   help="accuracy tolerance in percentage points, absolute: 1, 1%% and 1.0 all mean one point "
                        "(default: 1); for generator runs (ranked by their fid-clf.json or fid.json, lower is "
                        "better) a distance in the metric's units")
    _add_settings_options(t, aggregate=False)
    t.add_argument("--json", metavar="FILE", default="tradeoff.json",
                   help="write the result as JSON (default: tradeoff.json)")
    t.add_argument("--png", metavar="FILE", default="tradeoff.png",
                   help="write the accuracy-vs-energy figure (default: tradeoff.png)")
    t.set_defaults(run=run_tradeoff)


def _parse_list(text: str | None, default: str, what: str, convert=str) -> list:
    """The comma-separated items of ``text`` (else ``default``), each passed through ``convert``
    (``str``, or ``int``: the only one that can refuse an item), each once."""
    values = []
    for part in (default if text is None else text).split(","):  # ("" is an empty item, not the default)
        part = part.strip()
        try:
            values.append(convert(part))
        except ValueError:
            why = ("is out of range, an integer of more digits than can be read" if part.lstrip("+-").isdigit()
                   else "is not one")  # (int() reads no more than 4300)
            raise UsageError(f"{what} must be a comma-separated list of integers, got {shown(text)} "
                             f"({shown(part)} {why})") from None
    if twice := [v for v in dict.fromkeys(values) if values.count(v) > 1]:
        raise UsageError(f"{what} lists {', '.join(map(str, twice))} more than once, got {text!r}; expected each once")
    return values


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        return positive_ints("--input-shape", tuple(int(s) for s in text.split(",")))
    except ValueError:
        raise UsageError(f"--input-shape must be positive integers like 3,32,32, got {text!r}") from None


def _model_entries(args):
    """(meta, model config kwargs) for every --neuron x --weight-bits of an untrained model."""
    if args.model not in available():
        raise UsageError(f"unknown model {args.model!r}; expected one of {', '.join(available())}")
    if args.dataset and args.input_shape:
        raise UsageError("give --dataset or --input-shape, not both")
    if args.num_classes is not None:
        if not args.input_shape:
            raise UsageError("--num-classes goes with --input-shape (a --dataset knows its classes)")
        positive_int("--num-classes", args.num_classes)
    if args.dataset:
        described = describe(args.dataset)
        shape, classes = tuple(described["input_shape"]), described["num_classes"]
    elif args.input_shape:
        shape, classes = _parse_shape(args.input_shape), args.num_classes or 10  # None: the default
    else:
        raise UsageError("--model needs --dataset NAME (or --input-shape C,H,W) to know its input")
    neurons = _parse_list(args.neuron, "pbit", "--neuron")
    bits = [check_bits(b, "--weight-bits", allow_float=True) for b in _parse_list(args.weight_bits, "32",
                                                                                   "--weight-bits", int)]
    entries = []
    for neuron in neurons:
        for b in bits:
            config = ModelConfig(args.model, neuron, b, input_shape=shape, num_classes=classes, width=args.width)
            meta = {"model": args.model, "neuron": neuron, "weight_bits": b}
            entries.append((meta, config))
    return entries


def _run_default(run_dir: str | None, path: str | None, name: str) -> bool:
    """Whether ``path`` is the run's own ``name`` that ``pdnn energy RUN_DIR`` writes by default
    (given explicitly: a refresh of the run's record, not a copy that would replace it)."""
    return bool(run_dir and path) and Path(path).resolve() == (Path(run_dir) / name).resolve()


def run_energy(args) -> int:
    samples = samples_option(args.samples, check=check_energy_samples)
    settings = _settings(args, args.aggregate)
    if args.run_dir and args.model:
        raise UsageError("give RUN_DIR or --model, not both")
    json_out, png_out = (path if _run_default(args.run_dir, path, name) else output_file(option, path, kind)
                         for option, path, kind, name in (("--json", args.json, "json", ENERGY_FILES[0]),
                                                          ("--png", args.png, "figure", ENERGY_FILES[1])))
    if args.run_dir:
        for flag in ("dataset", "input_shape", "neuron", "weight_bits", "width", "num_classes"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} applies to --model, not to a run directory")
        net, config = run_network(args.run_dir, args.input_bits)
        model_config = ModelConfig.from_dict(config["model"])
        meta = {"run": str(args.run_dir), "label": run_label(args.run_dir, config),
                "model": model_config.name, "neuron": model_config.neuron, "weight_bits": model_config.weight_bits,
                **({"convert": config["convert"].get("method")} if "convert" in config else {})}
        entries = [(meta, net)]
        base = model_config
        if not any(path and not _run_default(args.run_dir, path, name)
                   for path, name in zip((args.json, args.png), ENERGY_FILES)):
            # the run's pair, or neither: a copy elsewhere (other settings, say) leaves the run's figure as it is
            json_out = json_out or str(Path(args.run_dir) / ENERGY_FILES[0])
            png_out = png_out or str(Path(args.run_dir) / ENERGY_FILES[1])
        for path in (json_out, png_out):  # the run's own: refused before either is written
            if path and Path(path).is_dir():
                raise UsageError(f"{path} is a folder where the run's {Path(path).suffix[1:].upper()} goes; "
                                 "move it away or name another file (--json, --png)")
    elif args.model:
        configs = _model_entries(args)
        entries = [(meta, model_network(c.build(), c.input_shape, args.input_bits)) for meta, c in configs]
        base = configs[0][1]
    else:
        raise UsageError("give a RUN_DIR or --model NAME (with --dataset NAME)")
    reference, label = None, None
    if args.reference_weight_bits is not None:
        check_bits(args.reference_weight_bits, "--reference-weight-bits", allow_float=True)
    if args.reference_neuron is not None or args.reference_weight_bits is not None:  # ("" is no neuron: named)
        ref_config = replace(base, neuron=base.neuron if args.reference_neuron is None else args.reference_neuron,
                             weight_bits=base.weight_bits if args.reference_weight_bits is None
                             else args.reference_weight_bits, extra=dict(base.extra))
        reference = model_network(ref_config.build(), ref_config.input_shape, args.input_bits)
        label = f"{ref_config.name} with neuron {ref_config.neuron}, {ref_config.weight_bits}-bit weights, T=1"
    report = energy_sweep(entries, samples, settings, reference, **({"reference_label": label} if label else {}))
    report["input_bits"] = entries[0][1].input_bits  # (a generator's decoder reads a float latent, whatever is asked)
    if report["input_bits"] != args.input_bits and args.input_bits != INPUT_BITS:
        print(f"pdnn energy: warning: --input-bits {args.input_bits} has no effect here: a generator is priced from "
              "its decoder, which reads a float latent", file=sys.stderr)
    print(format_markdown(report) if args.markdown else format_report(report, args.layers))
    if json_out:
        write_json(json_out, report)
        print(f"wrote {json_out}")
    if png_out:
        print(f"wrote {plot_energy(report, png_out)}")
    return 0


def _generators(run_dirs) -> bool:
    """True if every run is a generator (ranked by distance), False if none is; a mix is an error."""
    kinds = {run: read_config(run)["model"].get("name") == "vae" for run in run_dirs}
    if len(set(kinds.values())) > 1:
        raise UsageError("the runs mix generators and classifiers: "
                         + ", ".join(f"{run} ({'generator' if g else 'classifier'})" for run, g in kinds.items()))
    return next(iter(kinds.values()))


def run_tradeoff(args) -> int:
    output_file("--json", args.json, "json")
    output_file("--png", args.png, "figure")
    if _generators(args.run_dirs):
        try:
            tolerance = float(args.tolerance) + 0.0  # (-0 is 0)
        except ValueError:
            raise UsageError(f"--tolerance must be a distance like 1.5 for generator runs, got {args.tolerance!r}") from None
        result = fid_tradeoff_runs(args.run_dirs, _settings(args), tolerance, args.input_bits)
        text, plot = format_fid_tradeoff(result), plot_fid_tradeoff
    else:
        result = tradeoff_runs(args.run_dirs, _settings(args), parse_tolerance(args.tolerance), args.input_bits)
        text, plot = format_tradeoff(result), plot_tradeoff
    for skipped in result["skipped"]:
        print(f"pdnn tradeoff: warning: skipped {skipped['run']}: {skipped['reason']}", file=sys.stderr)
    print(text)
    write_json(args.json, result)
    print(f"wrote {args.json}")
    print(f"wrote {plot(result, args.png)}")
    return 0

