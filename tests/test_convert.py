"""pdnn.convert: noise injection into trained deterministic models, and `pdnn convert`."""
import copy
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import re
import shlex
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pdnn.cli
import pdnn.data
from pdnn import SampledModel
from pdnn.errors import UsageError
from pdnn.convert import (ConversionError, calibrate, conversion_spec, find_activations, holdout_indices,
                          recalibrate_batchnorm, restore_checkpoint, to_sampled)
from pdnn.evaluate import accuracy_vs_samples
from pdnn.labels import run_label
from pdnn.models import ModelConfig
from pdnn.nn import DitheredQuantize, GaussianNoise, HardPBit, LogisticNoise, PBit, Quantize
from pdnn.provenance import state_sha256
from pdnn.runs import RunError, load_checkpoint, load_model, read_json, save_checkpoint, write_json

Z = 5.0
SHAPE = (1, 4, 4)


def mlp(neuron="tanh", seed=0, width=16):
    torch.manual_seed(seed)
    model = ModelConfig(name="mlp", neuron=neuron, input_shape=SHAPE, num_classes=3, width=width).build()
    with torch.no_grad():  # non-trivial normalisation statistics, as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class Functional(nn.Module):
    """Activations called as functions inside forward, in all the usual spellings."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(16, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        g = F.sigmoid(self.b(h))
        k = self.b(h).tanh()
        j = F.hardtanh(self.b(g), -0.5, 0.5)
        return self.c(torch.cat([torch.sigmoid(k), j], 1))


def test_conversion_leaves_the_original_untouched():
    for method, neuron in [("pbit", "tanh"), ("gaussian", "tanh"), ("logistic", "sigmoid"), ("dither", "quant:2")]:
        model = mlp(neuron)
        x = torch.randn(20, *SHAPE)
        before_out, before_state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
        before_types = [type(m) for m in model.modules()]
        converted = to_sampled(model, method)
        converted(x)
        assert torch.equal(model(x), before_out)
        assert [type(m) for m in model.modules()] == before_types
        assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())
        assert converted is not model and any(getattr(m, "stochastic", False) for m in converted.modules())
        # the weights are the source's
        params = dict(converted.named_parameters())
        for name, p in model.named_parameters():
            assert torch.equal(params[name], p)


@pytest.mark.parametrize("method", ["gaussian", "logistic"])
def test_zero_noise_matches_the_deterministic_model_exactly(method):
    model = mlp("tanh")
    x = torch.randn(32, *SHAPE)
    converted = to_sampled(model, method, scale=0.0)
    assert isinstance(converted[3][0], GaussianNoise if method == "gaussian" else LogisticNoise)
    assert torch.equal(converted(x), model(x))
    assert torch.equal(SampledModel(converted, samples=1, seed=0)(x), model(x))
    # T samples are T identical copies (up to the last bit of a batched matmul)
    assert torch.allclose(SampledModel(converted, samples=5, reduce="none")(x), model(x).expand(5, -1, -1), atol=1e-6)


def test_zero_width_dither_matches_the_quantised_model_exactly():
    model = mlp("quant:2")
    x = torch.randn(32, *SHAPE)
    converted = to_sampled(model, "dither", scale=0.0)
    assert isinstance(converted[3], DitheredQuantize) and converted[3].bits == 2
    assert torch.equal(converted(x), model(x))


@pytest.mark.parametrize("activation,beta", [(nn.Tanh(), 1.0), (nn.Tanh(), 0.6), (nn.Sigmoid(), 1.0),
                                             (nn.Hardtanh(-1.0, 2.0), 0.8), (Quantize(1, 1.5), 1.0)])
def test_pbit_conversion_has_the_activation_mean(activation, beta):
    net = nn.Sequential(nn.Linear(1, 1), activation, nn.Linear(1, 1))
    converted = to_sampled(net, "pbit", beta=beta)
    bit = converted[1]
    assert isinstance(bit, HardPBit if isinstance(activation, nn.Hardtanh) else PBit)
    bit.generator = torch.Generator().manual_seed(0)
    x0, n = torch.tensor([-1.7, -0.4, 0.0, 0.3, 1.1, 2.6]), 40_000
    out = bit(x0.repeat(n, 1))
    if isinstance(activation, nn.Hardtanh):
        expected, lo, hi = torch.clamp(beta * x0, -1.0, 2.0), -1.0, 2.0
    elif isinstance(activation, Quantize):
        expected, lo, hi = torch.tanh(1.5 * x0), -1.0, 1.0  # the quantiser's unrounded activation
    else:
        expected, lo, hi = activation(beta * x0), (0.0 if isinstance(activation, nn.Sigmoid) else -1.0), 1.0
    # a two-valued variable with mean m has std sqrt((hi - m)(m - lo)) (binomial)
    std = torch.sqrt((hi - expected) * (expected - lo))
    assert torch.all((out.mean(0) - expected).abs() <= Z * std / math.sqrt(n) + 1e-6)
    assert set(out.unique().tolist()) <= {lo, hi}


def test_a_quantisers_beta_scaled_out_of_range_names_the_layer_and_both_betas():
    """The p-bit takes the quantiser's beta times the given one: the product alone, a value the
    user never passed, had been named."""
    net = nn.Sequential(nn.Linear(4, 4), Quantize(2, beta=1e20), nn.Linear(4, 2))
    with pytest.raises(UsageError, match=re.escape("the Quantize at '1': its beta 1e+20 times beta=1e+20 must be "
                                                   "in [1e-30, 1e+30]") + ".*got 1e\\+40"):
        to_sampled(net, "pbit", beta=1e20)
    assert isinstance(net[1], Quantize) and net[1].beta == 1e20


def test_functional_activations_are_found_and_rewritten():
    model = Functional().eval()
    found = {s["name"]: s for s in find_activations(model)}
    assert [s["op"] for s in found.values()] == ["torch.tanh", "Tensor.sigmoid", "Tensor.tanh", "F.hardtanh",
                                                   "torch.sigmoid"]
    assert all(s["hidden"] for s in found.values())
    converted = to_sampled(model, "pbit")
    kinds = sorted(type(m).__name__ for m in converted.modules() if getattr(m, "stochastic", False))
    assert kinds == ["HardPBit", "PBit", "PBit", "PBit", "PBit"]
    left = [n.target for n in converted.graph.nodes if n.op in ("call_function", "call_method")]
    assert not {torch.tanh, torch.sigmoid, F.hardtanh, "tanh", "sigmoid"} & set(left)
    gaussian = to_sampled(model, "gaussian", scale=0.0)
    x = torch.randn(6, 3)
    assert torch.equal(gaussian(x), model(x))
    assert sum(isinstance(m, GaussianNoise) for m in gaussian.modules()) == 5


class _WithExtras(nn.Module):
    """tanh called as a function, a frozen batch norm, and state forward never reads."""

    def __init__(self):
        super().__init__()
        self.body, self.bn, self.head = nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Linear(16, 3)
        self.aux = nn.Sequential(nn.Linear(16, 5))  # used only by another method
        self.register_buffer("prior", torch.ones(3) / 3)
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.extra = nn.Parameter(torch.zeros(1))
        self.gain = torch.tensor(2.0)  # a plain tensor attribute forward reads: fx makes it a buffer, not state

    def forward(self, x):
        return self.head(torch.tanh(self.bn(self.body(x)))) * self.gain


@pytest.mark.parametrize("method", ["pbit", "gaussian"])
def test_a_rewritten_model_keeps_every_module_its_state_and_each_module_s_mode(method):
    """fx copies only what forward reads, under new parents, and train() set every module's
    mode: a frozen batch norm came back training (and a forward overwrote its statistics), and
    an unused head and buffers were lost, so the model's state_dict did not load."""
    model = _WithExtras().train()
    model.bn.eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.5)
    converted = to_sampled(model, method)
    assert converted.training and not converted.bn.training and converted.aux.training
    assert {n for n, _ in model.named_modules()} < {n for n, _ in converted.named_modules()}
    assert set(converted.state_dict()) == set(model.state_dict())
    assert converted.load_state_dict(model.state_dict()) is not None
    assert "scratch" in dict(converted.named_buffers()) and "scratch" not in converted.state_dict()
    converted(torch.randn(8, 4))
    assert torch.equal(converted.bn.running_mean, torch.full((16,), 0.5))
    assert all(p is not q for p, q in zip(model.parameters(), converted.parameters()))  # a copy, as ever


def test_rewritten_functional_model_under_sampling_approaches_its_mean():
    class TanhNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(1)
    model = TanhNet().eval()
    converted = to_sampled(model, "pbit")
    x, t = torch.randn(4, 3), 20_000
    # the last layer is linear in the bits, so E[output] is the deterministic output exactly
    with torch.no_grad():
        out = SampledModel(converted, samples=t, seed=0)(x)
        bound = Z * model.b.weight.abs().sum(1) / math.sqrt(t)
        assert torch.all((out - model(x)).abs() <= bound)


def test_unsupported_and_unconvertible_models_name_the_operations():
    relu = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match=r"1 \(nn\.ReLU\).*not supported by 'pbit'"):
        to_sampled(relu, "pbit")
    to_sampled(relu, "gaussian")  # noise on pre-activations works for any activation

    class FunctionalRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)) + torch.tanh(self.a(x)))

    with pytest.raises(ConversionError, match=r"relu \(F\.relu\).*Convertible: tanh \(to convert only those: "
                       r"layers=\['tanh'\] in Python, --layers tanh to pdnn convert\)"):
        to_sampled(FunctionalRelu(), "pbit")
    assert isinstance(to_sampled(FunctionalRelu(), "pbit", layers=["tanh"]).tanh, PBit)
    with pytest.raises(ConversionError, match="no activation; operations seen: nn.Linear"):
        to_sampled(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), "gaussian")
    with pytest.raises(ConversionError, match="not supported by 'dither'"):
        to_sampled(mlp("tanh"), "dither")
    with pytest.raises(ConversionError, match="already stochastic"):
        to_sampled(mlp("pbit"), "pbit", layers=["3"])


def test_untraceable_models():
    class Untraceable(nn.Module):
        def __init__(self, act):
            super().__init__()
            self.a, self.act, self.b = nn.Linear(3, 4), act, nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            if h.sum() > 0:  # data-dependent control flow defeats torch.fx
                h = -h
            return self.b(torch.tanh(h) if self.act is None else self.act(h))

    with pytest.raises(ConversionError, match="could not trace"):
        to_sampled(Untraceable(None), "pbit")
    with pytest.warns(UserWarning, match="cannot be found and stay deterministic"):
        converted = to_sampled(Untraceable(nn.Sigmoid()), "pbit")
    assert isinstance(converted.act, PBit) and converted.act.mode == "unipolar"


def test_a_converted_decoder_layer_keeps_its_draws_through_copies():
    """torch's TransformerDecoderLayer puts F.relu over an activation module when copied
    (deepcopy, pickling, torch.save): a copy of the converted layer computed ReLU, no draw left."""
    torch.manual_seed(0)
    for act, method, options in ((nn.Tanh(), "pbit", {}), (nn.ReLU(), "gaussian", {"scale": 0.5})):
        layer = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, activation=act, batch_first=True).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (it cannot be traced: modules only)
            converted = to_sampled(layer, method, **options)
        saved = io.BytesIO()
        torch.save(converted, saved)
        saved.seek(0)
        target, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
        for copied in (copy.deepcopy(converted), pickle.loads(pickle.dumps(converted)),
                       torch.load(saved, weights_only=False)):
            with torch.no_grad():
                torch.manual_seed(1)
                expected = converted(target, memory)
                torch.manual_seed(1)
                assert torch.equal(copied(target, memory), expected)
                assert not torch.equal(copied(target, memory), expected)  # drawn anew
        converted.activation = nn.GELU()  # another activation assigned: it is the one called
        assert isinstance(converted.activation, nn.GELU) and "activation" not in vars(converted)


def test_a_torch_layers_own_activation_module_is_hidden_without_a_trace_as_a_function_is():
    """``TransformerEncoderLayer(activation=nn.Tanh())`` registers it after its last linear layer:
    by the order alone it was an output activation, refused under layers='hidden' (and left
    deterministic in the last layer of a stack), where ``activation=torch.tanh`` was hidden."""
    def layer(act):
        return nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=act, batch_first=True).eval()

    assert [s["hidden"] for s in find_activations(layer(nn.Tanh()))] == [True]
    assert [s["hidden"] for s in find_activations(layer(torch.tanh))] == [True]
    stack = nn.TransformerEncoder(layer(nn.Tanh()), 2, enable_nested_tensor=False).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = to_sampled(stack, "pbit")
    assert all(isinstance(block.activation, PBit) for block in converted.layers)
    said = " ".join(str(w.message) for w in caught)  # (functions cannot be found; no module guessed as output)
    assert "cannot be found and stay deterministic" in said and "registered after the last weight layer" not in said

    class OwnLayer(nn.TransformerEncoderLayer):  # a subclass runs torch's forward too
        pass

    own = nn.TransformerEncoder(OwnLayer(16, 2, 32, dropout=0.0, activation=nn.Tanh(), batch_first=True), 2,
                                enable_nested_tensor=False)
    assert [s["hidden"] for s in find_activations(own)] == [True, True]

    class Head(nn.Module):  # a user's output layer: its weight, then its output activation
        def __init__(self):
            super().__init__()
            self.weight, self.act = nn.Parameter(torch.randn(3, 8)), nn.Sigmoid()

        def forward(self, h):
            return self.act(h @ self.weight.T)

    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Sequential(nn.Linear(4, 8), nn.Tanh()), Head()

        def forward(self, x):
            h = self.body(x)
            return self.head(h if h.sum() > 0 else -h)  # (a branch on the data: no trace)

    net = Branching()
    plain = {s["name"]: s["hidden"] for s in find_activations(net)}
    torch.nn.utils.parametrizations.weight_norm(net.head)  # (its class becomes one of torch.nn.utils.parametrize's)
    assert {s["name"]: s["hidden"] for s in find_activations(net)} == plain and not plain["head.act"]


