"""The energy model: the formula, per-layer accounting, technology tables, trade-offs, the CLI."""
import json
import math
import re
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from pdnn.energy import (FLOAT_BITS, NeuronPart, Reuse, Settings, TechError, accumulator_bits, analyze, energy_report,
                         energy_sweep, eo_energy_pj, format_report, format_tradeoff, load_table, network_energy,
                         pareto_front, parse_tolerance, run_network, tradeoff, tradeoff_runs)
from pdnn.energy.account import LAYER_STEP_NOTE, averaged_bits
import pdnn.energy.tech
from pdnn import SampledModel
from pdnn.cli import main
from pdnn.energy.graph import AnalysisError, Network, fan_in, pooled_bits, pooling_window
from pdnn.functional import quantize_levels, quantized_activation, straight_through
from pdnn.energy.report import format_markdown
from pdnn.errors import UsageError
from pdnn.models import ModelConfig, create
from pdnn.nn import DitheredQuantize, GaussianNoise, HardPBit, PBit, QuantConv2d, QuantLinear, Quantize
from pdnn.runs import RunError, read_json, write_json

from zoo import PBitInATorchLayer

TABLE = Path(__file__).parents[1] / "src" / "pdnn" / "energy" / "tables" / "horowitz-45nm.toml"
BITS = [1, 2, 3, 4, 5, 6, 7, 8, 16, FLOAT_BITS]
LEVELS = ["dram", "sram", "sram_32kb", "sram_1mb"]
NEURONS = ["pbit", "tanh", "sign", "quant:2", "quant:4", "none"]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tech():
    return load_table()


@pytest.fixture(scope="module")
def small_nets():
    return {"mlp-pbit": analyze(create("mlp", neuron="pbit", width=16), (1, 28, 28)),
            "mlp-tanh": analyze(create("mlp", neuron="tanh", width=16), (1, 28, 28)),
            "cnn-pbit": analyze(create("cnn", neuron="pbit", width=4, input_shape=(3, 16, 16)), (3, 16, 16))}


# --- the formula --------------------------------------------------------------------------------

def test_worked_example_equals_hand_computation(tech):
    """docs/energy.md: n=4, b_w=2, b_a=1, T=3, p-bit neuron, everything in the 8 KB SRAM."""
    bit = 10.0 / 64                      # SRAM 8 KB: 10 pJ per 64-bit word
    weight = 4 * 2 * bit                 # n * b_w * eps_wM = 1.25 pJ
    activation = (4 + 1) * 1 * bit       # (n+1) * b_a * eps_aM = 0.78125 pJ
    add_4bit = 0.03 * 4 / 8              # accumulator b_w + log2(n) = 4 bits; 8-bit add 0.03 pJ, linear
    synapse = 4 * add_4bit               # 1-bit inputs: accumulate only = 0.06 pJ
    neuron = 8 * 0.3 / 32 + 0.22 + add_4bit  # 8 random bits + threshold lookup + 4-bit comparator = 0.31 pJ
    hand = weight + 3 * (activation + synapse + neuron)
    e = eo_energy_pj(4, 2, 1, samples=3, tech=tech, weight_memory="sram_8kb", activation_memory="sram_8kb")
    assert e["total_pj"] == pytest.approx(4.70375, rel=1e-12)
    assert e["total_pj"] == pytest.approx(hand, rel=1e-12)
    assert e["weight_memory_pj"] == pytest.approx(1.25) and e["synapse_pj"] == pytest.approx(3 * 0.06)

    # the same EO as a one-neuron network, with the paper's accounting (prefix not shared)
    net = analyze(nn.Sequential(QuantLinear(4, 1, bias=False, weight_bits=2), PBit()), (4,), input_bits=1)
    s = Settings(tech, "sram_8kb", "sram_8kb", Reuse("per-eo"), shared_prefix=False)
    assert network_energy(net, 3, s)["total_j"] == pytest.approx(hand * 1e-12, rel=1e-12)


@FAST
@given(n=st.integers(1, 5000), bw=st.sampled_from(BITS), ba=st.sampled_from(BITS), t=st.integers(1, 64),
       neuron=st.sampled_from(NEURONS), wm=st.sampled_from(LEVELS), am=st.sampled_from(LEVELS))
def test_energy_is_linear_in_samples_and_weights_do_not_depend_on_them(n, bw, ba, t, neuron, wm, am):
    tech = load_table()
    one = eo_energy_pj(n, bw, ba, 1, tech, wm, am, neuron)
    many = eo_energy_pj(n, bw, ba, t, tech, wm, am, neuron)
    per_sample = one["activation_memory_pj"] + one["synapse_pj"] + one["neuron_pj"]
    assert many["weight_memory_pj"] == one["weight_memory_pj"]
    assert many["total_pj"] == pytest.approx(one["weight_memory_pj"] + t * per_sample, rel=1e-12)


WIDTHS = st.integers(1, FLOAT_BITS)  # every integer width and float


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5000), a=WIDTHS, b=WIDTHS, other=WIDTHS, t=st.integers(1, 20),
       neuron=st.sampled_from(NEURONS), wm=st.sampled_from(LEVELS), am=st.sampled_from(LEVELS))
def test_energy_never_decreases_when_a_bit_width_grows(n, a, b, other, t, neuron, wm, am):
    tech = load_table()
    lo, hi = min(a, b), max(a, b)
    e = lambda bw, ba: eo_energy_pj(n, bw, ba, t, tech, wm, am, neuron)["total_pj"]  # noqa: E731
    assert e(hi, other) >= e(lo, other)
    assert e(other, hi) >= e(other, lo)


def test_energy_grows_with_every_width_step_from_1_to_32(tech):
    """Each +1 bit, 1 → 32 (31 → 32 crosses from integer to float), never lowers ε_EO."""
    for neuron in NEURONS:
        for other in (1, 8, FLOAT_BITS):
            by_w = [eo_energy_pj(784, b, other, 4, tech, neuron=neuron)["total_pj"] for b in range(1, 33)]
            by_a = [eo_energy_pj(784, other, b, 4, tech, neuron=neuron)["total_pj"] for b in range(1, 33)]
            assert by_w == sorted(by_w) and by_a == sorted(by_a)


def _with_bits(net: Network, weight_bits: int, activation_bits: int) -> Network:
    # (each sample reads the width set, whatever an average pool had added: its averaged levels are that width's)
    layers = [replace(layer, weight_bits=weight_bits, activation_bits=activation_bits,
                      averaged_levels=2**activation_bits - 1 if layer.averaged_input else 0) for layer in net.layers]
    return replace(net, layers=layers)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["mlp-pbit", "mlp-tanh", "cnn-pbit"]), a=WIDTHS, b=WIDTHS, other=WIDTHS,
       t=st.integers(1, 12), aggregate=st.sampled_from(["network", "layer"]), shared=st.booleans())
@example(model="cnn-pbit", a=31, b=32, other=1, t=3, aggregate="layer", shared=False)  # a 33-bit sum vs float
def test_network_energy_never_decreases_when_a_bit_width_grows(small_nets, model, a, b, other, t, aggregate, shared):
    net = small_nets[model]
    s = Settings(load_table(), aggregate=aggregate, shared_prefix=shared or aggregate == "layer")  # (no prefix to repeat)
    e = lambda bw, ba: network_energy(_with_bits(net, bw, ba), t, s)["total_j"]  # noqa: E731
    lo, hi = min(a, b), max(a, b)
    assert e(hi, other) >= e(lo, other)
    assert e(other, hi) >= e(other, lo)


@st.composite
def conv_nets(draw):
    channels, size = draw(st.sampled_from([2, 4])), draw(st.integers(5, 9))
    layers, c = [], channels
    for _ in range(draw(st.integers(1, 3))):
        groups = draw(st.sampled_from([1, 2]))
        out = 2 * draw(st.integers(1, 3))
        kernel = draw(st.sampled_from([1, 3]))
        layers += [QuantConv2d(c, out, kernel, stride=draw(st.sampled_from([1, 2])), padding=kernel // 2, groups=groups,
                               weight_bits=draw(st.sampled_from([1, 4, 32]))),
                   nn.BatchNorm2d(out), draw(st.sampled_from([PBit(), Quantize(2), nn.Tanh()]))]
        c = out
    if draw(st.booleans()):  # a transposed convolution, its stride possibly beyond its kernel
        layers.append(nn.ConvTranspose2d(c, c, draw(st.integers(1, 3)), stride=draw(st.integers(1, 3))))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3)]
    return analyze(nn.Sequential(*layers), (channels, size, size))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=conv_nets(), t=st.integers(1, 30), batch=st.integers(1, 64), wm=st.sampled_from(LEVELS),
       am=st.sampled_from(LEVELS), shared=st.booleans())
def test_network_energy_linear_in_t_and_reuse_never_costs_more(net, t, batch, wm, am, shared):
    tech = load_table()
    base = dict(tech=tech, weight_memory=wm, activation_memory=am, shared_prefix=shared)
    per_eo = Settings(reuse=Reuse("per-eo"), **base)
    e1, e2, et = (network_energy(net, k, per_eo) for k in (1, 2, t))
    slope = e2["total_j"] - e1["total_j"]
    assert et["total_j"] == pytest.approx(e1["total_j"] + (t - 1) * slope, rel=1e-9, abs=1e-24)
    assert et["terms"]["weight_memory_j"] == e1["terms"]["weight_memory_j"]
    # the slope is exactly the per-sample terms: everything that repeats, priced once
    repeated = sum(layer["terms"]["activation_memory_j"] + layer["terms"]["synapse_j"]
                   for layer in e1["layers"] if layer["stochastic_input"] or not shared)
    for layer in net.layers:
        acc = accumulator_bits(layer.fan_in, layer.activation_bits, layer.weight_bits)
        repeated += sum(p.energy_pj(tech, acc) * layer.eos * 1e-12 for p in layer.neuron if p.stochastic or not shared)
    assert slope == pytest.approx(repeated, rel=1e-9, abs=1e-24)
    for reuse in (Reuse("per-inference"), Reuse("per-batch", batch)):
        cheaper = network_energy(net, t, Settings(reuse=reuse, **base))
        assert cheaper["total_j"] <= et["total_j"] * (1 + 1e-12)
    inference = network_energy(net, t, Settings(reuse=Reuse("per-inference"), **base))
    batched = network_energy(net, t, Settings(reuse=Reuse("per-batch", batch), **base))
    assert batched["terms"]["weight_memory_j"] == pytest.approx(inference["terms"]["weight_memory_j"] / batch)


# --- reading a model ----------------------------------------------------------------------------

def test_fan_in_and_eo_counts_linear_and_conv():
    net = analyze(nn.Sequential(nn.Linear(7, 5)), (3, 7))  # a Linear over 3 positions
    (layer,) = net.layers
    assert (layer.fan_in, layer.eos, layer.weights) == (7, 15, 35)

    conv = nn.Conv2d(6, 4, (3, 5), stride=2, padding=(1, 2), groups=2)
    (layer,) = analyze(nn.Sequential(conv), (6, 11, 9)).layers
    # n = C_in/groups * kh * kw; output 6 x 5 positions: floor((11+2-3)/2)+1, floor((9+4-5)/2)+1
    assert (layer.fan_in, layer.eos, layer.weights, layer.kind) == (3 * 15, 4 * 6 * 5, 4 * 3 * 15, "conv2d")

    (layer,) = analyze(nn.Sequential(nn.Conv1d(4, 8, 3, stride=1, padding=0)), (4, 10)).layers
    assert (layer.fan_in, layer.eos) == (12, 8 * 8)

    net = analyze(create("cnn", neuron="pbit", weight_bits=4, input_shape=(3, 32, 32)), (3, 32, 32))
    assert [(l.fan_in, l.eos) for l in net.layers] == [
        (27, 32 * 32 * 32), (288, 32 * 32 * 32), (288, 64 * 16 * 16), (576, 64 * 16 * 16),
        (576, 128 * 8 * 8), (2048, 10)]
    assert all(l.weight_bits == 4 for l in net.layers)


def test_a_transposed_convolution_counts_its_products_per_output():
    # one input position, stride 2 > kernel 1: the one output sums all 64 inputs
    (layer,) = analyze(nn.Sequential(nn.ConvTranspose2d(64, 32, 1, stride=2)), (64, 1, 1)).layers
    assert (layer.fan_in, layer.eos, layer.weights) == (64, 32, 2048)
    # 4 x 4 inputs scattered over 7 x 7 outputs: 16 of them get 64 products, the rest none
    (layer,) = analyze(nn.Sequential(nn.ConvTranspose2d(64, 32, 1, stride=2)), (64, 4, 4)).layers
    assert layer.fan_in == math.ceil(64 * 16 / 49)
    # the output is the input enlarged by the stride: C_in * (k / s)^2, as without shapes
    (layer,) = analyze(nn.Sequential(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)), (8, 5, 5)).layers
    assert layer.fan_in == 8 * 4 == fan_in(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1))
    net = analyze(nn.Sequential(nn.ConvTranspose2d(64, 32, 1, stride=2)), (64, 1, 1))
    per_eo, per_inference = (network_energy(net, 1, Settings(reuse=Reuse(mode)))["terms"]["weight_memory_j"]
                             for mode in ("per-eo", "per-inference"))
    assert per_inference == per_eo  # N·n = W here: reuse never costs more


