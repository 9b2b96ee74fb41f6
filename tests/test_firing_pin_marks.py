"""Firing-pin impression: extraction and comparison (ballistix.features.marks.firing_pin, issue 19).

Synthetic craters: a parabolic bowl with its floor lost (as confocal scans lose it), a tilt, and a field of
individual marks fixed to the pin, placed in each scan at a known rotation and centre; measurement noise and
drop-outs differ per scan.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

import ballistix as bx
from ballistix.errors import ParameterError
from ballistix.features.marks import MarkResult
from ballistix.features.marks.firing_pin import (
    FiringPinImpression,
    compare_firing_pins,
    extract_firing_pin,
    polar_unwrap,
)

DX = 4e-6  # scan spacing (m)
N = 520  # scan side (points): 2.08 mm
CRATER_R = 0.45e-3  # bowl radius
APERTURE_R = 0.8e-3
N_THETA = 720  # 0.5 degree: quick tests
KW = dict(n_theta=N_THETA)


def _marks_field(seed: int) -> tuple[np.ndarray, float]:
    """The pin's individual marks on a grid centred on the pin axis (metres), 8 um correlation length, 1 um rms."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal((N + 80, N + 80)), 2.0)
    return f / f.std() * 1e-6, (N + 80 - 1) / 2


def crater_scan(
    marks_seed=1, rotation_deg=0.0, centre_px=(260.0, 260.0), noise_seed=0, depth_m=60e-6, crater_r=CRATER_R
) -> tuple[bx.Scan, SimpleNamespace]:
    """A scan of a firing-pin impression with the pin's marks rotated by ``rotation_deg``
    (``p - c = R(rotation) g``) about ``centre_px``, and the region the breech-face search would give."""
    rng = np.random.default_rng(noise_seed)
    yy, xx = np.mgrid[0:N, 0:N].astype(float)
    cx, cy = centre_px
    px, py = xx - cx, yy - cy
    r = np.hypot(px, py) * DX
    z = np.where(r < crater_r, -depth_m * (1 - (r / crater_r) ** 2), 0.0)
    z += 3e-3 * px * DX - 2e-3 * py * DX  # tilt
    field, c0 = _marks_field(marks_seed)
    a = np.deg2rad(rotation_deg)
    gx = np.cos(a) * px + np.sin(a) * py  # g = R(-rotation) (p - c)
    gy = -np.sin(a) * px + np.cos(a) * py
    z += np.where(r < APERTURE_R, ndimage.map_coordinates(field, [gy + c0, gx + c0], order=1), 0.0)
    z += rng.normal(0, 0.05e-6, z.shape)
    z[r < 0.75 * crater_r] = np.nan  # the floor, below the depth window
    z[rng.random(z.shape) < 0.05] = np.nan  # drop-outs
    region = SimpleNamespace(
        crater_center_m=(cx * DX + rng.normal(0, 4e-6), cy * DX + rng.normal(0, 4e-6)),
        crater_radius_m=0.75 * crater_r,  # the hole: the floor and the steepest wall
        aperture_center_m=(cx * DX, cy * DX),
        aperture_radius_m=APERTURE_R,
        inner_edge="flowback step",
    )
    return bx.Scan(z, DX, DX, {"labels": {"exhibit": f"m{marks_seed}-n{noise_seed}"}}), region


def impression(**kw) -> FiringPinImpression:
    scan, region = crater_scan(**kw)
    fp = extract_firing_pin(scan, region, **KW)
    assert fp.usable, fp.reason
    return fp


@pytest.fixture(scope="module")
def ref():
    return impression(marks_seed=1, noise_seed=0)


def _angle_err(a, b):
    return abs((a - b + 180) % 360 - 180)


# ---------------------------------------------------------------------------------------------- extraction


def test_extraction_keeps_class_shape_apart_from_marks(ref):
    # the bowl and tilt are gone from the marks: what is left is the ~1 um marks field, band-passed
    m = ref.marks_m[np.isfinite(ref.marks_m)]
    assert 0.2e-6 < m.std() < 1.2e-6 and abs(np.median(m)) < 0.1e-6
    # the depth profile follows the parabolic bowl on the measured wall (0.6-1.0 crater radius)
    r = ref.profile_radii_m
    wall = (r > 0.8 * CRATER_R) & (r < 1.0 * CRATER_R)
    truth = 60e-6 * (1 - (r[wall] / CRATER_R) ** 2)
    assert np.nanmax(np.abs(ref.depth_profile_m[wall] - truth)) < 3e-6
    assert ref.depth_m == pytest.approx(60e-6 * (1 - 0.75**2), abs=6e-6)  # deepest measured: the wall's foot
    assert ref.floor_measured_share < 0.05
    # the outline at 10 um depth is the circle where the bowl is 10 um deep
    o = ref.outline(10e-6)
    assert np.isfinite(o).mean() > 0.9
    assert np.nanmedian(o) == pytest.approx(CRATER_R * np.sqrt(1 - 10 / 60), abs=8e-6)


