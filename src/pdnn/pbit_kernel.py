"""The p-bit on the CPU in one pass: a counter-based random threshold and the comparison, fused.

Drawing p-bits with torch ops costs 7-14 times an ``nn.Tanh``: the Mersenne Twister
behind ``torch.Generator`` is serial and several elementwise passes follow it. A hardware p-bit
compares its input against a random word from a generator it owns. This kernel does the same,
per element and in parallel, with no intermediate tensor:

* the random word is a keyed hash of the element's index (two rounds of Wellons' ``lowbias32``
  mixer, each a bijection of 32-bit words): ``r = mix(mix(i + k0) ^ k1) >> 16``, 16 bits,
  uniform on ``[0, 2**16)``. The key ``(k0, k1)`` is one 64-bit draw from the caller's
  ``torch.Generator``, so seeding and checkpointing that generator still fixes every bit;
* the comparison is ``x > t_r`` with the threshold ``t_r = atanh(u_r) / beta`` for
  ``u_r = (2r + 1) / 2**16 - 1`` (the midpoints of a 16-bit grid on (-1, 1)); the unipolar
  p-bit uses ``u_r = (r + 1/2) / 2**16`` on (0, 1) and ``t_r = logit(u_r) / beta``. The 2**16
  thresholds of a temperature are a table, so no transcendental function decides a bit exactly.

Hence ``P(b = 1 | x)`` is the fraction of table entries below ``x``, the ideal probability
rounded to the 16-bit grid: within ``2**-17`` of it (half a step; the float32 table is rounded
down for this; the float64 table is numpy's ``arctanh``/``log``, within about an ulp of the exact
threshold, so an ``x`` in that ulp can be a few parts in 10**12 of a half step beyond), and
exactly 0 or 1 only where the ideal probability is that close to 0 or 1 (both tested, for every
threshold of both dtypes). A NaN input gives NaN. The bits differ from those of the torch path
(:func:`pdnn.functional.draw_thresholds`) for the same generator: both are exact to their 16-bit
grid but read different random words.

Looking ``t_r`` up element by element is a gather. Some processors gather slowly, and with the
hash in 64-bit arithmetic LLVM did not vectorise it at all without AVX-512 (on an AMD Zen 3 the
table kernel ran scalar, at 3 to 5 times a ``torch.sigmoid``). So a second kernel first decides
from an estimate: ``x > t_r`` iff ``g(x) > r``
with ``g(x) = 2**16 * P(x) - 1/2`` and ``P`` the ideal probability ``sigmoid(gain * x)`` (gain
``2 beta`` bipolar, ``beta`` unipolar); ``g`` is estimated in float32 (``exp`` by a polynomial
and squarings, which vectorise) to within 0.06 of a step for every float32 argument
(:func:`estimate_error`, run over all of them by the tests), and a bit is decided from the
estimate only where it lies more than one step from ``r``. The other draws, about 2 in 2**16,
take the table; so every bit is still the table's comparison. (For a ``beta`` outside
``ESTIMATED_BETAS``, where the error bound does not hold, every draw takes the table.)
The loops index each chunk's slices from 0: with an index of unknown sign numba wraps negative
indices, and on AVX-512 LLVM then made every load a gather and every store a scatter (three
times slower on an AMD Zen 4).

Which of the two kernels is faster depends on the processor. On an Intel Xeon with AVX-512 the
table kernel, its gather at 16 lanes, takes about 0.65 of the estimate kernel's time in float32;
on an AMD Zen 4 the estimate kernel was the faster (before the hash was 32-bit). They give the
same bits, so the first use in a process times both and keeps the faster for single tensors
(:func:`kernel_for`).
Copies of a repeated input of ``PARALLEL_FROM`` elements or more take the estimate kernel, which
draws them all in one parallel call sharing the estimate: the table kernel needs a call per copy.
(A smaller input's copies are drawn as one concatenated tensor, by either kernel.)

The kernels are compiled by numba on first use (a few seconds; cached on disk), their loops with
16-lane vectors (:func:`_compile`). They serve float32/float64 CPU
tensors (contiguous or channels-last; others are copied first) outside ``torch.func``
transforms, ``torch.compile`` and ``torch.jit.trace``; everything else takes the torch path.
"""
from __future__ import annotations

