"""Synthetic 3D scans of fired 9 mm cartridge cases, with ground truth.

The simulator builds each gun's breech face once (class marks shared by the
make/model's machining *kind*, subclass marks shared *exactly* by slides of
one manufacturing run, individual marks of its own), then "fires" cartridges
in it. Each firing is an imperfect copy of the breech face pressed into a
primer, scanned by a confocal-like instrument:

- geometry of a 9 mm Luger case head as seen by a 3.75 mm field of view: the
  primer (4.4 mm across) with a rounded edge, the gap to the primer pocket,
  the case head around it; a deep firing-pin crater (sometimes off-centre),
  a raised ring of primer metal that flowed back into the firing-pin aperture,
  for some guns an aperture shear or a firing-pin drag lobe; a residual tilt
  and dome;
- the firing pin's impression in the model's tip shape (`FIRING_PIN_SHAPES`)
  with the pin tip's own tool marks, and for guns with an aperture shear the
  aperture edge's striations across the sheared sector, reproduced shot to
  shot with variation;
- the gun's marks transferred with a random pose (full 0-360 degree rotation,
  translation), contact-pressure amplitude, partial transfer (patches where the
  primer did not touch), loss of the finest detail, and a share of poor
  impressions;
- primer roughness that does not come from the gun, instrument noise and
  spikes, and missing data where a real instrument measures nothing: slopes
  steeper than the objective's acceptance angle (crater walls, the aperture
  step, the primer edge), the crater floor below the depth window, and random
  clusters of drop-outs;
- optionally (``make_firearm(..., crater="realistic")``, ``simulate(...,
  crater="realistic")``) a crater shaped after the raw Fadul scans: the pin's
  tip pressed in with a rounded rim whose upper wall, carrying the pin's marks,
  is measured down to the objective's acceptance angle and the depth window
  (the default "v1" crater is a sharp-rimmed hole, bit for bit as before);
- optionally (``view="case_head"``) the whole case head in an 11 mm field, as
  some instruments record it: rim and its chamfer, stamped headstamp
  characters, the primer pocket gap and the primer, the head tilted.

Pose convention (``meta["truth"]``): a point ``g`` of the breech face in the
gun's frame (metres, x to the right, y down, origin on the firing-pin axis)
appears in the scan at ``p = R(rotation_deg) @ g + firing_pin_center_m``,
with ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` acting on (x, y) and scan
coordinates in metres from the top-left corner of the grid (x along columns,
y along rows). Two shots ``a`` and ``b`` of one gun are therefore related by
``p_b = R(rot_b - rot_a) @ (p_a - c_a) + c_b``.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import numpy as np
from scipy import special

from .._version import __version__
from ..errors import ParameterError
from ..scan import Scan

__all__ = [
    "simulate",
    "iter_simulate",
    "make_firearm",
    "fire",
    "Firearm",
    "DIFFICULTIES",
    "MODELS",
    "RESOLUTIONS",
    "CASE_HEAD_RESOLUTIONS",
    "VIEWS",
    "FIRING_PIN_SHAPES",
    "CRATERS",
]

#: Makes/models the simulator knows. ``family`` is the kind of machining mark
#: on the breech face (the class characteristic), ``shear`` the chance of an
#: aperture shear, ``drag`` of a firing-pin drag lobe; ``pin`` the firing-pin
#: tip's shape (a key of `FIRING_PIN_SHAPES`: the impression's outline and
#: depth profile, shared by every gun of the model) and ``pin_depth_um`` the
#: impression's nominal depth below the primer face (each gun within 8 %).
MODELS: dict[str, dict[str, Any]] = {
    "Ruger P95": dict(
        make="Ruger",
        model="P95",
        family="filed",
        angle_deg=20.0,
        shear=0.6,
        drag=0.0,
        pin="hemispherical",
        pin_depth_um=190.0,
    ),
    "Glock 17": dict(
        make="Glock",
        model="17",
        family="granular",
        angle_deg=0.0,
        shear=0.3,
        drag=0.9,
        pin="rectangular",
        pin_depth_um=150.0,
    ),
    "Smith & Wesson SD9": dict(
        make="Smith & Wesson",
        model="SD9",
        family="arched",
        angle_deg=75.0,
        shear=0.4,
        drag=0.0,
        pin="hemispherical",
        pin_depth_um=170.0,
    ),
    "Hi-Point C9": dict(
        make="Hi-Point",
        model="C9",
        family="circular",
        angle_deg=0.0,
        shear=0.2,
        drag=0.1,
        pin="hemispherical",
        pin_depth_um=200.0,
    ),
    "SIG Sauer P226": dict(
        make="SIG Sauer",
        model="P226",
        family="arched",
        angle_deg=-30.0,
        shear=0.5,
        drag=0.0,
        pin="hemispherical",
        pin_depth_um=180.0,
    ),
    "Beretta 92FS": dict(
        make="Beretta",
        model="92FS",
        family="filed",
        angle_deg=-60.0,
        shear=0.3,
        drag=0.0,
        pin="hemispherical",
        pin_depth_um=170.0,
    ),
    "Taurus PT111": dict(
        make="Taurus",
        model="PT111",
        family="granular",
        angle_deg=0.0,
        shear=0.4,
        drag=0.2,
        pin="hemispherical",
        pin_depth_um=170.0,
    ),
}

#: Firing-pin tip shapes (class characteristics). The impression's outline is the superellipse
#: ``(|u| / a)**outline_power + (|v| / b)**outline_power = 1`` in the pin's own axes (``a`` the crater's lip
#: radius, ``b = aspect * a``, ``u`` along the gun-frame angle ``orientation_deg``); its depth profile is a
#: spherical cap ("hemispherical": a round-nosed pin, as on the Ruger P95, SIG P226 and most hammer-fired
#: pistols) or ``1 - rho**floor_power`` of the outline coordinate ``rho`` ("rectangular": Glock's striker, whose
#: tip is a rounded rectangle in section and leaves the known elongated, flat-floored impression). Each gun
#: varies a little about its model: aspect by ``aspect_sd``, orientation by ``orientation_sd_deg``.
FIRING_PIN_SHAPES: dict[str, dict[str, Any]] = {
    "hemispherical": dict(
        outline_power=2.0, aspect=1.0, aspect_sd=0.01, orientation_deg=0.0, orientation_sd_deg=0.0, floor_power=None
    ),
    "rectangular": dict(
        outline_power=4.0, aspect=0.72, aspect_sd=0.02, orientation_deg=0.0, orientation_sd_deg=3.0, floor_power=3.0
    ),
}

#: Per-firing imperfection settings, from easy to realistic-hard.
#: amplitude: contact-pressure scale range; transfer_loss: share of the breech
#: face that transfers poorly; blur_um: loss of fine detail (Gaussian sigma);
#: primer_rms_um: roughness of the primer itself; noise_um: instrument noise;
#: dropout: share of random missing-data clusters; poor: share of poor
#: impressions; translation_um: spread of the firing-pin position in the field.
DIFFICULTIES: dict[str, dict[str, Any]] = {
    "easy": dict(
        amplitude=(0.9, 1.0),
        transfer_loss=0.0,
        blur_um=1.0,
        primer_rms_um=0.25,
        noise_um=0.02,
        dropout=0.001,
        poor=0.0,
        spikes=1e-5,
        translation_um=40.0,
    ),
    "moderate": dict(
        amplitude=(0.75, 1.0),
        transfer_loss=0.12,
        blur_um=2.0,
        primer_rms_um=0.45,
        noise_um=0.04,
        dropout=0.003,
        poor=0.05,
        spikes=3e-5,
        translation_um=60.0,
    ),
    "realistic": dict(
        amplitude=(0.6, 1.0),
        transfer_loss=0.22,
        blur_um=2.5,
        primer_rms_um=0.6,
        noise_um=0.05,
        dropout=0.006,
        poor=0.1,
        spikes=5e-5,
        translation_um=80.0,
    ),
    "realistic-hard": dict(
        amplitude=(0.5, 1.0),
        transfer_loss=0.32,
        blur_um=3.0,
        primer_rms_um=0.8,
        noise_um=0.08,
        dropout=0.012,
        poor=0.2,
        spikes=1e-4,
        translation_um=100.0,
    ),
}

#: Scan resolutions: "full" is like the raw NIST scans (3.125 um, 1200 points
#: across); "standard" like the processed ones (6.25 um); "fast" for unit tests.
RESOLUTIONS = {"full": (3.125, 1200), "standard": (6.25, 600), "fast": (12.5, 300)}

#: Fields of view: "primer" (default) is a 3.75 mm field on the primer, like the NIST scans;
#: "case_head" shows the whole 9 mm Luger case head (rim, headstamp, primer pocket gap, primer) in one
#: scan, as some instruments record it; "firing_pin" is the primer field again with the instrument's depth
#: window set on the firing-pin impression, as labs scan it for firing-pin comparison: its floor is measured
#: (in the "primer" view, as on the raw NIST scans, it lies below the window), steep walls are still lost.
VIEWS = ("primer", "case_head", "firing_pin")

#: Named resolutions of the "case_head" view (spacing_um, size_px): an 11 mm field. "full" is like the
#: whole-head instrument that prompted the view (7.38 um); "fast" keeps the primer view's 12.5 um so that
#: the same gun's shots can be compared across the two views in unit tests.
CASE_HEAD_RESOLUTIONS = {"full": (7.38, 1500), "standard": (10.0, 1100), "fast": (12.5, 880)}

# 9 mm Luger case head (CIP): rim 9.96 mm across, small pistol primer 4.4 mm; headstamp letters about 0.9 mm
# tall on the annulus between the primer pocket and the rim chamfer
_CASE_RIM_RADIUS_M = 4.98e-3
_CASE_CHAMFER_M = 0.28e-3  # the rim's outer chamfer: it falls away too steeply to be measured
_HEADSTAMP_RADII_M = (2.9e-3, 3.85e-3)
_CASE_HEAD_STREAM = 0xCA5E  # spawn-key suffix of the case-head view's own random stream

_ACCEPTANCE_SLOPE = np.tan(np.deg2rad(17.5))  # NA 0.30 objective
_BREECH_RMS_UM = (1.2, 1.3)  # class-kind and individual marks, before transfer

# Firing-pin and aperture-shear marks (issue 19). Their randomness comes from streams of their own, spawned
# from the gun's and the shot's seeds, so every draw of the breech face, the geometry and the firing stays
# as it was.
_PIN_STREAM = 0xF1A9  # spawn-key suffix of the gun's firing-pin tip and aperture-edge tool marks
_MARKS_STREAM = 0xF1A8  # spawn-key suffix of a shot's firing-pin and shear transfer
#: The pin tip's individual tool marks (RMS before transfer, um, drawn per gun) and wavelengths (um). A pin tip
#: is a small turned and polished part: finer and shallower marks than the filed or milled breech face
#: (1.2-1.3 um), pressed in under a much higher contact pressure, so they transfer at a fraction of a
#: micrometre; CMX studies of firing-pin impressions compare marks of about this size (sub-micrometre after
#: their band-pass).
_PIN_MARKS_RMS_UM = (0.4, 0.8)
_PIN_MARKS_BAND_UM = (6.0, 150.0)
#: The pin-tip grid covers this radius about the firing-pin axis (the largest crater lip, 0.62 mm, with room).
_PIN_FIELD_RADIUS_M = 0.75e-3
#: Aperture-shear striations: the aperture edge's own tool marks scraped across the flowback metal. Cut,
#: not pressed, so deeper than the pin's marks: RMS drawn per gun (um), wavelengths (um) of the 1-D profile.
_SHEAR_RMS_UM = (1.0, 2.0)
_SHEAR_BAND_UM = (5.0, 200.0)
#: Half-length (metres) of the shear profile across the shear direction: covers the widest sector (80 degrees
#: at the largest aperture, 1.15 mm) with room for the shot-to-shot shift.
_SHEAR_PROFILE_HALF_M = 1.0e-3
#: Ends of the striated zone and the sector's sides fade out over this distance (metres) / angle (degrees).
_SHEAR_TAPER_M = 30e-6
_SHEAR_TAPER_DEG = 3.0
#: The realistic crater's aperture shear (``crater="realistic"`` only; v1 guns keep the sector cut of
#: `_primer_relief`), shaped after the raw Fadul scans (docs/realism.md): when the gun unlocks, the case
#: moves ``displacement_m`` along the shear direction against the breech face while primer metal still
#: stands in the aperture. The aperture's leading edge sweeps a crescent of the flowback ring (0.15-0.25 mm
#: wide on its centre line on fadul-1-1, from where the ring ends to the aperture circle), cuts it down to a
#: pocket ``pocket_depth_um`` below the face (real: 10-25 um) and scrapes its own tool marks into it along the
#: motion (striations about radial in the sector's middle); the cut metal is smooth and reflects, so the pocket
#: is measured (not lost in the flowback's patches). Behind the motion the retreating edge leaves a trough
#: beyond the aperture circle (real: 10-18 um deep, up to 0.27 mm out on 14-24 % of the directions),
#: ``trough_share`` of the pocket's depth. The displacement is the gun's (from the striations' start draw),
#: varying shot to shot with that start (25 um); the depth is the gun's, 80-100 % of it shot to shot.
_REALISTIC_SHEAR = dict(
    displacement_m=(0.2e-3, 0.3e-3),
    pocket_depth_um=(10.0, 20.0),
    trough_share=0.7,
    trough_fall_m=25e-6,
    form_um=60.0,
    patch_half_m=(0.12e-3, 0.22e-3),
    rough_kept=0.5,
)


#: Crater models (a property of the gun, chosen at `make_firearm`; `fire` follows it). "v1" is the crater every
#: simulated data set has been drawn with (the default, bit for bit); "realistic" is shaped after the raw Fadul
#: Ruger P95 scans: see `_REALISTIC_CRATER`.
CRATERS = ("v1", "realistic")
#: The "realistic" crater, fitted to the three raw Fadul Ruger P95 scans (`benchmarks.realism`; docs/realism.md).
#: The gun's v1 draws (the same stream) are moved: the pin's outline radius (where its tip crosses the
#: flowback's top) to ``crater_radius_m`` and the aperture's to ``aperture_radius_m`` (real 1.26-1.29 mm, v1
#: 0.95-1.15) and the flowback's height to ``flowback_height_m`` (real lip 29-39 um, v1 25-55), each keeping
#: ``spread`` of its v1 draw's deviation from the middle of v1's range (the real holes lie within 0.66-0.74
#: mm; a wider spread puts pins almost as wide as the aperture). The flowback is a plateau that rounds down over
#: ``aperture_fall_m`` to the step at the aperture (the real profiles peak ~0.1 mm inside it). The pin's tip
#: (the model's shape, `FIRING_PIN_SHAPES`) goes over into the nose's conical flank (``flank_deg`` from the
#: face) where it gets as steep; it is pressed into the primer cup, a sheet that bends rather than shears,
#: so the crater's rim is rounded: a quadratic smooth minimum of the tip's and the primer's surfaces over
#: ``rim_rounding_um`` (drawn per gun), a parabolic shoulder like the real walls', which rise from 17-25 deg
#: at the hole to flat over 0.3 mm. During set-back the primer flows back along the pin, so the tip's marks
#: print on the whole impression out to where it meets the flowback (fading over ``contact_taper_m``); the
#: pin-mark grid covers ``pin_field_radius_m``. That wall, burnished by the pin, reflects like a mirror: the
#: instrument loses it where it is steeper than the objective accepts, with a sharp cut-off
#: (``burnished_sharpness``, where the rough primer's is soft) -- the real scans stop at 17-19 deg -- in
#: patches of about ``wall_patch_um`` (Gaussian sigma), and below the depth window, as everywhere else.
#: Chosen on 8 simulated Ruger P95s against the Fadul medians, and so that the firing-pin extractor finds them.
_REALISTIC_CRATER = dict(
    crater_radius_m=0.88e-3,
    aperture_radius_m=1.28e-3,
    flowback_height_m=34e-6,
    spread=0.5,
    aperture_fall_m=0.08e-3,
    rim_rounding_um=(130.0, 170.0),
    flank_deg=27.0,
    burnished_sharpness=15.0,
    wall_patch_um=8.0,
    contact_taper_m=3e-6,
    pin_field_radius_m=1.45e-3,
)
_CRATER_STREAM = 0xC7A7  # spawn-key suffix of the realistic crater's own draws (the rim's rounding)


# ----------------------------------------------------------------------------
# random fields
# ----------------------------------------------------------------------------


def _spectral_field(
    rng: np.random.Generator,
    shape,
    dx_um: float,
    lo_um: float,
    hi_um: float,
    *,
    alpha: float = 2.0,
    aniso: tuple[float, float] | None = None,
) -> np.ndarray:
    """Gaussian random field with wavelengths of about lo_um..hi_um, unit RMS.

    Inside the band the amplitude spectrum falls as ``f**-alpha`` (alpha = 2 is
    a power spectral density ~ f^-4, the smooth end of machined surfaces; this
    matches the autocorrelation length of real breech faces, about 40 um after
    a 16-500 um band-pass). ``aniso=(angle_deg, ratio)`` stretches
    correlations along ``angle_deg`` by ``ratio`` (striations).
    """
    ny, nx = shape
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(ny, d=dx_um)[:, None]
    fx = np.fft.rfftfreq(nx, d=dx_um)[None, :]
    if aniso is None:
        f2 = fx**2 + fy**2
    else:
        a = np.deg2rad(aniso[0])
        along = fx * np.cos(a) + fy * np.sin(a)
        across = -fx * np.sin(a) + fy * np.cos(a)
        f2 = (along * aniso[1]) ** 2 + across**2
    s_lo, s_hi = lo_um / (2 * np.pi), hi_um / (2 * np.pi)  # Gaussian sigmas of the two cutoffs
    h = (
        np.exp(-2 * np.pi**2 * s_lo**2 * f2)
        * (1 - np.exp(-2 * np.pi**2 * s_hi**2 * f2))
        * (np.sqrt(f2) + 1.0 / hi_um) ** -alpha
    )
    out = np.fft.irfft2(np.fft.rfft2(noise) * h, s=shape)
    out -= out.mean()
    return out / (out.std() + 1e-30)


def _smooth_field(rng: np.random.Generator, shape, scale_px: float) -> np.ndarray:
    """Cheap smooth unit-RMS field with correlation length ~scale_px (coarse grid, upsampled)."""
    ny, nx = shape
    step = max(1, int(scale_px / 4))
    small = rng.standard_normal((ny // step + 3, nx // step + 3)).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(scale_px / step / 2, 0.5))
    big = cv2.resize(small, ((nx // step + 3) * step, (ny // step + 3) * step), interpolation=cv2.INTER_CUBIC)
    big = big[step : step + ny, step : step + nx].astype(np.float64)
    big -= big.mean()
    return big / (big.std() + 1e-30)


def _heavy_tails(z: np.ndarray, power: float = 1.5) -> np.ndarray:
    z = np.sign(z) * np.abs(z) ** power
    return z / z.std()


def _pits(
    rng: np.random.Generator, shape, dx_um: float, density_per_mm2: float, size_um: float, pit_share: float = 0.6
) -> np.ndarray:
    """Sparse pits (``pit_share`` of them) and bumps, unit RMS."""
    ny, nx = shape
    area_mm2 = ny * nx * (dx_um * 1e-3) ** 2
    n = rng.poisson(density_per_mm2 * area_mm2)
    imp = np.zeros(shape)
    iy, ix = rng.integers(0, ny, n), rng.integers(0, nx, n)
    sign = np.where(rng.random(n) < pit_share, -1.0, 1.0)
    np.add.at(imp, (iy, ix), sign * rng.exponential(1.0, n))
    out = cv2.GaussianBlur(imp, (0, 0), sigmaX=size_um / dx_um)
    return out / (out.std() + 1e-30)


def _class_texture(rng: np.random.Generator, family: str, angle_deg: float, shape, dx_um: float) -> np.ndarray:
    """Machining marks of one kind ('filed', 'arched', 'circular', 'granular'), unit RMS."""
    ny, nx = shape
    if family == "filed":
        z = _spectral_field(rng, shape, dx_um, 15.0, 300.0, alpha=1.8, aniso=(angle_deg, 8.0))
    elif family in ("arched", "circular"):
        yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
        cy, cx = (ny - 1) / 2, (nx - 1) / 2
        if family == "arched":  # milling cutter centre a few mm away
            d_px = rng.uniform(3000, 7000) / dx_um
            a = np.deg2rad(angle_deg + rng.normal(0, 5))
            cx, cy = cx + d_px * np.cos(a), cy + d_px * np.sin(a)
        r = np.hypot(yy - cy, xx - cx)
        r0 = r.min()
        n = int(np.ceil(r.max() - r0)) + 2
        prof = _spectral_field(rng, (1, 4 * n), dx_um, 15.0, 300.0, alpha=1.5)[0, :n]
        z = np.interp(r - r0, np.arange(n), prof)
        z = z * (1 + 0.3 * _smooth_field(rng, shape, 400 / dx_um))  # tool chatter along the arcs
    elif family == "granular":
        z = 0.7 * _spectral_field(rng, shape, dx_um, 20.0, 300.0) + 0.7 * _pits(rng, shape, dx_um, 60.0, 25.0)
    else:
        raise ParameterError(f"unknown breech-face family {family!r}; expected filed, arched, circular or granular")
    z -= z.mean()
    return z / (z.std() + 1e-30)


# ----------------------------------------------------------------------------
# firearms
# ----------------------------------------------------------------------------


@dataclass(eq=False)
class Firearm:
    """One simulated gun: its breech-face surface and firing geometry.

    ``surface`` is the breech face in the gun's frame (metres, float32) on a
    square grid of spacing ``spacing_m`` centred on the firing-pin axis.
    ``pin_marks`` is the firing-pin tip's individual tool marks on the same
    kind of grid (covering the crater; None: a smooth tip) and
    ``shear_profile`` the aperture edge's striation profile across the shear
    direction (metres, one value per ``spacing_m``, centred on the firing-pin
    axis; None: the gun leaves no aperture shear). ``crater`` is the crater
    model (`CRATERS`) every shot of the gun is drawn with.
    """

    id: str
    make_model: str
    run: str
    spacing_m: float
    surface: np.ndarray = field(repr=False)
    geometry: dict[str, Any] = field(default_factory=dict)
    pin_marks: np.ndarray | None = field(default=None, repr=False)
    shear_profile: np.ndarray | None = field(default=None, repr=False)
    crater: str = "v1"

    @property
    def info(self) -> dict[str, Any]:
        m = MODELS[self.make_model]
        return {
            "firearm": self.id,
            "make": m["make"],
            "model": m["model"],
            "calibre": "9mm Luger",
            "family": m["family"],
            "manufacturing_run": self.run,
        }


def _seed_sequence(seed) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer or a numpy SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def _as_difficulty(difficulty) -> tuple[str, dict[str, Any]]:
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ParameterError(f"difficulty must be one of {sorted(DIFFICULTIES)} or a dict, got {difficulty!r}")
        return difficulty, dict(DIFFICULTIES[difficulty])
    if isinstance(difficulty, dict):
        unknown = set(difficulty) - set(DIFFICULTIES["realistic"])
        if unknown:
            raise ParameterError(
                f"unknown difficulty settings {sorted(unknown)}; known: {sorted(DIFFICULTIES['realistic'])}"
            )
        d = {**DIFFICULTIES["realistic"], **difficulty}
        lo, hi = d["amplitude"]
        if not 0 < lo <= hi <= 2:
            raise ParameterError(
                f"difficulty amplitude must be (low, high) with 0 < low <= high <= 2, got {d['amplitude']}"
            )
        for k, v in d.items():
            if k != "amplitude" and not (isinstance(v, (int, float)) and v >= 0):
                raise ParameterError(f"difficulty setting {k} must be a non-negative number, got {v!r}")
        for k in ("transfer_loss", "poor", "dropout", "spikes"):
            if d[k] > 1:
                raise ParameterError(f"difficulty setting {k} is a share and must be <= 1, got {d[k]!r}")
        return "custom", d
    raise ParameterError(f"difficulty must be a name or a dict, got {type(difficulty).__name__}")


def _view(view) -> str:
    if not (isinstance(view, str) and view in VIEWS):
        raise ParameterError(f"view must be one of {list(VIEWS)}, got {view!r}")
    return view


def _crater(crater) -> str:
    if not (isinstance(crater, str) and crater in CRATERS):
        raise ParameterError(f"crater must be one of {list(CRATERS)}, got {crater!r}")
    return crater


def _resolution(resolution, view: str = "primer") -> tuple[float, int]:
    if isinstance(resolution, str):
        if resolution not in RESOLUTIONS:
            raise ParameterError(
                f"resolution must be one of {sorted(RESOLUTIONS)} or (spacing_um, size_px), got {resolution!r}"
            )
        return (CASE_HEAD_RESOLUTIONS if view == "case_head" else RESOLUTIONS)[resolution]
    try:
        spacing_um, size_px = float(resolution[0]), int(resolution[1])
    except (TypeError, ValueError, IndexError):
        raise ParameterError(f"resolution must be a name or (spacing_um, size_px), got {resolution!r}") from None
    if not (0.5 <= spacing_um <= 50 and 32 <= size_px <= 4096):
        raise ParameterError(f"resolution ({spacing_um} um, {size_px} px) outside 0.5-50 um and 32-4096 px")
    return spacing_um, size_px


def make_firearm(
    firearm_id: str,
    make_model: str = "Ruger P95",
    *,
    seed: int | np.random.SeedSequence = 0,
    run: str | None = None,
    run_seed: int | np.random.SeedSequence | None = None,
    subclass_share: float = 0.5,
    resolution="full",
    crater: str = "v1",
) -> Firearm:
    """Build one gun: breech-face marks and firing geometry.

    Parameters
    ----------
    firearm_id : str
    make_model : str
        A key of `MODELS`; sets the kind of machining marks (class) and the
        chance of an aperture shear or drag mark.
    seed : int or SeedSequence
        The gun's own randomness (individual marks, geometry).
    run, run_seed : optional
        Manufacturing run. Guns built with the same ``run_seed`` share the
        run's tool marks exactly (subclass characteristics, as on
        consecutively manufactured slides).
    subclass_share : float in [0, 1]
        Share of the machining-mark variance that comes from the run (only
        when ``run_seed`` is given).
    resolution : "full", "standard", "fast" or (spacing_um, size_px)
    crater : {"v1", "realistic"}
        The crater model of every shot of this gun (`CRATERS`). "v1" (the
        default) is the one every simulated data set so far was drawn with,
        bit for bit. "realistic" is shaped after the raw Fadul Ruger P95
        scans: a larger impression and aperture, the pin's tip pressed in
        with a rounded rim whose upper wall the instrument measures down to
        its acceptance angle and depth window, with the pin's marks on it
        (see `_REALISTIC_CRATER`). The same seed gives the same breech face
        and draws either way; the geometry's ``crater`` entry says which.
    """
    crater = _crater(crater)
    if make_model not in MODELS:
        raise ParameterError(f"unknown make_model {make_model!r}; known: {sorted(MODELS)}")
    if not 0.0 <= subclass_share <= 1.0:
        raise ParameterError(f"subclass_share must be in [0, 1], got {subclass_share}")
    spacing_um, _ = _resolution(resolution)
    m = MODELS[make_model]
    ss = _seed_sequence(seed)
    rng = np.random.default_rng(ss)
    n = int(np.ceil(4400.0 / spacing_um)) | 1  # covers the primer whatever the offset
    shape = (n, n)
    angle = m["angle_deg"] + rng.normal(0, 4)
    own = _class_texture(rng, m["family"], angle, shape, spacing_um)
    if run_seed is not None and subclass_share > 0:
        run_rng = np.random.default_rng(_seed_sequence(run_seed))
        shared = _class_texture(run_rng, m["family"], m["angle_deg"] + run_rng.normal(0, 4), shape, spacing_um)
        kind = np.sqrt(subclass_share) * shared + np.sqrt(1 - subclass_share) * own
    else:
        kind = own
    individual = _heavy_tails(_spectral_field(rng, shape, spacing_um, 18.0, 500.0))
    individual += 0.6 * _pits(rng, shape, spacing_um, 20.0, 18.0)
    individual /= individual.std()
    surface = (_BREECH_RMS_UM[0] * kind + _BREECH_RMS_UM[1] * individual) * 1e-6
    geometry = {
        "crater_radius_m": float(rng.uniform(0.45e-3, 0.62e-3)),
        "crater_depth_m": float(rng.uniform(120e-6, 220e-6)),
        "aperture_radius_m": float(rng.uniform(0.95e-3, 1.15e-3)),
        "flowback_height_m": float(rng.uniform(25e-6, 55e-6)),
        "firing_pin_offset_m": [float(v) for v in rng.normal(0, 60e-6, 2)],
        "shear_deg": float(rng.uniform(0, 360)) if rng.random() < m["shear"] else None,
        "shear_width_deg": float(rng.uniform(35, 80)),
        "drag_deg": float(rng.uniform(0, 360)) if rng.random() < m["drag"] else None,
        "drag_length_m": float(rng.uniform(0.25e-3, 0.5e-3)),
    }
    field_radius_m = _PIN_FIELD_RADIUS_M
    if crater == "realistic":
        _realistic_geometry(ss, geometry)
        field_radius_m = _REALISTIC_CRATER["pin_field_radius_m"]
    pin_marks, shear_profile = _pin_and_shear(ss, m, geometry, spacing_um, field_radius_m)
    return Firearm(
        firearm_id,
        make_model,
        run or firearm_id,
        spacing_um / 1e6,
        surface.astype(np.float32),
        geometry,
        pin_marks,
        shear_profile,
        crater,
    )


def _realistic_geometry(ss: np.random.SeedSequence, geometry: dict) -> None:
    """Move (in place) a gun's v1 crater, aperture and flowback draws to the realistic crater's (0.535 mm,
    1.05 mm and 40 um: the middle of v1's ranges) and add
    ``geometry["crater"]`` (the model, the rim's rounding drawn from a stream of its own)."""
    rc_ = _REALISTIC_CRATER
    crng = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (_CRATER_STREAM,)))
    geometry["crater_radius_m"] = rc_["crater_radius_m"] + rc_["spread"] * (geometry["crater_radius_m"] - 0.535e-3)
    geometry["aperture_radius_m"] = rc_["aperture_radius_m"] + rc_["spread"] * (geometry["aperture_radius_m"] - 1.05e-3)
    geometry["flowback_height_m"] = rc_["flowback_height_m"] + rc_["spread"] * (geometry["flowback_height_m"] - 40e-6)
    geometry["crater"] = {
        "model": "realistic",
        "rim_rounding_m": float(crng.uniform(*rc_["rim_rounding_um"])) * 1e-6,
        "aperture_fall_m": rc_["aperture_fall_m"],
    }


