"""``pdnn eval``: accuracy versus samples for a run directory."""
from __future__ import annotations

from ..adaptive import (CHECKPOINTS, MAX_SAMPLES, PRIOR_INPUTS, StoppingRule, check_max_samples, parse_checkpoints,
                        refuse_looks_beyond)
from ..checks import AGGREGATIONS, positive_int
from ..devices import resolve_device
from ..energy import load_table
from ..energy.per_input import mj
from ..errors import UsageError
from ..evaluate import format_table
from ..io import write_json
from ..runs import evaluate_run, evaluate_run_adaptive
from .common import (SEED_OPTION, add_data_options, add_device_option, kept_result, named_path, options_named,
                     output_file, samples_option, writable_run)

FIXED = {"samples": "1,2,5,10,20,50", "repeats": 3}
RULE_OPTIONS = {"checkpoints": "--checkpoints", "prior_samples": "--prior-samples", "error level": "--error"}
ADAPTIVE = {"max_samples": 50, "error": 0.01, "rule": "predictive", "checkpoints": ",".join(map(str, CHECKPOINTS)),
            "prior_samples": 2, "memory": "dram"}


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy vs number of samples T for a run",
                       description="Accuracy mean and std over independent sampling repeats for each T; "
                                   "writes RUN_DIR/eval-<aggregate>.json.")
    p.add_argument("run_dir", type=named_path, metavar="RUN_DIR")
    p.add_argument("--samples", help=f"comma-separated T values (default: {FIXED['samples']})")
    p.add_argument("--repeats", type=int, help=f"independent sampling repeats per T (default: {FIXED['repeats']})")
    p.add_argument("--aggregate", choices=AGGREGATIONS, default="network",
                   help="network: p-DNN (average outputs); layer: random bit-stream baseline (default: network)")
    p.add_argument("--seed", type=int, default=0,
                   help="fixes the p-bits' draws (default: 0; layer aggregation seeds repeat r at T with "
                        "seed + 1000 r + T, so seeds 1000 apart share draws; torch's CPU generator reads the low "
                        "32 bits, so seeds 2**32 apart draw alike)")
    p.add_argument("--adaptive", action="store_true",
                   help="choose T per input with a stopping rule (see docs/adaptive.md) instead of --samples; "
                        "writes RUN_DIR/adaptive.json")
    p.add_argument("--max-samples", type=int,
                   help=f"--adaptive: the most samples an input gets, up to {MAX_SAMPLES} (default: "
                        f"{ADAPTIVE['max_samples']})")
    p.add_argument("--error", type=float,
                   help="--adaptive: predictive probability that the decision at --max-samples differs "
                        f"(default: {ADAPTIVE['error']})")
    p.add_argument("--rule", help="--adaptive: predictive (default) or never")
    p.add_argument("--checkpoints", metavar="T,T,...|every",
                   help="--adaptive: the T values after which the rule looks, or 'every' for a look after every "
                        f"sample (default: {ADAPTIVE['checkpoints']}; T = 1 from the second batch on, once the "
                        "prior is learnt)")
    p.add_argument("--prior-samples", type=int, metavar="NU0",
                   help="--adaptive: pseudo-samples of the typical spread in the rule's prior (default: "
                        f"{ADAPTIVE['prior_samples']}; 0: never at T = 1)")
    p.add_argument("--memory", metavar="LEVEL",
                   help="--adaptive: memory level of weights and activations for the energy per inference "
                        f"(levels as `pdnn energy --memory`; default: {ADAPTIVE['memory']})")
    p.add_argument("--json", metavar="FILE", help="also copy the result JSON to FILE")
    add_data_options(p, "measure on the first N test examples (default: as many as the run was trained with, "
                        "its --subset; the whole test split if it had none)")
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def with_defaults(args) -> None:
    """Fill in the options of the chosen mode; an option of the other mode, given, would be ignored,
    so it is refused instead."""
    chosen, other = (ADAPTIVE, FIXED) if args.adaptive else (FIXED, ADAPTIVE)
    given = [name for name in other if getattr(args, name) is not None]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{options} {'is' if len(given) == 1 else 'are'} only used "
                         f"{'without' if args.adaptive else 'with'} --adaptive")
    if args.adaptive and args.rule == "never" and (unread := [name for name in ("error", "prior_samples")
                                                            if getattr(args, name) is not None]):
        options = ", ".join("--" + name.replace("_", "-") for name in unread)
        raise UsageError(f"{options} {'is' if len(unread) == 1 else 'are'} only used by --rule predictive (the never "
                         "rule runs every input to --max-samples)")
    for name, default in chosen.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def run(args) -> int:
    output_file("--json", args.json, "json")
    given_checkpoints = args.checkpoints is not None
    with_defaults(args)
    writable_run(args.run_dir, "adaptive.json" if args.adaptive else f"eval-{args.aggregate}.json")
    if args.adaptive:
        return run_adaptive(args, given_checkpoints)
    positive_int("--repeats", args.repeats)  # named as the option, not as evaluate_run's argument
    samples = samples_option(args.samples)
    with options_named({**SEED_OPTION, "repeats": "--repeats"}):
        document, unwritten = kept_result(lambda: evaluate_run(
            args.run_dir, samples, args.repeats, args.aggregate, args.seed, roots=args.data_dir, subset=args.subset,
            device=resolve_device(args.device), progress=not args.quiet))
    print(f"{args.run_dir}  ({document['dataset']} test, {document['examples']} examples, "
          f"{document['aggregate']} aggregation)")
    if document["deterministic"] and samples != [1]:
        print(f"deterministic: every sample is the same, so T = 1 is measured once for T = "
              f"{', '.join(map(str, samples))}")
    print(format_table(document))
    if args.json:
        write_json(args.json, document)
    if unwritten:
        raise unwritten
    return 0