def test_polar_unwrap_is_a_rotation_of_the_angle():
    z = np.add.outer(np.arange(41.0), np.zeros(41))  # height = y
    p = polar_unwrap(z, (1.0, 1.0), (20.0, 20.0), np.array([10.0]), 8)
    np.testing.assert_allclose(p[0], 20 + 10 * np.sin(2 * np.pi * np.arange(8) / 8), atol=1e-9)
    z[20, 30] = np.nan  # theta 0, radius 10
    assert np.isnan(polar_unwrap(z, (1.0, 1.0), (20.0, 20.0), np.array([10.0]), 8)[0, 0])


# ---------------------------------------------------------------------------------------------- comparison


@pytest.mark.parametrize("rotation", [0.0, 37.0, 200.5])
def test_same_pin_found_at_the_known_rotation(ref, rotation):
    b = impression(marks_seed=1, rotation_deg=rotation, centre_px=(263.0, 258.0), noise_seed=5)
    res = compare_firing_pins(ref, b)
    assert isinstance(res, MarkResult) and res.used and res.mark == "firing_pin"
    assert _angle_err(res.rotation_deg, rotation) <= 1.5
    assert res.n_elements >= 15
    assert res.count >= 0.6 * res.n_elements  # rotation invariant: a high count at any rotation
    assert res.score > 0.5
    # the crater centres differ by the fits' error only (4 um each way): the centre search stays near 0
    tx, ty = res.features["translation_um"]
    assert abs(tx) <= 12 and abs(ty) <= 12


def test_different_pins_give_a_low_count(ref):
    other = impression(marks_seed=2, rotation_deg=37.0, noise_seed=5)
    same = compare_firing_pins(ref, impression(marks_seed=1, rotation_deg=37.0, noise_seed=5))
    diff = compare_firing_pins(ref, other)
    assert diff.used
    assert diff.count <= 2 and diff.count < 0.1 * diff.n_elements
    assert diff.score < 0.2 < same.score
    assert same.count >= 5 * max(diff.count, 1)


def test_breech_face_pose_limits_the_search(ref):
    b = impression(marks_seed=1, rotation_deg=37.0, noise_seed=5)
    near = compare_firing_pins(ref, b, rotation_deg=35.0)
    assert _angle_err(near.rotation_deg, 37.0) <= 1.5 and near.count >= 0.6 * near.n_elements
    assert near.features["params"]["window_deg"] == 5.0
    far = compare_firing_pins(ref, b, rotation_deg=120.0)  # a wrong pose: no marks agree there
    assert _angle_err(far.rotation_deg, 120.0) <= 5.0 + 1e-9
    assert far.count <= 2


def test_class_features_tell_crater_sizes_apart(ref):
    same = compare_firing_pins(ref, impression(marks_seed=2, rotation_deg=90.0, noise_seed=3))
    wider = compare_firing_pins(ref, impression(marks_seed=2, noise_seed=3, crater_r=0.54e-3))
    cf, cw = same.class_features, wider.class_features
    assert cf["outline_radius_diff_um"] < 5 and cf["profile_rms_diff_um"] < 3 and cf["depth_ratio"] > 0.9
    assert cw["outline_radius_diff_um"] > 20 and cw["profile_rms_diff_um"] > 5
    # class and individual evidence stay apart: a same-shape pair of other pins has a low count
    assert same.count <= 2