def _pin_and_shear(
    ss: np.random.SeedSequence, m: dict, geometry: dict, spacing_um: float, field_radius_m: float = _PIN_FIELD_RADIUS_M
) -> tuple[np.ndarray, np.ndarray | None]:
    """A gun's firing pin and aperture edge, from a stream of their own (spawned from the gun's seed):
    the pin's class shape with this gun's small variation (``geometry["firing_pin"]``, in place), the pin
    tip's individual tool marks (metres, on a grid of ``spacing_um`` centred on the firing-pin axis) and,
    for a gun with an aperture shear, the aperture edge's striation profile and where the striations lie
    (``geometry["aperture_shear"]``). Draws are made in the same order whether or not the gun shears."""
    prng = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (_PIN_STREAM,)))
    shape = FIRING_PIN_SHAPES[m["pin"]]
    aspect = float(np.clip(shape["aspect"] + prng.normal(0, shape["aspect_sd"]), 0.3, 1.0))
    orientation = float(shape["orientation_deg"] + prng.normal(0, 1) * shape["orientation_sd_deg"])
    rc = geometry["crater_radius_m"]
    # The depth is the model's, within 8 %: the gun's depth draw (120-220 um for every model, kept as
    # ``crater_depth_m``: see `_primer_relief`) mapped onto that range
    depth = m["pin_depth_um"] * 1e-6 * (1 + 0.08 * (geometry["crater_depth_m"] - 170e-6) / 50e-6)
    cap = depth + geometry["flowback_height_m"]  # from the lip (top of the flowback) to the floor
    geometry["firing_pin"] = {
        "shape": m["pin"],
        "radius_m": rc,
        "depth_m": depth,
        "aspect": aspect,
        "orientation_deg": orientation,
        "outline_power": shape["outline_power"],
        "floor_power": shape["floor_power"],
        # a spherical cap through the lip with this height: the pin tip's radius of curvature
        "tip_radius_m": float((rc**2 + cap**2) / (2 * cap)) if shape["floor_power"] is None else None,
        "marks_rms_m": float(prng.uniform(*_PIN_MARKS_RMS_UM)) * 1e-6,
    }
    n = int(np.ceil(2 * field_radius_m / (spacing_um * 1e-6))) | 1
    pin = _spectral_field(prng, (n, n), spacing_um, *_PIN_MARKS_BAND_UM, alpha=1.5)
    pin_marks = (pin * geometry["firing_pin"]["marks_rms_m"]).astype(np.float32)
    shear_rms = float(prng.uniform(*_SHEAR_RMS_UM)) * 1e-6
    k = int(np.ceil(_SHEAR_PROFILE_HALF_M / (spacing_um * 1e-6)))
    profile = _spectral_field(prng, (1, 2 * k + 1), spacing_um, *_SHEAR_BAND_UM, alpha=1.5)[0] * shear_rms
    start_share = float(prng.uniform(0.05, 0.3))  # striations begin this share of the way from lip to aperture
    # the realistic crater's shear (`_REALISTIC_SHEAR`): one more draw, after every v1 one, whether or not it shears
    pocket_depth = patch = None
    if "crater" in geometry:
        pocket_depth = float(prng.uniform(*_REALISTIC_SHEAR["pocket_depth_um"])) * 1e-6
        # where on the edge its marks lie: the striated patch's centre across the motion (share of the sector's
        # half-width at the aperture) and half-width (metres)
        patch = (float(prng.uniform(-0.6, 0.6)), float(prng.uniform(*_REALISTIC_SHEAR["patch_half_m"])))
    if geometry["shear_deg"] is None:
        geometry["aperture_shear"] = {"present": False}
        return pin_marks, None
    geometry["aperture_shear"] = {
        "present": True,
        # the aperture edge moved across the flowback along the sector's centre line: striations parallel to it
        "direction_deg": geometry["shear_deg"],
        "striation_rms_m": shear_rms,
        "start_m": rc + start_share * (geometry["aperture_radius_m"] - rc),
    }
    if pocket_depth is not None:  # the swept crescent starts the displacement inside the aperture
        lo, hi = _REALISTIC_SHEAR["displacement_m"]
        displacement = lo + (hi - lo) * (start_share - 0.05) / 0.25
        geometry["aperture_shear"].update(
            start_m=geometry["aperture_radius_m"] - displacement,
            displacement_m=displacement,
            pocket_depth_m=pocket_depth,
            patch_centre_m=patch[0]
            * geometry["aperture_radius_m"]
            * np.sin(np.deg2rad(geometry["shear_width_deg"] / 2)),
            patch_half_m=patch[1],
        )
    return pin_marks, profile


