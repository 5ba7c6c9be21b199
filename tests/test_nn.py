"""The drop-in modules: PBit, Quantize, k-bit weight layers and the neuron vocabulary."""
import pytest
import torch

from pdnn.energy import neuron_parts
from pdnn.nn import (NEURONS, NeuronSpec, PBit, QuantConv2d, QuantLinear, Quantize, is_stochastic, make_neuron,
                     neuron_bits)


def test_pbit_module_repr_and_values():
    layer = PBit("unipolar", beta=2.0, ste="clipped")
    assert "mode='unipolar', beta=2, ste='clipped'" in repr(layer)
    assert set(layer(torch.randn(1000)).unique().tolist()) == {0.0, 1.0}


def test_pbit_uses_its_generator():
    a, b = PBit(), PBit()
    a.generator = torch.Generator().manual_seed(5)
    b.generator = torch.Generator().manual_seed(5)
    x = torch.randn(500)
    assert torch.equal(a(x), b(x))


def test_quantize_module_levels_and_repr():
    q = Quantize(3)
    assert len(q(torch.linspace(-5, 5, 10001)).unique()) == 8
    assert "bits=3" in repr(q) and q.precision == 3


@pytest.mark.parametrize("bits", [0, 9, 2.5, True, "4"])
def test_bad_bit_widths_rejected(bits):
    with pytest.raises(ValueError, match="bits"):
        Quantize(bits)
    with pytest.raises(ValueError, match="weight bits"):
        QuantLinear(3, 4, weight_bits=bits)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantized_weight_layers_use_2_to_the_k_levels(bits):
    lin = QuantLinear(64, 32, weight_bits=bits)
    conv = QuantConv2d(8, 16, 3, weight_bits=bits)
    assert len(lin.quantized_weight().unique()) <= 2**bits
    assert len(conv.quantized_weight().unique()) <= 2**bits
    assert conv(torch.randn(2, 8, 6, 6)).shape == (2, 16, 4, 4)
    x = torch.randn(5, 64)
    torch.testing.assert_close(lin(x), x @ lin.quantized_weight().T + lin.bias)


def test_float_weight_layers_equal_torch_layers():
    lin = QuantLinear(10, 3)
    ref = torch.nn.Linear(10, 3)
    ref.load_state_dict(lin.state_dict())
    x = torch.randn(4, 10)
    assert torch.equal(lin(x), ref(x))


def test_quantized_weights_still_get_gradients():
    lin = QuantLinear(8, 2, weight_bits=2)
    lin(torch.randn(3, 8)).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_neuron_vocabulary():
    assert isinstance(make_neuron("pbit"), PBit)
    assert make_neuron("pbit-unipolar").mode == "unipolar"
    assert make_neuron("quant:4").bits == 4 and make_neuron("sign").bits == 1
    assert [neuron_bits(n) for n in ["pbit", "tanh", "sign", "quant:3"]] == [1, 32, 1, 3]
    with pytest.raises(ValueError, match="unknown neuron 'relu'.*pbit"):
        make_neuron("relu")
    with pytest.raises(ValueError, match="quant:9"):
        make_neuron("quant:9")
    assert "quant:k" in NEURONS


@pytest.mark.parametrize("name", ["pbit", "pbit-unipolar", "tanh", "sigmoid", "sign", "quant:1", "quant:3", "quant:8"])
def test_a_neuron_spec_says_what_its_module_is_and_the_energy_model_reads_the_same(name):
    spec = NeuronSpec.parse(name)
    assert NeuronSpec.parse(spec) is spec
    module = spec.build(beta=2.0)
    assert spec.stochastic == is_stochastic(module)
    if spec.kind == "pbit":
        assert (module.mode, module.beta) == (spec.mode, 2.0)
    elif spec.kind == "quant":
        assert (module.bits, module.beta) == (spec.bits, 2.0)
    else:
        assert spec.bits == 32 and isinstance(module, torch.nn.Sigmoid if name == "sigmoid" else torch.nn.Tanh)
    (part,) = neuron_parts(name)
    assert (part.stochastic, part.module) == (spec.stochastic, name)
    assert part.bits == spec.bits or part.kind == "nonlinearity"
