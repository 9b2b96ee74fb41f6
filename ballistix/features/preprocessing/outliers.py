"""Step 3 of `preprocess`: spikes, dust, bad pixels and tiny isolated islands become NaN."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from ...scan import Scan
from ._checks import _heights, _positive, _record, _spacing_of

__all__ = ["remove_outliers"]


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


def remove_outliers(
    heights,
    spacing_m=None,
    *,
    sigma: float = 6.0,
    window_um: float = 15.0,
    min_island_um2: float = 2000.0,
    return_mask: bool = False,
):
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
        res = _record(
            heights,
            out,
            "remove_outliers",
            {"sigma": sigma, "window_um": window_um, "min_island_um2": min_island_um2},
            {"removed_points": int(removed.sum())},
        )
        return (res, removed) if return_mask else res
    return (out, removed) if return_mask else out
