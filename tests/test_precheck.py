"""The search's pre-check (`ballistix.features.precheck`): whole-surface correlation, one query against many."""

import cv2
import numpy as np
import pytest

import ballistix as bx
from ballistix.features.cmc import rotate_nan
from ballistix.features.precheck import CoarseQuery, precheck_scores

SPACING = 6.25e-6


def surface(seed, n=320, sigma=3.0):
    """A band-limited random surface with the round field of a breech face (NaN outside)."""
    z = cv2.GaussianBlur(np.random.default_rng(seed).standard_normal((n, n)), (0, 0), sigma)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    z[np.hypot(yy, xx) > 0.45 * n] = np.nan
    return z * 1e-6


def scan(z):
    return bx.Scan(z, SPACING, SPACING, {})


def test_a_turned_and_shifted_copy_scores_high_at_its_rotation_and_others_low():
    a = surface(0)
    turned = rotate_nan(a, 40.0).astype(float)
    turned = np.roll(turned, (12, -8), axis=(0, 1)) + 0.5 * surface(1)  # 75 um and 50 um, plus noise
    q = CoarseQuery(scan(a))
    same, angle = q.score(scan(turned))
    assert same > 0.4 and abs((angle - 320.0 + 180) % 360 - 180) <= 3.0  # turned back by -40 degrees
    others = [q.score(scan(surface(s)))[0] for s in (2, 3, 4)]
    assert max(others) < 0.25 < same
    # a shift beyond max_shift_um is not searched
    far = np.roll(rotate_nan(a, 40.0).astype(float), 60, axis=1)  # 375 um
    assert CoarseQuery(scan(a), max_shift_um=100.0).score(scan(far))[0] < q.score(scan(far))[0]


def test_candidates_of_other_sizes_and_empty_ones():
    a = surface(5)
    q = CoarseQuery(scan(a))
    bigger = np.pad(rotate_nan(a, 10.0).astype(float), 30, constant_values=np.nan)
    assert q.score(scan(bigger))[0] > 0.5
    assert q.score(scan(a[100:140, 100:140]))[0] < 0.5  # a small piece: cut to the query's box, still scored
    empty = np.full((64, 64), np.nan)
    empty[0, 0] = 1e-6
    assert q.score(scan(empty)) == (-1.0, pytest.approx(float("nan"), nan_ok=True))
    with pytest.raises(bx.ParameterError, match="spacing"):
        q.score(bx.Scan(a, 2 * SPACING, 2 * SPACING, {}))


def test_scores_on_workers_are_the_scores_here():
    q = scan(surface(7))
    targets = [scan(rotate_nan(surface(7), 25.0 * k).astype(float)) for k in range(3)] + [scan(surface(8))]
    here = precheck_scores(q, targets)
    assert here.shape == (4,) and here[:3].min() > here[3]
    np.testing.assert_array_equal(precheck_scores(q, targets, n_jobs=2), here)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"factor": 0}, "factor"),
        ({"step_deg": -1}, "step_deg"),
        ({"max_shift_um": 0}, "max_shift_um"),
        ({"x": 1}, "unknown"),
    ],
)
def test_settings_are_checked(kwargs, match):
    with pytest.raises(bx.ParameterError, match=match):
        CoarseQuery(scan(surface(0)), **kwargs)


def test_scores_on_a_dask_cluster_are_the_scores_here():
    distributed = pytest.importorskip("distributed")
    q = scan(surface(9))
    targets = [scan(rotate_nan(surface(9), 60.0).astype(float)), scan(surface(10)), scan(surface(11))]
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as lc,
        distributed.Client(lc) as client,
    ):
        np.testing.assert_array_equal(precheck_scores(q, targets, client=client), precheck_scores(q, targets))
