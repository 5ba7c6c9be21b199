"""The cost of sampling on the CPU: every ratio of the speed table measured in one run.

Usage: python benchmarks/bench_speed.py [--threads 2] [--repeats 5] [--json benchmarks/results/speed.json]
       [--skip-wide] (leaves out the width-64 CNN, the slowest row; its rows take half the repeats, at least 2)
       [--clock wall|cpu] [--system-malloc]
       [--only GROUP ...] [--cnn-batches B ...] (the CNNs' batch sizes; default 1 16 256)

Like the ``pdnn`` command, the script keeps large freed buffers for reuse
(:func:`pdnn.malloc.keep_large_buffers`); ``--system-malloc`` measures with glibc's defaults
instead, where every buffer above 32 MiB is page-faulted in afresh (the training row's s = 8
tensors are).

Rows (inference in eval mode without autograd unless stated; times are medians over repeats,
and the configurations of a row are interleaved within each repeat so that load from other
processes falls on all of them alike):

* ``pbit_vs_tanh``: a ``PBit`` (seeded generator) against ``nn.Tanh`` on a 256 x 2048 input, and
  against ``nn.Sigmoid``: torch's CPU tanh is the accurate, slow one (several sigmoids), so the
  ratio to a sigmoid says what the p-bit costs beside a cheap elementwise activation;
* ``linear_pbit_vs_tanh``: ``Linear(2048, 2048)`` followed by each, batch 256;
* ``cnn{w}_b{B}``: the reference CNN (3x32x32, width w = 16 and 64) at batch B (1, 16, 256),
  ``SampledModel`` at T = 10 against T = 1 (with ``max_rows=MAX_ROWS``, as evaluation uses it), and
  a Python loop of 10 plain forwards against both (``loop10/T=10``: the batched T = 10 is never
  to be slower); ``prefix/T=1`` is the share of T = 1 spent in the deterministic prefix (the
  first convolution and batch norm), which T = 10 runs once: were everything else ten times
  T = 1, T=10/T=1 would be ``10 - 9 * prefix/T=1``;
* ``mlp_b1``: MLP 784-2048-2048-2048-10, batch 1, T = 16 against T = 1 and a loop of 16 against
  T = 16 (T = 16 runs its 16-row GEMMs transposed, :mod:`pdnn.transposed_linear`); T = 16 also
  with ``pack_weights=True`` (oneDNN with packed weights, :mod:`pdnn.packed_linear`);
* ``train_cnn16_b64``: one Adam step on the sample-aware loss of the reference CNN (width 16,
  batch 64), s = 8 against s = 1 (at s = 8 the gradient to the prefix passes the first sampled
  convolution once, summed over the samples: :mod:`pdnn.shared_bits_layer`).

Each row prints the ratio of medians and the spread: the smallest and largest ratio of one
repeat's two times. The JSON also keeps every repeat's time (``times_s``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch
from counts import cpu_model, output_file, positive_count, write_json
from torch import nn

import pdnn.sampling as sampling
from pdnn import SampledModel
from pdnn.malloc import keep_large_buffers
from pdnn.models import create
from pdnn.nn import PBit
from pdnn.sampling import MAX_ROWS, loss_of_samples

CLOCK = time.perf_counter  # --clock cpu: time.process_time, blind to time spent waiting for a core


def timed(fn) -> float:
    began = CLOCK()
    fn()
    return CLOCK() - began


def compare(name: str, goal: str, configs: dict, repeats: int, inner: int = 1, pairs=()) -> dict:
    """Time every configuration ``repeats`` times, interleaved; ratios are to the first one and,
    for each ``(numerator, denominator)`` in ``pairs``, between those two."""
    # warm-up, as a repeat runs, its outputs kept (also traces graphs and sizes the buffers): after
    # one call, the first repeat's outputs were new memory to page in, and its tanh took 5-6 times longer
    for fn in configs.values():
        [fn() for _ in range(inner)]
    times = {key: [] for key in configs}
    for _ in range(repeats):
        for key, fn in configs.items():
            times[key].append(timed(lambda: [fn() for _ in range(inner)]) / inner)
    base = next(iter(configs))
    row = {"row": name, "goal": goal, "base": base, "repeats": repeats, "median_s": {}, "ratio": {}, "spread": {},
           "times_s": times}
    for key, ts in times.items():
        row["median_s"][key] = statistics.median(ts)
    for top, bottom in [(key, base) for key in configs if key != base] + list(pairs):
        label = f"{top}/{bottom}"
        row["ratio"][label] = row["median_s"][top] / row["median_s"][bottom]
        per_repeat = [t / b for t, b in zip(times[top], times[bottom])]
        row["spread"][label] = [min(per_repeat), max(per_repeat)]
    return row


def goal_of(goal: str, label: str) -> str:
    """The part of a row's goal (``"T=16/T=1 <= 2; loop16/T=16 >= 8"``) about the ratio ``label``:
    printed beside that ratio only, so that a ratio without a goal does not seem to have one."""
    return "; ".join(part for part in goal.split("; ") if part.startswith(f"{label} "))


def best(row: dict, top: str, bottom: str) -> float:
    """The ratio of the two configurations' fastest repeats: the least disturbed by other load."""
    return min(row["times_s"][top]) / min(row["times_s"][bottom])


