"""`BreechFaceRegion`: where the breech face is on a scan, the result of `find_breech_face`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BreechFaceRegion"]

#: Fewest measured points the region search works on.
MIN_MEASURED_POINTS = 100


@dataclass(eq=False)
class BreechFaceRegion:
    """Where the breech face is on a scan: the mask and the fitted geometry.

    Coordinates are metres in the scan's frame (``x`` along columns, ``y``
    along rows, from the first grid point); radii in metres.

    Attributes
    ----------
    mask : (ny, nx) bool ndarray
        True on measured breech-face points.
    primer_center_m, primer_radius_m
        Circle through the outer edge of the measured primer (convex hull).
    flat_radius_m
        Where the primer's flat face ends (about ``primer_center_m``): the
        rounded edge falls more than ``edge_drop_um`` below the face, or data
        stop.
    outer_radius_m
        Outer radius of the mask (``flat_radius_m`` less the margin).
    aperture_center_m, aperture_radius_m
        Circle through the outer edge of the firing-pin impression (the step
        at the firing-pin aperture, or the edge of a hole already masked);
        None when no impression was found.
    inner_radius_m
        ``aperture_radius_m`` plus the margin.
    crater_center_m, crater_radius_m
        The central crater (hole of missing data), None when there is none.
    outer_edge, inner_edge : str
        What bounded the region: ``"rounded edge"`` (height drop), ``"data
        edge"`` (measurement stops raggedly), ``"mask edge"`` (a clean, sharp
        edge of a scan already masked: no margin taken), ``"flowback step"``,
        ``"grid"`` or ``"none"``.
    pin_extension_m : (n_angles,) ndarray
        Per-angle extension of the firing-pin mask beyond its circle
        (aperture shear, drag), angles ``2 pi k / n_angles`` about
        ``aperture_center_m``.
    face_sigma_um
        Robust standard deviation of the levelled face (the detection noise).
    field_of_view : str
        "primer" (the field shows at most the primer) or "wide" (a wider
        field, e.g. the whole case head: the primer was located first).
    status : str
        Outcome of the plausibility checks: "ok", "doubtful" or "failed".
    reasons : list of str
        Why the region is doubtful or failed (empty when ok).
    checks : dict
        The measured quantities the checks rest on (see `find_breech_face`).
    """

    mask: np.ndarray
    primer_center_m: tuple[float, float]
    primer_radius_m: float
    flat_radius_m: float
    outer_radius_m: float
    aperture_center_m: tuple[float, float] | None
    aperture_radius_m: float | None
    inner_radius_m: float | None
    crater_center_m: tuple[float, float] | None
    crater_radius_m: float | None
    outer_edge: str
    inner_edge: str
    face_sigma_um: float
    pin_extension_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    field_of_view: str = "primer"
    status: str = "ok"
    reasons: list = field(default_factory=list)
    checks: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The geometry as JSON-ready numbers (no mask)."""

        def pt(p):
            return None if p is None else [float(p[0]), float(p[1])]

        def num(v):
            return None if v is None else float(v)

        return {
            "primer_center_m": pt(self.primer_center_m),
            "primer_radius_m": num(self.primer_radius_m),
            "flat_radius_m": num(self.flat_radius_m),
            "outer_radius_m": num(self.outer_radius_m),
            "aperture_center_m": pt(self.aperture_center_m),
            "aperture_radius_m": num(self.aperture_radius_m),
            "inner_radius_m": num(self.inner_radius_m),
            "crater_center_m": pt(self.crater_center_m),
            "crater_radius_m": num(self.crater_radius_m),
            "outer_edge": self.outer_edge,
            "inner_edge": self.inner_edge,
            "face_sigma_um": float(self.face_sigma_um),
            "max_pin_extension_m": float(self.pin_extension_m.max()) if self.pin_extension_m.size else 0.0,
            "mask_points": int(self.mask.sum()),
            "field_of_view": self.field_of_view,
            "status": self.status,
            "reasons": list(self.reasons),
            "checks": dict(self.checks),
        }


def _empty_region(shape) -> BreechFaceRegion:
    return BreechFaceRegion(
        mask=np.zeros(shape, bool),
        primer_center_m=(float("nan"), float("nan")),
        primer_radius_m=float("nan"),
        flat_radius_m=float("nan"),
        outer_radius_m=float("nan"),
        aperture_center_m=None,
        aperture_radius_m=None,
        inner_radius_m=None,
        crater_center_m=None,
        crater_radius_m=None,
        outer_edge="none",
        inner_edge="none",
        face_sigma_um=float("nan"),
    )
