"""A run directory as the commands use it: its model and its evaluation.

One folder per trained (or converted) model; :mod:`pdnn.io` names its files and reads and writes
them (atomically), :func:`load_model` rebuilds its model (a converted run's conversion replayed by
:mod:`pdnn.convert`) and :func:`evaluate_run` measures it on its dataset's test split.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from .checks import AGGREGATIONS, one_of
from .convert import load_model
from .data import load
from .evaluate import accuracy_vs_samples, is_deterministic
from .io import (CHECKPOINT, CONFIG, METRICS, RunError, eval_files, load_checkpoint, read_config, read_json,
                 save_checkpoint, write_json)

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "RunError", "eval_files", "evaluate_run", "load_checkpoint",
           "load_model", "read_config", "read_json", "save_checkpoint", "write_json"]


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
    """Evaluate a run directory on its dataset's test split; writes ``eval-<aggregate>.json``.

    ``subset`` overrides the run's own subset (the first N test examples); by default the run is
    evaluated on what it was trained with. Returns the JSON document.
    """
    one_of("aggregate", aggregate, AGGREGATIONS)
    model, config = load_model(run_dir, map_location=device)
    subset = subset if subset is not None else config["data"].get("subset")
    data = load(config["data"]["dataset"], roots=roots, subset=subset, progress=progress).to(device)
    began = time.perf_counter()
    results = accuracy_vs_samples(model.to(device), data.test_x, data.test_y, samples, repeats, aggregate,
                                  seed, prepare=data.normalize, progress=progress)
    document = {
        "run": str(run_dir),
        "dataset": config["data"]["dataset"],
        "split": "test",
        "examples": len(data.test_y),
        "aggregate": aggregate,
        "deterministic": is_deterministic(model),
        "seed": seed,
        "device": str(device),
        "time_s": time.perf_counter() - began,
        "results": results,
    }
    write_json(Path(run_dir) / f"eval-{aggregate}.json", document)
    return document
