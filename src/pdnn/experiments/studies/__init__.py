"""The studies of ``pdnn reproduce``, in the order the plan runs them (later studies read the runs
of earlier ones). Each module has ``NAME``, ``TITLE``, ``steps(ctx)`` and ``section(ctx)``; see
:mod:`pdnn.experiments.plan`."""
from . import accuracy, adaptive, energy, lowbit

STUDIES = (accuracy, energy, lowbit, adaptive)
