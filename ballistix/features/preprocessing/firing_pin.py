"""The firing-pin impression (step 3 of `find_breech_face`): the central crater, the aperture circle where
the impression ends, how far the impression reaches beyond it, and the mask that cuts it out.

Each function does one part of the step; `_primer_region` calls them in order.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from ...errors import ParameterError
from ._geometry import _clean_edge, _disk, _sample_rays, _step_edge
from .circle import fit_circle

# --- the central crater (hole of missing data) -----------------------------------------------------------
#: Radius of the morphological opening of the missing points: specks of a few missing points are not a crater.
CRATER_OPENING_RADIUS_M = 10e-6
#: The crater lies within this share of the primer radius from the primer centre ...
CRATER_MAX_OFFSET_PRIMER_SHARE = 0.6
#: ... and its area exceeds a disc of this share of the smallest plausible aperture radius.
CRATER_MIN_RADIUS_APERTURE_SHARE = 0.1
#: Crater contour points within this many grid steps of the primer edge are the primer's edge, not the crater's.
CRATER_CONTOUR_INSIDE_STEPS = 4
#: Contour points needed to fit the crater's circle.
CRATER_MIN_CONTOUR_POINTS = 10
#: RANSAC inlier distance of the crater fit: this many grid steps, at least ``CRATER_FIT_THRESHOLD_MIN_M``.
CRATER_FIT_THRESHOLD_STEPS = 4
CRATER_FIT_THRESHOLD_MIN_M = 15e-6
#: Smallest crater radius fitted (the largest is the largest plausible aperture radius).
CRATER_MIN_RADIUS_M = 0.02e-3

# --- the aperture: where the impression ends along rays ----------------------------------------------------
#: Rays cast from the crater (one a degree).
N_RAYS = 360
#: The impression ends where the share of face-like points over the next this-many metres most exceeds the share
#: over the previous as many (at least ``IMPRESSION_WINDOW_MIN_POINTS`` points each).
IMPRESSION_WINDOW_M = 80e-6
IMPRESSION_WINDOW_MIN_POINTS = 3
#: Least contrast (share after minus share before) for a ray's end to count.
IMPRESSION_MIN_CONTRAST = 0.4
#: First search, from the crater: from this share of the smallest plausible aperture radius ...
APERTURE_SEARCH_FROM_SHARE = 0.5
#: ... to the largest plausible radius plus this share of the plausible range, within this share of the primer.
APERTURE_SEARCH_BEYOND_RANGE_SHARE = 0.5
APERTURE_SEARCH_MAX_PRIMER_SHARE = 0.95
#: Second search, from the first circle's centre: to this share of the largest plausible aperture radius.
APERTURE_REFIT_TO_SHARE = 1.5
#: Least share of the rays with a clear end for a circle fit.
APERTURE_MIN_RAY_SHARE = 0.25
#: RANSAC inlier distance of the aperture fit: this many grid steps, at least ``APERTURE_FIT_THRESHOLD_MIN_M``.
APERTURE_FIT_THRESHOLD_STEPS = 4
APERTURE_FIT_THRESHOLD_MIN_M = 25e-6
#: Least share of the rays on the fitted circle for it to be the aperture.
APERTURE_MIN_INLIER_RAY_SHARE = 0.2
#: The impression's extension beyond the circle is a running median over this many rays (+-3 degrees), so single
#: rays through drop-outs do not count.
PIN_EXTENSION_MEDIAN_RAYS = 7


def _crater(valid: np.ndarray, inside: np.ndarray, pc, pr: float, dx: float, dy: float, ap_lo: float, ap_hi: float):
    """The central crater: the largest hole of missing data near the primer centre.

    Returns ``(c0, crater_center, crater_radius)``: ``c0`` is where the rays of `_aperture` start (the hole's
    centroid, or the primer centre ``pc`` when there is no hole); the crater's circle is fitted by RANSAC to
    the hole's contour (None when there is no hole or the fit fails). Only points ``inside`` the primer count.
    """
    step = min(dx, dy)
    hole = (~valid & inside).astype(np.uint8)
    hole = cv2.morphologyEx(hole, cv2.MORPH_OPEN, _disk(max(CRATER_OPENING_RADIUS_M / step, 1)))
    n, lab, stats, cents = cv2.connectedComponentsWithStats(hole, connectivity=8)
    crater_c = crater_r = None
    c0 = pc
    if n <= 1:
        return c0, crater_c, crater_r
    cm = cents[1:] * [dx, dy]
    area = stats[1:, cv2.CC_STAT_AREA] * dx * dy
    near = (np.hypot(cm[:, 0] - pc[0], cm[:, 1] - pc[1]) < CRATER_MAX_OFFSET_PRIMER_SHARE * pr) & (
        area > np.pi * (CRATER_MIN_RADIUS_APERTURE_SHARE * ap_lo) ** 2
    )
    if not near.any():
        return c0, crater_c, crater_r
    k = int(np.argmax(np.where(near, area, -1)))
    blob = lab == k + 1
    c0 = (float(cm[k, 0]), float(cm[k, 1]))
    cs, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cpts = max(cs, key=len)[:, 0, :].astype(np.float64) * [dx, dy]
    # contour points on the primer edge are not crater edge
    cpts = cpts[np.hypot(cpts[:, 0] - pc[0], cpts[:, 1] - pc[1]) < pr - CRATER_CONTOUR_INSIDE_STEPS * step]
    if len(cpts) >= CRATER_MIN_CONTOUR_POINTS:
        try:
            cc = fit_circle(
                cpts[:, 0],
                cpts[:, 1],
                threshold=max(CRATER_FIT_THRESHOLD_STEPS * step, CRATER_FIT_THRESHOLD_MIN_M),
                radius_range=(CRATER_MIN_RADIUS_M, ap_hi),
            )
            crater_c, crater_r = (cc.x, cc.y), cc.r
        except ParameterError:
            pass
    return c0, crater_c, crater_r


def _impression_ends(face: np.ndarray, centre, r: np.ndarray, lo: float, hi: float, dx: float, dy: float):
    """Along `N_RAYS` rays from ``centre`` (sampled at radii ``r``), the radius in [lo, hi] where the
    impression ends, and whether that end is clear.

    The crater, the raised flowback ring and the drop-outs at the aperture's step are not face-like; the
    face is. The end is where the share of face-like points ahead most exceeds the share behind
    (`_step_edge`); it is clear when that contrast exceeds `IMPRESSION_MIN_CONTRAST`.
    """
    step = min(dx, dy)
    window = max(int(round(IMPRESSION_WINDOW_M / step)), IMPRESSION_WINDOW_MIN_POINTS)
    (F,), _ = _sample_rays([(face, False)], centre, r, N_RAYS, dx, dy)
    i, contrast = _step_edge(F, window, int(lo / step), int(np.ceil(hi / step)))
    return r[i], contrast > IMPRESSION_MIN_CONTRAST


def _ray_points(centre, r_end: np.ndarray, ok: np.ndarray):
    """x and y (metres) of the clear ray ends ``r_end[ok]`` about ``centre``."""
    th = 2 * np.pi * np.arange(N_RAYS) / N_RAYS
    return centre[0] + r_end[ok] * np.cos(th[ok]), centre[1] + r_end[ok] * np.sin(th[ok])


def _pin_extension(r_end: np.ndarray, ok: np.ndarray, radius: float, max_ext: float) -> np.ndarray:
    """Per ray, how far the impression goes on beyond the aperture circle (aperture shear, drag).

    Median over `PIN_EXTENSION_MEDIAN_RAYS` rays; an extension beyond ``max_ext`` is taken for a stray end
    and dropped (0).
    """
    ext = np.where(ok, r_end - radius, 0.0)
    ext = ndimage.median_filter(np.clip(ext, 0, None), size=PIN_EXTENSION_MEDIAN_RAYS, mode="wrap")
    return np.where(ext <= max_ext, ext, 0.0)


def _aperture(face: np.ndarray, c0, pr: float, dx: float, dy: float, ap_lo: float, ap_hi: float, max_ext: float):
    """The firing-pin aperture: the circle where the impression ends, and the impression's extension.

    Rays from the crater ``c0`` find where the impression ends (`_impression_ends`); a RANSAC circle
    through these ends is the aperture. Rays are cast again from its centre and the fit repeated; when that
    refit holds, the per-ray extension beyond it is kept (`_pin_extension`). Returns ``(center, radius,
    extension)``; center and radius are None when no aperture was found (too few clear ends, a failed or
    poorly supported fit), and the extension (per ray, metres) is then 0.
    """
    step = min(dx, dy)
    r = np.arange(0.0, pr + 2 * step, step)  # rays run just past the primer edge
    ext = np.zeros(N_RAYS)
    hi = min(ap_hi + APERTURE_SEARCH_BEYOND_RANGE_SHARE * (ap_hi - ap_lo), APERTURE_SEARCH_MAX_PRIMER_SHARE * pr)
    r_end, ok = _impression_ends(face, c0, r, APERTURE_SEARCH_FROM_SHARE * ap_lo, hi, dx, dy)
    if not ok.sum() >= APERTURE_MIN_RAY_SHARE * N_RAYS:
        return None, None, ext
    threshold = max(APERTURE_FIT_THRESHOLD_STEPS * step, APERTURE_FIT_THRESHOLD_MIN_M)
    try:
        ac = fit_circle(*_ray_points(c0, r_end, ok), threshold=threshold, radius_range=(ap_lo, ap_hi))
        r_end2, ok2 = _impression_ends(
            face, (ac.x, ac.y), r, ap_lo * APERTURE_SEARCH_FROM_SHARE, ap_hi * APERTURE_REFIT_TO_SHARE, dx, dy
        )
        if ok2.sum() >= APERTURE_MIN_RAY_SHARE * N_RAYS:
            ac2 = fit_circle(*_ray_points((ac.x, ac.y), r_end2, ok2), threshold=threshold, radius_range=(ap_lo, ap_hi))
            if ac2.inliers.sum() >= APERTURE_MIN_INLIER_RAY_SHARE * N_RAYS:
                ac = ac2
                ext = _pin_extension(r_end2, ok2, ac.r, max_ext)
        if ac.inliers.sum() >= APERTURE_MIN_INLIER_RAY_SHARE * N_RAYS:
            return (ac.x, ac.y), ac.r, ext
    except ParameterError:
        pass
    return None, None, ext


def _pin_mask(valid: np.ndarray, ap_c, ap_r: float | None, ext: np.ndarray, pin_margin: float, dx: float, dy: float):
    """The points the firing-pin impression covers, with the margin (step 5, inner side).

    The aperture circle plus ``pin_margin`` plus the per-ray extension. Where the aperture is a clean mask
    edge (a scan already cut to the breech face, `_clean_edge`), all the scan kept is kept: no margin and
    no extension. Returns ``(pin, inner_radius, inner_edge, ext)``; with no aperture, nothing is masked,
    ``inner_radius`` is None and ``inner_edge`` "none".
    """
    if ap_c is None:
        return np.zeros_like(valid), None, "none", ext
    step = min(dx, dy)
    ny, nx = valid.shape
    Xm, Ym = (np.arange(nx) * dx)[None, :], (np.arange(ny) * dy)[:, None]
    clean_inner, r_lo, _ = _clean_edge(valid, ap_c, ap_r, dx, dy, inside_valid=False)
    inner_edge = "mask edge" if clean_inner else "flowback step"
    if clean_inner:  # a scan already cut to the breech face: keep all it kept, no margin
        m_in, ext = min(r_lo - ap_r, 0.0) - step, np.zeros(N_RAYS)
    else:
        m_in = pin_margin
    r_a = np.hypot(Xm - ap_c[0], Ym - ap_c[1])
    ang = np.mod(np.rint(np.arctan2(Ym - ap_c[1], Xm - ap_c[0]) / (2 * np.pi) * N_RAYS), N_RAYS).astype(int)
    pin = r_a < ap_r + m_in + ext[ang]
    return pin, ap_r + max(m_in, 0.0), inner_edge, ext
