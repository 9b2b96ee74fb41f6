"""Issue 19: the breech face alone against the breech face fused with the firing pin and the aperture shear.

    python -m benchmarks.marks [--jobs 2] [--guns 16 --shots 4] [--views primer firing_pin] [--quick]

1. Simulated realistic-hard raw scans (``bx.datasets.simulate(..., difficulty="realistic-hard",
   resolution="standard", run_size=guns // 4)``: consecutive slides, one manufacturing run per model of
   `MODELS_USED`, each gun leaving an aperture shear with its model's probability). Each firing is
   scanned in each view of ``--views``: "primer" (the crater floor below the depth window, as on the raw
   NIST scans: what labs' breech-face scans look like) and "firing_pin" (the same firing, the floor
   measured: the best case). The breech face is taken from the primer view in both (the views differ
   only in the depth window, so its comparison is shared); the marks from each view.
2. Every same-gun pair and ``--knm-per-km`` times as many different-gun pairs (drawn at random): the
   breech-face comparison (`ballistix.features.comparison.compare`: CMC count, pose, features), then per
   view the firing pins (`compare_firing_pins` near the breech face's pose) and the shears
   (`compare_shears`). One `find_breech_face` region per scan serves its preprocessing and both marks.
   Per-pair results are cached in ``benchmarks/results/marks_pairs.json`` (recomputed when the
   parameters or the comparison code change; a stopped run carries on where it stopped).
3. Cross-validation by gun (`ballistix.evidence.cv_splits`: no pair is weighed by a model fitted on
   either of its guns). In each fold, on the training pairs: (a) the breech-face calibration alone
   (`ballistix.evidence.fit`), (b) a calibration per mark (`ballistix.fusion.fit_mark`, count and score),
   (c) the fusion of the three log-LRs (`ballistix.fusion.fit_fusion`; the training pairs' breech-face
   and mark log-LRs are in-sample to the fold), and the held-out pairs weighed by each. Reported on the
   held-out LRs: same-gun pairs found at zero false positives (LR above every different-gun pair's),
   same-gun pairs at LR >= 100 and the different-gun pairs there, Cllr and Cllr-min, breech face alone
   against fused, overall and per pattern of marks present; the naive product (sum of the per-mark
   log-LRs) beside them. The 6-CMC rule on the same pairs (the "about 47%" of the issue is
   ``benchmarks.cmc_accuracy``'s share of same-gun pairs at 6 CMCs or more, where no different-gun pair
   reached 6).
4. Raw Fadul scans (``../shared/data/fadul-raw``): 1-1 vs 1-2 (same slide), 1-1 vs 2-1 and 1-2 vs 2-1
   (different slides): each mark's result, and the fused LR of models fitted on the whole simulated
   primer-view set (a simulator-fitted fusion applied to real scans: it shows what the pipeline does on
   real input, not a validated LR for Ruger P95 casework).
5. Speed: per scan the region search, preprocessing and each mark's extraction; per pair the breech-face
   comparison and each mark's comparison (CPU seconds in the worker), on the simulated set and on the
   3.125 um raw Fadul scans.

6. ``--ship``: the marks calibration shipped with the package (``ballistix/data/marks_simulated.json``):
   mark models and fusion (`ballistix.fusion.fit_marks_calibration`) fitted on every primer-view pair
   whose regions were found, on the breech-face LRs of the shipped default calibration as
   `ballistix.evidence.weigh` gives them (capped without congruent cells). Its recorded performance
   and conclusion error rates are cross-validated by gun the same way (the shipped breech-face
   calibration fixed, the marks and the fusion fitted per fold). Its domain is the simulator's
   instrument: it weighs simulated scans only. The checksum to pin in
   `ballistix.fusion.SHIPPED_MARKS_SHA256` is printed.

Writes benchmarks/results/marks.json and marks.png, prints tables.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix import evidence as ev  # noqa: E402
from ballistix.errors import BallistixError, ParameterError  # noqa: E402
from ballistix.evaluation import lr  # noqa: E402
from ballistix.features.comparison import compare  # noqa: E402
from ballistix.features.marks import (  # noqa: E402
    MARKS,
    compare_firing_pins,
    compare_shears,
    extract_aperture_shear,
    extract_firing_pin,
)
from ballistix.features.preprocessing import find_breech_face  # noqa: E402
from ballistix.fusion import MIN_PAIRS_PER_CLASS, fit_fusion, fit_mark, fit_marks_calibration  # noqa: E402
from ballistix.graph.linkage import CONVENTIONAL_CMC_RULE as RULE  # noqa: E402

from ._common import RESULTS, ROOT, SHARED_DATA, table, write_json  # noqa: E402

CACHE = RESULTS / "marks_pairs.json"
#: One manufacturing run per model, in this order: a Fadul-like run (Ruger P95, round pin, shear on 60% of
#: guns), Glock's rectangular striker (shear 30%), two more round-pin models with shears on 50% and 20%
#: of guns: marks present on some guns and not others, as in casework.
MODELS_USED = ["Ruger P95", "Glock 17", "SIG Sauer P226", "Hi-Point C9"]
#: The comparison grid of the simulated breech faces: that of benchmarks.cmc_accuracy (its 47% baseline).
SIM_SPACING_UM = 6.25
#: Log10 LR of the "LR >= 100" rows (the evidence benchmark's link threshold).
STRONG_LOG10 = 2.0
#: The code whose change makes the cached pairs stale.
CODE = [
    "ballistix/features/comparison.py",
    "ballistix/features/marks/firing_pin.py",
    "ballistix/features/marks/aperture_shear.py",
    "ballistix/datasets/simulate.py",
]
MARK_LABEL = {"breech_face": "BF", "firing_pin": "FP", "aperture_shear": "shear"}


def _code_signature() -> str:
    h = hashlib.sha256()
    for p in CODE:
        path = ROOT / p
        h.update(path.read_bytes() if path.exists() else p.encode())
    return h.hexdigest()[:16]


def _num(v):
    """A JSON-safe number: None for NaN or infinity."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return round(float(v), 5) if math.isfinite(v) else None
    return None


