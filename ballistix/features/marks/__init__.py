"""Marks other than the breech face: the firing-pin impression and the aperture shear (issue 19).

Each mark has its own module: extraction from a raw scan (None, with the reason, where the scan holds
no usable mark) and a comparison of two extracted marks giving a `MarkResult`. The per-mark results
are weighed and fused into one likelihood ratio elsewhere (`ballistix.evidence`), never multiplied.
"""

from .result import MarkResult

__all__ = ["MarkResult"]
