"""Simulated casework: structure, ground truth, determinism, scans that carry their gun's marks."""

import itertools
import json
from collections import Counter

import numpy as np
import pytest

from ballistix.datasets import Casework, simulate, simulate_casework
from ballistix.errors import ParameterError

SMALL = dict(n_firearms=5, n_scenes=6, seed=7, test_fires=2, resolution="fast")


@pytest.fixture(scope="module")
def cw():
    return simulate_casework(**SMALL)


@pytest.fixture(scope="module")
def big():
    return simulate_casework(n_firearms=200, n_scenes=400, seed=3, scans=False)


def test_determinism(cw):
    again = simulate_casework(**SMALL)
    assert again.to_dict() == cw.to_dict()
    assert len(again.scans) == len(cw.scans) == len(cw.exhibits) > 0
    assert all(np.array_equal(a.heights, b.heights, equal_nan=True) for a, b in zip(again.scans, cw.scans))
    other = simulate_casework(**{**SMALL, "seed": 8}, scans=False)
    assert other.to_dict()["scenes"] != cw.to_dict()["scenes"]


def test_scan_labels_match_exhibits(cw):
    assert len(cw.scans) == len(cw.exhibits) > 0
    for x, s in zip(cw.exhibits, cw.scans):
        lab = s.meta["labels"]
        assert lab["exhibit"] == x["id"] and lab["kind"] == x["kind"] and lab["scene"] == x["scene"]
        assert lab["test_fired_from"] == x["test_fired_from"] and lab["calibre"] == x["calibre"]
        assert lab["firearm"] == x["firearm_truth"] and lab["date"] == x["date"]
        assert s.shape == (300, 300)


def test_test_fires_only_for_recovered_guns(cw, big):
    for case in (cw, big):
        guns = {f["id"]: f for f in case.firearms}
        tests = Counter(x["test_fired_from"] for x in case.exhibits if x["kind"] == "test_fire")
        assert tests == {f["id"]: 2 for f in case.firearms if f["recovered"]}
        for x in case.exhibits:
            if x["kind"] == "test_fire":
                assert x["scene"] is None and x["firearm_truth"] == x["test_fired_from"]
                assert x["date"] > guns[x["test_fired_from"]]["recovery_date"]
            else:
                assert x["kind"] == "scene" and x["test_fired_from"] is None
    cw = simulate_casework(**{**SMALL, "test_fires": 0}, scans=False)
    assert not [x for x in cw.exhibits if x["kind"] == "test_fire"]


def test_scenes_ids_and_references(cw, big):
    for case in (cw, big):
        scene_ids = [s["id"] for s in case.scenes]
        gun_ids = [f["id"] for f in case.firearms]
        ex_ids = [x["id"] for x in case.exhibits]
        for ids in (scene_ids, gun_ids, ex_ids):
            assert len(set(ids)) == len(ids)
        assert gun_ids == [f"F{i + 1:04d}" for i in range(len(gun_ids))]
        per_scene = Counter(x["scene"] for x in case.exhibits if x["kind"] == "scene")
        assert set(per_scene) == set(scene_ids)  # every scene has >= 1 exhibit
        assert {x["firearm_truth"] for x in case.exhibits} <= set(gun_ids)
        for s in case.scenes:
            assert 1 <= len(s["firearms"]) <= 2 and set(s["firearms"]) <= set(gun_ids)
            fired = {x["firearm_truth"] for x in case.exhibits if x["scene"] == s["id"]}
            assert fired == set(s["firearms"])
            assert 52.0 <= s["lat"] <= 52.2 and 4.2 <= s["lon"] <= 4.5
        dates = [s["date"] for s in case.scenes]
        assert dates == sorted(dates) and "2024-01-01" <= dates[0] and dates[-1] <= "2024-12-31"


def test_realistic_structure(big):
    n_scenes = Counter(len(f["scenes"]) for f in big.firearms)
    assert max(n_scenes) >= 10 and n_scenes[1] + n_scenes[2] > len(big.firearms) / 3  # heavy tail
    assert any(len(s["firearms"]) == 2 for s in big.scenes)
    rec = [f for f in big.firearms if f["recovered"]]
    assert abs(len(rec) / len(big.firearms) - 0.5) < 0.05
    assert any(not f["scenes"] for f in rec)  # recovered, never seen at a scene
    assert all(f["scenes"] for f in big.firearms if not f["recovered"])  # enough scenes for every gun
    assert Counter(f["status"] for f in rec).most_common(1)[0][0] == "seized"
    scene = {s["id"]: s for s in big.scenes}
    for f in big.firearms:
        assert len({scene[s]["context"] for s in f["scenes"]}) <= 1  # a gun keeps its context
        if f["scenes"] and f["recovered"]:
            assert f["recovery_date"] > max(scene[s]["date"] for s in f["scenes"])
        if f["recovered"]:
            assert f["status"] in ("seized", "found", "surrendered") and f["origin_country"]
            assert f["tracing_status"] in ("traced", "in progress", "not traced", "not requested")
            assert (f["tracing_result"] is not None) == (f["tracing_status"] == "traced")
        else:
            assert f["status"] is None and f["tracing_status"] is None
        assert (f["serial"] is None) == f["serial_obliterated"]
    assert {s["context"] for s in big.scenes} <= {
        "street gang",
        "organized crime",
        "drug trafficking",
        "terrorism",
        "domestic",
        "robbery",
    }


