"""A run directory as the commands use it: its model and its evaluation.

One folder per trained (or converted) model; :mod:`pdnn.io` names its files and reads and writes
them (atomically), :func:`load_model` rebuilds its model (a converted run's conversion replayed by
:mod:`pdnn.convert`) and :func:`evaluate_run` measures it on its dataset's test split.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from .adaptive import StoppingRule
from .errors import UsageError
from .checks import AGGREGATIONS, one_of
from .convert import load_measured, load_model
from .data import load
from .devices import resolve_device, where_measured
from .energy import Settings
from .energy.per_input import curve_settings, energies, energy_curves
from .evaluate import ADAPTIVE_BATCH, accuracy_vs_samples, adaptive_accuracy, is_deterministic
from .features import ClassifierFeatures, InceptionFeatures
from .generation import check_generator, fid_vs_samples
from .models import is_generator
from .io import (CHECKPOINT, CONFIG, METRICS, RunError, eval_files, load_checkpoint, read_config, read_json,
                 run_dataset, save_checkpoint, write_json)
from .provenance import CODE, WEIGHTS, code_record

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "RunError", "UnwrittenResult", "eval_files", "evaluate_run",
           "evaluate_run_adaptive", "evaluation_subset", "fid_run", "load_checkpoint", "load_model", "read_config",
           "read_json", "save_checkpoint", "write_json"]


class UnwrittenResult(RunError):
    """A measurement whose run did not take its result file (an immutable file, an append-only
    folder: what no check before the work finds for certain); ``document`` holds the result, which
    the command still prints and copies before it reports this."""

    def __init__(self, path: Path, document: dict, err: OSError):
        super().__init__(f"{path}: {(err.strerror or str(err)).lower()}; the run did not take this result")
        self.document = document


def _write_result(path: Path, document: dict) -> None:
    try:
        write_json(path, document)
    except OSError as err:
        raise UnwrittenResult(path, document, err) from err


def evaluation_subset(config: dict, subset: int | None) -> int | None:
    """How many test examples an evaluation of the run with ``config`` takes: ``subset`` if
    asked, else the subset the run was trained with (``None``: the whole split)."""
    return subset if subset is not None else (config.get("data") or {}).get("subset")


def check_fits(run_dir, config: dict, images) -> None:
    """A :class:`RunError` if the run's model takes inputs of another shape than ``images``
    (``[N, C, H, W]``): a config.json edited to name another dataset would fail deep in torch."""
    expected = (config.get("model") or {}).get("input_shape")
    if expected is not None and tuple(images.shape[1:]) != tuple(expected):
        raise RunError(f"{Path(run_dir) / CONFIG}: its model takes inputs of shape {tuple(expected)}, but "
                       f"{config['data']['dataset']} has images of shape {tuple(images.shape[1:])}")


def evaluate_run(
    run_dir,
    samples: Sequence[int] = (1, 2, 5, 10, 20, 50),
    repeats: int = 3,
    aggregate: str = "network",
    seed: int = 0,
    roots: list[str] | None = None,
    subset: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Evaluate a run directory on its dataset's test split; writes ``eval-<aggregate>.json``,
    which records the weights measured (checkpoint epoch and sha256) and the code that measured
    them (see :mod:`pdnn.provenance`).

    ``subset`` overrides the run's own subset (the first N test examples); by default the run is
    evaluated on what it was trained with. Returns the JSON document.
    """
    device = resolve_device(device)  # before the checkpoint is read: a missing GPU is not a bad file
    one_of("aggregate", aggregate, AGGREGATIONS)
    model, config, weights = load_measured(run_dir, device)
    if is_generator(model):
        raise UsageError(f"{run_dir} is a generator, which has no accuracy; measure it with `pdnn fid {run_dir}`")
    subset, dataset = evaluation_subset(config, subset), run_dataset(run_dir, config)
    data = load(dataset, roots=roots, subset=subset, progress=progress).to(device)
    check_fits(run_dir, config, data.test_x)
    began = time.perf_counter()
    results = accuracy_vs_samples(model, data.test_x, data.test_y, samples, repeats, aggregate,
                                  seed, prepare=data.normalize, progress=progress)
    document = {
        "run": str(run_dir),
        "dataset": dataset,
        "data_source": data.source,
        "split": "test",
        "subset": subset,  # asked for (None: the whole split); what a later reuse must match
        "examples": len(data.test_y),
        "aggregate": aggregate,
        "deterministic": is_deterministic(model),
        "seed": seed,
        "device": str(device),
        **where_measured(),
        "time_s": time.perf_counter() - began,
        WEIGHTS: weights,
        CODE: code_record(),
        "results": results,
    }
    _write_result(Path(run_dir) / f"eval-{aggregate}.json", document)
    return document


