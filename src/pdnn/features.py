"""Feature extractors for Fréchet distances, each with the name the result must carry.

* :class:`ClassifierFeatures` -- ``fid-clf``: the penultimate features (the input of the last
  linear layer) of a deterministic pdnn classifier trained on the same dataset. Cheap and
  available offline, but its numbers are comparable only with other ``fid-clf`` numbers computed
  with the same classifier run, never with published FIDs.
* :class:`InceptionFeatures` -- ``fid``: Inception-v3 pool3 features (2048) from the standard FID
  weights (:mod:`pdnn.inception`), the extractor behind published FIDs.

As in torch-fidelity, the metric (:mod:`pdnn.fid`) knows nothing about the extractor; an
extractor maps uint8 images ``[N, C, H, W]`` to float features ``[N, d]``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import UsageError
from .convert import load_measured
from .evaluate import is_deterministic
from .inception import load_fid_inception
from .io import run_dataset
from .provenance import file_sha256
from .models import is_generator
from .nn import is_stochastic


STANDARD_SHA256_PREFIX = "6726825d"  # of pytorch-fid's pt_inception-2015-12-05-6726825d.pth


class ClassifierFeatures:
    """Penultimate features of the classifier in run directory ``run_dir``.

    ``normalize`` maps uint8 images to the classifier's input (the dataset's
    :meth:`~pdnn.data.Dataset.normalize`).
    """

    metric = "fid-clf"

    def __init__(self, run_dir: str | Path, normalize: Callable[[torch.Tensor], torch.Tensor], device="cpu"):
        model, config, self.weights = load_measured(run_dir, device)  # the record of the weights used
        if is_generator(model):
            raise UsageError(f"feature classifier {run_dir} is a generator; expected a classifier run")
        if not is_deterministic(model):
            # (not the config's neuron: a converted run's is its source's, tanh, and the noise the conversion's)
            drawing = sorted({type(m).__name__ for m in model.modules() if is_stochastic(m)})
            raise UsageError(f"feature classifier {run_dir} has stochastic neurons "
                             f"({', '.join(drawing)}); expected a deterministic classifier")
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UsageError(f"feature classifier {run_dir} has no linear output layer")
        self.model, self.head, self.normalize, self.device = model, linears[-1], normalize, device
        self.dim = self.head.in_features
        self.dataset = run_dataset(run_dir, config)
        self.name = f"fid-clf: penultimate features ({self.dim}) of classifier {run_dir}"
        self.source = str(run_dir)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        hook = self.head.register_forward_pre_hook(lambda module, args: captured.append(args[0].flatten(1)))
        try:
            for x in images.split(batch_size):
                self.model(self.normalize(x.to(self.device)))
        finally:
            hook.remove()
        return torch.cat(captured).double().cpu()


class InceptionFeatures:
    """Inception-v3 pool3 features of the FID weights file ``weights`` (see :mod:`pdnn.inception`).

    Any file of the network's shapes loads, so the file's sha256 is recorded (``weights``), and
    one that is not the standard file (whose sha256 begins as its name ends, ``6726825d``, as
    torch.hub names files) is said to be so, in a warning and in the name the distances carry:
    they are then not comparable with published FIDs."""

    metric = "fid"
    dim = 2048

    def __init__(self, weights: str | Path, device="cpu"):
        self.model = load_fid_inception(weights).to(device)
        self.device = device
        digest = file_sha256(weights)
        self.weights = {"sha256": digest, "standard": digest.startswith(STANDARD_SHA256_PREFIX)}
        self.name = f"fid: Inception-v3 pool3 features (2048) from {Path(weights).name}"
        if not self.weights["standard"]:
            unlike = (f"sha256 {digest[:8]}..., not the standard FID weights' {STANDARD_SHA256_PREFIX}... "
                      "(pt_inception-2015-12-05-6726825d.pth): not comparable with published FIDs")
            warnings.warn(f"--inception-weights {weights} has {unlike}", stacklevel=2)
            self.name += f" ({unlike})"
        self.source = str(weights)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
        return torch.cat([self.model(x.to(self.device)).cpu() for x in images.split(batch_size)]).double()