# ----------------------------------------------------------------------------
# firing and scanning
# ----------------------------------------------------------------------------


def _rot(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def fire(
    firearm: Firearm,
    shot: int = 0,
    *,
    seed: int | np.random.SeedSequence | None = None,
    difficulty="realistic",
    resolution="full",
    view: str = "primer",
    rotation_deg: float | None = None,
) -> Scan:
    """Fire one cartridge in ``firearm`` and scan its head: a raw, labelled `Scan`.

    Without a ``seed`` the firing's randomness comes from the firearm id and
    ``shot``, so every shot differs and the same call gives the same scan.

    The scan looks like an unprocessed confocal scan of a 9 mm primer (see the
    module docs): heights in metres with NaN where nothing was measured, and
    ``meta["labels"]`` (exhibit, firearm, shot, make, model, calibre) and
    ``meta["truth"]`` (pose, geometry, imperfections) filled in.

    ``view="case_head"`` widens the field to the whole case head (11 mm; see
    `CASE_HEAD_RESOLUTIONS` for what the named resolutions mean then): the
    rim (9.96 mm across) with its chamfer lost as missing data and nothing
    beyond it, stamped headstamp characters (sunk or raised, 20-50 um) on the
    annulus, the primer pocket gap, the primer set up to 60 um above or below
    the case-head plane, and a tilt of the whole head. ``meta["truth"]``
    then also holds ``view``, ``case_head_center_m``, ``case_head_radius_m``,
    ``primer_radius_m``, ``primer_gap_m``, ``head_offset_m`` and ``headstamp``. The
    extra randomness comes from its own stream (spawned from the shot's seed), so
    the default view's scans are bit-for-bit those of earlier versions.

    Examples
    --------
    >>> import ballistix as bx
    >>> gun = bx.datasets.make_firearm("F1", resolution="fast")
    >>> s = bx.datasets.fire(gun, 0, resolution="fast", view="case_head")
    >>> s.shape, s.meta["truth"]["view"]
    ((880, 880), 'case_head')

    ``view="firing_pin"`` is the primer field scanned with the depth window on
    the firing-pin impression: the crater floor is measured (in the default
    view it lies below the window, as on the raw NIST scans), its steep walls
    are still lost; everything else is the same firing. Every view carries
    the firing pin's tip marks in the crater and, for a gun with an aperture
    shear, the aperture edge's striations on the sheared sector of the
    flowback ring; ``meta["truth"]["firing_pin"]`` (shape, lip radius, depth,
    aspect, orientation in the scan, tip radius, marks' RMS, transfer
    amplitude) and ``meta["truth"]["aperture_shear"]`` (``present``; the
    sector's angle and width, the striations' direction in the scan, where
    they start from the firing-pin axis and how far they run, amplitude,
    shift) say what was drawn.

    ``rotation_deg`` fixes the case's rotation in the scan (how it was
    mounted) instead of drawing it uniformly; the random stream is the same
    either way, so everything else about the firing is unchanged.
    """
    level, d = _as_difficulty(difficulty)
    view = _view(view)
    if rotation_deg is not None and not (
        isinstance(rotation_deg, (int, float, np.integer, np.floating))
        and not isinstance(rotation_deg, bool)
        and np.isfinite(rotation_deg)
    ):
        raise ParameterError(f"rotation_deg must be a finite number of degrees or None, got {rotation_deg!r}")
    spacing_um, n = _resolution(resolution, view)
    dx = spacing_um / 1e6
    if seed is None:
        seed = np.random.SeedSequence([zlib.crc32(firearm.id.encode()), int(shot)])
    ss = _seed_sequence(seed)
    rng = np.random.default_rng(ss)
    wide = view == "case_head"

    # The steps below draw from ``rng`` in this order, and that order defines every simulated data set
    # (tests/golden.json): a new draw goes after the last one, or into a stream of its own like ``hrng``.
    rot, centre, fp, primer = _draw_pose(rng, firearm, n, dx, d["translation_um"], rotation_deg)
    xy = _scan_coordinates(n, dx, rot, fp, primer)
    hrng = case_c = None
    if wide:  # the case-head view's own randomness: the default view's draws stay as they were
        head_ss = np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (_CASE_HEAD_STREAM,))
        hrng = np.random.default_rng(head_ss)
        case_c = primer + hrng.normal(0, 25e-6, 2)  # the primer pocket is nearly concentric with the head
        xy = xy._replace(r_case=np.hypot(xy.px - case_c[0], xy.py - case_c[1]))
    marks, amp, poor = _transfer_marks(rng, firearm, d, n, dx, spacing_um, rot, fp, wide)
    # z: the heights; geom: the shape alone, what decides where the instrument measures nothing
    z, geom, pr = _primer_relief(rng, firearm.geometry, xy, dx, true_hole=view == "firing_pin")
    head_truth = {}
    if wide:
        head_z, head_truth = _case_head_relief(hrng, xy.r_case, xy.px - case_c[0], xy.py - case_c[1], spacing_um)
        z = np.where(pr.head, head_z, z)
        geom = np.where(pr.head, head_z, geom)
    _add_form(rng, hrng, z, xy, primer, pr.r_primer)
    _add_texture(rng, z, marks, pr, d, spacing_um)
    # the firing pin's and the aperture edge's marks, from the shot's own stream: every draw above stays
    mrng = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (_MARKS_STREAM,)))
    pin_shear, marks_truth, cut = _pin_and_shear_marks(
        mrng, firearm, d, xy, dx, spacing_um, rot, fp, poor, pr.contact, pr.bowl if pr.contact is not None else None, z
    )
    z += pin_shear
    if cut is not None:  # the realistic shear's pocket and trough: the instrument sees the new shape
        geom = geom + cut["relief"]
    missing = _unmeasured(
        rng,
        geom,
        xy,
        pr,
        firearm.geometry,
        d,
        dx,
        spacing_um,
        head_truth["case_head_radius_m"] if wide else None,
        crater_in_window=view == "firing_pin",
        smooth=None if cut is None else cut["smooth"],
    )
    _add_spikes(rng, z, d["spikes"])
    z[missing] = np.nan

    meta = _firing_meta(
        firearm,
        shot,
        level,
        d,
        ss,
        {
            "rotation_deg": rot,
            "firing_pin_center_m": [float(fp[0]), float(fp[1])],
            "translation_m": [float(fp[0] - centre[0]), float(fp[1] - centre[1])],
            "primer_center_m": [float(primer[0]), float(primer[1])],
            "primer_flat_radius_m": float(pr.r_flat),
            "aperture_radius_m": float(firearm.geometry["aperture_radius_m"]),
            "crater_radius_m": float(firearm.geometry["crater_radius_m"]),
            "amplitude": amp,
            "poor_impression": poor,
            **marks_truth,
        },
    )
    if "crater" in firearm.geometry:
        meta["comment"] += f", {firearm.geometry['crater']['model']} crater"
        meta["truth"]["crater"] = firearm.geometry["crater"]["model"]
    if view == "firing_pin":
        meta["comment"] += ", depth window on the firing-pin impression"
        meta["truth"]["view"] = view
    if wide:
        meta["comment"] += ", whole case head in view"
        meta["truth"].update(
            {
                "view": view,
                "case_head_center_m": [float(case_c[0]), float(case_c[1])],
                "primer_radius_m": float(pr.r_primer),
                "primer_gap_m": pr.gap,
                **head_truth,
            }
        )
    return Scan(z, dx, dx, meta)


