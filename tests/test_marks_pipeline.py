"""The other marks through the whole pipeline (issue 19): preprocess(raw, marks=True) keeps them, a .npz
keeps them, bx.compare compares them near the breech face's pose and fuses them where a marks calibration
applies, and a store, its graph, its report and the review page show them."""

import json
import math
import zipfile

import numpy as np
import pytest

import ballistix as bx
from ballistix import evidence
from ballistix.errors import FileFormatError, ParameterError, ScanFormatError, StoreError
from ballistix.features.marks import MarkResult
from ballistix.fusion import (
    MarksCalibration,
    fit_marks_calibration,
    load_marks_calibration,
    shipped_marks_calibrations,
    weigh_comparison_marks,
)


@pytest.fixture(scope="module")
def scans():
    """Two shots of one gun and one of another: raw scans with a measured crater, processed with marks."""
    raw = bx.datasets.simulate(2, 2, seed=0, crater="realistic", resolution="fast")[:3]
    return raw, [bx.preprocess(s, marks=True) for s in raw]


@pytest.fixture(scope="module")
def compared(scans):
    _, (a, b, c) = scans
    return bx.compare(a, b, marks_calibration=None), bx.compare(a, c, marks_calibration=None)


def test_preprocess_keeps_the_marks_and_processes_the_breech_face_as_without_them(scans):
    raw, procs = scans
    plain = bx.preprocess(raw[0])
    assert plain.marks == {}
    assert set(procs[0].marks) == {"firing_pin", "aperture_shear"}
    assert procs[0].marks["firing_pin"].usable, procs[0].marks["firing_pin"].reason
    np.testing.assert_array_equal(plain.heights, procs[0].heights)
    assert plain.meta["processing"] == procs[0].meta["processing"]


def test_the_firing_pin_is_compared_at_the_breech_faces_pose_and_separates_the_guns(scans, compared):
    raw, _ = scans
    same, other = compared
    truth = (raw[1].meta["truth"]["rotation_deg"] - raw[0].meta["truth"]["rotation_deg"]) % 360
    fp = same.marks["firing_pin"]
    assert fp.used and other.marks["firing_pin"].used
    assert abs((fp.rotation_deg - truth + 180) % 360 - 180) < 3.0  # the known pose
    assert fp.count > other.marks["firing_pin"].count and fp.score > other.marks["firing_pin"].score + 0.2
    # no calibration given: reported, not weighed, and the breech face's LR stays the comparison's
    ev = same.evidence["marks"]
    assert ev["per_mark"]["firing_pin"]["log10_lr"] is None and ev["fused"]["log10_lr"] is None
    assert ev["results"]["firing_pin"]["count"] == fp.count
    assert "lr_basis" not in same.evidence
    assert json.loads(json.dumps(same.to_dict()))["marks"]["firing_pin"]["used"] is True


def test_a_scan_without_firing_pin_data_gives_not_used_never_zero_evidence(scans):
    raw, procs = scans
    flat = bx.preprocess(bx.datasets.simulate(1, 1, seed=3, resolution="fast")[0], marks=True)  # crater not measured
    assert not flat.marks["firing_pin"].usable
    res = bx.compare(procs[0], flat)
    fp = res.marks["firing_pin"]
    assert not fp.used and "scan B" in fp.reason and fp.count == 0 and math.isnan(fp.score)
    entry = res.evidence["marks"]["per_mark"]["firing_pin"]
    assert entry["used"] is False and entry["log10_lr"] is None and entry["reason"]
    # the shipped marks calibration applies (simulated scans), but nothing is left to fuse with the breech face
    assert res.evidence["marks"]["calibration"]["name"].startswith("ballistix marks simulated")
    assert res.evidence["marks"]["fused"]["log10_lr"] is None and "lr_basis" not in res.evidence
    assert res.log10_lr == evidence.weigh(res).log10_lr  # the breech face's own LR stands
    without = bx.compare(procs[0], bx.preprocess(raw[1]))  # one side carries no marks: nothing compared
    assert without.marks == {} and "marks" not in without.evidence


