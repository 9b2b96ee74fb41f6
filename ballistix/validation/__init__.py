"""Validation kit: a lab runs the method on its own scans of known truth and gets its error rates.

Before a method is used in casework, ISO/IEC 17025 asks the lab to show that it
works on the lab's own material: its guns, its ammunition, its microscope. This
package does that in one call (`validate`) or one command (``ballistix validate``):

1. read every scan listed with its firearm (a labels CSV), preprocess each once;
2. compare every pair (or every same-gun pair and a stated random sample of
   the different-gun pairs, with the seed recorded);
3. give every pair a likelihood ratio from a calibration fitted *without* the
   pair's guns (`evidence.cross_validate`), so no gun vouches for itself;
4. measure the error rates of each decision rule with 95% Clopper-Pearson
   intervals (LR rules and, for comparison, CMC count rules), ROC and DET
   curves, AUC, Tippett plot, Cllr and Cllr-min;
5. recommend the rule the data support, or say plainly that they support none;
6. fit a calibration on all pairs, restricted to the population tested, and
   write ``calibration.json``, ``validation.json`` (everything, per pair) and
   ``report.html`` (one offline file an assessor can read).

Unreadable scans: by default a scan that cannot be read or preprocessed stops
the validation with the reader's error (naming the file): a validation that
quietly drops data is not a validation of the lab's material. With
``skip_unreadable=True`` such scans are left out, and listed with their reason
in the result, ``validation.json`` and the report.

Modules: `labels` (the scans and their firearms), `pairs` (which
pairs, and whether they can give a result), `run` (`validate`), `stats` (exact intervals and
bounds), `rules` (each rule's error rates, the recommendation), `result` (`ValidationResult`
and ``validation.json``), `report` (``report.html``), `errors`.
"""

from __future__ import annotations

from .errors import InsufficientDataError, LabelsError, ValidationError
from .labels import read_labels
from .pairs import plan_pairs
from .result import ValidationResult
from .rules import CMC_RULES, LR_ELIMINATION_RULES, LR_IDENTIFICATION_RULES, decision_rules, recommend
from .run import validate
from .stats import clopper_pearson, lr_performance, pairs_needed, upper_bound

__all__ = [
    "validate",
    "ValidationResult",
    "ValidationError",
    "LabelsError",
    "InsufficientDataError",
    "read_labels",
    "plan_pairs",
    "decision_rules",
    "recommend",
    "lr_performance",
    "clopper_pearson",
    "upper_bound",
    "pairs_needed",
    "LR_IDENTIFICATION_RULES",
    "LR_ELIMINATION_RULES",
    "CMC_RULES",
]
