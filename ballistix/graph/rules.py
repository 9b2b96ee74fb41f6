"""The decision constants of the linkage graph, in one place (imported by the graph, its exports,
the store, the command line and the benchmarks)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..evaluation.lr import IDENTIFICATION_LR

__all__ = ["LINK_LR", "CONVENTIONAL_CMC_RULE", "DecisionRule"]

#: The default link rule: an unreviewed comparison is a link when its calibrated likelihood
#: ratio reaches this, the "identification" step of the conclusion scale (`evaluation.lr.IDENTIFICATION_LR`).
LINK_LR = IDENTIFICATION_LR
#: The fixed count rule of the CMC literature and of ballistix 0.2: 6 or more congruent matching
#: cells called an identification. Not a default (a count is a feature, not a decision rule): a lab
#: may set it as ``count_rule`` for a population on which it validated it; benchmarks and
#: validation tables compare against it.
CONVENTIONAL_CMC_RULE = 6
#: Why a comparison an examiner found inconclusive is a candidate (`DecisionRule.review`).
INCONCLUSIVE = "an examiner found it inconclusive: not a link, not an elimination; for further review"


@dataclass(frozen=True)
class DecisionRule:
    """What a recorded comparison is under a link rule: the one definition the graph, its
    candidates and the store's evidence-only graph (`CaseStore.graph`) share.

    A comparison is judged by its match-edge attributes as `LinkageGraph` keeps them
    (``cmc_count``, ``log10_lr``, ``confirmed``, ``verdict``, ``lr_basis``): with a store's
    cohort calibration, ``log10_lr`` is the cohort LR, not the pair's own.

    An examiner's verdict decides: an identification (``confirmed`` True) is a link, an
    elimination (False) never is. An *inconclusive* verdict (``verdict="inconclusive"``,
    ``confirmed`` None) is neither: never a link, even where the LR passes the rule (the
    examiner looked and could not say), and not an elimination: it stays a candidate for
    review, and is kept in a store's evidence graph.

    Parameters
    ----------
    link_lr : float
        Likelihood ratio at or above which an unreviewed comparison is a link.
    count_rule : int or None
        A CMC count rule that replaces the LR rule (a lab's validated rule), or None.
    confirmed_only : bool
        Only examiner-confirmed comparisons are links.

    Examples
    --------
    >>> rule = DecisionRule(link_lr=100.0)
    >>> rule.is_link({"cmc_count": 20, "log10_lr": 2.5}), rule.review({"cmc_count": 3})
    (False, 'no calibration applies to both scans')
    >>> rule.is_evidence({"cmc_count": 0, "log10_lr": -3.0})  # an elimination
    False
    """

    link_lr: float = LINK_LR
    count_rule: int | None = None
    confirmed_only: bool = False
    _log_link: float = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_log_link", math.log10(self.link_lr) - 1e-12)

    def describe(self) -> str:
        """The rule in words (shown in every output)."""
        if self.confirmed_only:
            return "examiner-confirmed comparisons only"
        if self.count_rule is not None:
            return (
                f"{self.count_rule} or more congruent matching cells (a count rule set by the lab), "
                f"or examiner-confirmed"
            )
        return (
            f"likelihood ratio >= {self.link_lr:g} from a calibration that applies to both scans, "
            f"or examiner-confirmed; pairs without an applicable calibration are candidates for review"
        )

    def is_link(self, edge: Mapping) -> bool:
        """Whether a comparison is a link: an examiner confirmed it or, unreviewed, it meets the rule."""
        c = edge.get("confirmed")
        if c is not None:
            return bool(c)
        if self.confirmed_only or edge.get("verdict") == "inconclusive":
            return False
        if self.count_rule is not None:
            return (edge.get("cmc_count") or 0) >= self.count_rule
        lr = edge.get("log10_lr")
        if not (edge.get("cmc_count") or 0) > 0:  # an identification never rests on a pair with no congruent cells
            return False
        return lr is not None and math.isfinite(lr) and lr >= self._log_link

    def review(self, edge: Mapping) -> str | None:
        """Why a comparison is a candidate for an examiner's review, or None when it is not one.

        A candidate is not a link and not decided, and either has no applicable calibration
        (no LR, whatever its count) and at least one congruent cell, or an LR above 1 that
        falls short of the rule; or an examiner found it inconclusive."""
        if edge.get("confirmed") is not None or self.is_link(edge):
            return None
        if edge.get("verdict") == "inconclusive":
            return INCONCLUSIVE
        return self._short(edge)

    def _short(self, edge: Mapping) -> str | None:
        """`review` of a comparison already known to be neither reviewed nor a link."""
        lr, cmc = edge.get("log10_lr"), edge.get("cmc_count") or 0
        if lr is None and cmc > 0:
            basis = str(edge.get("lr_basis", ""))
            return basis if basis.startswith("withheld") else "no calibration applies to both scans"
        if lr is not None and lr > 0:
            return f"LR above 1, below the link rule ({self.describe().split(',')[0]})"
        return None

    def is_evidence(self, edge: Mapping) -> bool:
        """Whether an analysis uses the comparison: an examiner's verdict, a link or a candidate for
        review. The others are eliminations (compared, not linked), which only say that."""
        return (
            edge.get("confirmed") is not None
            or edge.get("verdict") is not None
            or self.is_link(edge)
            or self._short(edge) is not None
        )
