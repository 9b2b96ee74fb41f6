"""Circle fitting: algebraic, geometric and RANSAC (the primer edge, the crater, the firing-pin aperture)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...errors import ParameterError
from ._checks import _positive, _range

__all__ = ["Circle", "fit_circle"]


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


def fit_circle(
    x,
    y,
    *,
    threshold: float | None = None,
    radius_range: tuple[float, float] | None = None,
    max_trials: int = 400,
    seed: int = 0,
) -> Circle:
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
        tri = (
            np.stack([rng.choice(u.size, 3, replace=False) for _ in range(max_trials)])
            if u.size > 3
            else np.array([[0, 1, 2]])
        )
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
