"""Issue 15, case 1: calibrations are trusted only by origin (shipped and pinned in the code,
registered in a store, or fitted in this session), their LR bounds follow from their reference
counts, every output names the calibration's checksum and origin, and no identification rests on
a pair with no congruent cells."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

import ballistix as bx
from ballistix import evidence as ev
from ballistix.errors import FileFormatError


def _tamper(tmp_path, filename="tampered.json", **changes):
    """The shipped default calibration, edited and re-checksummed as an attacker would."""
    src = ev.default_calibration().origin
    path = next(
        p
        for p in __import__("importlib").resources.files("ballistix").joinpath("data").iterdir()
        if p.name == src["file"]
    )
    doc = json.loads(path.read_text())
    cal = doc["calibration"]
    for k, v in changes.items():
        if k == "name":
            cal["reference"]["name"] = v
        elif k == "intercept":
            cal["coef"][0] = v
        else:
            cal[k] = v
    body = json.dumps(cal, sort_keys=True)  # the checksum covers the calibration as canonical JSON
    doc["sha256"] = hashlib.sha256(body.encode()).hexdigest()
    out = tmp_path / filename
    out.write_text(json.dumps(doc))
    return out


def _unrelated_pair():
    import cv2

    rng = np.random.default_rng(7)
    za, zb = (cv2.GaussianBlur(rng.standard_normal((96, 96)), (0, 0), 0.7) * 1e-6 for _ in range(2))
    return bx.Scan(za, 6.25e-6, 6.25e-6, {}), bx.Scan(zb, 6.25e-6, 6.25e-6, {})


def _fitted():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(40, bool), np.zeros(200, bool)]
    cmc = np.r_[rng.poisson(12, 40), rng.poisson(1, 200)].astype(float)
    X = np.c_[cmc, np.where(cmc > 0, 0.6, 0.0), rng.normal(0.3, 0.05, 240)]
    return ev.fit(X, same, name="session fit")


def test_the_reported_attack_is_refused_before_any_conclusion(tmp_path):
    # the file: intercept 60, bounds [0, 30], an official-sounding name, checksum recomputed
    path = _tamper(tmp_path, intercept=60.0, bounds_log10=[0.0, 30.0], name="NIST-validated (official)")
    with pytest.raises(FileFormatError, match="claim more than 1207 same-gun and 9937 different-gun"):
        ev.load_calibration(path)
    # the same with believable bounds: read, but not trusted
    plausible = _tamper(tmp_path, "plausible.json", intercept=60.0, name="NIST-validated (official)")
    cal = ev.load_calibration(plausible)
    assert not cal.trusted and cal.origin["kind"] == "file"
    a, b = _unrelated_pair()
    with pytest.raises(ev.UntrustedCalibrationError, match="neither shipped with ballistix nor registered"):
        bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=plausible)
    with pytest.raises(ev.UntrustedCalibrationError):
        bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=cal)
    with pytest.raises(ev.UntrustedCalibrationError):  # nor slipped in among trusted ones
        bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=[cal, *ev.shipped_calibrations()])


def test_cli_compare_refuses_a_tampered_calibration_file(tmp_path):
    scans = bx.datasets.simulate(n_firearms=2, shots=1, seed=3, resolution="fast")
    files = [str(bx.write_x3p(s, tmp_path / f"c{k}.x3p")) for k, s in enumerate(scans)]
    path = _tamper(tmp_path, intercept=60.0, name="NIST-validated (official)")
    r = subprocess.run(
        [sys.executable, "-m", "ballistix.cli", "compare", *files, "--calibration", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "neither shipped with ballistix nor registered" in r.stderr and "IDENTIFICATION" not in r.stdout


def test_bounds_and_error_counts_must_follow_from_the_reference_set(tmp_path):
    n_diff = ev.default_calibration().reference["n_different"]
    ok_hi = float(np.floor(100 * np.log10(n_diff + 1)) / 100)
    ev.load_calibration(_tamper(tmp_path, "edge.json", bounds_log10=[-0.42, ok_hi]))  # at the limit: fine
    with pytest.raises(FileFormatError, match="claim more"):
        ev.load_calibration(_tamper(tmp_path, "hi.json", bounds_log10=[-0.42, ok_hi + 0.05]))
    with pytest.raises(FileFormatError, match="claim more"):
        ev.load_calibration(_tamper(tmp_path, "lo.json", bounds_log10=[-4.0, 3.0]))
    perf = json.loads(json.dumps(ev.default_calibration().performance))
    perf["conclusions"]["identification"]["different"] = perf["conclusions"]["identification"]["n_different"] + 1
    with pytest.raises(FileFormatError, match="not a count within its total"):
        ev.load_calibration(_tamper(tmp_path, "rates.json", performance=perf))
    ref = dict(ev.default_calibration().reference, n_different=None)
    with pytest.raises(FileFormatError, match="must state its counts"):
        ev.load_calibration(_tamper(tmp_path, "counts.json", reference=ref))


def test_shipped_calibrations_are_pinned_in_the_code(monkeypatch):
    for cal in ev.shipped_calibrations():
        assert cal.trusted and cal.origin["kind"] == "shipped"
        assert ev.SHIPPED_SHA256[cal.origin["file"]] == cal.sha256
    # a shipped file that is not the pinned one is refused
    monkeypatch.setattr(ev, "_SHIPPED", None)
    monkeypatch.setitem(ev.SHIPPED_SHA256, "calibration_default.json", "0" * 64)
    with pytest.raises(FileFormatError, match="pinned"):
        ev.shipped_calibrations()


def test_a_copy_of_a_shipped_or_registered_file_stands_for_it(tmp_path):
    shipped = ev.default_calibration()
    copy = tmp_path / "copy.json"
    shipped.save(copy)
    assert ev.trusted_calibration(copy) is shipped
    fitted = _fitted()
    assert fitted.trusted and fitted.origin["kind"] == "fitted"
    fitted.save(tmp_path / "lab.json")
    with pytest.raises(ev.UntrustedCalibrationError):
        ev.trusted_calibration(tmp_path / "lab.json")
    with bx.CaseStore(tmp_path / "store") as st:
        rec = st.register_calibration(tmp_path / "lab.json", reason="lab validation 2026-11")
        assert rec["reference"]["n_same"] == 40 and rec["reference"]["n_different"] == 200
        assert rec["content_sha256"] == fitted.sha256 and rec["registered_by"]
        reg = ev.trusted_calibration(tmp_path / "lab.json", st.calibrations())
    assert reg.origin["kind"] == "registered" and reg.origin["reason"] == "lab validation 2026-11"
    assert "registered in the store" in reg.describe_origin() and reg.sha256[:16] in reg.describe_origin()


def test_every_result_names_the_calibrations_checksum_and_origin():
    a, b = _unrelated_pair()
    cal = _fitted()
    r = bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=cal)
    assert r.evidence["calibration_sha256"] == cal.sha256
    assert r.evidence["calibration_origin"]["kind"] == "fitted"
    assert cal.sha256[:16] in r.evidence["calibration_origin"]["text"]
    from ballistix.cli import evidence_lines

    assert any(cal.sha256[:16] in line and "fitted in this session" in line for line in evidence_lines(r))
    g = bx.LinkageGraph.from_comparisons([("A", "B", r)])
    edge = g.nx.edges["exhibit:A", "exhibit:B"]
    assert edge["calibration_sha256"] == cal.sha256


def test_no_identification_without_congruent_cells():
    a, b = _unrelated_pair()
    cal = _fitted()
    cal.coef = [60.0, *cal.coef[1:]]  # whatever the calibration says ...
    r = bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=cal)
    assert r.cmc_count == 0
    assert r.log10_lr == 0.0 and r.evidence["conclusion"]["conclusion"] == "inconclusive"  # ... no support
    assert "no congruent cells" in r.evidence["capped"]
    assert ev.cap_without_cells(2.5, 0) == 0.0 and ev.cap_without_cells(2.5, 1) == 2.5
    assert ev.cap_without_cells(-1.0, 0) == -1.0
    g = bx.LinkageGraph.from_comparisons([("A", "B", {"cmc_count": 0, "log10_lr": 5.0})])
    assert g.groups() != [{"A", "B"}]


def test_store_search_graph_report_and_cli_name_the_calibration(tmp_path, capsys):
    scans = bx.datasets.simulate(n_firearms=2, shots=2, seed=3, resolution="fast")
    files = [bx.write_x3p(s, tmp_path / f"e{k}.x3p") for k, s in enumerate(scans)]
    shipped = ev.default_calibration()
    with bx.CaseStore(tmp_path / "store") as st:
        st.ingest(files, meta={"calibre": "9mm Luger"}, progress=False)
        cands = st.search("e0", k=3)
        assert cands and all(c["log10_lr"] is not None for c in cands)
        assert {c["calibration_sha256"] for c in cands} == {shipped.sha256}
        assert all("shipped with ballistix" in c["calibration_origin"] for c in cands)
        st.link_new(progress=False)
        g = st.graph()
        edges = [d for *_, d in g.nx.edges(data=True) if d.get("kind") == "match" and d.get("log10_lr") is not None]
        assert edges and all(d["calibration_sha256"] == shipped.sha256 for d in edges)
        html = st.report(tmp_path / "report.html").read_text()
    assert "Calibrations behind the likelihood ratios" in html and shipped.sha256 in html
    from ballistix.cli import main

    capsys.readouterr()
    assert main(["compare", str(files[0]), str(files[2]), "--calibre", "9mm Luger"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {shipped.sha256[:16]}; shipped with ballistix" in out
