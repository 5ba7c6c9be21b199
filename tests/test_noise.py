"""Noise injectors (pdnn.nn.noise): statistics, exact limits, gradients, generators."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from pdnn import SampledModel
from pdnn.errors import UsageError
from pdnn.nn import DitheredQuantize, GaussianNoise, HardPBit, LogisticNoise, PBit, Quantize, is_stochastic

Z = 5.0  # bounds are Z standard errors wide
N = 200_000


def test_gaussian_noise_mean_and_std():
    noise = GaussianNoise(0.7)
    noise.generator = torch.Generator().manual_seed(0)
    x = torch.full((N,), 1.5)
    n = noise(x) - x
    sigma = 0.7
    assert abs(n.mean().item()) <= Z * sigma / math.sqrt(N)
    # the sample std of a normal sample has standard error sigma / sqrt(2N)
    assert abs(n.std().item() - sigma) <= Z * sigma / math.sqrt(2 * N)


def test_logistic_noise_mean_std_and_cdf():
    s = 0.4
    noise = LogisticNoise(s)
    noise.generator = torch.Generator().manual_seed(1)
    n = noise(torch.zeros(N))
    sigma = s * math.pi / math.sqrt(3)
    assert torch.isfinite(n).all()
    assert abs(n.mean().item()) <= Z * sigma / math.sqrt(N)
    # Var(sample variance) = sigma^4 (2 + excess kurtosis 1.2) / N; delta method for the std
    assert abs(n.std().item() - sigma) <= Z * sigma * math.sqrt(3.2 / N) / 2
    # its CDF is the sigmoid: P(n < t) = sigmoid(t / s)
    for t in (-0.5, 0.0, 0.3):
        p = 1 / (1 + math.exp(-t / s))
        assert abs((n < t).double().mean().item() - p) <= Z * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("cls", [GaussianNoise, LogisticNoise])
def test_zero_scale_is_exact_identity_and_modules_are_stochastic(cls):
    x = torch.randn(64, 5)
    module = cls(0.0)
    assert torch.equal(module(x), x)
    assert is_stochastic(module) and module.generator is None
    assert "scale=0" in repr(module)


@pytest.mark.parametrize("cls", [GaussianNoise, LogisticNoise])
def test_invalid_scale_is_rejected(cls):
    for bad in (-1.0, float("nan"), float("inf"), "big", True):
        with pytest.raises(ValueError):
            cls(bad)


def test_seeded_generator_reproduces_and_sampled_model_seeds_noise():
    x = torch.randn(10, 3)
    a, b = GaussianNoise(1.0), GaussianNoise(1.0)
    a.generator = torch.Generator().manual_seed(5)
    b.generator = torch.Generator().manual_seed(5)
    assert torch.equal(a(x), b(x))
    net = nn.Sequential(nn.Linear(3, 4), LogisticNoise(0.3), nn.Tanh(), nn.Linear(4, 2))
    first = SampledModel(net, samples=7, seed=3)(x)
    assert torch.equal(first, SampledModel(net, samples=7, seed=3)(x))
    assert not torch.equal(first, SampledModel(net, samples=7, seed=4)(x))
    assert net[1].generator is None  # restored after the call


@pytest.mark.parametrize("bits,mode",
                         [(1, "bipolar"), (2, "bipolar"), (3, "bipolar"), (2, "unipolar"), (4, "unipolar")])
def test_dither_width_zero_is_the_quantiser_bit_for_bit(bits, mode):
    x = torch.linspace(-4, 4, 2001)
    assert torch.equal(DitheredQuantize(bits, 1.3, mode, width=0.0)(x), Quantize(bits, 1.3, mode)(x))


@pytest.mark.parametrize("bits,mode", [(1, "bipolar"), (2, "bipolar"), (3, "unipolar")])
def test_one_step_dither_has_the_unrounded_mean_and_only_quantiser_levels(bits, mode):
    beta, n = 0.8, 40_000
    q = DitheredQuantize(bits, beta, mode, width=1.0)
    q.generator = torch.Generator().manual_seed(2)
    x0 = torch.tensor([-2.0, -0.6, -0.1, 0.0, 0.35, 0.9, 3.0])
    out = q(x0.repeat(n, 1))
    levels = Quantize(bits, beta, mode)(torch.linspace(-20, 20, 4001)).unique()
    assert torch.isin(out.unique(), levels).all()
    expected = q.mean(x0)
    # each output is one of two levels one step apart: its std is at most step / 2
    assert torch.all((out.mean(0) - expected).abs() <= Z * (q.step / 2) / math.sqrt(n))
    if bits > 1:  # the deterministic quantiser is biased at these points; dithering removes the bias
        bias = (Quantize(bits, beta, mode)(x0) - expected).abs().max()
        assert bias > 10 * (q.step / 2) / math.sqrt(n)


def test_one_bit_dither_is_a_pbit_of_mean_tanh():
    q = DitheredQuantize(1, 1.0, width=1.0)
    q.generator = torch.Generator().manual_seed(9)
    x0, n = torch.tensor([0.5, -1.0]), 50_000
    out = q(x0.repeat(n, 1))
    assert set(out.unique().tolist()) <= {-1.0, 1.0}
    m = torch.tanh(x0)
    assert torch.all((out.mean(0) - m).abs() <= Z * torch.sqrt(1 - m**2) / math.sqrt(n))


def test_dither_gradient_is_the_unrounded_activation_derivative_and_input_untouched():
    x = torch.randn(50, requires_grad=True)
    before = x.detach().clone()
    DitheredQuantize(2, 1.5, width=1.0)(x).sum().backward()
    assert torch.equal(x.detach(), before)
    assert torch.allclose(x.grad, 1.5 * (1 - torch.tanh(1.5 * before) ** 2), atol=1e-6)


def test_dither_repr_precision_and_validation():
    q = DitheredQuantize(3, 2.0, "unipolar", width=0.5)
    assert q.precision == 3 and is_stochastic(q)
    assert "bits=3" in repr(q) and "width=0.5" in repr(q) and "unipolar" in repr(q)
    assert q.step == pytest.approx(1 / 7)
    with pytest.raises(ValueError):
        DitheredQuantize(0)
    with pytest.raises(ValueError):
        DitheredQuantize(2, width=-1)


def test_hard_pbit_mean_is_clipped_linear_with_two_values():
    a, c, beta, n = -2.0, 6.0, 1.5, 40_000
    p = HardPBit(a, c, beta)
    p.generator = torch.Generator().manual_seed(4)
    x0 = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5, 7.0])
    out = p(x0.repeat(n, 1))
    assert set(out.unique().tolist()) <= {a, c}
    expected = torch.clamp(beta * x0, a, c)
    assert torch.all((out.mean(0) - expected).abs() <= Z * ((c - a) / 2) / math.sqrt(n))
    assert p.precision == 1 and "min_val=-2" in repr(p)
    with pytest.raises(ValueError):
        HardPBit(1.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bounds, x", [((0.1, 0.7), 0.6015625), ((-3.7, 1.1), 0.5)])
def test_hard_pbit_outputs_its_two_values_as_the_dtype_holds_them(bounds, x, dtype):
    """The high value was rebuilt as a + (c - a), which rounds: 0.7000000477 for 0.7 in float32,
    0.703125 for 0.69921875 in bfloat16, whose mean then came out 9.8 standard errors high. So
    did the difference of the two values where it was taken in bfloat16 (11 and 8.6 standard
    errors at these x, exact in it). The mean is the clamp in x's precision, within 5 standard
    errors of n draws."""
    a, c = bounds
    levels = {torch.tensor(v, dtype=dtype).item() for v in bounds}
    torch.manual_seed(0)
    out = HardPBit(a, c)(torch.tensor([a - 1, a, (a + c) / 2, c, c + 1], dtype=dtype).repeat(64, 1))
    assert out.dtype == dtype and set(out.unique().tolist()) <= levels
    n, x = 1 << 22, torch.tensor(x, dtype=dtype)
    mean = HardPBit(a, c).mean(x).double().item()
    drawn = HardPBit(a, c)(x.expand(n).contiguous()).double().mean().item()
    spread = (max(levels) - min(levels)) / 2
    assert abs(drawn - mean) < 5 * spread / math.sqrt(n)


def test_hard_pbit_gradient_and_nan():
    x = torch.tensor([-2.0, -0.5, 0.2, 3.0], requires_grad=True)
    HardPBit()(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert torch.isnan(HardPBit()(torch.tensor([float("nan"), 0.0])))[0]


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda: GaussianNoise(0.5), lambda: LogisticNoise(0.5),
                                  lambda: DitheredQuantize(2), lambda: HardPBit()])
def test_noise_under_torch_compile_for_several_batch_sizes(make):
    """A recompile for a new batch size (a symbolic shape) must not fail in the draw; the noise
    is fresh on every call."""
    net = torch.compile(nn.Sequential(nn.Identity(), make()), backend="aot_eager")
    for batch in (3, 5, 7):
        x = torch.zeros(batch, 64)
        first, second = net(x), net(x)
        assert first.shape == x.shape and not torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_draws_keep_the_documented_means(dtype):
    """torch's bfloat16 uniform gives 0 with probability about 2e-3 and small values three times
    too often; drawn in float32, the noise keeps its law and the bits their means (5 standard
    errors of n draws)."""
    n, bound = 400_000, 5 / math.sqrt(400_000)
    torch.manual_seed(0)
    noise = LogisticNoise(1.0)(torch.zeros(n, dtype=dtype))
    assert noise.dtype == dtype
    std = math.pi / math.sqrt(3)
    assert abs(noise.double().mean().item()) < bound * std
    assert abs(noise.double().std().item() - std) < bound * std * math.sqrt((4.2 - 1) / 4)  # kurtosis 4.2
    assert noise.double().abs().max().item() < 25  # |log(u / (1 - u))| of a float32 u: 16.6 at most
    low = HardPBit(0.0, 6.0)(torch.full((n,), 0.006, dtype=dtype))  # P(6) = 0.001
    target = torch.tensor(0.006, dtype=dtype).double().item()
    assert low.dtype == dtype and abs(low.double().mean().item() - target) < bound * math.sqrt(36 * 0.001)
    bits = DitheredQuantize(1)(torch.full((n,), -2.5, dtype=dtype))  # levels +-1: exact in any precision
    mean = DitheredQuantize(1).mean(torch.tensor(-2.5, dtype=dtype)).double().item()
    assert abs(bits.double().mean().item() - mean) < bound * math.sqrt(1 - mean**2)


def test_bounds_and_scales_that_are_not_numbers_are_named():
    """A string bound gave Python's float() message, naming no argument; a string scale was taken
    as a number (a string beta is refused: a typo, not a number)."""
    from pdnn.nn import GaussianNoise, HardPBit

    for bounds in (("a", 1), (None, 1), (torch.tensor([0.0, 1.0]), 1), ("0", "1"), (1, 0)):
        with pytest.raises(ValueError, match="HardPBit needs numbers min_val < max_val, finite, got"):
            HardPBit(*bounds)
    with pytest.raises(ValueError, match="scale must be a number >= 0, got '0.5'"):
        GaussianNoise("0.5")
    with pytest.raises(ValueError, match="scale must be a number >= 0, got 1000"):
        GaussianNoise(10**400)  # (too large for a float: an OverflowError traceback)
    with pytest.raises(ValueError, match="scale must be a number >= 0, got an integer of 16610 bits"):
        GaussianNoise(10**5000)  # (no repr: more than 4300 digits)
    for flag in (np.True_, torch.tensor(True)):  # (taken as a scale of 1, as Python's True is not)
        with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
            GaussianNoise(flag)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_hard_pbit_compares_its_probability_in_single_precision(dtype):
    """P(b = c) = (clamp(x) - a) / (c - a) was computed in the input's half precision: in
    bfloat16, x = 0.003 gave P = 1/2 exactly (mean 0). The bits are those of the float32
    probability against the same float32 uniforms."""
    x = torch.linspace(-0.999, 0.999, 20001).to(dtype)
    pbit = HardPBit()
    pbit.generator = torch.Generator().manual_seed(0)
    bits = pbit(x)
    uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))  # as the module draws them
    assert torch.equal(bits, torch.where((x.float() + 1) / 2 > uniform, 1.0, -1.0).to(dtype))


@pytest.mark.parametrize("module", [PBit, GaussianNoise, HardPBit])
def test_what_is_no_tensor_is_named_by_its_type(module):
    layer = module(1.0) if module is GaussianNoise else module()
    said = "pbit" if module is PBit else module.__name__  # (a PBit is the function pbit's checks)
    for generator in (None, torch.Generator()):
        layer.generator = generator
        with pytest.raises(TypeError, match=f"{said} expects a floating-point tensor, got str 'x'"):
            layer("x")


@pytest.mark.parametrize("module", [PBit, GaussianNoise, HardPBit])
def test_a_generator_that_is_no_generator_is_named(module):
    layer = module(1.0) if module is GaussianNoise else module()
    layer.generator = 5
    with pytest.raises(UsageError, match=f"{module.__name__}.generator must be a torch.Generator or None, got 5"):
        layer(torch.zeros(3))
