"""Default parameters of `preprocess` and of the steps that take them."""

from __future__ import annotations

from typing import Any

#: Default parameters of `preprocess` (9 mm Luger primers, 16-250 um band as in the NIST CMC papers, 6.25 um grid).
DEFAULTS: dict[str, Any] = {
    "primer_radius_mm": (1.3, 2.6),
    "aperture_radius_mm": (0.3, 1.6),
    "pin_margin_um": 30.0,
    "edge_margin_um": 30.0,
    "edge_drop_um": 2.0,
    "max_pin_extension_um": 300.0,
    "level_order": 1,
    "outlier_sigma": 6.0,
    "outlier_window_um": 15.0,
    "min_island_um2": 2000.0,
    "short_cutoff_um": 16.0,
    "long_cutoff_um": 250.0,
    "spacing_um": 6.25,
}
