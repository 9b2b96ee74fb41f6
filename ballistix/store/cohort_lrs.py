"""Likelihood ratios of a store's recorded comparisons from a cohort calibration: each pair's CMC
count above the background of both exhibits among the store's other comparisons (see
`cohort_lrs`). Used by `CaseStore.graph`; recomputed at every call, as backgrounds change when
exhibits arrive."""

from __future__ import annotations

import json

import numpy as np

from ..provenance import population, processing_signature

__all__ = ["cohort_lrs"]


def cohort_lrs(store, rows) -> dict[tuple[int, int], dict]:
    """Likelihood ratios of the recorded comparisons from a cohort calibration (registered or
    shipped), where one applies: each pair's CMC count above both exhibits' backgrounds in
    this store (their other comparisons, `ballistix.cohort.normalise_pairs`, with the
    calibration's cohort settings; within the other exhibit's scanning ``batch`` when
    exhibits carry one), weighed by the calibration fitted on such excesses. A pair whose
    exhibits have too few comparisons keeps its own LR. Recomputed at every call: the
    backgrounds change as exhibits arrive."""
    from ..cohort import normalise_pairs
    from ..evidence import cap_without_cells, select_calibration

    cals = [c for c in store.calibrations() if c.needs_cohort]
    if not cals or not rows:
        return {}
    ex = {}
    for rowid, kind, gun, calibre, meta, proc in store._db.execute(
        "SELECT rowid, kind, firearm_id, calibre, meta_json, processing_json FROM exhibits"
    ):
        m = json.loads(meta)
        labels = {**(m.get("labels") or {}), **({"calibre": calibre} if calibre else {})}
        ex[rowid] = {
            "gun": gun if kind == "test_fire" else None,
            "batch": m.get("batch"),
            "population": population({"labels": labels, "population": m.get("population")}),
            "processing": processing_signature(json.loads(proc)),
        }
    ida = np.array([r[0] for r in rows])
    idb = np.array([r[1] for r in rows])
    cmc = np.array([r[2] for r in rows], float)
    same = np.array([ex[a]["gun"] is not None and ex[a]["gun"] == ex[b]["gun"] for a, b in zip(ida, idb)])
    batches = all(e["batch"] is not None for e in ex.values())
    out: dict[tuple[int, int], dict] = {}
    for cal in cals:
        # the calibration's checksum and origin once, not per pair (each canonicalises the whole calibration)
        named = {"calibration_sha256": cal.sha256, "calibration_origin": cal.describe_origin()}
        settings = dict(cal.reference.get("cohort") or {})
        kw = {k: settings[k] for k in ("exclude_top", "min_size", "quantile") if k in settings}
        keys = (
            {"keys_a": [str(ex[a]["batch"]) for a in ida], "keys_b": [str(ex[b]["batch"]) for b in idb]}
            if batches and settings.get("by_batch", True)
            else {}
        )
        excess, st = normalise_pairs(ida, idb, cmc, known_same=same, method="excess", return_stats=True, **keys, **kw)
        background = np.fmax([x.location for x in st["a"]], [x.location for x in st["b"]])
        limit = settings.get("max_background")
        for k, (a, b, *_, params) in enumerate(rows):
            if (a, b) in out or not np.isfinite(excess[k]):
                continue
            probe = _PairRecord(json.loads(params), ex[a], ex[b], a, b)
            chosen, _ = select_calibration(probe, cals, cohort=True)
            if chosen is not cal:
                continue
            if limit is not None and background[k] >= limit:  # an exhibit that does not discriminate here
                out[(a, b)] = {
                    "log10_lr": None,
                    "pair_log10_lr": rows[k][6],
                    "cmc_background": background[k],
                    "calibration_sha256": None,
                    "calibration_origin": None,
                    "lr_basis": f"withheld: an exhibit reaches {background[k]:g} CMCs against others "
                    f"of its population (limit {limit:g} of {cal.name}): not "
                    f"discriminating",
                }
                continue
            lr = cap_without_cells(float(cal.log10_lr(np.array([[excess[k]]]))[0]), rows[k][2])
            out[(a, b)] = {
                "log10_lr": lr,
                "pair_log10_lr": rows[k][6],
                "cmc_excess": float(excess[k]),
                "cmc_background": float(background[k]),
                "lr_basis": f"cohort: {cal.name}",
                "calibration_sha256": named["calibration_sha256"],
                "calibration_origin": named["calibration_origin"],
            }
    return out


class _PairRecord:
    """A recorded comparison as `Calibration.check` reads it: parameters and both inputs'
    processing and population."""

    def __init__(self, params: dict, a: dict, b: dict, ia, ib):
        self.params = params
        self.inputs = {
            "a": {"processing": a["processing"], "population": a["population"], "label": str(ia)},
            "b": {"processing": b["processing"], "population": b["population"], "label": str(ib)},
        }
