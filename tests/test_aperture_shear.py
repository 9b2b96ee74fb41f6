"""The aperture shear (ballistix.features.marks.aperture_shear): striation profiles from patches and raw
scans, and their CMPS comparison. Synthetic data made here: a random 1-D profile extruded along a
direction (striations), and a primer with a crater, a raised flowback ring and, or not, a cut-down
striated sector."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import ballistix as bx
from ballistix.errors import ParameterError
from ballistix.features.marks import MarkResult
from ballistix.features.marks.aperture_shear import (
    ShearProfile,
    compare_shears,
    extract_aperture_shear,
    shear_profile,
    striation_map,
)
from ballistix.features.preprocessing.region import BreechFaceRegion

STEP = 3.125e-6  # the raw Fadul scans' spacing


def _signature(rng, length_um: float, *, corr_um: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """A random striation signature: positions (um, every 0.5 um) and heights (um), smoothed noise."""
    x = np.arange(-200.0, length_um + 200.0, 0.5)
    h = ndimage.gaussian_filter1d(rng.normal(size=x.size), corr_um / 0.5)
    return x, h / h.std()


def _striated_patch(sig, angle_deg: float, shape=(40, 200), *, offset_um=0.0, noise_um=0.1, rng=None):
    """Heights (m) of striations along ``angle_deg`` on a rectangle ``shape`` = (points along the
    striations, points across them), turned by the angle on a square grid (NaN outside it): ``sig``
    evaluated at the coordinate across the lines (plus ``offset_um``), plus white noise. The coordinate
    across runs along (-sin, cos) of the angle, from the rectangle's centre."""
    x, h = sig
    n_along, n_across = shape
    n = int(np.ceil(np.hypot(n_along, n_across))) + 2
    a = np.radians(angle_deg)
    X = (np.arange(n) - n / 2)[None, :] * STEP * 1e6
    Y = (np.arange(n) - n / 2)[:, None] * STEP * 1e6
    along = X * np.cos(a) + Y * np.sin(a)
    s = -X * np.sin(a) + Y * np.cos(a)
    z = np.interp(s + offset_um + (x[-1] - 200.0) / 2, x, h)
    if rng is not None:
        z = z + rng.normal(0, noise_um, z.shape)
    inside = (np.abs(along) <= n_along / 2 * STEP * 1e6) & (np.abs(s) <= n_across / 2 * STEP * 1e6)
    return np.where(inside, z, np.nan) * 1e-6


def _profile(sig, angle_deg, *, offset_um=0.0, shape=(40, 200), seed=0, hint=None):
    a = np.radians(angle_deg)
    axis = (-np.sin(a), np.cos(a)) if hint is None else hint
    z = _striated_patch(sig, angle_deg, shape, offset_um=offset_um, rng=np.random.default_rng(seed))
    return shear_profile(z, STEP, axis_hint=axis)


# ------------------------------------------------------------------------------------------------ profiles
@pytest.mark.parametrize("angle_deg", [0.0, 30.0, 100.0, 150.0])
def test_profile_follows_the_striation_direction(angle_deg):
    sig = _signature(np.random.default_rng(1), 700)
    p = _profile(sig, angle_deg, shape=(120, 120))
    assert p.usable, p.reason
    # the direction found is the striations' (mod 180), within 2 degrees (central differences on the
    # grid bias oblique directions by about a degree)
    assert abs((p.direction_deg - angle_deg + 90) % 180 - 90) < 2.0
    assert p.coherence > 0.8
    assert p.profile_um.ndim == 1 and p.spacing_um == pytest.approx(3.125)


def test_profile_is_band_passed():
    """A slope and a bow across the striations are form, not striation: the long cutoff takes them out."""
    sig = _signature(np.random.default_rng(2), 700)
    z = _striated_patch(sig, 90.0, (40, 200))  # lines along y: the profile runs along x
    X = np.arange(z.shape[1])[None, :] * STEP
    bowed = z + 20e-6 * X / X.max() + 10e-6 * (X / X.max() - 0.5) ** 2
    a = shear_profile(z, STEP).profile_um
    b = shear_profile(bowed, STEP).profile_um
    inner = slice(30, -30)  # the filter's ends see the form's ends
    assert np.nanmax(np.abs(a[inner] - b[inner])) < 0.1 * np.nanstd(a)


