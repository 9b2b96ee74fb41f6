"""Step 1 of `preprocess`: `find_breech_face`, the breech-face region of a scan (mask and geometry).

It checks the parameters and the field (`_limits`, `_check_field`), finds the primer first in a wide
field (`locate`), runs the region search on one primer (`primer`), checks the result (`plausibility`)
and raises or warns on a failed or doubtful region.
"""

from __future__ import annotations

import numpy as np

from ..._limits import MAX_FIELD_MM, field_problem
from ...errors import ParameterError
from ._checks import _heights, _positive, _range, _source_of, _spacing_of
from .defaults import DEFAULTS
from .locate import _locate_primer, _region_around
from .plausibility import _assess, _enforce
from .primer import _primer_region
from .region import MIN_MEASURED_POINTS, BreechFaceRegion

__all__ = ["find_breech_face"]

#: A field whose larger side exceeds this many times the largest plausible primer radius (5.2 mm for the 9 mm
#: default) shows more than one primer's width: the whole case head, say. Primer-only scans are 3.4-4.5 mm across
#: (NIST raw 3.8 mm, processed 3.4 mm, the simulator 3.75 mm); a whole head is 10-11 mm.
WIDE_FIELD_PRIMER_RADII = 2.0


def _limits(
    primer_radius_mm, aperture_radius_mm, pin_margin_um, edge_margin_um, edge_drop_um, max_pin_extension_um
) -> dict[str, float]:
    """The parameters of `find_breech_face`, checked, in metres, named as `_primer_region` takes them."""
    pr_lo, pr_hi = (v * 1e-3 for v in _range(primer_radius_mm, "primer_radius_mm"))
    ap_lo, ap_hi = (v * 1e-3 for v in _range(aperture_radius_mm, "aperture_radius_mm"))
    pin_margin = _positive(pin_margin_um, "pin_margin_um", allow_zero=True) * 1e-6
    edge_margin = _positive(edge_margin_um, "edge_margin_um", allow_zero=True) * 1e-6
    edge_drop = _positive(edge_drop_um, "edge_drop_um") * 1e-6
    max_ext = _positive(max_pin_extension_um, "max_pin_extension_um", allow_zero=True) * 1e-6
    return dict(
        pr_lo=pr_lo,
        pr_hi=pr_hi,
        ap_lo=ap_lo,
        ap_hi=ap_hi,
        pin_margin=pin_margin,
        edge_margin=edge_margin,
        edge_drop=edge_drop,
        max_ext=max_ext,
    )


def _check_field(z: np.ndarray, dx: float, dy: float, pr_lo: float, primer_radius_mm, scan) -> None:
    """Refuse a field that cannot hold a breech face, or that the primer search cannot afford: larger than
    `MAX_FIELD_MM`, smaller than the smallest primer radius, or with fewer than `MIN_MEASURED_POINTS`
    measured points."""
    ny, nx = z.shape
    too_wide = field_problem(ny, nx, dx, dy, MAX_FIELD_MM, "MAX_FIELD_MM")
    if too_wide:  # the primer search's grid grows with the field: a metre-wide field would take gigabytes
        raise ParameterError(f"{_source_of(scan)}: {too_wide}")
    if min(nx * dx, ny * dy) < pr_lo:
        raise ParameterError(
            f"the scan covers {nx * dx * 1e3:.3g} x {ny * dy * 1e3:.3g} mm, smaller than the primer radius range "
            f"{primer_radius_mm} mm: it cannot hold a breech face (pass region=None to preprocess to skip this step)"
        )
    n_valid = int((~np.isnan(z)).sum())
    if n_valid < MIN_MEASURED_POINTS:
        raise ParameterError(f"the scan has {n_valid} measured points; at least {MIN_MEASURED_POINTS} are needed")


