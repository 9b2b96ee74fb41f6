"""benchmarks/marks.py (issue 19): held-out performance figures, gun-disjoint fusion on pair records, quick run."""

import itertools
import json

import numpy as np
import pytest

from benchmarks import marks as mb  # noqa: E402  (the tests run from a checkout: pyproject pythonpath)


def test_performance_counts_same_gun_pairs_above_every_different_gun_pair():
    llr = np.array([3.0, 2.5, 0.5, -1.0, 1.0, 0.0, -2.0, np.nan])
    same = np.array([True, True, True, True, False, False, False, True])
    r = mb.performance(llr, same)
    assert r["n_same"] == 4 and r["n_different"] == 3  # the pair without an LR is left out
    assert r["found_at_zero_fp"] == 0.5  # 3.0 and 2.5 exceed the best different-gun pair's 1.0
    assert r["same_lr_ge_100"] == 0.5 and r["different_lr_ge_100"] == 0
    assert 0 < r["cllr_min"] <= r["cllr"]


def _mark(used, count=0, score=None):
    return {"used": used, "reason": None if used else "absent", "count": count, "n_elements": 20, "score": score}


def _pairs(seed=0, guns=12, shots=3, fp_everywhere=False):
    """Pair records shaped like the cache's: a faint breech face (CMC 0-3 for both classes), a firing pin
    whose count separates the classes, used on half the guns' pairs (or all), and no shear anywhere."""
    rng = np.random.default_rng(seed)
    scans = [(f"G{g:02d}", k) for g in range(guns) for k in range(shots)]
    pairs = []
    for i, j in itertools.combinations(range(len(scans)), 2):
        ga, gb = scans[i][0], scans[j][0]
        same = ga == gb
        cmc = int(rng.integers(0, 4))
        has_fp = fp_everywhere or (int(ga[1:]) % 2 == 0 and int(gb[1:]) % 2 == 0)
        count = int(rng.integers(8, 15)) if same else int(rng.integers(0, 4))
        fp = _mark(True, count, 0.5 if same else 0.05) if has_fp else _mark(False)
        pairs.append(
            {
                "a": i,
                "b": j,
                "gun_a": ga,
                "gun_b": gb,
                "same": same,
                "bf": [float(cmc), 0.3 * cmc, float(rng.uniform(0.1, 0.3))],
                "cmc": cmc,
                "views": {"primer": {"firing_pin": fp, "aperture_shear": _mark(False)}},
            }
        )
    return pairs


def test_fusion_finds_same_gun_pairs_the_faint_breech_face_misses():
    pairs = _pairs()
    same = np.array([p["same"] for p in pairs])
    cv = mb.cross_validated(pairs, "primer", folds=4, seed=0, min_pairs=5)
    L = cv["llr"]
    assert np.isfinite(L["breech_face"]).all() and np.isfinite(L["fused"]).all()  # every pair held out once
    bf, fused = mb.performance(L["breech_face"], same), mb.performance(L["fused"], same)
    assert fused["cllr"] < bf["cllr"] and fused["found_at_zero_fp"] > bf["found_at_zero_fp"]
    # the firing pin is weighed only where both scans had one: absent is no evidence, never a log-LR
    fp_used = np.array([p["views"]["primer"]["firing_pin"]["used"] for p in pairs])
    assert np.isnan(L["firing_pin"][~fp_used]).all() and np.isfinite(L["firing_pin"][fp_used]).all()
    assert {mb.pattern_of(p, "primer") for p in pairs} == {"breech_face", "breech_face+firing_pin"}
    assert all(f.get("not_fitted", {}).get("aperture_shear") for f in cv["folds"])  # no shear: no model


def test_pattern_without_training_pairs_falls_back_to_the_breech_face():
    # every training pair has a firing pin, so no fold fits the breech face alone; a held-out pair
    # without one then gets its breech face's LR, said to be a fallback
    pairs = _pairs(fp_everywhere=True)
    pairs[0]["views"]["primer"]["firing_pin"] = _mark(False)
    cv = mb.cross_validated(pairs, "primer", folds=4, seed=0, min_pairs=5)
    assert cv["fused_pattern"][0] == "breech_face (fallback)"
    assert cv["llr"]["fused"][0] == cv["llr"]["breech_face"][0]


def test_pose_check_measures_rotation_errors_across_zero():
    p = {"same": True, "bf_rotation_deg": 359.0, "truth_rotation_deg": 1.0}
    p["views"] = {"primer": {"firing_pin": {"used": True, "rotation_deg": 3.0}}}
    r = mb.pose_check([p], "primer")
    assert r["bf_vs_truth"]["median_deg"] == pytest.approx(2.0)
    assert r["fp_vs_truth"]["median_deg"] == pytest.approx(2.0)
    assert r["fp_vs_bf"]["median_deg"] == pytest.approx(4.0)


@pytest.mark.slow
def test_quick_run_writes_results(tmp_path, monkeypatch):
    from benchmarks import _common

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(mb, "RESULTS", tmp_path)
    monkeypatch.setattr(mb, "CACHE", tmp_path / "marks_pairs.json")
    assert mb.main(["--quick", "--skip-real", "--jobs", "1"]) == 0
    out = json.loads((tmp_path / "marks.json").read_text())
    v = out["views"]["primer"]
    assert v["n_same"] == out["composition"]["n_same"] > 0
    assert v["breech_face"]["n_same"] == v["n_same"]  # every pair held out once
    assert out["speed"]["pair_from_raw_all_marks"] >= out["speed"]["pair_from_raw_bf_alone"] > 0
    assert (tmp_path / "marks.png").is_file() and (tmp_path / "marks_pairs.json").is_file()