def before_after_rounds(description: str, one_round, pairs, rounds: int, repeats: int, add_options=None) -> None:
    """The command line of the benchmarks that time a change against what it replaced in one
    process: ``--rounds`` rounds of ``one_round(repeats)`` (a :func:`compare` row), each printed as
    its medians and the ratios of ``pairs``, and all of them written to ``--json``.

    ``add_options(parser)``, if given, adds a benchmark's own options; ``one_round`` is then called
    as ``one_round(repeats, args)`` and ``pairs`` as ``pairs(args)``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if add_options:
        add_options(parser)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--rounds", type=positive_count, default=rounds)
    parser.add_argument("--repeats", type=positive_count, default=repeats)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: CPU time of the process (all threads), robust on a loaded machine")
    parser.add_argument("--json", type=output_file)
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    keep_large_buffers()
    if add_options:
        pairs, one_round = pairs(args), (lambda repeats, run=one_round: run(repeats, args))
    results = []
    for number in range(1, args.rounds + 1):
        row = one_round(args.repeats)
        results.append(row)
        medians = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in row["median_s"].items())
        ratios = ", ".join(f"{a}/{b} {row['ratio'][f'{a}/{b}']:.3f} (best {best(row, a, b):.3f})" for a, b in pairs)
        print(f"round {number}: {medians}; median {ratios}", flush=True)
    if args.json:
        options = {k: v for k, v in vars(args).items() if k not in ("json", "rounds")}
        write_json(args.json, {"torch": torch.__version__, **options, "rounds": results})


@torch.no_grad()
def activation_rows(repeats: int) -> list[dict]:
    x = torch.randn(256, 2048)
    pbit, tanh, sigmoid = PBit(), nn.Tanh(), nn.Sigmoid()
    pbit.generator = torch.Generator().manual_seed(0)
    rows = [compare("pbit_vs_tanh", "pbit/tanh <= 2",
                    {"tanh": lambda: tanh(x), "pbit": lambda: pbit(x), "sigmoid": lambda: sigmoid(x)},
                    repeats, inner=20, pairs=[("pbit", "sigmoid")])]
    linear = nn.Linear(2048, 2048)
    rows.append(compare("linear_pbit_vs_tanh", "pbit/tanh <= 1.1",
                        {"tanh": lambda: tanh(linear(x)), "pbit": lambda: pbit(linear(x))},
                        repeats, inner=5))
    return rows


def loop(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    return torch.stack([model(x) for _ in range(samples)]).mean(0)


@torch.no_grad()
def cnn_rows(width: int, repeats: int, batches: tuple[int, ...]) -> list[dict]:
    torch.manual_seed(0)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=width).eval()
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, 32, 32)
        one, ten = (SampledModel(model, t, seed=0, max_rows=MAX_ROWS) for t in (1, 10))
        configs = {"T=1": lambda: one(x), "T=10": lambda: ten(x), "loop10": lambda: loop(model, x, 10),
                   "prefix": lambda: model[1](model[0](x))}  # what T = 10 runs once: T=10/T=1 >= 10 - 9 * this
        inner = max(1, 64 // (batch * width // 16))
        rows.append(compare(f"cnn{width}_b{batch}", "T=10/T=1 <= 9 at batch 256; loop10/T=10 >= 1",
                            configs, repeats, inner, pairs=[("loop10", "T=10")]))
    return rows


@torch.no_grad()
def mlp_rows(repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = create("mlp", neuron="pbit", input_shape=(1, 28, 28), width=2048, depth=3).eval()
    x = torch.randn(1, 1, 28, 28)
    one, many = SampledModel(model, 1, seed=0), SampledModel(model, 16, seed=0)
    packed = SampledModel(model, 16, seed=0, pack_weights=True)
    row = compare("mlp_b1", "T=16/T=1 <= 2; loop16/T=16 >= 8",
                  {"T=1": lambda: one(x), "T=16": lambda: many(x), "T=16 packed": lambda: packed(x),
                   "loop16": lambda: loop(model, x, 16)},
                  repeats, inner=10, pairs=[("loop16", "T=16"), ("loop16", "T=16 packed")])
    return [row]


def training_problem() -> tuple:
    """The training rows' problem, seeded: a batch of 64 CIFAR-sized inputs and labels, the
    reference CNN (width 16) and its Adam optimizer."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=16)
    return x, y, model, torch.optim.Adam(model.parameters())