import math
import operator
import os
import threading
import time
import warnings
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch

try:
    import llvmlite.binding as llvm
    import numba
    from llvmlite import ir
    from numba.core.caching import NullCache
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    from numba.extending import intrinsic
except ImportError:  # the torch path serves every call
    numba = None

MAX_ELEMENTS = 2**32  # the counter is a 32-bit word
PARALLEL_FROM = 2**14  # below this many elements one thread is faster than waking the others
_DTYPES = (torch.float32, torch.float64)
ESTIMATED_BETAS = (1e-30, 1e30)  # beyond, thresholds reach subnormal or infinite floats: the table decides
GAIN = {"bipolar": 2.0, "unipolar": 1.0}  # P(b = 1 | x) = sigmoid(GAIN[mode] * beta * x)
_LEVELS = {(mode, dtype): tuple(map(scalar, levels)) for mode, levels in (("bipolar", (1, -1)), ("unipolar", (1, 0)))
           for dtype, scalar in zip(_DTYPES, (np.float32, np.float64))}  # (high, low): the bit's values
_JIT = numba is not None and not numba.config.DISABLE_JIT  # NUMBA_DISABLE_JIT=1, set to debug numba code: nothing compiles


class _PerThread(threading.local):
    """What the kernel keeps per calling thread (:func:`draw_key`, :func:`_use_threads`); the class
    attributes are every thread's defaults, read without the exception a missing attribute costs."""

    word: torch.Tensor | None = None  # the scalar keys are drawn into
    keys = 0  # keys drawn so far
    threads: int | None = None  # the thread count last set for numba


_per_thread = _PerThread()
_forked = False  # GNU OpenMP (numba's threads) cannot run in a child process after fork


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def available(x: torch.Tensor, repeats: int = 1) -> bool:
    """Whether this call of a p-bit (on ``x`` repeated ``repeats`` times) can take the fused kernel."""
    return (
        _JIT
        and not _forked
        and not torch.compiler.is_compiling()  # before any test of the size, which would guard a
        and not torch._C._are_functorch_transforms_active()  # dynamic one (export refused the guard)
        and not torch.jit.is_tracing()  # a traced graph would hold this call's bits as constants
        and x.is_cpu
        and x.dtype in _DTYPES
        and not x.is_sparse
        and x.numel() * repeats < MAX_ELEMENTS
    )


def draw_key(generator: torch.Generator | None) -> int:
    """One 64-bit word from ``generator`` (torch's default CPU generator if ``None``), as a
    signed integer: it passes through autograd functions, whose recorded arguments (the
    profiler's ``record_shapes``) must fit an ``int64``. The word is drawn into a scalar kept
    per thread, which halves the cost of a small p-bit layer's call; it is a normal tensor even
    when made in inference mode, so that it can be drawn into outside it as well."""
    word = _per_thread.word
    if word is None:
        with torch.inference_mode(False):
            word = _per_thread.word = torch.empty((), dtype=torch.int64, device="cpu")
    _per_thread.keys += 1
    return word.random_(-(2**63), None, generator=generator).item()


def keys_drawn() -> int:
    """How many keys :func:`draw_key` has drawn in this thread: :mod:`pdnn.stacked_passes` counts
    a pass's draws with it."""
    return _per_thread.keys


