"""`compare`: do two processed breech faces come from the same gun? (CMC method)

Pose search (documented choice): real cases arrive in any orientation. The
default ``rotation="full"`` first estimates the pose globally: both surfaces
are reduced 4x (25 um at the standard 6.25 um spacing, which keeps the
50-250 um marks), the target is rotated in ``coarse_step_deg`` steps over the
full circle, and for each rotation the peak of the whole-surface normalised
cross-correlation over translations is taken. The ``candidates`` best,
well-separated rotations are then refined with the full CMC cell search in a
window of +-``window_deg`` around each, in ``step_deg`` steps; the candidate
with the most congruent cells wins. The reverse direction (target cells
searched in the reference) is searched around the opposite rotation only.
``rotation="reference"`` uses the CMC literature's own grid (-30 to 30
degrees in 3 degree steps, one pass, no coarse stage) for like-for-like
comparisons with published counts; an array of angles gives any grid.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ParameterError, ResolutionWarning
from ..provenance import original_spacing_um, population, processing_signature
from ..scan import Scan
from .cmc import CellSearch, Target, angle_diff, congruence, irfft2_into, make_cells, rfft2_into, rotate_nan

__all__ = ["compare", "compare_many", "process_pool", "Comparison", "Query", "DEFAULTS"]

#: Default comparison parameters (lengths in micrometres, converted to pixels at the scans' spacing).
DEFAULTS: dict[str, Any] = {
    "grid": (8, 8),
    "max_missing": 0.85,
    "region_factor": 3.0,
    "corr_threshold": 0.5,
    "angle_tolerance_deg": 6.0,
    "shift_tolerance_um": 125.0,  # 20 pixels at 6.25 um
    "tau": 1,
    "min_overlap": 0.15,
    "rotation": "full",
    "coarse_factor": 4,
    "coarse_step_deg": 3.0,
    "candidates": 3,
    "window_deg": 9.0,
    "step_deg": 3.0,
    "directions": "both",
    "method": "original",
}
REFERENCE_ANGLES = np.arange(-30.0, 30.0 + 1e-9, 3.0)


@dataclass(eq=False)
class Comparison:
    """Result of comparing a reference surface ``a`` with a target ``b``.

    Attributes
    ----------
    cmc_count : int
        Congruent matching cells, the smaller of the two directions' counts.
        ``method="original"`` (default): Song 2013, one consensus rotation and
        shift over all cells; ``"high"``: Tong et al. 2015, the peak of the
        CMC-theta distribution (falling back to the original count when its
        rotation test fails). Both are reported per direction in
        ``directions``. The high-CMC count is not the default because over a
        full-circle search (many candidate rotations) it lets more different-gun
        pairs reach a few CMCs by chance: on the 717 Fadul non-matches the
        original count stays at or below 3, the high count reaches 6, which
        the conventional count rule (`ballistix.graph.linkage.CONVENTIONAL_CMC_RULE`)
        calls an identification.
    score : float
        ``cmc_count`` plus the mean correlation of the congruent cells (0 if
        none), so ``int(score) == cmc_count`` and ties are broken by how well
        the congruent cells match: 27.8 reads "27 CMCs, correlating 0.8 on
        average". Use it to rank candidates; it is not a probability.
    rotation_deg : float
        Rotation of ``b`` about its centre (counter-clockwise as displayed,
        row 0 at the top) that aligns it with ``a``.
    translation : (2,) ndarray
        Shift (x, y) in metres of ``b``'s matching patches relative to ``a``'s
        cells after that rotation (median over the congruent cells).
    cells : list of dict
        Per reference cell of the forward direction: grid index, centre
        (x, y) in metres from ``a``'s top-left corner, correlation, rotation,
        shift (x, y) in metres, and whether it is congruent.
    directions : dict
        Per direction ("ab", "ba"): original and high counts, rotation, shift,
        number of valid cells, CMC-theta distribution.
    params, inputs, version
        Parameters used, SHA-256 of each input's heights (and source file
        checksum and processing steps when known), library version: enough to
        reproduce the result.
    log10_lr, lr : float or None
        Likelihood ratio p(result | same gun) / p(result | different guns),
        set when the comparison is weighed by a calibration
        (`ballistix.evidence.weigh`; ``bx.compare`` weighs with the shipped
        default unless told otherwise), bounded by what its reference data
        support. None until weighed, when no calibration applies, or when
        either scan's breech-face region is doubtful (``evidence["note"]``
        says why).
    evidence : dict
        Empty until weighed; then the calibration used (name, checksum), the
        examiner-scale conclusion with its measured error rate, or the reason
        there is no LR; when the inputs carry a checked segmentation,
        ``evidence["segmentation"]`` gives both statuses and ``lr_withheld``.
        ``inputs[side]["segmentation"]`` holds each side's status and reasons.
        With marks weighed (see ``marks``), ``evidence["marks"]`` holds each mark's LR and the fused
        one, and ``log10_lr`` is the fused LR (``evidence["lr_basis"]`` says so; the breech face's own
        is ``evidence["breech_face_log10_lr"]``).
    marks : dict
        Where both scans carry their other marks (``preprocess(raw, marks=True)``): mark name to its
        `ballistix.features.marks.MarkResult`, the firing pin compared near this breech-face pose. A
        mark either scan lacks is "not used" with the reason, never zero evidence. Empty otherwise.
    """

    cmc_count: int
    score: float
    rotation_deg: float
    translation: np.ndarray
    cells: list[dict[str, Any]]
    directions: dict[str, dict[str, Any]]
    params: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    version: str = __version__
    log10_lr: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. a scan far coarser than the grid (ResolutionWarning)
    marks: dict[str, Any] = field(default_factory=dict)
    _surfaces: tuple = field(default=(), repr=False)

    @property
    def lr(self) -> float | None:
        """The likelihood ratio (see ``log10_lr``)."""
        return None if self.log10_lr is None else float(10.0**self.log10_lr)

    @property
    def n_cells(self) -> int:
        """Valid reference cells in the forward direction."""
        return self.directions["ab"]["n_cells"]

    def __repr__(self) -> str:
        lr = "" if self.log10_lr is None else f", log10 LR {self.log10_lr:+.2f}"
        return (
            f"<Comparison {self.inputs['a'].get('label', 'a')} vs {self.inputs['b'].get('label', 'b')}: "
            f"{self.cmc_count} CMCs of {self.n_cells} cells, score {self.score:.2f}, "
            f"rotation {self.rotation_deg:.1f} deg{lr}>"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (cells included)."""

        def clean(o):
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [clean(v) for v in o]
            if isinstance(o, np.ndarray):
                return clean(o.tolist())
            if isinstance(o, np.generic):
                return o.item()
            if isinstance(o, float) and not np.isfinite(o):
                return None
            return o

        return clean(
            {
                "cmc_count": self.cmc_count,
                "score": self.score,
                "rotation_deg": self.rotation_deg,
                "translation_m": self.translation,
                "cells": self.cells,
                "directions": self.directions,
                "params": self.params,
                "inputs": self.inputs,
                "version": self.version,
                "log10_lr": self.log10_lr,
                "lr": self.lr,
                "evidence": self.evidence,
                "warnings": self.warnings,
                "marks": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in self.marks.items()},
            }
        )

    def plot(self, fig=None):
        """Both surfaces with the reference cells drawn on ``a`` and their matched
        positions on ``b`` (congruent cells in colour); returns the Figure."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Polygon, Rectangle

        if not self._surfaces:
            raise ParameterError("this Comparison holds no surfaces to draw (loaded from JSON?)")
        a, b = self._surfaces
        fig = fig or plt.figure(figsize=(11, 5.2))
        axa, axb = fig.subplots(1, 2)
        for ax, s, title in ((axa, a, "reference a: cells"), (axb, b, "target b: matched positions")):
            z = s.heights
            lim = np.nanpercentile(np.abs(z), 99) if np.isfinite(z).any() else 1
            ax.imshow(z, cmap="gray", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        h, w = self.params["cell_px"]
        rb, cb, hb, wb = self.params["valid_box_px"]["b"]
        ycb, xcb = rb + (hb - 1) / 2, cb + (wb - 1) / 2  # centre of b's valid box, in b's grid
        for c in self.cells:
            colour = "tab:green" if c["congruent"] else "tab:red"
            r0, c0 = c["corner_px"]
            axa.add_patch(
                Rectangle((c0 - 0.5, r0 - 0.5), w, h, fill=False, ec=colour, lw=1.2 if c["congruent"] else 0.6)
            )
            if not np.isfinite(c["correlation"]):
                continue
            # matched patch in b: rotate the cell centre (relative to the centres) by the cell's rotation
            ang = np.deg2rad(c["rotation_deg"])
            cy, cx = c["centre_rel_px"]
            sy, sx = c["shift_px"]
            # the patch lies at (centre + shift) in b rotated by rotation_deg; map back to b's frame
            pr, pc = cy + sy, cx + sx
            cos, sin = np.cos(ang), np.sin(ang)
            corners = []
            for dy, dx in ((-h / 2, -w / 2), (-h / 2, w / 2), (h / 2, w / 2), (h / 2, -w / 2)):
                yy, xx = pr + dy, pc + dx
                # inverse of the display rotation by +ang (counter-clockwise): rotate by -ang
                xb = cos * xx - sin * yy
                yb = sin * xx + cos * yy
                corners.append((xb + xcb, yb + ycb))
            axb.add_patch(Polygon(corners, closed=True, fill=False, ec=colour, lw=1.2 if c["congruent"] else 0.6))
        fig.suptitle(
            f"{self.cmc_count} congruent matching cells of {self.n_cells}; score {self.score:.2f}; "
            f"rotation {self.rotation_deg:.1f} deg",
            fontsize=10,
        )
        return fig


def _params(overrides: dict) -> dict:
    if "calibration" in overrides:
        raise ParameterError(
            "calibration is not a comparison parameter: this compare gives the CMC comparison "
            "only; weigh it with ballistix.evidence.weigh(comparison, calibration), or call "
            "bx.compare(a, b, calibration=...), which does both"
        )
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown comparison parameters {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **overrides}
    if p["directions"] not in ("both", "forward"):
        raise ParameterError(f"directions must be 'both' or 'forward', got {p['directions']!r}")
    if p["method"] not in ("high", "original"):
        raise ParameterError(f"method must be 'high' or 'original', got {p['method']!r}")
    for k in ("corr_threshold",):
        if not -1 <= p[k] <= 1:
            raise ParameterError(f"{k} must be in [-1, 1], got {p[k]}")
    for k in ("angle_tolerance_deg", "shift_tolerance_um", "coarse_step_deg", "window_deg", "step_deg"):
        if not (isinstance(p[k], (int, float)) and p[k] > 0):
            raise ParameterError(f"{k} must be a positive number, got {p[k]!r}")
    if not (isinstance(p["candidates"], int) and p["candidates"] >= 1):
        raise ParameterError(f"candidates must be a positive integer, got {p['candidates']!r}")
    return p


def _check_scan(s, name: str) -> Scan:
    if not isinstance(s, Scan):
        raise ParameterError(f"compare expects bx.Scan inputs; {name} is {type(s).__name__}")
    if s.valid_fraction == 0:
        raise ParameterError(f"{name} ({s.meta.get('source', 'scan')}) has no valid points")
    return s


#: A scan first sampled more than this many times coarser than the comparison grid is warned about.
RESOLUTION_FACTOR = 2.0


def _check_resolution(a: Scan, b: Scan, spacing: float) -> list[tuple[str, float, str]]:
    """(side, original spacing in um, message) of each scan first sampled more than
    `RESOLUTION_FACTOR` times coarser than the comparison grid; each is warned (`ResolutionWarning`)."""
    import warnings

    out = []
    grid_um = spacing * 1e6
    for side, s in (("a", a), ("b", b)):
        um = original_spacing_um(s)
        if um is None or um <= RESOLUTION_FACTOR * grid_um * (1 + 1e-6):
            continue
        name = _fingerprint_label(s) or side
        msg = (
            f"scan {side} ({name}) was sampled at {um:.4g} um, {um / grid_um:.3g} times coarser than the "
            f"comparison grid of {grid_um:.4g} um: resampling does not restore the detail it never held, so "
            f"its congruent cells (and any conclusion from them) say little about the gun"
        )
        warnings.warn(ResolutionWarning(msg), stacklevel=3)
        out.append((side, um, msg))
    return out


def _fingerprint_label(s: Scan) -> str | None:
    lab = s.meta.get("labels")
    if isinstance(lab, dict) and lab.get("exhibit") is not None:
        return str(lab["exhibit"])
    return str(s.meta["source"]).rsplit("/", 1)[-1] if "source" in s.meta else None


def _fingerprint(s: Scan) -> dict[str, Any]:
    z = np.ascontiguousarray(s.heights)
    d = {
        "heights_sha256": hashlib.sha256(z.tobytes() + str(z.dtype).encode() + str(z.shape).encode()).hexdigest(),
        "shape": list(s.shape),
        "spacing_m": [s.dx, s.dy],
    }
    for k in ("sha256", "source"):
        if k in s.meta:
            d[k] = s.meta[k]
    if s.meta.get("processing"):
        d["processing"] = processing_signature(s.meta["processing"])
    d["population"] = population(s.meta)
    label = _fingerprint_label(s)
    if label is not None:
        d["label"] = label
    return d


def _valid_box(z: np.ndarray) -> list[int]:
    """[row, col, height, width] of the bounding box of the valid points."""
    rows = np.flatnonzero(~np.isnan(z).all(1))
    cols = np.flatnonzero(~np.isnan(z).all(0))
    return [int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)]


def _downsample(z: np.ndarray, f: int) -> np.ndarray:
    ny, nx = (z.shape[0] // f) * f, (z.shape[1] // f) * f
    blocks = z[:ny, :nx].reshape(ny // f, f, nx // f, f)
    valid = ~np.isnan(blocks)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(valid, blocks, 0).sum((1, 3)) / valid.sum((1, 3))
    out[valid.sum((1, 3)) < f * f / 2] = np.nan
    return out.astype(np.float32)


#: Conjugate spectra of one coarse reference kept for reuse, one per FFT size (targets of other
#: sizes need other FFT sizes); the oldest is dropped beyond this many.
COARSE_SPECTRA_KEPT = 16


class _CoarseReference:
    """The reference side of `coarse_rotations`, computed once: the surface reduced ``factor``
    times and centred (missing points as zero), its norm, and its conjugate spectrum at each
    FFT size asked for."""

    def __init__(self, a: np.ndarray, factor: int):
        sa = _downsample(a, factor)
        self.factor = factor
        self.z = np.where(np.isnan(sa), 0, sa - np.nanmean(sa))
        self.norm = np.sqrt((self.z.astype(np.float64) ** 2).sum())
        self._spectra: dict[tuple[int, int], np.ndarray] = {}

    def spectrum(self, shape: tuple[int, int]) -> np.ndarray:
        """``conj(rfft2(z, s=shape))``, computed the first time it is asked for."""
        import scipy.fft as sfft

        A = self._spectra.get(shape)
        if A is None:
            A = np.conj(sfft.rfft2(self.z, s=shape, workers=1))
            if len(self._spectra) >= COARSE_SPECTRA_KEPT:
                self._spectra.pop(next(iter(self._spectra), None), None)
            self._spectra[shape] = A
        return A


def coarse_rotations(
    a: np.ndarray,
    b: np.ndarray,
    *,
    factor: int = 4,
    step_deg: float = 3.0,
    candidates: int = 3,
    min_separation_deg: float = 15.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Best rotations of ``b`` onto ``a`` over the full circle from whole-surface correlation.

    Both surfaces are reduced ``factor`` times; for each rotation the peak of
    the normalised cross-correlation over all translations (NaN as zero after
    removing the mean) is recorded. Returns the ``candidates`` best
    rotations (local maxima at least ``min_separation_deg`` apart) and the
    whole curve (one value per ``step_deg``).
    """
    return _coarse_rotations(_CoarseReference(a, factor), b, step_deg, candidates, min_separation_deg)


