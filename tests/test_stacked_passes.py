"""Passes of a split batch stacked into one pass compute bit for bit what the passes do in turn."""
import pytest
import torch
from torch import nn

from pdnn import SampledModel, pbit_kernel, stacked_passes
from pdnn.models import create
from pdnn.nn import PBit

pytestmark = pytest.mark.skipif(pbit_kernel.numba is None, reason="stacking needs the fused p-bit kernel")


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return create("cnn", neuron="pbit", input_shape=(3, 16, 16), width=4).eval()


def in_turn(monkeypatch, sampled: SampledModel, x: torch.Tensor, calls: int = 1) -> list[torch.Tensor]:
    """``calls`` outputs of ``sampled`` on ``x`` with stacking off: passes of at most one pass."""
    with monkeypatch.context() as patch:
        patch.setattr(stacked_passes, "STACK_BYTES", 0)
        patch.setattr(stacked_passes, "STACK_BYTES_SYSTEM_MALLOC", 0)
        return [sampled(x) for _ in range(calls)]


@pytest.mark.parametrize("reduce", ["none", "mean", "vote"])
@torch.no_grad()
def test_stacked_passes_give_the_split_bit_for_bit(monkeypatch, reduce):
    """37 inputs at T = 10 in passes of 4 (the last of 1); three calls, so the stream continues
    alike; the reduction of each pass as the split reduces it."""
    model, x = cnn(), torch.randn(37, 3, 16, 16)
    stacked = SampledModel(model, 10, seed=5, max_rows=40, reduce=reduce)
    outs = [stacked(x) for _ in range(3)]
    (calls, per_stack), = stacked._stacks.values()
    assert calls == 5 and per_stack > 8  # five p-bits; every pass after the two learnt on fits one stack
    expected = in_turn(monkeypatch, SampledModel(model, 10, seed=5, max_rows=40, reduce=reduce), x, 3)
    for out, split in zip(outs, expected):
        assert torch.equal(out, split)
    assert not torch.equal(outs[0], outs[1])  # fresh draws on every call


@torch.no_grad()
def test_stacks_are_sized_by_the_bytes_of_a_p_bit_row(monkeypatch):
    model, x = cnn(), torch.randn(40, 3, 16, 16)
    row = 4 * 16 * 16 * 4  # the widest p-bit output: 4 channels of 16 x 16 float32
    monkeypatch.setattr(stacked_passes, "STACK_BYTES_SYSTEM_MALLOC", 3 * 40 * row)  # three passes of 40 rows
    monkeypatch.setattr(stacked_passes.malloc, "large_buffers_kept", lambda: False)
    sampled = SampledModel(model, 10, seed=1, max_rows=40)
    rows = []
    original = stacked_passes.Stack.unstacked
    monkeypatch.setattr(stacked_passes.Stack, "unstacked",
                        lambda self, out, samples: rows.append(len(out)) or original(self, out, samples))
    out = sampled(x)
    assert list(sampled._stacks.values()) == [(5, 3)]
    assert rows == [80, 120, 120, 80]  # the two passes learnt on, then stacks of 3, 3 and 2 passes
    assert torch.equal(out, in_turn(monkeypatch, SampledModel(model, 10, seed=1, max_rows=40), x)[0])


def noisy_model() -> nn.Module:
    """A p-bit network with a draw of torch's own between its p-bits."""
    class Noise(nn.Module):
        def forward(self, x):
            return x + 0.1 * torch.randn_like(x)

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), PBit(), Noise(), nn.Linear(8, 8), PBit(), nn.Linear(8, 3)).eval()


@torch.no_grad()
def test_passes_that_draw_more_than_keys_run_in_turn(monkeypatch):
    """The noisy model draws more than keys: nothing learnt, asked again next call."""
    model, x = noisy_model(), torch.randn(30, 6)
    sampled = SampledModel(model, 4, seed=2, max_rows=20)
    outs = [sampled(x) for _ in range(2)]
    assert not sampled._stacks
    for out, split in zip(outs, in_turn(monkeypatch, SampledModel(model, 4, seed=2, max_rows=20), x, 2)):
        assert torch.equal(out, split)


