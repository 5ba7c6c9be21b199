"""The layer after a shared-input p-bit passes its input gradient once for the summed samples:
the same outputs and weight gradients as the p-bit and the layer apart, the prefix's gradients
within float rounding, and the pair itself wherever the sum does not apply."""
import pytest
import torch
from torch import nn

from pdnn import SampledModel, sampling
from pdnn.nn import PBit, QuantConv2d, QuantLinear
from pdnn.shared_bits_layer import _SummedInputGradient, _sum_of_samples, summable

SAMPLES = 5
REWRITE = sampling._pass_summed_gradients  # the rewrite itself, whatever a test patches in


def conv_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), PBit(beta=1.5), nn.Conv2d(8, 6, 3, bias=True),
                         nn.BatchNorm2d(6), PBit(), nn.Flatten())


NETS = {  # name: (network, input)
    "conv, channels-last": (conv_net, lambda: torch.randn(4, 3, 10, 10).contiguous(memory_format=torch.channels_last)),
    "conv, contiguous": (conv_net, lambda: torch.randn(4, 3, 10, 10)),
    "strided grouped dilated conv": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PBit(mode="unipolar"),
                              nn.Conv2d(8, 4, 3, stride=2, padding=2, dilation=2, groups=2), PBit(), nn.Flatten()),
        lambda: torch.randn(3, 3, 9, 9)),
    "conv1d, clipped surrogate": (
        lambda: nn.Sequential(nn.Conv1d(2, 6, 3), PBit(ste="clipped"), nn.Conv1d(6, 3, 3), nn.Flatten()),
        lambda: torch.randn(4, 2, 12) * 2),
    "conv3d, identity surrogate": (
        lambda: nn.Sequential(nn.Conv3d(2, 4, 2), PBit(ste="identity"), nn.Conv3d(4, 3, 2), nn.Flatten()),
        lambda: torch.randn(2, 2, 5, 5, 5)),
    "linear on 3-d input": (
        lambda: nn.Sequential(nn.Linear(7, 16), nn.LayerNorm(16), PBit(), nn.Linear(16, 5), PBit()),
        lambda: torch.randn(3, 4, 7)),
    "k-bit layers": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3), PBit(), QuantConv2d(8, 4, 3, weight_bits=2), PBit(), nn.Flatten(),
                              QuantLinear(4 * 6 * 6, 12, weight_bits=1), PBit(), QuantLinear(12, 3)),
        lambda: torch.randn(4, 3, 10, 10)),
}


