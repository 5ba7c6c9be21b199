"""The fused CPU p-bit (pdnn.pbit_kernel): its stream, its exact probabilities, its paths."""
import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from pdnn import functional as F
from pdnn import pbit_kernel as K

Z = 5.0  # bounds are Z standard deviations

pytestmark = pytest.mark.skipif(K.numba is None, reason="numba is not installed")


@pytest.fixture(params=["estimate", "table"])
def kernel(request, monkeypatch):
    """Each of the kernel's two ways to the bits in turn (pbit_kernel.kernel_for chooses one per
    process by speed), the other one made to fail where the forced one should run (copies of a
    repeated input always take the estimate kernel): both must give every bit of the table's
    comparison."""
    for dtype in (torch.float32, torch.float64):
        K._compile(dtype)  # before the kernels are replaced
    estimate = K._kernel

    def table_unused(*args):
        raise AssertionError("the estimate kernel was forced, the table kernel ran")

    def estimate_for_copies(x, table, gain, k0, k1, repeats, *rest):
        assert repeats > 1, "the table kernel was forced, the estimate kernel ran on one copy"
        return estimate(x, table, gain, k0, k1, repeats, *rest)

    monkeypatch.setattr(K, "kernel_for", lambda dtype: request.param)
    if request.param == "estimate":
        monkeypatch.setattr(K, "_table_copy", table_unused)
    else:
        monkeypatch.setattr(K, "_kernel", estimate_for_copies)
    return request.param


def reference_words(key: int, count: int) -> np.ndarray:
    """The stream as the module's docstring defines it, in plain Python integers."""
    def mix(h):
        h ^= h >> 16
        h = (h * 0x7FEB352D) & 0xFFFFFFFF
        h ^= h >> 15
        h = (h * 0x846CA68B) & 0xFFFFFFFF
        return h ^ (h >> 16)

    k0, k1 = key & 0xFFFFFFFF, key >> 32
    return np.array([mix(mix((i + k0) & 0xFFFFFFFF) ^ k1) >> 16 for i in range(count)])


def test_the_stream_is_the_documented_hash():
    key = 0xDEADBEEF12345678
    assert np.array_equal(K.random_words(key, 1000), reference_words(key, 1000))
    assert K.random_words(key, 0).shape == (0,)
    with pytest.raises(ValueError, match="count must be a non-negative integer, got -1"):
        K.random_words(key, -1)
    with pytest.raises(TypeError):
        K.random_words(key, 2.5)


