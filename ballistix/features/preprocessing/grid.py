"""Grid steps of `preprocess`: block averaging before the other steps (the size budget), crop and resample
after them."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from ..._limits import BLOCK_MIN_VALID, MAX_WORKING_POINTS, block_factor, block_mean, reduction_record
from ...errors import ParameterError
from ...scan import Scan
from ._checks import _heights, _record, _source_of, _spacing, _spacing_of
from .region import BreechFaceRegion

__all__ = ["crop", "resample"]


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
        res = _record(
            heights,
            out,
            "crop",
            {"pad": int(pad), "mask": mask is not None},
            {"origin_px": [int(r0), int(c0)], "origin_m": [c0 * heights.dx, r0 * heights.dy]},
        )
        return (res, (int(r0), int(c0))) if return_origin else res
    return (out, (int(r0), int(c0))) if return_origin else out


def resample(heights, spacing_m=None, new_spacing_m: float | tuple[float, float] = 6.25e-6, *, min_valid: float = 0.5):
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
        return _record(
            heights,
            out,
            "resample",
            {"spacing_um": [round(ndx * 1e6, 9), round(ndy * 1e6, 9)], "min_valid": min_valid},
            {"origin_m": shift, "from_spacing_um": [dx * 1e6, dy * 1e6]},
            spacing=(ndx, ndy),
        )
    return out


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
        why = (
            (
                f"the grid ({at}) is finer than a quarter of the output spacing ({spacing_um:g} um): "
                f"block-averaged {k} x {k} to at most half of it before the other steps"
            )
            if k > 1
            else ""
        )
    else:
        why = (
            f"{nx} x {ny} points are more than the working grid of {MAX_WORKING_POINTS} points "
            f"(MAX_WORKING_POINTS): block-averaged {k} x {k} before the other steps"
        )
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
        part = m[r * k : (r + step) * k, : ox * k]
        out[r : r + step] = part.reshape(-1, k, ox, k).sum(axis=(1, 3)) >= BLOCK_MIN_VALID * k * k
    if reg is None:
        return out
    return dataclasses.replace(reg, mask=out)


def _block_average(cur: Scan, factor: int, why: str, spacing_um: float | None, scan: Scan) -> Scan:
    """Step 0: the working grid, block-averaged ``factor x factor`` (recorded as a ``block_average`` step)."""
    cur = _record(
        cur,
        block_mean(cur.heights, factor),
        "block_average",
        {
            "max_spacing_um": None if spacing_um is None else round(spacing_um / 2, 9),
            "max_points": MAX_WORKING_POINTS,
            "min_valid": BLOCK_MIN_VALID,
        },
        reduction_record(factor, *cur.shape, cur.dx, cur.dy, MAX_WORKING_POINTS, why),
        spacing=(cur.dx * factor, cur.dy * factor),
    )
    if not (~np.isnan(cur.heights)).any():
        raise ParameterError(
            f"{_source_of(scan)}: no block of {factor} x {factor} points is half measured: "
            "nothing left on the working grid"
        )
    return cur
