"""Packed linear layers compute what ``F.linear`` computes, repack when the weight changes, and
step aside wherever they do not apply."""
import pytest
import torch
from torch import nn

from pdnn import SampledModel
from pdnn.nn import PBit, QuantLinear
from pdnn.packed_linear import MIN_WEIGHTS, ROWS, PackedLinear, available, eligible

pytestmark = pytest.mark.skipif(not available(), reason="no oneDNN linear kernels in this torch build")

FEATURES = 1024  # 1024 x 1024 = 2**20 weights >= MIN_WEIGHTS


def big_linear(bias=True):
    torch.manual_seed(0)
    return nn.Linear(FEATURES, FEATURES, bias=bias)


def used_packed(layer: PackedLinear) -> bool:
    return layer._packed is not None


@pytest.mark.parametrize("rows", [ROWS.start, 16, ROWS.stop - 1])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_product_equals_linear(rows, bias):
    linear = big_linear(bias)
    packed = PackedLinear(linear)
    x = torch.randn(rows, FEATURES).sign()
    with torch.no_grad():
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
    assert used_packed(packed)


def test_outside_its_range_it_is_the_layer_itself():
    linear = big_linear()
    packed = PackedLinear(linear)
    with torch.no_grad():
        for x in (torch.randn(1, FEATURES), torch.randn(ROWS.stop, FEATURES), torch.randn(2, 8, FEATURES)):
            assert torch.equal(packed(x), linear(x))
        double = PackedLinear(big_linear().double())
        x = torch.randn(8, FEATURES, dtype=torch.float64)
        assert torch.equal(double(x), double.linear(x))
    assert not used_packed(packed) and not used_packed(double)


def test_with_autograd_or_hooks_it_is_the_layer_itself():
    linear = big_linear()
    packed = PackedLinear(linear)
    x = torch.randn(8, FEATURES)
    assert torch.equal(packed(x), linear(x))  # the weight requires a gradient
    packed(x).sum().backward()
    assert linear.weight.grad is not None
    seen = []
    linear.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert torch.equal(packed(x), linear(x))
    assert seen == [(8, FEATURES), (8, FEATURES)] and not used_packed(packed)


def test_under_cpu_autocast_it_is_the_layer_itself():
    linear = big_linear()
    packed = PackedLinear(linear)
    x = torch.randn(8, FEATURES)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = packed(x)
        assert out.dtype == torch.bfloat16 and torch.equal(out, linear(x))
    assert not used_packed(packed)


def test_a_weight_made_under_inference_mode_is_not_packed():
    """Such a weight has no version counter: a change in place could not be told from the stamp."""
    with torch.inference_mode():
        linear = big_linear()
        packed = PackedLinear(linear)
        x = torch.randn(8, FEATURES)
        assert torch.equal(packed(x), linear(x))
    assert not used_packed(packed)
    with torch.inference_mode():
        net = nn.Sequential(nn.Linear(64, FEATURES), PBit(), big_linear(), PBit(), nn.Linear(FEATURES, 10)).eval()
        out = SampledModel(net, samples=16, pack_weights=True, seed=0)(torch.randn(1, 64))
    assert out.shape == (1, 10)


def test_repacks_when_the_weight_changes():
    linear = big_linear()
    packed = PackedLinear(linear)
    x = torch.randn(8, FEATURES)
    with torch.no_grad():
        packed(x)
        linear.weight.mul_(-1)  # in place, as an optimiser step: the version counter moves
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
        linear.load_state_dict(big_linear().state_dict())
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
        linear.weight = nn.Parameter(torch.zeros_like(linear.weight))  # a new tensor
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


def test_repacks_after_changes_torch_does_not_count():
    """A fused optimiser's step and a change through .data leave the weight's version counter as
    it was: the packed copy of the old weights went on serving (R119: a max difference of 11)."""
    linear = big_linear()
    packed = PackedLinear(linear)
    x = torch.randn(8, FEATURES)
    optimiser = torch.optim.Adam(linear.parameters(), lr=0.1, fused=True)
    with torch.no_grad():
        packed(x)
    linear(x).pow(2).sum().backward()
    version = linear.weight._version
    optimiser.step()
    assert linear.weight._version == version  # (what the stamp alone could not see)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
        linear.weight.data.mul_(-1)
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


def test_only_large_plain_layers_are_eligible():  # plain: tests/test_transposed_linear.py
    assert eligible(nn.Linear(FEATURES, FEATURES)) and eligible(QuantLinear(FEATURES, FEATURES))
    assert not eligible(nn.Linear(FEATURES, MIN_WEIGHTS // FEATURES - 1))
    assert not eligible(QuantLinear(FEATURES, FEATURES, weight_bits=4))


def packed_calls(monkeypatch) -> list:
    """The wrappers whose forward runs from now on, in call order."""
    calls = []
    forward = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: calls.append(self) or forward(self, x))
    return calls


def two_pbit_net() -> nn.Module:
    """A seeded MLP whose middle layer is large enough to pack."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, FEATURES), PBit(), nn.Linear(FEATURES, FEATURES), PBit(),
                         nn.Linear(FEATURES, 10)).eval()


def test_sampled_model_with_packed_weights_matches_the_unpacked_one(monkeypatch):
    wrappers = packed_calls(monkeypatch)
    net = two_pbit_net()
    x = torch.randn(1, 32)
    plain, packed = SampledModel(net, 16, seed=3), SampledModel(net, 16, seed=3, pack_weights=True)
    with torch.no_grad():
        a, b = plain(x), packed(x)
    assert not any(isinstance(m, PackedLinear) for m in net.modules())  # the user's model is untouched
    assert packed.plan(x) == "graph" and any(used_packed(m) for m in wrappers)
    # the same bits, unless a pre-activation within float rounding of a threshold flips one
    # (a flip moves an output by 2 |w| / 16 < 0.01)
    torch.testing.assert_close(a, b, rtol=0, atol=0.05)
    assert "pack_weights=True" in repr(packed)


def test_pack_weights_set_on_a_sampler_that_has_run_takes_effect(monkeypatch):
    """The folded passes were kept with the setting they were built with: packing turned off went
    on running the packed layers (and, before they compared a sample of the weights, their copies
    of weights changed through .data)."""
    calls = packed_calls(monkeypatch)
    net = two_pbit_net()
    x = torch.randn(2, 32)
    sampled = SampledModel(net, 8, reduce="none", seed=1, pack_weights=True)
    with torch.no_grad():
        sampled(x)
        assert calls
        calls.clear()
        sampled.pack_weights = False
        net[2].weight.data.mul_(-1)
        sampled.seed = 1
        out = sampled(x)
        assert not calls  # (they ran on)
        torch.manual_seed(1)
        assert torch.equal(out, net(torch.cat([x] * 8)).view(8, 2, 10))  # the current weights, unpacked
        sampled.pack_weights = True
        sampled(x)
        assert calls
    with pytest.raises(ValueError, match="pack_weights must be True or False, got 'no'"):
        sampled.pack_weights = "no"  # (taken as true)
