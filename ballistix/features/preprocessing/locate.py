"""Step 0 of `find_breech_face`: the primer in a wide field of view (e.g. the whole case head)."""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ._geometry import _sample_rays
from .circle import fit_circle
from .primer import _primer_region
from .region import BreechFaceRegion, _empty_region

_LOCATE_SPACING_M = 40e-6
# Width of the ring of missing or steep data sought around the primer (the gap), and of the band of primer face
# inside it that must be measured: narrower than the narrowest gap, wider than the firing-pin aperture's step.
_LOCATE_RING_M, _LOCATE_BAND_M = 0.12e-3, 0.3e-3
# Slope above which a point counts as an edge (17 degrees, about what an NA 0.3 objective still measures): the
# walls of a measured gap groove count like the missing data of an unmeasured one.
_LOCATE_STEEP_SLOPE = 0.3
# Least ring contrast (barrier share in the ring minus that in the band inside) taken for a primer: simulated
# whole-head scans give 0.79-0.82 at every difficulty, the three NIST raw primers 0.79-0.86 (searched this way
# for the measurement); a flat plate 0.25, a case head whose primer was blanked out 0.31.
_LOCATE_MIN_CONTRAST = 0.45


def _locate_primer(z: np.ndarray, dx: float, dy: float, pr_lo: float, pr_hi: float) -> dict:
    """Centre and edge radius of the primer in a wide field (``center`` None when no primer-like ring is
    found), where to cut it off (``cut``, metres from the centre) and the ring ``contrast``.

    On a ~40 um grid, each point is an edge ("barrier") by its share of missing data, or fully when the
    surface is steeper than ``_LOCATE_STEEP_SLOPE``. For each radius of the plausible primer range
    (40 um steps) an FFT correlation with a kernel (mean over a ring of width ``_LOCATE_RING_M`` at that
    radius minus the mean over the band of width ``_LOCATE_BAND_M`` inside it) scores every centre in the
    field; outside the field counts as missing. The best (centre, radius) is the inner edge of the most
    closed ring of missing data around a measured disc: the primer's edge and pocket gap. The rim (2.26x
    the primer radius), the headstamp and the firing-pin aperture (a smaller ring) fall outside the radii
    searched or do not form closed rings.
    """
    import scipy.fft as sfft

    ny, nx = z.shape
    fy = max(1, int(round(_LOCATE_SPACING_M / dy)))
    fx = max(1, int(round(_LOCATE_SPACING_M / dx)))
    my, mx = ny // fy * fy, nx // fx * fx
    sd_y, sd_x = dy * fy, dx * fx
    zz = z[:my, :mx]
    valid = ~np.isnan(zz)
    cnt = valid.reshape(my // fy, fy, mx // fx, fx).sum((1, 3))
    vb = cnt / (fy * fx)
    with np.errstate(invalid="ignore", divide="ignore"):
        zb = np.where(valid, zz, 0.0).reshape(my // fy, fy, mx // fx, fx).sum((1, 3)) / cnt
    zb[vb < 0.25] = np.nan
    gy, gx = np.gradient(zb, sd_y, sd_x)
    steep = np.nan_to_num(np.hypot(gx, gy), nan=0.0) > _LOCATE_STEEP_SLOPE
    barrier = np.where(steep, 1.0, 1.0 - vb)
    H, W = barrier.shape
    py_, px_ = int(np.ceil((pr_hi + _LOCATE_RING_M) / sd_y)) + 1, int(np.ceil((pr_hi + _LOCATE_RING_M) / sd_x)) + 1
    bp = np.pad(barrier, ((py_, py_), (px_, px_)), constant_values=1.0)  # outside the field: nothing measured
    ky, kx = 2 * py_ + 1, 2 * px_ + 1
    shape = (sfft.next_fast_len(bp.shape[0] + ky - 1, real=True), sfft.next_fast_len(bp.shape[1] + kx - 1, real=True))
    FB = sfft.rfft2(bp, s=shape, workers=1)
    rho = np.hypot((np.arange(ky) - py_)[:, None] * sd_y, (np.arange(kx) - px_)[None, :] * sd_x)
    best = (-np.inf, None, None)
    for R in np.arange(pr_lo, pr_hi + 1e-12, _LOCATE_SPACING_M):
        ring = (rho >= R) & (rho < R + _LOCATE_RING_M)
        band = (rho >= R - _LOCATE_BAND_M) & (rho < R)
        if ring.sum() == 0 or band.sum() == 0:
            continue
        kern = ring / ring.sum() - band / band.sum()
        full = sfft.irfft2(FB * sfft.rfft2(kern, s=shape, workers=1), s=shape, workers=1)
        sc = full[2 * py_:2 * py_ + H, 2 * px_:2 * px_ + W]  # centres inside the field only
        k = int(np.argmax(sc))
        if sc.flat[k] > best[0]:
            best = (float(sc.flat[k]), np.unravel_index(k, sc.shape), float(R))
    score, idx, R = best
    if idx is None or not score >= _LOCATE_MIN_CONTRAST:
        return {"center": None, "radius": None, "cut": None, "contrast": float(max(score, -1.0))}
    cy, cx = (idx[0] + 0.5) * sd_y - 0.5 * dy, (idx[1] + 0.5) * sd_x - 0.5 * dx  # block centre, in metres
    # refine on the full grid: along rays from the coarse centre, the primer's edge is where the barrier
    # (missing or steep) begins and holds for 3 points; a RANSAC circle through these edge points
    step = min(dx, dy)
    gyf, gxf = np.gradient(z, dy, dx)
    barrier_f = ~(np.hypot(gxf, gyf) <= _LOCATE_STEEP_SLOPE)  # NaN (missing, or next to it) counts as barrier
    th = 2 * np.pi * np.arange(360) / 360
    for _ in range(2):  # twice: the second pass casts its rays from the refined centre
        r_ray = np.arange(max(R - 0.25e-3, 0.5 * pr_lo), R + 0.3e-3, step)
        (Bf,), inside = _sample_rays([(barrier_f, True)], (cx, cy), r_ray, 360, dx, dy)
        held = Bf[:, :-2] & Bf[:, 1:-1] & Bf[:, 2:]
        k0 = np.argmax(held, axis=1)
        hit = held.any(axis=1) & inside[np.arange(360), k0] & (k0 > 0)  # edges inside the field, not at the start
        if hit.sum() < 60:
            break
        ex, ey = cx + r_ray[k0[hit]] * np.cos(th[hit]), cy + r_ray[k0[hit]] * np.sin(th[hit])
        try:
            circ = fit_circle(ex, ey, threshold=max(3 * step, 15e-6), radius_range=(pr_lo, pr_hi))
        except ParameterError:
            break
        # a refinement, not a new search: it may move the centre by up to the band width
        if circ.inliers.sum() < 60 or np.hypot(circ.x - cx, circ.y - cy) > _LOCATE_BAND_M:
            break
        cx, cy, R = circ.x, circ.y, circ.r
    # the cut: the middle of the run of barrier points just outside the edge (the rounded edge and the
    # pocket gap), on the full grid
    Xm, Ym = (np.arange(nx) * dx)[None, :], (np.arange(ny) * dy)[:, None]
    r = np.hypot(Xm - cx, Ym - cy)
    binw = 2 * step
    lo, hi = R - 2 * step, R + 0.8e-3
    sel = (r >= lo) & (r < hi)
    bi = ((r[sel] - lo) / binw).astype(np.int64)
    nb = int(np.ceil((hi - lo) / binw))
    share = np.bincount(bi, weights=(~barrier_f[sel]).astype(np.float64), minlength=nb) / \
        np.maximum(np.bincount(bi, minlength=nb), 1)
    rb = lo + (np.arange(nb) + 0.5) * binw
    gone = share < 0.5
    cut = R + _LOCATE_RING_M
    if gone.any():
        first = int(np.argmax(gone))
        last = first
        while last + 1 < nb and gone[last + 1]:
            last += 1
        cut = float((rb[first] + rb[last]) / 2)
    return {"center": (float(cx), float(cy)), "radius": R, "cut": cut, "contrast": score}


def _region_around(z: np.ndarray, dx: float, dy: float, loc: dict, limits: dict) -> BreechFaceRegion:
    """`_primer_region` on the located primer alone: a window about it, NaN beyond the middle of its gap."""
    if loc["center"] is None:
        return _empty_region(z.shape)
    ny, nx = z.shape
    cx, cy = loc["center"]
    half = loc["cut"] + 4 * max(dx, dy)
    c0, c1 = max(int(np.floor((cx - half) / dx)), 0), min(int(np.ceil((cx + half) / dx)) + 1, nx)
    r0, r1 = max(int(np.floor((cy - half) / dy)), 0), min(int(np.ceil((cy + half) / dy)) + 1, ny)
    sub = z[r0:r1, c0:c1].copy()
    ox, oy = c0 * dx, r0 * dy
    rr = np.hypot((np.arange(c1 - c0) * dx + ox - cx)[None, :], (np.arange(r1 - r0) * dy + oy - cy)[:, None])
    sub[rr > loc["cut"]] = np.nan  # the case head, headstamp and rim stay out of the search
    if (~np.isnan(sub)).sum() < 100 or min(sub.shape[0] * dy, sub.shape[1] * dx) < limits["pr_lo"]:
        return _empty_region(z.shape)
    reg = _primer_region(sub, dx, dy, **limits)
    mask = np.zeros(z.shape, bool)
    mask[r0:r1, c0:c1] = reg.mask

    def sh(p):
        return None if p is None else (float(p[0] + ox), float(p[1] + oy))

    reg.mask = mask
    reg.primer_center_m = sh(reg.primer_center_m)
    reg.aperture_center_m = sh(reg.aperture_center_m)
    reg.crater_center_m = sh(reg.crater_center_m)
    return reg

