"""The decision constants of the linkage graph, in one place (imported by the graph, its exports,
the store, the command line and the benchmarks)."""

from __future__ import annotations

from ..evaluation.lr import IDENTIFICATION_LR

__all__ = ["LINK_LR", "CONVENTIONAL_CMC_RULE"]

#: The default link rule: an unreviewed comparison is a link when its calibrated likelihood
#: ratio reaches this, the "identification" step of the conclusion scale (`evaluation.lr.IDENTIFICATION_LR`).
LINK_LR = IDENTIFICATION_LR
#: The fixed count rule of the CMC literature and of ballistix 0.2: 6 or more congruent matching
#: cells called an identification. Not a default (a count is a feature, not a decision rule): a lab
#: may set it as ``count_rule`` for a population on which it validated it; benchmarks and
#: validation tables compare against it.
CONVENTIONAL_CMC_RULE = 6
