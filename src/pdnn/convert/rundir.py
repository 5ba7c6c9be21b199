"""Converted run directories: :func:`load_model` (which replays a run's conversion), held-out
training data, :func:`convert_run` and :func:`restore_checkpoint`.

A converted run's ``config.json`` is its source's plus the conversion spec; its ``checkpoint.pt``
is a copy of the source's weights (recreated from the source by :func:`restore_checkpoint`), and
a calibrated one has a ``calibration.json``.
"""
from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from .. import data as data_package
from ..checks import as_real, positive_int, shown
from ..devices import resolve_device
from ..errors import UsageError
from ..io import (CHECKPOINT, CONFIG, LOCK, METRICS, RunError, checkpoint_mismatch, is_folder_record, load_checkpoint,
                  measurements, read_config, read_json, save_checkpoint, write_json, writer_lock)
from ..labels import checked_label, run_label
from ..models import ModelConfig
from ..provenance import checkpoint_sha256, conversion_sha256, file_sha256, state_sha256, weights_record
from ..train_config import recorded_processes, train_command
from .batchnorm import recalibrate_batchnorm
from .calibration import _sweep_values, calibrate
from .rewrite import _convert, conversion_spec, to_sampled

CALIBRATION = "calibration.json"
HELD_OUT_RECORD = "bn_stats_data"  # config.json: the examples --recalibrate-bn alone read


def replay(model: nn.Module, config: dict, run_dir: str | Path) -> nn.Module:
    """``model`` as the run ``config`` describes it: converted by its ``convert`` spec if it has
    one (the randomness of a converted run is rebuilt, never pickled), else unchanged."""
    if "convert" not in config:
        return model
    try:
        return to_sampled(model, **config["convert"])
    except (TypeError, ValueError) as err:
        raise RunError(f"{Path(run_dir) / CONFIG}: bad 'convert' section ({err})") from err


def model_config(run_dir: str | Path, config: dict) -> ModelConfig:
    """The ``ModelConfig`` of a run's ``config.json``; :class:`RunError` names a bad section. Every
    option is required, as every run records them all: a missing one taken at its default built
    another network (a tanh run read without its neuron is sampled as a p-bit one)."""
    section = config.get("model")
    if isinstance(section, dict) and (missing := [f.name for f in fields(ModelConfig) if f.name not in section]):
        raise RunError(f"{Path(run_dir) / CONFIG}: its 'model' section lacks {', '.join(missing)}; every run's "
                       "config.json records them all")
    try:
        return ModelConfig.from_dict(config["model"])
    except (TypeError, KeyError, ValueError) as err:
        raise RunError(f"{Path(run_dir) / CONFIG}: bad 'model' section ({err})") from err