def mark_summary(r) -> dict:
    """A `MarkResult` without its per-element records: what calibration and reports read."""
    extra = {k: _num(v) for k, v in r.features.items() if isinstance(v, (int, float, np.number)) and k != "params"}
    return {
        "used": bool(r.used),
        "reason": r.reason,
        "count": int(r.count),
        "n_elements": int(r.n_elements),
        "score": _num(r.score),
        "rotation_deg": _num(r.rotation_deg),
        "shift_um": _num(r.shift_um),
        "class_features": {k: _num(v) for k, v in r.class_features.items() if not isinstance(v, (list, dict))},
        "features": extra,
    }


# ------------------------------------------------------------------------------------------------ scans


def region_of(scan):
    """The scan's breech-face region (checked; unchecked when the plausibility checks fail), and its status."""
    try:
        return find_breech_face(scan), "ok"
    except BallistixError as e:
        try:
            return find_breech_face(scan, check=False), f"unchecked: {e}"[:200]
        except BallistixError as e2:
            return None, f"failed: {e2}"[:200]


def extract_scan(scan, spacing_um: float | None, marks_only: bool = False) -> dict:
    """One scan's region, processed breech face and marks, with the CPU time of each step."""
    out, t = {"seconds": {}}, time.process_time()
    reg, status = region_of(scan)
    out["seconds"]["region"] = time.process_time() - t
    out["region_status"] = status
    if not marks_only:
        t = time.process_time()
        kw = {} if spacing_um is None else {"spacing_um": spacing_um}
        out["processed"] = bx.preprocess(scan, region=reg if reg is not None else "auto", **kw)
        out["seconds"]["preprocess"] = time.process_time() - t
    t = time.process_time()
    out["firing_pin"] = extract_firing_pin(scan, reg)
    out["seconds"]["extract_firing_pin"] = time.process_time() - t
    t = time.process_time()
    out["aperture_shear"] = extract_aperture_shear(scan, reg)
    out["seconds"]["extract_aperture_shear"] = time.process_time() - t
    return out


def compare_pair(job) -> dict:
    """Breech face, then per view the firing pin (near the breech face's pose) and the shear: summaries and
    CPU seconds. ``job``: (processed A, processed B, {view: (fp A, fp B, shear A, shear B)})."""
    pa, pb, views = job
    t = time.process_time()
    c = compare(pa, pb)
    out = {
        "bf_seconds": time.process_time() - t,
        "bf": [ev.feature_values(c)[k] for k in ev.FEATURES],
        "cmc": int(c.cmc_count),
        "bf_rotation_deg": _num(c.rotation_deg),
        "views": {},
    }
    rot = c.rotation_deg if c.rotation_deg is not None and np.isfinite(c.rotation_deg) else None
    for view, (fa, fb, sa, sb) in views.items():
        t = time.process_time()
        f = compare_firing_pins(fa, fb, rotation_deg=rot)
        t_f = time.process_time() - t
        t = time.process_time()
        s = compare_shears(sa, sb)
        t_s = time.process_time() - t
        out["views"][view] = {
            "firing_pin": mark_summary(f),
            "aperture_shear": mark_summary(s),
            "seconds": {"firing_pin": t_f, "aperture_shear": t_s},
        }
    return out


def _map(fn, jobs_list, jobs: int):
    if jobs <= 1 or len(jobs_list) <= 1:
        return [fn(j) for j in jobs_list]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(ex.map(fn, jobs_list, chunksize=2))