def test_array_without_spacing_and_bad_input_raise():
    z = np.zeros((20, 20))
    with pytest.raises(ParameterError, match="spacing_m"):
        shear_profile(z)
    with pytest.raises(ParameterError, match="2-D float array"):
        shear_profile(np.zeros(50), STEP)
    with pytest.raises(ParameterError, match="mask"):
        shear_profile(z, STEP, mask=np.ones((5, 5), bool))
    with pytest.raises(ParameterError, match="band_um"):
        shear_profile(z, STEP, band_um=(100, 6))
    with pytest.raises(ParameterError, match="axis_hint"):
        shear_profile(z, STEP, axis_hint=(0, 0))
    with pytest.raises(ParameterError, match="spacing_m"):
        striation_map(z)


def test_short_patch_is_not_usable():
    sig = _signature(np.random.default_rng(3), 300)
    p = shear_profile(_striated_patch(sig, 0.0, (30, 30)), STEP)  # 94 um across the striations
    assert not p.usable and "across the striations" in p.reason


# ------------------------------------------------------------------------------------------------ comparison
@pytest.mark.parametrize("angle_deg", [0.0, 45.0, 120.0])
@pytest.mark.parametrize("offset_um", [0.0, 37.5, -90.0])
def test_same_striations_shifted_are_congruent(angle_deg, offset_um):
    sig = _signature(np.random.default_rng(4), 900)
    a = _profile(sig, angle_deg, shape=(40, 220), seed=5)
    b = _profile(sig, angle_deg, shape=(40, 220), offset_um=offset_um, seed=6)
    res = compare_shears(a, b)
    assert isinstance(res, MarkResult) and res.mark == "aperture_shear" and res.used
    # A's profile at x faces B's at x + shift: B was sampled offset_um further along, so -offset_um
    assert res.shift_um == pytest.approx(-offset_um, abs=4.0)
    assert res.count >= res.n_elements - 2 and res.n_elements >= 7
    assert res.score > 0.8
    assert res.rotation_deg is None


@pytest.mark.parametrize("seed", range(4))
def test_different_striations_are_not_congruent(seed):
    rng = np.random.default_rng(100 + seed)
    a = _profile(_signature(rng, 900), 0.0, shape=(40, 220), seed=seed)
    b = _profile(_signature(rng, 900), 0.0, shape=(40, 220), seed=seed + 50)
    same = compare_shears(a, _profile(_signature(np.random.default_rng(100 + seed), 900), 0.0, shape=(40, 220), seed=9))
    res = compare_shears(a, b)
    assert res.used
    # a consensus shift is always found (the best of many chances): a few segments agree by chance, and
    # the whole-profile correlation there is biased up (0.06-0.48 on 12 seeds of this set-up)
    assert res.count <= res.n_elements // 2
    assert res.count < same.count - 2
    assert abs(res.score) < 0.6 < 0.8 < same.score


def test_profiles_of_different_lengths():
    """A short shear against a longer one of the same gun: the short one's segments all find their place."""
    sig = _signature(np.random.default_rng(7), 1200)
    short = _profile(sig, 20.0, shape=(40, 110), offset_um=60.0, seed=1)
    long_ = _profile(sig, 20.0, shape=(40, 320), seed=2)
    assert long_.length_um > 2 * short.length_um
    res = compare_shears(short, long_)
    assert res.count >= res.n_elements - 1
    assert res.features["length_um"] == [short.length_um, long_.length_um]


def test_reversed_profile_found_only_when_asked():
    sig = _signature(np.random.default_rng(8), 900)
    a = _profile(sig, 0.0, shape=(40, 220), seed=1)
    b = _profile(sig, 0.0, shape=(40, 220), seed=2, hint=(0.0, -1.0))  # runs the other way
    plain = compare_shears(a, b)
    both = compare_shears(a, b, try_reversed=True)
    assert both.features["reversed"] and not plain.features["reversed"]
    assert both.count >= both.n_elements - 2 > plain.count


