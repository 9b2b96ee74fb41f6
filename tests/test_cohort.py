import math

import numpy as np
import pytest

from ballistix.cohort import CohortStats, cohort_stats, normalise, normalise_pairs
from ballistix.errors import BallistixError, ParameterError


@pytest.mark.parametrize(
    "scores, kw, loc, scale, n",
    [
        ([1, 2, 2, 3, 1, 0, 15], dict(exclude_top=1, min_size=5), 1.5, 1.4826 * 0.5, 6),
        ([1, 2, 2, 3, 1, 0, 15], dict(exclude_top=0, min_size=5), 2.0, 1.4826, 7),
        ([4, 4, 4, 4, 4, 30], dict(exclude_top=1, min_size=5, min_scale=1.0), 4.0, 1.0, 5),  # floor
        ([0, 1, 2, 3, 4, np.nan, 99], dict(exclude_top=1, min_size=5, quantile=1.0), 4.0, 1.4826, 5),  # NaN ignored
        ([5.0] * 6, dict(exclude_top=0, min_size=6, min_scale=0.5), 5.0, 0.5, 6),
    ],
)
def test_cohort_stats_values(scores, kw, loc, scale, n):
    st = cohort_stats(scores, **kw)
    assert st.location == pytest.approx(loc) and st.scale == pytest.approx(scale) and st.n == n
    assert st.reason is None


@pytest.mark.parametrize(
    "scores, kw, why",
    [
        ([], {}, "fewer than min_size"),  # empty cohort
        ([np.nan, np.nan], dict(exclude_top=0, min_size=1), "fewer than min_size"),
        ([3, 9], dict(exclude_top=1, min_size=2), "fewer than min_size"),  # too small after the top is dropped
        ([2, 2, 2, 2, 2, 2], dict(exclude_top=1, min_size=3), "do not spread"),  # all equal, no floor
    ],
)
def test_cohort_stats_no_fake_numbers(scores, kw, why):
    st = cohort_stats(scores, **kw)
    assert why in st.reason
    assert math.isnan(st.scale)
    if "spread" in why:
        assert st.location == 2.0  # the location is still known; only the scale is not
    else:
        assert math.isnan(st.location)


@pytest.mark.parametrize(
    "bad",
    [
        dict(exclude_top=-1),
        dict(exclude_top=1.5),
        dict(min_size=0),
        dict(quantile=2),
        dict(min_scale=-1),
        dict(min_scale=float("inf")),
        dict(exclude_top=True),
    ],
)
def test_cohort_stats_rejects_bad_options(bad):
    with pytest.raises(ParameterError):
        cohort_stats([1, 2, 3, 4, 5, 6], **bad)


def test_cohort_stats_rejects_bad_scores():
    with pytest.raises(BallistixError):
        cohort_stats([[1, 2], [3, 4]])
    with pytest.raises(ParameterError):
        cohort_stats([1, np.inf, 2])


@pytest.mark.parametrize("method, expected", [("excess", [6.0, -3.0]), ("s-norm", [5.0, -1.75])])
def test_normalise(method, expected):
    a, b = CohortStats(2.0, 1.0, 10), CohortStats(3.0, 2.0, 10)
    assert normalise([9.0, 0.0], a, b, method=method).tolist() == pytest.approx(expected)


def test_normalise_nan_when_a_cohort_is_missing():
    ok, missing = CohortStats(2.0, 1.0, 10), CohortStats(float("nan"), float("nan"), 0, "no cohort")
    flat = CohortStats(2.0, float("nan"), 10, "do not spread")
    assert np.isnan(normalise(5.0, ok, missing)).all()
    assert normalise(5.0, ok, flat, method="excess").tolist() == [3.0]  # excess needs no scale
    assert np.isnan(normalise(5.0, ok, flat, method="s-norm")).all()
    with pytest.raises(ParameterError):
        normalise(5.0, ok, ok, method="z")
    with pytest.raises(ParameterError):
        normalise([1.0, 2.0, 3.0], [ok, ok], ok)


def _all_pairs(ids):
    a, b = zip(*[(x, y) for i, x in enumerate(ids) for y in ids[i + 1 :]])
    return list(a), list(b)


