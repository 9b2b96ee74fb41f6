"""`ballistix demo`: the whole story on simulated casework.

simulate -> write x3p -> read back -> ingest into a case store -> compare a pair
-> search the store -> link -> linkage graph -> HTML report.

`run_demo` does it and returns what it found; `print_demo` tells it (the
command line prints that or the JSON).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ._table import print_table as _table
from .datasets import simulate_casework
from .io import read_scan, write_x3p
from .store import CaseStore
from .verify import compare

__all__ = ["run_demo", "print_demo"]


def run_demo(out, *, firearms: int = 4, scenes: int = 6, seed: int = 0, resolution: str = "standard") -> dict:
    """Run the demo into the folder ``out``; returns what it found and wrote (JSON-ready)."""
    t0 = time.perf_counter()
    clock = {}
    out = Path(out)
    (out / "exhibits").mkdir(parents=True, exist_ok=True)
    cw = simulate_casework(n_firearms=firearms, n_scenes=scenes, seed=seed, resolution=resolution)
    (out / "casework.json").write_text(cw.to_json(indent=2))
    paths = [write_x3p(scan, out / "exhibits" / f"{ex['id']}.x3p") for ex, scan in zip(cw.exhibits, cw.scans)]
    back = [read_scan(p) for p in paths]
    identical = all(
        np.array_equal(a.heights, b.heights, equal_nan=True) and a.meta["labels"] == b.meta["labels"]
        for a, b in zip(cw.scans, back)
    )
    verified = all(set(b.meta["x3p"]["checksums"].values()) == {"verified"} for b in back)
    clock["simulate, write, read"] = time.perf_counter() - t0

    # ingest: the analyst knows scenes, recovered guns, and where each cartridge case came from
    t = time.perf_counter()
    store = CaseStore(out / "store", shortlist=6)
    ing = store.add_casework(cw, paths, progress=False)
    clock["ingest (preprocess, describe, index)"] = time.perf_counter() - t

    truth = {e["id"]: e["firearm_truth"] for e in cw.exhibits}
    first = cw.exhibits[0]["id"]
    t = time.perf_counter()
    pairs = []
    for other in (
        next((e for e in truth if e != first and truth[e] == truth[first]), None),
        next((e for e in truth if truth[e] != truth[first]), None),
    ):
        if other is None:
            continue
        r = compare(store.scan(first), store.scan(other))
        pairs.append(
            {
                "a": first,
                "b": other,
                "same_gun_truth": truth[other] == truth[first],
                "cmc_count": r.cmc_count,
                "cells": r.n_cells,
                "score": round(r.score, 3),
                "rotation_deg": round(r.rotation_deg, 1),
                "log10_lr": None if r.log10_lr is None else round(r.log10_lr, 2),
                "conclusion": r.evidence["conclusion"]["conclusion"] if r.log10_lr is not None else "no LR",
                "calibration": (r.evidence.get("calibration_origin") or {}).get("text"),
            }
        )
    clock["compare a pair"] = time.perf_counter() - t

    t = time.perf_counter()
    cands = store.search(first, k=5)
    for c in cands:
        c["same_gun_truth"] = truth[c["exhibit_id"]] == truth[first]
    clock["search"] = time.perf_counter() - t

    t = time.perf_counter()
    store.shortlist = 3
    n_linked = store.link_new(n_jobs=min(2, os.cpu_count() or 1), progress=False)
    graph = store.graph()
    graph.export(out / "links.graphml")
    graph.to_html(out / "links.html", title="ballistix demo: simulated casework")
    groups = [
        {
            "exhibits": len(g["exhibits"]),
            "scenes": " ".join(g["scenes"]) or "-",
            "dates": f"{g['first_date']}..{g['last_date']}" if g["first_date"] else "-",
            "firearm": g["firearm"] or "not recovered",
            "true_guns": " ".join(sorted({truth[e] for e in g["exhibits"]})),
        }
        for g in graph.group_summaries(min_size=2)
    ]
    linked = sorted(tuple(sorted(e)) for e in graph.scene_links().edges())
    test_fires = [e["id"] for e in cw.exhibits if e["kind"] == "test_fire"]
    leads = [
        {
            "exhibit": r["exhibit"],
            "kind": r["kind"],
            "firearm": r["firearm"] or "-",
            "linked_scenes": " ".join(r["linked_scenes"]) or "-",
            "best_cmc": r["best_cmc"],
            "best_log10_lr": "-" if r["best_log10_lr"] is None else round(r["best_log10_lr"], 2),
        }
        for r in graph.leads(test_fires)
    ]
    report_path = store.report(out / "report.html")
    clock["link, graph, report"] = time.perf_counter() - t
    clock["total"] = time.perf_counter() - t0
    ind = graph.indicator_16_4_2()
    store.close()

    result = {
        "out": str(out),
        "identical_after_roundtrip": identical,
        "checksums_verified": verified,
        "n_scenes": len(cw.scenes),
        "n_firearms": len(cw.firearms),
        "n_firearms_recovered": sum(f["recovered"] for f in cw.firearms),
        "n_exhibits": len(cw.exhibits),
        "ingest": ing.to_dict(),
        "comparisons": pairs,
        "search": {"query": first, "candidates": cands},
        "linkage": {
            "comparisons_recorded": n_linked,
            "groups": groups,
            "linked_scenes": [list(p) for p in linked],
            "linked_scenes_truth": [list(p) for p in sorted(cw.linked_scenes())],
            "leads": leads,
            "indicator_16_4_2": ind["value"],
            "indicator_16_4_2_truth": cw.indicator_16_4_2(),
        },
        "files": {
            "store": str(out / "store"),
            "graph": str(out / "links.graphml"),
            "view": str(out / "links.html"),
            "report": str(report_path),
        },
        "seconds": {k: round(v, 2) for k, v in clock.items()},
    }
    return result


def print_demo(r: dict, *, seed: int) -> None:
    """Tell the story of `run_demo`'s result ``r`` (simulated with ``seed``) in text and tables."""
    print(
        f"simulated casework (seed {seed}): {r['n_scenes']} scenes, {r['n_firearms']} firearms "
        f"({r['n_firearms_recovered']} recovered), "
        f"{r['n_exhibits']} exhibits written as x3p and read back: "
        f"{'identical' if r['identical_after_roundtrip'] else 'DIFFERENT'}, "
        f"checksums {'verified' if r['checksums_verified'] else 'NOT verified'}"
    )
    i = r["ingest"]
    print(
        f"ingested into {r['files']['store']}: {len(i['added'])} added, {len(i['existing'])} already there, "
        f"{len(i['failed'])} failed"
    )
    print(
        "\ncompare (preprocessed breech faces, Congruent Matching Cells; likelihood ratio from the shipped "
        "calibration, identification at LR >= 100):"
    )
    named = ("calibration", "calibration_sha256", "calibration_origin")  # long: said once, below each table
    _table([{k: v for k, v in c.items() if k not in named} for c in r["comparisons"]])
    _calibration_lines(r["comparisons"], "calibration")
    print(f"\nsearch the store for {r['search']['query']} (descriptor shortlist, then CMC re-ranking):")
    _table(
        [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in c.items() if k not in named}
            for c in r["search"]["candidates"]
        ]
    )
    _calibration_lines(r["search"]["candidates"], "calibration_origin")
    L = r["linkage"]
    print(f"\nlink: {L['comparisons_recorded']} shortlisted pairs compared; same-gun groups of 2+ exhibits:")
    _table(L["groups"])
    found, truth = {tuple(p) for p in L["linked_scenes"]}, {tuple(p) for p in L["linked_scenes_truth"]}
    print(
        f"linked scenes: {', '.join('-'.join(p) for p in sorted(found)) or 'none'} "
        f"({len(found & truth)} of {len(truth)} true scene links found, {len(found - truth)} false)"
    )
    print("leads from the test fires of recovered guns:")
    _table(L["leads"])
    v = L["indicator_16_4_2"]
    print(f"indicator 16.4.2: {'-' if v != v else f'{v:.0%}'} of recovered firearms traced")
    print(f"\nwrote {r['files']['report']} (report), {r['files']['view']} (interactive graph), {r['files']['graph']}")
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds"].items()))


def _calibration_lines(rows: list[dict], key: str) -> None:
    """Name each calibration behind a table's likelihood ratios (checksum and origin), once."""
    for origin in sorted({row[key] for row in rows if row.get(key)}):
        print(f"  calibration: {origin}")