class _Coords(NamedTuple):
    """Where each scan point is: ``px``, ``py`` in metres from the grid's top-left corner; ``gx``, ``gy``
    in the gun's frame; ``r_fp`` and ``phi`` (degrees) about the firing-pin axis; ``r_pr`` about the
    primer centre; ``r_case`` about the case-head centre (case-head view only)."""

    px: np.ndarray
    py: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    r_fp: np.ndarray
    phi: np.ndarray
    r_pr: np.ndarray
    r_case: np.ndarray | None = None


class _Primer(NamedTuple):
    """The primer's shape as drawn by `_primer_relief`: radii (metres) of its flat face, of the primer
    and of the pocket gap's width; masks of the case head, the gap and the breech-face impression
    (``face``); the crater's depth profile (``bowl``, heights in metres); and, for the realistic crater, where
    the pin touched the primer (``contact``, 0-1; None: inside the pin's outline)."""

    r_flat: float
    r_primer: float
    gap: float
    head: np.ndarray
    in_gap: np.ndarray
    face: np.ndarray
    bowl: np.ndarray
    contact: np.ndarray | None = None


def _draw_pose(
    rng: np.random.Generator, firearm: Firearm, n: int, dx: float, translation_um: float, rotation_deg: float | None
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The case's pose in the scan: ``(rotation_deg, grid centre, firing-pin axis, primer centre)``,
    positions in metres from the grid's top-left corner. The rotation is uniform over 0-360 degrees,
    drawn even when ``rotation_deg`` fixes it so that the stream does not depend on it; the firing-pin
    axis spreads ``translation_um`` about the centre; the primer sits at the gun's firing-pin offset,
    rotated, with 25 um of play."""
    rot = float(rng.uniform(0.0, 360.0))
    if rotation_deg is not None:
        rot = float(rotation_deg) % 360.0
    centre = np.array([(n - 1) / 2 * dx, (n - 1) / 2 * dx])
    fp = centre + rng.normal(0, translation_um * 1e-6, 2)
    primer = fp + _rot(rot) @ (np.asarray(firearm.geometry["firing_pin_offset_m"]) + rng.normal(0, 25e-6, 2))
    return rot, centre, fp, primer


def _scan_coordinates(n: int, dx: float, rot: float, fp: np.ndarray, primer: np.ndarray) -> _Coords:
    """Each point of the ``n x n`` scan grid in the scan's, the gun's and the primer's frames (no draws)."""
    yy, xx = np.mgrid[0:n, 0:n]
    px, py = xx * dx, yy * dx
    gx, gy = _rot(-rot) @ np.stack([(px - fp[0]).ravel(), (py - fp[1]).ravel()])  # gun-frame coordinates
    gx, gy = gx.reshape(n, n), gy.reshape(n, n)
    return _Coords(
        px, py, gx, gy, np.hypot(gx, gy), np.rad2deg(np.arctan2(gy, gx)) % 360, np.hypot(px - primer[0], py - primer[1])
    )


def _transfer_marks(
    rng: np.random.Generator,
    firearm: Firearm,
    d: dict,
    n: int,
    dx: float,
    spacing_um: float,
    rot: float,
    fp: np.ndarray,
    wide: bool,
) -> tuple[np.ndarray, float, bool]:
    """The breech face pressed into the primer: ``(marks in metres, amplitude, poor impression?)``.
    The gun's surface is warped to the case's pose, its finest detail lost (``blur_um``), scaled by the
    contact pressure and lost in smooth patches where the primer did not touch (``transfer_loss``,
    more for a poor impression)."""
    poor = bool(rng.random() < d["poor"])
    amp = float(rng.uniform(*d["amplitude"])) * (float(rng.uniform(0.25, 0.5)) if poor else 1.0)
    m_src = firearm.surface.shape[0]
    scale = dx / firearm.spacing_m
    # scan pixel (x, y) -> gun-surface pixel: surface centre + R(-rot) (p - fp) / spacing
    R = _rot(-rot) * scale
    c_src = (m_src - 1) / 2
    t = np.array([c_src, c_src]) - R @ (fp / dx)
    M = np.hstack([R, t[:, None]]).astype(np.float64)
    src = firearm.surface
    if wide and scale > 1.5:  # a coarser grid than the gun's: smooth first so the warp does not alias
        src = cv2.GaussianBlur(src, (0, 0), sigmaX=0.5 * scale)
    marks = cv2.warpAffine(
        src, M, (n, n), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    ).astype(np.float64)
    if d["blur_um"] > 0:
        marks = cv2.GaussianBlur(marks, (0, 0), sigmaX=d["blur_um"] / spacing_um)
    loss = d["transfer_loss"] + (0.25 if poor else 0.0)
    contact = 1.0 / (1.0 + np.exp(-(_smooth_field(rng, (n, n), 500 / spacing_um) + 1.6 - 4.0 * loss) * 3.0))
    marks *= amp * contact
    return marks, amp, poor


def _warp_gun_grid(src: np.ndarray, spacing_m: float, n: int, dx: float, rot: float, fp: np.ndarray) -> np.ndarray:
    """A field on a gun-frame grid (spacing ``spacing_m``, centred on the firing-pin axis) as it lies on the
    ``n x n`` scan grid at the case's pose (zero beyond the field), as `_transfer_marks` places the breech
    face."""
    m_src = src.shape[0]
    scale = dx / spacing_m
    R = _rot(-rot) * scale
    c_src = (m_src - 1) / 2
    t = np.array([c_src, c_src]) - R @ (fp / dx)
    M = np.hstack([R, t[:, None]]).astype(np.float64)
    if scale > 1.5:  # a coarser grid than the gun's: smooth first so the warp does not alias
        src = cv2.GaussianBlur(src, (0, 0), sigmaX=0.5 * scale)
    return cv2.warpAffine(
        src, M, (n, n), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    ).astype(np.float64)


def _pin_and_shear_marks(
    mrng: np.random.Generator,
    firearm: Firearm,
    d: dict,
    xy: _Coords,
    dx: float,
    spacing_um: float,
    rot: float,
    fp: np.ndarray,
    poor: bool,
    contact_pin: np.ndarray | None = None,
    shape: np.ndarray | None = None,
    z: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, np.ndarray] | None]:
    """The firing pin's tip marks pressed into the crater (floor and walls) and, for a gun with an aperture
    shear, the aperture edge's striations scraped across the sheared sector of the flowback ring: heights
    (metres) to add, and what was drawn for ``meta["truth"]`` (``firing_pin``, ``aperture_shear``).

    Shot to shot: the pin's transfer amplitude (``amplitude`` of the difficulty, halved for a poor
    impression), partial transfer in patches (``transfer_loss``), the finest detail lost (``blur_um``); the
    shear's start (25 um spread) and run (half to all the way to the aperture edge), its amplitude, a
    shift of the striations across (2 um) and a profile noise of a fifth of their RMS. A gun built
    without these marks (no ``firing_pin`` in its geometry) gets none. ``contact_pin``: where the pin
    touched the primer (0-1; the realistic crater's, see `_primer_relief`), else inside the pin's outline.

    The realistic crater's shear (`_REALISTIC_SHEAR`) is a change of shape as well: the swept crescent cut
    down to a pocket below the face (from ``shape``, the primer's drawn shape, and ``z``, the heights so far:
    the cut takes the primer's roughness away and keeps the form) with the striations over it,
    and the trough behind the motion. The third value is that change of shape (metres; the instrument's
    losses follow it), with where the cut metal lies (``"smooth"``); None for v1 guns and guns without shear."""
    g = firearm.geometry
    n = xy.px.shape[0]
    out = np.zeros((n, n))
    pin = g.get("firing_pin")
    if pin is None or firearm.pin_marks is None:
        return out, {}, None
    scale = 0.5 if poor else 1.0
    # -- firing pin: the tip's marks at the case's pose, in the impression
    amp = float(mrng.uniform(*d["amplitude"])) * scale
    marks = _warp_gun_grid(firearm.pin_marks, firearm.spacing_m, n, dx, rot, fp)
    if d["blur_um"] > 0:
        marks = cv2.GaussianBlur(marks, (0, 0), sigmaX=d["blur_um"] / spacing_um)
    loss = d["transfer_loss"] + (0.25 if poor else 0.0)
    contact = 1.0 / (1.0 + np.exp(-(_smooth_field(mrng, (n, n), 150 / spacing_um) + 1.6 - 4.0 * loss) * 3.0))
    if contact_pin is None:
        in_crater = _crater_outline(g, xy.gx, xy.gy) < 1
        out += np.where(in_crater, marks * amp * contact, 0.0)
    else:
        out += marks * amp * contact * contact_pin
    truth: dict[str, Any] = {
        "firing_pin": {
            "shape": pin["shape"],
            "radius_m": pin["radius_m"],
            "depth_m": pin["depth_m"],
            "aspect": pin["aspect"],
            "orientation_deg": float((pin["orientation_deg"] + rot) % 360.0),
            "tip_radius_m": pin["tip_radius_m"],
            "marks_rms_m": pin["marks_rms_m"],
            "amplitude": amp,
        }
    }
    # -- aperture shear: striations parallel to the shear direction across the cut sector of the ring
    sh = g.get("aperture_shear", {"present": False})
    if not sh["present"] or firearm.shear_profile is None:
        truth["aperture_shear"] = {"present": False}
        return out, truth, None
    if "pocket_depth_m" in sh and shape is not None and z is not None:
        return _realistic_shear(mrng, firearm, d, xy, dx, spacing_um, rot, scale, shape, z, out, truth, contact_pin)
    rc, ra = g["crater_radius_m"], g["aperture_radius_m"]
    start = float(sh["start_m"] + mrng.normal(0, 25e-6))
    length = float((ra - start) * mrng.uniform(0.5, 1.0))
    s_amp = float(mrng.uniform(*d["amplitude"])) * scale
    shift = float(mrng.normal(0, 2e-6))
    prof = firearm.shear_profile
    noise = cv2.GaussianBlur(mrng.standard_normal((1, prof.size)), (0, 0), sigmaX=1.0)[0]
    prof = prof + 0.2 * sh["striation_rms_m"] * noise / (noise.std() + 1e-30)
    a = np.deg2rad(sh["direction_deg"])
    along = xy.gx * np.cos(a) + xy.gy * np.sin(a)
    across = -xy.gx * np.sin(a) + xy.gy * np.cos(a)
    k = (prof.size - 1) / 2
    stri = np.interp((across + shift) / firearm.spacing_m + k, np.arange(prof.size), prof)
    dphi = np.abs((xy.phi - g["shear_deg"] + 180) % 360 - 180)
    w = np.clip((g["shear_width_deg"] / 2 - dphi) / _SHEAR_TAPER_DEG, 0, 1)
    w = w * np.clip((along - start) / _SHEAR_TAPER_M, 0, 1) * np.clip((start + length - along) / _SHEAR_TAPER_M, 0, 1)
    stri = stri * w * s_amp
    if d["blur_um"] > 0:
        stri = cv2.GaussianBlur(stri, (0, 0), sigmaX=d["blur_um"] / spacing_um)
    out += np.where((xy.r_fp > rc) & (xy.r_fp < ra), stri, 0.0)  # on the flowback ring only
    truth["aperture_shear"] = {
        "present": True,
        "angle_deg": float((g["shear_deg"] + rot) % 360.0),
        "width_deg": float(g["shear_width_deg"]),
        "direction_deg": float((sh["direction_deg"] + rot) % 360.0),
        "start_m": start,
        "length_m": length,
        "striation_rms_m": float(sh["striation_rms_m"]),
        "amplitude": s_amp,
        "shift_m": shift,
    }
    return out, truth, None


