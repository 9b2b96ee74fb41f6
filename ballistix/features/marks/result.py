"""`MarkResult`: what comparing one kind of mark of two cartridge cases found."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["MarkResult", "MARKS", "record_of"]

#: The marks compared besides the breech face.
MARKS = ("firing_pin", "aperture_shear")


@dataclass
class MarkResult:
    """One mark's comparison.

    Attributes
    ----------
    mark : str
        One of `MARKS`.
    used : bool
        Whether both scans held the mark, extracted well enough to compare. A mark that is not used is
        no evidence either way: never a score of zero.
    reason : str or None
        Why the mark was not used (which scan lacks it and why); None when used.
    count : int
        Congruent elements found (cross-sections of a firing-pin impression, segments of a shear
        profile): the individual-mark evidence, as the CMC count is the breech face's.
    n_elements : int
        Elements compared (the count's maximum).
    score : float
        The mark's similarity (correlation of the aligned individual marks, -1..1).
    rotation_deg : float or None
        The rotation of scan B onto scan A the mark was compared at (the breech face's pose when it
        was given; None for a 1-D mark).
    shift_um : float or None
        The shift of B's profile onto A's (1-D marks).
    class_features : dict
        What the mark's shape says (depth profile and outline agreement for a firing pin): class
        characteristics, shared by every gun of a model, kept apart from the individual marks.
    features : dict
        Everything else measured, for calibration and for the record.
    """

    mark: str
    used: bool
    reason: str | None = None
    count: int = 0
    n_elements: int = 0
    score: float = float("nan")
    rotation_deg: float | None = None
    shift_um: float | None = None
    class_features: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.mark not in MARKS:
            from ...errors import ParameterError

            raise ParameterError(f"mark must be one of {MARKS}, got {self.mark!r}")

    @classmethod
    def not_used(cls, mark: str, reason: str) -> MarkResult:
        """A mark that could not be compared, and why."""
        return cls(mark, False, reason)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json(v):
    if isinstance(v, tuple | list):
        return [_json(x) for x in v]
    if isinstance(v, np.floating | float) and not isinstance(v, bool):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): _json(x) for k, x in v.items()}
    return v


def record_of(mark, array_fields: dict[str, int]) -> dict[str, Any]:
    """A mark's extraction (a dataclass) as ``{"fields": JSON-ready dict, "arrays": {field: ndarray}}``:
    how a ``.npz`` keeps it (`ballistix.features.marks.record.from_record` builds it back)."""
    fields, arrays = {}, {}
    for f in dataclasses.fields(mark):
        v = getattr(mark, f.name)
        if f.name in array_fields:
            if v is not None:
                arrays[f.name] = np.asarray(v)
        else:
            fields[f.name] = _json(v)
    return {"fields": fields, "arrays": arrays}
