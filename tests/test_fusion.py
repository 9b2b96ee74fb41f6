"""Fusing the marks' evidence (ballistix/fusion.py): a calibration per mark, logistic fusion per pattern of
marks present, never a product of LRs, and an absent mark never counted as evidence."""

import numpy as np
import pytest

from ballistix.errors import ParameterError
from ballistix.evaluation import cllr
from ballistix.features.marks import MarkResult
from ballistix.fusion import Fusion, fit_fusion, fit_mark


def _pairs(n=600, seed=0, copy=False, shear_share=1.0):
    """Per pair: the breech face's and the firing pin's log10 LRs sharing the impression's quality (a
    faint case is faint everywhere), and the shear's for ``shear_share`` of the pairs. ``copy``: the
    firing pin says exactly what the breech face says (no information of its own)."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    quality = rng.uniform(0.2, 1.0, n)
    sign = np.where(same, 1.0, -1.0)
    bf = sign * 2.0 * quality + rng.normal(0, 0.8, n)
    fp = bf.copy() if copy else sign * 1.5 * quality + 0.6 * (bf - sign * 2.0 * quality) + rng.normal(0, 0.8, n)
    sh = sign * 1.0 + rng.normal(0, 1.0, n)
    rows = [
        {"breech_face": b, "firing_pin": f, "aperture_shear": s if rng.random() < shear_share else None}
        for b, f, s in zip(bf, fp, sh)
    ]
    return rows, same


def test_a_mark_that_repeats_another_adds_nothing_where_a_product_would_double_it():
    rows, same = _pairs(copy=True, shear_share=0.0)
    fusion = fit_fusion(rows, same, marks=["breech_face", "firing_pin"])
    w = fusion.patterns["breech_face+firing_pin"]["weights"]
    assert sum(w.values()) == pytest.approx(1.0, abs=0.25)  # one mark's worth, shared; a product counts 2
    fused = np.array([fusion.fuse(r)["log10_lr"] for r in rows])
    product = np.array([r["breech_face"] + r["firing_pin"] for r in rows])
    assert cllr(fused, same) < cllr(product, same)  # the product overstates: worse calibrated


def test_fusing_marks_with_information_of_their_own_beats_the_best_single_mark():
    rows, same = _pairs(seed=1)
    fusion = fit_fusion(rows, same)
    test_rows, test_same = _pairs(seed=2)
    fused = np.array([fusion.fuse(r)["log10_lr"] for r in test_rows])
    singles = [cllr(np.array([r[m] for r in test_rows]), test_same) for m in ("breech_face", "firing_pin")]
    assert cllr(fused, test_same) < min(singles)
    assert all(v >= 0 for v in fusion.patterns["breech_face+firing_pin+aperture_shear"]["weights"].values())


def test_an_absent_mark_is_not_used_and_never_counts_as_evidence():
    rows, same = _pairs(seed=3, shear_share=0.5)
    fusion = fit_fusion(rows, same)
    assert set(fusion.patterns) == {"breech_face+firing_pin", "breech_face+firing_pin+aperture_shear"}
    out = fusion.fuse({"breech_face": 1.0, "firing_pin": 0.5, "aperture_shear": None})
    assert out["pattern"] == "breech_face+firing_pin" and out["absent"] == ["aperture_shear"]
    assert out["used"] == ["breech_face", "firing_pin"] and not out["present_not_fused"]
    # the same pair with a shear that is uninformative (log10 LR 0) is weighed by the other pattern:
    # absence is not a log10 LR of 0 fed to the three-mark fusion
    with_zero = fusion.fuse({"breech_face": 1.0, "firing_pin": 0.5, "aperture_shear": 0.0})
    assert with_zero["pattern"] == "breech_face+firing_pin+aperture_shear"


def test_a_pattern_without_enough_reference_pairs_falls_back_and_says_so():
    rows, same = _pairs(seed=4, shear_share=0.03)  # about 9 pairs of each class with a shear: too few
    fusion = fit_fusion(rows, same)
    assert list(fusion.patterns) == ["breech_face+firing_pin"]
    out = fusion.fuse({"breech_face": 2.0, "firing_pin": 1.0, "aperture_shear": 1.5})
    assert out["used"] == ["breech_face", "firing_pin"] and out["present_not_fused"] == ["aperture_shear"]
    nothing = fusion.fuse({"aperture_shear": 1.5})
    assert nothing["log10_lr"] is None and nothing["present_not_fused"] == ["aperture_shear"]
    assert Fusion.from_json(fusion.to_json()).fuse({"breech_face": 2.0, "firing_pin": 1.0}) == fusion.fuse(
        {"breech_face": 2.0, "firing_pin": 1.0}
    )


def test_fused_lrs_stay_within_their_reference_pairs_bounds():
    rows, same = _pairs(seed=5)
    fusion = fit_fusion(rows, same)
    p = fusion.patterns["breech_face+firing_pin+aperture_shear"]
    huge = fusion.fuse({"breech_face": 40.0, "firing_pin": 40.0, "aperture_shear": 40.0})["log10_lr"]
    assert huge == pytest.approx(p["bounds_log10"][1]) and huge < 6


def test_a_marks_calibration_reads_its_count_and_score_and_leaves_absent_marks_out():
    rng = np.random.default_rng(6)
    results, same = [], []
    for i in range(200):
        s = i % 2 == 0
        if i % 7 == 0:
            results.append(MarkResult.not_used("aperture_shear", "no shear on one of the cases"))
        else:
            count = int(rng.poisson(6 if s else 1))
            results.append(MarkResult("aperture_shear", True, None, count, 12, rng.normal(0.5 if s else 0.1, 0.1)))
        same.append(s)
    model = fit_mark("aperture_shear", results, same)
    assert model.n_same + model.n_different == sum(r.used for r in results)
    assert model.log10_lr(MarkResult.not_used("aperture_shear", "gone")) is None
    low = model.log10_lr(MarkResult("aperture_shear", True, None, 0, 12, 0.1))
    high = model.log10_lr(MarkResult("aperture_shear", True, None, 9, 12, 0.6))
    assert low < 0 < high


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fit_fusion([{"breech_face": 1.0}], [True, False]), "one flag per pair"),
        (lambda: fit_fusion([{"breech_face": 1.0}] * 4, [True, False] * 2), "no pattern of marks"),
        (lambda: fit_fusion([{"ejector": 1.0}], [True], marks=["ejector"]), "mark must be one of"),
        (lambda: fit_mark("firing_pin", [MarkResult.not_used("firing_pin", "x")] * 4, [True, False] * 2), "at least 2"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(ParameterError, match=message):
        call()
