"""Evidence strength: Cllr and friends on known values, monotone and bounded LRs, gun-level
cross-validation, save/load, refusals, and the LR on real scans."""

import json
import math

import numpy as np
import pytest

import ballistix as bx
from ballistix import evidence as ev
from ballistix.errors import FileFormatError, ParameterError
from ballistix.evaluation import lr


def population(n_guns=20, shots=4, knm=600, seed=0, overlap=1.0):
    """Feature rows like CMC comparisons: same-gun counts high, different-gun counts low."""
    rng = np.random.default_rng(seed)
    ga, gb, X = [], [], []
    for g in range(n_guns):
        for _ in range(shots * (shots - 1) // 2):
            ga.append(g)
            gb.append(g)
            c = rng.poisson(10 / overlap)
            X.append([c, 0.6 + 0.1 * rng.random() if c else 0.0, rng.normal(0.35, 0.05)])
    for _ in range(knm):
        a, b = rng.choice(n_guns, 2, replace=False)
        ga.append(a)
        gb.append(b)
        c = rng.poisson(1.0 * overlap)
        X.append([c, 0.55 + 0.05 * rng.random() if c else 0.0, rng.normal(0.25, 0.05)])
    X = np.array(X, float)
    same = np.array([a == b for a, b in zip(ga, gb)])
    return X, same, np.array(ga).astype(str), np.array(gb).astype(str)


def test_cllr_known_values():
    assert lr.cllr([0.0, 0.0], [True, False]) == pytest.approx(1.0)  # LR = 1: uninformative
    assert lr.cllr([1.0, -1.0], [True, False]) == pytest.approx(math.log2(1.1))
    assert lr.cllr([8.0, -8.0], [True, False]) < 1e-6
    assert lr.cllr([-2.0, 2.0], [True, False]) > 1  # wrong way round: worse than none


def test_cllr_min_separates_discrimination_from_calibration():
    rng = np.random.default_rng(1)
    same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    llr = np.r_[rng.uniform(1, 2, 50), rng.uniform(-2, 0.9, 50)] + 3.0  # perfectly ranked, badly calibrated
    assert lr.cllr(llr, same) > 1.0
    assert lr.cllr_min(llr, same) == pytest.approx(0.0, abs=1e-9)
    mixed = rng.normal(0, 1, 100)
    assert lr.cllr_min(mixed, same) <= lr.cllr(mixed, same) + 1e-12


def test_misleading_rates():
    same = np.array([True, True, True, False, False])
    m = lr.misleading([3.0, -0.5, -2.5, 2.5, -1.0], same)
    assert m["rate_for_different"] == pytest.approx(2 / 3) and m["rate_for_same"] == pytest.approx(0.5)
    assert m["strong_for_same"] == 1 and m["strong_for_different"] == 1
    assert m["worst_for_same_log10"] == 2.5 and m["worst_for_different_log10"] == -2.5


@pytest.mark.parametrize("n_knm", [100, 700, 5000])
def test_elub_caps_the_lr_at_what_the_data_support(n_knm):
    same = np.r_[np.ones(60, bool), np.zeros(n_knm, bool)]
    llr = np.r_[np.full(60, 12.0), np.full(n_knm, -12.0)]  # a system claiming LR 10^12
    lo, hi = lr.elub_bounds(llr, same)
    assert hi == pytest.approx(math.log10((n_knm + 1) * 60 / 61), abs=0.02)
    assert lo == pytest.approx(-math.log10(61 * n_knm / (n_knm + 1)), abs=0.02)


def test_elub_of_a_useless_system_is_near_one():
    rng = np.random.default_rng(2)
    same = rng.random(2000) < 0.5
    lo, hi = lr.elub_bounds(rng.normal(0, 1, 2000), same)
    assert -0.3 < lo <= 0 <= hi < 0.3


def test_fit_is_monotone_and_bounded():
    X, same, _, _ = population()
    X[:, 2] = -X[:, 2]  # a feature that runs the wrong way must not make the LR fall as it rises
    cal = ev.fit(X, same)
    assert all(w >= 0 for w in cal.coef[1:])
    rng = np.random.default_rng(3)
    base = X[rng.choice(len(X), 200)]
    for j in range(3):
        up = base.copy()
        up[:, j] += rng.uniform(0, 5, len(up))
        assert np.all(cal.log10_lr(up) >= cal.log10_lr(base) - 1e-12)
    extreme = np.array([[1000.0, 1.0, 1.0], [0.0, 0.0, -5.0]])
    lo, hi = cal.bounds_log10
    np.testing.assert_allclose(cal.log10_lr(extreme), [hi, lo])
    assert hi <= math.log10((~same).sum() + 1) + 1e-9
    assert -lo <= math.log10(same.sum() + 1) + 1e-9


def test_fit_separates_a_clear_population():
    X, same, ga, gb = population()
    llr = ev.cross_validate(X, same, ga, gb, n_folds=5)
    assert lr.cllr(llr, same) < 0.2
    assert np.median(llr[same]) > 1 and np.median(llr[~same]) < -1


@pytest.mark.parametrize("n_folds", [2, 5, 10, 40])
def test_cross_validation_never_calibrates_a_pair_with_its_own_guns(n_folds):
    _, same, ga, gb = population(n_guns=12, knm=200)
    tested = np.zeros(len(ga), int)
    for train, test in ev.cv_splits(ga, gb, n_folds=n_folds):
        tested += test
        train_guns = set(ga[train]) | set(gb[train])
        assert not (set(ga[test]) | set(gb[test])) & train_guns
    assert np.all(tested == 1)


def test_cross_validation_refuses_too_few_guns():
    X, same, ga, gb = population(n_guns=3, shots=3, knm=20)
    with pytest.raises(ParameterError, match="too few guns"):
        ev.cross_validate(X, same, ga, gb, n_folds=3)


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.full((4, 3), np.nan)])
def test_fit_rejects_bad_features(bad):
    with pytest.raises(ParameterError):
        ev.fit(bad, [True, False, True, False, True][: len(bad)])


