"""Marks other than the breech face: the firing-pin impression and the aperture shear (issue 19).

Each mark has its own module: extraction from a raw scan (an object that says whether it is usable and,
if not, why) and a comparison of two extracted marks giving a `MarkResult`. The per-mark results are
calibrated and fused into one likelihood ratio by `ballistix.fusion`, never multiplied.
"""

from .aperture_shear import ShearProfile, compare_shears, extract_aperture_shear
from .compare import compare_marks, extract_marks
from .firing_pin import FiringPinImpression, compare_firing_pins, extract_firing_pin
from .result import MARKS, MarkResult

__all__ = [
    "MARKS",
    "MarkResult",
    "FiringPinImpression",
    "extract_firing_pin",
    "compare_firing_pins",
    "ShearProfile",
    "extract_aperture_shear",
    "compare_shears",
    "extract_marks",
    "compare_marks",
]