@pytest.mark.parametrize("mode", ["bipolar", "unipolar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bits_are_the_comparison_with_the_looked_up_threshold(mode, dtype, kernel):
    n, key, beta = 100_003, 2**63 + 12345, 1.5  # odd size; a key with the top bit set
    x = torch.randn(n, dtype=dtype) * 3
    x[:3] = torch.tensor([0.0, float("inf"), -float("inf")], dtype=dtype)
    table = torch.tensor(K.thresholds(mode, beta, dtype))
    above = x > table[torch.from_numpy(K.random_words(key, n))]
    low = -1.0 if mode == "bipolar" else 0.0
    assert torch.equal(K.bits(x, mode, beta, key), torch.where(above, 1.0, low).to(dtype))


def test_the_kernel_is_chosen_by_timing_both_without_touching_torchs_generator(monkeypatch):
    monkeypatch.setattr(K, "kernel_for", K.kernel_for.__wrapped__)  # time them again, uncached
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    chosen = {dtype: K.kernel_for(dtype) for dtype in (torch.float32, torch.float64)}
    assert torch.equal(torch.rand(4), expected)
    assert set(chosen.values()) <= {"estimate", "table"}


def test_the_estimate_is_within_a_small_part_of_a_step_for_every_float32():
    # the kernel decides a bit from its estimate only more than one step away from the drawn word;
    # with the float32 roundings of the comparison (< 2**-7 step) it needs an error below ~0.98
    assert K.estimate_error() < 0.5  # every float32 in [-16, 16]: 0.059 measured


@pytest.mark.parametrize("mode", ["bipolar", "unipolar"])
@pytest.mark.parametrize("dtype, beta", [(torch.float32, 0.5), (torch.float32, 1.5), (torch.float64, 1.5),
                                         (torch.float32, 1e30), (torch.float32, 1e-30),  # ESTIMATED_BETAS's ends
                                         (torch.float32, 1e33), (torch.float32, 1e-35)])  # beyond them
def test_inputs_at_and_near_their_drawn_threshold_get_the_tables_bit(mode, dtype, beta, kernel):
    # inputs on the drawn threshold, a float either side of it and a few steps of the grid away:
    # the estimate cannot decide the first ones (the table does) and must decide the others right
    n, key = 60_000, 2**40 + 7
    table = torch.tensor(K.thresholds(mode, beta, dtype))
    r = torch.from_numpy(K.random_words(key, n))
    up, down = torch.tensor(math.inf, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)
    offset = torch.tensor([0, 0, 0, 1, -1, 2, -2, 3, -3, 0])[torch.arange(n) % 10]
    x = table[(r + offset).clamp(0, 2**16 - 1)]
    x = torch.where(torch.arange(n) % 10 == 1, x.nextafter(up), x)
    x = torch.where(torch.arange(n) % 10 == 2, x.nextafter(down), x)
    x = torch.where(torch.arange(n) % 10 == 9, torch.zeros((), dtype=dtype), x)
    above = x > table[r]
    low = -1.0 if mode == "bipolar" else 0.0
    assert torch.equal(K.bits(x, mode, beta, key), torch.where(above, 1.0, low).to(dtype))


def test_the_bits_do_not_depend_on_the_number_of_threads(monkeypatch, kernel):
    x, key = torch.randn(3, 70_001), 987654321
    parallel = K.bits(x, "bipolar", 2.0, key)
    monkeypatch.setattr(K, "PARALLEL_FROM", 2**40)  # one thread
    assert torch.equal(K.bits(x, "bipolar", 2.0, key), parallel)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.7])
@pytest.mark.parametrize("mode", ["bipolar", "unipolar"])
def test_probability_is_within_half_a_16_bit_step_of_the_ideal(mode, beta, dtype):
    # P(b = 1 | x) = (number of thresholds below x) / 2**16 exactly, for every x of the dtype: in
    # float32 too, where a threshold rounded up had put x = 1.0096319913864136 at 1.0015 half steps
    table = torch.tensor(K.thresholds(mode, beta, dtype))
    assert torch.all(table[1:] > table[:-1])
    x = torch.cat([torch.linspace(-12, 12, 20_001, dtype=dtype), table, table.nextafter(
        torch.tensor(math.inf, dtype=dtype))])
    p = torch.searchsorted(table, x, right=False).double() / 2**16  # table[r] < x
    x = x.double()  # (exactly)
    ideal = (1 + torch.tanh(beta * x)) / 2 if mode == "bipolar" else torch.sigmoid(beta * x)
    half_step = 2.0**-17 * (1 + 1e-9)  # the bound is reached at x = table[r], up to rounding
    assert (p - ideal).abs().max() <= half_step
    # a bit is certain only where the ideal probability is within half a step of 0 or 1
    certain = (p == 0) | (p == 1)
    assert certain.any() and torch.all(torch.minimum(ideal, 1 - ideal)[certain] <= half_step)