def test_a_module_called_twice_is_fetched_once_when_its_weights_are_reused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(64, 64), nn.Linear(64, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))

    net = analyze(Shared(), (64,))
    assert [(l.name, l.repeat_call) for l in net.layers] == [("fc", False), ("fc[1]", True), ("out", False)]
    for reuse, reads in (("per-eo", [4096, 4096, 128]), ("per-inference", [4096, 0, 128]),
                         ("per-batch:4", [1024, 0, 32])):
        layers = network_energy(net, 1, Settings(reuse=Reuse.parse(reuse)))["layers"]
        assert [l["terms"]["weight_memory_j"] for l in layers] == pytest.approx(
            [r * 32 * load_table().memory("dram").pj_per_bit * 1e-12 for r in reads])


def test_what_cannot_be_costed_is_named_when_nothing_can_be():
    class OnlyLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0]

    with pytest.raises(UsageError, match=r"OnlyLSTM has no Linear or Conv layer to account for \(found: "
                                         r"lstm \(LSTM\): layer type not supported"):
        analyze(OnlyLSTM(), (5, 8))
    with pytest.raises(UsageError, match="input_shape must be .*, got 784"):
        analyze(nn.Sequential(nn.Linear(784, 10)), 784)


class _Twice(nn.Linear):
    """A Linear that projects again with a weight of its own: costed from .weight alone."""

    def __init__(self, features: int, out: int):
        super().__init__(features, out)
        self.again = nn.Parameter(torch.randn(out, out))

    def forward(self, x):
        return F.linear(super().forward(x), self.again)


class _LoRA(nn.Linear):
    def __init__(self, features: int, out: int, rank: int = 2):
        super().__init__(features, out)
        self.down, self.up = nn.Parameter(torch.randn(rank, features)), nn.Parameter(torch.zeros(out, rank))

    def forward(self, x):
        return super().forward(x) + F.linear(F.linear(x, self.down), self.up)


def test_a_weight_layer_holding_other_weights_is_named_where_they_are_not_counted():
    for layer in (_Twice(16, 32), _LoRA(16, 32)):
        net = analyze(nn.Sequential(layer, PBit(), nn.Linear(32, 4)), (16,))
        assert [l.weights for l in net.layers] == [16 * 32, 32 * 4]  # (.weight alone)
        others = "again" if isinstance(layer, _Twice) else "down, up"
        assert f"0 ({type(layer).__name__}): holds weights besides its .weight ({others}); their EOs are not " \
               "counted" in net.notes
    # what computes the weight itself is the weight: a parametrization (a LoRA merged into it), weight_norm
    merged = nn.utils.parametrizations.weight_norm(nn.Linear(16, 32))
    with pytest.warns(FutureWarning):  # (the older form, still in users' code)
        normed = torch.nn.utils.weight_norm(nn.Linear(16, 32))
    quantised = QuantLinear(16, 32, weight_bits=4)
    for layer in (merged, normed, quantised):
        net = analyze(nn.Sequential(layer, PBit(), nn.Linear(32, 4)), (16,))
        assert not any("besides its .weight" in note for note in net.notes), net.notes


def test_a_model_holding_an_embedding_that_fails_on_any_input_shows_the_float_input_s_error():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 2)

        def forward(self, x):
            raise ValueError("this model wants two inputs")

    with pytest.raises(AnalysisError, match=r"Broken does not run on inputs of shape \(6,\): this model wants two"):
        analyze(Broken(), (6,))


def test_activation_bits_after_each_neuron_and_the_input():
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), PBit(),           # input: 8 bits
        nn.Linear(8, 8), Quantize(1),                                       # after p-bit: 1
        nn.Linear(8, 8), nn.Dropout(), Quantize(3),                         # after sign: 1
        nn.Linear(8, 8), nn.Tanh(),                                         # after quant:3: 3
        nn.Linear(8, 2))                                                    # after tanh: 32
    net = analyze(model, (1, 4, 4), input_bits=8)
    assert [l.activation_bits for l in net.layers] == [8, 1, 1, 3, 32]
    assert [l.stochastic_input for l in net.layers] == [False, True, True, True, True]
    assert net.unresolved == [] and net.method == "torch.fx"
    # batch norm keeps the precision; a 2x2 average pool of 3-bit values is their 5-bit sum
    cnn = analyze(create("cnn", neuron="quant:3", input_shape=(1, 28, 28)), (1, 28, 28), input_bits=4)
    assert [l.activation_bits for l in cnn.layers] == [4, 3, 5, 3, 5, 5]
    assert [l.weight_bits for l in analyze(create("mlp", weight_bits=32), (1, 28, 28)).layers] == [32, 32, 32]


def test_bit_widths_any_integer_from_one_but_nothing_else(tech):
    """The energy model prices widths pdnn's layers do not offer (16 bits), unlike pdnn.nn.check_bits."""
    assert eo_energy_pj(8, 16, 12, tech=tech)["total_pj"] > eo_energy_pj(8, 8, 12, tech=tech)["total_pj"]
    for bad in (0, -1, True, 8.0, "8", 33, 64):  # above 32 had been priced as float arithmetic on wider words
        with pytest.raises(ValueError, match=r"weight bits must be an integer from 1 to 32 \(32 = float\)"):
            eo_energy_pj(8, bad, 1, tech=tech)
    for bad in (0, 1000):
        with pytest.raises(ValueError, match=r"^input_bits must be an integer from 1 to 32 \(32 = float\)"):
            analyze(nn.Sequential(nn.Linear(4, 2)), (4,), input_bits=bad)
    for bad in (0, -3, 2.5, 64, "8", True):  # a module's own width: 2.5 had been priced as 2, 64 above float;
        declared = nn.Identity()              # and the model, which runs, was said not to run on its inputs
        declared.precision = bad
        with pytest.raises(ValueError, match=r"^Identity.precision must be an integer from 1 to 32"):
            analyze(nn.Sequential(nn.Linear(4, 3), declared, nn.Linear(3, 2)), (4,))
    assert analyze(nn.Sequential(nn.Linear(4, 2)), (4,), input_bits=np.int64(8)).to_dict()["input_bits"] == 8
    layer = nn.Linear(4, 2)
    layer.weight_bits = 0  # a user layer declaring its own width
    with pytest.raises(ValueError, match="^Linear.weight_bits must be an integer from 1 to 32"):
        analyze(nn.Sequential(layer), (4,))


def test_unknown_precision_is_listed_not_guessed():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.q, self.b = nn.Linear(4, 4), Quantize(2), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.sin(self.q(self.a(x))))

    net = analyze(Odd(), (4,))
    assert net.unresolved == ["b"]
    assert not net.layers[1].activation_bits_known and net.layers[1].activation_bits == 32
    assert any("sin" in note for note in net.notes)


def test_untraceable_model_is_walked_with_hooks():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.p, self.b = nn.Linear(4, 4), PBit(), nn.Linear(4, 2)

        def forward(self, x):
            h = self.p(self.a(x))
            if h.sum() > 1e9:  # data-dependent control flow defeats torch.fx
                h = h * 2
            return self.b(h)

    net = analyze(Branchy(), (4,))
    assert net.method == "forward hooks"
    assert [l.activation_bits for l in net.layers] == [8, 1] and net.layers[1].stochastic_input


def test_weights_used_without_a_module_call_are_named_by_the_hook_walk():
    """nn.MultiheadAttention multiplies by its projection weights as tensors (its out_proj is a
    Linear it never calls): a walk that prices the modules it sees called must say it left them out."""
    net = analyze(PBitInATorchLayer(), (5, 4))
    assert net.method == "forward hooks"  # the layer's Python control flow defeats torch.fx
    assert [l.name for l in net.layers] == ["emb", "enc.linear1", "enc.linear2", "out"]
    assert [n.split(":")[0] for n in net.notes if "no module call was seen to use" in n] == [
        "enc.self_attn (MultiheadAttention)"]  # once, for its own in_proj_weight and its out_proj

    class OwnWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.p, self.w = nn.Linear(4, 8), PBit(), nn.Parameter(torch.randn(3, 8))

        def forward(self, x):
            h = self.p(self.a(x))
            if h.sum() > 1e9:  # data-dependent control flow defeats torch.fx
                h = h * 2
            return h @ self.w.t()

    net = analyze(OwnWeight(), (4,))
    assert [n.split(":")[0] for n in net.notes if "no module call was seen to use" in n] == ["OwnWeight itself"]


def test_a_layer_the_traced_graph_leaves_out_is_named_by_the_fx_walk_too():
    """A layer behind a branch the trace took the other way (a flag, or a Python coin of the
    forward) was left out of the count without a word where fx traced the model; the hook walk
    named it (R219 D2). Weights read as tensors by a function (here F.linear, which the walk
    names as not priced) are not named again, nor are the layers inside a torch layer called
    whole, and a constant of the forward hides no weight of the model's own (R220)."""
    class Skippable(nn.Module):
        def __init__(self, skip: bool):
            super().__init__()
            self.skip, self.a, self.p = skip, nn.Linear(4, 8), PBit()
            self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 3)
            self.d = nn.Linear(8, 3)  # its weights used as tensors

        def forward(self, x):
            h = self.p(self.a(x))
            if not self.skip:
                h = self.b(h)
            return self.c(h) + F.linear(h, self.d.weight, self.d.bias)

    for skip, left_out in ((True, ["b (Linear)"]), (False, [])):
        net = analyze(Skippable(skip), (4,))
        assert net.method != "forward hooks"
        assert [n.split(":")[0] for n in net.notes if "no module call was seen to use" in n] == left_out

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.p = nn.Linear(4, 8), PBit()
            self.enc = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
            self.unused = nn.Parameter(torch.randn(3, 8))

        def forward(self, x):
            return self.enc(self.p(self.a(x)) * torch.tensor([2.0]))

    net = analyze(Encoder(), (5, 4))
    assert [n.split(":")[0] for n in net.notes if "no module call was seen to use" in n] == ["Encoder itself"]


def test_noise_injectors_pay_for_random_numbers(tech):
    plain = analyze(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)), (8,))
    noisy = analyze(nn.Sequential(nn.Linear(8, 8), GaussianNoise(0.3), nn.Tanh(), nn.Linear(8, 2)), (8,))
    dither = analyze(nn.Sequential(nn.Linear(8, 8), DitheredQuantize(2), nn.Linear(8, 2)), (8,))
    assert [p.kind for p in noisy.layers[0].neuron] == ["noise", "nonlinearity"]
    assert noisy.stochastic and not plain.stochastic
    assert dither.layers[1].activation_bits == 2 and dither.layers[0].neuron[0] == NeuronPart("noise", 2, True, "1")
    s = Settings(tech)
    extra = network_energy(noisy, 1, s)["terms"]["neuron_j"] - network_energy(plain, 1, s)["terms"]["neuron_j"]
    assert extra == pytest.approx(8 * (tech.rng_pj(tech.noise_random_bits) + tech.float_add_pj()) * 1e-12)


def test_noise_on_a_float_sum_is_added_and_compared_in_float(tech):
    """A dithered quantiser or hard p-bit on a float layer's sum: its random bits, a float add and
    k float comparisons -- so it never costs less than the same quantiser without noise."""
    float_add, rng = tech.float_add_pj(), tech.rng_pj(tech.noise_random_bits)
    for k, noisy, plain in ((1, HardPBit(), Quantize(1)), (2, DitheredQuantize(2), Quantize(2)),
                            (4, DitheredQuantize(4), Quantize(4))):
        neuron = {name: network_energy(analyze(nn.Sequential(nn.Linear(16, 1), module), (16,)), 1)["terms"]["neuron_j"]
                  for name, module in (("noisy", noisy), ("plain", plain))}
        assert neuron["noisy"] == pytest.approx((rng + float_add + k * float_add) * 1e-12)
        assert neuron["plain"] == pytest.approx(k * float_add * 1e-12) and neuron["noisy"] > neuron["plain"]
    # on an integer layer the add and the comparisons are at the accumulator's width
    layer = analyze(nn.Sequential(QuantLinear(16, 1, weight_bits=4), DitheredQuantize(2)), (16,)).layers[0]
    acc = accumulator_bits(16, 8, 4)
    assert layer.neuron[0].energy_pj(tech, acc) == pytest.approx(
        rng + tech.int_add_pj(max(tech.noise_random_bits, acc)) + 2 * tech.int_add_pj(acc))


def test_layer_aggregation_widens_through_clips_and_residual_sums():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.p1 = QuantConv2d(3, 4, 3, padding=1, weight_bits=4), PBit()
            self.c2, self.p2 = QuantConv2d(4, 4, 3, padding=1, weight_bits=4), PBit()
            self.fc = QuantLinear(64, 5, weight_bits=4)

        def forward(self, x):
            h = self.p1(self.c1(x))
            return self.fc((h + self.p2(self.c2(h))).flatten(1))

    residual = analyze(Residual(), (3, 4, 4))
    clipped = analyze(nn.Sequential(nn.Linear(8, 8), PBit(), nn.Hardtanh(), nn.Linear(8, 2)), (8,))
    layer = Settings(aggregate="layer")
    for t in (1, 15, 63):
        bits = averaged_bits(1, t)  # T+1 levels of one averaged p-bit
        assert [l["activation_bits"] for l in network_energy(residual, t, layer)["layers"]] == [8, bits, bits + 1]
        assert [l["activation_bits"] for l in network_energy(clipped, t, layer)["layers"]] == [8, bits]
    assert [l["activation_bits"] for l in network_energy(residual, 15)["layers"]] == [8, 1, 2]  # per sample


class WrittenResidual(nn.Module):
    """One residual sum of two p-bit outputs, written in the ways people write it."""

    def __init__(self, writing: str):
        super().__init__()
        self.writing = writing
        self.fc1, self.p1, self.fc2, self.p2, self.fc3 = nn.Linear(6, 8), PBit(), nn.Linear(8, 8), PBit(), nn.Linear(8, 3)

    def forward(self, x):
        h = self.p1(self.fc1(x))
        out = self.p2(self.fc2(h))
        if self.writing == "plus":
            out = out + h
        elif self.writing == "augmented":
            out += h
        elif self.writing == "method":
            out.add_(h)
        else:  # "alias": a name bound before the sum reads it
            kept = out
            out += h
            return self.fc3(kept)
        return self.fc3(out)