def test_not_usable_shear_is_not_zero_evidence():
    sig = _signature(np.random.default_rng(9), 900)
    a = _profile(sig, 0.0, shape=(40, 220))
    none = ShearProfile.not_usable("scan X: no striated point on the flowback ring")
    res = compare_shears(a, none)
    assert not res.used and "case B" in res.reason and "no striated point" in res.reason
    assert res.count == 0 and np.isnan(res.score)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(segment_um=0), "segment_um"),
        (dict(segment_um=float("nan")), "segment_um"),
        (dict(tolerance_um=-1), "tolerance_um"),
        (dict(n_peaks=0), "n_peaks"),
        (dict(n_peaks=2.5), "n_peaks"),
        (dict(min_overlap_um=-5), "min_overlap_um"),
    ],
)
def test_compare_bad_parameters_raise(kwargs, match):
    p = _profile(_signature(np.random.default_rng(10), 900), 0.0, shape=(40, 220))
    with pytest.raises(ParameterError, match=match):
        compare_shears(p, p, **kwargs)


def test_compare_needs_shear_profiles():
    p = _profile(_signature(np.random.default_rng(11), 900), 0.0, shape=(40, 220))
    with pytest.raises(ParameterError, match="ShearProfile"):
        compare_shears(p, p.profile_um)


# ------------------------------------------------------------------------------------------------ raw scans
RA, RC = 0.70e-3, 0.35e-3  # aperture and crater radii (m)


def _primer(seed: int, *, shear: str | None = "striated", rotation_deg: float = 0.0, sig=None, offset_um=0.0):
    """A raw scan of a primer: rough face, a NaN crater, the flowback ring 15 um above the face up to the
    aperture and, when ``shear``, a sector of it (about ``rotation_deg``, 40 degrees wide, from 0.5 mm
    out) cut down below the face, "striated" (``sig`` across lines running along the sector's radius)
    or "plain" (rough only). Returns (scan, region)."""
    rng = np.random.default_rng(seed)
    n = 620
    c = (n / 2 * STEP, n / 2 * STEP)
    X = np.arange(n)[None, :] * STEP - c[0]
    Y = np.arange(n)[:, None] * STEP - c[1]
    R = np.hypot(X, Y)
    z = ndimage.gaussian_filter(rng.normal(size=(n, n)), 3) * 2.0  # isotropic roughness, ~0.3 um
    z += np.where(R < RA, 15.0, 0.0)
    if shear is not None:
        rot = np.radians(rotation_deg)
        phi = np.arctan2(Y, X) - rot
        dphi = np.abs((phi + np.pi) % (2 * np.pi) - np.pi)
        sector = (dphi < np.radians(20)) & (R > 0.5e-3) & (R < RA)
        z = np.where(sector, z - 15.0 - 3.0, z)
        if shear == "striated":
            # lines along the sector's radius; the coordinate across them runs counter-clockwise
            across = -X * np.sin(rot) + Y * np.cos(rot)
            x, h = sig
            z = np.where(sector, z + 1.5 * np.interp(across * 1e6 + offset_um + 300.0, x, h), z)
    z[R < RC] = np.nan
    z[rng.random(z.shape) < 0.01] = np.nan  # drop-outs
    scan = bx.Scan(z * 1e-6, STEP, STEP, {"source": f"synthetic primer {seed}"})
    region = BreechFaceRegion(
        mask=(R > RA + 30e-6) & ~np.isnan(z),
        primer_center_m=c,
        primer_radius_m=0.95e-3,
        flat_radius_m=0.95e-3,
        outer_radius_m=0.93e-3,
        aperture_center_m=c,
        aperture_radius_m=RA,
        inner_radius_m=RA + 30e-6,
        crater_center_m=c,
        crater_radius_m=RC,
        outer_edge="grid",
        inner_edge="flowback step",
        face_sigma_um=0.3,
    )
    return scan, region


@pytest.fixture(scope="module")
def gun_signature():
    return _signature(np.random.default_rng(12), 600)


