"""The firing-pin impression: extraction from a raw scan and comparison of two impressions (issue 19).

`extract_firing_pin` cuts the crater out of a raw scan (the breech-face search's crater and aperture
circles locate it), unwraps it to polar coordinates ``(r, theta)`` about the crater centre, and levels it
on its own: the class shape (a robust depth profile with a tilt term, ring by ring, smoothed along the
radius) is kept apart from the individual marks (the residual, Gaussian band-passed).

`compare_firing_pins` compares two impressions: the class shape (depth profile, outline at a common
depth, depth ratio) into ``class_features``; the individual marks by congruent matching cross-sections
in the spirit of NIST's CMX: the impression is cut into short circumferential bands (cells of one radial
band and one arc; on a bowl, a radius is a depth, so a band is the neighbourhood of one horizontal
cross-section), each correlated over a full rotation (masked FFT correlation along theta, a rotation
being a circular shift there) and a small radial shift; a cell is congruent when its correlation
exceeds a threshold and its registration (rotation and radial shift) agrees with the consensus.

Coordinates and pose follow the rest of ballistix: metres, ``x`` along columns and ``y`` along rows
(down), angles ``theta = atan2(y, x)`` about the crater centre. ``rotation_deg`` is the angle ``phi``
with ``p_b - c_b = R(phi) (p_a - c_a)`` (``R`` as in the simulator's pose convention), the same as
`ballistix.compare`'s ``rotation_deg``: a mark at ``theta`` on scan A lies at ``theta + phi`` on B.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from ...errors import BallistixError, ParameterError
from ...scan import Scan
from .result import MarkResult, record_of

__all__ = [
    "FiringPinImpression",
    "extract_firing_pin",
    "compare_firing_pins",
    "polar_unwrap",
]

# --- the polar grid ---------------------------------------------------------------------------------------
#: Radial step of the polar grid: the NIST raw scans are 3.125 um, the processed ones 6.25 um; 4 um keeps the
#: raw detail the band below passes (short cutoff 10 um: 2.5 steps) at two thirds of the raw point count.
DEFAULT_SPACING_UM = 4.0
#: Angular samples over a full turn: 0.25 degree, an arc of 4.4-5.7 um on the walls of a 9 mm Luger impression
#: (radius 1.0-1.3 mm), about the radial step; rotations are searched to this step.
DEFAULT_N_THETA = 1440
#: Plausible polar spacings: finer than 1 um holds nothing a 10x confocal objective resolves; coarser than
#: 10 um blurs the walls of a 1.5 mm crater into a few rings.
SPACING_RANGE_UM = (1.0, 10.0)

# --- how far the impression reaches ---------------------------------------------------------------------------
#: The impression is kept out to this many crater radii: the crater found by the breech-face search is the hole
#: of missing data (the floor and the steepest wall, which confocal instruments lose), and the measured wall
#: and the lip lie beyond it (NIST raw Fadul scans: the wall rises from 0.9 to 1.4 hole radii, the lip peaks at
#: 1.3-1.5).
OUTER_RADIUS_CRATER_SHARE = 1.5
#: ... but never closer than this to the aperture step: the step and the flowback at it are the aperture's
#: marks (the aperture-shear module's), not the pin's.
APERTURE_MARGIN_M = 30e-6
#: The face level is measured over this ring just beyond the aperture (or beyond the impression when no
#: aperture was found).
FACE_RING_M = (50e-6, 250e-6)

# --- class shape and the band of the individual marks ----------------------------------------------------------
#: Band-pass of the individual marks (ISO 16610-61 Gaussian, 50 % transmission at the cutoffs). 10 um: the
#: finest marks a 10x objective (NA 0.3, lateral resolution ~1 um, 3.125 um sampling) records above its noise;
#: 150 um: the walls of a firing-pin impression are 0.3-0.5 mm wide, and a cell (below) must hold a few of the
#: longest wavelengths kept; longer waves are the class shape's leftovers and the primer's own form.
SHORT_CUTOFF_UM = 10.0
LONG_CUTOFF_UM = 150.0
#: The class profile (depth against radius, tilt terms) is smoothed along the radius by a local quadratic
#: regression of this cutoff: radial structure shorter than the long cutoff (concentric turning marks of the
#: pin's tip) stays with the individual marks; the quadratic keeps the walls' curvature.
PROFILE_CUTOFF_UM = LONG_CUTOFF_UM
#: Tukey biweight constant of the robust ring fits (95 % efficiency under Gaussian noise).
TUKEY_C = 4.685
#: A ring's tilt terms are fitted only where its measured points cover this many of 8 sectors (else they are
#: interpolated from the neighbouring rings: a ring seen on one side cannot tell tilt from depth).
RING_MIN_SECTORS = 6
#: NaN-aware filters output NaN where less than this share of the kernel's weight is measured.
MIN_FILTER_WEIGHT = 0.3

# --- usable or not -----------------------------------------------------------------------------------------------
#: Fewest measured points of the impression (polar grid) to compare: ~ ten cells' worth (a cell holds ~1000).
MIN_MEASURED_POINTS = 10_000
#: ... and least measured share of the impression's outer half (radii from half the kept radius out: the walls;
#: the inner half is the floor, which confocal scans often lose whole). NIST raw Fadul scans: 0.35-0.4.
MIN_MEASURED_SHARE = 0.15
#: A crater shallower than this below the face is no firing-pin impression (9 mm Luger impressions are
#: 100-250 um deep; a face's form and roughness stay within ~10 um).
MIN_DEPTH_UM = 20.0

# --- the cells (cross-sections) ----------------------------------------------------------------------------------
#: Radial width of a band: 20 polar rings; eight bands cover the 0.3-0.5 mm of measured wall of a Fadul scan.
BAND_UM = 80.0
#: Arc length of a cell: NIST's CMC cells on breech faces are 0.4-0.5 mm; a band at radius r holds
#: ``round(2 pi r / CELL_ARC_UM)`` cells, so cells are of similar area at every radius.
CELL_ARC_UM = 300.0
#: A cell is compared when at least this share of its points is measured (and the overlap at a shift holds
#: at least ``MIN_OVERLAP_SHARE`` of its measured points).
CELL_MIN_VALID_SHARE = 0.5
MIN_OVERLAP_SHARE = 0.5
#: Radial shift searched for each cell (the crater centres are matched first; this absorbs what is left and
#: a depth difference between the shots).
RADIAL_SEARCH_UM = 20.0
#: A cell is congruent when its correlation reaches this (NIST's CMC threshold for 3D topographies is 0.5-0.6),
#: its rotation lies within this of the consensus (3 degrees is 50 um of arc at 1 mm) and its radial shift within
#: this of the congruent cells' median.
CCF_THRESHOLD = 0.6
ROTATION_TOLERANCE_DEG = 3.0
RADIAL_TOLERANCE_UM = 8.0
#: With the breech face's pose given, rotations are searched only this far from it.
POSE_WINDOW_DEG = 5.0
#: Translation search of B's crater centre: +- this, on a coarse then a fine step. The crater centres of two
#: shots fitted to their holes of missing data agree to ~10-20 um. On raw Fadul pairs the search ends at its
#: reach (32 um), but there the whole-impression correlation against the shift is a broad ridge, not a peak
#: beyond reach: widened to +-96 um it rises for different guns as well (1-2 vs 2-1 at the breech-face pose:
#: 0.156 at (60, -48) um against 0.016 within +-32 um), so the search is kept narrow.
TRANSLATION_SEARCH_UM = 24.0
TRANSLATION_STEPS_UM = (8.0, 4.0)
#: The outline (edge radius against angle) is sampled at 1 degree, at this share of the shallower impression's
#: measured depth (Fadul raw scans: the wall is measured 50-90 % above a quarter of the depth, < 10 % below half).
OUTLINE_N_THETA = 360
OUTLINE_DEPTH_SHARE = 0.25


@dataclass(eq=False)
class FiringPinImpression:
    """A firing-pin impression extracted from a raw scan, in polar coordinates about the crater centre.

    Attributes
    ----------
    usable : bool
        Whether the impression can be compared; when False only ``reason`` (and what was measured up to
        the failure) is set.
    reason : str or None
        Why the impression is not usable.
    source : str
        The scan's source (file or exhibit), for messages.
    centre_m : (float, float) or None
        Crater centre, metres in the scan's frame (x along columns, y along rows).
    crater_radius_m, aperture_radius_m : float or None
        The breech-face search's crater (hole of missing data) and aperture radii.
    outer_radius_m : float
        How far from the centre the impression is kept.
    spacing_um : float
        Radial step of the polar grid (``radii_m[k] = k * spacing_um * 1e-6``).
    n_theta : int
        Angular samples over a full turn (``theta_k = 2 pi k / n_theta``).
    marks_m : (n_r, n_theta) float32 ndarray
        The individual marks: heights less the class shape, band-passed (`SHORT_CUTOFF_UM` to
        `LONG_CUTOFF_UM`), metres, NaN where not measured; rows are radii up to ``outer_radius_m``.
    profile_radii_m : (n_p,) ndarray
        Radii of the class profile (out to the face ring).
    depth_profile_m : (n_p,) ndarray
        Class shape: depth below the face against radius (positive down), NaN where a ring is not
        measured.
    depth_map_m : (n_r, OUTLINE_N_THETA) float32 ndarray
        Class shape with its long waves: depth below the face, 1 degree columns, for outlines at any
        depth.
    depth_m : float
        Deepest measured depth of the class profile (a lower bound when the floor is not measured).
    floor_measured_share : float
        Measured share of the inner half of the crater (the floor).
    measured_share : float
        Measured share of the impression's outer half (``outer_radius_m / 2 <= r <= outer_radius_m``).
    params : dict
        The parameters the extraction used.
    """

    usable: bool
    reason: str | None
    source: str
    centre_m: tuple[float, float] | None = None
    crater_radius_m: float | None = None
    aperture_radius_m: float | None = None
    outer_radius_m: float = float("nan")
    spacing_um: float = DEFAULT_SPACING_UM
    n_theta: int = DEFAULT_N_THETA
    marks_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    profile_radii_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    depth_profile_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    depth_map_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    depth_m: float = float("nan")
    floor_measured_share: float = float("nan")
    measured_share: float = float("nan")
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def radii_m(self) -> np.ndarray:
        """Radii of the rows of ``marks_m`` and ``depth_map_m`` (metres)."""
        return np.arange(self.marks_m.shape[0]) * self.spacing_um * 1e-6

    def outline(self, depth_m: float) -> np.ndarray:
        """The impression's outline at ``depth_m`` below the face: per degree, the radius (metres) where the
        class shape with its long waves crosses that depth going outwards, the crossing nearest the depth
        profile's own; NaN where it is not measured there."""
        n = self.marks_m.shape[0]
        ref = _outline(self.depth_profile_m[:n, None], self.spacing_um * 1e-6, depth_m)[0]
        return _outline(self.depth_map_m, self.spacing_um * 1e-6, depth_m, None if np.isnan(ref) else ref)

    #: The array fields and their dimensions (the rest are JSON in a stored record).
    ARRAY_FIELDS: ClassVar[dict[str, int]] = {
        "marks_m": 2,
        "profile_radii_m": 1,
        "depth_profile_m": 1,
        "depth_map_m": 2,
    }

    def to_record(self) -> dict[str, Any]:
        """This extraction as JSON fields and float arrays (how a ``.npz`` keeps it)."""
        return record_of(self, self.ARRAY_FIELDS)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (no arrays)."""

        def num(v):
            return None if v is None or not np.isfinite(v) else float(v)

        return {
            "usable": self.usable,
            "reason": self.reason,
            "source": self.source,
            "centre_m": None if self.centre_m is None else [float(v) for v in self.centre_m],
            "crater_radius_m": num(self.crater_radius_m),
            "aperture_radius_m": num(self.aperture_radius_m),
            "outer_radius_m": num(self.outer_radius_m),
            "depth_um": num(self.depth_m * 1e6),
            "floor_measured_share": num(self.floor_measured_share),
            "measured_share": num(self.measured_share),
            "params": dict(self.params),
        }


# ================================================================================================================
# helpers
# ================================================================================================================


def _finite_number(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
        raise ParameterError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _sigma_samples(cutoff_um: float, step_um) -> np.ndarray | float:
    """Gaussian sigma (samples) of an ISO 16610-61 filter of ``cutoff_um`` on a grid of ``step_um``."""
    alpha = np.sqrt(np.log(2.0) / np.pi)
    return alpha * cutoff_um / np.sqrt(2 * np.pi) / step_um


def polar_unwrap(
    heights: np.ndarray, spacing_m: tuple[float, float], centre_m, radii_m: np.ndarray, n_theta: int
) -> np.ndarray:
    """Sample a height map on a polar grid about ``centre_m``: rows are ``radii_m``, columns the angles
    ``2 pi k / n_theta`` (``theta = atan2(y, x)``, y along rows).

    Bilinear; a sample is NaN when any point it interpolates from is NaN or outside the grid, so no height
    is made up near missing data.

    Parameters
    ----------
    heights : (ny, nx) ndarray
        Heights in metres, NaN = missing.
    spacing_m : (float, float)
        ``(dx, dy)`` in metres.
    centre_m : (float, float)
        Centre ``(x, y)`` in metres from the first grid point.
    radii_m : (n_r,) ndarray
        Radii in metres.
    n_theta : int
        Angular samples over a full turn.

    Returns
    -------
    (n_r, n_theta) float64 ndarray

    Examples
    --------
    >>> z = np.add.outer(np.arange(5.0), np.zeros(5))  # height = row index
    >>> p = polar_unwrap(z, (1.0, 1.0), (2.0, 2.0), np.array([0.0, 1.0]), 4)
    >>> p[1].round(6).tolist()  # theta 0, 90, 180, 270 degrees: y = 2, 3, 2, 1
    [2.0, 3.0, 2.0, 1.0]
    """
    z = np.asarray(heights, dtype=np.float64)
    dx, dy = spacing_m
    theta = 2 * np.pi * np.arange(n_theta) / n_theta
    rows = (centre_m[1] + np.multiply.outer(radii_m, np.sin(theta))) / dy
    cols = (centre_m[0] + np.multiply.outer(radii_m, np.cos(theta))) / dx
    valid = ~np.isnan(z)
    h = ndimage.map_coordinates(np.where(valid, z, 0.0), [rows, cols], order=1, mode="constant", cval=0.0)
    w = ndimage.map_coordinates(valid.astype(np.float64), [rows, cols], order=1, mode="constant", cval=0.0)
    h[w < 1 - 1e-9] = np.nan
    return h


def _polar_lowpass(
    h: np.ndarray, radii_m: np.ndarray, spacing_um: float, cutoff_um: float, *, fill: bool = False
) -> np.ndarray:
    """NaN-aware Gaussian low-pass (ISO 16610-61 weighting, normalised weights) on a polar grid, isotropic in
    physical units: the angular sigma of each ring is the physical sigma over the ring's arc step. NaN where
    the input is (unless ``fill``: then only where the measured weight is too thin)."""
    n_theta = h.shape[1]
    valid = ~np.isnan(h)
    num = np.where(valid, h, 0.0)
    den = valid.astype(np.float64)
    s_r = _sigma_samples(cutoff_um, spacing_um)
    num = ndimage.gaussian_filter1d(num, s_r, axis=0, mode="constant", truncate=3.0)
    den = ndimage.gaussian_filter1d(den, s_r, axis=0, mode="constant", truncate=3.0)
    arc_um = np.maximum(radii_m * 1e6 * 2 * np.pi / n_theta, 1e-9)
    s_t = _sigma_samples(cutoff_um, arc_um)  # per ring, in angular samples
    f = np.fft.rfftfreq(n_theta)  # cycles per sample
    transfer = np.exp(-2 * (np.pi * f[None, :] * s_t[:, None]) ** 2)
    num = np.fft.irfft(np.fft.rfft(num, axis=1) * transfer, n_theta, axis=1)
    den = np.fft.irfft(np.fft.rfft(den, axis=1) * transfer, n_theta, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[(den < MIN_FILTER_WEIGHT) | (~valid & (not fill))] = np.nan
    return out


def _ring_fit(h: np.ndarray, n_iter: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Robust per-ring fit ``h(r, theta) ~ p(r) + a(r) cos(theta) + b(r) sin(theta)`` (Tukey biweight).

    The cosine and sine terms take up the scan's tilt, an off-axis strike and the error of the centre; rings
    whose points cover fewer than `RING_MIN_SECTORS` of 8 sectors get them interpolated from the rings that
    do. Returns ``p, a, b`` (NaN for unmeasured rings) and each ring's measured count.
    """
    n_r, n_t = h.shape
    theta = 2 * np.pi * np.arange(n_t) / n_t
    basis = np.stack([np.ones(n_t), np.cos(theta), np.sin(theta)])
    valid = ~np.isnan(h)
    hz = np.where(valid, h, 0.0)
    count = valid.sum(1)
    sectors = valid.reshape(n_r, 8, n_t // 8).any(2).sum(1) if n_t % 8 == 0 else np.full(n_r, 8)
    full = (sectors >= RING_MIN_SECTORS) & (count >= 20)
    w = valid.astype(np.float64)
    p = np.full(n_r, np.nan)
    a = np.zeros(n_r)
    b = np.zeros(n_r)
    for _ in range(n_iter):
        N = np.einsum("kt,it,jt->kij", w, basis, basis)
        rhs = np.einsum("kt,it->ki", w * hz, basis)
        if full.any():
            Nf = N[full] + 1e-9 * np.eye(3) * np.maximum(N[full][:, :1, :1], 1.0)  # a ring whose weights all vanished
            coef = np.linalg.solve(Nf, rhs[full][..., None])[..., 0]
            a[full], b[full] = coef[:, 1], coef[:, 2]
        rf = np.flatnonzero(full)
        if rf.size:
            a[~full] = np.interp(np.flatnonzero(~full), rf, a[rf])
            b[~full] = np.interp(np.flatnonzero(~full), rf, b[rf])
        tilt = a[:, None] * basis[1] + b[:, None] * basis[2]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (w * (hz - tilt)).sum(1) / w.sum(1)
        res = np.where(valid, h - tilt - p[:, None], np.nan)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                s = 1.4826 * np.nanmedian(np.abs(res), axis=1)
            u = res / (TUKEY_C * np.maximum(s, 1e-12))[:, None]
        w = np.where(valid & (np.abs(u) < 1), (1 - u**2) ** 2, 0.0)
    p[count == 0] = np.nan
    return p, a, b, count


def _local_quadratic(y: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted local quadratic regression of ``y`` (NaN where ``weight`` is 0) at every sample:
    the ISO 16610-21 second-order regression filter, which keeps a wall's curvature. NaN where fewer than
    5 samples carry weight within 3 sigma."""
    n = y.size
    out = np.full(n, np.nan)
    half = int(np.ceil(3 * sigma))
    yz = np.where(weight > 0, y, 0.0)
    for k in range(n):
        lo, hi = max(0, k - half), min(n, k + half + 1)
        d = np.arange(lo, hi) - k
        g = np.exp(-0.5 * (d / sigma) ** 2) * weight[lo:hi]
        if (g > 0).sum() < 5:
            continue
        A = np.stack([np.ones_like(d, dtype=float), d, d * d], 1)
        AtA = A.T @ (A * g[:, None])
        if np.linalg.cond(AtA) > 1e12:
            continue
        out[k] = np.linalg.solve(AtA, A.T @ (g * yz[lo:hi]))[0]
    return out


def _outline(depth_map: np.ndarray, dr: float, depth_m: float, ref_m: float | None = None) -> np.ndarray:
    """Per column, the radius where ``depth_map`` (rows = radii ``k dr``) crosses ``depth_m`` going outwards,
    between the measured rows on either side (linear interpolation): the crossing nearest ``ref_m`` (the
    outermost when None); NaN where no crossing is measured."""
    d = np.asarray(depth_map, dtype=np.float64)
    out = np.full(d.shape[1], np.nan)
    for j in range(d.shape[1]):
        k = np.flatnonzero(np.isfinite(d[:, j]))
        if k.size < 2:
            continue
        v = d[k, j]
        cross = np.flatnonzero((v[:-1] >= depth_m) & (v[1:] < depth_m))
        if cross.size:
            r = (k[cross] + (v[cross] - depth_m) / (v[cross] - v[cross + 1]) * (k[cross + 1] - k[cross])) * dr
            out[j] = r[-1] if ref_m is None else r[np.argmin(np.abs(r - ref_m))]
    return out


# ================================================================================================================
# extraction
# ================================================================================================================


def _not_usable(source: str, reason: str, **kw) -> FiringPinImpression:
    return FiringPinImpression(False, f"{source}: {reason}", source, **kw)


def _processed_reason(scan: Scan) -> str | None:
    steps = [s.get("step") for s in (scan.meta or {}).get("processing", []) if isinstance(s, dict)]
    if "find_breech_face" in steps or "crop" in steps:
        return (
            "the scan was already processed to its breech face (find_breech_face in meta['processing']): "
            "the firing-pin impression was cut away; extract it from the raw scan"
        )
    return None


def extract_firing_pin(
    scan: Scan,
    region=None,
    *,
    spacing_um: float = DEFAULT_SPACING_UM,
    n_theta: int = DEFAULT_N_THETA,
    short_cutoff_um: float = SHORT_CUTOFF_UM,
    long_cutoff_um: float = LONG_CUTOFF_UM,
    outer_radius_crater_share: float = OUTER_RADIUS_CRATER_SHARE,
) -> FiringPinImpression:
    """Extract the firing-pin impression of a raw cartridge-case scan, levelled on its own.

    1. Locate: the crater and aperture circles of the breech-face search (`find_breech_face` with
       ``check=False``, or ``region``). The crater is the hole of missing data at the centre (confocal
       instruments lose the floor and the steepest wall); without one, the aperture centre is used and
       the impression must show as a depression.
    2. Unwrap: heights on a polar grid about the crater centre (`polar_unwrap`; radial step
       ``spacing_um``, ``n_theta`` angles), out to ``outer_radius_crater_share`` crater radii (at most
       `APERTURE_MARGIN_M` inside the aperture) and, for the face level, a ring beyond the aperture.
    3. Class shape: ring by ring a robust fit of depth plus a cosine and sine term (tilt, off-axis
       strike, centre error), smoothed along the radius by a local quadratic regression (cutoff
       `PROFILE_CUTOFF_UM`). The depth profile is that shape's ring level below the face.
    4. Individual marks: heights less the class shape, Gaussian band-passed in physical units from
       ``short_cutoff_um`` to ``long_cutoff_um`` (isotropic: the angular sigma follows each ring's arc).

    Parameters
    ----------
    scan : Scan
        A raw scan (primer with its firing-pin impression), heights in metres, NaN = missing.
    region : BreechFaceRegion, optional
        The breech-face search's result for this scan (to reuse one, or to give the geometry of a
        synthetic scan). Needs ``crater_center_m`` and ``crater_radius_m``, or ``aperture_center_m`` and
        ``aperture_radius_m``.
    spacing_um : float
        Radial step of the polar grid (1-10 um).
    n_theta : int
        Angles over a full turn (a multiple of 8, 360 to 7200).
    short_cutoff_um, long_cutoff_um : float
        Band of the individual marks.
    outer_radius_crater_share : float
        How far the impression is kept, in crater radii.

    Returns
    -------
    FiringPinImpression
        ``usable`` False with a ``reason`` where there is no crater, too few measured points, no
        depression, or the scan was already cut to its breech face: a missing mark, never zero evidence.

    Raises
    ------
    ParameterError
        For a scan that is not a `Scan` or parameters out of range.

    Examples
    --------
    >>> import ballistix as bx
    >>> fp = extract_firing_pin(bx.read_x3p("fadul-1-1-raw.x3p"))  # doctest: +SKIP
    >>> fp.usable, fp.marks_m.shape, round(fp.depth_m * 1e6)  # doctest: +SKIP
    (True, (278, 1440), 65)
    >>> done = extract_firing_pin(bx.preprocess(bx.read_x3p("fadul-1-1-raw.x3p")))  # doctest: +SKIP
    >>> done.usable, done.reason.split(": ", 1)[1][:40]  # doctest: +SKIP
    (False, 'the scan was already processed to its br')
    """
    if not isinstance(scan, Scan):
        raise ParameterError(f"scan must be a ballistix Scan (heights and spacing), got {type(scan).__name__}")
    spacing_um = _finite_number(spacing_um, "spacing_um")
    if not SPACING_RANGE_UM[0] <= spacing_um <= SPACING_RANGE_UM[1]:
        raise ParameterError(f"spacing_um must be within {SPACING_RANGE_UM} um, got {spacing_um}")
    if isinstance(n_theta, bool) or not isinstance(n_theta, (int, np.integer)) or not 360 <= n_theta <= 7200:
        raise ParameterError(f"n_theta must be an integer from 360 to 7200, got {n_theta!r}")
    if n_theta % 8:
        raise ParameterError(f"n_theta must be a multiple of 8 (sectors of the ring fit), got {n_theta}")
    short_cutoff_um = _finite_number(short_cutoff_um, "short_cutoff_um")
    long_cutoff_um = _finite_number(long_cutoff_um, "long_cutoff_um")
    if not 0 < short_cutoff_um < long_cutoff_um:
        raise ParameterError(
            f"need 0 < short_cutoff_um < long_cutoff_um, got {short_cutoff_um} and {long_cutoff_um} um"
        )
    outer_share = _finite_number(outer_radius_crater_share, "outer_radius_crater_share")
    if not 1.0 <= outer_share <= 3.0:
        raise ParameterError(f"outer_radius_crater_share must be within 1-3 crater radii, got {outer_share}")
    params = {
        "spacing_um": spacing_um,
        "n_theta": int(n_theta),
        "short_cutoff_um": short_cutoff_um,
        "long_cutoff_um": long_cutoff_um,
        "outer_radius_crater_share": outer_share,
    }
    source = scan.label
    processed = _processed_reason(scan)
    if processed:
        return _not_usable(source, processed, params=params)

    # 1. locate
    if region is None:
        from ..preprocessing.breech_face import find_breech_face

        try:
            region = find_breech_face(scan, check=False)
        except BallistixError as e:
            return _not_usable(source, f"the breech-face search found no primer geometry ({e})", params=params)
    if getattr(region, "inner_edge", None) == "mask edge":
        return _not_usable(
            source,
            "the firing-pin aperture is a clean mask edge: the scan was already cut to its breech face and "
            "holds no firing-pin impression",
            params=params,
        )
    cc, cr = getattr(region, "crater_center_m", None), getattr(region, "crater_radius_m", None)
    ac, ar = getattr(region, "aperture_center_m", None), getattr(region, "aperture_radius_m", None)
    if cc is None or cr is None:
        if ac is None or ar is None:
            return _not_usable(
                source, "no firing-pin crater or aperture found (no hole or step near the primer centre)", params=params
            )
        centre, cr = (float(ac[0]), float(ac[1])), None
    else:
        centre, cr = (float(cc[0]), float(cc[1])), float(cr)
    # how far the impression reaches, and the face ring
    if ac is not None and ar is not None:
        ap_near = float(ar) - float(np.hypot(ac[0] - centre[0], ac[1] - centre[1]))
        ap_far = float(ar) + float(np.hypot(ac[0] - centre[0], ac[1] - centre[1]))
        r_out = ap_near - APERTURE_MARGIN_M
        if cr is not None:
            r_out = min(r_out, outer_share * cr)
        face_lo = ap_far + FACE_RING_M[0]
    else:
        r_out = outer_share * cr
        face_lo = r_out + FACE_RING_M[0]
    face_hi = face_lo + (FACE_RING_M[1] - FACE_RING_M[0])
    if not r_out > 10 * spacing_um * 1e-6:
        return _not_usable(
            source, f"the impression is too small to compare (kept to {r_out * 1e6:.0f} um radius)", params=params
        )
    dr = spacing_um * 1e-6
    n_out = int(np.floor(r_out / dr)) + 1
    n_all = int(np.ceil(face_hi / dr)) + 1
    radii = np.arange(n_all) * dr

    # 2. unwrap (the scan cropped to the disc first)
    dx, dy = scan.dx, scan.dy
    z = scan.heights
    x0 = max(int(np.floor((centre[0] - face_hi) / dx)) - 1, 0)
    y0 = max(int(np.floor((centre[1] - face_hi) / dy)) - 1, 0)
    x1 = min(int(np.ceil((centre[0] + face_hi) / dx)) + 2, z.shape[1])
    y1 = min(int(np.ceil((centre[1] + face_hi) / dy)) + 2, z.shape[0])
    if x1 <= x0 or y1 <= y0:
        return _not_usable(source, "the crater centre lies outside the scan", params=params)
    sub = np.asarray(z[y0:y1, x0:x1], dtype=np.float64)
    h = polar_unwrap(sub, (dx, dy), (centre[0] - x0 * dx, centre[1] - y0 * dy), radii, n_theta)

    inner = ~np.isnan(h[:n_out])
    n_meas = int(inner.sum())
    share = float(inner[n_out // 2 :].mean())
    geometry = dict(
        centre_m=centre,
        crater_radius_m=cr,
        aperture_radius_m=None if ar is None else float(ar),
        outer_radius_m=(n_out - 1) * dr,
        spacing_um=spacing_um,
        n_theta=int(n_theta),
        measured_share=float(share),
        params=params,
    )
    if n_meas < MIN_MEASURED_POINTS or share < MIN_MEASURED_SHARE:
        return _not_usable(
            source,
            f"too few measured points in the firing-pin impression ({n_meas} points, {share:.0%} of its walls; "
            f"at least {MIN_MEASURED_POINTS} and {MIN_MEASURED_SHARE:.0%} needed): the instrument lost the "
            "crater's walls and floor",
            **geometry,
        )

    # 3. class shape
    p, a, b, count = _ring_fit(h)
    sigma_r = float(_sigma_samples(PROFILE_CUTOFF_UM, spacing_um))
    wgt = np.where(np.isfinite(p), np.sqrt(count), 0.0)
    p_s = _local_quadratic(p, wgt, sigma_r)
    a_s = _local_quadratic(a, wgt, sigma_r)
    b_s = _local_quadratic(b, wgt, sigma_r)
    p_s = np.where(np.isfinite(p_s), p_s, p)
    a_s = np.where(np.isfinite(a_s), a_s, a)
    b_s = np.where(np.isfinite(b_s), b_s, b)
    face_rings = (radii >= face_lo) & (radii <= face_hi) & np.isfinite(p)
    if face_rings.sum() >= 3:
        face = float(np.median(p[face_rings]))
    else:  # no face ring measured: the outermost measured rings of the impression
        meas = np.flatnonzero(np.isfinite(p_s[:n_out]))
        face = float(np.median(p_s[meas[-5:]])) if meas.size else float("nan")
    theta = 2 * np.pi * np.arange(n_theta) / n_theta
    shape = p_s[:, None] + a_s[:, None] * np.cos(theta) + b_s[:, None] * np.sin(theta)
    depth_profile = face - p_s
    depth_profile[count == 0] = np.nan
    inside = depth_profile[:n_out]
    depth = float(np.nanmax(inside)) if np.isfinite(inside).any() else float("nan")
    floor_share = float((~np.isnan(h[: max(int(0.5 * (cr if cr else r_out) / dr), 1)])).mean())
    geometry.update(depth_m=depth, floor_measured_share=floor_share)
    if not depth * 1e6 >= MIN_DEPTH_UM:
        return _not_usable(
            source,
            f"no firing-pin depression: the impression's measured depth is {depth * 1e6:.1f} um below the face "
            f"(at least {MIN_DEPTH_UM:g} um expected)",
            **geometry,
        )

    # 4. individual marks
    resid = (h - shape)[:n_out]
    r_in = radii[:n_out]
    marks = _polar_lowpass(resid, r_in, spacing_um, short_cutoff_um) - _polar_lowpass(
        resid, r_in, spacing_um, long_cutoff_um
    )
    longwave = _polar_lowpass(resid, r_in, spacing_um, long_cutoff_um, fill=True)
    dmap = face - (shape[:n_out] + np.where(np.isnan(longwave), 0.0, longwave))  # thin support: the shape alone
    dmap[np.isnan(h[:n_out])] = np.nan  # only where measured: a filled gap would add crossings of its own
    step = n_theta // OUTLINE_N_THETA if n_theta % OUTLINE_N_THETA == 0 else None
    if step:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            dmap = np.nanmean(dmap.reshape(n_out, OUTLINE_N_THETA, step), axis=2)
    else:
        cols = np.round(np.arange(OUTLINE_N_THETA) * n_theta / OUTLINE_N_THETA).astype(int) % n_theta
        dmap = dmap[:, cols]
    return FiringPinImpression(
        True,
        None,
        source,
        marks_m=marks.astype(np.float32),
        profile_radii_m=radii,
        depth_profile_m=depth_profile,
        depth_map_m=dmap.astype(np.float32),
        **geometry,
    )


# ================================================================================================================
# comparison
# ================================================================================================================


def _centre_shift_geometry(n_r: int, n_t: int, dr: float, delta_m, row0: int = 0):
    """Where each point of a polar grid (rows ``row0 .. n_r - 1``, radii ``k dr``) about a centre moved by
    ``delta_m = (dx, dy)`` lies on the grid about the old centre: the flat indices of its bilinear
    neighbours' corner (row ``r``, column ``c``; into the rows ``row0 ..``, padded as `_resample` pads) and the
    fractional parts. Depends on the grid and the shift only: computed once per shift, reused for every map."""
    theta = 2 * np.pi * np.arange(n_t) / n_t
    r = np.arange(row0, n_r)[:, None] * dr
    x = r * np.cos(theta) + delta_m[0]
    y = r * np.sin(theta) + delta_m[1]
    rows = np.hypot(x, y) * (1.0 / dr) - (row0 - 1)  # +1: one padding row of NaN before row0
    cols = np.arctan2(y, x) * (n_t / (2 * np.pi))
    cols[cols < 0] += n_t
    rows = np.clip(rows, 0.0, n_r - row0 + 1.0)  # beyond the grid: the NaN padding rows
    r0 = rows.astype(np.int64)
    c0 = cols.astype(np.int64)
    c0[c0 >= n_t] = n_t - 1  # cols == n_t by rounding: the wrap column carries it
    return r0 * (n_t + 1) + c0, rows - r0, cols - c0


def _resample(m: np.ndarray, geometry) -> np.ndarray:
    """Bilinear resampling of ``m`` (the rows ``row0 ..`` `_centre_shift_geometry` was made for) at its
    points: NaN where any neighbour that carries weight is missing or outside the grid, so no height is made
    up near missing data."""
    i00, fr, fc = geometry
    n_rows, n_t = m.shape
    pad = np.full((n_rows + 3, n_t + 1), np.nan)  # a NaN row before and two after, the wrap column
    pad[1 : n_rows + 1, :n_t] = m
    pad[1 : n_rows + 1, n_t] = m[:, 0]
    flat = pad.ravel()
    w = n_t + 1
    v00, v01, v10, v11 = flat[i00], flat[i00 + 1], flat[i00 + w], flat[i00 + w + 1]
    eps = 1e-9
    # a neighbour with no weight may be missing: leave it out (as a constant-mode map_coordinates would)
    v01 = np.where(fc > eps, v01, 0.0)
    v10 = np.where(fr > eps, v10, 0.0)
    v11 = np.where((fr > eps) & (fc > eps), v11, 0.0)
    v00 = np.where((1 - fr > eps) & (1 - fc > eps), v00, 0.0)
    top = v00 + fc * (v01 - v00)
    bot = v10 + fc * (v11 - v10)
    return top + fr * (bot - top)


def _shift_centre(m: np.ndarray, dr: float, delta_m) -> np.ndarray:
    """``m`` (polar, rows ``k dr``) resampled about its centre moved by ``delta_m = (dx, dy)``: the exact
    polar coordinates about the old centre of each new grid point, bilinear, NaN-safe."""
    if delta_m[0] == 0 and delta_m[1] == 0:
        return m
    return _resample(m, _centre_shift_geometry(m.shape[0], m.shape[1], dr, delta_m)).reshape(m.shape)


def _spectra(m: np.ndarray, axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FFTs of a map's heights (0 where missing), squared heights and measured mask, for masked NCC."""
    v = ~np.isnan(m)
    z = np.where(v, m, 0.0)
    f = np.fft.rfft if axes == 1 else np.fft.rfft2
    kw = {"axis": 1} if axes == 1 else {}
    return f(z, **kw), f(z * z, **kw), f(v.astype(np.float64), **kw)


def _masked_ncc(sa, sb, inverse, min_overlap: float) -> np.ndarray:
    """Masked normalised cross-correlation from the spectra of `_spectra`: ``ncc[s]`` compares ``a[x]`` with
    ``b[x + s]`` over the points measured on both (circular shifts); NaN where the overlap holds fewer than
    ``min_overlap`` points or either side is flat there."""
    (fA, fA2, fMa), (fB, fB2, fMb) = sa, sb

    def xc(fu, fv):
        return inverse(np.conj(fu) * fv)

    cnt = np.rint(xc(fMa, fMb))
    s_a, s_b = xc(fA, fMb), xc(fMa, fB)
    s_aa, s_bb, s_ab = xc(fA2, fMb), xc(fMa, fB2), xc(fA, fB)
    with np.errstate(invalid="ignore", divide="ignore"):
        num = s_ab - s_a * s_b / cnt
        den = np.sqrt(np.maximum(s_aa - s_a * s_a / cnt, 0) * np.maximum(s_bb - s_b * s_b / cnt, 0))
        ncc = num / den
    ncc[(cnt < min_overlap) | ~(den > 0)] = np.nan
    return ncc


def _ncc_theta(sa, b: np.ndarray, min_overlap: float) -> np.ndarray:
    """Whole-map masked NCC over every circular shift along theta (no radial shift): ``ncc[s]`` compares
    ``a[:, t]`` with ``b[:, t + s]``; ``sa`` are A's row spectra (`_spectra` with ``axes=1``)."""
    n = b.shape[1]
    return _masked_ncc(sa, _spectra(b, 1), lambda x: np.fft.irfft(x.sum(0), n), min_overlap)


def _angle_diff_deg(a, b):
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


def _allowed_shifts(n_t: int, rotation_deg: float | None, window_deg: float) -> np.ndarray:
    """Boolean mask of the theta shifts searched: all, or within ``window_deg`` of ``rotation_deg``."""
    if rotation_deg is None:
        return np.ones(n_t, bool)
    ang = np.arange(n_t) * 360.0 / n_t
    return np.abs(_angle_diff_deg(ang, rotation_deg)) <= window_deg + 1e-9


def _translation_search(a, b, dr, allowed, min_overlap, radius_um, steps_um, row0=0, n_r=None):
    """Best centre shift of B (metres), coarse to fine, by the whole-impression correlation over the allowed
    rotations. ``a`` and ``b`` are the rows ``row0 ..`` of grids of ``n_r`` rows (everything below ``row0``
    unmeasured in both, within the reach of the search). Returns ``(delta_m, b_shifted, ncc_curve,
    n_evaluated)``."""
    n_r = a.shape[0] + row0 if n_r is None else n_r
    sa = _spectra(a, 1)
    best = (-np.inf, (0.0, 0.0), b, None)
    seen: set = set()
    centre = (0.0, 0.0)
    reach = radius_um
    for step in steps_um:
        k = int(np.floor(reach / step + 1e-9))
        for i in range(-k, k + 1):
            for j in range(-k, k + 1):
                d_um = (round(centre[0] + i * step, 6), round(centre[1] + j * step, 6))
                if d_um in seen:  # the finer grid revisits the coarse one's best
                    continue
                seen.add(d_um)
                d = (d_um[0] * 1e-6, d_um[1] * 1e-6)
                if d == (0.0, 0.0):
                    bs = b
                else:
                    bs = _resample(b, _centre_shift_geometry(n_r, b.shape[1], dr, d, row0))
                ncc = _ncc_theta(sa, bs, min_overlap)
                v = np.where(allowed, ncc, np.nan)
                top = np.nanmax(v) if np.isfinite(v).any() else -np.inf
                if top > best[0]:
                    best = (top, d_um, bs, ncc)
        centre, reach = best[1], step
    delta = (best[1][0] * 1e-6, best[1][1] * 1e-6)
    return delta, best[2], best[3], len(seen)


def _cells(a: np.ndarray, dr_um: float, row_offset: int = 0) -> list[tuple[int, int, int, int]]:
    """The cells of A: ``(row0, row1, col0, col1)`` of bands `BAND_UM` wide and arcs about `CELL_ARC_UM`
    long, kept where at least `CELL_MIN_VALID_SHARE` of the points are measured. ``a``'s first row is the
    grid's row ``row_offset`` (radius ``row_offset * dr_um``)."""
    n_r, n_t = a.shape
    valid = ~np.isnan(a)
    rows = np.flatnonzero(valid.any(1))
    if rows.size == 0:
        return []
    h = max(int(round(BAND_UM / dr_um)), 2)
    cells = []
    for r0 in range(int(rows[0]), int(rows[-1]) + 1, h):
        r1 = min(r0 + h, n_r)
        if r1 - r0 < h // 2:
            continue
        r_mid = (r0 + r1 - 1 + 2 * row_offset) / 2 * dr_um
        n_sec = max(int(round(2 * np.pi * r_mid / CELL_ARC_UM)), 1)
        edges = np.round(np.linspace(0, n_t, n_sec + 1)).astype(int)
        for c0, c1 in zip(edges[:-1], edges[1:]):
            if valid[r0:r1, c0:c1].mean() >= CELL_MIN_VALID_SHARE:
                cells.append((r0, r1, int(c0), int(c1)))
    return cells


def _band_region(b: np.ndarray, r0: int, r1: int, s_r: int) -> np.ndarray:
    """Rows ``r0 - s_r .. r1 + s_r`` of ``b`` (NaN beyond its rows)."""
    n_r, n_t = b.shape
    lo, hi = r0 - s_r, r1 + s_r
    reg = np.full((hi - lo, n_t), np.nan)
    src_lo, src_hi = max(lo, 0), min(hi, n_r)
    if src_hi > src_lo:
        reg[src_lo - lo : src_hi - lo] = b[src_lo:src_hi]
    return reg


def _cell_search(a, cell, s_r, spec_region, shape, allowed):
    """One cell of A against B's band region (spectra ``spec_region``, rows ``r0 - s_r .. r1 + s_r``) over
    every allowed theta shift and radial shifts ``-s_r..s_r``: masked NCC, circular along theta (rows never
    wrap for shifts up to ``s_r``). Returns ``(ccf, shift_theta_samples, shift_r_samples)`` of the best
    match (ccf NaN when no shift overlaps enough)."""
    r0, r1, c0, c1 = cell
    tpl = np.full(shape, np.nan)
    tpl[s_r : s_r + r1 - r0, c0:c1] = a[r0:r1, c0:c1]
    n_pts = int((~np.isnan(tpl)).sum())
    ncc = _masked_ncc(_spectra(tpl, 2), spec_region, lambda x: np.fft.irfft2(x, shape), MIN_OVERLAP_SHARE * n_pts)
    rs = np.r_[0 : s_r + 1, shape[0] - s_r : shape[0]]  # radial shifts 0..s_r, then -s_r..-1
    sub = np.where(np.isfinite(ncc[rs][:, allowed]), ncc[rs][:, allowed], -np.inf)
    if not np.isfinite(sub).any():
        return float("nan"), 0, 0
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
    shift_r = int(rs[i]) if rs[i] <= s_r else int(rs[i] - shape[0])
    return float(sub[i, j]), int(np.flatnonzero(allowed)[j]), shift_r


def _consensus(ccf, rot, threshold, tol_deg):
    """The rotation most cells with ``ccf >= threshold`` agree on (within ``tol_deg``); ties go to the
    larger summed correlation. None when no cell reaches the threshold."""
    good = np.flatnonzero(ccf >= threshold)
    if good.size == 0:
        return None
    best, key = None, (-1, -np.inf)
    for i in good:
        near = good[np.abs(_angle_diff_deg(rot[good], rot[i])) <= tol_deg]
        k = (near.size, float(ccf[near].sum()))
        if k > key:
            key = k
            # circular mean of the agreeing cells' rotations
            ang = np.deg2rad(rot[near])
            best = float(np.rad2deg(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360)
    return best


def _radial_residual(shift_r_um: np.ndarray, theta: np.ndarray, agree: np.ndarray) -> np.ndarray:
    """Registration agreement of the cells' radial shifts: what the centres' residual offset ``(ex, ey)``
    predicts at each cell's angle ``theta`` (``ex cos + ey sin``, plus a common depth term), fitted to the
    ``agree`` cells (least squares, then again without the worst quarter); with fewer than 5 such cells,
    the median. Returns each cell's shift less the prediction (um)."""
    idx = np.flatnonzero(agree)
    if idx.size == 0:
        return np.full(shift_r_um.shape, np.inf)
    if idx.size < 5:
        return shift_r_um - np.median(shift_r_um[idx])
    basis = np.stack([np.ones_like(theta), np.cos(theta), np.sin(theta)], 1)
    coef, *_ = np.linalg.lstsq(basis[idx], shift_r_um[idx], rcond=None)
    res = shift_r_um - basis @ coef
    keep = idx[np.abs(res[idx]) <= np.quantile(np.abs(res[idx]), 0.75)]
    if keep.size >= 4:
        coef, *_ = np.linalg.lstsq(basis[keep], shift_r_um[keep], rcond=None)
    return shift_r_um - basis @ coef


def _class_features(a: FiringPinImpression, b: FiringPinImpression, rotation_deg: float) -> dict[str, Any]:
    """Depth profile, outline and depth of the two impressions: class characteristics."""
    out: dict[str, Any] = {}
    pa, pb = a.depth_profile_m, b.depth_profile_m
    n = min(pa.size, pb.size, a.marks_m.shape[0], b.marks_m.shape[0])
    both = np.isfinite(pa[:n]) & np.isfinite(pb[:n])
    out["profile_overlap_um"] = float(both.sum() * a.spacing_um)
    if both.sum() >= 5:
        da, db = pa[:n][both], pb[:n][both]
        out["profile_corr"] = float(np.corrcoef(da, db)[0, 1]) if da.std() > 0 and db.std() > 0 else float("nan")
        out["profile_rms_diff_um"] = float(np.sqrt(np.mean((da - db) ** 2)) * 1e6)
    else:
        out["profile_corr"] = out["profile_rms_diff_um"] = float("nan")
    out["depth_a_um"], out["depth_b_um"] = float(a.depth_m * 1e6), float(b.depth_m * 1e6)
    out["depth_ratio"] = float(min(a.depth_m, b.depth_m) / max(a.depth_m, b.depth_m))
    # outline at a depth both measure well: a quarter of the shallower impression's measured depth (the deeper
    # wall is where confocal scans lose most points)
    d = OUTLINE_DEPTH_SHARE * min(a.depth_m, b.depth_m)
    oa, ob = a.outline(d), b.outline(d)
    k = int(round(rotation_deg * OUTLINE_N_THETA / 360.0)) % OUTLINE_N_THETA
    ob = np.roll(ob, -k)  # B's outline at theta + rotation, on A's angles
    ok = np.isfinite(oa) & np.isfinite(ob)
    out["outline_depth_um"] = float(d * 1e6)
    out["outline_share"] = float(ok.mean())
    if ok.sum() >= OUTLINE_N_THETA // 4:
        th = np.deg2rad(np.arange(OUTLINE_N_THETA) * 360.0 / OUTLINE_N_THETA)[ok]
        basis = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], 1)

        def shape_of(o):  # radius less its mean and first harmonic (the centre's error)
            coef, *_ = np.linalg.lstsq(basis, o, rcond=None)
            return o - basis @ coef, coef[0]

        sa, ma = shape_of(oa[ok])
        sb, mb = shape_of(ob[ok])
        out["outline_radius_a_um"], out["outline_radius_b_um"] = float(ma * 1e6), float(mb * 1e6)
        out["outline_radius_diff_um"] = float(abs(ma - mb) * 1e6)
        out["outline_rms_diff_um"] = float(np.sqrt(np.mean((sa - sb) ** 2)) * 1e6)
        out["outline_corr"] = float(np.corrcoef(sa, sb)[0, 1]) if sa.std() > 0 and sb.std() > 0 else float("nan")
    else:
        for key in ("outline_radius_a_um", "outline_radius_b_um", "outline_radius_diff_um", "outline_rms_diff_um"):
            out[key] = float("nan")
        out["outline_corr"] = float("nan")
    return out


def compare_firing_pins(
    a: FiringPinImpression,
    b: FiringPinImpression,
    *,
    rotation_deg: float | None = None,
    window_deg: float = POSE_WINDOW_DEG,
    ccf_threshold: float = CCF_THRESHOLD,
    rotation_tolerance_deg: float = ROTATION_TOLERANCE_DEG,
    radial_tolerance_um: float = RADIAL_TOLERANCE_UM,
    translation_search_um: float = TRANSLATION_SEARCH_UM,
) -> MarkResult:
    """Compare two firing-pin impressions: congruent matching cross-sections over a full rotation.

    1. Centre: B's crater centre is moved over a small grid (``+- translation_search_um``, coarse then
       fine) to where the whole impression correlates best with A at some allowed rotation.
    2. Cells: A's individual marks are cut into cells, circumferential bands `BAND_UM` wide and about
       `CELL_ARC_UM` long. Each cell is correlated with B over every rotation (a circular shift along
       theta; masked FFT correlation, missing points left out) and radial shifts up to
       `RADIAL_SEARCH_UM`; its best correlation, rotation and radial shift are kept.
       The same is done the other way (B's cells searched in A, over the reversed rotations).
    3. Congruence (NIST CMX/CMC spirit, forward and backward): the consensus rotation is the one most
       cells of both directions reaching ``ccf_threshold`` agree on within ``rotation_tolerance_deg``
       (B's cells' rotations reversed); a cell is congruent when it reaches the threshold, its rotation
       lies within the tolerance of the consensus and its radial shift agrees with its direction's
       fitted centre offset within ``radial_tolerance_um``. ``count`` is the larger direction's count,
       ``n_elements`` the larger direction's cells compared. The pair is computed in a fixed order of the
       two impressions, so ``compare(a, b)`` and ``compare(b, a)`` give the same count, elements and
       score, and opposite rotations.
    4. Class: depth profiles, outlines at a common depth (at the found rotation; mean radius and first
       harmonic taken apart, as the centres' error), depth ratio, into ``class_features``.

    Parameters
    ----------
    a, b : FiringPinImpression
        From `extract_firing_pin`, with the same ``spacing_um`` and ``n_theta``.
    rotation_deg : float, optional
        The breech face's pose (``bx.compare(...).rotation_deg``, same convention): rotations are then
        searched only within ``window_deg`` of it. None searches the full turn.
    window_deg : float
        Half-width of the rotation window about ``rotation_deg``.
    ccf_threshold, rotation_tolerance_deg, radial_tolerance_um : float
        Congruence thresholds.
    translation_search_um : float
        How far B's crater centre is moved to match A's (0: not at all).

    Returns
    -------
    MarkResult
        ``mark="firing_pin"``; ``count`` congruent cells of ``n_elements`` compared; ``score`` the
        correlation of the whole impressions at the consensus rotation; ``rotation_deg`` the rotation
        of B relative to A (``p_b - c_b = R(phi) (p_a - c_a)``, as `ballistix.compare`);
        ``class_features``; ``features`` with the translation (B's centre shift, B's frame), each
        direction's count (``directions``: ``a_in_b``, ``b_in_a``), per-cell results and parameters. Not
        used (with the reason) when either impression is not usable: no evidence either way.

    Raises
    ------
    ParameterError
        For inputs that are not impressions, impressions on different grids, or parameters out of range.

    Examples
    --------
    >>> import ballistix as bx
    >>> a, b = (extract_firing_pin(bx.read_x3p(f"fadul-{n}-raw.x3p")) for n in ("1-1", "1-2"))  # doctest: +SKIP
    >>> res = compare_firing_pins(a, b)  # doctest: +SKIP
    >>> res.count, res.n_elements, round(res.score, 2), round(res.rotation_deg)  # doctest: +SKIP
    (4, 71, 0.18, 11)
    """
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, FiringPinImpression):
            raise ParameterError(
                f"{name} must be a FiringPinImpression (from extract_firing_pin), got {type(v).__name__}"
            )
    if rotation_deg is not None:
        rotation_deg = _finite_number(rotation_deg, "rotation_deg") % 360.0
    window_deg = _finite_number(window_deg, "window_deg")
    if not 0 < window_deg <= 180:
        raise ParameterError(f"window_deg must be within (0, 180] degrees, got {window_deg}")
    ccf_threshold = _finite_number(ccf_threshold, "ccf_threshold")
    if not -1 < ccf_threshold < 1:
        raise ParameterError(f"ccf_threshold must be within (-1, 1), got {ccf_threshold}")
    rotation_tolerance_deg = _finite_number(rotation_tolerance_deg, "rotation_tolerance_deg")
    if not 0 < rotation_tolerance_deg <= 45:
        raise ParameterError(f"rotation_tolerance_deg must be within (0, 45] degrees, got {rotation_tolerance_deg}")
    radial_tolerance_um = _finite_number(radial_tolerance_um, "radial_tolerance_um")
    if not radial_tolerance_um > 0:
        raise ParameterError(f"radial_tolerance_um must be positive, got {radial_tolerance_um}")
    translation_search_um = _finite_number(translation_search_um, "translation_search_um")
    if not 0 <= translation_search_um <= 200:
        raise ParameterError(f"translation_search_um must be within 0-200 um, got {translation_search_um}")
    for name, v in (("A", a), ("B", b)):
        if not v.usable:
            return MarkResult.not_used("firing_pin", f"scan {name}: {v.reason}")
    if a.spacing_um != b.spacing_um or a.n_theta != b.n_theta:
        raise ParameterError(
            "the impressions were extracted on different polar grids "
            f"(spacing {a.spacing_um} and {b.spacing_um} um, n_theta {a.n_theta} and {b.n_theta}): "
            "extract both with the same spacing_um and n_theta"
        )
    params = {
        "rotation_deg": rotation_deg,
        "window_deg": window_deg if rotation_deg is not None else None,
        "ccf_threshold": ccf_threshold,
        "rotation_tolerance_deg": rotation_tolerance_deg,
        "radial_tolerance_um": radial_tolerance_um,
        "translation_search_um": translation_search_um,
        "band_um": BAND_UM,
        "cell_arc_um": CELL_ARC_UM,
        "radial_search_um": RADIAL_SEARCH_UM,
        "extraction": {"a": a.params, "b": b.params},
    }
    # the pair is compared in a fixed order of the two impressions (whichever was passed first): A's cells
    # in B and B's cells in A, combined; the result is then stated from the caller's side, so that swapping
    # the arguments gives the same count and score and the opposite rotation, to the last bit
    swap = _order_key(b) < _order_key(a)
    if swap:
        first, second, pose = b, a, None if rotation_deg is None else (-rotation_deg) % 360.0
    else:
        first, second, pose = a, b, rotation_deg
    found = _compare_both_ways(
        first,
        second,
        pose,
        window_deg,
        ccf_threshold,
        rotation_tolerance_deg,
        radial_tolerance_um,
        translation_search_um,
    )
    if isinstance(found, str):
        return MarkResult.not_used("firing_pin", found)
    if swap:
        found = _mirror(found)
    rotation = found.pop("rotation_deg")
    count, n_el, score = found.pop("count"), found.pop("n_elements"), found.pop("score")
    found["impressions"] = {"a": a.summary(), "b": b.summary()}
    found["params"] = params
    return MarkResult(
        "firing_pin",
        True,
        None,
        count=count,
        n_elements=n_el,
        score=score,
        rotation_deg=float(rotation % 360.0),
        shift_um=None,
        class_features=_class_features(a, b, rotation),
        features=found,
    )


