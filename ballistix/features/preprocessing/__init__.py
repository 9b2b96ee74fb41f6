"""Breech-face preprocessing: from a raw cartridge-case scan to a comparable surface.

`preprocess` chains pure steps, each one a plain public function that can be
used alone (arrays in, arrays out; or a `Scan` in, a `Scan` out with the step
recorded in ``meta["processing"]``):

1. `find_breech_face`: fits the primer's outer edge (circle through the convex
   hull of the measured primer), detects the firing-pin impression (the central
   crater or hole and the raised flowback ring around it, up to the step at the
   firing-pin aperture edge), and finds where the primer's flat face ends (its
   rounded edge falls away, or data stop). Returns the mask and the geometry.
2. `level`: removes the plane (or second-order) form by a robust fit (trimmed,
   then iteratively reweighted least squares with Tukey's biweight).
3. `remove_outliers`: spikes, dust and bad pixels (points far from their local
   median, in robust sigmas) and tiny isolated islands become NaN.
4. `bandpass`: ISO 16610-61 Gaussian regression band-pass, NaN-aware
   (`ballistix.features.filters.gaussian_bandpass`).
5. `crop` to the region's bounding box and `resample` to a standard lateral
   spacing (NaN-aware; area averaging when downsampling).

Before step 1, a grid far finer than the output needs is block-averaged
(``block_average`` in ``meta["processing"]``): to no finer than half the
output spacing, and to at most `MAX_WORKING_POINTS` points, the memory budget
(``ballistix._limits``). Scans at a quarter of the output spacing or coarser
are not touched.

Everything is deterministic: same input and parameters, same output bits.
Coordinates in results are metres from the centre of the grid's first point,
``x`` along columns and ``y`` along rows (as ``meta["truth"]`` of the simulator).
A point ``p`` of the input appears in the output of `preprocess` at
``p - crop["origin_m"] - resample["origin_m"]`` (the ``result`` of those steps
in ``meta["processing"]``), less ``block_average["origin_m"]`` too when that
step was taken.

Modules, in the order data flow through them (each imports only those above it):

- ``_checks``: argument checks, the step record, a scan's source; ``defaults``: `DEFAULTS`.
- ``circle``: `fit_circle` (algebraic, geometric, RANSAC).
- ``levelling``: `level`; ``outliers``: `remove_outliers`; ``filtering``: `bandpass`.
- ``region``: `BreechFaceRegion`, the result of the region search.
- ``_geometry``: components, hull points, samples along rays, step and clean mask edges.
- ``firing_pin``: crater, aperture and firing-pin mask (step 3 of `find_breech_face`).
- ``primer``: the region search on one primer (steps 1-5), calling ``firing_pin``.
- ``locate``: the primer in a wide field (step 0).
- ``plausibility``: the checks of a region; `segmentation_status`.
- ``breech_face``: `find_breech_face`.
- ``grid``: `crop`, `resample`, and the block averaging of the working grid.
- ``pipeline``: `preprocess`; ``plot``: `plot_preprocess`.

The thresholds of the region search are module constants of ``primer``,
``firing_pin``, ``_geometry``, ``locate`` and ``plausibility``, each with
the reason for its value.
"""

from __future__ import annotations

from ..._limits import MAX_FIELD_MM, MAX_WORKING_POINTS
from .breech_face import find_breech_face
from .circle import Circle, fit_circle
from .defaults import DEFAULTS
from .filtering import bandpass
from .grid import crop, resample
from .levelling import level
from .outliers import remove_outliers
from .pipeline import preprocess
from .plausibility import segmentation_status
from .plot import plot_preprocess
from .region import BreechFaceRegion

__all__ = [
    "DEFAULTS",
    "MAX_FIELD_MM",
    "MAX_WORKING_POINTS",
    "BreechFaceRegion",
    "Circle",
    "bandpass",
    "crop",
    "find_breech_face",
    "fit_circle",
    "level",
    "plot_preprocess",
    "preprocess",
    "remove_outliers",
    "resample",
    "segmentation_status",
]
