"""Congruent Matching Cells (CMC): the cell-correlation engine.

Method (Song 2013; Tong et al. 2015 for the high-CMC variant), implemented
from the papers:

1. the reference surface is divided into a grid of cells; cells with too
   little valid data are skipped;
2. for each rotation of the target, each cell is searched for inside a target
   region around its own position (``region_factor`` times the cell side);
   the shift is the peak of the cell's cross-correlation over the region, and
   the cell's correlation is the NaN-aware Pearson correlation between the
   cell and the target patch at that shift (pairwise-complete points);
3. congruence: a cell is a CMC when its correlation is high and its rotation
   and shift agree with the consensus of the other cells.

The cross-correlation peak is found by FFT (the reference cells' transforms
are computed once and reused for every rotation), normalised by the local
energy of the target under the cell (box sums), so that bright patches do
not attract the peak. Each cell is centred on its own mean; the target is
centred once, on the mean of all its valid points, before it is rotated
(surfaces are band-passed, so local means are near zero either way; a
whole-surface mean lets the energies and valid counts of every window be
computed once per rotation for all cells, instead of once per cell). The
slow reference path `cell_search_reference` computes the same thing with
explicit loops over shifts; a test holds the fast path to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ParameterError

try:  # pocketfft's own entry points: scipy.fft's transforms without its dispatch (~10% of a search)
    # a private SciPy module (up to 1.17 at least, see pyproject.toml); tests/test_cmc.py tests the fallback
    from scipy.fft._pocketfft import pypocketfft as _pocketfft
except ImportError:  # pragma: no cover - a scipy without them: the public functions, same results
    _pocketfft = None

__all__ = [
    "Cells",
    "CellSearch",
    "Target",
    "make_cells",
    "rotate_nan",
    "cell_search",
    "cell_search_reference",
    "congruence",
    "angle_diff",
]


@dataclass
class Cells:
    """Valid reference cells: their grid index, top-left corner, size and data."""

    index: np.ndarray  # (n, 2) grid row, col
    corner: np.ndarray  # (n, 2) top-left row, col in the reference array
    shape: tuple[int, int]  # cell height, width (pixels)
    data: np.ndarray  # (n, h, w) heights, NaN = missing
    valid_fraction: np.ndarray  # (n,)
    grid: tuple[int, int]
    ref_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def centre(self) -> np.ndarray:
        """(n, 2) cell centres (row, col) relative to the reference array's centre, in pixels."""
        h, w = self.shape
        c = self.corner + np.array([(h - 1) / 2, (w - 1) / 2])
        return c - (np.array(self.ref_shape) - 1) / 2


def make_cells(ref: np.ndarray, grid: tuple[int, int] = (8, 8), max_missing: float = 0.85) -> Cells:
    """Split ``ref`` into ``grid`` equal cells (remainder trimmed evenly) and keep those
    with at most ``max_missing`` missing data (and enough spread to correlate)."""
    ref = np.asarray(ref)
    gy, gx = int(grid[0]), int(grid[1])
    if gy < 1 or gx < 1:
        raise ParameterError(f"grid must be two positive integers, got {grid}")
    if not 0.0 <= max_missing < 1.0:
        raise ParameterError(f"max_missing must be in [0, 1), got {max_missing}")
    ny, nx = ref.shape
    h, w = ny // gy, nx // gx
    if h < 4 or w < 4:
        raise ParameterError(f"cells of {h}x{w} pixels are too small: surface {ny}x{nx} with grid {grid}")
    oy, ox = (ny - h * gy) // 2, (nx - w * gx) // 2
    index, corner, data, frac = [], [], [], []
    for i in range(gy):
        for j in range(gx):
            c = ref[oy + i * h : oy + (i + 1) * h, ox + j * w : ox + (j + 1) * w]
            v = ~np.isnan(c)
            f = v.mean()
            if 1.0 - f > max_missing or v.sum() < 10 or np.nanstd(c) == 0:
                continue
            index.append((i, j))
            corner.append((oy + i * h, ox + j * w))
            data.append(c)
            frac.append(f)
    if not data:
        return Cells(
            np.zeros((0, 2), int), np.zeros((0, 2), int), (h, w), np.zeros((0, h, w)), np.zeros(0), (gy, gx), (ny, nx)
        )
    return Cells(np.array(index), np.array(corner), (h, w), np.stack(data), np.array(frac), (gy, gx), (ny, nx))