def _order_key(fp: FiringPinImpression) -> bytes:
    """A fixed order of impressions (a digest of the marks and geometry), to compare a pair the same way
    whichever is passed first."""
    h = hashlib.sha1(np.ascontiguousarray(fp.marks_m).tobytes())
    h.update(repr((fp.source, fp.centre_m, fp.spacing_um, fp.n_theta, fp.marks_m.shape)).encode())
    return h.digest()


def _rotate(v, deg: float) -> tuple[float, float]:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return (float(c * v[0] - s * v[1]), float(s * v[0] + c * v[1]))


def _mirror(found: dict[str, Any]) -> dict[str, Any]:
    """`_compare_both_ways`'s result for (B, A) stated for (A, B): the rotation reversed, the centre shift
    moved to the other impression, the directions swapped."""
    out = dict(found)
    rot = (-found["rotation_deg"]) % 360.0
    out["rotation_deg"] = rot
    out["global_rotation_deg"] = (-found["global_rotation_deg"]) % 360.0
    # found: A's centre moved by d' (A's frame); the same alignment moves B's by -R(phi) d' (B's frame)
    d = _rotate(found["translation_um"], rot)
    out["translation_um"] = [-d[0], -d[1]]
    swap = {"a_in_b": "b_in_a", "b_in_a": "a_in_b"}
    out["directions"] = {swap[k]: v for k, v in found["directions"].items()}
    out["cells"] = [dict(c, direction=swap[c["direction"]]) for c in found["cells"]]
    return out


