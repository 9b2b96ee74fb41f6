import numpy as np
import pytest

import ballistix as bx
from ballistix.datasets import simulate
from ballistix.evaluation.realism import truth_breech_face
from ballistix.features.filters import gaussian_bandpass


def test_labels_shapes_and_units():
    scans = simulate(2, 3, seed=0, resolution="fast")
    assert [s.meta["labels"]["exhibit"] for s in scans] == [f"F000{g}-{k}" for g in (1, 2) for k in (1, 2, 3)]
    for s in scans:
        assert s.shape == (300, 300) and s.dx == s.dy == 12.5e-6
        assert 0.3 < s.valid_fraction < 0.8
        z = s.heights[s.valid_mask]
        assert 1e-6 < np.ptp(z) < 1e-3  # metres: tens of micrometres of relief
        t = s.meta["truth"]
        assert 0 <= t["rotation_deg"] < 360
        assert s.meta["labels"]["firearm"] in ("F0001", "F0002")


def test_deterministic_and_seed_dependent():
    a = simulate(1, 2, seed=7, resolution="fast")
    b = simulate(1, 2, seed=7, resolution="fast")
    c = simulate(1, 2, seed=8, resolution="fast")
    for x, y in zip(a, b):
        assert np.array_equal(x.heights, y.heights, equal_nan=True)
        assert x.meta == y.meta
    assert not np.array_equal(a[0].heights, c[0].heights, equal_nan=True)


def test_rotation_covers_full_circle():
    rots = [s.meta["truth"]["rotation_deg"] for s in simulate(6, 4, seed=1, resolution="fast")]
    assert min(rots) < 90 and max(rots) > 270


@pytest.mark.parametrize("difficulty", ["easy", "moderate", "realistic", "realistic-hard"])
def test_difficulties_run(difficulty):
    (s,) = simulate(1, 1, seed=2, difficulty=difficulty, resolution="fast")
    assert s.meta["truth"]["difficulty"] == difficulty


def _aligned_correlation(a: bx.Scan, b: bx.Scan) -> float:
    """Correlation of b's breech face with a's, mapped through the true relative pose."""
    import cv2

    za = gaussian_bandpass(np.where(truth_breech_face(a), a.heights, np.nan), a.dx, long_cutoff_um=250)
    zb = gaussian_bandpass(np.where(truth_breech_face(b), b.heights, np.nan), b.dx, long_cutoff_um=250)
    ta, tb = a.meta["truth"], b.meta["truth"]
    rel = np.deg2rad(ta["rotation_deg"] - tb["rotation_deg"])
    R = np.array([[np.cos(rel), -np.sin(rel)], [np.sin(rel), np.cos(rel)]])
    ca, cb = np.array(ta["firing_pin_center_m"]) / a.dx, np.array(tb["firing_pin_center_m"]) / b.dx
    # p_a = R (p_b - c_b) + c_a, in pixels (x, y)
    M = np.hstack([R, (ca - R @ cb)[:, None]])
    warped = cv2.warpAffine(
        np.nan_to_num(za, nan=0.0), M, zb.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    wmask = (
        cv2.warpAffine(
            (~np.isnan(za)).astype(np.float32), M, zb.shape[::-1], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        )
        > 0.5
    )
    both = wmask & ~np.isnan(zb)
    assert both.sum() > 1000
    return float(np.corrcoef(warped[both], zb[both])[0, 1])


def test_true_pose_aligns_same_gun_marks():
    # The recorded pose must be the real one: aligning two shots of one gun with it
    # superimposes their breech-face marks; shots of different guns stay uncorrelated.
    scans = simulate(2, 2, seed=3, difficulty="easy", resolution="fast", models=["Ruger P95"])
    same = _aligned_correlation(scans[0], scans[1])
    other = _aligned_correlation(scans[0], scans[2])
    assert same > 0.6
    assert abs(other) < 0.2


def test_consecutive_slides_share_subclass_marks():
    # Guns of one manufacturing run share the run's tool marks: their breech faces
    # correlate more than those of independent guns of the same model.
    from ballistix.datasets import make_firearm
    from ballistix.datasets.simulate import _BREECH_RMS_UM

    run = [
        make_firearm(f"G{i}", "Ruger P95", seed=i, run_seed=99, subclass_share=0.6, resolution="fast") for i in range(2)
    ]
    free = [make_firearm(f"H{i}", "Ruger P95", seed=10 + i, resolution="fast") for i in range(2)]
    corr = lambda p: np.corrcoef(p[0].surface.ravel(), p[1].surface.ravel())[0, 1]  # noqa: E731
    c, i = _BREECH_RMS_UM  # shared variance: share * class variance over total variance
    assert corr(run) == pytest.approx(0.6 * c**2 / (c**2 + i**2), abs=0.08)
    assert abs(corr(free)) < 0.08


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_firearms=0),
        dict(shots=0),
        dict(shots=[1, 2]),
        dict(difficulty="impossible"),
        dict(difficulty={"wobble": 1}),
        dict(resolution="huge"),
        dict(resolution=(0.01, 10)),
        dict(models=["Colt Python"]),
        dict(run_size=0),
        dict(seed=-1),
        dict(models=[]),
        dict(shots=True),
        dict(difficulty={"amplitude": (0.0, 1.0)}),
        dict(difficulty={"poor": 1.5}),
        dict(difficulty={"noise_um": -1}),
    ],
)
def test_bad_arguments(kwargs):
    args = dict(n_firearms=1, shots=1, resolution="fast") | kwargs
    with pytest.raises(bx.ParameterError):
        simulate(**args)


