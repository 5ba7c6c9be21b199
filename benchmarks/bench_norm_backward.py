"""Would a fused backward pass for the per-sample batch norm speed up sample-aware training? A
candidate numba kernel against the library's per-sample torch kernels, in the training row of
``bench_speed.py`` (one Adam step on the sample-aware loss of the reference CNN, width 16,
batch 64), in one run.

Usage: python benchmarks/bench_norm_backward.py [--threads 2] [--rounds 3] [--repeats 9] [--clock cpu] [--json PATH]
       python benchmarks/bench_norm_backward.py --convolutions [--threads 2] [--repeats 9] [--json PATH] (wall clock)

At s = 8 the norms' backward pass (:class:`pdnn.per_sample_norm._PerSampleNorm`) runs torch's
kernel on each sample's rows and concatenates the results: the gradient and the input are read
twice by the kernels, and the concatenation copies the input gradient once more, on tensors of
tens of megabytes. The candidate (here, not in the library) computes every sample's two
per-channel sums in one pass and the input gradient in a second, for tensors whose channel is
last in memory, as the network's are (channels-last). Its input gradients are torch's within
float rounding (checked first). "s=8 candidate" patches it in; s = 1 has no per-sample norm and
serves both. The configurations alternate within each repeat, on one network each.

``--convolutions`` times instead each sampled convolution of that network alone, forward and
backward (input and weight gradients), at 64 and at 512 rows: how far the step's convolutions
scale from s = 1 to s = 8 on their own.
"""
from __future__ import annotations

import argparse
import sys

import numba
import numpy as np
import torch
from bench_speed import adam_step, before_after_rounds, compare, training_problem
from counts import output_file, positive_count, write_json

from pdnn import SampledModel
from pdnn.malloc import keep_large_buffers
from pdnn.per_sample_norm import _PerSampleNorm

PAIRS = [("s=8 candidate", "s=1"), ("s=8", "s=1"), ("s=8 candidate", "s=8")]
FLUSH = 64  # rows summed in the data's precision before adding to the float64 sums
LIBRARY = _PerSampleNorm.backward


@numba.njit(parallel=True, cache=True)
def _sums(grad, x, mean, samples):
    """Per sample and channel, in float64: the sums of ``grad`` and of ``grad * (x - mean)``."""
    rows, channels = grad.shape[0] // samples, grad.shape[1]
    sums = np.zeros((samples, 2, channels))
    for k in numba.prange(samples):
        g, xs, m = grad[k * rows:(k + 1) * rows], x[k * rows:(k + 1) * rows], mean[k].astype(x.dtype)
        for first in range(0, rows, FLUSH):
            total, dot = np.zeros(channels, x.dtype), np.zeros(channels, x.dtype)
            for i in range(first, min(first + FLUSH, rows)):
                for c in range(channels):
                    total[c] += g[i, c]
                    dot[c] += g[i, c] * (xs[i, c] - m[c])
            sums[k, 0] += total
            sums[k, 1] += dot
    return sums


@numba.njit(parallel=True, cache=True)
def _input_gradient(grad, x, coefficients, samples, out):
    """``out = (grad - mean_g - (x - mean) * projection) * scale``, per sample and channel, in the
    order of torch's kernel."""
    rows, channels = grad.shape[0] // samples, grad.shape[1]
    for k in numba.prange(samples):
        g, xs, o = grad[k * rows:(k + 1) * rows], x[k * rows:(k + 1) * rows], out[k * rows:(k + 1) * rows]
        m, mg, p, s = coefficients[0, k], coefficients[1, k], coefficients[2, k], coefficients[3, k]
        for i in range(rows):
            for c in range(channels):
                o[i, c] = (g[i, c] - mg[c] - (xs[i, c] - m[c]) * p[c]) * s[c]