@torch.no_grad()
def test_passes_whose_stacked_pass_differs_run_in_turn(monkeypatch):
    """A stacked pass that computes other numbers than the passes in turn (here made to) is
    learnt as one pass per stack, and the passes run in turn."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), PBit(), nn.Linear(8, 8), PBit(), nn.Linear(8, 3)).eval()
    x = torch.randn(30, 6)
    original = SampledModel._stacked

    def differing(self, passes, calls):
        stacked, widest_row = original(self, passes, calls)
        return stacked + 1, widest_row

    monkeypatch.setattr(SampledModel, "_stacked", differing)
    sampled = SampledModel(model, 4, seed=2, max_rows=20)
    outs = [sampled(x) for _ in range(2)]
    assert list(sampled._stacks.values()) == [(2, 1)]
    for out, split in zip(outs, in_turn(monkeypatch, SampledModel(model, 4, seed=2, max_rows=20), x, 2)):
        assert torch.equal(out, split)


@torch.no_grad()
def test_a_p_bit_with_its_own_generator_is_not_stacked(monkeypatch):
    """Unseeded, the p-bits draw from their own generators; the stack's keys would come from
    torch's default generator instead."""
    model, x = cnn(), torch.randn(20, 3, 16, 16)
    outs = []
    for stacking in (True, False):
        for i, pbit in enumerate(m for m in model.modules() if isinstance(m, PBit)):
            pbit.generator = torch.Generator().manual_seed(i)
        sampled = SampledModel(model, 10, max_rows=20)
        outs.append(sampled(x) if stacking else in_turn(monkeypatch, sampled, x)[0])
        assert not sampled._stacks
    assert torch.equal(*outs)


@torch.no_grad()
def test_a_stacked_pass_that_fails_is_run_in_turn_from_the_same_state(monkeypatch):
    model, x = cnn(), torch.randn(24, 3, 16, 16)
    sampled = SampledModel(model, 10, seed=4, max_rows=20)
    first = sampled(x)
    assert list(sampled._stacks.values())[0][1] > 1

    def refuse(*args):
        raise stacked_passes.NotStackable("refused")

    monkeypatch.setattr(stacked_passes.Stack, "bits", refuse)
    second = sampled(x)
    monkeypatch.undo()
    assert torch.equal(torch.stack([first, second]),
                       torch.stack(in_turn(monkeypatch, SampledModel(model, 10, seed=4, max_rows=20), x, 2)))


def test_under_autograd_the_passes_run_in_turn():
    model, x = cnn(), torch.randn(20, 3, 16, 16)
    sampled = SampledModel(model, 10, seed=0, max_rows=20)
    sampled(x).sum().backward()
    assert not sampled._stacks and model[0].weight.grad is not None


def test_only_keys_drawn_tells_a_generator_that_drew_anything_else():
    generator = torch.Generator().manual_seed(3)
    start = generator.get_state()
    for _ in range(4):
        pbit_kernel.draw_key(generator)
    end = generator.get_state()
    assert stacked_passes.only_keys_drawn(start, end, 4)
    assert not stacked_passes.only_keys_drawn(start, end, 3)
    torch.rand(1, generator=generator)
    assert not stacked_passes.only_keys_drawn(start, generator.get_state(), 4)


def test_the_kernel_writes_bits_into_a_given_block():
    x = torch.randn(6, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    out = pbit_kernel.empty_bits(x, 2, channels_last=True)
    assert out.shape == (12, 3, 5, 5) and out.is_contiguous(memory_format=torch.channels_last)
    pbit_kernel.bits(x[:2], "bipolar", 1.0, 11, 2, out=out[:4])
    assert torch.equal(out[:4], pbit_kernel.bits(x[:2], "bipolar", 1.0, 11, 2))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_a_stack_draws_each_block_as_its_pass_would(layout):
    """Two passes of 2 and 3 inputs at T = 4: the first p-bit's copies (``repeats``) and a later
    layer's rows, each block with its pass's keys, whatever the input's memory layout."""
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4, 6)
    x = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
         "transposed": x.transpose(2, 3).contiguous().transpose(2, 3)}[layout]
    stack = stacked_passes.Stack([2, 3], [[101, 102], [201, 202]])
    shared = stack.bits(x, "bipolar", 1.0, repeats=4)
    later = stack.bits(stack.repeat(x, 4), "bipolar", 1.0, repeats=1)
    parts = x.split([2, 3])
    # the kernel draws in storage order: each pass's bits for its own rows, as it lays them out
    assert torch.equal(shared, torch.cat([pbit_kernel.bits(p, "bipolar", 1.0, k, 4)
                                          for p, k in zip(parts, (101, 201))]))
    assert torch.equal(later, torch.cat([pbit_kernel.bits(torch.cat([p] * 4), "bipolar", 1.0, k)
                                         for p, k in zip(parts, (102, 202))]))
    with pytest.raises(stacked_passes.NotStackable, match="more p-bit calls"):
        stack.bits(x, "bipolar", 1.0, repeats=1)
