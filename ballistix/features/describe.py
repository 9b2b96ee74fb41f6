"""Scan descriptors for database search: one float32 vector per processed breech face.

The descriptor is a rotation- and translation-invariant summary of the
surface's Fourier power spectrum (the Fourier-Mellin idea without the scale
axis):

1. translation: the power spectrum |FFT|^2 of the surface (missing points as
   zero after removing the mean) does not change when the surface shifts;
2. rotation: in polar coordinates (frequency radius rho, angle theta) a
   rotation of the surface is a circular shift of the spectrum along theta.
   The Fourier transform along theta, F(rho, k), then only changes phase, by
   the same exp(-i k alpha) at every radius. The products
   F(rho_1, k) * conj(F(rho_2, k)) over all pairs of radii are therefore
   invariant, and unlike the magnitudes |F(rho, k)| alone they keep how the
   spectral structure at one scale is oriented relative to another;
3. the band kept is the wavelengths where individual breech-face marks
   carry their spatial structure and where instruments agree: 80-400 um by
   default (v1: 60-300 um). Below about 80 um instruments differ most (lateral
   resolution, optical transfer, noise: a photometric-stereo scan at 7.4 um
   has little left at 40 um that a confocal scan at 3 um has);
4. what does not identify a gun is damped:

   - spectra are normalised per radius (the radial slope is class, not
     individual, information);
   - the polar spectrum is taken in logarithm (``log_spectrum``), so that a
     few strong peaks (an instrument's periodic or directional artefact, a
     dominant tool direction) do not outweigh the many weaker marks of the
     individual gun;
   - angular harmonic k is weighted by k ** ``harmonic_weight`` (0.5): the
     low harmonics carry the broad anisotropy that a make's breech-face
     finish, a batch's mounting and an instrument's lighting share across
     many guns, the higher ones the individual marks;

   the products are signed-square-rooted (power normalisation, which damps a
   few dominant products) and the vector is L2-normalised, so inner products
   are cosine similarities.

Step 4's log spectrum and harmonic weights and step 3's band are version 2
(``polar-spectrum-crossradius-v2``). On simulated photometric-stereo scans in
batches that share an instrument artefact (every gun's other shots in other
batches) they bring the first same-gun partner to rank 1 for 72% of queries
(89% with moderate impressions), against 0% (14%) with version 1, and put a
same-slide scan first for every real Fadul query (``python -m
benchmarks.first_stage``; docs/search.md has the table). Version 1 stays computable
(`descriptor_params` of its recorded info): a store or index keeps the
descriptor it was built with.

The similarity of two descriptors is, up to the normalisations, the energy of
the circular cross-correlation over rotation of their polar power spectra.
The descriptor is a shortlist tool: it ranks a database so that `compare`
(CMC) only has to verify the top candidates. The phase of the surface itself
is discarded, which is what makes it pose-free, and also why it cannot replace
the cell comparison.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.fft as sfft

from ..errors import DescriptorMismatchError, ParameterError
from ..scan import Scan

__all__ = [
    "DESCRIPTOR_NAME",
    "DESCRIBE_DEFAULTS",
    "V1_INFO",
    "V1_PARAMS",
    "describe",
    "descriptor_info",
    "descriptor_dim",
    "descriptor_params",
]

DESCRIPTOR_NAME = "polar-spectrum-crossradius-v2"
DESCRIBE_DEFAULTS = {
    "band_um": (80.0, 400.0),  # wavelengths kept, micrometres
    "fft_size_mm": 6.4,  # side of the zero-padded FFT (frequency sampling 1/6.4 mm)
    "n_radii": 24,  # frequency radii, log-spaced over the band
    "n_angles": 256,  # angles over 180 degrees (the power spectrum is symmetric)
    "n_harmonics": 16,  # angular harmonics kept (k = 1..n_harmonics)
    "log_spectrum": True,  # the per-radius normalised polar spectrum in logarithm
    "harmonic_weight": 0.5,  # harmonic k weighted by k ** harmonic_weight
}
#: The parameters that reproduce version 1 (``polar-spectrum-crossradius-v1``), which recorded
#: only the first five: what stores and indexes built before version 2 hold.
V1_PARAMS = {**DESCRIBE_DEFAULTS, "band_um": (60.0, 300.0), "log_spectrum": False, "harmonic_weight": 0.0}
_V1_NAME = "polar-spectrum-crossradius-v1"
#: What version 1's `descriptor_info` recorded (in stores and index files made before version 2).
V1_INFO = {
    "name": _V1_NAME,
    "params": {"band_um": [60.0, 300.0], "fft_size_mm": 6.4, "n_radii": 24, "n_angles": 256, "n_harmonics": 16},
    "dim": 9216,
}
_LOG_FLOOR = 1e-3  # of the radius's mean power: the floor under the logarithm


def _params(params: dict) -> dict:
    unknown = set(params) - set(DESCRIBE_DEFAULTS)
    if unknown:
        raise ParameterError(
            f"unknown describe parameter(s) {sorted(unknown)}; expected some of {sorted(DESCRIBE_DEFAULTS)}"
        )
    p = {**DESCRIBE_DEFAULTS, **params}
    lo, hi = (float(v) for v in p["band_um"])
    if not 0 < lo < hi:
        raise ParameterError(
            f"band_um must be (shortest, longest) wavelength with 0 < shortest < longest, got {p['band_um']}"
        )
    p["band_um"] = (lo, hi)
    p["fft_size_mm"] = float(p["fft_size_mm"])
    if p["fft_size_mm"] <= 0:
        raise ParameterError(f"fft_size_mm must be positive, got {p['fft_size_mm']}")
    for key, least in (("n_radii", 2), ("n_angles", 8), ("n_harmonics", 1)):
        if int(p[key]) != p[key] or int(p[key]) < least:
            raise ParameterError(f"{key} must be an integer >= {least}, got {p[key]!r}")
        p[key] = int(p[key])
    if not isinstance(p["log_spectrum"], (bool, np.bool_)):
        raise ParameterError(f"log_spectrum must be True or False, got {p['log_spectrum']!r}")
    p["log_spectrum"] = bool(p["log_spectrum"])
    try:
        p["harmonic_weight"] = float(p["harmonic_weight"])
    except (TypeError, ValueError):
        raise ParameterError(f"harmonic_weight must be a number, got {p['harmonic_weight']!r}") from None
    if not 0 <= p["harmonic_weight"] <= 4:
        raise ParameterError(f"harmonic_weight must be in [0, 4], got {p['harmonic_weight']}")
    if p["n_harmonics"] > p["n_angles"] // 2:
        raise ParameterError(f"n_harmonics must be at most n_angles / 2 = {p['n_angles'] // 2}, got {p['n_harmonics']}")
    return p


def descriptor_dim(**params) -> int:
    """Length of the descriptor vector for these parameters (n_radii^2 * n_harmonics)."""
    p = _params(params)
    return p["n_radii"] ** 2 * p["n_harmonics"]


def descriptor_info(**params) -> dict:
    """Name, full parameters and dimension of the descriptor: what an index records and checks."""
    p = _params(params)
    return {
        "name": DESCRIPTOR_NAME,
        "params": {**p, "band_um": list(p["band_um"])},
        "dim": p["n_radii"] ** 2 * p["n_harmonics"],
    }


def descriptor_params(info: dict) -> dict:
    """The `describe` keyword arguments that reproduce the vectors of a recorded `descriptor_info`.

    Version 1 recorded five parameters; the others take their version-1 values (`V1_PARAMS`).
    Raises `DescriptorMismatchError` for a descriptor this ballistix does not compute.

    Examples
    --------
    >>> descriptor_params({"name": "polar-spectrum-crossradius-v1", "params": {"band_um": [60, 300]}})["log_spectrum"]
    False
    """
    name = info.get("name") if isinstance(info, dict) else None
    if name not in (DESCRIPTOR_NAME, _V1_NAME) or not isinstance(info.get("params"), dict):
        raise DescriptorMismatchError(
            f"vectors made with descriptor {name!r}; this ballistix computes {DESCRIPTOR_NAME!r} and {_V1_NAME!r}"
        )
    base = V1_PARAMS if name == _V1_NAME else DESCRIBE_DEFAULTS
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in info["params"].items()}
    return _params({**base, **given})


def _polar_spectrum(z: np.ndarray, spacing_m: float, p: dict) -> np.ndarray:
    valid = np.isfinite(z)
    x = np.where(valid, z - z[valid].mean(), 0.0).astype(np.float32)
    n = max(sfft.next_fast_len(int(round(p["fft_size_mm"] * 1e-3 / spacing_m))), sfft.next_fast_len(max(z.shape)))
    power = np.abs(sfft.fft2(x, s=(n, n), workers=1)) ** 2
    power = sfft.fftshift(power).astype(np.float32)
    lo, hi = p["band_um"]
    f_cycles_per_m = np.geomspace(1.0 / (hi * 1e-6), 1.0 / (lo * 1e-6), p["n_radii"])
    rho = f_cycles_per_m * n * spacing_m  # frequency radius in FFT bins
    if rho[-1] >= n / 2 - 1:
        raise ParameterError(
            f"band_um {p['band_um']} reaches beyond the Nyquist wavelength "
            f"{2 * spacing_m * 1e6:.3g} um of a scan sampled at {spacing_m * 1e6:.3g} um"
        )
    theta = np.linspace(0.0, np.pi, p["n_angles"], endpoint=False)
    c = n / 2
    mx = (c + rho[:, None] * np.cos(theta)[None, :]).astype(np.float32)
    my = (c + rho[:, None] * np.sin(theta)[None, :]).astype(np.float32)
    return cv2.remap(power, mx, my, cv2.INTER_LINEAR)


def describe(scan: Scan, **params) -> np.ndarray:
    """Rotation- and translation-invariant descriptor of a processed breech face.

    Parameters
    ----------
    scan : Scan
        A processed surface (see `preprocess`) on a square grid; missing points NaN.
    **params
        Overrides of `DESCRIBE_DEFAULTS`: ``band_um`` (shortest, longest
        wavelength kept, micrometres), ``fft_size_mm`` (zero-padded FFT side,
        millimetres: sets the frequency sampling), ``n_radii``, ``n_angles``,
        ``n_harmonics``, ``log_spectrum`` (the polar spectrum in logarithm),
        ``harmonic_weight`` (harmonic k weighted by k to this power).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_radii**2 * n_harmonics,)`` (9,216 by default),
        unit L2 norm. Inner products of two descriptors are their cosine
        similarity. Same input and parameters give a bit-identical vector.

    Examples
    --------
    >>> import ballistix as bx
    >>> scan = bx.datasets.simulate(n_firearms=1, shots=1, seed=0)[0]
    >>> v = bx.describe(bx.preprocess(scan))
    >>> v.dtype.name, v.shape, round(float(v @ v), 4)
    ('float32', (9216,), 1.0)
    """
    if not isinstance(scan, Scan):
        raise ParameterError(f"describe expects a ballistix Scan, got {type(scan).__name__}")
    p = _params(params)
    if abs(scan.dx - scan.dy) > 1e-3 * scan.dx:
        raise ParameterError(
            f"describe needs a square grid; got {scan.dx:g} x {scan.dy:g} m (resample with preprocess)"
        )
    z = np.asarray(scan.heights, dtype=np.float64)
    valid = np.isfinite(z)
    if valid.sum() < 100 or np.ptp(z[valid]) == 0:
        raise ParameterError(
            f"describe needs a surface with data: {int(valid.sum())} valid points, {'flat' if valid.any() else 'empty'}"
        )
    polar = _polar_spectrum(z, float(scan.dx), p).astype(np.float64)
    polar /= polar.mean(axis=1, keepdims=True) + 1e-300  # per-radius normalisation
    if p["log_spectrum"]:
        polar = np.log(polar + _LOG_FLOOR)
    f = np.fft.rfft(polar - polar.mean(axis=1, keepdims=True), axis=1)[:, 1 : p["n_harmonics"] + 1]
    if p["harmonic_weight"]:
        f *= np.arange(1, p["n_harmonics"] + 1, dtype=np.float64)[None, :] ** p["harmonic_weight"]
    outer = f[:, None, :] * np.conj(f[None, :, :])  # (radius, radius, harmonic): rotation invariant
    iu = np.triu_indices(p["n_radii"])
    il = np.triu_indices(p["n_radii"], 1)
    v = np.concatenate([outer[iu].real.ravel(), outer[il].imag.ravel()])
    v = np.sign(v) * np.sqrt(np.abs(v))
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm == 0:
        raise ParameterError(
            f"describe: the surface has no spectral content in the band {p['band_um'][0]:g}-{p['band_um'][1]:g} um"
        )
    return (v / norm).astype(np.float32)