@lru_cache(maxsize=64)  # 256 KiB each; a sweep over beta must not grow it without bound
def thresholds(mode: str, beta: float, dtype: torch.dtype) -> np.ndarray:
    """The 2**16 thresholds in x: entry ``r`` is ``atanh(u_r) / beta`` (bipolar) or
    ``logit(u_r) / beta`` (unipolar), increasing in ``r``. In float32 each is rounded down, so
    that ``x > t_r`` for a float32 ``x`` is the comparison with the exact threshold (rounded to
    nearest, an ``x`` between a threshold and its rounded-up value took the low bit: 1.0015
    half steps from the ideal probability)."""
    r = np.arange(2**16, dtype=np.float64)
    if mode == "bipolar":
        table = np.arctanh((2 * r + 1) / 2**16 - 1)
    else:
        u = (r + 0.5) / 2**16
        table = np.log(u) - np.log1p(-u)
    table = table / beta
    if dtype != torch.float64:
        nearest = table.astype(np.float32)
        table = np.where(nearest > table, np.nextafter(nearest, np.float32(-np.inf)), nearest)
    table.setflags(write=False)
    return table


def random_words(key: int, count: int) -> np.ndarray:
    """The 16-bit random words ``r`` the kernel compares elements ``0 .. count-1`` against, as
    ``int64`` (for tests, and for anyone checking the stream). Computed here in numpy's uint32
    arithmetic, which wraps as the kernel's does, apart from the kernel and without numba."""
    if operator.index(count) < 0:
        raise ValueError(f"count must be a non-negative integer, got {count}")

    def mix(h):  # lowbias32, as _mix
        h = (h ^ (h >> 16)) * np.uint32(0x7FEB352D)
        h = (h ^ (h >> 15)) * np.uint32(0x846CA68B)
        return h ^ (h >> 16)
    k0, k1 = (np.uint32(half) for half in _halves(key))
    return (mix(mix(np.arange(count, dtype=np.uint32) + k0) ^ k1) >> 16).astype(np.int64)


def estimate_error() -> float:
    """The largest error, in steps of the 16-bit grid, of the kernel's float32 estimate of
    ``2**16 / (1 + exp(z))`` against float64 arithmetic, over every float32 number ``z`` with
    ``|z| <= 16``. The kernel trusts an estimate more than one step from the drawn word, so this
    must stay well below 1 (0.059 on an AMD Zen 3, in 15 s on 2 threads; the tests check it)."""
    _compile(torch.float32)  # also starts numba's threads
    _compile_one(_estimate_error, (numba.int64,))
    return float(_estimate_error(int(np.float32(16).view(np.int32))))


def _halves(key: int) -> tuple[int, int]:
    """``(k0, k1)``: the low and high 32 bits of the 64-bit key (signed or not: the same bits)."""
    return key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF


