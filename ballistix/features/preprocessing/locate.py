"""Step 0 of `find_breech_face`: the primer in a wide field of view (e.g. the whole case head).

`_locate_primer` finds it in four steps: `_barrier_blocks` (on a coarse grid, where data are missing or
steep), `_ring_search` (the most closed ring of such points around a measured disc, by FFT correlation),
`_refine_edge` (a circle through the edge along rays, on the full grid) and `_gap_cut` (where to cut the
primer off: the middle of its pocket gap). `_region_around` then runs the single-primer search
(`_primer_region`) on that primer alone.
"""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ._geometry import _sample_rays
from .circle import fit_circle
from .primer import _primer_region
from .region import MIN_MEASURED_POINTS, BreechFaceRegion, _empty_region

#: Grid on which a wide field is searched for the primer: coarse enough to be quick (an 11 mm field is ~280
#: points), fine enough that the primer pocket gap (0.1-0.25 mm) still spans a few points.
LOCATE_SPACING_M = 40e-6
#: A block of that grid less measured than this share has no height (and so no slope) of its own.
LOCATE_BLOCK_MIN_MEASURED_SHARE = 0.25
#: Width of the ring of missing or steep data sought around the primer (the gap), and of the band of primer face
#: inside it that must be measured: narrower than the narrowest gap, wider than the firing-pin aperture's step.
LOCATE_RING_M, LOCATE_BAND_M = 0.12e-3, 0.3e-3
#: Slope above which a point counts as an edge (17 degrees, about what an NA 0.3 objective still measures): the
#: walls of a measured gap groove count like the missing data of an unmeasured one.
LOCATE_STEEP_SLOPE = 0.3
#: Least ring contrast (barrier share in the ring minus that in the band inside) taken for a primer: simulated
#: whole-head scans give 0.79-0.82 at every difficulty, the three NIST raw primers 0.79-0.86 (searched this way
#: for the measurement); a flat plate 0.25, a case head whose primer was blanked out 0.31.
LOCATE_MIN_CONTRAST = 0.45
#: The edge is refined along this many rays (one a degree) ...
LOCATE_RAYS = 360
#: ... from this far inside the coarse edge (but not nearer the centre than this share of the smallest plausible
#: primer radius) to this far outside it ...
LOCATE_RAYS_INSIDE_M = 0.25e-3
LOCATE_RAYS_FROM_PRIMER_SHARE = 0.5
LOCATE_RAYS_OUTSIDE_M = 0.3e-3
#: ... in this many passes (the second casts its rays from the refined centre); a pass needs this many rays that
#: meet the edge, and as many on the fitted circle.
LOCATE_REFINE_PASSES = 2
LOCATE_MIN_EDGE_RAYS = 60
#: RANSAC inlier distance of the edge fit: this many grid steps, at least ``LOCATE_EDGE_THRESHOLD_MIN_M``.
LOCATE_EDGE_THRESHOLD_STEPS = 3
LOCATE_EDGE_THRESHOLD_MIN_M = 15e-6
#: The cut is sought in rings of this many grid steps, out to this far beyond the edge, as the middle of the
#: first run of rings less measured (not barrier) than ``LOCATE_CUT_MAX_MEASURED_SHARE``.
LOCATE_CUT_RING_STEPS = 2
LOCATE_CUT_SEARCH_M = 0.8e-3
LOCATE_CUT_MAX_MEASURED_SHARE = 0.5
#: The window about the located primer reaches this many grid steps beyond the cut.
LOCATE_WINDOW_PAD_STEPS = 4


