"""A cheap pre-check of candidates before the full CMC comparison: whole-surface correlation.

Search stage 2 compares the query with every shortlisted scan by Congruent
Matching Cells (`compare`, about half a second of CPU a pair). The
pre-check scores each candidate in a few milliseconds, so that only the
best-scoring ones go on to that comparison (``bx.search(...,
verify_top=m)``; docs/search.md, "Verification at scale").

The score is the peak of the normalised cross-correlation of the two whole
surfaces, reduced ``factor`` times (25 um at the standard 6.25 um spacing:
the scale of the 50-250 um breech-face marks), over the full circle of
rotations (``step_deg`` apart) and over translations up to
``max_shift_um``. It is what `compare`'s own coarse pose search measures,
with the work arranged for one query and many candidates: the *query* is
turned, once per rotation, and its spectra are kept; each candidate is
reduced and transformed once, and each rotation then costs one product
and one inverse transform, on a grid just large enough for the allowed
translations (they are small: both scans are cropped around the same
breech face). The score is a shortlist filter, never evidence: a pair
kept by it is compared in full, and a pair it drops is not compared.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import scipy.fft as sfft

from ..errors import ParameterError
from ..scan import Scan
from .cmc import _pocketfft, rotate_nan

__all__ = ["CoarseQuery", "PRECHECK_DEFAULTS", "precheck_scores"]

#: Default pre-check settings (lengths in micrometres).
PRECHECK_DEFAULTS: dict[str, Any] = {
    "factor": 4,  # reduction: 25 um at 6.25 um spacing
    "step_deg": 3.0,  # rotations searched, degrees apart (full circle)
    "max_shift_um": 500.0,  # translations searched, each way
}

#: A reduced point is missing when less than this share of its block was measured.
MIN_BLOCK_VALID = 0.5


def _params(overrides: dict) -> dict:
    unknown = set(overrides) - set(PRECHECK_DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown pre-check parameters {sorted(unknown)}; known: {sorted(PRECHECK_DEFAULTS)}")
    p = {**PRECHECK_DEFAULTS, **overrides}
    if not (isinstance(p["factor"], (int, np.integer)) and p["factor"] >= 1):
        raise ParameterError(f"pre-check factor must be a positive integer, got {p['factor']!r}")
    for k in ("step_deg", "max_shift_um"):
        if not (isinstance(p[k], (int, float)) and p[k] > 0):
            raise ParameterError(f"pre-check {k} must be a positive number, got {p[k]!r}")
    p["factor"] = int(p["factor"])
    return p


def _reduce(z: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``z`` over ``factor`` x ``factor`` blocks of measured points (NaN where
    less than `MIN_BLOCK_VALID` of a block was measured), float32; the remainder is trimmed."""
    valid = ~np.isnan(z)
    ny, nx = z.shape[0] // factor, z.shape[1] // factor
    if ny < 1 or nx < 1:
        return np.full((max(ny, 1), max(nx, 1)), np.nan, np.float32)
    z0 = np.where(valid, z, 0).astype(np.float32)[: ny * factor, : nx * factor]
    v = valid.astype(np.float32)[: ny * factor, : nx * factor]
    s = cv2.resize(z0, (nx, ny), interpolation=cv2.INTER_AREA)
    w = cv2.resize(v, (nx, ny), interpolation=cv2.INTER_AREA)
    out = np.full((ny, nx), np.nan, np.float32)
    ok = w >= MIN_BLOCK_VALID
    out[ok] = s[ok] / w[ok]
    return out


