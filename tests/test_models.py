"""Reference models from the registry."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from pdnn import SampledModel
from pdnn.models import ModelConfig, available, builder_defaults, create
from pdnn.nn import PBit, QuantConv2d, QuantLinear, Quantize

NEURONS = ["pbit", "pbit-unipolar", "tanh", "sigmoid", "sign", "quant:2"]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("neuron", NEURONS)
def test_models_build_and_run(name, shape, neuron):
    model = create(name, neuron=neuron, weight_bits=4, input_shape=shape, num_classes=7, width=8)
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    assert SampledModel(model.eval(), samples=3)(torch.randn(2, *shape)).shape == (2, 7)


def test_neuron_and_weight_bits_reach_the_layers():
    model = create("cnn", neuron="quant:3", weight_bits=2, input_shape=(3, 32, 32), width=8)
    assert all(m.bits == 3 for m in model.modules() if isinstance(m, Quantize))
    layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert layers and all(m.weight_bits == 2 for m in layers)


def test_pooling_after_pbits_averages():
    model = create("cnn", neuron="pbit", width=8)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert sum(isinstance(m, PBit) for m in model.modules()) == 5


def test_cnn_runs_channels_last_and_computes_what_nchw_does():
    torch.manual_seed(0)
    model = create("cnn", neuron="tanh", weight_bits=4, width=8).eval()
    convs = [m for m in model.modules() if isinstance(m, QuantConv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert model[:3](x).is_contiguous(memory_format=torch.channels_last)
        nchw = model(x)
        model.to(memory_format=torch.contiguous_format)
        assert torch.allclose(model(x), nchw, atol=1e-5)


def test_glorot_initialisation():
    model = create("mlp", neuron="tanh", width=64)
    lin = model[1]
    bound = math.sqrt(6 / (lin.in_features + lin.out_features))
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
    assert torch.all(lin.bias == 0)


def test_config_round_trip_rebuilds_the_same_architecture():
    cfg = ModelConfig(name="cnn", neuron="pbit-unipolar", weight_bits=4, input_shape=(3, 32, 32), width=8)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg and repr(again.build()) == repr(cfg.build())


def test_errors_name_the_value():
    assert {"mlp", "cnn"} <= set(available())
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        create("resnet9000")
    with pytest.raises(ValueError, match="unknown neuron 'relu'"):
        create("mlp", neuron="relu")
    with pytest.raises(ValueError, match="weight bits must be"):
        create("cnn", weight_bits=12)
    with pytest.raises(ValueError, match="input_shape"):
        create("cnn", input_shape=(32, 32))
    with pytest.raises(ValueError, match="too small"):
        create("cnn", input_shape=(3, 4, 4))


@pytest.mark.parametrize("name, built, given", [("cnn", (3, 32, 32), (4, 3, 28, 28)), ("mlp", (1, 28, 28), (8, 3, 32, 32)),
                                                 ("cnn", (3, 32, 32), (3, 32, 32))])
def test_an_input_of_another_shape_than_the_model_was_built_for_is_named(name, built, given):
    """torch's own error had named neither shape: ``mat1 and mat2 shapes cannot be multiplied
    (4x1152 and 2048x10)``, or ``expected 4D input (got 3D input)`` for an unbatched image."""
    model = create(name, width=8, input_shape=built).eval()
    assert model.input_shape == built and "input_shape" not in str(model.state_dict().keys())
    sampled = SampledModel(model, samples=3)
    expected = rf"built for inputs of shape \(B, {', '.join(map(str, built))}\), got \({', '.join(map(str, given))}\)"
    for call in (sampled, sampled.plan, lambda x: sampled.sample(x, samples=1), SampledModel(model, samples="auto")):
        with pytest.raises(ValueError, match=expected):
            call(torch.randn(*given))
    assert sampled(torch.randn(2, *built)).shape == (2, 10)


def test_only_a_failing_input_is_named_so_an_mlp_still_takes_flat_rows_and_other_models_keep_their_errors():
    assert SampledModel(create("mlp", width=8).eval(), samples=3)(torch.randn(2, 784)).shape == (2, 10)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):  # no shape recorded: torch's error stands
        SampledModel(nn.Sequential(nn.Linear(4, 2), PBit()), samples=3)(torch.randn(2, 5))


def test_a_failure_of_an_input_of_the_right_size_or_of_memory_is_the_models_own():
    """A row of the values the model was built for fails for its own reason, which had been
    reported as the input's shape; and memory running out, which callers catch to retry, had
    become a UsageError."""
    mlp = create("mlp", width=8).eval()
    with pytest.raises(RuntimeError, match="same dtype"):
        SampledModel(mlp, samples=3)(torch.randn(2, 784, dtype=torch.float64))

    def out_of_memory(module, args):
        raise torch.OutOfMemoryError("simulated")

    mlp[1].register_forward_pre_hook(out_of_memory)
    for x in (torch.randn(2, 784), torch.randn(2, 3, 32, 32)):
        with pytest.raises(torch.OutOfMemoryError, match="simulated"):
            SampledModel(mlp, samples=1)(x)


@pytest.mark.parametrize("name", ["mlp", "cnn", "vae"])
@pytest.mark.parametrize("size, value", [("width", 0), ("width", -3), ("width", 2.5), ("num_classes", 0),
                                         ("num_classes", -2)])
def test_a_size_that_builds_no_model_is_named(name, size, value):
    """0 had divided by zero, -3 and 2.5 reached torch's tensor constructors."""
    with pytest.raises(ValueError, match=f"{size} must be an integer >= 1, got {value}"):
        create(name, **{size: value}, **({"input_shape": (1, 28, 28)} if name == "vae" else {}))


def test_an_mlp_of_no_hidden_layer_is_refused_and_numpy_integers_are_integers():
    for depth in (0, -1, 1.5):  # 0 and -1 had built a "pbit" MLP without one p-bit
        with pytest.raises(ValueError, match=f"depth must be an integer >= 1, got {depth}"):
            create("mlp", depth=depth)
    mlp = create("mlp", width=np.int64(8), depth=np.int64(1), weight_bits=np.int64(4), num_classes=np.int64(3),
                 input_shape=(np.int64(1), np.int64(4), np.int64(4)))
    assert mlp(torch.randn(2, 1, 4, 4)).shape == (2, 3) and mlp[1].weight_bits == 4
    assert create("vae", latent=np.int64(4), input_shape=(1, 28, 28)).latent == 4
    with pytest.raises(ValueError, match="beta must be a finite number > 0, got nan"):
        ModelConfig(neuron="tanh", beta=math.nan)  # recorded in config.json, which holds no nan
    for flag in (True, np.True_, torch.tensor(True)):
        with pytest.raises(ValueError, match="beta must be a positive number, got "):
            ModelConfig(beta=flag)
    config = ModelConfig(name="mlp", weight_bits=np.int64(2), beta=np.float32(2), input_shape=(np.int64(1), 4, 4),
                         num_classes=np.int64(3), width=np.int64(8))
    assert json.loads(json.dumps(config.to_dict())) == {  # what config.json holds: numpy's numbers had crashed it
        "name": "mlp", "neuron": "pbit", "weight_bits": 2, "beta": 2.0, "input_shape": [1, 4, 4],
        "num_classes": 3, "width": 8, "extra": {}}
    assert create("mlp", width=None, depth=None, num_classes=None)[-1].out_features == 10  # the model's own
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        builder_defaults("nope")
