"""`Scan`: the one data type that flows through every stage of ballistix."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ParameterError

#: Lateral spacings in metres a microscope's grid can have (1 nm to 100 um): what `preprocess`
#: accepts, and what `read_x3p` reads as metres without asking for a unit.
LATERAL_SPACING_M = (1e-9, 1e-4)


def check_heights(heights, name: str = "heights", *, min_points: int = 1) -> np.ndarray:
    """``heights`` (or a Scan's heights) as an array, checked: 2-D with at least ``min_points`` x
    ``min_points`` points, floating point (NaN marks missing points), no infinities.

    Raises
    ------
    ParameterError
        Naming ``name`` and what was expected.
    """
    if isinstance(heights, Scan):
        heights = heights.heights
    z = np.asarray(heights)
    if z.ndim != 2 or z.shape[0] < min_points or z.shape[1] < min_points or not np.issubdtype(z.dtype, np.floating):
        size = "non-empty " if min_points <= 1 else ""
        least = f" of at least {min_points} x {min_points} points" if min_points > 1 else ""
        raise ParameterError(
            f"{name} must be a {size}2-D float array{least} (NaN = missing), got {z.dtype} of shape {z.shape}"
        )
    if np.isinf(z).any():
        raise ParameterError(f"{name} contains +/-inf; use NaN for missing points")
    return z


def check_spacing_value(value, name: str = "spacing_m", *, plausible: bool = True) -> float:
    """One lateral spacing in metres, checked: a finite positive number and, when ``plausible``,
    within `LATERAL_SPACING_M` (a microscope's grid: catches micrometres or millimetres passed
    as metres). Raises `ParameterError` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number in metres, got {value!r}") from None
    lo, hi = LATERAL_SPACING_M
    if plausible and not (np.isfinite(v) and lo <= v <= hi):
        raise ParameterError(
            f"{name} must be a lateral spacing in metres between {lo:g} and {hi:g} (a "
            f"microscope's grid), got {v!r}; were micrometres or millimetres passed as metres?"
        )
    if not (np.isfinite(v) and v > 0):
        raise ParameterError(f"{name} must be a positive spacing in metres, got {v!r}")
    return v


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """A finite positive number (or non-negative, with ``allow_zero``), checked; `ParameterError` naming
    ``name`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ParameterError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return v


def check_range(value, name: str) -> tuple[float, float]:
    """A ``(low, high)`` pair with ``0 < low < high`` (cutoffs of a band, a window), checked;
    `ParameterError` naming ``name`` otherwise."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ParameterError(f"{name} must be a (low, high) pair with 0 < low < high, got {value!r}")
    return lo, hi


def check_spacing(spacing_m, name: str = "spacing_m", *, plausible: bool = True) -> tuple[float, float]:
    """``(dx, dy)`` in metres from one number or a pair, each checked by `check_spacing_value`."""
    try:
        pair = (float(spacing_m),) * 2 if np.ndim(spacing_m) == 0 else tuple(float(v) for v in spacing_m)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number or (dx, dy) in metres, got {spacing_m!r}") from None
    if len(pair) != 2:
        raise ParameterError(f"{name} must be a number or (dx, dy) in metres, got {spacing_m!r}")
    return tuple(check_spacing_value(v, name, plausible=plausible) for v in pair)


@dataclass(eq=False)
class Scan:
    """A surface topography: a height map on a regular lateral grid.

    Parameters
    ----------
    heights : (ny, nx) ndarray of float
        Heights in metres. Rows run along y, columns along x (the natural
        layout of an x3p file, X fastest). ``NaN`` marks points the instrument
        did not measure or a processing step masked out; no magic values.
    dx, dy : float
        Lateral spacing along x (columns) and y (rows), in metres.
    meta : dict, optional
        Provenance and labels. Keys used across ballistix:

        - ``source``: path of the file the scan came from;
        - ``sha256``: SHA-256 of the source file's bytes;
        - ``format``: ``"x3p"``, ``"image"``, ``"npz"`` or ``"simulated"``;
        - ``instrument``: dict (manufacturer, model, serial, version);
        - ``date``, ``calibration_date``, ``creator``, ``comment``, ``probing``;
        - ``labels``: dict such as ``{"exhibit": ..., "firearm": ...}``;
        - ``truth``: ground truth of simulated scans (pose, geometry);
        - ``processing``: list of processing steps with their parameters.
    marks : dict, optional
        The marks other than the breech face, extracted from the raw scan before `preprocess` cut them
        away (``preprocess(raw, marks=True)``): mark name (``"firing_pin"``, ``"aperture_shear"``) to
        its extraction (`ballistix.features.marks`), or to the record `read_npz` read back (JSON fields
        and float arrays). Empty for a raw scan and when the marks were not extracted.

    Examples
    --------
    >>> import numpy as np
    >>> s = Scan(np.zeros((4, 5)), dx=6.25e-6, dy=6.25e-6)
    >>> s.shape, s.extent_m
    ((4, 5), (3.125e-05, 2.5e-05))
    """

    heights: np.ndarray
    dx: float
    dy: float
    meta: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        h = check_heights(self.heights, "Scan heights")
        for name in ("dx", "dy"):
            setattr(self, name, check_spacing_value(getattr(self, name), f"Scan {name}", plausible=False))
        if not isinstance(self.meta, dict):
            raise ParameterError(f"Scan meta must be a dict, got {type(self.meta).__name__}")
        if not isinstance(self.marks, dict):
            raise ParameterError(f"Scan marks must be a dict, got {type(self.marks).__name__}")
        self.heights = h

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx): rows along y, columns along x."""
        return self.heights.shape

    @property
    def valid_mask(self) -> np.ndarray:
        """Boolean array, True where a height was measured."""
        return ~np.isnan(self.heights)

    @property
    def valid_fraction(self) -> float:
        """Share of grid points with a measured height, in [0, 1]."""
        return float(np.count_nonzero(self.valid_mask)) / self.heights.size

    @property
    def extent_m(self) -> tuple[float, float]:
        """(width along x, height along y) of the grid in metres."""
        ny, nx = self.shape
        return nx * self.dx, ny * self.dy

    @property
    def label(self) -> str:
        """What a message calls this scan: its source file, else its exhibit label, else a placeholder."""
        meta = self.meta or {}
        if meta.get("source"):
            return str(meta["source"])
        lab = meta.get("labels")
        if isinstance(lab, dict) and lab.get("exhibit") is not None:
            return f"exhibit {lab['exhibit']}"
        return "scan (no source recorded)"

    def copy(self) -> Scan:
        """A deep copy (heights, meta and marks)."""
        return Scan(self.heights.copy(), self.dx, self.dy, copy.deepcopy(self.meta), copy.deepcopy(self.marks))

    def __repr__(self) -> str:
        labels = self.meta.get("labels")
        label = (labels.get("exhibit") if isinstance(labels, dict) else None) or self.meta.get("source") or ""
        label = f" {label!r}" if label else ""
        return (
            f"<Scan{label} {self.shape[0]}x{self.shape[1]} at {self.dx * 1e6:.4g}x{self.dy * 1e6:.4g} um, "
            f"{100 * self.valid_fraction:.1f}% valid>"
        )

    def plot(self, ax=None, *, cmap: str = "viridis", title: str | None = None):
        """Draw the height map in micrometres; returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 5))
        w, h = self.extent_m
        im = ax.imshow(self.heights * 1e6, cmap=cmap, extent=(0, w * 1e3, h * 1e3, 0), interpolation="nearest")
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("y (mm)")
        ax.figure.colorbar(im, ax=ax, label="height (um)", shrink=0.8)
        if title is None:  # the default names the file: drawn as typed, "$x$" is no formula
            ax.set_title(repr(self)[1:-1], fontsize=9, parse_math=False, usetex=False)
        else:
            ax.set_title(title, fontsize=9)
        return ax


def scan_sha256(scan: Scan) -> str:
    """The SHA-256 (hex) that identifies a scan: its source file's (``meta["sha256"]``), or, for a
    scan made in memory, that of its heights (little-endian float64) followed by its spacing
    ``dx, dy`` (float64). A store keys its exhibits by it; a validation record names its inputs by it.
    """
    if scan.meta.get("sha256"):
        return str(scan.meta["sha256"])
    h = hashlib.sha256(np.ascontiguousarray(scan.heights, dtype="<f8").tobytes())
    h.update(np.array([scan.dx, scan.dy], "<f8").tobytes())
    return h.hexdigest()
