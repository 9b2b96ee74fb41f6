"""Length units of scan files: which unit a file's numbers are in, and how it was decided.

ISO 25178-72 (x3p) stores lengths in metres, but some instruments and
x3ptools pipelines (``x3p_m_to_mum``, ``x3p_scale_unit``) write micrometres
(or millimetres) instead, scaling the lateral increments and the heights
together. `read_x3p` therefore takes one ``units`` for both, scaled to metres
on reading:

``"m"``, ``"mm"``, ``"um"``
    Given by the caller: trusted, no checks.
``"auto"`` (default)
    Metres, as the standard says, whenever the CX/CY increments could be
    metres: a lateral spacing `preprocess` accepts (`LATERAL_M`, 1 nm to
    100 um). The burden of proof is on rescaling: millimetres or micrometres
    only if the increments cannot be metres, become a spacing that
    cartridge-case microscopes use (`LATERAL_RESCALED_M`, 50 nm to 100 um)
    in exactly that unit, and the heights' span in that unit is plausible
    for a cartridge-case scan (`HEIGHT_SPAN_M`, 0.1 um to 1 cm). Increments
    of 0.05 to 0.1 fit both millimetres and micrometres: there the heights
    decide. When they cannot, when no unit fits, or when the increments and
    the heights point to different units, the reader raises
    `ScanFormatError` saying which ``units=`` to pass.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ParameterError, ScanFormatError
from ..scan import LATERAL_SPACING_M

#: Metres per unit of the values a file may hold.
SCALE_TO_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6}
UNIT_CHOICES = ("auto", "m", "mm", "um")
#: Lateral spacings in metres read as metres: what `preprocess` accepts
#: (`ballistix.scan.LATERAL_SPACING_M`), so that no file that could be right as the standard
#: says is rescaled; an increment below it cannot be millimetres or micrometres either.
LATERAL_M = LATERAL_SPACING_M
#: Lateral spacings in metres a rescaled reading must land in: what microscopes that
#: scan cartridge cases sample at, from about 0.08 um (150x confocal objectives) to a
#: coarse 100 um. With it, millimetre and micrometre readings compete only for
#: increments of 0.05 to 0.1 (50 to 100 um in mm, or 50 to 100 nm in um).
LATERAL_RESCALED_M = (5e-8, 1e-4)
#: A cartridge-case scan's height span (0.1th to 99.9th percentile of the valid
#: heights) in metres: at least 0.1 um of relief, at most 1 cm (no microscope
#: measures more over a cartridge case; the whole head is a few mm deep).
HEIGHT_SPAN_M = (1e-7, 1e-2)
_NAMES = {"m": "metres", "mm": "millimetres", "um": "micrometres"}
_SPAN_SAMPLE = 1_000_000  # heights looked at for the span: a regular subsample, deterministic


def check_units(units) -> str:
    """``units`` if it is one of `UNIT_CHOICES`, else `ParameterError`."""
    if not isinstance(units, str) or units not in UNIT_CHOICES:
        raise ParameterError(
            f"units must be one of {', '.join(map(repr, UNIT_CHOICES))} (the length unit of "
            f"the file's increments and heights), got {units!r}"
        )
    return units


def units_record(unit: str, how: str) -> dict:
    """What ``meta["units"]`` holds: the file's unit, how it was decided, the factor to metres."""
    return {"file": unit, "how": how, "scale_to_m": SCALE_TO_M[unit]}


