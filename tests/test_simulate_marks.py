"""The simulator's firing-pin impressions and aperture-shear striations (issue 19): class shapes shared
within a model, individual marks reproduced shot to shot in the gun's frame, guns without shear."""

import cv2
import numpy as np
import pytest

import ballistix as bx
from ballistix.datasets import MODELS, fire, make_firearm
from ballistix.datasets.simulate import FIRING_PIN_SHAPES
from ballistix.features.filters import gaussian_bandpass

RES = "standard"  # 6.25 um: the crater floor the firing_pin view measures is ~0.3 mm across


def _gun(i: int, model: str = "Ruger P95", shear: bool | None = None):
    """The first gun from seed ``i`` on whose shear is as asked (None: any)."""
    for seed in range(i, i + 200):
        g = make_firearm(f"G{seed}", model, seed=seed, resolution=RES)
        if shear is None or (g.geometry["shear_deg"] is not None) == shear:
            return g
    raise AssertionError("no such gun")


def _fire(gun, k, view="firing_pin", **kw):
    return fire(gun, k, resolution=RES, view=view, **kw)


def _residual(s: bx.Scan, region: np.ndarray, long_cutoff_um: float = 100.0) -> np.ndarray:
    """Heights minus the smooth class shape (form and crater profile): a Gaussian high-pass (100 um)."""
    z = np.where(region, s.heights, np.nan)
    return gaussian_bandpass(z, s.dx, short_cutoff_um=8.0, long_cutoff_um=long_cutoff_um)


def _to_b(za: np.ndarray, a: bx.Scan, b: bx.Scan) -> np.ndarray:
    """Scan a's field mapped onto scan b's grid by the true relative pose (NaN where a has nothing)."""
    ta, tb = a.meta["truth"], b.meta["truth"]
    rel = np.deg2rad(ta["rotation_deg"] - tb["rotation_deg"])
    R = np.array([[np.cos(rel), -np.sin(rel)], [np.sin(rel), np.cos(rel)]])
    ca, cb = np.array(ta["firing_pin_center_m"]) / a.dx, np.array(tb["firing_pin_center_m"]) / b.dx
    M = np.hstack([R, (ca - R @ cb)[:, None]])  # p_a = R (p_b - c_b) + c_a, in pixels
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    w = cv2.warpAffine(np.nan_to_num(za, nan=0.0), M, za.shape[::-1], flags=flags)
    ok = cv2.warpAffine((~np.isnan(za)).astype(np.float32), M, za.shape[::-1], flags=flags) > 0.99
    return np.where(ok, w, np.nan)


def _crater(s: bx.Scan, inner_share: float = 0.8) -> np.ndarray:
    t = s.meta["truth"]
    yy, xx = np.mgrid[0 : s.shape[0], 0 : s.shape[1]] * s.dx
    r = np.hypot(xx - t["firing_pin_center_m"][0], yy - t["firing_pin_center_m"][1])
    return r < inner_share * t["crater_radius_m"]


def _aligned_corr(a: bx.Scan, b: bx.Scan, region, long_cutoff_um: float = 100.0) -> tuple[float, int]:
    wa = _to_b(_residual(a, region(a), long_cutoff_um), a, b)
    zb = _residual(b, region(b), long_cutoff_um)
    both = ~np.isnan(wa) & ~np.isnan(zb)
    return float(np.corrcoef(wa[both], zb[both])[0, 1]), int(both.sum())


def test_crater_marks_repeat_within_a_gun_not_across():
    g1, g2 = _gun(0), _gun(50)
    a, b, c = _fire(g1, 0, difficulty="easy"), _fire(g1, 1, difficulty="easy"), _fire(g2, 0, difficulty="easy")
    same, n_same = _aligned_corr(a, b, _crater)
    other, n_other = _aligned_corr(a, c, _crater)
    assert n_same > 100 and n_other > 100  # the firing_pin view measures the crater floor
    print(f"crater residual correlation: same gun {same:.3f} ({n_same} points), other gun {other:.3f}")
    assert same > 0.6, same
    assert abs(other) < 0.2, other


def test_crater_marks_survive_realistic_firing():
    g = _gun(3)
    a, b = _fire(g, 0, difficulty="realistic"), _fire(g, 1, difficulty="realistic")
    same, _ = _aligned_corr(a, b, _crater)
    assert same > 0.3, same


