"""`ValidationResult`: what a validation measured, and its JSON document (``validation.json``)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__

FORMAT = "ballistix-validation"
FORMAT_VERSION = 1


@dataclass
class ValidationResult:
    """What `validate` measured, and where it wrote it.

    Attributes
    ----------
    n_scans, n_firearms : int
        Scans used and firearms they come from.
    n_pairs, n_same, n_different : int
        Pairs compared: all, same-gun, different-gun.
    pairs_plan : dict
        How the pairs were chosen (``mode`` "all" or "sample", ``seed``, counts available).
    domain : dict
        The population tested (`provenance.POPULATION_KEYS` -> values; None: not recorded for
        every scan, so not restricted); the calibration's domain.
    auc_cmc, auc_lr, eer_cmc, eer_lr : float
        Area under the ROC curve and equal error rate of the CMC count and of the
        cross-validated LR.
    cllr, cllr_min : float
        Log-likelihood-ratio cost (bits) of the cross-validated LRs, and what is left of
        it after the best monotone recalibration.
    lr_rules, cmc_rules : list of dict
        Each decision rule with the counts and rates of same-gun and different-gun pairs
        it calls, two-sided 95% Clopper-Pearson intervals (``ci95_*``) and one-sided 95%
        upper bounds (``upper95_*``).
    recommendation : dict
        ``identification`` (the recommended rule, or None), ``elimination`` (likewise),
        ``text`` (in words, with its limits), ``fpr_target``, ``elimination_target``.
    calibration : evidence.Calibration
        Fitted on all pairs compared.
    log10_lr_cv : numpy.ndarray
        Cross-validated log10 LR of each pair (in the order of ``records``).
    records : list of dict
        One per pair: scans, firearms, truth, features, cross-validated log10 LR.
    excluded : list of dict
        Scans left out (``skip_unreadable=True``) with the reason.
    out, report, validation_json, calibration_json : pathlib.Path or None
        The folder and files written (None when ``out`` was None).
    """

    n_scans: int
    n_firearms: int
    n_pairs: int
    n_same: int
    n_different: int
    pairs_plan: dict
    domain: dict
    auc_cmc: float
    auc_lr: float
    eer_cmc: float
    eer_lr: float
    cllr: float
    cllr_min: float
    misleading: dict
    lr_rules: list
    cmc_rules: list
    recommendation: dict
    calibration: Any
    log10_lr_cv: np.ndarray
    records: list
    inputs: list
    excluded: list
    parameters: dict
    seconds: dict = field(default_factory=dict)
    out: Path | None = None
    report: Path | None = None
    validation_json: Path | None = None
    calibration_json: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The headline numbers (no per-pair records), JSON-ready."""
        return {
            "n_scans": self.n_scans,
            "n_firearms": self.n_firearms,
            "n_pairs": self.n_pairs,
            "n_same": self.n_same,
            "n_different": self.n_different,
            "auc_cmc": self.auc_cmc,
            "auc_lr": self.auc_lr,
            "eer_cmc": self.eer_cmc,
            "eer_lr": self.eer_lr,
            "cllr": self.cllr,
            "cllr_min": self.cllr_min,
            "bounds_log10": list(self.calibration.bounds_log10),
            "recommendation": self.recommendation,
            "domain": self.domain,
            "files": {
                k: None if v is None else str(v)
                for k, v in (
                    ("report", self.report),
                    ("validation_json", self.validation_json),
                    ("calibration_json", self.calibration_json),
                )
            },
        }


def document(r: ValidationResult, labels_info: dict | None, calibration_sha256: str) -> dict[str, Any]:
    """The JSON document of a validation (``validation.json``): inputs, parameters, every rule and
    every pair, with the labels file's and the calibration file's checksums."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ballistix_version": __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "labels": labels_info,
        "inputs": r.inputs,
        "excluded": r.excluded,
        "parameters": r.parameters,
        "pairs_plan": r.pairs_plan,
        "domain": r.domain,
        "counts": {
            "scans": r.n_scans,
            "firearms": r.n_firearms,
            "pairs": r.n_pairs,
            "same_gun": r.n_same,
            "different_gun": r.n_different,
        },
        "results": {
            "auc_cmc": r.auc_cmc,
            "auc_lr": r.auc_lr,
            "eer_cmc": r.eer_cmc,
            "eer_lr": r.eer_lr,
            "cllr": r.cllr,
            "cllr_min": r.cllr_min,
            "misleading": r.misleading,
            "lr_rules": r.lr_rules,
            "cmc_rules": r.cmc_rules,
        },
        "recommendation": r.recommendation,
        "calibration": {
            "path": r.calibration_json.name,
            "sha256": calibration_sha256,
            "name": r.calibration.name,
            "bounds_log10": r.calibration.bounds_log10,
            "coef": r.calibration.coef,
            "domain": r.calibration.domain,
        },
        "seconds": r.seconds,
        "pairs": r.records,
    }


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