@pytest.mark.parametrize("method", ["gaussian", "logistic"])
def test_a_model_converted_with_noise_is_not_given_a_second_noise(method):
    """An activation that takes a conversion's noise as it is was not seen as already stochastic:
    converting again drew a second noise before it, sigma becoming sqrt(2) sigma, unsaid."""
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    modules = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    for model in (modules.eval(), Functional().eval()):
        once = to_sampled(model, method, scale=0.5)
        kinds = {s["op"]: s["kind"] for s in find_activations(once)}
        assert set(kinds.values()) == {"stochastic"}, kinds
        for again in ({"layers": "hidden"}, {"layers": "all"}):
            with pytest.raises(ConversionError, match="every activation is already stochastic"):
                to_sampled(once, method, scale=0.5, **again)
        name = next(s["name"] for s in find_activations(once) if "Noise" not in s["op"])
        with pytest.raises(ConversionError, match="already stochastic"):
            to_sampled(once, "pbit", layers=[name])


def test_the_graph_of_rewritten_functions_names_the_hooks_it_does_not_run():
    """Rewriting functional activations makes a torch.fx graph, which dropped the model's own hooks
    (a pre-hook that changes the input, a hook that changes the output) and inlined the modules it
    traced into, whose hooks no longer ran, without a word. The graph is no instance of the
    model's class, so the model's hooks, bound to it, cannot be carried over: they are named."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(8, 8)

        def forward(self, x):
            return torch.tanh(self.linear(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.block, self.b = nn.Linear(4, 8), Block(), nn.Linear(8, 2)
            self.calls = 0
            self.register_forward_hook(self.count)  # one of its own methods

        def count(self, module, args, out):
            self.calls += 1

        def forward(self, x):
            return self.b(self.block(torch.tanh(self.a(x))))

    torch.manual_seed(0)
    net = Net().eval()
    net.register_load_state_dict_pre_hook(lambda module, *args: None)
    seen = []
    net.b.register_forward_hook(lambda module, args, out: seen.append(len(out)))  # a module the graph calls
    net.block.register_forward_hook(lambda module, args, out: out)
    with pytest.warns(UserWarning, match=r"hooks on Net itself, block do not run in the converted Net: .*torch.fx") \
            as said:
        converted = to_sampled(net, "gaussian", scale=0.0)
    assert said[0].filename == __file__  # (the user's line)
    x = torch.randn(3, 4)
    converted.load_state_dict(net.state_dict())  # (a hook bound to a copy gone since failed here)
    assert torch.equal(converted(x), net(x)) and seen == [3, 3]  # (the module the graph calls keeps its hook)


def test_bn_stats_given_as_a_batch_norms_own_tensors_are_taken():
    """``_check_bn_stats`` reads tensors, but the spec kept them as given, and a BatchNorm's own
    buffers failed in json.dumps: 'Object of type Tensor is not JSON serializable'."""
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).eval()
    stats = {"1": {"running_mean": torch.arange(4.0), "running_var": np.full(4, 2.0)}}
    converted = to_sampled(net, "gaussian", scale=0.1, bn_stats=stats)
    assert torch.equal(converted[1].running_mean, torch.arange(4.0)) and (converted[1].running_var == 2).all()
    assert conversion_spec("gaussian", scale=0.1, bn_stats=stats)["bn_stats"] == {
        "1": {"running_mean": [0.0, 1.0, 2.0, 3.0], "running_var": [2.0] * 4}}


def test_layer_selection_hidden_all_names_and_per_layer_scales():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2), nn.Sigmoid())
    hidden = {s["name"]: s["hidden"] for s in find_activations(net)}
    assert hidden == {"1": True, "3": True, "5": False}
    assert isinstance(to_sampled(net, "pbit")[5], nn.Sigmoid)
    assert isinstance(to_sampled(net, "pbit", layers="all")[5], PBit)
    only = to_sampled(net, "pbit", layers=["3"])
    assert isinstance(only[1], nn.Tanh) and isinstance(only[3], PBit)
    with pytest.raises(ConversionError, match="unknown layer name.*'7'.*1 \\(nn.Tanh\\)"):
        to_sampled(net, "pbit", layers=["7"])
    with pytest.raises(ValueError, match=r"layers lists '3' more than once: \['3', '1', '3'\]"):
        to_sampled(net, "pbit", layers=["3", "1", "3"])  # (as `--layers 3,1,3`: likely a slip for another name)
    for bad in ([["1"]], {"1"}, ["1", 1]):  # (bare TypeErrors from hashing and from JSON, or a spec unchecked)
        with pytest.raises(ValueError, match="layers must be 'hidden', 'all' or a list of activation names, got"):
            conversion_spec("pbit", layers=bad)
    per_layer = to_sampled(net, "gaussian", scale={"1": 0.2, "*": 0.7})
    assert per_layer[1][0].scale == 0.2 and per_layer[3][0].scale == 0.7
    with pytest.raises(ValueError, match="no scale for 3"):
        to_sampled(net, "gaussian", scale={"1": 0.2})
    betas = to_sampled(net, "pbit", beta={"1": 0.5, "3": 2.0})
    assert (betas[1].beta, betas[3].beta) == (0.5, 2.0)


def test_spec_is_json_and_rejects_options_that_do_not_apply():
    spec = conversion_spec("gaussian", scale={"3": 1}, layers=("3",))
    assert json.loads(json.dumps(spec)) == spec == {"method": "gaussian", "scale": {"3": 1.0}, "layers": ["3"]}
    assert conversion_spec("pbit") == {"method": "pbit", "beta": 1.0, "layers": "hidden"}
    with pytest.raises(ValueError, match="beta"):
        conversion_spec("pbit", scale=0.3)
    with pytest.raises(ValueError, match="pbit"):
        conversion_spec("gaussian", beta=2.0)
    with pytest.raises(ValueError, match="unknown conversion method"):
        conversion_spec("dropout")


@pytest.mark.parametrize("method,options,message", [
    ("gaussian", {"scale": float("nan")}, "scale must be a finite number >= 0, got nan"),
    ("logistic", {"scale": -0.1}, "scale must be a finite number >= 0, got -0.1"),
    ("dither", {"scale": True}, "scale must be a number, got True"),
    ("gaussian", {"scale": {"3": 0.2, "*": float("inf")}}, r"scale of \* must be a finite number >= 0, got inf"),
    ("pbit", {"beta": float("nan")}, "beta must be a finite number > 0, got nan"),
    ("pbit", {"beta": 0}, "beta must be a finite number > 0, got 0"),
    ("pbit", {"beta": {"3": float("-inf")}}, "beta of 3 must be a finite number > 0, got -inf"),
    # finite and > 0, but beyond p-bits' range: the range is named, not a false reason
    ("pbit", {"beta": 1e31}, r"beta must be in \[1e-30, 1e\+30\], .* got 1e\+31"),
    ("pbit", {"beta": {"3": 1e-31, "*": 1.0}}, r"beta of 3 must be in \[1e-30, 1e\+30\], .* got 1e-31"),
])
def test_non_finite_or_out_of_range_values_are_named_not_json_errors(method, options, message):
    for convert in (conversion_spec, lambda m, **o: to_sampled(mlp("quant:2" if m == "dither" else "tanh"), m, **o)):
        with pytest.raises(ValueError, match=message):
            convert(method, **options)


def test_only_layers_with_weight_matrices_make_an_activation_hidden():
    # normalisation layers and PReLU have parameters but mix no features: the tanh still produces the output
    for after in (nn.BatchNorm1d(4), nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.PReLU()):
        net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), after).eval()
        assert find_activations(net)[0] == {"name": "1", "op": "nn.Tanh", "kind": "tanh", "hidden": False,
                                            "methods": ["pbit", "gaussian", "logistic"]}
        with pytest.raises(ConversionError, match="nothing to convert"):
            to_sampled(net, "pbit")
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Sigmoid())
    assert {s["name"]: s["hidden"] for s in find_activations(net)} == {"1": True, "4": False}

    class Untraceable(nn.Module):  # the fallback without a trace uses the same rule
        def __init__(self):
            super().__init__()
            self.a, self.act, self.norm = nn.Linear(3, 4), nn.Tanh(), nn.LayerNorm(4)

        def forward(self, x):
            h = self.a(x)
            return self.norm(self.act(-h if h.sum() > 0 else h))

    assert [s["hidden"] for s in find_activations(Untraceable())] == [False]


def test_holdout_prefers_examples_the_run_never_saw():
    assert holdout_indices(80, 30, 120) == (80, 110)  # unseen: right after the trained-on ones
    assert holdout_indices(80, 0.25, 120) == (80, 100)  # a fraction of the trained-on count
    assert holdout_indices(80, 100, 120) == (80, 120)  # capped at what exists
    assert holdout_indices(120, 30, 120) == (90, 120) == holdout_indices(120, 30)  # none unseen: the last seen
    assert holdout_indices(80, 0.5, 60) == (20, 60)  # fewer readable than trained on: all seen
    for bad in (0, -1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="count >= 1 or a fraction"):
            holdout_indices(80, bad, 120)
    with pytest.raises(ValueError, match="more than the 60 training examples"):
        holdout_indices(80, 61, 60)


def test_batchnorm_recalibration_matches_sampled_input_statistics_and_replays():
    model = mlp("tanh")
    x = torch.randn(200, *SHAPE)
    converted = to_sampled(model, "pbit")
    weights = {k: v.clone() for k, v in converted.named_parameters()}
    stats = recalibrate_batchnorm(converted, x, samples=3, batch_size=500, seed=7)  # one batch: the same draws as below
    assert list(stats) == ["5"]  # the first BatchNorm runs before any noise: its input is unchanged
    assert all(torch.equal(v, weights[k]) for k, v in converted.named_parameters())
    # the statistics are those of the BatchNorm's input under sampling
    seen = []
    handle = converted[5].register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    SampledModel(converted, samples=3, seed=7)(x)
    handle.remove()
    z = torch.cat(seen)
    assert torch.allclose(converted[5].running_mean, z.mean(0), atol=1e-5)
    assert torch.allclose(converted[5].running_var, z.var(0, unbiased=False), atol=1e-5)
    # bits carry more variance than tanh values: the float statistics underestimate the sampled ones
    float_inputs = []
    handle = model[5].register_forward_pre_hook(lambda m, inp: float_inputs.append(inp[0]))
    model(x)
    handle.remove()
    assert converted[5].running_var.mean() > 1.2 * float_inputs[0].var(0).mean()
    replay = to_sampled(model, **conversion_spec("pbit", bn_stats=json.loads(json.dumps(stats))))
    assert torch.equal(replay[5].running_var, converted[5].running_var)
    assert torch.equal(replay[2].running_var, model[2].running_var)
    assert torch.equal(model[5].running_var, mlp("tanh")[5].running_var)  # the source keeps its own


def test_calibrate_sweeps_and_chooses_by_target_accuracy():
    model = mlp("tanh")
    x = torch.randn(60, *SHAPE)
    y = model(x).argmax(1)  # the deterministic model is right on every example
    doc = calibrate(model, x, y, "gaussian", values=[0.01, 3.0], samples=[1, 4], repeats=1)
    assert doc["deterministic_accuracy"] == 1.0
    assert [row["scale"] for row in doc["sweep"]] == [0.01, 3.0] and doc["target_samples"] == 4
    assert doc["chosen"] == 0.01 and doc["spec"] == {"method": "gaussian", "scale": 0.01, "layers": "hidden"}
    assert [r["samples"] for r in doc["sweep"][0]["results"]] == [1, 4]
    assert doc["at_edge"] is False and doc["per_layer"] is None  # two values: no edge to speak of
    json.dumps(doc)


def test_calibrate_warns_when_the_choice_is_at_the_edge_of_the_sweep():
    model = mlp("tanh")
    x = torch.randn(60, *SHAPE)
    y = model(x).argmax(1)
    with pytest.warns(UserWarning, match="scale = 0.001: at the edge of the sweep.*widen --values"):
        doc = calibrate(model, x, y, "gaussian", values=[1.5, 0.001, 3.0], samples=[1, 4])
    assert doc["chosen"] == 0.001 and doc["at_edge"] is True  # the smallest, though not the first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = calibrate(model, x, y, "gaussian", values=[0.001, 0.0, 3.0], samples=[1, 4])
    assert doc["chosen"] == 0.001 and doc["at_edge"] is False  # a tie with 0, which comes later


def test_calibrate_refuses_a_value_listed_twice():
    model = mlp("tanh")
    x = torch.randn(20, *SHAPE)
    with pytest.raises(UsageError, match=r"lists beta = 1 more than once, got \[1.0, 2.0, 1.0\]"):
        calibrate(model, x, model(x).argmax(1), "pbit", values=[1, 2, 1.0], samples=[1])


@pytest.mark.parametrize("recalibrate_bn", [False, True])
def test_per_layer_calibration_is_never_worse_and_its_spec_replays(recalibrate_bn):
    torch.manual_seed(2)
    model = mlp("tanh", width=12, seed=2)
    x = torch.randn(300, *SHAPE)
    y = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(3))
    y[:200] = model(x[:200]).argmax(1)  # learnable in part, so the values differ
    # seed 6: sampling streams under which the per-layer pass moves away from the global choice
    options = dict(values=[0.5, 1.0, 2.0, 4.0, 8.0], samples=[1, 3], seed=6, recalibrate_bn=recalibrate_bn,
                   bn_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the choices may sit at an edge of this short sweep
        plain = calibrate(model, x, y, "pbit", **options)
        doc = calibrate(model, x, y, "pbit", per_layer=True, **options)
    assert doc["sweep"] == plain["sweep"] and doc["chosen"] == plain["chosen"]
    refined = doc["per_layer"]
    assert [layer["name"] for layer in refined["layers"]] == ["3", "6"]  # in execution order
    assert all([row["beta"] for row in layer["sweep"]] == options["values"] for layer in refined["layers"])
    assert refined["chosen"] != {"3": plain["chosen"], "6": plain["chosen"]}  # on these data the pass moves
    # each layer starts from the global choice, so its sweep meets the global chosen row again
    global_row = next(row for row in plain["sweep"] if row["beta"] == plain["chosen"])
    first = next(row for row in refined["layers"][0]["sweep"] if row["beta"] == plain["chosen"])
    assert first["results"] == global_row["results"]
    assert refined["accuracy_at_target"] >= global_row["accuracy_at_target"]
    assert refined["chosen"] == {layer["name"]: layer["chosen"] for layer in refined["layers"]}
    assert doc["spec"]["beta"] == refined["chosen"] and doc["spec"]["layers"] == "hidden"
    assert ("bn_stats" in doc["spec"]) == recalibrate_bn == ("bn_stats" in plain["spec"])
    # the spec (with its BatchNorm statistics) rebuilds exactly the measured conversions (measured
    # in calibrate's batches of 500: the draws, and so the accuracies, depend on the batching)
    for document, results in ((doc, refined["results"]), (plain, global_row["results"])):
        replay = to_sampled(model, **json.loads(json.dumps(document["spec"])))
        assert accuracy_vs_samples(replay, x, y, [1, 3], 1, seed=6, batch_size=500) == results
    json.dumps(doc, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Run directories and the command line
# ---------------------------------------------------------------------------------------------

def make_run(path, neuron="tanh", subset=None, seed=0):
    model = mlp(neuron, seed=seed)
    config = ModelConfig(name="mlp", neuron=neuron, input_shape=SHAPE, num_classes=3, width=16).to_dict()
    config["input_shape"] = list(config["input_shape"])
    write_json(path / "config.json", {"model": config, "data": {"dataset": "tiny", "subset": subset},
                                      "train": {"seed": 0}, "label": "tiny-tanh"})
    save_checkpoint(path / "checkpoint.pt", {"model": model.state_dict(), "optimizer": {}})
    return model


def test_loading_a_run_with_a_bad_conversion_names_its_config(tmp_path):
    """The replay of a converted run is convert's (pdnn.convert.load_model, also pdnn.runs.load_model)."""
    from pdnn.convert import load_model as convert_load_model

    assert convert_load_model is load_model
    make_run(tmp_path)
    config = read_json(tmp_path / "config.json")
    write_json(tmp_path / "config.json", {**config, "convert": {"method": "cosmic-rays"}})
    with pytest.raises(RunError, match=r"config\.json: bad 'convert' section \(unknown conversion method 'cosmic-rays'"):
        load_model(tmp_path)


