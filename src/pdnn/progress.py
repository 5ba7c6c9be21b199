"""Progress bars that draw only on a terminal.

Redrawn bars written into a log file are noise (a 10-epoch demo wrote 140 kB of them), so a bar
shows only when standard error is a terminal; commands print one line per epoch or step instead.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(*args, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(*args, **kwargs)``, disabled unless ``enabled`` and stderr is a terminal."""
    return tqdm(*args, disable=not (enabled and sys.stderr.isatty()), **kwargs)
