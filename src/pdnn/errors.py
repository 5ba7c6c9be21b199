"""The error of a user's input: a value, a name or a file that the tool cannot accept.

``pdnn`` prints a :class:`UsageError` (and :class:`pdnn.runs.RunError`, a :class:`ToolError`, an
``OSError`` from the file system, and memory running out) as one line naming the problem and exits
with status 2. Any
other exception is a mistake in the program, and its traceback is shown. Validation of anything
a user can pass raises ``UsageError``; it is a ``ValueError``, so library callers may catch either.
"""
from __future__ import annotations


class UsageError(ValueError):
    """A value, a name or a file given to pdnn is not acceptable; the message names it and says
    what was expected."""


class ToolError(RuntimeError):
    """An outside program pdnn runs (a simulator, a synthesiser) failed; the message names it, its
    exit status and the end of what it said."""