def test_a_residual_sum_is_priced_however_it_is_written():
    for t in (1, 4):
        priced = {writing: network_energy(analyze(WrittenResidual(writing), (6,)), t)
                  for writing in ("plus", "augmented", "method", "alias")}
        assert [l["activation_bits"] for l in priced["plus"]["layers"]] == [8, 1, 2]  # the last reads the sum
        for writing, energy in priced.items():
            assert (energy["total_j"], energy["terms"]) == (priced["plus"]["total_j"], priced["plus"]["terms"]), writing


POOLS = {  # 8 x 8 p-bit outputs, 4 channels, pooled by: (features after it, values per window, module or function)
    "nn.AvgPool2d(2)": (64, 4, lambda: nn.AvgPool2d(2)),
    "F.avg_pool2d(h, 2)": (64, 4, lambda h: F.avg_pool2d(h, 2)),
    "F.avg_pool2d(h, kernel_size=(1, 4))": (64, 4, lambda h: F.avg_pool2d(h, kernel_size=(1, 4))),
    "nn.AvgPool2d(3, stride=1)": (144, 9, lambda: nn.AvgPool2d(3, stride=1)),  # overlapping windows
    "nn.AdaptiveAvgPool2d(3)": (36, 16, lambda: nn.AdaptiveAvgPool2d(3)),  # 8 -> 3: [0, 3), [2, 6), [5, 8)
    "F.adaptive_avg_pool2d(h, 1)": (4, 64, lambda h: F.adaptive_avg_pool2d(h, 1)),
    "F.max_pool2d(h, 2)": (64, 1, lambda h: F.max_pool2d(h, 2)),
    "h.mean((2, 3))": (4, 64, lambda h: h.mean((2, 3))),  # a global average pool written by hand
    "torch.sum(h.flatten(2), -1)": (4, 64, lambda h: torch.sum(h.flatten(2), -1)),
    "torch.sum(input=h, dim=(2, 3))": (4, 64, lambda h: torch.sum(input=h, dim=(2, 3))),
    "F.avg_pool2d(h[0], 2)[None]": (64, 4, lambda h: F.avg_pool2d(h[0], 2)[None]),  # [C, H, W]: unbatched
    "nn.AdaptiveAvgPool2d(1), unbatched": (4, 64, lambda: nn.Sequential(nn.Flatten(0, 1), nn.AdaptiveAvgPool2d(1),
                                                                        nn.Unflatten(0, (1, 4)))),
    "F.avg_pool1d(h.flatten(1), 4)": (64, 4, lambda h: F.avg_pool1d(h.flatten(1), 4)),  # [N, L]: one dimension
}


class Pooled(nn.Module):
    """A p-bit layer, one pool of :data:`POOLS`, a layer reading it; ``branchy``: data-dependent
    control flow, so that the model is walked with forward hooks instead of torch.fx."""

    def __init__(self, pool: str, neuron: nn.Module, branchy: bool = False):
        super().__init__()
        features, _, make = POOLS[pool]
        self.branchy, self.is_module = branchy, pool.startswith("nn.")  # (a module, or a function of h)
        self.c, self.neuron = QuantConv2d(3, 4, 3, padding=1, weight_bits=4), neuron
        self.pool = make() if self.is_module else make
        self.flatten, self.fc = nn.Flatten(), nn.Linear(features, 2)

    def forward(self, x):
        h = self.neuron(self.c(x))
        if self.branchy and h.sum() > 1e9:
            h = h * 2
        return self.fc(self.flatten(self.pool(h)))


def test_average_pooling_is_read_at_the_width_of_its_sum():
    """The mean of k values of b bits has k(2^b - 1) + 1 levels: the next layer reads
    ceil(log2(k(2^b - 1) + 1)) bits, the 1/k folded into its weights; max pooling keeps b bits.
    A mean or sum over dimensions is the same sum."""
    for pool, (_, window, _) in POOLS.items():
        bits = math.ceil(math.log2(window + 1))  # b = 1
        assert [l.activation_bits for l in analyze(Pooled(pool, PBit()), (3, 8, 8)).layers] == [8, bits], pool
        if pool.startswith("nn."):  # (a function's output is outside any module: unknown to the hook walk)
            net = analyze(Pooled(pool, PBit(), branchy=True), (3, 8, 8))
            assert net.method == "forward hooks" and [l.activation_bits for l in net.layers] == [8, bits], pool
    assert pooling_window(None, 2, (1, 4, 8, 8), (1, 4, 3, 3)) == pooling_window(None, 2, (4, 8, 8), (4, 3, 3)) == 16
    assert [l.activation_bits for l in analyze(Pooled("nn.AvgPool2d(2)", Quantize(2)), (3, 8, 8)).layers] == [8, 4]
    assert [l.activation_bits for l in analyze(Pooled("nn.AvgPool2d(2)", nn.Tanh()), (3, 8, 8)).layers] == [8, 32]
    assert (pooled_bits(2, 4), pooled_bits(31, 4), pooled_bits(32, 4), pooled_bits(None, 4)) == (4, 32, 32, None)
    # layer aggregation: T averaged p-bits pooled over k positions have kT + 1 levels, whatever k
    layer = Settings(aggregate="layer")
    for pool, k in (("nn.AvgPool2d(2)", 4), ("nn.AvgPool2d(3, stride=1)", 9)):
        net = analyze(Pooled(pool, PBit()), (3, 8, 8))
        for t in (1, 3, 7, 10, 63):
            assert network_energy(net, t, layer)["layers"][1]["activation_bits"] == math.ceil(math.log2(k * t + 1))
    pooled3 = analyze(nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), PBit(), nn.AvgPool1d(3), nn.Flatten(),
                                    nn.Linear(12, 2)), (3, 9))
    assert [network_energy(pooled3, t, layer)["layers"][1]["activation_bits"] for t in (1, 3, 7)] == [2, 4, 5]


MIXES = {  # how two neurons' outputs a, b (batch x 8; x: the input, batch x 6) are combined
    "a + b": lambda m, a, b, x: a + b,
    "pool(a) + b": lambda m, a, b, x: torch.cat([m.pool(a[:, None, :6]).flatten(1)] * 4, 1) + b,  # windows of 3
    "torch.add(a, b, alpha=2)": lambda m, a, b, x: torch.add(a, b, alpha=2),
    "torch.add(1, a, alpha=2) + b": lambda m, a, b, x: torch.add(1, a, alpha=2) + b,
    "cat(a, b) + cat(a, a)": lambda m, a, b, x: torch.cat([a, b], 1) + torch.cat([a, a], 1),
    "cat(a.reshape(-1, 4, 2).sum(2)) + b": lambda m, a, b, x: torch.cat([a.reshape(-1, 4, 2).sum(2)] * 2, 1) + b,
    "a / 3 + b": lambda m, a, b, x: a / 3 + b,
    # on grids of unknown ratio: the network input's, a batch norm's scale, a clip's bounds, a rounding
    "a + x": lambda m, a, b, x: a + torch.cat([x, x[:, :2]], 1),
    "norm(a) + b": lambda m, a, b, x: m.norm(a) + b,
    "clamp(a, -0.5, 0.5) + b": lambda m, a, b, x: torch.clamp(a, -0.5, 0.5) + b,
    "div(a, 0.1, rounding_mode=floor) + b": lambda m, a, b, x: torch.div(a, 0.1, rounding_mode="floor") + b,
    "3 / a + b": lambda m, a, b, x: 3 / a + b,
    "pool with padding(a) + b": lambda m, a, b, x: torch.cat([m.padded(a[:, None]).flatten(1)] * 2, 1) + b,
    "torch.add(a, b, alpha=inf)": lambda m, a, b, x: torch.add(a, b, alpha=math.inf),
    "torch.add(other=b, input=a, alpha=2)": lambda m, a, b, x: torch.add(other=b, input=a, alpha=2),
    "max_pool(cat(a, b))": lambda m, a, b, x: F.max_pool1d(torch.cat([a, b], 1), 2),
    "pool(clamp(a, -0.5, 0.5))": lambda m, a, b, x: torch.cat([m.pool(torch.clamp(a, -0.5, 0.5)[:, None, :6])
                                                                .flatten(1)] * 4, 1),
    "torch.add(1, a, alpha=0) + torch.add(1, b, alpha=0)": lambda m, a, b, x: torch.add(1, a, alpha=0) +
                                                                              torch.add(1, b, alpha=0),
    "cat(a, -a)": lambda m, a, b, x: torch.cat([a, -a], 1),
    "cat(a, a + 0.5)": lambda m, a, b, x: torch.cat([a, a + 0.5], 1),
    "cat(a - b, a + b)": lambda m, a, b, x: torch.cat([a - b, a + b], 1),
    "clamp(a) + clamp(b)": lambda m, a, b, x: torch.clamp(a, -0.5, 0.7) + torch.clamp(b, -0.9, 0.6),
    "0.3 * a + 0.7 * b": lambda m, a, b, x: 0.3 * a + 0.7 * b,
}


class Mixed(nn.Module):
    """Two neurons' outputs combined as :data:`MIXES` says, then read by one layer."""

    def __init__(self, a: nn.Module, b: nn.Module, how: str):
        super().__init__()
        self.la, self.lb, self.a, self.b, self.how = nn.Linear(6, 8), nn.Linear(6, 8), a, b, how
        self.pool, self.norm = nn.AvgPool1d(3), nn.BatchNorm1d(8)
        self.padded = nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False)  # (windows of 2 and 3)
        self.out = nn.Linear(16 if how.startswith(("cat(a, b)", "cat(a, -a)", "cat(a, a + ", "cat(a - b")) else 8, 2)

    def forward(self, x):
        return self.out(MIXES[self.how](self, self.a(self.la(x)), self.b(self.lb(x)), x))


def test_layer_aggregation_counts_a_sum_on_the_finest_grid_its_terms_share():
    """T samples of a sum take ceil(log2(T * s + 1)) bits, s the steps the sum spans on the finest
    grid of its terms: a p-bit is 1 step of 2, a 3-bit value in [-1, 1] 7 steps of 2/7 (so their
    sum spans 14 steps of 2/7), a mean of 3 p-bits 3 steps of 2/3, a HardPBit(0, 1) 1 step of 1; a
    deterministic term is the same in every sample and counts T times."""
    cases = [(PBit(), DitheredQuantize(3), "a + b", 14), (PBit(), Quantize(4), "a + b", 30),
             (PBit(), PBit(), "pool(a) + b", 6), (PBit(), PBit(), "torch.add(a, b, alpha=2)", 3),
             (PBit(), PBit(), "torch.add(1, a, alpha=2) + b", 3), (PBit(), PBit("unipolar"), "a + b", 3),
             (PBit(), PBit(), "a + b", 2),
             (HardPBit(0, 1), PBit(), "a + b", 3), (PBit(), PBit("unipolar"), "cat(a.reshape(-1, 4, 2).sum(2)) + b", 5),
             (PBit(), PBit(), "a / 3 + b", 4), (HardPBit(0, 1), PBit(), "torch.add(other=b, input=a, alpha=2)", 5),
             (DitheredQuantize(2), DitheredQuantize(2, mode="unipolar"), "a + b", 9),
             (PBit(), HardPBit(0.5, 2.5), "max_pool(cat(a, b))", 3)]  # offsets 1 apart: spaced unknown, 4 values
    layer, samples = Settings(aggregate="layer"), (1, 2, 3, 7, 1000, 2**20)
    for a, b, how, steps in cases:
        net = analyze(Mixed(a, b, how), (6,))
        widths = [network_energy(net, t, layer)["layers"][2]["activation_bits"] for t in samples]
        assert widths == [min(32, math.ceil(math.log2(t * steps + 1))) for t in samples], (how, a, b)
    assert network_energy(analyze(Mixed(DitheredQuantize(2), DitheredQuantize(2, mode="unipolar"), "a + b"), (6,)),
                          1)["layers"][2]["activation_bits"] == 4  # per sample too: 10 values, not 3 bits' 8
    # per sample: a cat of values on grids apart (negated, shifted) reads them all; a sum of values spaced
    # unknown takes the terms' bits together (n1 n2 values), and one on a grid no more than its span's
    for a, b, how, bits in ((PBit("unipolar"), PBit(), "cat(a, -a)", 2), (PBit(), PBit(), "cat(a, a + 0.5)", 2),
                            (PBit("unipolar"), PBit("unipolar"), "cat(a - b, a + b)", 3),
                            (Quantize(2), Quantize(2), "clamp(a) + clamp(b)", 4),
                            (PBit(), PBit(), "0.3 * a + 0.7 * b", 2)):
        assert network_energy(analyze(Mixed(a, b, how), (6,)), 1)["layers"][2]["activation_bits"] == bits, how
    constant = analyze(Mixed(PBit(), PBit(), "torch.add(1, a, alpha=0) + torch.add(1, b, alpha=0)"), (6,))
    assert constant.method == "torch.fx" and network_energy(constant, 3, layer)["layers"][2]["activation_bits"] == 2
    # a sum or pool of values on grids of unknown ratio or spacing, against an average: priced as a
    # float, and said; per sample, a pool of values of unknown spacing counts their multisets
    for a, how, per_sample in ((PBit(), "a + x", 9), (PBit(), "norm(a) + b", 2), (PBit(), "clamp(a, -0.5, 0.5) + b", 2),
                               (PBit(), "div(a, 0.1, rounding_mode=floor) + b", 2), (PBit(), "3 / a + b", 2),
                               (PBit(), "pool with padding(a) + b", 3), (PBit(), "torch.add(a, b, alpha=inf)", 2),
                               (Quantize(4), "cat(a, b) + cat(a, a)", 9),  # 18 values spaced unknown + 16
                               (DitheredQuantize(2), "pool(clamp(a, -0.5, 0.5))", 5)):  # C(4 + 3 - 1, 3) = 20 sums
        net = analyze(Mixed(a, PBit(), how), (6,))
        assert net.method == "torch.fx" and any("grids of unknown ratio" in n for n in net.notes), how
        assert network_energy(net, 3, layer)["layers"][2]["activation_bits"] == 32, how
        assert network_energy(net, 3)["layers"][2]["activation_bits"] == per_sample, how
        assert network_energy(net, 1, layer) == network_energy(net, 1), how  # one sample: nothing is averaged