def fused_calls(monkeypatch) -> list:
    calls = []
    apply = _SummedInputGradient.apply
    monkeypatch.setattr(_SummedInputGradient, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


def planned(net, x, calls: list | None) -> SampledModel:
    """A sampler whose plan is made, and the fused calls of the plan's check (run in the caller's
    gradient mode) forgotten: ``calls`` then counts the sampled pass's own."""
    sampled = SampledModel(net, SAMPLES, reduce="none", seed=2)
    sampled.plan(x)
    if calls is not None:
        calls.clear()
    return sampled


def outputs_and_gradients(net, x, fused: bool, monkeypatch, calls: list | None = None):
    monkeypatch.setattr(sampling, "_pass_summed_gradients", REWRITE if fused else (lambda gm: None))
    out = planned(net, x, calls)(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return out, torch.autograd.grad(out, list(net.parameters()), upstream)


@pytest.mark.parametrize("name", NETS)
def test_summed_input_gradient_matches_the_pair(name, monkeypatch):
    torch.manual_seed(0)
    build, data = NETS[name]
    net, x = build().train(), data()
    calls = fused_calls(monkeypatch)
    out, grads = outputs_and_gradients(net, x, True, monkeypatch, calls)
    assert calls  # the sum was taken
    pair_out, pair_grads = outputs_and_gradients(net, x, False, monkeypatch, calls)
    assert torch.equal(out, pair_out)  # the same bits, the same layer
    first = next(i for i, m in enumerate(net) if isinstance(m, PBit))
    prefix = len(list(net[:first].parameters()))
    # the fused layer and everything after it: the same kernels on the same tensors
    assert all(torch.equal(g, h) for g, h in zip(grads[prefix:], pair_grads[prefix:]))
    # the prefix's: sums of SAMPLES terms in another order, so within float rounding of the
    # largest of them (a bias before a batch norm has a gradient of 0 up to rounding)
    scale = max(h.abs().max().item() for h in pair_grads[:prefix])
    assert scale > 0
    for g, h in zip(grads[:prefix], pair_grads[:prefix]):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-5 * scale)


def penalty_gradients(net, x, fused: bool, monkeypatch, calls: list | None = None):
    """The parameters' gradients of a gradient penalty: the squared gradients of the sampled
    output, with respect to the parameters and the input, summed (a second derivative)."""
    monkeypatch.setattr(sampling, "_pass_summed_gradients", REWRITE if fused else (lambda gm: None))
    params = list(net.parameters())
    out = planned(net, x, calls)(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    first = torch.autograd.grad(out, params + [x], upstream, create_graph=True, allow_unused=True)
    penalty = sum((g**2).sum() for g in first if g is not None and g.requires_grad)
    return torch.autograd.grad(penalty, params, allow_unused=True)


@pytest.mark.parametrize("name", NETS)
def test_second_derivatives_are_the_pairs(name, monkeypatch):
    torch.manual_seed(0)
    build, data = NETS[name]
    net, x = build().train(), data().requires_grad_(True)
    calls = fused_calls(monkeypatch)
    grads = penalty_gradients(net, x, True, monkeypatch, calls)
    assert calls
    pair_grads = penalty_gradients(net, x, False, monkeypatch, calls)
    # the same graph rebuilt, summed in another order where the engine walks it differently:
    # within float rounding of the largest gradient (a bias before a batch norm has 0 up to rounding)
    scale = max(h.abs().max().item() for h in pair_grads if h is not None)
    assert scale > 0
    for g, h in zip(grads, pair_grads):
        assert (g is None) == (h is None)
        if h is not None:
            torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6 * scale)


def test_without_autograd_or_with_hooks_it_is_the_pair(monkeypatch):
    torch.manual_seed(0)
    net, x = conv_net().train(), torch.randn(4, 3, 10, 10)
    calls = fused_calls(monkeypatch)
    with torch.no_grad():
        SampledModel(net, SAMPLES, seed=2)(x)
    assert not calls
    for module, register in ((net[3], "register_forward_hook"), (net[3], "register_full_backward_hook"),
                             (net[2], "register_full_backward_hook")):
        seen = []
        handle = getattr(module, register)(lambda m, i, o: seen.append(len(i[0] if "forward" in register else o[0])))
        out, grads = outputs_and_gradients(net, x, True, monkeypatch, calls)
        assert not calls and seen == [SAMPLES * len(x)], register  # the hook saw the folded bits
        pair_out, pair_grads = outputs_and_gradients(net, x, False, monkeypatch, calls)
        assert torch.equal(out, pair_out) and all(torch.equal(g, h) for g, h in zip(grads, pair_grads))
        handle.remove()


def test_a_prefix_without_gradient_leaves_the_layer_its_own_gradient(monkeypatch):
    torch.manual_seed(0)
    net, x = conv_net().train(), torch.randn(4, 3, 10, 10)
    for p in net[:2].parameters():
        p.requires_grad_(False)
    calls = fused_calls(monkeypatch)
    out = SampledModel(net, SAMPLES, seed=2)(x)
    out.sum().backward()
    assert not calls and net[3].weight.grad.abs().max() > 0


def test_summable_layers():
    assert summable(nn.Linear(2, 3)) and summable(QuantLinear(2, 3, weight_bits=2))
    assert summable(nn.Conv2d(2, 3, 3, padding=1)) and summable(QuantConv2d(2, 3, 3))
    assert not summable(nn.Conv2d(2, 3, 3, padding="same"))
    assert not summable(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"))
    assert not summable(nn.Bilinear(2, 2, 3)) and not summable(nn.ConvTranspose2d(2, 3, 3))


@pytest.mark.parametrize("layout", ["channels-last", "contiguous", "strided"])
def test_sum_of_samples_keeps_the_layout(layout):
    g = torch.randn(SAMPLES * 3, 4, 5, 6)
    if layout == "channels-last":
        g = g.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        g = torch.randn(SAMPLES * 3, 4, 5, 12)[..., ::2]
    total = _sum_of_samples(g, SAMPLES)
    torch.testing.assert_close(total, sum(g.chunk(SAMPLES)))
    if layout != "strided":
        assert total.stride() == g.stride()


def test_bits_that_another_node_reads_too_are_not_fused(monkeypatch):
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.pbit, self.out = nn.Linear(4, 8), PBit(), nn.Linear(8, 3)

        def forward(self, x):
            bits = self.pbit(self.inp(x))
            return self.out(bits) + bits.sum(1, keepdim=True)

    calls = fused_calls(monkeypatch)
    net = TwoReaders()
    SampledModel(net, SAMPLES, seed=0)(torch.randn(2, 4)).sum().backward()
    assert not calls and net.inp.weight.grad.abs().max() > 0
    SampledModel(nn.Sequential(net.inp, net.pbit, net.out), SAMPLES, seed=0)(torch.randn(2, 4)).sum().backward()
    assert calls


def test_a_layer_after_two_different_pbits_is_fused_for_each(monkeypatch):
    class SharedLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 3)
            self.cold, self.hot = PBit(beta=0.5, ste="identity"), PBit(beta=4.0)

        def forward(self, x):
            return self.out(self.cold(self.a(x))) - self.out(self.hot(self.b(x)))

    torch.manual_seed(0)
    net, x = SharedLayer(), torch.randn(3, 4)
    calls = fused_calls(monkeypatch)
    out, grads = outputs_and_gradients(net, x, True, monkeypatch, calls)
    assert len(calls) == 2
    pair_out, pair_grads = outputs_and_gradients(net, x, False, monkeypatch, calls)
    assert torch.equal(out, pair_out)
    for g, h in zip(grads, pair_grads):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_a_padding_mode_set_on_the_live_model_is_the_one_padded_with(mode):
    """The pair kept padding with zeros under autograd after the convolution's padding mode was
    changed on the model (R119 D5: a difference of 0.41-0.88 from a fresh sampler)."""
    def build():
        torch.manual_seed(2)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PBit(), nn.Conv2d(8, 8, 3, padding=1), PBit(),
                             nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    net, fresh = build(), build()
    live = SampledModel(net, samples=4, reduce="none", seed=0)
    live(x)
    for model in (net, fresh):
        model[2].padding_mode = mode
    live.seed = 0
    assert torch.equal(live(x), SampledModel(fresh, samples=4, reduce="none", seed=0)(x))
