"""The drop-in modules: PBit, Quantize, k-bit weight layers and the neuron vocabulary."""
import math
import re

import numpy as np
import pytest
import torch

from pdnn.energy import neuron_parts
from pdnn.nn import (NEURONS, NeuronSpec, PBit, QuantConv2d, QuantLinear, Quantize, WeightQuantizer, is_stochastic,
                     make_neuron, neuron_bits)


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


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_values_go_to_the_nearest_level_with_their_sign(bits, dtype):
    """Every 16-bit value in [-1, 1], against the exact nearest level (fractions): rounded in its
    own precision, bf16 sent 127 values at 8 bits a level off, up to half a step, and -6e-8 went
    to +1 at one bit (R222)."""
    from fractions import Fraction

    from pdnn.functional import quantize_levels

    codes = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    t = codes.view(dtype)
    t = t[t.isfinite() & (t.abs() <= 1)]
    q = quantize_levels(t, bits)
    steps = 2**bits - 1
    exact = [Fraction(2 * math.floor(Fraction(v) * steps / 2) + 1, steps) for v in t.double().tolist()]
    assert torch.equal(q, torch.tensor([float(e) for e in exact], dtype=torch.float64).to(dtype))
    assert torch.equal(quantize_levels(-t[t != 0], bits), -q[t != 0])
    traced = torch.fx.symbolic_trace(lambda x: quantize_levels(x, bits))  # (as a sampled model's graph calls it;
    assert torch.equal(traced(t), q)  # it had rounded in the input's precision, R225)
    tiny = torch.tensor([-5.96e-8, 5.96e-8], dtype=dtype)
    assert torch.equal(quantize_levels(tiny, bits).sign(), torch.tensor([-1.0, 1.0], dtype=dtype))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_levels_are_exact_antisymmetric_and_keep_the_sign_of_tiny_values(bits, dtype):
    """The 2**k levels are (2j + 1) / (2**k - 1) exactly; q(-t) = -q(t) off ties; a value far
    below float precision keeps its sign; a tie goes up, so one bit is sign with sign(0) = +1."""
    from pdnn.functional import quantize_levels

    steps = 2**bits - 1
    levels = torch.tensor([(2 * j + 1) / steps for j in range(-(steps + 1) // 2, (steps + 1) // 2)], dtype=dtype)
    t = torch.rand(100_000, generator=torch.Generator().manual_seed(bits), dtype=dtype) * 2 - 1
    q = quantize_levels(t, bits)
    assert set(q.unique().tolist()) <= set(levels.tolist())
    distance = (t[:, None] - levels).abs()
    assert torch.equal((q[:, None] == levels).float().argmax(1), distance.argmin(1))  # the nearest level
    assert torch.equal(quantize_levels(-t, bits), -q)  # no tie among random values
    tiny = torch.tensor([1e-30, 1e-9, -1e-9, -1e-30, 0.0], dtype=dtype)
    step = torch.tensor(1 / steps, dtype=dtype)
    assert torch.equal(quantize_levels(tiny, bits), torch.stack([step, step, -step, -step, step]))


def test_one_bit_weights_are_the_scale_times_the_sign_of_each_weight():
    wq = WeightQuantizer(1, channels=1)
    w = torch.tensor([[0.5, -0.5, 0.0, 1e-9, -1e-9]])
    s = w.abs().mean()  # the 1-bit scale; 0 counts as +
    assert torch.equal(wq(w), torch.stack([s, -s, s, s, -s])[None])


@pytest.mark.parametrize("bits", [0, 9, 2.5, True, "4"])
def test_bad_bit_widths_rejected(bits):
    with pytest.raises(ValueError, match="bits"):
        Quantize(bits)
    with pytest.raises(ValueError, match="weight bits"):
        QuantLinear(3, 4, weight_bits=bits)


def test_a_bit_width_too_long_to_write_is_named_by_its_size():
    """Python writes no integer of more than 4300 digits: the message itself raised."""
    with pytest.raises(ValueError, match="activation bits must be an integer 1..8, got an integer of 16610 bits"):
        Quantize(10**5000)
    with pytest.raises(ValueError, match="weight bits must .* got a negative integer of 16610 bits"):
        QuantLinear(3, 4, weight_bits=-10**5000)
    with pytest.raises(ValueError, match=r"bits in neuron 'quant:9{50}\.\.\. must be an integer 1..8, got '9{56}\.\.\.$"):
        NeuronSpec.parse("quant:" + "9" * 5000)
    with pytest.raises(ValueError, match=r"unknown neuron 'x{56}\.\.\.; expected"):
        NeuronSpec.parse("x" * 5000)


@pytest.mark.parametrize("name", ["quant:03", "quant:\u0663", "quant:+3"])
def test_a_width_has_one_spelling(name):
    """quant:03 and an Arabic-Indic 3 were recorded as written, and compared unequal to quant:3."""
    with pytest.raises(ValueError, match="unknown neuron"):
        NeuronSpec.parse(name)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantized_weight_layers_use_2_to_the_k_levels(bits):
    lin = QuantLinear(64, 32, weight_bits=bits)
    conv = QuantConv2d(8, 16, 3, weight_bits=bits)
    assert all(len(row.unique()) <= 2**bits for row in lin.quantized_weight())  # per output channel
    assert all(len(kernel.unique()) <= 2**bits for kernel in conv.quantized_weight())
    assert conv(torch.randn(2, 8, 6, 6)).shape == (2, 16, 4, 4)
    x = torch.randn(5, 64)
    torch.testing.assert_close(lin(x), x @ lin.quantized_weight().T + lin.bias)


def test_float_weight_layers_equal_torch_layers():
    lin = QuantLinear(10, 3)
    ref = torch.nn.Linear(10, 3)
    ref.load_state_dict(lin.state_dict())
    x = torch.randn(4, 10)
    assert torch.equal(lin(x), ref(x))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_each_output_channel_has_its_own_2_to_the_k_levels(bits):
    w = torch.randn(6, 200) * torch.linspace(0.1, 3, 6)[:, None]  # channels of different size
    q = WeightQuantizer(bits, channels=6)(w)
    scale = q.abs().amax(1)
    for row, s in zip(q, scale):
        levels = (row / s).unique()
        assert len(levels) <= 2**bits
        grid = torch.linspace(-1, 1, 2**bits)  # the levels lie on the k-bit grid of this channel
        assert torch.isclose(levels[:, None], grid, atol=1e-5).any(1).all()
    assert scale[-1] > 5 * scale[0]  # per channel, not one scale for the layer


def test_one_bit_scale_is_the_mean_magnitude():
    w = torch.randn(4, 300)
    wq = WeightQuantizer(1, channels=4)
    torch.testing.assert_close(wq(w), w.abs().mean(1, keepdim=True) * w.sign())


@pytest.mark.parametrize("bits", [2, 4])
def test_initial_scale_beats_the_max_abs_scale(bits):
    w = torch.randn(8, 500)
    q = WeightQuantizer(bits, channels=8)(w)
    top = w.abs().amax(1, keepdim=True)
    max_abs = WeightQuantizer(bits, channels=8)
    max_abs.reset_scale(w)
    with torch.no_grad():
        max_abs.scale.copy_(top[:, 0])
    assert ((q - w) ** 2).sum() < ((max_abs(w) - w) ** 2).sum()


def test_weight_quantizer_names_a_channel_count_it_cannot_have():
    for channels in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=rf"channels must be an integer >= 1, got {re.escape(repr(channels))}"):
            WeightQuantizer(2, channels)
    with pytest.raises(ValueError, match=r"bits=2, channels=3 got weights of shape \[5, 4\]: expected 3 output "
                                         r"channels, the first of at least two dimensions"):
        WeightQuantizer(2, 3)(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"got weights of shape \[3\]: expected 3 output channels, the first of at "
                                         r"least two dimensions"):
        WeightQuantizer(2, 3)(torch.randn(3))
    assert WeightQuantizer(2, np.int64(3))(torch.randn(3, 4)).shape == (3, 4)


@pytest.mark.parametrize("bits", [1, 2])
def test_weights_a_quantiser_cannot_scale_are_named(bits):
    """An empty fan-in gave amax's IndexError (a division by zero at one bit), integer weights
    torch.finfo's TypeError."""
    with pytest.raises(ValueError, match=r"got weights of shape \[3, 0\]: .* each with at least one weight"):
        QuantLinear(0, 3, weight_bits=bits)(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="got weights of type torch.int64: expected floating point"):
        WeightQuantizer(bits, 3)(torch.ones(3, 4, dtype=torch.int64))


@pytest.mark.parametrize("bits", [1, 3])
def test_first_weights_that_are_not_finite_set_no_scale(bits):
    """The first weights set the scales for good: NaN ones made every later weight NaN (R144 minor)."""
    wq = WeightQuantizer(bits, channels=3)
    w = torch.randn(3, 5)
    w[1, 2] = float("nan")
    with pytest.raises(ValueError, match=rf"bits={bits}, channels=3: the weights it first quantises hold NaN or "
                                         r"infinity \(output channel\(s\) 1\)"):
        wq(w)
    assert not wq.initialised
    finite = torch.randn(3, 5)
    assert torch.isfinite(wq(finite)).all() and wq.initialised


def test_weight_quantizer_gradients_are_lsq():
    """Inside the range the weight gets the identity, outside zero; the scale gets q - w/s
    inside and sign(w) outside, times 1/sqrt(K * 2**(bits-1))."""
    bits, k = 2, 4
    wq = WeightQuantizer(bits, channels=1)
    w = torch.tensor([[-3.0, -0.4, 0.2, 2.5]], requires_grad=True)
    wq.reset_scale(w)
    with torch.no_grad():
        wq.scale.fill_(1.0)
    out = wq(w)
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([[0.0, 1.0, 1.0, 0.0]]))
    v = torch.tensor([-1.0, -0.4, 0.2, 1.0])
    q = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    expected = (q - v * torch.tensor([0.0, 1.0, 1.0, 0.0])).sum() / (k * 2 ** (bits - 1)) ** 0.5
    torch.testing.assert_close(wq.scale.grad, expected.reshape(1))


def test_weight_scale_is_set_once_and_survives_a_checkpoint():
    lin = QuantLinear(16, 4, weight_bits=4)
    lin(torch.randn(2, 16))
    first = lin.weight_quant.scale.detach().clone()
    with torch.no_grad():
        lin.weight.mul_(10)  # a later forward does not reset the (learned) scale
    lin(torch.randn(2, 16))
    assert torch.equal(lin.weight_quant.scale.detach(), first)
    fresh = QuantLinear(16, 4, weight_bits=4)
    fresh.load_state_dict(lin.state_dict())
    x = torch.randn(3, 16)
    assert torch.equal(fresh(x), lin(x))


def test_a_scale_first_set_inside_the_fold_check_is_saved_as_set():
    # the fold check restores the buffers it found (``initialised`` among them) after its passes
    # have initialised the scales; the checkpoint must still say the learned scales are set
    from pdnn import SampledModel
    from pdnn.models import create

    torch.manual_seed(0)
    model = create("cnn", neuron="pbit", weight_bits=2, width=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    SampledModel(model, 4, seed=0)(torch.randn(3, 3, 32, 32)).sum().backward()
    optimizer.step()  # the scales move away from their initial values
    quantizers = [m for m in model.modules() if isinstance(m, WeightQuantizer)]
    assert quantizers and all(bool(q.initialised) for q in quantizers)
    fresh = create("cnn", neuron="pbit", weight_bits=2, width=4)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()(torch.randn(2, 3, 32, 32))  # a forward must not re-initialise the loaded scales
    for a, b in zip(quantizers, (m for m in fresh.modules() if isinstance(m, WeightQuantizer))):
        assert torch.equal(a.scale, b.scale)


def test_quantized_weights_still_get_gradients():
    lin = QuantLinear(8, 2, weight_bits=2)
    lin(torch.randn(3, 8)).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert lin.weight_quant.scale.grad is not None


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


@pytest.mark.parametrize("bad, message", [
    (0.0, "finite number > 0, got 0.0"),
    (float("nan"), "finite number > 0, got nan"),
    ("hot", "positive number, got 'hot'"),
    (torch.nn.Parameter(torch.tensor(2.0)), "learnable temperature is not supported"),
    (1e31, r"beta must be in \[1e-30, 1e\+30\].*got 1e\+31"),
    (1e-31, r"beta must be in \[1e-30, 1e\+30\].*got 1e-31"),
])
def test_a_pbit_refuses_a_bad_beta_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        PBit(beta=bad)


@pytest.mark.parametrize("beta", [1e-30, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_extreme_betas_give_finite_gradients_and_the_right_saturated_bits(beta, dtype):
    x = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 2.0, float("inf"), -float("inf")], dtype=dtype, requires_grad=True)
    bits = torch.stack([PBit(beta=beta)(x) for _ in range(64)])
    bits.sum().backward()  # 4 beta p (1 - p): 1e30 at x = 0, beyond float16 (inf), never NaN
    assert not x.grad.isnan().any() and (dtype == torch.float16 or torch.isfinite(x.grad).all())
    if beta == 1e30:  # a step at 0: every x != 0 is certain
        assert bits[:, [0, 1, 6]].eq(-1).all() and bits[:, [3, 4, 5]].eq(1).all()
    else:  # flat: only the infinities are certain
        assert bits[:, 5].eq(1).all() and bits[:, 6].eq(-1).all()
