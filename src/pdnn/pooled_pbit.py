"""A p-bit and the 2 x 2 average pool after it, with one backward pass for both.

In sample-aware training the reference CNN pools the folded p-bits of its first layers: at s = 8
tensors of 33.5 MB, beyond the cache. Separately, the pool's backward pass writes each pooled
gradient's share into a full-size tensor, the p-bit's reads it back with ``p = P(b = 1)``,
writes ``share * (1 - p) * p`` and multiplies that by ``4 beta`` in another pass. Here one
kernel reads the pooled gradient and ``p`` and writes the input gradient,
``((g / 4) * (1 - p)) * p * gain``, in that order and precision: bit for bit the two modules'
gradient (tested). The forward pass is theirs, in one autograd node: the same key, bits and
pooled values.

It serves channels-last CPU float tensors under autograd, where the folded training step has
them; everything else (another layout, hooks, ``ste`` other than ``"mean"``, the fold check's
probes, stacked passes, ``torch.func`` or ``torch.compile``) runs the two modules as they are. A
backward pass that is itself differentiated takes the modules' own differentiable operations.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import fx, nn

from . import functional as F
from . import pbit_kernel, stacked_passes
from .foldcheck import batched_by_autograd, has_hooks, runs_eagerly
from .nn import PBit
from .pooling import DisjointAvgPool2d, _pair, differentiable_shares, disjoint
from .tracing import add_module

try:
    import numba
except ImportError:  # pbit_kernel.available is then False, and nothing here runs
    numba = None


def fusable(pbit: nn.Module, pool: nn.Module) -> bool:
    """Whether ``pbit`` followed by ``pool`` can be one :class:`PooledPBit`: a plain ``PBit`` with
    the mean's surrogate and a 2 x 2 average pool with disjoint windows."""
    return type(pbit) is PBit and disjoint(pool) and _pair(pool.kernel_size) == (2, 2)


class PooledPBit(nn.Module):
    """``pool(pbit(x))``, with the fused backward pass where it applies (see the module's docstring)."""

    def __init__(self, pbit: PBit, pool: nn.AvgPool2d):
        super().__init__()
        self.pbit, self.pool = pbit, DisjointAvgPool2d(pool)  # unfused, the pool's lean backward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pbit, pool = self.pbit, self.pool
        if not self._fused(x):
            return pool(pbit(x))
        key = pbit_kernel.draw_key(pbit.generator)
        return _PooledPBit.apply(x, key, pbit.mode, F.check_beta(pbit.beta))[0]

    def _fused(self, x: torch.Tensor) -> bool:
        pbit, generator = self.pbit, self.pbit.generator
        return (
            isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled()
            and fusable(pbit, self.pool.pool)  # as they are now: a pool's size may have changed since
            and pbit.ste == "mean" and "forward" not in vars(pbit)  # the fold check's probes replace it
            and not has_hooks(pbit) and not has_hooks(self.pool.pool)
            and (generator is None or generator.device.type == "cpu")
            and x.dim() == 4 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and stacked_passes.active() is None and pbit_kernel.available(x) and runs_eagerly()
        )


class _PooledPBit(torch.autograd.Function):
    """Forward: the p-bit's bits and ``p`` (as :class:`pdnn.functional._PBitFunction` draws them
    for ``key``), then the pool; backward: the kernel, or the modules' differentiable operations."""

    @staticmethod
    def forward(x, key, mode, beta):
        bits, p = F._PBitFunction.forward(x, key, mode, beta, "mean", 1)
        return nn.functional.avg_pool2d(bits, 2), p

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, mode, beta = inputs
        ctx.set_materialize_grads(False)
        ctx.mode, ctx.beta, ctx.dtype = mode, beta, x.dtype
        ctx.save_for_backward(output[1])  # p: a differentiable output, as the p-bit's own

    @staticmethod
    def backward(ctx, grad, grad_p):
        (p,) = ctx.saved_tensors
        total = None
        if grad is not None:
            if torch.is_grad_enabled() or batched_by_autograd(grad):  # the modules' own operations
                share = differentiable_shares(grad, (2, 2), p.shape)
                total = F._surrogate_gradient(share, p, ctx.mode, ctx.beta, "mean", ctx.dtype)
            else:
                total = _input_gradient(grad, p, F.surrogate_gain(ctx.mode, ctx.beta))
        if grad_p is not None:  # as the p-bit's backward pass adds it
            part = F.probability_gradient(grad_p, p, ctx.mode, ctx.beta, ctx.dtype)
            total = part if total is None else total + part
        return total, None, None, None


def _input_gradient(grad: torch.Tensor, p: torch.Tensor, gain: float) -> torch.Tensor:
    """``((g / 4) * (1 - p)) * p * gain`` per input element, ``g`` its window's pooled gradient."""
    out = torch.empty_like(p, memory_format=torch.channels_last)
    grad = grad.contiguous(memory_format=torch.channels_last)
    scalar = p.numpy().dtype.type
    with np.errstate(over="ignore"):  # a gain beyond float32 is inf, as torch's multiply makes it
        gain = scalar(gain)
    pbit_kernel._use_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731 (the storage order, as a C array)
    arguments = (nhwc(grad), nhwc(p), gain, scalar(4), scalar(1), nhwc(out))
    # what numba's signature depends on, cheaper to read than the signature (numba.typeof of the six
    # arguments took three times the kernel's call on a small input)
    key = tuple((a.dtype.char, a.flags.c_contiguous, a.flags.f_contiguous, a.flags.writeable) for a in arguments[:2])
    if key not in _compiled:  # (through the p-bit kernel's guard against a damaged cache)
        pbit_kernel._compile_one(_kernel, tuple(map(numba.typeof, arguments)))
        _compiled.add(key)
    _kernel(*arguments)
    return out


_compiled: set[tuple] = set()  # the argument kinds compiled or loaded so far


if numba is not None:
    @numba.njit(parallel=True, cache=True)
    def _kernel(grad, p, gain, four, one, out):
        # no fastmath: every product and difference is rounded as torch's kernels round it
        for n in numba.prange(p.shape[0]):
            for h in range(p.shape[1]):
                for w in range(p.shape[2]):
                    g = grad[n, h >> 1, w >> 1]
                    q = p[n, h, w]
                    for c in range(p.shape[3]):
                        out[n, h, w, c] = ((g[c] / four) * (one - q[c])) * q[c] * gain


def use_pooled_pbits(gm: fx.GraphModule) -> None:
    """Route ``gm``'s calls of a p-bit whose bits only a 2 x 2 average pool reads, and of that
    pool, through one :class:`PooledPBit` (one per pair of modules)."""
    fused: dict[tuple[str, str], str] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_module" or user.args != (node,) or user.kwargs:
            continue
        if not fusable(gm.get_submodule(node.target), gm.get_submodule(user.target)):
            continue
        pair = (node.target, user.target)
        if pair not in fused:
            pooled = PooledPBit(gm.get_submodule(node.target), gm.get_submodule(user.target))
            fused[pair] = add_module(gm, "pooled_pbit", pooled)
        with gm.graph.inserting_before(user):
            call = gm.graph.call_module(fused[pair], node.args)
        user.replace_all_uses_with(call)
        gm.graph.erase_node(user)
        gm.graph.erase_node(node)
