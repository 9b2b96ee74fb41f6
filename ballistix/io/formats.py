"""2-D images, our own ``.npz`` format, and `read_scan`, which dispatches on the suffix."""

from __future__ import annotations

import inspect
import io
import json
import math
from pathlib import Path

import numpy as np

from .._files import atomic_file
from ..errors import ParameterError, ScanFormatError
from ..scan import Scan
from ._units import check_units, units_record
from ._zip import list_members, open_zip, read_member, sha256_file
from .x3p import MAX_POINTS, read_x3p

__all__ = ["read_scan", "read_image", "read_npz", "write_npz", "NPZ_FORMAT_VERSION"]

NPZ_FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
#: An image resolution tag is believed only if it implies pixels at most this large:
#: 72/96 dpi defaults written by ordinary software are not a microscope's calibration.
MAX_TRUSTED_PIXEL_M = 100e-6
_PIL_FORMATS = ("PNG", "TIFF")


def _pixel_size_from_file(img) -> float | None:
    """Pixel size in metres from PNG pHYs / TIFF resolution tags, or None."""
    # Pillow puts inch and centimetre resolutions (PNG pHYs in metres, TIFF
    # ResolutionUnit 2/3) into info["dpi"]; info["resolution"] alone means
    # "no absolute unit" (TIFF ResolutionUnit 1), which says nothing physical.
    dpi = img.info.get("dpi")
    if dpi is None:
        return None
    if not isinstance(dpi, (tuple, list)):
        dpi = (dpi, dpi)
    try:
        dx = 0.0254 / float(dpi[0])
        dy = 0.0254 / float(dpi[1])
    except (ZeroDivisionError, TypeError, ValueError):
        return None
    if not (0 < dx <= MAX_TRUSTED_PIXEL_M) or abs(dx - dy) > 1e-3 * dx:
        return None
    return dx