def fid_run(run_dir, classifier=None, inception_weights=None, samples: Sequence[int] = (1, 2, 5, 10, 20, 50),
            n: int = 2000, repeats: int = 3, seed: int = 0, roots: list[str] | None = None,
            subset: int | None = None, device: str = "cpu", progress: bool = True) -> dict:
    """Fréchet distance of a generator run's images against its dataset's first ``n`` test images,
    for every T in ``samples``, in the features of the classifier run ``classifier`` (fid-clf) or
    of Inception-v3 from ``inception_weights`` (fid); writes ``RUN/<metric>.json`` and returns it."""
    if (classifier is None) == (inception_weights is None):
        raise UsageError("give exactly one feature source: a classifier run or the Inception weights")
    model, config, weights = load_measured(run_dir, device)
    vae = check_generator(model, f"run {run_dir}")
    dataset = run_dataset(run_dir, config)
    data = load(dataset, roots=roots, subset=subset, progress=progress)
    check_fits(run_dir, config, data.test_x)
    if classifier is not None:
        clf_config = read_config(classifier)
        clf_dataset = run_dataset(classifier, clf_config)
        if clf_dataset != dataset:
            raise UsageError(f"classifier {classifier} was trained on {clf_dataset}; the generator on {dataset}")
        check_fits(classifier, clf_config, data.test_x)  # (as the generator's: it failed inside conv2d)
        extractor = ClassifierFeatures(classifier, data.normalize, device)
    else:
        extractor = InceptionFeatures(inception_weights, device)
    began = time.perf_counter()
    results = fid_vs_samples(vae, data.test_x, extractor, list(samples), n, repeats, seed, device, progress)
    document = {
        "run": str(run_dir),
        "dataset": dataset,
        "metric": extractor.metric,
        "features": extractor.name,
        "feature_source": extractor.source,
        "feature_dim": extractor.dim,
        "real": f"the first {n} images of the {dataset} test split",
        "deterministic": is_deterministic(vae.decoder),
        "data_source": data.source,
        "n": n,
        "repeats": repeats,
        "seed": seed,
        "time_s": time.perf_counter() - began,
        WEIGHTS: weights,
        "feature_weights": getattr(extractor, "weights", None),  # the classifier's, as loaded
        CODE: code_record(),
        "results": results,
    }
    _write_result(Path(run_dir) / f"{extractor.metric}.json", document)
    return document


def evaluate_run_adaptive(run_dir, rule: StoppingRule, seed: int = 0, roots: list[str] | None = None,
                          subset: int | None = None, device: str = "cpu", progress: bool = True,
                          memory: str = "dram") -> dict:
    """Accuracy of a run with T chosen per input on its test split, and the energy per inference at
    each input's own T beside fixed T = ``max_samples`` (weights and activations in ``memory``;
    :func:`pdnn.energy.per_input.energies`); writes ``adaptive.json`` (not an ``eval-*.json``: it
    is no accuracy-per-T table). Returns the JSON document."""
    device = resolve_device(device)
    Settings(weight_memory=memory, activation_memory=memory)  # an unknown level fails before any sampling
    model, config, weights = load_measured(run_dir, device)
    if is_generator(model):
        raise UsageError(f"{run_dir} is a generator, which has no class scores to settle; measure it with "
                         f"`pdnn fid {run_dir}`")
    if is_deterministic(model):
        raise UsageError(f"{run_dir} is deterministic: every sample is the same, so T = 1 is exact and there is "
                         f"nothing to settle; evaluate it with `pdnn eval {run_dir}`")
    subset, dataset = evaluation_subset(config, subset), run_dataset(run_dir, config)
    data = load(dataset, roots=roots, subset=subset, progress=progress).to(device)
    check_fits(run_dir, config, data.test_x)
    began, pricing = time.perf_counter(), {}

    def priced(taken: torch.Tensor, rounds: torch.Tensor) -> dict:
        start = time.perf_counter()
        curves = energy_curves(run_dir, memory, sorted({1, rule.max_samples, *taken.tolist()}), ADAPTIVE_BATCH)
        fixed = torch.full_like(taken, rule.max_samples)
        energy = {"energy_j": energies(taken, rounds, curves, ADAPTIVE_BATCH),
                  "energy_j_fixed_max_samples": energies(fixed, torch.ones_like(taken), curves, ADAPTIVE_BATCH),
                  "energy_settings": curve_settings(curves)}
        pricing["energy_time_s"] = time.perf_counter() - start
        return energy

    result = adaptive_accuracy(model, data.test_x, data.test_y, rule, seed, ADAPTIVE_BATCH, data.normalize, priced,
                               progress)
    sampling_s = time.perf_counter() - began - pricing["energy_time_s"]  # (time_s had included the pricing)
    document = {"run": str(run_dir), "dataset": dataset, "data_source": data.source,
                "split": "test", "examples": len(data.test_y), "seed": seed, "device": str(device),
                **where_measured(), "time_s": sampling_s, **pricing, WEIGHTS: weights, CODE: code_record(),
                **result}
    _write_result(Path(run_dir) / "adaptive.json", document)
    return document
