import pytest
import torch
from torch import nn

from pdnn import SampledModel, sampling
from pdnn.models import create
from pdnn.nn import PBit
from pdnn.pooling import DisjointAvgPool2d, disjoint


def pooled_and_gradient(pool: nn.Module, x: torch.Tensor, upstream_seed: int = 1):
    x = x.detach().requires_grad_()
    out = pool(x)
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(upstream_seed))
    (grad,) = torch.autograd.grad(out, x, upstream)
    return out, grad


@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
@pytest.mark.parametrize("shape", [(2, 3, 12, 12), (2, 3, 13, 11), (3, 12, 12)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_lean_backward_is_torchs_exactly(kernel, shape, channels_last, dtype):
    x = torch.randn(shape, dtype=dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    pool = nn.AvgPool2d(kernel)
    out, grad = pooled_and_gradient(pool, x)
    lean_out, lean_grad = pooled_and_gradient(DisjointAvgPool2d(pool), x)
    assert torch.equal(lean_out, out)
    assert torch.equal(lean_grad, grad)  # division by 9 too: the same rounding as torch's kernel
    assert lean_grad.stride() == grad.stride()


@pytest.mark.parametrize("kernel, shape", [(2, (2, 3, 12, 12)), (3, (2, 3, 13, 11)), ((2, 3), (3, 12, 12))])
def test_second_derivatives_are_torchs(kernel, shape):
    """A gradient penalty differentiates the backward pass (``create_graph=True``)."""
    x = torch.randn(shape, dtype=torch.float64)
    found = []
    for pool in (nn.AvgPool2d(kernel), DisjointAvgPool2d(nn.AvgPool2d(kernel))):
        xi = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad((pool(xi) ** 3).sum(), xi, create_graph=True)
        found.append(torch.autograd.grad((grad**2).sum(), xi))
    torch.testing.assert_close(found[1], found[0], rtol=1e-12, atol=1e-12)


def test_the_lean_pool_keeps_nothing_for_the_backward_pass():
    saved = []
    x = torch.randn(4, 3, 8, 8, requires_grad=True) * 1.0  # an intermediate, as a p-bit's output is
    for pool in (nn.AvgPool2d(2), DisjointAvgPool2d(nn.AvgPool2d(2))):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
            pool(x)
        assert len(saved) == (1 if type(pool) is nn.AvgPool2d else 0)


@pytest.mark.parametrize("pool, expected", [
    (nn.AvgPool2d(2), True), (nn.AvgPool2d((2, 3), stride=(2, 3)), True), (nn.AvgPool2d(3, stride=3), True),
    (nn.AvgPool2d(3, stride=2), False), (nn.AvgPool2d(2, padding=1), False), (nn.AvgPool2d(2, ceil_mode=True), False),
    (nn.AvgPool2d(2, divisor_override=3), False), (nn.MaxPool2d(2), False),
    (type("MyPool", (nn.AvgPool2d,), {})(2), False),  # a subclass may redefine forward
])
def test_only_plain_disjoint_average_pools_qualify(pool, expected):
    assert disjoint(pool) is expected


def test_under_torch_func_transforms_the_pool_itself_runs():
    from torch.func import grad, vmap

    x, lean, pool = torch.randn(2, 3, 6, 6), DisjointAvgPool2d(nn.AvgPool2d(2)), nn.AvgPool2d(2)
    assert torch.equal(grad(lambda v: lean(v).square().sum())(x), grad(lambda v: pool(v).square().sum())(x))
    assert torch.equal(vmap(lean)(x[:, None]), vmap(pool)(x[:, None]))


@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_hooks_on_the_pool_still_run(kind):
    pool, calls = nn.AvgPool2d(2), []
    if kind == "forward":
        pool.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    else:
        pool.register_full_backward_hook(lambda module, grad_in, grad_out: calls.append(grad_out[0].shape))
    pooled_and_gradient(DisjointAvgPool2d(pool), torch.randn(1, 2, 4, 4))
    assert calls == [torch.Size([1, 2, 2, 2])]


def backward_names(out: torch.Tensor) -> list[str]:
    """The names of the autograd graph's nodes behind ``out``."""
    names, todo, seen = [], [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo += [next_node for next_node, _ in node.next_functions]
    return names


def test_sample_aware_training_of_the_reference_cnn_is_unchanged(monkeypatch):
    # its pools follow p-bits, which pdnn.pooled_pbit fuses with them (tested there): off here
    monkeypatch.setattr(sampling, "use_pooled_pbits", lambda gm: None)
    torch.manual_seed(0)
    net = create("cnn", neuron="pbit", input_shape=(3, 16, 16), width=4)
    x = torch.randn(3, 3, 16, 16)
    runs = []
    for lean in (True, False):
        if not lean:
            monkeypatch.setattr(sampling, "use_disjoint_pools", lambda gm: None)
        sampled = SampledModel(net, 4, reduce="none", seed=5)
        out = sampled(x)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        runs.append((out, torch.autograd.grad(out, list(net.parameters()), upstream)))
        assert backward_names(out).count("_DisjointAvgPoolBackward") == (3 if lean else 0)
    (out, grads), (plain_out, plain_grads) = runs
    assert torch.equal(out, plain_out)
    assert all(torch.equal(g, h) for g, h in zip(grads, plain_grads))


@pytest.mark.parametrize("attribute, value", [("stride", 1), ("padding", 1), ("ceil_mode", True),
                                              ("divisor_override", 1)])
def test_a_pool_changed_on_the_live_model_is_pooled_as_it_now_is(attribute, value):
    """The wrapper kept pooling disjoint windows under autograd after the pool's windows were
    changed on the model (R119 D4: a difference of 0.62-0.70 from a fresh sampler)."""
    def build():
        torch.manual_seed(2)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PBit(), nn.Conv2d(8, 8, 3, padding=1), nn.AvgPool2d(2),
                             PBit(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(7))
    net, fresh = build(), build()
    live = SampledModel(net, samples=4, reduce="none", seed=0)
    live(x)
    for model in (net, fresh):
        setattr(model[3], attribute, value)
    live.seed = 0
    assert torch.equal(live(x), SampledModel(fresh, samples=4, reduce="none", seed=0)(x))
