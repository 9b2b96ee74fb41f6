import hashlib

import numpy as np
import pytest

import ballistix as bx
from ballistix.datasets import POPULATIONS, fire, make_firearm, make_session, scan_in_session, simulate_population
from ballistix.errors import ParameterError


def test_simulate_default_output_unchanged():
    """`fire(rotation_deg=)` was added without changing the simulator's default output (hash taken before;
    rewritten on purpose for issue 19, when the firing-pin marks and the aperture-shear striations changed
    the raw heights in the crater and the sheared sector: see test_simulate)."""
    h = hashlib.sha256()
    for s in bx.datasets.simulate(n_firearms=2, shots=2, seed=0, resolution="fast"):
        h.update(np.ascontiguousarray(s.heights, dtype=np.float64).tobytes())
    assert h.hexdigest() == "754146bcbab963114d1d28c23196cde3b25b72f1f1b561c2b2dddac9eb8fb052"


def test_fire_rotation_fixed_changes_only_the_pose():
    gun = make_firearm("G1", seed=1, resolution="fast")
    free = fire(gun, 0, seed=5, resolution="fast")
    fixed = fire(gun, 0, seed=5, resolution="fast", rotation_deg=370.0)
    assert fixed.meta["truth"]["rotation_deg"] == pytest.approx(10.0)
    assert fixed.meta["truth"]["firing_pin_center_m"] == free.meta["truth"]["firing_pin_center_m"]
    assert fixed.meta["truth"]["amplitude"] == free.meta["truth"]["amplitude"]
    with pytest.raises(ParameterError):
        fire(gun, 0, seed=5, resolution="fast", rotation_deg=float("nan"))


@pytest.mark.parametrize("kind", sorted(POPULATIONS))
def test_population_deterministic_and_labelled(kind):
    a = simulate_population(kind, n_firearms=2, shots=2, n_batches=2, seed=3, resolution="fast")
    b = simulate_population(kind, n_firearms=2, shots=2, n_batches=2, seed=3, resolution="fast")
    c = simulate_population(kind, n_firearms=2, shots=2, n_batches=2, seed=4, resolution="fast")
    assert len(a) == 4
    for x, y in zip(a, b):
        assert np.array_equal(x.heights, y.heights, equal_nan=True)
        assert x.meta == y.meta
    assert not np.array_equal(a[0].heights, c[0].heights, equal_nan=True)
    for s in a:
        lab = s.meta["labels"]
        for key in ("exhibit", "firearm", "make", "model", "calibre", "instrument", "batch", "population"):
            assert lab[key] not in (None, "")
        assert lab["population"] == kind and lab["instrument"] == POPULATIONS[kind]["instrument"]
        assert lab["batch"] == s.meta["truth"]["session"]["batch"]
        assert 0.2 < s.valid_fraction < 0.95
    assert [s.meta["labels"]["batch"] for s in a] == ["B01", "B02", "B01", "B02"]


def test_ordinary_population_is_the_default_simulator():
    pop = simulate_population("ordinary", n_firearms=2, shots=2, seed=0, resolution="fast")
    ref = bx.datasets.simulate(n_firearms=2, shots=2, seed=0, resolution="fast")
    for x, y in zip(pop, ref):
        assert np.array_equal(x.heights, y.heights, equal_nan=True)


def test_instrument_grid():
    assert make_session("B", resolution="standard").artefact.shape == (507, 507)  # photometric stereo: 7.4 um
    assert make_session("B", resolution="standard").spacing_m == pytest.approx(7.4e-6)
    assert make_session("B", resolution="fast").spacing_m == pytest.approx(12.5e-6)  # never finer than asked
    assert make_session("B", instrument="confocal", resolution="standard").spacing_m == pytest.approx(6.25e-6)


def test_batch_mounting():
    scans = simulate_population("batch", n_firearms=3, shots=2, n_batches=2, seed=1, resolution="fast")
    rot = {
        b: [s.meta["truth"]["rotation_deg"] for s in scans if s.meta["labels"]["batch"] == b] for b in ("B01", "B02")
    }
    for r in rot.values():  # cases of a batch are mounted alike
        d = (np.array(r) - r[0] + 180) % 360 - 180
        assert np.abs(d).max() < 40


