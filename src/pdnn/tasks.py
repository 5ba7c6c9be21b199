"""What a kind of model is trained to do: its loss and its held-out metric.

The training loop (:mod:`pdnn.train`) owns everything that does not depend on the kind of model
-- data order, augmentation, the optimiser and its schedule, checkpoints, resume, multiple
processes -- and asks a :class:`Task` for the rest. A new kind of model (a generator, say) is a
new task registered in :data:`TASKS`, not a new loop; ``pdnn train --task NAME`` picks it and
``config.json`` records it (``"train": {"task": NAME}``; runs written before tasks existed are
``classify``).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .errors import UsageError
from .evaluate import accuracy_vs_samples
from .generation import SampledVAE, vae_test_loss
from .models import ModelConfig, is_generator
from .sampling import SampledModel, loss_of_samples


class Task:
    """The part of training that depends on what the model is for.

    One instance serves one run; ``config`` is the run's ``TrainConfig`` (samples ``s``, loss
    rule, seed, ``monitor_examples``...). A new task subclasses ``Task`` and provides:

    * ``name`` -- its key in :data:`TASKS` and in ``config.json``;
    * ``metric`` -- the key of the per-epoch held-out metric in ``metrics.json``;
    * :meth:`build` -- the model from its ``ModelConfig`` (the default builds the registered
      reference model, which is also how :func:`pdnn.runs.load_model` rebuilds it);
    * :meth:`sampled` -- the module the loop calls on a batch: it runs ``s`` samples of the model
      and has ``generator(device)``, the seeded sampling generator the loop checkpoints;
    * :meth:`batch_loss` -- the loss of one (augmented, uint8) batch, plus sums over its
      examples of any training statistics (reported per epoch as ``train_<name>``);
    * :meth:`held_out` -- the end-of-epoch record of the model on held-out data (must contain
      ``metric``);
    * :meth:`summary` -- one line for an epoch's record.

    Randomness must come only from the generators the loop passes in (``sampled``'s seed) or
    seeds explicitly from ``config.seed``, so that resumed runs continue bit for bit.
    """

    name: ClassVar[str]
    metric: ClassVar[str]

    def __init__(self, config) -> None:
        self.config = config

    def build(self, model_config: ModelConfig) -> nn.Module:
        return model_config.build()

    def sampled(self, model: nn.Module, seed: int) -> nn.Module:
        raise NotImplementedError

    def batch_loss(self, net: nn.Module, data, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(loss, sums)`` of the batch ``x`` (uint8, augmented) with labels ``y``; ``net`` is
        :meth:`sampled`'s module (possibly wrapped for multiple processes), ``data`` the
        :class:`~pdnn.data.Dataset` (for ``data.normalize``)."""
        raise NotImplementedError

    def held_out(self, model: nn.Module, data) -> dict:
        raise NotImplementedError

    def summary(self, record: dict) -> str:
        return f"epoch {record['epoch']}: loss {record['train_loss']:.4f}  {self.metric} {record[self.metric]:.4f}"


class ClassificationTask(Task):
    """Classification with the sample-aware loss (``pdnn.sampling.loss_of_samples``): training
    accuracy on the mean of ``s`` samples and test accuracy at T = ``s`` each epoch (accuracy
    versus T is :func:`pdnn.runs.evaluate_run`'s)."""

    name = "classify"
    metric = "test_accuracy"

    def build(self, model_config):
        model = model_config.build()
        if is_generator(model):
            raise UsageError(f"the model {model_config.name!r} is a generator; train it with --task vae")
        return model

    def sampled(self, model: nn.Module, seed: int) -> nn.Module:
        return SampledModel(model, self.config.samples, reduce="none", seed=seed)

    def batch_loss(self, net, data, x, y):
        loss, mean = loss_of_samples(net(data.normalize(x)), y, rule=self.config.loss_rule)
        return loss, {"accuracy": int((mean.argmax(-1) == y).sum())}

    def held_out(self, model, data):
        n_test = min(self.config.monitor_examples or len(data.test_y), len(data.test_y))  # what is measured
        test = accuracy_vs_samples(model, data.test_x[:n_test], data.test_y[:n_test], [self.config.samples],
                                   repeats=1, seed=self.config.seed + 7, prepare=data.normalize)[0]
        return {"test_accuracy": test["accuracy_mean"], "test_samples": test["samples"], "test_examples": n_test}

    def summary(self, record):
        return (f"epoch {record['epoch']}: loss {record['train_loss']:.4f}  train acc {record['train_accuracy']:.4f}  "
                f"test acc (T={record['test_samples']}) {record['test_accuracy']:.4f}  "
                f"{record['examples_per_s']:.0f} img/s")


class VAETask(Task):
    """A VAE (model ``vae``) trained on the negative ELBO of the mean of ``s`` decoder samples
    (:class:`pdnn.generation.SampledVAE`); the held-out metric is that loss at T = ``s``, in nats
    per image (lower is better). Image quality against T is measured by ``pdnn fid``."""

    name = "vae"
    metric = "test_loss"

    def build(self, model_config):
        model = model_config.build()
        if not is_generator(model):
            raise UsageError(f"task 'vae' trains the model 'vae', got model {model_config.name!r}")
        return model

    def sampled(self, model, seed):
        return SampledVAE(model, self.config.samples, seed=seed)

    def batch_loss(self, net, data, x, y):
        reconstruction, kl = net(data.normalize(x), x.float() / 255)
        return (reconstruction + kl).mean(), {"reconstruction": float(reconstruction.detach().sum()),
                                                "kl": float(kl.detach().sum())}

    def held_out(self, model, data):
        n_test = min(self.config.monitor_examples or len(data.test_y), len(data.test_y))  # what is measured
        loss = vae_test_loss(model, data.test_x[:n_test], data.normalize, self.config.samples, seed=self.config.seed + 7)
        return {"test_loss": loss, "test_samples": self.config.samples, "test_examples": n_test}

    def summary(self, record):
        return (f"epoch {record['epoch']}: loss {record['train_loss']:.2f}  (reconstruction "
                f"{record['train_reconstruction']:.2f}, KL {record['train_kl']:.2f})  test loss "
                f"(T={record['test_samples']}) {record['test_loss']:.2f} nats/image  {record['examples_per_s']:.0f} img/s")


TASKS: dict[str, type[Task]] = {task.name: task for task in (ClassificationTask, VAETask)}

