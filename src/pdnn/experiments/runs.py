"""Train-if-needed and evaluate-if-needed, so an experiment can be interrupted and rerun."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..io import read_eval, read_metrics
from ..models import ModelConfig
from ..provenance import WEIGHTS, stale_reason
from ..runs import CHECKPOINT, CONFIG, METRICS, RunError, evaluate_run, evaluation_subset, fid_run, read_json
from ..train import TrainConfig, check_same_run, run_config, train


def ensure_trained(run_dir: Path, model: ModelConfig, dataset: str, config: TrainConfig, **kwargs) -> list[dict]:
    """Train ``run_dir`` to ``config.epochs`` epochs, resuming a partial run, skipping a finished one
    (a run with more epochs is kept as it is, with a warning). A run trained with another model,
    data or training options is a ``RunError``, never reused under the new settings."""
    config.validate()
    if (run_dir / CONFIG).exists():
        # (named by config.json's keys: these settings are a plan's, not options of the command run)
        check_same_run(run_dir, run_config(model, dataset, config, kwargs.get("subset")), "reuse", options={})
    if (run_dir / METRICS).exists():
        metrics = read_metrics(run_dir / METRICS)
        last, planned = metrics[-1]["epoch"] if metrics else 0, read_json(run_dir / CONFIG)["train"].get("epochs")
        if metrics and config.schedule == "cosine" and planned != config.epochs and last < max(planned, config.epochs):
            # (a run that finished a schedule of more epochs is kept, below, as for any schedule)
            raise RunError(f"cannot take {run_dir} as a run of {config.epochs} epochs: it trained {last} of a cosine "
                           f"schedule of {planned}, which is no {config.epochs}-epoch schedule (continued, it "
                           "would bend midway); delete the folder to train it anew, or give another --out")
        if metrics and last >= config.epochs:
            if last > config.epochs:
                warnings.warn(f"{run_dir} has trained {last} epochs and is kept as it is; --epochs "
                              f"{config.epochs} is ignored (delete the folder to train {config.epochs})", stacklevel=2)
            return metrics
    return train(run_dir, model, dataset, config, resume=(run_dir / CHECKPOINT).exists(), **kwargs)


def ensure_evaluated(run_dir: Path, samples: list[int], repeats: int, aggregate: str = "network", **kwargs) -> dict:
    """Evaluate unless ``eval-<aggregate>.json`` already holds these T values and repeats, of the
    weights now in the checkpoint (an evaluation without that record is kept), drawn with the
    same seed on the same test examples (an evaluation that predates the subset's record is kept)
    from a pool of the same largest T (which lays out the draws, as in :func:`ensure_scored`)."""
    path = run_dir / f"eval-{aggregate}.json"
    if path.exists():
        document = read_eval(path)
        subset = evaluation_subset(read_json(run_dir / CONFIG), kwargs.get("subset"))
        other_draws = document.get("seed") != kwargs.get("seed", 0) or document.get("subset", subset) != subset
        if other_draws or stale_reason(run_dir, path.name, document):
            return evaluate_run(run_dir, samples, repeats, aggregate, **kwargs)
        have = {r["samples"] for r in document["results"]}
        if (document.get("deterministic") or set(samples) <= have and max(samples) == max(have)) and all(
            r.get("repeats", 0) >= repeats or document.get("deterministic") for r in document["results"]
        ):
            return document
    return evaluate_run(run_dir, samples, repeats, aggregate, **kwargs)


def ensure_scored(run_dir: Path, classifier: Path, samples: list[int], n: int, repeats: int, seed: int = 0,
                  **kwargs) -> dict:
    """fid-clf of the generator ``run_dir`` in the features of ``classifier``, unless
    ``fid-clf.json`` already holds these T values, drawn with the same largest T (which lays out
    the draws: :func:`pdnn.generation.generate_at`), with exactly these repeats (their mean is the
    number), of the same ``n`` images and seed, measured on the weights now in both checkpoints
    (a file without those records is kept, as :func:`ensure_evaluated` keeps one)."""
    path = run_dir / "fid-clf.json"
    if path.exists():
        document = read_json(path)
        results = document.get("results") or []
        have = {r["samples"] for r in results}
        if (document.get("n") == n and document.get("seed") == seed
                and (document.get("deterministic") or set(samples) <= have and max(samples) == max(have))
                and all(r["repeats"] == repeats for r in results)
                and not stale_reason(run_dir, path.name, document)
                and not stale_reason(classifier, path.name, {WEIGHTS: document.get("feature_weights")})):
            return document
    return fid_run(run_dir, classifier=classifier, samples=samples, n=n, repeats=repeats, seed=seed, **kwargs)
