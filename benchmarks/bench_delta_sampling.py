"""The samples of the width-64 CNN computed as changes from one shared reference pass, against
the same passes computed in full, in one run: whether work the samples share beyond the first
layer could take T = 10/T = 1 under 9.

Usage: python benchmarks/bench_delta_sampling.py [--weights trained|random] [--run RUN] [--data-dir ROOT]
       [--rounds 3] [--repeats 3] [--json PATH]

The idea. Of the work that matters, the samples share only the first layer exactly
(``bench_speed.py``, row ``cnn64_b256``: T = 10 sits at the floor 10 - 9 x 0.035 that this
gives). Deeper down the samples differ, but in a trained network most bits agree with a
reference: the bit the pre-activation's sign gives along a reference pass, computed once for the
batch. A convolution ``K`` whose input is bits
``b`` (not pooled) can then be computed as

    K(b) = K(r) + K(b - r),

with ``K(r)`` computed once and shared by the samples, and ``b - r`` nonzero (+-2) only where
a bit differs from its reference: each such bit adds or subtracts the kernel's 9 taps into
its neighbours, an accumulate-only update (the batch norm that follows is folded into the
kernel and ``K(r)``). Where the density of differing bits is small enough, this is cheaper
than the dense convolution; it computes the same pre-activations up to float rounding, so the
bits drawn from them follow the same distribution (not bit for bit the sampler's, whose
rounding differs).

Rows, batch 256, all in passes of 256 rows: ``T=1`` and ``T=10`` (``SampledModel``, as in
``bench_speed.py``), ``delta 10`` (10 samples, the width-64 CNN's two convolutions of unpooled
bits by the delta kernel, the others dense) and ``dense 10`` (the same code with every
convolution dense, in channels-last layout), so that ``delta 10/dense 10`` is the kernel's
effect alone. Each round also records, for the delta layers, the density of differing bits and
the largest difference between the delta and dense pre-activations on one sample's bits.
``--weights trained`` (the default) samples a trained CIFAR-10 run on test images;
``--weights random`` the speed table's network (seed 0) on Gaussian inputs.
"""
from __future__ import annotations

import sys

import numba
import torch
from bench_speed import before_after_rounds, compare
from numba import njit, prange
from torch import nn
from torch.nn import functional as TF

from pdnn import SampledModel
from pdnn.sampling import MAX_ROWS

TRAINED_RUN = "results/adaptive/cifar10-runs/pbit-w64-s1-e15-r2"


@njit(parallel=True, cache=True, boundscheck=False)
def delta_convolution(bits, ref, table, base, out):
    """``out[n] = base[n % B] + K(bits[n] - ref[n % B])`` for a 3 x 3 convolution with zero
    padding 1, in channels-last layout: bits (N, H, W, C) of +-1, ref (B, H, W, C), table
    (2C, 9, CO) holding ``+2K`` (row 2c) and ``-2K`` (row 2c + 1) per input channel and tap,
    base (B, H, W, CO), out (N, H, W, CO)."""
    rows, height, width, channels = bits.shape
    batch = ref.shape[0]
    out_channels = table.shape[2]
    for n in prange(rows):
        i = n % batch
        for y in range(height):
            for x in range(width):
                for q in range(out_channels):
                    out[n, y, x, q] = base[i, y, x, q]
        for y in range(height):
            ky0, ky1 = max(0, y + 2 - height), min(2, y + 1)
            for x in range(width):
                kx0, kx1 = max(0, x + 2 - width), min(2, x + 1)
                for c in range(channels):
                    b = bits[n, y, x, c]
                    if b != ref[i, y, x, c]:
                        r = 2 * c + (b < 0)
                        for ky in range(ky0, ky1 + 1):
                            for kx in range(kx0, kx1 + 1):
                                for q in range(out_channels):
                                    out[n, y + 1 - ky, x + 1 - kx, q] += table[r, ky * 3 + kx, q]


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1)


def channels_first(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)


def reference_bits(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z >= 0, 1.0, -1.0)


