"""Every mark of two scans at once (ballistix.features.marks.compare) and their evidence weighed together
(ballistix.fusion.weigh_marks): a mark a scan lacks is "not used" with its reason, never zero evidence."""

import numpy as np
import pytest

import ballistix as bx
from ballistix.errors import ParameterError
from ballistix.features.marks import MARKS, MarkResult, compare_marks, extract_marks
from ballistix.fusion import fit_fusion, fit_mark, weigh_marks


@pytest.fixture(scope="module")
def raw_pair():
    gun = bx.datasets.make_firearm("F1", "Ruger P95", seed=1, resolution="fast")
    return [bx.datasets.fire(gun, k, resolution="fast", difficulty="easy") for k in (0, 1)]


def test_a_processed_scan_holds_no_marks_to_compare_and_says_why(raw_pair):
    raw = extract_marks(raw_pair[0])
    processed = extract_marks(bx.preprocess(raw_pair[1]))
    assert set(raw) == set(MARKS)
    assert not processed["firing_pin"].usable and processed["firing_pin"].reason
    out = compare_marks(raw, processed)
    assert list(out) == list(MARKS)
    for r in out.values():  # not used, with the reason; never a score of zero
        assert isinstance(r, MarkResult) and not r.used and r.reason and r.count == 0 and np.isnan(r.score)
    assert "processed" in processed["firing_pin"].reason or "mask" in processed["firing_pin"].reason
    missing = compare_marks(raw, {"firing_pin": raw["firing_pin"]})
    assert missing["aperture_shear"].reason == "scan B: not extracted"


@pytest.mark.parametrize("bad", [None, np.zeros((4, 4)), "scan.x3p"])
def test_extract_marks_wants_a_scan(bad):
    with pytest.raises(ParameterError, match="raw Scan"):
        extract_marks(bad)


def test_raw_fadul_same_gun_marks_score_above_different_guns(shared_data):
    raw = {n: bx.read_x3p(shared_data / "fadul-raw" / f"fadul-{n}-raw.x3p") for n in ("1-1", "1-2", "2-1")}
    marks = {n: extract_marks(s) for n, s in raw.items()}
    same = compare_marks(marks["1-1"], marks["1-2"], rotation_deg=24.0)["firing_pin"]
    other = compare_marks(marks["1-1"], marks["2-1"], rotation_deg=45.0)["firing_pin"]
    assert same.used and other.used and same.score > other.score and same.count >= other.count


def _trained():
    rng = np.random.default_rng(0)
    results, same, rows = [], [], []
    for i in range(300):
        s = i % 2 == 0
        fp = MarkResult(
            "firing_pin", True, None, int(rng.poisson(8 if s else 1)), 60, rng.normal(0.3 if s else 0.02, 0.08)
        )
        results.append(fp)
        same.append(s)
    model = fit_mark("firing_pin", results, same)
    for r, s in zip(results, same):
        rows.append({"breech_face": rng.normal(1.5 if s else -1.5, 1.0), "firing_pin": model.log10_lr(r)})
    return model, fit_fusion(rows, same, marks=["breech_face", "firing_pin"])


def test_the_evidence_of_each_mark_and_the_fused_lr_say_what_was_used():
    model, fusion = _trained()
    strong = MarkResult("firing_pin", True, None, 9, 60, 0.35)
    shear_absent = MarkResult.not_used("aperture_shear", "scan B: no aperture shear")
    out = weigh_marks(1.2, {"firing_pin": strong, "aperture_shear": shear_absent}, {"firing_pin": model}, fusion)
    per, fused = out["per_mark"], out["fused"]
    assert per["firing_pin"]["used"] and per["firing_pin"]["log10_lr"] > 0
    assert not per["aperture_shear"]["used"] and per["aperture_shear"]["reason"] == "scan B: no aperture shear"
    assert fused["used"] == ["breech_face", "firing_pin"] and not fused["present_not_fused"]
    assert fused["log10_lr"] > 1.2  # a firing pin that agrees adds to the breech face
    weak = weigh_marks(
        1.2, {"firing_pin": MarkResult("firing_pin", True, None, 0, 60, 0.0)}, {"firing_pin": model}, fusion
    )
    assert weak["fused"]["log10_lr"] < 1.2
    # a compared mark without a calibration is not weighed (and says so); no fusion: no fused LR
    bare = weigh_marks(1.2, {"firing_pin": strong})
    assert not bare["per_mark"]["firing_pin"]["used"] and "no calibration" in bare["per_mark"]["firing_pin"]["reason"]
    assert bare["fused"]["log10_lr"] is None and "never multiplied" in bare["fused"]["reason"]
    alone = weigh_marks(
        1.2, {"firing_pin": MarkResult.not_used("firing_pin", "no crater")}, {"firing_pin": model}, fusion
    )
    assert alone["fused"]["used"] == ["breech_face"] or alone["fused"]["log10_lr"] is None