def test_cli_convert_round_trip_through_a_run_directory(tmp_path, capsys):
    source, new = tmp_path / "run", tmp_path / "converted"
    model = make_run(source)
    assert pdnn.cli.main(["convert", str(source), "--method", "gaussian", "--scale", "0.5", "--out", str(new),
                          "--quiet"]) == 0
    config = read_json(new / "config.json")
    assert config["convert"] == {"method": "gaussian", "scale": 0.5, "layers": "hidden"}
    # the source is found from the converted run wherever the command ran, and is pinned by its bytes
    assert config["source_run"] == "../run" and config["model"]["neuron"] == "tanh"
    assert config["source_checkpoint_sha256"] == hashlib.sha256((source / "checkpoint.pt").read_bytes()).hexdigest()
    assert config["label"] == "tiny-tanh (gaussian)"
    loaded, _ = load_model(new)
    noise = [m for m in loaded.modules() if isinstance(m, GaussianNoise)]
    assert len(noise) == 2 and all(m.scale == 0.5 for m in noise)
    for (name, p), (name0, p0) in zip(loaded.state_dict().items(), model.state_dict().items()):
        assert name == name0 and torch.equal(p, p0)
    assert "3 (nn.Tanh), 6 (nn.Tanh)" in capsys.readouterr().out
    # a converted run is not converted again
    assert pdnn.cli.main(["convert", str(new), "--method", "pbit", "--out", str(tmp_path / "again")]) == 2


def test_cli_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    source, new = tmp_path / "run", tmp_path / "converted"
    make_run(source)
    new.mkdir()
    (new / "eval-network.json").write_text("{}")
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new)]) == 2
    assert "holds eval-network.json but no config.json" in capsys.readouterr().err  # what --force would refuse
    assert sorted(p.name for p in new.iterdir()) == ["eval-network.json"]
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new), "--force"]) == 2
    assert "holds eval-network.json but no config.json" in capsys.readouterr().err  # not a conversion
    (new / "eval-network.json").unlink()
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new), "--quiet"]) == 0
    (new / "eval-network.json").write_text("{}")
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--beta", "0.5", "--out", str(new),
                          "--force", "--quiet"]) == 0
    assert sorted(p.name for p in new.iterdir()) == ["checkpoint.pt", "config.json"]  # the stale eval is gone
    assert read_json(new / "config.json")["convert"]["beta"] == 0.5
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(source), "--force"]) == 2
    # stopped while writing its folder (the weights written, config.json not yet): said as such
    (new / "config.json").unlink()
    capsys.readouterr()
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new)]) == 2
    assert "holds a conversion interrupted while writing it (no config.json); pass --force" in capsys.readouterr().err
    (new / "metrics.json").write_text("[]")  # ... unless --force would refuse it: a trained run's history
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new)]) == 2
    assert "holds a trained run's checkpoint or history" in capsys.readouterr().err
    (new / "metrics.json").unlink()
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new), "--force", "--quiet"]) == 0
    assert pdnn.cli.main(["convert", str(source), "--method", "dither", "--out", str(tmp_path / "x")]) == 2
    assert "not supported by 'dither'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_force_removes_every_result_measured_on_the_replaced_conversion(tmp_path):
    """A converted checkpoint is a copy of the source's weights, so results of the old conversion
    would pass a checksum test: --force must remove them all, not only the evaluations."""
    source, new = tmp_path / "run", tmp_path / "converted"
    make_run(source)
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new), "--quiet"]) == 0
    measured = ["eval-network.json", "eval-layer.json", "adaptive.json", "fid-clf.json", "fid.json",
                "energy.json", "energy.png", "calibration.json"]
    for name in measured + ["convert.log"]:
        (new / name).write_text("of the pbit conversion")
    assert pdnn.cli.main(["convert", str(source), "--method", "gaussian", "--scale", "0.3", "--out", str(new),
                          "--force", "--quiet"]) == 0
    assert sorted(p.name for p in new.iterdir()) == ["checkpoint.pt", "config.json", "convert.log"]
    assert read_json(new / "config.json")["convert"]["method"] == "gaussian"


class SharesItsPreActivation(nn.Module):
    """An in-place activation module whose input is used again: the later use sees act(h)."""

    def __init__(self, act):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 4), act, nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        y = self.act(h)  # in place: h holds act(h) from here on
        return self.b(y) + h


class InPlaceUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 4), nn.Hardtanh(inplace=True), nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            h = h * 2
        return self.b(self.act(h))


def test_in_place_activation_modules_on_a_shared_tensor_are_refused():
    for act, method in ((nn.ReLU(inplace=True), "gaussian"), (nn.Hardtanh(inplace=True), "pbit")):
        with pytest.raises(ConversionError, match=r"act \(nn\.\w+\): in place on a tensor that is used elsewhere"):
            to_sampled(SharesItsPreActivation(act).eval(), method, layers="all")
    # not in place, or in place on a tensor nothing else reads: converted, and equal at zero noise
    x = torch.randn(8, 4)
    for act in (nn.ReLU(), nn.ReLU(inplace=True)):
        model = SharesItsPreActivation(nn.ReLU()).eval() if not act.inplace else nn.Sequential(
            nn.Linear(4, 4), act, nn.Linear(4, 4)).eval()
        converted = to_sampled(model, "gaussian", scale=1e-30, layers="all")
        assert torch.equal(converted(x), model(x))
    # without a trace it cannot be told whether the input is shared: refused, with the remedy
    with pytest.raises(ConversionError, match=r"act \(nn\.Hardtanh\): in place \(inplace=True\).*inplace=False"):
        to_sampled(InPlaceUntraceable().eval(), "pbit", layers="all")


class WritesThroughAView(nn.Module):
    """The in-place activation writes into h through a view of it; h is read later."""

    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        y = self.act(h.view(-1, 2, 2))
        return self.b(y.flatten(1)) + h


class ReadsOnlyTheShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        n = h.size(0)
        return self.b(self.act(h).reshape(n, -1))


class ThroughAView(nn.Module):
    """F.relu in place on ``view(h)``, h read afterwards."""

    def __init__(self, view):
        super().__init__()
        self.view, self.fc, self.fc2 = view, nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        F.relu(self.view(h), inplace=True)
        return self.fc2(h)


class LSTMHead(nn.Module):
    """An in-place activation on one element of an LSTM's output tuple; another is read too."""

    def __init__(self):
        super().__init__()
        self.lstm, self.fc, self.fc2 = nn.LSTM(4, 4, batch_first=True), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.fc(F.relu(out[:, -1], inplace=True)) + self.fc2(h[-1])


def test_in_place_writes_are_followed_through_views_and_shape_reads_are_not_uses():
    """Counting the direct uses of the input missed a write through a view (a wrong answer) and
    refused a model whose other use read only the shape (a right one)."""
    with pytest.raises(ConversionError, match="act \\(nn.ReLU\\): in place on a tensor that is used elsewhere"):
        to_sampled(WritesThroughAView().eval(), "gaussian", layers="all")
    for view in (lambda h: h.swapaxes(0, 1), lambda h: h.T, lambda h: h.mT, lambda h: torch.t(h), lambda h: h.data,
                 lambda h: h.tensor_split(2)[0], lambda h: torch.unflatten(h, 1, (2, 2)), lambda h: h[:, :2]):
        with pytest.raises(ConversionError, match="in place on a tensor that is used elsewhere"):
            to_sampled(ThroughAView(view).eval(), "gaussian", layers="all")
    model, x = ReadsOnlyTheShape().eval(), torch.randn(8, 4)
    assert torch.equal(to_sampled(model, "gaussian", scale=1e-30, layers="all")(x), model(x))
    # an element of a module's output tuple is a tensor of its own, not a view of the others
    model, x = LSTMHead().eval(), torch.randn(3, 5, 4)
    assert torch.equal(to_sampled(model, "gaussian", scale=1e-30, layers="all")(x), model(x))


class ThroughAnAliasModule(nn.Module):
    def __init__(self, alias):
        super().__init__()
        self.fc, self.alias, self.act, self.fc2 = nn.Linear(4, 4), alias, nn.ReLU(inplace=True), nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        return self.fc2(self.act(self.alias(h))) + h


@pytest.mark.parametrize("alias", [
    lambda h: h.float(), lambda h: h.to(torch.float32), lambda h: h.type_as(h), lambda h: h.cpu(),
    lambda h: h.broadcast_to(h.shape), lambda h: h.ravel(), lambda h: torch.atleast_2d(h), lambda h: h.conj(),
    lambda h: h.requires_grad_(), lambda h: h.mul_(1), lambda h: h.unsqueeze_(0), lambda h: h.add_(0).view(-1),
    lambda h: F.dropout(h, 0.5, training=False), lambda h: torch.relu_(h), lambda h: F.hardtanh(h, inplace=True)])