def candidate_backward(ctx, grad):
    """``_PerSampleNorm.backward`` by the two kernels, for channels-last tensors."""
    x, weight, stats = ctx.saved_tensors
    samples, channels = stats.shape[1], x.shape[1]
    grad = grad.contiguous(memory_format=torch.channels_last)
    grads, inputs = (t.detach().movedim(1, -1).reshape(-1, channels).numpy() for t in (grad, x))
    mean, invstd = stats.double().numpy()
    sum_g, dot = _sums(grads, inputs, mean, samples).transpose(1, 0, 2)
    count = grads.shape[0] // samples
    coefficients = np.stack([mean, sum_g / count, dot * invstd**2 / count, invstd * weight.detach().double().numpy()])
    out = torch.empty(grads.shape, dtype=x.dtype)
    _input_gradient(grads, inputs, coefficients.astype(inputs.dtype), samples, out.numpy())
    grad_x = out.view(x.shape[0], *x.shape[2:], channels).movedim(-1, 1)
    grad_w = torch.from_numpy((dot * invstd).sum(0)).to(weight.dtype)
    return grad_x, grad_w, torch.from_numpy(sum_g.sum(0)).to(weight.dtype), None, None, None, None


def step_with(backward, sampled, x, y, optimizer) -> None:
    """One Adam step with the per-sample norms' backward pass ``backward``."""
    _PerSampleNorm.backward = staticmethod(backward)
    try:
        adam_step(sampled, x, y, optimizer)
    finally:
        _PerSampleNorm.backward = staticmethod(LIBRARY)


def check_candidate() -> None:
    """The candidate's gradients are the library's within float rounding, on the training row's network."""
    found = []
    for backward in (LIBRARY, candidate_backward):
        x, y, model, _ = training_problem()
        step_with(backward, SampledModel(model, 8, reduce="none", seed=0), x, y, torch.optim.SGD(model.parameters(), lr=0))
        found.append([p.grad for p in model.parameters()])
    for ours, theirs in zip(*found):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max().item())


def convolution_rows(repeats: int) -> list[dict]:
    """Forward and backward of each sampled convolution of the reference CNN (width 16), channels-last,
    at the rows of s = 1 and s = 8."""
    rows = []
    for channels_in, channels_out, size in ((16, 16, 32), (16, 32, 16), (32, 32, 16), (32, 64, 8)):
        conv = torch.nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
        configs = {}
        for batch in (64, 512):
            x = torch.randn(batch, channels_in, size, size).to(memory_format=torch.channels_last).requires_grad_()
            grad = torch.randn(batch, channels_out, size, size).to(memory_format=torch.channels_last)
            configs[f"{batch} rows"] = lambda x=x, g=grad: torch.autograd.grad(conv(x), (x, conv.weight), g)
        rows.append(compare(f"conv{channels_in}-{channels_out}-{size}", "", configs, repeats))
    return rows


def one_round(repeats: int) -> dict:
    configs = {}
    for name, s, backward in (("s=1", 1, LIBRARY), ("s=8", 8, LIBRARY), ("s=8 candidate", 8, candidate_backward)):
        x, y, model, optimizer = training_problem()
        sampled = SampledModel(model, s, reduce="none", seed=0)
        configs[name] = lambda b=backward, m=sampled, d=(x, y), o=optimizer: step_with(b, m, *d, o)
    return compare("train_cnn16_b64_norm_backward", "s=8/s=1 <= 6", configs, repeats, inner=2, pairs=PAIRS)


def convolutions_main() -> None:
    """``--convolutions``: the rows of :func:`convolution_rows`, printed and written to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--convolutions", action="store_true", required=True)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--repeats", type=positive_count, default=9)
    parser.add_argument("--json", type=output_file)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_buffers()
    rows = convolution_rows(args.repeats)
    for row in rows:
        print(row["row"], " ".join(f"{k} {v * 1e3:.2f} ms" for k, v in row["median_s"].items()),
              f"512 rows / 64 rows {row['ratio']['512 rows/64 rows']:.2f}")
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats,
                               "clock": "wall", "rows": rows})


if __name__ == "__main__":
    if "--convolutions" in sys.argv:
        convolutions_main()
    else:
        check_candidate()
        before_after_rounds(__doc__, one_round, PAIRS, rounds=3, repeats=9)
