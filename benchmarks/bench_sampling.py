"""Cost of T samples relative to one, and the batched path against a Python loop over T.

Usage: python benchmarks/bench_sampling.py [--repeats 5] [--json FILE]

Prints, measured in this one run on this machine, for the reference CNN (3x32x32, width 32) and
MLP (1x28x28, width 256) at batch sizes 1 and 256:
  * time(T) / time(T=1) for T = 1, 2, 4, 8, 16 with the batched SampledModel;
  * time(loop) / time(batched): T separate forward passes against one folded pass.
Times are medians over repeats of inference (eval mode, no autograd).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from counts import output_file, positive_count, write_json

from pdnn import SampledModel
from pdnn.models import create

SAMPLES = [1, 2, 4, 8, 16]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (also builds the traced graph)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@torch.no_grad()
def measure(name: str, shape, batch: int, repeats: int) -> dict:
    model = create(name, neuron="pbit", input_shape=shape).eval()
    x = torch.randn(batch, *shape)
    batched, looped = {}, {}
    for t in SAMPLES:
        sampler = SampledModel(model, t)
        batched[t] = median_time(lambda: sampler(x), repeats)
        looped[t] = median_time(lambda: torch.stack([model(x) for _ in range(t)]).mean(0), repeats)
    return {
        "model": name, "batch": batch,
        "time_t1_s": batched[1],
        "relative_to_t1": {t: batched[t] / batched[1] for t in SAMPLES},
        "loop_over_batched": {t: looped[t] / batched[t] for t in SAMPLES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=positive_count, default=5)
    parser.add_argument("--json", type=output_file, help="also write the figures to this file")
    args = parser.parse_args()
    rows = [measure(name, shape, batch, args.repeats)
            for name, shape in (("cnn", (3, 32, 32)), ("mlp", (1, 28, 28))) for batch in (1, 256)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = "".join(f"{'T=' + str(t):>8}" for t in SAMPLES)
    print(f"{'model':6} {'batch':>5} {'t(T=1)':>9}  time(T)/time(T=1){' ' * 23}  loop/batched")
    print(f"{'':6} {'':>5} {'':>9}  {header}  {header}")
    for r in rows:
        rel = "".join(f"{r['relative_to_t1'][t]:>8.2f}" for t in SAMPLES)
        loop = "".join(f"{r['loop_over_batched'][t]:>8.2f}" for t in SAMPLES)
        print(f"{r['model']:6} {r['batch']:>5} {1e3 * r['time_t1_s']:>7.2f}ms  {rel}  {loop}")
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    main()