def _valid_crop(z: np.ndarray) -> np.ndarray:
    """``z`` cut to the bounding box of its measured points."""
    rows = np.flatnonzero(~np.isnan(z).all(1))
    cols = np.flatnonzero(~np.isnan(z).all(0))
    if rows.size == 0:
        return z[:0, :0]
    return z[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit(z: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``z`` centred in an array of ``shape``: cropped or padded with NaN evenly on both sides."""
    out = np.full(shape, np.nan, np.float32)
    src, dst = [], []
    for n, m in zip(z.shape, shape):
        if n >= m:
            o = (n - m) // 2
            src.append(slice(o, o + m))
            dst.append(slice(0, m))
        else:
            o = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(o, o + n))
    out[tuple(dst)] = z[tuple(src)]
    return out


def _centred(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Missing points as 0 after removing the mean of the measured ones; and the norm (float64)."""
    valid = ~np.isnan(z)
    if not valid.any():
        return np.zeros(z.shape, np.float32), 0.0
    z0 = np.where(valid, z - np.mean(z[valid], dtype=np.float64), 0).astype(np.float32)
    return z0, float(np.sqrt(np.sum(z0.astype(np.float64) ** 2)))


#: Rotations correlated together: their arrays stay in the processor's cache.
ANGLES_PER_BATCH = 8


def _lag_peaks(prod: np.ndarray, n_last: int, lags) -> np.ndarray:
    """The peak of each cross-correlation whose spectrum is ``prod`` (k, fy, fx // 2 + 1), over
    the lags ``lags`` (rows, columns) only: the inverse is taken one axis at a time, and the last
    one only on the rows of the lags searched (``prod`` is overwritten)."""
    ly, lx = lags
    if _pocketfft is not None:
        _pocketfft.c2c(prod, (1,), False, 2, prod, 1)  # in place; normalised as scipy.fft.ifft
        cc = _pocketfft.c2r(prod[:, ly], (2,), n_last, False, 2, None, 1)
    else:  # pragma: no cover - a scipy without pocketfft's entry points: the public functions
        cc = sfft.irfft(sfft.ifft(prod, axis=1, workers=1)[:, ly], n=n_last, axis=2, workers=1)
    return cc[:, :, lx].max(axis=(1, 2))


class CoarseQuery:
    """A query prepared for the pre-check: turned once per rotation, its spectra kept.

    Parameters
    ----------
    scan : Scan
        The processed query scan (see `preprocess`).
    factor, step_deg, max_shift_um
        See `PRECHECK_DEFAULTS`.

    Examples
    --------
    >>> pre = CoarseQuery(query_scan)  # doctest: +SKIP
    >>> pre.score(candidate_scan)  # doctest: +SKIP
    (0.41, 93.0)
    """

    def __init__(self, scan: Scan, **params):
        if not isinstance(scan, Scan):
            raise ParameterError(f"the pre-check expects a bx.Scan query, got {type(scan).__name__}")
        self.params = p = _params(params)
        self.spacing = float(scan.dx)
        self.scan_shape = scan.shape
        z = _reduce(_valid_crop(scan.heights), p["factor"])
        self.shape = z.shape  # candidates are cut or padded to the query's reduced box
        px = p["factor"] * self.spacing * 1e6  # micrometres per reduced point
        self.max_shift = int(np.ceil(p["max_shift_um"] / px))
        self.fft_shape = tuple(sfft.next_fast_len(n + self.max_shift, real=True) for n in self.shape)
        self.angles = np.arange(0.0, 360.0, p["step_deg"])
        fy, fx = self.fft_shape
        self.spectra = np.empty((len(self.angles), fy, fx // 2 + 1), np.complex64)
        self.norms = np.empty(len(self.angles))
        buf = np.zeros(self.fft_shape, np.float32)
        for i, a in enumerate(self.angles):
            # the query turned by -a is the candidate turned by +a (the pose convention of `compare`)
            z0, self.norms[i] = _centred(rotate_nan(z, -a))
            buf[: self.shape[0], : self.shape[1]] = z0
            self.spectra[i] = np.conj(sfft.rfft2(buf, workers=1))
        # the lags searched: candidate shifted by up to max_shift either way, in the circular layout
        s = self.max_shift
        self._lags = [np.r_[0 : s + 1, n - s : n] for n in self.fft_shape]

    def score(self, scan: Scan) -> tuple[float, float]:
        """The pre-check score of ``scan`` (the peak normalised correlation, in [-1, 1]; -1 when
        either surface has nothing to correlate) and the rotation (deg) at which it peaks."""
        if abs(scan.dx - self.spacing) > 1e-3 * self.spacing:
            raise ParameterError(
                f"the pre-check needs the query's spacing ({self.spacing:g} m); this candidate has {scan.dx:g} m"
            )
        z = _fit(_reduce(_valid_crop(scan.heights), self.params["factor"]), self.shape)
        z0, norm = _centred(z)
        if norm == 0:
            return -1.0, float("nan")
        buf = np.zeros(self.fft_shape, np.float32)
        buf[: self.shape[0], : self.shape[1]] = z0
        spec = sfft.rfft2(buf, workers=1)
        peak = np.empty(len(self.angles))
        for i in range(0, len(self.angles), ANGLES_PER_BATCH):
            prod = self.spectra[i : i + ANGLES_PER_BATCH] * spec[None]
            peak[i : i + len(prod)] = _lag_peaks(prod, self.fft_shape[1], self._lags)
        with np.errstate(invalid="ignore", divide="ignore"):
            curve = peak / (self.norms * norm)
        curve = np.nan_to_num(curve, nan=-1.0)
        i = int(np.argmax(curve))
        return float(curve[i]), float(self.angles[i])


def precheck_scores(query, targets, *, n_jobs: int = 1, client=None, executor=None, **params) -> np.ndarray:
    """Pre-check scores of ``targets`` against ``query`` (see `CoarseQuery`), in order.

    Parameters
    ----------
    query : Scan or CoarseQuery
    targets : sequence of Scan
    n_jobs, client, executor
        Worker processes, a Dask client, or a pool to run on (as for
        `compare_many`). The query is prepared once, here, and sent once to
        each worker with its share of the targets.
    **params
        Pre-check settings (`PRECHECK_DEFAULTS`) when ``query`` is a Scan.

    Returns
    -------
    (n,) ndarray of float
        One score per target, in [-1, 1] (see `CoarseQuery.score`).

    Examples
    --------
    >>> scores = precheck_scores(query_scan, shortlisted_scans, n_jobs=2)  # doctest: +SKIP
    >>> keep = np.argsort(-scores)[:40]  # doctest: +SKIP
    """
    from contextlib import nullcontext

    from .comparison import process_pool

    if not (isinstance(n_jobs, int) and n_jobs >= 1):
        raise ParameterError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    q = query if isinstance(query, CoarseQuery) else CoarseQuery(query, **params)
    targets = list(targets)
    if (client is None and executor is None and n_jobs == 1) or len(targets) < 2:
        return np.array([q.score(t)[0] for t in targets], dtype=float)
    parts = max(1, min(n_jobs, len(targets)))
    chunks = [(q, targets[i::parts]) for i in range(parts)]
    if client is not None:
        from .._dask import dask_map

        results = dask_map(_score_chunk, chunks, client)
    else:
        with process_pool(n_jobs) if executor is None else nullcontext(executor) as ex:
            results = list(ex.map(_score_chunk, chunks))
    out = np.empty(len(targets))
    for i, part in enumerate(results):
        out[i::parts] = part
    return out


def _score_chunk(job) -> list[float]:
    q, targets = job
    return [q.score(t)[0] for t in targets]
