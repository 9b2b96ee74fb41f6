"""Step 4 of `preprocess`: the Gaussian regression band-pass (ISO 16610-61), NaN-aware."""

from __future__ import annotations

import numpy as np

from ...scan import Scan
from ..filters import gaussian_bandpass
from ._checks import _check_cutoffs, _heights, _record, _spacing_of

__all__ = ["bandpass"]


def bandpass(heights, spacing_m=None, *, short_cutoff_um: float = 16.0, long_cutoff_um: float = 250.0):
    """Gaussian regression band-pass (ISO 16610-61 weighting), NaN-aware.

    Low-pass at ``short_cutoff_um`` minus low-pass at ``long_cutoff_um``, each
    by normalised weights (`ballistix.features.filters.gaussian_bandpass`):
    missing points neither spread nor bias the result. Keeps the
    breech-face marks, removes fine noise and the form left after levelling.

    Parameters
    ----------
    heights : (ny, nx) ndarray or Scan
        Heights in metres, NaN = missing.
    spacing_m : float or (dx, dy)
        Lateral spacing in metres (taken from the Scan when given one).
    short_cutoff_um, long_cutoff_um : float
        Cutoff wavelengths in micrometres (50 % transmission); CMC work uses
        16 and 250-500 um.

    Returns
    -------
    ndarray or Scan
        Band-passed heights in metres.

    Examples
    --------
    >>> z = np.full((64, 64), 3e-6)
    >>> bool(np.allclose(bandpass(z, 6.25e-6), 0, atol=1e-15))
    True
    """
    z = _heights(heights)
    dx, dy = _spacing_of(heights, spacing_m, "bandpass")
    s, lc = _check_cutoffs(short_cutoff_um, long_cutoff_um)
    out = gaussian_bandpass(z.astype(np.float64), (dx, dy), short_cutoff_um=s, long_cutoff_um=lc)
    if isinstance(heights, Scan):
        return _record(heights, out, "bandpass", {"short_cutoff_um": s, "long_cutoff_um": lc})
    return out
