"""What a run's training is: its options (:class:`TrainConfig`), as a run's ``config.json``
records them (:func:`run_config`) and as ``pdnn train`` takes them (:func:`train_command`, which
trains a run kept without its checkpoint again). Apart from the training loop, so that what
reads a run's record (a converted run naming how to rebuild its source) need not import it."""
from __future__ import annotations

import math
import numbers
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from . import __version__
from .checks import LOSS_RULES, SCHEDULES, is_boolean, one_of, positive_int, shown, torch_seed
from .errors import UsageError
from .labels import checked_label
from .io import METRICS, RunError, read_metrics
from .models import ModelConfig
from .tasks import TASKS

FLOAT32_MAX = torch.finfo(torch.float32).max
AUGMENT_SEED = 10_007  # process k's augmentation draws from seed + AUGMENT_SEED * (k + 1)
MAX_LR = FLOAT32_MAX / 10  # Adam divides lr by 1 - 0.9 at its first step, in float32


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
    task: str = "classify"  # a name in pdnn.tasks.TASKS: what the model is trained to do

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainConfig":
        """The ``train`` section of a run's ``config.json``; fields it lacks (a run written by an
        older version) take their defaults."""
        unknown = sorted(set(saved) - {f.name for f in fields(cls)})
        if unknown:
            raise RunError(f"unknown training options {unknown} in the run's configuration")
        return cls(**saved)

    def validate(self) -> "TrainConfig":
        """Check every option, keeping Python's numbers (numpy's would not seed torch's generators
        nor go into config.json)."""
        self.samples = positive_int("samples (s, the training samples: -s/--train-samples)", self.samples)
        one_of("task", self.task, tuple(TASKS))
        self.epochs = positive_int("epochs", self.epochs)
        self.batch_size = positive_int("batch_size", self.batch_size, most=None)  # a cap: beyond the data, one batch
        if (lr := _real(self.lr)) is None or not (math.isfinite(lr) and 0 < lr <= MAX_LR):
            raise UsageError(f"lr must be a finite number > 0 (at most {MAX_LR:.3g}: Adam's first step is 10 x lr, "
                             f"a float32), got {self.lr!r}")
        if (weight_decay := _real(self.weight_decay)) is None or not 0 <= weight_decay <= FLOAT32_MAX:
            raise UsageError(f"weight_decay must be a number from 0 to {FLOAT32_MAX:.3g} (a float32), "
                             f"got {shown(self.weight_decay)}")
        self.lr, self.weight_decay = lr, weight_decay
        if self.monitor_examples is not None:
            self.monitor_examples = positive_int("monitor_examples", self.monitor_examples,
                                                 "an integer >= 1 (or none: every test example)", most=None)
        one_of("schedule", self.schedule, SCHEDULES)
        one_of("loss rule", self.loss_rule, LOSS_RULES)
        self.seed = torch_seed("seed", self.seed, AUGMENT_SEED)
        if not isinstance(self.augment, bool):
            raise UsageError(f"augment must be true or false, got {self.augment!r}")
        return self


def check_new_run(config: TrainConfig) -> None:
    """What a new run may not ask for, though a run recorded before it was refused may hold it: a
    generator's loss rule other than ``mean-output`` (it was recorded, and trained as that)."""
    if config.task == "vae" and config.loss_rule != "mean-output":  # (its decoder's mean is the image it makes)
        raise UsageError(f"loss rule {config.loss_rule!r} is for classifiers; a generator (task vae) is trained "
                         "on the mean of its decoder's s samples, the image it generates: leave out --loss-rule")


def _real(value) -> float | None:
    """``value`` as a Python ``float`` if it is a real number (numpy's too; ``True`` is a flag; an
    integer beyond a float's range is infinite), else None."""
    if not isinstance(value, numbers.Real) or is_boolean(value):
        return None
    try:
        return float(value)
    except OverflowError:  # 10**400, or a Fraction of it
        return math.inf


def run_config(model_config: ModelConfig, dataset: str, train_config: TrainConfig, subset: int | None = None,
               label: str | None = None) -> dict:
    """What a run's ``config.json`` records: the model, the data and the training options."""
    config = {
        "model": model_config.to_dict(),
        "data": {"dataset": dataset, "subset": subset},
        "train": asdict(train_config),
        "pdnn_version": __version__,
    }
    if checked_label(label) is not None:
        config["label"] = label
    config["model"]["input_shape"] = list(config["model"]["input_shape"])
    return config


# the option of `pdnn train` that sets each setting of config.json's model, data and train
# sections (:func:`recorded_options` read the other way): a difference is named by what one types
TRAIN_OPTIONS = {"name": "--model", "neuron": "--neuron", "weight_bits": "--weight-bits", "beta": "--beta",
                 "width": "--width", "extra": "--latent", "dataset": "--dataset", "input_shape": "--dataset",
                 "num_classes": "--dataset", "subset": "--subset", "task": "--task",
                 "samples": "--train-samples", "batch_size": "--batch-size", "lr": "--lr", "schedule": "--schedule",
                 "weight_decay": "--weight-decay", "seed": "--seed", "loss_rule": "--loss-rule",
                 "augment": "--no-augment", "monitor_examples": "--monitor-examples"}


def recorded_options(config: dict) -> dict:
    """The options of ``pdnn train`` (by their argparse names) that the run ``config`` (its
    ``config.json``) records: :func:`run_config` read back."""
    model, options = config["model"], TrainConfig.from_dict(config["train"])
    return {"dataset": config["data"]["dataset"], "subset": config["data"].get("subset"), "task": options.task,
            "model": model.get("name"), "latent": (model.get("extra") or {}).get("latent"),
            "neuron": model.get("neuron"), "weight_bits": model.get("weight_bits"), "beta": model.get("beta"),
            "width": model.get("width"), "train_samples": options.samples, "batch_size": options.batch_size,
            "lr": options.lr, "schedule": options.schedule, "weight_decay": options.weight_decay,
            # (a generator recorded with mean-loss, accepted before it was refused, trained with mean-output)
            "loss_rule": "mean-output" if options.task == "vae" else options.loss_rule,
            "no_augment": not options.augment, "seed": options.seed,
            "monitor_examples": options.monitor_examples, "label": config.get("label")}


def train_command(config: dict, out: str | Path, processes: int = 1) -> str:
    """The ``pdnn train`` command line that trains the run ``config`` describes into ``out``, in
    ``processes`` processes (``torchrun``; each takes its share of every batch, so the weights
    depend on their number): every option it records, defaults included (a later version's
    defaults may differ), but β at its default of 1 (given to float neurons, it draws a warning
    that it does nothing). A value that starts with "-" is written ``--option=value``, where
    argparse cannot take it for an option."""
    launch = ["pdnn"] if processes == 1 else ["torchrun", "--standalone", f"--nproc_per_node={processes}", "-m",
                                               "pdnn"]
    words = [*launch, "train"]
    for name, value in {**recorded_options(config), "epochs": config["train"].get("epochs")}.items():
        option = "--" + name.replace("_", "-")
        if name == "beta" and value == 1:
            continue
        if value is True:  # a flag
            words.append(option)
        elif value is not None and value is not False:
            words += [f"{option}={value}"] if str(value).startswith("-") else [option, str(value)]
    return shlex.join([*words, "--out", str(out)])


def recorded_processes(run_dir: str | Path) -> int:
    """How many processes trained the run in ``run_dir`` (its last epoch's record; 1 if none)."""
    try:
        return int(read_metrics(Path(run_dir) / METRICS)[-1].get("processes", 1))
    except (RunError, IndexError, TypeError, ValueError):
        return 1