def test_in_place_writes_are_followed_through_calls_that_return_their_input(alias):
    """``h.float()`` of a float32 h, ``h.to(...)``, an in-place call, a dropout that does not draw:
    each returns h itself (or a view of it), so an in-place activation on its result writes h, and
    a replacement that is not in place would leave h as it was (outputs differed by up to 4.7)."""
    model = ThroughAView(alias).eval()
    x = torch.randn(8, 4)
    assert not torch.equal(model(x), model.fc2(model.fc(x)))  # the original does write h
    with pytest.raises(ConversionError, match="in place on a tensor that is used elsewhere"):
        to_sampled(model, "gaussian", layers="all")


@pytest.mark.parametrize("alias", [nn.Identity(), nn.Flatten(), nn.Dropout(0.5)])
def test_in_place_writes_are_followed_through_layers_that_return_their_input(alias):
    model, x = ThroughAnAliasModule(alias).eval(), torch.randn(8, 4)
    assert not torch.equal(model(x), model.fc2(torch.relu(model.fc(x))) + model.fc(x))  # h was written
    with pytest.raises(ConversionError, match=r"act \(nn.ReLU\): in place on a tensor that is used elsewhere"):
        to_sampled(model, "gaussian", layers="all")
    # the same layers before an in-place activation whose input nothing else reads: converted
    model = nn.Sequential(nn.Linear(4, 4), alias, nn.ReLU(inplace=True), nn.Linear(4, 4)).eval()
    assert torch.equal(to_sampled(model, "gaussian", scale=1e-30)(x), model(x))


class TransformsItsWeights(nn.Module):
    """tanh of a parameter (bounded weights) and sigmoid of one (a learned gate): no activations."""

    def __init__(self):
        super().__init__()
        self.raw, self.gate = nn.Parameter(torch.randn(8, 4)), nn.Parameter(torch.zeros(8))
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(F.linear(x, torch.tanh(self.raw)))
        return self.out(h * torch.sigmoid(self.gate))


class SharesATanhWithItsWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.raw, self.act, self.out = nn.Parameter(torch.randn(8, 4)), nn.Tanh(), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.act(F.linear(x, self.act(self.raw))))


def test_tanh_and_sigmoid_of_weights_are_not_activations():
    """Made random, a weight's tanh would change the weights on every call ("without changing any
    weight", docs/convert.md): only functions of the input are activations."""
    model = TransformsItsWeights()
    assert [site["name"] for site in find_activations(model)] == ["tanh_1"]
    converted = to_sampled(model, "pbit", layers="all")
    assert [name for name, m in converted.named_modules() if isinstance(m, PBit)] == ["tanh_1"]
    linear = next(node for node in converted.graph.nodes if node.target is F.linear)
    assert linear.args[1].target is torch.tanh  # the weight F.linear reads is still tanh(raw)
    # a module called on both: swapping it would randomise the weights too, so it is named and refused
    with pytest.raises(ConversionError, match=r"act \(nn.Tanh\): also called on weights or constants"):
        to_sampled(SharesATanhWithItsWeights(), "pbit")
    # a model traced only with a flag's default fixed: the gate is on weights there, and the path not
    # traced may call it on data, so it is listed and refused by name, and no hidden activation
    model = GatedWithAFlag().eval()
    assert [(site["name"], site["hidden"], site["methods"]) for site in find_activations(model)] == [
        ("act", True, ["pbit", "gaussian", "logistic"]), ("gate_act", False, [])]
    assert isinstance(to_sampled(model, "pbit").gate_act, nn.Sigmoid)
    converted = to_sampled(model, "pbit", layers="all")  # every activation of the input: the gate is none
    assert isinstance(converted.act, PBit) and isinstance(converted.gate_act, nn.Sigmoid)
    with pytest.raises(ConversionError, match=r"gate_act \(nn.Sigmoid\): called on weights or constants where"):
        to_sampled(model, "pbit", layers=["gate_act"])
    model.act = nn.Identity()  # the gate alone: nothing to convert, and no advice that cannot work
    for layers in ("hidden", "all"):
        with pytest.raises(ConversionError, match=r"gate_act \(nn.Sigmoid, on weights\); none of them is an "
                                                  "activation of the input that can be converted"):
            to_sampled(model, "pbit", layers=layers)


class GatedWithAFlag(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.gate_act, self.b = nn.Linear(4, 8), nn.Tanh(), nn.Sigmoid(), nn.Linear(8, 2)
        self.gate = nn.Parameter(torch.zeros(8))

    def forward(self, x, negate: bool = False):
        h = self.act(self.a(x)) * self.gate_act(self.gate)
        if negate:  # a branch on an argument: traced only at its default
            h = -h
        return self.b(h)


def test_damaged_batchnorm_statistics_are_named_not_loaded(tmp_path):
    source, new = tmp_path / "run", tmp_path / "converted"
    make_run(source)
    model, _ = load_model(source)
    good = {"5": {"running_mean": [0.0] * 16, "running_var": [1.0] * 16}}
    assert torch.equal(to_sampled(model, "pbit", bn_stats=good)[5].running_var, torch.ones(16))
    damaged = {"not a dict": [1],
               "missing variance": {"5": {"running_mean": [0.0] * 16}},
               "not numbers": {"5": {"running_mean": ["a"] * 16, "running_var": [1.0] * 16}},
               "negative variance": {"5": {"running_mean": [0.0] * 16, "running_var": [-1.0] * 16}},
               "non-finite": {"5": {"running_mean": [float("nan")] * 16, "running_var": [1.0] * 16}}}
    expected = {"not a dict": "must map BatchNorm names", "missing variance": "exactly 'running_mean' and 'running_var'",
                "not numbers": "is not a list of numbers", "negative variance": "a negative variance",
                "non-finite": "a non-finite value"}
    for case, stats in damaged.items():
        with pytest.raises(UsageError, match=expected[case]):
            to_sampled(model, "pbit", bn_stats=stats)
    # in a converted run's config.json: a one-line RunError naming the file, from every reader
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new), "--quiet"]) == 0
    config = read_json(new / "config.json")
    write_json(new / "config.json", {**config, "convert": {**config["convert"], **{"bn_stats": damaged["negative variance"]}}})
    with pytest.raises(RunError, match=r"config\.json: bad 'convert' section \(bn_stats\['5'\]\['running_var'\]"):
        load_model(new)


def test_options_of_a_calibration_that_does_not_run_are_refused(tmp_path, capsys):
    source, new = tmp_path / "run", tmp_path / "converted"
    make_run(source)
    for option, needs in ((["--repeats", "0"], "--calibrate"), (["--samples", "1,2"], "--calibrate"),
                          (["--target-samples", "0"], "--calibrate"), (["--values", "1,2"], "--calibrate"),
                          (["--bn-samples", "0"], "--recalibrate-bn"),
                          (["--holdout", "nan"], "--calibrate or --recalibrate-bn"),
                          (["--subset", "5"], "--calibrate or --recalibrate-bn"),  # (-5: refused as read, R162)
                          (["--seed", "3"], "--calibrate or --recalibrate-bn")):
        assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new), *option]) == 2
        assert f"{option[0]} is only used with {needs}" in capsys.readouterr().err
        assert not new.exists()
    for option, said in ((["--samples="], "--samples must be integers >= 1 separated by commas, got ''"),
                         (["--holdout="], "--holdout must be a count >= 1 or a fraction in (0, 1), got ''"),
                         (["--holdout", "0"], "--holdout must be a count >= 1 or a fraction in (0, 1), got '0'"),
                         (["--holdout", "1.5"], "--holdout must be a count >= 1 or a fraction in (0, 1), got '1.5'"),
                         (["--holdout", "inf"], "--holdout must be a count >= 1 or a fraction in (0, 1), got 'inf'"),
                         (["--layers", ""], "--layers must be 'hidden', 'all' or comma-separated layer names (see "
                                            "--list-layers), got ''"),
                         (["--layers", " , "], "--layers must be 'hidden', 'all' or comma-separated layer names"),
                         (["--target-samples", "0"], "--target-samples must be an integer >= 1, got 0"),
                         (["--repeats", "-2"], "--repeats must be an integer >= 1, got -2"),
                         (["--scale", "3=0.1,3=0.7"], "--scale gives layer '3' more than one value: '3=0.1,3=0.7'"),
                         (["--seed", str(2**64)], f"--seed must be an integer in [-2**63, 2**64), got {2**64}")):
        assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(new), "--calibrate",
                              *option]) == 2
        assert said in capsys.readouterr().err


def test_list_layers_and_restore_refuse_the_options_of_a_conversion(tmp_path, capsys):
    """They read RUN_DIR and exit: a conversion's options would be ignored, with exit status 0 and
    no converted run."""
    source, new = tmp_path / "run", tmp_path / "converted"
    make_run(source)
    for step, options, named in (("--list-layers", ["--method", "gaussian", "--scale", "0.3", "--out", str(new)],
                                  "--method, --scale, --out"),
                                 ("--list-layers", ["--layers", "3"], "--layers"),
                                 ("--restore", ["--calibrate", "--repeats", "0"], "--calibrate, --repeats"),
                                 ("--restore", ["--list-layers"], "--list-layers")):
        assert pdnn.cli.main(["convert", str(source), step, *options]) == 2
        assert f"{step} only reads RUN_DIR and exits, so {named} would be ignored" in capsys.readouterr().err
        assert not new.exists()
    assert pdnn.cli.main(["convert", str(source), "--list-layers"]) == 0
    assert "nn.Tanh" in capsys.readouterr().out


def test_labels_must_be_one_index_per_input():
    """Labels [N, 1] broadcast against predictions [N] into N x N comparisons: accuracies of up
    to N (900 %), and a calibration chosen on them."""
    model = mlp("tanh").eval()
    x, y = torch.randn(20, *SHAPE), torch.randint(0, 3, (20, 1))
    for measure in (lambda y: accuracy_vs_samples(model, x, y, [1], 1),
                    lambda y: calibrate(model, x, y, "gaussian", values=[0.0, 0.1], samples=[1])):
        with pytest.raises(UsageError, match=r"labels must be a tensor of one class index per input, shape \[N\], "
                                             r"got \[20, 1\] \(flatten the column\)"):
            measure(y)
        with pytest.raises(UsageError, match=r"shape \[N\], got list"):
            measure(y.flatten().tolist())
    assert 0 <= accuracy_vs_samples(model, x, y.flatten(), [1], 1)[0]["accuracy_mean"] <= 1


def test_an_accuracy_counts_only_labels_and_scores_it_can_compare():
    """NaN scores argmax to 0, so NaN rows counted as class 0 (all-NaN inputs scored 100 % on
    labels 0); labels no class has, floats and bools were compared as they were; an unknown
    aggregation ran the network one; a bad rule failed inside; and the caller's model was left in
    eval mode (R144 D1-D3, D6, D7)."""
    from pdnn.adaptive import StoppingRule
    from pdnn.evaluate import adaptive_accuracy

    model = mlp("pbit").train()
    x, y = torch.randn(20, *SHAPE), torch.randint(0, 3, (20,))
    for measure in (lambda x, y: accuracy_vs_samples(model, x, y, [1, 2], 1),
                    lambda x, y: accuracy_vs_samples(model, x, y, [2], 1, aggregate="layer"),
                    lambda x, y: adaptive_accuracy(model, x, y, StoppingRule(4))):
        with pytest.raises(UsageError, match="labels must be class indices below 3, the model's classes; got 12"):
            measure(x, y.clone().index_fill_(0, torch.tensor([4]), 12))
        for bad, said in ((y.float(), "torch.float32"), (y > 0, "torch.bool")):
            with pytest.raises(UsageError, match=f"labels must be integer class indices, got {said}"):
                measure(x, bad)
        with pytest.raises(UsageError, match="labels must be class indices >= 0, got -1"):
            measure(x, y - 1)
        assert model.training and all(m.training for m in model.modules())  # (nothing ran: nothing changed)
        measure(x, y)
        assert model.training and all(m.training for m in model.modules())  # measured in eval mode, given back
    nan_scores = mlp("pbit").eval()
    with torch.no_grad():
        nan_scores[-1].bias.fill_(math.nan)
    for measure in (lambda: accuracy_vs_samples(nan_scores, x, y, [1], 1),
                    lambda: accuracy_vs_samples(nan_scores, x, y, [2], 1, aggregate="layer")):
        with pytest.raises(UsageError, match="class scores are NaN for 20 of 20 inputs"):
            measure()
    with pytest.raises(UsageError, match="unknown aggregate 'chip'; expected one of network, layer"):
        accuracy_vs_samples(model, x, y, [1], 1, aggregate="chip")
    with pytest.raises(UsageError, match="stopping rule must be a pdnn.adaptive.StoppingRule, got None"):
        adaptive_accuracy(model, x, y, None)
    one_score = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))  # its argmax is always 0 (R145)
    with pytest.raises(UsageError, match=r"an accuracy needs class scores \[B, C >= 2\] to take the largest of, "
                                         r"got \[20, 1\]"):
        accuracy_vs_samples(one_score, x, torch.zeros(20, dtype=torch.long), [1], 1)


