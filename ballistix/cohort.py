"""Cohort score normalisation: a comparison score relative to each exhibit's different-gun background.

A CMC count means different things in different populations: scans made in
one batch on one instrument share artefacts, guns of one manufacturing run
share subclass marks, and different-gun pairs of such a population reach
counts that elsewhere only same-gun pairs reach. Cohort normalisation (as in
speaker and face verification: Z-, T- and S-norm) measures each exhibit's
scores against a *cohort* of exhibits of the same population that are
presumed to come from other guns, and expresses the pair's score relative to
the two exhibits' cohorts:

- ``"excess"``: ``s - max(q_a, q_b)``, how far the score rises above what
  either exhibit reaches against its cohort (``q``: the cohort's location,
  by default its median after dropping the top scores). In the units of the
  score (CMCs above the background), robust with small cohorts and integer
  scores; the default.
- ``"s-norm"``: ``((s - mu_a) / sd_a + (s - mu_b) / sd_b) / 2`` with robust
  location and scale (median, 1.4826 x MAD); undefined (NaN) where a
  cohort's scores do not spread.

The cohort of an exhibit is a set of its comparisons presumed different-gun:
all its comparisons in the population (or in the batch of the other exhibit,
see `normalise_pairs`), leaving out the pair being normalised, pairs known
to be same-gun, and its ``exclude_top`` highest scores (unknown same-gun
mates). Where a cohort is smaller than ``min_size`` the statistics are NaN
and ``reason`` says why: a normalised score is never made up.

Functions take arrays and return arrays; nothing here decides a link.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .errors import ParameterError

__all__ = ["CohortStats", "cohort_stats", "normalise", "normalise_pairs", "METHODS"]

#: Normalisations `normalise` knows.
METHODS = ("excess", "s-norm")
_MAD_TO_SD = 1.4826


class CohortStats(NamedTuple):
    """Statistics of one exhibit's cohort scores.

    Attributes
    ----------
    location : float
        Median (or the requested quantile) of the cohort scores kept; NaN when
        the cohort is too small.
    scale : float
        1.4826 x median absolute deviation, at least ``min_scale``; NaN when
        the cohort is too small or its scores do not spread (and no
        ``min_scale`` was given).
    n : int
        Number of cohort scores used (after leaving out the top ones).
    reason : str or None
        Why ``location`` or ``scale`` is NaN; None when both are numbers.
    """

    location: float
    scale: float
    n: int
    reason: str | None = None


def _nonneg_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ParameterError(f"{name} must be a non-negative integer, got {v!r}")
    return int(v)


def _check_options(exclude_top, min_size, quantile, min_scale) -> tuple[int, int, float, float]:
    exclude_top = _nonneg_int(exclude_top, "exclude_top")
    min_size = _nonneg_int(min_size, "min_size")
    if min_size < 1:
        raise ParameterError("min_size must be at least 1 (a cohort of no scores has no statistics)")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile <= 1.0:
        raise ParameterError(f"quantile must be a number in [0, 1], got {quantile!r}")
    if (
        isinstance(min_scale, bool)
        or not isinstance(min_scale, (int, float))
        or not (min_scale >= 0 and np.isfinite(min_scale))
    ):
        raise ParameterError(f"min_scale must be a finite number >= 0, got {min_scale!r}")
    return exclude_top, min_size, float(quantile), float(min_scale)


def cohort_stats(
    scores, *, exclude_top: int = 1, min_size: int = 5, quantile: float = 0.5, min_scale: float = 0.0
) -> CohortStats:
    """Robust location and scale of one exhibit's scores against its cohort.

    Parameters
    ----------
    scores : 1-D array_like of float
        The exhibit's scores against the exhibits of its cohort (presumed
        different-gun), in any order. NaN entries (failed comparisons) are
        ignored.
    exclude_top : int
        Highest scores left out first: unknown same-gun mates in the cohort.
    min_size : int
        Fewest scores (after leaving out the top ones) to compute statistics;
        with fewer, location and scale are NaN and ``reason`` says so.
    quantile : float in [0, 1]
        Location: this quantile of the scores kept (0.5 = median).
    min_scale : float
        Floor of the scale (in score units), e.g. 1.0 for CMC counts whose
        cohort may not spread at all. 0 = no floor: the scale is NaN when
        the scores do not spread.

    Returns
    -------
    CohortStats
        ``(location, scale, n, reason)``.

    Examples
    --------
    >>> cohort_stats([1, 2, 2, 3, 1, 0, 15], exclude_top=1, min_size=5)
    CohortStats(location=1.5, scale=0.7413, n=6, reason=None)
    >>> cohort_stats([1, 2], min_size=5).reason
    'cohort of 1 score(s) after leaving out the top 1, fewer than min_size=5'
    """
    exclude_top, min_size, quantile, min_scale = _check_options(exclude_top, min_size, quantile, min_scale)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ParameterError(f"scores must be one-dimensional, got shape {s.shape}")
    if np.isinf(s).any():
        raise ParameterError("scores contain +/-inf; use NaN for failed comparisons")
    s = np.sort(s[~np.isnan(s)])
    kept = s[: max(s.size - exclude_top, 0)]
    if kept.size < min_size:
        return CohortStats(
            float("nan"),
            float("nan"),
            int(kept.size),
            f"cohort of {kept.size} score(s) after leaving out the top {exclude_top}, fewer than min_size={min_size}",
        )
    loc = float(np.quantile(kept, quantile))
    scale = max(_MAD_TO_SD * float(np.median(np.abs(kept - np.median(kept)))), min_scale)
    if scale == 0.0:
        return CohortStats(
            loc, float("nan"), int(kept.size), "cohort scores do not spread (MAD 0) and min_scale is 0: no scale"
        )
    return CohortStats(loc, scale, int(kept.size), None)


def _stat_array(stats, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(stats, CohortStats):
        stats = [stats]
    try:
        loc = np.array([float(st[0]) for st in stats], dtype=np.float64)
        scale = np.array([float(st[1]) for st in stats], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise ParameterError(f"{name} must be a CohortStats or a sequence of them (location, scale, ...)") from None
    if loc.size == 1 and n != 1:
        loc, scale = np.full(n, loc[0]), np.full(n, scale[0])
    if loc.size != n:
        raise ParameterError(f"{name} has {loc.size} entries for {n} scores")
    return loc, scale


def normalise(score, stats_a, stats_b, *, method: str = "excess") -> np.ndarray:
    """Normalise pair scores by the two exhibits' cohort statistics.

    Parameters
    ----------
    score : float or 1-D array_like
        Raw pair scores (e.g. CMC counts).
    stats_a, stats_b : CohortStats or sequence of CohortStats
        The cohort statistics of each pair's two exhibits (one, or one per
        score).
    method : {"excess", "s-norm"}
        ``"excess"``: ``score - max(loc_a, loc_b)`` (score units);
        ``"s-norm"``: ``((score - loc_a) / scale_a + (score - loc_b) / scale_b) / 2``.

    Returns
    -------
    ndarray of float
        One value per score; NaN where either exhibit's statistics are NaN
        (no cohort: see ``CohortStats.reason``) or the score is NaN.

    Examples
    --------
    >>> a, b = CohortStats(2.0, 1.0, 10), CohortStats(3.0, 2.0, 10)
    >>> normalise([9.0], a, b).tolist()
    [6.0]
    >>> normalise([9.0], a, b, method="s-norm").tolist()
    [5.0]
    """
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
    s = np.atleast_1d(np.asarray(score, dtype=np.float64))
    if s.ndim != 1:
        raise ParameterError(f"score must be a number or one-dimensional, got shape {s.shape}")
    la, sa = _stat_array(stats_a, "stats_a", s.size)
    lb, sb = _stat_array(stats_b, "stats_b", s.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "excess":
            return s - np.maximum(la, lb)  # NaN propagates through np.maximum
        return ((s - la) / sa + (s - lb) / sb) / 2.0


def normalise_pairs(
    ids_a,
    ids_b,
    scores,
    *,
    keys_a=None,
    keys_b=None,
    known_same=None,
    method: str = "excess",
    exclude_top: int = 1,
    min_size: int = 5,
    quantile: float = 0.5,
    min_scale: float = 0.0,
    leave_pair_out: bool = True,
    return_stats: bool = False,
):
    """Cohort-normalise every pair of a set of comparisons, using the set itself as the cohort.

    The cohort of exhibit ``a`` for the pair ``(a, b)`` is the set of a's
    other comparisons in ``scores``: without ``(a, b)`` itself (with
    ``leave_pair_out``), without pairs marked in ``known_same``, and, when
    keys are given, only with exhibits of b's key (e.g. b's scanning batch:
    how does a score against exhibits scanned with b?). Symmetrically for b.

    Parameters
    ----------
    ids_a, ids_b : 1-D array_like of str (or int)
        Exhibit ids of each pair.
    scores : 1-D array_like of float
        Raw scores of the pairs (NaN = failed comparison, never in a cohort).
    keys_a, keys_b : 1-D array_like, optional
        A key of each pair's exhibits (batch, instrument, population, ...);
        given both, a cohort holds only exhibits with the other side's key.
    known_same : 1-D array_like of bool, optional
        Pairs known to be same-gun (e.g. test fires of one recovered gun);
        they are never part of a cohort.
    method, exclude_top, min_size, quantile, min_scale
        See `normalise` and `cohort_stats`.
    leave_pair_out : bool
        Leave the pair being normalised out of both exhibits' cohorts.
    return_stats : bool
        Also return the statistics used.

    Returns
    -------
    normalised : ndarray of float
        One per pair; NaN where either exhibit has no usable cohort.
    stats : dict, only with ``return_stats``
        ``"a"`` and ``"b"``: lists of `CohortStats` per pair.

    Examples
    --------
    >>> ids_a = ["x", "x", "x", "y", "y", "z"]
    >>> ids_b = ["y", "z", "w", "z", "w", "w"]
    >>> normalise_pairs(ids_a, ids_b, [9, 1, 2, 1, 2, 1], exclude_top=0, min_size=2).tolist()
    [7.5, -4.5, -3.0, -4.5, -3.0, -1.0]
    """
    exclude_top, min_size, quantile, min_scale = _check_options(exclude_top, min_size, quantile, min_scale)
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
    a = np.asarray(ids_a)
    b = np.asarray(ids_b)
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    if a.ndim != 1 or b.ndim != 1 or s.ndim != 1 or not (a.size == b.size == n):
        raise ParameterError(f"ids_a, ids_b and scores must be 1-D of one length, got {a.shape}, {b.shape}, {s.shape}")
    if np.isinf(s).any():
        raise ParameterError("scores contain +/-inf; use NaN for failed comparisons")
    if (keys_a is None) != (keys_b is None):
        raise ParameterError("give both keys_a and keys_b, or neither")
    if keys_a is not None:
        ka, kb = np.asarray(keys_a), np.asarray(keys_b)
        if ka.shape != (n,) or kb.shape != (n,):
            raise ParameterError(f"keys_a and keys_b must have one entry per pair ({n})")
    else:
        ka = kb = np.zeros(n, dtype=np.int8)
    ks = np.zeros(n, dtype=bool) if known_same is None else np.asarray(known_same)
    if ks.shape != (n,) or ks.dtype != bool:
        raise ParameterError(f"known_same must be a boolean array with one entry per pair ({n})")
    if np.any(a == b):
        raise ParameterError("a pair compares an exhibit with itself; ids_a and ids_b must differ in every pair")
    # each exhibit's comparisons: pair index, the other exhibit's id and key
    by_exhibit: dict[Any, list[int]] = {}
    for i in range(n):
        by_exhibit.setdefault(a[i].item(), []).append(i)
        by_exhibit.setdefault(b[i].item(), []).append(i)
    table = {}
    for ex, idx in by_exhibit.items():
        idx = np.array(idx)
        first = a[idx] == ex
        table[ex] = (idx, np.where(first, kb[idx], ka[idx]), s[idx], ks[idx])
    cache: dict[tuple, CohortStats] = {}

    def stats(ex, other_key, pair: int) -> CohortStats:
        ck = (ex, other_key.item(), pair if leave_pair_out else -1)
        if ck not in cache:
            idx, keys, sc, same = table[ex]
            use = (keys == other_key) & ~same & ~np.isnan(sc)
            if leave_pair_out:
                use &= idx != pair
            cache[ck] = cohort_stats(
                sc[use], exclude_top=exclude_top, min_size=min_size, quantile=quantile, min_scale=min_scale
            )
        return cache[ck]

    st_a = [stats(a[i].item(), kb[i], i) for i in range(n)]
    st_b = [stats(b[i].item(), ka[i], i) for i in range(n)]
    out = normalise(s, st_a, st_b, method=method) if n else np.zeros(0)
    return (out, {"a": st_a, "b": st_b}) if return_stats else out
