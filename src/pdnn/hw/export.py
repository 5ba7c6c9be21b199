"""A trained run's MLP as the fixed-point network of :mod:`pdnn.hw.fixed`.

Folding, for hidden layer ``k`` with weights ``W``, bias ``b``, batch norm ``(gamma, beta_bn,
mu, var, eps)`` and p-bit inverse temperature ``beta``: the p-bit's argument is
``beta * y_i = a_i * (W_i . x) + c_i`` with ``a_i = beta * gamma_i / sqrt(var_i + eps)`` and
``c_i = beta * (gamma_i * (b_i - mu_i) / sqrt(var_i + eps) + beta_bn_i)``. The row scale ``a_i``
(sign included) goes into the weights, which are then quantised with one scale ``s`` per layer;
``c_i`` and ``s`` go into the neuron's threshold table. For layer 0 the input normalisation
``x = pixel / (255 std) - mean / std`` is folded the same way, so the core reads raw pixels.

This is the only module of :mod:`pdnn.hw` that reads a checkpoint (through :mod:`pdnn.runs`,
hence torch); the RTL and the reference read the exported memory files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checks import shown
from ..data import catalog
from ..errors import UsageError
from ..io import CONFIG, run_dataset
from ..nn import PBit, computed_weight
from ..runs import load_model
from ..sampling import SampledModel
from . import fixed

SUPPORTED = "pbit (bipolar p-bits) MLPs: `pdnn train --model mlp --neuron pbit`"


def _np(t) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def split_layers(model) -> tuple[list[tuple], object]:
    """``([(linear, batchnorm, pbit), ...], output_linear)`` of a reference MLP, or a UsageError
    naming what the datapath supports."""
    mods = [m for m in model.children() if not isinstance(m, nn.Flatten)]
    hidden, i = [], 0
    while i + 2 < len(mods):
        lin, bn, neuron = mods[i:i + 3]
        if not isinstance(neuron, PBit) or neuron.mode != "bipolar":
            kind = (" + ".join(type(m).__name__ for m in neuron) if isinstance(neuron, nn.Sequential)  # (converted)
                    else f"{type(neuron).__name__}" + (f"({neuron.mode})" if isinstance(neuron, PBit) else ""))
            raise UsageError(f"the datapath has no {kind} neuron; it supports {SUPPORTED}")
        if not isinstance(lin, nn.Linear) or not isinstance(bn, nn.BatchNorm1d):
            raise UsageError(f"layer {len(hidden)} is {type(lin).__name__} -> {type(bn).__name__}; "
                             f"the datapath supports {SUPPORTED}")
        hidden.append((lin, bn, neuron))
        i += 3
    if i != len(mods) - 1 or not isinstance(mods[-1], nn.Linear) or not hidden:
        raise UsageError(f"the model is not Linear -> BatchNorm1d -> PBit blocks and a Linear output; "
                         f"the datapath supports {SUPPORTED}")
    return hidden, mods[-1]


def supported_layers(model, config: dict) -> tuple[list[tuple], object]:
    """:func:`split_layers` of a run's model, refusing first a run that is not a reference MLP."""
    if config["model"].get("name") != "mlp":
        raise UsageError(f"run model {config['model'].get('name')!r} is not supported; the datapath supports {SUPPORTED}")
    return split_layers(model)


RANGES = {"weight bits": (2, 16), "random bits": (1, 12), "max samples": (1, 4096)}  # what the core is built for