def test_words_are_uniform_and_independent():
    n = 1 << 18
    r = torch.from_numpy(K.random_words(42, 2 * n))
    bits = (r[:, None] >> torch.arange(16)) & 1
    assert torch.all((bits.double().mean(0) - 0.5).abs() <= Z * math.sqrt(0.25 / (2 * n)))
    # 256 cells of the top byte: chi-square with 255 degrees of freedom, mean 255, sd sqrt(510)
    counts = torch.bincount(r >> 8, minlength=256).double()
    chi2 = ((counts - 2 * n / 256) ** 2 / (2 * n / 256)).sum().item()
    assert abs(chi2 - 255) <= Z * math.sqrt(2 * 255)
    u = r.double() / 2**16 - 0.5  # neighbours, and the same index under another key
    other = torch.from_numpy(K.random_words(43, 2 * n)).double() / 2**16 - 0.5
    for a, b in [(u[:-1], u[1:]), (u, other), (u[0::2], u[1::2])]:
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) <= Z / math.sqrt(len(a))


def test_pbit_takes_the_kernel_on_the_cpu_and_the_generator_fixes_its_bits():
    x = torch.randn(5000)
    key = K.draw_key(torch.Generator().manual_seed(11))
    assert torch.equal(F.pbit(x, "bipolar", 2.0, torch.Generator().manual_seed(11)), K.bits(x, "bipolar", 2.0, key))
    y = x.clone().requires_grad_()  # the training path draws the same bits
    assert torch.equal(F.pbit(y, "bipolar", 2.0, torch.Generator().manual_seed(11)).detach(),
                       K.bits(x, "bipolar", 2.0, key))


def test_a_signed_key_gives_the_bits_of_its_unsigned_twin():
    x = torch.randn(1000)
    assert torch.equal(K.bits(x, "bipolar", 1.0, -5), K.bits(x, "bipolar", 1.0, 2**64 - 5))


def test_training_under_the_profiler_recording_shapes():
    # the profiler records an autograd function's arguments as int64: the key must fit
    x = torch.randn(64, 32, requires_grad=True)
    with torch.profiler.profile(record_shapes=True):
        F.pbit(x, "bipolar", 1.0, torch.Generator().manual_seed(3)).sum().backward()
    assert x.grad is not None


def test_a_strided_input_gives_the_bits_of_its_contiguous_copy(kernel):
    x = torch.randn(64, 300).t()
    assert not x.is_contiguous()
    assert torch.equal(K.bits(x, "unipolar", 1.0, 5), K.bits(x.contiguous(), "unipolar", 1.0, 5))


def test_the_kernel_leaves_torchs_thread_count_alone():
    import subprocess
    import sys

    # a fresh process, so that numba's thread pool starts inside the kernel's first call
    code = ("import torch; from pdnn import functional as F; torch.set_num_threads(1); "
            "F.pbit(torch.zeros(1 << 16)); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_a_forked_child_takes_the_torch_path():
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    K.bits(torch.zeros(1 << 16), "bipolar", 1.0, 1)  # the parent's threads are running
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_available_and_bits) == (False, 1 << 16)


def _available_and_bits():
    torch.set_num_threads(1)  # as DataLoader workers do: torch's own threads do not survive fork either
    return K.available(torch.zeros(1)), int(F.pbit(torch.zeros(1 << 16)).abs().sum())


