"""Evidence strength: calibrated likelihood ratios, examiner-style conclusions, stated error rates.

A comparison gives numbers (congruent cells, correlations); a court needs to
know how much more probable those numbers are if the two cases were fired by
the same gun than if they were fired by different guns. That ratio is the
likelihood ratio (LR), fitted here on a reference population of comparisons
whose truth is known:

    LR = p(features | same gun) / p(features | different guns)

Model (documented choice): logistic-regression calibration, the standard
score-to-LR method of forensic statistics. The log LR is a weighted sum of
the comparison's features (`FEATURES`) plus a constant, fitted with the two
classes weighted equally (so the fitted log-odds are log LRs, whatever the
mix of the reference set), a small ridge penalty, and the weights held
non-negative: the LR never falls when a feature that marks a match rises
(monotone). The LR is then bounded by what the reference data can support,
with the empirical lower and upper bounds (ELUB) of Vergeer et al. (2016):
an LR beyond them would claim more than the reference set could ever have
shown (no LR of 10^12 from 700 different-gun pairs).

Quality is reported with the standard measures (`cllr`, `cllr_min`,
`misleading`, `tippett`; they live in `ballistix.evaluation.lr` and are
re-exported here), and `cross_validate` leaves out whole guns: the LR of a
pair comes from a calibration fitted without any pair involving either of
its guns.

`conclusion` maps an LR to the familiar examiner scale (identification /
inconclusive / elimination) with the thresholds stated as LR values and the
error rates measured on the calibration's reference set. It is an aid for
the examiner, not a replacement.

`weigh` attaches the LR to a comparison (`bx.compare` compares, then weighs).

Trust (see docs/evidence.md, "Which calibrations are trusted"): a calibration
decides what an LR says, so `weigh` uses one only when its origin is known:
shipped with the package (its checksum pinned in this module), registered in
a lab's case store (who, when, from what validation data), or fitted in this
session by the caller's own code. A calibration file from anywhere else is
refused, whatever checksum it carries: an unkeyed SHA-256 proves nothing about
who wrote the file. Every result names the calibration's checksum and origin.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._files import atomic_file
from ._version import __version__
from .errors import FileFormatError, ParameterError
from .evaluation.lr import (
    ELIMINATION_LR,
    IDENTIFICATION_LR,
    cllr,
    cllr_min,
    conclusion_rates,
    elub_bounds,
    misleading,
    tippett,
)
from .provenance import POPULATION_KEYS, _canonical, _norm, population, processing_signature

# Re-exported here, where users have always found them: the LR measures of `ballistix.evaluation.lr`
# (`cllr`, `cllr_min`, `misleading`, `elub_bounds`, `tippett`, `conclusion_rates`, the examiner-scale
# thresholds) and `population`, `processing_signature`, `POPULATION_KEYS` of `ballistix.provenance`.

__all__ = [
    "FEATURES",
    "Calibration",
    "CalibrationMismatchError",
    "feature_values",
    "fit",
    "cross_validate",
    "cv_splits",
    "weigh",
    "cllr",
    "cllr_min",
    "elub_bounds",
    "misleading",
    "tippett",
    "conclusion",
    "conclusion_rates",
    "verbal",
    "load_calibration",
    "default_calibration",
    "shipped_calibrations",
    "select_calibration",
    "population",
    "domain_check",
    "processing_signature",
    "IDENTIFICATION_LR",
    "ELIMINATION_LR",
    "POPULATION_KEYS",
    "COHORT_FEATURES",
    "UntrustedCalibrationError",
    "cap_without_cells",
    "trusted_calibration",
    "SHIPPED_SHA256",
]

#: Features of a comparison used by the LR model; each one can only raise the LR.
FEATURES: dict[str, str] = {
    "cmc": "congruent matching cells (the smaller of the two directions' counts)",
    "congruent_corr": "mean correlation of the congruent cells (0 when there are none)",
    "cell_corr": "mean correlation of all valid reference cells at their best rotation",
}
#: Features of a *cohort* calibration: the pair's count relative to both exhibits' different-gun
#: backgrounds in their population (`ballistix.cohort`). Such a calibration weighs a pair only
#: where a store provides the cohorts (`CaseStore.graph`; settings in ``reference["cohort"]``).
COHORT_FEATURES: dict[str, str] = {
    "cmc_excess": "congruent matching cells above the higher of the two exhibits' cohort backgrounds",
}
FEATURE_SETS = (tuple(FEATURES), tuple(COHORT_FEATURES))
FORMAT = "ballistix-calibration"
FORMAT_VERSION = 1


class CalibrationMismatchError(ParameterError):
    """A calibration was asked to weigh a comparison made with other parameters than its own,
    or of scans outside its population (domain)."""


class UntrustedCalibrationError(ParameterError):
    """A calibration whose origin is not known (neither shipped with ballistix, nor registered in a
    case store, nor fitted in this session) was given to weigh a comparison."""


#: SHA-256 of the canonical content of each calibration shipped in ``ballistix/data`` (the ``sha256``
#: field of the file). Pinned in the code: a shipped file that does not match is refused. A benchmark
#: that regenerates a shipped calibration on purpose must update its entry here, in the same commit.
SHIPPED_SHA256 = {
    "calibration_default.json": "edfda063d748c16a1320d03d478919530c169956ce24de1f3b23fb28a21e7426",
    "calibration_cohort.json": "1773edb6a9d22c301f4696b429809fed8cc4835823ea3074e524fd92d74868b7",
}


# ---------------------------------------------------------------------------------------------- populations


def domain_check(domain: dict | None, pop: dict, label: str = "scan") -> str | None:
    """Why a scan of population ``pop`` lies outside ``domain`` (None when inside).

    ``domain`` maps population keys to the accepted values (matched case- and
    punctuation-blind; None: any value); ``domain["unknown_ok"]`` lists the keys
    for which an unrecorded value is accepted (the note of the comparison says so).
    A restricted key whose value is unknown, and not in ``unknown_ok``, refuses.
    """
    if not domain:
        return None
    unknown_ok = set(domain.get("unknown_ok") or ())
    for key in POPULATION_KEYS:
        allowed = domain.get(key)
        if allowed is None:
            continue
        v = pop.get(key)
        if v is None:
            if key in unknown_ok:
                continue
            return f"{label}: {key.replace('_', '/')} is not recorded, and the calibration applies only to {allowed}"
        if _norm(_canonical(key, v)) not in {_norm(_canonical(key, a)) for a in allowed}:
            return f"{label}: {key.replace('_', '/')} {v!r} is outside the calibration's domain {allowed}"
    return None


def feature_values(comparison) -> dict[str, float]:
    """The model's features of one comparison (a `Comparison` or a mapping holding them)."""
    if isinstance(comparison, dict):
        missing = [k for k in FEATURES if k not in comparison]
        if missing:
            raise ParameterError(f"comparison features lack {missing}; expected the keys {list(FEATURES)}")
        return {k: float(comparison[k]) for k in FEATURES}
    corr = np.array([c["correlation"] for c in comparison.cells], float)
    corr = corr[np.isfinite(corr)]
    cmc = int(comparison.cmc_count)
    return {
        "cmc": float(cmc),
        "congruent_corr": float(comparison.score - cmc) if cmc > 0 else 0.0,
        "cell_corr": float(corr.mean()) if corr.size else 0.0,
    }


