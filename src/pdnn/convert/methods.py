"""The conversion methods: their names, the parameter each is tuned by and its defaults.

The vocabulary the other modules of :mod:`pdnn.convert` share, and the error they raise for a
model that cannot be converted.
"""
from __future__ import annotations

from ..checks import LAYER_SETS, METHODS, one_of  # noqa: F401  (the names, shared by the package)
from ..errors import UsageError

DEFAULT_SCALE = {"gaussian": 0.5, "logistic": 0.25, "dither": 1.0}
# the sweep of calibrate(): beta for pbit, the noise scale for the others. Wide enough that the
# choices seen on real runs (cold p-bits, narrow dither, almost no noise) lie inside, not at an edge.
DEFAULT_VALUES = {
    "pbit": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0),
    "dither": (0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
    "gaussian": (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
    "logistic": (0.005, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3),
}


class ConversionError(UsageError):
    """A model cannot be converted; the message names the operations it could not handle."""


def parameter_of(method: str) -> str:
    """The spec key a method is tuned by: ``"beta"`` for pbit, ``"scale"`` for the others."""
    _check_method(method)
    return "beta" if method == "pbit" else "scale"


def _check_method(method: str) -> str:
    return one_of("conversion method", method, METHODS)

