"""Argument checks and step records shared by the preprocessing steps."""

from __future__ import annotations

import copy

import numpy as np

from ..._version import __version__
from ...errors import ParameterError
from ...scan import Scan

_MIN_SPACING_M, _MAX_SPACING_M = 1e-9, 1e-4


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