def height_span(heights: np.ndarray) -> float | None:
    """Robust span (0.1th to 99.9th percentile) of the finite heights, or None when there is
    nothing to measure (fewer than two valid points, or a flat surface)."""
    step = max(1, math.isqrt(heights.size // _SPAN_SAMPLE))
    sub = heights[::step, ::step]
    v = sub[np.isfinite(sub)]
    if v.size < 2:
        return None
    with np.errstate(all="ignore"):  # absurd values (1e308) in a hostile file: no span, no warning
        lo, hi = np.percentile(v, [0.1, 99.9])
        span = float(hi) - float(lo)
    return span if span > 0 and math.isfinite(span) else None


def _in(v: float, window: tuple[float, float]) -> bool:
    return window[0] <= v <= window[1]


def lateral_candidates(dx: float, dy: float, units: str) -> list[str]:
    """The units a file's CX/CY increments may be in, from the increments alone (before any height is
    read): the given unit, or under ``"auto"`` the ones `decide_units` could choose (metres whenever
    plausible). Empty when no unit fits (`decide_units` then refuses the file)."""
    if units != "auto":
        return [units]
    if _in(dx, LATERAL_M) and _in(dy, LATERAL_M):
        return ["m"]
    return [
        u
        for u in ("mm", "um")
        if _in(dx * SCALE_TO_M[u], LATERAL_RESCALED_M) and _in(dy * SCALE_TO_M[u], LATERAL_RESCALED_M)
    ]


def decide_units(path, dx: float, dy: float, heights: np.ndarray) -> tuple[str, str]:
    """The unit of an x3p file's lengths under ``units="auto"``: ``(unit, reason)``.

    ``dx``, ``dy`` and ``heights`` are as stored in the file (not yet scaled).
    Raises `ScanFormatError` naming the file, what the increments and heights
    say, and which ``units=`` to pass when the file is ambiguous.
    """
    lat_lo, lat_hi = LATERAL_RESCALED_M
    z_lo, z_hi = HEIGHT_SPAN_M
    inc = f"{dx:.6g}" if dx == dy else f"{dx:.6g} x {dy:.6g}"
    if _in(dx, LATERAL_M) and _in(dy, LATERAL_M):
        return "m", f"auto: lateral increment {inc} is a plausible spacing in metres (ISO 25178-72)"
    lateral = [
        u
        for u in ("mm", "um")
        if _in(dx * SCALE_TO_M[u], LATERAL_RESCALED_M) and _in(dy * SCALE_TO_M[u], LATERAL_RESCALED_M)
    ]
    if not lateral:
        raise ScanFormatError(
            path,
            f"the lateral increment {inc} (CX/CY Increment) is not a plausible spacing in metres "
            f"({LATERAL_M[0]:g} to {LATERAL_M[1]:g} m), nor in millimetres or micrometres (a microscope's "
            f"{lat_lo:g} to {lat_hi:g} m); pass units='m', 'mm' or 'um' to read it as that unit anyway",
        )
    lat_say = (
        f"lateral increment {inc} is not a plausible spacing in metres ({LATERAL_M[0]:g} to "
        f"{LATERAL_M[1]:g} m) but is in "
        + " and in ".join(f"{_NAMES[u]} ({dx * SCALE_TO_M[u]:.3g} m)" for u in lateral)
    )
    span = height_span(heights)
    if span is None:
        fits = lateral
        heights_say = "the heights give no evidence (no valid points or a flat surface)"
    else:
        fits = [u for u in lateral if _in(span * SCALE_TO_M[u], HEIGHT_SPAN_M)]
        heights_say = (
            f"the heights span {span:.4g}, "
            + " or ".join(f"{span * SCALE_TO_M[u]:.3g} m in {_NAMES[u]}" for u in lateral)
            + f" (a cartridge-case scan spans {z_lo:g} to {z_hi:g} m)"
        )
    if len(fits) == 1:
        return fits[0], f"auto: {lat_say}; {heights_say}"
    if not fits:
        raise ScanFormatError(
            path,
            f"inconsistent length units: the {lat_say}, but {heights_say}; the increments and the heights "
            f"seem to be in different units; pass units='m', 'mm' or 'um' to read both as that unit anyway",
        )
    raise ScanFormatError(
        path,
        f"ambiguous length units: the {lat_say}, and {heights_say}; pass units='mm' or units='um' "
        f"(or units='m' to read it as metres)",
    )