def _matrix(rows, names=tuple(FEATURES)) -> np.ndarray:
    names = list(names)
    if isinstance(rows, np.ndarray):
        X = np.asarray(rows, float)
    elif names == list(FEATURES):
        X = np.array([[feature_values(r)[k] for k in FEATURES] for r in rows], float).reshape(-1, len(FEATURES))
    else:
        try:
            X = np.array([[float(r[k]) for k in names] for r in rows], float).reshape(-1, len(names))
        except (KeyError, TypeError, ValueError):
            raise ParameterError(f"feature rows must be mappings with the keys {names}") from None
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ParameterError(f"features must be an (n, {len(names)}) array in the order {names}; got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ParameterError("features hold NaN or infinite values")
    return X


def _canon(o) -> str:
    return json.dumps(o, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


# ---------------------------------------------------------------------------------------------- model


def _fit_weights(
    X: np.ndarray, y: np.ndarray, ridge: float, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-balanced (weighted) logistic regression with non-negative slopes on standardised features."""
    from scipy import optimize  # here, not at the top: `import ballistix` stays fast

    w = np.ones(len(y)) if weight is None else weight
    mu = np.average(X, axis=0, weights=w)
    sd = np.sqrt(np.average((X - mu) ** 2, axis=0, weights=w))
    sd[sd == 0] = 1.0
    Z = (X - mu) / sd
    sgn = np.where(y, 1.0, -1.0)
    c = np.where(y, 0.5 * w / w[y].sum(), 0.5 * w / w[~y].sum())

    def loss(w):
        m = sgn * (w[0] + Z @ w[1:])
        val = (c * np.logaddexp(0, -m)).sum() + 0.5 * ridge * (w[1:] @ w[1:])
        g = -c * sgn * np.exp(-np.logaddexp(0, m))  # derivative of c*log(1+exp(-m)) with respect to z
        grad = np.r_[g.sum(), Z.T @ g + ridge * w[1:]]
        return val, grad

    w0 = np.zeros(X.shape[1] + 1)
    bounds = [(None, None)] + [(0.0, None)] * X.shape[1]
    res = optimize.minimize(
        loss, w0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000, "gtol": 1e-10}
    )
    return res.x, mu, sd


class _Recorded:
    """What a calibration file shares, whatever it calibrates: its name, the SHA-256 of its content, its
    origin (``origin``, not part of the content) and how it is written (``{"sha256": ..., DOC_KEY: ...}``)."""

    DOC_KEY = "calibration"

    @property
    def name(self) -> str:
        return str(self.reference.get("name", "unnamed"))

    @property
    def sha256(self) -> str:
        """SHA-256 of the calibration's canonical content (the ``sha256`` field of its file)."""
        return hashlib.sha256(_canon(self.to_dict()).encode()).hexdigest()

    @property
    def trusted(self) -> bool:
        """True when the origin is known: shipped, registered in a store, or fitted in this session."""
        return self.origin.get("kind") in ("shipped", "registered", "fitted")

    def describe_origin(self) -> str:
        """One line naming the calibration, its checksum and its origin, for every output."""
        o = self.origin
        kind = o.get("kind")
        where = {
            "shipped": lambda: f"shipped with ballistix ({o.get('file')})",
            "registered": lambda: (
                f"registered in the store {o.get('store')} by {o.get('registered_by')} "
                f"on {o.get('registered_utc')} ({o.get('reason')})"
            ),
            "fitted": lambda: "fitted in this session (not registered in a store)",
            "file": lambda: f"read from {o.get('path')}: origin unknown, not trusted",
        }.get(kind, lambda: "built by hand: origin unknown, not trusted")()
        return f"{self.name} [sha256 {self.sha256[:16]}; {where}]"

    def domain_problem(self, comparison) -> str | None:
        """Why either scan of ``comparison`` lies outside the calibration's ``domain`` (None: both inside)."""
        for side in ("a", "b"):
            inp = comparison.inputs[side]
            why = domain_check(self.domain, inp.get("population") or {}, f"scan {inp.get('label', side)}")
            if why:
                return why
        return None

    def save(self, path) -> Path:
        """Write the calibration as one JSON file (atomically), with a SHA-256 of its content."""
        body = _canon(self.to_dict())
        doc = {"sha256": hashlib.sha256(body.encode()).hexdigest(), self.DOC_KEY: json.loads(body)}
        path = Path(path)
        with atomic_file(path) as f:
            f.write(json.dumps(doc, indent=1, sort_keys=True).encode())
        return path


@dataclass
class Calibration(_Recorded):
    """A fitted LR model with its bounds, reference set and measured performance.

    ``coef`` are the natural-log-odds weights on the standardised features
    (``mean``, ``scale``), ``bounds_log10`` the ELUB bounds. ``reference``
    describes the data it was fitted on (sets, counts, SHA-256 of the
    features); ``preprocessing`` and ``comparison`` are the parameters the
    reference comparisons were made with; a comparison made otherwise is
    refused. ``performance`` holds the cross-validated measures and the
    conclusion scale's error rates. ``domain`` is the population it was
    validated on (see `domain_check`): scans from outside it are refused.
    """

    coef: list[float]
    mean: list[float]
    scale: list[float]
    bounds_log10: list[float]
    reference: dict[str, Any]
    preprocessing: list | None = None
    comparison: dict[str, Any] | None = None
    performance: dict[str, Any] = field(default_factory=dict)
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    version: str = __version__
    domain: dict[str, Any] | None = None
    #: Where this calibration comes from (not part of its content or checksum): ``kind`` is
    #: "shipped", "registered" (in a case store), "fitted" (by `fit` in this session), "file" (read
    #: from a file of unknown origin: not trusted) or "unverified" (built by hand: not trusted).
    origin: ClassVar[dict[str, Any]] = {"kind": "unverified"}

    def specificity(self) -> int:
        """How many population keys the domain restricts (a more specific calibration is preferred)."""
        return sum(1 for k in POPULATION_KEYS if (self.domain or {}).get(k) is not None)

    def raw_log10_lr(self, X) -> np.ndarray:
        """Unbounded log10 LRs of feature rows (see `feature_values`)."""
        Z = (_matrix(X, self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return (self.coef[0] + Z @ np.asarray(self.coef[1:])) / math.log(10)

    def log10_lr(self, X) -> np.ndarray:
        """Log10 LRs of feature rows, bounded by the ELUB bounds."""
        return np.clip(self.raw_log10_lr(X), *self.bounds_log10)

    @property
    def needs_cohort(self) -> bool:
        """True for a cohort calibration (`COHORT_FEATURES`): it weighs a pair only with both
        exhibits' cohort backgrounds, which a single comparison does not have."""
        return list(self.features) == list(COHORT_FEATURES)

    def check(self, comparison, *, cohort: bool = False) -> str | None:
        """Why this calibration cannot weigh ``comparison`` (None when it can). ``cohort``: the
        caller has the cohort features (see `needs_cohort`)."""
        if self.needs_cohort and not cohort:
            return "a cohort calibration needs both exhibits' cohort backgrounds (a store or a validation set)"
        if self.comparison is not None:
            p = comparison.params
            diff = sorted(k for k, v in self.comparison.items() if _canon(p.get(k)) != _canon(v))
            if diff:
                return f"the comparison parameters differ from the calibration's in {diff}"
        if self.preprocessing is not None:
            for side in ("a", "b"):
                sig = comparison.inputs[side].get("processing")
                if sig is None or _canon(sig) != _canon(self.preprocessing):
                    return (
                        f"scan {comparison.inputs[side].get('label', side)} was not preprocessed with the "
                        f"calibration's preprocessing steps and parameters"
                    )
        return self.domain_problem(comparison)

    def weigh(self, comparison, strict: bool = True) -> float | None:
        """Bounded log10 LR of one comparison; a mismatch raises `CalibrationMismatchError`
        (or returns None when ``strict`` is False)."""
        why = self.check(comparison)
        if why:
            if strict:
                raise CalibrationMismatchError(f"calibration {self.reference.get('name', '?')} refused: {why}")
            return None
        return cap_without_cells(float(self.log10_lr([comparison])[0]), comparison.cmc_count)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}


def _read_recorded(path: Path, key: str, max_bytes: int) -> tuple[dict, dict]:
    """A file `_Recorded.save` wrote, read and checked against its own SHA-256: ``(document, body)``.
    ``key``: the body's name in the document ("calibration", "marks_calibration")."""
    what = key.replace("_", " ")
    try:
        if path.stat().st_size > max_bytes:
            raise FileFormatError(path, f"too large for a {what} file")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileFormatError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(path, f"not a readable {what} file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
        raise FileFormatError(path, f"not a ballistix {what} file (no {key!r} object)")
    if hashlib.sha256(_canon(doc[key]).encode()).hexdigest() != doc.get("sha256"):
        raise FileFormatError(path, f"checksum mismatch: the {what} was altered or damaged")
    return doc, doc[key]


def load_calibration(path) -> Calibration:
    """Read a calibration written by `Calibration.save`; a damaged or foreign file raises
    `FileFormatError` naming it."""
    path = Path(path)
    doc, cal = _read_recorded(path, "calibration", 50_000_000)
    if cal.get("format") != FORMAT or cal.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(
            path, f"unsupported calibration format {cal.get('format')!r} version {cal.get('format_version')!r}"
        )
    if tuple(cal.get("features") or ()) not in FEATURE_SETS:
        raise FileFormatError(
            path,
            f"calibration features {cal.get('features')} are not one of this version's "
            f"{[list(f) for f in FEATURE_SETS]}",
        )
    kw = {k: v for k, v in cal.items() if k not in ("format", "format_version")}
    _check_domain(kw.get("domain"), path)
    try:
        c = Calibration(**kw)
        n = len(c.features)
        ok = (
            len(c.coef) == n + 1
            and len(c.mean) == n
            and len(c.scale) == n
            and len(c.bounds_log10) == 2
            and all(math.isfinite(v) for v in [*c.coef, *c.mean, *c.scale, *c.bounds_log10])
            and all(v >= 0 for v in c.coef[1:])
            and all(v > 0 for v in c.scale)
            and c.bounds_log10[0] <= 0 <= c.bounds_log10[1]
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FileFormatError(path, "calibration values are incomplete or out of range")
    why = _bounds_problem(c)
    if why:
        raise FileFormatError(path, why)
    c.origin = {"kind": "file", "path": str(path), "sha256": doc["sha256"]}
    return c


def _bounds_problem(cal: Calibration) -> str | None:
    """Why a calibration's LR bounds or error rates claim more than its reference set can show.

    With ``n`` different-gun reference pairs (plus the one misleading pair the ELUB method adds),
    no upper bound above log10(n + 1) can do better than an uninformative system at the prior
    odds it would decide at; likewise the lower bound and the same-gun pairs (Vergeer et al.
    2016; see `elub_bounds`). Conclusion error rates must be counts within their totals."""
    ref = cal.reference
    n_same, n_diff = ref.get("n_same"), ref.get("n_different")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in (n_same, n_diff)):
        return f"the reference set must state its counts n_same and n_different (>= 2), got {n_same!r}, {n_diff!r}"
    lo, hi = cal.bounds_log10
    if hi > math.log10(n_diff + 1) + 1e-9 or lo < -math.log10(n_same + 1) - 1e-9:
        return (
            f"LR bounds log10 [{lo:g}, {hi:g}] claim more than {n_same} same-gun and {n_diff} different-gun "
            f"reference pairs can support (at most [{-math.log10(n_same + 1):.2f}, "
            f"{math.log10(n_diff + 1):.2f}])"
        )
    for name, r in ((cal.performance or {}).get("conclusions") or {}).items():
        if not isinstance(r, dict):
            continue
        for k, n in (("same", "n_same"), ("different", "n_different")):
            kv, nv = r.get(k), r.get(n)
            if not (isinstance(kv, int) and isinstance(nv, int) and 0 <= kv <= nv):
                return f"conclusion error rates for {name!r}: {k} {kv!r} of {n} {nv!r} is not a count within its total"
            if abs(float(r.get(f"rate_{k}", -1)) - (kv / nv if nv else 0.0)) > 1e-9:
                return f"conclusion error rates for {name!r}: rate_{k} disagrees with {kv} of {nv}"
    return None


def cap_without_cells(log10_lr: float, cmc_count) -> float:
    """An identification never rests on a pair with no congruent cells: with ``cmc_count`` 0 the
    log10 LR is at most 0 (no support for the same gun), whatever the calibration says."""
    if cmc_count is not None and cmc_count <= 0 and log10_lr > 0:
        return 0.0
    return log10_lr


def _check_domain(domain, path=None) -> None:
    """A domain is None or a mapping of population keys to lists of strings (or None), plus
    ``unknown_ok`` (a list of population keys)."""
    if domain is None:
        return
    problem = None
    if not isinstance(domain, dict):
        problem = f"a domain must be a mapping, got {type(domain).__name__}"
    else:
        unknown = set(domain) - set(POPULATION_KEYS) - {"unknown_ok", "description"}
        if unknown:
            problem = f"unknown domain keys {sorted(unknown)}; known: {list(POPULATION_KEYS)}, unknown_ok, description"
        for k in POPULATION_KEYS:
            v = domain.get(k)
            if v is not None and not (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)):
                problem = f"domain {k} must be a non-empty list of strings or None, got {v!r}"
        ok = domain.get("unknown_ok") or []
        if not (isinstance(ok, list) and set(ok) <= set(POPULATION_KEYS)):
            problem = f"domain unknown_ok must list population keys, got {ok!r}"
    if problem:
        if path is not None:
            raise FileFormatError(path, problem)
        raise ParameterError(problem)


_SHIPPED: dict[str, Calibration] | None = None


def _shipped_files(prefix: str, pins: dict[str, str], load, pinned_in: str) -> dict[str, Any]:
    """The calibration files ``ballistix/data/<prefix>*.json`` shipped with the package, read by ``load``
    and each held to the SHA-256 pinned in ``pins`` (named ``pinned_in`` in the message when it is not),
    by name (the file name without prefix and suffix), with their origin "shipped"."""
    out = {}
    for f in sorted(resources.files("ballistix").joinpath("data").iterdir(), key=lambda f: f.name):
        if f.name.startswith(prefix) and f.name.endswith(".json"):
            with resources.as_file(f) as p:
                cal = load(p)
            if pins.get(f.name) != cal.origin["sha256"]:
                raise FileFormatError(
                    f"ballistix/data/{f.name}",
                    f"not the calibration shipped with this version (its checksum is not the one pinned in "
                    f"{pinned_in}): reinstall ballistix (a developer who regenerated it on purpose updates the "
                    f"pin in the same commit)",
                )
            cal.origin = {"kind": "shipped", "file": f.name, "sha256": cal.origin["sha256"], "ballistix": __version__}
            out[f.name[len(prefix) : -len(".json")]] = cal
    return out


def _shipped() -> dict[str, Calibration]:
    global _SHIPPED
    if _SHIPPED is None:
        cals = _shipped_files("calibration_", SHIPPED_SHA256, load_calibration, "ballistix.evidence.SHIPPED_SHA256")
        if "default" not in cals:
            raise FileFormatError("ballistix/data/calibration_default.json", "missing from the package")
        _SHIPPED = cals
    return _SHIPPED


def shipped_calibrations() -> list[Calibration]:
    """The calibrations shipped with the package, most specific domain first (the generic
    default, ``calibration_default.json``, last). See docs/evidence.md for what each was
    fitted on and its limits."""
    return sorted(_shipped().values(), key=lambda c: (-c.specificity(), c.name))


def default_calibration() -> Calibration:
    """The generic calibration shipped with the package (``calibration_default.json``), used
    when no more specific shipped calibration applies."""
    return _shipped()["default"]


def trusted_calibration(calibration, registered=()) -> Calibration:
    """The trusted calibration for a `Calibration` or a calibration file, or
    `UntrustedCalibrationError`.

    Trusted: a calibration shipped with the package (checksum pinned in the code),
    one registered in a case store (``registered``: e.g. ``store.calibrations()``),
    or one fitted in this session by `fit`. A file whose content is one of those
    (same SHA-256) stands for it; any other file is refused: its own checksum
    shows only that it was not damaged, not who made it or from what data.
    """
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    if cal.trusted:
        return cal
    for c in [*registered, *shipped_calibrations()]:
        if c.trusted and c.sha256 == cal.sha256:
            return c
    where = cal.origin.get("path") or "given in memory"
    raise UntrustedCalibrationError(
        f"calibration {cal.name!r} ({where}, sha256 {cal.sha256[:16]}) is neither shipped with ballistix nor "
        f"registered in a case store, so it is not used: a file's own checksum does not say who made it or "
        f"from what data. Validate it, register it in the lab's store (ballistix register-calibration --store "
        f"DIR FILE --reason TEXT) and compare with --store DIR (Python: calibration=store.calibrations())"
    )


def select_calibration(comparison, calibrations=None, *, cohort: bool = False) -> tuple[Calibration | None, list[str]]:
    """The most specific calibration that applies to a comparison, and why the others refused.

    ``calibrations``: candidates (default: `shipped_calibrations`). A calibration
    applies when the comparison's parameters and preprocessing are its own and
    both scans lie in its domain (`Calibration.check`). Among those that apply,
    the one restricting most population keys wins (ties: the first given).
    ``cohort``: choose among cohort calibrations (`Calibration.needs_cohort`)
    instead of pair calibrations. Returns ``(None, reasons)`` when none applies:
    the pair then has no LR and is a candidate for an examiner, never a link.
    """
    cals = shipped_calibrations() if calibrations is None else list(calibrations)
    reasons, best = [], None
    for c in cals:
        if c.needs_cohort != cohort:
            continue
        why = c.check(comparison, cohort=cohort)
        if why:
            reasons.append(f"{c.name}: {why}")
        elif best is None or c.specificity() > best.specificity():
            best = c
    return best, reasons


def fit(
    X,
    same,
    *,
    sample_weight=None,
    ridge: float = 1e-3,
    name: str = "unnamed",
    description: str = "",
    preprocessing: list | None = None,
    comparison: dict[str, Any] | None = None,
    extra_reference: dict[str, Any] | None = None,
    domain: dict[str, Any] | None = None,
    features: list[str] | None = None,
) -> Calibration:
    """Fit a calibration on reference comparisons of known truth.

    Parameters
    ----------
    X : (n, len(FEATURES)) array or sequence of comparisons / feature mappings
    same : (n,) bool, True for same-gun pairs
    sample_weight : (n,) positive floats, optional
        Relative weights within each class (for example to let several
        reference populations count equally); the classes always weigh equally.
        The ELUB bounds use the plain counts.
    ridge : float
        L2 penalty on the standardised slopes (keeps the fit finite when the
        classes separate completely; the ELUB bounds then set the LR).
    name, description : str
        What the reference set is, kept with the calibration.
    preprocessing, comparison
        Parameters the reference comparisons were made with (`processing_signature`
        of the scans, `Comparison.params`); a comparison made otherwise is refused.
    domain : dict, optional
        The population the reference set represents (`POPULATION_KEYS` -> accepted
        values, ``unknown_ok``); see `domain_check`. None: no restriction, which
        only a calibration fitted on varied populations should claim.
    """
    _check_domain(domain)
    names = list(FEATURES) if features is None else list(features)
    if tuple(names) not in FEATURE_SETS:
        raise ParameterError(f"features must be one of {[list(f) for f in FEATURE_SETS]}, got {names}")
    Xm = _matrix(X, names)
    y = np.asarray(same, bool)
    if y.shape != (Xm.shape[0],):
        raise ParameterError(f"same must hold one flag per comparison ({Xm.shape[0]}), got shape {y.shape}")
    if y.sum() < 2 or (~y).sum() < 2:
        raise ParameterError(
            f"a calibration needs at least 2 same-gun and 2 different-gun comparisons; got "
            f"{int(y.sum())} and {int((~y).sum())}"
        )
    wt = None
    if sample_weight is not None:
        wt = np.asarray(sample_weight, float)
        if wt.shape != y.shape or not np.all(np.isfinite(wt)) or np.any(wt <= 0):
            raise ParameterError(f"sample_weight must hold one positive finite weight per comparison ({len(y)})")
    w, mu, sd = _fit_weights(Xm, y, ridge, wt)
    cal = Calibration(
        coef=w.tolist(),
        mean=mu.tolist(),
        scale=sd.tolist(),
        bounds_log10=[0.0, 0.0],
        reference={
            "name": name,
            "description": description,
            "n_same": int(y.sum()),
            "n_different": int((~y).sum()),
            "ridge": ridge,
            "features_sha256": hashlib.sha256(np.ascontiguousarray(Xm).tobytes() + y.tobytes()).hexdigest(),
            **(extra_reference or {}),
        },
        preprocessing=preprocessing,
        comparison=comparison,
        domain=domain,
        features=names,
    )
    cal.bounds_log10 = list(elub_bounds(cal.raw_log10_lr(Xm), y))
    cal.origin = {"kind": "fitted", "fitted_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    return cal


def cv_splits(guns_a, guns_b, n_folds: int = 10, seed: int = 0):
    """(train, test) boolean masks over the pairs for `cross_validate`: every pair is tested
    once, by a split whose training pairs share no gun with it."""
    ga, gb = [str(g) for g in guns_a], [str(g) for g in guns_b]
    if len(ga) != len(gb):
        raise ParameterError(f"guns_a and guns_b must be of one length, got {len(ga)} and {len(gb)}")
    if not (isinstance(n_folds, int) and n_folds >= 2):
        raise ParameterError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    guns = sorted(set(ga) | set(gb))
    order = np.random.default_rng(seed).permutation(len(guns))
    fold_of = {g: int(order[i]) % n_folds for i, g in enumerate(guns)}
    fa, fb = np.array([fold_of[g] for g in ga]), np.array([fold_of[g] for g in gb])
    for i, j in sorted({tuple(sorted(k)) for k in zip(fa.tolist(), fb.tolist())}):
        test = ((fa == i) & (fb == j)) | ((fa == j) & (fb == i))
        train = ~np.isin(fa, (i, j)) & ~np.isin(fb, (i, j))
        yield train, test


def cross_validate(
    X, same, guns_a, guns_b, *, n_folds: int = 10, seed: int = 0, sample_weight=None, **fit_kw
) -> np.ndarray:
    """Bounded log10 LRs where no pair calibrates its own guns.

    The guns are split into ``n_folds`` groups (one gun per group when there
    are at most ``n_folds`` guns: leave-one-gun-out). A pair whose guns fall in
    groups i and j gets its LR from a calibration fitted on the pairs that
    involve neither group (`cv_splits`).
    """
    Xm = _matrix(X, fit_kw.get("features") or FEATURES)
    y = np.asarray(same, bool)
    if y.shape != (Xm.shape[0],):
        raise ParameterError(f"same must hold one flag per comparison ({Xm.shape[0]}), got shape {y.shape}")
    out = np.full(len(y), np.nan)
    for train, test in cv_splits(guns_a, guns_b, n_folds, seed):
        if y[train].sum() < 2 or (~y[train]).sum() < 2:
            raise ParameterError(
                "too few guns to leave a pair's guns out and still fit a calibration (use more guns or fewer folds)"
            )
        w = None if sample_weight is None else np.asarray(sample_weight, float)[train]
        out[test] = fit(Xm[train], y[train], sample_weight=w, **fit_kw).log10_lr(Xm[test])
    return out


# ---------------------------------------------------------------------------------------------- conclusions

_VERBAL = [
    (6, "extremely strong support"),
    (4, "very strong support"),
    (3, "strong support"),
    (2, "moderately strong support"),
    (1, "moderate support"),
    (0, "weak support"),
]


def verbal(log10_lr: float) -> str:
    """ENFSI verbal equivalent of an LR ("... for same gun" above 1, "... for different guns" below)."""
    if abs(log10_lr) < 1e-12:
        return "no support either way"
    side = "same gun" if log10_lr > 0 else "different guns"
    words = next(w for t, w in _VERBAL if abs(log10_lr) >= t)
    return f"{words} for {side}"


def conclusion(log10_lr: float, calibration: Calibration | None = None) -> dict[str, Any]:
    """Examiner-scale conclusion of a log10 LR, with the calibration's measured error rates.

    Identification at LR >= `IDENTIFICATION_LR` (100), elimination at LR <=
    `ELIMINATION_LR` (1/100), inconclusive between. ``error_rate`` is the
    share of reference pairs of the other truth that reached the same
    conclusion in cross-validation (for identification: different-gun pairs;
    for elimination: same-gun pairs), with its 95% upper bound.
    """
    if not math.isfinite(log10_lr):
        raise ParameterError(f"log10_lr must be finite, got {log10_lr}")
    rates = (calibration.performance.get("conclusions") if calibration is not None else None) or {}
    hi = math.log10(rates.get("identification_lr", IDENTIFICATION_LR))
    lo = math.log10(rates.get("elimination_lr", ELIMINATION_LR))
    name = "identification" if log10_lr >= hi else "elimination" if log10_lr <= lo else "inconclusive"
    out = {
        "conclusion": name,
        "log10_lr": float(log10_lr),
        "verbal": verbal(log10_lr),
        "thresholds_lr": {"identification": 10**hi, "elimination": 10**lo},
    }
    r = rates.get(name)
    if r:
        if name == "identification":
            out["error_rate"] = {
                "what": "different-gun pairs called identification",
                "k": r["different"],
                "n": r["n_different"],
                "rate": r["rate_different"],
                "upper95": r["upper95_different"],
            }
        elif name == "elimination":
            out["error_rate"] = {
                "what": "same-gun pairs called elimination",
                "k": r["same"],
                "n": r["n_same"],
                "rate": r["rate_same"],
                "upper95": r["upper95_same"],
            }
        else:
            out["error_rate"] = {
                "what": "share of reference pairs left inconclusive",
                "same": r["rate_same"],
                "different": r["rate_different"],
            }
    return out


# ---------------------------------------------------------------------------------------------- weighing


def weigh(comparison, calibration="default"):
    """The comparison with its likelihood ratio: a calibration weighs it (a new `Comparison`).

    Parameters
    ----------
    comparison : Comparison
        From `ballistix.features.comparison.compare`; a comparison weighed before is
        weighed afresh (its ``log10_lr`` and ``evidence`` are replaced).
    calibration : "default", list of Calibration, Calibration, path or None
        "default": the most specific shipped calibration whose parameters,
        preprocessing and domain fit the pair (`select_calibration`); where none
        applies, ``log10_lr`` is None and ``evidence["note"]`` says why. A list
        (for example ``store.calibrations()``, registered and shipped): the most
        specific of those. A `Calibration` or its file: that one, which must be
        trusted (`trusted_calibration`) and must fit the pair, or
        `CalibrationMismatchError`. None: no LR.

    Returns
    -------
    Comparison
        With ``log10_lr`` (bounded by the calibration's ELUB bounds, at most 0
        without congruent cells: `cap_without_cells`) and ``evidence``: the
        calibration's name, checksum, origin and domain, the examiner-scale
        `conclusion`, or the reason there is no LR. When either scan's
        breech-face region is doubtful or failed (``inputs[side]["segmentation"]``),
        no LR is given, in either direction, and ``evidence["segmentation"]`` says so.

    Examples
    --------
    >>> from ballistix.features.comparison import compare
    >>> res = weigh(compare(a, b))  # doctest: +SKIP
    >>> res.log10_lr, res.evidence["conclusion"]["conclusion"]  # doctest: +SKIP
    (2.8, 'identification')
    """
    calibration = _trusted(calibration)
    res = replace(comparison, log10_lr=None, evidence={})
    if calibration is not None:
        _attach_lr(res, calibration)
    _withhold_lr_on_doubtful_regions(res)
    return res


def _trusted(calibration):
    """``calibration`` as `weigh` takes it, with a file or a list brought to trusted `Calibration`
    objects (`trusted_calibration`); `weigh` takes the result back at no cost, so many
    comparisons are weighed with one reading of a file."""
    if calibration is None or (isinstance(calibration, str) and calibration == "default"):
        return calibration
    if isinstance(calibration, (list, tuple)):  # candidates (a store's registered + shipped): the best that applies
        if not calibration or not all(isinstance(c, Calibration) for c in calibration):
            raise ParameterError("a list of calibrations must hold Calibration objects")
        return [trusted_calibration(c) for c in calibration]
    if isinstance(calibration, (Calibration, str, bytes)) or hasattr(calibration, "__fspath__"):
        return trusted_calibration(calibration)
    raise ParameterError(
        f"calibration must be 'default', a Calibration, a list of them, a path or None; got "
        f"{type(calibration).__name__}"
    )


def _attach_lr(res, calibration) -> None:
    strict = False
    if isinstance(calibration, str):  # "default": the most specific shipped one that applies
        cal, refused = select_calibration(res)
    elif isinstance(calibration, list):
        cal, refused = select_calibration(res, calibration)
    else:
        cal, refused, strict = calibration, [], True
    if cal is None:
        res.evidence = {
            "calibration": None,
            "note": "no likelihood ratio: no calibration applies to this pair ("
            + "; ".join(refused)
            + "); an unverified candidate for an examiner, never a link",
        }
        return
    res.log10_lr = cal.weigh(res, strict=strict)
    res.evidence = {
        "calibration": cal.name,
        "calibration_sha256": cal.sha256,
        "calibration_origin": {**cal.origin, "text": cal.describe_origin()},
        "calibration_reference_sha256": cal.reference.get("features_sha256"),
        "calibration_domain": cal.domain,
    }
    if res.log10_lr is not None and res.cmc_count <= 0:
        res.evidence["capped"] = "no congruent cells: no support for the same gun, whatever the calibration"
    unknown = [
        k
        for k in (cal.domain or {}).get("unknown_ok") or ()
        if (cal.domain or {}).get(k) is not None
        and any((res.inputs[s].get("population") or {}).get(k) is None for s in ("a", "b"))
    ]
    if unknown:
        res.evidence["assumed"] = (
            f"{', '.join(unknown)} not recorded for a scan: taken to be within the "
            f"calibration's domain ({'; '.join(str(cal.domain[k]) for k in unknown)})"
        )
    if res.log10_lr is None:
        res.evidence["note"] = f"no likelihood ratio: {cal.check(res)}"
    else:
        res.evidence["conclusion"] = conclusion(res.log10_lr, cal)


# A comparison is only as good as the breech-face regions it compares. A region that `find_breech_face`
# flagged as doubtful (primer clipped, firing pin far off centre, little of it measured, ...) may hold the
# wrong surface: a case-head rim compares badly with anything (few CMCs, an LR "for different guns" that
# only says the segmentation failed), and a headstamp shared by cartridges of one box could compare well
# (an LR "for the same gun" that only says the ammunition matches). So when either side is doubtful (or
# failed, if it was let through with check=False) no likelihood ratio is given, in either direction:
# the CMC count and score stay, as features for an examiner, and evidence["note"] says why.


def _withhold_lr_on_doubtful_regions(res) -> None:
    status = {side: (res.inputs[side].get("segmentation") or {}).get("status") for side in ("a", "b")}
    if not any(st is not None for st in status.values()):
        return
    bad = [side for side, st in status.items() if st in ("doubtful", "failed")]
    res.evidence["segmentation"] = {"a": status["a"], "b": status["b"], "lr_withheld": bool(bad)}
    if bad:
        why = "; ".join(
            f"scan {res.inputs[side].get('label', side)} {status[side]}: "
            + ", ".join(res.inputs[side]["segmentation"].get("reasons", []))
            for side in bad
        )
        res.log10_lr = None
        res.evidence.pop("conclusion", None)
        res.evidence["note"] = f"no likelihood ratio: the breech-face region is not trustworthy ({why})"