def _direction(X, Y, row0, spacing_um, s_r, allowed):
    """X's cells searched in Y (both the rows ``row0 ..`` of one polar grid). Returns the cells and, per
    cell, the best correlation, its rotation (degrees, Y relative to X) and radial shift (um)."""
    n_t = X.shape[1]
    cells = _cells(X, spacing_um, row0)
    res, spec = [], {}
    for c in cells:  # cells of one band share Y's band region
        if (c[0], c[1]) not in spec:
            reg = _band_region(Y, c[0], c[1], s_r)
            spec = {(c[0], c[1]): (_spectra(reg, 2), reg.shape)}
        sp, shape = spec[(c[0], c[1])]
        res.append(_cell_search(X, c, s_r, sp, shape, allowed))
    ccf = np.array([r[0] for r in res], dtype=float)
    rot = np.array([r[1] * 360.0 / n_t for r in res], dtype=float)
    shift_r_um = np.array([r[2] * spacing_um for r in res], dtype=float)
    return cells, ccf, rot, shift_r_um


def _congruent(cells, ccf, rot, shift_r_um, cons, n_t, threshold, rot_tol, radial_tol):
    """Which cells of one direction are congruent with the consensus rotation ``cons`` (of the searched map
    relative to the cells' map)."""
    ok = np.isfinite(ccf)
    agree = ok & (np.where(ok, ccf, -np.inf) >= threshold) & (np.abs(_angle_diff_deg(rot, cons)) <= rot_tol)
    theta_c = np.array([(c[2] + c[3]) / 2 * 2 * np.pi / n_t for c in cells]) + np.deg2rad(cons)
    return agree & (np.abs(_radial_residual(shift_r_um, theta_c, agree)) <= radial_tol)


