"""Breech-face preprocessing: from a raw cartridge-case scan to a comparable surface.

`preprocess` chains pure steps, each one a plain public function that can be
used alone (arrays in, arrays out; or a `Scan` in, a `Scan` out with the step
recorded in ``meta["processing"]``):

1. `find_breech_face`: fits the primer's outer edge (circle through the convex
   hull of the measured primer), detects the firing-pin impression (the central
   crater or hole and the raised flowback ring around it, up to the step at the
   firing-pin aperture edge), and finds where the primer's flat face ends (its
   rounded edge falls away, or data stop). Returns the mask and the geometry.
2. `level`: removes the plane (or second-order) form by a robust fit (trimmed,
   then iteratively reweighted least squares with Tukey's biweight).
3. `remove_outliers`: spikes, dust and bad pixels (points far from their local
   median, in robust sigmas) and tiny isolated islands become NaN.
4. `bandpass`: ISO 16610-61 Gaussian regression band-pass, NaN-aware
   (`ballistix.features.filters.gaussian_bandpass`).
5. `crop` to the region's bounding box and `resample` to a standard lateral
   spacing (NaN-aware; area averaging when downsampling).

Before step 1, a grid far finer than the output needs is block-averaged
(``block_average`` in ``meta["processing"]``): to no finer than half the
output spacing, and to at most `MAX_WORKING_POINTS` points, the memory budget
(``ballistix._limits``). Scans at a quarter of the output spacing or coarser
are not touched.

Everything is deterministic: same input and parameters, same output bits.
Coordinates in results are metres from the centre of the grid's first point,
``x`` along columns and ``y`` along rows (as ``meta["truth"]`` of the simulator).
A point ``p`` of the input appears in the output of `preprocess` at
``p - crop["origin_m"] - resample["origin_m"]`` (the ``result`` of those steps
in ``meta["processing"]``), less ``block_average["origin_m"]`` too when that
step was taken.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import numpy as np
from scipy import ndimage

from .._limits import BLOCK_MIN_VALID, MAX_FIELD_MM, MAX_WORKING_POINTS, block_factor, block_mean, field_problem, \
    reduction_record
from .._version import __version__
from ..errors import ParameterError, SegmentationError, SegmentationWarning
from ..scan import Scan
from .filters import gaussian_bandpass

__all__ = [
    "DEFAULTS",
    "MAX_FIELD_MM",
    "MAX_WORKING_POINTS",
    "BreechFaceRegion",
    "Circle",
    "bandpass",
    "crop",
    "find_breech_face",
    "fit_circle",
    "level",
    "plot_preprocess",
    "preprocess",
    "remove_outliers",
    "resample",
    "segmentation_status",
]

#: Default parameters of `preprocess` (9 mm Luger primers, 16-250 um band as in the NIST CMC papers, 6.25 um grid).
DEFAULTS: dict[str, Any] = {
    "primer_radius_mm": (1.3, 2.6),
    "aperture_radius_mm": (0.3, 1.6),
    "pin_margin_um": 30.0,
    "edge_margin_um": 30.0,
    "edge_drop_um": 2.0,
    "max_pin_extension_um": 300.0,
    "level_order": 1,
    "outlier_sigma": 6.0,
    "outlier_window_um": 15.0,
    "min_island_um2": 2000.0,
    "short_cutoff_um": 16.0,
    "long_cutoff_um": 250.0,
    "spacing_um": 6.25,
}

_MIN_SPACING_M, _MAX_SPACING_M = 1e-9, 1e-4
_FACE_MAX_SLOPE = 0.2  # steepest slope (after a 10 um smoothing) still taken for the flat breech face


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------

def _heights(heights, name: str = "heights") -> np.ndarray:
    if isinstance(heights, Scan):
        heights = heights.heights
    z = np.asarray(heights)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ParameterError(f"{name} must be a 2-D array of at least 2 x 2 points, got shape {z.shape}")
    if not np.issubdtype(z.dtype, np.floating):
        raise ParameterError(f"{name} must be floating point (NaN = missing), got dtype {z.dtype}")
    if np.isinf(z).any():
        raise ParameterError(f"{name} contains +/-inf; use NaN for missing points")
    return z


def _spacing(spacing_m, name: str = "spacing_m") -> tuple[float, float]:
    """(dx, dy) in metres from a number or a pair; refuses values that cannot be metres."""
    try:
        pair = (float(spacing_m), float(spacing_m)) if np.ndim(spacing_m) == 0 else tuple(float(v) for v in spacing_m)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number or (dx, dy) in metres, got {spacing_m!r}") from None
    if len(pair) != 2:
        raise ParameterError(f"{name} must be a number or (dx, dy) in metres, got {spacing_m!r}")
    for v in pair:
        if not (np.isfinite(v) and _MIN_SPACING_M <= v <= _MAX_SPACING_M):
            raise ParameterError(
                f"{name} must be a lateral spacing in metres between {_MIN_SPACING_M:g} and {_MAX_SPACING_M:g} "
                f"(a microscope's grid), got {v!r}; were micrometres or millimetres passed as metres?")
    return pair


def _spacing_of(heights, spacing_m, step: str) -> tuple[float, float]:
    """Lateral spacing from ``spacing_m`` or, when it is None, from the Scan given as heights."""
    if spacing_m is None and isinstance(heights, Scan):
        spacing_m = (heights.dx, heights.dy)
    if spacing_m is None:
        raise ParameterError(f"{step} needs spacing_m (metres) for an array input")
    return _spacing(spacing_m)


def _positive(value, name: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ParameterError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return v


def _range(value, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ParameterError(f"{name} must be a (low, high) pair with 0 < low < high, got {value!r}")
    return lo, hi


def _check_cutoffs(short_cutoff_um, long_cutoff_um) -> tuple[float, float]:
    s = _positive(short_cutoff_um, "short_cutoff_um")
    lc = _positive(long_cutoff_um, "long_cutoff_um")
    if not s < lc:
        raise ParameterError(f"short_cutoff_um ({s:g}) must be below long_cutoff_um ({lc:g}); are they swapped?")
    return s, lc


def _record(scan: Scan, heights: np.ndarray, step: str, params: dict, result: dict | None = None, *,
            spacing: tuple[float, float] | None = None) -> Scan:
    """A new Scan with ``heights`` and the step appended to ``meta["processing"]``."""
    meta = copy.deepcopy(scan.meta)
    entry = {"step": step, "params": params, "version": __version__}
    if result is not None:
        entry["result"] = result
    meta["processing"] = list(meta.get("processing", [])) + [entry]
    dx, dy = spacing if spacing is not None else (scan.dx, scan.dy)
    return Scan(heights, dx, dy, meta)


# ----------------------------------------------------------------------------
# circle fit
# ----------------------------------------------------------------------------

class Circle(NamedTuple):
    """A fitted circle: centre ``(x, y)``, radius ``r`` (units of the input points), the inlier
    flags and the RMS radial residual of the inliers."""

    x: float
    y: float
    r: float
    inliers: np.ndarray
    rms: float


def _kasa(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    A = np.column_stack([x, y, np.ones_like(x)])
    c, *_ = np.linalg.lstsq(A, x * x + y * y, rcond=None)
    a, b = c[0] / 2, c[1] / 2
    return float(a), float(b), float(np.sqrt(max(c[2] + a * a + b * b, 0.0)))


def _geometric(x: np.ndarray, y: np.ndarray, a: float, b: float, r: float, iters: int = 20):
    """Gauss-Newton on the orthogonal distances, from (a, b, r)."""
    p = np.array([a, b, r], dtype=np.float64)
    for _ in range(iters):
        dxp, dyp = x - p[0], y - p[1]
        d = np.maximum(np.hypot(dxp, dyp), 1e-12)
        e = d - p[2]
        J = np.column_stack([-dxp / d, -dyp / d, -np.ones_like(d)])
        step, *_ = np.linalg.lstsq(J, -e, rcond=None)
        p += step
        if np.abs(step).max() < 1e-10:
            break
    return float(p[0]), float(p[1]), float(abs(p[2]))


def fit_circle(x, y, *, threshold: float | None = None, radius_range: tuple[float, float] | None = None,
               max_trials: int = 400, seed: int = 0) -> Circle:
    """Fit a circle to 2-D points, robustly when a ``threshold`` is given.

    Without a threshold: algebraic (Kasa) fit refined by geometric least
    squares on all points. With a threshold: RANSAC (MSAC scoring) over
    ``max_trials`` triples, then a geometric least-squares refinement on the
    points within ``threshold`` of the circle (twice), so partial arcs and
    points from other structures do not pull the fit.

    Parameters
    ----------
    x, y : (n,) array_like
        Point coordinates (any length unit; the result is in the same unit).
    threshold : float, optional
        Inlier distance from the circle, in the unit of ``x`` and ``y``.
    radius_range : (float, float), optional
        Plausible radii; candidate circles outside are rejected.
    max_trials : int
        RANSAC triples.
    seed : int
        Seed of the triple sampling (the fit is deterministic for a given seed).

    Returns
    -------
    Circle
        ``x``, ``y``, ``r``, ``inliers`` (bool per point) and ``rms``.

    Examples
    --------
    >>> t = np.linspace(0, np.pi, 50)
    >>> c = fit_circle(3 + 2 * np.cos(t), -1 + 2 * np.sin(t))
    >>> round(c.x, 6), round(c.y, 6), round(c.r, 6)
    (3.0, -1.0, 2.0)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ParameterError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ParameterError(f"fit_circle needs at least 3 finite points, got {x.size}")
    if threshold is not None:
        threshold = _positive(threshold, "threshold")
    if radius_range is not None:
        radius_range = _range(radius_range, "radius_range")
    if isinstance(max_trials, bool) or not isinstance(max_trials, (int, np.integer)) or max_trials < 1:
        raise ParameterError(f"max_trials must be a positive integer, got {max_trials!r}")
    # normalise for conditioning
    mx, my = x.mean(), y.mean()
    s = max(float(np.hypot(x - mx, y - my).max()), 1e-300)
    u, v = (x - mx) / s, (y - my) / s
    rr = None if radius_range is None else (radius_range[0] / s, radius_range[1] / s)
    if threshold is None:
        a, b, r = _geometric(u, v, *_kasa(u, v))
        inl = np.ones(u.size, bool)
    else:
        t = threshold / s
        rng = np.random.default_rng(seed)
        score_idx = np.arange(u.size) if u.size <= 1500 else np.linspace(0, u.size - 1, 1500).astype(int)
        su, sv = u[score_idx], v[score_idx]
        tri = np.stack([rng.choice(u.size, 3, replace=False) for _ in range(max_trials)]) if u.size > 3 else \
            np.array([[0, 1, 2]])
        ax, ay, bx, by, cx, cy = u[tri[:, 0]], v[tri[:, 0]], u[tri[:, 1]], v[tri[:, 1]], u[tri[:, 2]], v[tri[:, 2]]
        d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        ok = np.abs(d) > 1e-12
        d = np.where(ok, d, 1.0)
        a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
        ux = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d
        uy = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d
        ur = np.hypot(ax - ux, ay - uy)
        if rr is not None:
            ok &= (ur >= rr[0]) & (ur <= rr[1])
        if not ok.any():
            raise ParameterError("fit_circle: no candidate circle within radius_range; check the points and range")
        res = np.abs(np.hypot(su[None, :] - ux[ok, None], sv[None, :] - uy[ok, None]) - ur[ok, None])
        cost = (np.minimum(res, t) ** 2).sum(axis=1)
        best = int(np.argmin(cost))
        a, b, r = ux[ok][best], uy[ok][best], ur[ok][best]
        for _ in range(3):
            inl = np.abs(np.hypot(u - a, v - b) - r) < t
            if inl.sum() < 3:
                break
            a, b, r = _geometric(u[inl], v[inl], a, b, r)
        inl = np.abs(np.hypot(u - a, v - b) - r) < t
    e = np.hypot(u - a, v - b) - r
    rms = float(np.sqrt(np.mean(e[inl] ** 2))) * s if inl.any() else float("nan")
    return Circle(float(a * s + mx), float(b * s + my), float(r * s), inl, rms)


