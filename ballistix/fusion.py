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

`MarksCalibration` keeps the mark models and the fusion together with what they rest on: the breech-face
calibration whose LRs the fusion was fitted on (by checksum: a pair weighed by another is not fused),
the population they were fitted on (a domain, as a breech-face calibration's), the reference pairs and
the cross-validated performance with its conclusion error rates. `fit_marks_calibration` fits one on
weighed comparisons; `weigh_comparison_marks` applies one (by default the shipped ones,
`shipped_marks_calibrations`) to a weighed comparison that carries marks, and where one applies the
comparison's LR is the fused one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._version import __version__
from .errors import FileFormatError, ParameterError
from .evaluation import elub_bounds
from .evidence import _check_domain, _fit_weights, _read_recorded, _Recorded, _shipped_files, conclusion

__all__ = [
    "MARK_NAMES",
    "MarkModel",
    "Fusion",
    "fit_mark",
    "fit_fusion",
    "weigh_marks",
    "MarksCalibration",
    "fit_marks_calibration",
    "load_marks_calibration",
    "shipped_marks_calibrations",
    "weigh_comparison_marks",
    "SHIPPED_MARKS_SHA256",
]

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


# ---------------------------------------------------------------------------------------------- calibrations

MARKS_FORMAT = "ballistix-marks-calibration"
MARKS_FORMAT_VERSION = 1
#: SHA-256 of the content of each marks calibration shipped in ``ballistix/data`` (``marks_*.json``),
#: pinned in the code as `ballistix.evidence.SHIPPED_SHA256` pins the breech-face ones.
SHIPPED_MARKS_SHA256: dict[str, str] = {
    "marks_simulated.json": "349d39e031149bc848b3199fae78e56f936de51012f02275b2fb44a0673220d1",
}


@dataclass
class MarksCalibration(_Recorded):
    """Per-mark calibrations and their fusion, with what they rest on (see the module notes).

    ``models``: mark -> `MarkModel`; ``fusion``: the `Fusion` of the breech face's and the marks'
    log10 LRs; ``breech_face_sha256``: the breech-face calibration (`ballistix.evidence.Calibration`)
    whose LRs the fusion was fitted on; ``domain``: the population (`ballistix.evidence.domain_check`);
    ``reference``: name, description, reference pairs; ``performance``: cross-validated measures and
    ``conclusions`` (the fused LR's error rates, as `ballistix.evidence.conclusion` reads them).
    """

    models: dict[str, MarkModel]
    fusion: Fusion
    breech_face_sha256: str
    reference: dict[str, Any]
    domain: dict[str, Any] | None = None
    performance: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    #: "shipped", "fitted" (in this session), "file" (read from a file: not trusted) or "unverified".
    origin: ClassVar[dict[str, Any]] = {"kind": "unverified"}
    DOC_KEY: ClassVar[str] = "marks_calibration"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MARKS_FORMAT,
            "format_version": MARKS_FORMAT_VERSION,
            "models": {m: v.to_dict() for m, v in sorted(self.models.items())},
            "fusion": asdict(self.fusion),
            "breech_face_sha256": self.breech_face_sha256,
            "reference": self.reference,
            "domain": self.domain,
            "performance": self.performance,
            "version": self.version,
        }

    def check(self, comparison) -> str | None:
        """Why this calibration cannot weigh the marks of ``comparison`` (a weighed `Comparison`), or None."""
        ev = comparison.evidence or {}
        if comparison.log10_lr is None or ev.get("calibration_sha256") is None:
            return "the breech face has no likelihood ratio to fuse with"
        if ev["calibration_sha256"] != self.breech_face_sha256:
            return (
                f"its fusion was fitted on the LRs of breech-face calibration {self.breech_face_sha256[:16]}, "
                f"and this pair was weighed by {ev['calibration_sha256'][:16]}"
            )
        return self.domain_problem(comparison)


