"""`preprocess`: the steps in order, from a raw scan to a comparable surface.

The parameters and the scan are checked first (`_check_scan`, `_check_steps`, `_region_params`), then
the steps run in order: the working grid (`_block_average`), the region (`_apply_region`), `level`,
`remove_outliers`, `crop`, `bandpass` and `resample`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..._limits import MAX_FIELD_MM, MAX_WORKING_POINTS, field_problem
from ...errors import ParameterError
from ...scan import Scan
from ._checks import _check_cutoffs, _positive, _range, _record, _source_of, _spacing
from .breech_face import find_breech_face
from .defaults import DEFAULTS
from .filtering import bandpass
from .grid import _block_average, _block_mask, _working_factor, crop, resample
from .levelling import level
from .outliers import remove_outliers
from .plausibility import segmentation_status
from .region import BreechFaceRegion

__all__ = ["DEFAULTS", "preprocess"]


class _Discard(dict):
    """A dict that keeps nothing: `preprocess`'s diagnostics when they are not asked for."""

    def __setitem__(self, key, value):
        pass


def _check_scan(scan: Scan) -> np.ndarray:
    """Refuse a scan the pipeline cannot work with (not a Scan, a spacing that cannot be metres, a field
    larger than `MAX_FIELD_MM`, nothing measured, heights not in metres); return its measured points."""
    if not isinstance(scan, Scan):
        raise ParameterError(
            f"preprocess expects a ballistix Scan, got {type(scan).__name__}; wrap arrays as Scan(heights, dx, dy)"
        )
    _spacing((scan.dx, scan.dy), "scan spacing (dx, dy)")
    too_wide = field_problem(*scan.shape, scan.dx, scan.dy, MAX_FIELD_MM, "MAX_FIELD_MM")
    if too_wide:
        raise ParameterError(f"{_source_of(scan)}: {too_wide}")
    z = scan.heights
    valid = ~np.isnan(z)
    if not valid.any():
        raise ParameterError("the scan has no measured point (all heights are NaN)")
    zr = float(np.nanmax(z) - np.nanmin(z))
    if zr > 1e-2:
        raise ParameterError(
            f"heights span {zr:g} m: more than a centimetre, so not metres (were micrometres stored as metres?)"
        )
    return valid


def _check_steps(
    level_order, outlier_sigma, outlier_window_um, min_island_um2, short_cutoff_um, long_cutoff_um, spacing_um
):
    """Check the parameters of steps 2-5; return ``(short_cutoff_um, long_cutoff_um, spacing_um)`` as floats
    (or None)."""
    if level_order is not None and (isinstance(level_order, bool) or level_order not in (1, 2)):
        raise ParameterError(f"level_order must be 1, 2 or None, got {level_order!r}")
    if outlier_sigma is not None:
        _positive(outlier_sigma, "outlier_sigma")
        _positive(outlier_window_um, "outlier_window_um")
        _positive(min_island_um2, "min_island_um2", allow_zero=True)
    if (short_cutoff_um is None) != (long_cutoff_um is None):
        raise ParameterError("give both short_cutoff_um and long_cutoff_um, or neither (no band-pass)")
    if short_cutoff_um is not None:
        short_cutoff_um, long_cutoff_um = _check_cutoffs(short_cutoff_um, long_cutoff_um)
    if spacing_um is not None:
        spacing_um = _positive(spacing_um, "spacing_um")
        _spacing(spacing_um / 1e6, "spacing_um / 1e6")
    return short_cutoff_um, long_cutoff_um, spacing_um


def _region_params(
    primer_radius_mm, aperture_radius_mm, pin_margin_um, edge_margin_um, edge_drop_um, max_pin_extension_um
) -> dict[str, Any]:
    """The parameters of `find_breech_face`, checked, as recorded in ``meta["processing"]``."""
    return {
        "primer_radius_mm": list(_range(primer_radius_mm, "primer_radius_mm")),
        "aperture_radius_mm": list(_range(aperture_radius_mm, "aperture_radius_mm")),
        "pin_margin_um": _positive(pin_margin_um, "pin_margin_um", allow_zero=True),
        "edge_margin_um": _positive(edge_margin_um, "edge_margin_um", allow_zero=True),
        "edge_drop_um": _positive(edge_drop_um, "edge_drop_um"),
        "max_pin_extension_um": _positive(max_pin_extension_um, "max_pin_extension_um", allow_zero=True),
    }