def to_fixed(model, config: dict, mean: float, std: float, weight_bits: int = 8, random_bits: int = 8,
             max_samples: int = 64, arrangement: str = "per-neuron") -> fixed.FixedNet:
    """Fold and quantise ``model`` (a reference MLP in eval mode) for the core, which reads 8-bit pixels."""
    hidden, out = supported_layers(model, config)
    for what, v in (("weight bits", weight_bits), ("random bits", random_bits), ("max samples", max_samples)):
        lo, hi = RANGES[what]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise UsageError(f"{what} must be an integer in {lo}..{hi}, got {shown(v)}")
    pixel_scale = 1.0 / (255 * std)
    pixel_shift = -mean / std
    net = fixed.FixedNet([], 8, weight_bits, random_bits, max_samples, arrangement)
    scales, offsets = [], []
    for k, (lin, bn, neuron) in enumerate(hidden):
        w = _np(computed_weight(lin))
        b = _np(lin.bias) if lin.bias is not None else np.zeros(w.shape[0])
        if k == 0:
            b = b + pixel_shift * w.sum(1)
            w = w * pixel_scale
        sd = np.sqrt(_np(bn.running_var) + bn.eps)
        gamma = _np(bn.weight) if bn.weight is not None else np.ones_like(sd)
        shift = _np(bn.bias) if bn.bias is not None else np.zeros_like(sd)
        a = neuron.beta * gamma / sd
        c = neuron.beta * (gamma * (b - _np(bn.running_mean)) / sd + shift)
        wq, s = fixed.quantise_rows(w * a[:, None], weight_bits)
        net.layers.append(fixed.Layer(wq, None, "mac" if k == 0 else "ac"))
        scales.append(s)
        offsets.append(c)
    w3, b3 = _np(computed_weight(out)), _np(out.bias) if out.bias is not None else np.zeros(out.weight.shape[0])
    wq, s = fixed.quantise_rows(w3, weight_bits)
    if not np.any(w3):  # no weight to set the scale: the biases set it (at 1.0 they rounded to 0)
        s = fixed.quantise_rows(b3, weight_bits)[1]
    limit = 2 ** (weight_bits - 1) - 1
    bq = np.round(b3 / s)
    clipped = int(np.sum(np.abs(bq) > limit))
    net.layers.append(fixed.Layer(np.concatenate([wq, np.clip(bq, -limit, limit).astype(np.int64)[:, None]], 1),
                                  None, "ac"))
    for k, (s_k, c) in enumerate(zip(scales, offsets)):  # a table's width needs every layer in place: the
        # last one's accumulator also sums over the samples, and a hidden layer appended last was sized as it
        net.layers[k].thresholds = fixed.thresholds_for(s_k, c, random_bits, net.threshold_bits(k))
    scales.append(s)
    net.meta = {"weight_scales": scales, "output_bias_clipped": clipped,
                "beta": [float(n.beta) for _, _, n in hidden], "model": config["model"]}
    return net


def from_run(run_dir: Path | str, roots=None, **kwargs) -> tuple[fixed.FixedNet, dict]:
    """Load a run (weights and config) and its dataset's statistics; return ``(net, config)``."""
    if not (Path(run_dir) / CONFIG).exists() and fixed.is_export(run_dir):  # (a run's spec.json is never read)
        raise UsageError(f"{run_dir} is an export, not a run; export the trained run it came from "
                         "(the folder with config.json and checkpoint.pt)")
    model, config = load_model(run_dir)
    supported_layers(model, config)  # before the dataset is read, so that a CNN is refused as what it is
    dataset = run_dataset(run_dir, config)
    net = to_fixed(model, config, *dataset_stats(dataset, roots), **kwargs)
    net.meta["dataset"] = dataset
    return net, config


def dataset_stats(name: str, roots=None) -> tuple[float, float]:
    ds = catalog.load(name, roots, progress=False)
    if ds.mean.numel() != 1:
        raise UsageError(f"dataset {name!r} has {ds.mean.numel()} channels; the core reads one-channel images")
    return float(ds.mean[0]), float(ds.std[0])


def dataset_of(net: fixed.FixedNet, folder: Path | str) -> str:
    """The dataset the export in ``folder`` was made from (``spec.json``'s ``meta.dataset``): its
    test images are the ones to run it on."""
    dataset = net.meta.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip() or len(dataset.splitlines()) != 1:
        got = "" if dataset is None else f", got {dataset!r}"
        raise UsageError(f"{folder} does not name its dataset (spec.json meta.dataset){got}")
    return dataset


def test_images(name: str, count: int | None = None, roots=None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` test images (uint8, flattened) and labels of dataset ``name``."""
    ds = catalog.load(name, roots, progress=False)
    x, y = ds.test_x[:count], ds.test_y[:count]
    return x.reshape(len(x), -1).numpy().astype(np.uint8), y.numpy().astype(np.int64)


def float_accuracy(run_dir: Path | str, images: np.ndarray, labels: np.ndarray, samples: int, seed: int = 0,
                   roots=None) -> float:
    """Accuracy of the run's float p-DNN (mean of ``samples`` sampled logits) on ``images``."""
    model, config = load_model(run_dir)
    ds = catalog.load(run_dataset(run_dir, config), roots, progress=False)
    x = ds.normalize(torch.from_numpy(images).reshape(-1, *ds.input_shape))
    sampled = SampledModel(model, samples=samples, seed=seed).eval()
    with torch.no_grad():
        pred = torch.cat([sampled(part).argmax(1) for part in x.split(1000)])
    return float((pred.numpy() == labels).mean())