def test_primer_view_hides_the_crater_as_the_raw_nist_scans_do():
    g = _gun(0)
    s = _fire(g, 0, view="primer", difficulty="easy")
    fp = _fire(g, 0, difficulty="easy")
    assert s.valid_mask[_crater(s)].mean() < 0.02
    assert fp.valid_mask[_crater(fp, 0.2)].mean() > 0.3
    # the same firing: outside the crater the two views are the same scan (where both measured; what is lost
    # near the crater's rim depends on its walls)
    both = s.valid_mask & fp.valid_mask & ~_crater(s, 1.0)
    assert np.array_equal(s.heights[both], fp.heights[both])
    far = ~_crater(s, 2.0)
    assert np.array_equal(s.valid_mask[far], fp.valid_mask[far])


def _along_across(s: bx.Scan, direction_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t = s.meta["truth"]
    yy, xx = np.mgrid[0 : s.shape[0], 0 : s.shape[1]] * s.dx
    dx_, dy_ = xx - t["firing_pin_center_m"][0], yy - t["firing_pin_center_m"][1]
    a = np.deg2rad(direction_deg)
    phi = np.rad2deg(np.arctan2(dy_, dx_)) % 360
    return dx_ * np.cos(a) + dy_ * np.sin(a), -dx_ * np.sin(a) + dy_ * np.cos(a), np.hypot(dx_, dy_), phi


def _shear_region(s: bx.Scan, sh: dict | None = None) -> np.ndarray:
    """The striated zone of the sheared sector (``sh``: the shear's truth, default the scan's own)."""
    t = s.meta["truth"]
    sh = sh or t["aperture_shear"]
    along, _, r, phi = _along_across(s, sh["direction_deg"])
    dphi = np.abs((phi - sh["angle_deg"] + 180) % 360 - 180)
    inside = (
        (dphi < sh["width_deg"] / 2 - 5) & (r > t["crater_radius_m"] + 30e-6) & (r < t["aperture_radius_m"] - 30e-6)
    )
    return inside & (along > sh["start_m"] + 30e-6) & (along < sh["start_m"] + sh["length_m"] - 30e-6)


def _shear_profile(s: bx.Scan, sh: dict | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The striated zone's heights averaged along the striations: a profile across them (1 um bins), and
    the share of the zone's height variance that the profile keeps (near 1 for striations, small for an
    isotropic texture)."""
    sh = sh or s.meta["truth"]["aperture_shear"]
    z = gaussian_bandpass(
        np.where(_shear_region(s, sh), s.heights, np.nan), s.dx, short_cutoff_um=5.0, long_cutoff_um=250.0
    )
    _, across, _, _ = _along_across(s, sh["direction_deg"])
    ok = ~np.isnan(z)
    bins = np.round(across[ok] / 1e-6).astype(int)
    lo = bins.min()
    total = np.bincount(bins - lo, z[ok])
    count = np.bincount(bins - lo)
    prof = np.where(count > 3, total / np.maximum(count, 1), np.nan)
    kept = float(np.nanvar(prof[np.round(across[ok] / 1e-6).astype(int) - lo]) / np.var(z[ok]))
    return np.arange(lo, lo + prof.size), prof, kept


def _profile_corr(a: bx.Scan, b: bx.Scan) -> float:
    xa, pa, _ = _shear_profile(a)
    xb, pb, _ = _shear_profile(b)
    common = np.intersect1d(xa, xb)
    u, v = pa[np.isin(xa, common)], pb[np.isin(xb, common)]
    ok = ~np.isnan(u) & ~np.isnan(v)
    assert ok.sum() > 100  # at least 0.1 mm of profile in common
    return float(np.corrcoef(u[ok], v[ok])[0, 1])


def test_shear_striations_repeat_shot_to_shot():
    g1 = _gun(0, shear=True)
    shots = [_fire(g1, k, view="primer", difficulty="moderate") for k in range(2)]
    for s in shots:
        sh = s.meta["truth"]["aperture_shear"]
        assert sh["present"] and sh["length_m"] > 0 and sh["amplitude"] > 0
    same = _profile_corr(*shots)
    assert same > 0.6, same


def test_shear_profile_differs_between_guns():
    g1, g2 = _gun(0, shear=True), _gun(60, shear=True)
    p1, p2 = g1.shear_profile, g2.shear_profile
    n = min(p1.size, p2.size)
    assert abs(np.corrcoef(p1[:n], p2[:n])[0, 1]) < 0.3
    assert 1.0e-6 <= g1.geometry["aperture_shear"]["striation_rms_m"] <= 2.0e-6


def test_gun_without_shear_leaves_no_striations():
    g = _gun(0, shear=False)
    assert g.shear_profile is None and g.geometry["aperture_shear"] == {"present": False}
    s = _fire(g, 0, view="primer", difficulty="easy")
    assert s.meta["truth"]["aperture_shear"] == {"present": False}
    # the same sector of the ring, averaged along the same direction, keeps little of its variance: no
    # striations; the sheared gun's keeps most of it
    sheared = _fire(_gun(0, shear=True), 0, view="primer", difficulty="easy")
    sh = sheared.meta["truth"]["aperture_shear"]
    _, _, kept_none = _shear_profile(s, sh)
    _, _, kept_shear = _shear_profile(sheared)
    assert kept_shear > 0.6 and kept_none < 0.4, (kept_shear, kept_none)


@pytest.mark.parametrize("model", ["Ruger P95", "Glock 17"])
def test_class_shape_shared_within_a_model(model):
    g1, g2 = _gun(0, model), _gun(40, model)
    f1, f2 = g1.geometry["firing_pin"], g2.geometry["firing_pin"]
    shape = FIRING_PIN_SHAPES[MODELS[model]["pin"]]
    assert f1["shape"] == f2["shape"] == MODELS[model]["pin"]
    nominal = MODELS[model]["pin_depth_um"] * 1e-6
    for f in (f1, f2):
        assert abs(f["depth_m"] / nominal - 1) <= 0.08 + 1e-9
        assert abs(f["aspect"] - shape["aspect"]) < 5 * shape["aspect_sd"] + 1e-9
    # individual marks differ between the two guns of the model
    assert abs(np.corrcoef(g1.pin_marks.ravel(), g2.pin_marks.ravel())[0, 1]) < 0.1


def test_glock_impression_is_elongated_ruger_round():
    for model, lo, hi in (("Glock 17", 1.25, 1.6), ("Ruger P95", 0.8, 1.2)):
        g = _gun(0, model)
        s = _fire(g, 0, rotation_deg=0.0)
        # the impression (deeper than 20 um below the primer face), along and across the pin's orientation
        t = s.meta["truth"]
        face = np.nanmedian(s.heights[~_crater(s, 2.5) & s.valid_mask])
        deep = s.valid_mask & (np.nan_to_num(s.heights, nan=0.0) < face - 20e-6) & _crater(s, 1.05)
        yy, xx = np.nonzero(deep)
        a = np.deg2rad(t["firing_pin"]["orientation_deg"])
        u = xx * np.cos(a) + yy * np.sin(a)
        v = -xx * np.sin(a) + yy * np.cos(a)
        ratio = np.ptp(u) / np.ptp(v)
        assert lo < ratio < hi, (model, ratio)


def test_truth_describes_the_marks():
    g = _gun(0, shear=True)
    s = _fire(g, 0, view="primer")
    t = s.meta["truth"]
    fp, sh = t["firing_pin"], t["aperture_shear"]
    assert fp["shape"] == "hemispherical" and fp["radius_m"] == t["crater_radius_m"]
    assert 120e-6 < fp["depth_m"] < 230e-6 and fp["tip_radius_m"] > fp["radius_m"]
    assert sh["present"] and sh["angle_deg"] == pytest.approx((g.geometry["shear_deg"] + t["rotation_deg"]) % 360)
    assert t["crater_radius_m"] < sh["start_m"] < t["aperture_radius_m"]
    assert s.meta["truth"]["firearm_geometry"]["firing_pin"]["shape"] == "hemispherical"


def test_view_is_checked():
    g = _gun(0)
    with pytest.raises(bx.ParameterError, match="view"):
        fire(g, 0, resolution=RES, view="pin")


# -- the opt-in realistic crater (crater="realistic"): shaped after the raw Fadul Ruger P95 scans ------------------


def _realistic(i: int, model: str = "Ruger P95", **kw):
    return make_firearm(f"C{i}", model, seed=i, resolution=RES, crater="realistic", **kw)


def _crater_profile(s: bx.Scan, edges_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Measured share and median height (relative to the face 1.45-1.6 mm out) of rings about the true
    firing-pin axis."""
    c = s.meta["truth"]["firing_pin_center_m"]
    yy, xx = np.mgrid[0 : s.shape[0], 0 : s.shape[1]] * s.dx
    r = np.hypot(xx - c[0], yy - c[1])
    face = np.nanmedian(s.heights[(r > 1.45e-3) & (r < 1.6e-3)])
    share, height = [], []
    for lo, hi in zip(edges_m[:-1], edges_m[1:]):
        z = s.heights[(r >= lo) & (r < hi)]
        share.append(float(np.mean(~np.isnan(z))))
        height.append(float(np.nanmedian(z) - face) if share[-1] > 0 else np.nan)
    return np.array(share), np.array(height)


def test_default_crater_is_v1_and_realistic_keeps_the_guns_draws():
    v1 = make_firearm("C0", seed=0, resolution="fast")
    assert v1.crater == "v1" and "crater" not in v1.geometry
    assert "crater" not in fire(v1, 0, resolution="fast").meta["truth"]
    re = make_firearm("C0", seed=0, resolution="fast", crater="realistic")
    assert re.crater == "realistic" and re.geometry["crater"]["model"] == "realistic"
    np.testing.assert_array_equal(v1.surface, re.surface)  # the breech face is the same gun's
    assert re.geometry["aperture_radius_m"] > v1.geometry["aperture_radius_m"]
    assert re.geometry["crater_radius_m"] > v1.geometry["crater_radius_m"]
    s = fire(re, 0, resolution="fast")
    assert s.meta["truth"]["crater"] == "realistic" and "realistic crater" in s.meta["comment"]


@pytest.mark.parametrize("bad", ["v2", None, 1])
def test_crater_is_checked(bad):
    with pytest.raises(bx.errors.ParameterError, match="crater must be one of"):
        make_firearm("X", resolution="fast", crater=bad)
    with pytest.raises(bx.errors.ParameterError, match="crater must be one of"):
        bx.datasets.simulate(1, 1, resolution="fast", crater=bad)


def test_simulate_passes_the_crater_to_every_gun():
    scans = bx.datasets.simulate(2, 1, seed=3, resolution="fast", crater="realistic")
    assert [s.meta["truth"]["crater"] for s in scans] == ["realistic", "realistic"]
    v1 = bx.datasets.simulate(2, 1, seed=3, resolution="fast")
    assert all("crater" not in s.meta["truth"] for s in v1)


@pytest.mark.parametrize("seed", [0, 1])
def test_realistic_crater_wall_measured_as_on_the_raw_fadul_scans(seed):
    # raw Fadul (Ruger P95): the hole of missing data 0.66-0.74 mm in radius, the wall measured from ~20-70 um
    # below the face up to a 29-39 um flowback lip, the aperture step at ~1.28 mm
    g = _realistic(seed)
    s = fire(g, 0, resolution=RES, difficulty="realistic")
    edges = np.arange(0.3e-3, 1.45e-3, 50e-6)
    share, height = _crater_profile(s, edges)
    mids = (edges[:-1] + edges[1:]) / 2
    assert share[mids < 0.5e-3].max() < 0.05  # the floor and the steep wall are lost (depth window, slope)
    wall = (mids > 0.6e-3) & (mids < 0.85e-3)
    assert np.nanmin(height[wall & (share > 0.05)]) < -20e-6  # the wall is measured below the face
    assert share[(mids > 0.85e-3) & (mids < 1.1e-3)].mean() > 0.5  # the burnished upper wall and lip
    lip = np.nanmax(height[(mids > 0.8e-3) & (mids < 1.25e-3)])
    assert 18e-6 < lip < 60e-6
    ra = s.meta["truth"]["aperture_radius_m"]
    assert 1.1e-3 < ra < 1.45e-3
    # the v1 crater of the same gun: a sharp-rimmed hole, nothing measured below the face
    s1 = fire(make_firearm(f"C{seed}", seed=seed, resolution=RES), 0, resolution=RES, difficulty="realistic")
    share1, height1 = _crater_profile(s1, edges)
    assert not np.any((share1 > 0.05) & (height1 < -20e-6))


def test_realistic_crater_found_by_the_breech_face_search():
    from ballistix.features.preprocessing import find_breech_face

    holes, apertures = [], []
    for i in range(3):
        g = _realistic(10 + i)
        reg = find_breech_face(fire(g, 0, resolution=RES, difficulty="realistic"), check=False)
        holes.append(reg.crater_radius_m)
        apertures.append(reg.aperture_radius_m)
    # raw Fadul: hole 0.664-0.741 mm, aperture 1.258-1.287 mm (v1: 0.54 and 1.05 mm)
    assert 0.55e-3 < np.median(holes) < 0.8e-3, holes
    assert 1.1e-3 < np.median(apertures) < 1.45e-3, apertures


def test_pin_marks_on_the_measured_wall_repeat_within_a_gun():
    # the pin's tip marks are printed on the measured upper wall, so its residual repeats shot to shot
    def wall(s):
        t = s.meta["truth"]
        yy, xx = np.mgrid[0 : s.shape[0], 0 : s.shape[1]] * s.dx
        r = np.hypot(xx - t["firing_pin_center_m"][0], yy - t["firing_pin_center_m"][1])
        return (r > 0.6e-3) & (r < 0.95e-3)

    g1, g2 = _realistic(20), _realistic(21)
    a, b, c = (fire(g, k, resolution=RES, difficulty="easy") for g, k in ((g1, 0), (g1, 1), (g2, 0)))
    # a 30 um high-pass: the rim's rounded shoulder is the same ring on every gun, and at 100 um its curvature
    # alone correlates between guns aligned on their axes (0.6-0.7); the pin's marks reach down to 6 um
    same, n_same = _aligned_corr(a, b, wall, long_cutoff_um=30.0)
    other, n_other = _aligned_corr(a, c, wall, long_cutoff_um=30.0)
    print(f"wall residual correlation: same gun {same:.3f}, other gun {other:.3f}")
    assert n_same > 1000 and n_other > 1000
    assert same > 0.4, same
    assert abs(other) < 0.2, other


def test_firing_pin_extractor_usable_on_the_realistic_crater():
    from ballistix.features.marks import compare_firing_pins, extract_firing_pin

    g1, g2 = _realistic(100), _realistic(102)
    shots = [fire(g, k, resolution=RES, difficulty="realistic") for g, k in ((g1, 0), (g1, 1), (g2, 0))]
    fps = [extract_firing_pin(s) for s in shots]
    assert all(fp.usable for fp in fps), [fp.reason for fp in fps]
    assert all(fp.depth_m > 20e-6 for fp in fps)

    def rel(i, j):
        return (shots[j].meta["truth"]["rotation_deg"] - shots[i].meta["truth"]["rotation_deg"]) % 360

    same = compare_firing_pins(fps[0], fps[1], rotation_deg=rel(0, 1))
    other = compare_firing_pins(fps[0], fps[2], rotation_deg=rel(0, 2))
    assert same.used and other.used
    assert same.score > other.score + 0.1, (same.score, other.score)
    # v1's sharp-rimmed hole: the extractor finds no impression to compare (why the realistic crater exists)
    v1 = extract_firing_pin(fire(make_firearm("C100", seed=100, resolution=RES), 0, resolution=RES))
    assert not v1.usable


def test_realistic_crater_of_a_flat_floored_pin():
    # the Glock's rectangular striker: the same rounded rim, and in the firing_pin view its floor is measured
    g = _realistic(5, "Glock 17")
    s = fire(g, 0, resolution=RES, view="firing_pin", difficulty="easy")
    assert s.meta["truth"]["crater"] == "realistic"
    edges = np.arange(0.0, 1.45e-3, 50e-6)
    share, height = _crater_profile(s, edges)
    assert share[:4].mean() > 0.5  # the flat floor
    depth = -np.nanmin(height)
    assert 0.7 * g.geometry["firing_pin"]["depth_m"] < depth < 1.5 * g.geometry["firing_pin"]["depth_m"]


def test_realistic_crater_shear_found_by_the_shear_extractor():
    """With crater="realistic" the shear is shaped after the raw Fadul one (a cut pocket below the face with
    radial striations, a trough beyond the aperture behind it): `extract_aperture_shear` finds it on the
    sheared gun's shots, the profiles of two shots agree, and a gun without shear gives none."""
    from ballistix.features.marks import compare_shears
    from ballistix.features.marks.aperture_shear import extract_aperture_shear

    def gun(shear: bool):
        for seed in range(200):
            g = make_firearm(f"G{seed}", "Ruger P95", seed=seed, resolution=RES, crater="realistic")
            if (g.geometry["shear_deg"] is not None) == shear:
                return g
        raise AssertionError("no such gun")

    g = gun(True)
    shots = [_fire(g, k, view="primer", difficulty="moderate") for k in range(4)]
    found = [extract_aperture_shear(s) for s in shots]
    for s in shots:
        t = s.meta["truth"]["aperture_shear"]
        assert t["present"] and t["pocket_depth_m"] > 0 and t["displacement_m"] > 0
    usable = [sh for sh in found if sh.usable]
    assert len(usable) >= 2, [sh.reason for sh in found]  # the real fadul-1-1 has one, fadul-1-2 none
    for sh in usable:
        assert sh.features["angle_to_radius_deg"] < 35 and sh.features["area_um2"] >= 10_000
    res = compare_shears(usable[0], usable[1])
    assert res.used and res.count >= 2, (res.count, res.n_elements)
    plain = _fire(gun(False), 0, view="primer", difficulty="moderate")
    assert not extract_aperture_shear(plain).usable
