"""Ways to write an average pool's input gradient when its windows are disjoint, in one run.

Usage: python benchmarks/bench_pool_backward.py [--threads 2] [--repeats 7] [--json PATH]

For 2 x 2 pools on channels-last tensors of the reference CNN's shapes at s = 8 and s = 1
(batch 64): torch's ``avg_pool2d_backward`` (zero fill, then each window's share added), the
share written through a strided view of the output (``torch.div(..., out=view)``), and nearest
upsampling of the share (what :mod:`pdnn.pooling` does for 2 x 2 windows). All three are checked
to give the same gradient; prints the best time of each in ms. Large freed buffers are kept
for reuse, as the ``pdnn`` command keeps them (:func:`pdnn.malloc.keep_large_buffers`).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from counts import output_file, positive_count, write_json

from pdnn.malloc import keep_large_buffers

SHAPES = [(512, 16, 16), (512, 32, 8), (512, 64, 4), (64, 16, 16)]  # (rows, channels, pooled side)


def ways(grad: torch.Tensor, shape: torch.Size) -> dict:
    side = grad.shape[2]
    x = torch.empty(shape, memory_format=torch.channels_last)

    def torch_backward():
        return torch.ops.aten.avg_pool2d_backward(grad, x, [2, 2], [2, 2], [0, 0], False, True, None)

    def strided_write():
        out = torch.empty(shape, memory_format=torch.channels_last)
        windows = out.unflatten(-1, (side, 2)).unflatten(-3, (side, 2))
        torch.div(grad[..., :, None, :, None].expand(windows.shape), 4, out=windows)
        return out

    def nearest_upsampling():
        return F.interpolate(grad / 4, scale_factor=2, mode="nearest")

    return {"torch avg_pool2d_backward": torch_backward, "strided write": strided_write,
            "nearest upsampling": nearest_upsampling}


def best_ms(fn, repeats: int, inner: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - began) / inner)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_count, default=2)
    parser.add_argument("--repeats", type=positive_count, default=7)
    parser.add_argument("--json", type=output_file)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_buffers()
    rows = []
    for count, channels, side in SHAPES:
        grad = torch.randn(count, channels, side, side).contiguous(memory_format=torch.channels_last)
        shape = torch.Size((count, channels, 2 * side, 2 * side))
        candidates = ways(grad, shape)
        reference = candidates["torch avg_pool2d_backward"]()
        assert all(torch.equal(fn(), reference) for fn in candidates.values())
        times = {name: best_ms(fn, args.repeats) for name, fn in candidates.items()}
        rows.append({"input_shape": list(shape), "best_ms": times})
        print(f"{tuple(shape)}: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in times.items()), flush=True)
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
