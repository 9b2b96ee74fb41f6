"""The aperture shear: extraction of its striation profile from a raw scan, and comparison of two profiles.

When the slide unlocks, the primer metal that flowed back into the firing-pin aperture is sheared against the
aperture's edge: a sector of the raised flowback ring (between the crater and the aperture circle) is cut down
and covered with parallel striations. They are compared like the striations of a bullet land: one 1-D profile
across the striations per case, and congruent matching profile segments (CMPS, Chen et al. 2019).

- `extract_aperture_shear`: finds the striated sector on the ring of a raw scan (structure-tensor coherence
  and orientation), then `shear_profile`.
- `shear_profile`: a 2-D patch of striations to a 1-D profile: striation direction, a patch sampled along
  it, levelled, averaged along the striations, band-passed.
- `compare_shears`: CMPS on two profiles, a `MarkResult` with ``mark="aperture_shear"``.

Coordinates are metres in the scan's frame (``x`` along columns, ``y`` along rows); angles are degrees from
the +x axis towards +y (clockwise on an image shown with row 0 at the top).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from ...errors import ParameterError
from ...scan import Scan, check_heights, check_positive, check_range, check_spacing
from ..filters import gaussian_lowpass
from ..preprocessing.breech_face import find_breech_face
from ..preprocessing.region import BreechFaceRegion
from .result import MarkResult, record_of

__all__ = ["ShearProfile", "extract_aperture_shear", "shear_profile", "compare_shears", "striation_map"]

MARK = "aperture_shear"

# --- finding the striated sector ---------------------------------------------------------------------------
#: Band of the surface the orientation map is computed on (um): striations on the Fadul (Ruger P95) shears are
#: 15-40 um apart; below 12 um the raw Fadul scans carry a fine diagonal texture over the whole primer that
#: would set the orientation, beyond 60 um lie the ring's form and slope.
DETECTION_BAND_UM = (12.0, 60.0)
#: Window of the structure tensor (Gaussian sigma, um): a few striations wide, so that a window on a striated
#: surface sees parallel lines and one on granular metal sees blobs.
INTEGRATION_SIGMA_UM = 10.0
#: A point is "striated" where the coherence of its structure tensor exceeds this (0 = isotropic, 1 = ideal
#: parallel lines). Granular breech-face metal at this window stays mostly below 0.5.
MIN_POINT_COHERENCE = 0.5
#: The shear's striations run along the relative motion of case and slide, and the shear lies where that
#: motion pushes the ring against the aperture's edge: there they run about radially. Lines more than this
#: many degrees off the radius are the ring's own circular steps and drop-out edges, not shear.
MAX_ANGLE_TO_RADIUS_DEG = 35.0
#: The ring searched: from the crater's radius to the aperture's radius plus this margin (um) (the step at the
#: aperture is a few tens of um wide); without a crater, from this share of the aperture radius.
RING_OUTER_MARGIN_UM = 40.0
RING_INNER_APERTURE_SHARE_NO_CRATER = 0.45
#: The shear cuts the raised flowback ring down: its points lie below the face just outside the aperture
#: (the ring stands 10-30 um above it on the Fadul scans, the shear pockets at or below it) by at least this
#: (um; 0 = at face level). The face level is the median height over an annulus of this (um, beyond the
#: aperture radius), per sector of this many degrees about the aperture centre, each sector with at least
#: this many points (tilt of the case makes one level for the whole circle wrong by micrometres).
CUT_BELOW_FACE_UM = 0.0
FACE_ANNULUS_UM = (60.0, 200.0)
FACE_BIN_DEG = 5.0
FACE_MIN_POINTS = 20
#: Striated points closer than this (um) are joined into one region (morphological closing) ...
CLOSING_RADIUS_UM = 10.0
#: ... and the largest region must cover at least this area (um^2; the Fadul shears cover 0.05-0.1 mm^2,
#: a 100 um x 100 um patch holds about five striations along a 100 um length) to be a shear.
MIN_SHEAR_AREA_UM2 = 10_000.0
#: The striations over the whole region must be parallel: the coherence of the region's summed structure
#: tensor (one direction for the whole region) at least this.
MIN_REGION_COHERENCE = 0.4

# --- the profile -------------------------------------------------------------------------------------------
#: Band of the 1-D profile (um, ISO 16610-61 Gaussian cutoffs): the short cutoff removes pixel noise (2 points
#: at 3.125 um), the long one the pocket's form and the depth differences between pockets (hundreds of um)
#: while keeping every striation a 75 um segment can see.
PROFILE_BAND_UM = (6.0, 100.0)
#: A profile position needs this many measured points along the striations (else NaN).
MIN_POINTS_ALONG = 3
#: ... and at least this share of the number most positions have (the 90th percentile): the corners of a
#: tilted patch average a handful of points and would add noise at the profile's ends.
MIN_ALONG_SHARE = 0.2
#: A usable profile is at least this long (um): two segments of the default 75 um.
MIN_PROFILE_UM = 150.0
#: ... and its patch at least this wide along the striations (um).
MIN_WIDTH_UM = 20.0
#: Share of the profile's extent that must be measured.
MIN_MEASURED_SHARE = 0.5

# --- comparison (CMPS) -------------------------------------------------------------------------------------
#: Segment length (um): Chen et al. used 50 points at 1.5625 um (78 um) on bullet lands; a shear profile is
#: 0.2-0.8 mm long, so 75 um gives 3-10 segments.
SEGMENT_UM = 75.0
#: A segment is congruent when one of its correlation peaks lies within this many um of the consensus shift
#: (about 3 points at 3.125 um).
TOLERANCE_UM = 10.0
#: Peaks kept per segment (CMPS's multi-peak inspection: the true position need not be a segment's highest).
N_PEAKS = 3
#: A segment counts (is an element) when this share of it is measured; a segment's correlation at a shift
#: needs this share of its measured points overlapping measured points of the other profile.
MIN_SEGMENT_MEASURED_SHARE = 0.8
#: Fewest elements for a comparison: one segment cannot agree with anything.
MIN_SEGMENTS = 2
#: Fewest um of the two whole profiles overlapping at a candidate shift.
MIN_OVERLAP_UM = 150.0


@dataclass(eq=False)
class ShearProfile:
    """The aperture shear of one scan: its striation profile, or why there is none.

    Attributes
    ----------
    usable : bool
        Whether a shear was found and extracted well enough to compare.
    reason : str or None
        Why not (no aperture, no striated sector, too short, a processed scan, ...); None when usable.
    profile_um : (n,) ndarray or None
        Heights (um) across the striations, band-passed (`PROFILE_BAND_UM`), NaN where not measured.
    spacing_um : float
        Distance between profile points (um).
    direction_deg : float or None
        Direction of the striations in the scan frame, in [0, 180).
    axis_deg : float or None
        Direction in which the profile runs (perpendicular to the striations), in [0, 360).
    centre_m : (float, float) or None
        Centre of the patch in the scan frame (metres).
    width_um : float
        Extent of the patch along the striations (what each profile point averages).
    coherence : float
        Coherence of the patch's summed structure tensor (how parallel the striations are).
    band_um : (float, float)
        The profile's band.
    sector_deg : (float, float) or None
        Angular extent of the striated region about the aperture centre (start, end), None for a patch.
    patch_um : 2-D ndarray or None
        The levelled patch, rows along the striations and columns along the profile (for plots).
    source : str
        The scan's source.
    features : dict
        What else was measured (area, angle to the radius, depth below the ring, ...).
    """

    usable: bool
    reason: str | None = None
    profile_um: np.ndarray | None = None
    spacing_um: float = float("nan")
    direction_deg: float | None = None
    axis_deg: float | None = None
    centre_m: tuple[float, float] | None = None
    width_um: float = float("nan")
    coherence: float = float("nan")
    band_um: tuple[float, float] = PROFILE_BAND_UM
    sector_deg: tuple[float, float] | None = None
    patch_um: np.ndarray | None = None
    source: str = ""
    features: dict[str, Any] = field(default_factory=dict)

    @property
    def length_um(self) -> float:
        """Length of the profile (um)."""
        return 0.0 if self.profile_um is None else float(self.profile_um.size * self.spacing_um)

    #: The array fields and their dimensions (the rest are JSON in a stored record).
    ARRAY_FIELDS: ClassVar[dict[str, int]] = {"profile_um": 1, "patch_um": 2}

    def to_record(self) -> dict[str, Any]:
        """This extraction as JSON fields and float arrays (how a ``.npz`` keeps it)."""
        return record_of(self, self.ARRAY_FIELDS)

    @classmethod
    def not_usable(cls, reason: str, source: str = "", **features) -> ShearProfile:
        """No profile, and why."""
        return cls(False, reason, source=source, features=dict(features))


# ------------------------------------------------------------------------------------------------ helpers
def _source(scan) -> str:
    return scan.label if isinstance(scan, Scan) else "array"


def _heights_spacing(heights, spacing_m, who: str) -> tuple[np.ndarray, float, float]:
    """Heights (float64) and spacing of a `Scan`, or of an array with ``spacing_m``, checked."""
    z = np.asarray(check_heights(heights, "heights", min_points=2), np.float64)
    if spacing_m is None:
        if not isinstance(heights, Scan):
            raise ParameterError(f"{who} needs spacing_m (metres) for an array input")
        spacing_m = (heights.dx, heights.dy)
    dx, dy = check_spacing(spacing_m, "spacing_m")
    return z, dx, dy


def _sigma_px(sigma_um: float, spacing_m: float) -> float:
    return sigma_um * 1e-6 / spacing_m


def _structure_tensor(z: np.ndarray, dx: float, dy: float, band_um, sigma_um: float):
    """Structure tensor (Jxx, Jyy, Jxy) of the band-passed heights ``z``, NaN-aware: gradients only between
    measured points, averaged with normalised Gaussian weights. Also returns the weight (share of measured
    gradients in the window)."""
    zb = gaussian_lowpass(z, (dx, dy), band_um[0]) - gaussian_lowpass(z, (dx, dy), band_um[1])
    gy, gx = np.gradient(zb, dy, dx)
    ok = np.isfinite(gx) & np.isfinite(gy)
    gx, gy = np.where(ok, gx, 0.0), np.where(ok, gy, 0.0)
    sig = (_sigma_px(sigma_um, dy), _sigma_px(sigma_um, dx))
    w = ndimage.gaussian_filter(ok.astype(np.float64), sig, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        jxx = ndimage.gaussian_filter(gx * gx, sig, mode="constant") / w
        jyy = ndimage.gaussian_filter(gy * gy, sig, mode="constant") / w
        jxy = ndimage.gaussian_filter(gx * gy, sig, mode="constant") / w
    return jxx, jyy, jxy, w


def _coherence_and_direction(jxx, jyy, jxy):
    """Coherence (0..1) and striation direction (radians, the line's direction: perpendicular to the
    dominant gradient) from structure-tensor components (arrays or sums)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        coh = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy)
    grad_dir = 0.5 * np.arctan2(2 * jxy, jxx - jyy)
    return coh, grad_dir + np.pi / 2


