"""`validate`: the run, from the scans and their labels to the error rates, the calibration and
the files written."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .. import evidence as ev
from .._files import atomic_file, sha256_file
from .._version import __version__
from ..errors import BallistixError, ParameterError
from ..evaluation.lr import cllr, cllr_min, misleading
from ..provenance import POPULATION_KEYS, population, processing_signature
from ..scan import scan_sha256
from .errors import InsufficientDataError, ValidationError
from .labels import _Input, _inputs
from .pairs import _check_cv, _check_guns, plan_pairs
from .report import _report_html
from .result import ValidationResult, _json_default, document
from .rules import CMC_RULES, LR_ELIMINATION_RULES, LR_IDENTIFICATION_RULES, decision_rules, recommend
from .stats import lr_performance


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
    from ..features.comparison import compare_many, process_pool

    t0 = time.perf_counter()
    preprocess_params, compare_params = _check_parameters(
        n_jobs, n_folds, fpr_target, elimination_target, domain, preprocess_params, compare_params
    )
    inputs, labels_info = _inputs(files_or_scans, labels)
    _check_guns([i.firearm for i in inputs], "listed")
    plan_pairs([i.firearm for i in inputs], pairs, seed)  # bad `pairs` fails before reading
    seconds: dict[str, float] = {}
    with process_pool(n_jobs) if n_jobs > 1 and client is None else nullcontext() as pool:
        t = time.perf_counter()
        excluded = _read_and_preprocess(inputs, preprocess_params, skip_unreadable, pool, client, progress)
        used = [i for i in inputs if i.scan is not None]
        seconds["preprocess"] = time.perf_counter() - t
        chosen, plan = _plan(used, pairs, seed, n_folds)
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
    t = time.perf_counter()
    guns = [i.firearm for i in used]
    X, same, llr = _cross_validated_lrs(res, [(guns[i], guns[j]) for i, j in chosen], n_folds, seed)
    cmc = X[:, list(ev.FEATURES).index("cmc")]
    seconds["cross_validation"] = time.perf_counter() - t
    lr_rules, cmc_rules = decision_rules(llr, same, cmc)
    rec = recommend(lr_rules, cmc_rules, fpr_target, elimination_target)
    domain = _domain_seen(used) if domain is None else domain
    cal = _calibrate(X, same, used, chosen, plan, res[0], domain, labels_info, name, description, seed)
    cal.performance = _performance(llr, same, rec, n_folds, seed)
    given = {
        "pairs": pairs,
        "seed": seed,
        "n_folds": n_folds,
        "fpr_target": fpr_target,
        "elimination_target": elimination_target,
        "skip_unreadable": skip_unreadable,
        "preprocess_params": preprocess_params,
        "compare_params": compare_params,
    }
    result = ValidationResult(
        n_scans=len(used),
        n_firearms=len(set(guns)),
        n_pairs=len(chosen),
        n_same=int(same.sum()),
        n_different=int((~same).sum()),
        pairs_plan=plan,
        domain=domain,
        **_discrimination(cmc, llr, same),
        lr_rules=lr_rules,
        cmc_rules=cmc_rules,
        recommendation=rec,
        calibration=cal,
        log10_lr_cv=llr,
        records=_pair_records(used, chosen, same, X, llr, res),
        inputs=[_input_record(i) for i in used],
        excluded=excluded,
        parameters=_parameters(given, cal, n_jobs, client),
        seconds=seconds,
    )
    if out is not None:
        _write(result, Path(out), labels_info)
    result.seconds["total"] = time.perf_counter() - t0
    return result


def _check_parameters(n_jobs, n_folds, fpr_target, elimination_target, domain, preprocess_params, compare_params):
    """Refuse bad parameters before reading any scan; returns copies of ``preprocess_params`` and
    ``compare_params`` (dicts, empty when None)."""
    from ..features.comparison import DEFAULTS
    from ..features.preprocessing import preprocess

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
    try:  # a misspelt parameter fails here, not as an "unreadable scan" after reading them all
        inspect.signature(preprocess).bind(None, **preprocess_params)
    except TypeError as e:
        raise ParameterError(f"preprocess_params: {e}; see bx.preprocess") from None
    unknown = sorted(set(compare_params) - set(DEFAULTS))
    if unknown:
        raise ParameterError(f"compare_params: unknown {unknown}; known: {sorted(DEFAULTS)}")
    return preprocess_params, compare_params


def _read_and_preprocess(inputs: list[_Input], params: dict, skip_unreadable: bool, pool, client, progress) -> list:
    """Read and preprocess every scan once (`_prepare`: on ``client``, ``pool`` or here); each
    input gets its scan, population and SHA-256. Returns the unreadable ones left out (with
    ``skip_unreadable``; else the first raises)."""
    from tqdm.auto import tqdm

    jobs = [(i.item, {**i.labels, "firearm": i.firearm}, params, i.path or i.name) for i in inputs]
    if client is not None:
        from .._dask import dask_map

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
    return excluded


def _plan(used: list[_Input], pairs, seed: int, n_folds: int) -> tuple[list[tuple[int, int]], dict]:
    """The pairs of the readable scans to compare (`plan_pairs`), refused before comparing when
    they cannot give a result: too few guns or same-gun pairs, too few to cross-validate, or
    scans preprocessed differently."""
    guns = [i.firearm for i in used]
    _check_guns(guns, "readable")
    chosen, plan = plan_pairs(guns, pairs, seed)
    if plan["n_same"] == 0:
        raise InsufficientDataError("no same-gun pair: at least one firearm needs 2 or more scans")
    _check_cv([guns[i] for i, _ in chosen], [guns[j] for _, j in chosen], n_folds, seed)
    sigs = {json.dumps(processing_signature(i.scan.meta.get("processing")), sort_keys=True) for i in used}
    if len(sigs) > 1:
        raise ValidationError(
            "the scans were preprocessed with different steps or parameters (some carry "
            "earlier processing in their metadata); validate scans of one kind"
        )
    return chosen, plan


def _cross_validated_lrs(res, gun_pairs, n_folds: int, seed: int):
    """The features of each comparison (rows of `evidence.FEATURES`), whether its guns are the same,
    and its log10 LR from a calibration fitted without its guns (`evidence.cross_validate`)."""
    X = np.array([[ev.feature_values(r)[k] for k in ev.FEATURES] for r in res], float).reshape(-1, len(ev.FEATURES))
    ga, gb = [a for a, _ in gun_pairs], [b for _, b in gun_pairs]
    same = np.array([a == b for a, b in gun_pairs])
    return X, same, ev.cross_validate(X, same, ga, gb, n_folds=n_folds, seed=seed)


def _discrimination(cmc, llr, same) -> dict[str, Any]:
    """AUC and EER of the CMC count and the LR, Cllr, Cllr-min and misleading evidence of the LR."""
    from ..evaluation import auc, equal_error_rate

    return {
        "auc_cmc": auc(cmc, same),
        "auc_lr": auc(llr, same),
        "eer_cmc": equal_error_rate(cmc, same),
        "eer_lr": equal_error_rate(llr, same),
        "cllr": cllr(llr, same),
        "cllr_min": cllr_min(llr, same),
        "misleading": misleading(llr, same),
    }


def _domain_seen(used: list[_Input]) -> dict[str, Any]:
    """The population values seen, for each key recorded for every scan (None: not restricted)."""
    pops = [i.population for i in used]
    domain = {k: (sorted({p[k] for p in pops}) if all(p.get(k) for p in pops) else None) for k in POPULATION_KEYS}
    domain["unknown_ok"] = []
    return domain


def _calibrate(X, same, used, chosen, plan, first, domain, labels_info, name, description, seed):
    """The calibration fitted on all pairs, restricted to ``domain``, recording the preprocessing
    and comparison parameters (those of ``first``, one of the comparisons) and what was tested."""
    from ..features.comparison import DEFAULTS

    n_guns = len({i.firearm for i in used})
    pop_words = _population_words(domain)
    name = name or f"lab validation: {pop_words}"
    description = description or (
        f"{len(used)} scans of {n_guns} firearms ({pop_words}); {len(chosen)} pairs compared "
        f"({plan['n_same']} same-gun, {plan['n_different']} different-gun"
        + (f", sampled with seed {seed} from {plan['n_different_available']}" if plan["mode"] == "sample" else "")
        + f"); validated with ballistix {__version__}"
    )
    return ev.fit(
        X,
        same,
        name=name,
        description=description,
        preprocessing=processing_signature(used[0].scan.meta.get("processing")),
        comparison={k: first.params[k] for k in DEFAULTS},
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


def _performance(llr, same, rec: dict, n_folds: int, seed: int) -> dict[str, Any]:
    """The calibration's ``performance``: how it was cross-validated, its LR measures at the
    recommended identification threshold (or the default one), and the recommended rule."""
    ident_lr = rec["identification"]["threshold"] if rec["identification"] else ev.IDENTIFICATION_LR
    return {
        "cross_validation": f"{n_folds} folds of guns (leave-one-gun-out when {n_folds} or fewer guns), seed {seed}",
        **lr_performance(llr, same, identification_lr=ident_lr),
        "recommended_rule": rec["identification"]["rule"] if rec["identification"] else None,
    }


def _pair_records(used, chosen, same, X, llr, res) -> list[dict[str, Any]]:
    """One record per pair: scans, firearms, truth, features, cross-validated log10 LR, rotation."""
    return [
        {
            "a": used[i].name,
            "b": used[j].name,
            "gun_a": used[i].firearm,
            "gun_b": used[j].firearm,
            "same_gun": bool(s),
            "features": dict(zip(ev.FEATURES, map(float, x))),
            "log10_lr_cv": float(lv),
            "rotation_deg": float(r.rotation_deg),
        }
        for (i, j), s, x, lv, r in zip(chosen, same, X, llr, res)
    ]


def _input_record(i: _Input) -> dict[str, Any]:
    return {"name": i.name, "path": i.path, "firearm": i.firearm, "sha256": i.sha256, "population": i.population}


def _parameters(given: dict, cal, n_jobs: int, client) -> dict[str, Any]:
    """The parameters recorded: those ``given`` to `validate`, the preprocessing and comparison the
    calibration applies to, the rules tested and how the work was run."""
    return {
        **given,
        "preprocessing": cal.preprocessing,
        "comparison": cal.comparison,
        "lr_identification_rules": list(LR_IDENTIFICATION_RULES),
        "lr_elimination_rules": list(LR_ELIMINATION_RULES),
        "cmc_rules": list(CMC_RULES),
        "n_jobs": n_jobs,
        "dask": client is not None,
    }


def _scan_error(inp: _Input, err: str) -> BallistixError:
    from ..errors import ScanFormatError

    return ScanFormatError(
        inp.path or inp.name,
        (err or "unreadable").replace(f"{inp.path}: ", "", 1)
        + " (pass skip_unreadable=True to leave it out and list it)",
    )


def _prepare(job):
    """Read (if a path), label and preprocess one scan: ``(Scan, None)`` or ``(None, reason)``."""
    item, labels, params, name = job
    from ..features.preprocessing import preprocess
    from ..io import read_scan
    from ..scan import Scan

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


def _population_words(domain: dict) -> str:
    parts = []
    for k in POPULATION_KEYS:
        v = domain.get(k)
        parts.append(f"{k.replace('_', '/')} {', '.join(v)}" if v else f"{k.replace('_', '/')} not restricted")
    return "; ".join(parts)


def _write(r: ValidationResult, out: Path, labels_info) -> None:
    """Write ``calibration.json``, ``validation.json`` and ``report.html`` into ``out``; the
    result records their paths."""
    out.mkdir(parents=True, exist_ok=True)
    r.out = out
    r.calibration_json = r.calibration.save(out / "calibration.json")
    doc = document(r, labels_info, sha256_file(r.calibration_json))
    r.validation_json = out / "validation.json"
    with atomic_file(r.validation_json) as f:
        f.write(json.dumps(doc, indent=1, default=_json_default).encode())
    r.report = out / "report.html"
    text = _report_html(r, doc)
    with atomic_file(r.report) as f:
        f.write(text.encode("utf-8"))
