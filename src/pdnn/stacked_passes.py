"""Several passes of a split batch run as one pass, each keeping its own random words.

``SampledModel(max_rows=R)`` splits a batch into passes of at most R samples x inputs and runs
them in turn; each pass draws one key per p-bit call, in the order of its calls, and the fused
p-bit kernel's word for an element depends only on its call's key and the element's index within
the call (:mod:`pdnn.pbit_kernel`). So the rows of several consecutive passes can run as one
stacked pass that draws every pass's block of rows with the key that pass would have drawn: the
keys are drawn up front in the split's order (pass by pass, call by call), a tensor repeated for
the T samples is repeated pass by pass (each block laid out as its pass was), and every p-bit call
draws block by block. The stacked pass draws what the passes drew, in fewer and larger calls.
Its layers compute on more rows at once, and a BLAS GEMM may round a row's sums differently for
another number of rows (MKL does for fewer than 8-16 rows), so a pre-activation within that
rounding of its drawn threshold can take the other bit: for passes of 3 inputs x 16 samples, 1-3
of 19 200 sample rows differed from the split's; passes of 8 rows and more matched exactly. On the
2-core CPU the reference CNN (width 16) at T = 10, batch 256, took 0.87-0.92
of the time of its 256-row passes in turn, stacked four at a time
(``benchmarks/bench_stacked_passes.py``), and ``pdnn eval`` of a CIFAR-10 run (T up to 50) 0.84,
peaking at 955 MB resident instead of 559 MB (``benchmarks/results/README.md``).

Larger is not always faster: the width-64 CNN ran twice as slowly in one pass of 2560 rows
(671 MB per activation) as in passes of 256. A stack is therefore sized by the bytes of the
widest p-bit output row: at most :data:`STACK_BYTES`, or :data:`STACK_BYTES_SYSTEM_MALLOC` where
glibc returns every buffer above its mmap threshold (at most 32 MiB) to the system on ``free``
(:mod:`pdnn.malloc`).

:class:`pdnn.SampledModel` uses a stack only where it computes what the split does: in passes
without autograd, on the CPU, for a traced ("graph") plan whose single tensor output has T x B
rows, where every draw of a pass is a fused p-bit key. It learns that once per plan: the first two
passes run split while their keys are counted, the generator is checked to have advanced by those
keys and nothing else, and the two passes run again stacked, from the same generator state, and
must give the same numbers and end in the same state (which rounding cannot show in two passes).
Two passes whose outputs hold a NaN tell nothing (a NaN equals nothing, and NaN alike NaN could
hide where the stacked pass differs), nor do passes that ran a loop while the fold check could
not yet decide the plan: the next call learns it. A model that takes a statistic over its batch
(``h - h.mean(0)``), whose passes would take it over several stacked, is not split at all
(``SampledModel._passes_apart``), so two passes of the same inputs, alike stacked or not, are
stacked only where the model's inputs are apart.
"""
from __future__ import annotations

import contextlib
import threading

import torch

from . import malloc, pbit_kernel

STACK_BYTES = 64 << 20  # the widest p-bit output of a stacked pass, where large buffers are kept
STACK_BYTES_SYSTEM_MALLOC = 32 << 20  # where glibc unmaps every larger buffer on free


class _Active(threading.local):
    """The stacked pass the current thread runs for, if any. A class attribute gives every
    thread its default: ``getattr`` with a default raises and catches inside when the attribute
    is missing, a microsecond on every p-bit call outside a stacked pass."""

    stack = None


_active = _Active()


class NotStackable(Exception):
    """The pass cannot run stacked (the split it stands for is run instead)."""


class Stack:
    """The passes a stacked pass stands for: ``inputs[j]`` inputs of pass ``j``, which draws
    ``keys[j][c]`` at its p-bit call ``c``."""

    def __init__(self, inputs: list[int], keys: list[list[int]]):
        self.inputs, self.keys = inputs, keys
        self.calls = 0  # p-bit calls so far
        self.widest_row = 0  # bytes of the widest p-bit output row so far

    def blocks(self, x: torch.Tensor) -> list[int]:
        """The rows of each pass's block of ``x`` (a tensor with a multiple of B rows)."""
        total = sum(self.inputs)
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] % total:
            raise NotStackable(f"a tensor of shape {tuple(getattr(x, 'shape', ()))} is not {total} inputs' rows")
        return [n * (x.shape[0] // total) for n in self.inputs]

    def repeat(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """``x`` repeated for ``samples`` samples pass by pass: each pass's block as the pass
        repeats its own rows (:func:`pdnn.functional.repeat_samples`)."""
        return torch.cat([block for block in x.split(self.blocks(x)) for _ in range(samples)])

    def bits(self, x: torch.Tensor, mode: str, beta: float, repeats: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The p-bits of ``x`` (repeated ``repeats`` times pass by pass), each pass's block drawn
        with that pass's key for this call; the keys came from torch's default generator, so a
        p-bit with a generator of its own cannot be stacked."""
        if generator is not None:
            raise NotStackable("a p-bit with a generator of its own")
        if torch.is_grad_enabled() and x.requires_grad:
            raise NotStackable("a p-bit under autograd")
        if self.calls == len(self.keys[0]):
            raise NotStackable("more p-bit calls than the passes drew keys for")
        x, channels_last = pbit_kernel.dense(x)  # so that every block and its output block are laid out alike
        blocks = x.split(self.blocks(x))
        if not all(pbit_kernel.available(block, repeats) for block in blocks):
            raise NotStackable("a p-bit the fused kernel does not draw")
        out = pbit_kernel.empty_bits(x, repeats, channels_last)
        for block, target, keys in zip(blocks, out.split([len(b) * repeats for b in blocks]), self.keys):
            pbit_kernel.bits(block, mode, beta, keys[self.calls], repeats, out=target)
        self.calls += 1
        if out.shape[0]:
            self.widest_row = max(self.widest_row, out[0].numel() * out.element_size())
        return out

    def unstacked(self, out, samples: int) -> torch.Tensor:
        """The stacked pass's output ``[sum of T x B_j, ...]`` as the passes' joined ``[T, B, ...]``."""
        if not isinstance(out, torch.Tensor):
            raise NotStackable("an output that is not one tensor")
        parts = out.split(self.blocks(out))
        return torch.cat([part.reshape(samples, n, *out.shape[1:]) for part, n in zip(parts, self.inputs)], 1)


def active() -> Stack | None:
    """The stack the current thread's pass runs for, if any."""
    return _active.stack


@contextlib.contextmanager
def stacking(stack: Stack):
    """Run the pass inside as ``stack``."""
    _active.stack = stack
    try:
        yield stack
    finally:
        _active.stack = None


def passes_per_stack(widest_row: int, rows_per_pass: int) -> int:
    """How many passes of ``rows_per_pass`` rows one stack holds, for p-bit outputs of at most
    ``widest_row`` bytes a row."""
    limit = STACK_BYTES if malloc.large_buffers_kept() else STACK_BYTES_SYSTEM_MALLOC
    return max(1, limit // max(1, widest_row * rows_per_pass))


def only_keys_drawn(start: torch.Tensor, end: torch.Tensor, keys: int) -> bool:
    """Whether a CPU generator in state ``start`` reaches state ``end`` by drawing ``keys`` keys
    (:func:`pdnn.pbit_kernel.draw_key`) and nothing else."""
    replay = torch.Generator().set_state(start)
    for _ in range(keys):
        pbit_kernel.draw_key(replay)
    return torch.equal(replay.get_state(), end)