def _is_given(region) -> bool:
    """A region given as a `BreechFaceRegion` or a mask (not "auto", not None)."""
    return not (isinstance(region, str) or region is None)


def _check_given_mask(region, shape) -> np.ndarray:
    """The mask of a given region, refused unless it is boolean and of ``shape``."""
    mask = np.asarray(region.mask if isinstance(region, BreechFaceRegion) else region)
    if mask.shape != shape or mask.dtype != bool:
        raise ParameterError(f"region mask must be a boolean array of shape {shape}, got {mask.dtype} {mask.shape}")
    return mask


def _apply_region(cur: Scan, region, region_params: dict, valid: np.ndarray):
    """Step 1: the breech-face region (found, given or none); NaN outside it, the step recorded, and the
    segmentation's outcome (the worst on record) in ``meta["quality"]["segmentation"]``, where a comparison
    looks for it. Returns ``(scan, region or None, mask)``."""
    if isinstance(region, str) and region == "auto":
        reg = find_breech_face(cur, **region_params)
        mask = reg.mask
        cur = _record(cur, np.where(mask, cur.heights, np.nan), "find_breech_face", region_params, reg.as_dict())
    elif _is_given(region):
        reg = region if isinstance(region, BreechFaceRegion) else None
        mask = _check_given_mask(region, cur.shape)
        cur = _record(
            cur,
            np.where(mask, cur.heights, np.nan),
            "mask",
            {"source": "given"},
            reg.as_dict() if reg is not None else {"mask_points": int(mask.sum())},
        )
    elif region is None:
        reg, mask = None, valid
    else:
        raise ParameterError(f"region must be 'auto', a BreechFaceRegion, a boolean mask or None, got {region!r}")
    seg = segmentation_status(cur)
    if seg is not None:
        cur.meta["quality"] = {**(cur.meta.get("quality") or {}), "segmentation": seg}
    if not (~np.isnan(cur.heights)).any():
        raise ParameterError("the breech-face region is empty: nothing measured inside it")
    return cur, reg, mask


def _extract_marks(unmasked: Scan, reg) -> dict[str, Any]:
    """The marks of the scan before its region was applied, with the region found (`extract_marks`)."""
    from ..marks import extract_marks  # the marks module uses this package's region search

    return extract_marks(unmasked, reg if isinstance(reg, BreechFaceRegion) else None)


def _check_output_size(cur: Scan, spacing_um: float, scan: Scan) -> None:
    """Refuse a resampling whose output grid (as `resample` sizes it) would exceed `MAX_WORKING_POINTS`."""
    ny, nx = cur.shape
    ox = max(1, int(round(nx * cur.dx / (spacing_um / 1e6))))
    oy = max(1, int(round(ny * cur.dy / (spacing_um / 1e6))))
    if ox * oy > MAX_WORKING_POINTS:
        raise ParameterError(
            f"{_source_of(scan)}: resampling the {nx} x {ny} region to {spacing_um:g} um would "
            f"give {ox} x {oy} points, more than MAX_WORKING_POINTS ({MAX_WORKING_POINTS}); "
            f"choose a coarser spacing_um"
        )