def test_simulated_scan_roundtrips_through_x3p(tmp_path):
    (s,) = simulate(1, 1, seed=4, resolution="fast")
    p = bx.write_x3p(s, tmp_path / "sim.x3p")
    r = bx.read_scan(p)
    assert np.array_equal(r.heights, s.heights, equal_nan=True)
    assert r.meta["labels"] == s.meta["labels"]
    assert r.meta["truth"] == s.meta["truth"]


def test_fire_without_seed_differs_by_shot_and_is_repeatable():
    from ballistix.datasets import fire, make_firearm

    gun = make_firearm("G1", resolution="fast")
    a, b, a2 = fire(gun, 0, resolution="fast"), fire(gun, 1, resolution="fast"), fire(gun, 0, resolution="fast")
    assert not np.array_equal(a.heights, b.heights, equal_nan=True)
    assert np.array_equal(a.heights, a2.heights, equal_nan=True)
    a.meta["truth"]["firearm_geometry"]["crater_radius_m"] = -1.0  # truth is a copy, not the gun's own dict
    assert gun.geometry["crater_radius_m"] > 0


def test_default_view_is_bit_for_bit_unchanged():
    """Every simulated data set depends on the order of the random draws in `fire`: the case-head
    view draws from its own stream, so the default output must stay exactly what it was (checksum
    computed on the code before the view existed). Rewritten on purpose once since, for issue 19: the
    firing-pin tip's marks in the crater and the aperture-shear striations on the sheared sector of the
    flowback ring changed the raw heights there (their draws come from streams of their own; every
    other point, and every point the breech-face pipeline keeps for guns without a shear, as before)."""
    import hashlib

    h = hashlib.sha256()
    for s in simulate(n_firearms=2, shots=2, seed=0, resolution="fast"):
        h.update(np.ascontiguousarray(s.heights).tobytes())
    assert h.hexdigest() == "754146bcbab963114d1d28c23196cde3b25b72f1f1b561c2b2dddac9eb8fb052"
    assert (
        simulate(1, 1, seed=0, resolution="fast", view="primer")[0].meta
        == simulate(1, 1, seed=0, resolution="fast")[0].meta
    )


def test_case_head_view():
    gun = bx.datasets.make_firearm("F1", "Glock 17", seed=4, resolution="fast")
    s = bx.datasets.fire(gun, 0, resolution="fast", view="case_head")
    again = bx.datasets.fire(gun, 0, resolution="fast", view="case_head")
    assert np.array_equal(s.heights, again.heights, equal_nan=True) and s.meta == again.meta
    t = s.meta["truth"]
    assert s.shape == (880, 880) and s.dx == 12.5e-6 and t["view"] == "case_head"
    assert abs(t["case_head_radius_m"] - 4.98e-3) < 0.05e-3 and t["primer_radius_m"] == 2.2e-3
    assert abs(t["head_offset_m"]) <= 60e-6 and 20e-6 <= t["headstamp"]["depth_m"] <= 50e-6
    yy, xx = np.mgrid[0:880, 0:880] * s.dx
    cx, cy = t["case_head_center_m"]
    r = np.hypot(xx - cx, yy - cy)
    v = s.valid_mask
    assert not v[r > t["case_head_radius_m"] + 2 * s.dx].any()  # nothing beyond the rim
    assert v[(r > 2.6e-3) & (r < 4.5e-3)].mean() > 0.6  # the head annulus is measured
    pr = np.hypot(xx - t["primer_center_m"][0], yy - t["primer_center_m"][1])
    gap = (pr > 2.2e-3 + s.dx) & (pr < 2.2e-3 + t["primer_gap_m"] - s.dx)
    assert not v[gap].any()  # the primer pocket gap
    assert v[(pr > 1.2e-3) & (pr < 1.6e-3)].mean() > 0.8  # the primer face
    # the headstamp: sunk or raised characters on the annulus, tens of micrometres
    ring = v & (r > 2.9e-3) & (r < 3.85e-3)
    import cv2

    filled = np.nan_to_num(s.heights, nan=float(np.nanmedian(s.heights)))
    zl = s.heights - cv2.GaussianBlur(filled, (0, 0), 12.0)  # relief against the head's 0.15 mm surroundings
    assert (np.abs(zl[ring]) > 15e-6).mean() > 0.02
    with pytest.raises(bx.ParameterError, match="view"):
        bx.datasets.fire(gun, 0, resolution="fast", view="head")
