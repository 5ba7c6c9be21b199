"""The studies of ``pdnn reproduce``, in the order the plan runs them (later studies read the runs
of earlier ones). Each module has ``NAME``, ``TITLE``, ``steps(ctx)`` and ``section(ctx)``; see
:mod:`pdnn.experiments.plan`."""
from . import accuracy, adaptive, energy, generation, hardware, lowbit, noise

STUDIES = (accuracy, energy, lowbit, noise, generation, adaptive, hardware)