@pytest.mark.parametrize("pose", [None, 35.0])
def test_swapping_the_impressions_gives_the_same_result(ref, pose):
    b = impression(marks_seed=1, rotation_deg=37.0, centre_px=(263.0, 258.0), noise_seed=5)
    ab = compare_firing_pins(ref, b, rotation_deg=pose)
    ba = compare_firing_pins(b, ref, rotation_deg=None if pose is None else -pose)
    assert (ab.count, ab.n_elements, ab.score) == (ba.count, ba.n_elements, ba.score)
    assert _angle_err(ab.rotation_deg, -ba.rotation_deg) < 1e-9
    assert _angle_err(ab.rotation_deg, 37.0) <= 1.5
    # both directions were searched: A's cells in B and B's in A, each finding the pin's marks
    da, db = ab.features["directions"]["a_in_b"], ab.features["directions"]["b_in_a"]
    assert da["count"] >= 0.6 * da["n_elements"] and db["count"] >= 0.6 * db["n_elements"]
    assert ab.count == max(da["count"], db["count"])
    assert ba.features["directions"]["a_in_b"] == db
    # the centre shifts agree: B's moved one way is A's moved the other (rotated into A's frame)
    (tx, ty), (ux, uy) = ab.features["translation_um"], ba.features["translation_um"]
    c, s = np.cos(np.deg2rad(ab.rotation_deg)), np.sin(np.deg2rad(ab.rotation_deg))
    assert np.allclose([tx, ty], [-(c * ux - s * uy), -(s * ux + c * uy)], atol=1e-6)


def test_shift_resampling_matches_map_coordinates():
    # the fast centre shift (one gather per shift, rows below the measured ones skipped) is the bilinear,
    # NaN-safe resampling it replaced
    from ballistix.features.marks import firing_pin as fpm

    rng = np.random.default_rng(3)
    m = ndimage.gaussian_filter(rng.standard_normal((60, 360)), 2.0)
    m[:20] = np.nan  # the crater's hole
    m[rng.random(m.shape) < 0.05] = np.nan
    for d in [(1.5, -2.25), (-3.0, 0.7), (0.0, 4.0)]:
        n_t = m.shape[1]
        theta = 2 * np.pi * np.arange(n_t) / n_t
        r = np.arange(m.shape[0])[:, None]
        x, y = r * np.cos(theta) + d[0], r * np.sin(theta) + d[1]
        coords = [np.hypot(x, y), np.mod(np.arctan2(y, x), 2 * np.pi) / (2 * np.pi) * n_t]
        valid = ~np.isnan(m)
        mz = np.concatenate([np.where(valid, m, 0.0), np.where(valid[:, :1], m[:, :1], 0.0)], 1)
        vw = np.concatenate([valid, valid[:, :1]], 1).astype(float)
        ref_v = ndimage.map_coordinates(mz, coords, order=1, mode="constant")
        ref_v[ndimage.map_coordinates(vw, coords, order=1, mode="constant") < 1 - 1e-9] = np.nan
        fast = fpm._shift_centre(m, 1.0, d)
        np.testing.assert_allclose(fast, ref_v, atol=1e-12)
        row0 = 12  # everything a shift of <= 5 can reach from below row 20 is unmeasured
        crop = fpm._resample(m[row0:], fpm._centre_shift_geometry(60, n_t, 1.0, d, row0))
        np.testing.assert_allclose(crop, ref_v[row0:], atol=1e-12)


def test_the_search_skips_the_crater_hole_and_bounds_its_centres(ref):
    # speed as a property: rows inside the hole of missing data are never resampled or correlated, and the
    # coarse-to-fine centre search evaluates each centre once
    b = impression(marks_seed=1, rotation_deg=37.0, noise_seed=5)
    res = compare_firing_pins(ref, b)
    hole_rows = int(0.75 * CRATER_R / 4e-6)  # polar rows of the synthetic floor lost
    assert res.features["rows_skipped"] >= hole_rows - 20
    # 7 x 7 coarse (8 um over +-24 um) and 5 x 5 fine (4 um over +-8 um) less the 9 centres both hold
    assert res.features["centres_evaluated"] <= 49 + 25 - 9


# ---------------------------------------------------------------------------------------------- not used


def _flat_scan():
    rng = np.random.default_rng(0)
    return bx.Scan(rng.normal(0, 0.5e-6, (N, N)), DX, DX, {"source": "flat.x3p"})


