"""Cost of a sample-aware training step against s, and what buffer reuse saves.

Usage: python benchmarks/bench_train_step.py [--width 16] [--batch 64] [--steps 8]

For the reference CNN (3x32x32) with p-bit neurons, one Adam step on the loss of the mean of s
samples, s = 1, 2, 4, 8, and the float tanh network for scale. Each configuration is timed in
two child processes of this run: one with glibc's default allocator settings, one after
``pdnn.malloc.keep_large_buffers()`` (what the ``pdnn`` command does). Prints images per
second, time(s) / time(s=1), and default / kept (the speed-up from keeping buffers).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from counts import positive_count

CONFIGS = [("tanh", 1), ("pbit", 1), ("pbit", 2), ("pbit", 4), ("pbit", 8)]


def child(width: int, batch: int, steps: int, keep: bool) -> dict:
    import torch

    from pdnn.malloc import keep_large_buffers
    from pdnn.models import create
    from pdnn.sampling import SampledModel, loss_of_samples

    if keep:
        keep_large_buffers()
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    seconds = {}
    for neuron, s in CONFIGS:
        model = create("cnn", neuron=neuron, input_shape=(3, 32, 32), width=width)
        optimizer = torch.optim.Adam(model.parameters())
        sampler = SampledModel(model, s, reduce="none", seed=0)
        times = []
        for step in range(steps + 2):  # two warm-up steps
            began = time.perf_counter()
            loss, _ = loss_of_samples(sampler(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 2:
                times.append(time.perf_counter() - began)
        seconds[f"{neuron} s={s}"] = statistics.median(times)
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=positive_count, default=16)
    parser.add_argument("--batch", type=positive_count, default=64)
    parser.add_argument("--steps", type=positive_count, default=8)
    parser.add_argument("--child", choices=("default", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.width, args.batch, args.steps, args.child == "kept")))
        return
    runs = {}
    for mode in ("default", "kept"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--width", str(args.width),
                              "--batch", str(args.batch), "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True).stdout
        runs[mode] = json.loads(out.strip().splitlines()[-1])
    kept, default = runs["kept"]["seconds"], runs["default"]["seconds"]
    base = kept["pbit s=1"]
    print(f"torch {runs['kept']['torch']}, {runs['kept']['threads']} threads; reference CNN width "
          f"{args.width}, batch {args.batch}, median of {args.steps} steps")
    print(f"{'config':12} {'img/s':>8} {'t/t(s=1)':>9} {'default/kept':>13}")
    for name, seconds in kept.items():
        print(f"{name:12} {args.batch / seconds:>8.0f} {seconds / base:>9.2f} {default[name] / seconds:>13.2f}")


if __name__ == "__main__":
    main()