def _realistic_shear(
    mrng: np.random.Generator,
    firearm: Firearm,
    d: dict,
    xy: _Coords,
    dx: float,
    spacing_um: float,
    rot: float,
    scale: float,
    shape: np.ndarray,
    z: np.ndarray,
    out: np.ndarray,
    truth: dict[str, Any],
    contact_pin: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, np.ndarray]]:
    """`_pin_and_shear_marks`' aperture shear for the realistic crater (`_REALISTIC_SHEAR`): the case moved
    ``ra - start`` along the shear direction ``u`` against the breech face. A point ``p`` of the flowback
    (``|p| < ra``) that the aperture's edge passed over (``|p + D u| > ra``: under the face at the end) is cut
    down to the pocket, ``depth`` below the face, with the aperture edge's striations along ``u``; a point of
    the face that the retreating edge uncovered (``|p| > ra``, ``|p + D u| < ra``: in the aperture at the
    end) sinks into the trough. Both within the gun's sector (the pocket about ``shear_deg``, the trough
    opposite), the pocket not on the crater's wall (``contact_pin``). The v1 shear's draws in its order,
    then the shot's depth."""
    g = firearm.geometry
    sh = g["aperture_shear"]
    rs = _REALISTIC_SHEAR
    ra = g["aperture_radius_m"]
    start = float(sh["start_m"] + mrng.normal(0, 25e-6))
    run = float(mrng.uniform(0.5, 1.0))  # the striations' run: this share of the displacement
    s_amp = float(mrng.uniform(*d["amplitude"])) * scale
    shift = float(mrng.normal(0, 2e-6))
    prof = firearm.shear_profile
    noise = cv2.GaussianBlur(mrng.standard_normal((1, prof.size)), (0, 0), sigmaX=1.0)[0]
    prof = prof + 0.2 * sh["striation_rms_m"] * noise / (noise.std() + 1e-30)
    disp = max(ra - start, 0.0)
    depth = sh["pocket_depth_m"] * float(mrng.uniform(0.8, 1.0))  # after the v1 shear's draws
    a = np.deg2rad(sh["direction_deg"])
    ux, uy = np.cos(a), np.sin(a)
    across = -xy.gx * uy + xy.gy * ux
    k = (prof.size - 1) / 2
    stri = np.interp((across + shift) / firearm.spacing_m + k, np.arange(prof.size), prof) * s_amp
    if d["blur_um"] > 0:
        stri = cv2.GaussianBlur(stri, (0, 0), sigmaX=d["blur_um"] / spacing_um)
    half = g["shear_width_deg"] / 2
    edge = 2.0 * dx  # the cut's walls are a few micrometres wide, as the aperture step
    dphi = np.abs((xy.phi - g["shear_deg"] + 180) % 360 - 180)
    ahead = np.clip((half - dphi) / _SHEAR_TAPER_DEG, 0, 1)
    behind = np.clip((half - (180 - dphi)) / _SHEAR_TAPER_DEG, 0, 1)
    # the pocket: swept by the edge (outside the aperture's final place), inside the aperture circle
    swept = np.clip((np.hypot(xy.gx + disp * ux, xy.gy + disp * uy) - ra) / edge + 0.5, 0, 1)
    inside = np.clip((ra - xy.r_fp) / edge + 0.5, 0, 1)
    w = swept * inside * ahead
    if contact_pin is not None:  # the edge shears the flowback, not the crater wall the pin fully pressed
        w = w * (contact_pin < 1.0)
    pocket = w * (-depth - shape)
    # the cut surface keeps the form (the heights less the drawn shape, smoothed over ``form_um``) and
    # ``rough_kept`` of the primer's roughness (the metal is cut and smeared); the aperture edge's marks lie on
    # a patch of it: across the motion about the gun's ``patch_centre_m``, along it over ``run`` of the
    # displacement, in the middle of the pocket (whose inner edge, where the motion ended, lies ``D`` along the
    # motion before the aperture circle)
    rough = z - shape
    rough = rough - cv2.GaussianBlur(rough, (0, 0), sigmaX=rs["form_um"] / spacing_um)
    along = xy.gx * ux + xy.gy * uy
    from_edge = along + disp - np.sqrt(np.maximum(ra**2 - across**2, 0.0))
    marked = np.clip((sh["patch_half_m"] - np.abs(across - sh["patch_centre_m"])) / _SHEAR_TAPER_M, 0, 1)
    marked = marked * np.clip((run * disp / 2 - np.abs(from_edge - disp / 2)) / _SHEAR_TAPER_M, 0, 1)
    # the trough: uncovered by the retreating edge, beyond the aperture circle, its sides falling over trough_fall_m
    uncovered = np.clip((ra - np.hypot(xy.gx + disp * ux, xy.gy + disp * uy)) / rs["trough_fall_m"], 0, 1)
    outside = np.clip((xy.r_fp - ra) / rs["trough_fall_m"], 0, 1)
    trough = -rs["trough_share"] * depth * uncovered * outside * behind
    relief = pocket + trough
    out += relief + w * (marked * stri - (1 - rs["rough_kept"]) * rough)
    truth["aperture_shear"] = {
        "present": True,
        "angle_deg": float((g["shear_deg"] + rot) % 360.0),
        "width_deg": float(g["shear_width_deg"]),
        "direction_deg": float((sh["direction_deg"] + rot) % 360.0),
        "start_m": start,
        "length_m": run * disp,
        "displacement_m": disp,
        "patch_centre_m": float(sh["patch_centre_m"]),
        "patch_half_m": float(sh["patch_half_m"]),
        "pocket_depth_m": depth,
        "striation_rms_m": float(sh["striation_rms_m"]),
        "amplitude": s_amp,
        "shift_m": shift,
    }
    return out, truth, {"relief": relief, "smooth": w > 0.5}