def build_model(run_dir: str | Path, config: dict) -> nn.Module:
    """The untrained model of a run's ``config.json``; :class:`RunError` if its 'model' section
    does not build one (an unknown keyword in ``extra``, say)."""
    try:
        return model_config(run_dir, config).build()
    except (TypeError, ValueError) as err:
        raise RunError(f"{Path(run_dir) / CONFIG}: bad 'model' section ({err})") from err


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a run's model with its trained weights, in eval mode, on ``device``. Returns
    ``(model, config)``.

    The weights are read onto the CPU whatever device wrote them, and the model is moved to
    ``device`` last, so callers that feed it data on ``device`` need not move it themselves.
    A converted run (``config["convert"]``) stores the source weights and the conversion spec;
    the conversion is replayed (:func:`replay`) after the weights are loaded.
    """
    try:
        placeholder = torch.device(device).type == "meta"  # (no memory: what tests use for another device)
    except (RuntimeError, TypeError):
        placeholder = False
    if device is not None and not placeholder:  # (None: left where it is built, the CPU, as before)
        device = resolve_device(device)  # ("gpu", or "cuda" here: said before any file is read)
    config = read_config(run_dir)
    model = build_model(run_dir, config)
    if "convert" in config and not (Path(run_dir) / CHECKPOINT).exists():  # often not kept: a copy of the source's
        raise RunError(f"{Path(run_dir) / CHECKPOINT} does not exist; a converted run's checkpoint is a copy of its "
                       f"source's weights: `pdnn convert {run_dir} --restore` recreates it")
    if not (Path(run_dir) / CHECKPOINT).exists() and (Path(run_dir) / METRICS).exists():  # trained, kept without
        raise RunError(f"{Path(run_dir) / CHECKPOINT} does not exist: the run's weights were not kept (its "
                       "records stand), so it cannot be measured anew; train the run again to measure it")
    state = load_checkpoint(Path(run_dir) / CHECKPOINT)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise checkpoint_mismatch(Path(run_dir) / CHECKPOINT, err) from err
    tensors = [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if b.is_floating_point())]
    broken = next((name for name, w in tensors if not torch.isfinite(w).all()), None)
    if broken is not None:  # a run that diverged before training stopped at a non-finite loss
        raise RunError(f"{Path(run_dir) / CHECKPOINT} holds non-finite weights or statistics ({broken}): the run "
                       "diverged; train it again with a smaller learning rate")
    return replay(model, config, run_dir).eval().to(device), config


def load_measured(run_dir, device) -> tuple[nn.Module, dict, dict | None]:
    """``load_model(run_dir, device)`` and the record of the weights it loaded (what an evaluation
    stores, :func:`pdnn.provenance.weights_record`). A run still training replaces its checkpoint
    between any two reads, so the checkpoint's sha256 is taken again after loading and must not
    have changed (every later read then saw the same file). A run that has trained fewer epochs
    than its configuration plans (stopped early, or still training) is measured as it is, with a
    warning that says so: its numbers are not those of the finished run."""
    for _ in range(3):
        record = weights_record(run_dir)
        model, config = load_model(run_dir, device)
        if record is not None and checkpoint_sha256(run_dir) == record["sha256"] and (
                conversion_sha256(run_dir) == record.get("conversion")):  # (converted again meanwhile: read again)
            planned = (config.get("train") or {}).get("epochs")
            if isinstance(record["epoch"], int) and isinstance(planned, int) and record["epoch"] < planned:
                warnings.warn(f"{run_dir} has trained {record['epoch']} of its {planned} epochs (its training "
                              "stopped early, or is still running): measuring that checkpoint", stacklevel=2)
            return model, config, record
    raise RunError(f"{Path(run_dir) / CHECKPOINT} (or the conversion its {CONFIG} names) changed three times while "
                   "it was read: the run is being trained or converted; evaluate it when that has stopped")


def _holdout_count(n_trained: int, holdout: float | int) -> int:
    number = as_real(holdout)  # (None: a flag, a string, or beyond a float)
    if number is None or not math.isfinite(number) or number <= 0 or (number >= 1 and not number.is_integer()):
        raise UsageError(f"holdout must be a count >= 1 or a fraction in (0, 1), got {shown(holdout)}")
    return max(1, round(n_trained * number)) if number < 1 else int(number)


def holdout_indices(n_trained: int, holdout: float | int, n_available: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of the held-out examples of a training split, for a run trained on its
    first ``n_trained`` examples, of which the first ``n_available`` can be read (default:
    ``n_trained``, i.e. none beyond).

    ``holdout`` is a count (an integer >= 1) or a fraction of ``n_trained`` (0 < holdout < 1).
    Examples the run never saw are taken when there are any: ``[n_trained, n_trained + count)``,
    capped at ``n_available``. Otherwise it is the last ``count`` readable examples, which the
    run was trained on -- ``start < n_trained`` tells the caller so.
    """
    if n_trained < 1:
        raise UsageError(f"a run trained on {n_trained} examples has nothing to hold out")
    count = _holdout_count(n_trained, holdout)
    n_available = n_trained if n_available is None else n_available
    if n_available > n_trained:
        return n_trained, min(n_trained + count, n_available)
    if count > n_available:
        raise UsageError(f"holdout of {count} examples is more than the {n_available} training examples")
    return n_available - count, n_available


