"""Validation kit: a lab runs the method on its own scans of known truth and gets its error rates.

Before a method is used in casework, ISO/IEC 17025 asks the lab to show that it
works on the lab's own material: its guns, its ammunition, its microscope. This
module does that in one call (`validate`) or one command (``ballistix validate``):

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
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime as _dt
import inspect
import io
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import evidence as ev
from ._files import atomic_file, sha256_file
from ._html import escape, page, png, table
from ._version import __version__
from .errors import BallistixError, FileFormatError, ParameterError
from .evaluation.lr import cllr, cllr_min, conclusion_rates, misleading, tippett
from .provenance import POPULATION_KEYS, population, processing_signature
from .scan import scan_sha256

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

#: LR thresholds tested for "identification" (LR at or above)
LR_IDENTIFICATION_RULES = (10.0, 100.0, 1000.0, 1e4)
#: LR thresholds tested for "elimination" (LR at or below)
LR_ELIMINATION_RULES = (0.01,)
#: CMC count thresholds tested, for comparison with the count rule of the literature
CMC_RULES = tuple(range(4, 13))
FORMAT = "ballistix-validation"
FORMAT_VERSION = 1
_MAX_LABELS_BYTES = 20_000_000
_POP_COLUMNS = ("calibre", "make", "model", "instrument")


class ValidationError(BallistixError, ValueError):
    """The inputs of a validation cannot give a valid result; the message says which and why."""


class LabelsError(ValidationError, FileFormatError):
    """The labels (CSV or mapping) are missing, malformed, or do not cover a scan; ``path`` names
    the file concerned (the CSV or the scan) and ``problem`` what is wrong."""

    def __init__(self, path, problem: str):
        FileFormatError.__init__(self, path, problem)


class InsufficientDataError(ValidationError):
    """Too few firearms, scans or pairs to measure error rates or to cross-validate by gun."""


# ---------------------------------------------------------------------------------------------- statistics


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


# ---------------------------------------------------------------------------------------------- labels


def read_labels(path) -> list[dict[str, str]]:
    """Rows of a labels CSV: ``file`` and ``firearm`` (required), ``calibre``, ``make``, ``model``,
    ``instrument`` (optional) and any other columns, kept as given.

    Column names are matched case-blind (``caliber`` is read as ``calibre``). A relative
    ``file`` is resolved against the CSV's folder (``path`` in each row is the resolved
    path). A missing column, an empty ``file`` or ``firearm`` cell, or a file listed twice
    raises `LabelsError` naming the CSV, the row and the problem.

    Examples
    --------
    >>> rows = read_labels("../shared/data/labels.csv")  # doctest: +SKIP
    >>> rows[0]["firearm"], rows[0]["path"]  # doctest: +SKIP
    ('fadul-slide-1', '/work/shared/data/fadul/fadul-1-1.x3p')
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(path, "no such labels file")
    if path.stat().st_size > _MAX_LABELS_BYTES:
        raise LabelsError(path, f"too large for a labels file (over {_MAX_LABELS_BYTES // 1_000_000} MB)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(path, f"not a readable UTF-8 CSV file ({e})") from None
    try:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header:
            raise LabelsError(path, "empty: expected a header row with at least the columns file,firearm")
        cols = [{"caliber": "calibre"}.get(c.strip().casefold(), c.strip().casefold()) for c in header]
        missing = [c for c in ("file", "firearm") if c not in cols]
        if missing:
            raise LabelsError(
                path,
                f"missing column(s) {missing}; found {[c.strip() for c in header]}, "
                f"expected at least file,firearm (optional: {','.join(_POP_COLUMNS)})",
            )
        dup = [c for c, n in Counter(cols).items() if n > 1 and c]
        if dup:
            raise LabelsError(path, f"column(s) {dup} appear more than once")
        rows, seen = [], {}
        for line, rec in enumerate(reader, start=2):
            if not any(v.strip() for v in rec):
                continue
            if len(rec) != len(cols):
                raise LabelsError(path, f"row {line} has {len(rec)} fields, the header {len(cols)}")
            row = {c: v.strip() for c, v in zip(cols, rec) if c}
            for c in ("file", "firearm"):
                if not row[c]:
                    raise LabelsError(path, f"row {line}: empty {c!r}")
            full = Path(row["file"]).expanduser()
            full = (full if full.is_absolute() else path.parent / full).resolve()
            if str(full) in seen:
                raise LabelsError(path, f"row {line}: file {row['file']!r} is listed already in row {seen[str(full)]}")
            seen[str(full)] = line
            rows.append({**row, "path": str(full), "row": line})
    except csv.Error as e:
        raise LabelsError(path, f"not a valid CSV file ({e})") from None
    if not rows:
        raise LabelsError(path, "no rows: list one scan file and its firearm a row")
    return rows


def _labels_from_mapping(labels: Mapping) -> list[dict[str, str]]:
    rows = []
    for f, v in labels.items():
        row = dict(v) if isinstance(v, Mapping) else {"firearm": v}
        if row.get("firearm") is None or str(row["firearm"]).strip() == "":
            raise LabelsError(f, "no firearm given in the labels mapping")
        row = {k: str(x).strip() for k, x in row.items() if x is not None}
        rows.append({**row, "file": str(f), "path": str(Path(str(f)).expanduser().resolve())})
    return rows


# ---------------------------------------------------------------------------------------------- pairs


def plan_pairs(guns, pairs: str | int = "all", seed: int = 0) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Which pairs of scans to compare.

    Parameters
    ----------
    guns : sequence
        Firearm of each scan.
    pairs : "all" or int
        "all": every pair, in ``itertools.combinations`` order. An int: every
        same-gun pair, then a random sample of that many different-gun pairs
        (all of them when there are fewer), drawn with ``seed``.
    seed : int
        Seed of the sample (`numpy.random.default_rng`).

    Returns
    -------
    pairs : list of (i, j)
        Indices into ``guns``, i < j.
    plan : dict
        What was done: counts of same- and different-gun pairs available and
        compared, the mode and the seed.

    Examples
    --------
    >>> p, plan = plan_pairs(["g1", "g1", "g2", "g2"], pairs=2, seed=0)
    >>> p[:2], plan["n_different"]
    ([(0, 1), (2, 3)], 2)
    """
    guns = [str(g) for g in guns]
    allpairs = list(itertools.combinations(range(len(guns)), 2))
    km = [p for p in allpairs if guns[p[0]] == guns[p[1]]]
    knm = [p for p in allpairs if guns[p[0]] != guns[p[1]]]
    plan = {"mode": "all", "seed": seed, "n_same_available": len(km), "n_different_available": len(knm)}
    if isinstance(pairs, str) and pairs == "all":
        chosen = allpairs
    elif isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool) and pairs >= 1:
        plan["mode"] = "sample"
        plan["sample_size"] = int(pairs)
        if pairs >= len(knm):
            chosen = km + knm
        else:
            rng = np.random.default_rng(seed)
            chosen = km + [knm[i] for i in sorted(rng.choice(len(knm), int(pairs), replace=False))]
    else:
        raise ParameterError(
            f"pairs must be 'all' or a positive integer (different-gun pairs to sample), got {pairs!r}"
        )
    plan["n_same"] = sum(1 for i, j in chosen if guns[i] == guns[j])
    plan["n_different"] = len(chosen) - plan["n_same"]
    return chosen, plan


def _check_cv(guns_a, guns_b, n_folds: int, seed: int) -> None:
    """Refuse before comparing anything when leaving a pair's guns out leaves too little to fit on."""
    same = np.array([a == b for a, b in zip(guns_a, guns_b)])
    for train, test in ev.cv_splits(guns_a, guns_b, n_folds, seed):
        if same[train].sum() < 2 or (~same[train]).sum() < 2:
            k = int(np.flatnonzero(test)[0])
            raise InsufficientDataError(
                f"too few firearms to cross-validate: leaving out the guns of pair {guns_a[k]} / {guns_b[k]} leaves "
                f"{int(same[train].sum())} same-gun and {int((~same[train]).sum())} different-gun pairs to fit on "
                f"(at least 2 of each are needed); use at least 4 firearms with 2 or more scans each, or compare "
                f"more different-gun pairs (pairs='all')"
            )


# ---------------------------------------------------------------------------------------------- scans


@dataclass
class _Input:
    name: str
    path: str | None
    firearm: str
    labels: dict[str, str]
    item: Any  # path or Scan
    sha256: str | None = None
    population: dict | None = None
    scan: Any = None
    error: str | None = None


def _prepare(job):
    """Read (if a path), label and preprocess one scan: ``(Scan, None)`` or ``(None, reason)``."""
    item, labels, params, name = job
    from .features.preprocessing import preprocess
    from .io import read_scan
    from .scan import Scan

    try:
        s = item if isinstance(item, Scan) else read_scan(item)
        meta = copy.deepcopy(s.meta)
        lab = dict(meta.get("labels") or {}) if isinstance(meta.get("labels"), dict) else {}
        lab.update({k: v for k, v in labels.items() if v not in (None, "")})
        meta["labels"] = lab
        s = dataclasses.replace(s, meta=meta)
        return preprocess(s, **params), None
    except (BallistixError, OSError) as e:
        return None, str(e) if str(name) in str(e) else f"{name}: {e}"


def _inputs(files_or_scans, labels) -> tuple[list[_Input], dict | None]:
    from .scan import Scan

    labels_info = None
    if isinstance(labels, (str, Path)):
        rows = read_labels(labels)
        labels_info = {
            "path": str(Path(labels).resolve()),
            "sha256": sha256_file(Path(labels)),
            "columns": sorted({k for r in rows for k in r if k not in ("path", "row")}),
        }
        where = Path(labels)
    elif isinstance(labels, Mapping):
        rows = _labels_from_mapping(labels)
        where = None
    elif labels is None:
        rows, where = [], None
    else:
        raise ParameterError(f"labels must be a CSV path or a mapping file -> firearm, got {type(labels).__name__}")
    by_path = {r["path"]: r for r in rows}
    by_name: dict[str, list] = {}
    for r in rows:
        by_name.setdefault(Path(r["file"]).name, []).append(r)

    def pick(row):
        return {k: row[k] for k in _POP_COLUMNS if row.get(k)}

    items = list(files_or_scans) if files_or_scans is not None else []
    out = []
    if not items:
        if not rows:
            raise ParameterError("no scans given, and no labels listing any")
        for r in rows:
            p = Path(r["path"])
            if not p.is_file():
                raise LabelsError(
                    p,
                    f"no such file (listed in {where or 'the labels'}"
                    + (f", row {r['row']}" if "row" in r else "")
                    + ")",
                )
            out.append(_Input(p.name, str(p), r["firearm"], pick(r), str(p)))
    for k, item in enumerate(items):
        if isinstance(item, Scan):
            lab = item.meta.get("labels") if isinstance(item.meta.get("labels"), dict) else {}
            name = str(lab.get("exhibit") or Path(str(item.meta.get("source", f"scan-{k}"))).name)
            row = by_name.get(name, [None])[0] if len(by_name.get(name, [])) == 1 else None
            firearm = row["firearm"] if row else lab.get("firearm")
            if firearm in (None, ""):
                raise LabelsError(
                    name, "in-memory scan with no firearm: not in the labels and no meta['labels']['firearm']"
                )
            out.append(_Input(name, None, str(firearm), pick(row) if row else {}, item))
            continue
        p = Path(item).expanduser()
        if not p.is_file():
            raise LabelsError(p, "no such file")
        row = by_path.get(str(p.resolve()))
        if row is None and len(by_name.get(p.name, [])) == 1:
            row = by_name[p.name][0]
        if row is None:
            raise LabelsError(p, f"not listed in the labels{f' ({where})' if where else ''}: its firearm is unknown")
        out.append(_Input(p.name, str(p), row["firearm"], pick(row), str(p)))
    names = Counter(i.name for i in out)
    for i in out:  # file names shown in tables must be unique: fall back to the path as given
        if names[i.name] > 1 and i.path:
            i.name = i.path
    dups = [n for n, c in Counter(i.path for i in out if i.path).items() if c > 1]
    if dups:
        raise LabelsError(dups[0], "given more than once")
    return out, labels_info


# ---------------------------------------------------------------------------------------------- result


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


# ---------------------------------------------------------------------------------------------- validate


def validate(
    files_or_scans=None,
    labels=None,
    *,
    out=None,
    pairs: str | int = "all",
    seed: int = 0,
    n_jobs: int = 1,
    client=None,
    domain: dict | None = None,
    progress: bool = False,
    n_folds: int = 10,
    fpr_target: float = 0.01,
    elimination_target: float = 0.05,
    skip_unreadable: bool = False,
    preprocess_params: dict | None = None,
    compare_params: dict | None = None,
    name: str | None = None,
    description: str | None = None,
) -> ValidationResult:
    """Validate the method on a lab's own scans of known truth: error rates, a calibration, a report.

    Parameters
    ----------
    files_or_scans : sequence of paths or `Scan`, optional
        The scans. None or empty: every file listed in ``labels`` (a CSV).
    labels : path or mapping
        A CSV with columns ``file,firearm`` and optionally ``calibre,make,model,instrument``
        (relative files are resolved against the CSV's folder; see `read_labels`), or a
        mapping file -> firearm id (or file -> mapping of those columns). In-memory scans
        may carry their firearm in ``meta["labels"]["firearm"]`` instead.
    out : path, optional
        Folder for ``calibration.json``, ``validation.json`` and ``report.html``
        (created if needed). None: nothing is written.
    pairs : "all" or int
        Compare every pair, or every same-gun pair and this many different-gun pairs drawn
        at random with ``seed`` (see `plan_pairs`).
    seed : int
        Seed of the pair sample and of the assignment of guns to cross-validation folds.
    n_jobs : int
        Worker processes for preprocessing and comparing (1: this process).
    client : distributed.Client or str, optional
        Preprocess and compare on a Dask cluster instead (its workers must read the files).
    domain : dict, optional
        The calibration's domain (`evidence.domain_check`). None: the population values
        seen, for each of `provenance.POPULATION_KEYS` recorded for every scan (from the
        labels, the scan's own labels, or the x3p instrument record); keys not recorded
        for every scan are left unrestricted (None).
    progress : bool
        Progress bars (tqdm).
    n_folds : int
        Folds of guns for cross-validation (one gun a fold when there are at most this many
        guns: leave-one-gun-out).
    fpr_target : float
        Largest acceptable false-identification rate (share of different-gun pairs called
        identification); a rule is recommended only when its one-sided 95% upper bound is
        below this.
    elimination_target : float
        Likewise for the false-elimination rate (share of same-gun pairs called elimination).
    skip_unreadable : bool
        False (default): an unreadable scan raises its reader's error. True: it is left out
        and listed in ``excluded`` and the report.
    preprocess_params, compare_params : dict, optional
        Passed to `preprocess` and `compare`; the calibration records them and refuses
        comparisons made otherwise.
    name, description : str, optional
        Name and description of the calibration (defaults say what was tested).

    Returns
    -------
    ValidationResult

    Raises
    ------
    LabelsError
        A labels file that is missing or malformed, a scan file that is missing or not in
        the labels.
    InsufficientDataError
        Fewer than 2 firearms, no same-gun pair, or too few firearms to leave a pair's guns
        out and still fit a calibration.
    ScanFormatError
        An unreadable scan (unless ``skip_unreadable``).

    Examples
    --------
    >>> import ballistix as bx
    >>> res = bx.validate(labels="lab-scans/labels.csv", out="validation/")  # doctest: +SKIP
    >>> res.recommendation["text"]  # doctest: +SKIP
    'Identification at LR >= 10: none of the 717 different-gun pairs was called identification ...'
    """
    from tqdm.auto import tqdm

    from .evaluation import auc, equal_error_rate
    from .features.comparison import DEFAULTS, compare_many, process_pool

    t0 = time.perf_counter()
    if not (isinstance(n_jobs, int) and n_jobs >= 1):
        raise ParameterError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    for nm, v in (("fpr_target", fpr_target), ("elimination_target", elimination_target)):
        if not (isinstance(v, (int, float)) and 0 < v < 1):
            raise ParameterError(f"{nm} must be a share between 0 and 1 (exclusive), got {v!r}")
    if not (isinstance(n_folds, int) and n_folds >= 2):
        raise ParameterError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if domain is not None and hasattr(ev, "_check_domain"):  # fail before the comparisons; `ev.fit` checks it too
        ev._check_domain(domain)
    preprocess_params = dict(preprocess_params or {})
    compare_params = dict(compare_params or {})
    from .features.preprocessing import preprocess

    try:  # a misspelt parameter fails here, not as an "unreadable scan" after reading them all
        inspect.signature(preprocess).bind(None, **preprocess_params)
    except TypeError as e:
        raise ParameterError(f"preprocess_params: {e}; see bx.preprocess") from None
    unknown = sorted(set(compare_params) - set(DEFAULTS))
    if unknown:
        raise ParameterError(f"compare_params: unknown {unknown}; known: {sorted(DEFAULTS)}")
    inputs, labels_info = _inputs(files_or_scans, labels)
    _check_guns([i.firearm for i in inputs], "listed")
    plan_check, _ = plan_pairs([i.firearm for i in inputs], pairs, seed)  # bad `pairs` fails before reading
    del plan_check

    # read and preprocess every scan once
    jobs = [(i.item, {**i.labels, "firearm": i.firearm}, preprocess_params, i.path or i.name) for i in inputs]
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    with process_pool(n_jobs) if n_jobs > 1 and client is None else nullcontext() as pool:
        if client is not None:
            from ._dask import dask_map

            prepared = dask_map(_prepare, jobs, client)
        elif pool is not None:
            prepared = list(tqdm(pool.map(_prepare, jobs), total=len(jobs), disable=not progress, desc="preprocess"))
        else:
            prepared = [_prepare(j) for j in tqdm(jobs, disable=not progress, desc="preprocess")]
        excluded = []
        for inp, (scan, err) in zip(inputs, prepared):
            if inp.path:
                try:
                    inp.sha256 = sha256_file(Path(inp.path))
                except OSError:
                    inp.sha256 = None
            if scan is None:
                if not skip_unreadable:
                    raise _scan_error(inp, err)
                inp.error = err
                excluded.append(
                    {"name": inp.name, "path": inp.path, "firearm": inp.firearm, "sha256": inp.sha256, "reason": err}
                )
                continue
            inp.scan = scan
            inp.population = population(scan.meta)
            if inp.sha256 is None:
                inp.sha256 = scan_sha256(scan)
        used = [i for i in inputs if i.scan is not None]
        seconds["preprocess"] = time.perf_counter() - t
        guns = [i.firearm for i in used]
        _check_guns(guns, "readable")
        chosen, plan = plan_pairs(guns, pairs, seed)
        if plan["n_same"] == 0:
            raise InsufficientDataError("no same-gun pair: at least one firearm needs 2 or more scans")
        ga, gb = [guns[i] for i, _ in chosen], [guns[j] for _, j in chosen]
        _check_cv(ga, gb, n_folds, seed)
        sigs = {json.dumps(processing_signature(i.scan.meta.get("processing")), sort_keys=True) for i in used}
        if len(sigs) > 1:
            raise ValidationError(
                "the scans were preprocessed with different steps or parameters (some carry "
                "earlier processing in their metadata); validate scans of one kind"
            )
        # compare
        t = time.perf_counter()
        res = compare_many(
            [(used[i].scan, used[j].scan) for i, j in chosen],
            n_jobs=n_jobs,
            progress=progress,
            client=client,
            executor=pool,
            **compare_params,
        )
        seconds["compare"] = time.perf_counter() - t

    # features, cross-validated LRs
    t = time.perf_counter()
    X = np.array([[ev.feature_values(r)[k] for k in ev.FEATURES] for r in res], float).reshape(-1, len(ev.FEATURES))
    same = np.array([a == b for a, b in zip(ga, gb)])
    llr = ev.cross_validate(X, same, ga, gb, n_folds=n_folds, seed=seed)
    cmc = X[:, list(ev.FEATURES).index("cmc")]
    seconds["cross_validation"] = time.perf_counter() - t

    lr_rules, cmc_rules = decision_rules(llr, same, cmc)
    rec = recommend(lr_rules, cmc_rules, fpr_target, elimination_target)

    # population / domain
    pops = [i.population for i in used]
    if domain is None:
        domain = {k: (sorted({p[k] for p in pops}) if all(p.get(k) for p in pops) else None) for k in POPULATION_KEYS}
        domain["unknown_ok"] = []
    preprocessing = processing_signature(used[0].scan.meta.get("processing"))
    comparison = {k: res[0].params[k] for k in DEFAULTS}
    n_guns = len(set(guns))
    pop_words = _population_words(domain)
    name = name or f"lab validation: {pop_words}"
    description = description or (
        f"{len(used)} scans of {n_guns} firearms ({pop_words}); {len(chosen)} pairs compared "
        f"({plan['n_same']} same-gun, {plan['n_different']} different-gun"
        + (f", sampled with seed {seed} from {plan['n_different_available']}" if plan["mode"] == "sample" else "")
        + f"); validated with ballistix {__version__}"
    )
    ident_lr = rec["identification"]["threshold"] if rec["identification"] else ev.IDENTIFICATION_LR
    cal = ev.fit(
        X,
        same,
        name=name,
        description=description,
        preprocessing=preprocessing,
        comparison=comparison,
        domain=domain,
        extra_reference={
            "validation": {
                "n_scans": len(used),
                "n_firearms": n_guns,
                "pairs": plan,
                "labels_sha256": (labels_info or {}).get("sha256"),
            }
        },
    )
    cal.performance = {
        "cross_validation": f"{n_folds} folds of guns (leave-one-gun-out when {n_folds} or fewer guns), seed {seed}",
        **lr_performance(llr, same, identification_lr=ident_lr),
        "recommended_rule": rec["identification"]["rule"] if rec["identification"] else None,
    }

    records = [
        {
            "a": used[i].name,
            "b": used[j].name,
            "gun_a": guns[i],
            "gun_b": guns[j],
            "same_gun": bool(s),
            "features": dict(zip(ev.FEATURES, map(float, x))),
            "log10_lr_cv": float(lv),
            "rotation_deg": float(r.rotation_deg),
        }
        for (i, j), s, x, lv, r in zip(chosen, same, X, llr, res)
    ]
    inputs_out = [
        {"name": i.name, "path": i.path, "firearm": i.firearm, "sha256": i.sha256, "population": i.population}
        for i in used
    ]
    params = {
        "pairs": pairs,
        "seed": seed,
        "n_folds": n_folds,
        "fpr_target": fpr_target,
        "elimination_target": elimination_target,
        "skip_unreadable": skip_unreadable,
        "preprocess_params": preprocess_params,
        "compare_params": compare_params,
        "preprocessing": preprocessing,
        "comparison": comparison,
        "lr_identification_rules": list(LR_IDENTIFICATION_RULES),
        "lr_elimination_rules": list(LR_ELIMINATION_RULES),
        "cmc_rules": list(CMC_RULES),
        "n_jobs": n_jobs,
        "dask": client is not None,
    }
    result = ValidationResult(
        n_scans=len(used),
        n_firearms=n_guns,
        n_pairs=len(chosen),
        n_same=int(same.sum()),
        n_different=int((~same).sum()),
        pairs_plan=plan,
        domain=domain,
        auc_cmc=auc(cmc, same),
        auc_lr=auc(llr, same),
        eer_cmc=equal_error_rate(cmc, same),
        eer_lr=equal_error_rate(llr, same),
        cllr=cllr(llr, same),
        cllr_min=cllr_min(llr, same),
        misleading=misleading(llr, same),
        lr_rules=lr_rules,
        cmc_rules=cmc_rules,
        recommendation=rec,
        calibration=cal,
        log10_lr_cv=llr,
        records=records,
        inputs=inputs_out,
        excluded=excluded,
        parameters=params,
        seconds=seconds,
    )
    if out is not None:
        _write(result, Path(out), labels_info)
    result.seconds["total"] = time.perf_counter() - t0
    return result


def _check_guns(guns, what: str) -> None:
    n = len(set(guns))
    if n < 2:
        raise InsufficientDataError(
            f"the {what} scans come from {n} firearm(s); a validation needs at least 2 "
            f"(and, to cross-validate by gun, at least 4)"
        )
    if max(Counter(guns).values()) < 2:
        raise InsufficientDataError(
            f"no same-gun pair among the {what} scans: at least one firearm needs 2 or more scans"
        )


def _scan_error(inp: _Input, err: str) -> BallistixError:
    from .errors import ScanFormatError

    return ScanFormatError(
        inp.path or inp.name,
        (err or "unreadable").replace(f"{inp.path}: ", "", 1)
        + " (pass skip_unreadable=True to leave it out and list it)",
    )


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
    n_diff, n_same = ident[0]["n_different"], ident[0]["n_same"]
    need_d, need_s = pairs_needed(fpr_target), pairs_needed(elim_target)
    out: dict[str, Any] = {
        "fpr_target": fpr_target,
        "elimination_target": elim_target,
        "identification": None,
        "elimination": None,
        "different_pairs_needed": need_d,
        "same_pairs_needed": need_s,
    }
    lines = []
    ok = [
        r for r in ident if r["different_called"] == 0 and r["upper95_different"] < fpr_target and r["same_called"] > 0
    ]
    if ok:
        r = ok[0]
        out["identification"] = {
            k: r[k]
            for k in (
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
        }
        lines.append(
            f"Identification at {r['rule']}: none of the {n_diff} different-gun pairs was called "
            f"identification (false-identification rate 0, 95% upper bound {_pct(r['upper95_different'])}, "
            f"below the target {_pct(fpr_target)}); it identified {r['same_called']} of {n_same} same-gun "
            f"pairs ({_pct(r['rate_same'])}, 95% CI {_pct(r['ci95_same'][0])} to {_pct(r['ci95_same'][1])})."
        )
    elif n_diff < need_d:
        lines.append(
            f"The data are too few to support any identification rule: with {n_diff} different-gun pairs, "
            f"even no false identification bounds the false-identification rate only below "
            f"{_pct(upper_bound(0, n_diff))} (95% upper bound), above the target {_pct(fpr_target)}; at least "
            f"{need_d} different-gun pairs (none called identification) are needed."
        )
    elif all(r["different_called"] > 0 for r in ident):
        lines.append(
            f"No identification rule is supported: every LR threshold tested (up to "
            f"{ident[-1]['rule']}) called some different-gun pairs identification."
        )
    else:
        lines.append(
            "No identification rule is supported: the thresholds that called no different-gun pair "
            "identification identified no same-gun pair either."
        )
    el = [r for r in lr_rules if r["kind"] == "elimination"]
    okel = [r for r in el if r["same_called"] == 0 and r["upper95_same"] < elim_target and r["different_called"] > 0]
    if okel:
        r = okel[0]
        out["elimination"] = {
            k: r[k]
            for k in (
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
        }
        lines.append(
            f"Elimination at {r['rule']}: none of the {n_same} same-gun pairs was eliminated (95% upper "
            f"bound {_pct(r['upper95_same'])}, below the target {_pct(elim_target)}); it eliminated "
            f"{r['different_called']} of {n_diff} different-gun pairs ({_pct(r['rate_different'])})."
        )
    elif el:
        r = el[0]
        if r["same_called"] == 0 and r["different_called"] == 0:
            lines.append(
                f"Elimination at {r['rule']} eliminates nothing here: no pair had a cross-validated LR that "
                f"low (the LRs are bounded by what the reference pairs can support)."
            )
        elif n_same < need_s:
            lines.append(
                f"The data are too few to support an elimination rule: with {n_same} same-gun pairs, even "
                f"no false elimination bounds the rate only below {_pct(upper_bound(0, n_same))}, above the "
                f"target {_pct(elim_target)}; at least {need_s} same-gun pairs are needed."
            )
        else:
            lines.append(
                f"Elimination at {r['rule']} is not supported: {r['same_called']} of {n_same} same-gun "
                f"pairs were eliminated (95% upper bound {_pct(r['upper95_same'])}; target "
                f"{_pct(elim_target)})."
            )
    cm = [r for r in cmc_rules if r["different_called"] == 0]
    if cm:
        out["cmc_comparison"] = {
            "rule": cm[0]["rule"],
            "rate_same": cm[0]["rate_same"],
            "upper95_different": cm[0]["upper95_different"],
        }
        lines.append(
            f"For comparison, the smallest count rule with no false identification here is "
            f"{cm[0]['rule']} ({_pct(cm[0]['rate_same'])} of same-gun pairs); a count is a feature, "
            f"not a calibrated decision rule."
        )
    out["text"] = " ".join(lines)
    return out


def _population_words(domain: dict) -> str:
    parts = []
    for k in POPULATION_KEYS:
        v = domain.get(k)
        parts.append(f"{k.replace('_', '/')} {', '.join(v)}" if v else f"{k.replace('_', '/')} not restricted")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- output


def _write(r: ValidationResult, out: Path, labels_info) -> None:
    out.mkdir(parents=True, exist_ok=True)
    r.out = out
    r.calibration_json = r.calibration.save(out / "calibration.json")
    cal_sha = sha256_file(r.calibration_json)
    doc = {
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
            "sha256": cal_sha,
            "name": r.calibration.name,
            "bounds_log10": r.calibration.bounds_log10,
            "coef": r.calibration.coef,
            "domain": r.calibration.domain,
        },
        "seconds": r.seconds,
        "pairs": r.records,
    }
    r.validation_json = out / "validation.json"
    with atomic_file(r.validation_json) as f:
        f.write(json.dumps(doc, indent=1, default=_json_default).encode())
    r.report = out / "report.html"
    text = _report_html(r, doc)
    with atomic_file(r.report) as f:
        f.write(text.encode("utf-8"))


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# ---------------------------------------------------------------------------------------------- report


def _figures(r: ValidationResult) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from .evaluation import roc_curve

    same = np.array([p["same_gun"] for p in r.records])
    cmc = np.array([p["features"]["cmc"] for p in r.records])
    llr = r.log10_lr_cv
    figs = []
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for score, label in ((llr, f"cross-validated LR (AUC {r.auc_lr:.3f})"), (cmc, f"CMC count (AUC {r.auc_cmc:.3f})")):
        fpr, tpr, _ = roc_curve(score, same)
        ax.step(fpr, tpr, where="post", label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls=":")
    ax.set_xlabel("false-positive rate (different-gun pairs called same)")
    ax.set_ylabel("true-positive rate (same-gun pairs called same)")
    ax.set_title(f"ROC ({r.n_same} same-gun, {r.n_different} different-gun pairs)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    figs.append(("ROC curves", png(fig, "ROC curves of the LR and the CMC count")))

    fig, ax = plt.subplots(figsize=(5, 4.2))
    n1, n2 = int(same.sum()), int((~same).sum())
    lo = 0.5 / max(n1, n2)
    for score, label in ((llr, "cross-validated LR"), (cmc, "CMC count")):
        fpr, tpr, _ = roc_curve(score, same)
        fnr = 1 - tpr
        ax.plot(
            norm.ppf(np.clip(fpr, lo, 1 - lo)), norm.ppf(np.clip(fnr, lo, 1 - lo)), drawstyle="steps-post", label=label
        )
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ticks = ticks[ticks >= lo / 2]
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks], fontsize=8)
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks], fontsize=8)
    ax.set_xlabel("false-positive rate (probit scale)")
    ax.set_ylabel("false-negative rate (probit scale)")
    ax.set_title("DET (rates of 0 drawn at half a pair)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figs.append(("DET curves", png(fig, "DET curves of the LR and the CMC count")))

    fig, ax = plt.subplots(figsize=(5, 4.2))
    tippett(llr, same, ax=ax, title=f"Tippett plot, cross-validated by gun: Cllr {r.cllr:.3f} (min {r.cllr_min:.3f})")
    for t in LR_IDENTIFICATION_RULES + LR_ELIMINATION_RULES:
        ax.axvline(math.log10(t), color="#999", lw=0.6, ls="--")
    figs.append(("Tippett plot", png(fig, "Tippett plot of the cross-validated LRs")))

    fig, ax = plt.subplots(figsize=(5, 4.2))
    bins = np.arange(-0.5, max(cmc.max(), 12) + 1.5)
    ax.hist(
        [cmc[same], cmc[~same]],
        bins=bins,
        label=[f"same gun (n={n1})", f"different guns (n={n2})"],
        color=["tab:blue", "tab:red"],
        log=True,
    )
    ax.set_xlabel("CMC count")
    ax.set_ylabel("pairs (log scale)")
    ax.set_title("CMC counts by truth", fontsize=10)
    ax.legend(fontsize=8)
    figs.append(("CMC count distribution", png(fig, "histogram of CMC counts by truth")))
    return figs


def _ci(lo_hi) -> str:
    return f"{_pct(lo_hi[0])} to {_pct(lo_hi[1])}"


def _rules_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        ident = r["kind"] == "identification"
        out.append(
            {
                "decision": r["kind"],
                "rule": r["rule"],
                "same-gun pairs called": f"{r['same_called']} / {r['n_same']}",
                "rate (same gun)": _pct(r["rate_same"]),
                "95% CI (same gun)": _ci(r["ci95_same"]),
                "different-gun pairs called": f"{r['different_called']} / {r['n_different']}",
                "rate (different guns)": _pct(r["rate_different"]),
                "95% CI (different guns)": _ci(r["ci95_different"]),
                "errors": (
                    f"{r['different_called']} false identification(s)"
                    if ident
                    else f"{r['same_called']} false elimination(s)"
                ),
            }
        )
    return table(out, cls="rules", num=("rate (same gun)", "rate (different guns)"))


def _report_html(r: ValidationResult, doc: dict) -> str:
    cal = r.calibration
    rec = r.recommendation
    per_gun = Counter(i["firearm"] for i in r.inputs)
    pops = {i["firearm"]: i["population"] for i in r.inputs}
    plan = r.pairs_plan
    created = doc["created_utc"]
    P = []
    P.append(
        f"<h1>Validation of the ballistix comparison method on {r.n_scans} scans of {r.n_firearms} firearms</h1>"
        f"<p class='muted'>ballistix {escape(__version__)}; written {escape(created)}; calibration "
        f"<code>{escape(cal.name)}</code></p>"
    )
    box = "box" if rec["identification"] else "box warn"
    P.append(
        f"<div class='{box}' id='recommendation'><b>Result.</b> {escape(rec['text'])}<br>"
        f"Cross-validated Cllr <b id='cllr'>{r.cllr:.3f}</b> bits (Cllr-min {r.cllr_min:.3f}); "
        f"AUC of the LR <b id='auc-lr'>{r.auc_lr:.3f}</b>, of the CMC count {r.auc_cmc:.3f}; "
        f"{r.n_pairs} pairs ({r.n_same} same-gun, {r.n_different} different-gun).</div>"
    )

    # what was tested
    P.append("<h2>1. What was tested</h2>")
    P.append(
        f"<p>{r.n_scans} scans of cartridge cases fired in {r.n_firearms} firearms, whose firearm was known "
        f"(ground truth from the labels"
        + (
            f" file <code>{escape(Path(doc['labels']['path']).name)}</code>, SHA-256 "
            f"<code class='wrap'>{escape(doc['labels']['sha256'])}</code>"
            if doc.get("labels")
            else ""
        )
        + ").</p>"
    )
    P.append("<h3>Population (the domain the calibration is restricted to)</h3>")
    P.append(
        table(
            [
                {
                    "key": k.replace("_", "/"),
                    "values seen": r.domain.get(k)
                    if r.domain.get(k)
                    else "not recorded for every scan: not restricted",
                }
                for k in POPULATION_KEYS
            ]
        )
    )
    P.append("<h3>Firearms</h3>")
    P.append(
        table(
            [
                {"firearm": g, "scans": n, **{k.replace("_", "/"): (pops[g] or {}).get(k) for k in POPULATION_KEYS}}
                for g, n in sorted(per_gun.items())
            ],
            num=("scans",),
        )
    )
    P.append(
        "<details><summary>Scan files and their SHA-256 checksums</summary>"
        + table([{"file": i["name"], "firearm": i["firearm"], "sha256": i["sha256"]} for i in r.inputs], cls="wrap")
        + "</details>"
    )
    if r.excluded:
        P.append(
            f"<div class='box warn'><b>{len(r.excluded)} scan(s) could not be read and were left out:</b>"
            + table([{"file": x["name"], "firearm": x["firearm"], "reason": x["reason"]} for x in r.excluded])
            + "</div>"
        )

    # how
    P.append("<h2>2. How it was tested</h2>")
    sample = (
        f"every same-gun pair ({plan['n_same']}) and a random sample of {plan['n_different']} of the "
        f"{plan['n_different_available']} different-gun pairs (seed {plan['seed']})"
        if plan["mode"] == "sample"
        else f"every pair of scans ({r.n_pairs})"
    )
    P.append(
        "<ol>"
        "<li>Each scan was preprocessed once: breech-face region found, form removed, outliers removed, "
        "Gaussian band-pass filtered and resampled (steps and parameters below).</li>"
        f"<li>{escape(sample[0].upper() + sample[1:])} was compared with the Congruent Matching Cells (CMC) method: "
        "the surface is cut into cells, each cell is searched for on the other surface over rotations and shifts, "
        "and the cells that agree on one rotation and shift are counted.</li>"
        f"<li>Features of each comparison ({escape(', '.join(ev.FEATURES))}) were turned into a likelihood ratio (LR) "
        "by logistic-regression calibration, bounded by the empirical lower and upper bounds (ELUB).</li>"
        f"<li><b>Cross-validation by gun</b>: the firearms were split into {r.parameters['n_folds']} folds "
        "(one firearm a fold when there are that few); the LR of a pair comes from a calibration fitted "
        "without any pair involving either of its firearms, so no firearm vouches for itself. All error rates "
        "of LR rules, the Tippett plot and Cllr below use these cross-validated LRs.</li>"
        "<li>Error rates are given with two-sided 95% Clopper-Pearson (exact binomial) confidence intervals; the "
        "recommendation uses the one-sided 95% upper bound.</li>"
        "<li>A final calibration was fitted on all pairs and written for casework use (section 5).</li></ol>"
    )
    P.append(
        "<details><summary>Preprocessing steps and comparison parameters</summary>"
        + table([{"step": s, "parameters": json.dumps(p, sort_keys=True)} for s, p in r.parameters["preprocessing"]])
        + table([{"parameter": k, "value": json.dumps(v, default=str)} for k, v in r.parameters["comparison"].items()])
        + "</details>"
    )

    # results
    P.append("<h2>3. Results</h2>")
    P.append("<h3>Decision rules on the likelihood ratio (cross-validated)</h3>")
    P.append(
        "<p>Identification rules: the same-gun column is the share of same-gun pairs identified (higher is "
        "better), the different-gun column the false identifications (should be 0). Elimination rule: the "
        "same-gun column is the false eliminations (should be 0).</p>"
    )
    P.append(_rules_table(r.lr_rules))
    P.append("<h3>Rules on the CMC count (for comparison)</h3>")
    P.append(
        "<p>The count of congruent matching cells is a feature, not a calibrated rule; these rows show what "
        "the fixed count rules of the literature would have done on these scans.</p>"
    )
    P.append(_rules_table(r.cmc_rules))
    m = r.misleading
    P.append("<h3>Summary measures</h3>")
    P.append(
        table(
            [
                {
                    "measure": "Cllr (cross-validated)",
                    "value": f"{r.cllr:.4f} bits",
                    "meaning": "cost of the LRs: 0 perfect, 1 no better than LR = 1 always",
                },
                {
                    "measure": "Cllr-min",
                    "value": f"{r.cllr_min:.4f} bits",
                    "meaning": "what is left after the best monotone recalibration (discrimination); "
                    "Cllr minus this is the calibration loss",
                },
                {
                    "measure": "AUC, LR",
                    "value": f"{r.auc_lr:.4f}",
                    "meaning": "chance that a same-gun pair ranks above a different-gun pair",
                },
                {"measure": "AUC, CMC count", "value": f"{r.auc_cmc:.4f}", "meaning": "the same for the count"},
                {
                    "measure": "EER, LR / CMC count",
                    "value": f"{_pct(r.eer_lr)} / {_pct(r.eer_cmc)}",
                    "meaning": "equal error rate",
                },
                {
                    "measure": "different-gun pairs with LR > 1",
                    "value": _pct(m["rate_for_same"]),
                    "meaning": f"misleading towards same gun; {m['strong_for_same']} beyond LR {m['strong_lr']:g}",
                },
                {
                    "measure": "same-gun pairs with LR < 1",
                    "value": _pct(m["rate_for_different"]),
                    "meaning": f"misleading towards different guns; {m['strong_for_different']} beyond LR "
                    f"1/{m['strong_lr']:g}",
                },
                {
                    "measure": "LR bounds of the calibration (ELUB)",
                    "value": f"{10 ** cal.bounds_log10[0]:.3g} to {10 ** cal.bounds_log10[1]:.3g}",
                    "meaning": "no LR beyond these is reported: the data could not support it",
                },
            ]
        )
    )
    P.append(
        "<div class='figs'>"
        + "".join(f"<figure>{img}<figcaption>{escape(cap)}</figcaption></figure>" for cap, img in _figures(r))
        + "</div>"
    )

    # recommendation
    P.append("<h2>4. Recommended rule and its limits</h2>")
    P.append(
        f"<p>Rule of this kit: recommend the smallest LR threshold (of "
        f"{escape(', '.join(_fmt_lr(t) for t in LR_IDENTIFICATION_RULES))}) at which no different-gun pair was "
        f"called identification and the one-sided 95% upper bound of the false-identification rate is below "
        f"the target {_pct(rec['fpr_target'])}, and that identifies at least one same-gun pair; elimination "
        f"likewise with the target {_pct(rec['elimination_target'])} for false eliminations.</p>"
    )
    P.append(f"<div class='{box}'>{escape(rec['text'])}</div>")
    P.append(
        f"<p>With no error observed, the 95% upper bound of a rate is about 3/n: supporting a "
        f"false-identification rate below {_pct(rec['fpr_target'])} takes at least "
        f"{rec['different_pairs_needed']} different-gun pairs, and a false-elimination rate below "
        f"{_pct(rec['elimination_target'])} at least {rec['same_pairs_needed']} same-gun pairs.</p>"
    )
    P.append(
        "<p><b>Limits.</b> These rates hold for the population tested (section 1), the instrument and "
        "settings used, and scans of the quality of these. Pairs share scans and firearms, so they are not "
        f"independent: with {r.n_firearms} firearms the confidence intervals, which count pairs, are too "
        "narrow rather than too wide. Firearms of other makes, other ammunition, worn or cleaned guns, "
        "other scan quality or consecutively manufactured parts not represented here may behave differently. "
        "The rates describe the method, not an examiner, and not the probability that a given gun fired a "
        "given case.</p>"
    )

    open_keys = [k.replace("_", "/") for k in POPULATION_KEYS if not r.domain.get(k)]
    if open_keys:
        P.append(
            f"<p class='box warn'><b>Domain not restricted for {escape(', '.join(open_keys))}.</b> These were not "
            "recorded for every scan, so the calibration will accept scans of any value of them, including "
            "ones this validation never saw. Record them in the labels (columns calibre, make, model, "
            "instrument) and run the validation again to restrict it.</p>"
        )

    # calibration use
    P.append("<h2>5. Using the calibration file</h2>")
    P.append(
        f"<p><code>calibration.json</code> (SHA-256 <code class='wrap'>{escape(doc['calibration']['sha256'])}"
        f"</code>) holds the LR model fitted on all {r.n_pairs} pairs, its LR bounds, the preprocessing and "
        "comparison parameters it applies to, and its domain. It refuses comparisons made with other "
        "parameters, and scans outside its domain. A calibration file is used only once it is registered "
        "in the lab's case store (who, when, why and from what data are recorded there; a file's own "
        "checksum does not say who made it):</p>"
        '<pre>ballistix register-calibration --store DIR calibration.json --reason "validation report ..."\n'
        "ballistix compare A.x3p B.x3p --store DIR\n\n"
        "import ballistix as bx\n"
        "store = bx.CaseStore(DIR)\n"
        "res = bx.compare(bx.preprocess(bx.read_scan(a)), bx.preprocess(bx.read_scan(b)),\n"
        "                 calibration=store.calibrations())\n"
        'res.log10_lr, res.evidence["conclusion"]</pre>'
    )
    custom = [
        f"{what} {json.dumps(r.parameters[k], sort_keys=True)}"
        for k, what in (("preprocess_params", "preprocessed with"), ("compare_params", "compared with"))
        if r.parameters[k]
    ]
    if custom:
        P.append(
            f"<p>These scans were {escape(' and '.join(custom))} (other settings at their defaults): casework "
            "scans must be processed and compared the same way for the calibration to apply, e.g. "
            "<code>bx.preprocess(scan, **preprocess_params)</code> with the same values.</p>"
        )
    P.append(
        "<p>Every number in this report, every pair's features and cross-validated LR, and the checksums of "
        "the inputs are in <code>validation.json</code> beside this file.</p>"
    )
    return page(f"ballistix validation: {r.n_scans} scans, {r.n_firearms} firearms", "".join(P))
