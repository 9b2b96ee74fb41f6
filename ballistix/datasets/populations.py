"""Simulated populations on which a fixed CMC count means different things.

A fixed rule ("6 or more congruent matching cells is a link") was set on one
gun model scanned by one instrument. On real held-out scans of another make,
scanned by a photometric-stereo instrument, 19 of 121 different-gun pairs
reached 6-10 CMCs, 18 of them from one batch of cases scanned together (18 of
that batch's 29 different-gun pairs), while same-gun pairs of the batch reached
15-18. This module builds simulated populations that fail the fixed count in
the same ways, on top of `fire` and `make_firearm` (their default output is
unchanged), so that population-specific calibration and cohort score
normalisation can be developed and tested on known ground truth.

Three mechanisms, combined by the population *kinds* in `POPULATIONS`:

- **scanning batches with shared instrument artefacts**: a batch is one
  scanning session. Every scan of a batch carries the same artefact field in
  the instrument's frame (a directional texture at the 30-150 um scale, a
  faint periodic pattern, a low/mid-frequency shape error: what a
  photometric-stereo instrument's lighting and reconstruction leave, and
  what the 16-250 um band-pass keeps), and the cases of a batch are mounted
  in about the same orientation, so different guns of one batch share
  correlated structure at a consistent pose;
- **shared subclass marks**: the guns of one manufacturing run share a
  whole breech-face surface (the tool's own irregularities copied onto each
  slide) with weight ``subclass_weight``;
- **another instrument**: ``"photometric-stereo"`` scans at 7.4 um with
  smoother heights, low-frequency form errors, few drop-outs but more
  outliers (`INSTRUMENTS`).

Every scan's ``meta["labels"]`` carries the keys a calibration is chosen by
(``population``, ``make``, ``model``, ``calibre``, ``instrument``,
``batch``) besides ``exhibit``, ``firearm`` and ``shot``; ``meta["truth"]``
holds the ground truth of `fire` plus the instrument and batch settings
(``truth["session"]``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..errors import ParameterError
from ..scan import Scan
from .simulate import (
    MODELS,
    Firearm,
    _resolution,
    _seed_sequence,
    _smooth_field,
    _spectral_field,
    fire,
    gun_plan,
    make_firearm,
)

__all__ = [
    "POPULATIONS",
    "INSTRUMENTS",
    "Session",
    "make_session",
    "scan_in_session",
    "simulate_population",
    "iter_population",
]

#: Instruments. ``spacing_um``: native lateral spacing (scans are never finer
#: than the requested resolution); ``difficulty``: overrides of the firing's
#: instrument settings (noise, drop-outs, spikes); ``smoothing_um``: Gaussian
#: sigma of the instrument's lateral transfer (0 = none); ``form_um`` and
#: ``form_scale_um``: RMS and correlation length of a per-scan low-frequency
#: height error; ``outliers``: share of extra outlier points, ``outlier_um``
#: their height range.
INSTRUMENTS: dict[str, dict[str, Any]] = {
    "confocal": dict(
        description="the simulator's confocal microscope, NA 0.30 (as `fire`)",
        spacing_um=None,
        difficulty={},
        smoothing_um=0.0,
        form_um=0.0,
        form_scale_um=800.0,
        outliers=0.0,
        outlier_um=(2.0, 10.0),
    ),
    "photometric-stereo": dict(
        description="photometric stereo (elastic-gel sensor): 7.4 um, smooth heights, "
        "low-frequency form errors, few drop-outs, more outliers",
        spacing_um=7.4,
        difficulty=dict(noise_um=0.015, dropout=0.001, spikes=0.0),
        smoothing_um=3.5,
        form_um=0.6,
        form_scale_um=700.0,
        outliers=4e-4,
        outlier_um=(1.0, 8.0),
    ),
}

#: Population kinds: settings of `simulate_population` (each can be overridden).
#:
#: - ``models``: make/models the guns are drawn from (in turn, one per run);
#: - ``run_size``: guns per manufacturing run (1 = every gun its own run);
#: - ``subclass_weight``: share of a gun's breech-face variance that is the
#:   run's shared surface (0 = none);
#: - ``instrument``: a key of `INSTRUMENTS`;
#: - ``difficulty``: the firings' imperfections (see `DIFFICULTIES`);
#: - ``artefact_um``: RMS (um, before the band-pass) of the batch's artefact
#:   field; ``artefact_share``: share of its variance common to the batch
#:   (the rest differs from scan to scan); ``artefact_mix``: weights of the
#:   directional texture, the periodic pattern and the low/mid-frequency shape;
#: - ``rotation_spread_deg``: spread (SD) of the mounting rotation around the
#:   batch's orientation; None = every case at a uniformly random rotation.
POPULATIONS: dict[str, dict[str, Any]] = {
    "ordinary": dict(
        description="confocal scans of guns of several makes, random mounting, no batch effects "
        "(the simulator's default set with labels)",
        models=None,
        run_size=1,
        subclass_weight=0.0,
        instrument="confocal",
        difficulty="realistic",
        artefact_um=0.0,
        artefact_share=1.0,
        artefact_mix=(0.6, 0.25, 0.15),
        rotation_spread_deg=None,
    ),
    "photometric": dict(
        description="one make scanned by photometric stereo, random mounting, no shared artefacts",
        models=["Glock 17"],
        run_size=1,
        subclass_weight=0.0,
        instrument="photometric-stereo",
        difficulty="realistic",
        artefact_um=0.0,
        artefact_share=1.0,
        artefact_mix=(0.6, 0.25, 0.15),
        rotation_spread_deg=None,
    ),
    "batch": dict(
        description="one make scanned by photometric stereo in batches: scans of a batch share the "
        "session's artefact field and a similar mounting orientation",
        models=["Glock 17"],
        run_size=1,
        subclass_weight=0.0,
        instrument="photometric-stereo",
        difficulty="realistic",
        artefact_um=0.95,
        artefact_share=0.85,
        artefact_mix=(0.6, 0.25, 0.15),
        rotation_spread_deg=3.0,
    ),
    "batch-moderate": dict(
        description="the batch population with moderate impressions (fewer poor ones): "
        "the batch effect of the held-out real scans, about one different-gun "
        "pair in nine within a batch at 6 or more CMCs",
        models=["Glock 17"],
        run_size=1,
        subclass_weight=0.0,
        instrument="photometric-stereo",
        difficulty="moderate",
        artefact_um=0.95,
        artefact_share=0.85,
        artefact_mix=(0.6, 0.25, 0.15),
        rotation_spread_deg=3.0,
    ),
    "subclass": dict(
        description="one make, all guns from one manufacturing run sharing a strong subclass "
        "surface, confocal, random mounting",
        models=["Ruger P95"],
        run_size=0,
        subclass_weight=0.5,
        instrument="confocal",
        difficulty="realistic",
        artefact_um=0.0,
        artefact_share=1.0,
        artefact_mix=(0.6, 0.25, 0.15),
        rotation_spread_deg=None,
    ),
}
_FOV_UM = 3750.0  # field of view of the simulated scans (as RESOLUTIONS: 600 x 6.25 um)


# ----------------------------------------------------------------------------
# sessions (scanning batches)
# ----------------------------------------------------------------------------


@dataclass(eq=False)
class Session:
    """One scanning session (batch) of an instrument.

    ``artefact`` is the session's shared artefact field in the instrument's
    frame (metres, on the scan grid; zeros when the population has none),
    ``mount_deg`` the orientation cases are mounted in (None: random).
    """

    id: str
    instrument: str
    spacing_m: float
    size_px: int
    seed: np.random.SeedSequence = field(repr=False)
    artefact: np.ndarray = field(repr=False)
    mount_deg: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _artefact_field(rng: np.random.Generator, n: int, spacing_um: float, mix) -> np.ndarray:
    """Unit-RMS artefact: directional texture (30-150 um), periodic pattern, low/mid-frequency shape."""
    w_dir, w_per, w_shape = (float(v) for v in mix)
    angle = float(rng.uniform(0, 180))
    texture = _spectral_field(rng, (n, n), spacing_um, 30.0, 150.0, alpha=1.0, aniso=(angle, 6.0))
    period_um = float(rng.uniform(50.0, 120.0))
    a = np.deg2rad(float(rng.uniform(0, 180)))
    yy, xx = np.mgrid[0:n, 0:n] * spacing_um
    phase = rng.uniform(0, 2 * np.pi)
    periodic = np.sqrt(2) * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period_um + phase)
    shape = _spectral_field(rng, (n, n), spacing_um, 120.0, 600.0, alpha=1.0)
    out = np.sqrt(w_dir) * texture + np.sqrt(w_per) * periodic + np.sqrt(w_shape) * shape
    out -= out.mean()
    return out / (out.std() + 1e-30)


def _instrument(name: str) -> dict[str, Any]:
    if name not in INSTRUMENTS:
        raise ParameterError(f"unknown instrument {name!r}; known: {sorted(INSTRUMENTS)}")
    return INSTRUMENTS[name]


def _grid(instrument: str, resolution) -> tuple[float, int]:
    """Scan spacing (um) and size (px) of ``instrument`` at ``resolution``."""
    spacing_um, size_px = _resolution(resolution)
    native = _instrument(instrument)["spacing_um"]
    if native is None or native <= spacing_um:
        return spacing_um, size_px
    return float(native), int(round(_FOV_UM / native))


def make_session(
    session_id: str,
    *,
    seed: int | np.random.SeedSequence = 0,
    instrument: str = "photometric-stereo",
    resolution="standard",
    artefact_um: float = 0.0,
    artefact_mix=(0.6, 0.25, 0.15),
    artefact_share: float = 1.0,
    rotation_spread_deg: float | None = None,
) -> Session:
    """A scanning session: the batch's artefact field and mounting orientation.

    Parameters
    ----------
    session_id : str
        Batch id, written to each scan's ``meta["labels"]["batch"]``.
    seed : int or SeedSequence
        The session's randomness (artefact field, mounting orientation).
    instrument : str
        A key of `INSTRUMENTS`.
    resolution : "full", "standard", "fast" or (spacing_um, size_px)
        Requested scan grid; an instrument with a coarser native spacing
        scans at its own spacing over the same field of view.
    artefact_um : float
        RMS of the artefact field in micrometres (0 = none).
    artefact_mix : 3 non-negative weights
        Variance weights of the directional texture, the periodic pattern and
        the low/mid-frequency shape error.
    artefact_share : float in [0, 1]
        Share of the artefact variance common to all scans of the session.
    rotation_spread_deg : float or None
        SD of the mounting rotation around the session's orientation; None =
        each case at a uniformly random rotation.

    Returns
    -------
    Session

    Examples
    --------
    >>> s = make_session("B1", seed=0, resolution="fast", artefact_um=0.5)
    >>> s.artefact.shape == (s.size_px, s.size_px)
    True
    """
    ss = _seed_sequence(seed)
    _instrument(instrument)
    if not (isinstance(artefact_um, (int, float)) and 0 <= artefact_um <= 10):
        raise ParameterError(f"artefact_um must be a number in [0, 10] micrometres, got {artefact_um!r}")
    if not (isinstance(artefact_share, (int, float)) and 0 <= artefact_share <= 1):
        raise ParameterError(f"artefact_share must be in [0, 1], got {artefact_share!r}")
    try:
        mix = tuple(float(v) for v in artefact_mix)
    except (TypeError, ValueError):
        raise ParameterError(f"artefact_mix must be 3 non-negative weights, got {artefact_mix!r}") from None
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise ParameterError(f"artefact_mix must be 3 non-negative weights, not all 0, got {artefact_mix!r}")
    if rotation_spread_deg is not None and not (
        isinstance(rotation_spread_deg, (int, float)) and 0 <= rotation_spread_deg <= 180
    ):
        raise ParameterError(f"rotation_spread_deg must be None or in [0, 180], got {rotation_spread_deg!r}")
    spacing_um, n = _grid(instrument, resolution)
    rng = np.random.default_rng(ss)
    mount = float(rng.uniform(0, 360))
    artefact = _artefact_field(rng, n, spacing_um, mix) * artefact_um * 1e-6 if artefact_um > 0 else np.zeros((n, n))
    return Session(
        session_id,
        instrument,
        spacing_um * 1e-6,
        n,
        ss,
        artefact,
        mount if rotation_spread_deg is not None else None,
        {
            "artefact_um": float(artefact_um),
            "artefact_mix": list(mix),
            "artefact_share": float(artefact_share),
            "rotation_spread_deg": rotation_spread_deg,
            "resolution": [spacing_um, n],
        },
    )


def _blur_nan(z: np.ndarray, sigma_px: float) -> np.ndarray:
    valid = ~np.isnan(z)
    num = cv2.GaussianBlur(np.where(valid, z, 0.0), (0, 0), sigmaX=sigma_px)
    den = cv2.GaussianBlur(valid.astype(np.float64), (0, 0), sigmaX=sigma_px)
    return np.where(valid, num / np.maximum(den, 1e-12), np.nan)


def scan_in_session(
    firearm: Firearm,
    shot: int,
    session: Session,
    *,
    seed: int | np.random.SeedSequence,
    difficulty="realistic",
    population: str = "custom",
) -> Scan:
    """Fire one cartridge in ``firearm`` and scan it in ``session``.

    The firing is `fire` (same seed, same impression) at the session's
    instrument grid and mounting rotation; then the instrument's lateral
    smoothing, per-scan form error and outliers, and the session's artefact
    field (its shared part plus a per-scan part) are applied to the measured
    points. A confocal session without artefacts and with random mounting
    gives exactly `fire`'s heights.

    Parameters
    ----------
    firearm : Firearm
    shot : int
        Shot number (the exhibit is ``f"{firearm.id}-{shot + 1}"``).
    session : Session
        From `make_session`.
    seed : int or SeedSequence
        The firing's randomness; the mounting jitter, the instrument's noise
        and the per-scan part of the artefact come from streams derived from
        it, the shared artefact from the session.
    difficulty : str or dict
        As for `fire`; the instrument's settings override its noise,
        drop-outs and spikes.
    population : str
        Written to ``meta["labels"]["population"]``.

    Returns
    -------
    Scan
        Raw scan with ``meta["labels"]`` (exhibit, firearm, make, model,
        calibre, family, manufacturing_run, shot, instrument, batch,
        population) and ``meta["truth"]["session"]``.
    """
    from .simulate import _as_difficulty

    inst = _instrument(session.instrument)
    _, d = _as_difficulty(difficulty)
    d.update(inst["difficulty"])
    ss = _seed_sequence(seed)
    rng_mount = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (7001,)))
    spread = session.settings.get("rotation_spread_deg")
    rot = None if session.mount_deg is None else float(session.mount_deg + rng_mount.normal(0, spread or 0.0)) % 360
    spacing_um, n = session.spacing_m * 1e6, session.size_px
    scan = fire(
        firearm,
        shot,
        seed=ss,
        difficulty=d if inst["difficulty"] else difficulty,
        resolution=(spacing_um, n),
        rotation_deg=rot,
    )
    z = scan.heights
    rng = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (7002,)))
    if inst["smoothing_um"] > 0:
        z = _blur_nan(z, inst["smoothing_um"] / spacing_um)
    if inst["form_um"] > 0:
        z = z + _smooth_field(rng, (n, n), inst["form_scale_um"] / spacing_um) * inst["form_um"] * 1e-6
    share = session.settings.get("artefact_share", 1.0)
    a_um = session.settings.get("artefact_um", 0.0)
    if a_um > 0:
        own = _artefact_field(rng, n, spacing_um, session.settings["artefact_mix"]) * a_um * 1e-6
        z = z + np.sqrt(share) * session.artefact + np.sqrt(1 - share) * own
    if inst["outliers"] > 0:
        hit = (rng.random((n, n)) < inst["outliers"]) & ~np.isnan(z)
        lo, hi = inst["outlier_um"]
        z = z.copy()
        z[hit] += rng.choice([-1.0, 1.0], int(hit.sum())) * rng.uniform(lo, hi, int(hit.sum())) * 1e-6
    meta = copy.deepcopy(scan.meta)
    meta["labels"].update(instrument=session.instrument, batch=session.id, population=population)
    if session.instrument != "confocal":
        meta["instrument"]["model"] = f"simulated {session.instrument}"
    meta["truth"]["session"] = {
        "batch": session.id,
        "instrument": session.instrument,
        "mount_deg": session.mount_deg,
        "seed_entropy": str(session.seed.entropy),
        "spawn_key": list(session.seed.spawn_key),
        **copy.deepcopy(session.settings),
    }
    return Scan(z, scan.dx, scan.dy, meta)


# ----------------------------------------------------------------------------
# populations
# ----------------------------------------------------------------------------


def _settings(kind: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if kind not in POPULATIONS:
        raise ParameterError(f"unknown population kind {kind!r}; known: {sorted(POPULATIONS)}")
    unknown = set(overrides) - set(POPULATIONS[kind]) - {"description"}
    if unknown:
        raise ParameterError(
            f"unknown population settings {sorted(unknown)}; known: "
            f"{sorted(k for k in POPULATIONS[kind] if k != 'description')}"
        )
    s = {**copy.deepcopy(POPULATIONS[kind]), **overrides}
    if s["models"] is not None:
        if not s["models"] or any(m not in MODELS for m in s["models"]):
            raise ParameterError(f"models must be keys of MODELS, got {s['models']!r}")
    w = s["subclass_weight"]
    if not (isinstance(w, (int, float)) and 0 <= w < 1):
        raise ParameterError(f"subclass_weight must be in [0, 1), got {w!r}")
    if not (isinstance(s["run_size"], (int, np.integer)) and s["run_size"] >= 0):
        raise ParameterError(
            f"run_size must be a non-negative integer (0 = all guns in one run), got {s['run_size']!r}"
        )
    _instrument(s["instrument"])
    return s


def _count(v, name: str) -> int:
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) and v >= 1):
        raise ParameterError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def iter_population(
    kind: str = "batch",
    n_firearms: int = 6,
    shots: int = 4,
    *,
    n_batches: int = 2,
    seed: int = 0,
    resolution="standard",
    **settings,
) -> Iterator[Scan]:
    """Like `simulate_population`, but yields the scans one at a time (one gun in memory at once)."""
    s = _settings(kind, settings)
    n_firearms, shots, n_batches = (
        _count(n_firearms, "n_firearms"),
        _count(shots, "shots"),
        _count(n_batches, "n_batches"),
    )
    _seed_sequence(seed)
    _resolution(resolution)
    models = list(s["models"]) if s["models"] is not None else sorted(MODELS)
    run_size = n_firearms if s["run_size"] == 0 else s["run_size"]
    w = float(s["subclass_weight"])
    sessions = [
        make_session(
            f"B{b + 1:02d}",
            seed=np.random.SeedSequence([int(seed), 3, b]),
            instrument=s["instrument"],
            resolution=resolution,
            artefact_um=s["artefact_um"],
            artefact_mix=s["artefact_mix"],
            artefact_share=s["artefact_share"],
            rotation_spread_deg=s["rotation_spread_deg"],
        )
        for b in range(n_batches)
    ]
    runs: dict[str, np.ndarray] = {}
    for args in gun_plan(n_firearms, seed, models, run_size):
        gun = make_firearm(**args, resolution=resolution)
        if w > 0 and args["run"] is not None:
            if args["run"] not in runs:  # the run's shared surface: a breech face of its own, built once
                runs.clear()
                runs[args["run"]] = make_firearm(
                    args["run"], args["make_model"], seed=args["run_seed"], resolution=resolution
                ).surface
            mixed = np.sqrt(w) * runs[args["run"]] + np.sqrt(1 - w) * gun.surface
            gun = dataclasses.replace(gun, surface=mixed.astype(np.float32))  # its pin and shear marks kept
        for k, shot_seed in enumerate(args["seed"].spawn(shots)):
            session = sessions[k % n_batches]
            if s["instrument"] == "confocal" and s["artefact_um"] == 0 and s["rotation_spread_deg"] is None:
                scan = fire(gun, k, seed=shot_seed, difficulty=s["difficulty"], resolution=resolution)
                scan.meta["labels"].update(instrument="confocal", batch=session.id, population=kind)
                scan.meta["truth"]["session"] = {
                    "batch": session.id,
                    "instrument": "confocal",
                    "mount_deg": None,
                    **copy.deepcopy(session.settings),
                }
            else:
                scan = scan_in_session(gun, k, session, seed=shot_seed, difficulty=s["difficulty"], population=kind)
            scan.meta["labels"]["subclass_weight"] = w
            yield scan


def simulate_population(
    kind: str = "batch",
    n_firearms: int = 6,
    shots: int = 4,
    *,
    n_batches: int = 2,
    seed: int = 0,
    resolution="standard",
    **settings,
) -> list[Scan]:
    """Simulate a labelled population of raw scans of one of the `POPULATIONS` kinds.

    Shot ``k`` of every gun is scanned in batch ``k % n_batches`` (round
    robin), so with ``shots=4, n_batches=2`` each batch holds two shots of
    every gun: same-gun and different-gun pairs both within and across
    batches.

    Parameters
    ----------
    kind : {"ordinary", "photometric", "batch", "subclass"}
        ``"ordinary"``: confocal scans of guns of all makes, as `simulate`
        (the guns and heights equal ``simulate(n_firearms, shots, seed=seed,
        resolution=resolution)``); ``"photometric"``: one make (Glock 17) by
        photometric stereo; ``"batch"``: the same with batch artefacts
        (``artefact_um`` 0.95, 85 % shared in a batch) and similar mounting
        (3 degrees SD); ``"subclass"``: one run of Ruger P95 slides sharing
        half of their breech-face variance. See `POPULATIONS`.
    n_firearms, shots, n_batches : int
        Guns, shots per gun, scanning batches.
    seed : int
        Everything is deterministic given the seed and the other arguments.
    resolution : "full", "standard", "fast" or (spacing_um, size_px)
        Confocal grid; photometric stereo scans at its native 7.4 um unless
        the requested grid is coarser ("fast": 12.5 um for tests).
    **settings
        Overrides of the kind's settings (`POPULATIONS`), e.g.
        ``artefact_um=0.8`` or ``subclass_weight=0.7``.

    Returns
    -------
    list of Scan
        Raw scans; ``meta["labels"]`` holds exhibit, firearm, shot, make,
        model, calibre, family, manufacturing_run, instrument, batch,
        population and subclass_weight; ``meta["truth"]`` the ground truth.

    Examples
    --------
    >>> import ballistix as bx
    >>> scans = bx.datasets.simulate_population("batch", n_firearms=2, shots=2, n_batches=2, resolution="fast")
    >>> [(s.meta["labels"]["exhibit"], s.meta["labels"]["batch"]) for s in scans]
    [('F0001-1', 'B01'), ('F0001-2', 'B02'), ('F0002-1', 'B01'), ('F0002-2', 'B02')]
    """
    return list(
        iter_population(kind, n_firearms, shots, n_batches=n_batches, seed=seed, resolution=resolution, **settings)
    )