def test_a_npz_keeps_the_marks_and_they_compare_the_same(tmp_path, scans, compared):
    _, (a, b, _) = scans
    path = bx.write_npz(b, tmp_path / "b.npz")
    back = bx.read_scan(path)
    assert set(back.marks) == set(b.marks)
    again = bx.compare(a, back, marks_calibration=None)
    for m in ("firing_pin", "aperture_shear"):
        x, y = compared[0].marks[m], again.marks[m]
        assert (x.used, x.count, x.reason) == (y.used, y.count, y.reason)
        assert x.score == y.score or (math.isnan(x.score) and math.isnan(y.score))
    bx.write_npz(back, tmp_path / "again.npz")  # a record read back is written back as it is
    assert (
        bx.compare(a, bx.read_scan(tmp_path / "again.npz")).marks["firing_pin"].score == again.marks["firing_pin"].score
    )


def _rewrite(path, out, change):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    change(members)
    with zipfile.ZipFile(out, "w") as zf:
        for n, v in members.items():
            zf.writestr(n, v)
    return out


def _npy(arr) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, arr, allow_pickle=False)
    return f.getvalue()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("marks.npy"), "no marks.npy"),
        (lambda m: m.update({"marks.npy": _npy(np.array("[1, 2]"))}), "JSON must be an object"),
        (lambda m: m.update({"marks.npy": _npy(np.array("{not json"))}), "not valid JSON"),
        (lambda m: m.update({"marks.ghost.x.npy": _npy(np.zeros(3))}), "belongs to no mark"),
        (lambda m: m.update({"marks.firing_pin.marks_m.npy": _npy(np.zeros((2, 2), np.int32))}), "must hold floats"),
        (lambda m: m.update({"marks.firing_pin.marks_m.npy": _npy(np.zeros((4100, 4100)))}), "bytes together"),
    ],
)
def test_a_damaged_npz_of_marks_is_refused_naming_the_file(tmp_path, scans, change, message):
    path = bx.write_npz(scans[1][0], tmp_path / "a.npz")
    bad = _rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(ScanFormatError, match=message) as err:
        bx.read_scan(bad)
    assert "bad.npz" in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["fields"].update(secret=1), "unknown fields"),
        (lambda r: r["arrays"].pop("marks_m"), "needs its arrays"),
        (lambda r: r["arrays"].update(marks_m=np.zeros((3, 7), np.float32)), "shapes do not agree"),
        (lambda r: r["fields"].update(usable="yes"), "usable must be true or false"),
        (lambda r: r["fields"].update(centre_m="here"), "centre_m must be two finite numbers"),
        (lambda r: r["fields"].update(n_theta=1.5), "n_theta must be an integer"),
        (lambda r: r["fields"].update(spacing_um=-2.0), "positive spacing_um"),
    ],
)
def test_a_stored_mark_that_does_not_hold_together_is_refused_when_compared(tmp_path, scans, change, message):
    _, (a, b, _) = scans
    back = bx.read_scan(bx.write_npz(b, tmp_path / "b.npz"))
    change(back.marks["firing_pin"])
    with pytest.raises(ParameterError, match=message) as err:
        bx.compare(a, back)
    assert str(err.value).startswith(b.meta["labels"]["exhibit"] + ":")  # the scan, by its label


# ------------------------------------------------------------------------------------------- fusion