def _artefact_part(session, gun, seed):
    """Heights of a scan in ``session`` minus the same scan without artefacts."""
    plain = make_session(session.id, seed=session.seed, resolution="fast", artefact_um=0.0)
    with_a = scan_in_session(gun, 0, session, seed=seed)
    without = scan_in_session(gun, 0, plain, seed=seed)
    return with_a.heights - without.heights


def test_artefact_shared_within_batch_not_across():
    s1 = make_session(
        "B1", seed=np.random.SeedSequence([0, 3, 0]), resolution="fast", artefact_um=1.0, artefact_share=0.9
    )
    s2 = make_session(
        "B2", seed=np.random.SeedSequence([0, 3, 1]), resolution="fast", artefact_um=1.0, artefact_share=0.9
    )
    g1, g2 = (
        make_firearm("G1", "Glock 17", seed=1, resolution="fast"),
        make_firearm("G2", "Glock 17", seed=2, resolution="fast"),
    )
    # the same mounting rotation within a session needs the spread: sessions without it mount at random
    d11, d21, d22 = _artefact_part(s1, g1, 11), _artefact_part(s1, g2, 12), _artefact_part(s2, g2, 12)
    ok = ~(np.isnan(d11) | np.isnan(d21) | np.isnan(d22))
    same = np.corrcoef(d11[ok], d21[ok])[0, 1]
    other = np.corrcoef(d11[ok], d22[ok])[0, 1]
    assert same > 0.8 and abs(other) < 0.2
    assert np.nanstd(d11) == pytest.approx(1e-6, rel=0.3)


def test_subclass_weight_shares_surface():
    scans = simulate_population("subclass", n_firearms=2, shots=1, n_batches=1, seed=0, resolution="fast")
    assert {s.meta["labels"]["manufacturing_run"] for s in scans} == {"R001"}
    assert all(s.meta["labels"]["subclass_weight"] == 0.5 for s in scans)


@pytest.mark.parametrize(
    "bad",
    [
        dict(kind="nope"),
        dict(artefact_um=-1),
        dict(subclass_weight=1.0),
        dict(models=["Colt Python"]),
        dict(n_batches=0),
        dict(shots=True),
        dict(unknown=1),
        dict(instrument="lidar"),
    ],
)
def test_population_rejects_bad_settings(bad):
    args = dict(kind="batch", n_firearms=1, shots=1, resolution="fast")
    args.update(bad)
    with pytest.raises(ParameterError):
        simulate_population(**args)


def test_benchmark_records_are_complete():
    """The per-pair records of benchmarks.populations carry what a calibration fit needs."""
    import benchmarks.populations as bp  # the tests run from a checkout (pyproject: pythonpath)

    scans = [
        {
            "exhibit": f"F{g}-{k}",
            "firearm": f"F{g}",
            "batch": f"B{k % 2}",
            "make": "Glock",
            "model": "17",
            "calibre": "9mm Luger",
            "instrument": "photometric-stereo",
            "manufacturing_run": f"F{g}",
        }
        for g in range(4)
        for k in range(2)
    ]
    pairs = [[i, j] for i in range(8) for j in range(i + 1, 8)]
    rng = np.random.default_rng(0)
    feats = [
        [float(20 if scans[i]["firearm"] == scans[j]["firearm"] else rng.integers(0, 8)), 0.6, 0.4] for i, j in pairs
    ]
    d = {"scans": scans, "pairs": pairs, "features": feats, "score": [f[0] + f[1] for f in feats]}
    recs = bp.records("toy", d)
    assert len(recs) == 28
    for r in recs:
        for key in (
            "exhibit_a",
            "exhibit_b",
            "gun_a",
            "gun_b",
            "batch_a",
            "batch_b",
            "make",
            "model",
            "calibre",
            "instrument",
            "same_gun",
            "same_batch",
            "cmc",
            "congruent_corr",
            "cell_corr",
            *bp.NORMALISATIONS,
        ):
            assert key in r
    s = bp.summarise(recs)
    assert s["n_same"] == 4 and s["n_different"] == 24 and s["auc"]["cmc"] == 1.0
    assert set(s["rules"]) >= {"cmc>=6", "cmc_excess>=5"}