def test_striated_sector_is_found(gun_signature):
    scan, region = _primer(1, rotation_deg=0.0, sig=gun_signature)
    p = extract_aperture_shear(scan, region)
    assert p.usable, p.reason
    lo, hi = p.sector_deg
    assert (lo > 330 or lo < 5) and (hi < 30 or hi > 355)  # the sector is at 0 +- 20 degrees
    assert abs((p.direction_deg + 90) % 180 - 90) < 5  # lines along the radius there: along x
    assert p.features["depth_below_ring_um"] > 10
    assert 150 < p.length_um < 600


@pytest.mark.parametrize("shear", [None, "plain"])
def test_ring_without_striations_is_not_used(shear, gun_signature):
    scan, region = _primer(2, shear=shear, sig=gun_signature)
    p = extract_aperture_shear(scan, region)
    assert not p.usable and p.profile_um is None
    assert "no aperture shear" in p.reason or "no striated point" in p.reason
    other, oreg = _primer(3, sig=gun_signature)
    res = compare_shears(extract_aperture_shear(other, oreg), p)
    assert not res.used and res.reason and np.isnan(res.score)  # not used: no evidence, not a score of 0


def test_same_gun_rotated_scans_match(gun_signature):
    """Two cases of one gun, scanned at other rotations: the profiles run the same way (about the aperture
    centre), so the striations line up; a case of another gun does not."""
    a = extract_aperture_shear(*_primer(4, rotation_deg=10.0, sig=gun_signature))
    b = extract_aperture_shear(*_primer(5, rotation_deg=-65.0, sig=gun_signature, offset_um=20.0))
    other_sig = _signature(np.random.default_rng(99), 600)
    c = extract_aperture_shear(*_primer(6, rotation_deg=10.0, sig=other_sig))
    assert a.usable and b.usable and c.usable
    same = compare_shears(a, b)
    diff = compare_shears(a, c)
    assert same.count >= same.n_elements - 1 and same.score > 0.7
    assert diff.count < same.count and diff.score < 0.6


def test_processed_or_masked_scans_are_not_used(gun_signature):
    scan, region = _primer(7, sig=gun_signature)
    processed = bx.Scan(scan.heights, scan.dx, scan.dy, {"processing": [{"step": "level"}]})
    p = extract_aperture_shear(processed)
    assert not p.usable and "processed" in p.reason
    region.inner_edge = "mask edge"
    assert "mask edge" in extract_aperture_shear(scan, region).reason
    region.inner_edge, region.aperture_center_m = "flowback step", None
    assert "no firing-pin aperture" in extract_aperture_shear(scan, region).reason


def test_extract_bad_input_raises(gun_signature):
    scan, region = _primer(8, sig=gun_signature)
    with pytest.raises(ParameterError, match="Scan"):
        extract_aperture_shear(scan.heights)
    with pytest.raises(ParameterError, match="BreechFaceRegion"):
        extract_aperture_shear(scan, region={"aperture_center_m": (0, 0)})
    with pytest.raises(ParameterError, match="min_coherence"):
        extract_aperture_shear(scan, region, min_coherence=1.5)
    with pytest.raises(ParameterError, match="max_angle_to_radius_deg"):
        extract_aperture_shear(scan, region, max_angle_to_radius_deg=0)
    small = bx.Scan(scan.heights[:100, :100], STEP, STEP, {})
    with pytest.raises(ParameterError, match="shape"):
        extract_aperture_shear(small, region)


# ------------------------------------------------------------------------------------------------ real scans
def test_fadul_raw_scans(shared_data):
    """On the raw Fadul scans: 1-1's shear (the striated pocket at 3 o'clock) is found; every scan gives a
    usable profile or a reason, never an exception."""
    raw = shared_data / "fadul-raw"
    if not raw.is_dir():
        pytest.skip("raw Fadul scans not available")
    out = {}
    for name in ("1-1", "1-2", "2-1"):
        out[name] = extract_aperture_shear(bx.read_x3p(raw / f"fadul-{name}-raw.x3p"))
        assert out[name].usable or out[name].reason
    p = out["1-1"]
    assert p.usable, p.reason
    mid = p.features["sector_mid_deg"]
    assert min(mid, 360 - mid) < 30  # at 3 o'clock about the aperture centre
    assert p.length_um > 200