class DeltaSampler:
    """Samples of the reference CNN (blocks of conv, batch norm, p-bit, optional 2 x 2 average
    pool; then the head) for one batch, with the reference pass computed at construction."""

    def __init__(self, model: nn.Sequential, x: torch.Tensor, delta: bool = True):
        modules, k, self.blocks = list(model), 0, []
        while isinstance(modules[k], nn.Conv2d):
            conv, norm, pbit = modules[k:k + 3]
            pooled = isinstance(modules[k + 3], nn.AvgPool2d)
            k += 3 + pooled
            self.blocks.append([conv, norm, pbit, pooled, None])
        self.head = nn.Sequential(*modules[k:])
        with torch.no_grad():
            conv, norm = self.blocks[0][:2]
            self.prefix = channels_last(norm(conv(x))).contiguous()
            ref, pooled = reference_bits(self.prefix), self.blocks[0][3]
            for block in self.blocks[1:]:
                conv, norm, _, next_pooled, _ = block
                z_ref = channels_last(norm(conv(self.pool(ref, pooled)))).contiguous()
                if delta and not pooled:
                    block[4] = (ref.numpy(), self.table(conv, norm).numpy(), z_ref.numpy())
                ref, pooled = reference_bits(z_ref), next_pooled

    @staticmethod
    def pool(bits: torch.Tensor, pooled: bool) -> torch.Tensor:
        return TF.avg_pool2d(channels_first(bits), 2) if pooled else channels_first(bits)

    @staticmethod
    def table(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> torch.Tensor:
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        kernel = conv.weight * scale[:, None, None, None]  # (CO, C, 3, 3)
        signed = torch.stack([2 * kernel, -2 * kernel], -1)  # (CO, C, 3, 3, 2)
        return signed.permute(1, 4, 2, 3, 0).reshape(2 * kernel.shape[1], 9, kernel.shape[0]).contiguous()

    def layer(self, block, bits: torch.Tensor, pooled: bool) -> torch.Tensor:
        conv, norm, _, _, delta = block
        if delta is None:
            return channels_last(norm(conv(self.pool(bits, pooled))))
        ref, table, base = delta
        z = torch.empty(bits.shape[:3] + (table.shape[2],))
        delta_convolution(bits.numpy(), ref, table, base, z.numpy())
        return z

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        bits, pooled = self.blocks[0][2](self.prefix), self.blocks[0][3]
        for block in self.blocks[1:]:
            bits, pooled = block[2](self.layer(block, bits, pooled)), block[3]
        return self.head(self.pool(bits, pooled))

    def __call__(self, samples: int) -> torch.Tensor:
        return sum(self.sample() for _ in range(samples)) / samples

    @torch.no_grad()
    def check(self) -> tuple[list[float], float]:
        """For one sample: the density of bits differing from their reference at each delta
        layer's input, and the largest difference between delta and dense pre-activations."""
        densities, largest = [], 0.0
        bits, pooled = self.blocks[0][2](self.prefix), self.blocks[0][3]
        for block in self.blocks[1:]:
            z = self.layer(block, bits, pooled)
            if block[4] is not None:
                densities.append((bits != torch.from_numpy(block[4][0])).float().mean().item())
                dense = self.layer(block[:4] + [None], bits, pooled)
                largest = max(largest, (z - dense).abs().max().item())
            bits, pooled = block[2](z), block[3]
        return densities, largest


def add_options(parser) -> None:
    parser.add_argument("--weights", choices=("trained", "random"), default="trained")
    parser.add_argument("--run", default=TRAINED_RUN, help="the trained run (a width-64 reference CNN)")
    parser.add_argument("--data-dir", action="append", help="where CIFAR-10 is (default: pdnn's data roots)")


def pairs(args) -> list[tuple[str, str]]:
    return [("delta 10", "dense 10"), ("delta 10", "T=1"), ("T=10", "T=1")]


def problem(args) -> tuple[nn.Module, torch.Tensor]:
    if args.weights == "random":
        from pdnn.models import create
        torch.manual_seed(0)
        return create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=64).eval(), torch.randn(256, 3, 32, 32)
    from pdnn.convert import load_model
    from pdnn.data import load
    from pdnn.io import RunError
    try:  # a missing run or dataset in one line, as pdnn's commands say it
        model, config = load_model(args.run)
        if (config["model"]["name"], config["model"]["neuron"]) != ("cnn", "pbit"):
            raise ValueError(f"--run {args.run} is a {config['model']['neuron']} {config['model']['name']}; the "
                             "delta passes take the reference CNN with bipolar p-bits (neuron pbit)")
        data = load(config["data"]["dataset"], roots=args.data_dir, subset=256, progress=False)
    except (ValueError, RunError, OSError) as err:  # (pdnn's UsageError is a ValueError)
        sys.exit(f"bench_delta_sampling.py: error: {err}")
    return model.eval(), data.normalize(data.test_x[:256])


def one_round(repeats: int, args) -> dict:
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    model, x = problem(args)
    one, ten = (SampledModel(model, t, seed=0, max_rows=MAX_ROWS) for t in (1, 10))
    torch.manual_seed(0)
    configs = {"T=1": lambda: one(x), "T=10": lambda: ten(x), "delta 10": lambda: DeltaSampler(model, x)(10),
               "dense 10": lambda: DeltaSampler(model, x, delta=False)(10)}
    with torch.no_grad():
        row = compare(f"cnn64_b256_delta_{args.weights}", "delta 10 < dense 10; delta 10/T=1 <= 9", configs, repeats,
                      pairs=pairs(args))
    row["density"], row["largest_difference"] = DeltaSampler(model, x).check()
    print(f"  differing bits at the delta layers' inputs: {', '.join(f'{d:.3f}' for d in row['density'])}; "
          f"largest |delta - dense| pre-activation: {row['largest_difference']:.2e}")
    return row


if __name__ == "__main__":
    before_after_rounds(__doc__, one_round, pairs, rounds=3, repeats=3, add_options=add_options)
