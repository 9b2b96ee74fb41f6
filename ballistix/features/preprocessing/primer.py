"""Steps 1-5 of `find_breech_face` on a field that shows (at most) one primer."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from ...errors import ParameterError
from ._geometry import _clean_edge, _disk, _hull_points, _largest_component, _sample_rays, _step_edge
from .circle import fit_circle
from .levelling import level
from .region import BreechFaceRegion

_FACE_MAX_SLOPE = 0.2  # steepest slope (after a 10 um smoothing) still taken for the flat breech face


def _primer_region(z: np.ndarray, dx: float, dy: float, *, pr_lo: float, pr_hi: float, ap_lo: float, ap_hi: float,
                   pin_margin: float, edge_margin: float, edge_drop: float, max_ext: float) -> BreechFaceRegion:
    """The region search of `find_breech_face` on a field that shows (at most) one primer."""
    ny, nx = z.shape
    valid = ~np.isnan(z)
    step = min(dx, dy)
    Xm, Ym = (np.arange(nx) * dx)[None, :], (np.arange(ny) * dy)[:, None]

    # --- 1. primer edge ---------------------------------------------------
    # the primer is where at least half the points are measured (30 um boxes): its ragged edge (drop-outs
    # where the rounded edge steepens) and stray specks beyond it do not move the hull
    kb = max(int(round(30e-6 / step)), 1) | 1
    dens = cv2.boxFilter(valid.astype(np.float32), -1, (kb, kb), borderType=cv2.BORDER_REPLICATE)
    comp = _largest_component(dens >= 0.5)
    pts = _hull_points(comp, dx, dy)
    outer_edge = "data edge"
    circ = None
    if len(pts) >= 20:
        try:
            circ = fit_circle(pts[:, 0], pts[:, 1], threshold=max(3 * step, 10e-6), radius_range=(pr_lo, pr_hi))
            if circ.inliers.mean() < 0.3:
                circ = None
        except ParameterError:
            circ = None
    if circ is None:  # no usable edge in the field: take the grid's inscribed circle
        pc = ((nx - 1) * dx / 2, (ny - 1) * dy / 2)
        pr = min(nx * dx, ny * dy) / 2
        outer_edge = "grid"
    else:
        pc, pr = (circ.x, circ.y), circ.r
    r_p = np.hypot(Xm - pc[0], Ym - pc[1])
    inside = r_p < pr - 2 * step

    # --- central hole (crater) --------------------------------------------
    hole = (~valid & inside).astype(np.uint8)
    hole = cv2.morphologyEx(hole, cv2.MORPH_OPEN, _disk(max(10e-6 / step, 1)))
    n, lab, stats, cents = cv2.connectedComponentsWithStats(hole, connectivity=8)
    crater_c = crater_r = None
    c0 = pc
    if n > 1:
        cm = cents[1:] * [dx, dy]
        area = stats[1:, cv2.CC_STAT_AREA] * dx * dy
        near = (np.hypot(cm[:, 0] - pc[0], cm[:, 1] - pc[1]) < 0.6 * pr) & (area > np.pi * (0.1 * ap_lo) ** 2)
        if near.any():
            k = int(np.argmax(np.where(near, area, -1)))
            blob = lab == k + 1
            c0 = (float(cm[k, 0]), float(cm[k, 1]))
            cs, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cpts = max(cs, key=len)[:, 0, :].astype(np.float64) * [dx, dy]
            # contour points on the primer edge are not crater edge
            cpts = cpts[np.hypot(cpts[:, 0] - pc[0], cpts[:, 1] - pc[1]) < pr - 4 * step]
            if len(cpts) >= 10:
                try:
                    cc = fit_circle(cpts[:, 0], cpts[:, 1], threshold=max(4 * step, 15e-6), radius_range=(0.02e-3, ap_hi))
                    crater_c, crater_r = (cc.x, cc.y), cc.r
                except ParameterError:
                    pass

    # --- 2. face-relative heights -------------------------------------------
    band = valid & (r_p > 0.7 * pr) & (r_p < 0.92 * pr)
    if band.sum() < 50:
        band = valid & inside
    h = level(z, order=2, mask=band)
    res = h[band]
    sig = float(1.4826 * np.median(np.abs(res - np.median(res)))) if res.size else 1e-6
    thr = max(3 * sig, 2e-6)
    # face-like: measured, at face level, nearly flat (not the crater wall crossing face level on its way
    # down), and in a well-measured neighbourhood (the flowback metal and the steps around the impression
    # return little light: their drop-outs are dense)
    k = max(int(round(20e-6 / step)), 1) | 1
    vf = valid.astype(np.float32)
    density = cv2.boxFilter(vf, -1, (k, k), borderType=cv2.BORDER_CONSTANT)
    hs = np.where(valid, h * 1e6, 0.0).astype(np.float32)
    sig_px = (10e-6 / dx, 10e-6 / dy)
    num = cv2.GaussianBlur(hs, (0, 0), sigmaX=sig_px[0], sigmaY=sig_px[1], borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(vf, (0, 0), sigmaX=sig_px[0], sigmaY=sig_px[1], borderType=cv2.BORDER_CONSTANT)
    hsm = num / np.maximum(den, 1e-3)
    gy, gx = np.gradient(hsm, dy * 1e6, dx * 1e6)
    face = valid & (np.abs(h) < thr) & (r_p < pr) & (density >= 0.7) & (np.hypot(gx, gy) < _FACE_MAX_SLOPE)

    # --- 3. firing-pin impression --------------------------------------------
    n_ang = 360
    L = max(int(round(80e-6 / step)), 3)
    r = np.arange(0.0, pr + 2 * step, step)

    def ends(centre, lo, hi):
        (F,), _ = _sample_rays([(face, False)], centre, r, n_ang, dx, dy)
        i, contrast = _step_edge(F, L, int(lo / step), int(np.ceil(hi / step)))
        re = r[i]
        ok = contrast > 0.4
        th = 2 * np.pi * np.arange(n_ang) / n_ang
        return re, ok, th

    ap_c = ap_r = None
    inner_edge = "none"
    ext = np.zeros(n_ang)
    re, ok, th = ends(c0, 0.5 * ap_lo, min(ap_hi + 0.5 * (ap_hi - ap_lo), 0.95 * pr))
    if ok.sum() >= 0.25 * n_ang:
        px_, py_ = c0[0] + re[ok] * np.cos(th[ok]), c0[1] + re[ok] * np.sin(th[ok])
        try:
            ac = fit_circle(px_, py_, threshold=max(4 * step, 25e-6), radius_range=(ap_lo, ap_hi))
            re2, ok2, _ = ends((ac.x, ac.y), ap_lo * 0.5, ap_hi * 1.5)
            if ok2.sum() >= 0.25 * n_ang:
                px_, py_ = ac.x + re2[ok2] * np.cos(th[ok2]), ac.y + re2[ok2] * np.sin(th[ok2])
                ac2 = fit_circle(px_, py_, threshold=max(4 * step, 25e-6), radius_range=(ap_lo, ap_hi))
                if ac2.inliers.sum() >= 0.2 * n_ang:
                    ac, re = ac2, re2
                    ext = np.where(ok2, re2 - ac.r, 0.0)
                    # follow the impression outward (shear, drag) where it goes on beyond the circle,
                    # smoothed over +-3 degrees so single rays through drop-outs do not count
                    ext = ndimage.median_filter(np.clip(ext, 0, None), size=7, mode="wrap")
                    ext = np.where(ext <= max_ext, ext, 0.0)
            if ac.inliers.sum() >= 0.2 * n_ang:
                ap_c, ap_r = (ac.x, ac.y), ac.r
        except ParameterError:
            pass
    if ap_c is not None:
        clean_inner, r_lo, _ = _clean_edge(valid, ap_c, ap_r, dx, dy, inside_valid=False)
        inner_edge = "mask edge" if clean_inner else "flowback step"
        if clean_inner:  # a scan already cut to the breech face: keep all it kept, no margin
            m_in, ext = min(r_lo - ap_r, 0.0) - step, np.zeros(n_ang)
        else:
            m_in = pin_margin
        r_a = np.hypot(Xm - ap_c[0], Ym - ap_c[1])
        ang = np.mod(np.rint(np.arctan2(Ym - ap_c[1], Xm - ap_c[0]) / (2 * np.pi) * n_ang), n_ang).astype(int)
        pin = r_a < ap_r + m_in + ext[ang]
        inner_r = ap_r + max(m_in, 0.0)
    else:
        pin = np.zeros_like(valid)
        inner_r = None

    # --- 4. flat-face edge ---------------------------------------------------
    face_pts = valid & ~pin
    ref_band = face_pts & (r_p > 0.7 * pr) & (r_p < 0.85 * pr)
    flat_r = pr
    if ref_band.sum() > 50:
        ref = float(np.median(h[ref_band]))
        binw = 2 * step
        nb = int(np.ceil(pr * 1.1 / binw))
        bi = np.minimum((r_p / binw).astype(np.int64), nb)
        sel = face_pts & (r_p < pr * 1.1)
        # ring medians through sorting once: order by (bin, height)
        order = np.lexsort((h[sel], bi[sel]))
        bs, hs = bi[sel][order], h[sel][order]
        starts = np.searchsorted(bs, np.arange(nb + 1))
        counts = np.diff(np.append(starts, bs.size))
        med = np.full(nb + 1, np.nan)
        has = counts > 0
        med[has] = hs[starts[has] + counts[has] // 2]
        ring_area = np.bincount(bi[~pin & (r_p < pr * 1.1)].ravel(), minlength=nb + 1)
        frac = counts / np.maximum(ring_area, 1)
        rb = (np.arange(nb + 1) + 0.5) * binw
        search = rb > 0.85 * pr
        gone = ~(frac > 0.3)
        dropped = (med < ref - edge_drop) | gone

        def first_of_three(flags):  # first searched ring from which ``flags`` holds for 3 rings
            run = np.convolve(flags.astype(int), np.ones(3, int), mode="full")[2:]  # run[k]: rings k..k+2
            idx = np.nonzero(search & (run >= 3))[0]
            return int(idx[0]) if idx.size else None

        k_end, k_drop = first_of_three(gone), first_of_three(dropped)
        if k_drop is not None:
            flat_r = float(min(k_drop * binw, pr))
            # the face fell away before the data stopped: the primer's rounded edge
            if (k_end is None or k_drop < k_end) and flat_r < pr - step:
                outer_edge = "rounded edge"
    clean_outer, _, r_hi = (False, pr, pr) if outer_edge == "grid" else _clean_edge(valid, pc, pr, dx, dy,
                                                                                    inside_valid=True)
    if outer_edge == "rounded edge" and flat_r < pr - max(50e-6, 3 * step):
        clean_outer = False  # the face falls away well inside a clean cut: the rounded edge wins
    if clean_outer:  # a scan already cut to the breech face: keep all it kept, no margin
        outer_edge, flat_r, out_r = "mask edge", pr, max(r_hi, pr) + step
    elif outer_edge == "grid":  # no edge seen: the grid's inscribed circle, nothing to keep clear of
        out_r = flat_r
    else:  # the rounded edge or a ragged end of the data
        out_r = flat_r - edge_margin

    mask = valid & ~pin & (r_p < out_r)
    return BreechFaceRegion(
        mask=mask, primer_center_m=(float(pc[0]), float(pc[1])), primer_radius_m=float(pr),
        flat_radius_m=float(flat_r), outer_radius_m=float(out_r),
        aperture_center_m=None if ap_c is None else (float(ap_c[0]), float(ap_c[1])),
        aperture_radius_m=None if ap_r is None else float(ap_r),
        inner_radius_m=None if inner_r is None else float(inner_r),
        crater_center_m=None if crater_c is None else (float(crater_c[0]), float(crater_c[1])),
        crater_radius_m=None if crater_r is None else float(crater_r),
        outer_edge=outer_edge, inner_edge=inner_edge, face_sigma_um=sig * 1e6, pin_extension_m=ext)