def striation_map(heights, spacing_m=None, *, band_um=DETECTION_BAND_UM, sigma_um: float = INTEGRATION_SIGMA_UM):
    """Where a surface is striated, and in which direction: structure-tensor coherence and orientation.

    Parameters
    ----------
    heights : Scan or (ny, nx) ndarray
        Heights in metres, NaN = not measured.
    spacing_m : float or (dx, dy), optional
        Lateral spacing (metres); needed for an array.
    band_um : (float, float)
        Gaussian band (um) the gradients are taken on (`DETECTION_BAND_UM`).
    sigma_um : float
        Window of the structure tensor (Gaussian sigma, um).

    Returns
    -------
    coherence : (ny, nx) ndarray
        0 (isotropic) to 1 (parallel lines); NaN where nothing was measured nearby.
    direction_deg : (ny, nx) ndarray
        Direction of the lines, degrees in [0, 180).

    Examples
    --------
    >>> x = np.arange(64) * 3e-6
    >>> z = np.sin(2 * np.pi * x / 25e-6)[None, :] * 1e-6 * np.ones((64, 1))   # lines along y
    >>> coh, ang = striation_map(z, 3e-6)
    >>> bool(coh[32, 32] > 0.9), round(float(ang[32, 32]))
    (True, 90)
    """
    z, dx, dy = _heights_spacing(heights, spacing_m, "striation_map")
    band = check_range(band_um, "band_um")
    sigma = check_positive(sigma_um, "sigma_um")
    jxx, jyy, jxy, w = _structure_tensor(z * 1e6, dx, dy, band, sigma)
    coh, line = _coherence_and_direction(jxx, jyy, jxy)
    coh[w < 0.25] = np.nan
    return coh, np.degrees(line) % 180.0