def read_image(path, *, pixel_size_m: float | None = None, max_points: int = MAX_POINTS) -> Scan:
    """Read a 2-D grayscale image (PNG or TIFF) as an intensity `Scan`.

    Parameters
    ----------
    path : str or path-like
    pixel_size_m : float, optional
        Lateral pixel size in metres. Required unless the file carries a
        physical resolution (PNG ``pHYs`` or TIFF resolution tags) that
        implies pixels of at most 100 um; screen defaults such as 72 dpi are
        not trusted.
    max_points : int
        Refuse images with more pixels than this, before decoding.

    Returns
    -------
    Scan
        ``heights`` hold intensities, not metres (``meta["z_unit"] ==
        "intensity"``): 8- and 16-bit grey values scaled to [0, 1]; 32-bit
        integer images divided by 2**32 - 1; floating-point images divided by
        their largest absolute value. Fully transparent pixels are NaN. Colour
        images are converted to luminance.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ScanFormatError(path, "no such file")
    try:
        with Image.open(path, formats=_PIL_FORMATS) as img:  # never any other of Pillow's decoders
            w, h = img.size
            if w * h > max_points:
                raise ScanFormatError(path, f"image size {w} x {h} exceeds the limit of {max_points} points")
            file_px = _pixel_size_from_file(img)
            mode = img.mode
            img.load()
            alpha = None
            if mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in img.info):
                alpha = np.asarray(img.convert("RGBA"))[..., 3]
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img).astype(np.float64)
                full = {"F": None, "I": float(2**32 - 1)}.get(mode, 65535.0)
                if full is None:
                    full = float(np.max(np.abs(arr[np.isfinite(arr)]), initial=0.0)) or 1.0
            else:
                arr = np.asarray(img.convert("L")).astype(np.float64)
                full = 255.0
    except ScanFormatError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise ScanFormatError(path, f"not a readable image: {e}") from None
    if arr.ndim != 2:
        raise ScanFormatError(path, f"expected a single-channel image, got array of shape {arr.shape}")
    px = pixel_size_m if pixel_size_m is not None else file_px
    if px is None:
        raise ParameterError(
            f"{path}: the image carries no physical pixel size; pass pixel_size_m (metres per pixel)")
    try:
        px = float(px)
    except (TypeError, ValueError):
        raise ParameterError(f"pixel_size_m must be a number in metres, got {px!r}") from None
    if not np.isfinite(px) or px <= 0:
        raise ParameterError(f"pixel_size_m must be a positive number of metres, got {px!r}")
    heights = arr / full
    heights[~np.isfinite(heights)] = np.nan
    if alpha is not None:
        heights[alpha == 0] = np.nan
    meta = {"source": str(path), "sha256": sha256_file(path), "format": "image",
            "z_unit": "intensity", "image_mode": mode,
            "pixel_size_from": "argument" if pixel_size_m is not None else "file",
            "units": units_record("m", "image: pixel size in metres (pixel_size_m or the file's resolution tags); "
                                       "heights are intensities")}
    return Scan(heights, px, px, meta)


# ----------------------------------------------------------------------------
# npz: our own format
# ----------------------------------------------------------------------------
#
# A standard numpy .npz (zip) with exactly these members, all loadable with
# allow_pickle=False:
#   heights.npy  2-D float32 or float64, metres, NaN = missing
#   spacing.npy  float64 [dx, dy] in metres
#   meta.npy     0-d unicode string: the JSON-encoded meta dict
#   version.npy  0-d int64: NPZ_FORMAT_VERSION


def write_npz(scan: Scan, path) -> Path:
    """Write a scan in ballistix's ``.npz`` format (see module docs); atomic."""
    if not isinstance(scan, Scan):
        raise ParameterError(f"write_npz expects a Scan, got {type(scan).__name__}")
    from .x3p import _json_default

    path = Path(path)
    meta = {k: v for k, v in scan.meta.items() if k not in ("source", "sha256", "format", "units")}
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"scan meta cannot be stored as JSON: {e}") from None
    with atomic_file(path) as f:
        np.savez_compressed(f, heights=scan.heights, spacing=np.array([scan.dx, scan.dy], np.float64),
                            meta=np.array(meta_json), version=np.array(NPZ_FORMAT_VERSION, np.int64))
    return path


def _npy(path, zf, members, name, limit):
    info = members.get(name)
    if info is None:
        raise ScanFormatError(path, f"npz member {name} is missing (expected heights, spacing, meta, version)")
    raw = read_member(path, zf, info, limit, name)
    f = io.BytesIO(raw)
    try:
        # Check the header against the bytes present *before* numpy allocates
        # the array it declares (read_array allocates first, then reads).
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not supported")
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed")
        if math.prod(shape) * dtype.itemsize != len(raw) - f.tell():
            raise ValueError(f"header declares shape {shape} of {dtype} but {len(raw) - f.tell()} data bytes follow")
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    except Exception as e:  # numpy's header parser also raises SyntaxError, TokenError, TypeError, ...
        raise ScanFormatError(path, f"npz member {name} is not a valid pickle-free .npy array: {e}") from None


