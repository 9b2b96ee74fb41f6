"""Argument checks and step records shared by the preprocessing steps."""

from __future__ import annotations

import copy

import numpy as np

from ..._version import __version__
from ...errors import ParameterError
from ...scan import Scan, check_heights, check_positive, check_range, check_spacing


def _heights(heights, name: str = "heights") -> np.ndarray:
    """The heights array of a step's input, checked (`ballistix.scan.check_heights`, 2 x 2 points at least)."""
    return check_heights(heights, name, min_points=2)


def _spacing(spacing_m, name: str = "spacing_m") -> tuple[float, float]:
    """(dx, dy) in metres from a number or a pair (`ballistix.scan.check_spacing`)."""
    return check_spacing(spacing_m, name)


def _spacing_of(heights, spacing_m, step: str) -> tuple[float, float]:
    """Lateral spacing from ``spacing_m`` or, when it is None, from the Scan given as heights."""
    if spacing_m is None and isinstance(heights, Scan):
        spacing_m = (heights.dx, heights.dy)
    if spacing_m is None:
        raise ParameterError(f"{step} needs spacing_m (metres) for an array input")
    return _spacing(spacing_m)


_positive = check_positive  # the names this package's modules use
_range = check_range


def _check_cutoffs(short_cutoff_um, long_cutoff_um) -> tuple[float, float]:
    s = _positive(short_cutoff_um, "short_cutoff_um")
    lc = _positive(long_cutoff_um, "long_cutoff_um")
    if not s < lc:
        raise ParameterError(f"short_cutoff_um ({s:g}) must be below long_cutoff_um ({lc:g}); are they swapped?")
    return s, lc


def _record(
    scan: Scan,
    heights: np.ndarray,
    step: str,
    params: dict,
    result: dict | None = None,
    *,
    spacing: tuple[float, float] | None = None,
) -> Scan:
    """A new Scan with ``heights`` and the step appended to ``meta["processing"]``."""
    meta = copy.deepcopy(scan.meta)
    entry = {"step": step, "params": params, "version": __version__}
    if result is not None:
        entry["result"] = result
    meta["processing"] = list(meta.get("processing", [])) + [entry]
    dx, dy = spacing if spacing is not None else (scan.dx, scan.dy)
    return Scan(heights, dx, dy, meta)


def _source_of(scan) -> str:
    return scan.label if isinstance(scan, Scan) else "array"