# ------------------------------------------------------------------------------------------------ profile
def _sample(z: np.ndarray, inside: np.ndarray, centre_px, u, v, su, sv, dx, dy):
    """Heights sampled on the grid ``centre + su * u + sv * v`` (metres; ``su`` rows, ``sv`` columns),
    bilinear between measured points, NaN where a sample touches a missing point or leaves ``inside``."""
    S_u, S_v = np.meshgrid(su, sv, indexing="ij")
    X = centre_px[0] + (S_u * u[0] + S_v * v[0]) / dx
    Y = centre_px[1] + (S_u * u[1] + S_v * v[1]) / dy
    valid = ~np.isnan(z)
    coords = np.array([Y, X])
    zs = ndimage.map_coordinates(np.where(valid, z, 0.0), coords, order=1, mode="constant", cval=0.0)
    ws = ndimage.map_coordinates(valid.astype(np.float64), coords, order=1, mode="constant", cval=0.0)
    ins = ndimage.map_coordinates(inside.astype(np.float64), coords, order=0, mode="constant", cval=0.0)
    out = np.where((ws > 0.999) & (ins > 0.5), zs, np.nan)
    return out


def _level(patch: np.ndarray, su: np.ndarray, sv: np.ndarray) -> np.ndarray:
    """The patch less its least-squares plane."""
    S_u, S_v = np.meshgrid(su, sv, indexing="ij")
    ok = ~np.isnan(patch)
    if ok.sum() < 3:
        return patch
    A = np.column_stack([np.ones(ok.sum()), S_u[ok], S_v[ok]])
    coef, *_ = np.linalg.lstsq(A, patch[ok], rcond=None)
    return patch - (coef[0] + coef[1] * S_u + coef[2] * S_v)


def _bandpass_1d(p: np.ndarray, spacing_m: float, band) -> np.ndarray:
    row = p[None, :]
    out = gaussian_lowpass(row, spacing_m, band[0]) - gaussian_lowpass(row, spacing_m, band[1])
    return out[0]