def test_save_load_round_trip_and_damage(tmp_path):
    X, same, _, _ = population()
    cal = ev.fit(X, same, name="test set", comparison={"grid": [8, 8]})
    path = cal.save(tmp_path / "cal.json")
    back = ev.load_calibration(path)
    np.testing.assert_array_equal(back.log10_lr(X), cal.log10_lr(X))
    assert back.reference == cal.reference and back.comparison == {"grid": [8, 8]}
    doc = json.loads(path.read_text())
    doc["calibration"]["coef"][1] *= 2  # tampered
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(FileFormatError, match="t.json.*checksum"):
        ev.load_calibration(tmp_path / "t.json")
    (tmp_path / "cut.json").write_bytes(path.read_bytes()[:100])
    with pytest.raises(FileFormatError, match="cut.json"):
        ev.load_calibration(tmp_path / "cut.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(FileFormatError, match="not a ballistix calibration"):
        ev.load_calibration(tmp_path / "other.json")
    with pytest.raises(FileFormatError):
        ev.load_calibration(tmp_path / "missing.json")


def test_conclusion_scale_and_verbal():
    assert ev.conclusion(2.5)["conclusion"] == "identification"
    assert ev.conclusion(0.5)["conclusion"] == "inconclusive"
    assert ev.conclusion(-2.0)["conclusion"] == "elimination"
    assert ev.verbal(3.2) == "strong support for same gun"
    assert ev.verbal(-1.5) == "moderate support for different guns"
    X, same, ga, gb = population()
    llr = ev.cross_validate(X, same, ga, gb, n_folds=5)
    rates = lr.conclusion_rates(llr, same)
    for side in ("same", "different"):
        total = rates["identification"][f"n_{side}"]
        assert sum(rates[c][side] for c in ("identification", "inconclusive", "elimination")) == total
    cal = ev.fit(X, same)
    cal.performance["conclusions"] = rates
    out = ev.conclusion(2.5, cal)
    assert out["error_rate"]["n"] == (~same).sum() and 0 <= out["error_rate"]["rate"] <= out["error_rate"]["upper95"]


def _tiny_pair():
    rng = np.random.default_rng(4)
    import cv2

    z = cv2.GaussianBlur(rng.standard_normal((96, 96)), (0, 0), 2.0) * 1e-6
    a = bx.Scan(z, 6.25e-6, 6.25e-6, {})
    b = bx.Scan(np.roll(z, (3, -2), axis=(0, 1)), 6.25e-6, 6.25e-6, {})
    return a, b


def test_compare_refuses_a_calibration_made_with_other_parameters():
    a, b = _tiny_pair()
    X, same, _, _ = population()
    cal = ev.fit(X, same, comparison={"grid": [8, 8]})
    with pytest.raises(ev.CalibrationMismatchError, match="grid"):
        bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=cal)
    other = ev.fit(X, same, preprocessing=[["bandpass", {"short_cutoff_um": 16.0}]])
    with pytest.raises(ev.CalibrationMismatchError, match="preprocess"):
        bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=other)
    free = ev.fit(X, same)  # no parameters recorded: applies to anything
    r = bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=free)
    assert r.log10_lr == pytest.approx(free.log10_lr([r])[0]) and r.lr == pytest.approx(10**r.log10_lr)
    assert r.evidence["conclusion"]["conclusion"] in ("identification", "inconclusive", "elimination")


def test_default_calibration_stands_aside_for_unprocessed_scans():
    a, b = _tiny_pair()
    r = bx.compare(a, b, grid=(4, 4), rotation=[0.0])
    assert r.log10_lr is None and r.lr is None and "no likelihood ratio" in r.evidence["note"]
    assert bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=None).evidence == {}
    with pytest.raises(ParameterError):
        bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=3)