def adam_step(sampled: SampledModel, x: torch.Tensor, y: torch.Tensor, optimizer) -> None:
    """One Adam step on the sample-aware loss of ``sampled`` (``reduce="none"``)."""
    loss, _ = loss_of_samples(sampled(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# the rewrites that take p-bits past their autograd function (pooled p-bits have a backward of their
# own; the shared-input p-bit after the prefix sums its gradient in its layer): the benchmarks that
# swap that function's internals build their graphs without them, so that every p-bit runs the swap
PAST_THE_PBIT_FUNCTION = ("_share_repeated_inputs", "use_pooled_pbits")


@contextlib.contextmanager
def rewrites_off(names=()):
    """The :mod:`pdnn.sampling` rewrites named in ``names`` made no-ops while graphs are built
    (a ``SampledModel``'s first call) inside it."""
    rewrites = {name: getattr(sampling, name) for name in names}
    for name in rewrites:
        setattr(sampling, name, lambda gm, *args: None)
    try:
        yield
    finally:
        for name, rewrite in rewrites.items():
            setattr(sampling, name, rewrite)


def built_without(names, model, samples: int, x: torch.Tensor, y: torch.Tensor, optimizer) -> SampledModel:
    """A sampler of ``model`` (``reduce="none"``, seeded) whose graphs were built with the rewrites
    named in ``names`` switched off (:func:`rewrites_off`), in two Adam steps: the first opens the
    batch norms' zero-initialised biases, on which the sampler checks and builds its graphs again
    (one step alone left the graphs timed built with every rewrite)."""
    sampled = SampledModel(model, samples, reduce="none", seed=0)
    with rewrites_off(names):
        adam_step(sampled, x, y, optimizer)
        adam_step(sampled, x, y, optimizer)
    return sampled


def rewrite_ab_step(samples: int, x: torch.Tensor, y: torch.Tensor, switched_off=()):
    """A step function (one Adam step on the sample-aware loss of its own reference CNN, width 16)
    whose graphs are built with the :mod:`pdnn.sampling` rewrites named in ``switched_off`` made
    no-ops: for the benchmarks that time a rewrite against its absence in one process."""
    torch.manual_seed(0)
    model = create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=16)
    optimizer = torch.optim.Adam(model.parameters())
    sampled = built_without(switched_off, model, samples, x, y, optimizer)
    return lambda: adam_step(sampled, x, y, optimizer)


def train_rows(repeats: int) -> list[dict]:
    x, y, model, optimizer = training_problem()
    one = SampledModel(model, 1, reduce="none", seed=0)
    eight = SampledModel(model, 8, reduce="none", seed=0)
    return [compare("train_cnn16_b64", "s=8/s=1 <= 6",
                    {"s=1": lambda: adam_step(one, x, y, optimizer), "s=8": lambda: adam_step(eight, x, y, optimizer)},
                    repeats, inner=2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--repeats", type=positive_count, default=5,
                        help="repeats per row; the width-64 CNN's rows, the slowest, take half (at least 2). "
                             "Each row of the JSON records its own")
    parser.add_argument("--skip-wide", action="store_true", help="leave out the width-64 CNN")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: CPU time of the process (all threads), robust on a loaded machine")
    parser.add_argument("--only", nargs="+", choices=("act", "mlp", "train", "cnn16", "cnn64"),
                        help="measure only these groups of rows")
    parser.add_argument("--cnn-batches", type=positive_count, nargs="+", default=[1, 16, 256], metavar="B",
                        help="batch sizes of the CNN rows, both widths (default: 1 16 256)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's allocator at its defaults (the pdnn command does not)")
    parser.add_argument("--json", type=output_file, help="also write the rows to this file")
    args = parser.parse_args()
    if args.skip_wide and args.only == ["cnn64"]:
        parser.error("--only cnn64 with --skip-wide leaves nothing to measure")
    kept = not args.system_malloc and keep_large_buffers()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, {args.repeats} repeats, {args.clock} clock, "
          f"{'large buffers kept' if kept else 'system malloc'}")
    print(f"{'row':22} {'ratio':24} {'value':>7}  {'spread':>13}  goal", flush=True)
    rows = []
    groups = {"act": lambda: activation_rows(args.repeats), "mlp": lambda: mlp_rows(args.repeats),
              "train": lambda: train_rows(args.repeats),
              "cnn16": lambda: cnn_rows(16, args.repeats, tuple(args.cnn_batches)),
              "cnn64": lambda: [] if args.skip_wide else cnn_rows(64, max(2, args.repeats // 2), tuple(args.cnn_batches))}
    for name, measure in groups.items():
        if args.only and name not in args.only:
            continue
        for row in measure():
            rows.append(row)
            for label, ratio in row["ratio"].items():
                low, high = row["spread"][label]
                print(f"{row['row']:22} {label:24} {ratio:>7.2f}  {low:>5.2f}-{high:<6.2f}  "
                      f"{goal_of(row['goal'], label)}",
                      flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": args.threads, "clock": args.clock,
                               "repeats": args.repeats, "large_buffers_kept": kept, "rows": rows})


if __name__ == "__main__":
    main()
