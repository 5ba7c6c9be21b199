"""The run directory: one folder per trained (or converted) model, readable by every command.

A run directory holds

* ``config.json``  -- everything needed to rebuild the model (``model``: a ``ModelConfig``),
  plus how it was trained (``train``), on what (``data``) and, for converted runs, how it was
  made stochastic (``convert``);
* ``checkpoint.pt`` -- ``{"model": state_dict, ...training state}``, written atomically;
* ``metrics.json`` -- per-epoch training history;
* ``eval-*.json``  -- accuracy versus samples, one file per evaluation setting.

Every write goes to a temporary file in the same directory followed by ``os.replace``, so an
interrupted run never leaves a half-written file in place of a good one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import ModelConfig

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"


class RunError(Exception):
    """A run directory is missing, incomplete or corrupt."""


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    data = (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()
    _atomic_write(Path(path), lambda f: f.write(data))


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} is not valid JSON ({err})") from err


def save_checkpoint(path: Path | str, state: dict) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: Path | str, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise RunError(f"{path} is not a readable checkpoint ({err})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise RunError(f"{path} holds no model state")
    return state


def read_config(run_dir: Path | str) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    config = read_json(run_dir / CONFIG)
    if "model" not in config:
        raise RunError(f"{run_dir / CONFIG} has no 'model' section")
    return config


def load_model(run_dir: Path | str, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a run's model with its trained weights, in eval mode. Returns ``(model, config)``.

    A converted run (``config["convert"]``) stores the source weights and the conversion spec;
    the conversion is applied after loading, so its randomness is rebuilt, not pickled.
    """
    config = read_config(run_dir)
    model = ModelConfig.from_dict(config["model"]).build()
    state = load_checkpoint(Path(run_dir) / CHECKPOINT, map_location)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RunError(f"{Path(run_dir) / CHECKPOINT} does not match {CONFIG}: {err}") from err
    if "convert" in config:
        from .convert import to_sampled  # converted runs only; keeps the import graph one-way

        model = to_sampled(model, **config["convert"])
    return model.eval(), config


def eval_files(run_dir: Path | str) -> list[Path]:
    return sorted(Path(run_dir).glob("eval-*.json"))
