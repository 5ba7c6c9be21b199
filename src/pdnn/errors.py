"""The error of a user's input: a value, a name or a file that the tool cannot accept.

``pdnn`` prints a :class:`UsageError` (and :class:`pdnn.runs.RunError`, a :class:`ToolError`, an
``OSError`` from the file system, and memory running out) as one line naming the problem and exits
with status 2. Any
other exception is a mistake in the program, and its traceback is shown. Validation of anything
a user can pass raises ``UsageError``; it is a ``ValueError``, so library callers may catch either.
"""
from __future__ import annotations

import torch


class UsageError(ValueError):
    """A value, a name or a file given to pdnn is not acceptable; the message names it and says
    what was expected."""


class ToolError(RuntimeError):
    """An outside program pdnn runs (a simulator, a synthesiser) failed; the message names it, its
    exit status and the end of what it said."""


_NO_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "integer multiplication overflow")


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says memory ran out: Python's ``MemoryError``, torch's GPU
    ``OutOfMemoryError``, or its CPU allocator's ``RuntimeError`` (a width or count of 10**12 asks
    for terabytes: a limit of the machine, not a mistake of the program), or a tensor's number of
    elements beyond 2**63 - 1 (T = 2**62 samples of an image)."""
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and any(said in str(err) for said in _NO_MEMORY))