def test_normalise_pairs_removes_a_batch_shift():
    """Two batches of six exhibits from three guns: within a batch every score is raised by 8."""
    ids = [f"{g}{k}" for k in range(4) for g in "PQRSTU"][:12]
    gun = {x: x[0] for x in ids}
    batch = {x: "B1" if int(x[1]) % 2 == 0 else "B2" for x in ids}
    a, b = _all_pairs(ids)
    rng = np.random.default_rng(0)
    same = np.array([gun[x] == gun[y] for x, y in zip(a, b)])
    within = np.array([batch[x] == batch[y] for x, y in zip(a, b)])
    raw = np.where(same, 15.0, 1.0) + 8.0 * within + rng.integers(0, 2, len(a))
    z = normalise_pairs(
        a, b, raw, keys_a=[batch[x] for x in a], keys_b=[batch[y] for y in b], exclude_top=1, min_size=3
    )
    assert np.isfinite(z).all()
    assert raw[~same & within].min() > raw[~same & ~within].max()  # the batch effect, raw
    assert z[~same].max() < z[same].min()  # gone after normalising
    assert abs(np.median(z[~same & within]) - np.median(z[~same & ~within])) <= 1.0


def test_normalise_pairs_known_same_and_empty_cohorts():
    # "s" is compared only with its same-gun mate "t": no cohort, NaN, and says why
    a = ["s", "x", "x", "x", "y", "y", "z"]
    b = ["t", "y", "z", "w", "z", "w", "w"]
    raw = [20, 1, 2, 1, 2, 1, 3]
    known = np.array([True, False, False, False, False, False, False])
    z, st = normalise_pairs(a, b, raw, known_same=known, exclude_top=0, min_size=2, return_stats=True)
    assert np.isnan(z[0]) and "fewer than min_size" in st["a"][0].reason
    assert np.isfinite(z[1:]).all()
    assert st["a"][1].n == 2  # x's cohort for (x, y): z and w, not y itself
    # without leaving the pair out, the pair's own score joins its cohorts
    _, st2 = normalise_pairs(a, b, raw, exclude_top=0, min_size=2, leave_pair_out=False, return_stats=True)
    assert st2["a"][1].n == 3


def test_normalise_pairs_all_equal_scores():
    a, b = _all_pairs(list("abcdef"))
    flat = np.full(len(a), 3.0)
    assert np.all(normalise_pairs(a, b, flat, exclude_top=0, min_size=3) == 0.0)
    assert np.isnan(normalise_pairs(a, b, flat, exclude_top=0, min_size=3, method="s-norm")).all()
    z = normalise_pairs(a, b, flat, exclude_top=0, min_size=3, method="s-norm", min_scale=1.0)
    assert np.all(z == 0.0)


def test_normalise_pairs_keys_restrict_the_cohort():
    a, b = _all_pairs(list("abcd"))
    key = {"a": 1, "b": 1, "c": 2, "d": 2}
    _, st = normalise_pairs(
        a,
        b,
        np.arange(len(a), dtype=float),
        keys_a=[key[x] for x in a],
        keys_b=[key[y] for y in b],
        exclude_top=0,
        min_size=1,
        return_stats=True,
    )
    # pair (a, c): a's cohort is a's comparisons with key-2 exhibits other than c: only d
    i = list(zip(a, b)).index(("a", "c"))
    assert st["a"][i].n == 1 and st["b"][i].n == 1


@pytest.mark.parametrize(
    "bad",
    [
        dict(ids_a=["a"], ids_b=["a"], scores=[1.0]),
        dict(ids_a=["a", "b"], ids_b=["b"], scores=[1.0]),
        dict(ids_a=["a"], ids_b=["b"], scores=[np.inf]),
        dict(ids_a=["a"], ids_b=["b"], scores=[1.0], keys_a=[1]),
        dict(ids_a=["a"], ids_b=["b"], scores=[1.0], known_same=[1]),
        dict(ids_a=["a"], ids_b=["b"], scores=[1.0], method="t-norm"),
    ],
)
def test_normalise_pairs_validation(bad):
    with pytest.raises(ParameterError):
        normalise_pairs(**bad)


def test_normalise_pairs_empty_input():
    assert normalise_pairs([], [], []).shape == (0,)
