"""The T passes of a sample run on separate cores, one thread each, against the same passes in
turn on all cores, in one run: a bound on what pass-level parallelism could give the CPU.

Usage: python benchmarks/bench_passes_on_cores.py [--width 64] [--threads 2] [--rounds 3] [--repeats 5] [--json PATH]

The question: T = 10/T = 1 of the width-64 CNN sits at the floor that sharing the first layer
gives (``bench_speed.py``, row ``cnn64_b256``), and one pass scales less than linearly from one
thread to two. Would ``--threads`` Python threads, each running its share of the 10 passes on
one intra-op thread, beat one loop of 10 passes on ``--threads`` intra-op threads? If they did,
the sampler could run its passes that way.

The network is the reference CNN with tanh neurons, so that only torch's operators run: the
p-bit kernels hold the interpreter lock while they run, which would make the threaded passes
slower for a reason unrelated to the question. Every thread turns autograd off (grad mode is per
thread in torch) and sets the intra-op thread count it needs (a process-wide setting, restored
after each round). Rows, batch 256, 10 passes each:
``loop, N threads`` (the passes in turn on N intra-op threads), ``loop, 1 thread``, and
``passes on cores`` (N Python threads, one intra-op thread each). ``passes on cores`` against
half of ``loop, 1 thread`` is what running side by side costs (memory bandwidth, caches).
"""
from __future__ import annotations

import threading

import torch
from bench_speed import before_after_rounds, compare
from counts import positive_count

from pdnn.models import create

PASSES = 10


def add_options(parser) -> None:
    parser.add_argument("--width", type=positive_count, default=64, help="the CNN's width (16 or 64 in the speed table)")


def pairs(args) -> list[tuple[str, str]]:
    return [("passes on cores", f"loop, {args.threads} threads"), (f"loop, {args.threads} threads", "loop, 1 thread")]


def loop(model, x: torch.Tensor, passes: int, threads: int) -> None:
    torch.set_num_threads(threads)
    with torch.no_grad():
        for _ in range(passes):
            model(x)


def on_cores(model, x: torch.Tensor, threads: int) -> None:
    """``PASSES`` passes shared among ``threads`` Python threads, one intra-op thread each."""
    shares = [PASSES // threads + (i < PASSES % threads) for i in range(threads)]
    workers = [threading.Thread(target=loop, args=(model, x, share, 1)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def one_round(repeats: int, args) -> dict:
    torch.manual_seed(0)
    model = create("cnn", neuron="tanh", input_shape=(3, 32, 32), width=args.width).eval()
    x = torch.randn(256, 3, 32, 32)
    configs = {f"loop, {args.threads} threads": lambda: loop(model, x, PASSES, args.threads),
               "loop, 1 thread": lambda: loop(model, x, PASSES, 1),
               "passes on cores": lambda: on_cores(model, x, args.threads)}
    try:
        return compare(f"cnn{args.width}_b256_passes_on_cores", "passes on cores < loop", configs, repeats,
                       pairs=pairs(args))
    finally:
        torch.set_num_threads(args.threads)


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, pairs, rounds=3, repeats=5, add_options=add_options)
