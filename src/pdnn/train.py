"""Sample-aware training: one loop, checkpointed every epoch, resumable bit for bit on the CPU.

The loss is computed on the average of ``s`` samples of the network (``TrainConfig.samples``),
the paper's rule; gradients reach the weights through the p-bits' straight-through estimator.
The dataset lives on the training device as uint8 tensors; batches are augmented with tensor
ops and normalised on the fly.

Randomness comes from three explicit generators seeded from the run's seed -- example order,
augmentation and sampling -- and their states are saved in every checkpoint, so ``resume``
continues the exact random streams an uninterrupted run would have used.

Multi-process training: started by ``torchrun`` (``WORLD_SIZE`` > 1), every process takes a
strided share of each global batch, gradients are averaged by ``DistributedDataParallel``
(gloo on the CPU, nccl on CUDA), and process 0 evaluates and writes the run directory.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import distributed as dist
from tqdm.auto import tqdm

from . import __version__
from .checks import LOSS_RULES, SCHEDULES, one_of, positive_int
from .data import augment, load
from .devices import default_device
from .evaluate import accuracy_vs_samples
from .models import ModelConfig
from .runs import CHECKPOINT, CONFIG, METRICS, RunError, load_checkpoint, read_json, save_checkpoint, write_json
from .sampling import SampledModel, check_samples, loss_of_samples


@dataclass
class TrainConfig:
    """How a model is trained. Defaults follow the paper: Adam, lr 1e-3, batch 64."""

    samples: int = 1
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    seed: int = 0
    loss_rule: str = "mean-output"
    augment: bool = True
    monitor_examples: int | None = None  # test examples for the per-epoch accuracy (None: all)

    def validate(self) -> "TrainConfig":
        check_samples(self.samples)
        for name in ("epochs", "batch_size"):
            positive_int(name, getattr(self, name))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        one_of("schedule", self.schedule, SCHEDULES)
        one_of("loss rule", self.loss_rule, LOSS_RULES)
        return self


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return 1.0


def _check_resumable(run_dir: Path, config: dict) -> None:
    saved = read_json(run_dir / CONFIG)
    for section in ("model", "data"):
        if saved.get(section) != config[section]:
            raise RunError(
                f"cannot resume {run_dir}: its {section} configuration {saved.get(section)} differs "
                f"from the requested {config[section]}"
            )
    fixed = {k: v for k, v in saved["train"].items() if k != "epochs"}
    requested = {k: v for k, v in config["train"].items() if k != "epochs"}
    if fixed != requested:
        raise RunError(
            f"cannot resume {run_dir}: training options {fixed} differ from the requested {requested} "
            "(only --epochs may change on resume)"
        )


def train(
    run_dir: str | Path,
    model_config: ModelConfig,
    dataset: str,
    train_config: TrainConfig,
    roots: list[str] | None = None,
    subset: int | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    label: str | None = None,
) -> list[dict]:
    """Train ``model_config`` on ``dataset`` into ``run_dir``; returns the per-epoch metrics.

    A run directory that already holds a checkpoint is only continued with ``resume=True``
    (never overwritten); resuming needs the same model, data and training options, except
    ``epochs``, which may grow.
    """

    train_config.validate()
    run_dir = Path(run_dir)
    device = device or default_device()
    rank, world = _distributed()
    config = {
        "model": model_config.to_dict(),
        "data": {"dataset": dataset, "subset": subset},
        "train": asdict(train_config),
        "pdnn_version": __version__,
    }
    if label:
        config["label"] = label
    config["model"]["input_shape"] = list(config["model"]["input_shape"])
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists() and not resume:
        raise RunError(f"{run_dir} already holds a checkpoint; pass resume to continue it or choose a new directory")
    if resume and not checkpoint_path.exists():
        raise RunError(f"nothing to resume: {checkpoint_path} does not exist")
    if resume:
        _check_resumable(run_dir, config)

    data = load(dataset, roots=roots, subset=subset, progress=progress and rank == 0).to(device)
    torch.manual_seed(train_config.seed)  # the initial weights (the only draw from the global generator)
    model = model_config.build().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    sampler = SampledModel(model, train_config.samples, reduce="none", seed=train_config.seed + 1 + rank)
    order_gen = torch.Generator().manual_seed(train_config.seed)
    augment_gen = torch.Generator(device=device).manual_seed(train_config.seed + 10_007 * (rank + 1))
    sample_gen = sampler.generator(device)
    net = sampler
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(sampler, device_ids=[device] if device != "cpu" else None)

    metrics: list[dict] = []
    start_epoch = 0
    if resume:
        state = load_checkpoint(checkpoint_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        order_gen.set_state(state["generators"]["order"])
        augment_gen.set_state(state["generators"]["augment"].to("cpu"))
        sample_gen.set_state(state["generators"]["sample"].to("cpu"))
        metrics, start_epoch = state["metrics"], state["epoch"]
    if rank == 0:
        write_json(run_dir / CONFIG, config)

    n_train = len(data.train_y)
    steps_per_epoch = math.ceil(n_train / train_config.batch_size)
    total_steps = steps_per_epoch * train_config.epochs
    for epoch in range(start_epoch, train_config.epochs):
        model.train()
        perm = torch.randperm(n_train, generator=order_gen).to(device)
        loss_sum = correct = seen = 0
        began = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{train_config.epochs}",
                   disable=not progress or rank != 0, leave=False)
        for i in bar:
            for group in optimizer.param_groups:
                group["lr"] = train_config.lr * _lr_factor(train_config.schedule, epoch * steps_per_epoch + i, total_steps)
            idx = perm[i * train_config.batch_size : (i + 1) * train_config.batch_size][rank::world]
            x = data.train_x[idx]
            if train_config.augment:
                x = augment(x, data.augmentation, augment_gen)
            y = data.train_y[idx]
            loss, mean = loss_of_samples(net(data.normalize(x)), y, rule=train_config.loss_rule)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += int((mean.argmax(-1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen * world / (time.perf_counter() - began):.0f}")
        bar.close()
        elapsed = time.perf_counter() - began
        if rank == 0:
            n_test = train_config.monitor_examples or len(data.test_y)
            test = accuracy_vs_samples(model, data.test_x[:n_test], data.test_y[:n_test], [train_config.samples],
                                       repeats=1, seed=train_config.seed + 7, prepare=data.normalize)[0]
            metrics.append({
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "test_accuracy": test["accuracy_mean"],
                "test_samples": test["samples"],
                "test_examples": n_test,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_time_s": elapsed,
                "examples_per_s": seen * world / elapsed,
            })
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "metrics": metrics,
                "generators": {"order": order_gen.get_state(), "augment": augment_gen.get_state(),
                               "sample": sample_gen.get_state()},
            })
            write_json(run_dir / METRICS, metrics)
            if progress:
                last = metrics[-1]
                tqdm.write(f"epoch {epoch + 1}: loss {last['train_loss']:.4f}  train acc {last['train_accuracy']:.4f}  "
                           f"test acc (T={last['test_samples']}) {last['test_accuracy']:.4f}  "
                           f"{last['examples_per_s']:.0f} img/s")
        if world > 1:
            dist.barrier()
    return metrics