def _primer_relief(
    rng: np.random.Generator, g: dict, xy: _Coords, dx: float, *, true_hole: bool = False
) -> tuple[np.ndarray, np.ndarray, _Primer]:
    """Heights (metres) of the primer and what surrounds it, from the gun's geometry ``g``: the flat face
    rounding off at the primer edge, the pocket gap, the case head 40-80 um lower; the flowback ring in
    the firing-pin aperture (cut down in a sector by an aperture shear); the crater, with a drag lobe.

    Returns ``(z, geom, primer)``: the heights with the firing pin's own impression (the model's shape,
    `FIRING_PIN_SHAPES`), and the shape that decides where the instrument measures nothing. Unless
    ``true_hole``, that shape keeps the parabolic bowl of the gun's ``crater_depth_m`` that this data
    version has always drawn: in the "primer" and "case_head" views the crater lies below the depth
    window and beyond the acceptance angle either way, and keeping its hole point for point keeps the
    breech-face mask, and every result of the breech-face pipeline, exactly as it was. The "firing_pin"
    view measures the crater itself, so there the true shape decides."""
    n = xy.px.shape[0]
    r_fp, phi, r_pr = xy.r_fp, xy.phi, xy.r_pr
    rc, ra, depth, hfb = g["crater_radius_m"], g["aperture_radius_m"], g["crater_depth_m"], g["flowback_height_m"]
    r_flat = 1.72e-3 + rng.normal(0, 25e-6)  # the primer face is flat to here, then rounds off
    r_primer, rho, gap = 2.2e-3, 2.2e-3 - r_flat, float(rng.uniform(0.15e-3, 0.25e-3))
    z = np.zeros((n, n))
    # primer edge: a quarter-round of radius rho, then the pocket chamfer, then the case head 40-80 um lower
    edge = np.clip(r_pr - r_flat, 0, rho)
    z -= rho - np.sqrt(np.maximum(rho**2 - edge**2, 0))
    head = r_pr > r_primer + gap
    z[head] = -float(rng.uniform(40e-6, 80e-6))
    in_gap = (r_pr > r_primer) & ~head
    z[in_gap] = -200e-6
    # flowback ring: primer metal in the firing-pin aperture, falling from the crater lip to a step at ra
    realistic = "crater" in g
    step = 0.2 * hfb
    if realistic:  # a plateau that rounds down to the step
        frac = np.clip((ra - r_fp) / g["crater"]["aperture_fall_m"], 0, 1)
        fb = step + (hfb - step) * (0.5 - 0.5 * np.cos(np.pi * frac))
    else:
        frac = np.clip((ra - r_fp) / (ra - rc), 0, 1)
        fb = step + (hfb - step) * frac**0.8
    edge_w = 2.0 * dx  # the step is a few micrometres wide: steeper than any objective accepts
    fb = fb * np.clip((ra - r_fp) / edge_w + 0.5, 0, 1)
    if g["shear_deg"] is not None and not realistic:  # aperture shear: the ring is cut down in a sector
        dphi = np.abs((phi - g["shear_deg"] + 180) % 360 - 180)
        fb = np.where(dphi < g["shear_width_deg"] / 2, fb * 0.15, fb)
    z += np.where(r_fp < ra, fb, 0.0)
    if realistic:
        return _realistic_crater(g, xy, z, fb, r_flat, r_primer, gap, head, in_gap, r_pr)
    # crater: the data version's parabolic bowl, and the model's firing-pin shape (the bowl again for a gun
    # built without one); drag: an elongated lobe of the crater along drag_deg
    legacy = np.where(r_fp < rc, -(depth + hfb) * (1 - (r_fp / rc) ** 2), 0.0)
    if "firing_pin" in g:
        rho_pin = _crater_outline(g, xy.gx, xy.gy)
        pin = np.where(rho_pin < 1, _crater_depth(g, rho_pin), 0.0)
    else:
        pin = legacy
    if g["drag_deg"] is not None:
        a = np.deg2rad(g["drag_deg"])
        along = xy.gx * np.cos(a) + xy.gy * np.sin(a)
        across = -xy.gx * np.sin(a) + xy.gy * np.cos(a)
        reach = rc + g["drag_length_m"]  # the groove runs from the crater out across the face
        s = np.clip(along, 0, reach)
        dd = np.hypot(along - s, across)
        w = 0.45 * rc
        in_lobe = dd < w
        lobe = -0.35 * depth * (1 - (dd / w) ** 2) * (1 - s / (reach * 1.2))
        # inside the lobe the surface drops to the groove (cancelling the flowback there only)
        groove = lobe - np.where(r_fp < ra, fb, 0.0)
        legacy = np.where(in_lobe, np.minimum(legacy, groove), legacy)
        pin = np.where(in_lobe, np.minimum(pin, groove), pin)
    bowl = pin if true_hole else legacy
    face = (r_fp >= ra) & (r_pr <= r_flat)
    return z + pin, z + bowl, _Primer(r_flat, r_primer, gap, head, in_gap, face, bowl)


