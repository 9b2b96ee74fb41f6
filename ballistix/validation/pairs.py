"""Which pairs to compare, and whether they can give a result: enough firearms, same-gun pairs,
and pairs left to fit on once a pair's guns are left out (cross-validation by gun)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import numpy as np

from .. import evidence as ev
from ..errors import ParameterError
from .errors import InsufficientDataError


def plan_pairs(guns, pairs: str | int = "all", seed: int = 0) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Which pairs of scans to compare.

    Parameters
    ----------
    guns : sequence
        Firearm of each scan.
    pairs : "all" or int
        "all": every pair, in ``itertools.combinations`` order. An int: every
        same-gun pair, then a random sample of that many different-gun pairs
        (all of them when there are fewer), drawn with ``seed``.
    seed : int
        Seed of the sample (`numpy.random.default_rng`).

    Returns
    -------
    pairs : list of (i, j)
        Indices into ``guns``, i < j.
    plan : dict
        What was done: counts of same- and different-gun pairs available and
        compared, the mode and the seed.

    Examples
    --------
    >>> p, plan = plan_pairs(["g1", "g1", "g2", "g2"], pairs=2, seed=0)
    >>> p[:2], plan["n_different"]
    ([(0, 1), (2, 3)], 2)
    """
    guns = [str(g) for g in guns]
    allpairs = list(itertools.combinations(range(len(guns)), 2))
    km = [p for p in allpairs if guns[p[0]] == guns[p[1]]]
    knm = [p for p in allpairs if guns[p[0]] != guns[p[1]]]
    plan = {"mode": "all", "seed": seed, "n_same_available": len(km), "n_different_available": len(knm)}
    if isinstance(pairs, str) and pairs == "all":
        chosen = allpairs
    elif isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool) and pairs >= 1:
        plan["mode"] = "sample"
        plan["sample_size"] = int(pairs)
        if pairs >= len(knm):
            chosen = km + knm
        else:
            rng = np.random.default_rng(seed)
            chosen = km + [knm[i] for i in sorted(rng.choice(len(knm), int(pairs), replace=False))]
    else:
        raise ParameterError(
            f"pairs must be 'all' or a positive integer (different-gun pairs to sample), got {pairs!r}"
        )
    plan["n_same"] = sum(1 for i, j in chosen if guns[i] == guns[j])
    plan["n_different"] = len(chosen) - plan["n_same"]
    return chosen, plan


def _check_cv(guns_a, guns_b, n_folds: int, seed: int) -> None:
    """Refuse before comparing anything when leaving a pair's guns out leaves too little to fit on."""
    same = np.array([a == b for a, b in zip(guns_a, guns_b)])
    for train, test in ev.cv_splits(guns_a, guns_b, n_folds, seed):
        if same[train].sum() < 2 or (~same[train]).sum() < 2:
            k = int(np.flatnonzero(test)[0])
            raise InsufficientDataError(
                f"too few firearms to cross-validate: leaving out the guns of pair {guns_a[k]} / {guns_b[k]} leaves "
                f"{int(same[train].sum())} same-gun and {int((~same[train]).sum())} different-gun pairs to fit on "
                f"(at least 2 of each are needed); use at least 4 firearms with 2 or more scans each, or compare "
                f"more different-gun pairs (pairs='all')"
            )


def _check_guns(guns, what: str) -> None:
    n = len(set(guns))
    if n < 2:
        raise InsufficientDataError(
            f"the {what} scans come from {n} firearm(s); a validation needs at least 2 "
            f"(and, to cross-validate by gun, at least 4)"
        )
    if max(Counter(guns).values()) < 2:
        raise InsufficientDataError(
            f"no same-gun pair among the {what} scans: at least one firearm needs 2 or more scans"
        )
