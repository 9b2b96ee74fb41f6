"""The size budget of a cartridge-case scan: the largest field ballistix accepts and the largest grid it works on.

A scan file is small on disk and may be huge in memory: ten thousand by ten
thousand zeros compress to a 12 kB PNG or a 760 kB x3p, and become 800 MB of
float64 heights, then gigabytes in the preprocessing steps (measured on
0.2.0: 10.5 GB for a 1-bit PNG at 254 dpi, 8.1 GB and a MemoryError for an
x3p of zeros at 100 um, 2.4 GB to read an npz of zeros). The budget below
keeps every file, accepted or refused, within a known memory, and is tied to
what a cartridge-case comparison needs:

`MAX_FIELD_MM` (25 mm): the largest field of view, along either axis. A
whole case head is about 10-12 mm across (9 mm Luger rim 9.96 mm, .45 ACP
and .308 Winchester 12.0 mm); the largest heads in casework are .50 BMG
(20.4 mm rim) and 12-gauge shotshells (about 22.5 mm). The primer alone, what
the comparison uses, is 4-6 mm. A field larger than 25 mm is not a scan of
one cartridge case (or its pixel size is wrong: a 10,000-pixel image at
254 dpi claims a metre), and is refused before anything is decoded.

`MAX_WORKING_POINTS` (9,000,000, 3000 x 3000): the largest grid the readers
return and `preprocess` works on. `preprocess` needs about 100 bytes per point
at its peak (measured: the breech-face search on a primer-only field; the
outlier filter on a wide one needs ~65), on top of ~250 MB of code and
libraries, so 9 M points keep the peak near 1.15 GB, under the
`PEAK_MEMORY_MB` target with a quarter in reserve. The grid holds a 4.5 mm
primer-only field at 1.5 um, a whole 12 mm case head at 4 um and a field of
`MAX_FIELD_MM` at 8.3 um: always finer than the 6.25 um `preprocess` resamples
to by default, except for fields wider than 18.75 mm. A file with more points
is block-averaged by the smallest integer factor that fits (``k x k`` points
become one, NaN-aware), row chunk by row chunk as it is decoded, so its
full-size float64 copy never exists.

`PEAK_MEMORY_MB` (1500): the peak resident memory the test suite holds
`read_scan` + `preprocess` + `describe` to, for hostile and legitimate files
alike (tests/test_memory.py).

`MAX_POINTS` (in `ballistix.io.x3p`, 1e8) stays the hard limit on what a file
may declare at all.
"""

from __future__ import annotations

import math

import numpy as np

#: Largest field of view of a cartridge-case scan along either axis, in millimetres (see the module docs).
MAX_FIELD_MM = 25.0
#: Largest grid, in points, that the readers return and `preprocess` works on; finer files are block-averaged.
MAX_WORKING_POINTS = 9_000_000
#: Peak resident memory (MB) that reading, preprocessing and describing any file is held to by the tests.
PEAK_MEMORY_MB = 1500
#: Share of a block that must be measured for its mean to be a point (as `resample`'s ``min_valid``).
BLOCK_MIN_VALID = 0.5
_STRIP_POINTS = 1 << 20  # points block-averaged at once: bounds the temporaries of `block_mean`