@pytest.mark.parametrize(
    "case, words",
    [
        ("no crater or aperture", "no firing-pin crater"),
        ("flat inside the aperture", "no firing-pin depression"),
        ("processed scan", "already processed"),
        ("mask edge", "clean mask edge"),
        ("nothing measured", "too few measured points"),
    ],
)
def test_missing_impression_is_not_used_with_a_reason(ref, case, words):
    centre = (260 * DX, 260 * DX)
    region = SimpleNamespace(
        crater_center_m=None, crater_radius_m=None, aperture_center_m=centre, aperture_radius_m=APERTURE_R
    )
    scan = _flat_scan()
    if case == "no crater or aperture":
        region.aperture_center_m = region.aperture_radius_m = None
    elif case == "processed scan":
        scan = bx.Scan(scan.heights, DX, DX, {"processing": [{"step": "find_breech_face", "params": {}}]})
    elif case == "mask edge":
        region.inner_edge = "mask edge"
    elif case == "nothing measured":
        scan, region = crater_scan()
        z = scan.heights.copy()
        z[np.hypot(*np.mgrid[0:N, 0:N] - 260.0) * DX < APERTURE_R] = np.nan
        scan = bx.Scan(z, DX, DX)
    fp = extract_firing_pin(scan, region, **KW)
    assert not fp.usable and words in fp.reason
    res = compare_firing_pins(ref, fp)
    assert not res.used and res.count == 0 and np.isnan(res.score)  # no evidence, not zero evidence
    assert res.reason.startswith("scan B:") and words in res.reason


def test_simulated_scans_and_their_processed_versions():
    gun = bx.datasets.make_firearm("g0", "Ruger P95", seed=0, resolution="fast")
    raw = bx.datasets.fire(gun, 0, resolution="fast")
    fp = extract_firing_pin(raw)  # the breech-face search locates the crater
    assert isinstance(fp, FiringPinImpression)
    assert fp.centre_m is not None and fp.usable == (fp.reason is None)
    done = extract_firing_pin(bx.preprocess(raw))
    assert not done.usable and "already processed" in done.reason


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(spacing_um=0.0), "spacing_um"),
        (dict(spacing_um=float("nan")), "spacing_um"),
        (dict(n_theta=100), "n_theta"),
        (dict(n_theta=722), "multiple of 8"),
        (dict(short_cutoff_um=200.0), "short_cutoff_um"),
        (dict(outer_radius_crater_share=0.5), "outer_radius_crater_share"),
    ],
)
def test_bad_extraction_parameters(kw, words):
    scan, region = crater_scan()
    with pytest.raises(ParameterError, match=words):
        extract_firing_pin(scan, region, **kw)


def test_bad_comparison_input(ref):
    with pytest.raises(ParameterError, match="ballistix Scan"):
        extract_firing_pin(np.zeros((10, 10)))
    with pytest.raises(ParameterError, match="FiringPinImpression"):
        compare_firing_pins(ref, np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="rotation_deg"):
        compare_firing_pins(ref, ref, rotation_deg=float("nan"))
    with pytest.raises(ParameterError, match="ccf_threshold"):
        compare_firing_pins(ref, ref, ccf_threshold=1.5)
    scan, region = crater_scan()
    other = extract_firing_pin(scan, region, n_theta=1440)
    with pytest.raises(ParameterError, match="different polar grids"):
        compare_firing_pins(ref, other)


# ---------------------------------------------------------------------------------------------- real scans


def test_fadul_raw_same_gun_above_different_guns(shared_data):
    names = ["fadul-1-1", "fadul-1-2", "fadul-2-1"]
    paths = [shared_data / "fadul-raw" / f"{n}-raw.x3p" for n in names]
    if not all(p.exists() for p in paths):
        pytest.skip("raw Fadul scans not available")
    fps = [extract_firing_pin(bx.read_x3p(p)) for p in paths]
    assert all(fp.usable for fp in fps), [fp.reason for fp in fps]
    km = compare_firing_pins(fps[0], fps[1])
    knm = [compare_firing_pins(fps[0], fps[2]), compare_firing_pins(fps[1], fps[2])]
    # measured (both directions combined): KM count 2-4 of 71-72, score 0.14-0.18, rotation 10.9 deg (breech face:
    # 24; the one-way comparisons found 20.6 and 8.8 deg); KNM counts 0-2, scores <= 0.016. The score separates
    # the pairs; the count does not (a KNM pair reaches 2 too), so only the score is held here.
    assert km.count >= 1 and km.score > 0.1 > max(r.score for r in knm)
    # the rotation is not held: with 2-4 congruent cells the consensus sits between the one-way answers (20.6 and
    # 8.8 deg) and moved from 10.9 to 8.9 deg between two environments (breech face: 24 deg)
    back = compare_firing_pins(fps[1], fps[0])
    assert (back.count, back.n_elements, back.score) == (km.count, km.n_elements, km.score)
    assert _angle_err(back.rotation_deg, -km.rotation_deg) < 1e-9
    cf = km.class_features
    assert cf["outline_radius_diff_um"] < min(r.class_features["outline_radius_diff_um"] for r in knm)
