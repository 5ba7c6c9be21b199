"""Transposed linear layers compute what ``F.linear`` computes, and step aside wherever they do
not apply."""
import pytest
import torch
from torch import nn

from pdnn import SampledModel, transposed_linear
from pdnn.nn import PBit, QuantLinear
from pdnn.transposed_linear import MIN_WEIGHTS, ROWS, TransposedLinear, eligible, plain_linear

OUT, IN = 2048, 1024  # 2**21 weights = MIN_WEIGHTS


def big_linear(bias=True):
    torch.manual_seed(0)
    return nn.Linear(IN, OUT, bias=bias)


@pytest.mark.parametrize("rows", [ROWS.start, 16, ROWS.stop - 1])
@pytest.mark.parametrize("bias", [True, False])
def test_transposed_product_equals_linear(rows, bias):
    linear = big_linear(bias)
    layer = TransposedLinear(linear)
    x = torch.randn(rows, IN).sign()
    with torch.no_grad():
        assert layer.serves(x)
        out = layer(x)
        torch.testing.assert_close(out, linear(x), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous() and out.shape == (rows, OUT)


def test_outside_its_range_it_is_the_layer_itself():
    linear = big_linear()
    layer = TransposedLinear(linear)
    with torch.no_grad():
        for x in (torch.randn(ROWS.start - 1, IN), torch.randn(ROWS.stop, IN), torch.randn(2, 16, IN),
                  torch.randn(16, IN, dtype=torch.float64)):
            assert not layer.serves(x)
            if x.dtype == torch.float32:
                assert torch.equal(layer(x), linear(x))


def test_with_autograd_or_hooks_it_is_the_layer_itself():
    linear = big_linear()
    layer = TransposedLinear(linear)
    x = torch.randn(16, IN)
    assert not layer.serves(x)  # the weight requires a gradient
    assert torch.equal(layer(x), linear(x))
    layer(x).sum().backward()
    assert linear.weight.grad is not None
    seen = []
    linear.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert not layer.serves(x)
        assert torch.equal(layer(x), linear(x))
    assert seen == [(16, OUT), (16, OUT)]


def test_a_changed_weight_is_seen():
    linear = big_linear()
    layer = TransposedLinear(linear)
    x = torch.randn(16, IN)
    with torch.no_grad():
        layer(x)
        linear.weight.data.mul_(-1)  # through .data: no version counter moves, and nothing is cached
        torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)


def test_plain_linear_layers_are_those_whose_forward_is_f_linear_of_their_weight():
    assert plain_linear(nn.Linear(4, 3)) and plain_linear(QuantLinear(4, 3))
    assert not plain_linear(QuantLinear(4, 3, weight_bits=4))

    class Custom(nn.Linear):  # may redefine forward
        pass

    assert not plain_linear(Custom(4, 3))


def test_only_large_plain_layers_are_eligible():
    assert eligible(nn.Linear(IN, OUT)) and eligible(QuantLinear(IN, OUT))
    assert not eligible(nn.Linear(IN, MIN_WEIGHTS // IN - 1))
    assert not eligible(QuantLinear(IN, OUT, weight_bits=4))


def test_sampled_model_uses_it_by_default_and_matches_f_linear(monkeypatch):
    served = []
    serves = TransposedLinear.serves
    monkeypatch.setattr(TransposedLinear, "serves", lambda self, x: served.append(serves(self, x)) or served[-1])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, IN), PBit(), nn.Linear(IN, OUT), PBit(), nn.Linear(OUT, 10)).eval()
    x = torch.randn(1, 32)
    with torch.no_grad():
        fast = SampledModel(net, 16, seed=3)(x)
        assert True in served
        monkeypatch.setattr(transposed_linear, "ROWS", range(0))  # every call takes F.linear
        plain = SampledModel(net, 16, seed=3)(x)
    assert not any(isinstance(m, TransposedLinear) for m in net.modules())  # the user's model is untouched
    # the same bits, unless a pre-activation within float rounding of a threshold flips one
    # (a flip moves an output by 2 |w| / 16 < 0.01)
    torch.testing.assert_close(fast, plain, rtol=0, atol=0.05)


def test_under_cpu_autocast_it_is_the_layer_itself():
    linear = big_linear()
    layer = TransposedLinear(linear)
    x = torch.randn(16, IN)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.serves(x)
        out = layer(x)
        assert out.dtype == torch.bfloat16 and torch.equal(out, linear(x))


def test_hooks_registered_for_every_module_make_both_faster_gemms_step_aside():
    from pdnn.packed_linear import PackedLinear

    linear = big_linear()
    x = torch.randn(16, IN)
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(type(m)))
    try:
        with torch.no_grad():
            for wrapper in (TransposedLinear(linear), PackedLinear(linear)):
                seen.clear()
                assert torch.equal(wrapper(x), linear(x))
                assert seen.count(nn.Linear) == 2  # the wrapper called the layer, as did the reference
    finally:
        handle.remove()