def test_an_accuracy_names_a_model_or_samples_of_the_wrong_kind():
    """``None`` for the model failed on ``.eval``, one T for the list in a ``for`` (R144 minors)."""
    from pdnn.adaptive import StoppingRule
    from pdnn.evaluate import adaptive_accuracy

    x, y = torch.randn(4, *SHAPE), torch.randint(0, 3, (4,))
    with pytest.raises(UsageError, match="accuracy_vs_samples evaluates an nn.Module, got NoneType"):
        accuracy_vs_samples(None, x, y)
    with pytest.raises(UsageError, match="adaptive_accuracy evaluates an nn.Module, got NoneType"):
        adaptive_accuracy(None, x, y, StoppingRule(4))
    for samples in (4, "12"):
        with pytest.raises(UsageError, match=f"samples must be a sequence of T values such as \\[1, 10\\], "
                                             f"got {samples!r}"):
            accuracy_vs_samples(mlp("pbit"), x, y, samples)


def test_recalibrating_batch_norms_checks_its_batch_size():
    torch.manual_seed(0)  # (the weights decide which inputs' two samples agree, below)
    model = to_sampled(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.BatchNorm1d(4)).eval(), "pbit")
    for bad in (0, -7, 2.5, "8", None):
        with pytest.raises(UsageError, match="batch_size must be an integer >= 1"):
            recalibrate_batchnorm(model, torch.randn(6, 3), batch_size=bad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UsageError, match=r"needs two values per channel at least, and 3 sees one \(1 example x 1 "):
        recalibrate_batchnorm(model, torch.randn(1, 3), samples=1)  # (it set the variances to 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # two values: not refused; where they agree, the variance set to 0 is said (it was set in silence, R192)
    said = set()
    for seed in range(40):
        model[3].running_var.fill_(1.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            variances = recalibrate_batchnorm(model, torch.randn(1, 3, generator=torch.Generator().manual_seed(seed)),
                                              samples=2)["3"]["running_var"]
        zeros = sum(v < 1e-12 for v in variances)
        assert [str(w.message) for w in caught] == ([] if not zeros else [
            f"recalibrate_batchnorm: {zeros} of the 4 channels of 3 had one value in all 2 they saw (examples x "
            f"samples x positions), so their running variance is now 0 (to rounding) and the batch norm divides them "
            f"by sqrt(eps = 1e-05); give more examples or samples"])
        said.add(bool(zeros))
        if zeros == 4:  # a channel at 0 before (a dead one) is not said again
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                recalibrate_batchnorm(model, torch.randn(1, 3, generator=torch.Generator().manual_seed(seed)),
                                      samples=2)
    assert said == {True, False}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3)
    x[5, 1] = math.nan  # one such example made every statistic NaN, in silence (R199)
    with pytest.raises(UsageError, match=r"recalibrate_batchnorm: 3 sees values that are not finite \(NaN or inf\)"):
        recalibrate_batchnorm(model, x, samples=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a channel of one value over many examples, whose sums leave a variance of 1e-17, not 0 (R196)
    constant = to_sampled(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.BatchNorm1d(4)).eval(), "pbit")
    with torch.no_grad():
        constant[2].weight[1].zero_()
        constant[2].bias[1] = -0.7
    with pytest.warns(UserWarning, match=r"1 of the 4 channels of 3 had one value in all 2600 they saw"):
        assert recalibrate_batchnorm(constant, torch.randn(1300, 3), samples=2, batch_size=256)["3"][
            "running_var"][1] < 1e-12  # (5.6e-17 here)
    # a convolution's batch norm sees every position of one example (the first version refused it, R191); a later
    # batch norm of one value per channel is refused with the earlier ones left as they were
    layers = [nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)]
    assert set(recalibrate_batchnorm(to_sampled(nn.Sequential(*layers).eval(), "pbit"), torch.randn(1, 1, 8, 8),
                                     samples=1)) == {"3"}
    deeper = to_sampled(nn.Sequential(*layers, nn.Tanh(), nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4)).eval(),
                        "pbit")
    before = {k: v.clone() for k, v in deeper.state_dict().items()}
    with pytest.raises(UsageError, match=r"needs two values per channel at least, and 7 sees one"):
        recalibrate_batchnorm(deeper, torch.randn(1, 1, 8, 8), samples=1)
    assert all(torch.equal(before[k], v) for k, v in deeper.state_dict().items())


class TrainOnly:
    """A dataset whose test split may not be read; records what reached the model."""

    def __init__(self, n=120):
        self.train_x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, *SHAPE).contiguous()
        self.train_y = torch.arange(n) % 3
        self.normalized: list[int] = []

    @property
    def test_x(self):
        raise AssertionError("calibration read the test split")

    test_y = test_x

    def normalize(self, x):
        self.normalized += x[:, 0, 0, 0].tolist()  # example i holds the value i
        return x.float() / 60 - 1

    def to(self, device):
        raise AssertionError("calibration moved the whole dataset (test split included)")


@pytest.mark.filterwarnings("ignore:calibration chose")  # the edge of this tiny sweep is not the point here
def test_cli_calibration_uses_only_held_out_training_examples(tmp_path, monkeypatch, capsys):
    source, new = tmp_path / "run", tmp_path / "calibrated"
    make_run(source)
    data = TrainOnly()
    calls = []

    def fake_load(name, roots=None, subset=None, cache_dir=None, progress=True):
        calls.append((name, subset))
        return data

    monkeypatch.setattr(pdnn.data, "load", fake_load)
    # trained on the whole split: no unseen examples, so the last trained-on ones, with a warning
    with pytest.warns(UserWarning, match="trained on all 120 training examples.*seen_in_training"):
        assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--calibrate", "--values", "0.5,1,2",
                              "--samples", "1,3", "--holdout", "30", "--recalibrate-bn", "--bn-samples", "2",
                              "--out", str(new), "--quiet"]) == 0
    assert calls == [("tiny", None)]
    assert data.normalized and set(data.normalized) <= set(range(90, 120))  # the last 30 training examples
    doc = read_json(new / "calibration.json")
    assert doc["data"] == {"dataset": "tiny", "split": "train", "subset": None, "start": 90, "stop": 120,
                           "examples": 30, "train_examples": 120, "trained_examples": 120,
                           "seen_in_training": True}
    assert doc["parameter"] == "beta" and [row["beta"] for row in doc["sweep"]] == [0.5, 1.0, 2.0]
    assert doc["chosen"] in (0.5, 1.0, 2.0) and doc["recalibrate_bn"] is True
    config = read_json(new / "config.json")
    assert config["convert"]["beta"] == doc["chosen"] and set(config["convert"]["bn_stats"]) == {"5"}
    loaded, _ = load_model(new)
    assert torch.equal(loaded[5].running_var, torch.tensor(config["convert"]["bn_stats"]["5"]["running_var"]))
    assert "<- chosen" in capsys.readouterr().out
    # the chosen value's statistics from the sweep are kept: those of a fresh re-estimation on the same data
    source_model, _ = load_model(source)
    fresh = recalibrate_batchnorm(to_sampled(source_model, "pbit", beta=doc["chosen"]), data.train_x[90:120], 2,
                                  prepare=data.normalize, seed=0)
    assert config["convert"]["bn_stats"] == fresh
    assert doc["spec"] == {"method": "pbit", "beta": doc["chosen"], "layers": "hidden", "bn_stats": ["5"]}


def test_the_summary_names_the_re_estimated_layers_in_the_models_order():
    """Sorted as text, a CNN's were listed as ['11', '15', '4', '8'] (R162)."""
    from pdnn.convert.rundir import _summary
    spec = {"method": "pbit", "bn_stats": {name: {} for name in ("4", "8", "11", "15")}}
    assert _summary(spec) == {"method": "pbit", "bn_stats": ["4", "8", "11", "15"]}


def test_cli_list_layers(tmp_path, capsys):
    make_run(tmp_path / "run")
    assert pdnn.cli.main(["convert", str(tmp_path / "run"), "--list-layers"]) == 0
    out = capsys.readouterr().out
    assert "nn.Tanh" in out and "pbit, gaussian, logistic" in out


def test_cli_rejects_bad_values_before_writing_anything(tmp_path, capsys):
    source, new = tmp_path / "run", tmp_path / "converted"
    make_run(source)
    for options, message in [
        (["--method", "gaussian", "--scale", "nan"], "scale must be a finite number >= 0, got nan"),
        (["--method", "pbit", "--beta", "3=inf"], "beta of 3 must be a finite number > 0, got inf"),
        (["--method", "pbit", "--calibrate", "--values", "1,nan"],
         "beta in the calibration sweep must be a finite number > 0, got nan"),
        (["--method", "pbit", "--per-layer"], "--per-layer refines the value --calibrate"),
        (["--method", "pbit", "--calibrate", "--values", ""], "--values must be numbers separated by commas, got ''"),
        (["--method", "pbit", "--values", ""], "--values is only used with --calibrate"),
    ]:
        assert pdnn.cli.main(["convert", str(source), *options, "--out", str(new), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and "JSON" not in err
        assert not new.exists()
    with pytest.raises(SystemExit) as exit_:
        pdnn.cli.main(["convert", str(source), "--method", "dropout", "--out", str(new)])
    assert exit_.value.code == 2 and "invalid choice: 'dropout'" in capsys.readouterr().err
    assert not new.exists()


def test_a_conversion_into_a_folder_another_command_is_writing_is_refused(tmp_path, capsys):
    source, out = tmp_path / "run", tmp_path / "converted"
    make_run(source)
    out.mkdir()
    (out / ".writing").write_text(f"{socket.gethostname()} {os.getpid()}")  # a command that runs: this one
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(out), "--quiet"]) == 2
    assert f"cannot convert into {out}: another command (process {os.getpid()} on " in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [".writing"]
    (out / ".writing").unlink()
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json"]  # an empty folder is no result


def test_force_never_replaces_a_trained_run(tmp_path, capsys):
    source, trained = tmp_path / "run", tmp_path / "trained"
    make_run(source)
    make_run(trained, seed=1)
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(trained), "--force"]) == 2
    err = capsys.readouterr().err
    assert "is a trained run, not a converted one" in err and "Nothing was changed" in err
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before
    # a trained run that lost its config.json still holds training state: never replaced
    lost = tmp_path / "lost"
    make_run(lost, seed=2)
    save_checkpoint(lost / "checkpoint.pt", {"model": load_model(lost)[0].state_dict(), "optimizer": {}, "epoch": 1})
    (lost / "config.json").unlink()
    kept = (lost / "checkpoint.pt").read_bytes()
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(lost), "--force"]) == 2
    assert "holds a trained run's checkpoint or history" in capsys.readouterr().err
    assert (lost / "checkpoint.pt").read_bytes() == kept
    # a folder of measurements without config.json is no conversion: nothing of it is deleted
    study = tmp_path / "study"
    (study / "sub").mkdir(parents=True)
    for name in ("energy.json", "eval-network.json", "README.md", "sub/f"):
        (study / name).write_text("{}")
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(study), "--force"]) == 2
    assert "holds energy.json, eval-network.json but no config.json" in capsys.readouterr().err
    assert sorted(p.name for p in study.rglob("*")) == ["README.md", "energy.json", "eval-network.json", "f", "sub"]
    # nor is a folder of other things without config.json (other runs, notes)
    folder = tmp_path / "folder"
    make_run(folder / "det")
    (folder / "notes.txt").write_text("mine")
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(folder), "--force"]) == 2
    assert "holds det, notes.txt and no config.json: not a conversion" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["det", "notes.txt"]
    # an interrupted conversion (no config.json) is replaced
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "checkpoint.pt").write_bytes(b"half a checkpoint")
    assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(interrupted), "--force",
                          "--quiet"]) == 0
    assert load_model(interrupted)[1]["convert"]["method"] == "pbit"


def test_a_config_that_is_no_object_is_named_and_kept(tmp_path, capsys):
    source, out = tmp_path / "run", tmp_path / "out"
    make_run(source)
    out.mkdir()
    for saved in ("5", "null", '"not a convert"'):
        (out / "config.json").write_text(saved)
        for force in ([], ["--force"]):
            assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--out", str(out), *force]) == 2
            err = capsys.readouterr().err
            assert "config.json is not a run's configuration (a JSON object)" in err and "Traceback" not in err
            assert (out / "config.json").read_text() == saved