def _reference(bf_sha: str, n: int = 240, seed: int = 0):
    """Reference pairs: breech-face LRs and firing-pin results, informative both, a third without a pin."""
    rng = np.random.default_rng(seed)
    same = np.arange(n) % 2 == 0
    bf = np.where(same, rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n))
    marks = []
    for i, s in enumerate(same):
        if i % 3 == 0:
            fp = MarkResult.not_used("firing_pin", "scan A: no crater")
        else:
            fp = MarkResult(
                "firing_pin", True, None, int(rng.poisson(7 if s else 1)), 40, rng.normal(0.4 if s else 0.05, 0.1)
            )
        marks.append({"firing_pin": fp, "aperture_shear": MarkResult.not_used("aperture_shear", "no shear")})
    return fit_marks_calibration(bf, marks, same, breech_face_sha256=bf_sha, name="test marks", min_pairs_per_class=10)


def test_a_fitted_marks_calibration_fuses_and_the_fused_lr_becomes_the_comparisons(compared):
    same, other = compared
    mc = _reference(same.evidence["calibration_sha256"])
    assert mc.trusted and set(mc.models) == {"firing_pin"}
    fused = {}
    for res in (same, other):
        copy = evidence.weigh(res)  # the breech face weighed afresh
        bf = copy.log10_lr
        weigh_comparison_marks(copy, mc)
        ev = copy.evidence
        assert ev["breech_face_log10_lr"] == bf and ev["lr_basis"] == "fused: breech face + firing pin"
        assert ev["marks"]["fused"]["used"] == ["breech_face", "firing_pin"]
        assert ev["marks"]["calibration"]["sha256"] == mc.sha256
        assert copy.log10_lr == ev["marks"]["fused"]["log10_lr"] == ev["conclusion"]["log10_lr"]
        weigh_comparison_marks(copy, mc)  # weighed again: the same, never fused twice
        assert copy.evidence["breech_face_log10_lr"] == bf and copy.log10_lr == ev["marks"]["fused"]["log10_lr"]
        fused[res is same] = copy.log10_lr
    assert fused[True] > fused[False]


