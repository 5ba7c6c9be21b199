"""The Fréchet distance between two sets of image features, computed exactly.

For Gaussians N(mu1, C1) and N(mu2, C2) the squared Fréchet (2-Wasserstein) distance is

    d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2)).

``tr((C1 C2)^(1/2))`` is computed without a general matrix square root: with S1 = C1^(1/2) and
S2 = C2^(1/2) (symmetric eigendecompositions, negative round-off eigenvalues clipped to 0), C1 C2
is similar to S1 C2 S1 = (S1 S2)(S1 S2)^T, so the trace is the sum of the singular values of
S1 S2. This is exact for any covariances, also singular ones, where ``scipy.linalg.sqrtm`` of the
non-symmetric product returns complex round-off that implementations have to discard; and a
singular value that is 0 comes out near eps times the largest, where the square root of an
eigenvalue of S1 C2 S1 would be near sqrt(eps) times it. Both covariances are first divided by one
power of two near their size, so that nothing underflows or overflows whatever their scale.

What the features are is the business of a feature extractor (:mod:`pdnn.features`); the FID of
the literature is this distance on Inception-v3 pool3 features.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from .errors import UsageError


def _psd_sqrt(values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """C^(1/2) from the eigendecomposition of a symmetric C (round-off below 0 clipped to 0)."""
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _trace_sqrt(root1: np.ndarray, root2: np.ndarray) -> float:
    """``tr((C1 C2)^(1/2))`` from ``C1^(1/2)`` and ``C2^(1/2)``: the sum of their product's singular
    values (the module docstring says why). The square roots of S1 C2 S1's eigenvalues had summed
    the round-off of rank-deficient covariances' null directions to 6e-6 of the distance, and
    dropping eigenvalues within round-off of 0 dropped true small ones of full-rank covariances."""
    return float(np.linalg.svd(root1 @ root2, compute_uv=False).sum())


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """``tr((C1 C2)^(1/2))`` for symmetric positive semi-definite ``C1``, ``C2``."""
    roots = [_psd_sqrt(*np.linalg.eigh(np.asarray(cov, dtype=np.float64))) for cov in (cov1, cov2)]
    return _trace_sqrt(*roots)


def _checked_eigh(name: str, cov: np.ndarray, unit: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The eigenvalues and eigenvectors of ``cov``, once it is known to be a covariance: eigh reads
    one triangle of a matrix that is not symmetric, and the square root clips negative eigenvalues,
    so either would give a distance silently. ``cov`` is the user's divided by ``unit``, which the
    message multiplies back. The last two are kept, by content: ``pdnn fid`` measures one real set
    against the images of every T and repeat (an eigendecomposition of 2048 features each time)."""
    key = (cov.shape, hashlib.blake2b(cov.tobytes(), digest_size=16).digest())
    if key in _DECOMPOSED:
        _DECOMPOSED.move_to_end(key)
        return _DECOMPOSED[key]
    scale = max(float(np.abs(cov).max()), np.finfo(np.float64).tiny)
    if not np.allclose(cov, cov.T, rtol=0, atol=1e-9 * scale):
        raise UsageError(f"{name} is not symmetric; expected a covariance")
    values, vectors = np.linalg.eigh(cov)
    if values.min() < -1e-9 * scale * len(cov):
        with np.errstate(over="ignore"):  # (beyond normal floats it would lose digits or overflow: two factors)
            low = values.min() * unit
        normal = np.finfo(np.float64).tiny <= abs(low) <= np.finfo(np.float64).max
        shown = f"{low:.3g}" if normal else f"{values.min():.3g} x 2**{int(np.log2(unit))}"
        raise UsageError(f"{name} has a negative eigenvalue ({shown}); expected a covariance "
                         "(positive semi-definite)")
    _DECOMPOSED[key] = values, vectors
    if len(_DECOMPOSED) > 2:
        _DECOMPOSED.popitem(last=False)
    return values, vectors


_DECOMPOSED: OrderedDict = OrderedDict()  # _checked_eigh's, least recently used first


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (see the module docstring)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    d = mu1.shape[0] if mu1.ndim else 0
    if not d or mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise UsageError(f"expected means of shape (d,) and covariances (d, d), d >= 1; got "
                         f"{mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}")
    for name, a in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not np.isfinite(a).all():
            raise UsageError(f"{name} holds NaN or infinite values")
    # eigh overflows near the largest floats, and the square roots' product of tiny ones underflows.
    # So each is checked divided by a power of two near its own size (exact: the same bits, only the
    # exponent moves; a tiny one is not lost beside a large one), and the trace is taken with both
    # divided by the larger of the two.
    unit1, unit2 = _unit(cov1), _unit(cov2)
    scale = max(unit1, unit2)
    roots = []
    for name, cov, unit in (("cov1", cov1, unit1), ("cov2", cov2, unit2)):
        values, vectors = _checked_eigh(name, cov / unit, unit)
        roots.append(_psd_sqrt(values * (unit / scale), vectors))
    cov1, cov2 = cov1 / scale, cov2 / scale
    diff = mu1 - mu2
    spread = np.trace(cov1) + np.trace(cov2) - 2 * _trace_sqrt(*roots)
    return max(float(diff @ diff + scale * spread), 0.0)


def _unit(cov: np.ndarray) -> float:
    """A power of two at most the largest entry of ``cov`` and over half of it (1/2 for zeros)."""
    return float(np.ldexp(1.0, int(np.frexp(np.abs(cov).max())[1]) - 1))


def min_images(dim: int) -> int:
    """Fewest images whose covariance of ``dim`` features can have full rank: ``dim + 1``."""
    return dim + 1


def feature_statistics(features: torch.Tensor | np.ndarray, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features ``[N, d]``; N must be at least ``d + 1``.
    ``what``: the features as an error names them."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                   dtype=np.float64)
    if f.ndim != 2:
        raise UsageError(f"features must be [N, d], got shape {f.shape}")
    n, d = f.shape
    if n < min_images(d):
        raise UsageError(f"{n} images are too few for the covariance of {d} features; "
                         f"expected at least {min_images(d)}")  # (a library call has no --n)
    if not np.isfinite(f).all():
        raise UsageError(f"{what} hold NaN or infinite values")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))  # [1, 1] for one feature, not a scalar


def fid_from_features(a, b) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets ``a`` and ``b``."""
    return frechet_distance(*feature_statistics(a, "features a"), *feature_statistics(b, "features b"))