def _compare_both_ways(
    a, b, rotation_deg, window_deg, ccf_threshold, rotation_tolerance_deg, radial_tolerance_um, translation_search_um
) -> dict[str, Any] | str:
    """The comparison proper (see `compare_firing_pins`); a reason string when the pair cannot be compared."""
    dr = a.spacing_um * 1e-6
    n_t = a.n_theta
    n = max(a.marks_m.shape[0], b.marks_m.shape[0])
    steps = tuple(s for s in TRANSLATION_STEPS_UM if s <= translation_search_um) or (translation_search_um,)
    # rows below the first measured ones (the crater's hole) are left out: every map and shift is computed
    # only from the first row a centre shift within the search's reach can bring a measured point to
    reach_um = np.hypot(1, 1) * (translation_search_um + sum(steps)) if translation_search_um > 0 else 0.0
    first = [np.flatnonzero(np.isfinite(m).any(1)) for m in (a.marks_m, b.marks_m)]
    if any(f.size == 0 for f in first):
        return "the two impressions share too few measured points at any allowed rotation"
    row0 = max(min(int(first[0][0]), int(first[1][0])) - int(np.ceil(reach_um / a.spacing_um)) - 2, 0)
    A = np.full((n - row0, n_t), np.nan)
    B = np.full((n - row0, n_t), np.nan)
    A[: a.marks_m.shape[0] - row0] = a.marks_m[row0:]
    B[: b.marks_m.shape[0] - row0] = b.marks_m[row0:]
    allowed = _allowed_shifts(n_t, rotation_deg, window_deg)
    min_overlap = MIN_MEASURED_POINTS // 2

    # 1. centre
    if translation_search_um > 0:
        delta, Bs, ncc, n_centres = _translation_search(
            A, B, dr, allowed, min_overlap, translation_search_um, steps, row0, n
        )
    else:
        delta, Bs, n_centres = (0.0, 0.0), B, 1
        ncc = _ncc_theta(_spectra(A, 1), B, min_overlap)
    if ncc is None or not np.isfinite(np.where(allowed, ncc, np.nan)).any():
        return "the two impressions share too few measured points at any allowed rotation"
    global_shift = int(np.nanargmax(np.where(allowed, ncc, np.nan)))
    global_rot = global_shift * 360.0 / n_t

    # 2. cells, both ways: A's in B (rotations of B relative to A) and B's in A (of A relative to B)
    s_r = int(round(RADIAL_SEARCH_UM / a.spacing_um))
    back_allowed = allowed[(-np.arange(n_t)) % n_t]
    fwd = _direction(A, Bs, row0, a.spacing_um, s_r, allowed)
    bwd = _direction(Bs, A, row0, a.spacing_um, s_r, back_allowed)

    # 3. congruence: one consensus rotation from the cells of both directions (B's cells' rotations reversed),
    # then each direction's congruent cells at it; the count is the larger direction's (NIST's forward and
    # backward CMC: both must agree on the registration, and the better-registered direction counts)
    ccf_all = np.concatenate([fwd[1], bwd[1]])
    rot_all = np.concatenate([fwd[2], (-bwd[2]) % 360.0])
    cons = _consensus(np.where(np.isfinite(ccf_all), ccf_all, -np.inf), rot_all, ccf_threshold, rotation_tolerance_deg)
    tol = (ccf_threshold, rotation_tolerance_deg, radial_tolerance_um)
    directions, cells_out = {}, []
    for name, (cells, ccf, rot, shr), sign in (("a_in_b", fwd, 1.0), ("b_in_a", bwd, -1.0)):
        if cons is not None:
            cong = _congruent(cells, ccf, rot, shr, (sign * cons) % 360.0, n_t, *tol)
        else:
            cong = np.zeros(len(cells), bool)
        n_el = int(np.isfinite(ccf).sum())
        own = _consensus(np.where(np.isfinite(ccf), ccf, -np.inf), rot, ccf_threshold, rotation_tolerance_deg)
        directions[name] = {
            "count": int(cong.sum()),
            "n_elements": n_el,
            "consensus_rotation_deg": own,
            "cell_ccf_median": float(np.nanmedian(ccf)) if n_el else float("nan"),
        }
        cells_out += [
            {
                "direction": name,
                "rows": [c[0] + row0, c[1] + row0],
                "cols": [c[2], c[3]],
                "radius_um": float((c[0] + c[1] - 1 + 2 * row0) / 2 * a.spacing_um),
                "theta_deg": float((c[2] + c[3]) / 2 * 360.0 / n_t),
                "ccf": float(ccf[i]),
                "rotation_deg": float(rot[i]),
                "shift_r_um": float(shr[i]),
                "congruent": bool(cong[i]),
            }
            for i, c in enumerate(cells)
        ]
    count = max(d["count"] for d in directions.values())
    n_el = max(d["n_elements"] for d in directions.values())
    rotation = cons if cons is not None else global_rot
    k = int(round(rotation * n_t / 360.0)) % n_t
    score = float(ncc[k]) if np.isfinite(ncc[k]) else float("nan")
    return {
        "count": count,
        "n_elements": n_el,
        "score": score,
        "rotation_deg": float(rotation),
        "translation_um": [float(delta[0] * 1e6), float(delta[1] * 1e6)],
        "centres_evaluated": int(n_centres),
        "rows_skipped": int(row0),
        "global_ccf_max": float(np.nanmax(np.where(allowed, ncc, np.nan))),
        "global_rotation_deg": float(global_rot),
        "consensus_found": cons is not None,
        "congruent_share": float(count / n_el) if n_el else float("nan"),
        "cell_ccf_median": float(np.nanmedian(ccf_all)) if np.isfinite(ccf_all).any() else float("nan"),
        "directions": directions,
        "cells": cells_out,
    }