def _coarse_rotations(
    ref: _CoarseReference, b: np.ndarray, step_deg: float, candidates: int, min_separation_deg: float = 15.0
) -> tuple[np.ndarray, np.ndarray]:
    """`coarse_rotations` with the reference side already computed (`_CoarseReference`)."""
    import scipy.fft as sfft

    za, na = ref.z, ref.norm
    sb = _downsample(b, ref.factor)
    diag = int(np.ceil(np.hypot(*sb.shape)))  # the rotated target fits in a diag x diag canvas
    shape = tuple(sfft.next_fast_len(n + diag, real=True) for n in za.shape)  # no wrap-around
    A = ref.spectrum(shape)
    angles = np.arange(0.0, 360.0, step_deg)
    # one turn at a time, so that its arrays stay in the processor's cache
    buf = np.zeros(shape, np.float32)  # the zero padding stays zero
    spec = np.empty((shape[0], shape[1] // 2 + 1), np.complex64)
    cc = np.empty(shape, np.float32)
    peak, norms = np.empty(len(angles)), np.empty(len(angles))
    for i, ang in enumerate(angles):
        r = rotate_nan(sb, ang, (diag, diag))
        z = np.where(np.isnan(r), 0, r - np.nanmean(r))
        norms[i] = np.sqrt((z.astype(np.float64) ** 2).sum())
        buf[:diag, :diag] = z
        spec = rfft2_into(buf, spec)
        spec *= A
        peak[i] = irfft2_into(spec, shape[1], cc).max()
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = peak / (na * norms)
    curve = np.nan_to_num(curve, nan=-1.0)
    order = np.argsort(-curve)
    chosen: list[float] = []
    for i in order:
        if all(abs(angle_diff(angles[i], c)) >= min_separation_deg for c in chosen):
            chosen.append(float(angles[i]))
        if len(chosen) == candidates:
            break
    return np.array(chosen), curve


def _cell_search(ref: np.ndarray, p: dict) -> CellSearch:
    """The cells of ``ref`` and their transforms, ready to be searched for (`CellSearch`)."""
    return CellSearch(make_cells(ref, p["grid"], p["max_missing"]), p["region_factor"], p["min_overlap"])


def _direction(
    search: CellSearch, tgt, angles: np.ndarray, p: dict, spacing: float, memo: dict | None = None
) -> dict[str, Any]:
    """One direction: the reference's cells (``search``) searched in ``tgt`` (an array or a
    `Target`) at each of ``angles``; ``memo`` as in `CellSearch.search`."""
    cells = search.cells
    res = search.search(tgt, angles, memo=memo)
    tol_px = p["shift_tolerance_um"] * 1e-6 / spacing
    con = congruence(
        angles,
        res["corr"],
        res["shift"],
        corr_threshold=p["corr_threshold"],
        angle_tolerance_deg=p["angle_tolerance_deg"],
        shift_tolerance_px=tol_px,
        tau=p["tau"],
    )
    # each cell's best rotation (index into angles), used for its record and to rank candidates
    best = np.where(np.isnan(res["corr"]), -np.inf, res["corr"]).argmax(0) if len(cells) else np.zeros(0, int)
    return {"cells": cells, "search": res, "congruence": con, "angles": angles, "best": best}


def _count(d: dict, method: str) -> int:
    return int(d["congruence"][method]["count"])


def _summary(d: dict, method: str) -> dict[str, Any]:
    con = d["congruence"]
    return {
        "n_cells": len(d["cells"]),
        "original": con["original"]["count"],
        "high": con["high"]["count"],
        "high_passed": bool(con["high"].get("passed", False)),
        "rotation_deg": con[method]["rotation_deg"],
        "shift_px": con[method]["shift"],
        "angles_deg": d["angles"],
        "theta_counts": con["theta_counts"],
    }


def _check_inputs(a, b) -> tuple[Scan, Scan, float]:
    """Both scans checked (`_check_scan`) and on one square grid; returns them and the spacing (m)."""
    a, b = _check_scan(a, "a"), _check_scan(b, "b")
    if abs(a.dx - b.dx) > 1e-3 * a.dx or abs(a.dy - b.dy) > 1e-3 * a.dy or abs(a.dx - a.dy) > 1e-3 * a.dx:
        raise ParameterError(
            f"compare needs both scans on one square grid; got {a.dx:g} x {a.dy:g} m and "
            f"{b.dx:g} x {b.dy:g} m (resample with preprocess)"
        )
    return a, b, a.dx


def _valid_region(s: Scan) -> tuple[list[int], np.ndarray]:
    """The bounding box of the valid data (`_valid_box`) and the float32 heights inside it: the
    cells are laid on this box."""
    box = _valid_box(s.heights)
    return box, s.heights[box[0] : box[0] + box[2], box[1] : box[1] + box[3]].astype(np.float32)


def _window(centre, p: dict) -> np.ndarray:
    """Angles within +-``window_deg`` of ``centre``, ``step_deg`` apart."""
    return centre + np.arange(-p["window_deg"], p["window_deg"] + 1e-9, p["step_deg"])


def _forward_angles(q: Query, zb: np.ndarray, p: dict) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The rotation grids of the forward direction (one window per coarse pose candidate) and the
    candidates of the full-circle search (None for a fixed grid)."""
    rot = p["rotation"]
    if not isinstance(rot, str):
        arr = np.asarray(rot, dtype=float).ravel()
        if arr.size == 0 or not np.isfinite(arr).all():
            raise ParameterError("rotation angles must be a non-empty array of finite degrees")
        return [arr], None
    if rot == "reference":
        return [REFERENCE_ANGLES.copy()], None
    if rot == "full":
        candidates, _ = _coarse_rotations(q.coarse, zb, p["coarse_step_deg"], p["candidates"])
        return [_window(c, p) for c in candidates], candidates
    raise ParameterError(f"rotation must be 'full', 'reference' or an array of angles, got {rot!r}")


def _best_window(q: Query, zb: np.ndarray, windows: list[np.ndarray], p: dict, spacing: float) -> dict:
    """The forward direction (a's cells searched in b) in the window with the most congruent
    cells, then the best-correlating ones. ``b`` is centred once, and an angle in two windows
    (pose candidates 15 degrees apart) is searched once."""
    best, target, memo = None, Target(zb), {}
    for angles in windows:
        d = _direction(q.cell_search, target, angles, p, spacing, memo)
        con = d["congruence"][p["method"]]
        corr = d["search"]["corr"][d["best"], np.arange(len(d["cells"]))]
        key = (con["count"], float(np.mean(corr[con["mask"]])) if con["count"] else 0.0)
        if best is None or key > best[0]:
            best = (key, d)
    return best[1]


def _pose_rotation(ab: dict, method: str) -> float:
    """The forward direction's consensus rotation (deg), or the middle of its grid when it has none."""
    theta = ab["congruence"][method]["rotation_deg"]
    if not np.isfinite(theta):
        theta = float(ab["angles"][len(ab["angles"]) // 2])
    return theta


def _search_directions(q: Query, zb, p: dict, spacing: float) -> tuple[dict[str, dict], float, np.ndarray | None]:
    """The pose search: the forward direction ("ab") and, with ``directions="both"``, the reverse
    ("ba": b's cells searched in a, around the opposite rotation, or the same grid mirrored).
    Returns the directions, the forward rotation (deg) and the coarse pose candidates (or None)."""
    windows, candidates = _forward_angles(q, zb, p)
    ab = _best_window(q, zb, windows, p, spacing)
    theta = _pose_rotation(ab, p["method"])
    dirs = {"ab": ab}
    if p["directions"] == "both":
        back = _window(-theta, p) if candidates is not None else -windows[0][::-1]
        dirs["ba"] = _direction(_cell_search(zb, p), q.target, back, p, spacing)
    return dirs, theta, candidates


def _cell_records(ab: dict, method: str, box_a: list[int], spacing: float) -> list[dict[str, Any]]:
    """One record per reference cell of the forward direction (see `Comparison.cells`)."""
    mask = ab["congruence"][method]["mask"]
    res, cl = ab["search"], ab["cells"]
    corr = res["corr"]
    out = []
    for k in range(len(cl)):
        r = int(ab["best"][k])
        sy, sx = (float(v) for v in res["shift"][r, k])
        cy, cx = (float(v) for v in cl.centre[k])
        out.append(
            {
                "index": [int(v) for v in cl.index[k]],
                "corner_px": [int(cl.corner[k][0] + box_a[0]), int(cl.corner[k][1] + box_a[1])],  # in a's grid
                "centre_rel_px": [cy, cx],  # from the centre of a's valid box
                "centre_m": [
                    float((cl.corner[k][1] + box_a[1] + (cl.shape[1] - 1) / 2) * spacing),
                    float((cl.corner[k][0] + box_a[0] + (cl.shape[0] - 1) / 2) * spacing),
                ],
                "correlation": float(corr[r, k]) if np.isfinite(corr[r, k]) else float("nan"),
                "rotation_deg": float(ab["angles"][r] % 360),
                "shift_px": [sy, sx],
                "shift_m": [sx * spacing, sy * spacing],
                "valid_fraction": float(cl.valid_fraction[k]),
                "congruent": bool(mask[k]),
            }
        )
    return out


def _translation(shift, spacing: float) -> np.ndarray:
    """The consensus shift (row, col) in pixels as (x, y) in metres (NaN when there is none)."""
    if np.all(np.isfinite(shift)):
        return np.array([shift[1] * spacing, shift[0] * spacing])
    return np.array([np.nan, np.nan])


def _recorded_params(p: dict, cell_px, boxes: dict, spacing: float, candidates) -> dict[str, Any]:
    """The parameters as recorded in `Comparison.params`: JSON-ready, with the cell size, both
    valid boxes, the spacing and the coarse pose candidates."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    if isinstance(out["rotation"], np.ndarray):
        out["rotation"] = out["rotation"].tolist()
    out["cell_px"] = list(cell_px)
    out["valid_box_px"] = boxes
    out["spacing_m"] = spacing
    if candidates is not None:
        out["coarse"] = {"candidates_deg": candidates.tolist()}
    return out


def _params_key(p: dict) -> str:
    """The comparison parameters as text, to tell whether two sets are the same."""
    items = ((k, np.asarray(v).tolist() if isinstance(v, (np.ndarray, list, tuple)) else v) for k, v in p.items())
    return repr(sorted(items))


class Query:
    """A processed scan prepared to be compared with many others: `compare`'s ``a``.

    What a comparison computes from ``a`` alone is computed once and kept
    for every comparison with it: its valid box, its cells and their
    Fourier transforms (``a``'s cells are searched in each ``b``), ``a``
    centred for the reverse direction (each ``b``'s cells are searched in
    ``a``), its reduced surface and spectra for the coarse pose search, and
    its fingerprint. ``compare(query, b)`` gives the same `Comparison` as
    ``compare(scan, b, **params)``, bit for bit; `compare_many` prepares a
    scan shared by several pairs as their ``a`` by itself, and a search's
    stage 2 compares one query with every candidate (see docs/search.md,
    "Verification at scale").

    Sent to a worker process, a query travels as its scan, its parameters
    and a checksum of both; each worker prepares it once and keeps it for
    the next pairs (the last `WORKER_QUERIES` queries).

    Parameters
    ----------
    scan : Scan
        A processed surface (see `preprocess`).
    **params
        Comparison parameters (see `compare`).

    Examples
    --------
    >>> from ballistix.features.comparison import Query, compare
    >>> q = Query(query_scan)  # doctest: +SKIP
    >>> results = [compare(q, b) for b in candidates]  # doctest: +SKIP
    """

    def __init__(self, scan: Scan, **params):
        self.params = _params(params)
        self.scan = _check_scan(scan, "query")
        self._token: str | None = None
        self._fingerprint: dict | None = None
        self._shared: dict[str, Any] = {"region": _valid_region(scan)}  # shared by a worker's copies

    @property
    def region(self) -> tuple[list[int], np.ndarray]:
        """The valid box [row, col, height, width] and the float32 heights inside it."""
        return self._shared["region"]

    def _get(self, name: str, make):
        v = self._shared.get(name)
        if v is None:
            v = self._shared[name] = make()
        return v

    @property
    def cell_search(self) -> CellSearch:
        """The query's cells and their transforms (the forward direction's reference)."""
        return self._get("cells", lambda: _cell_search(self.region[1], self.params))

    @property
    def target(self) -> Target:
        """The query centred once: the target of the reverse direction."""
        return self._get("target", lambda: Target(self.region[1]))

    @property
    def coarse(self) -> _CoarseReference:
        """The reference side of the coarse pose search."""
        return self._get("coarse", lambda: _CoarseReference(self.region[1], int(self.params["coarse_factor"])))

    def fingerprint(self) -> dict[str, Any]:
        """A fresh copy of `_fingerprint` of the scan (results add to theirs)."""
        import copy

        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.scan)
        return copy.deepcopy(self._fingerprint)

    def token(self) -> str:
        """SHA-256 of the heights, the spacing and the parameters: what the prepared arrays depend on."""
        if self._token is None:
            z = np.ascontiguousarray(self.scan.heights)
            h = hashlib.sha256(z.tobytes())
            h.update(f"{z.dtype}{z.shape}{self.scan.dx!r}{self.scan.dy!r}{_params_key(self.params)}".encode())
            self._token = h.hexdigest()
        return self._token

    def __reduce__(self):
        return _worker_query, (self.scan, self.params, self.token())

    def __repr__(self) -> str:
        return f"<Query {_fingerprint_label(self.scan) or 'scan'} {self.scan.shape}>"


#: Prepared queries a worker process keeps (see `Query`): a search sends one query to many pairs.
WORKER_QUERIES = 2
_worker_queries: dict[str, Query] = {}


def _worker_query(scan: Scan, params: dict, token: str) -> Query:
    """A `Query` arriving in a worker process: the one prepared here before for the same token,
    with this scan (its metadata is the sender's), or a new one, kept for the next pairs."""
    kept = _worker_queries.get(token)
    if kept is None:
        q = Query(scan, **params)
        q._token = token
        _worker_queries[token] = q
        while len(_worker_queries) > WORKER_QUERIES:
            _worker_queries.pop(next(iter(_worker_queries), None), None)
        return q
    q = Query.__new__(Query)  # (not copy.copy: that would pickle through __reduce__, back here)
    q.__dict__.update(kept.__dict__)  # shares the prepared arrays (`_shared`) ...
    q.scan, q._fingerprint = scan, None  # ... with this scan and its own fingerprint
    return q


def compare(a: Scan | Query, b: Scan, **params) -> Comparison:
    """Compare two processed breech-face scans with the Congruent Matching Cells method.

    The comparison only: no likelihood ratio (``log10_lr`` is None). ``bx.compare``
    (`ballistix.verify.compare`) compares and then weighs the result with a
    calibration (`ballistix.evidence.weigh`).

    Parameters
    ----------
    a, b : Scan
        Processed surfaces (see `preprocess`) at the same lateral spacing; ``a``
        is the reference, ``b`` the target. ``a`` may be a `Query` (``a``
        prepared once for comparisons with many scans; the same results).
    **params
        Overrides of `DEFAULTS`: ``grid`` (cells per side), ``max_missing``
        (skip cells with more missing data), ``region_factor`` (target region
        side / cell side), ``corr_threshold``, ``angle_tolerance_deg``,
        ``shift_tolerance_um``, ``tau`` (high-CMC rotation test), ``rotation``
        ("full", "reference" or an array of angles), the coarse pose settings
        ``coarse_factor``, ``coarse_step_deg``, ``candidates``, ``window_deg``,
        ``step_deg``; ``directions`` ("both" or "forward"); ``method`` ("original",
        the default, or "high") for ``cmc_count``. With a `Query`, its own
        parameters (any given here must be the same).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import ballistix as bx
    >>> a = bx.preprocess(bx.read_scan("fadul-1-1.x3p"))  # doctest: +SKIP
    >>> b = bx.preprocess(bx.read_scan("fadul-1-2.x3p"))  # doctest: +SKIP
    >>> from ballistix.features.comparison import compare
    >>> res = compare(a, b)  # doctest: +SKIP
    >>> res.cmc_count, res.log10_lr  # a count, not yet weighed (see `ballistix.compare`)  # doctest: +SKIP
    (21, None)
    """
    if isinstance(a, Query):
        if params and _params_key(_params(params)) != _params_key(a.params):
            raise ParameterError(
                "compare was given a Query prepared with other comparison parameters: "
                "prepare it with these (Query(scan, **params)) or leave them out"
            )
        return _compare(a, b)
    p = _params(params)
    _check_scan(a, "a")  # named "a" in its message before b is looked at, as before
    return _compare(Query(a, **p), b)


def _compare(q: Query, b: Scan) -> Comparison:
    """`compare` of a prepared query ``q`` (the reference ``a``) with ``b``."""
    p = q.params
    a, b, spacing = _check_inputs(q.scan, b)
    coarse = _check_resolution(a, b, spacing)  # warned now, recorded in the result
    (box_a, _), (box_b, zb) = q.region, _valid_region(b)
    dirs, theta, candidates = _search_directions(q, zb, p, spacing)
    # the count: the smaller of both directions'; the cells and the pose: the forward direction's
    cmc = int(min(_count(d, p["method"]) for d in dirs.values()))
    ab = dirs["ab"]
    cells = _cell_records(ab, p["method"], box_a, spacing)
    congruent_corr = [c["correlation"] for c in cells if c["congruent"]]
    mean_corr = float(np.mean(congruent_corr)) if congruent_corr else 0.0
    res = Comparison(
        cmc_count=cmc,
        score=float(cmc + (mean_corr if cmc > 0 else 0.0)),
        rotation_deg=float(theta % 360),
        translation=_translation(ab["congruence"][p["method"]]["shift"], spacing),
        cells=cells,
        directions={k: _summary(d, p["method"]) for k, d in dirs.items()},
        params=_recorded_params(p, ab["cells"].shape, {"a": box_a, "b": box_b}, spacing, candidates),
        inputs={"a": q.fingerprint(), "b": _fingerprint(b)},
        warnings=[w for _, _, w in coarse],
        _surfaces=(a, b),
    )
    for side, original_um, _ in coarse:
        res.inputs[side]["original_spacing_um"] = original_um
    _note_segmentation(res, a, b)
    if a.marks and b.marks:  # the other marks both scans carry, the firing pin near this pose
        from .marks import compare_marks

        res.marks = compare_marks(
            a.marks,
            b.marks,
            rotation_deg=res.rotation_deg,
            labels=(res.inputs["a"].get("label", "A"), res.inputs["b"].get("label", "B")),
        )
    return res


# --- segmentation status of both inputs (see docs/comparison.md, "Fields of view and plausibility checks") ---
# A comparison is only as good as the breech-face regions it compares: each side's status of
# `find_breech_face` (ok, doubtful, failed) is recorded in its inputs, and `ballistix.evidence.weigh`
# gives no likelihood ratio when either side is doubtful or failed.


def _note_segmentation(res: Comparison, a: Scan, b: Scan) -> None:
    from .preprocessing import segmentation_status

    for side, s in (("a", a), ("b", b)):
        seg = segmentation_status(s)
        if seg is not None:  # None: no checked region on record (processed elsewhere, a given mask)
            res.inputs[side]["segmentation"] = seg


def _compare_pair(args):
    q, b = args
    res = _compare(q, b)
    res._surfaces = ()  # do not ship copies of both surfaces back from a worker; reattached by the caller
    return res


def process_pool(n_jobs: int):
    """A pool of ``n_jobs`` worker processes for `compare_many` (``executor=``), to keep across
    many calls: started fresh ("spawn"), OpenCV and the FFTs single-threaded in each worker."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .._dask import single_threaded

    if not (isinstance(n_jobs, int) and n_jobs >= 1):
        raise ParameterError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    # "spawn": a forked child can deadlock on locks held by OpenCV/OpenMP threads of the parent
    return ProcessPoolExecutor(
        max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn"), initializer=single_threaded
    )


#: Chunks of pairs handed to each worker process of `compare_many`: a few, so that uneven pairs
#: balance out, each shipping a scan shared by its pairs (a search's query) once.
CHUNKS_PER_WORKER = 4


def compare_many(
    pairs, *, n_jobs: int = 1, progress: bool = True, client=None, executor=None, **params
) -> list[Comparison]:
    """Compare many pairs of processed scans; results in the order of ``pairs``.

    Parameters
    ----------
    pairs : iterable of (Scan, Scan)
    n_jobs : int
        Worker processes (1 = in this process). Each worker runs OpenCV and
        the FFTs single-threaded. With ``executor``, the number of its
        workers: each is handed a few chunks of pairs (a scan shared by the
        pairs of a chunk is shipped once); left at 1, pairs are handed one
        at a time, which keeps any number of workers busy.
    progress : bool
        Show a progress bar (tqdm).
    client : distributed.Client or str, optional
        Run on a Dask cluster instead (a client or a scheduler address);
        results are identical to a local run.
    executor : concurrent.futures.Executor, optional
        Run on these workers instead of starting new ones (give their number
        as ``n_jobs``): a `process_pool` kept across many small batches saves
        starting a pool (about a second) for each.
    **params
        Passed to `compare` (no likelihood ratios: ``bx.compare_many`` weighs them too).

    A scan that is the ``a`` of several pairs (a search's query) is prepared
    once (`Query`): its cells, their transforms and its coarse pose spectra
    are computed once here or once in each worker, not once a pair.
    """
    from tqdm.auto import tqdm

    p = _params(params)
    pairs = list(pairs)
    if not (isinstance(n_jobs, int) and n_jobs >= 1):
        raise ParameterError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    # each scan that is an ``a`` is prepared once, for all its pairs (in every worker too: `Query`)
    queries: dict[int, Query] = {}
    for a, _ in pairs:
        if id(a) not in queries:
            queries[id(a)] = Query(_check_scan(a, "a"), **p)
    jobs = [(queries[id(a)], b) for a, b in pairs]
    if client is not None:
        from .._dask import dask_map

        results = dask_map(_compare_pair, jobs, client)
    elif executor is None and n_jobs == 1:
        return [_compare(q, b) for q, b in tqdm(jobs, disable=not progress, desc="compare")]
    else:
        # n_jobs workers get a few chunks each; a caller's executor of untold size, one pair at a time
        chunksize = max(1, len(jobs) // (CHUNKS_PER_WORKER * n_jobs)) if n_jobs > 1 else 1
        with process_pool(n_jobs) if executor is None else nullcontext(executor) as ex:
            results = list(
                tqdm(
                    ex.map(_compare_pair, jobs, chunksize=chunksize),
                    total=len(jobs),
                    disable=not progress,
                    desc="compare",
                )
            )
    for r, (a, b) in zip(results, pairs):
        r._surfaces = (a, b)
    return results