def test_a_marks_calibration_refuses_pairs_it_was_not_fitted_for(compared, tmp_path):
    same, _ = compared
    other_bf = _reference("0" * 64)
    copy = evidence.weigh(same)
    weigh_comparison_marks(copy, other_bf)
    assert "lr_basis" not in copy.evidence and copy.log10_lr == same.log10_lr
    assert "fitted on the LRs of breech-face calibration 0000" in copy.evidence["marks"]["fused"]["reason"]
    # a domain the scans are outside of
    mc = _reference(same.evidence["calibration_sha256"])
    mc.domain = {"make_model": ["Glock 17"]}
    weigh_comparison_marks(copy, mc)
    assert "outside the calibration's domain" in copy.evidence["marks"]["fused"]["reason"]
    # a file of unknown origin is not trusted
    loaded = load_marks_calibration(mc.save(tmp_path / "m.json"))
    assert loaded.sha256 == mc.sha256 and not loaded.trusted
    with pytest.raises(ParameterError, match="not trusted"):
        weigh_comparison_marks(evidence.weigh(same), loaded)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda d: d["marks_calibration"].update(version="9"), "checksum mismatch"),
        (lambda d: d.update(marks_calibration=[]), "no 'marks_calibration' object"),
    ],
)
def test_a_damaged_marks_calibration_file_is_refused(compared, tmp_path, tamper, message):
    path = _reference(compared[0].evidence["calibration_sha256"]).save(tmp_path / "m.json")
    doc = json.loads(path.read_text())
    tamper(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(FileFormatError, match=message):
        load_marks_calibration(path)


def test_the_shipped_marks_calibration_rests_on_the_shipped_breech_face_and_simulated_scans_only():
    shipped = shipped_marks_calibrations()
    assert shipped, "ballistix/data/marks_simulated.json is shipped"
    for mc in shipped:
        assert isinstance(mc, MarksCalibration) and mc.trusted and mc.origin["kind"] == "shipped"
        assert mc.breech_face_sha256 == evidence.default_calibration().sha256
        assert mc.domain["instrument"] and all("simulated" in v for v in mc.domain["instrument"])
        assert mc.performance["conclusions"]["identification"]["n_different"] > 0
        assert "firing_pin" in mc.models


def test_fadul_scans_are_outside_the_shipped_marks_calibration(compared):
    same, _ = compared
    real = evidence.weigh(same)
    for side in ("a", "b"):
        real.inputs[side]["population"] = {
            "calibre": "9mm Luger",
            "make_model": "Ruger P95",
            "instrument": "Sensofar S neox",
        }
    weigh_comparison_marks(real)
    assert real.evidence["marks"]["fused"]["log10_lr"] is None
    assert "outside the calibration's domain" in real.evidence["marks"]["fused"]["reason"]


# ------------------------------------------------------------------------------------ store, report, review


def test_a_store_with_marks_records_them_and_its_graph_report_and_review_page_show_them(tmp_path, scans):
    raw, _ = scans
    folder = tmp_path / "store"
    lab = _reference(evidence.default_calibration().sha256)  # a lab's own marks calibration, registered
    lab.reference["name"] = "lab marks"
    with bx.CaseStore(folder, preprocess_params={"marks": True}) as st:
        st.ingest(raw, meta=[{"exhibit_id": f"E{k}"} for k in range(3)], progress=False)
        assert set(st.scan("E0").marks) == {"firing_pin", "aperture_shear"}  # the cached scan keeps them
        rec = st.register_calibration(lab.save(tmp_path / "lab.json"), reason="validated on our reference set")
        assert rec["kind"] == "marks" and rec["breech_face_sha256"] == lab.breech_face_sha256
        assert [c.name for c in st.marks_calibrations()][0] == "lab marks"
        assert "lab marks" not in [c.name for c in st.calibrations()]  # not a breech-face calibration
        st.link_new(progress=False)
        rows = st._db.execute("SELECT a, b, log10_lr, evidence_json FROM comparisons").fetchall()
        assert len(rows) == 3
        for *_, lr, ev in rows:
            marks = json.loads(ev)["marks"]
            assert marks["results"]["firing_pin"]["used"] and set(marks["per_mark"]) >= {"breech_face", "firing_pin"}
            assert (
                marks["calibration"]["name"] == "lab marks"
                and "registered in the store" in marks["calibration"]["origin"]
            )
            assert json.loads(ev)["lr_basis"] == "fused: breech face + firing pin"
            assert lr == marks["fused"]["log10_lr"]
        assert st.check()["ok"]
        g = st.graph()
        fused = [d for *_, d in g.nx.edges(data=True) if d.get("kind") == "match" and d.get("firing_pin_log10_lr")]
        assert fused and all(d["lr_basis"].startswith("fused") and "breech_face_log10_lr" in d for d in fused)
        assert all(d["marks_calibration_origin"].startswith("lab marks") for d in fused)
        report = st.report(tmp_path / "report.html").read_text()
    assert "Other marks: firing pin and aperture shear" in report
    assert "no comparison&#x27;s other marks were weighed" not in report and "fused:" in report
    assert "marks: lab marks" in report  # the calibrations table names the marks calibration too
    from ballistix.serve import create_app

    a, b = sorted(("E0", "E1"))
    page = create_app(folder).test_client().get(f"/compare?a={a}&b={b}").get_data(as_text=True)
    assert 'id="marks"' in page and "firing pin" in page and 'id="fused-lr"' in page
    with pytest.raises(ParameterError, match="preprocess_params"):  # a store's setting, fixed at creation
        bx.CaseStore(folder, preprocess_params={"marks": False, "spacing_um": 3.0})
    kept = folder / rec["file"]  # a registered marks calibration altered afterwards: refused, and check says so
    kept.write_text(kept.read_text().replace("lab marks", "lab marx"))
    with bx.CaseStore(folder) as st:
        assert any(p["check"] == "calibration" for p in st.check()["problems"])
        with pytest.raises(StoreError, match="missing or altered"):
            st.marks_calibrations()