def simulated_pairs(args) -> dict:
    """Simulate, extract and compare (cached per pair; resumes a stopped run)."""
    key = {
        "guns": args.guns,
        "shots": args.shots,
        "seed": args.seed,
        "knm_per_km": args.knm_per_km,
        "views": list(args.views),
        "models": MODELS_USED,
        "difficulty": "realistic-hard",
        "resolution": args.resolution,
        "crater": args.crater,
        "spacing_um": SIM_SPACING_UM,
        "code": _code_signature(),
    }
    cached = json.loads(CACHE.read_text()) if CACHE.exists() and not args.fresh else None
    if cached and cached.get("key") == key and cached["done"] == len(cached["pairs_index"]):
        print(f"simulated pairs from {CACHE.name} ({cached['done']} pairs)")
        return cached
    t0 = time.perf_counter()
    run_size = max(2, args.guns // len(MODELS_USED))
    sim = dict(
        seed=args.seed,
        difficulty="realistic-hard",
        resolution=args.resolution,
        run_size=run_size,
        models=MODELS_USED,
        crater=args.crater,
    )
    scans = {view: bx.datasets.simulate(args.guns, args.shots, view=view, **sim) for view in args.views}
    primer = scans.get("primer") or bx.datasets.simulate(args.guns, args.shots, view="primer", **sim)
    t_sim = time.perf_counter() - t0
    ex = {"primer": [extract_scan(s, SIM_SPACING_UM) for s in primer]}
    for view in args.views:
        if view != "primer":
            ex[view] = [extract_scan(s, None, marks_only=True) for s in scans[view]]
    labels = [s.meta["labels"] for s in primer]
    fire = [lab["firearm"] for lab in labels]
    allpairs = list(itertools.combinations(range(len(primer)), 2))
    km = [p for p in allpairs if fire[p[0]] == fire[p[1]]]
    knm = [p for p in allpairs if fire[p[0]] != fire[p[1]]]
    rng = np.random.default_rng(args.seed)
    n_knm = min(len(knm), int(round(args.knm_per_km * len(km))))
    knm = [knm[i] for i in sorted(rng.choice(len(knm), n_knm, replace=False))]
    pairs = km + knm
    truth_rot = [s.meta["truth"]["rotation_deg"] for s in primer]
    scans_meta = [
        {
            "exhibit": lab["exhibit"],
            "firearm": lab["firearm"],
            "model": f"{lab['make']} {lab['model']}",
            "run": lab.get("manufacturing_run"),
            "shear_present": bool(s.meta["truth"]["aperture_shear"]["present"]),
            "region_status": ex["primer"][k]["region_status"],
            "seconds": {v: ex[v][k]["seconds"] for v in ex},
            "usable": {v: {m: bool(ex[v][k][m].usable) for m in MARKS} for v in args.views},
            "reasons": {v: {m: ex[v][k][m].reason for m in MARKS if not ex[v][k][m].usable} for v in args.views},
        }
        for k, (s, lab) in enumerate(zip(primer, labels))
    ]
    done = []
    if cached and cached.get("key") == key and cached["pairs_index"] == [list(p) for p in pairs]:
        done = cached["pairs"]
        print(f"resuming after {len(done)} of {len(pairs)} pairs")
    t_cmp = time.perf_counter() - (cached.get("compare_seconds", 0.0) if done else 0.0)
    chunk = max(2 * args.jobs, 48)
    for start in range(len(done), len(pairs), chunk):
        part = pairs[start : start + chunk]
        jobs_list = [
            (
                ex["primer"][i]["processed"],
                ex["primer"][j]["processed"],
                {
                    v: (
                        ex[v][i]["firing_pin"],
                        ex[v][j]["firing_pin"],
                        ex[v][i]["aperture_shear"],
                        ex[v][j]["aperture_shear"],
                    )
                    for v in args.views
                },
            )
            for i, j in part
        ]
        for (i, j), r in zip(part, _map(compare_pair, jobs_list, args.jobs)):
            r.update(
                a=i,
                b=j,
                same=fire[i] == fire[j],
                same_run=labels[i].get("manufacturing_run") == labels[j].get("manufacturing_run"),
                truth_rotation_deg=round((truth_rot[j] - truth_rot[i]) % 360, 3),
            )
            done.append(r)
        out = {
            "key": key,
            "done": len(done),
            "pairs_index": [list(p) for p in pairs],
            "simulate_seconds": t_sim,
            "compare_seconds": time.perf_counter() - t_cmp,
            "scans": scans_meta,
            "pairs": done,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps(out))
        print(f"  {len(done)} / {len(pairs)} pairs, {time.perf_counter() - t_cmp:.0f} s", flush=True)
    return json.loads(CACHE.read_text())


# ---------------------------------------------------------------------------------------------- weighing


def _results(pairs, view: str, mark: str) -> list[dict]:
    """The pairs' results of one mark, scores back to floats (NaN where undefined) for `fit_mark`."""
    out = []
    for p in pairs:
        d = dict(p["views"][view][mark])
        d["score"] = float("nan") if d["score"] is None else float(d["score"])
        out.append(d)
    return out


def pattern_of(pair, view: str) -> str:
    """The marks both scans of a pair held (used in the comparison), "+"-joined; the breech face always."""
    return "+".join(["breech_face"] + [m for m in MARKS if pair["views"][view][m]["used"]])


def cross_validated(pairs, view: str, folds: int, seed: int, min_pairs: int) -> dict:
    """Held-out log10 LRs: breech face alone, each mark, fused, naive sum; and how each fold's fits went."""
    n = len(pairs)
    X = np.array([p["bf"] for p in pairs], float)
    y = np.array([p["same"] for p in pairs], bool)
    ga = [p["gun_a"] for p in pairs]
    gb = [p["gun_b"] for p in pairs]
    res = {m: _results(pairs, view, m) for m in MARKS}
    out = {k: np.full(n, np.nan) for k in ("breech_face", "fused", "naive", *MARKS)}
    fused_pattern = [None] * n
    folds_log = []
    for train, test in ev.cv_splits(ga, gb, folds, seed):
        if y[train].sum() < 2 or (~y[train]).sum() < 2 or not test.any():
            folds_log.append({"skipped": "too few training pairs of a class", "n_test": int(test.sum())})
            continue
        tr = np.flatnonzero(train)
        cal = ev.fit(X[train], y[train])
        bf = cal.log10_lr(X)
        models, why = {}, {}
        for m in MARKS:
            try:
                models[m] = fit_mark(m, [res[m][i] for i in tr], y[train])
            except ParameterError as e:
                models[m], why[m] = None, str(e)
        rows = [
            {"breech_face": float(bf[i]), **{m: models[m].log10_lr(res[m][i]) if models[m] else None for m in MARKS}}
            for i in range(n)
        ]
        try:
            fusion = fit_fusion([rows[i] for i in tr], y[train], min_pairs_per_class=min_pairs)
        except ParameterError as e:
            fusion, why["fusion"] = None, str(e)
        for i in np.flatnonzero(test):
            out["breech_face"][i] = bf[i]
            for m in MARKS:
                out[m][i] = np.nan if rows[i][m] is None else rows[i][m]
            out["naive"][i] = sum(v for v in rows[i].values() if v is not None)
            f = fusion.fuse(rows[i]) if fusion else {"log10_lr": None, "pattern": None}
            if f["log10_lr"] is None:  # no fitted pattern holds a mark present: the breech face alone
                out["fused"][i], fused_pattern[i] = bf[i], "breech_face (fallback)"
            else:
                out["fused"][i], fused_pattern[i] = f["log10_lr"], f["pattern"]
        folds_log.append(
            {
                "n_train": int(train.sum()),
                "n_test": int(test.sum()),
                "mark_models": {m: (models[m].n_same, models[m].n_different) if models[m] else None for m in MARKS},
                "fusion_patterns": {k: v["weights"] for k, v in fusion.patterns.items()} if fusion else None,
                "not_fitted": why,
            }
        )
    return {"llr": out, "fused_pattern": fused_pattern, "folds": folds_log}


def performance(llr, same) -> dict:
    """Found at zero false positives, at LR >= 100, Cllr and Cllr-min (pairs without an LR left out)."""
    llr, same = np.asarray(llr, float), np.asarray(same, bool)
    ok = np.isfinite(llr)
    llr, same = llr[ok], same[ok]
    km, knm = llr[same], llr[~same]
    if not km.size or not knm.size:
        return {"n_same": int(km.size), "n_different": int(knm.size)}
    return {
        "n_same": int(km.size),
        "n_different": int(knm.size),
        "found_at_zero_fp": float((km > knm.max()).mean()),
        "same_lr_ge_100": float((km >= STRONG_LOG10).mean()),
        "different_lr_ge_100": int((knm >= STRONG_LOG10).sum()),
        "cllr": lr.cllr(llr, same),
        "cllr_min": lr.cllr_min(llr, same),
    }


def count_rule(cmc, same) -> dict:
    cmc, same = np.asarray(cmc), np.asarray(same, bool)
    return {
        "same_at_rule": float((cmc[same] >= RULE).mean()),
        "different_at_rule": int((cmc[~same] >= RULE).sum()),
        "found_at_zero_fp": float((cmc[same] > cmc[~same].max()).mean()),
        "different_max": int(cmc[~same].max()),
    }


def _angle_err(a, b):
    return float(abs((a - b + 180.0) % 360.0 - 180.0))


def pose_check(pairs, view: str) -> dict:
    """Same-gun pairs: the breech face's and the firing pin's rotation against the simulator's truth."""
    bf, fp, fp_bf = [], [], []
    for p in pairs:
        if not p["same"]:
            continue
        if p["bf_rotation_deg"] is not None:
            bf.append(_angle_err(p["bf_rotation_deg"], p["truth_rotation_deg"]))
        f = p["views"][view]["firing_pin"]
        if f["used"] and f["rotation_deg"] is not None:
            fp.append(_angle_err(f["rotation_deg"], p["truth_rotation_deg"]))
            if p["bf_rotation_deg"] is not None:
                fp_bf.append(_angle_err(f["rotation_deg"], p["bf_rotation_deg"]))

    def q(v):
        return (
            {"n": len(v), "median_deg": float(np.median(v)), "within_6deg": float(np.mean(np.array(v) <= 6))}
            if v
            else {"n": 0}
        )

    return {"bf_vs_truth": q(bf), "fp_vs_truth": q(fp), "fp_vs_bf": q(fp_bf)}


def analyse_view(d: dict, view: str, folds: int, seed: int, min_pairs: int) -> dict:
    pairs = d["pairs"]
    scans = d["scans"]
    for p in pairs:
        p["gun_a"], p["gun_b"] = scans[p["a"]]["firearm"], scans[p["b"]]["firearm"]
    same = np.array([p["same"] for p in pairs], bool)
    cv = cross_validated(pairs, view, folds, seed, min_pairs)
    L = cv["llr"]
    pat = np.array([pattern_of(p, view) for p in pairs], object)
    per_pattern = {}
    for key in sorted(set(pat)):
        k = pat == key
        per_pattern[key] = {
            "n_same": int((k & same).sum()),
            "n_different": int((k & ~same).sum()),
            "breech_face": performance(L["breech_face"][k], same[k]),
            "fused": performance(L["fused"][k], same[k]),
        }
    usable = {m: sum(s["usable"][view][m] for s in scans) for m in MARKS}
    mark_stats = {}
    for m in MARKS:
        used = np.array([p["views"][view][m]["used"] for p in pairs], bool)
        cnt = np.array([p["views"][view][m]["count"] for p in pairs], float)
        sc = np.array([np.nan if p["views"][view][m]["score"] is None else p["views"][view][m]["score"] for p in pairs])
        mark_stats[m] = {
            "scans_usable": usable[m],
            "pairs_used_same": int((used & same).sum()),
            "pairs_used_different": int((used & ~same).sum()),
            "count_median_same": float(np.median(cnt[used & same])) if (used & same).any() else None,
            "count_median_different": float(np.median(cnt[used & ~same])) if (used & ~same).any() else None,
            "score_median_same": float(np.nanmedian(sc[used & same])) if np.isfinite(sc[used & same]).any() else None,
            "score_median_different": float(np.nanmedian(sc[used & ~same]))
            if np.isfinite(sc[used & ~same]).any()
            else None,
            "reasons": _top_reasons(scans, view, m),
        }
    return {
        "n_same": int(same.sum()),
        "n_different": int((~same).sum()),
        "breech_face": performance(L["breech_face"], same),
        "fused": performance(L["fused"], same),
        "naive": performance(L["naive"], same),
        "per_mark": {m: performance(L[m], same) for m in MARKS},
        "per_pattern": per_pattern,
        "fused_pattern_used": {
            k: int(v) for k, v in zip(*np.unique(np.array(cv["fused_pattern"], str), return_counts=True))
        },
        "marks": mark_stats,
        "pose": pose_check(pairs, view),
        "folds": cv["folds"],
        "_llr": {k: v.tolist() for k, v in L.items()},
    }


def _top_reasons(scans, view, mark, n: int = 3) -> dict:
    """The commonest reasons a mark was not usable on a scan (numbers stripped so that alike ones group)."""
    import re

    reasons = [s["reasons"][view].get(mark) for s in scans if not s["usable"][view][mark]]
    keys = [re.sub(r"-?\d+(\.\d+)?", "#", r.split(": ", 1)[-1])[:120] for r in reasons if r]
    u, c = np.unique(np.array(keys, str), return_counts=True) if keys else ([], [])
    order = np.argsort(c)[::-1][:n]
    return {str(u[i]): int(c[i]) for i in order}


# ------------------------------------------------------------------------------------------------ speed


def speed(d: dict, views) -> dict:
    scans, pairs = d["scans"], d["pairs"]
    per_scan = {}
    for k in ("region", "preprocess", "extract_firing_pin", "extract_aperture_shear"):
        v = [s["seconds"]["primer"][k] for s in scans if k in s["seconds"]["primer"]]
        per_scan[k] = float(np.mean(v)) if v else None
    per_pair = {"breech_face": float(np.mean([p["bf_seconds"] for p in pairs]))}
    for view in views:
        for m in MARKS:
            per_pair[f"{m} ({view})"] = float(np.mean([p["views"][view]["seconds"][m] for p in pairs]))
    bf_pair = 2 * (per_scan["region"] + per_scan["preprocess"]) + per_pair["breech_face"]
    all_pair = (
        bf_pair
        + 2 * (per_scan["extract_firing_pin"] + per_scan["extract_aperture_shear"])
        + per_pair["firing_pin (primer)" if "primer" in views else f"firing_pin ({views[0]})"]
        + per_pair["aperture_shear (primer)" if "primer" in views else f"aperture_shear ({views[0]})"]
    )
    return {
        "cpu_seconds_per_scan": per_scan,
        "cpu_seconds_per_pair": per_pair,
        "pair_from_raw_bf_alone": bf_pair,
        "pair_from_raw_all_marks": all_pair,
    }


# ------------------------------------------------------------------------------------------------ real


def fit_whole(d: dict, view: str, min_pairs: int):
    """Breech-face calibration, mark models and fusion fitted on every simulated pair of a view."""
    pairs = d["pairs"]
    X = np.array([p["bf"] for p in pairs], float)
    y = np.array([p["same"] for p in pairs], bool)
    cal = ev.fit(X, y, name="benchmarks.marks simulated realistic-hard")
    models = {}
    for m in MARKS:
        try:
            models[m] = fit_mark(m, _results(pairs, view, m), y)
        except ParameterError:
            models[m] = None
    bf = cal.log10_lr(X)
    rows = [
        {
            "breech_face": float(bf[i]),
            **{m: models[m].log10_lr(_results([p], view, m)[0]) if models[m] else None for m in MARKS},
        }
        for i, p in enumerate(pairs)
    ]
    try:
        fusion = fit_fusion(rows, y, min_pairs_per_class=min_pairs)
    except ParameterError:
        fusion = None
    return cal, models, fusion


def real_fadul(cal, models, fusion) -> dict | None:
    """The three raw Fadul scans: marks, per-mark and fused LRs with the simulator-fitted models."""
    folder = SHARED_DATA / "fadul-raw"
    names = ("1-1", "1-2", "2-1")
    if not all((folder / f"fadul-{n}-raw.x3p").is_file() for n in names):
        return None
    ex = {}
    for n in names:
        scan = bx.read_x3p(folder / f"fadul-{n}-raw.x3p")
        ex[n] = extract_scan(scan, None)
    shipped = ev.default_calibration()
    out = {"scans": {}, "pairs": {}}
    for n in names:
        e = ex[n]
        out["scans"][n] = {
            "region_status": e["region_status"],
            "seconds": e["seconds"],
            **{m: {"usable": bool(e[m].usable), "reason": e[m].reason} for m in MARKS},
        }
    for a, b in itertools.combinations(names, 2):
        r = compare_pair(
            (
                ex[a]["processed"],
                ex[b]["processed"],
                {"real": (ex[a]["firing_pin"], ex[b]["firing_pin"], ex[a]["aperture_shear"], ex[b]["aperture_shear"])},
            )
        )
        marks = r["views"]["real"]
        bf = float(cal.log10_lr(np.array([r["bf"]]))[0])
        row = {"breech_face": bf}
        for m in MARKS:
            d = dict(marks[m])
            d["score"] = float("nan") if d["score"] is None else d["score"]
            row[m] = models[m].log10_lr(d) if models[m] else None
        f = fusion.fuse(row) if fusion else {"log10_lr": None, "pattern": None, "used": [], "present_not_fused": []}
        out["pairs"][f"{a} vs {b}"] = {
            "same": a[0] == b[0],
            "cmc": r["cmc"],
            "bf_rotation_deg": r["bf_rotation_deg"],
            "bf_log10_lr_sim_fitted": bf,
            "bf_log10_lr_shipped_default": float(shipped.log10_lr(np.array([r["bf"]]))[0]),
            "marks": {
                m: {
                    k: marks[m][k]
                    for k in ("used", "reason", "count", "n_elements", "score", "rotation_deg", "shift_um")
                }
                for m in MARKS
            },
            "mark_log10_lr_sim_fitted": {m: row[m] for m in MARKS},
            "fused_log10_lr_sim_fitted": f["log10_lr"],
            "fused_pattern": f["pattern"],
            "present_not_fused": f.get("present_not_fused", []),
            "seconds": {"breech_face": r["bf_seconds"], **marks["seconds"]},
        }
    return out


# ------------------------------------------------------------------------------------------------ figure


def figure(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(out["views"])
    fig, axes = plt.subplots(1, len(views), figsize=(6 * len(views), 4.2), squeeze=False)
    for ax, view in zip(axes[0], views):
        r = out["views"][view]
        same = np.array(r["_same"], bool)
        for key, style in (("breech_face", "--"), ("fused", "-")):
            llr = np.array(r["_llr"][key], float)
            for cls, colour in ((same, "tab:blue"), (~same, "tab:red")):
                x = np.sort(llr[cls & np.isfinite(llr)])
                if x.size:
                    ax.step(
                        x,
                        1.0 - np.arange(x.size) / x.size,
                        where="post",
                        ls=style,
                        color=colour,
                        label=f"{'BF alone' if key == 'breech_face' else 'fused'}, {'same' if cls is same else 'different'} gun",  # noqa: E501
                    )
        p = r["breech_face"], r["fused"]
        ax.set_title(
            f"{view} view: Cllr BF {p[0].get('cllr', float('nan')):.3f}, fused {p[1].get('cllr', float('nan')):.3f}",
            fontsize=9,
        )
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("log10 LR (cross-validated by gun)")
        ax.set_ylabel("share of pairs with a larger log10 LR")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main


def _perf_row(name, r):
    return [
        name,
        r["n_same"],
        r["n_different"],
        r.get("found_at_zero_fp"),
        r.get("same_lr_ge_100"),
        r.get("different_lr_ge_100"),
        r.get("cllr"),
        r.get("cllr_min"),
    ]


SHIPPED_MARKS = ROOT / "ballistix" / "data" / "marks_simulated.json"
SIM_INSTRUMENT = "ballistix simulated confocal, NA 0.30"


def ship(d: dict, folds: int, seed: int, min_pairs: int, write: bool) -> dict:
    """The shipped marks calibration: fitted on every primer-view pair with both regions found, on the
    shipped default calibration's breech-face LRs; performance cross-validated by gun (see module notes)."""
    default = ev.default_calibration()
    scans = d["scans"]
    pairs = [p for p in d["pairs"] if scans[p["a"]]["region_status"] == "ok" and scans[p["b"]]["region_status"] == "ok"]
    y = np.array([p["same"] for p in pairs], bool)
    X = np.array([p["bf"] for p in pairs], float)
    bf = np.array([ev.cap_without_cells(v, p["cmc"]) for v, p in zip(default.log10_lr(X), pairs)])
    marks = [{m: _results([p], "primer", m)[0] for m in MARKS} for p in pairs]
    ga = [scans[p["a"]]["firearm"] for p in pairs]
    gb = [scans[p["b"]]["firearm"] for p in pairs]
    held = np.full(len(pairs), np.nan)
    for train, test in ev.cv_splits(ga, gb, folds, seed):
        if not test.any():
            continue
        tr = np.flatnonzero(train)
        try:
            mc = fit_marks_calibration(
                bf[train],
                [marks[i] for i in tr],
                y[train],
                breech_face_sha256=default.sha256,
                name="fold",
                min_pairs_per_class=min_pairs,
            )
        except ParameterError:
            held[test] = bf[test]  # nothing fitted in this fold: the breech face alone
            continue
        for i in np.flatnonzero(test):
            row = {
                "breech_face": bf[i],
                **{m: mc.models[m].log10_lr(marks[i][m]) if m in mc.models else None for m in MARKS},
            }
            f = mc.fusion.fuse(row)
            held[i] = bf[i] if f["log10_lr"] is None or f["used"] == ["breech_face"] else f["log10_lr"]
    perf = {
        "cross_validation": f"{folds} folds by gun (no pair weighed by a fit on either of its guns); the shipped "
        f"breech-face calibration fixed, the mark models and the fusion fitted per fold",
        "fused": performance(held, y),
        "breech_face": performance(bf, y),
        "conclusions": lr.conclusion_rates(held, y),
        "misleading": lr.misleading(held, y),
    }
    mc = fit_marks_calibration(
        bf,
        marks,
        y,
        breech_face_sha256=default.sha256,
        name=f"ballistix marks simulated {bx.__version__}",
        description=(
            f"firing pin and aperture shear of simulated realistic-hard 9 mm cases with the realistic crater "
            f"({d['key']['guns']} guns of {len(MODELS_USED)} models x {d['key']['shots']} shots, primer view, "
            f"benchmarks.marks); fused with the breech-face LRs of {default.name}. Simulated scans only: "
            f"no real scan lies in its domain"
        ),
        domain={
            "calibre": ["9mm Luger"],
            "instrument": [SIM_INSTRUMENT],
            "description": "scans of the ballistix simulator (confocal instrument) only",
            "unknown_ok": ["calibre"],
        },
        min_pairs_per_class=min_pairs,
        performance=perf,
    )
    out = {
        "n_same": int(y.sum()),
        "n_different": int((~y).sum()),
        "performance": perf,
        "sha256": mc.sha256,
        "models": {m: v.to_dict() for m, v in mc.models.items()},
        "fusion": mc.fusion.patterns,
    }
    if write:
        mc.save(SHIPPED_MARKS)
        out["written"] = str(SHIPPED_MARKS.relative_to(ROOT))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--guns", type=int, default=12)
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--knm-per-km", type=float, default=4.0)
    p.add_argument("--views", nargs="+", default=["primer", "firing_pin"], choices=["primer", "firing_pin"])
    p.add_argument("--resolution", default="standard", choices=["standard", "full", "fast"])
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--min-pairs", type=int, default=MIN_PAIRS_PER_CLASS, help="reference pairs per class a fusion pattern needs"
    )
    p.add_argument(
        "--crater",
        default="realistic",
        choices=["realistic", "v1"],
        help="the simulator's crater: realistic (walls measured as on the raw Fadul scans) or v1 (the default "
        "data sets', whose marks the extractors cannot use)",
    )
    p.add_argument("--skip-real", action="store_true")
    p.add_argument(
        "--ship", action="store_true", help=f"fit and write the shipped marks calibration ({SHIPPED_MARKS.name})"
    )
    p.add_argument("--fresh", action="store_true", help="recompute the simulated pairs even if cached")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 guns x 2 shots, primer view, 4 folds")
    args = p.parse_args(argv)
    if args.quick:
        args.guns, args.shots, args.knm_per_km, args.views, args.folds = 8, 2, 3.0, ["primer"], 4
        args.min_pairs = min(args.min_pairs, 3)
    if "primer" in args.views:
        args.views = ["primer"] + [v for v in args.views if v != "primer"]
    t0 = time.perf_counter()
    d = simulated_pairs(args)
    same = np.array([p["same"] for p in d["pairs"]], bool)
    cmc = np.array([p["cmc"] for p in d["pairs"]])
    out = {
        "params": vars(args),
        "composition": {
            "models": MODELS_USED,
            "guns": args.guns,
            "shots": args.shots,
            "run_size": max(2, args.guns // len(MODELS_USED)),
            "guns_per_model": {m: len({s["firearm"] for s in d["scans"] if s["model"] == m}) for m in MODELS_USED},
            "guns_with_shear": len({s["firearm"] for s in d["scans"] if s["shear_present"]}),
            "regions_not_checked": sum(s["region_status"] != "ok" for s in d["scans"]),
            "n_same": int(same.sum()),
            "n_different": int((~same).sum()),
            "different_same_run": int(sum(p["same_run"] and not p["same"] for p in d["pairs"])),
        },
        "cache": {"path": str(CACHE.relative_to(ROOT)) if CACHE.is_relative_to(ROOT) else str(CACHE), "key": d["key"]},
        "simulate_seconds": d["simulate_seconds"],
        "compare_seconds": d["compare_seconds"],
        "cmc_rule": count_rule(cmc, same),
        "views": {},
    }
    for view in args.views:
        r = analyse_view(d, view, args.folds, args.seed, args.min_pairs)
        r["_same"] = same.tolist()
        out["views"][view] = r
    out["speed"] = speed(d, args.views)
    if not args.skip_real:
        cal, models, fusion = fit_whole(d, "primer" if "primer" in args.views else args.views[0], args.min_pairs)
        out["real"] = real_fadul(cal, models, fusion)
        out["real_fusion"] = {
            "note": "breech-face calibration, mark models and fusion fitted on every simulated pair of the "
            "primer view, applied to the real raw Fadul scans: a check of the pipeline on real input, "
            "not a validated LR",
            "patterns": {k: v["weights"] for k, v in fusion.patterns.items()} if fusion else None,
            "mark_models": {m: (models[m].to_dict() if models[m] else None) for m in MARKS},
        }
    if "primer" in args.views:
        out["shipped"] = ship(d, args.folds, args.seed, args.min_pairs, write=args.ship and not args.quick)
    out["seconds"] = time.perf_counter() - t0
    write_json("marks", out)
    figure(out, RESULTS / "marks.png")
    report(out)
    return 0


def report(out: dict) -> None:
    s = out.get("shipped")
    if s:
        f, b = s["performance"]["fused"], s["performance"]["breech_face"]
        print(
            f"\nshipped marks calibration ({s.get('written', 'not written: --ship')}, sha256 {s['sha256']}): "
            f"{s['n_same']} KM / {s['n_different']} KNM; cross-validated: found at 0 FP "
            f"{b.get('found_at_zero_fp', 0):.3f} breech face (shipped calibration) -> "
            f"{f.get('found_at_zero_fp', 0):.3f} fused; "
            f"Cllr {b.get('cllr', float('nan')):.3f} -> {f.get('cllr', float('nan')):.3f}"
        )
    c = out["composition"]
    print(
        f"\nsimulated realistic-hard: {c['guns']} guns x {c['shots']} shots ({c['guns_per_model']}), "
        f"{c['guns_with_shear']} guns with an aperture shear; {c['n_same']} same-gun and {c['n_different']} "
        f"different-gun pairs ({c['different_same_run']} of them within a manufacturing run)"
    )
    r = out["cmc_rule"]
    print(
        f"breech-face CMC count: {r['same_at_rule']:.1%} of same-gun pairs at >= {RULE} CMCs with "
        f"{r['different_at_rule']} different-gun pairs there; {r['found_at_zero_fp']:.1%} above every "
        f"different-gun pair (max {r['different_max']})"
    )
    header = ["view / weighing", "KM", "KNM", "found at 0 FP", "KM LR>=100", "KNM LR>=100", "Cllr", "Cllr-min"]
    rows = []
    for view, v in out["views"].items():
        rows.append(_perf_row(f"{view}: BF alone", v["breech_face"]))
        rows.append(_perf_row(f"{view}: fused", v["fused"]))
        rows.append(_perf_row(f"{view}: naive sum", v["naive"]))
        for m in MARKS:
            rows.append(_perf_row(f"{view}: {MARK_LABEL[m]} alone (pairs where used)", v["per_mark"][m]))
    print(table(rows, header))
    rows = []
    for view, v in out["views"].items():
        for key, pp in v["per_pattern"].items():
            label = "+".join(MARK_LABEL[m] for m in key.split("+"))
            rows.append(
                _perf_row(
                    f"{view}: {label}: BF alone",
                    {**pp["breech_face"], "n_same": pp["n_same"], "n_different": pp["n_different"]},
                )
            )
            rows.append(
                _perf_row(
                    f"{view}: {label}: fused", {**pp["fused"], "n_same": pp["n_same"], "n_different": pp["n_different"]}
                )
            )
    print("\nper pattern of marks present (held-out LRs)")
    print(table(rows, header))
    rows = []
    for view, v in out["views"].items():
        for m, s in v["marks"].items():
            rows.append(
                [
                    f"{view}: {MARK_LABEL[m]}",
                    f"{s['scans_usable']} / {c['guns'] * c['shots']}",
                    f"{s['pairs_used_same']} / {s['pairs_used_different']}",
                    f"{s['count_median_same']} / {s['count_median_different']}",
                    f"{_f(s['score_median_same'])} / {_f(s['score_median_different'])}",
                    "; ".join(f"{k} ({n})" for k, n in s["reasons"].items())[:150],
                ]
            )
    print("\nmarks: scans usable, pairs used (KM / KNM), median count and score (KM / KNM), why not usable")
    print(table(rows, ["view: mark", "scans", "pairs used", "count", "score", "commonest reasons"]))
    for view, v in out["views"].items():
        pz = v["pose"]
        print(
            f"pose ({view}, same-gun pairs): "
            + "; ".join(
                f"{k} n={q['n']}"
                + (f" median {q['median_deg']:.2f} deg, within 6 deg {q['within_6deg']:.0%}" if q["n"] else "")
                for k, q in pz.items()
            )
        )
    s = out["speed"]
    print("\nspeed, CPU seconds: per scan " + ", ".join(f"{k} {_f(v)}" for k, v in s["cpu_seconds_per_scan"].items()))
    print("per pair " + ", ".join(f"{k} {_f(v)}" for k, v in s["cpu_seconds_per_pair"].items()))
    print(
        f"a pair from two raw scans: breech face alone {s['pair_from_raw_bf_alone']:.2f} s, "
        f"all marks {s['pair_from_raw_all_marks']:.2f} s"
    )
    if out.get("real"):
        print("\nraw Fadul (" + out["real_fusion"]["note"] + ")")
        rows = []
        for name, r in out["real"]["pairs"].items():
            fp, sh = r["marks"]["firing_pin"], r["marks"]["aperture_shear"]
            rows.append(
                [
                    name,
                    "same" if r["same"] else "different",
                    r["cmc"],
                    _f(r["bf_log10_lr_shipped_default"]),
                    _f(r["bf_log10_lr_sim_fitted"]),
                    f"{fp['count']}/{fp['n_elements']} {_f(fp['score'])}" if fp["used"] else "not used",
                    f"{sh['count']}/{sh['n_elements']} {_f(sh['score'])}" if sh["used"] else "not used",
                    " / ".join(_f(r["mark_log10_lr_sim_fitted"][m]) for m in MARKS),
                    f"{_f(r['fused_log10_lr_sim_fitted'])} ({r['fused_pattern']})",
                ]
            )
        print(
            table(
                rows,
                [
                    "pair",
                    "truth",
                    "CMC",
                    "BF llr shipped",
                    "BF llr sim",
                    "FP count/n score",
                    "shear count/n score",
                    "FP / shear llr sim",
                    "fused llr sim (pattern)",
                ],
            )
        )
        for n, sc in out["real"]["scans"].items():
            print(
                f"  fadul-{n}: "
                + "; ".join(
                    f"{m} {'usable' if sc[m]['usable'] else 'not usable: ' + str(sc[m]['reason'])[:90]}" for m in MARKS
                )
                + "; "
                + ", ".join(f"{k} {v:.2f} s" for k, v in sc["seconds"].items())
            )


def _f(v, spec=".3g"):
    return "n/a" if v is None else format(v, spec)


if __name__ == "__main__":
    sys.exit(main())
