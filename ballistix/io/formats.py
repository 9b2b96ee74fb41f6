"""2-D images, our own ``.npz`` format, and `read_scan`, which dispatches on the suffix."""

from __future__ import annotations

import inspect
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np

from .._files import atomic_file, iter_member, list_members, open_zip, read_member, sha256_file
from .._limits import (
    MAX_FIELD_MM,
    MAX_WORKING_POINTS,
    block_factor,
    block_mean_rows,
    check_limit,
    field_problem,
    reduction_record,
    rows_per_chunk,
)
from ..errors import ParameterError, ScanFormatError, ScanFormatWarning
from ..scan import Scan
from ._units import check_units, units_record
from .x3p import MAX_POINTS, read_x3p

__all__ = [
    "read_scan",
    "read_image",
    "read_npz",
    "write_npz",
    "NPZ_FORMAT_VERSION",
    "MAX_FIELD_MM",
    "MAX_WORKING_POINTS",
]

NPZ_FORMAT_VERSION = 1
#: At most this many mark arrays in a ``.npz`` (the marks of `ballistix.features.marks` use six), holding
#: at most this many bytes together (a firing-pin impression at 1 um on a 7,200-column polar grid: ~30 MB).
MAX_MARK_ARRAYS = 12
MAX_MARK_BYTES = 128 * 1024 * 1024
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


def _pixel_size(px) -> float:
    """The pixel size in metres as a positive finite float, or `ParameterError`."""
    try:
        v = float(px)
    except (TypeError, ValueError):
        raise ParameterError(f"pixel_size_m must be a number in metres, got {px!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ParameterError(f"pixel_size_m must be a positive number of metres, got {px!r}")
    return v


def _image_strip(img, mode: str, full, box=None):
    """Intensities of ``img`` (or of the ``box`` strip of it) as float64 / ``full``, NaN where not
    finite or fully transparent: the same arithmetic for the whole image and for a strip."""
    part = img if box is None else img.crop(box)
    alpha = None
    if mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in img.info):
        alpha = np.asarray(part.convert("RGBA"))[..., 3]
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(part).astype(np.float64)
    else:
        arr = np.asarray(part.convert("L")).astype(np.float64)
    return arr, alpha


