import warnings

import numpy as np
import pytest
import scipy.linalg

from pdnn.errors import UsageError
from pdnn.fid import feature_statistics, fid_from_features, frechet_distance, trace_sqrt_product


def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_cov(d, rank, rng, eps=0.0):
    a = rng.standard_normal((d, rank))
    return a @ a.T + eps * np.eye(d)


def scipy_distance(mu1, c1, mu2, c2):
    root = scipy.linalg.sqrtm(c1 @ c2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(root).real)


@pytest.mark.parametrize("d", [1, 3, 16])
def test_closed_form_for_commuting_gaussians(d):
    # C1 = Q diag(a) Q^T, C2 = Q diag(b) Q^T commute, so d^2 = |mu1-mu2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(d)
    q = random_rotation(d, rng)
    a, b = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_a_tiny_covariance_beside_a_large_one_is_still_checked():
    """Divided by the larger one's power of two, a covariance 1e-320 times smaller rounded to zero,
    and a non-symmetric or negative one got a distance back."""
    with pytest.raises(ValueError, match="cov1 is not symmetric"):
        frechet_distance(np.zeros(2), [[1e-20, 1e-21], [0.0, 1e-20]], np.zeros(2), np.eye(2) * 1e300)
    with pytest.raises(ValueError, match=r"cov1 has a negative eigenvalue \(-1e-20\)"):
        frechet_distance(np.zeros(2), -np.eye(2) * 1e-20, np.zeros(2), np.eye(2) * 1e300)
    tiny = np.array([[1e-323, 5e-324], [5e-324, 0.0]])  # eigenvalue -0.21 x 1e-323 underflows: two factors, not -0
    with pytest.raises(ValueError, match=r"cov1 has a negative eigenvalue \(-0\.207 x 2\*\*-1073\)"):
        frechet_distance(np.zeros(2), tiny, np.zeros(2), np.eye(2))
    partly = np.array([[4.0, 3.0], [3.0, 0.0]]) * 2.0**-1074  # -1.6 x 2**-1074: a subnormal would round it
    with pytest.raises(ValueError, match=r"cov1 has a negative eigenvalue \(-0\.401 x 2\*\*-1072\)"):
        frechet_distance(np.zeros(2), partly, np.zeros(2), np.eye(2))


def test_the_distance_of_the_largest_covariances_is_finite():
    """A divisor of 2**1024 was infinite: the distance came out NaN."""
    assert frechet_distance(np.zeros(1), [[2.0**1023]], np.zeros(1), [[0.0]]) == 2.0**1023
    largest = np.finfo(np.float64).max  # eigh of the user's matrices overflowed: NaN, or LinAlgError
    for d, size in ((1, largest), (2, 1e308), (3, 6e307)):  # identical: 0, up to round-off of the size
        cov = np.full((d, d), size)
        assert 0 <= frechet_distance(np.zeros(d), cov, np.zeros(d), cov) <= 1e-12 * size


@pytest.mark.parametrize("scale", [1e-170, 1e-300, 1e160, 1e300])
def test_the_distance_scales_with_the_covariances_at_any_size(scale):
    """S C2 S is of the covariances' size squared: at 1e-170 it underflowed (a distance 35x too
    large), at 1e160 it overflowed (numpy's LinAlgError)."""
    rng = np.random.default_rng(3)
    q = random_rotation(4, rng)
    a, b = rng.uniform(0.1, 4, 4), rng.uniform(0.1, 4, 4)
    zero = np.zeros(4)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(zero, (q * a) @ q.T * scale, zero, (q * b) @ q.T * scale)
    assert got / scale == pytest.approx(expected, rel=1e-9)


def test_identical_gaussians_are_at_distance_zero_and_distance_is_symmetric():
    rng = np.random.default_rng(1)
    c1, c2 = random_cov(8, 8, rng), random_cov(8, 3, rng)
    mu = rng.standard_normal(8)
    assert frechet_distance(mu, c1, mu, c1) == pytest.approx(0, abs=1e-9)
    # c2 has rank 3: its zero eigenvalues carry round-off ~1e-15 whose square roots (~3e-8) enter
    # the trace, so the two orders agree to ~1e-7, not to machine precision
    assert frechet_distance(mu, c1, 0 * mu, c2) == pytest.approx(frechet_distance(0 * mu, c2, mu, c1), abs=1e-6)


def test_one_dimension_is_the_wasserstein_distance():
    # for 1-D Gaussians: (m1-m2)^2 + (s1-s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)