def bits(x: torch.Tensor, mode: str, beta: float, key: int, repeats: int = 1,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """The p-bits of ``x`` for the random stream ``key`` (see the module's docstring), written to
    ``out`` if given (a tensor of the result's shape, dtype and memory format, dense in it).

    ``repeats > 1``: the bits of ``x`` repeated that many times along its first dimension
    (``torch.cat([x] * repeats)``), drawn without making that copy: copy ``s`` reads the words at
    indices ``s*n .. s*n + n - 1`` of the stream (``n = x.numel()``), as the repeated tensor's
    elements do, through the key ``(k0 + s*n, k1)`` (the counter wraps at 2**32 alike). The
    estimate of ``P(b = 1 | x)`` is computed once per element for all the copies."""
    if x.requires_grad:
        x = x.detach()
    if 1 < repeats and x.numel() < PARALLEL_FROM:  # one call on the copy costs less than a call per copy
        x, repeats = torch.cat([x] * repeats), 1
    x, channels_last = dense(x)
    if out is None:
        out = empty_bits(x, repeats, channels_last)
    else:
        _check_out(out, x, repeats, channels_last)
    n = x.numel()
    if n:
        _compile(x.dtype)  # here, not only in kernel_for: a loop compiled on demand would take LLVM's width
        # copies of a large input take the estimate kernel: one parallel call for all (the table kernel's
        # gather vectorised only with a call per copy), sharing the estimate; before the thread
        # count, which timing the kernels sets
        looked_up = repeats == 1 and kernel_for(x.dtype) == "table"
        _use_threads(_threads_for(n))
        high, low = _LEVELS[mode, x.dtype]
        table = thresholds(mode, beta, x.dtype)
        source, target = _storage(x, channels_last), _storage(out, channels_last)
        k0, k1 = _halves(key)
        if looked_up:
            _table_copy(source, table, k0, k1, high, low, target)
        else:
            gain = GAIN[mode] * beta if ESTIMATED_BETAS[0] <= beta <= ESTIMATED_BETAS[1] else math.nan  # NaN: the table
            _kernel(source, table, gain, k0, k1, repeats, high, low, target)
    return out


@lru_cache(maxsize=None)
def kernel_for(dtype: torch.dtype) -> str:
    """The kernel a single ``dtype`` tensor's p-bits take in this process (copies: :func:`bits`):
    ``"table"``, every threshold looked up, or ``"estimate"`` (the module's docstring). Both give
    the same bits; which is faster depends on how fast the processor gathers, so on first use both
    are timed on 2**18 normal inputs (best of 5 calls each, interleaved: a few milliseconds) and
    the faster is kept, like cuDNN's benchmark mode. LLVM gathers the thresholds in vectors only
    where it judges gathers fast (Intel from Skylake on, not AMD's Zen): on an Intel Xeon with
    AVX-512 the table kernel took about 0.65 of the estimate kernel's time in float32 (0.8-1.0 in
    float64, so either may be kept there), on an AMD Zen 3 the estimate kernel took about 0.52 of
    the table kernel's (benchmarks/results/README.md). The inputs come from a generator of their
    own: torch's default generator is left as it was."""
    _compile(dtype)
    _use_threads(_threads_for(2**18))
    x = torch.randn(2**18, dtype=dtype, device="cpu", generator=torch.Generator().manual_seed(0)).numpy()
    out, table, (high, low) = np.empty_like(x), thresholds("bipolar", 1.0, dtype), _LEVELS["bipolar", dtype]
    calls = {"estimate": lambda: _kernel(x, table, GAIN["bipolar"], 1, 2, 1, high, low, out),
             "table": lambda: _table_copy(x, table, 1, 2, high, low, out)}
    best = dict.fromkeys(calls, math.inf)
    for _ in range(5):
        for name, call in calls.items():
            began = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - began)
    return min(best, key=best.get)


def _check_out(out: torch.Tensor, x: torch.Tensor, repeats: int, channels_last: bool) -> None:
    """Refuse an ``out`` the kernel cannot write the bits of the dense ``x`` into: one of another
    shape or dtype, or not dense in ``x``'s layout (the bits would go to a copy and be lost), or
    one sharing memory with ``x`` (the kernel writes an unsure bit as NaN, then reads its input)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if out.shape != _bits_shape(x, repeats) or out.dtype != x.dtype or not out.is_contiguous(memory_format=layout):
        raise ValueError(f"out must be a dense {x.dtype} tensor of shape {tuple(_bits_shape(x, repeats))} laid out "
                         f"as the input ({'channels-last' if channels_last else 'contiguous'}), got {out.dtype} of "
                         f"shape {tuple(out.shape)} and strides {out.stride()}")
    x0, out0 = x.data_ptr(), out.data_ptr()
    if x0 < out0 + out.numel() * out.element_size() and out0 < x0 + x.numel() * x.element_size():
        raise ValueError("out shares memory with the input: the p-bits need a tensor of their own")


def _bits_shape(x: torch.Tensor, repeats: int) -> torch.Size:
    """The shape of the bits of ``x`` repeated ``repeats`` times along its first dimension."""
    return torch.Size((repeats * x.shape[0], *x.shape[1:]) if x.dim() else ())  # a scalar has no copies


def dense(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x`` laid out densely for the kernel, which runs in storage order: as it is if contiguous
    or channels-last (4-D), else a 4-D tensor copied as ``torch.cat`` copies it (a channel slice
    of a channels-last tensor stays channels-last: the bits of ``x`` repeated are then numbered as
    those of ``torch.cat([x] * repeats)``), contiguous if that copy is neither; and whether it is
    channels-last."""
    if x.dim() == 4 and not x.is_contiguous() and not _channels_last(x):
        x = torch.cat([x])  # (other layouts the kernel reads contiguous: one copy, below)
    if x.is_contiguous():
        return x, False
    if _channels_last(x):
        return x, True
    return x.contiguous(), False


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def empty_bits(x: torch.Tensor, repeats: int, channels_last: bool) -> torch.Tensor:
    """An uninitialised tensor for the bits of the dense ``x`` repeated ``repeats`` times, laid
    out as ``x`` is (:func:`dense`). One copy's is ``torch.empty_like``: on every p-bit call, and
    cheaper than building the shape and layout."""
    if repeats == 1:
        return torch.empty_like(x)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(_bits_shape(x, repeats), dtype=x.dtype, device="cpu", memory_format=layout)