def test_with_numbas_jit_disabled_pbits_take_the_torch_path():
    # NUMBA_DISABLE_JIT=1 leaves the kernel's functions uncompiled Python: p-bits and the fused
    # p-bit and pool, forward and backward, take torch's path rather than failing, and the
    # stream's words are still there to check
    script = """if True:
        import torch
        from torch import nn
        from pdnn import pbit_kernel as K
        from pdnn.nn import PBit
        from pdnn.pooled_pbit import PooledPBit
        x = torch.randn(2, 4, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
        assert not K.available(x)
        for module in (PBit(), PooledPBit(PBit(), nn.AvgPool2d(2))):
            module(x).sum().backward()
        assert x.grad.isfinite().all() and set(PBit()(x).unique().tolist()) == {-1.0, 1.0}
        print(K.random_words(2**63 + 5, 1000).tolist())  # the stream, as with the JIT
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    assert done.returncode == 0 and done.stdout == f"{K.random_words(2**63 + 5, 1000).tolist()}\n", done.stderr


def test_an_out_the_bits_cannot_be_written_to_is_refused(kernel):
    # over its own input a few finite inputs came out NaN (an unsure bit is written as NaN and
    # settled from the input afterwards); a strided out got the bits in a copy, and one of fewer
    # elements only some of them
    base = torch.randn(4 * 50_000 + 1)
    x = base[:-1].view(4, 50_000)
    for out in (x, base[1:].view(4, 50_000)):
        with pytest.raises(ValueError, match="out shares memory with the input"):
            K.bits(x, "bipolar", 1.0, 5, out=out)
    for out in (torch.empty(3, 50_000), torch.empty(4, 50_000, dtype=torch.float64), torch.empty(50_000, 4).t()):
        with pytest.raises(ValueError, match=r"out must be a dense torch.float32 tensor of shape \(4, 50000\)"):
            K.bits(x, "bipolar", 1.0, 5, out=out)
    channels_last = x[:, :75].reshape(4, 3, 5, 5).to(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"laid out as the input \(channels-last\), got .* strides \(75, 25, 5, 1\)"):
        K.bits(channels_last, "bipolar", 1.0, 5, out=torch.empty(4, 3, 5, 5))
    out = torch.empty(8, 50_000)
    K.bits(x, "bipolar", 1.0, 5, out=out[:4])  # next to each other in one tensor: fine
    assert torch.equal(out[:4], K.bits(x, "bipolar", 1.0, 5))


def test_a_channels_last_input_keeps_its_memory_format(kernel):
    x = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last)
    out = K.bits(x, "bipolar", 1.0, 9)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # the kernel runs in storage order: the bits of the same storage laid out as NHWC
    nhwc = K.bits(x.permute(0, 2, 3, 1).contiguous(), "bipolar", 1.0, 9)
    assert torch.equal(out, nhwc.permute(0, 3, 1, 2))


def test_inputs_the_kernel_does_not_serve_take_the_torch_path():
    assert K.available(torch.zeros(3))
    assert not K.available(torch.zeros(3, dtype=torch.bfloat16))
    assert not K.available(torch.zeros(3, device="meta"))


def test_the_key_is_drawn_in_and_out_of_inference_mode():
    # the scalar a key is drawn into is made once per thread; made in inference mode, it must still
    # take draws outside it. A fresh thread makes its own (an error there leaves ``keys`` short)
    import threading

    keys = []

    def draw():
        with torch.inference_mode():
            keys.append(K.draw_key(torch.Generator().manual_seed(1)))
        keys.append(K.draw_key(torch.Generator().manual_seed(1)))

    thread = threading.Thread(target=draw)
    thread.start()
    thread.join()
    word = torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=torch.Generator().manual_seed(1))
    assert keys == [word.item()] * 2


def test_a_cpu_input_gets_its_bits_under_another_default_device(monkeypatch):
    # torch.set_default_device("meta") (as used to build large models without memory) must not move
    # what the kernel makes for a CPU input: the key's scalar (per thread: a fresh one here), the
    # output of copies and the inputs kernel_for times (uncached here)
    import threading

    x, generator = torch.randn(300, 64), torch.Generator()
    monkeypatch.setattr(K, "kernel_for", K.kernel_for.__wrapped__)
    expected = [K.bits(x, "bipolar", 1.0, K.draw_key(generator.manual_seed(5)), repeats) for repeats in (1, 3)]
    got = []

    def draw():
        with torch.device("meta"):
            got.extend(K.bits(x, "bipolar", 1.0, K.draw_key(generator.manual_seed(5)), repeats) for repeats in (1, 3))

    thread = threading.Thread(target=draw)
    thread.start()
    thread.join()
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, expected))


# copies of a large input in one call (sharing the estimate), one call on the copy (small), a
# channels-last input, and a channel slice of one (not dense: its bits were numbered in a
# contiguous copy's order, the repeated tensor's in channels-last order, R231); NaN inputs, and a
# beta whose every draw takes the table
@pytest.mark.parametrize("shape, channels_last", [((3, 70_001), False), ((2, 5), False), ((4, 3, 40, 40), True),
                                                  ((2, 64, 16, 16), "sliced")])
@pytest.mark.parametrize("beta", [1.5, 1e33])
def test_bits_of_repeats_are_the_bits_of_the_repeated_tensor(shape, channels_last, beta, kernel):
    x = torch.randn(shape) / beta
    x.view(-1)[::7] = math.nan
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if channels_last == "sliced":
        x = x[:, :32]
        assert x.numel() >= K.PARALLEL_FROM and not x.is_contiguous(memory_format=torch.channels_last)
    key = (2**32 - 1000) | (77 << 32)  # the low half wraps within the second copy
    out = K.bits(x, "bipolar", beta, key, repeats=3)
    torch.testing.assert_close(out, K.bits(torch.cat([x] * 3), "bipolar", beta, key), rtol=0, atol=0, equal_nan=True)
    assert 0 < (out == 1).float().mean() < 1
    assert out.is_contiguous(memory_format=torch.channels_last) == bool(channels_last)


@pytest.mark.parametrize("forced", [None, "estimate", "table"])  # None: kernel_for times the two
def test_the_first_compile_is_quiet_and_compiles_each_loop_once_at_16_lanes(tmp_path, forced):
    # forced onto numba's parallel kernel, the 16-lane option made LLVM print "loop not
    # vectorized" remarks; a loop compiled on demand, for argument types _compile did not foresee,
    # would silently take LLVM's narrower width; and the option is process-wide, so two threads
    # making their first calls at once (float32 and float64 here) must not compile at each
    # other's width; nor may a kernel forced (as the tests force them) skip the compile
    script = """if True:
        import re, threading
        import torch
        from pdnn import pbit_kernel as K
        if FORCED:
            K.kernel_for = lambda dtype: FORCED
        start = threading.Barrier(2)
        def first_calls(dtype):
            x = torch.randn(3, 50_000, dtype=dtype)
            start.wait()
            K.bits(x, "bipolar", 1.0, 1); K.bits(x, "unipolar", 2.0, 2, repeats=3)
            K.bits(x.t(), "bipolar", 1.0, 3, out=torch.empty(50_000, 3, dtype=dtype))
        threads = [threading.Thread(target=first_calls, args=(d,)) for d in (torch.float32, torch.float64)]
        [t.start() for t in threads]; [t.join() for t in threads]
        expected = {}
        for dtype in (torch.float32, torch.float64):
            for loop, signature in K.loop_signatures(dtype).items():
                expected.setdefault(loop.__name__, set()).add(signature)
                assert re.search(r"<16 x (i32|float|double)>", loop.inspect_llvm(signature)), (loop, signature)
        compiled = {loop.__name__: set(loop.signatures) for loop in K.loop_signatures(torch.float32)}
        assert compiled == expected, (compiled, expected)
        assert len(K._table_copy.signatures) == 2  # the table kernel: at 16 lanes where LLVM gathers (below)
        for code in K._table_copy.inspect_llvm().values():
            assert bool(re.search(r"<16 x i32>", code)) == K._gathers()
        print("ok")
    """
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # a first compile, not a cache load
    done = subprocess.run([sys.executable, "-c", script.replace("FORCED", repr(forced))], capture_output=True,
                          text=True, env=environment, timeout=300)
    assert done.returncode == 0 and done.stdout == "ok\n" and done.stderr == "", done.stderr


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="compiles for x86 processors")
@pytest.mark.parametrize("cpu, gathers", [("skylake-avx512", True), ("znver4", True), ("znver3", False),
                                          ("haswell", False)])
def test_the_table_kernel_gathers_where_llvm_can_and_compiles_quietly_where_it_cannot(tmp_path, cpu, gathers):
    # compiled for the named processor with its own features (NUMBA_CPU_FEATURES empty: numba
    # takes the host's otherwise, so that the answer followed the machine the tests ran on, not the
    # name) and not run: LLVM gathers the thresholds 16 at a time where its tuning for the processor
    # judges gathers fast (Intel's targets from Skylake on, AMD's Zen 4); elsewhere (Zen 3, Haswell)
    # it reads them one by one, and forced to 16 lanes it printed three "loop not vectorized" remarks
    # on the first compile, which a user saw on first use: there the table kernel takes LLVM's own width
    script = """if True:
        import re, torch
        from pdnn import pbit_kernel as K
        K._compile(torch.float32)
        code = next(iter(K._table_copy.inspect_llvm().values()))
        print(K._gathers(), bool(re.search(r"<16 x i32>", code)), bool(re.search(r"<16 x float> @llvm.masked.gather", code)))
    """
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_CPU_NAME": cpu,
                   "NUMBA_CPU_FEATURES": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == f"{gathers} {gathers} {gathers}\n"


def test_a_damaged_kernel_cache_is_compiled_afresh_and_said_once(tmp_path):
    """A cache file cut short or overwritten made every p-bit call fail with numba's unpickling
    traceback, and a data file holding another signature's code (float64's where float32's was
    indexed) made every call fail to unbox its arrays; the pooled p-bit's backward kernel alike.
    Now: one warning naming the folder, the same bits, and the cache written again (an index that
    cannot be written: the kernel compiled without the cache for that process)."""
    script = """if True:
        import sys, torch
        import numba.core.caching
        if sys.argv[1] == "unwritable":
            def refuse(self):
                raise PermissionError(13, "Permission denied")
            numba.core.caching.Cache.flush = refuse
        from pdnn.functional import pbit
        from pdnn.pooled_pbit import _input_gradient
        x = torch.linspace(-2, 2, 64)
        for dtype in (torch.float32, torch.float64):
            print(pbit(x.to(dtype), generator=torch.Generator().manual_seed(0)).tolist())
            grad, p = x[:16].reshape(1, 1, 4, 4).to(dtype), x.sigmoid().reshape(1, 1, 8, 8).to(dtype)
            print(_input_gradient(grad, p, 2.0).tolist())  # the pooled p-bit's backward kernel
    """
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run(how="writable"):
        done = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, env=environment,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout, [line for line in done.stderr.splitlines() if "Warning" in line]

    def said_once(said, why="", aside=""):
        return (len(said) == 1 and f"numba's cache of pdnn's CPU kernels in {tmp_path}" in said[0]
                and f"could not be used ({why}" in said[0]
                and said[0].endswith(f"); compiled afresh{aside}. Delete that folder if this recurs"))

    bits, said = run()
    assert said == []
    for first in tmp_path.rglob("*.1.nbc"):  # each loop's float32 and float64 code, swapped
        second = first.with_name(first.name.replace(".1.nbc", ".2.nbc"))
        first_code, second_code = first.read_bytes(), second.read_bytes()
        first.write_bytes(second_code)
        second.write_bytes(first_code)
    again, said = run()
    assert again == bits and said_once(said, "TypeError: its entry holds the code of another signature")
    files = sorted(tmp_path.rglob("*.nb[ic]"))
    for i, path in enumerate(files):  # cut short, and overwritten
        path.write_bytes(path.read_bytes()[:40] if i % 2 else b"\x80\x05garbage")
    for how, aside in (("unwritable", " without the cache for this process (its index cannot be written)"),
                       ("writable", ""), ("writable", None)):
        again, said = run(how)
        assert again == bits
        assert said == [] if aside is None else said_once(said, aside=aside)
