"""ISO 25178-72 (ISO 5436-2) x3p reader and writer.

An x3p file is a zip archive holding ``main.xml`` (axes, sizes, metadata),
the binary point data (``bindata/data.bin``, little-endian, X fastest), an
optional valid-points bit mask, and ``md5checksum.hex`` (the MD5 of
``main.xml``). The reader treats every file as untrusted: member paths are
checked, XML is parsed without DTDs or entities, declared sizes are checked
against limits *before* anything is allocated, and every member is read with
a hard byte budget, so that zip bombs, truncated data and absurd dimensions
end in a `ScanFormatError` that names the file and the problem. Within those
limits, a field of view larger than any cartridge case is refused and a grid
far finer than a comparison needs is block-averaged as it is decoded (the
size budget of ``ballistix._limits``: `MAX_FIELD_MM`, `MAX_WORKING_POINTS`),
so that a small file of zeros cannot take gigabytes downstream.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple
from xml.etree.ElementTree import ParseError

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _safe_fromstring

from .._files import atomic_file, list_members, open_zip
from .._files import check_member_name as _check_member_name
from .._files import iter_member as _iter_member
from .._files import read_member as _read_member
from .._files import sha256_file as _sha256_file
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
from .._version import __version__
from ..errors import ChecksumError, ParameterError, ScanFormatError, ScanFormatWarning
from ..scan import Scan
from ._units import SCALE_TO_M, check_units, decide_units, lateral_candidates, units_record

__all__ = ["read_x3p", "write_x3p", "MAX_POINTS", "MAX_FIELD_MM", "MAX_WORKING_POINTS"]

#: Default cap on SizeX * SizeY (1e8 points is 800 MB as float64).
MAX_POINTS = 100_000_000
MAX_XML_BYTES = 16 * 1024 * 1024
MAX_SIDECAR_BYTES = 4 * 1024 * 1024
MAX_MEMBERS = 1000
_DTYPES = {"D": np.dtype("<f8"), "F": np.dtype("<f4"), "L": np.dtype("<i4"), "I": np.dtype("<i2")}
_SIDECAR = "ballistix.json"
_OWN_KEYS = ("source", "sha256", "format", "x3p", "units")  # describe the file read, never stored in it
_RECORD2_KEYS = ("date", "creator", "calibration_date", "comment", "instrument", "probing")


def _strip_ns(root) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.rsplit("}", 1)[1]


def _text(path, root, field: str, *, required: bool = True, default=None) -> str | None:
    el = root.find(field)
    if el is None or el.text is None or not el.text.strip():
        if required:
            raise ScanFormatError(path, f"main.xml is missing the required element {field}")
        return default
    return el.text.strip()


def _number(path, root, field: str, kind=float, *, required: bool = True, default=None):
    s = _text(path, root, field, required=required)
    if s is None:
        return default
    try:
        v = kind(s)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ScanFormatError(path, f"main.xml field {field} = {s[:40]!r} is not {what}") from None
    if kind is float and not math.isfinite(v):
        raise ScanFormatError(path, f"main.xml field {field} = {s[:40]!r} is not finite")
    return v


def _md5_from_checksum_file(data: bytes) -> str | None:
    """Accept a bare hash or an ``md5sum``-style line ``<hash> *main.xml``."""
    try:
        token = data.decode("ascii", "strict").split()
    except UnicodeDecodeError:
        return None
    if not token or len(token[0]) != 32:
        return None
    try:
        int(token[0], 16)
    except ValueError:
        return None
    return token[0].lower()


def _warn(message: str) -> None:
    """Warn (`ScanFormatWarning`) at the first frame outside this module: the caller of `read_x3p`."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: the frame that called _warn
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ScanFormatWarning, stacklevel=level)


def _checksum(
    path, strict: bool, what: str, expected: str | None, data: bytes | None = None, *, digest: str | None = None
) -> str:
    """Check ``data`` (or its MD5 ``digest``, computed while streaming) against ``expected``."""
    if expected is None:
        return "absent"
    if expected == "missing":
        msg, status = f"the checksum file of {what} named in main.xml is not in the archive", "missing"
    elif (digest if digest is not None else hashlib.md5(data).hexdigest()) == expected.strip().lower():
        return "verified"
    else:
        msg, status = f"MD5 checksum of {what} does not match the one stored in the file", "mismatch"
    if strict:
        raise ChecksumError(path, msg + " (pass strict=False to read it anyway)")
    _warn(f"{path}: {msg}")
    return status


