"""Grid geometry of the region search: components, disks, hull points, samples along rays, step edges,
clean mask edges."""

from __future__ import annotations

import cv2
import numpy as np

#: `_clean_edge` looks this many grid steps either side of the boundary along each ray ...
CLEAN_EDGE_HALF_WIDTH_STEPS = 12
#: ... along one ray per grid step of the circumference, within these bounds.
CLEAN_EDGE_RAYS = (64, 2048)
#: Rays that meet data: at least this share of all rays, or the boundary is not a clean edge.
CLEAN_EDGE_MIN_HIT_SHARE = 0.25
#: A clean ray has at least this many unmeasured points, then at once a run of ``CLEAN_EDGE_RUN_POINTS``
#: points at least ``CLEAN_EDGE_RUN_MIN_SHARE`` measured ...
CLEAN_EDGE_MIN_EMPTY_POINTS = 3
CLEAN_EDGE_RUN_POINTS = 6
CLEAN_EDGE_RUN_MIN_SHARE = 0.8
#: ... and a clean edge has at least this share of clean rays among the rays that meet data.
CLEAN_EDGE_MIN_CLEAN_SHARE = 0.7


def _largest_component(m: np.ndarray) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(m, bool)
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _disk(radius_px: float) -> np.ndarray:
    r = max(int(round(radius_px)), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _hull_points(comp: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Points every grid step along the convex hull of ``comp``, off the grid border, in metres."""
    pts = cv2.findNonZero(comp.astype(np.uint8))
    if pts is None or len(pts) < 3:
        return np.zeros((0, 2))
    hull = cv2.convexHull(pts)[:, 0, :].astype(np.float64)
    seg = []
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        n = max(int(np.ceil(np.hypot(*(b - a)))), 1)
        t = np.arange(n)[:, None] / n
        seg.append(a + t * (b - a))
    p = np.concatenate(seg)
    ny, nx = comp.shape
    off = (p[:, 0] > 1.5) & (p[:, 0] < nx - 2.5) & (p[:, 1] > 1.5) & (p[:, 1] < ny - 2.5)
    return p[off] * [dx, dy]


def _sample_rays(arrs, centre, r, n_angles, dx, dy):
    """Nearest-point samples of 2-D arrays along rays from ``centre`` (metres); out-of-grid -> fill."""
    th = 2 * np.pi * np.arange(n_angles) / n_angles
    X = centre[0] + r[None, :] * np.cos(th)[:, None]
    Y = centre[1] + r[None, :] * np.sin(th)[:, None]
    col, row = np.rint(X / dx).astype(np.int64), np.rint(Y / dy).astype(np.int64)
    ny, nx = arrs[0][0].shape
    inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
    col, row = np.clip(col, 0, nx - 1), np.clip(row, 0, ny - 1)
    return [np.where(inside, a[row, col], fill) for a, fill in arrs], inside


def _step_edge(F: np.ndarray, L: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index in [lo, hi] where the share of True in the next ``L`` samples most exceeds
    the share in the previous ``L`` (the step from impression to face), and that contrast."""
    K, M = F.shape
    c = np.concatenate([np.zeros((K, 1)), np.cumsum(F, axis=1)], axis=1)
    idx = np.arange(M)
    fwd = (c[:, np.minimum(idx + L, M)] - c[:, idx]) / np.maximum(np.minimum(idx + L, M) - idx, 1)
    bwd = (c[:, idx] - c[:, np.maximum(idx - L, 0)]) / np.maximum(idx - np.maximum(idx - L, 0), 1)
    score = np.where((idx >= lo) & (idx <= hi), fwd - bwd, -np.inf)
    best = np.argmax(score, axis=1)
    return best, score[np.arange(K), best]


def _clean_edge(valid: np.ndarray, centre, radius: float, dx: float, dy: float, inside_valid: bool):
    """Is the boundary near ``radius`` about ``centre`` a clean mask edge (a scan already cut)?

    Along each ray across the boundary (+-12 grid steps), coming from the unmeasured side: a
    clean edge has nothing measured, then at once a well-measured run (>= 80 % of the next 6
    points). Raw scans fail this: data thin out raggedly (the primer's rounded edge) or there is
    measured structure on both sides (the flowback ring). Clean when >= 70 % of the rays that
    meet data are clean (the ``CLEAN_EDGE_*`` constants). Returns ``(clean, r_min, r_max)``: the
    range of the edge radii.
    """
    s = max(dx, dy)
    n = int(np.clip(2 * np.pi * radius / s, *CLEAN_EDGE_RAYS))
    k = np.arange(-CLEAN_EDGE_HALF_WIDTH_STEPS, CLEAN_EDGE_HALF_WIDTH_STEPS + 1)
    if inside_valid:  # walk inward from outside
        k = k[::-1]
    (v,), g = _sample_rays([(valid, False)], centre, radius + k * s, n, dx, dy)
    v = v & g
    hit = v.any(axis=1)
    if hit.sum() < CLEAN_EDGE_MIN_HIT_SHARE * n:
        return False, radius, radius
    v, g = v[hit], g[hit]
    t = np.argmax(v, axis=1)  # first measured sample from the empty side
    c = np.concatenate([np.zeros((len(t), 1)), np.cumsum(v, axis=1)], axis=1)
    rows = np.arange(len(t))
    n_run = CLEAN_EDGE_RUN_POINTS
    run = np.where(t + n_run <= v.shape[1], (c[rows, np.minimum(t + n_run, v.shape[1])] - c[rows, t]) / n_run, 0.0)
    clean = (t >= CLEAN_EDGE_MIN_EMPTY_POINTS) & (run >= CLEAN_EDGE_RUN_MIN_SHARE) & g[rows, np.maximum(t - 1, 0)]
    if clean.mean() < CLEAN_EDGE_MIN_CLEAN_SHARE:
        return False, radius, radius
    r_edge = radius + k[t[clean]] * s
    return True, float(r_edge.min()), float(r_edge.max())