def preprocess(
    scan: Scan,
    *,
    region="auto",
    primer_radius_mm=DEFAULTS["primer_radius_mm"],
    aperture_radius_mm=DEFAULTS["aperture_radius_mm"],
    pin_margin_um: float = DEFAULTS["pin_margin_um"],
    edge_margin_um: float = DEFAULTS["edge_margin_um"],
    edge_drop_um: float = DEFAULTS["edge_drop_um"],
    max_pin_extension_um: float = DEFAULTS["max_pin_extension_um"],
    level_order: int | None = DEFAULTS["level_order"],
    outlier_sigma: float | None = DEFAULTS["outlier_sigma"],
    outlier_window_um: float = DEFAULTS["outlier_window_um"],
    min_island_um2: float = DEFAULTS["min_island_um2"],
    short_cutoff_um: float | None = DEFAULTS["short_cutoff_um"],
    long_cutoff_um: float | None = DEFAULTS["long_cutoff_um"],
    spacing_um: float | None = DEFAULTS["spacing_um"],
    marks: bool = False,
    diagnostics: bool = False,
):
    """Breech-face preprocessing of a cartridge-case scan: region, level, outliers, band-pass, resample.

    Each step is a public function of this module; the output's
    ``meta["processing"]`` lists them in order with their parameters (and
    results such as the fitted geometry), after any steps already there.

    Parameters
    ----------
    scan : Scan
        Heights in metres, NaN = missing (raw or already processed).
    region : "auto", BreechFaceRegion, bool ndarray or None
        "auto": `find_breech_face`; a region or a boolean mask (shape of the
        scan) to use as given; None: keep every measured point.
    primer_radius_mm, aperture_radius_mm, pin_margin_um, edge_margin_um, edge_drop_um, max_pin_extension_um
        Passed to `find_breech_face` (9 mm Luger defaults).
    level_order : {1, 2} or None
        Form removed by `level` (robust); None skips levelling.
    outlier_sigma : float or None
        `remove_outliers` threshold in robust sigmas; None skips the step.
    outlier_window_um, min_island_um2 : float
        `remove_outliers` window and smallest island kept.
    short_cutoff_um, long_cutoff_um : float or None
        Gaussian band-pass cutoffs in micrometres (16 and 250 by default, as in the NIST CMC papers);
        None for both skips the band-pass.
    spacing_um : float or None
        Output lateral spacing in micrometres; None keeps the scan's.
    marks : bool
        Also extract the marks this preprocessing cuts away, the firing-pin impression and the aperture
        shear (`ballistix.features.marks.extract_marks`, with the breech-face region found here), into
        the output's ``marks``: `compare` then compares them too. Each says whether it is usable and,
        if not, why. It adds about 0.5-0.8 s a scan (a 1200 x 1200 grid); not part of
        ``meta["processing"]``, so the breech face is processed the same either way.
    diagnostics : bool
        Also return a dict of the intermediate results for plots and checks:
        ``region`` (`BreechFaceRegion` or None), arrays on the input grid
        (the working grid when it was block-averaged) ``masked``,
        ``levelled``, ``outliers`` (bool, points removed),
        ``cleaned``; ``crop_origin_px`` (row, col); on the cropped grid
        ``cropped`` and ``filtered``; and ``final`` (the returned Scan).

    Returns
    -------
    Scan (and dict)
        Processed scan: float32 heights, NaN outside the breech face, cropped
        to the region's bounding box; meta copied from the input plus
        ``processing``.

    Notes
    -----
    Memory budget (``ballistix._limits``): a field of view larger than
    `MAX_FIELD_MM` (25 mm, more than any cartridge case head) is refused. A
    grid at a quarter of ``spacing_um`` or finer is block-averaged ``k x k``
    (``k`` the largest integer keeping the working spacing at most
    ``spacing_um / 2``, the finest a band-pass and an area-averaging
    resample to ``spacing_um`` need), and so is a grid of more than
    `MAX_WORKING_POINTS` (9 M) points (``k`` the smallest that fits), before
    any float64 step: NaN-aware means of the blocks, a block less than half
    measured is NaN, the last ``ny % k`` rows and ``nx % k`` columns are
    dropped. It is recorded as a ``block_average`` step (params
    ``max_spacing_um``, ``max_points``, ``min_valid``; result: ``factor``,
    ``reason``, original shape and spacing, ``origin_m``). A given region or
    mask is block-reduced with the scan (a block is in it when half its points
    are). With this, preprocessing needs about 100 bytes per working point at
    its peak: about 1.15 GB for 9 M points. An output grid of more than
    `MAX_WORKING_POINTS` points (a ``spacing_um`` far finer than the data)
    is refused before it is allocated.

    Raises
    ------
    ParameterError
        On a scan or parameters the pipeline cannot work with (all-NaN scan,
        spacing that cannot be metres, a field of view larger than
        `MAX_FIELD_MM`, inverted cutoffs, ...).
    SegmentationError
        When the breech-face region found fails the plausibility checks of
        `find_breech_face` (a doubtful one gives a `SegmentationWarning`, and
        ``meta["quality"]["segmentation"]`` of the output records ``status``
        and ``reasons``, the worst of all regions on record).

    Examples
    --------
    >>> import ballistix as bx
    >>> raw = bx.datasets.simulate(1, 1, seed=0, resolution="fast")[0]
    >>> proc = bx.preprocess(raw)
    >>> [p["step"] for p in proc.meta["processing"]]
    ['find_breech_face', 'level', 'remove_outliers', 'crop', 'bandpass', 'resample']
    """
    # --- validation up front: fail before any work --------------------------
    valid = _check_scan(scan)
    if not isinstance(marks, (bool, np.bool_)):
        raise ParameterError(f"marks must be True or False, got {marks!r}")
    short_cutoff_um, long_cutoff_um, spacing_um = _check_steps(
        level_order, outlier_sigma, outlier_window_um, min_island_um2, short_cutoff_um, long_cutoff_um, spacing_um
    )
    region_params = _region_params(
        primer_radius_mm, aperture_radius_mm, pin_margin_um, edge_margin_um, edge_drop_um, max_pin_extension_um
    )
    if _is_given(region):  # a given region: checked against the scan as given
        _check_given_mask(region, scan.shape)

    # intermediate arrays are kept only when asked for: each one is a full-size float64 copy
    diag: dict[str, Any] = {} if diagnostics else _Discard()
    cur = Scan(scan.heights.astype(np.float64, copy=False), scan.dx, scan.dy, copy.deepcopy(scan.meta))

    # 0. working grid: a grid far finer than the output needs is block-averaged before the float64 steps
    factor, why = _working_factor(cur, spacing_um)
    if factor > 1:
        cur = _block_average(cur, factor, why, spacing_um, scan)
        valid = ~np.isnan(cur.heights)
        if _is_given(region):
            region = _block_mask(region, factor)

    # 1. region (and the marks it cuts away, from the unmasked scan)
    unmasked = cur
    cur, reg, mask = _apply_region(cur, region, region_params, valid)
    extracted = _extract_marks(unmasked, reg) if marks else {}
    diag["region"], diag["masked"] = reg, cur.heights

    # 2. level
    if level_order is not None:
        cur = level(cur, order=level_order)
    diag["levelled"] = cur.heights

    # 3. outliers
    if outlier_sigma is not None:
        cur, removed = remove_outliers(
            cur, sigma=outlier_sigma, window_um=outlier_window_um, min_island_um2=min_island_um2, return_mask=True
        )
        diag["outliers"] = removed
    else:
        diag["outliers"] = np.zeros(valid.shape, bool)
    diag["cleaned"] = cur.heights
    if not (~np.isnan(cur.heights)).any():
        raise ParameterError("nothing left after outlier removal")

    # 4. crop to the region (exact: the filters see NaN outside it either way), band-pass
    crop_mask = mask if region is not None else None
    cur, origin = crop(cur, crop_mask, return_origin=True)
    diag["crop_origin_px"] = origin
    diag["cropped"] = cur.heights
    if short_cutoff_um is not None:
        cur = bandpass(cur, short_cutoff_um=short_cutoff_um, long_cutoff_um=long_cutoff_um)
    diag["filtered"] = cur.heights

    # 5. resample
    if spacing_um is not None:
        _check_output_size(cur, spacing_um, scan)  # never more than the working budget
        cur = resample(cur, new_spacing_m=spacing_um / 1e6)
    out = Scan(cur.heights.astype(np.float32), cur.dx, cur.dy, cur.meta, extracted)
    if not out.valid_mask.any():
        raise ParameterError("the processed scan has no valid point left")
    if diagnostics:
        diag["final"] = out
        return out, diag
    return out
