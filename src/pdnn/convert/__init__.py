"""Sampling without retraining: make a trained deterministic network stochastic.

The paper's second route: take a network that was trained deterministically and gain accuracy
from sampling it, without changing a single weight. :func:`to_sampled` returns a converted copy
(the input is never modified) whose activations draw random numbers:

* ``method="pbit"``: ``tanh`` / ``sigmoid`` / ``hardtanh`` activations (and pdnn ``Quantize``)
  become p-bits of equal mean: ``nn.Tanh`` -> ``PBit("bipolar", β)`` (``E[b] = tanh(βx)``),
  ``nn.Sigmoid`` -> ``PBit("unipolar", β)`` (``E[b] = σ(βx)``), ``nn.Hardtanh(a, c)`` ->
  ``HardPBit(a, c, β)`` (bits in {a, c}, ``E[b] = clamp(βx, a, c)``), ``Quantize(k, β_q)`` ->
  ``PBit(mode, β_q·β)`` (the mean is the unrounded activation). ``β = 1`` keeps the mean equal
  to the trained activation; ``β < 1`` is a higher temperature.
* ``method="dither"``: every pdnn ``Quantize(k)`` gets uniform noise of ``scale`` quantisation
  steps added before rounding (:class:`pdnn.nn.DitheredQuantize`); one step makes the mean equal
  to the unrounded activation.
* ``method="gaussian"`` / ``"logistic"``: noise of scale ``scale`` is added to the
  pre-activation of every activation (any kind, ReLU included); the activation is unchanged.

Activations that are modules are swapped in place in the copy (the model keeps its class and
module names); activations called as functions inside ``forward`` (``torch.tanh``,
``F.sigmoid``, ``x.tanh()``, ``F.hardtanh``, ``F.relu``, ...) are found and rewritten with
``torch.fx`` (the result is then a ``GraphModule``). What cannot be converted is listed by name
in a :class:`ConversionError`.

The conversion is described by a JSON-serialisable *spec* -- exactly the keyword arguments of
:func:`to_sampled` -- which a converted run directory stores in ``config.json["convert"]`` and
:func:`load_model` replays on the source weights. ``bn_stats`` (optional) carries
BatchNorm running statistics re-estimated under sampling by :func:`recalibrate_batchnorm`: the
only numbers of the network a conversion may change (no weight ever changes).

:func:`calibrate` chooses the scale (or β) by a sweep on held-out *training* examples (globally,
then optionally layer by layer), :func:`convert_run` writes a converted run directory and
:func:`restore_checkpoint` recreates its weights from the source run. Only pdnn ``Quantize``
modules are quantisers here: a ``torch.sign`` or ``torch.clamp`` inside ``forward`` is not
recognised. See ``docs/convert.md``.
"""
from .batchnorm import batchnorms_after_noise, recalibrate_batchnorm
from .calibration import CRITERION, PER_LAYER_RULE, calibrate, format_calibration
from .methods import DEFAULT_SCALE, DEFAULT_VALUES, LAYER_SETS, METHODS, ConversionError, parameter_of
from .rewrite import conversion_spec, load_bn_stats, to_sampled
from .rundir import (CALIBRATION, build_model, convert_run, holdout_indices, load_measured, load_model, model_config,
                     replay, restore_checkpoint)
from .sites import find_activations

__all__ = [
    "CALIBRATION", "CRITERION", "DEFAULT_SCALE", "DEFAULT_VALUES", "LAYER_SETS", "METHODS", "PER_LAYER_RULE",
    "ConversionError", "batchnorms_after_noise", "build_model", "calibrate", "conversion_spec", "convert_run", "find_activations",
    "format_calibration", "holdout_indices", "load_bn_stats", "load_measured", "load_model", "model_config", "parameter_of",
    "recalibrate_batchnorm", "replay", "restore_checkpoint", "to_sampled",
]