def read_image(
    path,
    *,
    pixel_size_m: float | None = None,
    max_points: int = MAX_POINTS,
    max_field_mm: float | None = MAX_FIELD_MM,
    max_working_points: int | None = MAX_WORKING_POINTS,
) -> Scan:
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
    max_field_mm : float or None, default `MAX_FIELD_MM` (25 mm)
        Refuse, before decoding, an image whose pixel size makes it wider or
        taller than this: no cartridge case is (a 10,000-pixel image at
        254 dpi would be a metre across). None: no limit.
    max_working_points : int or None, default `MAX_WORKING_POINTS` (9 M)
        An image with more pixels is block-averaged ``k x k`` (the smallest
        integer ``k`` that fits; NaN-aware, a block less than half measured
        is NaN; the last ``ny % k`` rows and ``nx % k`` columns are
        dropped), a strip of rows at a time, so the full-size float64 copy
        never exists. ``meta["downsampled"]`` records the factor, the reason
        and the original shape and spacing, and a `ScanFormatWarning` says
        so. None: read every pixel.

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
    max_field_mm = check_limit(max_field_mm, "max_field_mm", integer=False)
    max_working_points = check_limit(max_working_points, "max_working_points", integer=True)
    if not path.is_file():
        raise ScanFormatError(path, "no such file")
    reduced = None
    try:
        with Image.open(path, formats=_PIL_FORMATS) as img:  # never any other of Pillow's decoders
            w, h = img.size
            if w * h > max_points:
                raise ScanFormatError(path, f"image size {w} x {h} exceeds the limit of {max_points} points")
            file_px = _pixel_size_from_file(img)
            mode = img.mode
            px = pixel_size_m if pixel_size_m is not None else file_px
            if px is None:  # known from the header: no need to decode the pixels to say so
                raise ParameterError(
                    f"{path}: the image carries no physical pixel size; pass pixel_size_m (metres per pixel)"
                )
            px = _pixel_size(px)
            why = field_problem(h, w, px, px, max_field_mm)
            if why:
                raise ScanFormatError(
                    path, why + (" (pixel_size_m)" if pixel_size_m is not None else " (the file's resolution tags)")
                )
            factor = block_factor(h, w, max_working_points)
            img.load()
            full = (
                {"F": None, "I": float(2**32 - 1)}.get(mode, 65535.0)
                if mode in ("I;16", "I;16B", "I;16L", "I", "F")
                else 255.0
            )
            if factor == 1:
                arr, alpha = _image_strip(img, mode, full)
                if full is None:
                    full = float(np.max(np.abs(arr[np.isfinite(arr)]), initial=0.0)) or 1.0
            else:  # far more pixels than a comparison needs: block-averaged a strip of rows at a time
                rows = rows_per_chunk(w, factor, 8)
                boxes = [(0, r, w, min(r + rows, h)) for r in range(0, h, rows)]
                if full is None:  # floating point: the largest magnitude of the whole image first
                    full = 0.0
                    for box in boxes:
                        a, _ = _image_strip(img, mode, None, box)
                        full = max(full, float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)))
                    full = full or 1.0

                def strips():
                    for box in boxes:
                        a, al = _image_strip(img, mode, full, box)
                        z = a / full
                        z[~np.isfinite(z)] = np.nan
                        if al is not None:
                            z[al == 0] = np.nan
                        yield z

                heights = block_mean_rows(strips(), h, w, factor)
                reduced = reduction_record(
                    factor,
                    h,
                    w,
                    px,
                    px,
                    max_working_points,
                    f"{w} x {h} pixels are more than the working grid of {max_working_points} points "
                    f"(max_working_points): block-averaged {factor} x {factor} as read",
                )
    except (ScanFormatError, ParameterError):
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise ScanFormatError(path, f"not a readable image: {e}") from None
    if reduced is None:
        if arr.ndim != 2:
            raise ScanFormatError(path, f"expected a single-channel image, got array of shape {arr.shape}")
        heights = arr / full
        heights[~np.isfinite(heights)] = np.nan
        if alpha is not None:
            heights[alpha == 0] = np.nan
    meta = {
        "source": str(path),
        "sha256": sha256_file(path),
        "format": "image",
        "z_unit": "intensity",
        "image_mode": mode,
        "pixel_size_from": "argument" if pixel_size_m is not None else "file",
        "units": units_record(
            "m", "image: pixel size in metres (pixel_size_m or the file's resolution tags); heights are intensities"
        ),
    }
    if reduced is not None:
        meta["downsampled"] = reduced
        factor = reduced["factor"]
        warnings.warn(
            f"{path}: {w} x {h} pixels are more than a comparison needs "
            f"(max_working_points={max_working_points}): block-averaged {factor} x {factor} to "
            f"{w // factor} x {h // factor} pixels of {px * factor * 1e6:.4g} um (meta['downsampled']); "
            f"pass max_working_points=None to read every pixel",
            ScanFormatWarning,
            stacklevel=2,
        )
        px = px * factor
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
# and, for a processed scan that carries its other marks (``Scan.marks``), optionally:
#   marks.npy                 0-d unicode string: JSON {mark name: its fields}
#   marks.<mark>.<field>.npy  the marks' float arrays (at most MAX_MARK_ARRAYS of them)
# Marks are records to this module (JSON fields and float arrays); `ballistix.features.marks` checks
# and rebuilds them when they are compared.


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
    extra = _mark_members(scan.marks)
    with atomic_file(path) as f:
        np.savez_compressed(
            f,
            heights=scan.heights,
            spacing=np.array([scan.dx, scan.dy], np.float64),
            meta=np.array(meta_json),
            version=np.array(NPZ_FORMAT_VERSION, np.int64),
            **extra,
        )
    return path


