"""Surface statistics used to hold the simulator against real scans.

The comparison is made on the breech face after the same treatment the
processed Fadul files received (plane levelled, Gaussian band-pass 16-500 um,
6.25 um spacing): RMS height, the shape of the height distribution (skewness,
excess kurtosis, robust spread ratio) and the autocorrelation length.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import stats

from ..errors import ParameterError
from ..features.filters import gaussian_bandpass
from ..scan import Scan

__all__ = ["surface_stats", "truth_breech_face", "level_plane", "resample_nan", "fadul_like"]


def surface_stats(heights: np.ndarray, spacing_m: float) -> dict[str, float]:
    """RMS, distribution shape and autocorrelation length of a (band-passed) surface.

    Returns
    -------
    dict
        ``rms_um``; ``skewness``; ``excess_kurtosis``; ``tail_ratio`` (the
        1-99 % quantile range over 4.65 sigma: 1 for a Gaussian, larger for
        heavy tails); ``acf_length_um``: lag where the NaN-aware, radially
        averaged autocorrelation first drops below 1/e; ``valid_points``.
    """
    z = np.asarray(heights, dtype=np.float64)
    valid = ~np.isnan(z)
    if valid.sum() < 100:
        raise ParameterError(f"need at least 100 valid points for surface statistics, got {int(valid.sum())}")
    zv = z[valid] - z[valid].mean()
    sd = zv.std()
    q1, q99 = np.quantile(zv, [0.01, 0.99])
    zz = np.where(valid, z - z[valid].mean(), 0.0)
    shape = [2 * s for s in z.shape]
    F = np.fft.rfft2(zz, shape)
    W = np.fft.rfft2(valid.astype(np.float64), shape)
    num = np.fft.irfft2(F * np.conj(F), shape)
    den = np.fft.irfft2(W * np.conj(W), shape)
    acf = num / np.maximum(den, 1.0)
    acf /= acf[0, 0]
    yy = np.fft.fftfreq(shape[0]) * shape[0]
    xx = np.fft.fftfreq(shape[1]) * shape[1]
    r = np.rint(np.hypot(yy[:, None], xx[None, :])).astype(int)
    ok = den > 0.2 * den[0, 0]  # lags with enough overlapping points
    prof = np.bincount(r[ok], acf[ok]) / np.maximum(np.bincount(r[ok]), 1)
    below = np.nonzero(prof < np.exp(-1))[0]
    lag = float(below[0]) if below.size else float("nan")
    if below.size and below[0] > 0:  # interpolate between the two lags around 1/e
        a, b = prof[below[0] - 1], prof[below[0]]
        lag = below[0] - 1 + (a - np.exp(-1)) / (a - b)
    return {
        "rms_um": float(sd * 1e6),
        "skewness": float(stats.skew(zv)),
        "excess_kurtosis": float(stats.kurtosis(zv)),
        "tail_ratio": float((q99 - q1) / (4.6527 * sd)),
        "acf_length_um": float(lag * spacing_m * 1e6),
        "valid_points": int(valid.sum()),
    }


def truth_breech_face(scan: Scan, *, margin_um: float = 40.0) -> np.ndarray:
    """Mask of the breech-face region of a *simulated* scan, from its ground truth.

    Between the firing-pin aperture and the primer's flat edge, each shrunk by
    ``margin_um``. Real scans need `preprocess` (comparison issue) instead.
    """
    t = scan.meta.get("truth")
    if not t:
        raise ParameterError("truth_breech_face needs a simulated scan (meta['truth'] missing)")
    ny, nx = scan.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    px, py = xx * scan.dx, yy * scan.dy
    fx, fy = t["firing_pin_center_m"]
    cx, cy = t["primer_center_m"]
    m = margin_um * 1e-6
    return (np.hypot(px - fx, py - fy) > t["aperture_radius_m"] + m) & (
        np.hypot(px - cx, py - cy) < t["primer_flat_radius_m"] - m)


def level_plane(heights: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane through the valid points."""
    z = np.asarray(heights, dtype=np.float64)
    yy, xx = np.nonzero(~np.isnan(z))
    if yy.size < 3:
        raise ParameterError("level_plane needs at least 3 valid points")
    A = np.column_stack([np.ones(yy.size), xx, yy]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, z[yy, xx], rcond=None)
    Y, X = np.mgrid[0:z.shape[0], 0:z.shape[1]]
    return z - (coef[0] + coef[1] * X + coef[2] * Y)


def resample_nan(heights: np.ndarray, spacing_m: float, new_spacing_m: float, *, min_valid: float = 0.5) -> np.ndarray:
    """NaN-aware area-averaging resample to ``new_spacing_m`` (downsampling)."""
    z = np.asarray(heights, dtype=np.float64)
    if abs(new_spacing_m - spacing_m) < 1e-12:
        return z.copy()
    f = spacing_m / new_spacing_m
    size = (max(1, int(round(z.shape[1] * f))), max(1, int(round(z.shape[0] * f))))
    valid = ~np.isnan(z)
    num = cv2.resize(np.where(valid, z, 0.0), size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(valid.astype(np.float64), size, interpolation=cv2.INTER_AREA)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den < min_valid] = np.nan
    return out


def fadul_like(scan: Scan, mask: np.ndarray | None = None, *, spacing_m: float = 6.25e-6,
               short_cutoff_um: float = 16.0, long_cutoff_um: float = 500.0) -> np.ndarray:
    """Breech face treated like the processed Fadul files: mask, level, band-pass, resample."""
    z = scan.heights.astype(np.float64, copy=True)
    if mask is not None:
        z[~mask] = np.nan
    z = level_plane(z)
    z = gaussian_bandpass(z, (scan.dx, scan.dy), short_cutoff_um=short_cutoff_um, long_cutoff_um=long_cutoff_um)
    return resample_nan(z, scan.dx, spacing_m)