def test_a_source_whose_checkpoint_changes_while_converted_is_refused(tmp_path, monkeypatch):
    """A run still training replaces its checkpoint every epoch: the weights stored must be the
    ones converted (and calibrated), so a checkpoint that changed meanwhile is refused."""
    import pdnn.convert.rundir as rundir

    source, out = tmp_path / "run", tmp_path / "out"
    make_run(source)
    later = load_checkpoint(source / "checkpoint.pt")
    later["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in later["model"].items()}
    convert, load = rundir._convert, rundir.load_model

    def epoch_ends(then):
        def call(*args, **kwargs):
            result = then(*args, **kwargs)
            save_checkpoint(source / "checkpoint.pt", later)
            return result
        return call

    for step, wrapped in (("_convert", epoch_ends(convert)), ("load_model", epoch_ends(load))):
        make_run(source)
        with monkeypatch.context() as patch:
            patch.setattr(rundir, step, wrapped)
            with pytest.raises(RunError, match="checkpoint.pt changed while it was converted: the run is being "
                                               "trained"):
                rundir.convert_run(source, out, "pbit", beta=1.0)
        assert not out.exists()
    rundir.convert_run(source, out, "pbit", beta=1.0)  # (unchanged since: converted)
    assert state_sha256(load_checkpoint(out / "checkpoint.pt")["model"]) == state_sha256(later["model"])


def test_restore_checkpoint_from_the_source_run(tmp_path, monkeypatch, capsys):
    source, new = tmp_path / "runs" / "run", tmp_path / "results" / "converted"
    model = make_run(source)
    monkeypatch.chdir(tmp_path)
    assert pdnn.cli.main(["convert", "runs/run", "--method", "pbit", "--out", "results/converted", "--quiet"]) == 0
    assert read_json(new / "config.json")["source_run"] == "../../runs/run"
    (new / "checkpoint.pt").unlink()
    with pytest.raises(RunError, match=r"a converted run's checkpoint is a copy of its source's weights: "
                                       r"`pdnn convert results/converted --restore` recreates it"):
        load_model("results/converted")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the source is found relative to the converted run
    assert restore_checkpoint(new) == new / "checkpoint.pt"
    loaded, _ = load_model(new)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert restore_checkpoint(new) == new / "checkpoint.pt"  # one that exists is left alone

    (new / "checkpoint.pt").unlink()
    assert pdnn.cli.main(["convert", str(new), "--restore"]) == 0
    assert "restored" in capsys.readouterr().out and (new / "checkpoint.pt").is_file()

    (new / "checkpoint.pt").unlink()
    make_run(source, seed=1)  # retrained: other weights, other bytes
    with pytest.raises(RunError, match="has sha256 .* was converted from one with"):
        restore_checkpoint(new)
    (source / "checkpoint.pt").unlink()
    with pytest.raises(RunError, match="does not exist; train it with `pdnn train --dataset tiny --task classify "
                                       "--model mlp --neuron tanh --weight-bits 32 --width 16 --train-samples 1 "
                                       "--batch-size 64 --lr 0.001 --schedule constant --weight-decay 0.0 --loss-rule "
                                       "mean-output --seed 0 --label tiny-tanh --out "):  # the source's label
        restore_checkpoint(new)
    assert not (new / "checkpoint.pt").exists()
    with pytest.raises(RunError, match="not a converted run"):
        restore_checkpoint(source)


def test_restore_checkpoint_from_a_retrained_source(tmp_path, monkeypatch):
    """A retrained source's file differs (its epochs' timings), its weights do not: the command the
    refusal prints trains them again, and the restore accepts them."""
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "demo", "--subset", "64", "--model", "mlp", "--width", "8", "--neuron", "tanh",
            "--schedule", "cosine", "--no-augment", "--epochs", "1", "--label", "a b"]
    assert pdnn.cli.main(["train", *argv, "--quiet", "--out", "src"]) == 0
    assert pdnn.cli.main(["convert", "src", "--method", "pbit", "--out", "converted", "--quiet"]) == 0
    trained = load_checkpoint(tmp_path / "src" / "checkpoint.pt")["model"]
    for name in ("src/checkpoint.pt", "converted/checkpoint.pt"):
        (tmp_path / name).unlink()
    with pytest.raises(RunError, match="does not exist; train it with `([^`]*)`") as refused:
        restore_checkpoint("converted")
    command = shlex.split(re.search("`([^`]*)`", str(refused.value)).group(1))
    assert command[:2] == ["pdnn", "train"] and "--schedule" in command and "--no-augment" in command
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one option the command does not need
        warnings.filterwarnings("ignore", ".* holds a run's history")  # (but that it is trained again, as meant)
        assert pdnn.cli.main([*command[1:], "--quiet"]) == 0
    restore_checkpoint("converted")
    restored = load_checkpoint(tmp_path / "converted" / "checkpoint.pt")["model"]
    assert restored.keys() == trained.keys() and all(torch.equal(restored[k], trained[k]) for k in trained)

    (tmp_path / "converted" / "checkpoint.pt").unlink()
    config = read_json(tmp_path / "converted" / "config.json")
    config["source_checkpoint_sha256"] = "0" * 64  # as if the source file had been another
    write_json(tmp_path / "converted" / "config.json", config)
    restore_checkpoint("converted")  # the weights are what counts
    (tmp_path / "converted" / "checkpoint.pt").unlink()
    del config["source_weights_sha256"]  # converted before the weights' sha256 was recorded
    write_json(tmp_path / "converted" / "config.json", config)
    with pytest.raises(RunError, match="recorded no sha256 of the weights alone .* or with --force"):
        restore_checkpoint("converted")
    (tmp_path / "src" / "checkpoint.pt").unlink()
    with pytest.raises(RunError, match="converted before the sha256 of its weights was recorded, .* train the source "
                                       "with `pdnn train .*--label 'a b' .*` and convert it again with --force"):
        restore_checkpoint("converted")
    assert not (tmp_path / "converted" / "checkpoint.pt").exists()


def test_restore_checkpoint_of_a_run_converted_before_paths_were_relative(tmp_path, monkeypatch):
    source, new = tmp_path / "run", tmp_path / "converted"
    model = make_run(source)
    monkeypatch.chdir(tmp_path)
    assert pdnn.cli.main(["convert", "run", "--method", "gaussian", "--out", "converted", "--quiet"]) == 0
    config = read_json(new / "config.json")
    config["source_run"] = "run"  # as typed, relative to the working directory; no checksum
    del config["source_checkpoint_sha256"]
    write_json(new / "config.json", config)
    (new / "checkpoint.pt").unlink()
    restore_checkpoint(new)
    assert torch.equal(load_model(new)[0].state_dict()["1.weight"], model.state_dict()["1.weight"])


@pytest.mark.parametrize("options,trained,expected", [
    (["--holdout", "30"], 80, (80, 110)),  # unseen examples right after the run's subset
    (["--holdout", "0.25"], 80, (80, 100)),  # a fraction of the 80 trained-on examples
    (["--holdout", "100"], 80, (80, 120)),  # as many as exist
    (["--holdout", "30", "--subset", "100"], 80, (80, 100)),  # --subset: only the first 100 are read
])
def test_cli_calibration_holds_out_examples_the_run_never_saw(tmp_path, monkeypatch, options, trained, expected):
    source, new = tmp_path / "run", tmp_path / "calibrated"
    make_run(source, subset=trained)
    data = TrainOnly()
    monkeypatch.setattr(pdnn.data, "load", lambda name, roots=None, subset=None, cache_dir=None, progress=True: data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: none of these examples was seen in training
        assert pdnn.cli.main(["convert", str(source), "--method", "gaussian", "--calibrate", "--values", "0.1,0.5",
                              "--samples", "1,2", *options, "--recalibrate-bn", "--out", str(new), "--quiet"]) == 0
    start, stop = expected
    assert set(data.normalized) == set(range(start, stop))
    split = read_json(new / "calibration.json")["data"]
    assert (split["start"], split["stop"], split["examples"]) == (start, stop, stop - start)
    assert split["trained_examples"] == trained and split["seen_in_training"] is False


def test_cli_calibration_falls_back_to_seen_examples_with_a_warning(tmp_path, monkeypatch):
    source, new = tmp_path / "run", tmp_path / "calibrated"
    make_run(source, subset=80)
    data = TrainOnly()
    monkeypatch.setattr(pdnn.data, "load", lambda name, roots=None, subset=None, cache_dir=None, progress=True: data)
    with pytest.warns(UserWarning, match=r"^the 60 training examples of tiny read \(subset 60\) are all among the "
                                         r"80 the run was trained on, so calibration uses the last 20 of them"):  # R162
        assert pdnn.cli.main(["convert", str(source), "--method", "gaussian", "--calibrate", "--values", "0.1,0.5",
                              "--samples", "1", "--holdout", "20", "--subset", "60", "--out", str(new), "--quiet"]) == 0
    assert set(data.normalized) == set(range(40, 60))
    split = read_json(new / "calibration.json")["data"]
    assert (split["start"], split["stop"], split["seen_in_training"]) == (40, 60, True)
    with pytest.warns(UserWarning, match=r"^the 80 training examples of tiny read \(subset 80\) are all among the "
                                         r"80 the run was trained on"):  # not 'all 80 of tiny', which holds 120 (R166)
        assert pdnn.cli.main(["convert", str(source), "--method", "gaussian", "--calibrate", "--values", "0.1,0.5",
                              "--samples", "1", "--holdout", "20", "--subset", "80", "--out", str(new), "--force",
                              "--quiet"]) == 0


def test_cli_batch_norm_statistics_alone_record_their_examples_in_the_config(tmp_path, monkeypatch):
    source, new = tmp_path / "run", tmp_path / "recalibrated"
    make_run(source, subset=80)
    monkeypatch.setattr(pdnn.data, "load", lambda name, roots=None, subset=None, cache_dir=None, progress=True:
                        TrainOnly())
    with pytest.warns(UserWarning, match=r"BatchNorm re-estimation uses the last 20 of them, which the model has "
                                         r"seen: its statistics are not held out \(config.json's bn_stats_data"):
        assert pdnn.cli.main(["convert", str(source), "--method", "gaussian", "--recalibrate-bn", "--holdout", "20",
                              "--subset", "60", "--out", str(new), "--quiet"]) == 0
    split = read_json(new / "config.json")["bn_stats_data"]
    assert (split["start"], split["stop"], split["seen_in_training"]) == (40, 60, True)
    assert not (new / "calibration.json").exists() and load_model(new)[1]["convert"]["method"] == "gaussian"


def test_cli_per_layer_calibration(tmp_path, monkeypatch, capsys):
    source, new = tmp_path / "run", tmp_path / "calibrated"
    make_run(source, subset=60)
    monkeypatch.setattr(pdnn.data, "load", lambda name, roots=None, subset=None, cache_dir=None, progress=True:
                        TrainOnly())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a choice may sit at the edge of this short sweep
        assert pdnn.cli.main(["convert", str(source), "--method", "pbit", "--calibrate", "--per-layer", "--values",
                              "0.5,1,2", "--samples", "1,2", "--holdout", "60", "--recalibrate-bn",
                              "--out", str(new), "--quiet"]) == 0
    config, doc = read_json(new / "config.json"), read_json(new / "calibration.json")
    assert config["convert"]["beta"] == doc["per_layer"]["chosen"] and set(config["convert"]["beta"]) == {"3", "6"}
    assert set(config["convert"]["bn_stats"]) == {"5"}
    assert isinstance(load_model(new)[0][3], PBit)
    assert "per layer" in capsys.readouterr().out


def test_hooks_on_a_replaced_activation_are_named_in_a_warning():
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    net[1].register_forward_hook(lambda module, inputs, output: None)
    with pytest.warns(UserWarning, match=r"hooks on 1 \(Tanh\) stay behind"):
        converted = to_sampled(net, "pbit")
    assert not converted[1]._forward_hooks and net[1]._forward_hooks  # the original keeps its hook
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapped = to_sampled(net, "gaussian")  # the activation itself stays, hooks and all
    assert wrapped[1][1]._forward_hooks


def test_naming_no_layer_describes_the_activations_as_they_are():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    with pytest.raises(ConversionError, match=r"1 \(nn.Tanh, hidden\), 3 \(nn.Tanh, hidden\); pass layers='hidden'"):
        to_sampled(model, "pbit", layers=[])
    with pytest.raises(ValueError, match="layers lists '3' more than once"):  # (once recorded once; now named)
        conversion_spec("pbit", layers=["3", "1", "3"])


class _Encoder(nn.Module):
    def __init__(self, activation):
        super().__init__()
        self.emb = nn.Linear(4, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.enc(self.emb(x)).mean(1))


@pytest.mark.parametrize("activation, op", [(nn.Tanh(), "nn.Tanh"), (torch.tanh, "torch.tanh"), (F.tanh, "F.tanh")])
def test_an_activation_inside_a_torch_layer_is_found_and_converted(activation, op):
    model = _Encoder(activation).eval()
    assert [(a["name"], a["op"], a["hidden"]) for a in find_activations(model)] == [("enc.activation", op, True)]
    for layers in ("hidden", ["enc.activation"]):
        assert isinstance(to_sampled(model, "pbit", layers=layers).enc.activation, PBit)
    assert model.enc.activation is activation  # the copy is converted, not the model
    x = torch.randn(2, 5, 4)
    unchanged = to_sampled(model, "gaussian", scale=0.0)  # noise of scale 0 before the same function
    assert torch.equal(unchanged(x), model(x))


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.GELU(), F.relu, F.gelu, "relu", "gelu"])
def test_noise_before_a_transformer_layers_relu_or_gelu_is_never_skipped(activation):
    """Such a layer, in inference, runs a fused kernel applying ReLU/GELU itself unless told its
    activation is another: without that, noise put before the activation was silently skipped."""
    model = _Encoder(activation).eval()
    noisy = to_sampled(model, "gaussian", scale=3.0)
    x = torch.randn(4, 5, 4)
    with torch.no_grad():
        first, second = noisy(x), noisy(x)
        assert not torch.equal(first, second)
        assert torch.equal(to_sampled(model, "gaussian", scale=0.0)(x), model(x))