# ----------------------------------------------------------------------------
# step 2: levelling
# ----------------------------------------------------------------------------

def _design(xn: np.ndarray, yn: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(xn), xn, yn]
    if order == 2:
        cols += [xn * xn, xn * yn, yn * yn]
    return np.column_stack(cols)


def level(heights, *, order: int = 1, robust: bool = True, mask=None, max_iter: int = 30,
          max_points: int = 50_000):
    """Remove the plane (``order=1``) or second-order (``order=2``) form of a surface.

    The form is fitted to the valid points (optionally only those in ``mask``)
    and subtracted from every point. The robust fit starts from least
    squares, trims the points with the largest residuals (three passes keeping
    the best 60 %), then iterates Tukey-biweight reweighted least squares
    (c = 4.685 robust sigmas), so raised rings, pits or a remaining edge do not
    tilt the result. A regular subsample of at most ``max_points`` points is
    fitted (deterministic).

    Parameters
    ----------
    heights : (ny, nx) ndarray or Scan
        Heights in metres, NaN = missing.
    order : {1, 2}
        1: plane; 2: plane plus quadratic terms (dome, saddle).
    robust : bool
        False gives the plain least-squares fit.
    mask : (ny, nx) bool ndarray, optional
        Points used for the fit (the form is still removed everywhere).
    max_iter : int
        Reweighting iterations at most.
    max_points : int
        Points fitted at most.

    Returns
    -------
    ndarray or Scan
        Levelled heights (float64), NaN where the input is NaN; a Scan (with
        the step in ``meta["processing"]``) when given a Scan.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:20, 0:30]
    >>> bool(np.allclose(level(1e-6 * (3 + 0.2 * xx - 0.1 * yy)), 0, atol=1e-15))
    True
    """
    z = _heights(heights)
    if order not in (1, 2) or isinstance(order, bool):
        raise ParameterError(f"order must be 1 (plane) or 2 (second order), got {order!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ParameterError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 10:
        raise ParameterError(f"max_points must be an integer >= 10, got {max_points!r}")
    sel = ~np.isnan(z)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != z.shape:
            raise ParameterError(f"mask shape {m.shape} differs from heights shape {z.shape}")
        sel &= m.astype(bool)
    ncoef = 3 if order == 1 else 6
    rows, cols = np.nonzero(sel)
    if rows.size < ncoef:
        raise ParameterError(f"level needs at least {ncoef} valid points for order {order}, got {rows.size}")
    if rows.size > max_points:
        pick = np.linspace(0, rows.size - 1, max_points).astype(np.int64)
        rows, cols = rows[pick], cols[pick]
    ny, nx = z.shape
    cx, cy, sx, sy = (nx - 1) / 2, (ny - 1) / 2, max(nx / 2, 1.0), max(ny / 2, 1.0)
    A = _design((cols - cx) / sx, (rows - cy) / sy, order)
    zv = z[rows, cols].astype(np.float64)
    zoff = float(np.median(zv))
    b = (zv - zoff) * 1e6  # micrometres: well-scaled numbers

    def solve(w=None):  # normal equations: A is well conditioned (coordinates in [-1, 1])
        Aw = A if w is None else A * w[:, None]
        return np.linalg.solve(Aw.T @ A, Aw.T @ b)

    coef = solve()
    if robust:
        for _ in range(3):
            res = np.abs(b - A @ coef)
            keep = (res <= np.quantile(res, 0.6)).astype(np.float64)
            if keep.sum() < 2 * ncoef:
                break
            coef = solve(keep)
        for _ in range(max_iter):
            res = b - A @ coef
            scale = 1.4826 * np.median(np.abs(res - np.median(res)))
            if not scale > 1e-6:  # an exact fit (to a picometre): nothing left to reweight
                break
            u = res / (4.685 * scale)
            w = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
            if np.count_nonzero(w) < 2 * ncoef:
                break
            new = solve(w)
            done = np.abs(new - coef).max() < 1e-6
            coef = new
            if done:
                break
    xn = ((np.arange(nx) - cx) / sx)[None, :]
    yn = ((np.arange(ny) - cy) / sy)[:, None]
    form = coef[0] + coef[1] * xn + coef[2] * yn
    if order == 2:
        form = form + coef[3] * xn * xn + coef[4] * xn * yn + coef[5] * yn * yn
    form *= 1e-6
    form += zoff  # zoff + form * 1e-6, in place: one full-size temporary fewer
    out = z.astype(np.float64, copy=False) - form
    if isinstance(heights, Scan):
        return _record(heights, out, "level", {"order": int(order), "robust": bool(robust),
                                               "max_iter": int(max_iter), "max_points": int(max_points),
                                               "mask": mask is not None})
    return out


# ----------------------------------------------------------------------------
# step 3: outliers
# ----------------------------------------------------------------------------

def _fill_nan(z: np.ndarray, valid: np.ndarray, size_px: int) -> np.ndarray:
    """NaN replaced by the mean of the valid points in a ``size_px`` box (then by the median where none)."""
    k = (int(size_px) | 1, int(size_px) | 1)
    num = cv2.boxFilter(np.where(valid, z, 0.0), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    den = cv2.boxFilter(valid.astype(np.float64), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    with np.errstate(invalid="ignore", divide="ignore"):
        num /= den  # in place: one full-size temporary fewer
    num[~(den > 0.5)] = np.median(z[valid])
    del den
    return np.where(valid, z, num)


def remove_outliers(heights, spacing_m=None, *, sigma: float = 6.0, window_um: float = 15.0,
                    min_island_um2: float = 2000.0, return_mask: bool = False):
    """Set spikes, dust specks and bad pixels to NaN.

    A point is an outlier when it departs from the median of its
    ``window_um`` neighbourhood by more than ``sigma`` robust standard
    deviations of such departures (Hampel filter: 1.4826 x their median in the
    same window, or over the whole scan if that is larger, and never less than
    a tenth of the robust standard deviation of the heights). Measured
    islands smaller than ``min_island_um2`` surrounded by missing data are
    dropped too. Texture wider than the window is left alone.

    Parameters
    ----------
    heights : (ny, nx) ndarray or Scan
        Heights in metres, NaN = missing.
    spacing_m : float or (dx, dy)
        Lateral spacing in metres (taken from the Scan when given one).
    sigma : float
        Threshold in robust standard deviations of the departures.
    window_um : float
        Side of the median window in micrometres (at least 3 points).
    min_island_um2 : float
        Area below which an isolated measured island is removed (0: keep all).
    return_mask : bool
        Also return the boolean array of points removed.

    Returns
    -------
    ndarray or Scan (and ndarray)
        Cleaned heights, NaN at outliers; with ``return_mask`` also the removed points.

    Examples
    --------
    >>> z = np.zeros((40, 40)); z[20, 20] = 5e-6
    >>> z += 1e-8 * np.random.default_rng(0).standard_normal(z.shape)
    >>> bool(np.isnan(remove_outliers(z, 3.125e-6)[20, 20]))
    True
    """
    z = _heights(heights)
    dx, dy = _spacing_of(heights, spacing_m, "remove_outliers")
    sigma = _positive(sigma, "sigma")
    window_um = _positive(window_um, "window_um")
    min_island_um2 = _positive(min_island_um2, "min_island_um2", allow_zero=True)
    z = z.astype(np.float64, copy=False)  # never written to: no copy needed
    valid = ~np.isnan(z)
    removed = np.zeros(z.shape, bool)
    if valid.sum() >= 9:
        ky = max(3, int(round(window_um * 1e-6 / dy)) | 1)
        kx = max(3, int(round(window_um * 1e-6 / dx)) | 1)
        zoff = float(np.median(z[valid]))
        zu = (z - zoff) * 1e6
        filled = _fill_nan(zu, valid, 2 * max(kx, ky) + 1)
        def median(a):
            if kx == ky and kx <= 5:
                return cv2.medianBlur(a.astype(np.float32), kx).astype(np.float64)
            return ndimage.median_filter(a, size=(ky, kx), mode="nearest")

        dev = np.abs(zu - median(filled))
        del filled  # full-size temporaries go as soon as they are used (large scans)
        # Hampel-type scale: the local spread of the departures (so steep texture is not taken for
        # spikes), never below the scan-wide spread (so flat areas do not flag their noise). Missing
        # neighbours count as large departures: near gaps, where the local median is least sure,
        # the test is more lenient.
        # (on smooth surfaces most departures are exactly 0: the floor keeps texture peaks, whose
        # departure is a small share of the height spread, from counting as spikes)
        zv = zu[valid]
        floor = 0.1 * 1.4826 * np.median(np.abs(zv - np.median(zv)))
        del zv
        s_all = max(1.4826 * np.median(dev[valid]), floor)
        dev_filled = np.where(valid, dev, 1e3 * max(s_all, 1e-9))
        scale = np.maximum(1.4826 * median(dev_filled), s_all)
        del dev_filled, zu
        if s_all > 0:
            removed = valid & (dev > sigma * scale)
        del dev, scale
    out = np.where(removed, np.nan, z)
    if min_island_um2 > 0:
        ok = ~np.isnan(out)
        _, lab, stats, _ = cv2.connectedComponentsWithStats(ok.astype(np.uint8), connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] * dx * dy * 1e12 < min_island_um2
        small[0] = False
        islands = small[lab] & ok
        removed |= islands
        out[islands] = np.nan
    if isinstance(heights, Scan):
        res = _record(heights, out, "remove_outliers",
                      {"sigma": sigma, "window_um": window_um, "min_island_um2": min_island_um2},
                      {"removed_points": int(removed.sum())})
        return (res, removed) if return_mask else res
    return (out, removed) if return_mask else out


# ----------------------------------------------------------------------------
# step 4: band-pass, step 5: crop and resample
# ----------------------------------------------------------------------------

def bandpass(heights, spacing_m=None, *, short_cutoff_um: float = 16.0, long_cutoff_um: float = 250.0):
    """Gaussian regression band-pass (ISO 16610-61 weighting), NaN-aware.

    Low-pass at ``short_cutoff_um`` minus low-pass at ``long_cutoff_um``, each
    by normalised weights (`ballistix.features.filters.gaussian_bandpass`):
    missing points neither spread nor bias the result. Keeps the
    breech-face marks, removes fine noise and the form left after levelling.

    Parameters
    ----------
    heights : (ny, nx) ndarray or Scan
        Heights in metres, NaN = missing.
    spacing_m : float or (dx, dy)
        Lateral spacing in metres (taken from the Scan when given one).
    short_cutoff_um, long_cutoff_um : float
        Cutoff wavelengths in micrometres (50 % transmission); CMC work uses
        16 and 250-500 um.

    Returns
    -------
    ndarray or Scan
        Band-passed heights in metres.

    Examples
    --------
    >>> z = np.full((64, 64), 3e-6)
    >>> bool(np.allclose(bandpass(z, 6.25e-6), 0, atol=1e-15))
    True
    """
    z = _heights(heights)
    dx, dy = _spacing_of(heights, spacing_m, "bandpass")
    s, lc = _check_cutoffs(short_cutoff_um, long_cutoff_um)
    out = gaussian_bandpass(z.astype(np.float64), (dx, dy), short_cutoff_um=s, long_cutoff_um=lc)
    if isinstance(heights, Scan):
        return _record(heights, out, "bandpass", {"short_cutoff_um": s, "long_cutoff_um": lc})
    return out


def crop(heights, mask=None, *, pad: int = 0, return_origin: bool = False):
    """Crop to the bounding box of ``mask`` (default: the valid points), plus ``pad`` points.

    Returns
    -------
    ndarray or Scan (and (row0, col0))
        The cropped heights; with ``return_origin`` also the first row and
        column of the crop in the input grid. A Scan's step records the
        origin in metres (``origin_m`` = x, y of the new first point).

    Examples
    --------
    >>> z = np.full((5, 6), np.nan); z[1:3, 2:5] = 0.0
    >>> crop(z).shape
    (2, 3)
    """
    z = _heights(heights)
    m = ~np.isnan(z) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != z.shape:
        raise ParameterError(f"mask shape {m.shape} differs from heights shape {z.shape}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ParameterError(f"pad must be a non-negative integer, got {pad!r}")
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    if rows.size == 0:
        raise ParameterError("crop: nothing to crop to (the mask or the valid region is empty)")
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, z.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, z.shape[1])
    out = z[r0:r1, c0:c1].copy()
    if isinstance(heights, Scan):
        res = _record(heights, out, "crop", {"pad": int(pad), "mask": mask is not None},
                      {"origin_px": [int(r0), int(c0)], "origin_m": [c0 * heights.dx, r0 * heights.dy]})
        return (res, (int(r0), int(c0))) if return_origin else res
    return (out, (int(r0), int(c0))) if return_origin else out


def resample(heights, spacing_m=None, new_spacing_m: float | tuple[float, float] = 6.25e-6, *,
             min_valid: float = 0.5):
    """Resample to a new lateral spacing, NaN-aware.

    Heights and the valid-point indicator are resampled alike (area averaging
    when downsampling, bilinear when upsampling) and divided, so missing
    points neither spread nor bias the result; a new point is NaN when less
    than ``min_valid`` of its area was measured. The new grid starts at the
    same first point and keeps the extent to the nearest point.

    Parameters
    ----------
    heights : (ny, nx) ndarray or Scan
        Heights in metres, NaN = missing.
    spacing_m : float or (dx, dy)
        Current spacing in metres (taken from the Scan when given one).
    new_spacing_m : float or (dx, dy)
        Target spacing in metres.
    min_valid : float
        Share of measured area below which a new point is NaN (0-1].

    Returns
    -------
    ndarray or Scan
        Resampled heights (float64).

    Examples
    --------
    >>> resample(np.ones((8, 6)), 3.125e-6, 6.25e-6).shape
    (4, 3)
    """
    z = _heights(heights)
    dx, dy = _spacing_of(heights, spacing_m, "resample")
    ndx, ndy = _spacing(new_spacing_m, "new_spacing_m")
    min_valid = float(min_valid)
    if not 0 < min_valid <= 1:
        raise ParameterError(f"min_valid must be in (0, 1], got {min_valid!r}")
    z = z.astype(np.float64)
    fx, fy = dx / ndx, dy / ndy
    if abs(fx - 1) < 1e-9 and abs(fy - 1) < 1e-9:
        out, fx, fy = z.copy(), 1, 1
    else:
        size = (max(1, int(round(z.shape[1] * fx))), max(1, int(round(z.shape[0] * fy))))
        interp = cv2.INTER_AREA if (fx < 1 and fy < 1) else cv2.INTER_LINEAR
        valid = ~np.isnan(z)
        zoff = float(np.median(z[valid])) if valid.any() else 0.0
        num = cv2.resize(np.where(valid, z - zoff, 0.0), size, interpolation=interp)
        den = cv2.resize(valid.astype(np.float64), size, interpolation=interp)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = num / den + zoff
        out[~(den >= min_valid - 1e-9)] = np.nan
    if isinstance(heights, Scan):
        # cv2 maps point centres: new point 0 sits half a new step minus half an old step from old point 0
        shift = [0.0, 0.0] if out.shape == z.shape and fx == fy == 1 else [(ndx - dx) / 2, (ndy - dy) / 2]
        return _record(heights, out, "resample",
                       {"spacing_um": [round(ndx * 1e6, 9), round(ndy * 1e6, 9)], "min_valid": min_valid},
                       {"origin_m": shift, "from_spacing_um": [dx * 1e6, dy * 1e6]}, spacing=(ndx, ndy))
    return out


# ----------------------------------------------------------------------------
# step 1: breech-face region
# ----------------------------------------------------------------------------

@dataclass(eq=False)
class BreechFaceRegion:
    """Where the breech face is on a scan: the mask and the fitted geometry.

    Coordinates are metres in the scan's frame (``x`` along columns, ``y``
    along rows, from the first grid point); radii in metres.

    Attributes
    ----------
    mask : (ny, nx) bool ndarray
        True on measured breech-face points.
    primer_center_m, primer_radius_m
        Circle through the outer edge of the measured primer (convex hull).
    flat_radius_m
        Where the primer's flat face ends (about ``primer_center_m``): the
        rounded edge falls more than ``edge_drop_um`` below the face, or data
        stop.
    outer_radius_m
        Outer radius of the mask (``flat_radius_m`` less the margin).
    aperture_center_m, aperture_radius_m
        Circle through the outer edge of the firing-pin impression (the step
        at the firing-pin aperture, or the edge of a hole already masked);
        None when no impression was found.
    inner_radius_m
        ``aperture_radius_m`` plus the margin.
    crater_center_m, crater_radius_m
        The central crater (hole of missing data), None when there is none.
    outer_edge, inner_edge : str
        What bounded the region: ``"rounded edge"`` (height drop), ``"data
        edge"`` (measurement stops raggedly), ``"mask edge"`` (a clean, sharp
        edge of a scan already masked: no margin taken), ``"flowback step"``,
        ``"grid"`` or ``"none"``.
    pin_extension_m : (n_angles,) ndarray
        Per-angle extension of the firing-pin mask beyond its circle
        (aperture shear, drag), angles ``2 pi k / n_angles`` about
        ``aperture_center_m``.
    face_sigma_um
        Robust standard deviation of the levelled face (the detection noise).
    field_of_view : str
        "primer" (the field shows at most the primer) or "wide" (a wider
        field, e.g. the whole case head: the primer was located first).
    status : str
        Outcome of the plausibility checks: "ok", "doubtful" or "failed".
    reasons : list of str
        Why the region is doubtful or failed (empty when ok).
    checks : dict
        The measured quantities the checks rest on (see `find_breech_face`).
    """

    mask: np.ndarray
    primer_center_m: tuple[float, float]
    primer_radius_m: float
    flat_radius_m: float
    outer_radius_m: float
    aperture_center_m: tuple[float, float] | None
    aperture_radius_m: float | None
    inner_radius_m: float | None
    crater_center_m: tuple[float, float] | None
    crater_radius_m: float | None
    outer_edge: str
    inner_edge: str
    face_sigma_um: float
    pin_extension_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    field_of_view: str = "primer"
    status: str = "ok"
    reasons: list = field(default_factory=list)
    checks: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The geometry as JSON-ready numbers (no mask)."""
        def pt(p):
            return None if p is None else [float(p[0]), float(p[1])]

        def num(v):
            return None if v is None else float(v)

        return {
            "primer_center_m": pt(self.primer_center_m), "primer_radius_m": num(self.primer_radius_m),
            "flat_radius_m": num(self.flat_radius_m), "outer_radius_m": num(self.outer_radius_m),
            "aperture_center_m": pt(self.aperture_center_m), "aperture_radius_m": num(self.aperture_radius_m),
            "inner_radius_m": num(self.inner_radius_m),
            "crater_center_m": pt(self.crater_center_m), "crater_radius_m": num(self.crater_radius_m),
            "outer_edge": self.outer_edge, "inner_edge": self.inner_edge,
            "face_sigma_um": float(self.face_sigma_um),
            "max_pin_extension_m": float(self.pin_extension_m.max()) if self.pin_extension_m.size else 0.0,
            "mask_points": int(self.mask.sum()),
            "field_of_view": self.field_of_view, "status": self.status, "reasons": list(self.reasons),
            "checks": dict(self.checks),
        }


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
    meet data are clean. Returns ``(clean, r_min, r_max)``: the range of the edge radii.
    """
    s = max(dx, dy)
    n = int(np.clip(2 * np.pi * radius / s, 64, 2048))
    k = np.arange(-12, 13)
    if inside_valid:  # walk inward from outside
        k = k[::-1]
    (v,), g = _sample_rays([(valid, False)], centre, radius + k * s, n, dx, dy)
    v = v & g
    hit = v.any(axis=1)
    if hit.sum() < 0.25 * n:
        return False, radius, radius
    v, g = v[hit], g[hit]
    t = np.argmax(v, axis=1)  # first measured sample from the empty side
    c = np.concatenate([np.zeros((len(t), 1)), np.cumsum(v, axis=1)], axis=1)
    rows = np.arange(len(t))
    run = np.where(t + 6 <= v.shape[1], (c[rows, np.minimum(t + 6, v.shape[1])] - c[rows, t]) / 6, 0.0)
    clean = (t >= 3) & (run >= 0.8) & g[rows, np.maximum(t - 1, 0)]
    if clean.mean() < 0.7:
        return False, radius, radius
    r_edge = radius + k[t[clean]] * s
    return True, float(r_edge.min()), float(r_edge.max())


# ----------------------------------------------------------------------------
# field of view and plausibility checks
# ----------------------------------------------------------------------------

# A field whose larger side exceeds this many times the largest plausible primer radius (5.2 mm for the 9 mm
# default) shows more than one primer's width: the whole case head, say. Primer-only scans are 3.4-4.5 mm across
# (NIST raw 3.8 mm, processed 3.4 mm, the simulator 3.75 mm); a whole head is 10-11 mm.
_WIDE_FIELD_FACTOR = 2.0
# Grid on which a wide field is searched for the primer: coarse enough to be quick (an 11 mm field is ~280
# points), fine enough that the primer pocket gap (0.1-0.25 mm) still spans a few points.
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

# Plausibility thresholds (doubtful, failed). Values measured on the 3 NIST raw scans, the 40 CSAFE-processed
# Fadul scans and simulated primer-only and whole-head scans at every difficulty (docs/comparison.md).
# The primer radius pinned within this share of either end of the plausible range: the fit found the end of
# the range, not an edge.
_CHECK_RADIUS_AT_LIMIT = 0.02
# Share of the region's annulus (primer-centred, from the firing-pin aperture to the outer radius) that lies
# outside the grid. Normal scans: 0-0.2 % (NIST raw and processed), < 1.5 % (simulated). A primer
# cut by the field's border loses breech face where it matters most (the outer face).
_CHECK_CLIPPED = (0.05, 0.25)
# Firing-pin (aperture) centre off the primer centre, as a share of the primer radius. NIST raw: 0.08-0.19
# (Ruger P95 pins sit off centre), CSAFE-processed 0.05-0.30 (their hand-drawn outer edge is smaller),
# simulated 0.02-0.10. At 0.6 (about 1.1 mm) the 1.0-1.3 mm aperture would reach the primer's edge: that
# is not this primer's firing pin.
_CHECK_PIN_OFFSET = (0.4, 0.6)
# Measured share of the annulus. NIST raw 0.99, CSAFE-processed 0.96-0.99, simulated 0.98 (realistic-hard
# drop-outs included: the annulus ends where the data do); below a third the region is mostly something that
# is not a measured breech face (a region cut across the pocket gap or the crater).
_CHECK_VALID_SHARE = (0.45, 0.3)
# Share of the mask beyond the primer circle (by more than 3 grid steps): the breech face lies on the primer.
_CHECK_MASK_OUTSIDE = (0.01, 0.1)
# Mask area as a share of the full annulus (the part outside the grid counted as missing). NIST raw 0.93-0.96,
# processed 0.98-1.24, simulated 0.96-0.98. A region that covers less than a fifth of the annulus cannot
# carry a comparison's cells.
_CHECK_COVERAGE = (0.35, 0.2)
# Flat-face radius as a share of the primer radius: NIST raw 0.95-0.96, processed 1.0, simulated 0.94-0.96;
# below this the "face" is a fragment.
_CHECK_FLAT_SHARE = 0.6


def _source_of(scan) -> str:
    if isinstance(scan, Scan):
        meta = scan.meta or {}
        if meta.get("source"):
            return str(meta["source"])
        lab = meta.get("labels")
        if isinstance(lab, dict) and lab.get("exhibit") is not None:
            return f"exhibit {lab['exhibit']}"
        return "scan (no source recorded)"
    return "array"


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


def _empty_region(shape) -> BreechFaceRegion:
    return BreechFaceRegion(mask=np.zeros(shape, bool), primer_center_m=(float("nan"), float("nan")),
                            primer_radius_m=float("nan"), flat_radius_m=float("nan"), outer_radius_m=float("nan"),
                            aperture_center_m=None, aperture_radius_m=None, inner_radius_m=None,
                            crater_center_m=None, crater_radius_m=None, outer_edge="none", inner_edge="none",
                            face_sigma_um=float("nan"))


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


_STATUS_ORDER = {"ok": 0, "doubtful": 1, "failed": 2}


def _assess(reg: BreechFaceRegion, valid: np.ndarray, dx: float, dy: float, pr_lo: float, pr_hi: float,
            loc: dict | None) -> None:
    """Plausibility checks of a region (see `find_breech_face`): fills ``status``, ``reasons`` and ``checks``."""
    ny, nx = valid.shape
    doubt, fail = [], []
    checks: dict[str, Any] = {}
    if loc is not None:
        checks["primer_ring_contrast"] = round(float(loc["contrast"]), 4)
        if loc["center"] is None:
            fail.append(f"no primer found in the wide field ({nx * dx * 1e3:.3g} x {ny * dy * 1e3:.3g} mm): no "
                        f"closed ring of missing data (the primer's edge and pocket gap) of radius "
                        f"{pr_lo * 1e3:.3g}-{pr_hi * 1e3:.3g} mm (best contrast {loc['contrast']:.2f}, "
                        f"needed {_LOCATE_MIN_CONTRAST})")
            reg.status, reg.reasons, reg.checks = "failed", fail, checks
            return
    pc, pr, out_r = reg.primer_center_m, reg.primer_radius_m, reg.outer_radius_m
    if reg.outer_edge == "none" or not np.isfinite(pr):
        fail.append("no primer region could be fitted in the located primer")
        reg.status, reg.reasons, reg.checks = "failed", fail, checks
        return
    checks["primer_radius_mm"] = round(pr * 1e3, 4)
    no_edge = reg.outer_edge == "grid"
    if no_edge:
        doubt.append("no primer edge found: the grid's inscribed circle was taken as the primer")
    else:
        lim = _CHECK_RADIUS_AT_LIMIT * (pr_hi - pr_lo)
        if pr < pr_lo + lim or pr > pr_hi - lim:
            doubt.append(f"primer radius {pr * 1e3:.3g} mm at the end of the plausible range "
                         f"{pr_lo * 1e3:.3g}-{pr_hi * 1e3:.3g} mm")
    inside = 0 <= pc[0] <= (nx - 1) * dx and 0 <= pc[1] <= (ny - 1) * dy
    checks["primer_center_in_field"] = bool(inside)
    if not inside:
        fail.append(f"primer centre ({pc[0] * 1e3:.3g}, {pc[1] * 1e3:.3g}) mm lies outside the field")
    flat_share = reg.flat_radius_m / pr
    checks["flat_share"] = round(float(flat_share), 4)
    if not no_edge and flat_share < _CHECK_FLAT_SHARE:
        doubt.append(f"the flat face ends at {flat_share:.2f} of the primer radius (expected >= {_CHECK_FLAT_SHARE})")
    # the firing pin
    if reg.aperture_center_m is None:
        checks["firing_pin_offset"] = None
        if no_edge:
            fail.append("neither a primer edge nor a firing-pin impression was found: not a fired primer?")
        else:
            doubt.append("no firing-pin impression found")
        ac, inner_r = pc, 0.0
    else:
        ac, inner_r = reg.aperture_center_m, reg.inner_radius_m
        off = float(np.hypot(ac[0] - pc[0], ac[1] - pc[1]) / pr)
        checks["firing_pin_offset"] = round(off, 4)
        if off > _CHECK_PIN_OFFSET[1]:
            fail.append(f"firing-pin impression {off:.2f} primer radii off the primer centre (limit {_CHECK_PIN_OFFSET[1]})")
        elif off > _CHECK_PIN_OFFSET[0]:
            doubt.append(f"firing-pin impression {off:.2f} primer radii off the primer centre "
                         f"(expected <= {_CHECK_PIN_OFFSET[0]})")
    # the annulus the region should cover: primer-centred out to out_r, firing-pin aperture cut out
    Xm, Ym = (np.arange(nx) * dx)[None, :], (np.arange(ny) * dy)[:, None]
    r_p = np.hypot(Xm - pc[0], Ym - pc[1])
    ann = (r_p < out_r) & (np.hypot(Xm - ac[0], Ym - ac[1]) >= inner_r)
    area = np.pi * max(out_r**2 - inner_r**2, 0.0)
    if area <= 0:
        fail.append(f"empty annulus: outer radius {out_r * 1e3:.3g} mm inside the firing-pin aperture")
        reg.status, reg.reasons, reg.checks = "failed", fail, checks
        return
    pix = dx * dy
    clipped = float(np.clip(1 - ann.sum() * pix / area, 0, 1))
    valid_share = float(valid[ann].mean()) if ann.any() else 0.0
    m = reg.mask
    outside = float((m & (r_p > pr + 3 * max(dx, dy))).sum() / max(m.sum(), 1))
    coverage = float(m.sum() * pix / area)
    checks.update({"annulus_outside_field": round(clipped, 4), "valid_share": round(valid_share, 4),
                   "mask_outside_primer": round(outside, 4), "annulus_coverage": round(coverage, 4)})
    for value, (warn_at, fail_at), text, high_bad in (
            (clipped, _CHECK_CLIPPED, "of the region's annulus lies outside the field (primer clipped at the border)", True),
            (valid_share, _CHECK_VALID_SHARE, "of the region's annulus is measured", False),
            (outside, _CHECK_MASK_OUTSIDE, "of the mask lies outside the fitted primer circle", True),
            (coverage, _CHECK_COVERAGE, "of the annulus is covered by the mask", False)):
        bad_fail = value > fail_at if high_bad else value < fail_at
        bad_warn = value > warn_at if high_bad else value < warn_at
        limit = fail_at if bad_fail else warn_at
        if bad_fail or bad_warn:
            (fail if bad_fail else doubt).append(f"{value:.0%} {text} ({'limit' if bad_fail else 'expected'} "
                                                 f"{'<=' if high_bad else '>='} {limit:.0%})")
    reg.status = "failed" if fail else "doubtful" if doubt else "ok"
    reg.reasons, reg.checks = fail + doubt, checks


def _enforce(reg: BreechFaceRegion, source: str) -> None:
    if reg.status == "failed":
        raise SegmentationError(f"{source}: breech-face region refused ({reg.field_of_view} field): "
                                + "; ".join(reg.reasons))
    if reg.status == "doubtful":
        warnings.warn(SegmentationWarning(f"{source}: breech-face region doubtful ({reg.field_of_view} field): "
                                          + "; ".join(reg.reasons)), stacklevel=3)


def segmentation_status(scan) -> dict[str, Any] | None:
    """The worst segmentation outcome recorded in a scan's ``meta["processing"]``.

    Every `find_breech_face` step `preprocess` ran (and any region given as a
    `BreechFaceRegion`) records ``status`` and ``reasons``; a later run on an
    already processed scan cannot clear an earlier doubt, so the worst one
    counts.

    Returns
    -------
    dict or None
        ``{"status": "ok" | "doubtful" | "failed", "reasons": [...], "field_of_view": ...}``,
        or None when no checked region is on record (a scan processed elsewhere,
        a hand-drawn mask, ``region=None``).
    """
    meta = scan.meta if isinstance(scan, Scan) else scan
    worst = None
    for st in (meta or {}).get("processing", []) or []:
        if not isinstance(st, dict) or st.get("step") not in ("find_breech_face", "mask"):
            continue
        res = st.get("result") or {}
        status = res.get("status")
        if status not in _STATUS_ORDER:
            continue
        if worst is None or _STATUS_ORDER[status] > _STATUS_ORDER[worst["status"]]:
            worst = {"status": status, "reasons": list(res.get("reasons", [])),
                     "field_of_view": res.get("field_of_view")}
    return worst


def find_breech_face(scan, spacing_m=None, *, primer_radius_mm=DEFAULTS["primer_radius_mm"],
                     aperture_radius_mm=DEFAULTS["aperture_radius_mm"], pin_margin_um: float = DEFAULTS["pin_margin_um"],
                     edge_margin_um: float = DEFAULTS["edge_margin_um"], edge_drop_um: float = DEFAULTS["edge_drop_um"],
                     max_pin_extension_um: float = DEFAULTS["max_pin_extension_um"],
                     check: bool = True) -> BreechFaceRegion:
    """Find the breech-face region of a cartridge-case scan: mask and geometry.

    0. Field of view: a field wider than ``2 x`` the largest plausible primer
       radius (5.2 mm for 9 mm Luger) shows more than the primer, e.g. the whole
       case head (rim, headstamp, primer pocket gap, primer). There the primer
       is located first: the circle of plausible primer radius whose rim is the
       most closed ring of missing or steep data (the primer's edge and the
       pocket gap) around well-measured primer face, found by FFT correlation on
       a ~25 um grid. Only that primer, cut off in the middle of its gap, goes
       through steps 1-5; the rim, headstamp and case head never enter them.

    1. Primer edge: the convex hull of the largest region where at least half
       the points are measured (30 um boxes) is sampled every grid step
       (points on the grid border dropped) and a circle is fitted by RANSAC.
       Dents from drop-outs do not reach the hull, and stray points beyond it
       are outliers.
    2. Form: a robust second-order fit on the outer face (0.7-0.92 of the
       primer radius) gives face-relative heights and the face's noise
       ``sigma``; points within ``max(3 sigma, 2 um)`` of the face are
       "face-like".
       Face-like also requires a slope below 0.2 (after a 10 um smoothing:
       the crater wall crosses face level on its way down) and a
       well-measured neighbourhood (>= 70 % of a 20 um box: the flowback
       metal and the steps around the impression return little light, so
       their drop-outs are dense).
    3. Firing-pin impression: from the central hole (largest missing blob
       inside the primer, its circle fitted by RANSAC), rays go out every
       degree; along each, the impression ends at the radius where the share
       of face-like points over the next 80 um most exceeds the share over the
       previous 80 um (the crater, the raised flowback ring and the drop-outs
       at its step are not face-like; contrast > 0.4 required). A RANSAC
       circle through these ends is the aperture; rays are cast again from its
       centre and the fit repeated. Where the impression reaches beyond the
       circle (aperture shear, drag), the mask follows it, ray by ray
       (median over 7 degrees), by up to ``max_pin_extension_um``.
    4. Flat-face edge: the median face height ring by ring about the primer
       centre; the face ends where it falls ``edge_drop_um`` below the face
       (the rounded primer edge) or where data stop.
    5. Margins: ``pin_margin_um`` beyond the impression and ``edge_margin_um``
       inside the flat edge, except where the edge is a clean mask edge (a
       scan already cut to the breech face): there no margin is taken.

    Parameters
    ----------
    scan : Scan or (ny, nx) ndarray
        Heights in metres, NaN = missing.
    spacing_m : float or (dx, dy), optional
        Lateral spacing in metres (needed for an array).
    primer_radius_mm : (float, float)
        Plausible radius of the measured primer (9 mm Luger / small pistol
        primers: 2.2 mm cup, flat face ~1.7-1.9 mm).
    aperture_radius_mm : (float, float)
        Plausible radius of the firing-pin aperture step.
    pin_margin_um, edge_margin_um : float
        Margins beyond the firing-pin impression and inside the flat edge.
    edge_drop_um : float
        Height drop (below the face) that marks the rounded primer edge.
    max_pin_extension_um : float
        How far beyond the aperture circle the mask may follow the impression.

    check : bool
        Raise `SegmentationError` when the plausibility checks fail (see
        below); False returns the region with ``status="failed"`` instead, to
        look at.

    Returns
    -------
    BreechFaceRegion
        ``mask`` and the fitted geometry (metres); ``status`` ("ok",
        "doubtful" or "failed"), ``reasons`` and the measured ``checks``.

    Raises
    ------
    SegmentationError
        When ``check`` and the region failed a plausibility check: the
        message names the scan's source and the reasons.
    ParameterError
        For a field of view larger than `MAX_FIELD_MM` (25 mm): no cartridge
        case is, and the primer search's grid grows with the field.

    Warns
    -----
    SegmentationWarning
        When the region is doubtful (the reasons are in the message and in
        ``reasons``).

    Notes
    -----
    Plausibility checks on every region (thresholds are module constants,
    each with the reason for its value): the primer edge was found and its
    radius is not pinned to the end of ``primer_radius_mm``; the primer centre
    lies in the field and the region's annulus is not clipped by the grid
    border; the firing-pin impression was found near the primer centre; the
    share of measured points in the annulus; the mask lies inside the primer
    circle and covers a plausible share of the annulus.

    Examples
    --------
    >>> import ballistix as bx
    >>> s = bx.datasets.simulate(1, 1, seed=0, resolution="fast")[0]
    >>> r = find_breech_face(s)
    >>> 1.4e-3 < r.outer_radius_m < 2.0e-3
    True
    """
    z = _heights(scan, "scan heights")
    dx, dy = _spacing_of(scan, spacing_m, "find_breech_face")
    pr_lo, pr_hi = (v * 1e-3 for v in _range(primer_radius_mm, "primer_radius_mm"))
    ap_lo, ap_hi = (v * 1e-3 for v in _range(aperture_radius_mm, "aperture_radius_mm"))
    pin_margin = _positive(pin_margin_um, "pin_margin_um", allow_zero=True) * 1e-6
    edge_margin = _positive(edge_margin_um, "edge_margin_um", allow_zero=True) * 1e-6
    edge_drop = _positive(edge_drop_um, "edge_drop_um") * 1e-6
    max_ext = _positive(max_pin_extension_um, "max_pin_extension_um", allow_zero=True) * 1e-6
    ny, nx = z.shape
    too_wide = field_problem(ny, nx, dx, dy, MAX_FIELD_MM, "MAX_FIELD_MM")
    if too_wide:  # the primer search's grid grows with the field: a metre-wide field would take gigabytes
        raise ParameterError(f"{_source_of(scan)}: {too_wide}")
    if min(nx * dx, ny * dy) < pr_lo:
        raise ParameterError(
            f"the scan covers {nx * dx * 1e3:.3g} x {ny * dy * 1e3:.3g} mm, smaller than the primer radius range "
            f"{primer_radius_mm} mm: it cannot hold a breech face (pass region=None to preprocess to skip this step)")
    valid = ~np.isnan(z)
    if valid.sum() < 100:
        raise ParameterError(f"the scan has {int(valid.sum())} measured points; at least 100 are needed")
    limits = dict(pr_lo=pr_lo, pr_hi=pr_hi, ap_lo=ap_lo, ap_hi=ap_hi, pin_margin=pin_margin,
                  edge_margin=edge_margin, edge_drop=edge_drop, max_ext=max_ext)
    source = _source_of(scan)
    if max(nx * dx, ny * dy) > _WIDE_FIELD_FACTOR * pr_hi:
        view = "wide"
        loc = _locate_primer(z, dx, dy, pr_lo, pr_hi)
        if loc is None:
            reg = _empty_region(z.shape)
        else:
            reg = _region_around(z, dx, dy, loc, limits)
    else:
        view, loc = "primer", None
        reg = _primer_region(z, dx, dy, **limits)
    reg.field_of_view = view
    _assess(reg, valid, dx, dy, pr_lo, pr_hi, loc)
    if check:
        _enforce(reg, source)
    return reg


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


# ----------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------

def _working_factor(scan: Scan, spacing_um: float | None) -> tuple[int, str]:
    """Block factor of `preprocess`'s working grid and why: the grid is block-averaged ``k x k`` when
    ``k`` points fit in half the output spacing (the finest a band-pass and an area-averaging resample to
    it need: the raw NIST scans are at half the 6.25 um grid), or when it holds more than
    `MAX_WORKING_POINTS` points (the memory budget). Scans at a quarter of the output spacing or coarser
    (every NIST, CSAFE and simulated scan) are not touched."""
    ny, nx = scan.shape
    k_points = block_factor(ny, nx, MAX_WORKING_POINTS)
    k_spacing = 1
    if spacing_um is not None:
        k_spacing = max(1, math.floor(spacing_um * 1e-6 / 2 / max(scan.dx, scan.dy) * (1 + 1e-9)))
    k = max(k_points, k_spacing)
    at = f"{scan.dx * 1e6:.4g} um" if scan.dx == scan.dy else f"{scan.dx * 1e6:.4g} x {scan.dy * 1e6:.4g} um"
    if k_spacing >= k_points:
        why = (f"the grid ({at}) is finer than a quarter of the output spacing ({spacing_um:g} um): "
               f"block-averaged {k} x {k} to at most half of it before the other steps") if k > 1 else ""
    else:
        why = (f"{nx} x {ny} points are more than the working grid of {MAX_WORKING_POINTS} points "
               f"(MAX_WORKING_POINTS): block-averaged {k} x {k} before the other steps")
    return k, why


def _block_mask(region, k: int):
    """A given region (mask or `BreechFaceRegion`) on the block-averaged grid: a block is in the mask when
    at least half its points are."""
    reg = region if isinstance(region, BreechFaceRegion) else None
    m = np.asarray(reg.mask if reg is not None else region)
    ny, nx = m.shape
    oy, ox = ny // k, nx // k
    out = np.zeros((oy, ox), bool)
    step = max(1, (1 << 22) // max(nx, 1) // k)  # block rows at a time
    for r in range(0, oy, step):
        part = m[r * k:(r + step) * k, :ox * k]
        out[r:r + step] = part.reshape(-1, k, ox, k).sum(axis=(1, 3)) >= BLOCK_MIN_VALID * k * k
    if reg is None:
        return out
    return dataclasses.replace(reg, mask=out)


class _Discard(dict):
    """A dict that keeps nothing: `preprocess`'s diagnostics when they are not asked for."""

    def __setitem__(self, key, value):
        pass


def preprocess(scan: Scan, *, region="auto", primer_radius_mm=DEFAULTS["primer_radius_mm"],
               aperture_radius_mm=DEFAULTS["aperture_radius_mm"], pin_margin_um: float = DEFAULTS["pin_margin_um"],
               edge_margin_um: float = DEFAULTS["edge_margin_um"], edge_drop_um: float = DEFAULTS["edge_drop_um"],
               max_pin_extension_um: float = DEFAULTS["max_pin_extension_um"],
               level_order: int | None = DEFAULTS["level_order"], outlier_sigma: float | None = DEFAULTS["outlier_sigma"],
               outlier_window_um: float = DEFAULTS["outlier_window_um"],
               min_island_um2: float = DEFAULTS["min_island_um2"],
               short_cutoff_um: float | None = DEFAULTS["short_cutoff_um"],
               long_cutoff_um: float | None = DEFAULTS["long_cutoff_um"],
               spacing_um: float | None = DEFAULTS["spacing_um"], diagnostics: bool = False):
    """Breech-face preprocessing of a cartridge-case scan: region, level, outliers, band-pass, resample.

    Each step is a public function of this module; the output's
    ``meta["processing"]`` lists them in order with their parameters (and
    results such as the fitted geometry), after any steps already there.

    Parameters
    ----------
    scan : Scan
        Heights in metres, NaN = missing (raw or already processed).
    region : "auto", BreechFaceRegion, bool ndarray or None
        "auto": `find_breech_face`; a region or a boolean mask (shape of the
        scan) to use as given; None: keep every measured point.
    primer_radius_mm, aperture_radius_mm, pin_margin_um, edge_margin_um, edge_drop_um, max_pin_extension_um
        Passed to `find_breech_face` (9 mm Luger defaults).
    level_order : {1, 2} or None
        Form removed by `level` (robust); None skips levelling.
    outlier_sigma : float or None
        `remove_outliers` threshold in robust sigmas; None skips the step.
    outlier_window_um, min_island_um2 : float
        `remove_outliers` window and smallest island kept.
    short_cutoff_um, long_cutoff_um : float or None
        Gaussian band-pass cutoffs in micrometres (16 and 250 by default, as in the NIST CMC papers);
        None for both skips the band-pass.
    spacing_um : float or None
        Output lateral spacing in micrometres; None keeps the scan's.
    diagnostics : bool
        Also return a dict of the intermediate results for plots and checks:
        ``region`` (`BreechFaceRegion` or None), arrays on the input grid
        (the working grid when it was block-averaged) ``masked``,
        ``levelled``, ``outliers`` (bool, points removed),
        ``cleaned``; ``crop_origin_px`` (row, col); on the cropped grid
        ``cropped`` and ``filtered``; and ``final`` (the returned Scan).

    Returns
    -------
    Scan (and dict)
        Processed scan: float32 heights, NaN outside the breech face, cropped
        to the region's bounding box; meta copied from the input plus
        ``processing``.

    Notes
    -----
    Memory budget (``ballistix._limits``): a field of view larger than
    `MAX_FIELD_MM` (25 mm, more than any cartridge case head) is refused. A
    grid at a quarter of ``spacing_um`` or finer is block-averaged ``k x k``
    (``k`` the largest integer keeping the working spacing at most
    ``spacing_um / 2``, the finest a band-pass and an area-averaging
    resample to ``spacing_um`` need), and so is a grid of more than
    `MAX_WORKING_POINTS` (9 M) points (``k`` the smallest that fits), before
    any float64 step: NaN-aware means of the blocks, a block less than half
    measured is NaN, the last ``ny % k`` rows and ``nx % k`` columns are
    dropped. It is recorded as a ``block_average`` step (params
    ``max_spacing_um``, ``max_points``, ``min_valid``; result: ``factor``,
    ``reason``, original shape and spacing, ``origin_m``). A given region or
    mask is block-reduced with the scan (a block is in it when half its points
    are). With this, preprocessing needs about 100 bytes per working point at
    its peak: about 1.15 GB for 9 M points. An output grid of more than
    `MAX_WORKING_POINTS` points (a ``spacing_um`` far finer than the data)
    is refused before it is allocated.

    Raises
    ------
    ParameterError
        On a scan or parameters the pipeline cannot work with (all-NaN scan,
        spacing that cannot be metres, a field of view larger than
        `MAX_FIELD_MM`, inverted cutoffs, ...).
    SegmentationError
        When the breech-face region found fails the plausibility checks of
        `find_breech_face` (a doubtful one gives a `SegmentationWarning`, and
        ``meta["quality"]["segmentation"]`` of the output records ``status``
        and ``reasons``, the worst of all regions on record).

    Examples
    --------
    >>> import ballistix as bx
    >>> raw = bx.datasets.simulate(1, 1, seed=0, resolution="fast")[0]
    >>> proc = bx.preprocess(raw)
    >>> [p["step"] for p in proc.meta["processing"]]
    ['find_breech_face', 'level', 'remove_outliers', 'crop', 'bandpass', 'resample']
    """
    # --- validation up front: fail before any work --------------------------
    if not isinstance(scan, Scan):
        raise ParameterError(f"preprocess expects a ballistix Scan, got {type(scan).__name__}; "
                             "wrap arrays as Scan(heights, dx, dy)")
    _spacing((scan.dx, scan.dy), "scan spacing (dx, dy)")
    too_wide = field_problem(*scan.shape, scan.dx, scan.dy, MAX_FIELD_MM, "MAX_FIELD_MM")
    if too_wide:
        raise ParameterError(f"{_source_of(scan)}: {too_wide}")
    z = scan.heights
    valid = ~np.isnan(z)
    if not valid.any():
        raise ParameterError("the scan has no measured point (all heights are NaN)")
    zr = float(np.nanmax(z) - np.nanmin(z))
    if zr > 1e-2:
        raise ParameterError(f"heights span {zr:g} m: more than a centimetre, so not metres "
                             "(were micrometres stored as metres?)")
    if level_order is not None and (isinstance(level_order, bool) or level_order not in (1, 2)):
        raise ParameterError(f"level_order must be 1, 2 or None, got {level_order!r}")
    if outlier_sigma is not None:
        _positive(outlier_sigma, "outlier_sigma")
        _positive(outlier_window_um, "outlier_window_um")
        _positive(min_island_um2, "min_island_um2", allow_zero=True)
    if (short_cutoff_um is None) != (long_cutoff_um is None):
        raise ParameterError("give both short_cutoff_um and long_cutoff_um, or neither (no band-pass)")
    if short_cutoff_um is not None:
        short_cutoff_um, long_cutoff_um = _check_cutoffs(short_cutoff_um, long_cutoff_um)
    if spacing_um is not None:
        spacing_um = _positive(spacing_um, "spacing_um")
        _spacing(spacing_um / 1e6, "spacing_um / 1e6")
    region_params = {"primer_radius_mm": list(_range(primer_radius_mm, "primer_radius_mm")),
                     "aperture_radius_mm": list(_range(aperture_radius_mm, "aperture_radius_mm")),
                     "pin_margin_um": _positive(pin_margin_um, "pin_margin_um", allow_zero=True),
                     "edge_margin_um": _positive(edge_margin_um, "edge_margin_um", allow_zero=True),
                     "edge_drop_um": _positive(edge_drop_um, "edge_drop_um"),
                     "max_pin_extension_um": _positive(max_pin_extension_um, "max_pin_extension_um", allow_zero=True)}

    if not (isinstance(region, str) or region is None):  # a given region: checked against the scan as given
        given = np.asarray(region.mask if isinstance(region, BreechFaceRegion) else region)
        if given.shape != z.shape or given.dtype != bool:
            raise ParameterError(f"region mask must be a boolean array of shape {z.shape}, "
                                 f"got {given.dtype} {given.shape}")

    # intermediate arrays are kept only when asked for: each one is a full-size float64 copy
    diag: dict[str, Any] = {} if diagnostics else _Discard()
    cur = Scan(z.astype(np.float64, copy=False), scan.dx, scan.dy, copy.deepcopy(scan.meta))

    # 0. working grid: a grid far finer than the output needs is block-averaged before the float64 steps
    factor, why = _working_factor(cur, spacing_um)
    if factor > 1:
        cur = _record(cur, block_mean(cur.heights, factor), "block_average",
                      {"max_spacing_um": None if spacing_um is None else round(spacing_um / 2, 9),
                       "max_points": MAX_WORKING_POINTS, "min_valid": BLOCK_MIN_VALID},
                      reduction_record(factor, *cur.shape, cur.dx, cur.dy, MAX_WORKING_POINTS, why),
                      spacing=(cur.dx * factor, cur.dy * factor))
        z = cur.heights
        valid = ~np.isnan(z)
        if not valid.any():
            raise ParameterError(f"{_source_of(scan)}: no block of {factor} x {factor} points is half measured: "
                                 "nothing left on the working grid")
        if not (isinstance(region, str) or region is None):
            region = _block_mask(region, factor)

    # 1. region
    if isinstance(region, str) and region == "auto":
        reg = find_breech_face(cur, **region_params)
        mask = reg.mask
        cur = _record(cur, np.where(mask, cur.heights, np.nan), "find_breech_face", region_params, reg.as_dict())
    elif isinstance(region, BreechFaceRegion) or (region is not None and not isinstance(region, str)):
        reg = region if isinstance(region, BreechFaceRegion) else None
        mask = np.asarray(reg.mask if reg is not None else region)
        if mask.shape != z.shape or mask.dtype != bool:
            raise ParameterError(f"region mask must be a boolean array of shape {z.shape}, "
                                 f"got {mask.dtype} {mask.shape}")
        cur = _record(cur, np.where(mask, cur.heights, np.nan), "mask", {"source": "given"},
                      reg.as_dict() if reg is not None else {"mask_points": int(mask.sum())})
    elif region is None:
        reg, mask = None, valid
    else:
        raise ParameterError(f"region must be 'auto', a BreechFaceRegion, a boolean mask or None, got {region!r}")
    seg = segmentation_status(cur)
    if seg is not None:  # the segmentation's outcome (worst on record), where a comparison looks for it
        cur.meta["quality"] = {**(cur.meta.get("quality") or {}), "segmentation": seg}
    if not (~np.isnan(cur.heights)).any():
        raise ParameterError("the breech-face region is empty: nothing measured inside it")
    diag["region"], diag["masked"] = reg, cur.heights

    # 2. level
    if level_order is not None:
        cur = level(cur, order=level_order)
    diag["levelled"] = cur.heights

    # 3. outliers
    if outlier_sigma is not None:
        cur, removed = remove_outliers(cur, sigma=outlier_sigma, window_um=outlier_window_um,
                                       min_island_um2=min_island_um2, return_mask=True)
        diag["outliers"] = removed
    else:
        diag["outliers"] = np.zeros(z.shape, bool)
    diag["cleaned"] = cur.heights
    if not (~np.isnan(cur.heights)).any():
        raise ParameterError("nothing left after outlier removal")

    # 4. crop to the region (exact: the filters see NaN outside it either way), band-pass
    crop_mask = mask if region is not None else None
    cur, origin = crop(cur, crop_mask, return_origin=True)
    diag["crop_origin_px"] = origin
    diag["cropped"] = cur.heights
    if short_cutoff_um is not None:
        cur = bandpass(cur, short_cutoff_um=short_cutoff_um, long_cutoff_um=long_cutoff_um)
    diag["filtered"] = cur.heights

    # 5. resample
    if spacing_um is not None:
        ny, nx = cur.shape  # the output grid, as resample sizes it: never more than the working budget
        ox = max(1, int(round(nx * cur.dx / (spacing_um / 1e6))))
        oy = max(1, int(round(ny * cur.dy / (spacing_um / 1e6))))
        if ox * oy > MAX_WORKING_POINTS:
            raise ParameterError(f"{_source_of(scan)}: resampling the {nx} x {ny} region to {spacing_um:g} um would "
                                 f"give {ox} x {oy} points, more than MAX_WORKING_POINTS ({MAX_WORKING_POINTS}); "
                                 f"choose a coarser spacing_um")
        cur = resample(cur, new_spacing_m=spacing_um / 1e6)
    out = Scan(cur.heights.astype(np.float32), cur.dx, cur.dy, cur.meta)
    if not out.valid_mask.any():
        raise ParameterError("the processed scan has no valid point left")
    if diagnostics:
        diag["final"] = out
        return out, diag
    return out


def plot_preprocess(scan: Scan, *, fig=None, **params):
    """Figure of every preprocessing step: raw scan with the fitted circles, mask, levelled,
    outliers removed, band-passed, final.

    Parameters
    ----------
    scan : Scan
    fig : matplotlib Figure, optional
    **params
        Passed to `preprocess`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    out, d = preprocess(scan, diagnostics=True, **params)
    if fig is None:
        fig = plt.figure(figsize=(15, 9.5))
    axs = fig.subplots(2, 3).ravel()
    dx, dy = scan.dx, scan.dy
    ny, nx = scan.shape
    ext = (0, nx * dx * 1e3, ny * dy * 1e3, 0)
    # after a block_average the steps work on a coarser grid whose first point lies at origin_m
    (wdx, wdy), (x0, y0) = (dx, dy), (0.0, 0.0)
    for st in out.meta["processing"][len(scan.meta.get("processing") or []):]:
        if st.get("step") == "block_average":
            (wdx, wdy), (x0, y0) = st["result"]["spacing_m"], st["result"]["origin_m"]
    wny, wnx = d["masked"].shape
    wext = (0, wnx * wdx * 1e3, wny * wdy * 1e3, 0)

    def show(ax, a, title, extent=wext, sym=False):
        v = a[np.isfinite(a)] * 1e6
        lo, hi = (np.percentile(v, [1, 99]) if v.size else (0, 1))
        if sym:
            lim = max(abs(lo), abs(hi))
            lo, hi = -lim, lim
        im = ax.imshow(a * 1e6, cmap="viridis", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.75, label="um")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (mm)")

    reg = d["region"]
    show(axs[0], scan.heights, "raw, fitted circles", extent=ext)
    if reg is not None:
        t = np.linspace(0, 2 * np.pi, 361)
        circles = [(reg.primer_center_m, reg.primer_radius_m, "w:", "primer edge"),
                   (reg.primer_center_m, reg.outer_radius_m, "r-", f"outer ({reg.outer_edge})")]
        if reg.aperture_center_m is not None:
            circles += [(reg.aperture_center_m, reg.aperture_radius_m, "m--", "aperture"),
                        (reg.aperture_center_m, reg.inner_radius_m, "r-", f"inner ({reg.inner_edge})")]
        if reg.crater_center_m is not None:
            circles += [(reg.crater_center_m, reg.crater_radius_m, "c:", "crater")]
        for c, rad, style, lab in circles:
            axs[0].plot((x0 + c[0] + rad * np.cos(t)) * 1e3, (y0 + c[1] + rad * np.sin(t)) * 1e3, style, lw=1,
                        label=lab)
        axs[0].legend(fontsize=6, loc="lower right")
        axs[1].imshow(reg.mask, cmap="gray", extent=wext, interpolation="nearest")
        axs[1].set_title(f"breech-face mask ({100 * reg.mask.mean():.1f} % of grid)", fontsize=9)
    else:
        axs[1].imshow(~np.isnan(d["masked"]), cmap="gray", extent=wext, interpolation="nearest")
        axs[1].set_title("mask (given)", fontsize=9)
    show(axs[2], d["levelled"], "levelled")
    show(axs[3], d["cleaned"], f"outliers removed ({int(d['outliers'].sum())} points)")
    r0, c0 = d["crop_origin_px"]
    fy, fx = d["filtered"].shape
    cext = (c0 * wdx * 1e3, (c0 + fx) * wdx * 1e3, (r0 + fy) * wdy * 1e3, r0 * wdy * 1e3)
    show(axs[4], d["filtered"], "band-passed", extent=cext, sym=True)
    oy, ox = out.shape
    show(axs[5], out.heights.astype(np.float64), f"final {oy}x{ox} at {out.dx * 1e6:.4g} um", sym=True,
         extent=(0, ox * out.dx * 1e3, oy * out.dy * 1e3, 0))
    fig.suptitle(repr(scan)[1:-1], fontsize=10, parse_math=False, usetex=False)  # a file name, as typed
    fig.tight_layout()
    return fig
