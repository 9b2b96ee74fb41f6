"""Steps 1-5 of `find_breech_face` on a field that shows (at most) one primer: `_primer_region`.

1. `_primer_edge`: the circle through the convex hull of the measured primer.
2. `_face_heights`, `_face_like`: heights relative to the face, and which points look like face.
3. The firing-pin impression (`firing_pin`): crater, aperture, extension, mask.
4. `_flat_edge`: where the primer's flat face ends (its rounded edge falls away, or data stop).
5. `_outer_radius` (and `firing_pin._pin_mask` inside): the margins, none at a clean mask edge.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...errors import ParameterError
from ._geometry import _clean_edge, _hull_points, _largest_component
from .circle import fit_circle
from .firing_pin import _aperture, _crater, _pin_mask
from .levelling import level
from .region import BreechFaceRegion

# --- 1. the primer edge ----------------------------------------------------------------------------------
#: The primer is where at least ``PRIMER_MIN_MEASURED_SHARE`` of the points in boxes of this side are measured:
#: its ragged edge (drop-outs where the rounded edge steepens) and stray specks beyond it do not move the hull.
PRIMER_DENSITY_BOX_M = 30e-6
PRIMER_MIN_MEASURED_SHARE = 0.5
#: Hull points needed to fit the primer edge.
PRIMER_EDGE_MIN_POINTS = 20
#: RANSAC inlier distance of the primer-edge fit: this many grid steps, at least ``PRIMER_EDGE_THRESHOLD_MIN_M``.
PRIMER_EDGE_THRESHOLD_STEPS = 3
PRIMER_EDGE_THRESHOLD_MIN_M = 10e-6
#: Least share of the hull points on the fitted circle: below it the hull is no circle (no primer edge seen).
PRIMER_EDGE_MIN_INLIER_SHARE = 0.3
#: Points more than this many grid steps inside the primer circle are "inside" (the crater's search area).
PRIMER_INSIDE_STEPS = 2

# --- 2. face-relative heights ----------------------------------------------------------------------------
#: The form is fitted on the outer face, between these shares of the primer radius (the firing-pin impression
#: and the rounded edge stay out), with at least ``FORM_BAND_MIN_POINTS`` points (else all points inside).
FORM_BAND_PRIMER_SHARE = (0.7, 0.92)
FORM_BAND_MIN_POINTS = 50
#: Face noise taken when no point is left to measure it.
FACE_SIGMA_FALLBACK_M = 1e-6
#: Face-like points lie within this many face sigmas of the face, and at least within ``FACE_TOLERANCE_MIN_M``.
FACE_TOLERANCE_SIGMAS = 3
FACE_TOLERANCE_MIN_M = 2e-6
#: Face-like points have at least this share of measured points in a box of ``FACE_DENSITY_BOX_M``: the flowback
#: metal and the steps around the impression return little light, so their drop-outs are dense.
FACE_DENSITY_BOX_M = 20e-6
FACE_MIN_MEASURED_SHARE = 0.7
#: Face-like points are nearly flat: slope below ``FACE_MAX_SLOPE`` after a Gaussian smoothing of this sigma (the
#: crater wall crosses face level on its way down).
FACE_SMOOTHING_M = 10e-6
FACE_MAX_SLOPE = 0.2

# --- 4. the flat-face edge -------------------------------------------------------------------------------
#: The reference face height is the median between these shares of the primer radius (at least
#: ``REF_BAND_MIN_POINTS`` points, else the face is taken to run to the primer edge).
REF_BAND_PRIMER_SHARE = (0.7, 0.85)
REF_BAND_MIN_POINTS = 50
#: Rings of this many grid steps, out to this share of the primer radius.
RING_WIDTH_STEPS = 2
RING_PROFILE_PRIMER_SHARE = 1.1
#: The edge is sought in rings beyond this share of the primer radius ...
EDGE_SEARCH_FROM_PRIMER_SHARE = 0.85
#: ... as the first ring from which the face has dropped, or data have stopped, for this many rings.
EDGE_RUN_RINGS = 3
#: Data have stopped in a ring where at most this share of it is measured face.
RING_MIN_MEASURED_SHARE = 0.3

# --- 5. margins ------------------------------------------------------------------------------------------
#: A rounded edge this far inside a clean cut (at least this many grid steps) wins over the cut: the scan was
#: cut wider than the flat face.
ROUNDED_INSIDE_CUT_MIN_M = 50e-6
ROUNDED_INSIDE_CUT_STEPS = 3


def _primer_edge(valid: np.ndarray, dx: float, dy: float, pr_lo: float, pr_hi: float):
    """Step 1: centre and radius of the primer's outer edge, and what bounded it.

    The convex hull of the largest well-measured region is sampled every grid step (`_hull_points`: points
    on the grid border dropped) and a circle is fitted by RANSAC: dents from drop-outs do not reach the
    hull, and stray points beyond it are outliers. Without a usable fit, the grid's inscribed circle is
    taken. Returns ``(center, radius, outer_edge)`` with ``outer_edge`` "data edge" or "grid".
    """
    ny, nx = valid.shape
    step = min(dx, dy)
    kb = max(int(round(PRIMER_DENSITY_BOX_M / step)), 1) | 1
    dens = cv2.boxFilter(valid.astype(np.float32), -1, (kb, kb), borderType=cv2.BORDER_REPLICATE)
    comp = _largest_component(dens >= PRIMER_MIN_MEASURED_SHARE)
    pts = _hull_points(comp, dx, dy)
    circ = None
    if len(pts) >= PRIMER_EDGE_MIN_POINTS:
        try:
            circ = fit_circle(
                pts[:, 0],
                pts[:, 1],
                threshold=max(PRIMER_EDGE_THRESHOLD_STEPS * step, PRIMER_EDGE_THRESHOLD_MIN_M),
                radius_range=(pr_lo, pr_hi),
            )
            if circ.inliers.mean() < PRIMER_EDGE_MIN_INLIER_SHARE:
                circ = None
        except ParameterError:
            circ = None
    if circ is None:  # no usable edge in the field: take the grid's inscribed circle
        return ((nx - 1) * dx / 2, (ny - 1) * dy / 2), min(nx * dx, ny * dy) / 2, "grid"
    return (circ.x, circ.y), circ.r, "data edge"


def _face_heights(z: np.ndarray, valid: np.ndarray, inside: np.ndarray, r_p: np.ndarray, pr: float):
    """Step 2a: heights relative to the face, and the face's noise.

    A robust second-order fit (`level`) on the outer face (`FORM_BAND_PRIMER_SHARE` of the primer radius
    ``pr``; ``r_p`` is each point's distance from the primer centre) removes the form; the face's noise
    ``sigma`` (metres) is the robust spread of the fitted points. Returns ``(h, sigma)``.
    """
    band = valid & (r_p > FORM_BAND_PRIMER_SHARE[0] * pr) & (r_p < FORM_BAND_PRIMER_SHARE[1] * pr)
    if band.sum() < FORM_BAND_MIN_POINTS:
        band = valid & inside
    h = level(z, order=2, mask=band)
    res = h[band]
    sig = float(1.4826 * np.median(np.abs(res - np.median(res)))) if res.size else FACE_SIGMA_FALLBACK_M
    return h, sig


def _face_like(
    h: np.ndarray, sig: float, valid: np.ndarray, r_p: np.ndarray, pr: float, dx: float, dy: float
) -> np.ndarray:
    """Step 2b: the points that look like the flat breech face.

    Measured, inside the primer, at face level (within ``max(3 sigma, 2 um)``), nearly flat (not the crater
    wall crossing face level on its way down) and in a well-measured neighbourhood (the flowback metal and
    the steps around the impression return little light: their drop-outs are dense). The firing-pin
    impression is where these points are not.
    """
    step = min(dx, dy)
    thr = max(FACE_TOLERANCE_SIGMAS * sig, FACE_TOLERANCE_MIN_M)
    k = max(int(round(FACE_DENSITY_BOX_M / step)), 1) | 1
    vf = valid.astype(np.float32)
    density = cv2.boxFilter(vf, -1, (k, k), borderType=cv2.BORDER_CONSTANT)
    hs = np.where(valid, h * 1e6, 0.0).astype(np.float32)
    sig_px = (FACE_SMOOTHING_M / dx, FACE_SMOOTHING_M / dy)
    num = cv2.GaussianBlur(hs, (0, 0), sigmaX=sig_px[0], sigmaY=sig_px[1], borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(vf, (0, 0), sigmaX=sig_px[0], sigmaY=sig_px[1], borderType=cv2.BORDER_CONSTANT)
    hsm = num / np.maximum(den, 1e-3)
    gy, gx = np.gradient(hsm, dy * 1e6, dx * 1e6)
    return (
        valid
        & (np.abs(h) < thr)
        & (r_p < pr)
        & (density >= FACE_MIN_MEASURED_SHARE)
        & (np.hypot(gx, gy) < FACE_MAX_SLOPE)
    )


def _ring_profile(h: np.ndarray, face_pts: np.ndarray, pin: np.ndarray, r_p: np.ndarray, pr: float, binw: float):
    """Ring by ring (width ``binw``) about the primer centre: the median face height and the share of the
    ring (firing pin left out) that is measured face. Returns ``(median, share, ring_centre_radius)``."""
    nb = int(np.ceil(pr * RING_PROFILE_PRIMER_SHARE / binw))
    bi = np.minimum((r_p / binw).astype(np.int64), nb)
    sel = face_pts & (r_p < pr * RING_PROFILE_PRIMER_SHARE)
    # ring medians through sorting once: order by (bin, height)
    order = np.lexsort((h[sel], bi[sel]))
    bs, hs = bi[sel][order], h[sel][order]
    starts = np.searchsorted(bs, np.arange(nb + 1))
    counts = np.diff(np.append(starts, bs.size))
    med = np.full(nb + 1, np.nan)
    has = counts > 0
    med[has] = hs[starts[has] + counts[has] // 2]
    ring_area = np.bincount(bi[~pin & (r_p < pr * RING_PROFILE_PRIMER_SHARE)].ravel(), minlength=nb + 1)
    frac = counts / np.maximum(ring_area, 1)
    rb = (np.arange(nb + 1) + 0.5) * binw
    return med, frac, rb


def _first_run(flags: np.ndarray, search: np.ndarray) -> int | None:
    """The first ring in ``search`` from which ``flags`` holds for `EDGE_RUN_RINGS` rings (None: none)."""
    run = np.convolve(flags.astype(int), np.ones(EDGE_RUN_RINGS, int), mode="full")[EDGE_RUN_RINGS - 1 :]
    idx = np.nonzero(search & (run >= EDGE_RUN_RINGS))[0]  # run[k]: rings k..k+EDGE_RUN_RINGS-1
    return int(idx[0]) if idx.size else None


def _flat_edge(
    h: np.ndarray, valid: np.ndarray, pin: np.ndarray, r_p: np.ndarray, pr: float, step: float, edge_drop: float
):
    """Step 4: where the primer's flat face ends, about the primer centre.

    The face ends where the ring median falls ``edge_drop`` below the face (the median of the reference
    band) or where data stop, whichever comes first, for `EDGE_RUN_RINGS` rings. Returns ``(flat_radius,
    rounded)``: ``rounded`` when the face fell away before the data stopped (the primer's rounded edge).
    """
    face_pts = valid & ~pin
    ref_band = face_pts & (r_p > REF_BAND_PRIMER_SHARE[0] * pr) & (r_p < REF_BAND_PRIMER_SHARE[1] * pr)
    if not ref_band.sum() > REF_BAND_MIN_POINTS:
        return pr, False
    ref = float(np.median(h[ref_band]))
    binw = RING_WIDTH_STEPS * step
    med, frac, rb = _ring_profile(h, face_pts, pin, r_p, pr, binw)
    search = rb > EDGE_SEARCH_FROM_PRIMER_SHARE * pr
    gone = ~(frac > RING_MIN_MEASURED_SHARE)
    dropped = (med < ref - edge_drop) | gone
    k_end, k_drop = _first_run(gone, search), _first_run(dropped, search)
    if k_drop is None:
        return pr, False
    flat_r = float(min(k_drop * binw, pr))
    return flat_r, (k_end is None or k_drop < k_end) and flat_r < pr - step


def _outer_radius(
    valid: np.ndarray, pc, pr: float, flat_r: float, outer_edge: str, edge_margin: float, dx: float, dy: float
):
    """Step 5, outer side: the mask's outer radius, and what bounded it.

    ``edge_margin`` inside the flat edge, except where the primer edge is a clean mask edge (a scan already
    cut to the breech face, `_clean_edge`: all it kept is kept) or the grid (no edge seen: nothing to keep
    clear of). Returns ``(outer_edge, flat_radius, outer_radius)``.
    """
    step = min(dx, dy)
    clean_outer, _, r_hi = (
        (False, pr, pr) if outer_edge == "grid" else _clean_edge(valid, pc, pr, dx, dy, inside_valid=True)
    )
    if outer_edge == "rounded edge" and flat_r < pr - max(ROUNDED_INSIDE_CUT_MIN_M, ROUNDED_INSIDE_CUT_STEPS * step):
        clean_outer = False  # the face falls away well inside a clean cut: the rounded edge wins
    if clean_outer:  # a scan already cut to the breech face: keep all it kept, no margin
        return "mask edge", pr, max(r_hi, pr) + step
    if outer_edge == "grid":  # no edge seen: the grid's inscribed circle, nothing to keep clear of
        return outer_edge, flat_r, flat_r
    return outer_edge, flat_r, flat_r - edge_margin  # the rounded edge or a ragged end of the data


def _primer_region(
    z: np.ndarray,
    dx: float,
    dy: float,
    *,
    pr_lo: float,
    pr_hi: float,
    ap_lo: float,
    ap_hi: float,
    pin_margin: float,
    edge_margin: float,
    edge_drop: float,
    max_ext: float,
) -> BreechFaceRegion:
    """The region search of `find_breech_face` on a field that shows (at most) one primer: steps 1-5."""
    ny, nx = z.shape
    valid = ~np.isnan(z)
    step = min(dx, dy)
    Xm, Ym = (np.arange(nx) * dx)[None, :], (np.arange(ny) * dy)[:, None]
    pc, pr, outer_edge = _primer_edge(valid, dx, dy, pr_lo, pr_hi)
    r_p = np.hypot(Xm - pc[0], Ym - pc[1])
    inside = r_p < pr - PRIMER_INSIDE_STEPS * step
    c0, crater_c, crater_r = _crater(valid, inside, pc, pr, dx, dy, ap_lo, ap_hi)
    h, sig = _face_heights(z, valid, inside, r_p, pr)
    face = _face_like(h, sig, valid, r_p, pr, dx, dy)
    ap_c, ap_r, ext = _aperture(face, c0, pr, dx, dy, ap_lo, ap_hi, max_ext)
    pin, inner_r, inner_edge, ext = _pin_mask(valid, ap_c, ap_r, ext, pin_margin, dx, dy)
    flat_r, rounded = _flat_edge(h, valid, pin, r_p, pr, step, edge_drop)
    if rounded:
        outer_edge = "rounded edge"
    outer_edge, flat_r, out_r = _outer_radius(valid, pc, pr, flat_r, outer_edge, edge_margin, dx, dy)
    mask = valid & ~pin & (r_p < out_r)
    return BreechFaceRegion(
        mask=mask,
        primer_center_m=(float(pc[0]), float(pc[1])),
        primer_radius_m=float(pr),
        flat_radius_m=float(flat_r),
        outer_radius_m=float(out_r),
        aperture_center_m=None if ap_c is None else (float(ap_c[0]), float(ap_c[1])),
        aperture_radius_m=None if ap_r is None else float(ap_r),
        inner_radius_m=None if inner_r is None else float(inner_r),
        crater_center_m=None if crater_c is None else (float(crater_c[0]), float(crater_c[1])),
        crater_radius_m=None if crater_r is None else float(crater_r),
        outer_edge=outer_edge,
        inner_edge=inner_edge,
        face_sigma_um=sig * 1e6,
        pin_extension_m=ext,
    )