@pytest.mark.parametrize("activation", ["relu", nn.GELU()])
@pytest.mark.parametrize("layers", ["hidden", ["enc.layers.1.activation"]])
def test_noise_in_a_transformer_stack_with_a_padding_mask_is_drawn(activation, layers):
    """Such a stack, in inference, passes its layers nested tensors (which noise cannot be drawn
    for) while its activations are ReLU or GELU. The converted stack takes torch's plain path,
    which computes the padded positions too (the nested path leaves zeros there)."""
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
            self.out = nn.Linear(8, 3)

        def forward(self, x, mask):
            return self.out(self.enc(x, src_key_padding_mask=mask).mean(1))

    model = Stack().eval()
    x, mask = torch.randn(4, 6, 8), torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 4:] = True
    plain = model(x, mask)  # with gradients: torch's plain path
    noisy, unchanged = to_sampled(model, "gaussian", scale=2.0, layers=layers), to_sampled(model, "gaussian", scale=0.0)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's note on nested tensors
        assert not torch.equal(noisy(x, mask), noisy(x, mask))
        assert torch.equal(unchanged(x, mask), plain)


@pytest.mark.parametrize("activation, op", [(nn.Tanh(), "nn.Tanh"), (nn.GELU(), "nn.GELU"), (torch.tanh, "torch.tanh")])
def test_a_decoder_layer_keeps_its_activation_in_the_copy(activation, op):
    """torch's TransformerDecoderLayer, when copied, puts F.relu in front of an activation module:
    the copy converted must still compute the model's own activation."""
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, activation=activation, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x, memory):
            return self.head(self.dec(x, memory).mean(1))

    model = Decoder().eval()
    x, memory = torch.randn(3, 5, 8), torch.randn(3, 4, 8)
    assert [(a["name"], a["op"]) for a in find_activations(model)] == [("dec.activation", op)]
    assert torch.equal(to_sampled(model, "gaussian", scale=0.0)(x, memory), model(x, memory))
    if op != "nn.GELU":
        assert isinstance(to_sampled(model, "pbit").dec.activation, PBit)