def prior_note(rule: dict) -> str:
    """The first batch cannot look at T = 1: it learns the prior variance that such a look needs;
    without one (fewer inputs than it is learnt from) no input stops before the last look, unless
    the prior has no weight (``prior_samples`` 0)."""
    later = [t for t in rule["checkpoints"] if t > 1]
    if rule["prior_variance_learnt"] and rule["checkpoints"][0] == 1 and later:
        return f", the first batch from T = {later[0]}"  # (its first look: with --checkpoints 1,10 at T = 10)
    if rule["error"] == 0:
        return "; no input stops early at error 0"
    if rule["rule"] == "predictive" and rule["prior_variance"] is None and rule["prior_samples"] \
            and len(rule["checkpoints"]) > 1:  # (with prior_samples 0 the prior has no weight to wait for)
        return (f"; no input stopped early: the rule learns its prior variance from the spread of "
                f"{PRIOR_INPUTS} inputs, and fewer showed one")
    return ""


def listed_looks(looks: list[int], shown: int = 20) -> str:
    """The looks, the first and last few of a long list (``--checkpoints every`` to 10,000 printed
    9,999 of them on one line)."""
    if len(looks) <= shown:
        return ", ".join(map(str, looks))
    return f"{', '.join(map(str, looks[:shown - 2]))}, ..., {looks[-2]}, {looks[-1]} ({len(looks)} looks)"


def energy_line(document: dict, max_samples: int) -> str:
    """The energy per inference in its three accountings (docs/adaptive.md), beside fixed T."""
    listed = lambda e: " / ".join(map(mj, e.values()))  # noqa: E731
    memory = document["energy_settings"]["per-eo"]["weight_memory"]
    fixed = listed(document["energy_j_fixed_max_samples"])
    return (f"energy per inference, mJ ({memory}; {' / '.join(document['energy_j'])}): "
            f"{listed(document['energy_j'])}; fixed T = {max_samples}: {fixed}")


def run_adaptive(args, given_checkpoints: bool) -> int:
    if args.aggregate != "network":
        raise UsageError(f"--adaptive samples whole networks (--aggregate network), got --aggregate {args.aggregate}")
    check_max_samples(args.max_samples, "--max-samples")  # before the looks are checked against it
    load_table().memory(args.memory, "--memory")
    with options_named(RULE_OPTIONS):
        checkpoints = parse_checkpoints(args.checkpoints, args.max_samples)
        if given_checkpoints:
            refuse_looks_beyond(args.checkpoints, checkpoints, args.max_samples)
        rule = StoppingRule(args.max_samples, args.error, args.rule, checkpoints, args.prior_samples)
    with options_named(SEED_OPTION):
        document, unwritten = kept_result(lambda: evaluate_run_adaptive(
            args.run_dir, rule, args.seed, roots=args.data_dir, subset=args.subset,
            device=resolve_device(args.device), progress=not args.quiet, memory=args.memory))
    print(f"{args.run_dir}  ({document['dataset']} test, {document['examples']} examples, T per input: "
          f"{rule.rule} rule{f', error {rule.error}' if rule.rule == 'predictive' else ''}, at most "
          f"{rule.max_samples}; looks at T = {listed_looks(document['rule']['checkpoints'])}"
          f"{prior_note(document['rule'])})")
    print(f"accuracy {100 * document['accuracy']:.2f} %  mean T {document['mean_samples']:.2f}")
    print("T: " + "  ".join(f"{t}:{n}" for t, n in document["samples_histogram"].items()))
    print(energy_line(document, rule.max_samples))
    if args.json:
        write_json(args.json, document)
    if unwritten:
        raise unwritten
    return 0
