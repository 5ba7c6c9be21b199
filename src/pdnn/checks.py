"""What an argument may be: the names that options accept, and the checks every module uses.

The names live here once, so the library's checks and the command line's ``choices=`` cannot
drift apart; the checks raise a :class:`~pdnn.errors.UsageError` (a ``ValueError``) naming the
argument, the value and what was expected, which the ``pdnn`` command prints as one line.

    >>> positive_int("repeats", 3)
    3
    >>> positive_int("repeats", 0)
    Traceback (most recent call last):
    ...
    pdnn.errors.UsageError: repeats must be an integer >= 1, got 0
    >>> one_of("aggregate", "chip", AGGREGATIONS)
    Traceback (most recent call last):
    ...
    pdnn.errors.UsageError: unknown aggregate 'chip'; expected one of network, layer
"""
from __future__ import annotations

import operator
from typing import Sequence

from .errors import UsageError

AGGREGATIONS = ("network", "layer")  # where T samples are averaged: at the output, or after every layer
REDUCTIONS = ("mean", "vote", "none")  # how a SampledModel combines its samples' outputs
LOSS_RULES = ("mean-output", "mean-loss")  # sample-aware training: the loss of the mean, or the mean loss
SCHEDULES = ("constant", "cosine")  # learning-rate schedules
METHODS = ("pbit", "dither", "gaussian", "logistic")  # ways to convert a deterministic network
LAYER_SETS = ("hidden", "all")  # which activations a conversion makes stochastic
REUSE_MODES = ("per-eo", "per-inference", "per-batch")  # how often a weight is read from memory


def is_boolean(value) -> bool:
    """Python's, numpy's or torch's ``True``/``False``: a flag, where a number is asked for (which
    Python, numpy and torch would all read as 1 or 0)."""
    return isinstance(value, bool) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool")


def as_real(value) -> float | None:
    """``value`` as a float if it is a real number (numpy's and torch's scalars too), else
    ``None``: a flag (``True`` is no number), a string (``"2"`` is a typo, not a number), or what
    ``float`` refuses or cannot hold (``10**400``)."""
    if is_boolean(value) or isinstance(value, (str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in words: "1 process", "3 processes" (``plural`` where it is not noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def shown(value, width: int = 60) -> str:
    """``repr(value)`` for an error message, cut to ``width`` characters (10**5000 has no repr at
    all: Python refuses to write an integer of more than 4300 digits)."""
    try:
        text = repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"{'a negative' if value < 0 else 'an'} integer of {value.bit_length()} bits"
        return f"a {type(value).__name__} holding an integer too long to write"
    return text if len(text) <= width else text[: width - 3] + "..."


def batch_tensor(who: str, value) -> None:
    """Check that ``value``, the first positional argument of a call of ``who``, is a tensor with a
    batch dimension: the one the samples fold along."""
    if getattr(value, "ndim", 0) and callable(getattr(value, "dim", None)):  # (a tensor: numpy's arrays lack .dim)
        return
    kind = type(value).__qualname__ if type(value).__module__ == "builtins" else \
        f"{type(value).__module__.partition('.')[0]}.{type(value).__qualname__}"
    if (shape := getattr(value, "shape", None)) is not None:
        got = f"a {kind} of shape {tuple(shape)}"
    elif isinstance(value, dict):
        got = f"a dict with keys {shown(list(value))}"
    elif isinstance(value, (list, tuple)):
        got = f"a {kind} of {len(value)}"
    else:
        got = shown(value)
    raise UsageError(f"{who} takes the batch [B, ...] as a tensor, its first positional argument, the one the "
                     f"samples fold along; got {got}")


def integer(value) -> int | None:
    """``value`` as an ``int`` if it is an integer (numpy's and torch's scalars too; ``True`` is not a
    number, nor is a one-element array), else None."""
    if is_boolean(value) or getattr(value, "ndim", 0) != 0:
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


MAX_COUNT = 2**63 - 1  # torch's int64: sizes, indices and seeds beyond it overflow


def positive_int(name: str, value, expected: str = "an integer >= 1", most: int | None = MAX_COUNT) -> int:
    """``value`` as an ``int`` if it is an integer from 1 to ``most`` (numpy's too; ``True`` is not
    a count), else a ``UsageError`` naming ``name``, ``value`` and ``expected`` (which may add what
    the number means). ``most``: torch's largest count by default, beyond which a size or an index
    overflows deep in the work; ``None`` for a cap, where any larger number means all."""
    number = integer(value)
    if number is None or number < 1:
        raise UsageError(f"{name} must be {expected}, got {shown(value)}")
    if most is not None and number > most:
        raise UsageError(f"{name} must be {expected}, got {shown(value)}, more than "
                         f"{'2**63 - 1, the largest count torch holds' if most == MAX_COUNT else most}")
    return number


def positive_ints(name: str, values, expected: str = "positive integers", length: int | None = None) -> tuple:
    """``values`` as a tuple of ``int`` if it holds at least one (or exactly ``length``) integer
    >= 1 (numpy's too), e.g. a shape, else a ``UsageError`` naming ``name``, ``values`` and
    ``expected``."""
    try:
        shape = tuple(values)
    except TypeError:  # one number where a sequence is expected
        raise UsageError(f"{name} must be {expected}, got {shown(values)}") from None
    numbers = tuple(integer(s) for s in shape)
    if not shape or (length is not None and len(shape) != length) or any(n is None or n < 1 for n in numbers):
        raise UsageError(f"{name} must be {expected}, got {shown(values)}")
    return numbers


def one_of(name: str, value, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ``UsageError`` that lists them."""
    if value not in choices:
        raise UsageError(f"unknown {name} {shown(value)}; expected one of {', '.join(choices)}")
    return value


def torch_seed(name: str, value, span: int = 0) -> int:
    """``value`` as an ``int`` if a ``torch.Generator`` can be seeded with it, and with every seed
    up to ``value + span`` (the further seeds derived from it), i.e. an integer (numpy's too; not
    ``True``) in [-2**63, 2**64 - span); else a ``UsageError`` naming ``value`` as given: torch
    would only refuse it at the first draw, far from where it was given. (Its CPU generator reads
    the seed's low 32 bits: seeds that differ by a multiple of 2**32 draw alike there.)"""
    number = integer(value)
    if number is None or not -(2**63) <= number < 2**64 - span:
        derived = f" (the seeds up to {name} + {shown(span)} are used)" if span else ""
        raise UsageError(f"{name} must be an integer in [-2**63, 2**64{f' - {shown(span)}' if span else ''}){derived}, "
                         f"got {shown(value)}")
    return number