def _drag_groove(g: dict, xy: _Coords, fb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The drag lobe along ``drag_deg``: where it lies and the groove's heights there (the flowback cancelled)."""
    rc, ra, depth = g["crater_radius_m"], g["aperture_radius_m"], g["crater_depth_m"]
    a = np.deg2rad(g["drag_deg"])
    along = xy.gx * np.cos(a) + xy.gy * np.sin(a)
    across = -xy.gx * np.sin(a) + xy.gy * np.cos(a)
    reach = rc + g["drag_length_m"]  # the groove runs from the crater out across the face
    s = np.clip(along, 0, reach)
    dd = np.hypot(along - s, across)
    w = 0.45 * rc
    lobe = -0.35 * depth * (1 - (dd / w) ** 2) * (1 - s / (reach * 1.2))
    return dd < w, lobe - np.where(xy.r_fp < ra, fb, 0.0)


def _realistic_crater(
    g: dict,
    xy: _Coords,
    z: np.ndarray,
    fb: np.ndarray,
    r_flat: float,
    r_primer: float,
    gap: float,
    head: np.ndarray,
    in_gap: np.ndarray,
    r_pr: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, _Primer]:
    """`_primer_relief`'s end for the realistic crater (`_REALISTIC_CRATER`): the pin's tip surface
    (`_pin_surface`) pressed into the primer ``z`` with a rounded rim, the quadratic smooth minimum
    ``z + (z_pin - z) b - w b (1 - b)``, ``b = clip(1/2 + (z - z_pin) / (2 w), 0, 1)``, of rounding height ``w``
    (exactly the lower surface where the two differ by more than ``w``); a drag lobe as for v1. The true shape
    decides what the instrument loses in every view; the pin touched the primer where the impression lies
    below the undisturbed primer, fully from ``contact_taper_m`` below it."""
    w = g["crater"]["rim_rounding_m"]
    z_pin = g["flowback_height_m"] + _pin_surface(g, _crater_outline(g, xy.gx, xy.gy))
    blend = np.clip(0.5 + 0.5 * (z - z_pin) / w, 0.0, 1.0)  # 1: the pin's surface, 0: the primer's
    imp = z + (z_pin - z) * blend - w * blend * (1 - blend)
    if g["drag_deg"] is not None:
        in_lobe, groove = _drag_groove(g, xy, fb)
        imp = np.where(in_lobe, np.minimum(imp, groove), imp)
    contact = np.clip((z - imp) / _REALISTIC_CRATER["contact_taper_m"], 0.0, 1.0)
    face = (xy.r_fp >= g["aperture_radius_m"]) & (r_pr <= r_flat)
    shape = imp.copy()  # the heights get form, texture and marks in place; the shape stays as drawn
    return imp, shape, _Primer(r_flat, r_primer, gap, head, in_gap, face, shape, contact)


def _pin_surface(g: dict, rho: np.ndarray) -> np.ndarray:
    """Heights (metres, relative to the flowback's top) of the pin tip's surface at outline coordinate ``rho``,
    continued beyond the outline (``rho > 1``, above the flowback): the tip's profile (a spherical cap, or
    ``-cap (1 - rho**floor_power)`` for a flat-floored tip) up to where it is as steep as the nose's flank
    (``flank_deg`` of `_REALISTIC_CRATER`), then the flank, a cone."""
    fp = g["firing_pin"]
    cap = fp["depth_m"] + g["flowback_height_m"]
    t = np.tan(np.deg2rad(_REALISTIC_CRATER["flank_deg"]))
    if fp["floor_power"] is None:
        R = fp["tip_radius_m"]
        r = rho * g["crater_radius_m"]
        r_star = R * np.sin(np.arctan(t))
        rr = np.minimum(r, r_star)
        return -(np.sqrt(R**2 - rr**2) - (R - cap)) + (r - rr) * t
    p = fp["floor_power"]
    a = g["crater_radius_m"] / _outline_reach(fp["outline_power"], fp["aspect"])  # metres per unit of rho
    rho_star = (t * a / (cap * p)) ** (1 / (p - 1))
    rr = np.minimum(rho, rho_star)
    return -cap * (1 - rr**p) + (rho - rr) * a * t


def _outline_reach(power: float, aspect: float) -> float:
    """Largest distance from the centre of the superellipse ``|u|**power + (|v| / aspect)**power = 1``."""
    t = np.linspace(0, np.pi / 2, 721)
    u, v = np.cos(t) ** (2 / power), aspect * np.sin(t) ** (2 / power)
    return float(np.hypot(u, v).max())


def _crater_outline(g: dict, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The firing-pin impression's outline coordinate at gun-frame points ``(gx, gy)`` (metres): 0 on the
    pin's axis, 1 on the outline, a superellipse (`FIRING_PIN_SHAPES`) scaled to lie within the crater's lip
    circle so that the flowback ring around it is untouched."""
    fp = g["firing_pin"]
    p, aspect = fp["outline_power"], fp["aspect"]
    a = g["crater_radius_m"] / _outline_reach(p, aspect)  # the major semi-axis
    t = np.deg2rad(fp["orientation_deg"])
    u = (gx * np.cos(t) + gy * np.sin(t)) / a
    v = (-gx * np.sin(t) + gy * np.cos(t)) / (aspect * a)
    if p == 2.0:
        return np.hypot(u, v)
    return (np.abs(u) ** p + np.abs(v) ** p) ** (1 / p)


def _crater_depth(g: dict, rho: np.ndarray) -> np.ndarray:
    """Heights (metres, below the flowback's top; 0 on the outline) of the firing-pin impression at outline
    coordinate ``rho`` (< 1): a spherical cap of the tip's radius through the lip, or ``1 - rho**floor_power``
    of the cap's height for a flat-floored tip."""
    fp = g["firing_pin"]
    cap = fp["depth_m"] + g["flowback_height_m"]
    if fp["floor_power"] is None:
        R = fp["tip_radius_m"]
        r = np.minimum(rho, 1.0) * g["crater_radius_m"]
        return -(np.sqrt(np.maximum(R**2 - r**2, 0.0)) - (R - cap))
    return -cap * (1 - np.minimum(rho, 1.0) ** fp["floor_power"])


def _add_form(
    rng: np.random.Generator,
    hrng: np.random.Generator | None,
    z: np.ndarray,
    xy: _Coords,
    primer: np.ndarray,
    r_primer: float,
) -> None:
    """Add (in place) the form the instrument sees: a residual tilt and a dome of the primer, and its
    absolute height offset. ``hrng`` (case-head view only): the dome stops at the primer's edge and the
    whole head sits tilted under the objective."""
    tilt = rng.normal(0, 4e-3, 2)
    dome = rng.normal(0, 2.5)  # um per mm^2
    cx_, cy_ = xy.px - primer[0], xy.py - primer[1]
    if hrng is not None:
        rr = np.minimum(np.hypot(cx_, cy_), r_primer)
        z += dome * rr**2
        tilt = tilt + hrng.normal(0, 6e-3, 2)
        z += tilt[0] * cx_ + tilt[1] * cy_
    else:
        z += tilt[0] * cx_ + tilt[1] * cy_ + dome * (cx_**2 + cy_**2)  # um/mm^2 * m^2 == m
    z += 100e-6


def _add_texture(
    rng: np.random.Generator, z: np.ndarray, marks: np.ndarray, pr: _Primer, d: dict, spacing_um: float
) -> None:
    """Add (in place) the breech-face marks on the face, primer roughness that does not come from the gun
    (rougher on the case head) and instrument noise."""
    z += np.where(pr.face, marks, 0.0)
    primer_rough = _spectral_field(rng, z.shape, spacing_um, 10.0, 300.0, alpha=1.5) * d["primer_rms_um"] * 1e-6
    z += np.where(pr.head, 1.5, 1.0) * primer_rough
    z += rng.standard_normal(z.shape) * d["noise_um"] * 1e-6


def _unmeasured(
    rng: np.random.Generator,
    geom: np.ndarray,
    xy: _Coords,
    pr: _Primer,
    g: dict,
    d: dict,
    dx: float,
    spacing_um: float,
    rim_m: float | None,
    crater_in_window: bool = False,
    smooth: np.ndarray | None = None,
) -> np.ndarray:
    """Where the instrument measures nothing (True): slopes of the shape ``geom`` near and beyond the
    objective's acceptance angle, the crater floor below the depth window (unless ``crater_in_window``:
    the "firing_pin" view), the pocket gap, patches of the flowback ring and the dark case head, and
    random clusters of drop-outs (``dropout``). ``rim_m``: the case-head view's rim radius, beyond which
    nothing is measured (None: primer view). ``smooth``: where the realistic shear cut the flowback (not lost
    in its patches)."""
    shape = geom.shape
    wide = rim_m is not None
    rc, ra, hfb = g["crater_radius_m"], g["aperture_radius_m"], g["flowback_height_m"]
    gyy, gxx = np.gradient(geom, dx)
    slope = np.hypot(gxx, gyy)
    u = rng.random(shape)
    # fewer photons come back as the slope nears the acceptance angle: a soft threshold
    p_miss = 1.0 / (1.0 + np.exp(-(slope / _ACCEPTANCE_SLOPE - 0.75) * 6.0))
    # speckle of missing points grows near steep zones (low returned light)
    near_steep = cv2.GaussianBlur((slope > _ACCEPTANCE_SLOPE).astype(np.float32), (0, 0), 12.0 / spacing_um * 2)
    p_miss = np.maximum(p_miss, 0.6 * np.clip(near_steep.astype(np.float64) * 3, 0, 1))
    missing = u < p_miss
    if pr.contact is not None:
        # the realistic crater's wall, burnished by the pin, reflects like a mirror: a sharp cut-off at the
        # acceptance angle, and its losses come in patches (the marks tilt it locally), not single points:
        # the same draws smoothed over ``wall_patch_um`` and made uniform again
        sharp = 1.0 / (1.0 + np.exp(-(slope / _ACCEPTANCE_SLOPE - 1.0) * _REALISTIC_CRATER["burnished_sharpness"]))
        uc = cv2.GaussianBlur(u, (0, 0), _REALISTIC_CRATER["wall_patch_um"] / spacing_um) - 0.5
        uc = special.ndtr(uc / (uc.std() + 1e-30))
        missing = np.where(pr.contact > 0.5, uc < sharp, missing)
    window = float(rng.uniform(30e-6, 60e-6))  # crater floor below the depth window
    if not crater_in_window:  # the realistic crater's rounded rim reaches out to the aperture
        missing |= (xy.r_fp < (ra if "crater" in g else rc)) & (pr.bowl < -(hfb + window))
    missing |= pr.in_gap
    # the flowback metal is rough and tilted: it returns little light, so about half of it is lost in patches
    # (the realistic crater's wall, burnished by the pin where it pressed, reflects as the face does)
    patches = (xy.r_fp < ra) & (_smooth_field(rng, shape, 25 / spacing_um) + 0.6 * rng.standard_normal(shape) > 0.3)
    if smooth is not None:  # the realistic shear's pocket: cut metal, smooth, reflects as the face does
        patches &= ~smooth
    missing |= patches if pr.contact is None else patches & (pr.contact < 0.5)
    # dark, tilted case head; a whole-head instrument is set up to measure it: far fewer drop-outs there
    missing |= pr.head & (_smooth_field(rng, shape, 150 / spacing_um) > (1.2 if wide else -0.6))
    if wide:
        missing |= xy.r_case > rim_m  # beyond the rim: the case body, far below
    clusters = _smooth_field(rng, shape, 30 / spacing_um)
    missing |= clusters > np.quantile(clusters, 1 - d["dropout"])
    return missing


def _add_spikes(rng: np.random.Generator, z: np.ndarray, share: float) -> None:
    """Add (in place) instrument spikes: a ``share`` of the points off by 5-30 um either way."""
    spikes = rng.random(z.shape) < share
    z[spikes] += rng.choice([-1, 1], spikes.sum()) * rng.uniform(5e-6, 30e-6, spikes.sum())


def _firing_meta(
    firearm: Firearm, shot: int, level: str, d: dict, ss: np.random.SeedSequence, drawn: dict
) -> dict[str, Any]:
    """A simulated scan's ``meta``: the instrument, ``labels`` (exhibit, the gun's info, shot) and
    ``truth``: what was ``drawn`` (pose, impression), the difficulty, the gun's geometry and the seed."""
    exhibit = f"{firearm.id}-{shot + 1}"
    return {
        "format": "simulated",
        "creator": f"ballistix {__version__} simulator",
        "instrument": {
            "manufacturer": "ballistix",
            "model": "simulated confocal, NA 0.30",
            "serial": "sim",
            "version": __version__,
        },
        "comment": f"simulated {firearm.make_model} shot {shot + 1}, difficulty {level}",
        "labels": {"exhibit": exhibit, **firearm.info, "shot": int(shot)},
        "truth": {
            **drawn,
            "difficulty": level,
            "difficulty_settings": {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()},
            "firearm_geometry": copy.deepcopy(firearm.geometry),
            "seed_entropy": str(ss.entropy),
            "spawn_key": list(ss.spawn_key),
        },
    }


def _headstamp(text_top: str, text_bottom: str, spacing_um: float) -> tuple[np.ndarray, float]:
    """Headstamp characters on a polar canvas: rows run inward from the outer radius of the
    headstamp ring, columns along the circle (one grid step each, starting at angle -pi);
    ``text_top`` centred at -90 degrees (the top of the scan), ``text_bottom`` at +90. Returns the
    canvas (1 inside a character) and the arc step in radians per column."""
    r_in, r_out = _HEADSTAMP_RADII_M
    step = spacing_um * 1e-6
    rows = max(int(round((r_out - r_in) / step)), 8)
    r_mid = (r_in + r_out) / 2
    cols = int(round(2 * np.pi * r_mid / step))
    canvas = np.zeros((rows, cols), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, h1), _ = cv2.getTextSize("A", font, 1.0, 1)
    scale = 0.8 * rows / h1
    thick = max(1, int(round(0.12e-3 / step)))  # strokes about 0.12 mm wide
    for text, centre in ((text_top, 0.25), (text_bottom, 0.75)):
        (w, h), _ = cv2.getTextSize(text, font, scale, thick)
        org = (int(round(centre * cols - w / 2)), int(round((rows + h) / 2)))
        cv2.putText(canvas, text, org, font, scale, 255, thick, lineType=cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0, 2 * np.pi / cols


def _case_head_relief(
    hrng: np.random.Generator, r_case: np.ndarray, dx_c: np.ndarray, dy_c: np.ndarray, spacing_um: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Heights of the case head (metres, primer face = 0) and what was drawn: its level, the rim
    chamfer and the headstamp characters on the annulus."""
    rim = _CASE_RIM_RADIUS_M + hrng.normal(0, 10e-6)
    offset = float(hrng.uniform(-60e-6, 60e-6))  # the primer sits this far above (+) or below the head
    depth = float(hrng.uniform(20e-6, 50e-6))
    sunk = bool(hrng.random() < 0.75)  # most headstamps are stamped in
    turn = float(hrng.uniform(0, 360))
    maker = "".join(hrng.choice(list("ABCDEFGHKMPRSTWX"), 2)) + f" {int(hrng.integers(0, 100)):02d}"
    z = np.full(r_case.shape, -offset)
    # rim chamfer: the last ~0.28 mm falls away by 0.12 mm (about 23 degrees: steeper than the objective takes)
    z -= np.clip((r_case - (rim - _CASE_CHAMFER_M)) / _CASE_CHAMFER_M, 0, None) * 0.12e-3
    canvas, dphi = _headstamp("9MM LUGER", maker, spacing_um)
    theta = (np.arctan2(dy_c, dx_c) - np.deg2rad(turn) + np.pi) % (2 * np.pi)
    map_x = (theta / dphi).astype(np.float32)
    map_y = ((_HEADSTAMP_RADII_M[1] - r_case) / (spacing_um * 1e-6)).astype(np.float32)
    letters = cv2.remap(canvas, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    letters = cv2.GaussianBlur(letters, (0, 0), sigmaX=max(8.0 / spacing_um, 0.5))  # stamped walls, a few um wide
    z += (-depth if sunk else depth) * np.clip(letters * 1.5, 0, 1)
    return z, {
        "case_head_radius_m": float(rim),
        "head_offset_m": -offset,
        "headstamp": {"text": ["9MM LUGER", maker], "turn_deg": turn, "depth_m": depth, "sunk": sunk},
    }


# ----------------------------------------------------------------------------
# labelled sets
# ----------------------------------------------------------------------------


def gun_plan(n_firearms: int, seed: int, models: list[str], run_size: int) -> list[dict[str, Any]]:
    """Keyword arguments of `make_firearm` for each gun of a simulated set (cheap: no surfaces built).

    Gun ``i`` is ``F{i+1:04d}``, seeded by the ``i``-th child of
    ``SeedSequence(seed)``; with ``run_size > 1`` consecutive guns form
    manufacturing runs of one model (run seeds ``[seed, 2, run]``), otherwise
    each gun's model is drawn from ``models`` (stream ``[seed, 1]``).
    Shared by `simulate` and `simulate_casework` so the same seed gives the same guns.
    """
    pick = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    plan = []
    for i, gun_seed in enumerate(np.random.SeedSequence(int(seed)).spawn(n_firearms)):
        run = i // run_size
        plan.append(
            {
                "firearm_id": f"F{i + 1:04d}",
                "make_model": models[run % len(models)] if run_size > 1 else models[int(pick.integers(len(models)))],
                "seed": gun_seed,
                "run": f"R{run + 1:03d}" if run_size > 1 else None,
                "run_seed": np.random.SeedSequence([int(seed), 2, run]) if run_size > 1 else None,
            }
        )
    return plan


def iter_simulate(
    n_firearms: int = 10,
    shots: int = 4,
    *,
    seed: int = 0,
    difficulty="realistic",
    resolution="full",
    models: list[str] | None = None,
    run_size: int = 1,
    subclass_share: float = 0.5,
    view: str = "primer",
    crater: str = "v1",
) -> Iterator[Scan]:
    """Like `simulate`, but yields the scans one at a time (one gun in memory at once)."""
    _seed_sequence(seed)
    if isinstance(n_firearms, bool) or not (isinstance(n_firearms, (int, np.integer)) and n_firearms >= 1):
        raise ParameterError(f"n_firearms must be a positive integer, got {n_firearms!r}")
    shots_per = list(shots) if isinstance(shots, (list, tuple)) else [shots] * n_firearms
    if len(shots_per) != n_firearms or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shots_per
    ):
        raise ParameterError(f"shots must be a positive integer or one per firearm, got {shots!r}")
    if not (isinstance(run_size, (int, np.integer)) and run_size >= 1):
        raise ParameterError(f"run_size must be a positive integer, got {run_size!r}")
    _as_difficulty(difficulty)
    _resolution(resolution)
    _view(view)
    _crater(crater)
    if models is not None and len(models) == 0:
        raise ParameterError("models must name at least one make/model (or be None for all)")
    models = list(models) if models is not None else sorted(MODELS)
    for mm in models:
        if mm not in MODELS:
            raise ParameterError(f"unknown model {mm!r}; known: {sorted(MODELS)}")
    for gun_args, n_shots in zip(gun_plan(n_firearms, seed, models, run_size), shots_per):
        gun = make_firearm(**gun_args, subclass_share=subclass_share, resolution=resolution, crater=crater)
        for k, shot_seed in enumerate(gun_args["seed"].spawn(n_shots)):
            yield fire(gun, k, seed=shot_seed, difficulty=difficulty, resolution=resolution, view=view)


def simulate(
    n_firearms: int = 10,
    shots: int | list[int] = 4,
    *,
    seed: int = 0,
    difficulty="realistic",
    resolution="full",
    models: list[str] | None = None,
    run_size: int = 1,
    subclass_share: float = 0.5,
    view: str = "primer",
    crater: str = "v1",
) -> list[Scan]:
    """Simulate labelled raw scans of cartridge cases fired in ``n_firearms`` guns.

    Parameters
    ----------
    n_firearms : int
        Number of guns.
    shots : int or list of int
        Cartridges fired per gun (or one count per gun).
    seed : int
        Everything is deterministic given the seed and the other arguments.
    difficulty : {"easy", "moderate", "realistic", "realistic-hard"} or dict
        Per-firing imperfections (see `DIFFICULTIES`); a dict overrides the
        "realistic" settings.
    resolution : {"full", "standard", "fast"} or (spacing_um, size_px)
        "full": 3.125 um, 1200 x 1200 (like raw NIST scans); "standard": 6.25
        um, 600 x 600; "fast": 12.5 um, 300 x 300 for unit tests.
    models : list of str, optional
        Keys of `MODELS` to draw guns from (default: all).
    run_size : int
        Guns per manufacturing run: consecutive guns of one run share the
        run's tool marks (subclass characteristics). ``run_size=10`` with
        ``models=["Ruger P95"]`` gives a Fadul-like set of consecutively
        manufactured slides.
    subclass_share : float
        Share of machining-mark variance shared within a run.
    view : {"primer", "case_head", "firing_pin"}
        Field of view: "primer" (default), or the whole case head (rim,
        headstamp, primer pocket gap, primer) in an 11 mm field, or the primer
        with the depth window on the firing-pin impression; the guns are the
        same, only the scanning differs (see `fire`).
    crater : {"v1", "realistic"}
        The guns' crater model (see `make_firearm`): "v1" (default) is every
        earlier data set bit for bit; "realistic" is shaped after the raw
        Fadul scans (measured wall, rounded rim, larger aperture).

    Returns
    -------
    list of Scan
        Raw scans, ``meta["labels"]["firearm"]`` the ground truth and
        ``meta["truth"]`` the true pose (see the module docs).

    Examples
    --------
    >>> import ballistix as bx
    >>> scans = bx.datasets.simulate(n_firearms=2, shots=2, seed=0, resolution="fast")
    >>> [s.meta["labels"]["exhibit"] for s in scans]
    ['F0001-1', 'F0001-2', 'F0002-1', 'F0002-2']
    """
    return list(
        iter_simulate(
            n_firearms,
            shots,
            seed=seed,
            difficulty=difficulty,
            resolution=resolution,
            models=models,
            run_size=run_size,
            subclass_share=subclass_share,
            view=view,
            crater=crater,
        )
    )