def test_an_in_place_method_is_priced_as_its_out_of_place_form():
    class Clipped(nn.Module):
        def __init__(self, writing: str):
            super().__init__()
            self.writing = writing
            self.fc1, self.p1, self.fc2 = nn.Linear(6, 8), PBit(), nn.Linear(8, 3)

        def forward(self, x):
            h = self.p1(self.fc1(x))
            if self.writing == "relu":
                h = h.relu()
            elif self.writing == "relu_":
                h.relu_()
            elif self.writing == "exp":  # not priced: the next layer reads a value of unknown precision
                h = h.exp()
            elif self.writing == "exp_":
                h.exp_()
            elif self.writing == "torch.exp_":
                torch.exp_(h)
            elif self.writing == "exp_(input=)":
                torch.exp_(input=h)
            elif self.writing == "torch.detach_":  # in place, but no operation on the values
                torch.detach_(h)
            elif self.writing == "copy_":  # the input's 8-bit values
                h.copy_(torch.cat([x, x[:, :2]], 1))
            elif self.writing == "copy":
                h = torch.cat([x, x[:, :2]], 1).clone()
            elif self.writing == "requires_grad_":  # in place, but no operation on the values
                h.requires_grad_()
            return self.fc2(h)

    energy = {w: network_energy(analyze(Clipped(w), (6,)), 2)
              for w in ("plain", "relu", "relu_", "exp", "exp_", "torch.exp_", "exp_(input=)", "copy", "copy_",
                        "requires_grad_", "torch.detach_")}
    assert energy["relu_"] == energy["relu"] and energy["exp_"] == energy["exp"] != energy["plain"]
    assert energy["torch.exp_"]["total_j"] == energy["exp_(input=)"]["total_j"] == energy["exp"]["total_j"]
    assert energy["torch.detach_"]["total_j"] == energy["plain"]["total_j"]
    assert energy["copy_"]["total_j"] == energy["copy"]["total_j"] and energy["copy_"]["layers"][1]["activation_bits"] == 8
    assert energy["requires_grad_"]["total_j"] == energy["plain"]["total_j"]
    assert [l["activation_bits"] for l in energy["requires_grad_"]["layers"]] == [8, 1]


def test_layer_aggregation_counts_averaged_bits(tech):
    assert [averaged_bits(1, t) for t in (1, 2, 3, 4, 7, 8)] == [1, 2, 2, 3, 3, 4]
    net = analyze(create("mlp", neuron="pbit"), (1, 28, 28))
    s = Settings(tech, aggregate="layer")
    e = network_energy(net, 8, s)
    assert [l["activation_bits"] for l in e["layers"]] == [8, 4, 4]
    assert all(l["sums_per_inference"] == 1 for l in e["layers"])


# --- technology tables --------------------------------------------------------------------------

def test_default_table_numbers_and_sources(tech):
    assert tech.op("int_add").energy_pj(8) == 0.03 and tech.op("int_add").energy_pj(32) == 0.1
    assert tech.op("int_mult").energy_pj(8, 8) == 0.2 and tech.op("int_mult").energy_pj(32, 32) == 3.1
    assert tech.float_add_pj() == 0.9 and tech.float_mult_pj() == 3.7
    assert tech.op("int_mult").energy_pj(4, 4) == pytest.approx(0.2 * 16 / 64)  # quadratic below 8 bits
    assert tech.memory("sram").pj_per_bit == 10 / 64 and tech.memory("dram").pj_per_bit == 1300 / 64
    assert all(op.source for op in tech.ops.values()) and all(m.source for m in tech.memories.values())


def test_pdnn_s_rounding_called_in_a_forward_is_priced_as_a_k_bit_quantiser():
    """A forward calling ``quantized_activation`` had its rounding priced as two float compares and
    an unknown ``floor``, the next layer's input as 32 bits (the straight-through sum with a float);
    then, once the rounding was one call, as an unknown private helper (R226). Now the rounding is
    a k-bit quantiser as the ``Quantize`` module is, its output k bits however the call is reached;
    the forward's own tanh is priced as the float nonlinearity it is, and a unipolar call's sigmoid,
    whose value only steers the gradient, not at all (it was a second nonlinearity, R230)."""
    from pdnn import functional as pdnn_functional

    class Net(nn.Module):
        def __init__(self, activation):
            super().__init__()
            self.fc1, self.fc2, self.activation = nn.Linear(12, 16), nn.Linear(16, 3), activation

        def forward(self, x):
            return self.fc2(self.activation(self.fc1(x)))

    def priced(activation):
        net = analyze(Net(activation), (12,))
        assert not net.notes
        return [(layer.activation_bits, [(p.kind, p.bits) for p in layer.neuron]) for layer in net.layers]

    for mode in ("bipolar", "unipolar"):
        assert priced(Quantize(2, mode=mode)) == [(8, [("threshold", 2)]), (2, [])]
        called = [(8, [("nonlinearity", 32), ("threshold", 2)]), (2, [])]
        assert priced(lambda h: quantized_activation(h, 2, mode=mode)) == called
        assert priced(lambda h: pdnn_functional.quantized_activation(h, 2, mode=mode)) == called
    assert priced(lambda h: quantize_levels(torch.tanh(h), 3)) == [(8, [("nonlinearity", 32), ("threshold", 3)]),
                                                                   (3, [])]

    def by_name(h):  # (fx.wrap covered only calls made through pdnn.functional; R230)
        m = torch.tanh(h)
        return straight_through(quantize_levels(m, 2), m)

    def by_keyword(h):  # (the walk read the value from the positional arguments only; R230)
        m = torch.tanh(h)
        return pdnn_functional.straight_through(value=pdnn_functional.quantize_levels(m, 2), surrogate=m)

    assert priced(by_name) == priced(by_keyword) == [(8, [("nonlinearity", 32), ("threshold", 2)]), (2, [])]

    def walked(activation):  # (sign is no operation the walk prices: a note, the same for both)
        net = analyze(Net(activation), (12,))
        return net.notes, [(layer.activation_bits, [(p.kind, p.bits) for p in layer.neuron]) for layer in net.layers]

    assert walked(lambda h: straight_through(torch.sign(h), torch.tanh(h))) == walked(torch.sign)


def test_a_linear_operation_of_two_operands_is_sized_by_the_wider():
    """A table's multiply with linear scaling was priced on its first operand alone: 8 by 1 bits
    as 8 by 8, and 1 by 8 at an eighth of that (R227)."""
    from pdnn.energy.tech import Op

    mult = Op("int_mult", "linear", ((8, 0.2), (32, 3.1)), "a table of one's own")
    assert mult.energy_pj(8, 1) == mult.energy_pj(1, 8) == mult.energy_pj(8, 8) == mult.energy_pj(8) == 0.2
    assert mult.energy_pj(4, 2) == mult.energy_pj(4) == 0.1


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[ops.int_mult]", "[ops.int_multiply]"), "ops.int_mult"),
    (lambda t: t.replace("energy_pj = 20.0", "energy_pj = -20.0"), "memory.sram_32kb.energy_pj"),
    (lambda t: t.replace("{ 16 = 0.4, 32 = 0.9 }", '{ 16 = "cheap", 32 = 0.9 }'), "ops.float_add.points_pj"),
    (lambda t: t.replace('sram = "sram_8kb"', 'sram = "sram_2kb"'), "sram_2kb"),
    # an alias named like a level would hide it (a lookup tries aliases first)
    (lambda t: t.replace('sram = "sram_8kb"', 'dram = "sram_8kb"'), "aliases.dram has the name of the memory level"),
    (lambda t: t.replace('word_bits = 64\nsource = "Horowitz 2014: cache (SRAM) read, 64-bit word, 1 MB',
                         'source = "Horowitz 2014: cache (SRAM) read, 64-bit word, 1 MB'), "memory.sram_1mb.word_bits"),
    (lambda t: t + "\n[oops\n", "not valid TOML"),
    # a typo beside the real key is not ignored; the message lists what is allowed
    (lambda t: t.replace("energy_pj = 10.0", "energy_pJ = 10.0\nenergy_pj = 10.0"),
     r"unknown key 'energy_pJ' in \[memory.sram_8kb\]; allowed: energy_pj, word_bits, source"),
    (lambda t: t.replace('[ops.int_mult]\n', '[ops.int_mult]\nsorce = "x"\n'), r"'sorce' in \[ops.int_mult\]"),
    (lambda t: t.replace("noise_random_bits = 16", "noise_random_bits = 16\nlut_bits = 8"),
     r"'lut_bits' in \[neuron\]"),
    (lambda t: t.replace('description = "', 'descripton = "'), "'descripton' in the top level"),
    # bit widths are TOML integers, not strings, floats or booleans
    (lambda t: t.replace("pbit_random_bits = 8", 'pbit_random_bits = "8"'), "neuron.pbit_random_bits"),
    (lambda t: t.replace("pbit_random_bits = 8", "pbit_random_bits = true"), "neuron.pbit_random_bits"),
    (lambda t: t.replace("word_bits = 64", "word_bits = 64.0", 1), "memory.sram_8kb.word_bits"),
    (lambda t: t.replace("{ 8 = 0.03, 32 = 0.1 }", "{ 8 = 0.03, x32 = 0.1 }"), "ops.int_add.points_pj keys"),
    (lambda t: t.replace("{ 8 = 0.03, 32 = 0.1 }", '{ 8 = 0.03, "²" = 0.1 }'), "ops.int_add.points_pj keys"),
    # one width twice, with two energies: each had served one side of it
    (lambda t: t.replace("{ 8 = 0.03, 32 = 0.1 }", "{ 8 = 0.03, 08 = 0.05, 32 = 0.1 }"),
     r"ops.int_add.points_pj gives 8 bits twice \('8', '08'\)"),
    # a missing scaling was taken as linear, which priced a multiply of 8 by 1 bits as of 8 by 8 (R227)
    (lambda t: t.replace('[ops.int_mult]\nscaling = "quadratic"\n', "[ops.int_mult]\n"),
     r"ops.int_mult.scaling is missing; give one of linear, quadratic, constant"),
    # a constant operation has one value; a second point would be silently ignored
    (lambda t: t.replace("points_pj = { 32 = 4.8 }", "points_pj = { 16 = 2.4, 32 = 4.8 }"),
     'ops.float_nonlinearity has scaling = "constant" but 2 points'),
])
def test_bad_tables_name_the_problem(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    text = edit(TABLE.read_text())
    assert text != TABLE.read_text()
    path.write_text(text)
    with pytest.raises(TechError, match=message):
        load_table(path)


def test_unknown_memory_level_and_missing_file(tech, tmp_path):
    for role in ("weight", "activation"):
        with pytest.raises(ValueError, match=f"{role} memory: unknown memory level 'hbm'.*dram, dram_high"):
            Settings(tech, **{f"{role}_memory": "hbm"})
    with pytest.raises(TechError, match="does not exist"):
        load_table(tmp_path / "none.toml")
    (tmp_path / "tables").mkdir()
    with pytest.raises(TechError, match="tables is a folder; pass a TOML file"):
        load_table(tmp_path / "tables")
    (tmp_path / "latin1.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(TechError, match="latin1.toml is not a UTF-8 text"):
        load_table(tmp_path / "latin1.toml")
    with pytest.raises(ValueError, match="per-batch:B"):
        Reuse.parse("per-batch:0x")
    assert Reuse.parse("per-batch:16") == Reuse("per-batch", 16)


# --- trade-offs ---------------------------------------------------------------------------------

@FAST
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 1)), min_size=1, max_size=30))
def test_pareto_front_is_exactly_the_non_dominated_points(points):
    front = pareto_front(points)
    dominates = lambda a, b: a[0] <= b[0] and a[1] >= b[1] and a != b  # noqa: E731
    for i in front:
        assert not any(dominates(q, points[i]) for q in points)
    for i in set(range(len(points))) - set(front):
        assert any(dominates(points[f], points[i]) for f in front)


def test_a_point_identical_to_the_reference_leaves_both_on_the_front():
    """Of identical points only the first was on the front: the reference, chosen as best over
    its twin, was reported off the front it defines."""
    twin, ref = ({"energy_j": 2.0, "accuracy": 0.9}, {"energy_j": 2.0, "accuracy": 0.9, "float32": True})
    result = tradeoff([twin, ref, {"energy_j": 3.0, "accuracy": 0.8}], tolerance=0.0)
    assert result["best"]["is_reference"] and result["best"]["pareto"]
    assert result["pareto_front"] == [0, 1] and [p["pareto"] for p in result["points"]] == [True, True, False]


