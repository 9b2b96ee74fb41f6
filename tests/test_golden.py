"""Golden results: the numbers the product gives today, pinned before the architecture refactor
(issue 16) so that moving code cannot change a result unnoticed.

Pinned: simulated scans (primer, case head, casework, a batch population), preprocessing and
descriptors of simulated and real scans, CMC comparisons with their likelihood ratios, an index
search, a case store's exhibits and comparisons, and a cross-validated calibration. Arrays are
pinned by the SHA-256 of their bytes (heights rounded to 1e-13 m, descriptors as float32), numbers
by value. A change that is meant (a new simulator data version, a deliberate fix) rewrites the
file on purpose::

    BALLISTIX_WRITE_GOLDEN=1 python -m pytest tests/test_golden.py

and the commit says why.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import ballistix as bx
from ballistix import evidence as ev

GOLDEN = Path(__file__).parent / "golden.json"
FADUL = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _sha(a, decimals: int | None = None) -> str:
    a = np.asarray(a)
    if decimals is not None:
        a = np.round(a.astype(np.float64), decimals)
    return hashlib.sha256(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()[:24]


def _scan(s) -> dict:
    return {"shape": list(s.shape), "dx": s.dx, "heights": _sha(s.heights, 13)}


def _steps(s) -> list:
    return json.loads(
        json.dumps([[st.get("step"), st.get("params", {})] for st in s.meta.get("processing", [])], default=str)
    )


def _processed(s) -> dict:
    p = bx.preprocess(s)
    return {**_scan(p), "steps": _steps(p), "descriptor": _sha(bx.describe(p).astype(np.float32))}, p


def _comparison(r) -> dict:
    return {
        "cmc": int(r.cmc_count),
        "score": round(float(r.score), 9),
        "rotation": round(float(r.rotation_deg), 6),
        "log10_lr": None if r.log10_lr is None else round(float(r.log10_lr), 9),
        "calibration": r.evidence.get("calibration_sha256"),
    }


def _simulated() -> dict:
    out = {}
    scans = bx.datasets.simulate(n_firearms=2, shots=2, seed=11, resolution="fast")
    out["simulate_fast"] = [_scan(s) for s in scans]
    out["simulate_standard"] = [
        _scan(s) for s in bx.datasets.simulate(n_firearms=1, shots=1, seed=2, resolution="standard")
    ]
    head = bx.datasets.simulate(n_firearms=1, shots=1, seed=4, resolution="fast", view="case_head")
    out["simulate_case_head"] = [_scan(s) for s in head]
    cw = bx.datasets.simulate_casework(n_firearms=3, n_scenes=3, seed=6)
    out["casework"] = {
        "exhibits": hashlib.sha256(json.dumps(cw.exhibits, sort_keys=True, default=str).encode()).hexdigest()[:24],
        "scans": [_scan(s) for s in cw.scans],
    }
    pop = bx.datasets.simulate_population("batch", n_firearms=2, shots=2, seed=8, resolution="fast")
    out["population_batch"] = [_scan(s) for s in pop]
    procs = []
    out["processed_fast"] = []
    for s in scans + head:
        rec, p = _processed(s)
        out["processed_fast"].append(rec)
        procs.append(p)
    out["compare_fast"] = [
        _comparison(bx.compare(procs[0], procs[1])),  # same gun
        _comparison(bx.compare(procs[0], procs[2])),
    ]  # different guns
    index = bx.ScanIndex(bx.describe(procs[0]).size)
    index.add(np.arange(len(procs)), np.stack([bx.describe(p) for p in procs]))
    scores, ids = index.search(bx.describe(procs[0])[None], 3)
    out["index_search"] = {"ids": ids[0].tolist(), "scores": [round(float(v), 6) for v in scores[0]]}
    return out


def _store(tmp: Path) -> dict:
    scans = bx.datasets.simulate(n_firearms=2, shots=2, seed=11, resolution="fast")
    with bx.CaseStore(tmp / "store") as st:
        st.ingest(
            scans, meta=[{"exhibit_id": f"e{k}", "calibre": "9mm Luger"} for k in range(len(scans))], progress=False
        )
        st.link_new(progress=False)
        exhibits = [
            [e["exhibit_id"], e["source_sha256"][:24], _sha(st.scan(e["exhibit_id"]).heights, 13)]
            for e in st.exhibits()
        ]
        g = st.graph()
    comps = sorted(
        [
            sorted([u, v]),
            d["cmc_count"],
            round(d["score"], 9),
            round(d["rotation_deg"], 6),
            None if d.get("log10_lr") is None else round(d["log10_lr"], 9),
        ]
        for u, v, d in g.nx.edges(data=True)
        if d.get("kind") == "match"
    )
    return {"exhibits": exhibits, "comparisons": comps, "groups": sorted(sorted(x) for x in g.groups())}


def _calibration() -> dict:
    rng = np.random.default_rng(3)
    same = np.r_[np.ones(60, bool), np.zeros(300, bool)]
    cmc = np.r_[rng.poisson(12, 60), rng.poisson(1.2, 300)].astype(float)
    X = np.c_[cmc, np.where(cmc > 0, 0.55 + 0.1 * rng.random(360), 0.0), rng.normal(0.3, 0.05, 360)]
    guns = np.r_[np.repeat(np.arange(10), 6), rng.integers(0, 10, 300)].astype(str)
    other = np.r_[np.repeat(np.arange(10), 6), (rng.integers(1, 10, 300) + guns[60:].astype(int)) % 10].astype(str)
    llr = ev.cross_validate(X, same, guns, other)
    cal = ev.fit(X, same, name="golden")
    return {
        "cv_llr": _sha(llr, 9),
        "coef": [round(v, 9) for v in cal.coef],
        "bounds": [round(v, 9) for v in cal.bounds_log10],
        "cllr": round(ev.cllr(llr, same), 9),
    }


def _fadul() -> dict:
    if not (FADUL / "fadul").is_dir():
        return {}
    out = {}
    a, b, c = (bx.read_scan(FADUL / "fadul" / f) for f in ("fadul-1-1.x3p", "fadul-1-2.x3p", "fadul-2-1.x3p"))
    raw = bx.read_scan(FADUL / "fadul-raw" / "fadul-1-1-raw.x3p")
    recs = [_processed(s) for s in (a, b, c, raw)]
    out["processed"] = [r for r, _ in recs]
    pa, pb, pc = (p for _, p in recs[:3])
    out["compare_1-1_1-2"] = _comparison(bx.compare(pa, pb))
    out["compare_1-1_2-1"] = _comparison(bx.compare(pa, pc))
    return out


def _compute(tmp: Path) -> dict:
    return {"simulated": _simulated(), "store": _store(tmp), "calibration": _calibration(), "fadul": _fadul()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return json.loads(json.dumps(_compute(tmp_path_factory.mktemp("golden")), default=str))


@pytest.fixture(scope="module")
def golden(results):
    if os.environ.get("BALLISTIX_WRITE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("part", ["simulated", "store", "calibration"])
def test_results_are_the_golden_ones(results, golden, part):
    for key in golden[part]:
        assert results[part][key] == golden[part][key], f"{part}/{key} changed"


def test_real_scans_give_the_golden_results(results, golden):
    if not results["fadul"]:
        pytest.skip(f"real scans not available at {FADUL}")
    for key in golden["fadul"]:
        assert results["fadul"][key] == golden["fadul"][key], f"fadul/{key} changed"