def test_one_feature_from_samples_is_the_wasserstein_distance():
    """Features of one dimension (a width-1 penultimate layer): (m1 - m2)^2 + (s1 - s2)^2 with
    the samples' unbiased standard deviations (np.cov gave a scalar, which the distance refused)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 2.0, (500, 1)), rng.normal(3.0, 0.5, (500, 1))
    mean, cov = feature_statistics(a)
    assert mean.shape == (1,) and cov.shape == (1, 1)
    truth = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert fid_from_features(a, b) == pytest.approx(truth, rel=1e-9)


@pytest.mark.parametrize("d,rank,eps", [(10, 10, 0.0), (32, 32, 0.0), (20, 5, 1e-9), (20, 19, 1e-12),
                                        (40, 40, 1e-6)])
def test_agrees_with_scipy_sqrtm_on_random_covariances(d, rank, eps):
    rng = np.random.default_rng(d * 100 + rank)
    c1, c2 = random_cov(d, rank, rng, eps), random_cov(d, d, rng)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = scipy_distance(mu1, c1, mu2, c2)
    scale = np.trace(c1) + np.trace(c2)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, abs=1e-7 * scale)
    assert trace_sqrt_product(c1, c2) == pytest.approx(np.trace(scipy.linalg.sqrtm(c1 @ c2)).real,
                                                       abs=1e-7 * scale)


def test_exactly_singular_covariances():
    # both of rank 1 along the same axis: the distance is that of the 1-D Gaussians
    e = np.zeros((5, 5))
    e[2, 2] = 1
    assert frechet_distance(np.zeros(5), 4 * e, np.zeros(5), 9 * e) == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("d,rank", [(20, 5), (144, 10), (144, 30)])
def test_features_in_a_subspace_are_at_the_distance_of_their_coordinates(d, rank):
    """Features spanning a rank-k subspace of d dimensions (dead or collinear units) are an isometry
    of k coordinates, so their distance is exactly that of the coordinates: the round-off roots of
    the d - k null directions had added up to 6e-6 of it (R185), as scipy's sqrtm's do."""
    rng = np.random.default_rng(rank)
    basis, _ = np.linalg.qr(rng.standard_normal((d, rank)))  # orthonormal columns
    x, y = rng.standard_normal((300, rank)), 1.05 * rng.standard_normal((300, rank)) + 0.1
    assert fid_from_features(x @ basis.T, y @ basis.T) == pytest.approx(fid_from_features(x, y), rel=1e-12)


@pytest.mark.parametrize("d,smallest", [(256, 1e-6), (512, 1e-8)])
def test_full_rank_covariances_of_a_wide_spectrum_keep_their_small_eigenvalues(d, smallest):
    """C against k C has the closed form (1 + k - 2 sqrt(k)) tr C, and C against itself 0: taking
    eigenvalues within round-off of 0 as 0 had dropped true small ones, 1e-4 off (R188)."""
    rng = np.random.default_rng(d)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum = np.geomspace(1, smallest, d)
    cov = (basis * spectrum) @ basis.T
    cov = (cov + cov.T) / 2
    zero = np.zeros(d)
    assert frechet_distance(zero, cov, zero, cov) == pytest.approx(0, abs=1e-12 * spectrum.sum())
    k = 1.21
    assert frechet_distance(zero, cov, zero, k * cov) == pytest.approx((1 + k - 2 * np.sqrt(k)) * spectrum.sum(),
                                                                        rel=1e-11)


def test_a_covariance_changed_in_place_is_decomposed_anew():
    """Decompositions are kept by content (one real set against every T), never by the array."""
    rng = np.random.default_rng(5)
    c1, c2, mu = random_cov(6, 6, rng), random_cov(6, 6, rng), np.zeros(6)
    first = frechet_distance(mu, c1, mu, c2)
    assert frechet_distance(mu, c1, mu, c2) == first
    c2 *= 4.0
    assert frechet_distance(mu, c1, mu, c2) == pytest.approx(scipy_distance(mu, c1, mu, c2), rel=1e-9)
    assert frechet_distance(mu, c1, mu, c2) != pytest.approx(first)


def test_sample_estimate_converges_to_the_closed_form():
    # n = 20000 draws of 4 features: each covariance entry has standard error ~ sqrt(2/n) ~ 0.01,
    # so the estimated distance (0 in truth for equal laws) stays well below 0.05
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20000, 4)), rng.standard_normal((20000, 4))
    assert fid_from_features(a, b) < 0.05
    shifted = fid_from_features(a, b + 1.0)  # truth: |(1,1,1,1)|^2 = 4
    assert shifted == pytest.approx(4, abs=0.1)


def test_too_few_images_for_the_covariance_is_a_clear_error():
    with pytest.raises(ValueError, match=r"too few for the covariance of 64 features; expected at least 65$"):
        feature_statistics(np.zeros((64, 64)))


def test_mismatched_or_nan_statistics_are_refused():
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"means of shape \(d,\)"):
        frechet_distance(0.0, 1.0, 0.0, 1.0)
    # eigh would read one triangle of a non-symmetric matrix, and clip a negative one to 0: distance 0
    with pytest.raises(ValueError, match="cov1 is not symmetric"):
        frechet_distance(np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"cov2 has a negative eigenvalue \(-1\)"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))
    finite = np.random.default_rng(0).normal(size=(5, 2))
    for a, b, named in ((finite * np.nan, finite, "features a"), (finite, finite * np.inf, "features b")):
        with pytest.raises(ValueError, match=f"^{named} hold NaN or infinite values"):  # (it named neither; R214)
            fid_from_features(a, b)


def test_a_huge_negative_eigenvalue_is_named_without_an_overflow_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UsageError, match=r"negative eigenvalue \(-3.78 x 2\*\*1023\)"):
            frechet_distance(np.zeros(2), -np.full((2, 2), 1.7e308), np.zeros(2), np.eye(2))
