"""Every mark of two raw scans at once: `extract_marks` (one breech-face search per scan) and `compare_marks`."""

from __future__ import annotations

from typing import Any

from ...errors import BallistixError, ParameterError
from ...scan import Scan
from ..preprocessing.breech_face import find_breech_face
from .aperture_shear import compare_shears, extract_aperture_shear
from .firing_pin import compare_firing_pins, extract_firing_pin
from .record import as_mark
from .result import MarkResult

__all__ = ["extract_marks", "compare_marks"]


def extract_marks(scan: Scan, region=None) -> dict[str, Any]:
    """The firing-pin impression and the aperture shear of a raw scan (each says whether it is usable).

    Parameters
    ----------
    scan : Scan
        A raw scan of the primer (or the whole case head): the marks are cut away by `preprocess`.
    region : BreechFaceRegion, optional
        The scan's `find_breech_face` result, if already at hand (the search runs once for both marks).

    Returns
    -------
    dict
        ``{"firing_pin": FiringPinImpression, "aperture_shear": ShearProfile}``; where the breech-face
        search itself fails, both are the extractors' "not usable" answers with its reason.
    """
    if not isinstance(scan, Scan):
        raise ParameterError(f"extract_marks expects a raw Scan, got {type(scan).__name__}")
    if region is None:
        try:
            region = find_breech_face(scan, check=False)
        except BallistixError:
            region = None  # each extractor then says why it cannot find its mark
    return {"firing_pin": extract_firing_pin(scan, region), "aperture_shear": extract_aperture_shear(scan, region)}


def compare_marks(
    a: dict, b: dict, *, rotation_deg: float | None = None, labels: tuple[str, str] = ("A", "B")
) -> dict[str, MarkResult]:
    """Compare the marks of two scans (from `extract_marks`, or a processed scan's ``marks``): one
    `MarkResult` per mark.

    ``rotation_deg``: the breech face's pose (``bx.compare(...).rotation_deg``); the firing pin is then
    searched near it. Returns one `MarkResult` per mark of `MARKS`; a mark missing from either scan, or
    not usable there, is "not used" with the reason: no evidence either way. Records read back from a
    file (`ballistix.io.read_npz`) are checked first (`ParameterError` naming the scan).
    """
    for name, m in (("a", a), ("b", b)):
        if not isinstance(m, dict):
            raise ParameterError(f"{name} must be the dict extract_marks returns, got {type(m).__name__}")
    out = {}
    for mark, compare in (("firing_pin", compare_firing_pins), ("aperture_shear", compare_shears)):
        if a.get(mark) is None or b.get(mark) is None:
            out[mark] = MarkResult.not_used(
                mark, f"scan {labels[0] if a.get(mark) is None else labels[1]}: not extracted"
            )
            continue
        ma, mb = as_mark(mark, a[mark], labels[0]), as_mark(mark, b[mark], labels[1])
        out[mark] = compare(ma, mb, rotation_deg=rotation_deg) if mark == "firing_pin" else compare(ma, mb)
    return out