def _mark_members(marks: dict) -> dict[str, np.ndarray]:
    """The npz members of a scan's marks: ``marks`` (JSON of every mark's fields) and one per array."""
    if not marks:
        return {}
    from .x3p import _json_default

    fields, out = {}, {}
    for name, m in marks.items():
        rec = m.to_record() if hasattr(m, "to_record") else m
        if not (isinstance(name, str) and name.isidentifier() and isinstance(rec, dict)):
            raise ParameterError(f"scan marks must map mark names to extractions or records, got {name!r}")
        fields[name] = rec.get("fields") or {}
        for key, arr in (rec.get("arrays") or {}).items():
            a = np.asarray(arr)
            if not (isinstance(key, str) and key.isidentifier() and a.dtype.kind == "f"):
                raise ParameterError(f"mark {name}: array {key!r} must be a float array, got {a.dtype}")
            out[f"marks.{name}.{key}"] = a
    if len(out) > MAX_MARK_ARRAYS:
        raise ParameterError(f"scan marks hold {len(out)} arrays, more than {MAX_MARK_ARRAYS}")
    try:
        out["marks"] = np.array(json.dumps(fields, sort_keys=True, allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as e:
        raise ParameterError(f"scan marks cannot be stored as JSON: {e}") from None
    return out


def _read_marks(path, zf, members: dict) -> dict:
    """The mark records of a ``.npz`` (see `_mark_members`): ``{name: {"fields": ..., "arrays": ...}}``,
    their arrays within `MAX_MARK_BYTES` together (checked before each is decoded)."""
    names = [n for n in members if n.startswith("marks.") and n.endswith(".npy") and n != "marks.npy"]
    if "marks.npy" not in members:
        if names:
            raise ScanFormatError(path, "npz holds mark arrays but no marks.npy")
        return {}
    if len(names) > MAX_MARK_ARRAYS:
        raise ScanFormatError(path, f"npz holds {len(names)} mark arrays, more than {MAX_MARK_ARRAYS}")
    fields = _json_member(path, _npy(path, zf, members, "marks.npy", 1024 * 1024), "marks")
    if not all(isinstance(v, dict) for v in fields.values()):
        raise ScanFormatError(path, "marks JSON must map each mark to an object of its fields")
    out = {name: {"fields": f, "arrays": {}} for name, f in fields.items()}
    left = MAX_MARK_BYTES
    for n in sorted(names):
        parts = n[: -len(".npy")].split(".")
        if len(parts) != 3 or parts[1] not in out:
            raise ScanFormatError(path, f"npz member {n} belongs to no mark in marks.npy")
        if members[n].file_size > left + 4096:
            raise ScanFormatError(path, f"the mark arrays hold more than {MAX_MARK_BYTES} bytes together")
        a = _npy(path, zf, members, n, left + 4096)
        left -= a.nbytes
        if a.dtype.kind != "f":
            raise ScanFormatError(path, f"npz member {n} must hold floats, got {a.dtype}")
        out[parts[1]]["arrays"][parts[2]] = a
    return out


def _json_member(path, arr: np.ndarray, name: str) -> dict:
    """A 0-d unicode member holding a JSON object, decoded and checked."""
    if arr.shape != () or arr.dtype.kind != "U":
        raise ScanFormatError(path, f"{name} must be a 0-d unicode string holding JSON")
    codes = np.frombuffer(arr.tobytes(), arr.dtype.str[0] + "u4")
    if codes.size and int(codes.max()) > 0x10FFFF:  # numpy would build an invalid Python str from these
        raise ScanFormatError(path, f"{name} holds code points beyond U+10FFFF")
    try:
        out = json.loads(str(arr))
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise ScanFormatError(path, f"{name} is not valid JSON: {e}") from None
    if not isinstance(out, dict):
        raise ScanFormatError(path, f"{name} JSON must be an object")
    return out


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


def _npy_header(zf, info):
    """``(shape, fortran_order, dtype, header bytes)`` of a .npy member, read without its data; None when
    the header is not one `_npy` would accept (it then reads the member and says why)."""
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            offset = f.tell()
    except Exception:  # noqa: BLE001  any problem: the whole-member path reports it
        return None
    if dtype.hasobject or math.prod(shape) * dtype.itemsize != info.file_size - offset:
        return None
    return shape, fortran, dtype, offset


def _npz_heights_reduced(path, zf, info, shape, fortran, dtype, offset, factor) -> np.ndarray:
    """heights.npy decoded a chunk of rows at a time and block-averaged ``factor x factor``."""
    ny, nx = shape
    if fortran:  # stored column by column: average the transpose (square blocks), transpose back
        ny, nx = nx, ny
    rows = rows_per_chunk(nx, factor, dtype.itemsize)

    def chunks():
        for buf in iter_member(path, zf, info, rows * nx * dtype.itemsize, "heights.npy", skip=offset):
            z = np.frombuffer(buf, dtype=dtype).reshape(-1, nx).astype(np.float64)
            if np.isinf(z).any():
                raise ScanFormatError(path, "heights contain +/-inf; use NaN for missing points")
            yield z

    out = block_mean_rows(chunks(), ny, nx, factor)
    return out.T.copy() if fortran else out


def read_npz(
    path,
    *,
    max_points: int = MAX_POINTS,
    max_field_mm: float | None = MAX_FIELD_MM,
    max_working_points: int | None = MAX_WORKING_POINTS,
) -> Scan:
    """Read a scan written by `write_npz` (never unpickles anything).

    Parameters
    ----------
    path : str or path-like
    max_points : int
        Refuse heights of more points than this.
    max_field_mm : float or None, default `MAX_FIELD_MM` (25 mm)
        Refuse, before the heights are decoded, a grid wider or taller than
        this: no cartridge case is. None: no limit.
    max_working_points : int or None, default `MAX_WORKING_POINTS` (9 M)
        Heights with more points are block-averaged ``k x k`` as they are
        decoded (as in `read_image`), recorded in ``meta["downsampled"]``
        with a `ScanFormatWarning`. None: read every point.
    """
    path = Path(path)
    max_field_mm = check_limit(max_field_mm, "max_field_mm", integer=False)
    max_working_points = check_limit(max_working_points, "max_working_points", integer=True)
    reduced = None
    with open_zip(path, "a ballistix .npz file") as zf:
        members = list_members(path, zf, 5 + MAX_MARK_ARRAYS)
        version = _npy(path, zf, members, "version.npy", 4096)
        if version.shape != () or version.dtype.kind not in "iu" or int(version) != NPZ_FORMAT_VERSION:
            raise ScanFormatError(path, f"npz format version {version!r} is not {NPZ_FORMAT_VERSION}")
        spacing = _npy(path, zf, members, "spacing.npy", 4096)
        # the heights' header first: a grid no cartridge case fills, or far finer than a comparison
        # needs, is known before its points are decoded
        info = members.get("heights.npy")
        head = None
        if info is not None and not info.flag_bits & 0x1 and info.file_size <= max_points * 8 + 4096:
            head = _npy_header(zf, info)
        factor = 1
        if head is not None and len(head[0]) == 2 and head[2].kind == "f" and 0 < math.prod(head[0]) <= max_points:
            ny, nx = head[0]
            if (
                spacing.shape == (2,)
                and spacing.dtype.kind == "f"
                and np.all(np.isfinite(spacing))
                and np.all(spacing > 0)
            ):
                why = field_problem(ny, nx, float(spacing[0]), float(spacing[1]), max_field_mm)
                if why:
                    raise ScanFormatError(path, why)
            factor = block_factor(ny, nx, max_working_points)
        if factor > 1:
            heights = _npz_heights_reduced(path, zf, info, *head, factor)
        else:
            heights = _npy(path, zf, members, "heights.npy", max_points * 8 + 4096)
        meta_arr = _npy(path, zf, members, "meta.npy", 16 * 1024 * 1024)
        marks = _read_marks(path, zf, members)
    if heights.size > max_points:
        raise ScanFormatError(path, f"heights have {heights.size} points, more than the limit of {max_points}")
    if spacing.shape != (2,) or spacing.dtype.kind != "f":
        raise ScanFormatError(path, f"spacing must be two floats [dx, dy], got {spacing.dtype} {spacing.shape}")
    meta = _json_member(path, meta_arr, "meta")
    meta.update(
        source=str(path),
        sha256=sha256_file(path),
        format="npz",
        units=units_record("m", "npz: ballistix's own format, always metres"),
    )
    dx, dy = float(spacing[0]), float(spacing[1])
    if factor > 1:
        ny, nx = head[0]
        reduced = reduction_record(
            factor,
            ny,
            nx,
            dx,
            dy,
            max_working_points,
            f"{nx} x {ny} points are more than the working grid of {max_working_points} points "
            f"(max_working_points): block-averaged {factor} x {factor} as read",
        )
        if isinstance(meta.get("downsampled"), dict):
            reduced["earlier"] = meta["downsampled"]
        meta["downsampled"] = reduced
        warnings.warn(
            f"{path}: {nx} x {ny} points at {dx * 1e6:.4g} um are more than a comparison needs "
            f"(max_working_points={max_working_points}): block-averaged {factor} x {factor} to "
            f"{nx // factor} x {ny // factor} points at {dx * factor * 1e6:.4g} um (meta['downsampled']); "
            f"pass max_working_points=None to read every point",
            ScanFormatWarning,
            stacklevel=2,
        )
        dx, dy = dx * factor, dy * factor
    try:
        return Scan(heights, dx, dy, meta, marks)
    except ParameterError as e:
        raise ScanFormatError(path, str(e)) from None


def read_scan(path, *, units: str = "auto", **kwargs) -> Scan:
    """Read a scan, choosing the reader by the file suffix.

    ``.x3p`` -> `read_x3p` (keywords ``strict``, ``max_points``, ``units``);
    ``.png``, ``.tif``, ``.tiff`` -> `read_image` (``pixel_size_m``);
    ``.npz`` -> `read_npz`.

    Every reader holds a file to the size budget of a cartridge-case scan
    (``ballistix._limits``): a field of view wider or taller than
    ``max_field_mm`` (`MAX_FIELD_MM`, 25 mm) is refused before any point is
    decoded, and a file of more than ``max_working_points``
    (`MAX_WORKING_POINTS`, 9 M) points is block-averaged as it is decoded,
    with ``meta["downsampled"]`` and a `ScanFormatWarning` saying so, so that
    reading, preprocessing and describing any file stays within about 1.5 GB.

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
        what = (
            "a ballistix .npz file is always in metres"
            if reader is read_npz
            else "an image's pixel size is in metres (pixel_size_m or the file's resolution tags)"
        )
        raise ParameterError(f"{p}: units={units!r} applies to x3p files only; {what}")
    try:
        inspect.signature(reader).bind(p, **kwargs)
    except TypeError as e:
        raise ParameterError(f"{p}: {reader.__name__} {e}") from None
    return reader(p, **kwargs)