def rotate_nan(z: np.ndarray, angle_deg: float, out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Rotate a NaN-holding array about its centre by ``angle_deg`` (counter-clockwise
    as displayed with row 0 at the top), bilinear, float32.

    A rotated point is NaN when any input point with a non-zero interpolation
    weight is NaN: no value is ever made up near missing data, and a rotation
    by 0 returns the input. ``out_shape`` pads/crops the output around the
    centre; outside the input is NaN.
    """
    valid = ~np.isnan(z)
    out, valid = _rotate_masked(np.where(valid, z, 0).astype(np.float32), valid, angle_deg, out_shape)
    out[~valid] = np.nan
    return out


def _rotate_masked(
    z0: np.ndarray, valid: np.ndarray, angle_deg: float, out_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`rotate_nan` on a surface given as values (0 where missing, float32) and a validity mask:
    returns the rotated values (0 where missing) and validity, without a round trip through NaN."""
    ny, nx = z0.shape
    oy, ox = out_shape if out_shape is not None else (ny, nx)
    M = cv2.getRotationMatrix2D(((nx - 1) / 2, (ny - 1) / 2), float(angle_deg), 1.0)
    M[0, 2] += (ox - nx) / 2
    M[1, 2] += (oy - ny) / 2
    kw = dict(dsize=(ox, oy), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = cv2.warpAffine(z0, M, **kw)
    ok = cv2.warpAffine(valid.view(np.uint8).astype(np.float32), M, **kw) >= 0.999
    out *= ok
    return out, ok


def _region_origins(
    target: np.ndarray, cells: Cells, region_factor: float, pad: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Where each cell's target region (``region_factor`` times the cell side, centred
    where the cell sits relative to the array centres) starts in ``target``.

    ``target`` may carry ``pad`` rows/columns of NaN on every side (its centre is then
    the centre of the unpadded array). Returns the target (NaN-padded further if a
    region reaches beyond it), the regions' top rows and left columns, and (H, W).
    """
    top, left, (H, W), extra = _region_geometry(target.shape, cells, region_factor, pad)
    if extra:
        target = np.pad(target, extra, constant_values=np.nan)
        top, left = top + extra, left + extra
    return target, top, left, (H, W)


def _region_geometry(shape, cells: Cells, region_factor: float, pad: int = 0):
    """The regions' top rows, left columns and (H, W) in an array of ``shape`` (see
    `_region_origins`), and how many rows/columns it lacks on each side to hold them all."""
    h, w = cells.shape
    H, W = int(round(region_factor * h)), int(round(region_factor * w))
    ty, tx = shape[0] - 2 * pad, shape[1] - 2 * pad
    centre = cells.centre + (np.array([ty, tx]) - 1) / 2  # cell centres in target pixel coordinates
    top = np.rint(centre[:, 0] - (H - 1) / 2).astype(int) + pad
    left = np.rint(centre[:, 1] - (W - 1) / 2).astype(int) + pad
    extra = max(0, -top.min(), -left.min(), (top + H).max() - shape[0], (left + W).max() - shape[1]) if len(top) else 0
    return top, left, (H, W), int(extra)


def _regions(
    target: np.ndarray, cells: Cells, region_factor: float, pad: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """(n, H, W) target windows centred where each cell sits (see `_region_origins`)."""
    target, top, left, (H, W) = _region_origins(target, cells, region_factor, pad)
    return sliding_window_view(target, (H, W))[top, left], (H, W)


def _pearson_masked(
    a0: np.ndarray, va: np.ndarray, b: np.ndarray, vb: np.ndarray, min_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise pairwise-complete Pearson correlation of (n, m) values ``a0`` (float64) and ``b``
    with validity masks ``va``, ``vb`` (NaN if fewer than ``min_points`` points are valid in
    both), and the number of such points per row."""
    both = va & vb
    n = np.count_nonzero(both, axis=1)
    a0 = a0 * both
    b0 = np.multiply(b, both, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a0 -= (a0.sum(1) / n)[:, None]
        b0 -= (b0.sum(1) / n)[:, None]
        a0 *= both
        b0 *= both
        r = np.einsum("ij,ij->i", a0, b0) / np.sqrt(np.einsum("ij,ij->i", a0, a0) * np.einsum("ij,ij->i", b0, b0))
    r[n < min_points] = np.nan
    return r, n


def rfft2_into(x: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """``scipy.fft.rfft2(x)`` (float32 in, complex64 out) written into ``spec``; returns it."""
    if _pocketfft is not None:
        return _pocketfft.r2c(x, (0, 1), True, 0, spec, 1)
    spec[...] = sfft.rfft2(x, workers=1)
    return spec


def irfft2_into(spec: np.ndarray, n_last: int, out: np.ndarray) -> np.ndarray:
    """``scipy.fft.irfft2(spec, s=(rows, n_last))`` written into ``out``; returns it."""
    if _pocketfft is not None:
        return _pocketfft.c2r(spec, (0, 1), n_last, False, 2, out, 1)
    out[...] = sfft.irfft2(spec, s=(spec.shape[0], n_last), workers=1)
    return out


def _correlate(buf: np.ndarray, conj_t: np.ndarray, ly: int, spec: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Circular cross-correlation of ``buf`` with the template whose conjugate spectrum is
    ``conj_t``, first ``ly`` rows only; ``spec`` and ``out`` are work buffers (out is returned).

    The inverse is done one axis at a time so that only the ``ly`` rows of lags that are
    used get their last transform."""
    spec = rfft2_into(buf, spec)
    spec *= conj_t
    if _pocketfft is not None:
        _pocketfft.c2c(spec, (0,), False, 2, spec, 1)  # in place; normalised as scipy.fft.ifft
        return _pocketfft.c2r(spec[:ly], (1,), buf.shape[1], False, 2, out, 1)
    half = sfft.ifft(spec, axis=0, workers=1)[:ly]
    out[...] = sfft.irfft(half, n=buf.shape[1], axis=1, workers=1)
    return out


class Target:
    """A target surface ready for `CellSearch.search`: centred once, on the mean of its valid
    points (float64), as float32 values (0 where missing) and a validity mask.

    Build it once for a surface searched by several `CellSearch` objects (a query searched by
    every candidate's cells) or at several rotation windows; the arrays are not copied again.
    """

    def __init__(self, target: np.ndarray):
        target = np.asarray(target)
        self.shape = target.shape
        self.valid = ~np.isnan(target)
        mean = np.mean(target, where=self.valid, dtype=np.float64) if self.valid.any() else 0.0
        self.z0 = np.where(self.valid, target - mean, 0).astype(np.float32)


class CellSearch:
    """Search of all cells of one reference over rotated targets.

    The cells' zero-mean, NaN-as-zero templates are transformed once and
    reused for every rotation. For each rotation, the energy and valid count
    of every window of the target are box sums over the whole rotated target;
    then each cell's target region is transformed and correlated with that
    cell's template. Cells are handled one at a time: a cell's arrays stay in
    the processor's cache, which measured faster than batched array
    operations over all cells (0.39 s against 0.53 s for the like-for-like
    Fadul pair, when that was tried).
    """

    def __init__(self, cells: Cells, region_factor: float = 3.0, min_overlap: float = 0.15):
        if region_factor < 1:
            raise ParameterError(f"region_factor must be >= 1, got {region_factor}")
        self.cells = cells
        self.region_factor = region_factor
        h, w = cells.shape
        self.min_points = max(10, int(min_overlap * h * w))
        t = cells.data.astype(np.float32)
        tm = np.nanmean(t, axis=(1, 2), keepdims=True) if len(cells) else t
        self.templates = np.where(np.isnan(t), 0.0, t - tm).astype(np.float32)
        flat = cells.data.reshape(len(cells), -1).astype(np.float32)
        self._flat_valid = ~np.isnan(flat)
        self._flat0 = np.where(self._flat_valid, flat, 0.0).astype(np.float64)
        H, W = int(round(region_factor * h)), int(round(region_factor * w))
        self.fft_shape = (sfft.next_fast_len(H, real=True), sfft.next_fast_len(W, real=True))
        self.T = np.conj(sfft.rfft2(self.templates, s=self.fft_shape, workers=1)) if len(cells) else None

    def __call__(self, target: np.ndarray, pad: int = 0) -> dict[str, np.ndarray]:
        """Search every cell in ``target`` (already rotated and centred, as `search` does;
        ``pad`` NaN margin, see `_regions`); returns per-cell ``corr`` (NaN-aware Pearson
        at the peak), ``shift`` (row, col pixels of the target patch relative to the
        cell's own position) and ``overlap`` (points both have)."""
        if len(self.cells) == 0:
            return {"corr": np.zeros(0), "shift": np.zeros((0, 2)), "overlap": np.zeros(0, int)}
        canvas, top, left, _ = _region_origins(target, self.cells, self.region_factor, pad)
        valid = ~np.isnan(canvas)
        return self._search(np.where(valid, canvas, np.float32(0.0)).astype(np.float32), valid, top, left)

    def _search(self, z0: np.ndarray, valid: np.ndarray, top: np.ndarray, left: np.ndarray) -> dict[str, np.ndarray]:
        """The search on a canvas given as values (0 where missing, float32) and validity,
        with the regions' top-left corners in it."""
        cells, (h, w) = self.cells, self.cells.shape
        n = len(cells)
        H, W = int(round(self.region_factor * h)), int(round(self.region_factor * w))
        ly, lx = H - h + 1, W - w + 1
        fy, fx = self.fft_shape
        # every window of the canvas (top-left corner): its energy and valid count; the windows
        # with enough of both are searched, the score being correlation / sqrt(energy)
        kw = {"ksize": (w, h), "anchor": (0, 0), "normalize": False, "borderType": cv2.BORDER_CONSTANT}
        energy = cv2.sqrBoxFilter(z0, cv2.CV_32F, **kw)
        good = cv2.boxFilter(valid.view(np.uint8), cv2.CV_32S, **kw) >= self.min_points
        good &= energy > 0
        weight = np.zeros_like(energy)
        np.sqrt(energy, out=weight, where=good)
        np.divide(np.float32(1.0), weight, out=weight, where=good)
        penalty = np.where(good, np.float32(0.0), np.float32(-np.inf))  # bad windows never win
        buf = np.zeros((fy, fx), np.float32)  # zero padding around the region stays zero
        spec, out = np.empty((fy, fx // 2 + 1), np.complex64), np.empty((ly, fx), np.float32)  # FFT buffers
        rows, cols = np.zeros(n, int), np.zeros(n, int)
        for k in range(n):
            lags = (slice(top[k], top[k] + ly), slice(left[k], left[k] + lx))
            if not good[lags].any():  # nothing to search: the reference's answer is the first shift
                continue
            np.copyto(buf[:H, :W], z0[top[k] : top[k] + H, left[k] : left[k] + W])
            score = _correlate(buf, self.T[k], ly, spec, out)[:, :lx]
            score *= weight[lags]
            score += penalty[lags]
            rows[k], cols[k] = divmod(int(score.argmax()), lx)
        at = (top + rows, left + cols)
        windows = sliding_window_view(z0, (h, w))[at].reshape(n, -1)
        corr, overlap = _pearson_masked(
            self._flat0,
            self._flat_valid,
            windows,
            sliding_window_view(valid, (h, w))[at].reshape(n, -1),
            self.min_points,
        )
        shift = np.stack([rows - (ly - 1) / 2, cols - (lx - 1) / 2], axis=1)
        return {"corr": corr, "shift": shift, "overlap": overlap}

    def search(self, target, angles_deg, *, memo: dict | None = None) -> dict[str, np.ndarray]:
        """Centre ``target`` on the mean of its valid points, rotate it by each angle and
        search every cell in it: arrays (r, n), (r, n, 2), (r, n).

        ``target`` is an array or a `Target` (centred once for several searches). ``memo``, a
        dict kept by the caller for one target and this search, remembers each angle's
        result: an angle searched before is not searched again (the same numbers)."""
        n = len(self.cells)
        res = []
        if n:
            target = target if isinstance(target, Target) else Target(target)
            # rotate into a canvas just large enough to hold every cell's region
            top, left, _, pad = _region_geometry(target.shape, self.cells, self.region_factor)
            shape = (target.shape[0] + 2 * pad, target.shape[1] + 2 * pad)
            for a in angles_deg:
                key = float(a)
                r = memo.get(key) if memo is not None else None
                if r is None:
                    r = self._search(*_rotate_masked(target.z0, target.valid, a, shape), top + pad, left + pad)
                    if memo is not None:
                        memo[key] = r
                res.append(r)
        return {
            "corr": np.stack([r["corr"] for r in res]) if res else np.zeros((0, n)),
            "shift": np.stack([r["shift"] for r in res]) if res else np.zeros((0, n, 2)),
            "overlap": np.stack([r["overlap"] for r in res]) if res else np.zeros((0, n), int),
        }


def cell_search(cells: Cells, target: np.ndarray, region_factor: float = 3.0, min_overlap: float = 0.15):
    """Search every cell in ``target`` (see `CellSearch`); convenience for one target."""
    return CellSearch(cells, region_factor, min_overlap)(target)


def cell_search_reference(
    cells: Cells, target: np.ndarray, region_factor: float = 3.0, min_overlap: float = 0.15, pad: int = 0
) -> dict[str, np.ndarray]:
    """The same search as `cell_search`, written out with loops: slow, obviously correct.

    For each cell and each shift that keeps the cell inside its region: the
    correlation of the zero-mean, NaN-as-zero cell with the region (NaN as
    zero; the target is taken as given, `CellSearch.search` centres it before
    rotating), divided by the cell's norm and the region's norm under the
    window; the best shift's patch is then correlated with the cell over the
    points both have.
    """
    h, w = cells.shape
    min_points = max(10, int(min_overlap * h * w))
    regions, (H, W) = _regions(target, cells, region_factor, pad)
    out_corr, out_shift, out_overlap = [], [], []
    for k in range(len(cells)):
        c = cells.data[k].astype(np.float64)
        t = np.where(np.isnan(c), 0.0, c - np.nanmean(c))
        reg = regions[k].astype(np.float64)
        r = np.where(np.isnan(reg), 0.0, reg)
        best, best_rc = -np.inf, (0, 0)
        for i in range(H - h + 1):
            for j in range(W - w + 1):
                win = r[i : i + h, j : j + w]
                den = np.sqrt((win**2).sum() * (t**2).sum())
                enough = (~np.isnan(reg[i : i + h, j : j + w])).sum() >= min_points
                s = (win * t).sum() / den if den > 0 and enough else -np.inf
                if s > best:
                    best, best_rc = s, (i, j)
        i, j = best_rc
        patch = reg[i : i + h, j : j + w]
        both = ~(np.isnan(c) | np.isnan(patch))
        if both.sum() >= min_points and np.std(c[both]) > 0 and np.std(patch[both]) > 0:
            corr = float(np.corrcoef(c[both], patch[both])[0, 1])
        else:
            corr = float("nan")
        out_corr.append(corr)
        out_shift.append((i - (H - h) / 2, j - (W - w) / 2))
        out_overlap.append(int(both.sum()))
    return {
        "corr": np.array(out_corr),
        "shift": np.array(out_shift, dtype=float).reshape(-1, 2),
        "overlap": np.array(out_overlap, dtype=int),
    }


def angle_diff(a, b):
    """Signed smallest difference a - b of angles in degrees, in [-180, 180)."""
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


def congruence(
    angles: np.ndarray,
    corr: np.ndarray,
    shift: np.ndarray,
    *,
    corr_threshold: float = 0.5,
    angle_tolerance_deg: float = 6.0,
    shift_tolerance_px: float = 20.0,
    tau: int = 1,
) -> dict:
    """Decide which cells are congruent, by the original and the high-CMC rules.

    Parameters
    ----------
    angles : (r,) rotations searched, degrees.
    corr : (r, n) cell correlation at each rotation (NaN = not computable).
    shift : (r, n, 2) cell shift (row, col) at each rotation, pixels.

    Returns
    -------
    dict
        ``original``: per cell, the rotation maximising its correlation; a CMC
        when that correlation >= threshold and its rotation and shift are within
        the tolerances of the medians over the cells passing the threshold
        (Song 2013). ``high``: for every rotation, the cells passing the
        threshold whose shift is within tolerance of that rotation's median
        shift (the CMC-theta distribution); the rotations whose count is within
        ``tau`` of the peak must lie within ``angle_tolerance_deg`` of the peak
        rotation, and then the high-CMC cells are those congruent at any
        rotation within that tolerance of the peak (Tong et al. 2015);
        otherwise the original count stands. Each entry holds ``mask`` (n,),
        ``count``, ``rotation_deg``, ``shift`` (row, col pixels).
    """
    angles = np.asarray(angles, float)
    corr = np.where(np.isnan(corr), -np.inf, corr)
    r, n = corr.shape
    empty = {"mask": np.zeros(n, bool), "count": 0, "rotation_deg": float("nan"), "shift": np.array([np.nan, np.nan])}
    if n == 0 or r == 0:
        return {"original": dict(empty), "high": dict(empty, passed=False), "theta_counts": np.zeros(r, int)}

    # original method
    best = corr.argmax(0)
    bc = corr[best, np.arange(n)]
    bt = angles[best]
    bs = shift[best, np.arange(n)]
    ok = bc >= corr_threshold
    if ok.any():
        # circular median of rotations: the median of differences to one of them
        ref = bt[ok][np.argmax(bc[ok])]
        t_med = ref + np.median(angle_diff(bt[ok], ref))
        s_med = np.median(bs[ok], axis=0)
        orig = (
            ok
            & (np.abs(angle_diff(bt, t_med)) <= angle_tolerance_deg)
            & (np.abs(bs - s_med) <= shift_tolerance_px).all(1)
        )
        original = {"mask": orig, "count": int(orig.sum()), "rotation_deg": float(t_med % 360), "shift": s_med}
    else:
        original = dict(empty)

    # high-CMC method: CMC-theta distribution
    theta_masks = np.zeros((r, n), bool)
    theta_shift = np.full((r, 2), np.nan)
    for k in range(r):
        okk = corr[k] >= corr_threshold
        if okk.any():
            med = np.median(shift[k][okk], axis=0)
            theta_shift[k] = med
            theta_masks[k] = okk & (np.abs(shift[k] - med) <= shift_tolerance_px).all(1)
    counts = theta_masks.sum(1)
    peak = int(counts.argmax())
    high = dict(empty, passed=False)
    if counts[peak] > 0:
        near_peak = counts >= counts[peak] - tau
        within = np.abs(angle_diff(angles, angles[peak])) <= angle_tolerance_deg
        if np.all(within[near_peak]):
            mask = theta_masks[peak]
            high = {
                "mask": mask,
                "count": int(mask.sum()),
                "rotation_deg": float(angles[peak] % 360),
                "shift": theta_shift[peak],
                "passed": True,
            }
    if not high["passed"]:
        high = dict(original, passed=False)
    return {"original": original, "high": high, "theta_counts": counts}