def _check_field(path, ny: int, nx: int, dx: float, dy: float, units: str, max_field_mm) -> None:
    """Under ``units="auto"``, refuse a field larger than any cartridge case (`MAX_FIELD_MM`) from the
    declared sizes and increments, before any point is read: the smallest reading the increments allow
    counts (when none fits, `decide_units` refuses the file later). A unit given by the caller is read
    as given, no questions asked: `preprocess` refuses the field then (the reader's
    ``max_working_points`` bounds the memory either way)."""
    if units != "auto":
        return
    cands = lateral_candidates(dx, dy, units)
    if not cands:
        return
    unit = min(cands, key=lambda u: SCALE_TO_M[u])  # the smallest scale: refuse only what no reading saves
    why = field_problem(ny, nx, dx * SCALE_TO_M[unit], dy * SCALE_TO_M[unit], max_field_mm)
    if why:
        if unit != "m":
            why += f" (lengths read as {unit}: units='auto' found no smaller reading)"
        raise ScanFormatError(path, why)


# ----------------------------------------------------------------------------
# reader, step by step (in the order `read_x3p` takes them)
# ----------------------------------------------------------------------------


class _Archive(NamedTuple):
    """An open x3p file: its path (named in every error), the zip, its members by normalised name, and
    the folder of ``main.xml`` that the links in ``main.xml`` are relative to."""

    path: Path
    zf: zipfile.ZipFile
    members: dict[str, zipfile.ZipInfo]
    prefix: str

    def member(self, link: str, what: str) -> zipfile.ZipInfo:
        """The member a link in ``main.xml`` names, checked like any member name."""
        _check_member_name(self.path, link)
        name = posixpath.normpath(posixpath.join(self.prefix, link.strip().replace("\\", "/")))
        if name not in self.members:
            raise ScanFormatError(self.path, f"{what} {link!r} named in main.xml is not in the archive")
        return self.members[name]


class _Grid(NamedTuple):
    """What ``main.xml`` declares about the points: size, spacing, data type (``D``, ``F``, ``L``, ``I``),
    CZ increment and the axis offsets, in the file's length unit until `_to_metres`."""

    nx: int
    ny: int
    dx: float
    dy: float
    dtype_code: str
    z_inc: float
    z_off: float
    x_off: float
    y_off: float


def _open_archive(path: Path, zf: zipfile.ZipFile) -> tuple[_Archive, str]:
    """List the members of the zip (at most `MAX_MEMBERS`) and find its one ``main.xml`` (the shallowest;
    several at that depth are ambiguous): the archive and the name of ``main.xml``."""
    members = list_members(path, zf, MAX_MEMBERS)
    mains = [n for n in members if posixpath.basename(n).lower() == "main.xml"]
    if not mains:
        raise ScanFormatError(path, "no main.xml in the archive")
    depth = min(n.count("/") for n in mains)
    mains = [n for n in mains if n.count("/") == depth]
    if len(mains) > 1:
        raise ScanFormatError(path, f"ambiguous archive: several main.xml files {sorted(mains)}")
    return _Archive(path, zf, members, posixpath.dirname(mains[0])), mains[0]