def load_marks_calibration(path) -> MarksCalibration:
    """Read a marks calibration written by `MarksCalibration.save`; a damaged or foreign file raises
    `FileFormatError` naming it. The result is not trusted (``origin`` "file") unless it is shipped."""
    path = Path(path)
    doc, body = _read_recorded(path, "marks_calibration", 10_000_000)
    if body.get("format") != MARKS_FORMAT or body.get("format_version") != MARKS_FORMAT_VERSION:
        raise FileFormatError(path, f"unsupported format {body.get('format')!r} {body.get('format_version')!r}")
    _check_domain(body.get("domain"), path)
    try:
        models = {}
        for m, d in body["models"].items():
            model = MarkModel(**d)
            n = len(model.features)
            if model.mark != m or len(model.coef) != n + 1 or len(model.mean) != n or len(model.scale) != n:
                raise ValueError(m)
            if not all(math.isfinite(v) for v in [*model.coef, *model.mean, *model.scale, *model.bounds_log10]):
                raise ValueError(m)
            if any(v < 0 for v in model.coef[1:]) or any(v <= 0 for v in model.scale):
                raise ValueError(m)
            _check_mark(m)
            models[m] = model
        fusion = Fusion(list(body["fusion"]["marks"]), dict(body["fusion"]["patterns"]))
        for key, p in fusion.patterns.items():
            marks = key.split("+")
            lo, hi = p["bounds_log10"]
            if not (
                all(m in fusion.marks for m in marks)
                and set(p["weights"]) == set(marks)
                and all(math.isfinite(w) and w >= 0 for w in p["weights"].values())
                and math.isfinite(p["offset"])
                and lo <= 0 <= hi
            ):
                raise ValueError(key)
        out = MarksCalibration(
            models,
            fusion,
            str(body["breech_face_sha256"]),
            dict(body["reference"]),
            body.get("domain"),
            dict(body.get("performance") or {}),
            str(body.get("version")),
        )
    except (KeyError, TypeError, ValueError, ParameterError, AttributeError):
        raise FileFormatError(path, "marks calibration values are incomplete or out of range") from None
    out.origin = {"kind": "file", "path": str(path), "sha256": doc["sha256"]}
    return out


_SHIPPED_MARKS: list[MarksCalibration] | None = None


def shipped_marks_calibrations() -> list[MarksCalibration]:
    """The marks calibrations shipped with the package (``ballistix/data/marks_*.json``), each checked
    against its pinned checksum (`SHIPPED_MARKS_SHA256`). See docs/comparison.md for what they rest on."""
    global _SHIPPED_MARKS
    if _SHIPPED_MARKS is None:
        found = _shipped_files(
            "marks_", SHIPPED_MARKS_SHA256, load_marks_calibration, "ballistix.fusion.SHIPPED_MARKS_SHA256"
        )
        _SHIPPED_MARKS = list(found.values())
    return list(_SHIPPED_MARKS)


def fit_marks_calibration(
    breech_face_log10_lr,
    marks: Sequence[Mapping[str, Any]],
    same,
    *,
    breech_face_sha256: str,
    name: str,
    description: str = "",
    domain: dict[str, Any] | None = None,
    min_pairs_per_class: int = MIN_PAIRS_PER_CLASS,
    performance: dict[str, Any] | None = None,
) -> MarksCalibration:
    """Fit the mark models and their fusion on reference pairs of known truth.

    Parameters
    ----------
    breech_face_log10_lr : (n,) array of float
        Each pair's breech-face log10 LR, as the breech-face calibration ``breech_face_sha256`` weighs it
        (``evidence.weigh(...).log10_lr``): the fusion is fitted on these and applies only to pairs that
        calibration weighs.
    marks : sequence of mappings
        Each pair's mark results (``Comparison.marks``: mark -> `MarkResult` or its ``to_dict``).
    same : (n,) bool
        True for same-gun pairs.
    breech_face_sha256 : str
        The breech-face calibration's ``sha256``.
    name, description : str
        What the calibration is called and what it was fitted on.
    domain : dict, optional
        The population it applies to (see `ballistix.evidence.domain_check`).
    performance : dict, optional
        Measured performance to record (cross-validated, as ``benchmarks.marks --ship`` measures it), with
        ``conclusions`` (`ballistix.evaluation.conclusion_rates` of held-out fused LRs) for the conclusions.

    Returns
    -------
    MarksCalibration
        Trusted in this session (``origin`` "fitted"); a mark used in too few reference pairs gets no model
        (it is then "present, not weighed").
    """
    bf = np.asarray(breech_face_log10_lr, float)
    y = _labels(same, bf.size)
    if bf.ndim != 1 or len(marks) != bf.size or not np.isfinite(bf).all():
        raise ParameterError("breech_face_log10_lr must be finite, one per pair, as many as marks")
    if not (isinstance(breech_face_sha256, str) and len(breech_face_sha256) == 64):
        raise ParameterError(f"breech_face_sha256 must be a calibration's SHA-256, got {breech_face_sha256!r}")
    _check_domain(domain)
    models = {}
    for m in MARK_NAMES[1:]:
        try:
            models[m] = fit_mark(m, [r.get(m) or {"used": False} for r in marks], y)
        except ParameterError:
            continue  # too few pairs where the mark was used: not weighed
    rows = [
        {"breech_face": float(v), **{m: models[m].log10_lr(r[m]) if m in models and r.get(m) else None for m in models}}
        for v, r in zip(bf, marks)
    ]
    out = MarksCalibration(
        models,
        fit_fusion(rows, y, min_pairs_per_class=min_pairs_per_class),
        breech_face_sha256,
        {"name": name, "description": description, "n_same": int(y.sum()), "n_different": int((~y).sum())},
        domain,
        dict(performance or {}),
    )
    out.origin = {"kind": "fitted"}
    return out


