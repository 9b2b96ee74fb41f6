"""The validation kit: a lab's own scans of known truth -> error rates with CIs, a recommended rule,
a calibration file, a JSON record and an offline HTML report (checked in headless Chromium)."""

import csv
import hashlib
import json
import math

import numpy as np
import pytest

import ballistix as bx
from ballistix import evidence as ev
from ballistix import validation as V
from ballistix.cli import main
from ballistix.errors import ParameterError, ScanFormatError
from ballistix.evaluation import cllr, cllr_min

FAST = {"spacing_um": 12.5}  # the simulator's "fast" scans, kept at their own spacing
ODD = "solo <b>&amp; 'x'</b>"  # a firearm id that must come out escaped in the report


def _write_labels(path, rows, header=("file", "firearm", "calibre", "make", "model")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A small lab population: 4 guns x 2 shots, one more gun with a single shot, a junk file."""
    d = tmp_path_factory.mktemp("lab")
    (d / "scans").mkdir()
    scans = bx.datasets.simulate(4, 2, seed=0, resolution="fast") + bx.datasets.simulate(
        1, 1, seed=7, resolution="fast"
    )
    rows, files = [], []
    for k, s in enumerate(scans):
        f = bx.write_x3p(s, d / "scans" / f"case{k}.x3p")
        lab = s.meta["labels"]
        gun = ODD if k == len(scans) - 1 else lab["firearm"]
        rows.append([f"scans/{f.name}", gun, "9x19", lab["make"], lab["model"]])  # 9x19: read as 9mm Luger
        files.append(f)
    junk = d / "scans" / "junk.x3p"
    junk.write_bytes(b"not a zip")
    rows.append(["scans/junk.x3p", "F0001", "9x19", "Ruger", "P95"])
    labels = _write_labels(d / "labels.csv", rows)
    guns = [r[1] for r in rows[:-1]]
    return {"dir": d, "files": files, "junk": junk, "labels": labels, "guns": guns, "scans": scans}


@pytest.fixture(scope="module")
def validated(lab):
    res = V.validate(labels=lab["labels"], out=lab["dir"] / "out", preprocess_params=FAST, skip_unreadable=True)
    return res


# ------------------------------------------------------------------------------------------- numbers
def test_counts_and_rates_are_consistent(lab, validated):
    r = validated
    n = len(lab["files"])
    assert r.n_scans == n and r.n_firearms == 5
    assert r.n_pairs == n * (n - 1) // 2 == len(r.records) == len(r.log10_lr_cv)
    assert r.n_same == 4 and r.n_different == r.n_pairs - 4
    assert [x["name"] for x in r.excluded] == ["junk.x3p"] and "junk.x3p" in r.excluded[0]["reason"]
    same = np.array([p["same_gun"] for p in r.records])
    assert same.sum() == r.n_same and all(p["same_gun"] == (p["gun_a"] == p["gun_b"]) for p in r.records)
    llr = np.array([p["log10_lr_cv"] for p in r.records])
    assert np.array_equal(llr, r.log10_lr_cv)
    cmc = np.array([p["features"]["cmc"] for p in r.records])
    for row in r.lr_rules + r.cmc_rules:
        t = row["threshold"]
        if row["rule"].startswith("LR >="):
            called = llr >= math.log10(t) - 1e-12
        elif row["rule"].startswith("LR <="):
            called = llr <= math.log10(t) + 1e-12
        else:
            called = cmc >= t
        assert row["same_called"] == called[same].sum() and row["different_called"] == called[~same].sum()
        assert row["n_same"] == r.n_same and row["n_different"] == r.n_different
        assert row["rate_same"] == row["same_called"] / row["n_same"]
        assert row["rate_different"] == row["different_called"] / row["n_different"]
        for side in ("same", "different"):
            lo, hi = row[f"ci95_{side}"]
            assert 0 <= lo <= row[f"rate_{side}"] <= hi <= 1
            assert row[f"upper95_{side}"] <= hi + 1e-12  # the one-sided bound is the tighter one
    assert [x["rule"] for x in r.lr_rules] == ["LR >= 10", "LR >= 100", "LR >= 1000", "LR >= 10000", "LR <= 0.01"]
    assert [x["threshold"] for x in r.cmc_rules] == list(range(4, 13))
    assert r.cllr == pytest.approx(cllr(llr, same)) and r.cllr_min == pytest.approx(cllr_min(llr, same))
    assert r.auc_cmc > 0.95  # simulated same-gun pairs have many congruent cells
    # 28 different-gun pairs cannot bound a false-identification rate below 1%: said plainly
    rec = r.recommendation
    assert rec["identification"] is None and "too few" in rec["text"] and str(r.n_different) in rec["text"]
    assert rec["different_pairs_needed"] == 299


def test_calibration_file_loads_with_its_domain_and_weighs_the_labs_scans(lab, validated, tmp_path):
    cal = ev.load_calibration(validated.calibration_json)
    assert cal.domain == {
        "calibre": ["9mm Luger"],
        "make_model": sorted({" ".join((s.meta["labels"]["make"], s.meta["labels"]["model"])) for s in lab["scans"]}),
        "instrument": ["ballistix simulated confocal, NA 0.30"],
        "unknown_ok": [],
    }
    assert cal.reference["n_same"] == validated.n_same and cal.reference["n_different"] == validated.n_different
    assert cal.performance["cllr"] == pytest.approx(validated.cllr)
    assert cal.bounds_log10 == validated.calibration.bounds_log10
    # a casework comparison of two scans of this population, processed the same way: weighed
    a, b = (bx.preprocess(bx.read_scan(f), **FAST) for f in lab["files"][:2])
    with pytest.raises(ev.UntrustedCalibrationError, match="register"):  # a file alone is not trusted
        bx.compare(a, b, calibration=validated.calibration_json)
    with bx.CaseStore(tmp_path / "store") as st:  # registered in the lab's store, it is
        st.register_calibration(validated.calibration_json, reason="lab validation report 2026-11")
        res = bx.compare(a, b, calibration=st.calibrations())
        assert (
            bx.compare(a, b, calibration=ev.trusted_calibration(validated.calibration_json, st.calibrations())).log10_lr
            == res.log10_lr
        )
    assert res.log10_lr is not None and res.evidence["calibration"] == cal.name
    assert res.evidence["calibration_sha256"] == cal.sha256
    assert res.evidence["calibration_origin"]["kind"] == "registered"
    # processed otherwise, or of another make: refused
    assert "preprocess" in cal.check(
        bx.compare(
            bx.preprocess(bx.read_scan(lab["files"][0])), bx.preprocess(bx.read_scan(lab["files"][1])), calibration=None
        )
    )
    assert (
        ev.domain_check(
            cal.domain, {"calibre": "9mm Luger", "make_model": "Glock 17", "instrument": cal.domain["instrument"][0]}
        )
        is not None
    )


def test_validation_json_records_inputs_parameters_and_pairs(lab, validated):
    doc = json.loads(validated.validation_json.read_text())
    assert doc["format"] == "ballistix-validation" and doc["ballistix_version"] == bx.__version__
    assert doc["labels"]["sha256"] == hashlib.sha256(lab["labels"].read_bytes()).hexdigest()
    by_name = {i["name"]: i for i in doc["inputs"]}
    for f in lab["files"]:
        assert by_name[f.name]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert by_name["case8.x3p"]["firearm"] == ODD
    assert doc["excluded"][0]["sha256"] == hashlib.sha256(lab["junk"].read_bytes()).hexdigest()
    assert doc["counts"] == {"scans": 9, "firearms": 5, "pairs": 36, "same_gun": 4, "different_gun": 32}
    assert len(doc["pairs"]) == 36 and set(doc["pairs"][0]) >= {"a", "b", "gun_a", "gun_b", "features", "log10_lr_cv"}
    assert doc["parameters"]["pairs"] == "all" and doc["parameters"]["preprocess_params"] == FAST
    assert doc["calibration"]["sha256"] == hashlib.sha256(validated.calibration_json.read_bytes()).hexdigest()
    assert doc["results"]["cllr"] == pytest.approx(validated.cllr)


def test_report_escapes_values(validated):
    page = validated.report.read_text()
    assert ODD not in page and "solo &lt;b&gt;&amp;amp; &#x27;x&#x27;&lt;/b&gt;" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 4


# ------------------------------------------------------------------------------------------- browser
def test_report_renders_offline_and_shows_the_numbers(validated, tmp_path):
    from test_browser import find_chromium, png_size, render

    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (install Debian's 'chromium' or set BALLISTIX_CHROMIUM)")
    r = validated
    res = render(
        exe,
        r.report,
        tmp_path / "validation.png",
        evaluate={
            "headings": "[...document.querySelectorAll('h2')].map(h => h.textContent)",
            "figures": "[...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.alt])",
            "cllr": "document.getElementById('cllr').textContent",
            "auc": "document.getElementById('auc-lr').textContent",
            "recommendation": "document.getElementById('recommendation').textContent",
            "rule_rows": "[...document.querySelectorAll('table.rules')].map(t => t.rows.length)",
            "first_rule": "[...document.querySelector('table.rules').rows[1].cells].map(c => c.textContent)",
            "text": "document.body.innerText",
            "scripts": "document.scripts.length",
            "overflow": "document.documentElement.scrollWidth > innerWidth",
        },
    )
    assert res.problems == [], "\n".join(res.problems)
    v = res.values
    assert v["headings"] == [
        "1. What was tested",
        "2. How it was tested",
        "3. Results",
        "4. Recommended rule and its limits",
        "5. Using the calibration file",
    ]
    assert len(v["figures"]) == 4 and all(w > 300 and h > 300 for w, h, _ in v["figures"])
    assert {alt.split()[0] for *_, alt in v["figures"]} == {"ROC", "DET", "Tippett", "histogram"}
    assert v["cllr"] == f"{r.cllr:.3f}" and v["auc"] == f"{r.auc_lr:.3f}"
    assert "too few" in v["recommendation"]
    assert v["rule_rows"] == [1 + len(r.lr_rules), 1 + len(r.cmc_rules)]
    row = r.lr_rules[1]
    assert v["first_rule"][1] == "LR >= 10" and f"{row['different_called']} / {row['n_different']}" in v["text"]
    assert ODD in v["text"] and "junk.x3p" in v["text"]  # shown as text, not markup
    assert v["scripts"] == 0 and not v["overflow"]
    assert png_size(res.screenshot)[1] > 2000


# ------------------------------------------------------------------------------------------- CLI
def test_cli_takes_the_files_from_the_labels_and_samples_pairs(lab, tmp_path, capsys):
    rows = [[f"../{lab['dir'].name}/scans/{f.name}", g, "9mm Luger", "", ""] for f, g in zip(lab["files"], lab["guns"])]
    labels = _write_labels(tmp_path / "labels.csv", rows)  # paths relative to this CSV's folder
    out = tmp_path / "v"
    assert (
        main(
            [
                "validate",
                "--labels",
                labels,
                "--out",
                out,
                "--pairs",
                "12",
                "--seed",
                "1",
                "--spacing-um",
                "12.5",
                "--json",
            ]
        )
        == 0
    )
    s = json.loads(capsys.readouterr().out)
    assert s["n_scans"] == 9 and s["n_same"] == 4 and s["n_different"] == 12 and s["n_pairs"] == 16
    doc = json.loads((out / "validation.json").read_text())
    assert doc["pairs_plan"]["mode"] == "sample" and doc["pairs_plan"]["seed"] == 1
    assert doc["pairs_plan"]["n_different_available"] == 32
    cal = ev.load_calibration(out / "calibration.json")
    assert cal.domain["calibre"] == ["9mm Luger"] and cal.domain["make_model"] is not None  # from the scans
    assert (out / "report.html").is_file()


def test_cli_prints_a_table_and_the_paths(lab, validated, tmp_path, capsys, monkeypatch):
    seen = {}

    def fake(files, labels, **kw):  # the result of the module's validation: no second run
        seen.update(files=files, labels=labels, **kw)
        return validated

    monkeypatch.setattr(V, "validate", fake)
    assert (
        main(
            [
                "validate",
                *map(str, lab["files"][:2]),
                "--labels",
                str(lab["labels"]),
                "--out",
                str(tmp_path / "o"),
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert seen["files"] == [str(f) for f in lab["files"][:2]] and seen["pairs"] == "all" and seen["seed"] == 0
    assert seen["preprocess_params"] is None and seen["n_jobs"] == 1 and seen["client"] is None
    assert out.startswith("9 scans of 5 firearms; 36 pairs (4 same-gun, 32 different-gun)\n")
    for line in (
        "identification at LR >= 100",
        "elimination at LR <= 0.01",
        "identification at CMC >= 6",
        f"Cllr {validated.cllr:.3f}",
        validated.recommendation["text"],
        f"report: {validated.report}",
        f"calibration: {validated.calibration_json}",
    ):
        assert line in out

    def refuse(files, labels, **kw):
        raise V.InsufficientDataError("too few firearms to cross-validate")

    monkeypatch.setattr(V, "validate", refuse)
    assert main(["validate", "--labels", str(lab["labels"])]) == 2
    assert capsys.readouterr().err.strip() == "error: too few firearms to cross-validate"


# ------------------------------------------------------------------------------------------- bad input
def test_bad_labels_raise_labels_errors_naming_the_file(lab, tmp_path):
    with pytest.raises(V.LabelsError, match="nope.csv.*no such labels file"):
        V.validate(labels=tmp_path / "nope.csv")
    bad = _write_labels(tmp_path / "cols.csv", [["a.x3p", "9mm"]], header=("file", "calibre"))
    with pytest.raises(V.LabelsError, match=r"cols.csv: missing column\(s\) \['firearm'\]"):
        V.validate(labels=bad)
    missing = _write_labels(tmp_path / "missing.csv", [["gone.x3p", "G1", "", "", ""]])
    with pytest.raises(V.LabelsError, match="gone.x3p: no such file"):
        V.validate(labels=missing)
    empty = _write_labels(tmp_path / "empty.csv", [[str(lab["files"][0]), "", "", "", ""]])
    with pytest.raises(V.LabelsError, match="row 2: empty 'firearm'"):
        V.validate(labels=empty)
    twice = _write_labels(tmp_path / "twice.csv", [[str(lab["files"][0]), "A", "", "", ""]] * 2)
    with pytest.raises(V.LabelsError, match="listed already"):
        V.validate(labels=twice)
    other = tmp_path / "stray.x3p"
    other.write_bytes(lab["files"][0].read_bytes())
    with pytest.raises(V.LabelsError, match="stray.x3p: not listed in the labels"):
        V.validate([other, *lab["files"]], lab["labels"])
    with pytest.raises(V.LabelsError, match="absent.x3p: no such file"):
        V.validate([tmp_path / "absent.x3p"], {str(tmp_path / "absent.x3p"): "G"})
    assert issubclass(V.LabelsError, bx.BallistixError) and issubclass(V.LabelsError, bx.FileFormatError)


def test_too_few_guns_or_pairs_is_said_before_comparing(lab, monkeypatch):
    files, guns = lab["files"], lab["guns"]

    def no_compare(*a, **k):
        raise AssertionError("compared although the data could not give a result")

    monkeypatch.setattr("ballistix.features.comparison.compare_many", no_compare)
    one_gun = {str(f): "G1" for f in files[:2]}
    with pytest.raises(V.InsufficientDataError, match="1 firearm"):
        V.validate(labels=one_gun)
    singles = {str(f): f"G{k}" for k, f in enumerate(files[:3])}
    with pytest.raises(V.InsufficientDataError, match="no same-gun pair"):
        V.validate(labels=singles)
    three = {str(f): g for f, g in zip(files[:6], guns[:6])}  # 3 guns: leaving 2 out leaves one
    with pytest.raises(V.InsufficientDataError, match="too few firearms to cross-validate"):
        V.validate(labels=three, preprocess_params=FAST)
    everything = {str(f): g for f, g in zip(files, guns)}
    with pytest.raises(ParameterError, match="pairs must be"):
        V.validate(labels=everything, pairs="some")
    with pytest.raises(ParameterError, match="preprocess_params: .*spacing"):
        V.validate(labels=everything, preprocess_params={"spacing": 12.5})
    with pytest.raises(ParameterError, match=r"compare_params: unknown \['grid_size'\]"):
        V.validate(labels=everything, compare_params={"grid_size": 6})


def test_an_unreadable_scan_stops_the_validation_unless_skipped(lab):
    labels = {str(f): g for f, g in zip(lab["files"][:2], lab["guns"][:2])}
    labels[str(lab["junk"])] = "F0002"
    with pytest.raises(ScanFormatError, match="junk.x3p.*skip_unreadable=True"):
        V.validate(labels=labels, preprocess_params=FAST)
    with pytest.raises(V.InsufficientDataError, match="readable scans come from 1 firearm"):
        V.validate(labels=labels, preprocess_params=FAST, skip_unreadable=True)


# ------------------------------------------------------------------------------------------- pieces
def test_plan_pairs_keeps_every_same_gun_pair_and_a_seeded_sample():
    guns = ["a"] * 3 + ["b"] * 3 + ["c"] * 2
    allp, plan = V.plan_pairs(guns)
    assert len(allp) == 28 and plan["n_same"] == 7 and plan["n_different"] == 21 and plan["mode"] == "all"
    p1, plan1 = V.plan_pairs(guns, 5, seed=1)
    assert p1 == V.plan_pairs(guns, 5, seed=1)[0] and p1 != V.plan_pairs(guns, 5, seed=2)[0]
    assert plan1["n_same"] == 7 and plan1["n_different"] == 5 and plan1["seed"] == 1
    assert all(guns[i] == guns[j] for i, j in p1[:7]) and all(guns[i] != guns[j] for i, j in p1[7:])
    assert V.plan_pairs(guns, 100)[1]["n_different"] == 21
    for bad in (0, -1, True, "most", 2.5):
        with pytest.raises(ParameterError):
            V.plan_pairs(guns, bad)


def test_clopper_pearson_known_values():
    assert V.clopper_pearson(0, 29)[0] == 0 and V.clopper_pearson(0, 29)[1] == pytest.approx(1 - 0.025 ** (1 / 29))
    assert V.upper_bound(0, 29) == pytest.approx(1 - 0.05 ** (1 / 29))  # ~10%: the brief's example
    assert V.upper_bound(0, 29) == pytest.approx(0.0982, abs=1e-4)
    lo, hi = V.clopper_pearson(5, 10)
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.1871, abs=1e-4)
    assert V.clopper_pearson(10, 10) == (pytest.approx(0.025**0.1), 1.0)
    assert V.pairs_needed(0.01) == 299 and V.upper_bound(0, 299) < 0.01 <= V.upper_bound(0, 298)


# ------------------------------------------------------------------------------------------- real scans
@pytest.mark.slow
def test_fadul_subset(shared_data, tmp_path):
    """Four Fadul slides x two scans (28 pairs at 6.25 um), labels from the shared labels.csv."""
    files = [shared_data / "fadul" / f"fadul-{s}-{k}.x3p" for s in (1, 2, 3, 4) for k in (1, 2)]
    r = V.validate(files, shared_data / "labels.csv", out=tmp_path / "fadul")
    assert (r.n_scans, r.n_firearms, r.n_pairs, r.n_same) == (8, 4, 28, 4)
    assert r.auc_cmc > 0.9
    same = np.array([p["same_gun"] for p in r.records])
    cmc = np.array([p["features"]["cmc"] for p in r.records])
    assert np.median(cmc[same]) >= 6 > np.median(cmc[~same])
    assert r.domain["instrument"] == ["NanoFocus usurf"] and r.domain["calibre"] is None
    assert r.recommendation["identification"] is None  # 24 different-gun pairs support no rule at 1%
    assert ev.load_calibration(r.calibration_json).domain == r.domain


def test_recommendation_follows_the_measured_rates():
    rng = np.random.default_rng(0)

    def rules(n_same, n_diff, false_ids=()):
        llr = np.r_[rng.uniform(2.2, 2.6, n_same), rng.uniform(-1.5, 0.5, n_diff)]
        same = np.r_[np.ones(n_same, bool), np.zeros(n_diff, bool)]
        for k, v in enumerate(false_ids):
            llr[n_same + k] = v
        return V.decision_rules(llr, same, cmc=np.where(same, 20, 1))

    rec = V.recommend(*rules(60, 400))  # clean separation, enough pairs: the smallest threshold
    assert rec["identification"]["rule"] == "LR >= 10" and rec["identification"]["rate_same"] == 1.0
    assert rec["identification"]["upper95_different"] == pytest.approx(V.upper_bound(0, 400))
    rec = V.recommend(*rules(60, 400, false_ids=[1.5]))  # one different-gun pair at LR 30: the next threshold
    assert rec["identification"]["rule"] == "LR >= 100"
    rec = V.recommend(*rules(60, 400, false_ids=[2.5]))  # beyond every same-gun pair's LR: none identified
    assert rec["identification"] is None and "identified no same-gun pair" in rec["text"]
    rec = V.recommend(*rules(60, 100))
    assert rec["identification"] is None and "too few" in rec["text"] and "299" in rec["text"]
    assert V.recommend(*rules(60, 100), fpr_target=0.05)["identification"]["rule"] == "LR >= 10"
    lr, cmc = rules(60, 400, false_ids=[2.1] * 10 + [5.0])
    rec = V.recommend(lr, cmc)
    assert rec["identification"] is None and "every LR threshold" in rec["text"]
    assert "eliminates nothing" in rec["text"]  # no pair reached LR <= 0.01
    with pytest.raises(ParameterError):
        V.decision_rules([1.0, np.nan], [True, False])