def shear_profile(
    heights,
    spacing_m=None,
    *,
    mask=None,
    direction_deg: float | None = None,
    axis_hint=(1.0, 1.0),
    band_um=PROFILE_BAND_UM,
    sigma_um: float = INTEGRATION_SIGMA_UM,
    source: str | None = None,
) -> ShearProfile:
    """A patch of striations to a 1-D profile across them.

    The striation direction (unless given) is that of the patch's summed structure tensor; the patch is
    sampled on a grid aligned with it (bilinear, at the scan's finer spacing), levelled by a plane, the
    median taken along the striations at every position across them, and the profile band-passed
    (ISO Gaussian, ``band_um``).

    Parameters
    ----------
    heights : Scan or (ny, nx) ndarray
        Heights in metres, NaN = not measured.
    spacing_m : float or (dx, dy), optional
        Lateral spacing (metres); needed for an array.
    mask : (ny, nx) bool ndarray, optional
        The striated region; points outside it are not used. Default: all measured points.
    direction_deg : float, optional
        Direction of the striations (degrees from +x towards +y); found when None.
    axis_hint : (float, float)
        The profile runs perpendicular to the striations, in the sense that has a positive component
        along this vector (x, y): two cases of one gun must give profiles that run the same way.
    band_um : (float, float)
        Short and long cutoffs of the profile's band (um), `PROFILE_BAND_UM`.
    sigma_um : float
        Window of the structure tensor (um), when the direction is found.
    source : str, optional
        Recorded in the result (default: the scan's source).

    Returns
    -------
    ShearProfile
        ``usable`` False with the reason when the patch is too short, too narrow or too little measured.

    Raises
    ------
    ParameterError
        For heights that are not a 2-D float array, a missing or bad spacing, a mask of another shape or
        bad cutoffs.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> line = np.repeat(rng.normal(size=100), 4)                     # 400 points across
    >>> z = np.tile(line, (60, 1)) * 1e-6                             # striations along y
    >>> p = shear_profile(z, 3.125e-6)
    >>> p.usable, round(p.direction_deg) % 180, p.length_um > 1000
    (True, 90, True)
    """
    z, dx, dy = _heights_spacing(heights, spacing_m, "shear_profile")
    band = check_range(band_um, "band_um")
    sigma = check_positive(sigma_um, "sigma_um")
    src = _source(heights) if source is None else str(source)
    if mask is None:
        inside = ~np.isnan(z)
    else:
        inside = np.asarray(mask)
        if inside.shape != z.shape or inside.dtype != bool:
            raise ParameterError(
                f"mask must be a bool array of the heights' shape {z.shape}, got {inside.dtype} {inside.shape}"
            )
    try:
        hint = np.asarray(axis_hint, dtype=np.float64).reshape(2)
    except (TypeError, ValueError):
        raise ParameterError(f"axis_hint must be an (x, y) vector, got {axis_hint!r}") from None
    if not (np.all(np.isfinite(hint)) and np.hypot(*hint) > 0):
        raise ParameterError(f"axis_hint must be a non-zero finite (x, y) vector, got {axis_hint!r}")
    use = inside & ~np.isnan(z)
    if use.sum() < 16:
        return ShearProfile.not_usable(f"{src}: {int(use.sum())} measured points in the striated region", src)
    z_um = np.where(inside, z * 1e6, np.nan)
    jxx, jyy, jxy, _ = _structure_tensor(z_um, dx, dy, DETECTION_BAND_UM, sigma)
    sel = use & np.isfinite(jxx) & np.isfinite(jyy) & np.isfinite(jxy)
    coh, line = _coherence_and_direction(jxx[sel].sum(), jyy[sel].sum(), jxy[sel].sum()) if sel.any() else (0.0, 0.0)
    coh = float(coh) if np.isfinite(coh) else 0.0
    if direction_deg is None:
        theta = float(line)
    else:
        try:
            theta = np.radians(float(direction_deg))
        except (TypeError, ValueError):
            raise ParameterError(f"direction_deg must be a number of degrees, got {direction_deg!r}") from None
        if not np.isfinite(theta):
            raise ParameterError(f"direction_deg must be finite, got {direction_deg!r}")
    u = np.array([np.cos(theta), np.sin(theta)])
    v = np.array([-u[1], u[0]])
    if v @ hint < 0:
        v = -v
    # extent of the region along and across the striations
    yy, xx = np.nonzero(use)
    cx, cy = xx.mean() * dx, yy.mean() * dy
    pu = (xx * dx - cx) * u[0] + (yy * dy - cy) * u[1]
    pv = (xx * dx - cx) * v[0] + (yy * dy - cy) * v[1]
    step = min(dx, dy)
    su = np.arange(np.floor(pu.min() / step), np.ceil(pu.max() / step) + 1) * step
    sv = np.arange(np.floor(pv.min() / step), np.ceil(pv.max() / step) + 1) * step
    patch = _sample(z * 1e6, inside, (cx / dx, cy / dy), u, v, su, sv, dx, dy)
    patch = _level(patch, su, sv)
    n_along = (~np.isnan(patch)).sum(axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = np.nanmedian(patch, axis=0)
    raw[n_along < max(MIN_POINTS_ALONG, MIN_ALONG_SHARE * np.percentile(n_along, 90))] = np.nan
    measured = np.flatnonzero(~np.isnan(raw))
    direction = float(np.degrees(theta) % 180.0)
    axis = float(np.degrees(np.arctan2(v[1], v[0])) % 360.0)
    width_um = float(np.percentile(pu, 95) - np.percentile(pu, 5)) * 1e6
    feats = {"measured_points": int(use.sum())}
    if measured.size == 0:
        return ShearProfile.not_usable(f"{src}: no profile position has {MIN_POINTS_ALONG} measured points", src)
    raw = raw[measured[0] : measured[-1] + 1]
    patch = patch[:, measured[0] : measured[-1] + 1]
    prof = _bandpass_1d(raw, step, band)
    length_um = raw.size * step * 1e6
    share = float(np.mean(~np.isnan(prof)))
    feats.update(length_um=length_um, measured_share=share, width_um=width_um)
    common = dict(
        spacing_um=step * 1e6,
        direction_deg=direction,
        axis_deg=axis,
        centre_m=(float(cx), float(cy)),
        width_um=width_um,
        coherence=coh,
        band_um=band,
        source=src,
        features=feats,
    )
    reason = None
    if length_um < MIN_PROFILE_UM:
        reason = (
            f"{src}: the striated patch is {length_um:.0f} um across the striations, less than {MIN_PROFILE_UM:g} um"
        )
    elif width_um < MIN_WIDTH_UM:
        reason = f"{src}: the striated patch is {width_um:.0f} um along the striations, less than {MIN_WIDTH_UM:g} um"
    elif share < MIN_MEASURED_SHARE:
        reason = f"{src}: {share:.0%} of the profile measured, less than {MIN_MEASURED_SHARE:.0%}"
    if reason is not None:
        return ShearProfile(False, reason, **common)
    return ShearProfile(True, None, profile_um=prof, patch_um=patch, **common)


# ------------------------------------------------------------------------------------------------ extraction
def _ring_geometry(region: BreechFaceRegion):
    """(centre, inner radius, outer radius) of the flowback ring, metres; None when there is no aperture."""
    if region.aperture_center_m is None or region.aperture_radius_m is None:
        return None
    c = region.aperture_center_m
    ra = float(region.aperture_radius_m)
    rc = region.crater_radius_m
    inner = float(rc) if rc is not None and rc < ra else RING_INNER_APERTURE_SHARE_NO_CRATER * ra
    return (float(c[0]), float(c[1])), inner, ra + RING_OUTER_MARGIN_UM * 1e-6


def _disk(radius_px: float) -> np.ndarray:
    r = max(int(np.ceil(radius_px)), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= radius_px**2 + 1e-9


def _face_level(z, R, A, ra: float) -> np.ndarray | None:
    """Height of the breech face just outside the aperture, per `FACE_BIN_DEG` sector about its centre
    (median over `FACE_ANNULUS_UM`; sectors with too few points interpolated from their neighbours).
    None when the face is measured nowhere around the aperture."""
    n_bins = int(round(360 / FACE_BIN_DEG))
    ann = (R > ra + FACE_ANNULUS_UM[0] * 1e-6) & (R < ra + FACE_ANNULUS_UM[1] * 1e-6) & ~np.isnan(z)
    b = (A[ann] // FACE_BIN_DEG).astype(int) % n_bins
    vals = z[ann]
    level = np.full(n_bins, np.nan)
    for k in range(n_bins):
        v = vals[b == k]
        if v.size >= FACE_MIN_POINTS:
            level[k] = np.median(v)
    have = np.flatnonzero(~np.isnan(level))
    if have.size == 0:
        return None
    if have.size < n_bins:  # circular interpolation over the sectors without face
        k = np.arange(n_bins)
        level = np.interp(k, np.r_[have - n_bins, have, have + n_bins], np.tile(level[have], 3))
    return level


def _striated_region(z, dx, dy, centre, inner, outer, ra, band, sigma, min_coherence, max_angle):
    """The largest striated, cut-down region on the ring: points below the face level just outside the
    aperture, with coherent lines about along the radius, joined by a closing. Returns (region mask, maps)
    with region None when no point qualifies; maps None when no face level could be measured."""
    ny, nx = z.shape
    X = (np.arange(nx) * dx)[None, :] - centre[0]
    Y = (np.arange(ny) * dy)[:, None] - centre[1]
    R = np.hypot(X, Y)
    A = np.degrees(np.arctan2(Y + 0 * X, X + 0 * Y)) % 360
    ring = (R >= inner) & (R <= outer)
    level = _face_level(z, R, A, ra)
    if level is None:
        return None, None
    n_bins = level.size
    below = z - level[(A // FACE_BIN_DEG).astype(int) % n_bins] < CUT_BELOW_FACE_UM * 1e-6
    jxx, jyy, jxy, w = _structure_tensor(z * 1e6, dx, dy, band, sigma)
    coh, line = _coherence_and_direction(jxx, jyy, jxy)
    radial = np.arctan2(Y, X)
    off = np.degrees(np.abs((line - radial + np.pi / 2) % np.pi - np.pi / 2))
    cut = ring & ~np.isnan(z) & below
    striated = cut & (w > 0.5) & (coh > min_coherence) & (off < max_angle)
    maps = {"ring": ring, "cut": cut, "coherence": coh, "angle_to_radius_deg": off, "striated": striated}
    if not striated.any():
        return None, maps
    rad = CLOSING_RADIUS_UM * 1e-6 / min(dx, dy)
    closed = ndimage.binary_closing(striated, structure=_disk(rad), border_value=0) & ring
    lab, n = ndimage.label(closed)
    if n == 0:
        return None, maps
    areas = ndimage.sum(striated, lab, index=np.arange(1, n + 1))  # striated points, not closed ones
    k = int(np.argmax(areas)) + 1
    return (lab == k) & cut, maps


def extract_aperture_shear(
    scan,
    region: BreechFaceRegion | None = None,
    *,
    band_um=PROFILE_BAND_UM,
    detection_band_um=DETECTION_BAND_UM,
    sigma_um: float = INTEGRATION_SIGMA_UM,
    min_coherence: float = MIN_POINT_COHERENCE,
    max_angle_to_radius_deg: float = MAX_ANGLE_TO_RADIUS_DEG,
    min_area_um2: float = MIN_SHEAR_AREA_UM2,
    keep_maps: bool = False,
) -> ShearProfile:
    """The aperture shear of a raw cartridge-case scan, as a striation profile.

    1. The ring: from the firing-pin crater's radius to the aperture's radius (plus
       `RING_OUTER_MARGIN_UM`) about the aperture centre (`find_breech_face`, or ``region``).
    2. Striated points (`striation_map`): coherence of the structure tensor above ``min_coherence`` and
       lines within ``max_angle_to_radius_deg`` of the radius (the ring's circular steps and drop-out
       edges are coherent too, but tangential). Points closer than `CLOSING_RADIUS_UM` are joined; the
       largest region of striated points is the shear when it covers ``min_area_um2`` and its lines are
       parallel as a whole (summed-tensor coherence at least `MIN_REGION_COHERENCE`).
    3. `shear_profile` on that region: the profile runs counter-clockwise about the aperture centre (its
       axis has a positive tangential component), so that two cases of one gun give profiles that run
       the same way whatever their rotation in the scans.

    Parameters
    ----------
    scan : Scan
        A raw scan (heights in metres, NaN = not measured) showing the firing-pin impression.
    region : BreechFaceRegion, optional
        The scan's region (`find_breech_face`); found (with ``check=False``) when None.
    band_um : (float, float)
        Band of the profile (um): `PROFILE_BAND_UM`.
    detection_band_um : (float, float)
        Band of the orientation map (um): `DETECTION_BAND_UM`.
    sigma_um : float
        Window of the structure tensor (um).
    min_coherence : float
        Least coherence of a striated point (0-1).
    max_angle_to_radius_deg : float
        Largest angle between a striated point's lines and the radius.
    min_area_um2 : float
        Least area of striated points of the shear.
    keep_maps : bool
        Keep the ring, coherence and striated-region maps in ``features["maps"]`` (for plots).

    Returns
    -------
    ShearProfile
        ``usable`` False, with the reason, when the scan is processed, no aperture was found, no striated
        sector is there (many guns leave none), or the profile is too short or too little measured. An
        absent shear is no evidence either way.

    Raises
    ------
    ParameterError
        For a scan that is not a `Scan`, a region of another shape, or parameters out of range.

    Examples
    --------
    >>> import ballistix as bx
    >>> s = bx.read_x3p("fadul-1-1-raw.x3p")                       # doctest: +SKIP
    >>> sh = extract_aperture_shear(s)                              # doctest: +SKIP
    >>> sh.usable, sh.length_um                                     # doctest: +SKIP
    """
    if not isinstance(scan, Scan):
        raise ParameterError(
            f"extract_aperture_shear needs a raw Scan (heights and spacing), got {type(scan).__name__}"
        )
    band = check_range(band_um, "band_um")
    det_band = check_range(detection_band_um, "detection_band_um")
    sigma = check_positive(sigma_um, "sigma_um")
    min_coh = float(min_coherence)
    if not 0 <= min_coh < 1:
        raise ParameterError(f"min_coherence must be in [0, 1), got {min_coherence!r}")
    max_angle = float(max_angle_to_radius_deg)
    if not 0 < max_angle <= 90:
        raise ParameterError(f"max_angle_to_radius_deg must be in (0, 90], got {max_angle_to_radius_deg!r}")
    min_area = check_positive(min_area_um2, "min_area_um2")
    src = _source(scan)
    steps = [p.get("step") for p in scan.meta.get("processing", []) if isinstance(p, dict)]
    if steps:
        return ShearProfile.not_usable(
            f"{src}: a processed scan ({', '.join(map(str, steps))}): the firing-pin region and its shear are "
            "cut away or filtered; extract the shear from the raw scan",
            src,
        )
    z = scan.heights.astype(np.float64, copy=False)
    dx, dy = scan.dx, scan.dy
    if region is None:
        region = find_breech_face(scan, check=False)
    elif not isinstance(region, BreechFaceRegion):
        raise ParameterError(f"region must be a BreechFaceRegion (find_breech_face), got {type(region).__name__}")
    elif region.mask.shape != z.shape:
        raise ParameterError(f"region is for a scan of shape {region.mask.shape}, the scan is {z.shape}")
    if region.inner_edge == "mask edge":
        return ShearProfile.not_usable(
            f"{src}: the firing-pin region ends at a clean mask edge (a scan already masked): no ring to search", src
        )
    ring = _ring_geometry(region)
    if ring is None:
        return ShearProfile.not_usable(f"{src}: no firing-pin aperture found, so no ring to search", src)
    centre, inner, outer = ring
    # work on the ring's bounding box only
    pad = max(3 * sigma, FACE_ANNULUS_UM[1]) * 1e-6
    x0 = max(int((centre[0] - outer - pad) / dx), 0)
    x1 = min(int(np.ceil((centre[0] + outer + pad) / dx)) + 1, z.shape[1])
    y0 = max(int((centre[1] - outer - pad) / dy), 0)
    y1 = min(int(np.ceil((centre[1] + outer + pad) / dy)) + 1, z.shape[0])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return ShearProfile.not_usable(f"{src}: the ring lies outside the scan", src)
    zc = z[y0:y1, x0:x1]
    c_loc = (centre[0] - x0 * dx, centre[1] - y0 * dy)
    ra = float(region.aperture_radius_m)
    reg_mask, maps = _striated_region(zc, dx, dy, c_loc, inner, outer, ra, det_band, sigma, min_coh, max_angle)
    if maps is None:
        return ShearProfile.not_usable(f"{src}: the breech face around the aperture is not measured", src)
    geom = {
        "aperture_center_m": list(centre),
        "ring_inner_radius_m": inner,
        "ring_outer_radius_m": outer,
        "ring_striated_share": float(maps["striated"].sum() / max(maps["ring"].sum(), 1)),
    }
    if keep_maps:
        geom["maps"] = dict(maps, offset_px=(x0, y0))
    if reg_mask is None:
        return ShearProfile.not_usable(f"{src}: no striated point on the flowback ring: no aperture shear", src, **geom)
    area_um2 = float((reg_mask & maps["striated"]).sum() * dx * dy * 1e12)
    geom["area_um2"] = area_um2
    if keep_maps:
        geom["maps"]["region"] = reg_mask
    if area_um2 < min_area:
        return ShearProfile.not_usable(
            f"{src}: the largest striated region on the flowback ring covers {area_um2:.0f} um^2, less than "
            f"{min_area:g} um^2: no aperture shear",
            src,
            **geom,
        )
    # the region's place about the aperture centre
    ny, nx = zc.shape
    yy, xx = np.nonzero(reg_mask)
    px, py = xx * dx - c_loc[0], yy * dy - c_loc[1]
    ang = np.degrees(np.arctan2(py, px))
    mid = float(np.degrees(np.angle(np.exp(1j * np.radians(ang)).mean())))
    rel = (ang - mid + 180) % 360 - 180
    sector = (float((mid + rel.min()) % 360), float((mid + rel.max()) % 360))
    rr = np.hypot(px.mean(), py.mean())
    tangent = (-py.mean() / rr, px.mean() / rr)  # counter-clockwise on the image (+x towards +y)
    depth = _depth_below_ring(zc, reg_mask, maps["ring"])
    prof = shear_profile(zc, (dx, dy), mask=reg_mask, axis_hint=tangent, band_um=band, sigma_um=sigma, source=src)
    if prof.centre_m is not None:
        prof.centre_m = (prof.centre_m[0] + x0 * dx, prof.centre_m[1] + y0 * dy)
    line = np.radians(prof.direction_deg) if prof.direction_deg is not None else np.nan
    radial = np.arctan2(py.mean(), px.mean())
    off = float(np.degrees(np.abs((line - radial + np.pi / 2) % np.pi - np.pi / 2)))
    prof.sector_deg = sector
    prof.features.update(geom, sector_mid_deg=mid % 360, angle_to_radius_deg=off, depth_below_ring_um=depth)
    if prof.usable and prof.coherence < MIN_REGION_COHERENCE:
        prof.usable = False
        prof.reason = (
            f"{src}: the striated region's lines are not parallel as a whole (coherence {prof.coherence:.2f}, "
            f"less than {MIN_REGION_COHERENCE:g}): no aperture shear"
        )
        prof.profile_um = None
    return prof


def _depth_below_ring(z: np.ndarray, region: np.ndarray, ring: np.ndarray) -> float:
    """Median height of the ring less that of the region (um): the shear cuts the ring down."""
    a = z[region & ~np.isnan(z)]
    b = z[ring & ~region & ~np.isnan(z)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float((np.median(b) - np.median(a)) * 1e6)


# ------------------------------------------------------------------------------------------------ comparison
def _ncc_all_shifts(seg: np.ndarray, other: np.ndarray, min_pairs: int) -> np.ndarray:
    """Pearson correlation of ``seg`` with every window of ``other`` of its length (NaN-aware); NaN where
    fewer than ``min_pairs`` pairs of measured points overlap."""
    m = seg.size
    win = np.lib.stride_tricks.sliding_window_view(other, m)
    ok = ~np.isnan(win) & ~np.isnan(seg)[None, :]
    n = ok.sum(axis=1)
    a = np.where(ok, seg[None, :], 0.0)
    b = np.where(ok, win, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = a.sum(1) / n
        mb = b.sum(1) / n
        ca = np.where(ok, a - ma[:, None], 0.0)
        cb = np.where(ok, b - mb[:, None], 0.0)
        r = (ca * cb).sum(1) / np.sqrt((ca * ca).sum(1) * (cb * cb).sum(1))
    r[n < min_pairs] = np.nan
    return r


def _peaks(r: np.ndarray, n_peaks: int) -> np.ndarray:
    """Indices of the ``n_peaks`` highest positive local maxima of ``r`` (NaN ignored)."""
    x = np.where(np.isnan(r), -np.inf, r)
    left = np.r_[-np.inf, x[:-1]]
    right = np.r_[x[1:], -np.inf]
    idx = np.flatnonzero((x >= left) & (x >= right) & (x > 0))
    return idx[np.argsort(-x[idx], kind="stable")][:n_peaks]


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    ok = ~np.isnan(a) & ~np.isnan(b)
    n = int(ok.sum())
    if n < 3:
        return float("nan"), n
    x, y = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return (float((x * y).sum() / d) if d > 0 else float("nan")), n


def _overlap(a: np.ndarray, b: np.ndarray, k: int):
    """The parts of ``a`` and ``b`` that face each other when ``a[i]`` faces ``b[i + k]``."""
    i0, i1 = max(0, -k), min(a.size, b.size - k)
    if i1 <= i0:
        return a[:0], b[:0]
    return a[i0:i1], b[i0 + k : i1 + k]


def _cmps(a: np.ndarray, b: np.ndarray, seg_n: int, tol_n: int, n_peaks: int, min_overlap_n: int):
    """CMPS of profile ``a``'s segments against profile ``b`` (same spacing). Shifts k: ``a[i]`` faces
    ``b[i + k]``."""
    segments = []
    for s0 in range(0, a.size - seg_n + 1, seg_n):
        seg = a[s0 : s0 + seg_n]
        n_meas = int((~np.isnan(seg)).sum())
        if n_meas < MIN_SEGMENT_MEASURED_SHARE * seg_n:
            continue
        if b.size < seg_n:
            r = np.full(1, np.nan)
        else:
            r = _ncc_all_shifts(seg, b, int(np.ceil(MIN_SEGMENT_MEASURED_SHARE * n_meas)))
        pk = _peaks(r, n_peaks)
        segments.append(
            {
                "start": s0,
                "shifts": pk - s0,
                "ccf": r[pk],
                "best": float(np.nanmax(r)) if np.isfinite(r).any() else float("nan"),
            }
        )
    out = {"n_elements": len(segments), "count": 0, "shift": None, "score": float("nan"), "segments": segments}
    if not segments:
        return out
    cands = np.unique(np.concatenate([s["shifts"] for s in segments]))
    best = None
    for c in cands:
        oa, ob = _overlap(a, b, int(c))
        if int((~np.isnan(oa) & ~np.isnan(ob)).sum()) < min_overlap_n:
            continue
        hits, total, matched = 0, 0.0, []
        for s in segments:
            near = np.abs(s["shifts"] - c) <= tol_n
            if near.any():
                j = int(np.argmax(np.where(near, s["ccf"], -np.inf)))
                hits += 1
                total += float(s["ccf"][j])
                matched.append(int(s["shifts"][j]))
        key = (hits, total)
        if best is None or key > best[0]:
            best = (key, int(c), matched)
    if best is None:
        return out
    (hits, _), c, matched = best
    shift = int(np.round(np.median(matched))) if matched else c
    oa, ob = _overlap(a, b, shift)
    score, n = _corr(oa, ob)
    out.update(count=int(hits), shift=shift, score=score, overlap_n=n)
    return out


def _on_spacing(p: ShearProfile, spacing_um: float) -> np.ndarray:
    """Profile ``p`` resampled to ``spacing_um`` (linear; NaN where a neighbour is NaN)."""
    x = np.arange(p.profile_um.size) * p.spacing_um
    xn = np.arange(0.0, x[-1] + 1e-9, spacing_um)
    v = ~np.isnan(p.profile_um)
    zi = np.interp(xn, x, np.where(v, p.profile_um, 0.0))
    wi = np.interp(xn, x, v.astype(np.float64))
    return np.where(wi > 0.999, zi, np.nan)


def compare_shears(
    a: ShearProfile,
    b: ShearProfile,
    *,
    segment_um: float = SEGMENT_UM,
    tolerance_um: float = TOLERANCE_UM,
    n_peaks: int = N_PEAKS,
    min_overlap_um: float = MIN_OVERLAP_UM,
    try_reversed: bool = False,
) -> MarkResult:
    """Compare two aperture-shear profiles by congruent matching profile segments (CMPS).

    A's profile is cut into segments of ``segment_um``; each is correlated with B's whole profile at every
    shift and its ``n_peaks`` highest correlation peaks kept. The consensus shift is the one within
    ``tolerance_um`` of which most segments have a peak (ties: the larger sum of those peaks' correlations);
    those segments are congruent. The score is the correlation of the two whole profiles where they
    overlap at the consensus shift.

    Profiles run the same way on two cases of one gun (`extract_aperture_shear` orients them about the
    aperture centre), so by default only that sense is tried: trying the reversed profile as well would give
    different-gun pairs a second chance at a spurious consensus. ``try_reversed=True`` also compares B
    reversed and keeps the better (more congruent segments, then higher score); use it for profiles
    whose sense is not known (patches cut by hand).

    Parameters
    ----------
    a, b : ShearProfile
        From `extract_aperture_shear` or `shear_profile`. Profiles of different lengths and spacings are
        compared on A's spacing.
    segment_um : float
        Length of A's segments (um).
    tolerance_um : float
        How far (um) a segment's peak may lie from the consensus shift to be congruent.
    n_peaks : int
        Correlation peaks kept per segment.
    min_overlap_um : float
        Least overlap (um) of the two profiles at a candidate shift.
    try_reversed : bool
        Also compare B's profile reversed.

    Returns
    -------
    MarkResult
        ``mark="aperture_shear"``; ``count`` congruent segments of ``n_elements``; ``score``;
        ``shift_um``: A's profile at ``x`` faces B's at ``x + shift_um``; ``rotation_deg`` None.
        ``used=False`` with the reason when either profile is not usable or A gives fewer than
        `MIN_SEGMENTS` segments. ``features`` holds the per-segment correlations, the overlap, both
        profiles' lengths, widths and coherences; ``class_features`` the angle of the striations to the
        radius and the shear's width along the striations on each case.

    Raises
    ------
    ParameterError
        When ``a`` or ``b`` is not a `ShearProfile` or a parameter is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> line = rng.normal(size=400)
    >>> pa = shear_profile(np.tile(line[48:348], (30, 1)) * 1e-6, 3.125e-6)   # striations along y
    >>> pb = shear_profile(np.tile(line, (30, 1)) * 1e-6, 3.125e-6)
    >>> res = compare_shears(pa, pb)
    >>> res.count == res.n_elements, round(res.shift_um)
    (True, 150)
    """
    for name, p in (("a", a), ("b", b)):
        if not isinstance(p, ShearProfile):
            raise ParameterError(f"{name} must be a ShearProfile (extract_aperture_shear), got {type(p).__name__}")
    seg_um = check_positive(segment_um, "segment_um")
    tol_um = float(tolerance_um)
    if not (np.isfinite(tol_um) and tol_um >= 0):
        raise ParameterError(f"tolerance_um must be a non-negative number, got {tolerance_um!r}")
    if isinstance(n_peaks, bool) or not isinstance(n_peaks, (int, np.integer)) or n_peaks < 1:
        raise ParameterError(f"n_peaks must be a positive integer, got {n_peaks!r}")
    min_ov_um = check_positive(min_overlap_um, "min_overlap_um")
    if not a.usable or not b.usable:
        why = "; ".join(f"case {n}: {p.reason}" for n, p in (("A", a), ("B", b)) if not p.usable)
        return MarkResult.not_used(MARK, why)
    step = a.spacing_um
    pa = a.profile_um
    pb = b.profile_um if np.isclose(b.spacing_um, step, rtol=1e-6) else _on_spacing(b, step)
    seg_n = max(int(round(seg_um / step)), 3)
    if seg_n > seg_um / step * 1.5 + 1:
        raise ParameterError(f"segment_um ({seg_um:g}) must be at least 3 profile points ({3 * step:g} um)")
    tol_n = int(round(tol_um / step))
    min_ov_n = max(int(round(min_ov_um / step)), seg_n)
    res = _cmps(pa, pb, seg_n, tol_n, int(n_peaks), min_ov_n)
    reversed_used = False
    if try_reversed:
        rev = _cmps(pa, pb[::-1].copy(), seg_n, tol_n, int(n_peaks), min_ov_n)
        if (rev["count"], np.nan_to_num(rev["score"], nan=-2)) > (res["count"], np.nan_to_num(res["score"], nan=-2)):
            res, reversed_used = rev, True
    if res["n_elements"] < MIN_SEGMENTS:
        return MarkResult.not_used(
            MARK,
            f"case A's shear profile ({a.length_um:.0f} um) holds {res['n_elements']} measured segments of "
            f"{seg_um:g} um; at least {MIN_SEGMENTS} are needed",
        )
    feats = {
        "segment_um": seg_n * step,
        "tolerance_um": tol_n * step,
        "n_peaks": int(n_peaks),
        "reversed": reversed_used,
        "tried_reversed": bool(try_reversed),
        "segment_best_ccf": [s["best"] for s in res["segments"]],
        "overlap_um": float(res.get("overlap_n", 0) * step),
        "length_um": [a.length_um, b.length_um],
        "width_um": [a.width_um, b.width_um],
        "coherence": [a.coherence, b.coherence],
        "spacing_um": step,
        "band_um": list(a.band_um),
    }
    if a.sector_deg is not None and b.sector_deg is not None:
        feats["sector_mid_deg"] = [a.features.get("sector_mid_deg"), b.features.get("sector_mid_deg")]
    cls = {
        "angle_to_radius_deg": [a.features.get("angle_to_radius_deg"), b.features.get("angle_to_radius_deg")],
        "width_um": [a.width_um, b.width_um],
    }
    shift_um = None if res["shift"] is None else float(res["shift"] * step)
    return MarkResult(
        MARK,
        True,
        None,
        count=int(res["count"]),
        n_elements=int(res["n_elements"]),
        score=float(res["score"]),
        rotation_deg=None,
        shift_um=shift_um,
        class_features=cls,
        features=feats,
    )