def _threads_for(elements: int) -> int:
    """How many threads the kernel draws ``elements`` p-bits on: torch's count (at most numba's),
    or one below ``PARALLEL_FROM``."""
    return min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS) if elements >= PARALLEL_FROM else 1


def _use_threads(count: int) -> None:
    """Run the kernel's next calls on ``count`` threads. numba keeps the count per calling
    thread, and so does this cache of it: reading and setting it through numba each time cost
    more than the kernel itself on a layer of a few thousand p-bits (a count set by other numba
    code in between is kept until the next change here; it changes speed, never the bits)."""
    if _per_thread.threads != count:
        _launch_threads()
        numba.set_num_threads(count)
        _per_thread.threads = count


@lru_cache(maxsize=None)
def _compile(dtype: torch.dtype) -> None:
    """Compile both kernels for ``dtype`` (or load them from numba's cache): the estimate kernel's
    loops over a chunk, and the table kernel's loop where LLVM gathers (:func:`_gathers`), with
    16-lane vectors. LLVM's own choice is 8 lanes on AVX2 and AVX-512 CPUs. On an Intel Xeon's
    AVX-512, 16 lanes took 0.41 of the time of 8, and with the 32-bit :func:`_mix` the estimate
    kernel took 0.71 of its time before them (the table kernel at 16 lanes about 0.87 of its time
    at 8); for AVX2 code the width made little difference (0.92-0.93 of the time on an AMD Zen 3;
    ``benchmarks/bench_kernel_width.py``; benchmarks/results/README.md). The option is held only
    while the loops compile (:func:`vector_width`), then set back to 0, LLVM's default: llvmlite
    cannot read an option, so a width a user forced before is not restored."""
    _launch_threads()  # loading a parallel kernel starts numba's threads: in the way that keeps torch's count
    scalar, array = _types(dtype)
    key, count, table = numba.int64, numba.int64, array.copy(readonly=True)
    with vector_width(16):
        for loop, signature in loop_signatures(dtype).items():
            _compile_one(loop, signature)
    with vector_width(16 if _gathers() else 0):
        _compile_one(_table_copy, (array, table, key, key, scalar, scalar, array))
    _compile_one(_kernel, (array, table, numba.float64, key, key, count, scalar, scalar, array))


def _compile_one(function, signature: tuple) -> None:
    """Compile ``function`` for ``signature``, or load it from numba's cache. numba trusts its
    cache files: one that cannot be read (cut short, overwritten) made every p-bit call fail with
    its unpickling traceback, and a data file holding another signature's code (two processes
    caching different dtypes at once can leave one) was loaded as this one, so that every call
    failed to unbox its arrays. Either way the index is emptied and the function compiled afresh
    (numba caches it again where it can; where the index cannot be written, the cache is left
    aside for this process), with one warning naming the folder. An error that recurs is the
    compiler's own, and is raised."""
    try:
        function.compile(signature)
        if tuple(signature) not in map(tuple, function.signatures):
            raise TypeError("its entry holds the code of another signature")
    except Exception as err:
        cache = function._cache
        if isinstance(cache, NullCache):
            raise
        try:
            cache.flush()  # an empty index in place of the one that misled numba
            aside = ""
        except OSError:
            function._cache, aside = NullCache(), " without the cache for this process (its index cannot be written)"
        function.compile(signature)
        if cache._cache_path not in _unusable_caches:
            _unusable_caches.add(cache._cache_path)
            warnings.warn(f"numba's cache of pdnn's CPU kernels in {cache._cache_path} could not be used "
                          f"({type(err).__name__}: {err}); compiled afresh{aside}. Delete that folder if this "
                          "recurs", stacklevel=2)


