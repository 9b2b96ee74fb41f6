"""Measures of likelihood ratios on comparisons of known truth: how good is an LR system?

``log10_lr`` are the LRs a system gave (for example cross-validated, `ballistix.evidence.cross_validate`)
and ``same`` says which pairs were fired by the same gun. `cllr` (log-likelihood-ratio cost) and
`cllr_min` (its discrimination part), `misleading` (rates of LRs pointing the wrong way),
`elub_bounds` (the strongest LRs the data can support, Vergeer et al. 2016), `tippett` (the plot)
and `conclusion_rates` (how often each examiner-scale conclusion was reached for each truth).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = [
    "cllr",
    "cllr_min",
    "misleading",
    "elub_bounds",
    "tippett",
    "conclusion_rates",
    "IDENTIFICATION_LR",
    "ELIMINATION_LR",
]

#: The examiner scale (`ballistix.evidence.conclusion`): LR at or above which a pair is called an
#: identification, and at or below which an elimination.
IDENTIFICATION_LR = 100.0
ELIMINATION_LR = 0.01


def _split(log10_lr, same) -> tuple[np.ndarray, np.ndarray]:
    llr = np.asarray(log10_lr, float)
    y = np.asarray(same, bool)
    if llr.shape != y.shape or llr.ndim != 1:
        raise ParameterError(f"log10_lr and same must be 1-d and of one length; got {llr.shape} and {y.shape}")
    if not y.any() or y.all():
        raise ParameterError("need same-gun and different-gun comparisons both")
    if np.isnan(llr).any():
        raise ParameterError("log10_lr holds NaN")
    return llr[y], llr[~y]


def cllr(log10_lr, same) -> float:
    """Log-likelihood-ratio cost in bits: 0 is perfect, 1 is an uninformative system (LR = 1 always).

    Cllr = 1/2 [mean over same-gun pairs of log2(1 + 1/LR) + mean over different-gun pairs of log2(1 + LR)].
    """
    h1, h2 = _split(log10_lr, same)
    ln10 = math.log(10)
    return float(0.5 * (np.logaddexp(0, -h1 * ln10).mean() + np.logaddexp(0, h2 * ln10).mean()) / math.log(2))


def _pav_log10_lr(log10_lr, same) -> np.ndarray:
    """Log10 LRs after the optimal monotone recalibration (pool-adjacent-violators), ties pooled."""
    from scipy import optimize  # here, not at the top: `import ballistix` stays fast

    llr = np.asarray(log10_lr, float)
    y = np.asarray(same, bool)
    uniq, inv = np.unique(llr, return_inverse=True)
    w = np.bincount(inv).astype(float)
    pos = np.bincount(inv, weights=y.astype(float))
    p = optimize.isotonic_regression(pos / w, weights=w, increasing=True).x
    prior = y.sum() / (~y).sum()
    with np.errstate(divide="ignore"):
        return (np.log10(p) - np.log10(1 - p) - np.log10(prior))[inv]


def cllr_min(log10_lr, same) -> float:
    """The Cllr left after the best monotone recalibration: the discrimination part of Cllr
    (Cllr - Cllr_min is the calibration loss)."""
    return cllr(_pav_log10_lr(log10_lr, same), same)


def misleading(log10_lr, same, strong_lr: float = 100.0) -> dict[str, Any]:
    """Rates of misleading evidence in each direction.

    ``rate_for_same``: share of different-gun pairs with LR > 1 (misleading towards
    "same gun"); ``rate_for_different``: share of same-gun pairs with LR < 1;
    ``strong_*``: the same beyond ``strong_lr`` (or 1/``strong_lr``); ``worst_*``:
    the most misleading log10 LR in each direction.
    """
    h1, h2 = _split(log10_lr, same)
    s = math.log10(strong_lr)
    return {
        "rate_for_same": float((h2 > 0).mean()),
        "rate_for_different": float((h1 < 0).mean()),
        "strong_for_same": int((h2 > s).sum()),
        "strong_for_different": int((h1 < -s).sum()),
        "strong_lr": strong_lr,
        "worst_for_same_log10": float(h2.max()),
        "worst_for_different_log10": float(h1.min()),
        "n_same": int(h1.size),
        "n_different": int(h2.size),
    }


def elub_bounds(log10_lr, same, add_misleading: int = 1, step: float = 0.01) -> tuple[float, float]:
    """Empirical lower and upper bounds of the log10 LR (Vergeer et al. 2016).

    For each decision threshold t (log10 LR) the expected Bayes error of the
    LRs at the prior odds that put the decision at t is compared with that of
    an uninformative system (LR = 1), after adding ``add_misleading``
    misleading comparisons to each class (the next case could be one). The
    bounds are where, going out from 0, the LRs stop doing better than the
    uninformative system: stronger LRs are not supported by the data.
    """
    h1, h2 = _split(log10_lr, same)
    n1, n2 = h1.size + add_misleading, h2.size + add_misleading
    h1s, h2s = np.sort(h1), np.sort(h2)

    def better(t: np.ndarray) -> np.ndarray:
        p_miss = (np.searchsorted(h1s, t, side="right") + add_misleading) / n1  # same-gun at or below t
        p_fa = (h2s.size - np.searchsorted(h2s, t, side="right") + add_misleading) / n2  # different-gun above t
        prior_h1 = 1.0 / (1.0 + 10.0**t)  # prior probability of "same gun" putting the threshold at t
        error = prior_h1 * p_miss + (1 - prior_h1) * p_fa
        return error < np.minimum(prior_h1, 1 - prior_h1)

    span = max(1.0, float(np.abs(np.r_[h1, h2]).max()) + 1.0) if np.isfinite(np.r_[h1, h2]).all() else 20.0
    up = np.arange(step, span + step, step)
    down = -up
    ok_up, ok_down = better(up), better(down)
    hi = float(up[np.argmin(ok_up)] - step) if not ok_up.all() else float(up[-1])
    lo = float(down[np.argmin(ok_down)] + step) if not ok_down.all() else float(down[-1])
    return min(lo, 0.0), max(hi, 0.0)


def tippett(log10_lr, same, ax=None, title: str | None = None):
    """Tippett plot: share of same-gun and of different-gun pairs with log10 LR above each value."""
    import matplotlib.pyplot as plt

    h1, h2 = _split(log10_lr, same)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    for vals, label, colour in (
        (h1, f"same gun (n={h1.size})", "tab:blue"),
        (h2, f"different guns (n={h2.size})", "tab:red"),
    ):
        x = np.sort(vals)
        ax.step(
            np.r_[x[0] - 0.5, x],
            np.r_[1.0, 1 - np.arange(1, x.size + 1) / x.size],
            where="post",
            label=label,
            color=colour,
        )
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("log10 LR")
    ax.set_ylabel("share of comparisons with log10 LR > x")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


# ---------------------------------------------------------------------------------------------- conclusions


def _upper95(k: int, n: int) -> float:
    """One-sided 95% upper bound of a rate seen k times in n (Clopper-Pearson)."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k)) if n else 1.0


def conclusion_rates(
    log10_lr, same, identification_lr: float = IDENTIFICATION_LR, elimination_lr: float = ELIMINATION_LR
) -> dict[str, Any]:
    """How often each conclusion was reached for same-gun and different-gun pairs (with 95% upper bounds)."""
    h1, h2 = _split(log10_lr, same)
    hi, lo = math.log10(identification_lr), math.log10(elimination_lr)
    out = {"identification_lr": identification_lr, "elimination_lr": elimination_lr}
    for name, pick in (
        ("identification", lambda v: v >= hi),
        ("elimination", lambda v: v <= lo),
        ("inconclusive", lambda v: (v > lo) & (v < hi)),
    ):
        k1, k2 = int(pick(h1).sum()), int(pick(h2).sum())
        out[name] = {
            "same": k1,
            "n_same": int(h1.size),
            "different": k2,
            "n_different": int(h2.size),
            "rate_same": k1 / h1.size,
            "rate_different": k2 / h2.size,
            "upper95_same": _upper95(k1, h1.size),
            "upper95_different": _upper95(k2, h2.size),
        }
    return out