def read_npz(path, *, max_points: int = MAX_POINTS) -> Scan:
    """Read a scan written by `write_npz` (never unpickles anything)."""
    path = Path(path)
    with open_zip(path, "a ballistix .npz file") as zf:
        members = list_members(path, zf, 16)
        version = _npy(path, zf, members, "version.npy", 4096)
        if version.shape != () or version.dtype.kind not in "iu" or int(version) != NPZ_FORMAT_VERSION:
            raise ScanFormatError(path, f"npz format version {version!r} is not {NPZ_FORMAT_VERSION}")
        heights = _npy(path, zf, members, "heights.npy", max_points * 8 + 4096)
        spacing = _npy(path, zf, members, "spacing.npy", 4096)
        meta_arr = _npy(path, zf, members, "meta.npy", 16 * 1024 * 1024)
    if heights.ndim != 2 or heights.dtype.kind != "f":
        raise ScanFormatError(path, f"heights must be a 2-D float array, got {heights.dtype} {heights.shape}")
    if heights.size > max_points:
        raise ScanFormatError(path, f"heights have {heights.size} points, more than the limit of {max_points}")
    if spacing.shape != (2,) or spacing.dtype.kind != "f":
        raise ScanFormatError(path, f"spacing must be two floats [dx, dy], got {spacing.dtype} {spacing.shape}")
    if meta_arr.shape != () or meta_arr.dtype.kind != "U":
        raise ScanFormatError(path, "meta must be a 0-d unicode string holding JSON")
    codes = np.frombuffer(meta_arr.tobytes(), meta_arr.dtype.str[0] + "u4")
    if codes.size and int(codes.max()) > 0x10FFFF:  # numpy would build an invalid Python str from these
        raise ScanFormatError(path, "meta holds code points beyond U+10FFFF")
    try:
        meta = json.loads(str(meta_arr))
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise ScanFormatError(path, f"meta is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ScanFormatError(path, "meta JSON must be an object")
    meta.update(source=str(path), sha256=sha256_file(path), format="npz",
                units=units_record("m", "npz: ballistix's own format, always metres"))
    try:
        return Scan(heights, float(spacing[0]), float(spacing[1]), meta)
    except ParameterError as e:
        raise ScanFormatError(path, str(e)) from None


def read_scan(path, *, units: str = "auto", **kwargs) -> Scan:
    """Read a scan, choosing the reader by the file suffix.

    ``.x3p`` -> `read_x3p` (keywords ``strict``, ``max_points``, ``units``);
    ``.png``, ``.tif``, ``.tiff`` -> `read_image` (``pixel_size_m``);
    ``.npz`` -> `read_npz`.

    Parameters
    ----------
    path : str or path-like
    units : {"auto", "m", "mm", "um"}, default "auto"
        The length unit of an x3p file's increments and heights (see
        `read_x3p`): ``"auto"`` reads metres, or millimetres / micrometres
        when the file is unambiguously in them (with a `ScanFormatWarning`).
        Other formats have no unit to choose: ``.npz`` files are always in
        metres and images take their pixel size in metres, so they accept
        ``"auto"`` and ``"m"`` and refuse ``"mm"``/``"um"`` with a
        `ParameterError`.
    **kwargs
        Passed to the reader; a keyword the reader does not take is a
        `ParameterError`.

    Returns
    -------
    Scan
        In metres; ``meta["units"]`` says the file's unit and how it was
        decided.

    Examples
    --------
    >>> import ballistix as bx
    >>> scan = bx.read_scan("../shared/data/fadul/fadul-1-1.x3p")  # doctest: +SKIP
    >>> scan = bx.read_scan("exhibit-from-another-lab.x3p", units="um")  # doctest: +SKIP
    """
    p = Path(path)
    check_units(units)
    suffix = p.suffix.lower()
    if suffix == ".x3p":
        reader = read_x3p
        kwargs["units"] = units
    elif suffix in IMAGE_SUFFIXES:
        reader = read_image
    elif suffix == ".npz":
        reader = read_npz
    else:
        raise ScanFormatError(p, f"unsupported suffix {suffix or '(none)'!r}; expected .x3p, .png, .tif, .tiff or .npz")
    if reader is not read_x3p and units not in ("auto", "m"):
        what = ("a ballistix .npz file is always in metres" if reader is read_npz else
                "an image's pixel size is in metres (pixel_size_m or the file's resolution tags)")
        raise ParameterError(f"{p}: units={units!r} applies to x3p files only; {what}")
    try:
        inspect.signature(reader).bind(p, **kwargs)
    except TypeError as e:
        raise ParameterError(f"{p}: {reader.__name__} {e}") from None
    return reader(p, **kwargs)
