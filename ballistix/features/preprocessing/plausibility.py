"""Plausibility checks of a breech-face region (`_assess`, `_enforce`), and the worst outcome on record
(`segmentation_status`).

`_assess` runs the checks in order, each a function that adds its measured quantities to ``checks`` and
its findings to the ``doubt`` and ``fail`` lists: the wide-field search (`_check_located`), the primer
(`_check_primer`), the firing pin (`_check_firing_pin`) and the annulus the region should cover
(`_check_annulus`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...errors import SegmentationError, SegmentationWarning
from ...scan import Scan
from .locate import LOCATE_MIN_CONTRAST
from .region import BreechFaceRegion

__all__ = ["segmentation_status"]

# Plausibility thresholds; pairs are (doubtful, failed). Values measured on the 3 NIST raw scans, the 40
# CSAFE-processed Fadul scans and simulated primer-only and whole-head scans at every difficulty
# (docs/comparison.md).
#: The primer radius pinned within this share of either end of the plausible range: the fit found the end of
#: the range, not an edge.
CHECK_RADIUS_AT_LIMIT_SHARE = 0.02
#: Share of the region's annulus (primer-centred, from the firing-pin aperture to the outer radius) that lies
#: outside the grid. Normal scans: 0-0.2 % (NIST raw and processed), < 1.5 % (simulated). A primer
#: cut by the field's border loses breech face where it matters most (the outer face).
CHECK_CLIPPED_SHARE = (0.05, 0.25)
#: Firing-pin (aperture) centre off the primer centre, as a share of the primer radius. NIST raw: 0.08-0.19
#: (Ruger P95 pins sit off centre), CSAFE-processed 0.05-0.30 (their hand-drawn outer edge is smaller),
#: simulated 0.02-0.10. At 0.6 (about 1.1 mm) the 1.0-1.3 mm aperture would reach the primer's edge: that
#: is not this primer's firing pin.
CHECK_PIN_OFFSET_SHARE = (0.4, 0.6)
#: Measured share of the annulus. NIST raw 0.99, CSAFE-processed 0.96-0.99, simulated 0.98 (realistic-hard
#: drop-outs included: the annulus ends where the data do); below a third the region is mostly something that
#: is not a measured breech face (a region cut across the pocket gap or the crater).
CHECK_VALID_SHARE = (0.45, 0.3)
#: Share of the mask beyond the primer circle (by more than ``CHECK_MASK_OUTSIDE_STEPS`` grid steps): the
#: breech face lies on the primer.
CHECK_MASK_OUTSIDE_SHARE = (0.01, 0.1)
CHECK_MASK_OUTSIDE_STEPS = 3
#: Mask area as a share of the full annulus (the part outside the grid counted as missing). NIST raw 0.93-0.96,
#: processed 0.98-1.24, simulated 0.96-0.98. A region that covers less than a fifth of the annulus cannot
#: carry a comparison's cells.
CHECK_COVERAGE_SHARE = (0.35, 0.2)
#: Flat-face radius as a share of the primer radius: NIST raw 0.95-0.96, processed 1.0, simulated 0.94-0.96;
#: below this the "face" is a fragment.
CHECK_FLAT_SHARE = 0.6

_STATUS_ORDER = {"ok": 0, "doubtful": 1, "failed": 2}


def _conclude(reg: BreechFaceRegion, fail: list, doubt: list, checks: dict) -> None:
    """Record the outcome on ``reg``: "failed" on any failure, else "doubtful" on any doubt, else "ok"."""
    reg.status = "failed" if fail else "doubtful" if doubt else "ok"
    reg.reasons, reg.checks = fail + doubt, checks


def _check_located(
    loc: dict, shape, dx: float, dy: float, pr_lo: float, pr_hi: float, checks: dict, fail: list
) -> None:
    """A wide field: the primer search found a ring of at least `LOCATE_MIN_CONTRAST`."""
    ny, nx = shape
    checks["primer_ring_contrast"] = round(float(loc["contrast"]), 4)
    if loc["center"] is None:
        fail.append(
            f"no primer found in the wide field ({nx * dx * 1e3:.3g} x {ny * dy * 1e3:.3g} mm): no "
            f"closed ring of missing data (the primer's edge and pocket gap) of radius "
            f"{pr_lo * 1e3:.3g}-{pr_hi * 1e3:.3g} mm (best contrast {loc['contrast']:.2f}, "
            f"needed {LOCATE_MIN_CONTRAST})"
        )


def _check_primer(
    reg: BreechFaceRegion,
    shape,
    dx: float,
    dy: float,
    pr_lo: float,
    pr_hi: float,
    checks: dict,
    doubt: list,
    fail: list,
) -> None:
    """The primer: its edge was found, its radius is not pinned to the end of the plausible range, its centre
    lies in the field and its flat face is not a fragment."""
    ny, nx = shape
    pc, pr = reg.primer_center_m, reg.primer_radius_m
    checks["primer_radius_mm"] = round(pr * 1e3, 4)
    no_edge = reg.outer_edge == "grid"
    if no_edge:
        doubt.append("no primer edge found: the grid's inscribed circle was taken as the primer")
    else:
        lim = CHECK_RADIUS_AT_LIMIT_SHARE * (pr_hi - pr_lo)
        if pr < pr_lo + lim or pr > pr_hi - lim:
            doubt.append(
                f"primer radius {pr * 1e3:.3g} mm at the end of the plausible range "
                f"{pr_lo * 1e3:.3g}-{pr_hi * 1e3:.3g} mm"
            )
    inside = 0 <= pc[0] <= (nx - 1) * dx and 0 <= pc[1] <= (ny - 1) * dy
    checks["primer_center_in_field"] = bool(inside)
    if not inside:
        fail.append(f"primer centre ({pc[0] * 1e3:.3g}, {pc[1] * 1e3:.3g}) mm lies outside the field")
    flat_share = reg.flat_radius_m / pr
    checks["flat_share"] = round(float(flat_share), 4)
    if not no_edge and flat_share < CHECK_FLAT_SHARE:
        doubt.append(f"the flat face ends at {flat_share:.2f} of the primer radius (expected >= {CHECK_FLAT_SHARE})")


def _check_firing_pin(reg: BreechFaceRegion, checks: dict, doubt: list, fail: list):
    """The firing-pin impression was found, near the primer centre. Returns the centre and inner radius of
    the annulus the region should cover (the primer centre and 0 without an impression)."""
    pc, pr = reg.primer_center_m, reg.primer_radius_m
    if reg.aperture_center_m is None:
        checks["firing_pin_offset"] = None
        if reg.outer_edge == "grid":
            fail.append("neither a primer edge nor a firing-pin impression was found: not a fired primer?")
        else:
            doubt.append("no firing-pin impression found")
        return pc, 0.0
    ac, inner_r = reg.aperture_center_m, reg.inner_radius_m
    off = float(np.hypot(ac[0] - pc[0], ac[1] - pc[1]) / pr)
    checks["firing_pin_offset"] = round(off, 4)
    if off > CHECK_PIN_OFFSET_SHARE[1]:
        fail.append(
            f"firing-pin impression {off:.2f} primer radii off the primer centre (limit {CHECK_PIN_OFFSET_SHARE[1]})"
        )
    elif off > CHECK_PIN_OFFSET_SHARE[0]:
        doubt.append(
            f"firing-pin impression {off:.2f} primer radii off the primer centre "
            f"(expected <= {CHECK_PIN_OFFSET_SHARE[0]})"
        )
    return ac, inner_r


def _check_annulus(
    reg: BreechFaceRegion,
    valid: np.ndarray,
    ac,
    inner_r: float,
    dx: float,
    dy: float,
    checks: dict,
    doubt: list,
    fail: list,
) -> bool:
    """The annulus the region should cover (primer-centred out to the outer radius, the firing-pin aperture
    cut out): not clipped by the grid border, measured, and covered by a mask that lies on the primer.
    Returns False for an empty annulus (a failure that ends the checks)."""
    ny, nx = valid.shape
    pc, pr, out_r = reg.primer_center_m, reg.primer_radius_m, reg.outer_radius_m
    Xm, Ym = (np.arange(nx) * dx)[None, :], (np.arange(ny) * dy)[:, None]
    r_p = np.hypot(Xm - pc[0], Ym - pc[1])
    ann = (r_p < out_r) & (np.hypot(Xm - ac[0], Ym - ac[1]) >= inner_r)
    area = np.pi * max(out_r**2 - inner_r**2, 0.0)
    if area <= 0:
        fail.append(f"empty annulus: outer radius {out_r * 1e3:.3g} mm inside the firing-pin aperture")
        return False
    pix = dx * dy
    clipped = float(np.clip(1 - ann.sum() * pix / area, 0, 1))
    valid_share = float(valid[ann].mean()) if ann.any() else 0.0
    m = reg.mask
    outside = float((m & (r_p > pr + CHECK_MASK_OUTSIDE_STEPS * max(dx, dy))).sum() / max(m.sum(), 1))
    coverage = float(m.sum() * pix / area)
    checks.update(
        {
            "annulus_outside_field": round(clipped, 4),
            "valid_share": round(valid_share, 4),
            "mask_outside_primer": round(outside, 4),
            "annulus_coverage": round(coverage, 4),
        }
    )
    for value, (warn_at, fail_at), text, high_bad in (
        (
            clipped,
            CHECK_CLIPPED_SHARE,
            "of the region's annulus lies outside the field (primer clipped at the border)",
            True,
        ),
        (valid_share, CHECK_VALID_SHARE, "of the region's annulus is measured", False),
        (outside, CHECK_MASK_OUTSIDE_SHARE, "of the mask lies outside the fitted primer circle", True),
        (coverage, CHECK_COVERAGE_SHARE, "of the annulus is covered by the mask", False),
    ):
        bad_fail = value > fail_at if high_bad else value < fail_at
        bad_warn = value > warn_at if high_bad else value < warn_at
        limit = fail_at if bad_fail else warn_at
        if bad_fail or bad_warn:
            (fail if bad_fail else doubt).append(
                f"{value:.0%} {text} ({'limit' if bad_fail else 'expected'} {'<=' if high_bad else '>='} {limit:.0%})"
            )
    return True


def _assess(
    reg: BreechFaceRegion, valid: np.ndarray, dx: float, dy: float, pr_lo: float, pr_hi: float, loc: dict | None
) -> None:
    """Plausibility checks of a region (see `find_breech_face`): fills ``status``, ``reasons`` and ``checks``.

    ``loc`` is the wide-field search's result (None for a primer field). A check that makes the later ones
    meaningless (no primer found, no region fitted, an empty annulus) ends the checks as "failed", with
    its failures alone as the reasons.
    """
    doubt, fail = [], []
    checks: dict[str, Any] = {}
    if loc is not None:
        _check_located(loc, valid.shape, dx, dy, pr_lo, pr_hi, checks, fail)
        if fail:
            return _conclude(reg, fail, [], checks)
    if reg.outer_edge == "none" or not np.isfinite(reg.primer_radius_m):
        fail.append("no primer region could be fitted in the located primer")
        return _conclude(reg, fail, [], checks)
    _check_primer(reg, valid.shape, dx, dy, pr_lo, pr_hi, checks, doubt, fail)
    ac, inner_r = _check_firing_pin(reg, checks, doubt, fail)
    if not _check_annulus(reg, valid, ac, inner_r, dx, dy, checks, doubt, fail):
        return _conclude(reg, fail, [], checks)
    _conclude(reg, fail, doubt, checks)


def _enforce(reg: BreechFaceRegion, source: str) -> None:
    if reg.status == "failed":
        raise SegmentationError(
            f"{source}: breech-face region refused ({reg.field_of_view} field): " + "; ".join(reg.reasons)
        )
    if reg.status == "doubtful":
        warnings.warn(
            SegmentationWarning(
                f"{source}: breech-face region doubtful ({reg.field_of_view} field): " + "; ".join(reg.reasons)
            ),
            stacklevel=3,
        )


def segmentation_status(scan) -> dict[str, Any] | None:
    """The worst segmentation outcome recorded in a scan's ``meta["processing"]``.

    Every `find_breech_face` step `preprocess` ran (and any region given as a
    `BreechFaceRegion`) records ``status`` and ``reasons``; a later run on an
    already processed scan cannot clear an earlier doubt, so the worst one
    counts.

    Returns
    -------
    dict or None
        ``{"status": "ok" | "doubtful" | "failed", "reasons": [...], "field_of_view": ...}``,
        or None when no checked region is on record (a scan processed elsewhere,
        a hand-drawn mask, ``region=None``).
    """
    meta = scan.meta if isinstance(scan, Scan) else scan
    worst = None
    for st in (meta or {}).get("processing", []) or []:
        if not isinstance(st, dict) or st.get("step") not in ("find_breech_face", "mask"):
            continue
        res = st.get("result") or {}
        status = res.get("status")
        if status not in _STATUS_ORDER:
            continue
        if worst is None or _STATUS_ORDER[status] > _STATUS_ORDER[worst["status"]]:
            worst = {
                "status": status,
                "reasons": list(res.get("reasons", [])),
                "field_of_view": res.get("field_of_view"),
            }
    return worst