def test_parse_tolerance_reads_percentage_points():
    for same in ("1", "1%", "1.0", " 1 % "):
        assert parse_tolerance(same) == pytest.approx(0.01)
    assert parse_tolerance("0.5") == pytest.approx(0.005) and parse_tolerance("0") == 0
    assert math.copysign(1, parse_tolerance("-0")) == 1  # "within -0 percentage points" said nothing more
    for bad in ("x", "", "-1", "-1%", "nan", "inf", "100", "150%"):
        with pytest.raises(ValueError, match="tolerance"):
            parse_tolerance(bad)


def _fake_run(root: Path, name: str, neuron: str, rows: list[tuple[int, float]] | None,
              dataset: str = "demo", aggregate: str = "network", convert: dict | None = None) -> Path:
    """A run directory without a checkpoint: energy needs only config.json (and eval files)."""
    run = root / name
    config = ModelConfig("mlp", neuron, 32, input_shape=(1, 28, 28), width=16)
    write_json(run / "config.json", {"model": config.to_dict(), "data": {"dataset": dataset}, "label": name,
                                     **({"convert": convert} if convert else {})})
    if rows is not None:
        write_json(run / f"eval-{aggregate}.json", {
            "run": str(run), "aggregate": aggregate,
            "results": [{"samples": t, "accuracy_mean": a, "accuracy_std": 0.0, "repeats": 1, "accuracies": [a]}
                        for t, a in rows]})
    return run


def test_tradeoff_finds_front_and_min_energy_config(tmp_path):
    pbit = _fake_run(tmp_path, "pbit", "pbit", [(1, 0.80), (2, 0.85), (5, 0.88), (10, 0.87)])
    tanh = _fake_run(tmp_path, "tanh", "tanh", [(1, 0.885)])
    s = Settings()
    result = tradeoff_runs([pbit, tanh], s, tolerance=0.01)
    labels = [p["label"] for p in result["points"]]
    front = {labels[i] for i in result["pareto_front"]}
    assert front == {"pbit T=1", "pbit T=2", "pbit T=5", "tanh T=1"}  # T=10 costs more, buys less
    assert result["reference"]["label"] == "tanh T=1"
    assert result["best"]["label"] == "pbit T=5"
    e_pbit = network_energy(analyze(create("mlp", neuron="pbit", width=16), (1, 28, 28)), 5, s)["total_j"]
    e_tanh = network_energy(analyze(create("mlp", neuron="tanh", width=16), (1, 28, 28)), 1, s)["total_j"]
    assert result["best"]["energy_gain"] == pytest.approx(e_tanh / e_pbit)
    step = next(m for m in result["marginal"] if m["from_samples"] == 1)
    assert step["accuracy_gain_pct"] == pytest.approx(5.0) and step["energy_increase_pct"] > 0
    json.dumps(result, allow_nan=False)
    assert result["reference"]["basis"] == "most accurate 32-bit float deterministic run"
    # a tighter tolerance leaves only the reference itself, which is not a gain over itself
    tight = tradeoff(result["points"], 0.0)
    assert tight["best"]["label"] == "tanh T=1" and tight["best"]["is_reference"]
    assert "the reference itself" in format_tradeoff(tight) and "x less energy" not in format_tradeoff(tight)


def test_a_config_without_weight_bits_is_refused_by_pricing_and_comparing_alike(tmp_path):
    """A model section without its weight bits: the energy model once priced such a run as the
    float network while the trade-off passed it over as the reference, for a worse one; then both
    took the default. Every run records every option, and a default taken for a missing one built
    another network (a tanh run without its neuron read as p-bits, R138): both refuse it now."""
    tanh = _fake_run(tmp_path, "tanh", "tanh", [(1, 0.885)])
    sigmoid = _fake_run(tmp_path, "sigmoid", "sigmoid", [(1, 0.87)])
    config = read_json(tanh / "config.json")
    del config["model"]["weight_bits"]
    write_json(tanh / "config.json", config)
    for call in (lambda: tradeoff_runs([tanh, sigmoid], tolerance=0.01), lambda: run_network(tanh)):
        with pytest.raises(RunError, match="its 'model' section lacks weight_bits; every run's config.json records"):
            call()


def test_a_point_s_float32_flag_is_true_or_false_and_a_fan_in_a_python_int():
    """``"float32": "no"`` was taken as true, its point the reference and the drop negative; a 0-d
    tensor fan-in gave 0-d tensors that json could not write (R144 D4, D5)."""
    points = [{"energy_j": 1.0, "accuracy": 0.8, "float32": "no"}, {"energy_j": 2.0, "accuracy": 0.85}]
    with pytest.raises(UsageError, match="point 0: float32 must be true or false, got 'no'"):
        tradeoff(points)
    assert tradeoff([{**points[0], "float32": False}, points[1]])["reference"]["accuracy"] == 0.85
    terms = eo_energy_pj(torch.tensor(4), 2, 1, samples=3)
    json.dumps(terms)
    assert eo_energy_pj(4, 2, 1, samples=3) == terms


def test_tradeoff_without_a_float_run_says_what_the_reference_is(tmp_path):
    pbit = _fake_run(tmp_path, "pbit", "pbit", [(1, 0.80), (5, 0.88)])
    exact = tradeoff_runs([pbit], tolerance=0.0)
    assert exact["reference"]["basis"] == "most accurate point: no 32-bit float deterministic run was given"
    assert exact["best"]["label"] == "pbit T=5" and exact["best"]["is_reference"]
    text = format_tradeoff(exact)
    assert "reference (most accurate point: no 32-bit float deterministic run was given): pbit T=5" in text
    assert "the reference itself" in text and "x less energy" not in text
    loose = tradeoff_runs([pbit], tolerance=0.1)
    assert loose["best"]["label"] == "pbit T=1" and not loose["best"]["is_reference"]
    assert f"{loose['best']['energy_gain']:.2f}x less energy than the reference" in format_tradeoff(loose)


def test_converted_run_is_priced_without_any_checkpoint(tmp_path):
    """Energy depends on structure, not weights: a converted run (its weights live with its source)
    is rebuilt from config.json and its conversion spec."""
    conv = _fake_run(tmp_path, "conv", "tanh", [(1, 0.80), (4, 0.85)],
                     convert={"method": "pbit", "beta": 1.0, "layers": "hidden"})
    assert not list(tmp_path.rglob("*.pt"))
    net, config = run_network(conv)
    native = analyze(create("mlp", neuron="pbit", width=16), (1, 28, 28))
    assert [[p.kind for p in layer.neuron] for layer in net.layers] == [["pbit"], ["pbit"], []]
    assert network_energy(net, 4, Settings())["total_j"] == network_energy(native, 4, Settings())["total_j"]
    result = tradeoff_runs([conv, _fake_run(tmp_path, "tanh", "tanh", [(1, 0.86)])])
    assert result["best"]["label"] == "conv T=4" and not result["points"][0]["float32"]


def test_tradeoff_skips_unevaluated_runs_and_refuses_mixed_datasets(tmp_path):
    a = _fake_run(tmp_path, "a", "pbit", [(1, 0.80)])
    fresh = _fake_run(tmp_path, "fresh", "tanh", None)
    result = tradeoff_runs([a, fresh])
    assert [s["run"] for s in result["skipped"]] == [str(fresh)] and "no eval-" in result["skipped"][0]["reason"]
    assert {p["run"] for p in result["points"]} == {str(a)} and result["dataset"] == "demo"
    with pytest.raises(RunError, match="none of the runs has been evaluated"):
        tradeoff_runs([fresh])
    with pytest.raises(RunError, match="does not exist"):  # a missing run is an error, not a skip
        tradeoff_runs([a, tmp_path / "missing"])
    cifar = _fake_run(tmp_path, "c10", "tanh", [(1, 0.90)], dataset="cifar10")
    with pytest.raises(ValueError, match=r"different datasets.*/a: demo, input 1x28x28; .*/c10: cifar10"):
        tradeoff_runs([a, cifar])


def test_the_bare_tradeoff_result_can_be_plotted(tmp_path):
    """tradeoff() needs only energy_j and accuracy per point; plot_tradeoff asked for the series
    and samples that pdnn's runs add (KeyError: 'series')."""
    from pdnn.energy import plot_tradeoff, tradeoff

    result = tradeoff([{"energy_j": 2e-6, "accuracy": 0.90, "float32": True}, {"energy_j": 1e-6, "accuracy": 0.895}])
    assert plot_tradeoff(result, tmp_path / "t.png").stat().st_size > 0


def test_tradeoff_figures_tell_every_series_apart_and_hide_no_point(tmp_path, monkeypatch):
    """Beyond 20 series the colours repeated with the same marker and line (the 32-bit tanh looked
    like w4-quant4); with 12 or fewer the legend sat inside the axes, over the low-accuracy,
    high-energy points; and a DRAM figure looked like an SRAM one."""
    import pdnn.energy.report as report
    from pdnn.energy import plot_tradeoff, tradeoff

    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, out, **kw: figures.append(fig) or out)
    for count in (3, 45):
        points = [{"series": f"run{k}", "samples": t, "energy_j": (1 + k + t) * 1e-6, "accuracy": 0.5 + 0.001 * k,
                   "float32": k == 0} for k in range(count) for t in ((1, 2) if k % 2 else (1,))]
        result = tradeoff(points) | {"settings": {"weight_memory": "sram", "activation_memory": "dram",
                                                  "technology": "horowitz-45nm"}}
        plot_tradeoff(result, tmp_path / "t.png")
        fig = figures[-1]
        (ax,) = fig.axes
        assert ax.get_legend() is None and len(fig.legends) == 1  # beside the axes, not in them
        fig.canvas.draw()
        legend, axes = fig.legends[0].get_window_extent(), ax.get_window_extent()
        assert legend.x0 >= axes.x1
        styles = [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in ax.get_lines()[:count]]
        assert len(set(styles)) == count
        assert ax.get_title() == "accuracy vs energy\nweights in sram, activations in dram (horowitz-45nm)"


def test_tradeoff_text_never_cuts_labels():
    long = "fashion-mnist-tanh-pbit-calibrated-bn (layer)"
    points = [{"label": f"{long}{tag} T={t}", "series": f"{long}{tag}", "samples": t, "energy_j": e * 1e-6,
               "accuracy": a, "aggregate": "network"}
              for tag, e0 in (("-a", 1.0), ("-b", 1.5)) for t, e, a in ((1, e0, 0.5), (2, 2 * e0, 0.6))]
    lines = format_tradeoff(tradeoff(points, 0.01)).splitlines()
    for tag in ("-a", "-b"):
        assert any(line.startswith(f"{long}{tag} T=1 ") for line in lines)
        assert any(line.startswith(f"{long}{tag} ") and "1→2" in line for line in lines)
    header = lines[0]
    assert len(header) == len(lines[1])  # columns line up under the longest label


def test_layer_aggregation_flags_its_next_sample_column(small_nets):
    net = small_nets["mlp-pbit"]
    network = energy_report(net, [1, 2, 3], Settings())
    layer = energy_report(net, [1, 2, 3], Settings(aggregate="layer"))
    assert LAYER_STEP_NOTE in layer["notes"] and LAYER_STEP_NOTE not in network["notes"]
    assert "ΔE(T→T+1)/E†" in format_report(layer) and f"† {LAYER_STEP_NOTE}" in format_report(layer)
    assert "†" not in format_report(network)
    assert "ΔE(T→T+1)/E %† |" in format_markdown(layer) and f"*† ΔE(T→T+1)/E under {LAYER_STEP_NOTE}.*" in \
        format_markdown(layer) and "†" not in format_markdown(network)
    # why: 2 → 3 samples keeps the 2-bit counters, 1 → 2 widens them
    steps = [c["next_sample_increase_pct"] for c in layer["configs"]]
    assert steps[1] < steps[0] / 10 and steps[2] > steps[1]
    # computed once, as ΔE(T→T+1)/E(T)
    e1, e2 = (network_energy(net, t, Settings())["total_j"] for t in (1, 2))
    assert network["configs"][0]["next_sample_increase_pct"] == pytest.approx(100 * (e2 - e1) / e1)


def test_a_model_in_another_float_dtype_is_priced_as_float32_and_says_so():
    """A bfloat16 model's weights, activations and arithmetic were priced as float32's, unsaid."""
    model = create("mlp", neuron="pbit", width=16)
    priced = analyze(model, (1, 28, 28))
    assert priced.notes == []
    for dtype, said in ((torch.bfloat16, "bfloat16"), (torch.float64, "float64")):
        other = analyze(create("mlp", neuron="pbit", width=16).to(dtype), (1, 28, 28))
        assert other.notes == [f"the model's weights are {said}: float weights, activations and arithmetic are "
                               "priced as 32-bit floats whatever the tensors' dtype"]
        assert [(layer.weight_bits, layer.activation_bits) for layer in other.layers] == \
            [(layer.weight_bits, layer.activation_bits) for layer in priced.layers]


def test_a_deterministic_network_priced_once_costs_nothing_for_another_sample(small_nets):
    """It is priced at T = 1 only, since sampling it again gives the same output; with the prefix
    repeated per sample the formula would price a second pass, and the column said 31 %."""
    entries = [({"neuron": "tanh"}, small_nets["mlp-tanh"]), ({"neuron": "pbit"}, small_nets["mlp-pbit"])]
    for shared in (True, False):
        tanh, *pbit = energy_sweep(entries, [1, 2], Settings(shared_prefix=shared))["configs"]
        assert tanh["samples"] == 1 and tanh["next_sample_increase_pct"] == 0.0
        assert pbit[0]["next_sample_increase_pct"] > 0
    # priced at every T on request, it is what the formula gives
    repeated = energy_report(small_nets["mlp-tanh"], [1, 2], Settings(shared_prefix=False))["configs"][0]
    assert repeated["next_sample_increase_pct"] > 1


# --- the command line ---------------------------------------------------------------------------

