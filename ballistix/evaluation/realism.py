"""Surface statistics used to hold the simulator against real scans.

The comparison is made on the breech face after the same treatment the
processed Fadul files received (plane levelled, Gaussian band-pass 16-500 um,
6.25 um spacing): RMS height, the shape of the height distribution (skewness,
excess kurtosis, robust spread ratio) and the autocorrelation length.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import ParameterError
from ..features.filters import gaussian_bandpass
from ..features.preprocessing import level
from ..features.preprocessing import resample as resample_nan  # NaN-aware resampling lives with preprocessing
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
        np.hypot(px - cx, py - cy) < t["primer_flat_radius_m"] - m
    )


def level_plane(heights: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane through the valid points (plain, not robust: `level`)."""
    z = np.asarray(heights)
    return level(z, order=1, robust=False, max_points=max(z.size, 10))


def fadul_like(
    scan: Scan,
    mask: np.ndarray | None = None,
    *,
    spacing_m: float = 6.25e-6,
    short_cutoff_um: float = 16.0,
    long_cutoff_um: float = 500.0,
) -> np.ndarray:
    """Breech face treated like the processed Fadul files: mask, level, band-pass, resample."""
    z = scan.heights.astype(np.float64, copy=True)
    if mask is not None:
        z[~mask] = np.nan
    z = level_plane(z)
    z = gaussian_bandpass(z, (scan.dx, scan.dy), short_cutoff_um=short_cutoff_um, long_cutoff_um=long_cutoff_um)
    return resample_nan(z, scan.dx, spacing_m)


def _crater_centre(valid: np.ndarray) -> tuple[float, float]:
    """Centroid (row, col) of the largest missing-data blob near the middle: the firing-pin crater."""
    from scipy import ndimage

    ny, nx = valid.shape
    lab, k = ndimage.label(~valid)
    if k == 0:
        return (ny - 1) / 2, (nx - 1) / 2
    idx = np.arange(1, k + 1)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, idx)
    cents = np.array(ndimage.center_of_mass(np.ones_like(lab), lab, idx))
    dist = np.hypot(cents[:, 0] - (ny - 1) / 2, cents[:, 1] - (nx - 1) / 2)
    near = (dist < 0.2 * min(ny, nx)) & (sizes > 0.005 * valid.size)
    if not near.any():
        return (ny - 1) / 2, (nx - 1) / 2
    best = np.argmax(np.where(near, sizes, -1))
    return float(cents[best, 0]), float(cents[best, 1])


def raw_scan_stats(scan: Scan, *, bin_mm: float = 0.1, max_mm: float = 2.6) -> dict:
    """Form and missing-data pattern of a raw cartridge-case scan (real or simulated).

    Everything is measured about the firing-pin crater, found as the central
    blob of missing data (no ground truth used), so real and simulated scans
    are measured the same way.

    Returns
    -------
    dict
        ``missing_fraction``; ``valid_by_radius`` (share of valid points per
        ``bin_mm`` ring); ``crater_core_radius_mm`` (first ring with >= 10 %
        valid points); ``outer_radius_mm`` (last ring, before 2.2 mm, with
        >= 50 % valid); ``relief_um`` (1-99 % height range); ``ring_height_um``
        (median height 0.1-0.3 mm outside the crater core minus median height
        of the breech face 1.2-1.6 mm from the crater centre).
    """
    valid = scan.valid_mask
    cy, cx = _crater_centre(valid)
    ny, nx = scan.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r_mm = np.hypot((yy - cy) * scan.dy, (xx - cx) * scan.dx) * 1e3
    edges = np.arange(0.0, max_mm + 1e-9, bin_mm)
    idx = np.digitize(r_mm, edges) - 1
    prof = []
    for i in range(len(edges) - 1):
        sel = idx == i
        prof.append(float(valid[sel].mean()) if sel.any() else float("nan"))
    prof = np.array(prof)
    mids = edges[:-1] + bin_mm / 2
    core = mids[np.argmax(prof >= 0.1)] - bin_mm / 2
    inner = mids < 2.2
    good = np.nonzero(inner & (prof >= 0.5))[0]
    outer = float(mids[good[-1]] + bin_mm / 2) if good.size else float("nan")
    z = scan.heights
    zv = z[valid]
    ring = valid & (r_mm > core + 0.1) & (r_mm < core + 0.3)
    face = valid & (r_mm > 1.2) & (r_mm < 1.6)
    ring_h = float(np.median(z[ring]) - np.median(z[face])) * 1e6 if ring.any() and face.any() else float("nan")
    return {
        "missing_fraction": float(1 - valid.mean()),
        "valid_by_radius": [round(float(p), 4) for p in prof],
        "radius_bins_mm": [round(float(e), 4) for e in edges],
        "crater_core_radius_mm": float(core),
        "outer_radius_mm": outer,
        "relief_um": float(np.subtract(*np.quantile(zv, [0.99, 0.01])) * 1e6),
        "ring_height_um": ring_h,
    }