def check_limit(value, name: str, *, integer: bool) -> float | int | None:
    """``value`` as a positive number (or None: no limit); `ParameterError` otherwise."""
    from .errors import ParameterError

    if value is None:
        return None
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{name} must be a positive integer or None, got {value!r}")
        return int(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a positive number or None, got {value!r}") from None
    if isinstance(value, bool) or not (math.isfinite(v) and v > 0):
        raise ParameterError(f"{name} must be a positive number or None, got {value!r}")
    return v


def field_problem(
    ny: int, nx: int, dx: float, dy: float, max_field_mm: float | None, limit_name: str = "max_field_mm"
) -> str | None:
    """Why a grid of ``ny x nx`` points at ``dx, dy`` metres is not a cartridge-case field, or None."""
    if max_field_mm is None:
        return None
    w, h = nx * dx * 1e3, ny * dy * 1e3
    if max(w, h) <= max_field_mm:
        return None
    at = f"{dx * 1e6:.4g} um" if dx == dy else f"{dx * 1e6:.4g} x {dy * 1e6:.4g} um"
    return (
        f"field of view {w:.4g} x {h:.4g} mm ({nx} x {ny} points at {at}) is larger than any cartridge case: "
        f"at most {max_field_mm:g} mm along either axis ({limit_name}); is the spacing right?"
    )


def block_factor(ny: int, nx: int, max_points: int | None) -> int:
    """Smallest integer ``k`` such that ``(ny // k) * (nx // k) <= max_points`` (1 when it fits already),
    never more than ``min(ny, nx)`` (a grid keeps one row and one column, fitting or not)."""
    if max_points is None or ny * nx <= max_points:
        return 1
    lo, hi = 1, max(1, min(ny, nx))  # fits(lo) is False; the points fall as k grows
    if (ny // hi) * (nx // hi) > max_points:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (ny // mid) * (nx // mid) <= max_points:
            hi = mid
        else:
            lo = mid
    return hi


def block_mean_rows(chunks, ny: int, nx: int, k: int, *, min_valid: float = BLOCK_MIN_VALID) -> np.ndarray:
    """Means of the ``k x k`` blocks of a ``(ny, nx)`` grid given as consecutive chunks of rows.

    Every chunk but the last must hold a multiple of ``k`` rows. NaN marks
    missing points; a block less than ``min_valid`` measured is NaN. The last
    ``ny % k`` rows and ``nx % k`` columns (less than a block) are dropped.
    Returns a float64 ``(ny // k, nx // k)`` array; only one chunk is held at a time.
    """
    oy, ox = ny // k, nx // k
    out = np.full((oy, ox), np.nan)
    r = 0
    for chunk in chunks:
        m = min(chunk.shape[0] // k, oy - r)
        if m <= 0:
            continue
        a = chunk[: m * k, : ox * k].reshape(m, k, ox, k)
        valid = ~np.isnan(a)
        cnt = valid.sum(axis=(1, 3))
        total = np.where(valid, a, 0.0).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            block = total / cnt
        block[cnt < min_valid * k * k - 1e-9] = np.nan
        out[r : r + m] = block
        r += m
    return out


def block_mean(z: np.ndarray, k: int, *, min_valid: float = BLOCK_MIN_VALID) -> np.ndarray:
    """`block_mean_rows` of an array in memory, a strip of rows at a time (bounded temporaries)."""
    ny, nx = z.shape
    rows = max(k, _STRIP_POINTS // max(nx, 1) // k * k)
    return block_mean_rows((z[r : r + rows] for r in range(0, ny, rows)), ny, nx, k, min_valid=min_valid)


def rows_per_chunk(nx: int, k: int, bytes_per_point: int, chunk_bytes: int = 8 << 20) -> int:
    """Rows to decode at a time: about ``chunk_bytes`` of raw data, a multiple of ``k`` rows."""
    return max(k, chunk_bytes // max(nx * bytes_per_point, 1) // k * k)


def reduction_record(k: int, ny: int, nx: int, dx: float, dy: float, max_points: int, why: str) -> dict:
    """What ``meta["downsampled"]`` (readers) and a ``block_average`` step (`preprocess`) record."""
    return {
        "factor": int(k),
        "reason": why,
        "from_shape": [int(ny), int(nx)],
        "from_spacing_m": [float(dx), float(dy)],
        "shape": [int(ny // k), int(nx // k)],
        "spacing_m": [float(dx * k), float(dy * k)],
        "max_working_points": int(max_points),
        # the centre of block (0, 0) in the frame of the original grid's first point
        "origin_m": [(k - 1) / 2 * float(dx), (k - 1) / 2 * float(dy)],
    }