def _barrier_blocks(z: np.ndarray, dx: float, dy: float):
    """On a grid of `LOCATE_SPACING_M` blocks, how much each block is an edge ("barrier").

    A block's barrier is its share of missing points, or 1 when its surface is steeper than
    `LOCATE_STEEP_SLOPE` (the walls of a measured gap groove count like the missing data of an unmeasured
    one). Returns ``(barrier, block_dy, block_dx)``.
    """
    ny, nx = z.shape
    fy = max(1, int(round(LOCATE_SPACING_M / dy)))
    fx = max(1, int(round(LOCATE_SPACING_M / dx)))
    my, mx = ny // fy * fy, nx // fx * fx
    sd_y, sd_x = dy * fy, dx * fx
    zz = z[:my, :mx]
    valid = ~np.isnan(zz)
    cnt = valid.reshape(my // fy, fy, mx // fx, fx).sum((1, 3))
    vb = cnt / (fy * fx)
    with np.errstate(invalid="ignore", divide="ignore"):
        zb = np.where(valid, zz, 0.0).reshape(my // fy, fy, mx // fx, fx).sum((1, 3)) / cnt
    zb[vb < LOCATE_BLOCK_MIN_MEASURED_SHARE] = np.nan
    gy, gx = np.gradient(zb, sd_y, sd_x)
    steep = np.nan_to_num(np.hypot(gx, gy), nan=0.0) > LOCATE_STEEP_SLOPE
    return np.where(steep, 1.0, 1.0 - vb), sd_y, sd_x


def _ring_search(barrier: np.ndarray, sd_y: float, sd_x: float, pr_lo: float, pr_hi: float):
    """The most closed ring of barrier around a measured disc: ``(contrast, block index, radius)``.

    For each radius of the plausible primer range (`LOCATE_SPACING_M` steps) an FFT correlation with a
    kernel (mean over a ring of width `LOCATE_RING_M` at that radius minus the mean over the band of width
    `LOCATE_BAND_M` inside it) scores every centre in the field; outside the field counts as missing. The
    block index is None when no radius could be scored.
    """
    import scipy.fft as sfft

    H, W = barrier.shape
    py_, px_ = int(np.ceil((pr_hi + LOCATE_RING_M) / sd_y)) + 1, int(np.ceil((pr_hi + LOCATE_RING_M) / sd_x)) + 1
    bp = np.pad(barrier, ((py_, py_), (px_, px_)), constant_values=1.0)  # outside the field: nothing measured
    ky, kx = 2 * py_ + 1, 2 * px_ + 1
    shape = (sfft.next_fast_len(bp.shape[0] + ky - 1, real=True), sfft.next_fast_len(bp.shape[1] + kx - 1, real=True))
    FB = sfft.rfft2(bp, s=shape, workers=1)
    rho = np.hypot((np.arange(ky) - py_)[:, None] * sd_y, (np.arange(kx) - px_)[None, :] * sd_x)
    best = (-np.inf, None, None)
    for R in np.arange(pr_lo, pr_hi + 1e-12, LOCATE_SPACING_M):
        ring = (rho >= R) & (rho < R + LOCATE_RING_M)
        band = (rho >= R - LOCATE_BAND_M) & (rho < R)
        if ring.sum() == 0 or band.sum() == 0:
            continue
        kern = ring / ring.sum() - band / band.sum()
        full = sfft.irfft2(FB * sfft.rfft2(kern, s=shape, workers=1), s=shape, workers=1)
        sc = full[2 * py_ : 2 * py_ + H, 2 * px_ : 2 * px_ + W]  # centres inside the field only
        k = int(np.argmax(sc))
        if sc.flat[k] > best[0]:
            best = (float(sc.flat[k]), np.unravel_index(k, sc.shape), float(R))
    return best


def _refine_edge(
    barrier_f: np.ndarray, dx: float, dy: float, cx: float, cy: float, R: float, pr_lo: float, pr_hi: float
):
    """The primer's edge on the full grid, from the coarse centre ``(cx, cy)`` and radius ``R``.

    Along `LOCATE_RAYS` rays, the edge is where the barrier (missing or steep, ``barrier_f``) begins and
    holds for 3 points; a RANSAC circle through these edge points is the edge. A refinement, not a new
    search: a fit that moves the centre by more than `LOCATE_BAND_M`, or that too few rays support, is not
    taken. Returns ``(cx, cy, R)``.
    """
    step = min(dx, dy)
    th = 2 * np.pi * np.arange(LOCATE_RAYS) / LOCATE_RAYS
    for _ in range(LOCATE_REFINE_PASSES):  # the second pass casts its rays from the refined centre
        r_from = max(R - LOCATE_RAYS_INSIDE_M, LOCATE_RAYS_FROM_PRIMER_SHARE * pr_lo)
        r_ray = np.arange(r_from, R + LOCATE_RAYS_OUTSIDE_M, step)
        (Bf,), inside = _sample_rays([(barrier_f, True)], (cx, cy), r_ray, LOCATE_RAYS, dx, dy)
        held = Bf[:, :-2] & Bf[:, 1:-1] & Bf[:, 2:]
        k0 = np.argmax(held, axis=1)
        # edges inside the field, not at the start
        hit = held.any(axis=1) & inside[np.arange(LOCATE_RAYS), k0] & (k0 > 0)
        if hit.sum() < LOCATE_MIN_EDGE_RAYS:
            break
        ex, ey = cx + r_ray[k0[hit]] * np.cos(th[hit]), cy + r_ray[k0[hit]] * np.sin(th[hit])
        try:
            circ = fit_circle(
                ex,
                ey,
                threshold=max(LOCATE_EDGE_THRESHOLD_STEPS * step, LOCATE_EDGE_THRESHOLD_MIN_M),
                radius_range=(pr_lo, pr_hi),
            )
        except ParameterError:
            break
        if circ.inliers.sum() < LOCATE_MIN_EDGE_RAYS or np.hypot(circ.x - cx, circ.y - cy) > LOCATE_BAND_M:
            break
        cx, cy, R = circ.x, circ.y, circ.r
    return cx, cy, R


def _gap_cut(barrier_f: np.ndarray, dx: float, dy: float, cx: float, cy: float, R: float) -> float:
    """Where to cut the primer off (metres from its centre): the middle of the run of barrier just outside
    its edge (the rounded edge and the pocket gap), on the full grid; ``R + LOCATE_RING_M`` when none."""
    ny, nx = barrier_f.shape
    step = min(dx, dy)
    Xm, Ym = (np.arange(nx) * dx)[None, :], (np.arange(ny) * dy)[:, None]
    r = np.hypot(Xm - cx, Ym - cy)
    binw = LOCATE_CUT_RING_STEPS * step
    lo, hi = R - binw, R + LOCATE_CUT_SEARCH_M  # from one ring inside the edge
    sel = (r >= lo) & (r < hi)
    bi = ((r[sel] - lo) / binw).astype(np.int64)
    nb = int(np.ceil((hi - lo) / binw))
    share = np.bincount(bi, weights=(~barrier_f[sel]).astype(np.float64), minlength=nb) / np.maximum(
        np.bincount(bi, minlength=nb), 1
    )
    rb = lo + (np.arange(nb) + 0.5) * binw
    gone = share < LOCATE_CUT_MAX_MEASURED_SHARE
    cut = R + LOCATE_RING_M
    if gone.any():
        first = int(np.argmax(gone))
        last = first
        while last + 1 < nb and gone[last + 1]:
            last += 1
        cut = float((rb[first] + rb[last]) / 2)
    return cut


def _locate_primer(z: np.ndarray, dx: float, dy: float, pr_lo: float, pr_hi: float) -> dict:
    """Centre and edge radius of the primer in a wide field (``center`` None when no primer-like ring is
    found), where to cut it off (``cut``, metres from the centre) and the ring ``contrast``.

    The best (centre, radius) of `_ring_search` is the inner edge of the most closed ring of missing data
    around a measured disc: the primer's edge and pocket gap. The rim (2.26x the primer radius), the
    headstamp and the firing-pin aperture (a smaller ring) fall outside the radii searched or do not form
    closed rings. A contrast below `LOCATE_MIN_CONTRAST` is no primer.
    """
    barrier, sd_y, sd_x = _barrier_blocks(z, dx, dy)
    score, idx, R = _ring_search(barrier, sd_y, sd_x, pr_lo, pr_hi)
    if idx is None or not score >= LOCATE_MIN_CONTRAST:
        return {"center": None, "radius": None, "cut": None, "contrast": float(max(score, -1.0))}
    cy, cx = (idx[0] + 0.5) * sd_y - 0.5 * dy, (idx[1] + 0.5) * sd_x - 0.5 * dx  # block centre, in metres
    gyf, gxf = np.gradient(z, dy, dx)
    barrier_f = ~(np.hypot(gxf, gyf) <= LOCATE_STEEP_SLOPE)  # NaN (missing, or next to it) counts as barrier
    cx, cy, R = _refine_edge(barrier_f, dx, dy, cx, cy, R, pr_lo, pr_hi)
    cut = _gap_cut(barrier_f, dx, dy, cx, cy, R)
    return {"center": (float(cx), float(cy)), "radius": R, "cut": cut, "contrast": score}


def _region_around(z: np.ndarray, dx: float, dy: float, loc: dict, limits: dict) -> BreechFaceRegion:
    """`_primer_region` on the located primer alone: a window about it, NaN beyond the middle of its gap."""
    if loc["center"] is None:
        return _empty_region(z.shape)
    ny, nx = z.shape
    cx, cy = loc["center"]
    half = loc["cut"] + LOCATE_WINDOW_PAD_STEPS * max(dx, dy)
    c0, c1 = max(int(np.floor((cx - half) / dx)), 0), min(int(np.ceil((cx + half) / dx)) + 1, nx)
    r0, r1 = max(int(np.floor((cy - half) / dy)), 0), min(int(np.ceil((cy + half) / dy)) + 1, ny)
    sub = z[r0:r1, c0:c1].copy()
    ox, oy = c0 * dx, r0 * dy
    rr = np.hypot((np.arange(c1 - c0) * dx + ox - cx)[None, :], (np.arange(r1 - r0) * dy + oy - cy)[:, None])
    sub[rr > loc["cut"]] = np.nan  # the case head, headstamp and rim stay out of the search
    if (~np.isnan(sub)).sum() < MIN_MEASURED_POINTS or min(sub.shape[0] * dy, sub.shape[1] * dx) < limits["pr_lo"]:
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