def _compact(r) -> dict[str, Any]:
    """What a store keeps of a `MarkResult` (its JSON evidence): used, why not, count, score, pose."""
    d = r.to_dict() if hasattr(r, "to_dict") else dict(r)

    def num(v):
        return None if v is None or not math.isfinite(float(v)) else round(float(v), 5)

    return {
        "used": bool(d.get("used")),
        "reason": d.get("reason"),
        "count": int(d.get("count") or 0),
        "n_elements": int(d.get("n_elements") or 0),
        "score": num(d.get("score")),
        "rotation_deg": num(d.get("rotation_deg")),
        "shift_um": num(d.get("shift_um")),
    }


def marks_candidates(marks_calibration="default") -> list[MarksCalibration]:
    """The marks calibrations ``marks_calibration`` names (see `weigh_comparison_marks`), each checked to be
    trusted; `ParameterError` otherwise. ``bx.compare`` calls it before comparing, so a refused one fails
    before the work."""
    if marks_calibration is None:
        return []
    if isinstance(marks_calibration, str) and marks_calibration == "default":
        return shipped_marks_calibrations()
    cands = list(marks_calibration) if isinstance(marks_calibration, (list, tuple)) else [marks_calibration]
    for c in cands:
        if not isinstance(c, MarksCalibration):
            raise ParameterError(f"marks_calibration must be MarksCalibration objects, got {type(c).__name__}")
        if not c.trusted:
            raise ParameterError(
                f"marks calibration {c.describe_origin()} is not trusted: only shipped ones, ones registered in a "
                f"store and ones fitted in this session weigh evidence"
            )
    return cands


def weigh_comparison_marks(res, marks_calibration="default") -> None:
    """Weigh the marks of a `Comparison` weighed by `ballistix.evidence.weigh` (in place; ``bx.compare``
    and the store call it after the breech face is weighed; nothing happens without ``res.marks``).

    ``marks_calibration``: "default" (the shipped marks calibrations, the first that applies), a
    trusted `MarksCalibration`, a list of them, or None (the marks are reported, not weighed).
    ``res.evidence["marks"]`` gets `weigh_marks`'s answer, ``results`` (each mark's count, score,
    pose, or why it was not used: what a store keeps) and the calibration used or why none applies.
    Where a fused LR results, it becomes ``res.log10_lr`` with its conclusion (the fused LR's error
    rates); the breech face's own stays in ``evidence["breech_face_log10_lr"]``.
    """
    if not res.marks:
        return
    if "breech_face_log10_lr" in res.evidence:  # weighed before: start again from the breech face's own LR
        res.log10_lr = res.evidence.pop("breech_face_log10_lr")
        res.evidence["conclusion"] = res.evidence.pop("breech_face_conclusion", None)
        if res.evidence["conclusion"] is None:
            res.evidence.pop("conclusion")
        res.evidence.pop("lr_basis", None)
    cands = marks_candidates(marks_calibration)
    results = {m: _compact(r) for m, r in res.marks.items()}
    refused, mc = [], None
    for c in cands:
        why = c.check(res)
        if why is None:
            mc = c
            break
        refused.append(f"{c.name}: {why}")
    bf = res.log10_lr
    weighed = weigh_marks(bf, res.marks, mc.models if mc else None, mc.fusion if mc else None)
    if mc is None:
        weighed["fused"]["reason"] = "no marks calibration applies (" + ("; ".join(refused) or "none given") + ")"
        for e in weighed["per_mark"].values():
            if e.get("reason", "").startswith("compared, but no calibration"):
                e["reason"] = "compared, but no marks calibration applies: not weighed"
        res.evidence["marks"] = {**weighed, "results": results}
        return
    weighed["results"] = results
    weighed["calibration"] = {"name": mc.name, "sha256": mc.sha256, "origin": mc.describe_origin()}
    res.evidence["marks"] = weighed
    if weighed["fused"].get("used") == ["breech_face"]:  # nothing to fuse with: the breech face's LR stands
        weighed["fused"].update(log10_lr=None, reason="no other mark was weighed: the breech face's own LR stands")
    fused = weighed["fused"].get("log10_lr")
    if fused is not None:
        res.evidence["breech_face_log10_lr"] = bf
        res.evidence["breech_face_conclusion"] = res.evidence.get("conclusion")
        res.evidence["lr_basis"] = "fused: " + " + ".join(m.replace("_", " ") for m in weighed["fused"]["used"])
        res.log10_lr = float(fused)
        res.evidence["conclusion"] = conclusion(res.log10_lr, mc)