def _dataset_args(name: str, shape: str) -> list[str]:
    try:
        from pdnn.data import describe  # noqa: F401
        return ["--dataset", name]
    except ImportError:
        return ["--input-shape", shape]


def _check_energy_json(path: Path, samples: list[int]) -> dict:
    report = json.loads(path.read_text())
    assert [c["samples"] for c in report["configs"]] == samples
    for c in report["configs"]:
        assert set(c["terms"]) == {"weight_memory_j", "activation_memory_j", "synapse_j", "neuron_j"}
        assert c["total_j"] == pytest.approx(sum(c["terms"].values()))
        for layer in c["layers"]:
            assert {"name", "fan_in", "eos", "weight_bits", "activation_bits", "total_j"} <= set(layer)
        assert c["total_j"] == pytest.approx(sum(layer["total_j"] for layer in c["layers"]))
    return report


def test_cli_energy_for_a_model_and_a_run(tmp_path, capsys, monkeypatch):
    from pdnn.cli import main

    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)  # --model prints only: nothing is written unless asked
    assert main(["energy", "--model", "mlp", "--input-shape", "1,28,28", "--width", "8", "--samples", "1"]) == 0
    assert not list(empty.iterdir())
    out, png = tmp_path / "cnn.json", tmp_path / "cnn.png"
    args = ["energy", "--model", "cnn", *_dataset_args("cifar10", "3,32,32"), "--width", "8", "--samples", "1,2,5",
            "--json", str(out), "--png", str(png)]
    assert main(args) == 0
    report = _check_energy_json(out, [1, 2, 5])
    assert report["reference"]["total_j"] > report["configs"][0]["total_j"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ΔE(T→T+1)/E" in capsys.readouterr().out

    run = _fake_run(tmp_path, "run", "pbit", [(1, 0.5)])
    before = {f.name for f in run.iterdir()}
    assert main(["energy", str(run), "--samples", "1,10", "--memory", "sram", "--reuse", "per-inference"]) == 0
    assert {f.name for f in run.iterdir()} == before | {"energy.json", "energy.png"}  # those two and nothing else
    report = _check_energy_json(run / "energy.json", [1, 10])
    assert report["settings"]["weight_memory"] == "sram" and report["settings"]["reuse"] == "per-inference"
    assert report["settings"]["table"]["ops_pj"]["int_add"]["points_pj"] == {"8": 0.03, "32": 0.1}
    assert (run / "energy.png").read_bytes()[:4] == b"\x89PNG"

    table = tmp_path / "t.toml"
    table.write_text(TABLE.read_text().replace("energy_pj = 1300.0", "energy_pj = 'lots'"))
    capsys.readouterr()
    for bad in (["--samples", "0"], ["--memory", "hbm"], ["--activation-memory", "hbm"], ["--tech", str(table)],
                ["--reuse", "sometimes"], ["--weight-memory", ""]):
        assert main(["energy", str(run), *bad]) == 2
    err = capsys.readouterr().err
    assert "--memory (weight memory): unknown memory level 'hbm'" in err
    assert "--activation-memory (activation memory): unknown memory level 'hbm'" in err
    assert "--weight-memory (weight memory): unknown memory level ''" in err  # (it had priced dram)
    assert "memory.dram.energy_pj" in err and "samples" in err
    with pytest.raises(SystemExit):
        main(["energy", "--help"])
    assert ("--no-shared-prefix gives the paper's formula applied literally to every layer"
            in " ".join(capsys.readouterr().out.split()))


def test_a_copy_elsewhere_leaves_the_run_s_energy_pair_as_it_is(tmp_path, capsys):
    """--json (or --png) elsewhere writes only what it names: a run's energy.png drawn at other
    settings than its energy.json had been replaced beside it."""
    from pdnn.cli import main

    run = _fake_run(tmp_path, "run", "pbit", [(1, 0.5)])
    assert main(["energy", str(run), "--samples", "1,2"]) == 0
    pair = {name: (run / name).read_bytes() for name in ("energy.json", "energy.png")}
    copy, figure = tmp_path / "sram.json", tmp_path / "sram.png"
    assert main(["energy", str(run), "--samples", "1,2", "--memory", "sram", "--json", str(copy)]) == 0
    assert main(["energy", str(run), "--samples", "1,2", "--memory", "sram", "--png", str(figure)]) == 0
    assert {name: (run / name).read_bytes() for name in pair} == pair
    assert json.loads(copy.read_text())["settings"]["weight_memory"] == "sram" and figure.stat().st_size
    assert main(["energy", str(run), "--samples", "1,2", "--memory", "sram", "--json", str(run / "energy.json")]) == 0
    assert all((run / name).read_bytes() != pair[name] for name in pair)  # the run's own, named: a refresh of both
    capsys.readouterr()


def test_options_without_effect_and_bit_widths_are_named_as_given(tmp_path, capsys):
    from pdnn.cli import main

    model = ["energy", "--model", "mlp", "--input-shape", "1,28,28", "--width", "8", "--samples", "1"]
    for options, named in ((["--reference-weight-bits", "12"], "--reference-weight-bits must be an integer 1..8"),
                           (["--weight-bits", "4,12"], "--weight-bits must be an integer 1..8 or 32 (float), got 12"),
                           (["--input-bits", "0"], "--input-bits must be an integer from 1 to 32 (32 = float), "
                                                   "got 0"),
                           (["--aggregate", "layer", "--no-shared-prefix"], "--no-shared-prefix has no effect with "
                                                                             "--aggregate layer")):
        assert main([*model, *options]) == 2
        assert named in capsys.readouterr().err
    assert main([*model, "--aggregate", "layer"]) == 0
    assert "layer aggregation; each layer once" in capsys.readouterr().out
    with pytest.raises(UsageError, match="shared_prefix must be True or False, got 'no'"):
        Settings(shared_prefix="no")
    with pytest.raises(UsageError, match="shared_prefix=False has no effect under layer aggregation"):
        Settings(aggregate="layer", shared_prefix=False)
    assert Settings(tech="horowitz-45nm").tech.to_dict() == Settings().tech.to_dict()  # a table's name, as elsewhere
    with pytest.raises(UsageError, match="tech must be a Technology, a shipped table's name or a TOML file's path, "
                                         "got 5"):
        Settings(tech=5)
    vae = ["energy", "--model", "vae", "--input-shape", "1,28,28", "--samples", "1", "--json", str(tmp_path / "v.json")]
    assert main([*vae, "--input-bits", "2"]) == 0
    assert "--input-bits 2 has no effect here" in capsys.readouterr().err
    assert json.loads((tmp_path / "v.json").read_text())["input_bits"] == FLOAT_BITS  # what was priced


def test_cli_tradeoff(tmp_path, capsys, monkeypatch):
    from pdnn.cli import main

    a = _fake_run(tmp_path, "a", "pbit", [(1, 0.80), (5, 0.88)])
    b = _fake_run(tmp_path, "b", "tanh", [(1, 0.885)])
    fresh = _fake_run(tmp_path, "fresh", "tanh", None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # by default the result goes to ./tradeoff.json and ./tradeoff.png
    assert main(["tradeoff", str(a), str(b), str(fresh), "--tolerance", "1"]) == 0
    assert {f.name for f in cwd.iterdir()} == {"tradeoff.json", "tradeoff.png"}
    result = json.loads((cwd / "tradeoff.json").read_text())
    assert result["best"]["label"] == "a T=5" and result["best"]["energy_gain"] > 1
    assert result["tolerance"] == pytest.approx(0.01) and result["skipped"][0]["run"] == str(fresh)
    assert (cwd / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "a T=5" in captured.out and f"warning: skipped {fresh}" in captured.err

    cifar = _fake_run(tmp_path, "c10", "tanh", [(1, 0.90)], dataset="cifar10")
    for bad in ([str(tmp_path / "missing")], [str(fresh)], [str(a), str(cifar)], [str(a), "--tolerance", "-1"]):
        assert main(["tradeoff", *bad]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and "none of the runs" in err and "tolerance" in err
    huge = _fake_run(tmp_path, "huge", "pbit", [(1, 0.80), (2**60, 0.9)])  # evaluable, beyond pricing
    assert main(["tradeoff", str(huge)]) == 2
    assert f"{huge / 'eval-network.json'}: samples (T) must be at most 2**53" in capsys.readouterr().err
    study = tmp_path / "study"  # a study's folder given whole: "config.json does not exist" (R189)
    shutil.copytree(a, study / "runs" / "a")
    assert main(["tradeoff", str(study)]) == 2
    assert (f"{study} holds no config.json: it is a folder of runs, under {study / 'runs'}; give those "
            f"(e.g. {study / 'runs' / '*'})") in capsys.readouterr().err


def test_runs_of_one_name_stay_two_series(tmp_path):
    """Two folders named alike are two runs: their series are named by their paths, and the
    marginal costs pair T within each run, never across them."""
    a = _fake_run(tmp_path / "x", "pbit", "pbit", [(1, 0.80), (2, 0.82)])
    b = _fake_run(tmp_path / "y", "pbit", "pbit", [(1, 0.88), (2, 0.86)])
    result = tradeoff_runs([a, b], tolerance=0.1)
    assert {p["series"] for p in result["points"]} == {str(a), str(b)}
    assert sorted((m["series"], round(m["accuracy_gain_pct"], 9)) for m in result["marginal"]) == \
        sorted([(str(a), 2.0), (str(b), -2.0)])
    alone = tradeoff_runs([a, _fake_run(tmp_path, "tanh", "tanh", [(1, 0.9)])])
    assert {p["series"] for p in alone["points"]} == {"pbit", "tanh"}  # names stay short where they differ
    with pytest.raises(ValueError, match=f"{b} is given twice"):
        tradeoff_runs([a, b, str(b)])


def test_a_run_renamed_by_its_path_never_takes_another_runs_name(tmp_path, monkeypatch):
    """A path can be another run's label, and a label another run's layer series: two runs made
    one series, and the marginal costs paired T across them."""
    def relabel(run, label):
        config = json.loads((run / "config.json").read_text())
        write_json(run / "config.json", {**config, "label": label})
        return run

    base = _fake_run(tmp_path, "base", "pbit", [(1, 0.80), (2, 0.82)])
    x = relabel(_fake_run(tmp_path, "x", "pbit", [(1, 0.70), (2, 0.74)]), "base")
    y = relabel(_fake_run(tmp_path, "y", "pbit", [(1, 0.50), (2, 0.60)]), "x")
    m = _fake_run(tmp_path, "m", "pbit", [(1, 0.80), (2, 0.82)], aggregate="layer")
    n = relabel(_fake_run(tmp_path, "n", "pbit", [(1, 0.70), (2, 0.74)]), "m (layer)")
    monkeypatch.chdir(tmp_path)  # paths as given on a command line, "x" and "y"
    for runs in ([base, x, y], [m, n]):
        result = tradeoff_runs([r.name for r in runs], tolerance=0.1)
        assert len({p["series"] for p in result["points"]}) == len(runs)
        assert sorted(round(c["accuracy_gain_pct"], 9) for c in result["marginal"]) == \
            sorted(round(100 * (rows[1] - rows[0]), 9) for rows in
                   ([0.80, 0.82], [0.70, 0.74], [0.50, 0.60])[:len(runs)])


def test_a_generator_is_priced_as_its_decoder_in_every_form(tmp_path, capsys):
    """A generated image costs the decoder alone, fed a float latent: for a run, for --model and
    for the reference (which had priced the whole VAE, encoder included)."""
    from pdnn.cli import main

    config = ModelConfig("vae", "pbit", 32, input_shape=(1, 28, 28), width=16)
    run = tmp_path / "vae"
    write_json(run / "config.json", {"model": config.to_dict(), "data": {"dataset": "demo"}, "train": {"task": "vae"}})
    priced = {}
    for neuron in ("pbit", "tanh"):
        vae = replace(config, neuron=neuron).build()
        priced[neuron] = network_energy(analyze(vae.decoder, (vae.latent,), FLOAT_BITS), 2 if neuron == "pbit" else 1,
                                        Settings())["total_j"]
    assert main(["energy", str(run), "--samples", "2", "--reference-neuron", "tanh"]) == 0
    out = tmp_path / "model.json"
    assert main(["energy", "--model", "vae", "--input-shape", "1,28,28", "--width", "16", "--neuron", "pbit",
                 "--samples", "2", "--json", str(out)]) == 0
    for report in (json.loads((run / "energy.json").read_text()), json.loads(out.read_text())):
        assert report["configs"][0]["total_j"] == pytest.approx(priced["pbit"], rel=1e-12)
        assert report["reference"]["total_j"] == pytest.approx(priced["tanh"], rel=1e-12)


def test_a_run_directory_refuses_model_options_and_names_a_bad_model_section(tmp_path, capsys):
    from pdnn.cli import main

    run = _fake_run(tmp_path, "run", "pbit", [(1, 0.5)])
    assert main(["energy", str(run), "--num-classes", "5"]) == 2
    assert "--num-classes applies to --model, not to a run directory" in capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    config["model"]["extra"] = {"foo": 1}
    write_json(run / "config.json", config)
    for command in (["energy", str(run)], ["tradeoff", str(run), "--json", str(tmp_path / "t.json")]):
        assert main(command) == 2
        assert f"{run / 'config.json'}: bad 'model' section" in capsys.readouterr().err
    assert not (run / "energy.json").exists()


@pytest.mark.parametrize("row, message", [
    ('{"samples": 1, "mean": 3.0, "std": -0.5}', "finite numbers >= 0, got mean 3.0, std -0.5"),
    ('{"samples": 1, "mean": 3.0, "std": "x"}', "numbers 'mean' and 'std'"),
    ('{"samples": 0, "mean": 3.0, "std": 0.1}', "an integer 'samples' >= 1"),
    ('{"samples": "2", "mean": 3.0, "std": 0.1}', "an integer 'samples' >= 1"),
    ('{"samples": 1, "mean": -1.0}', "finite numbers >= 0"),
])
def test_a_bad_distance_row_is_named_with_its_file(tmp_path, row, message):
    from pdnn.energy.fid_tradeoff import fid_points

    config = ModelConfig("vae", "pbit", 32, input_shape=(1, 28, 28), width=8)
    run = tmp_path / "vae"
    write_json(run / "config.json", {"model": config.to_dict(), "data": {"dataset": "demo"}, "train": {"task": "vae"}})
    (run / "fid-clf.json").write_text(f'{{"metric": "fid-clf", "results": [{row}]}}')
    with pytest.raises(RunError, match=re.escape(f"{run / 'fid-clf.json'}: ") + ".*" + re.escape(message)):
        fid_points(run, Settings())


def test_layer_aggregation_prints_the_activation_bits_of_every_t(capsys):
    from pdnn.cli import main

    assert main(["energy", "--model", "mlp", "--input-shape", "1,2,2", "--num-classes", "3", "--width", "4",
                 "--samples", "1,3,10", "--aggregate", "layer"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if "QuantLinear" in line]
    assert [row[5] for row in rows] == ["8", "1/2/4", "1/2/4"]  # ceil(log2(T + 1)) averaged bits after a p-bit


def test_all_zero_table_reports_na_instead_of_dividing(tmp_path, capsys):
    """Zero energies are legal (a free memory, say); a ratio over a zero total is n/a, not a crash."""
    from pdnn.cli import main

    table = tmp_path / "zero.toml"
    text = re.sub(r"(\d+ = )[0-9.]+", r"\g<1>0.0", TABLE.read_text())
    table.write_text(re.sub(r"energy_pj = [0-9.]+", "energy_pj = 0.0", text))
    run = _fake_run(tmp_path, "run", "pbit", [(1, 0.5), (2, 0.6)])
    assert main(["energy", str(run), "--samples", "1,2", "--tech", str(table)]) == 0
    report = json.loads((run / "energy.json").read_text())
    c = report["configs"][0]
    assert c["total_j"] == 0 and c["ratio_to_reference"] is None and c["next_sample_increase_pct"] is None
    assert report["settings"]["table"]["path"] == str(table)  # the result says what it was priced with
    assert report["settings"]["table"]["memory"]["dram"]["energy_pj"] == 0
    assert "n/a" in capsys.readouterr().out
    out = tmp_path / "zero-tradeoff"
    assert main(["tradeoff", str(run), "--tech", str(table), "--tolerance", "20",
                 "--json", f"{out}.json", "--png", f"{out}.png"]) == 0
    result = json.loads(Path(f"{out}.json").read_text())
    assert result["best"]["energy_gain"] is None and result["marginal"][0]["energy_increase_pct"] is None
    assert "n/a" in capsys.readouterr().out


def test_a_t_a_float_cannot_count_and_energies_that_overflow_are_named(tmp_path, capsys):
    """T = 10**400 raised float's OverflowError; a table of finite but huge energies printed inf and
    nan and failed to write its JSON."""
    from pdnn.cli import main

    net = analyze(torch.nn.Sequential(torch.nn.Linear(4, 3), PBit(), torch.nn.Linear(3, 2)), (4,))
    for t in (10**400, 2**63, 2**53 + 1):  # (the energy model's bound, not torch's count)
        with pytest.raises(ValueError, match=r"samples \(T\) must be at most 2\*\*53 to be priced"):
            network_energy(net, t)
        with pytest.raises(ValueError, match=r"must be at most 2\*\*53 to be priced"):
            eo_energy_pj(4, 1, 1, samples=t)
    largest = energy_report(net, samples=[2**53])["configs"][0]
    assert largest["next_sample_increase_pct"] is None and largest["total_j"] > 0  # no T + 1 to price
    table = tmp_path / "huge.toml"
    table.write_text(TABLE.read_text().replace("energy_pj = 1300.0", "energy_pj = 1e306"))  # (DRAM)
    assert main(["energy", "--model", "mlp", "--dataset", "demo", "--samples", "1", "--tech", str(table),
                 "--json", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pdnn energy: error: technology table {table}: the energy at T = 1 overflows a float; its energies " \
                  "are too large"
    assert not (tmp_path / "e.json").exists()


def test_samples_must_be_a_sequence_and_a_bad_shape_prints_nothing(capfd):
    net = analyze(torch.nn.Sequential(torch.nn.Linear(4, 3), PBit(), torch.nn.Linear(3, 2)), (4,))
    with pytest.raises(ValueError, match=r"samples must be a sequence of T values such as \[1, 10\], got 3"):
        energy_report(net, samples=3)
    with pytest.raises(ValueError, match=r"does not run on inputs of shape \(5,\)"):
        analyze(torch.nn.Sequential(torch.nn.Linear(4, 3), PBit(), torch.nn.Linear(3, 2)), (5,))
    assert capfd.readouterr().err == ""
    for t in (torch.tensor(2), np.int64(2)):  # T as the int it stands for: the caller's object was returned
        result = network_energy(net, t)
        assert type(result["samples"]) is int and json.loads(json.dumps(result)) == result


def test_tradeoff_warns_when_one_runs_evaluations_differ_in_test_examples(tmp_path):
    pbit = _fake_run(tmp_path, "pbit", "pbit", [(1, 0.80), (2, 0.85)])
    _fake_run(tmp_path, "pbit", "pbit", [(1, 0.70), (2, 0.75)], aggregate="layer")
    tanh = _fake_run(tmp_path, "tanh", "tanh", [(1, 0.885)])
    for path, examples in ((pbit / "eval-network.json", 300), (pbit / "eval-layer.json", 20),
                           (tanh / "eval-network.json", 300)):
        write_json(path, {**json.loads(path.read_text()), "examples": examples})
    with pytest.warns(UserWarning, match=r"different numbers of test examples .*pbit \(layer\): 20"):
        tradeoff_runs([pbit, tanh])  # the run's last file alone (300, 300) hid it
    write_json(pbit / "eval-layer.json", {k: v for k, v in json.loads((pbit / "eval-layer.json").read_text()).items()
                                          if k != "examples"})  # one written before the count: no mismatch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tradeoff_runs([pbit, tanh])


def test_an_elementary_operation_of_no_inputs_or_bits_is_named():
    from pdnn.energy.eo import accumulator_bits, eo_energy_pj

    with pytest.raises(ValueError, match="fan-in n must be an integer >= 1, got 0"):
        accumulator_bits(0, 1, 4)  # (a math domain error)
    with pytest.raises(ValueError, match="activation bits must be an integer from 1 to 32"):
        accumulator_bits(4, 0, 4)  # (it returned 6)
    shipped = eo_energy_pj(4, 2, 1, samples=3, weight_memory="sram_8kb", activation_memory="sram_8kb")
    assert eo_energy_pj(4, 2, 1, samples=3, tech="horowitz-45nm", weight_memory="sram_8kb",
                        activation_memory="sram_8kb") == shipped  # a table's name, as load_table takes


def test_a_table_whose_ratios_leave_the_floats_is_named(tmp_path, capsys):
    """Finite totals from huge and tiny entries: the ratio to the reference overflowed to inf,
    printed, and the JSON could not be written (a traceback)."""
    text = (Path(pdnn.energy.tech.__file__).parent / "tables" / "horowitz-45nm.toml").read_text()
    for old, new in [("{ 16 = 0.4, 32 = 0.9 }", "{ 16 = 1e-300, 32 = 1e-300 }"),
                     ("{ 16 = 1.1, 32 = 3.7 }", "{ 16 = 1e-300, 32 = 1e-300 }"), ("{ 8 = 0.22 }", "{ 8 = 1e300 }"),
                     ("{ 32 = 4.8 }", "{ 32 = 1e-300 }")] + [(f"energy_pj = {e}", "energy_pj = 0.0")
                                                            for e in ("10.0", "20.0", "100.0", "1300.0", "2600.0")]:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "wide.toml").write_text(text)
    assert main(["energy", "--model", "mlp", "--dataset", "fashion-mnist", "--weight-bits", "4", "--samples", "1",
                 "--tech", str(tmp_path / "wide.toml"), "--json", str(tmp_path / "e.json")]) == 2
    assert "a ratio beyond a float; its energies span too wide a range" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_a_model_of_two_inputs_is_named_by_analyze():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, a, b):
            return self.fc(a + b)

    with pytest.raises(AnalysisError, match="Two does not run on inputs of shape"):
        analyze(Two(), (3,))


def test_a_model_that_needs_a_batch_of_two_is_named_by_analyze():
    class Pairs(nn.Module):  # rows come in pairs: it unpacks two halves of the batch
        def __init__(self):
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(8, 8), PBit(), nn.Linear(8, 3)

        def forward(self, x):
            a, b = self.act(self.fc(x)).chunk(2, 0)
            return self.out(a * b)

    with pytest.raises(AnalysisError, match=r"Pairs does not run on inputs of shape \(8,\): not enough values"):
        analyze(Pairs(), (8,))


def test_a_sampled_model_is_priced_as_the_network_it_samples():
    """Tracing the wrapper failed, the forward-hook walk lost the input of the layer after a
    flatten and priced it at 32 bits: 2.9x the network's own energy."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.p, self.fc = nn.Conv2d(1, 4, 3, padding=1, bias=False), PBit(), nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(self.p(self.c(x)).flatten(1))

    net = Net()
    alone = analyze(net, (1, 8, 8))
    for samples in (1, 10):
        wrapped = analyze(SampledModel(net, samples=samples), (1, 8, 8))
        assert wrapped.layers == alone.layers and wrapped.unresolved == []
        assert network_energy(wrapped, 10)["total_j"] == network_energy(alone, 10)["total_j"]
        assert any("SampledModel" in note for note in wrapped.notes)


def test_the_per_layer_table_prints_names_whole():
    """Names and types were cut to 12 characters: three layers printed as `encoder_bloc`."""
    net = nn.Sequential()
    for i, (n_in, n_out) in enumerate([(8, 16), (16, 16), (16, 4)], 1):
        net.add_module(f"encoder_block{i}", nn.Linear(n_in, n_out))
        if i < 3:
            net.add_module(f"p{i}", PBit())
    text = format_report(energy_report(analyze(net, (8,)), [1, 10]))
    assert all(f"encoder_block{i} Linear " in text for i in (1, 2, 3))


def test_every_output_element_of_one_input_is_an_eo_where_dimension_0_is_not_the_batch():
    """EOs were the output's size without its dimension 0, taken for the batch: time folded into
    it, or a sequence-first layout, counted L times too few, with nothing said (R123 D1)."""
    class Folded(nn.Module):  # [1, L, 4] -> [L, 8] -> [L, 1]
        def __init__(self):
            super().__init__()
            self.a, self.act, self.o = nn.Linear(4, 8), PBit(), nn.Linear(8, 1)

        def forward(self, x):
            return self.o(self.act(self.a(x)).reshape(-1, 8))

    class SequenceFirst(nn.Module):  # [L, 1, 5] for a batch of one
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 8)

        def forward(self, x):
            return self.a(x.transpose(0, 1))

    assert [(layer.eos, layer.fan_in) for layer in analyze(Folded(), (7, 4)).layers] == [(56, 4), (7, 8)]
    assert [layer.eos for layer in analyze(SequenceFirst(), (7, 5)).layers] == [56]


def test_a_bare_weight_layer_and_tied_weights_are_costed():
    """A bare layer was refused as having no layer (the tracer traced into it), and layers tied to
    one weight tensor were each charged its fetch per inference (R123 D2, D3)."""
    assert [(layer.eos, layer.fan_in) for layer in analyze(nn.Linear(5, 3), (5,)).layers] == [(3, 5)]
    assert [layer.eos for layer in analyze(nn.Conv2d(2, 4, 3), (2, 6, 6)).layers] == [64]

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Linear(8, 8), PBit(), nn.Linear(8, 8)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.act(self.a(x)))

    net = analyze(Tied(), (8,))
    assert [layer.repeat_call for layer in net.layers] == [False, True]
    reuse = Reuse.parse("per-inference")
    assert [reuse.fetches(layer) for layer in net.layers] == [64.0, 0.0]


def test_layers_with_a_computed_weight_are_not_taken_for_tied_ones():
    """Under a parametrization (weight_norm, a user's own) ``.weight`` is a new tensor at every
    access, freed at once: tied layers were found by its id, which the next layer's weight soon
    reused, so distinct layers fetched no weights per inference, a different total on every run
    (R141 D2)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import weight_norm

    class Doubled(nn.Module):
        def forward(self, weight):
            return 2 * weight

    def own(layer):
        parametrize.register_parametrization(layer, "weight", Doubled())
        return layer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm: deprecated, still used
        for wrap in (weight_norm, own, torch.nn.utils.weight_norm):
            layers = [wrap(nn.Linear(8, 8)) for _ in range(6)]
            net = analyze(nn.Sequential(*[m for layer in layers for m in (layer, PBit())]), (8,))
            assert [layer.repeat_call for layer in net.layers] == [False] * 6, wrap
            reuse = Reuse.parse("per-inference")
            assert [reuse.fetches(layer) for layer in net.layers] == [64.0] * 6
    shared = own(nn.Linear(8, 8))  # one parametrized layer called twice is still one weight fetch
    net = analyze(nn.Sequential(shared, PBit(), shared), (8,))
    assert [layer.repeat_call for layer in net.layers] == [False, True]

    class Scaled(nn.Module):  # one parametrization, its learnt scale shared by two layers of their own weights
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, weight):
            return self.scale * weight

    scaled, layers = Scaled(), [nn.Linear(8, 8) for _ in range(2)]
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", scaled)
    net = analyze(nn.Sequential(layers[0], PBit(), layers[1]), (8,))
    assert [layer.repeat_call for layer in net.layers] == [False, False]  # (R140: taken as tied by the scale)


def test_a_drawing_or_precision_unit_that_holds_weights_names_them():
    """A user's noisy linear (``stochastic = True``) or a block declaring ``precision`` is priced
    as a neuron, as a whole: the weights inside it were dropped without a word (49.1 uJ priced as
    5.1 uJ; R141 D1)."""
    class NoisyLinear(nn.Module):
        stochastic = True

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 16)

        def forward(self, x):
            return F.linear(x, self.lin.weight + 0.1 * torch.randn_like(self.lin.weight), self.lin.bias)

    class Block(nn.Module):
        precision = 2

        def __init__(self):
            super().__init__()
            self.conv, self.quantize = nn.Conv2d(2, 2, 3, padding=1), Quantize(2)

        def forward(self, x):
            return self.quantize(self.conv(x))

    net = analyze(nn.Sequential(nn.Linear(4, 16), PBit(), NoisyLinear(), PBit(), nn.Linear(16, 2)), (4,))
    assert [layer.name for layer in net.layers] == ["0", "4"]
    assert ("2 (NoisyLinear): draws, so it is priced as a neuron; the weights inside it (lin.weight) are not counted"
            in " ".join(net.notes))
    net = analyze(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), PBit(), Block()), (1, 4, 4))
    assert "2 (Block): declares a precision, so it is priced as a neuron; the weights inside it (conv.weight)" \
        in " ".join(net.notes)
    class ChannelBeta(PBit):  # a learnt gain per channel is no weight matrix (R140)
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1, 2, 1, 1))

        def forward(self, x):
            return super().forward(self.gain * x)

    net = analyze(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), ChannelBeta(), nn.Conv2d(2, 2, 3)), (1, 4, 4))
    assert not any("inside it" in note for note in net.notes)

    class OneOut(PBit):  # but a layer of one output is a weight layer all the same (R145)
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(8, 1)

        def forward(self, x):
            return super().forward(x * torch.sigmoid(self.gate(x)))

    net = analyze(nn.Sequential(nn.Linear(4, 8), OneOut(), nn.Linear(8, 2)), (4,))
    assert "the weights inside it (gate.weight) are not counted" in " ".join(net.notes)
    for plain, shape in ((nn.Sequential(nn.Linear(4, 8), PBit(), nn.Linear(8, 2)), (4,)),
                         (create("cnn", neuron="pbit", width=4), (3, 32, 32))):
        assert not any("inside it" in note for note in analyze(plain, shape).notes)


