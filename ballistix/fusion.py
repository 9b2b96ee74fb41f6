"""One likelihood ratio from several marks: a calibration per mark, then linear logistic fusion fitted on data.

The marks of one cartridge case are not independent evidence. A firm, well-seated impression is firm in
the breech face, the firing pin and the shear alike, and a faint one is faint everywhere: multiplying
the marks' LRs (adding their log-LRs) counts that quality more than once and overstates the evidence.
Logistic fusion (Brümmer and du Preez 2006, the FoCal toolkit; Ramos and González-Rodríguez 2013 for
forensic use) instead learns, from labelled pairs, how much each mark's calibrated log-LR adds given the
others: the fused log-LR is ``a + sum_k w_k llr_k`` with the weights fitted by class-balanced logistic
regression (so the output is a log-LR, not a posterior), non-negative (a stronger mark never lowers the
fused LR), and bounded by the ELUB bounds of its own reference pairs (`ballistix.evaluation.elub_bounds`).
Correlated marks get weights that sum to less than their count; a mark that carries no extra
information gets a weight near zero.

A mark that is absent (a gun that leaves no aperture shear, a crater the instrument lost) is **not
used**, never zero evidence: each pattern of marks present (breech face alone; with the firing pin;
with the shear; all three) has its own fusion, fitted on the reference pairs where exactly those marks
were present. A pattern with too few reference pairs falls back to the largest fitted pattern it
contains, and the marks it leaves out are reported as present but not fused.

`fit_mark` fits a mark's own calibration (its features, e.g. the count of congruent elements and the
score, to a log-LR); `fit_fusion` fits the fusion of the per-mark log-LRs; `Fusion.fuse` weighs one
pair and says which marks were present and used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from .errors import ParameterError
from .evaluation import elub_bounds
from .evidence import _fit_weights

__all__ = ["MARK_NAMES", "MarkModel", "Fusion", "fit_mark", "fit_fusion", "weigh_marks"]

#: The marks a fusion may combine: the breech face (its calibrated LR, `ballistix.evidence.weigh`)
#: and the marks of `ballistix.features.marks`.
MARK_NAMES = ("breech_face", "firing_pin", "aperture_shear")
#: Reference pairs of each class a pattern needs before it gets a fusion of its own.
MIN_PAIRS_PER_CLASS = 20
_LN10 = math.log(10.0)


def _check_mark(mark: str) -> str:
    if mark not in MARK_NAMES:
        raise ParameterError(f"mark must be one of {MARK_NAMES}, got {mark!r}")
    return mark


def _labels(same, n: int) -> np.ndarray:
    y = np.asarray(same, bool)
    if y.shape != (n,):
        raise ParameterError(f"same must hold one flag per pair ({n}), got shape {y.shape}")
    return y


@dataclass
class MarkModel:
    """A mark's calibration: its features to a log10 LR (class-balanced logistic regression with
    non-negative slopes on standardised features, bounded by the ELUB bounds of its reference pairs)."""

    mark: str
    features: list[str]
    coef: list[float]
    mean: list[float]
    scale: list[float]
    bounds_log10: list[float]
    n_same: int
    n_different: int

    def log10_lr(self, result) -> float | None:
        """The mark's log10 LR for one comparison (a `MarkResult` or a mapping with ``used`` and the
        features, at top level or in ``features``), or None where the mark was not used."""
        get = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        if not get.get("used", False):
            return None
        extra = get.get("features") or {}
        try:
            x = np.array([float(get[k]) if k in get else float(extra[k]) for k in self.features])
        except (KeyError, TypeError, ValueError):
            raise ParameterError(f"a {self.mark} result must hold the features {self.features}") from None
        if not np.isfinite(x).all():
            return None  # a used mark whose features are undefined weighs nothing either way: not used
        z = (x - np.array(self.mean)) / np.array(self.scale)
        raw = (self.coef[0] + z @ np.array(self.coef[1:])) / _LN10
        return float(np.clip(raw, *self.bounds_log10))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_mark(mark: str, results: Sequence, same, *, features: Sequence[str] = ("count", "score"), ridge=1e-3):
    """Fit a mark's calibration on reference comparisons of known truth.

    Parameters
    ----------
    mark : str
        One of `MARK_NAMES` other than the breech face (whose calibration is `ballistix.evidence.fit`).
    results : sequence of `MarkResult` (or mappings with ``used`` and the features)
        The mark's comparisons of the reference pairs. Those not used are left out of the fit: an
        absent mark is no evidence, so it says nothing about the calibration either.
    same : (n,) bool
        True for same-gun pairs.
    features : sequence of str
        The result's fields (or ``features`` keys) the calibration reads.

    Returns
    -------
    MarkModel
    """
    _check_mark(mark)
    y = _labels(same, len(results))
    features = list(features)
    rows, keep = [], []
    for r in results:
        d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
        ok = bool(d.get("used", False))
        if ok:
            extra = d.get("features") or {}
            try:
                row = [float(d[k]) if k in d else float(extra[k]) for k in features]
            except (KeyError, TypeError, ValueError):
                raise ParameterError(f"a {mark} result must hold the features {features}") from None
            ok = bool(np.isfinite(row).all())
        keep.append(ok)
        if ok:
            rows.append(row)
    keep = np.array(keep, bool)
    X, yk = np.array(rows, float).reshape(-1, len(features)), y[keep]
    if yk.sum() < 2 or (~yk).sum() < 2:
        raise ParameterError(
            f"a {mark} calibration needs at least 2 same-gun and 2 different-gun pairs where the mark was "
            f"used; got {int(yk.sum())} and {int((~yk).sum())}"
        )
    w, mu, sd = _fit_weights(X, yk, ridge)
    raw = (w[0] + ((X - mu) / sd) @ w[1:]) / _LN10
    return MarkModel(
        mark,
        features,
        w.tolist(),
        mu.tolist(),
        sd.tolist(),
        list(elub_bounds(raw, yk)),
        int(yk.sum()),
        int((~yk).sum()),
    )


@dataclass
class Fusion:
    """Fitted fusions, one per pattern of marks present (see the module notes).

    ``patterns`` maps a pattern (the marks present, in `MARK_NAMES` order, joined by "+") to its
    ``offset`` and ``weights`` (natural-log-odds on the marks' natural-log LRs), ``bounds_log10``
    (ELUB) and reference counts ``n_same``, ``n_different``.
    """

    marks: list[str]
    patterns: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fuse(self, log10_lrs: Mapping[str, float | None]) -> dict[str, Any]:
        """The fused log10 LR of one pair from its marks' calibrated log10 LRs (None or missing: the
        mark was not used).

        Returns
        -------
        dict
            ``log10_lr`` (None when no fitted pattern holds a mark present), ``pattern``, ``used``
            (the marks fused), ``present_not_fused`` (marks present that the pattern's fusion leaves
            out: it had too few reference pairs with them), ``absent`` and ``per_mark`` (the inputs).
        """
        present = [m for m in self.marks if log10_lrs.get(m) is not None and math.isfinite(log10_lrs[m])]
        absent = [m for m in self.marks if m not in present]
        for k in range(len(present), 0, -1):
            for subset in combinations(present, k):
                key = "+".join(subset)
                if key in self.patterns:
                    p = self.patterns[key]
                    x = np.array([log10_lrs[m] * _LN10 for m in subset])
                    raw = (p["offset"] + x @ np.array([p["weights"][m] for m in subset])) / _LN10
                    return {
                        "log10_lr": float(np.clip(raw, *p["bounds_log10"])),
                        "pattern": key,
                        "used": list(subset),
                        "present_not_fused": [m for m in present if m not in subset],
                        "absent": absent,
                        "per_mark": {m: log10_lrs.get(m) for m in self.marks},
                    }
        return {
            "log10_lr": None,
            "pattern": None,
            "used": [],
            "present_not_fused": present,
            "absent": absent,
            "per_mark": {m: log10_lrs.get(m) for m in self.marks},
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Fusion:
        d = json.loads(text)
        return cls(list(d["marks"]), dict(d["patterns"]))


def fit_fusion(
    log10_lrs: Sequence[Mapping[str, float | None]],
    same,
    *,
    marks: Sequence[str] = MARK_NAMES,
    min_pairs_per_class: int = MIN_PAIRS_PER_CLASS,
    ridge: float = 1e-3,
) -> Fusion:
    """Fit the fusion of calibrated per-mark log10 LRs on reference pairs of known truth.

    Parameters
    ----------
    log10_lrs : sequence of mappings
        Per pair, each mark's calibrated log10 LR (None or missing: the mark was not used).
    same : (n,) bool
        True for same-gun pairs.
    marks : sequence of str
        The marks fused (a subset of `MARK_NAMES`).
    min_pairs_per_class : int
        Reference pairs of each class a pattern needs for a fusion of its own.

    Returns
    -------
    Fusion
        With a fusion for every pattern of marks present that has enough reference pairs.
    """
    marks = [_check_mark(m) for m in marks]
    y = _labels(same, len(log10_lrs))
    if int(min_pairs_per_class) < 2:
        raise ParameterError(f"min_pairs_per_class must be at least 2, got {min_pairs_per_class!r}")
    keys = []
    for row in log10_lrs:
        present = [m for m in marks if row.get(m) is not None and math.isfinite(row[m])]
        keys.append("+".join(present))
    keys = np.array(keys, object)
    fusion = Fusion(list(marks))
    for key in sorted(set(keys) - {""}):
        subset = key.split("+")
        rows = keys == key
        yk = y[rows]
        if yk.sum() < min_pairs_per_class or (~yk).sum() < min_pairs_per_class:
            continue
        X = np.array([[log10_lrs[i][m] * _LN10 for m in subset] for i in np.flatnonzero(rows)], float)
        w, mu, sd = _fit_weights(X, yk, ridge)
        slopes = w[1:] / sd  # back to the marks' own scale: offset + sum_k weight_k * ln LR_k
        offset = w[0] - float(slopes @ mu)
        raw = (offset + X @ slopes) / _LN10
        fusion.patterns[key] = {
            "offset": float(offset),
            "weights": {m: float(s) for m, s in zip(subset, slopes)},
            "bounds_log10": list(elub_bounds(raw, yk)),
            "n_same": int(yk.sum()),
            "n_different": int((~yk).sum()),
        }
    if not fusion.patterns:
        raise ParameterError(
            f"no pattern of marks has {min_pairs_per_class} same-gun and {min_pairs_per_class} different-gun "
            f"reference pairs: nothing to fit"
        )
    return fusion


def weigh_marks(
    breech_face_log10_lr: float | None,
    results: Mapping[str, Any],
    models: Mapping[str, MarkModel] | None = None,
    fusion: Fusion | None = None,
) -> dict[str, Any]:
    """One pair's evidence, mark by mark and fused, with an honest account of what was used.

    Parameters
    ----------
    breech_face_log10_lr : float or None
        The breech face's calibrated log10 LR (``bx.compare(...).log10_lr``; None: no calibration applied).
    results : mapping
        Mark name -> `MarkResult` (`ballistix.features.marks.compare_marks`).
    models : mapping, optional
        Mark name -> its `MarkModel` (`fit_mark`). A mark without one is present but not weighed.
    fusion : Fusion, optional
        The fusion of the marks' log10 LRs (`fit_fusion`); None: no fused LR.

    Returns
    -------
    dict
        ``per_mark`` (each mark's ``used``, ``log10_lr`` and, where it adds nothing, ``reason``) and
        ``fused`` (`Fusion.fuse`'s answer, or ``log10_lr`` None and ``reason`` without a fusion).
    """
    models = dict(models or {})
    per: dict[str, dict[str, Any]] = {
        "breech_face": {
            "used": breech_face_log10_lr is not None,
            "log10_lr": breech_face_log10_lr,
            **({} if breech_face_log10_lr is not None else {"reason": "no calibration applies to the breech face"}),
        }
    }
    for mark, r in results.items():
        _check_mark(mark)
        used = bool(getattr(r, "used", False))
        lr = models[mark].log10_lr(r) if used and mark in models else None
        entry: dict[str, Any] = {"used": used and lr is not None, "log10_lr": lr}
        if not used:
            entry["reason"] = getattr(r, "reason", None) or "not compared"
        elif mark not in models:
            entry["reason"] = f"compared, but no calibration of the {mark.replace('_', ' ')} is given: not weighed"
        per[mark] = entry
    lrs = {m: e["log10_lr"] for m, e in per.items()}
    if fusion is None:
        fused = {"log10_lr": None, "reason": "no fusion given: the marks' LRs are not combined (never multiplied)"}
    else:
        fused = fusion.fuse(lrs)
        fused["present_not_fused"] += [m for m, e in per.items() if e["used"] and m not in fusion.marks]
    return {"per_mark": per, "fused": fused}