def test_indicator_16_4_2(cw, big):
    for case in (cw, big):
        rec = [f for f in case.firearms if f["recovered"]]
        traced = [f for f in rec if f["tracing_status"] == "traced"]
        assert 0 <= case.indicator_16_4_2() <= 1
        assert case.indicator_16_4_2() == len(traced) / len(rec)
    assert big.indicator_16_4_2() == pytest.approx(0.6, abs=0.01)
    assert np.isnan(simulate_casework(n_firearms=3, n_scenes=2, recovered_share=0, scans=False).indicator_16_4_2())
    assert (
        simulate_casework(n_firearms=4, n_scenes=2, recovered_share=1, traced_share=1, scans=False).indicator_16_4_2()
        == 1.0
    )


def test_same_gun_pairs_and_linked_scenes(cw):
    gun = {x["id"]: x["firearm_truth"] for x in cw.exhibits}
    expected = {(a, b) for a, b in itertools.combinations(sorted(gun), 2) if gun[a] == gun[b]}
    assert cw.same_gun_pairs() == expected
    linked = {
        (a["id"], b["id"]) for a, b in itertools.combinations(cw.scenes, 2) if set(a["firearms"]) & set(b["firearms"])
    }
    assert cw.linked_scenes() == linked


def test_scans_of_one_gun_share_marks(cw):
    by_gun = {}
    for x, s in zip(cw.exhibits, cw.scans):
        by_gun.setdefault(x["firearm_truth"], []).append(s.meta["truth"]["firearm_geometry"])
    assert any(len(g) > 1 for g in by_gun.values())
    for geoms in by_gun.values():
        assert all(g == geoms[0] for g in geoms)
    firsts = [g[0] for g in by_gun.values()]
    assert all(a != b for a, b in itertools.combinations(firsts, 2))
    # the same physical gun as the simulator's: F0001's first exhibit is simulate()'s F0001 shot 1
    first = next(i for i, x in enumerate(cw.exhibits) if x["firearm_truth"] == "F0001")
    ref = simulate(n_firearms=1, shots=1, seed=SMALL["seed"], resolution="fast")[0]
    assert np.array_equal(ref.heights, cw.scans[first].heights, equal_nan=True)


def test_json_round_trip(cw):
    back = Casework.from_json(cw.to_json())
    assert back == cw and back.to_dict() == cw.to_dict() and back.scans == []
    assert Casework.from_dict(json.loads(cw.to_json(indent=2))) == cw
    meta_only = simulate_casework(**SMALL, scans=False)
    assert meta_only.scans == [] and meta_only.params["scans"] is False
    for key in ("scenes", "firearms", "exhibits"):  # same metadata with or without scans
        assert getattr(meta_only, key) == getattr(cw, key)
    with pytest.raises(ParameterError):
        Casework.from_dict({"scenes": []})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_scenes=0), "n_scenes"),
        (dict(n_firearms=0), "n_firearms"),
        (dict(n_firearms=2.5), "n_firearms"),
        (dict(seed=-1), "seed"),
        (dict(recovered_share=1.5), "recovered_share"),
        (dict(recovered_share=-0.1), "recovered_share"),
        (dict(traced_share=float("nan")), "traced_share"),
        (dict(shots_per_scene=3), "shots_per_scene"),
        (dict(shots_per_scene=(3, 1)), "shots_per_scene"),
        (dict(shots_per_scene=(0, 2)), "shots_per_scene"),
        (dict(shots_per_scene=(1, 2, 3)), "shots_per_scene"),
        (dict(test_fires=-1), "test_fires"),
        (dict(days=0), "days"),
        (dict(start_date="01/02/2024"), "start_date"),
        (dict(difficulty="impossible"), "difficulty"),
        (dict(resolution="huge"), "resolution"),
        (dict(models=["Colt 1911"]), "Colt 1911"),
        (dict(models="Glock 17"), "models"),
        (dict(run_size=0), "run_size"),
        (dict(scans="yes"), "scans"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        simulate_casework(**{"scans": False, **kwargs})


def test_models_and_runs():
    case = simulate_casework(n_firearms=4, n_scenes=4, seed=1, models=["Glock 17"], run_size=2, scans=False)
    assert {(f["make"], f["model"]) for f in case.firearms} == {("Glock", "17")}
    assert [f["manufacturing_run"] for f in case.firearms] == ["R001", "R001", "R002", "R002"]