@pytest.mark.parametrize("activation, op", [(torch.tanh, "torch.tanh"), ("gelu", "F.gelu")])
def test_functions_torch_layers_hold_are_found_without_a_trace(activation, op):
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            if x.dim() == 2:  # Python control flow on a shape: torch.fx cannot trace this
                x = x.unsqueeze(0)
            return self.head(self.enc(x).mean(1))

    model, x = Encoder().eval(), torch.randn(2, 5, 8)
    assert [(a["name"], a["op"], a["hidden"]) for a in find_activations(model)] == [("enc.activation", op, True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # could not be traced: only what needs no graph is converted
        noisy, unchanged = to_sampled(model, "gaussian", scale=1.0), to_sampled(model, "gaussian", scale=0.0)
    assert not torch.equal(noisy(x), noisy(x)) and torch.equal(unchanged(x), model(x))
    stack = nn.Transformer(8, 2, 1, 1, 16, batch_first=True)
    assert [a["name"] for a in find_activations(stack)] == ["encoder.layers.0.activation",
                                                            "decoder.layers.0.activation"]


def test_a_tensor_a_forward_kept_does_not_stop_the_copy():
    class Inspectable(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act, self.head = nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)
            self.last_hidden = None

        def forward(self, x):
            self.last_hidden = self.act(self.fc(x))  # not a graph leaf, which deepcopy refuses
            return self.head(self.last_hidden)

    model = Inspectable()
    model(torch.randn(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it updates an attribute as it runs: modules only
        converted = to_sampled(model, "pbit")
    assert isinstance(converted.act, PBit) and converted.last_hidden.grad_fn is None
    assert torch.equal(converted.last_hidden, model.last_hidden.detach()) and model.last_hidden.grad_fn is not None

def test_a_batch_size_below_one_is_named_not_measured_as_zero():
    """No batch ran: a model right on every input measured 0 % (and calibration chose a scale on it)."""
    from pdnn.convert import calibrate
    from pdnn.evaluate import accuracy_vs_samples

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(40, 4)
    y = net(x).argmax(1)
    assert accuracy_vs_samples(net, x, y, samples=[1], batch_size=16)[0]["accuracy_mean"] == 1.0
    for bad in (0, -5):
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {bad}"):
            accuracy_vs_samples(net, x, y, samples=[1], batch_size=bad)
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {bad}"):
            calibrate(net, x, y, method="gaussian", values=[0.01, 0.1], samples=(1, 2), batch_size=bad)
    with pytest.raises(ValueError, match=r"samples must name at least one T >= 1 \(or give target\), got none"):
        calibrate(net, x, y, method="gaussian", values=[0.01, 0.1], samples=[])
    for bad, named in ((2, "samples must be a list of T values >= 1, got 2"), (None, "samples must be a list"),
                       ({"target": 0}, r"target \(the T the scale is chosen at\) must be an integer >= 1, got 0")):
        options = bad if isinstance(bad, dict) else {"samples": bad}
        with pytest.raises(ValueError, match=named):  # (TypeErrors; a target of 0 was named as samples)
            calibrate(net, x, y, method="gaussian", values=[0.01, 0.1], **options)
    measured = calibrate(net, x, y, method="gaussian", values=[0.01, 0.1], samples=[], target=2)  # (T = 2 alone)
    assert measured["chosen"] in (0.01, 0.1)


def test_a_model_calibrate_cannot_convert_is_named_before_any_measure(monkeypatch):
    """It measured the deterministic accuracy on every held-out example first, then refused."""
    import pdnn.convert.calibration as calibration

    monkeypatch.setattr(calibration, "accuracy_vs_samples", lambda *a, **k: pytest.fail("measured first"))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for net, method in ((nn.Sequential(nn.Linear(4, 3)), "gaussian"), (nn.Sequential(nn.Linear(4, 5), nn.ReLU(),
                                                                                    nn.Linear(5, 3)), "pbit")):
        with pytest.raises(ConversionError):
            calibrate(net, x, y, method=method, values=[0.5, 1.0], samples=[1, 2])


def test_what_is_not_a_module_is_named():
    from pdnn.energy import analyze

    for call in (lambda: to_sampled(None), lambda: find_activations(torch.tanh)):
        with pytest.raises(ValueError, match="expected an nn.Module to convert, got"):  # (an AttributeError)
            call()
    with pytest.raises(ValueError, match="analyze expects an nn.Module, got NoneType"):
        analyze(None, (4,))


class _OptionalMask(nn.Module):
    """Functional activations (so the converted copy is a graph) and ``if mask is not None``."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x, mask=None, unused=None):
        h = torch.tanh(self.fc(x))
        if mask is not None:
            h = h * mask
        return self.out(h)


class _OptionalTemperature(_OptionalMask):
    def forward(self, x, temperature=None):
        out = self.out(torch.tanh(self.fc(x)))
        return out if temperature is None else out / 2


@pytest.mark.parametrize("model, name", [(_OptionalMask(), "mask"), (_OptionalTemperature(), "temperature")])
def test_a_graph_that_holds_only_the_branch_of_a_given_argument_refuses_none(model, name):
    """fx decides ``mask is None`` once, as if given: the copy computed that branch for a call
    without it (half the output, or a TypeError deep in the graph). It now says it needs it."""
    x, value = torch.randn(4, 3), torch.full((8,), 2.0)
    with pytest.warns(UserWarning, match=f"the converted {type(model).__name__} refuses a call with None for {name}:"):
        converted = to_sampled(model, "pbit", beta=1e6)  # bits are sign(tanh): the same in every call
    with pytest.raises(UsageError, match=f"got None for {name}: its forward does other things then"):
        converted(x)
    bits = torch.sign(model.fc(x))
    given = model.out(bits * value) if name == "mask" else model.out(bits) / 2
    assert torch.allclose(converted(x, **{name: value}), given, atol=1e-5)
    with pytest.raises(UsageError, match=f"pass {name},"):  # by keyword too, and in a copy
        pickle.loads(pickle.dumps(converted))(x, **{name: None})


def test_arguments_that_branch_only_together_are_needed_together():
    """``if a is not None or b is not None`` differs only when both are None; an argument passed on
    beside them (returned here) is needed by no call."""
    class Either(_OptionalMask):
        def forward(self, x, a=None, b=None, c=None):
            h = torch.tanh(self.fc(x))
            return self.out(h * 2 if a is not None or b is not None else h), c

    model, x = Either(), torch.randn(4, 3)
    with pytest.warns(UserWarning, match="refuses a call with None for a and b: its forward does other things then"):
        converted = to_sampled(model, "pbit", beta=1e6)
    bits = torch.sign(model.fc(x))
    for call in ({}, {"c": 1}):
        with pytest.raises(UsageError, match="got None for a and b: .* pass a and b, or"):
            converted(x, **call)
    for call in ({"a": 1}, {"b": 1, "c": 1}, {"a": 1, "b": 1}):
        assert torch.allclose(converted(x, **call)[0], model.out(bits * 2), atol=1e-5)


class _Unused(_OptionalMask):
    def forward(self, x, unused=None):
        return self.out(torch.tanh(self.fc(x)))


class _PassedOn(nn.Module):
    """A padding mask handed to attention as it is, None or not; and returned."""

    def __init__(self):
        super().__init__()
        self.fc, self.attend = nn.Linear(3, 8), nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x, key_padding_mask=None):
        h = torch.tanh(self.fc(x))
        return self.attend(h, h, h, key_padding_mask=key_padding_mask)[0], key_padding_mask


@pytest.mark.parametrize("model", [_Unused(), _PassedOn()])
def test_an_optional_argument_the_forward_does_not_branch_on_keeps_the_default_call(model):
    x = torch.randn(4, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = to_sampled(model, "pbit", beta=1e6, layers="all").eval()
    model.eval()
    with torch.no_grad():
        bits, got = torch.sign(model.fc(x)), converted(x)
        if isinstance(model, _Unused):
            assert torch.allclose(got, model.out(bits), atol=1e-5)
        else:
            assert torch.allclose(got[0], model.attend(bits, bits, bits)[0], atol=1e-5) and got[1] is None


def test_more_arguments_defaulting_to_none_than_are_traced_in_combination():
    """Beyond 8 such arguments each is traced alone and all together: nine only passed on take
    every call; one branched on among them is needed."""
    class Nine(_OptionalMask):
        def forward(self, x, a0=None, a1=None, a2=None, a3=None, a4=None, a5=None, a6=None, a7=None, a8=None):
            h = torch.tanh(self.fc(x))
            return self.out(h if a3 is None else h * 2), a8

    model, x = Nine(), torch.randn(4, 3)
    with pytest.warns(UserWarning, match="refuses a call with None for any of a3 .of more than 8 arguments"):
        converted = to_sampled(model, "pbit", beta=1e6)
    assert converted(x, a3=1, a8=5)[1] == 5
    with pytest.raises(UsageError, match="got None for a3: "):
        converted(x, a8=5)


def test_a_run_converted_from_its_own_folder_is_labelled_by_that_folder(tmp_path, monkeypatch):
    """Given as `.`, the source's name was empty: the label read " (pbit)"."""
    source = tmp_path / "tanh-run"
    make_run(source)
    config = read_json(source / "config.json")
    write_json(source / "config.json", {key: value for key, value in config.items() if key != "label"})
    monkeypatch.chdir(source)
    assert pdnn.cli.main(["convert", ".", "--method", "pbit", "--out", str(tmp_path / "converted"), "--quiet"]) == 0
    assert read_json(tmp_path / "converted" / "config.json")["label"] == "tanh-run (pbit)"
    assert run_label(Path("."), {}) == "tanh-run"
    assert pdnn.cli.main(["energy", ".", "--samples", "1", "--json", str(tmp_path / "e.json"),
                          "--png", str(tmp_path / "e.png")]) == 0  # (it named the network by its model)
    assert read_json(tmp_path / "e.json")["configs"][0]["label"] == "tanh-run T=1"
    # a link is named as given, not by its target (a timestamped folder behind `baseline`)
    (tmp_path / "baseline").symlink_to(source)
    assert run_label(tmp_path / "baseline", {}) == "baseline" and run_label(Path(".."), {}) == tmp_path.name


def test_one_module_called_at_a_hidden_place_and_at_the_output_is_named_as_both():
    class Shared(nn.Module):  # one nn.Tanh squashes the hidden layer and the output
        def __init__(self):
            super().__init__()
            self.a, self.out, self.t = nn.Linear(8, 8), nn.Linear(8, 3), nn.Tanh()

        def forward(self, x):
            return self.t(self.out(self.t(self.a(x))))

    assert [site["hidden"] for site in find_activations(Shared())] == [False]  # converting it converts the output
    with pytest.raises(ConversionError, match=r"t \(nn.Tanh, output and hidden: one module at both\); .*"
                                              r"give them a module of their own"):
        to_sampled(Shared(), "pbit")


class _HeldAndOutput(nn.Module):
    """One nn.Tanh held by a torch layer (a hidden place) and called at the network's output."""

    def __init__(self):
        super().__init__()
        self.act = nn.Tanh()
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=self.act, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.act(self.head(self.enc(x)))


def test_one_module_a_torch_layer_holds_and_the_output_calls_is_one_site_at_both():
    """It was two sites: layers='hidden' converted the output too (its output became bits), and
    per-layer values for its two names were merged silently (R122 D1)."""
    model = _HeldAndOutput().eval()
    assert [(a["name"], a["hidden"]) for a in find_activations(model)] == [("enc.activation", False)]
    with pytest.raises(ConversionError, match=r"enc.activation \(nn.Tanh, output and hidden: one module at both\)"):
        to_sampled(model, "pbit")
    with pytest.raises(UsageError, match=r"per-layer beta for 'act', which are not among the converted"):
        to_sampled(model, "pbit", beta={"enc.activation": 0.5, "act": 3.0}, layers="all")
    converted = to_sampled(model, "pbit", layers="all")  # (both calls, as documented)
    assert type(converted.act).__name__ == "PBit" and converted.enc.activation is converted.act


def test_an_activation_subclass_with_its_own_forward_is_converted_as_what_it_computes():
    """A subclass of nn.Tanh overriding forward (LeCun's 1.7159 tanh(2x/3)) was converted as a
    plain tanh: its p-bits' mean missed the model by |z| = 34 (R122 D4). The trace now goes into it."""
    class LeCunTanh(nn.Tanh):
        def forward(self, x):
            return 1.7159 * torch.tanh(2 * x / 3)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), LeCunTanh(), nn.Linear(8, 3)).eval()
    assert [(a["name"], a["op"]) for a in find_activations(model)] == [("tanh", "torch.tanh")]
    x, n = torch.randn(3, 4), 20_000
    with torch.no_grad():
        samples = to_sampled(model, "pbit")(x.repeat(n, 1)).view(n, 3, 3)
        z = (samples.mean(0) - model(x)) / (samples.std(0) / math.sqrt(n))
    assert z.abs().max() < 5  # (5 standard errors: the plain tanh's mean is 34 away)


def test_a_torchscript_model_is_refused_by_name():
    """Its copy raised KeyError: 0 from inside torch, and find_activations returned [] (R122 D2)."""
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval())
    for call in (lambda: to_sampled(scripted, "pbit"), lambda: find_activations(scripted)):
        with pytest.raises(UsageError, match=r"a TorchScript model \(RecursiveScriptModule\) cannot be converted"):
            call()


def test_a_lazy_layer_not_yet_sized_is_refused_by_name():
    """torch's "Attempted to use an uninitialized parameter" was raised from inside the search
    for weighted layers, naming no module (R211 D1); after one forward the model converts."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Sequential(nn.LazyLinear(3)))
    for call in (lambda: to_sampled(model, "pbit"), lambda: find_activations(model)):
        with pytest.raises(UsageError, match=r"lazy modules not yet sized \(2.0.weight, 2.0.bias\); call it once"):
            call()
    model(torch.randn(2, 4))
    assert [a["name"] for a in find_activations(model)] == ["1"]
    assert to_sampled(model, "pbit")(torch.randn(2, 4)).shape == (2, 3)


class _ModeBranches(nn.Module):
    """Functional dropout and an output that depends on the mode, as people write them."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 64), nn.Linear(64, 3)

    def forward(self, x):
        h = F.dropout(torch.tanh(self.l1(x)), 0.5, training=self.training)
        out = self.l2(h)
        return out if self.training else out.softmax(-1)


def test_a_graph_converted_in_one_mode_refuses_a_call_in_the_other():
    """The graph held the branches of the mode it was traced in: converted in training (right after
    a training loop), the copy put in eval mode went on dropping units and returned logits for
    probabilities, with nothing said (R122 D3)."""
    x = torch.randn(3, 4)
    for mode, other in ((True, "eval"), (False, "train")):
        converted = to_sampled(_ModeBranches().train(mode), "gaussian", scale=1e-9)
        converted(x)  # (the mode it was converted in)
        converted.train(not mode)
        with pytest.raises(UsageError, match=f"convert it in {other} mode"):
            converted(x)
    class ReadsNoMode(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.l2(torch.tanh(self.l1(x)))

    converted = to_sampled(ReadsNoMode(), "pbit")
    assert isinstance(converted, torch.fx.GraphModule) and not hasattr(converted, "mode_check_0")
    converted.eval()(x)  # (either mode: nothing in it depends on one)


def test_a_graph_copy_keeps_every_name_the_model_gives_a_module():
    """A module registered under two names (self.dec = self.enc) lost its second name in the graph
    copy, and the model's own state_dict no longer loaded into it (R122 D5)."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.enc, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)
            self.dec = self.enc

        def forward(self, x):
            return self.head(torch.tanh(self.dec(torch.tanh(self.enc(torch.tanh(self.l1(x)))))))

    model = Shared().eval()
    converted = to_sampled(model, "pbit")
    assert isinstance(converted, torch.fx.GraphModule) and converted.dec is converted.enc
    assert sorted(converted.state_dict()) == sorted(model.state_dict())
    converted.load_state_dict(model.state_dict())


def test_a_hardtanh_of_equal_bounds_is_refused_for_what_it_is():
    """Its bounds are constants, equal: it was refused as 'hardtanh bounds are not constants' (R122)."""
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(F.hardtanh(self.a(x), 0.5, 0.5))

    with pytest.raises(ConversionError, match=r"hardtanh bounds are not constants with min_val < max_val"):
        to_sampled(Flat(), "pbit")


def test_a_blank_label_given_through_the_api_is_refused_before_any_work(tmp_path):
    """The CLI refused ``--label ' '``; the Python API recorded it, showing nothing in legends, and
    the `pdnn train` command pdnn suggests for such a run was then refused (R153)."""
    from pdnn.convert.rundir import convert_run
    from pdnn.train import TrainConfig, train

    source = tmp_path / "run"
    make_run(source)
    for label in ("", "  ", 5):
        with pytest.raises(UsageError, match=re.escape(f"label must be a name to show in plots and tables, or "
                                                       f"None, got {label!r}")):
            convert_run(source, tmp_path / "converted", "gaussian", scale=0.5, label=label)
        assert not (tmp_path / "converted").exists()
        model = ModelConfig(name="mlp", neuron="tanh", input_shape=(1, 28, 28), num_classes=10, width=4)
        with pytest.raises(UsageError, match="label must be a name to show in plots and tables"):
            train(tmp_path / "trained", model, "demo", TrainConfig(epochs=1), subset=20, label=label, progress=False)
        assert not (tmp_path / "trained").exists()
    convert_run(source, tmp_path / "converted", "gaussian", scale=0.5, label="noisy")  # a name is kept
    assert read_json(tmp_path / "converted" / "config.json")["label"] == "noisy"


def test_a_forward_calling_quantized_activation_converts_as_the_quantize_module():
    """Its tanh is the site (a trace that kept the call whole had found none, R229), and converting
    it gives what converting the same network built with ``Quantize`` gives, under network and
    layer aggregation (where the rounding after the converted tanh had rounded the averaged bits,
    R230)."""
    from pdnn import functional as pdnn_functional

    class Called(nn.Module):
        def __init__(self, mode="bipolar"):
            super().__init__()
            self.fc1, self.fc2, self.mode = nn.Linear(6, 8), nn.Linear(8, 3), mode

        def forward(self, x):
            return self.fc2(pdnn_functional.quantized_activation(self.fc1(x), 2, mode=self.mode))

    class Module(nn.Module):
        def __init__(self, mode="bipolar"):
            super().__init__()
            self.fc1, self.q, self.fc2 = nn.Linear(6, 8), Quantize(2, mode=mode), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(self.q(self.fc1(x)))

    x = torch.randn(5, 6)
    for mode, aggregate in itertools.product(("bipolar", "unipolar"), ("network", "layer")):
        called, module = Called(mode), Module(mode)
        module.fc1.load_state_dict(called.fc1.state_dict())
        module.fc2.load_state_dict(called.fc2.state_dict())
        # (a unipolar call's sigmoid only steers the gradient: no site; it had drawn in vain, R230)
        assert [site["kind"] for site in find_activations(called)] == ["tanh"]
        assert [site["kind"] for site in find_activations(module)] == ["quantize"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = [to_sampled(net, "pbit") for net in (called, module)]
            outputs = [SampledModel(net, samples=50, seed=0, aggregate=aggregate)(x) for net in converted]
        if (mode, aggregate) == ("unipolar", "layer"):  # (the mean of ±1 bits, then + 1 and / 2: float rounding)
            torch.testing.assert_close(*outputs, rtol=0, atol=1e-6)
        else:
            assert torch.equal(*outputs), (mode, aggregate)
        # the gradient flows once, through the surrogate (with the rounding gone, the bits had
        # passed theirs too: twice the gradient, R234)
        for out in outputs:
            out.sum().backward()
        torch.testing.assert_close(converted[0].fc1.weight.grad, converted[1].fc1.weight.grad, rtol=1e-4, atol=1e-6)


def test_rounding_after_bits_off_its_grid_stays_and_surrogates_are_no_sites():
    """Only ±1 bits lie on every k-bit grid: the rounding of a sigmoid's p-bit ({0, 1}) or of a
    hardtanh's with bounds ±0.5 gave {1/3, 1} and {±1/3} before the conversion and after it (it
    had been dropped after every p-bit, R234). A value reaching a straight-through surrogate only
    through other operations or an activation module is no site either (R234)."""
    from pdnn import functional as pdnn_functional  # (a name imported inside a function fx does not patch)
    from pdnn.functional import quantize_levels

    class Net(nn.Module):
        def __init__(self, activation):
            super().__init__()
            self.fc1, self.fc2, self.activation = nn.Linear(6, 8), nn.Linear(8, 3), activation

        def forward(self, x):
            return self.fc2(self.activation(self.fc1(x)))

    seen = []
    for rounded, levels in ((lambda h: quantize_levels(torch.sigmoid(h), 2), {1 / 3, 1.0}),
                            (lambda h: quantize_levels(F.hardtanh(h, -0.5, 0.5), 2), {-1 / 3, 1 / 3}),
                            (lambda h: quantize_levels(F.hardtanh(h), 2), {-1.0, 1.0})):  # (±1: dropped)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = to_sampled(Net(rounded), "pbit")
        converted.fc2.register_forward_hook(lambda m, args, out: seen.append(args[0]))
        converted(torch.randn(200, 6))
        assert {round(v, 6) for v in seen.pop().unique().tolist()} == {round(v, 6) for v in levels}
    for surrogate in (lambda h: torch.tanh(h).view(h.shape), lambda h: torch.tanh(h) * 1.0, nn.Tanh(), nn.Sigmoid()):
        net = Net(lambda h: pdnn_functional.straight_through(torch.sign(h), surrogate(h)))
        net.surrogate = surrogate if isinstance(surrogate, nn.Module) else None
        assert find_activations(net) == [], surrogate


def test_a_converted_unipolar_quantized_activation_passes_the_mean_of_its_bits_under_layer_aggregation():
    """Each converted p-bit passes on the mean of its T bits, so at large T the next layer sees
    sigmoid(h), within a bound from the sample size: 1-bit rounding had turned that mean into a
    majority vote of 0s and 1s (R230)."""
    from pdnn import functional as pdnn_functional

    class Called(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(pdnn_functional.quantized_activation(self.fc1(x), 1, mode="unipolar"))

    torch.manual_seed(0)
    net, x, samples = Called(), torch.randn(5, 6), 20_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampled = SampledModel(to_sampled(net, "pbit"), samples=samples, seed=0, aggregate="layer")
    with torch.no_grad():
        got, mean = sampled(x), net.fc2(torch.sigmoid(net.fc1(x)))
    # each mean of T bits within 5 standard deviations (at most 0.5/sqrt(T)) of its probability
    bound = 5 * 0.5 / samples**0.5 * net.fc2.weight.abs().sum(1)
    assert ((got - mean).abs() <= bound).all(), ((got - mean).abs(), bound)
