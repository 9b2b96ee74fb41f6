"""Decision rules: the error rates of each LR and CMC count rule tested, and the rule the
measured rates support (`recommend`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ParameterError
from .stats import clopper_pearson, pairs_needed, upper_bound

#: LR thresholds tested for "identification" (LR at or above)
LR_IDENTIFICATION_RULES = (10.0, 100.0, 1000.0, 1e4)
#: LR thresholds tested for "elimination" (LR at or below)
LR_ELIMINATION_RULES = (0.01,)
#: CMC count thresholds tested, for comparison with the count rule of the literature
CMC_RULES = tuple(range(4, 13))


def _rule_row(rule: str, kind: str, threshold: float, called: np.ndarray, same: np.ndarray) -> dict[str, Any]:
    k1, n1 = int(called[same].sum()), int(same.sum())
    k2, n2 = int(called[~same].sum()), int((~same).sum())
    return {
        "rule": rule,
        "kind": kind,
        "threshold": threshold,
        "same_called": k1,
        "n_same": n1,
        "rate_same": k1 / n1,
        "ci95_same": list(clopper_pearson(k1, n1)),
        "upper95_same": upper_bound(k1, n1),
        "different_called": k2,
        "n_different": n2,
        "rate_different": k2 / n2,
        "ci95_different": list(clopper_pearson(k2, n2)),
        "upper95_different": upper_bound(k2, n2),
    }


def decision_rules(log10_lr, same, cmc=None) -> tuple[list[dict], list[dict]]:
    """Counts, rates and 95% intervals of each decision rule.

    Parameters
    ----------
    log10_lr : (n,) float
        Log10 LR of each pair (cross-validated, for honest rates).
    same : (n,) bool
        True for same-gun pairs.
    cmc : (n,) float, optional
        CMC count of each pair, for the count rules.

    Returns
    -------
    lr_rules, cmc_rules : list of dict
        One row a rule (`LR_IDENTIFICATION_RULES`, `LR_ELIMINATION_RULES`; `CMC_RULES`,
        empty without ``cmc``): ``same_called``/``n_same``, ``different_called``/``n_different``,
        their rates (shares), two-sided 95% Clopper-Pearson intervals ``ci95_*`` and one-sided
        95% upper bounds ``upper95_*``.

    Examples
    --------
    >>> lr, _ = decision_rules([3.0, 2.5, -1.0, -2.5], [True, True, False, False])
    >>> lr[1]["rule"], lr[1]["same_called"], lr[1]["different_called"]
    ('LR >= 100', 2, 0)
    """
    llr = np.asarray(log10_lr, float)
    y = np.asarray(same, bool)
    if llr.ndim != 1 or llr.shape != y.shape or np.isnan(llr).any() or y.all() or not y.any():
        raise ParameterError(
            f"log10_lr and same must be 1-d, of one length ({llr.shape}, {y.shape}), without NaN, "
            f"and hold same-gun and different-gun pairs both"
        )
    lr_rules = [
        _rule_row(f"LR >= {_fmt_lr(t)}", "identification", t, llr >= math.log10(t) - 1e-12, y)
        for t in LR_IDENTIFICATION_RULES
    ]
    lr_rules += [
        _rule_row(f"LR <= {_fmt_lr(t)}", "elimination", t, llr <= math.log10(t) + 1e-12, y)
        for t in LR_ELIMINATION_RULES
    ]
    cmc_rules = (
        []
        if cmc is None
        else [_rule_row(f"CMC >= {t}", "identification", float(t), np.asarray(cmc, float) >= t, y) for t in CMC_RULES]
    )
    return lr_rules, cmc_rules


def _fmt_lr(v: float) -> str:
    return f"{v:g}" if 1e-3 <= v < 1e5 else f"10^{math.log10(v):g}"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%" if v < 0.1 else f"{100 * v:.1f}%"


def recommend(lr_rules, cmc_rules=(), fpr_target: float = 0.01, elim_target: float = 0.05) -> dict[str, Any]:
    """The decision rules the measured rates support (see `decision_rules`), with the reasons in words.

    Identification: the smallest LR threshold at which no different-gun pair was called
    identification, the one-sided 95% upper bound of the false-identification rate is below
    ``fpr_target``, and at least one same-gun pair is identified. Elimination likewise, with
    ``elim_target`` for the share of same-gun pairs eliminated. When none qualifies, ``text``
    says why (for example, too few different-gun pairs to bound the rate below the target:
    0 errors in n pairs bound it only below about 3/n).

    Returns
    -------
    dict
        ``identification`` and ``elimination`` (the rule's row, or None), ``text``,
        ``fpr_target``, ``elimination_target``, ``different_pairs_needed`` and
        ``same_pairs_needed`` (fewest error-free pairs whose upper bound meets the target),
        ``cmc_comparison`` (the smallest count rule without false identification, for comparison).
    """
    ident = [r for r in lr_rules if r["kind"] == "identification"]
    elim = [r for r in lr_rules if r["kind"] == "elimination"]
    out: dict[str, Any] = {
        "fpr_target": fpr_target,
        "elimination_target": elim_target,
        "identification": None,
        "elimination": None,
        "different_pairs_needed": pairs_needed(fpr_target),
        "same_pairs_needed": pairs_needed(elim_target),
    }
    out["identification"], line = _identification(ident, fpr_target)
    lines = [line]
    if elim:
        out["elimination"], line = _elimination(elim, elim_target)
        lines.append(line)
    cm = [r for r in cmc_rules if r["different_called"] == 0]
    if cm:
        out["cmc_comparison"] = {k: cm[0][k] for k in ("rule", "rate_same", "upper95_different")}
        lines.append(
            f"For comparison, the smallest count rule with no false identification here is "
            f"{cm[0]['rule']} ({_pct(cm[0]['rate_same'])} of same-gun pairs); a count is a feature, "
            f"not a calibrated decision rule."
        )
    out["text"] = " ".join(lines)
    return out


#: The fields of a rule's row kept in a recommended identification rule.
IDENTIFICATION_FIELDS = (
    "rule",
    "threshold",
    "same_called",
    "n_same",
    "rate_same",
    "ci95_same",
    "different_called",
    "n_different",
    "upper95_different",
)
#: The fields of a rule's row kept in a recommended elimination rule.
ELIMINATION_FIELDS = (
    "rule",
    "threshold",
    "same_called",
    "n_same",
    "upper95_same",
    "different_called",
    "n_different",
    "rate_different",
    "ci95_different",
)


def _identification(ident: list[dict], fpr_target: float) -> tuple[dict | None, str]:
    """The identification rule supported (its row's `IDENTIFICATION_FIELDS`, or None) and why, in words."""
    n_diff, n_same = ident[0]["n_different"], ident[0]["n_same"]
    need = pairs_needed(fpr_target)
    ok = [
        r for r in ident if r["different_called"] == 0 and r["upper95_different"] < fpr_target and r["same_called"] > 0
    ]
    if ok:
        r = ok[0]
        return {k: r[k] for k in IDENTIFICATION_FIELDS}, (
            f"Identification at {r['rule']}: none of the {n_diff} different-gun pairs was called "
            f"identification (false-identification rate 0, 95% upper bound {_pct(r['upper95_different'])}, "
            f"below the target {_pct(fpr_target)}); it identified {r['same_called']} of {n_same} same-gun "
            f"pairs ({_pct(r['rate_same'])}, 95% CI {_pct(r['ci95_same'][0])} to {_pct(r['ci95_same'][1])})."
        )
    if n_diff < need:
        return None, (
            f"The data are too few to support any identification rule: with {n_diff} different-gun pairs, "
            f"even no false identification bounds the false-identification rate only below "
            f"{_pct(upper_bound(0, n_diff))} (95% upper bound), above the target {_pct(fpr_target)}; at least "
            f"{need} different-gun pairs (none called identification) are needed."
        )
    if all(r["different_called"] > 0 for r in ident):
        return None, (
            f"No identification rule is supported: every LR threshold tested (up to "
            f"{ident[-1]['rule']}) called some different-gun pairs identification."
        )
    return None, (
        "No identification rule is supported: the thresholds that called no different-gun pair "
        "identification identified no same-gun pair either."
    )


def _elimination(elim: list[dict], elim_target: float) -> tuple[dict | None, str]:
    """The elimination rule supported (its row's `ELIMINATION_FIELDS`, or None) and why, in words."""
    n_diff, n_same = elim[0]["n_different"], elim[0]["n_same"]
    need = pairs_needed(elim_target)
    ok = [r for r in elim if r["same_called"] == 0 and r["upper95_same"] < elim_target and r["different_called"] > 0]
    if ok:
        r = ok[0]
        return {k: r[k] for k in ELIMINATION_FIELDS}, (
            f"Elimination at {r['rule']}: none of the {n_same} same-gun pairs was eliminated (95% upper "
            f"bound {_pct(r['upper95_same'])}, below the target {_pct(elim_target)}); it eliminated "
            f"{r['different_called']} of {n_diff} different-gun pairs ({_pct(r['rate_different'])})."
        )
    r = elim[0]
    if r["same_called"] == 0 and r["different_called"] == 0:
        return None, (
            f"Elimination at {r['rule']} eliminates nothing here: no pair had a cross-validated LR that "
            f"low (the LRs are bounded by what the reference pairs can support)."
        )
    if n_same < need:
        return None, (
            f"The data are too few to support an elimination rule: with {n_same} same-gun pairs, even "
            f"no false elimination bounds the rate only below {_pct(upper_bound(0, n_same))}, above the "
            f"target {_pct(elim_target)}; at least {need} same-gun pairs are needed."
        )
    return None, (
        f"Elimination at {r['rule']} is not supported: {r['same_called']} of {n_same} same-gun "
        f"pairs were eliminated (95% upper bound {_pct(r['upper95_same'])}; target "
        f"{_pct(elim_target)})."
    )