def _parse_main_xml(arc: _Archive, main_name: str):
    """Read ``main.xml`` (at most `MAX_XML_BYTES`) and parse it without DTDs or entities: its bytes (for
    the checksum) and its root element, namespaces stripped."""
    path = arc.path
    xml_bytes = bytes(_read_member(path, arc.zf, arc.members[main_name], MAX_XML_BYTES, "main.xml"))
    try:
        root = _safe_fromstring(xml_bytes, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise ScanFormatError(
            path, f"main.xml uses forbidden XML constructs (DTD/entities): {type(e).__name__}"
        ) from None
    except (ParseError, ValueError, LookupError) as e:  # LookupError: unknown encoding="..."
        raise ScanFormatError(path, f"main.xml is not well-formed XML: {e}") from None
    _strip_ns(root)
    if root.tag != "ISO5436_2":
        raise ScanFormatError(path, f"main.xml root element is {root.tag!r}, expected ISO5436_2")
    return xml_bytes, root


def _read_grid(path, root, max_points: int) -> _Grid:
    """Record1 (a SUR surface on incremental CX/CY axes: spacing, data type, z scaling, offsets) and the
    Record3 matrix size, refused beyond ``max_points`` before anything is allocated."""
    feature = _text(path, root, "Record1/FeatureType")
    if feature.upper() != "SUR":
        raise ScanFormatError(path, f"FeatureType {feature!r} is not supported (only SUR surfaces)")
    for ax in ("CX", "CY"):
        t = _text(path, root, f"Record1/Axes/{ax}/AxisType")
        if t.upper() != "I":
            raise ScanFormatError(path, f"{ax} AxisType {t!r} is not supported (expected I, incremental)")
    dx = _number(path, root, "Record1/Axes/CX/Increment")
    dy = _number(path, root, "Record1/Axes/CY/Increment")
    for name, v in (("CX", dx), ("CY", dy)):
        if not v > 0:
            raise ScanFormatError(path, f"{name} Increment must be a positive spacing, got {v}")
    dtype_code = _text(path, root, "Record1/Axes/CZ/DataType", required=False, default="D").upper()
    if dtype_code not in _DTYPES:
        raise ScanFormatError(path, f"CZ DataType {dtype_code!r} is not one of D, F, L, I")
    z_inc = _number(path, root, "Record1/Axes/CZ/Increment", required=False, default=1.0)
    z_off = _number(path, root, "Record1/Axes/CZ/Offset", required=False, default=0.0)
    x_off = _number(path, root, "Record1/Axes/CX/Offset", required=False, default=0.0)
    y_off = _number(path, root, "Record1/Axes/CY/Offset", required=False, default=0.0)

    nx = _number(path, root, "Record3/MatrixDimension/SizeX", int)
    ny = _number(path, root, "Record3/MatrixDimension/SizeY", int)
    nz = _number(path, root, "Record3/MatrixDimension/SizeZ", int, required=False, default=1)
    if nx < 1 or ny < 1:
        raise ScanFormatError(path, f"declared size {nx} x {ny} is not positive")
    if nz != 1:
        raise ScanFormatError(path, f"SizeZ = {nz} is not supported (expected 1 layer)")
    npts = nx * ny
    if npts > max_points:
        raise ScanFormatError(
            path, f"declared size {nx} x {ny} = {npts} points exceeds the limit of {max_points} (max_points)"
        )
    return _Grid(nx, ny, dx, dy, dtype_code, z_inc, z_off, x_off, y_off)


def _read_points(
    arc: _Archive, root, grid: _Grid, *, units: str, max_field_mm, max_working_points, strict: bool
) -> tuple[np.ndarray, _Grid, int, dict[str, str]]:
    """Record3's points: ``(heights, grid, k, checksum status)``, heights float64 in the file's unit, NaN
    where invalid. Binary point data are checked against their declared size and the field of view
    (`_check_field`) first; more than ``max_working_points`` are block-averaged ``k x k`` as decoded
    (`_read_reduced`), otherwise read whole (`_read_whole`, also for an inline DataList, which the
    returned grid then records as ``D`` when it was ``D`` or ``F``)."""
    path, (nx, ny, dx, dy, dtype_code) = arc.path, grid[:5]
    status = {}
    link = _text(path, root, "Record3/DataLink/PointDataLink", required=False)
    vlink = _text(path, root, "Record3/DataLink/ValidPointsLink", required=False)
    info, factor = None, 1
    if link is not None:
        info = arc.member(link, "point data")
        expected = nx * ny * _DTYPES[dtype_code].itemsize
        if info.file_size != expected:
            raise ScanFormatError(
                path,
                f"point data {info.filename} has {info.file_size} bytes, expected {expected} "
                f"for {nx} x {ny} points of type {dtype_code}",
            )
        _check_field(path, ny, nx, dx, dy, units, max_field_mm)
        factor = block_factor(ny, nx, max_working_points)
    if factor > 1:  # far more points than a comparison needs: block-averaged as decoded, never whole
        heights, digest, valid_status = _read_reduced(
            arc,
            info,
            arc.member(vlink, "valid-points mask") if vlink is not None else None,
            grid,
            factor,
            strict,
            _text(path, root, "Record3/DataLink/MD5ChecksumValidPoints", required=False),
        )
        status["point_data"] = _checksum(
            path,
            strict,
            "the point data",
            _text(path, root, "Record3/DataLink/MD5ChecksumPointData", required=False),
            digest=digest,
        )
        if valid_status is not None:
            status["valid_points"] = valid_status
    else:
        heights = _read_whole(arc, root, info, vlink, status, grid, units, max_field_mm, strict)
        if link is None and dtype_code in "DF":
            grid = grid._replace(dtype_code="D")
    return heights, grid, factor, status


def _read_whole(arc: _Archive, root, info, vlink, status, grid: _Grid, units, max_field_mm, strict) -> np.ndarray:
    """The point data (or the DataList) and the valid-points mask, read whole: float64 heights in the
    file's unit, NaN where invalid. Checksum statuses go into ``status``."""
    path, (nx, ny, dx, dy, dtype_code, z_inc, z_off) = arc.path, grid[:7]
    npts = nx * ny
    if info is not None:
        dtype = _DTYPES[dtype_code]
        expected = npts * dtype.itemsize
        raw = _read_member(path, arc.zf, info, expected, "point data")
        if len(raw) != expected:
            raise ScanFormatError(path, f"point data {info.filename} is truncated: {len(raw)} of {expected} bytes")
        status["point_data"] = _checksum(
            path,
            strict,
            "the point data",
            _text(path, root, "Record3/DataLink/MD5ChecksumPointData", required=False),
            raw,
        )
        values = np.frombuffer(raw, dtype=dtype).reshape(ny, nx)
    else:
        data_list = root.find("Record3/DataList")
        if data_list is None:
            raise ScanFormatError(path, "main.xml has neither Record3/DataLink/PointDataLink nor Record3/DataList")
        datums = data_list.findall("Datum")
        if len(datums) != npts:
            raise ScanFormatError(path, f"DataList holds {len(datums)} points, expected {nx} x {ny} = {npts}")
        _check_field(path, ny, nx, dx, dy, units, max_field_mm)
        vals = np.full(npts, np.nan)
        for i, d in enumerate(datums):
            if d.text and d.text.strip():
                try:
                    vals[i] = float(d.text.split()[-1])
                except ValueError:
                    raise ScanFormatError(path, f"DataList point {i} = {d.text[:40]!r} is not a number") from None
        values = vals.reshape(ny, nx)
        status["point_data"] = "inline"

    valid = None
    if vlink is not None:
        vinfo = arc.member(vlink, "valid-points mask")
        vraw = _read_mask(path, arc.zf, vinfo, npts)
        status["valid_points"] = _checksum(
            path,
            strict,
            "the valid-points mask",
            _text(path, root, "Record3/DataLink/MD5ChecksumValidPoints", required=False),
            vraw,
        )
        valid = np.unpackbits(np.frombuffer(vraw, np.uint8), count=npts, bitorder="little").astype(bool).reshape(ny, nx)

    if dtype_code in ("L", "I"):
        heights = values.astype(np.float64) * z_inc + z_off
    else:  # float64 data read into a writable buffer is used in place: no copy of large scans
        heights = values if values.dtype == np.float64 and values.flags.writeable else values.astype(np.float64)
        if z_off:
            heights += z_off
    with np.errstate(invalid="ignore"):
        heights[~np.isfinite(heights)] = np.nan
    if valid is not None:
        heights[~valid] = np.nan
    return heights


def _read_mask(path, zf, vinfo, npts: int) -> bytearray:
    """The valid-points mask: one bit per point, LSB first, exactly ``ceil(npts / 8)`` bytes."""
    vexp = (npts + 7) // 8
    vraw = _read_member(path, zf, vinfo, vexp, "valid-points mask")
    if len(vraw) != vexp:
        raise ScanFormatError(path, f"valid-points mask {vinfo.filename} has {len(vraw)} bytes, expected {vexp}")
    return vraw


def _read_reduced(arc: _Archive, info, vinfo, grid: _Grid, k: int, strict: bool, valid_md5):
    """The point data decoded a chunk of rows at a time and block-averaged ``k x k`` on the way:
    ``(heights, MD5 of the point data, valid-points checksum status or None)``. The same arithmetic
    per point as `_read_whole`, so only the averaging differs; the full-size heights never exist."""
    path, zf, (nx, ny, _, _, dtype_code, z_inc, z_off) = arc.path, arc.zf, grid[:7]
    dtype = _DTYPES[dtype_code]
    npts = nx * ny
    valid_bits = None
    valid_status = None
    if vinfo is not None:  # one bit per point: small next to the data, read whole (and checked) first
        vraw = _read_mask(path, zf, vinfo, npts)
        valid_status = _checksum(path, strict, "the valid-points mask", valid_md5, vraw)
        valid_bits = np.frombuffer(vraw, np.uint8)
    rows = rows_per_chunk(nx, k, dtype.itemsize)
    md5 = hashlib.md5()

    def chunks():
        r0 = 0
        for buf in _iter_member(path, zf, info, rows * nx * dtype.itemsize, "point data"):
            md5.update(buf)
            values = np.frombuffer(buf, dtype=dtype).reshape(-1, nx)
            if dtype_code in ("L", "I"):
                h = values.astype(np.float64) * z_inc + z_off
            else:
                h = values.astype(np.float64)
                if z_off:
                    h += z_off
            with np.errstate(invalid="ignore"):
                h[~np.isfinite(h)] = np.nan
            r1 = r0 + h.shape[0]
            if valid_bits is not None:
                b0, b1 = r0 * nx, r1 * nx
                bits = np.unpackbits(valid_bits[b0 // 8 : (b1 + 7) // 8], bitorder="little")
                h[~bits[b0 % 8 : b0 % 8 + (b1 - b0)].astype(bool).reshape(-1, nx)] = np.nan
            r0 = r1
            yield h

    heights = block_mean_rows(chunks(), ny, nx, k)
    return heights, md5.hexdigest(), valid_status


def _main_xml_checksum(arc: _Archive, root, xml_bytes: bytes, strict: bool) -> str:
    """Record4: check ``main.xml`` against the MD5 in its checksum file (``md5checksum.hex`` unless
    named otherwise): ``"verified"``, ``"absent"``, or with ``strict=False`` ``"missing"``/``"mismatch"``
    (an unreadable checksum file counts as a mismatch)."""
    path = arc.path
    ck_declared = _text(path, root, "Record4/ChecksumFile", required=False)
    ck_name = ck_declared or "md5checksum.hex"
    _check_member_name(path, ck_name)
    ck_info = arc.members.get(posixpath.normpath(posixpath.join(arc.prefix, ck_name.replace("\\", "/"))))
    ck_expected = None
    if ck_info is None and ck_declared is not None:
        ck_expected = "missing"  # named in main.xml but not in the archive: cannot be verified
    if ck_info is not None:
        ck_expected = _md5_from_checksum_file(_read_member(path, arc.zf, ck_info, 4096, "checksum file"))
        if ck_expected is None:
            ck_expected = "unreadable"  # not a hash: counts as a mismatch
    return _checksum(path, strict, "main.xml", ck_expected, xml_bytes)


def _length_unit(path, units: str, grid: _Grid, heights: np.ndarray) -> tuple[str, str]:
    """The file's length unit and how it was decided: as given, or under ``"auto"`` from the increments
    and the heights (`decide_units`), with a warning when that is not metres."""
    if units != "auto":
        return units, "given"
    unit, how = decide_units(path, grid.dx, grid.dy, heights)
    if unit != "m":
        _warn(
            f"{path}: lengths read as {unit} (units={unit!r}), not metres as ISO 25178-72 asks: "
            f"{how[len('auto: ') :]}; pass units={unit!r} to read it so without this warning"
        )
    return unit, how


def _to_metres(heights: np.ndarray, grid: _Grid, unit: str) -> _Grid:
    """Scale the heights (in place) and every length of the grid from ``unit`` to metres."""
    scale = SCALE_TO_M[unit]
    if scale == 1.0:
        return grid
    heights *= scale
    return grid._replace(**{k: getattr(grid, k) * scale for k in ("dx", "dy", "x_off", "y_off", "z_off", "z_inc")})


def _reduction(path, grid: _Grid, factor: int, max_working_points) -> tuple[dict, _Grid]:
    """The record of a ``factor x factor`` block-average as read (``meta["downsampled"]``, with a
    warning) and the grid of the averaged points: spacing times ``factor``, offsets moved to the first
    block's centre."""
    nx, ny, dx, dy = grid[:4]
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
    _warn(
        f"{path}: {nx} x {ny} points at {dx * 1e6:.4g} um are more than a comparison needs "
        f"(max_working_points={max_working_points}): block-averaged {factor} x {factor} to "
        f"{nx // factor} x {ny // factor} points at {dx * factor * 1e6:.4g} um "
        f"(meta['downsampled']); pass max_working_points=None to read every point"
    )
    return reduced, grid._replace(
        dx=dx * factor,
        dy=dy * factor,
        x_off=grid.x_off + reduced["origin_m"][0],
        y_off=grid.y_off + reduced["origin_m"][1],
    )


def _record2(path, root) -> dict:
    """Record2 metadata: date, creator, calibration date, comment, instrument and probing system (each
    only when the file gives it)."""
    meta = {}
    for key, field in (
        ("date", "Record2/Date"),
        ("creator", "Record2/Creator"),
        ("calibration_date", "Record2/CalibrationDate"),
        ("comment", "Record2/Comment"),
    ):
        v = _text(path, root, field, required=False)
        if v is not None:
            meta[key] = v
    inst = {
        k.lower(): _text(path, root, f"Record2/Instrument/{k}", required=False)
        for k in ("Manufacturer", "Model", "Serial", "Version")
    }
    if any(inst.values()):
        meta["instrument"] = {k: v for k, v in inst.items() if v is not None}
    probe = {
        k.lower(): _text(path, root, f"Record2/ProbingSystem/{k}", required=False) for k in ("Type", "Identification")
    }
    if any(probe.values()):
        meta["probing"] = {k: v for k, v in probe.items() if v is not None}
    return meta


def _sidecar(arc: _Archive) -> dict | None:
    """The ``ballistix.json`` member `write_x3p` adds beside ``main.xml`` (a JSON object), or None."""
    side = posixpath.normpath(posixpath.join(arc.prefix, _SIDECAR)) if arc.prefix else _SIDECAR
    if side not in arc.members:
        return None
    try:
        extra = json.loads(_read_member(arc.path, arc.zf, arc.members[side], MAX_SIDECAR_BYTES, _SIDECAR))
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise ScanFormatError(arc.path, f"{_SIDECAR} is not valid JSON: {e}") from None
    if not isinstance(extra, dict):
        raise ScanFormatError(arc.path, f"{_SIDECAR} must hold a JSON object")
    return extra


def _metadata(arc: _Archive, root, grid: _Grid, unit: str, how: str, status: dict, reduced: dict | None) -> dict:
    """The scan's ``meta``: the file read (source, SHA-256, format), Record2, ``units``, ``x3p`` (data
    type, CZ increment, offsets in metres, checksums, members), then ``ballistix.json`` (which replaces
    the Record2 fields) and this reading's ``downsampled`` record."""
    meta = {"source": str(arc.path), "sha256": _sha256_file(arc.path), "format": "x3p", **_record2(arc.path, root)}
    meta["units"] = units_record(unit, how)
    meta["x3p"] = {
        "data_type": grid.dtype_code,
        "z_increment": grid.z_inc,
        "offset_m": [grid.x_off, grid.y_off, grid.z_off],
        "checksums": status,
        "members": sorted(arc.members),
    }
    extra = _sidecar(arc)
    if extra is not None:
        # written by write_x3p from the scan's whole meta: it replaces the Record2 fields,
        # so defaults the writer had to fill in ("NA") do not appear on reading back
        for k in _RECORD2_KEYS:
            meta.pop(k, None)
        for k, v in extra.items():
            if k not in _OWN_KEYS:
                meta[k] = v
    if reduced is not None:  # this reading's reduction; one recorded in the file (a reduced scan written back) stays
        if isinstance(meta.get("downsampled"), dict):
            reduced["earlier"] = meta["downsampled"]
        meta["downsampled"] = reduced
    return meta


def read_x3p(
    path,
    *,
    strict: bool = True,
    max_points: int = MAX_POINTS,
    units: str = "auto",
    max_field_mm: float | None = MAX_FIELD_MM,
    max_working_points: int | None = MAX_WORKING_POINTS,
) -> Scan:
    """Read an ISO 25178-72 x3p file.

    Parameters
    ----------
    path : str or path-like
        The ``.x3p`` file.
    strict : bool, default True
        If True a wrong MD5 checksum (of ``main.xml``, of the point data or
        of the valid-points mask) raises `ChecksumError`; if False it only
        warns (`ScanFormatWarning`) and the result records ``"mismatch"``.
    max_points : int
        Refuse files declaring more than this many points (SizeX * SizeY),
        before allocating anything.
    units : {"auto", "m", "mm", "um"}, default "auto"
        The length unit of the file's numbers: CX/CY increments and offsets,
        heights, and CZ increment and offset. ISO 25178-72 says metres, but
        some instruments and x3ptools pipelines write micrometres (or
        millimetres), always for the increments and the heights together, so
        one unit covers both. ``"m"``, ``"mm"``, ``"um"``: read as that unit,
        no questions asked (a wrong unit gives a scan that `preprocess`
        refuses). ``"auto"``: metres whenever the CX/CY increments are a
        plausible microscope spacing in metres (1e-8 to 1e-4 m); otherwise
        millimetres or micrometres only when the increments are plausible in
        exactly that unit and the heights' span agrees (0.1 um to 1 cm after
        scaling), with a `ScanFormatWarning` that says which unit was assumed
        and why. Anything else (no unit fits, the increments and the heights
        disagree, or both mm and um fit) raises `ScanFormatError` naming the
        ``units=`` to pass.
    max_field_mm : float or None, default `MAX_FIELD_MM` (25 mm)
        Under ``units="auto"``, refuse a file whose declared size and
        increments make a field of view wider or taller than this, before any
        point is read: no cartridge case is (a whole case head is 10-12 mm,
        the largest in casework about 22 mm; see ``ballistix._limits``). The
        smallest reading the increments allow counts. With a unit given, the
        file is read as given and `preprocess` refuses the field. None: no limit.
    max_working_points : int or None, default `MAX_WORKING_POINTS` (9 M)
        A file of more points is block-averaged ``k x k`` as its point data
        are decoded (the smallest integer ``k`` that fits; NaN-aware, a block
        less than half measured is NaN; the last ``SizeY % k`` rows and
        ``SizeX % k`` columns are dropped), so that its full-size float64
        copy never exists: that is about a whole 12 mm case head at 4 um or
        a 4.5 mm primer at 1.5 um, finer than the 6.25 um `preprocess`
        resamples to. ``meta["downsampled"]`` records the factor, the reason,
        the original shape and spacing and ``origin_m`` (the first block's
        centre from the original first point, also added to the x3p
        offsets), and a `ScanFormatWarning` says so. None: read every point
        (up to ``max_points``).

    Returns
    -------
    Scan
        Heights in metres (float64, NaN where the file marks a point invalid),
        ``dx``/``dy`` from the CX/CY increments in metres, and ``meta`` with
        source path, SHA-256 of the file, Record2 metadata (date, creator,
        instrument, calibration date, probing system, comment),
        ``meta["x3p"]`` (data type, CZ increment and axis offsets in metres,
        checksum status, members) and ``meta["units"]``: the file's unit
        (``"file"``: ``"m"``, ``"mm"`` or ``"um"``), how it was decided
        (``"how"``: ``"given"`` or the reason for ``"auto"``) and
        ``"scale_to_m"``.

    Raises
    ------
    ScanFormatError
        For anything malformed, hostile, truncated or unsupported, or lengths
        whose unit ``"auto"`` cannot tell; the message names the file and the
        problem. `ChecksumError` (a subclass) for checksum mismatches when
        ``strict``.
    ParameterError
        For a ``max_points``, ``units``, ``max_field_mm`` or
        ``max_working_points`` outside what is accepted.

    Warns
    -----
    ScanFormatWarning
        For a file block-averaged to ``max_working_points``, a checksum
        mismatch with ``strict=False``, or lengths ``units="auto"`` rescaled.

    Examples
    --------
    >>> scan = read_x3p("../shared/data/fadul/fadul-1-1.x3p")  # doctest: +SKIP
    >>> scan.shape, scan.dx
    ((545, 545), 6.25e-06)
    >>> scan = read_x3p("from-another-lab.x3p", units="um")  # doctest: +SKIP
    """
    path = Path(path)
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ParameterError(f"max_points must be a positive integer, got {max_points!r}")
    check_units(units)
    max_field_mm = check_limit(max_field_mm, "max_field_mm", integer=False)
    max_working_points = check_limit(max_working_points, "max_working_points", integer=True)
    with open_zip(path, "an x3p file") as zf:
        arc, main_name = _open_archive(path, zf)
        xml_bytes, root = _parse_main_xml(arc, main_name)
        grid = _read_grid(path, root, max_points)
        heights, grid, factor, status = _read_points(
            arc,
            root,
            grid,
            units=units,
            max_field_mm=max_field_mm,
            max_working_points=max_working_points,
            strict=strict,
        )
        status["main_xml"] = _main_xml_checksum(arc, root, xml_bytes, strict)
        unit, how = _length_unit(path, units, grid, heights)
        grid = _to_metres(heights, grid, unit)
        reduced = None
        if factor > 1:
            reduced, grid = _reduction(path, grid, factor, max_working_points)
        meta = _metadata(arc, root, grid, unit, how, status, reduced)
    try:
        return Scan(heights, grid.dx, grid.dy, meta)
    except ParameterError as e:
        raise ScanFormatError(path, str(e)) from None


# ----------------------------------------------------------------------------
# writer
# ----------------------------------------------------------------------------

# Characters XML 1.0 cannot hold at all (even escaped); written as U+FFFD so that
# main.xml stays well-formed (the exact value survives in ballistix.json).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _esc(s) -> str:
    return (
        _XML_INVALID.sub("\ufffd", str(s))
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


def _main_xml(scan: Scan, data_md5: str) -> bytes:
    m = scan.meta
    inst = m.get("instrument") or {}
    probe = m.get("probing") or {}
    ny, nx = scan.shape
    xo, yo, _ = (m.get("x3p") or {}).get("offset_m", [0.0, 0.0, 0.0])

    def axis(name, kind, inc, off):
        return (
            f"      <{name}>\n        <AxisType>{kind}</AxisType>\n        <DataType>D</DataType>\n"
            f"        <Increment>{_esc(repr(float(inc)))}</Increment>\n"
            f"        <Offset>{_esc(repr(float(off)))}</Offset>\n      </{name}>\n"
        )

    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<p:ISO5436_2 xmlns:p="http://www.opengps.eu/2008/ISO5436_2" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.opengps.eu/2008/ISO5436_2 '
        'http://www.opengps.eu/2008/ISO5436_2/ISO5436_2.xsd">\n'
        "  <Record1>\n    <Revision>ISO5436 - 2000</Revision>\n    <FeatureType>SUR</FeatureType>\n    <Axes>\n"
        + axis("CX", "I", scan.dx, xo)
        + axis("CY", "I", scan.dy, yo)
        + axis("CZ", "A", 1.0, 0.0)
        + "    </Axes>\n  </Record1>\n"
        "  <Record2>\n"
        f"    <Date>{_esc(m.get('date', ''))}</Date>\n"
        f"    <Creator>{_esc(m.get('creator', 'ballistix ' + __version__))}</Creator>\n"
        "    <Instrument>\n"
        f"      <Manufacturer>{_esc(inst.get('manufacturer', 'NA'))}</Manufacturer>\n"
        f"      <Model>{_esc(inst.get('model', 'NA'))}</Model>\n"
        f"      <Serial>{_esc(inst.get('serial', 'NA'))}</Serial>\n"
        f"      <Version>{_esc(inst.get('version', 'NA'))}</Version>\n"
        "    </Instrument>\n"
        f"    <CalibrationDate>{_esc(m.get('calibration_date', ''))}</CalibrationDate>\n"
        "    <ProbingSystem>\n"
        f"      <Type>{_esc(probe.get('type', 'NonContacting'))}</Type>\n"
        f"      <Identification>{_esc(probe.get('identification', 'NA'))}</Identification>\n"
        "    </ProbingSystem>\n"
        f"    <Comment>{_esc(m.get('comment', ''))}</Comment>\n"
        "  </Record2>\n"
        "  <Record3>\n    <MatrixDimension>\n"
        f"      <SizeX>{nx}</SizeX>\n      <SizeY>{ny}</SizeY>\n      <SizeZ>1</SizeZ>\n"
        "    </MatrixDimension>\n    <DataLink>\n"
        "      <PointDataLink>bindata/data.bin</PointDataLink>\n"
        f"      <MD5ChecksumPointData>{data_md5}</MD5ChecksumPointData>\n"
        "    </DataLink>\n  </Record3>\n"
        "  <Record4>\n    <ChecksumFile>md5checksum.hex</ChecksumFile>\n  </Record4>\n"
        "</p:ISO5436_2>\n"
    )
    return xml.encode("utf-8")


def write_x3p(scan: Scan, path) -> Path:
    """Write a scan as an x3p file (float64 ``D`` data, NaN = invalid).

    ``main.xml`` follows the layout the R package x3ptools writes (Record1
    axes, Record2 metadata, Record3 data link with the MD5 of the point data,
    Record4 checksum file). Metadata that x3p has no place for (labels,
    simulation truth, processing history) goes into an extra member
    ``ballistix.json``, which other readers ignore. The file is written to a
    temporary name and renamed, so a crash never leaves a half-written file.
    Reading the result back gives identical heights, spacing and metadata.
    Lengths are always written in metres, as ISO 25178-72 asks, whatever
    unit the scan was read from: ``meta["units"]`` (like ``source``,
    ``sha256`` and ``format``) describes the file a scan was read from and is
    not stored, so a scan read from a micrometre file writes a metre file that
    reads back without a warning.

    Parameters
    ----------
    scan : Scan
    path : str or path-like
        Destination, normally ending in ``.x3p``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(scan, Scan):
        raise ParameterError(f"write_x3p expects a Scan, got {type(scan).__name__}")
    path = Path(path)
    data = np.ascontiguousarray(scan.heights, dtype="<f8").tobytes()
    data_md5 = hashlib.md5(data).hexdigest()
    xml = _main_xml(scan, data_md5)
    extra = {k: v for k, v in scan.meta.items() if k not in _OWN_KEYS}
    try:
        sidecar = json.dumps(extra, sort_keys=True, allow_nan=False, default=_json_default).encode()
    except (TypeError, ValueError) as e:
        raise ParameterError(f"scan meta cannot be stored as JSON: {e}") from None
    with atomic_file(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in (
            ("main.xml", xml),
            ("bindata/data.bin", data),
            ("md5checksum.hex", hashlib.md5(xml).hexdigest() + "\n"),
            (_SIDECAR, sidecar),
        ):
            # a fixed member date: the same scan always gives the same bytes (and the same SHA-256)
            zf.writestr(
                zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content, compress_type=zipfile.ZIP_DEFLATED
            )
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serializable")