def test_arguments_left_at_their_defaults_are_no_second_input():
    """``forward(x, mask=None)`` is a one-input model when called with one input: fx made the mask a
    second placeholder, refused as 'models with one input tensor' (R141 D4). The trace takes the
    defaults, as the call does, and so follows their branches."""
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b, self.extra = nn.Linear(4, 8), PBit(), nn.Linear(8, 2), nn.Linear(8, 8)

        def forward(self, x, mask=None, scale: float = 1.0, *, deep: bool = False):
            h = self.act(self.a(x))
            if mask is not None:
                h = h * mask
            if deep:
                h = self.extra(h)
            return self.b(h) * scale

    net = analyze(Masked(), (4,))
    assert [layer.name for layer in net.layers] == ["a", "b"] and net.method == "torch.fx"
    assert not any("could not trace" in note for note in net.notes)

    class InputDefault(nn.Sequential):  # the input itself may have a default: it is still the input (R140)
        def forward(self, x=None):
            return super().forward(x)

    plain = nn.Sequential(nn.Linear(4, 8), PBit(), nn.Linear(8, 2))
    net = analyze(InputDefault(*plain), (4,))
    assert net.layers[0].activation_bits == 8 and net.layers[0].activation_bits_known
    assert network_energy(net, 3)["total_j"] == network_energy(analyze(plain, (4,)), 3)["total_j"]


