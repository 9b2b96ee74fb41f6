"""Step 2 of `preprocess`: remove the plane or second-order form by a robust fit."""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ...scan import Scan
from ._checks import _heights, _record

__all__ = ["level"]


def _design(xn: np.ndarray, yn: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(xn), xn, yn]
    if order == 2:
        cols += [xn * xn, xn * yn, yn * yn]
    return np.column_stack(cols)


def level(heights, *, order: int = 1, robust: bool = True, mask=None, max_iter: int = 30, max_points: int = 50_000):
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
        return _record(
            heights,
            out,
            "level",
            {
                "order": int(order),
                "robust": bool(robust),
                "max_iter": int(max_iter),
                "max_points": int(max_points),
                "mask": mask is not None,
            },
        )
    return out