_unusable_caches: set[str] = set()  # the folders warned about


@contextmanager
def vector_width(lanes: int):
    """Make LLVM's loop vectoriser use ``lanes`` lanes for what numba compiles inside (0: its cost
    model decides, the default). The option is process-wide, so it is held under numba's compiler
    lock: no other thread compiles while it is set."""
    with global_compiler_lock:
        llvm.set_option("", f"-force-vector-width={lanes}")
        try:
            yield
        finally:
            llvm.set_option("", "-force-vector-width=0")


@lru_cache(maxsize=None)
def _gathers() -> bool:
    """Whether LLVM reads a float table at computed indices with vector gathers on the processor
    numba compiles for. It does where its tuning for that processor judges gathers fast: compiled
    for a processor's own features it did for Intel's targets from Skylake on, AMD's Zen 4 and
    x86-64-v4, and read the entries one by one for Zen 3, Haswell, x86-64-v3 and generic x86
    (benchmarks/results/README.md; LLVM 20 and 22). Forced to 16 lanes,
    the table kernel's parallel loop then made LLVM print three "loop not vectorized" remarks on
    standard error at its first compile; so it is forced only where this says yes. The answer comes
    from LLVM itself: a loop of the table kernel's kind (a 32-bit hash of the index, a table read,
    a store), compiled at 16 lanes into a library of its own and never run: 20 to 60 ms, once per
    process."""
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    module = ir.Module("gather_probe")
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32.as_pointer(), f32.as_pointer(), i64]),
                           "gather_probe")
    table, out, n = function.args
    table.add_attribute("noalias")
    out.add_attribute("noalias")
    entry, loop, done = function.append_basic_block(), function.append_basic_block(), function.append_basic_block()
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_signed(">", n, i64(0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(i64)
    index = builder.lshr(builder.mul(builder.trunc(i, i32), i32(0x7FEB352D)), i32(16))
    builder.store(builder.load(builder.gep(table, [builder.zext(index, i64)])), builder.gep(out, [i]))
    following = builder.add(i, i64(1))
    i.add_incoming(i64(0), entry)
    i.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", following, n), loop, done)
    ir.IRBuilder(done).ret_void()
    library = cpu_target.target_context.codegen().create_library("gather_probe")
    with vector_width(16):
        library.add_ir_module(module)
        library.finalize()
    return "@llvm.masked.gather" in library.get_llvm_str()


def _types(dtype: torch.dtype) -> tuple:
    """numba's scalar type for ``dtype`` and that of a dense 1-D array of it."""
    scalar = numba.from_dtype(np.float64 if dtype == torch.float64 else np.float32)
    return scalar, numba.types.Array(scalar, 1, "C")


def loop_signatures(dtype: torch.dtype) -> dict:
    """The argument types the kernel for ``dtype`` calls each loop over a chunk with: compiled
    for exactly these first, with 16 lanes, so that numba never compiles one on demand at LLVM's
    width (the tests check that it did not)."""
    scalar, array = _types(dtype)
    estimates = numba.types.Array(numba.float32, 1, "C")
    inputs, start, word = array, numba.int64, numba.uint32
    return {_count_unsure: (array,),
            _decide_chunk: (inputs, numba.float32, start, word, word, scalar, scalar, array),
            _estimate_chunk: (inputs, numba.float32, estimates),
            _decide_estimated: (estimates, start, word, word, scalar, scalar, array)}


def _storage(t: torch.Tensor, channels_last: bool) -> np.ndarray:
    """``t``'s elements in storage order, as a flat array sharing its memory."""
    return t.permute(0, 2, 3, 1).reshape(-1).numpy() if channels_last else t.numpy().reshape(-1)


@lru_cache(maxsize=None)
def _launch_threads() -> None:
    """Start numba's thread pool once, keeping torch's thread count: the pool's start calls
    ``omp_set_num_threads``, which binds to the OpenMP runtime torch loaded and would silently
    raise torch's count from, say, ``OMP_NUM_THREADS=1`` to every core (and so change the
    summation order of torch's own parallel reductions)."""
    threads = torch.get_num_threads()
    numba.np.ufunc.parallel._launch_threads()
    torch.set_num_threads(threads)


if numba is not None:
    _U = np.uint32

    @intrinsic
    def _mix(typingctx, h):
        """lowbias32 (C. Wellons, "Hash function prospector"), a bijection of 32-bit words, written
        in LLVM's 32-bit integers: numba computes ``uint32`` arithmetic in 64 bits, and LLVM kept
        three of the vectorised loop's four multiplications in 64-bit lanes (``vpmullq``, slow on a
        Xeon, and ``vpmuludq``)."""
        def codegen(context, builder, signature, args):
            word = ir.IntType(32)

            def xorshift(v, shift):
                return builder.xor(v, builder.lshr(v, ir.Constant(word, shift)))
            v = builder.mul(xorshift(args[0], 16), ir.Constant(word, 0x7FEB352D))
            v = builder.mul(xorshift(v, 15), ir.Constant(word, 0x846CA68B))
            return xorshift(v, 16)
        return numba.types.uint32(numba.types.uint32), codegen

    @numba.njit(inline="always")
    def _word(i, k0, k1):
        return _mix(_U(_mix(_U(_U(i) + k0)) ^ k1)) >> _U(16)

    _F = np.float32
    CHUNK = 4096  # elements decided, then settled, while they are in the L1 cache

    @numba.njit(inline="always", fastmath={"contract"})
    def one_plus_exp(z):
        """``1 + exp(z)`` in float32 for ``|z| <= 16``: ``exp(z/32)`` by its Taylor polynomial of
        degree 7 (error below 2e-7 there), squared five times. Only ``*`` and ``+``: it vectorises."""
        y = z * _F(1 / 32)
        e = _F(1) + y * (_F(1) + y * (_F(1 / 2) + y * (_F(1 / 6) + y * (_F(1 / 24) + y * (
            _F(1 / 120) + y * (_F(1 / 720) + y * _F(1 / 5040)))))))
        e = e * e
        e = e * e
        e = e * e
        e = e * e
        return _F(1) + e * e

    @numba.njit(inline="always", fastmath={"contract"})
    def _estimate(v, g):
        """``1 + exp(-g v)`` (:func:`one_plus_exp`, clamped to ``|g v| <= 16``); NaN for a NaN input,
        and for every input if ``beta`` is beyond ``ESTIMATED_BETAS`` (``g`` NaN): the table decides."""
        z = -g * _F(v)
        return _F(np.nan) if z != z else one_plus_exp(min(max(z, _F(-16)), _F(16)))

    @numba.njit(inline="always", fastmath={"contract"})
    def _decide(d, r, high, low):
        """The bit for the word ``r`` from the estimate ``d = 1 + exp(-gain x)``, or NaN: unsure.
        ``g(x) = 2**16 / d - 1/2`` to within 0.06 of a step (estimate_error); beyond ``|z| = 16``
        P(x) is within 2**-23 of 0 or 1. Rounding z (< 0.003 step), the table (< 0.001) and the
        sums below (< 2**-7) add under 0.02: a decided bit is the table's."""
        dr = d * _F(np.int32(r))
        return (high if dr + d * _F(1.5) < _F(2**16)  # g(x) > r + 1
                else low if dr - d * _F(0.5) > _F(2**16) else np.nan)  # g(x) < r - 1

    @numba.njit(inline="always")
    def _settle(xs, outs, table, start, k0, k1, high, low):
        """The unsure (NaN) bits of a chunk from the table; NaN inputs stay NaN. The scan stops at
        the last unsure bit (about one chunk in eight has any)."""
        unsure, j = _count_unsure(outs), 0
        while unsure:
            if outs[j] != outs[j]:
                v = xs[j]
                outs[j] = v if v != v else high if v > table[_word(start + j, k0, k1)] else low
                unsure -= 1
            j += 1

    # The loops over a chunk's elements are compiled apart from the parallel kernel that calls
    # them, with 16 lanes (_compile): forced on the kernel, LLVM prints "loop not vectorized"
    # remarks for the loops numba's parallel machinery adds around the chunks.
    @numba.njit(cache=True)
    def _count_unsure(outs):
        unsure = np.int32(0)
        for j in range(outs.size):
            unsure += np.int32(outs[j] != outs[j])
        return unsure

    @numba.njit(cache=True, fastmath={"contract"})
    def _decide_chunk(xs, g, start, k0, k1, high, low, outs):
        for j in range(xs.size):
            outs[j] = _decide(_estimate(xs[j], g), _word(start + j, k0, k1), high, low)

    @numba.njit(cache=True, fastmath={"contract"})
    def _estimate_chunk(xs, g, d):
        for j in range(xs.size):
            d[j] = _estimate(xs[j], g)

    @numba.njit(cache=True, fastmath={"contract"})
    def _decide_estimated(d, start, k0, k1, high, low, outs):
        for j in range(outs.size):
            outs[j] = _decide(d[j], _word(start + j, k0, k1), high, low)

    @numba.njit(parallel=True, cache=True)
    def _kernel(x, table, gain, low_key, high_key, repeats, high, low, out):
        k1, n = _U(high_key), x.size
        g = _F(gain)
        for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
            start = chunk * CHUNK
            xs = x[start:start + CHUNK]  # indices from 0: see the module's docstring
            if repeats == 1:  # one pass: estimate and decide
                k0, outs = _U(low_key), out[start:start + xs.size]
                _decide_chunk(xs, g, start, k0, k1, high, low, outs)
                _settle(xs, outs, table, start, k0, k1, high, low)
                continue
            d = np.empty(xs.size, np.float32)  # the estimates, once for every copy
            _estimate_chunk(xs, g, d)
            for s in range(repeats):  # copy s reads the words from index s*n on
                k0, outs = _U(low_key + s * n), out[s * n + start:s * n + start + xs.size]
                _decide_estimated(d, start, k0, k1, high, low, outs)
                _settle(xs, outs, table, start, k0, k1, high, low)

    # The table kernel, for one copy: LLVM vectorised the gather only in a prange over the
    # elements with nothing around it, where numba marks the arrays as not aliased (in a loop
    # over a chunk it could not tell the table from the output); a loop over copies around it
    # brought LLVM's remarks back.
    @numba.njit(parallel=True, cache=True)
    def _table_copy(x, table, low_key, high_key, high, low, out):
        k0, k1 = _U(low_key), _U(high_key)
        for i in numba.prange(x.size):
            v = x[i]
            bit = high if v > table[_word(i, k0, k1)] else low
            out[i] = v if v != v else bit

    @numba.njit(parallel=True, cache=True, fastmath={"contract"})
    def _estimate_error(last_bits):
        count = last_bits + 1  # magnitudes 0 .. last_bits as int32 bit patterns
        worst = np.zeros((count + CHUNK - 1) // CHUNK)
        for chunk in numba.prange(worst.size):
            bits = np.arange(chunk * CHUNK, min(count, chunk * CHUNK + CHUNK), dtype=np.int32)
            largest = 0.0
            for z in bits.view(np.float32):
                for signed in (z, -z):
                    exact = 2.0**16 / (1.0 + np.exp(np.float64(signed)))
                    largest = max(largest, abs(2.0**16 / np.float64(one_plus_exp(signed)) - exact))
            worst[chunk] = largest
        return worst.max()