class _HeldOut(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    prepare: Callable[[torch.Tensor], torch.Tensor]  # the dataset's normalisation
    split: dict  # where the examples come from, as calibration.json records it


def _held_out_training_data(config: dict, holdout, roots, subset, device, progress,
                            calibrating: bool = True) -> _HeldOut:
    """Held-out examples of the run's *training* split (the test split is never read): preferably
    ones beyond the run's own ``subset``, which it never saw (see :func:`holdout_indices`).
    ``subset`` limits what is read to the first N training examples, as everywhere else;
    ``calibrating``: for calibration (recorded in calibration.json), else for the BatchNorm
    statistics alone (recorded in config.json)."""
    dataset = config.get("data", {}).get("dataset")
    if not dataset:
        raise UsageError("the run's config.json names no dataset ('data': {'dataset': ...}), which calibration needs")
    if subset is not None:
        positive_int("subset", subset, "an integer >= 1 or None", most=None)
    ds = data_package.load(dataset, roots=roots, progress=progress)  # whole: what lies beyond the run's subset
    n_split = len(ds.train_y)
    n_trained = min(config["data"].get("subset") or n_split, n_split)
    n_available = n_split if subset is None else min(subset, n_split)
    start, stop = holdout_indices(n_trained, holdout, n_available)
    seen = start < n_trained
    if seen:
        use, record = (("calibration", f"its accuracies are optimistic ({CALIBRATION}") if calibrating else
                       ("BatchNorm re-estimation", f"its statistics are not held out ({CONFIG}'s {HELD_OUT_RECORD}"))
        readable = (f"the run was trained on all {n_split} training examples of {dataset}" if n_available == n_split
                    else f"the {n_available} training examples of {dataset} read (subset {subset}) are all among the "
                    f"{n_trained} the run was trained on")
        warnings.warn(
            f"{readable}, so {use} uses the last {stop - start} of them, which the model has seen: {record} records "
            "seen_in_training: true)", stacklevel=3)
    if progress:
        print(f"held-out data: {dataset} training examples {start}..{stop - 1}"
              + (" (seen in training)" if seen else f" (the run was trained on the first {n_trained})"), flush=True)
    split = {"dataset": dataset, "split": "train", "subset": subset, "trained_examples": n_trained,
             "start": start, "stop": stop, "examples": stop - start, "train_examples": n_available,
             "seen_in_training": seen}
    return _HeldOut(ds.train_x[start:stop].to(device), ds.train_y[start:stop].to(device), ds.normalize, split)


def _check_destination(source: Path, out: Path, force: bool) -> None:
    """Refuse an ``out`` whose replacement could destroy something: the source itself, any existing
    path without ``force``, and even with ``force`` a trained run (its checkpoint is the only copy
    of its weights). A directory without config.json is an interrupted conversion."""
    if out.resolve() == source.resolve():
        raise RunError("the converted run must go to a new directory, not over its source")
    if not out.exists() or (out.is_dir() and all(p.name == LOCK for p in out.iterdir())):
        return  # nothing there yet (a folder holding only a writer's lock is not a result)
    has_config = (out / CONFIG).is_file()
    saved = read_json(out / CONFIG) if has_config else None
    if has_config and not isinstance(saved, dict):
        raise RunError(f"{out / CONFIG} is not a run's configuration (a JSON object), got {shown(saved)}; --force "
                       "only replaces converted runs, so choose another directory. Nothing was changed")
    if has_config and "convert" not in saved:
        raise RunError(f"{out} is a trained run, not a converted one (its {CONFIG} has no 'convert'); --force only "
                       "replaces converted runs, so choose another directory. Nothing was changed")
    # without config.json: an interrupted conversion, whose checkpoint holds weights only; one
    # holding training state (or a metrics.json beside it) is a trained run that lost its config
    if (out / METRICS).is_file() or (not has_config and _training_state(out / CHECKPOINT)):
        raise RunError(f"{out} holds a trained run's checkpoint or history; --force only replaces converted runs "
                       "and interrupted conversions, so choose another directory. Nothing was changed")
    # measurements without config.json: an interrupted conversion only beside what a conversion writes (one
    # interrupted now has none left: _write_run removes them before config.json; older code removed them after)
    if not has_config and (records := sorted(p.name for p in out.iterdir() if is_folder_record(p))):
        raise RunError(f"{out} holds {', '.join(records)}: another command's results (a study, an export, a plan), "
                       "not a conversion; --force only replaces those, so choose another directory. Nothing was "
                       "changed")
    found = [p.name for p in measurements(out) if p.name != CALIBRATION]
    written = (out / CALIBRATION).is_file() or _weights_only(out / CHECKPOINT)
    if found and not has_config and not written:
        raise RunError(f"{out} holds {', '.join(found)} but no {CONFIG}: neither a converted run nor an interrupted "
                       "conversion; --force only replaces those, so choose another directory. Nothing was changed")
    written_here = {CHECKPOINT, CALIBRATION, LOCK, *(p.name for p in measurements(out))}
    if not has_config and (others := sorted(
            p.name for p in out.iterdir() if p.name not in written_here and not p.name.endswith(".tmp"))):
        raise RunError(f"{out} holds {', '.join(others)} and no {CONFIG}: not a conversion, which writes only "
                       f"{CHECKPOINT}, {CALIBRATION} and {CONFIG} (other runs, notes?); --force only replaces "
                       "converted runs and interrupted conversions, so choose another directory. Nothing was changed")
    if not force:  # (what --force would refuse is said above, whether or not it was given)
        raise RunError(f"{out} holds a conversion interrupted while writing it (no {CONFIG}); pass --force to replace "
                       "it" if not has_config and written else
                       f"{out} already exists; choose a new directory or pass --force to replace its results")


def _training_state(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` holds more than a converted run's weights (an unreadable one holds
    nothing that could be kept)."""
    try:
        return checkpoint.is_file() and set(load_checkpoint(checkpoint)) != {"model"}
    except RunError:
        return False


def _weights_only(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` holds a converted run's weights and nothing else."""
    try:
        return checkpoint.is_file() and set(load_checkpoint(checkpoint)) == {"model"}
    except RunError:
        return False


def _unchanged(source: Path, read: str) -> None:
    """Refuse a source whose checkpoint is no longer the one read (sha256 ``read``): a run still
    training replaces it every epoch, and a conversion would store weights other than the ones it
    calibrated and converted."""
    if file_sha256(source / CHECKPOINT) != read:
        raise RunError(f"{source / CHECKPOINT} changed while it was converted: the run is being trained (or "
                       "restored); convert it when that has stopped. Nothing was written")


def _write_run(out: Path, weights: dict, config: dict, calibration: dict | None) -> None:
    """Write a converted run directory. config.json goes first out and last in, so that a directory
    without one is always an interrupted conversion (which ``force`` may replace), and the
    measurements of the replaced one go before it."""
    out.mkdir(parents=True, exist_ok=True)  # an existing one passed _check_destination
    for stale in measurements(out):  # made on the replaced conversion (calibration.json among them)
        stale.unlink()
    (out / CONFIG).unlink(missing_ok=True)
    save_checkpoint(out / CHECKPOINT, {"model": weights})  # (the source's weights only: no training state)
    if calibration is not None:
        write_json(out / CALIBRATION, calibration)
    write_json(out / CONFIG, config)


def _calibrate_run(model: nn.Module, data: _HeldOut, spec: dict, source_run: str, **options) -> dict:
    """:func:`calibrate` on the held-out examples, with where they came from (for calibration.json)."""
    document = calibrate(model, data.x, data.y, spec["method"], layers=spec["layers"], prepare=data.prepare, **options)
    return {"source_run": source_run, "data": data.split, **document}


def _summary(spec: dict) -> dict:
    """``spec`` with its bulky ``bn_stats`` replaced by the names of the re-estimated layers, in
    the order they were re-estimated (the model's: sorted as text, '11' came before '4')."""
    summary = {k: v for k, v in spec.items() if k != "bn_stats"}
    if "bn_stats" in spec:
        summary["bn_stats"] = list(spec["bn_stats"])
    return summary


def convert_run(
    source: str | Path,
    out: str | Path,
    method: str = "pbit",
    scale: float | dict | None = None,
    beta: float | dict | None = None,
    layers: str | Sequence[str] = "hidden",
    calibrate: bool = False,
    values: Sequence[float] | None = None,
    samples: Sequence[int] = (1, 2, 5, 10, 20),
    target: int | None = None,
    holdout: float | int = 0.1,
    repeats: int = 1,
    recalibrate_bn: bool = False,
    bn_samples: int = 4,
    seed: int = 0,
    roots: list[str] | None = None,
    subset: int | None = None,
    device: str = "cpu",
    force: bool = False,
    label: str | None = None,
    progress: bool = True,
    per_layer: bool = False,
) -> dict:
    """Write a converted run directory ``out`` from the trained run ``source``.

    ``out/config.json`` is the source's config plus ``"convert"`` (the :func:`to_sampled`
    keyword arguments, replayed by :func:`load_model`), ``"source_run"`` (the source
    directory relative to ``out``) and ``"source_checkpoint_sha256"``; ``out/checkpoint.pt``
    holds the source's weights unchanged (``{"model": state_dict}``; :func:`restore_checkpoint`
    recreates it). With ``calibrate`` the scale/β is chosen by :func:`calibrate` (``per_layer``:
    then refined layer by layer) on held-out training examples -- beyond the run's own
    ``subset`` if the split has any, else its last trained-on ones, with a warning (``holdout``:
    a count, or a fraction of the examples it was trained on; ``subset``: read only the first N
    training examples) -- and the sweep is written to ``out/calibration.json``. With
    ``recalibrate_bn`` the BatchNorm statistics behind the noise are re-estimated on the same
    examples (stored in ``convert["bn_stats"]``).

    An existing ``out`` is refused unless ``force``, and even then if it is a trained run
    rather than a converted one; a replaced run loses every result measured on it
    (:func:`pdnn.io.measurements`). Returns ``{"out", "spec", "converted", "calibration"}`` (``spec``
    without the bulky ``bn_stats``).
    """
    source, out = Path(source), Path(out)
    checked_label(label)  # before any work
    _check_destination(source, out, force)
    config = read_config(source)
    if "convert" in config:
        raise RunError(f"{source} is itself a converted run (of {config.get('source_run')}); convert its source")
    if calibrate and (scale is not None or beta is not None):
        raise UsageError("--calibrate chooses the scale (beta for pbit) itself; give the values to try instead")
    if per_layer and not calibrate:
        raise UsageError("--per-layer refines the value --calibrate chooses; pass --calibrate too")
    spec = conversion_spec(method, scale, beta, layers)
    values = _sweep_values(method, values) if calibrate else None
    read = file_sha256(source / CHECKPOINT)  # (a checkpoint that changes while converted is refused below)
    model, _ = load_model(source, device)
    _unchanged(source, read)
    if (calibrate or recalibrate_bn) and config["model"].get("name") == "vae":
        raise UsageError(f"{source} is a generator: --calibrate and --recalibrate-bn measure classification "
                         "accuracy; convert it with a given --beta/--scale and measure it with `pdnn fid`")
    converted, sites = _convert(model, spec)  # fails on an unconvertible model before any data is read
    source_run = os.path.relpath(source.resolve(), out.resolve())

    calibration = None
    if calibrate or recalibrate_bn:
        data = _held_out_training_data(config, holdout, roots, subset, device, progress, calibrating=calibrate)
        if calibrate:
            calibration = _calibrate_run(model, data, spec, source_run, values=values, samples=samples,
                                         target=target, repeats=repeats, seed=seed, recalibrate_bn=recalibrate_bn,
                                         bn_samples=bn_samples, progress=progress, per_layer=per_layer)
            spec = calibration["spec"]  # with the chosen value's BatchNorm statistics, if re-estimated
            calibration["spec"] = _summary(spec)  # they are stored once, in config.json
        else:
            spec["bn_stats"] = recalibrate_batchnorm(converted, data.x, bn_samples, prepare=data.prepare, seed=seed)

    new_config = copy.deepcopy(config)
    new_config["convert"] = spec
    new_config["source_run"] = source_run
    weights = load_checkpoint(source / CHECKPOINT)["model"]
    _unchanged(source, read)  # the weights stored are those calibrated and converted
    new_config["source_checkpoint_sha256"] = read
    new_config["source_weights_sha256"] = state_sha256(weights)
    new_config["label"] = label or f"{run_label(source, config)} ({method})"
    if recalibrate_bn and not calibrate:  # (calibration.json records the examples otherwise)
        new_config[HELD_OUT_RECORD] = data.split
    with writer_lock(out, "convert into"):
        _check_destination(source, out, force)  # again: another command may have written it meanwhile
        _write_run(out, weights, new_config, calibration)
    return {"out": str(out), "spec": _summary(spec), "converted": [f"{s.name} ({s.op})" for s in sites],
            "calibration": calibration}


def _source_dir(run_dir: Path, source_run: str) -> Path:
    """A converted run's source directory: ``source_run`` relative to ``run_dir`` (as
    :func:`convert_run` writes it), or, for runs converted before it did, relative to the
    current directory if only that exists."""
    relative = (run_dir / source_run).resolve()
    return Path(source_run) if not relative.is_dir() and Path(source_run).is_dir() else relative


def _train_command(config: dict, source: Path) -> str:
    """How to train the source of the converted run ``config`` describes into ``source`` again:
    by the source's own ``config.json`` where it is left (its label is not the conversion's)."""
    try:
        own = read_json(source / CONFIG) if (source / CONFIG).is_file() else {
            key: value for key, value in config.items() if key != "label"}
        return f"`{train_command(own, source, recorded_processes(source))}`"
    except (KeyError, TypeError, AttributeError, RunError):  # a configuration edited by hand
        return f"the options under 'model', 'data' and 'train' in {source / CONFIG}"


def restore_checkpoint(run_dir: str | Path) -> Path:
    """Recreate a converted run's missing ``checkpoint.pt`` (a copy of its source's weights).

    Converted runs are often kept without their checkpoint (it duplicates the source's); the
    conversion itself is all in ``config.json``. The source is ``config["source_run"]`` relative
    to ``run_dir`` (or, for older runs, to the current directory), and its checkpoint must have
    the recorded ``source_checkpoint_sha256`` if there is one -- or, as a retrained source's
    file differs in its training record, weights with the recorded ``source_weights_sha256``
    (:func:`pdnn.provenance.state_sha256`; runs converted before it was recorded have only the
    file's). An existing checkpoint is left as it is. Returns the checkpoint's path.

    Raises:
        RunError: ``run_dir`` is not a converted run, or the source checkpoint is missing (the
            message says how to train it) or is not the one the run was converted from.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if "convert" not in config or not config.get("source_run"):
        raise RunError(f"{run_dir} is not a converted run (its {CONFIG} has no 'convert' and 'source_run'); "
                       "only a converted run's checkpoint is a copy that can be recreated")
    target = run_dir / CHECKPOINT
    if target.is_file():
        return target
    source = _source_dir(run_dir, config["source_run"])
    checkpoint = source / CHECKPOINT
    if not checkpoint.is_file():
        missing = f"cannot restore {target}: the source run's checkpoint {checkpoint} does not exist"
        if config.get("source_weights_sha256"):
            raise RunError(f"{missing}; train it with {_train_command(config, source)} and run this again (it must "
                           "give the converted weights, as the same code does on the same machine)")
        raise RunError(f"{missing}, and {run_dir} was converted before the sha256 of its weights was recorded, so "
                       "only the original file is accepted (a retrained one differs at least in its timings); "
                       f"train the source with {_train_command(config, source)} and convert it again with --force")
    state = load_checkpoint(checkpoint)["model"]  # read once: what is checked is what is copied
    expected = config.get("source_checkpoint_sha256")
    if expected is not None and (actual := file_sha256(checkpoint)) != expected:
        weights = config.get("source_weights_sha256")
        if weights is None or state_sha256(state) != weights:
            raise RunError(f"cannot restore {target}: {checkpoint} has sha256 {actual}, but {run_dir} was converted "
                           f"from one with {expected}, and "
                           + ("its weights differ (was the source retrained?" if weights else
                              "the conversion recorded no sha256 of the weights alone to compare (a retrained "
                              "checkpoint's file differs in its timings")
                           + "); convert the source again into a new directory, or with --force")
    save_checkpoint(target, {"model": state})  # (the source's weights only: no training state)
    return target