def test_a_torch_layer_kept_whole_names_the_weights_it_holds():
    """A TransformerEncoderLayer was noted as an unknown module, not priced, without a word on the
    Linear layers and projections inside it, whose EOs are not counted (R123)."""
    net = analyze(nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
                                nn.Linear(8, 3)), (5, 4))
    assert "1 (TransformerEncoderLayer): unknown module, output precision unknown, not priced; the weights inside " \
           "it are not counted (3 Linear or Conv layers among them)" in net.notes


def test_the_hook_walk_says_whether_an_input_it_cannot_follow_is_repeated_per_sample():
    """Its note said 'samples assumed repeated' also for a layer before any draw, which it then
    priced as shared by the samples, as it should (R123)."""
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act, self.c = nn.Linear(4, 8), nn.Linear(8, 8), PBit(), nn.Linear(8, 3)

        def forward(self, x):
            if x.sum() > -1e9:  # (a branch on a value: fx cannot trace it, so forward hooks walk it)
                h = self.b(self.a(x) * 2)
            return self.c(self.act(h) * 2)

    net = analyze(Untraceable(), (4,))
    assert "b: its input was computed outside a module (forward hooks cannot follow it); precision unknown, and " \
           "the same under two seeds of torch's generator: shared by the samples" in net.notes
    assert "c: its input was computed outside a module (forward hooks cannot follow it); precision unknown, and " \
           "it differs between two forwards under two seeds of torch's generator: priced once per sample" in net.notes
    assert [layer.stochastic_input for layer in net.layers] == [False, False, True]


class _NoisyInput(nn.Module):
    """Input noise drawn between modules (``inside``: by a module of its own), before a p-bit
    layer; ``branchy``: a branch on a value, which fx cannot trace, so forward hooks walk it;
    ``reseeds``: the forward reseeds torch's generator, and a module draws a permutation once and
    keeps it, in place of the noise: deterministic, though torch's generator moves."""

    def __init__(self, branchy: bool, inside: bool = False, reseeds: bool = False):
        super().__init__()
        self.branchy, self.inside, self.reseeds = branchy, inside, reseeds
        self.fc, self.act, self.out = nn.Linear(6, 8), PBit(), nn.Linear(8, 3)
        self.noise, self.shuffle = _Jitter(), _KeptShuffle()

    def forward(self, x):
        if self.branchy and x.sum() > 100:
            x = x * 0.5
        if self.reseeds:
            torch.manual_seed(1234)
            x = self.shuffle(x)
        else:
            x = self.noise(x) if self.inside else x + torch.randn_like(x)
        return self.out(self.act(self.fc(x)))


class _Jitter(nn.Module):
    def forward(self, x):
        return x + torch.randn_like(x)


class _KeptShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.order = None

    def forward(self, x):
        if self.order is None:
            self.order = torch.randperm(x.shape[-1])
        return x[..., self.order]


@pytest.mark.parametrize("inside", [False, True])
def test_the_hook_walk_prices_what_follows_a_draw_it_cannot_see_once_per_sample(inside):
    """A layer after ``x + torch.randn_like(x)`` was priced once for all T samples by the hook
    walk, 2.3 times too little at T = 4, with a note that nothing random had run before it (R165).
    Two forwards under two seeds show the draw; the walk leaves torch's random state as it found it."""
    model = _NoisyInput(branchy=True, inside=inside)
    random_state = torch.random.get_rng_state()
    walked = analyze(model, (6,))
    assert torch.equal(torch.random.get_rng_state(), random_state)
    assert walked.method == "forward hooks" and [layer.stochastic_input for layer in walked.layers] == [True, True]
    said = ("noise (_Jitter): its output differs between two forwards under two seeds of torch's generator where its "
            "input does not, so it draws inside (not priced): what depends on it is priced once per sample") if inside \
        else ("fc: its input was computed outside a module (forward hooks cannot follow it); precision unknown, and it "
              "differs between two forwards under two seeds of torch's generator: priced once per sample")
    assert said in walked.notes
    if not inside:  # (fx prices the draw it sees in the graph; a module of the user's is opaque to it)
        traced = analyze(_NoisyInput(branchy=False), (6,))
        at_4 = [energy_report(net, samples=[4], settings=Settings(load_table()))["configs"][0]["total_j"]
                for net in (walked, traced)]
        assert traced.method == "torch.fx" and at_4[0] == at_4[1]


def test_the_hook_walk_sees_no_draw_in_a_generator_moved_to_the_same_end():
    """Watching torch's generator move took a forward that reseeds, and a permutation drawn once
    and kept, for draws, and priced the deterministic layers after them once per sample (R166)."""
    walked = analyze(_NoisyInput(branchy=True, reseeds=True), (6,))
    assert walked.method == "forward hooks" and [layer.stochastic_input for layer in walked.layers] == [False, True]
    assert not any("differs" in note or "draws inside" in note for note in walked.notes), walked.notes


class _Carried(nn.Module):
    """Deterministic, untraceable (a branch on a value), with a state carried from call to call
    and a count of its calls; ``noisy``: half of its forwards, chosen by a draw, add noise."""

    def __init__(self, noisy: bool = False):
        super().__init__()
        self.noisy, self.calls = noisy, 0
        self.inp, self.cell, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.noise = _Jitter()
        self.register_buffer("h", torch.zeros(1, 8))

    def forward(self, x):
        self.calls += 1
        if x.sum() > 100:
            x = x * 0.5
        h = self.inp(x)
        if self.noisy and torch.rand(()) > 0.7:  # (under seed 1: 0.76; under seed 2: 0.61)
            h = self.noise(h)
        self.h = torch.tanh(self.cell(h) + self.h)
        return self.out(self.h)


def test_the_hook_walk_puts_the_state_back_between_its_forwards_and_follows_each_module(monkeypatch):
    """The two seeded forwards ran one after the other: a state carried between calls differed,
    a deterministic model was priced per sample (2.2x at T = 4), and its counter ran to 3; where a
    draw chose another path, a plain Linear was said to draw inside, the flags being another
    module's; torch.manual_seed reseeded every GPU's generator too (R169); the total followed the
    caller's random state (R172)."""
    monkeypatch.setattr(torch, "manual_seed", lambda seed: pytest.fail("every device's generators reseeded"))
    model = _Carried()
    walked = analyze(model, (6,))
    assert walked.method == "forward hooks" and not any(layer.stochastic_input for layer in walked.layers)
    assert model.calls == 1 and torch.equal(model.h, torch.tanh(model.cell(model.inp(torch.zeros(1, 6)))))
    noisy, totals = _Carried(noisy=True), []
    for caller in (0, 3):  # (the walk follows the first seeded forward, whatever the caller's state)
        torch.random.manual_seed(caller)
        walked = analyze(noisy, (6,))
        totals.append(network_energy(walked, 4)["total_j"])
        assert [layer.stochastic_input for layer in walked.layers] == [False, True, True]
        assert not any("draws inside" in note for note in walked.notes), walked.notes
        assert ("out: its input was computed outside a module (forward hooks cannot follow it); precision unknown, "
                "and two forwards under two seeds of torch's generator called different modules before it (a draw "
                "chose the path): priced once per sample") in walked.notes
    assert totals[0] == totals[1]


def test_the_hook_walk_reads_a_lazy_module_it_sizes():
    """Its size put back between the seeded forwards, a LazyLinear was read with fan-in 0 and left
    so beside its sized weight (R172)."""
    model = _Carried()
    model.inp = nn.LazyLinear(8)
    walked = analyze(model, (6,))
    assert walked.method == "forward hooks" and walked.layers[0].fan_in == 6 and model.inp.in_features == 6


def test_the_hook_walk_compares_sparse_and_nan_outputs_by_their_values():
    """(R169, from the code: ``==`` on a sparse tensor and ``isnan`` on a quantized one fail.)"""
    from pdnn.energy.graph import _same_values
    sparse, nan = torch.eye(3).to_sparse(), torch.tensor([math.nan, 1.0])
    assert _same_values(sparse, sparse.clone()) and _same_values(nan, nan.clone())
    assert not _same_values(sparse, (2 * torch.eye(3)).to_sparse()) and not _same_values(nan, torch.tensor([0.0, 1.0]))


def test_the_energy_functions_name_what_is_no_network_settings_or_reuse():
    """A module given for its Network failed on ``.layers``, a dict for the settings on an
    attribute; a reuse written as text was a plain ValueError, and a batch size given to another
    mode than per-batch was ignored (R144 minors)."""
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(UsageError, match=r"network_energy prices a pdnn.energy.Network, got Sequential; read a model "
                                         r"first: pdnn.energy.analyze\(model, input_shape\)"):
        network_energy(model, 1)
    with pytest.raises(UsageError, match="energy_report prices a pdnn.energy.Network, got NoneType$"):
        energy_report(None)
    with pytest.raises(UsageError, match="energy_sweep's reference prices a pdnn.energy.Network, got Sequential"):
        energy_sweep([({}, analyze(model, (4,)))], reference=model)
    with pytest.raises(UsageError, match=r"settings must be a pdnn.energy.Settings \(or None for the defaults\), "
                                         r"got dict"):
        network_energy(analyze(model, (4,)), 1, {"reuse": "per-eo"})
    assert Settings(reuse="per-batch:8").reuse == Reuse("per-batch", 8)
    with pytest.raises(UsageError, match=r"reuse must be a Reuse or its name \(per-eo, per-inference, per-batch:B\), "
                                         r"got 5"):
        Settings(reuse=5)
    with pytest.raises(UsageError, match="a reuse batch size applies to per-batch only, got batch=8 with per-eo"):
        Reuse("per-eo", 8)