def find_breech_face(
    scan,
    spacing_m=None,
    *,
    primer_radius_mm=DEFAULTS["primer_radius_mm"],
    aperture_radius_mm=DEFAULTS["aperture_radius_mm"],
    pin_margin_um: float = DEFAULTS["pin_margin_um"],
    edge_margin_um: float = DEFAULTS["edge_margin_um"],
    edge_drop_um: float = DEFAULTS["edge_drop_um"],
    max_pin_extension_um: float = DEFAULTS["max_pin_extension_um"],
    check: bool = True,
) -> BreechFaceRegion:
    """Find the breech-face region of a cartridge-case scan: mask and geometry.

    0. Field of view: a field wider than ``2 x`` the largest plausible primer
       radius (5.2 mm for 9 mm Luger) shows more than the primer, e.g. the whole
       case head (rim, headstamp, primer pocket gap, primer). There the primer
       is located first: the circle of plausible primer radius whose rim is the
       most closed ring of missing or steep data (the primer's edge and the
       pocket gap) around well-measured primer face, found by FFT correlation on
       a ~40 um grid (`locate`). Only that primer, cut off in the middle of its
       gap, goes through steps 1-5; the rim, headstamp and case head never
       enter them.

    1. Primer edge: the convex hull of the largest region where at least half
       the points are measured (30 um boxes) is sampled every grid step
       (points on the grid border dropped) and a circle is fitted by RANSAC.
       Dents from drop-outs do not reach the hull, and stray points beyond it
       are outliers.
    2. Form: a robust second-order fit on the outer face (0.7-0.92 of the
       primer radius) gives face-relative heights and the face's noise
       ``sigma``; points within ``max(3 sigma, 2 um)`` of the face are
       "face-like".
       Face-like also requires a slope below 0.2 (after a 10 um smoothing:
       the crater wall crosses face level on its way down) and a
       well-measured neighbourhood (>= 70 % of a 20 um box: the flowback
       metal and the steps around the impression return little light, so
       their drop-outs are dense).
    3. Firing-pin impression: from the central hole (largest missing blob
       inside the primer, its circle fitted by RANSAC), rays go out every
       degree; along each, the impression ends at the radius where the share
       of face-like points over the next 80 um most exceeds the share over the
       previous 80 um (the crater, the raised flowback ring and the drop-outs
       at its step are not face-like; contrast > 0.4 required). A RANSAC
       circle through these ends is the aperture; rays are cast again from its
       centre and the fit repeated. Where the impression reaches beyond the
       circle (aperture shear, drag), the mask follows it, ray by ray
       (median over 7 degrees), by up to ``max_pin_extension_um``.
    4. Flat-face edge: the median face height ring by ring about the primer
       centre; the face ends where it falls ``edge_drop_um`` below the face
       (the rounded primer edge) or where data stop.
    5. Margins: ``pin_margin_um`` beyond the impression and ``edge_margin_um``
       inside the flat edge, except where the edge is a clean mask edge (a
       scan already cut to the breech face): there no margin is taken.

    Parameters
    ----------
    scan : Scan or (ny, nx) ndarray
        Heights in metres, NaN = missing.
    spacing_m : float or (dx, dy), optional
        Lateral spacing in metres (needed for an array).
    primer_radius_mm : (float, float)
        Plausible radius of the measured primer (9 mm Luger / small pistol
        primers: 2.2 mm cup, flat face ~1.7-1.9 mm).
    aperture_radius_mm : (float, float)
        Plausible radius of the firing-pin aperture step.
    pin_margin_um, edge_margin_um : float
        Margins beyond the firing-pin impression and inside the flat edge.
    edge_drop_um : float
        Height drop (below the face) that marks the rounded primer edge.
    max_pin_extension_um : float
        How far beyond the aperture circle the mask may follow the impression.

    check : bool
        Raise `SegmentationError` when the plausibility checks fail (see
        below); False returns the region with ``status="failed"`` instead, to
        look at.

    Returns
    -------
    BreechFaceRegion
        ``mask`` and the fitted geometry (metres); ``status`` ("ok",
        "doubtful" or "failed"), ``reasons`` and the measured ``checks``.

    Raises
    ------
    SegmentationError
        When ``check`` and the region failed a plausibility check: the
        message names the scan's source and the reasons.
    ParameterError
        For a field of view larger than `MAX_FIELD_MM` (25 mm): no cartridge
        case is, and the primer search's grid grows with the field.

    Warns
    -----
    SegmentationWarning
        When the region is doubtful (the reasons are in the message and in
        ``reasons``).

    Notes
    -----
    Steps 1-5 are the functions of `~ballistix.features.preprocessing.primer`
    and `~ballistix.features.preprocessing.firing_pin`, step 0 those of
    `~ballistix.features.preprocessing.locate`; each module names its
    thresholds as constants, with the reason for their values.

    Plausibility checks on every region (`~ballistix.features.preprocessing.plausibility`,
    thresholds there too): the primer edge was found and its
    radius is not pinned to the end of ``primer_radius_mm``; the primer centre
    lies in the field and the region's annulus is not clipped by the grid
    border; the firing-pin impression was found near the primer centre; the
    share of measured points in the annulus; the mask lies inside the primer
    circle and covers a plausible share of the annulus.

    Examples
    --------
    >>> import ballistix as bx
    >>> s = bx.datasets.simulate(1, 1, seed=0, resolution="fast")[0]
    >>> r = find_breech_face(s)
    >>> 1.4e-3 < r.outer_radius_m < 2.0e-3
    True
    """
    z = _heights(scan, "scan heights")
    dx, dy = _spacing_of(scan, spacing_m, "find_breech_face")
    limits = _limits(
        primer_radius_mm, aperture_radius_mm, pin_margin_um, edge_margin_um, edge_drop_um, max_pin_extension_um
    )
    _check_field(z, dx, dy, limits["pr_lo"], primer_radius_mm, scan)
    valid = ~np.isnan(z)
    source = _source_of(scan)
    ny, nx = z.shape
    if max(nx * dx, ny * dy) > WIDE_FIELD_PRIMER_RADII * limits["pr_hi"]:  # step 0: find the primer first
        view = "wide"
        loc = _locate_primer(z, dx, dy, limits["pr_lo"], limits["pr_hi"])
        reg = _region_around(z, dx, dy, loc, limits)
    else:
        view, loc = "primer", None
        reg = _primer_region(z, dx, dy, **limits)
    reg.field_of_view = view
    _assess(reg, valid, dx, dy, limits["pr_lo"], limits["pr_hi"], loc)
    if check:
        _enforce(reg, source)
    return reg
