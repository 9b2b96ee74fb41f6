"""Statistics of measured error rates: exact binomial intervals and bounds, the pairs needed to
bound a rate, and the summary measures of a set of likelihood ratios."""

from __future__ import annotations

import math
from typing import Any

from .. import evidence as ev
from ..evaluation.lr import cllr, cllr_min, conclusion_rates, misleading


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson ("exact") confidence interval of a rate seen ``k`` times in ``n``.

    Parameters
    ----------
    k, n : int
        Events and trials (0 <= k <= n).
    level : float
        Confidence level (0.95: each tail holds 2.5%).

    Returns
    -------
    (lower, upper) : tuple of float
        Bounds of the rate (1 and 0 are dimensionless shares); (0, 1) when ``n`` is 0.

    Examples
    --------
    >>> [round(v, 4) for v in clopper_pearson(0, 29)]
    [0.0, 0.1194]
    """
    from scipy.stats import beta

    if n == 0:
        return 0.0, 1.0
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def upper_bound(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen ``k`` times in ``n`` (for k = 0:
    1 - (1 - level)^(1/n), about 3/n at 95%: the "rule of three")."""
    from scipy.stats import beta

    return 1.0 if n == 0 or k >= n else float(beta.ppf(level, k + 1, n - k))


def pairs_needed(target: float, level: float = 0.95) -> int:
    """Fewest pairs, none of them an error, whose one-sided upper bound of the error rate is below ``target``."""
    return int(math.floor(math.log(1 - level) / math.log(1 - target))) + 1


def lr_performance(log10_lr, same, identification_lr: float = ev.IDENTIFICATION_LR) -> dict[str, Any]:
    """Cllr, Cllr-min, misleading evidence and the conclusion scale's rates of a set of log10 LRs.

    The summary `benchmarks.evidence` prints and the one `validate` stores with the
    calibration (``performance``).
    """
    return {
        "cllr": cllr(log10_lr, same),
        "cllr_min": cllr_min(log10_lr, same),
        "misleading": misleading(log10_lr, same),
        "conclusions": conclusion_rates(log10_lr, same, identification_lr=identification_lr),
    }
