"""`Scan`: the one data type that flows through every stage of ballistix."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ParameterError


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

    def __post_init__(self):
        h = np.asarray(self.heights)
        if h.ndim != 2 or h.shape[0] < 1 or h.shape[1] < 1:
            raise ParameterError(f"Scan heights must be a non-empty 2-D array, got shape {h.shape}")
        if not np.issubdtype(h.dtype, np.floating):
            raise ParameterError(f"Scan heights must be floating point (NaN = missing), got dtype {h.dtype}")
        if np.isinf(h).any():
            raise ParameterError("Scan heights contain +/-inf; use NaN for missing points")
        for name in ("dx", "dy"):
            v = getattr(self, name)
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ParameterError(f"Scan {name} must be a number in metres, got {v!r}") from None
            if not np.isfinite(v) or v <= 0:
                raise ParameterError(f"Scan {name} must be a positive spacing in metres, got {v!r}")
            setattr(self, name, v)
        if not isinstance(self.meta, dict):
            raise ParameterError(f"Scan meta must be a dict, got {type(self.meta).__name__}")
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

    def copy(self) -> "Scan":
        """A deep copy (heights and meta)."""
        return Scan(self.heights.copy(), self.dx, self.dy, copy.deepcopy(self.meta))

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
