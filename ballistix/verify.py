"""`compare` and `compare_many` as ``bx`` offers them: the CMC comparison, then its likelihood ratio.

Two steps, one after the other: `ballistix.features.comparison.compare` measures how well two
processed breech faces agree (congruent matching cells, pose), and the other marks where both scans
carry them; `ballistix.evidence.weigh` turns that measurement into a likelihood ratio with a trusted
calibration, and `ballistix.fusion.weigh_comparison_marks` weighs the marks and fuses them with it.
"""

from __future__ import annotations

from . import evidence, fusion
from .features import comparison as cmc
from .features.comparison import Comparison

__all__ = ["compare", "compare_many"]


def compare(a, b, *, calibration="default", marks_calibration="default", **params) -> Comparison:
    """Compare two processed breech-face scans (Congruent Matching Cells) and weigh the result.

    Parameters
    ----------
    a, b : Scan
        Processed surfaces (see `preprocess`) at the same lateral spacing; ``a``
        is the reference, ``b`` the target.
    calibration : "default", list of Calibration, Calibration, path or None
        Turns the result into a likelihood ratio (``log10_lr``); see
        `ballistix.evidence.weigh`. "default": the most specific calibration
        shipped with the package that applies to both scans and to the
        parameters (otherwise ``log10_lr`` is None and ``evidence["note"]`` says
        why); a list: the most specific of those; a trusted `Calibration` or
        its file: that one, and a comparison made with other parameters raises
        `CalibrationMismatchError`; None: no LR.
    marks_calibration : "default", MarksCalibration, list of them or None
        Where both scans carry their other marks (``preprocess(raw, marks=True)``), they are compared
        too (``res.marks``), then weighed and fused with the breech face by this
        (`ballistix.fusion.weigh_comparison_marks`). "default": the shipped marks calibrations,
        the first that applies (the breech face weighed by the calibration its fusion was fitted
        on, both scans in its domain); None: the marks are reported, not weighed. Where a fused LR
        results, ``log10_lr`` is the fused one (``evidence["lr_basis"]`` says so).
    **params
        Comparison parameters, overrides of `ballistix.features.comparison.DEFAULTS`
        (see `ballistix.features.comparison.compare`).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import ballistix as bx
    >>> a = bx.preprocess(bx.read_scan("fadul-1-1.x3p"))  # doctest: +SKIP
    >>> b = bx.preprocess(bx.read_scan("fadul-1-2.x3p"))  # doctest: +SKIP
    >>> res = bx.compare(a, b)  # doctest: +SKIP
    >>> res.cmc_count, round(res.log10_lr, 2), res.evidence["conclusion"]["conclusion"]  # doctest: +SKIP
    (21, 2.71, 'identification')
    """
    calibration = evidence._trusted(calibration)  # a refused calibration fails before the comparison
    marks_calibration = fusion.marks_candidates(marks_calibration)
    return _weigh(cmc.compare(a, b, **params), calibration, marks_calibration)


def compare_many(
    pairs,
    *,
    n_jobs: int = 1,
    progress: bool = True,
    client=None,
    executor=None,
    calibration="default",
    marks_calibration="default",
    **params,
) -> list[Comparison]:
    """Compare and weigh many pairs of processed scans; results in the order of ``pairs``.

    The comparisons run as `ballistix.features.comparison.compare_many` runs them (in
    this process, on ``n_jobs`` worker processes, an ``executor`` or a Dask ``client``);
    each is weighed here, after collecting, so the workers receive no calibration.

    Parameters
    ----------
    pairs : iterable of (Scan, Scan)
    n_jobs, progress, client, executor
        See `ballistix.features.comparison.compare_many`.
    calibration, marks_calibration, **params
        As for `compare`.
    """
    calibration = evidence._trusted(calibration)  # read and checked once for all pairs
    marks_calibration = fusion.marks_candidates(marks_calibration)
    results = cmc.compare_many(pairs, n_jobs=n_jobs, progress=progress, client=client, executor=executor, **params)
    return [_weigh(r, calibration, marks_calibration) for r in results]


def _weigh(res: Comparison, calibration, marks_calibration) -> Comparison:
    """The breech face's LR (`ballistix.evidence.weigh`), then the marks' and the fused one
    (`ballistix.fusion.weigh_comparison_marks`) where the comparison carries marks."""
    res = evidence.weigh(res, calibration)
    fusion.weigh_comparison_marks(res, marks_calibration)
    return res
