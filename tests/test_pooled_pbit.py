"""The p-bit and the 2 x 2 pool after it, fused in the folded training pass: bit for bit what the
two modules compute, first and second derivatives included."""
import pytest
import torch
from torch import nn

import pdnn.pooled_pbit as pooled
import pdnn.sampling as sampling
from pdnn import SampledModel
from pdnn.nn import PBit
from pdnn.models import create
from pdnn.sampling import loss_of_samples


def steps(fused: bool, model_fn, x, y, samples=4, count=3):
    """Losses and gradients of ``count`` Adam steps of a fresh model, the rewrite on or off."""
    torch.manual_seed(0)
    model = model_fn()
    optimizer = torch.optim.Adam(model.parameters())
    sampled = SampledModel(model, samples, reduce="none", seed=0)
    rewrite = sampling.use_pooled_pbits
    sampling.use_pooled_pbits = rewrite if fused else (lambda gm: None)
    try:
        history = []
        for _ in range(count):
            loss, _ = loss_of_samples(sampled(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
        return history
    finally:
        sampling.use_pooled_pbits = rewrite


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    kernel = pooled._input_gradient
    monkeypatch.setattr(pooled, "_input_gradient", lambda *args: calls.append(1) or kernel(*args))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_steps_are_those_of_the_two_modules_bit_for_bit(dtype, kernel_calls):
    torch.manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, dtype=dtype), torch.randint(0, 10, (16,))
    model_fn = lambda: create("cnn", neuron="pbit", input_shape=(3, 32, 32), width=8).to(dtype)  # noqa: E731
    fused, separate = steps(True, model_fn, x, y), steps(False, model_fn, x, y)
    assert len(kernel_calls) == 3 * 3  # three pooled p-bits, three steps
    for (loss_a, grads_a), (loss_b, grads_b) in zip(fused, separate):
        assert torch.equal(loss_a, loss_b)
        assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def small_net():
    """The first p-bit reads the deterministic prefix's output, repeated (not fused); the second is pooled."""
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), PBit(), nn.Conv2d(6, 6, 3, padding=1), PBit(beta=1.5),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)).to(memory_format=torch.channels_last)


def test_second_derivatives_are_those_of_the_two_modules(monkeypatch):
    """A gradient penalty differentiates the backward pass: it takes the modules' own operations."""
    x = torch.randn(5, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    fused_calls = []
    forward = pooled._PooledPBit.forward
    monkeypatch.setattr(pooled._PooledPBit, "forward", staticmethod(lambda *a: fused_calls.append(1) or forward(*a)))
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = small_net()
        sampled = SampledModel(model, 3, seed=0)
        monkeypatch.setattr(sampling, "use_pooled_pbits", pooled.use_pooled_pbits if fused else (lambda gm: None))
        out = sampled(x)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()), create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        results.append(torch.autograd.grad(penalty, list(model.parameters())))
    assert fused_calls
    assert all(torch.equal(a, b) and a.abs().sum() > 0 for a, b in zip(*results))


def test_other_layouts_and_hooks_run_the_two_modules():
    pbit, pool = PBit(beta=2.0), nn.AvgPool2d(2)
    fused = pooled.PooledPBit(pbit, pool)
    x = torch.randn(4, 5, 6, 6, requires_grad=True)  # contiguous: the kernel serves channels-last only
    assert not fused._fused(x) and fused._fused(x.contiguous(memory_format=torch.channels_last))
    pbit.generator = torch.Generator().manual_seed(3)
    a = fused(x)
    assert type(a.grad_fn).__name__ == "_DisjointAvgPoolBackward"  # unfused, the pool's lean backward pass
    pbit.generator = torch.Generator().manual_seed(3)
    assert torch.equal(a, pool(pbit(x)))
    handle = pool.register_forward_hook(lambda *args: None)
    assert not fused._fused(x.contiguous(memory_format=torch.channels_last))
    handle.remove()
    assert not fused._fused(x.detach().contiguous(memory_format=torch.channels_last))  # no autograd: no gain
    assert not pooled.fusable(PBit(), nn.AvgPool2d(3)) and not pooled.fusable(nn.Tanh(), nn.AvgPool2d(2))


def test_a_pool_changed_after_the_graph_was_built_is_read_live():
    """Torch layers' attributes are read at every call (docs/sampling.md): a pool made 4 x 4 after
    the first call is not fused as 2 x 2, with or without autograd."""
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), PBit(), nn.Conv2d(6, 6, 3, padding=1), PBit(),
                          nn.AvgPool2d(2), nn.Flatten()).to(memory_format=torch.channels_last)
    sampled = SampledModel(model, 3, reduce="none", seed=0)
    assert sampled(x).shape == (3, 2, 6 * 4 * 4)
    model[4].kernel_size = model[4].stride = 4
    assert sampled(x).shape == (3, 2, 6 * 2 * 2)
    with torch.no_grad():
        assert sampled(x).shape == (3, 2, 6 * 2 * 2)