def test_weigh_is_the_step_after_the_comparison():
    """bx.compare is the CMC comparison (features) and then `evidence.weigh`; the comparison alone has no LR."""
    from ballistix.features.comparison import compare

    a, b = _tiny_pair()
    X, same, _, _ = population()
    cal = ev.fit(X, same)
    plain = compare(a, b, grid=(4, 4), rotation=[0.0])
    assert plain.log10_lr is None and plain.evidence == {}
    weighed = ev.weigh(plain, cal)
    assert plain.log10_lr is None and plain.evidence == {}  # a new Comparison: the measurement is left as it was
    assert weighed.to_dict() == bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=cal).to_dict()
    assert weighed.log10_lr is not None and weighed._surfaces == plain._surfaces
    again = ev.weigh(weighed, None)  # weighed afresh, not on top of the earlier weighing
    assert again.log10_lr is None and again.evidence == {}
    with pytest.raises(ParameterError, match="evidence.weigh"):
        compare(a, b, calibration=cal)


def _imports(path, root):
    """Absolute names of the ballistix modules (and names) a source file imports."""
    import ast

    pkg = ["ballistix", *path.relative_to(root).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = ".".join((pkg[: len(pkg) - node.level + 1] if node.level else []) + [node.module or ""]).strip(".")
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


def test_features_and_evaluation_sit_below_evidence():
    """One-way layers: provenance, features and evaluation import nothing of the evidence layer or above."""
    from pathlib import Path

    root = Path(ev.__file__).parent
    above = ("evidence", "verify", "validation", "cohort", "store", "graph", "index", "cli", "_demo")
    below = {
        "provenance.py": above + ("features", "evaluation"),
        "features": above + ("evaluation",),
        "evaluation": above,
    }
    for where, banned in below.items():
        for f in [root / where] if where.endswith(".py") else sorted((root / where).rglob("*.py")):
            bad = sorted({m for m in _imports(f, root) if m.startswith("ballistix.") and m.split(".")[1] in banned})
            assert not bad, f"{f.relative_to(root)} imports {bad}"
    from ballistix import provenance

    # moved, still found where users have always found them
    assert ev.cllr is lr.cllr and ev.conclusion_rates is lr.conclusion_rates and ev.IDENTIFICATION_LR == 100.0
    assert ev.population is provenance.population and ev.processing_signature is provenance.processing_signature


def test_default_calibration_is_shipped_and_sane():
    cal = ev.default_calibration()
    lo, hi = cal.bounds_log10
    assert lo < 0 < hi and cal.reference["n_same"] > 0 and cal.reference["n_different"] > 0
    assert cal.preprocessing and cal.comparison
    assert cal.performance["cllr"] < cal.performance.get("cllr_uninformative", 1.0)


def test_lr_on_real_scans(shared_data):
    scans = {n: bx.preprocess(bx.read_scan(shared_data / "fadul" / f"fadul-{n}.x3p")) for n in ("1-1", "1-2", "2-1")}
    km = bx.compare(scans["1-1"], scans["1-2"])
    knm = bx.compare(scans["1-1"], scans["2-1"])
    assert km.log10_lr is not None and km.log10_lr >= 2
    assert km.evidence["conclusion"]["conclusion"] == "identification"
    assert knm.log10_lr < 0


def test_sample_weight_equals_repeating_pairs():
    X, same, _, _ = population(knm=300)
    rep = np.r_[np.arange(len(X)), np.flatnonzero(same)[:10], np.flatnonzero(~same)[:40]]
    a = ev.fit(X[rep], same[rep])
    w = np.ones(len(X))
    w[np.flatnonzero(same)[:10]] = 2
    w[np.flatnonzero(~same)[:40]] = 2
    b = ev.fit(X, same, sample_weight=w)
    np.testing.assert_allclose(a.raw_log10_lr(X), b.raw_log10_lr(X), atol=1e-4)
    with pytest.raises(ParameterError):
        ev.fit(X, same, sample_weight=-w)


# ------------------------------------------------------------- populations and domains
@pytest.mark.parametrize(
    "meta, expected",
    [
        (
            {"labels": {"calibre": "9x19", "make": "Ruger", "model": "P95"}},
            {"calibre": "9mm Luger", "make_model": "Ruger P95", "instrument": None},
        ),
        (
            {"instrument": {"manufacturer": "NanoFocus", "model": "uSurf"}, "labels": {"calibre": "9mm Para"}},
            {"calibre": "9mm Luger", "make_model": None, "instrument": "NanoFocus uSurf"},
        ),
        (
            {"labels": {"calibre": ".45 ACP", "make_model": "Colt 1911", "instrument": "Evofinder"}},
            {"calibre": ".45 ACP", "make_model": "Colt 1911", "instrument": "Evofinder"},
        ),
        ({"instrument": {"manufacturer": "NA"}}, {"calibre": None, "make_model": None, "instrument": None}),
        (
            {"population": {"calibre": "9mm", "make_model": "Glock 17"}},  # as a store records it
            {"calibre": "9mm Luger", "make_model": "Glock 17", "instrument": None},
        ),
    ],
)
def test_population_from_metadata(meta, expected):
    assert ev.population(meta) == expected


DOMAIN = {"calibre": ["9mm Luger"], "make_model": ["Ruger P95"], "unknown_ok": ["calibre"]}


@pytest.mark.parametrize(
    "pop, refused",
    [
        ({"calibre": "9mm Luger", "make_model": "ruger p-95"}, None),  # case and punctuation blind
        ({"calibre": None, "make_model": "Ruger P95"}, None),  # unknown calibre: accepted (unknown_ok)
        ({"calibre": "9mm Luger", "make_model": None}, "not recorded"),  # unknown make/model: refused
        ({"calibre": "9mm Luger", "make_model": "Glock 17"}, "outside"),
        ({"calibre": ".40 S&W", "make_model": "Ruger P95"}, "calibre"),
    ],
)
def test_domain_check(pop, refused):
    why = ev.domain_check(DOMAIN, pop, "scan X")
    assert (why is None) == (refused is None)
    if refused:
        assert refused in why and why.startswith("scan X")
    assert ev.domain_check(None, pop) is None


@pytest.mark.parametrize("domain", [{"gun": ["x"]}, {"calibre": "9mm"}, {"calibre": []}, {"unknown_ok": ["gun"]}, []])
def test_bad_domains_are_refused(domain, tmp_path):
    X, same, _, _ = population()
    with pytest.raises(ParameterError):
        ev.fit(X, same, domain=domain)
    cal = ev.fit(X, same)
    cal.domain = domain
    cal.save(tmp_path / "c.json")  # a file whose domain is nonsense is refused on reading
    with pytest.raises(FileFormatError, match="domain"):
        ev.load_calibration(tmp_path / "c.json")


def _labelled_pair(calibre="9mm Luger", make="Ruger", model="P95"):
    a, b = _tiny_pair()
    for s in (a, b):
        s.meta["labels"] = {"calibre": calibre, "make": make, "model": model}
    return a, b


def test_the_most_specific_applicable_calibration_is_chosen_and_refusals_say_why():
    X, same, _, _ = population()
    generic = ev.fit(X, same, name="generic", domain={"calibre": ["9mm Luger"]})
    ruger = ev.fit(X * [2, 1, 1], same, name="ruger", domain={"calibre": ["9mm Luger"], "make_model": ["Ruger P95"]})
    a, b = _labelled_pair()
    r = bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=None)
    assert r.inputs["a"]["population"]["make_model"] == "Ruger P95"
    assert ev.select_calibration(r, [generic, ruger])[0] is ruger
    a, b = _labelled_pair(make="Glock", model="17")
    r = bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=None)
    cal, why = ev.select_calibration(r, [generic, ruger])
    assert cal is generic and len(why) == 1 and "ruger" in why[0] and "Glock 17" in why[0]
    a, b = _labelled_pair(calibre=".45 ACP")
    r = bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=None)
    assert ev.select_calibration(r, [generic, ruger])[0] is None
    with pytest.raises(ev.CalibrationMismatchError, match="45 ACP"):  # a calibration given by name is strict
        bx.compare(a, b, grid=(4, 4), rotation=[0.0], calibration=generic)


def test_shipped_calibrations_refuse_another_calibre(shared_data):
    scans = [bx.preprocess(bx.read_scan(shared_data / "fadul" / f"fadul-{n}.x3p")) for n in ("1-1", "1-2")]
    r = bx.compare(*scans)
    assert r.log10_lr is not None and "assumed" in r.evidence  # calibre not in the files: taken as 9 mm, said so
    for s in scans:
        s.meta["labels"] = {"calibre": ".40 S&W"}
    r = bx.compare(*scans)
    assert r.cmc_count >= 6 and r.log10_lr is None and "40 S&W" in r.evidence["note"]
    assert "never a link" in r.evidence["note"]
    g = bx.LinkageGraph.from_comparisons([("1-1", "1-2", r)])
    assert g.groups(min_size=2) == [] and [(c["a"], c["b"]) for c in g.candidates()] == [("1-1", "1-2")]


def test_every_shipped_calibration_has_a_domain():
    cals = ev.shipped_calibrations()
    assert ev.default_calibration() in cals and all(c.domain for c in cals)
    assert [c.specificity() for c in cals] == sorted((c.specificity() for c in cals), reverse=True)
