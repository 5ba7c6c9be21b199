"""Which torch device a command runs on: the one place a ``--device`` value is checked.

``torch.device("tpu9")`` raises a ``RuntimeError`` and ``torch.device("cuda")`` is accepted even
by a CPU-only build, which then fails deep inside ``torch.load`` or ``.to()`` with a message about
a checkpoint or a tensor. Checking the name and its availability before anything is read or
written turns both into one line that names the value.
"""
from __future__ import annotations

import functools
import platform

import torch

from .errors import UsageError

SUPPORTED = ("cpu", "cuda")  # device types pdnn runs on (with an index: cuda:1)


def indexed(device: str | torch.device) -> torch.device:
    """``device`` with its index: ``cuda`` is the current GPU, which its tensors report as
    ``cuda:<i>``. Streams kept per device are keyed by this, so ``cuda`` and ``cuda:0`` are one."""
    device = torch.device(device)
    if device.index is None and device.type != "cpu":
        device = torch.device(device.type, torch.cuda.current_device() if device.type == "cuda" else 0)
    return device


@functools.cache
def processor_name() -> str:
    """The CPU's model name, for the records of where a figure was measured: ``/proc/cpuinfo``'s
    on Linux (``platform.processor()`` there says only ``x86_64``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def where_measured() -> dict:
    """The processor, its vector instructions as torch uses them, the threads torch uses and
    torch's version: what a time or a figure depends on besides the device, recorded beside it.

    The model name alone does not tell the vector width: an AMD Zen 3 (AVX2) and a Zen 4
    (AVX-512) both report "AMD EPYC", yet torch's kernels split and round sums by the width, so a
    sampled network's bits, and with them a trained run, differ between the two."""
    return {"threads": torch.get_num_threads(), "processor": processor_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": str(torch.__version__)}


def processor_text(record: dict) -> str:
    """A record's processor with its vector instructions, ``AMD EPYC (AVX2)``; a record written
    before pdnn recorded them is said as it was, by the model name alone."""
    capability = record.get("cpu_capability")
    return str(record.get("processor", "?")) + (f" ({capability})" if capability else "")


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | torch.device | None) -> str:
    """The device ``name`` stands for, checked to exist here (``None``: :func:`default_device`).

    Raises :class:`~pdnn.errors.UsageError` naming the value for an unknown device type, a type
    pdnn does not run on, or a device this machine (or this build of torch) does not have.
    """
    if name is None:
        return default_device()
    text = str(name)
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {text!r}; expected one of {', '.join(SUPPORTED)} "
                         "(with an index where there are several, e.g. cuda:1)") from None
    if device.type == "mps":  # (it would fail at the end of the first pass, after an epoch of training)
        raise UsageError(f"device {text!r} is not supported: pdnn sums accuracies and statistics in float64, which "
                         "MPS lacks; use --device cpu")
    if device.type not in SUPPORTED:
        raise UsageError(f"device {text!r} is not supported; expected one of {', '.join(SUPPORTED)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise UsageError(f"device {text!r} is not available: {build}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {text!r} is not available: this machine has "
                             f"{torch.cuda.device_count()} GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return str(device)
