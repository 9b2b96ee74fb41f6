"""x3p reader and writer: round trips, layout, data types, variants, checksums,
hostile files, fuzzing and the real Fadul scans in ../shared/data (skipped when absent)."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import struct
import tempfile
import tracemalloc
import warnings
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ballistix as bx

NS = "http://www.opengps.eu/2008/ISO5436_2"
MB = 1024 * 1024


# ----------------------------------------------------------------------------
# helpers: build x3p files by hand
# ----------------------------------------------------------------------------


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _el(tag: str, value) -> str:
    return "" if value is None else f"<{tag}>{value}</{tag}>"


def main_xml(
    *,
    size_x=11,
    size_y=7,
    size_z=1,
    dx="1e-06",
    dy="2e-06",
    data_type="D",
    cz_increment="1",
    cz_offset="0",
    feature="SUR",
    cx_axis="I",
    cy_axis="I",
    point_link="bindata/data.bin",
    data_md5=None,
    valid_link=None,
    valid_md5=None,
    checksum_file="md5checksum.hex",
    ns="p",
    doctype="",
    record1=True,
    matrix=True,
    comment=None,
    extra_record3="",
) -> str:
    """main.xml text; every field given as None is left out."""
    if ns == "p":
        open_root = f'<p:ISO5436_2 xmlns:p="{NS}">'
        close_root = "</p:ISO5436_2>"
    elif ns == "default":
        open_root, close_root = f'<ISO5436_2 xmlns="{NS}">', "</ISO5436_2>"
    else:
        open_root, close_root = "<ISO5436_2>", "</ISO5436_2>"

    def axis(name, kind, dtype, inc, off):
        return (
            f"<{name}>{_el('AxisType', kind)}{_el('DataType', dtype)}"
            f"{_el('Increment', inc)}{_el('Offset', off)}</{name}>"
        )

    record1 = (
        (
            "<Record1><Revision>ISO5436 - 2000</Revision>"
            + _el("FeatureType", feature)
            + "<Axes>"
            + axis("CX", cx_axis, "D", dx, "0")
            + axis("CY", cy_axis, "D", dy, "0")
            + axis("CZ", "A", data_type, cz_increment, cz_offset)
            + "</Axes></Record1>"
        )
        if record1
        else ""
    )
    dims = (
        (
            "<MatrixDimension>"
            + _el("SizeX", size_x)
            + _el("SizeY", size_y)
            + _el("SizeZ", size_z)
            + "</MatrixDimension>"
        )
        if matrix
        else ""
    )
    link = (
        "<DataLink>"
        + _el("PointDataLink", point_link)
        + _el("MD5ChecksumPointData", data_md5)
        + _el("ValidPointsLink", valid_link)
        + _el("MD5ChecksumValidPoints", valid_md5)
        + "</DataLink>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + doctype
        + open_root
        + record1
        + "<Record2><Date>2024-01-02T03:04:05</Date><Creator>test</Creator>"
        + "<Instrument><Manufacturer>Acme</Manufacturer><Model>M1</Model><Serial>42</Serial>"
        + "<Version>1.0</Version></Instrument>"
        + _el("Comment", comment)
        + "</Record2>"
        + "<Record3>"
        + dims
        + link
        + extra_record3
        + "</Record3>"
        + "<Record4>"
        + _el("ChecksumFile", checksum_file)
        + "</Record4>"
        + close_root
        + "\n"
    )


def build_zip(path: Path, members: dict[str, bytes | str], compression=zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding exactly ``members`` (name -> content), in that order."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def build_x3p(
    path: Path,
    xml: str | bytes,
    members: dict[str, bytes] | None = None,
    *,
    checksum: bytes | str | None = "auto",
    prefix: str = "",
    compression=zipfile.ZIP_DEFLATED,
) -> Path:
    """main.xml + members (+ md5checksum.hex of main.xml unless checksum=None)."""
    xml = xml.encode() if isinstance(xml, str) else xml
    out = {prefix + "main.xml": xml}
    for name, data in (members or {}).items():
        out[prefix + name] = data
    if checksum == "auto":
        checksum = md5(xml) + "\n"
    if checksum is not None:
        out[prefix + "md5checksum.hex"] = checksum
    return build_zip(path, out, compression)


def sample_heights(ny=7, nx=11) -> np.ndarray:
    h = (np.arange(ny * nx, dtype=np.float64).reshape(ny, nx) - 30.0) * 1.25e-7
    h[0, 0] = h[3, 5] = h[ny - 1, nx - 1] = np.nan
    return h


def simple_x3p(
    path: Path,
    heights: np.ndarray | None = None,
    *,
    prefix: str = "",
    checksum="auto",
    extra: dict[str, bytes] | None = None,
    **xml_kw,
) -> Path:
    """A float64 (D) x3p of ``heights`` with a correct data MD5 unless overridden."""
    h = sample_heights() if heights is None else heights
    data = np.ascontiguousarray(h, "<f8").tobytes()
    xml_kw.setdefault("data_md5", md5(data))
    xml_kw.setdefault("size_x", h.shape[1])
    xml_kw.setdefault("size_y", h.shape[0])
    members = {"bindata/data.bin": data, **(extra or {})}
    return build_x3p(path, main_xml(**xml_kw), members, checksum=checksum, prefix=prefix)


def pack_bits_lsb_first(valid: np.ndarray) -> bytes:
    """One bit per point, X fastest, least-significant bit first, 1 = valid (written out by hand)."""
    flat = valid.ravel()
    out = bytearray((flat.size + 7) // 8)
    for i, v in enumerate(flat):
        if v:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def central_entry(b: bytearray, name: str) -> tuple[int, int, int]:
    """(offset, name length, end-of-central-directory offset) of ``name``'s central-directory entry."""
    eocd = b.rfind(b"PK\x05\x06")
    n_entries, _, cd_off = struct.unpack("<HII", b[eocd + 10 : eocd + 20])
    pos = cd_off
    for _ in range(n_entries):
        n, m, k = struct.unpack("<HHH", b[pos + 28 : pos + 34])
        if b[pos + 46 : pos + 46 + n].decode("utf-8") == name:
            return pos, n, eocd
        pos += 46 + n + m + k
    raise AssertionError(f"{name} not in the central directory")


def patch_header(
    data: bytes, name: str, *, file_size=None, compress_type=None, flag_bits=None, extract_version=None, local=True
) -> bytes:
    """Rewrite fields of one member's central-directory (and local) header."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = zf.getinfo(name)
    b = bytearray(data)
    pos, _, _ = central_entry(b, name)
    lh = info.header_offset
    if file_size is not None:
        struct.pack_into("<I", b, pos + 24, file_size)
        if local:
            struct.pack_into("<I", b, lh + 22, file_size)
    if compress_type is not None:
        struct.pack_into("<H", b, pos + 10, compress_type)
        struct.pack_into("<H", b, lh + 8, compress_type)
    if flag_bits is not None:
        struct.pack_into("<H", b, pos + 8, flag_bits)
        struct.pack_into("<H", b, lh + 6, flag_bits)
    if extract_version is not None:
        struct.pack_into("<H", b, pos + 6, extract_version)
    return bytes(b)


def read_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bx.read_x3p(path, **kw)


# ----------------------------------------------------------------------------
# round trip
# ----------------------------------------------------------------------------

META = {
    "labels": {"exhibit": "E-17", "firearm": "G3", "scene": "S1"},
    "truth": {"pose": {"rotation_deg": 12.5, "shift_m": [1e-5, -2e-5]}, "same_gun": True},
    "processing": [{"step": "level", "order": 1}, {"step": "bandpass", "short_cutoff_um": 16}],
    "comment": 'tricky <&> "chars" and unicode µm',
    "date": "2020-05-06T07:08:09",
    "instrument": {"manufacturer": "NanoFocus", "model": "usurf", "serial": "7", "version": "6.1"},
}


def test_round_trip_float64(tmp_path):
    h = sample_heights()
    scan = bx.Scan(h, dx=1.5e-6, dy=2.75e-6, meta=META)
    out = bx.write_x3p(scan, tmp_path / "rt.x3p")
    assert out == tmp_path / "rt.x3p"
    back = bx.read_x3p(out)
    assert back.heights.dtype == np.float64
    assert back.heights.shape == (7, 11)
    assert np.array_equal(back.heights, h, equal_nan=True)
    assert back.heights.tobytes() == np.ascontiguousarray(h).tobytes()  # bitwise, NaN positions included
    assert back.dx == 1.5e-6 and back.dy == 2.75e-6
    for key, value in META.items():
        assert back.meta[key] == value, key
    assert back.meta["source"] == str(out)
    assert back.meta["format"] == "x3p"
    assert back.meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert back.meta["x3p"]["checksums"] == {"point_data": "verified", "main_xml": "verified"}
    assert back.meta["x3p"]["data_type"] == "D"
    # the input scan is untouched and writing again gives the same heights
    again = bx.read_x3p(bx.write_x3p(back, tmp_path / "rt2.x3p"))
    assert np.array_equal(again.heights, h, equal_nan=True)
    assert again.meta["labels"] == META["labels"]


def test_round_trip_meta_is_exact(tmp_path):
    # nothing the writer had to fill in (Record2 defaults such as "NA") appears on reading back
    meta = {"labels": {"exhibit": "E7"}, "processing": [{"step": "level", "order": 1}]}
    back = bx.read_x3p(bx.write_x3p(bx.Scan(sample_heights(), 1e-6, 1e-6, meta), tmp_path / "m.x3p"))
    assert {k: v for k, v in back.meta.items() if k not in ("source", "sha256", "format", "x3p", "units")} == meta


def test_round_trip_float32_becomes_float64(tmp_path):
    h32 = sample_heights().astype(np.float32)
    back = bx.read_x3p(bx.write_x3p(bx.Scan(h32, 6.25e-6, 6.25e-6), tmp_path / "f32.x3p"))
    assert back.heights.dtype == np.float64
    assert np.array_equal(back.heights, h32.astype(np.float64), equal_nan=True)


def test_round_trip_meta_with_characters_xml_cannot_hold(tmp_path):
    # control characters are illegal in XML 1.0 even escaped; the file must still be readable
    meta = {"comment": "a\x01b\x0bc", "creator": "x\x00y", "labels": {"exhibit": "tab\there"}}
    back = bx.read_x3p(bx.write_x3p(bx.Scan(sample_heights(), 1e-6, 1e-6, meta), tmp_path / "ctl.x3p"))
    assert back.meta["comment"] == "a\x01b\x0bc"
    assert back.meta["creator"] == "x\x00y"
    assert back.meta["labels"] == {"exhibit": "tab\there"}


def test_write_refuses_non_scan_and_unserialisable_meta(tmp_path):
    with pytest.raises(bx.ParameterError):
        bx.write_x3p(np.zeros((3, 3)), tmp_path / "a.x3p")
    with pytest.raises(bx.ParameterError, match="JSON"):
        bx.write_x3p(bx.Scan(np.zeros((3, 3)), 1e-6, 1e-6, {"bad": object()}), tmp_path / "b.x3p")
    assert not (tmp_path / "b.x3p").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left behind


# ----------------------------------------------------------------------------
# written layout follows x3ptools
# ----------------------------------------------------------------------------


def test_written_main_xml_structure(tmp_path):
    h = sample_heights()
    path = bx.write_x3p(bx.Scan(h, 1.5e-6, 2.5e-6, {"instrument": {"manufacturer": "Acme"}}), tmp_path / "s.x3p")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        xml = zf.read("main.xml")
        data = zf.read("bindata/data.bin")
        hexfile = zf.read("md5checksum.hex").decode()
    assert {"main.xml", "bindata/data.bin", "md5checksum.hex"} <= names
    root = ET.fromstring(xml)  # our own output: trusted
    assert root.tag == f"{{{NS}}}ISO5436_2"
    assert root.findtext("Record1/FeatureType") == "SUR"
    for ax, inc in (("CX", 1.5e-6), ("CY", 2.5e-6)):
        assert root.findtext(f"Record1/Axes/{ax}/AxisType") == "I"
        assert float(root.findtext(f"Record1/Axes/{ax}/Increment")) == inc
        assert float(root.findtext(f"Record1/Axes/{ax}/Offset")) == 0.0
    assert root.findtext("Record1/Axes/CZ/AxisType") == "A"
    assert root.findtext("Record1/Axes/CZ/DataType") == "D"
    assert root.find("Record2/Instrument") is not None
    assert root.findtext("Record2/Instrument/Manufacturer") == "Acme"
    assert root.findtext("Record3/MatrixDimension/SizeX") == "11"
    assert root.findtext("Record3/MatrixDimension/SizeY") == "7"
    assert root.findtext("Record3/MatrixDimension/SizeZ") == "1"
    assert root.findtext("Record3/DataLink/PointDataLink") == "bindata/data.bin"
    assert root.findtext("Record3/DataLink/MD5ChecksumPointData") == md5(data)
    assert root.findtext("Record4/ChecksumFile") == "md5checksum.hex"
    assert hexfile.split()[0] == md5(xml)
    # little-endian float64, X fastest
    assert np.array_equal(np.frombuffer(data, "<f8").reshape(7, 11), h, equal_nan=True)


# ----------------------------------------------------------------------------
# data types, scaling, valid-points mask
# ----------------------------------------------------------------------------

RAW = np.array([[0, 1, -2, 3, 100], [-100, 7, 8, -9, 10], [11, -12, 13, 14, 0]])  # 3 x 5


@pytest.mark.parametrize(
    "code, dtype, z_inc, z_off",
    [("D", "<f8", 1.0, 0.0), ("F", "<f4", 1.0, 0.0), ("L", "<i4", 1e-9, 5e-7), ("I", "<i2", 2.5e-8, -1e-6)],
)
def test_data_types_and_integer_scaling(tmp_path, code, dtype, z_inc, z_off):
    stored = RAW.astype(dtype) if code in "LI" else (RAW * 1.1e-7).astype(dtype)
    data = stored.tobytes()
    xml = main_xml(
        size_x=5, size_y=3, data_type=code, cz_increment=repr(z_inc), cz_offset=repr(z_off), data_md5=md5(data)
    )
    scan = bx.read_x3p(build_x3p(tmp_path / f"{code}.x3p", xml, {"bindata/data.bin": data}))
    assert scan.heights.dtype == np.float64
    assert scan.shape == (3, 5)
    assert scan.meta["x3p"]["data_type"] == code
    if code in "LI":
        expected = RAW.astype(np.float64) * z_inc + z_off
        np.testing.assert_allclose(scan.heights, expected, rtol=1e-12, atol=0)
    else:
        assert np.array_equal(scan.heights, stored.astype(np.float64))
    assert scan.meta["x3p"]["checksums"]["point_data"] == "verified"


def test_float_data_inf_becomes_nan(tmp_path):
    h = np.array([[1e-6, np.inf, -np.inf], [np.nan, 0.0, 2e-6]])
    scan = bx.read_x3p(simple_x3p(tmp_path / "inf.x3p", h))
    expected = np.array([[1e-6, np.nan, np.nan], [np.nan, 0.0, 2e-6]])
    assert np.array_equal(scan.heights, expected, equal_nan=True)


@pytest.mark.parametrize("code, dtype", [("D", "<f8"), ("F", "<f4"), ("L", "<i4"), ("I", "<i2")])
def test_valid_points_mask(tmp_path, code, dtype):
    ny, nx = 3, 5  # 15 points: the last byte of the mask is only partly used
    values = RAW.astype(dtype)
    valid = np.ones((ny, nx), bool)
    valid[0, 0] = valid[1, 3] = valid[2, 4] = valid[0, 4] = False
    mask = pack_bits_lsb_first(valid)
    assert len(mask) == 2
    data = values.tobytes()
    xml = main_xml(
        size_x=nx,
        size_y=ny,
        data_type=code,
        cz_increment="1e-9",
        data_md5=md5(data),
        valid_link="bindata/valid.bin",
        valid_md5=md5(mask),
    )
    scan = bx.read_x3p(build_x3p(tmp_path / "v.x3p", xml, {"bindata/data.bin": data, "bindata/valid.bin": mask}))
    assert np.array_equal(np.isnan(scan.heights), ~valid)
    scale = 1e-9 if code in "LI" else 1.0
    assert np.array_equal(scan.heights[valid], values.astype(np.float64)[valid] * scale)
    assert scan.meta["x3p"]["checksums"]["valid_points"] == "verified"
    assert scan.valid_fraction == pytest.approx(11 / 15)


def test_valid_points_mask_wrong_size(tmp_path):
    data = sample_heights().tobytes()
    xml = main_xml(data_md5=md5(data), valid_link="bindata/valid.bin")
    path = build_x3p(tmp_path / "v.x3p", xml, {"bindata/data.bin": data, "bindata/valid.bin": b"\xff" * 5})
    with pytest.raises(bx.ScanFormatError, match="valid-points mask"):
        bx.read_x3p(path)


def test_inline_data_list(tmp_path):
    datums = "".join(f"<Datum>{v}</Datum>" for v in ["1e-6", "2e-6", "", "-3.5e-6", "0", "4e-6"])
    xml = main_xml(size_x=3, size_y=2, point_link=None).replace(
        "<DataLink></DataLink>", f"<DataList>{datums}</DataList>"
    )
    scan = bx.read_x3p(build_x3p(tmp_path / "inline.x3p", xml))
    expected = np.array([[1e-6, 2e-6, np.nan], [-3.5e-6, 0.0, 4e-6]])
    assert np.array_equal(scan.heights, expected, equal_nan=True)
    assert scan.meta["x3p"]["checksums"]["point_data"] == "inline"


# ----------------------------------------------------------------------------
# variants real writers produce
# ----------------------------------------------------------------------------


def test_files_wrapped_in_a_folder(tmp_path):
    scan = bx.read_x3p(simple_x3p(tmp_path / "wrapped.x3p", prefix="scan/"))
    assert np.array_equal(scan.heights, sample_heights(), equal_nan=True)
    assert scan.meta["x3p"]["checksums"] == {"point_data": "verified", "main_xml": "verified"}
    assert "scan/bindata/data.bin" in scan.meta["x3p"]["members"]


@pytest.mark.parametrize("style", ["md5sum", "bare-crlf", "bare-upper", "bare-no-newline"])
def test_checksum_file_styles(tmp_path, style):
    xml = main_xml(data_md5=md5(sample_heights().tobytes())).encode()
    h = md5(xml)
    content = {
        "md5sum": f"{h} *main.xml\n",
        "bare-crlf": f"{h}\r\n",
        "bare-upper": h.upper() + "\n",
        "bare-no-newline": h,
    }[style]
    path = build_x3p(tmp_path / "c.x3p", xml, {"bindata/data.bin": sample_heights().tobytes()}, checksum=content)
    assert bx.read_x3p(path).meta["x3p"]["checksums"]["main_xml"] == "verified"


def test_extra_vendor_members_are_ignored(tmp_path):
    extra = {"bindata/mask.png": b"\x89PNG\r\n\x1a\n not really", "vendor/notes.txt": b"hello"}
    scan = bx.read_x3p(simple_x3p(tmp_path / "extra.x3p", extra=extra))
    assert np.array_equal(scan.heights, sample_heights(), equal_nan=True)
    assert "bindata/mask.png" in scan.meta["x3p"]["members"]


def test_no_checksum_file_at_all_reads_with_status_absent(tmp_path):
    # neither a Record4/ChecksumFile nor an md5checksum.hex: nothing claims a checksum
    scan = bx.read_x3p(simple_x3p(tmp_path / "nock.x3p", checksum=None, checksum_file=None))
    assert scan.meta["x3p"]["checksums"]["main_xml"] == "absent"
    assert np.array_equal(scan.heights, sample_heights(), equal_nan=True)


def test_missing_data_md5_is_absent(tmp_path):
    scan = bx.read_x3p(simple_x3p(tmp_path / "nomd5.x3p", data_md5=None))
    assert scan.meta["x3p"]["checksums"]["point_data"] == "absent"


@pytest.mark.parametrize("ns", ["p", "default", None])
def test_namespace_variants(tmp_path, ns):
    scan = bx.read_x3p(simple_x3p(tmp_path / "ns.x3p", ns=ns))
    assert np.array_equal(scan.heights, sample_heights(), equal_nan=True)
    assert (scan.dx, scan.dy) == (1e-6, 2e-6)
    assert scan.meta["instrument"] == {"manufacturer": "Acme", "model": "M1", "serial": "42", "version": "1.0"}
    assert scan.meta["date"] == "2024-01-02T03:04:05"


def test_stored_uncompressed_members(tmp_path):
    h = sample_heights()
    xml = main_xml(data_md5=md5(h.tobytes()))
    path = build_x3p(tmp_path / "stored.x3p", xml, {"bindata/data.bin": h.tobytes()}, compression=zipfile.ZIP_STORED)
    assert np.array_equal(bx.read_x3p(path).heights, h, equal_nan=True)


# ----------------------------------------------------------------------------
# checksums
# ----------------------------------------------------------------------------


def _bad_data_md5(tmp_path):
    return simple_x3p(tmp_path / "bad.x3p", data_md5="0" * 32), "point_data"


def _bad_main_md5(tmp_path):
    return simple_x3p(tmp_path / "bad.x3p", checksum="f" * 32 + "\n"), "main_xml"


def _unreadable_main_md5(tmp_path):
    return simple_x3p(tmp_path / "bad.x3p", checksum="not a hash\n"), "main_xml"


def _bad_valid_md5(tmp_path):
    h = sample_heights()
    mask = pack_bits_lsb_first(np.ones(h.shape, bool))
    xml = main_xml(data_md5=md5(h.tobytes()), valid_link="bindata/valid.bin", valid_md5="1" * 32)
    members = {"bindata/data.bin": h.tobytes(), "bindata/valid.bin": mask}
    return build_x3p(tmp_path / "bad.x3p", xml, members), "valid_points"


CHECKSUM_CASES = [_bad_data_md5, _bad_main_md5, _unreadable_main_md5, _bad_valid_md5]


@pytest.mark.parametrize("builder", CHECKSUM_CASES, ids=lambda f: f.__name__.strip("_"))
def test_checksum_mismatch_strict_raises(tmp_path, builder):
    path, _ = builder(tmp_path)
    with pytest.raises(bx.ChecksumError) as err:
        bx.read_x3p(path)
    assert isinstance(err.value, bx.ScanFormatError)
    assert str(path) in str(err.value)
    assert "MD5" in str(err.value)


@pytest.mark.parametrize("builder", CHECKSUM_CASES, ids=lambda f: f.__name__.strip("_"))
def test_checksum_mismatch_lenient_warns(tmp_path, builder):
    path, key = builder(tmp_path)
    with pytest.warns(bx.ScanFormatWarning, match="MD5"):
        scan = bx.read_x3p(path, strict=False)
    assert scan.meta["x3p"]["checksums"][key] == "mismatch"
    assert np.array_equal(scan.heights, sample_heights(), equal_nan=True)


def test_checksum_errors_reach_callers_as_bad_files(tmp_path, capsys):
    """Code that handles unreadable files (``except bx.ScanFormatError``, the command line) handles a
    checksum failure too, and the command line names the way to read the file anyway."""
    from ballistix.cli import main

    path, _ = _bad_data_md5(tmp_path)
    with pytest.raises(bx.ScanFormatError) as err:  # through the generic reader
        bx.read_scan(path)
    assert type(err.value) is bx.ChecksumError and str(path) in str(err.value)
    assert main(["info", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and path.name in lines[0] and "MD5" in lines[0] and "--lenient" in lines[0]
    with pytest.warns(bx.ScanFormatWarning, match="MD5"):
        assert main(["info", str(path), "--lenient"]) == 0


# ----------------------------------------------------------------------------
# hostile and broken files
# ----------------------------------------------------------------------------


def _valid_bytes(tmp_path) -> bytes:
    return bx.write_x3p(
        bx.Scan(sample_heights(), 1e-6, 2e-6, {"labels": {"exhibit": "x"}}), tmp_path / "valid-source.x3p"
    ).read_bytes()


def _write(tmp_path, data: bytes, name="hostile.x3p") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _xml_case(**kw):
    return lambda tmp: simple_x3p(tmp / "hostile.x3p", **kw)


def _members_case(members):
    return lambda tmp: build_zip(tmp / "hostile.x3p", members)


def _xml_bomb(tmp):
    xml = main_xml(data_md5=md5(sample_heights().tobytes()))
    xml = xml.replace("</Record4>", "</Record4>" + " " * (20 * MB))  # ~20 kB compressed
    return build_x3p(tmp / "hostile.x3p", xml, {"bindata/data.bin": sample_heights().tobytes()})


def _xml_bomb_declared_small(tmp):
    # the same bomb, but the zip headers claim main.xml is only 1000 bytes
    return _write(tmp, patch_header(_xml_bomb(tmp).read_bytes(), "main.xml", file_size=1000))


def _xml_declared_huge(tmp):
    return _write(tmp, patch_header(_valid_bytes(tmp), "main.xml", file_size=0x7FFFFFF0))


def _data_bomb(tmp):
    # data.bin declares exactly SizeX*SizeY*8 bytes but inflates to 50 MB of zeros
    data = bytes(50 * MB)
    xml = main_xml(data_md5=md5(bytes(7 * 11 * 8)))
    raw = build_x3p(tmp / "src.x3p", xml, {"bindata/data.bin": data}).read_bytes()
    return _write(tmp, patch_header(raw, "bindata/data.bin", file_size=7 * 11 * 8))


def _data_declared_right_but_short(tmp):
    # headers claim 616 bytes, the deflate stream holds only 600
    h = sample_heights()
    raw = build_x3p(tmp / "src.x3p", main_xml(data_md5=md5(h.tobytes())), {"bindata/data.bin": h.tobytes()[:600]})
    return _write(tmp, patch_header(raw.read_bytes(), "bindata/data.bin", file_size=616))


BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">'
    '<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">'
    '<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">'
    '<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">'
    '<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">'
    '<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>\n'
)


def _billion_laughs(tmp):
    return simple_x3p(tmp / "hostile.x3p", doctype=BILLION_LAUGHS, comment="&lol9;")


def _external_entity(tmp):
    return simple_x3p(
        tmp / "hostile.x3p", doctype='<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n', comment="&xxe;"
    )


def _lzma_corrupt(tmp):
    h = sample_heights()
    xml = main_xml(data_md5=md5(h.tobytes())).encode()
    raw = bytearray(
        build_zip(
            tmp / "src.x3p",
            {"main.xml": xml, "md5checksum.hex": md5(xml), "bindata/data.bin": h.tobytes()},
            zipfile.ZIP_LZMA,
        ).read_bytes()
    )
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("bindata/data.bin")
    n, m = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + n + m
    raw[start + 4 : start + 9] = b"\xff" * 5  # invalid LZMA properties
    return _write(tmp, bytes(raw))


def _empty_member_name(tmp):
    raw = _valid_bytes(tmp)
    # rename "md5checksum.hex" to "" in the central directory only: zipfile reads names from there
    b = bytearray(raw)
    pos, n, eocd = central_entry(b, "md5checksum.hex")
    struct.pack_into("<H", b, pos + 28, 0)
    del b[pos + 46 : pos + 46 + n]
    struct.pack_into("<I", b, eocd - n + 12, struct.unpack("<I", b[eocd - n + 12 : eocd - n + 16])[0] - n)
    return _write(tmp, bytes(b))


def _too_many_members(tmp):
    members = {f"junk/{i}.txt": b"" for i in range(1001)}
    return simple_x3p(tmp / "hostile.x3p", extra=members)


def _two_main_xml(tmp):
    xml = main_xml(data_md5=md5(sample_heights().tobytes()))
    return build_zip(
        tmp / "hostile.x3p", {"a/main.xml": xml, "b/main.xml": xml, "a/bindata/data.bin": sample_heights().tobytes()}
    )


def _sidecar(content: bytes):
    return lambda tmp: simple_x3p(tmp / "hostile.x3p", extra={"ballistix.json": content})


def _nonexistent(tmp):
    return tmp / "does-not-exist.x3p"


def _directory(tmp):
    (tmp / "dir.x3p").mkdir()
    return tmp / "dir.x3p"


# (id, builder(tmp_path) -> path, regex the message must match, read_x3p keywords)
HOSTILE = [
    ("random-bytes", lambda t: _write(t, np.random.default_rng(1234).bytes(4096)), r"zip", {}),
    ("empty-file", lambda t: _write(t, b""), r"zip", {}),
    ("text-file", lambda t: _write(t, b"this is not an x3p file\n" * 50), r"zip", {}),
    ("truncated-zip", lambda t: _write(t, (lambda b: b[: len(b) // 2])(_valid_bytes(t))), r"zip", {}),
    ("zip-bomb-main-xml", _xml_bomb, r"declares \d+ bytes.*16777216", {}),
    ("zip-bomb-main-xml-declared-small", _xml_bomb_declared_small, r"corrupt|truncated|inflates", {}),
    ("main-xml-declared-huge", _xml_declared_huge, r"declares 2147483632 bytes", {}),
    ("zip-bomb-data-bin", _data_bomb, r"corrupt|truncated|inflates", {}),
    ("data-bin-short-deflate-stream", _data_declared_right_but_short, r"corrupt|truncated", {}),
    ("billion-laughs", _billion_laughs, r"forbidden.*(DTD|entit)", {}),
    ("external-entity", _external_entity, r"forbidden.*(DTD|entit)", {}),
    ("doctype-only", _xml_case(doctype="<!DOCTYPE ISO5436_2>\n"), r"forbidden.*DTD", {}),
    ("member-dotdot", _members_case({"main.xml": "<ISO5436_2/>", "../evil": b"x"}), r"'\.\.'", {}),
    ("member-dotdot-inside", _members_case({"main.xml": "<ISO5436_2/>", "bindata/../../evil": b"x"}), r"'\.\.'", {}),
    ("member-backslash-dotdot", _members_case({"main.xml": "<ISO5436_2/>", "..\\evil": b"x"}), r"'\.\.'", {}),
    ("member-absolute", _members_case({"main.xml": "<ISO5436_2/>", "/abs/path": b"x"}), r"absolute", {}),
    ("member-drive-letter", _members_case({"main.xml": "<ISO5436_2/>", "C:/evil": b"x"}), r"absolute", {}),
    ("member-empty-name", _empty_member_name, r"empty name", {}),
    ("point-link-dotdot", _xml_case(point_link="../data.bin"), r"'\.\.'", {}),
    ("point-link-absolute", _xml_case(point_link="/etc/passwd"), r"absolute", {}),
    ("point-link-missing", _xml_case(point_link="bindata/other.bin"), r"not in the archive", {}),
    ("size-mismatch", _xml_case(size_x=12), r"616 bytes, expected 672", {}),
    (
        "truncated-data-bin",
        lambda t: build_x3p(t / "hostile.x3p", main_xml(), {"bindata/data.bin": bytes(613)}),
        r"613 bytes, expected 616",
        {},
    ),
    ("absurd-dimensions", _xml_case(size_x=1_000_000, size_y=1_000_000), r"exceeds the limit", {}),
    (
        "absurd-dimensions-limit-raised",
        _xml_case(size_x=1_000_000, size_y=1_000_000),
        r"616 bytes, expected 8000000000000",
        {"max_points": 10**13},
    ),
    ("small-max-points", _xml_case(), r"77 points exceeds the limit of 76", {"max_points": 76}),
    ("no-record1", _xml_case(record1=False), r"missing.*Record1", {}),
    ("no-cx-increment", _xml_case(dx=None), r"missing.*Record1/Axes/CX/Increment", {}),
    ("no-matrix-dimension", _xml_case(matrix=False), r"missing.*MatrixDimension/SizeX", {}),
    ("no-feature-type", _xml_case(feature=None), r"missing.*FeatureType", {}),
    ("no-data-at-all", _xml_case(point_link=None), r"neither.*PointDataLink.*DataList", {}),
    ("sizex-abc", _xml_case(size_x="abc"), r"SizeX = 'abc' is not an integer", {}),
    ("sizex-float", _xml_case(size_x="11.0"), r"SizeX.*not an integer", {}),
    ("sizex-zero", _xml_case(size_x=0), r"not positive", {}),
    ("sizey-negative", _xml_case(size_y=-7), r"not positive", {}),
    ("sizez-two", _xml_case(size_z=2), r"SizeZ = 2", {}),
    ("increment-nan", _xml_case(dx="nan"), r"Increment = 'nan' is not finite", {}),
    ("increment-inf", _xml_case(dy="1e999"), r"not finite", {}),
    ("increment-negative", _xml_case(dx="-1"), r"CX Increment must be a positive", {}),
    ("increment-zero", _xml_case(dy="0"), r"CY Increment must be a positive", {}),
    ("increment-text", _xml_case(dx="six"), r"Increment = 'six' is not a number", {}),
    ("cz-offset-nan", _xml_case(cz_offset="nan"), r"CZ/Offset.*not finite", {}),
    ("feature-pcl", _xml_case(feature="PCL"), r"FeatureType 'PCL' is not supported", {}),
    ("datatype-q", _xml_case(data_type="Q"), r"DataType 'Q'", {}),
    ("cx-axis-a", _xml_case(cx_axis="A"), r"CX AxisType 'A' is not supported", {}),
    ("no-main-xml", _members_case({"bindata/data.bin": b"x" * 8}), r"no main\.xml", {}),
    ("two-main-xml", _two_main_xml, r"ambiguous", {}),
    ("wrong-root", _members_case({"main.xml": "<html><body/></html>"}), r"root element is 'html'", {}),
    ("malformed-xml", _members_case({"main.xml": "<ISO5436_2><Record1>"}), r"not well-formed", {}),
    ("xml-not-utf8", _members_case({"main.xml": b"<ISO5436_2>\xff\xfe\x00</ISO5436_2>"}), r"not well-formed", {}),
    (
        "xml-unknown-encoding",
        _members_case({"main.xml": '<?xml version="1.0" encoding="foo"?><ISO5436_2/>'}),
        r"not well-formed.*encoding",
        {},
    ),
    ("lzma-corrupt", _lzma_corrupt, r"point data.*corrupt", {}),
    ("encrypted-flag", lambda t: _write(t, patch_header(_valid_bytes(t), "main.xml", flag_bits=1)), r"encrypted", {}),
    (
        "unknown-compression",
        lambda t: _write(t, patch_header(_valid_bytes(t), "bindata/data.bin", compress_type=99)),
        r"compression",
        {},
    ),
    (
        "unsupported-zip-version",
        lambda t: _write(t, patch_header(_valid_bytes(t), "main.xml", extract_version=99)),
        r"not a readable zip",
        {},
    ),
    ("too-many-members", _too_many_members, r"1004 members, more than 1000", {}),
    ("sidecar-not-json", _sidecar(b"{not json"), r"ballistix\.json is not valid JSON", {}),
    ("sidecar-deeply-nested", _sidecar(b"[" * 200_000), r"ballistix\.json is not valid JSON", {}),
    ("sidecar-not-object", _sidecar(b"[1, 2]"), r"must hold a JSON object", {}),
    (
        "datalist-count",
        _xml_case(point_link=None, extra_record3="<DataList><Datum>1</Datum></DataList>"),
        r"DataList holds 1 points, expected 11 x 7",
        {},
    ),
    (
        "datalist-not-number",
        _xml_case(size_x=1, size_y=1, point_link=None, extra_record3="<DataList><Datum>abc</Datum></DataList>"),
        r"DataList point 0",
        {},
    ),
    ("nonexistent", _nonexistent, r"no such file", {}),
    ("directory", _directory, r"no such file", {}),
]


@pytest.mark.parametrize("builder, pattern, kwargs", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_files_raise_scan_format_error(tmp_path, builder, pattern, kwargs):
    path = builder(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(bx.ScanFormatError) as err:
            bx.read_x3p(path, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(err.value) is bx.ScanFormatError  # not a checksum problem, not another exception
    msg = str(err.value)
    assert str(path) in msg and err.value.path == str(path)
    assert re.search(pattern, msg, re.IGNORECASE | re.DOTALL), msg
    assert peak < 50 * MB, f"peak memory {peak / MB:.1f} MB while refusing the file"


def test_hostile_names_are_really_in_the_zip(tmp_path):
    # guard the test builders themselves: zipfile must not have sanitised the names
    for name in ("../evil", "/abs/path", "C:/evil"):
        path = build_zip(tmp_path / "z.zip", {"main.xml": "x", name: b"x"})
        assert name in zipfile.ZipFile(path).namelist()


def test_patch_helper_really_declares_what_it_says(tmp_path):
    raw = patch_header(_valid_bytes(tmp_path), "main.xml", file_size=0x7FFFFFF0)
    assert zipfile.ZipFile(io.BytesIO(raw)).getinfo("main.xml").file_size == 0x7FFFFFF0
    bomb = _data_bomb(tmp_path)
    info = zipfile.ZipFile(bomb).getinfo("bindata/data.bin")
    assert info.file_size == 616 and info.compress_size > 10_000  # compressed 50 MB, declares 616 bytes


# ----------------------------------------------------------------------------
# fuzzing
# ----------------------------------------------------------------------------


def _valid_x3p_variants() -> list[bytes]:
    """Deflated (as written), stored (XML text visible to mutations), and int16 with a valid mask."""
    scan = bx.Scan(sample_heights(), 1e-6, 2e-6, {"labels": {"exhibit": "fz"}})
    with tempfile.TemporaryDirectory() as d:
        deflated = bx.write_x3p(scan, Path(d) / "a.x3p").read_bytes()
        zf = zipfile.ZipFile(io.BytesIO(deflated))
        stored = build_zip(
            Path(d) / "b.x3p", {i.filename: zf.read(i) for i in zf.infolist()}, zipfile.ZIP_STORED
        ).read_bytes()
        mask = pack_bits_lsb_first(np.ones((7, 11), bool))
        xml = main_xml(data_type="I", data_md5=md5(bytes(154)), valid_link="bindata/valid.bin", valid_md5=md5(mask))
        masked = build_x3p(
            Path(d) / "c.x3p",
            xml,
            {"bindata/data.bin": bytes(154), "bindata/valid.bin": mask},
            compression=zipfile.ZIP_STORED,
        ).read_bytes()
    return [deflated, stored, masked]


FUZZ_BASES = _valid_x3p_variants()


def _header_offsets(data: bytes) -> list[int]:
    """Byte offsets inside zip headers, where mutations are most interesting."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    offs = [i.header_offset + k for i in zf.infolist() for k in range(30)]
    cd = data.find(b"PK\x01\x02")
    return offs + list(range(cd, len(data)))


FUZZ_HEADERS = [_header_offsets(b) for b in FUZZ_BASES]

mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("set-header"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 64)),
)


def _mutate(data: bytes, headers: list[int], ops) -> bytes:
    b = bytearray(data)
    for op, pos, arg in ops:
        if not b:
            break
        i = pos % len(b)
        if op == "set":
            b[i] = arg
        elif op == "set-header":
            j = headers[pos % len(headers)]
            if j < len(b):
                b[j] = arg
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b[i:i] = arg
        else:
            del b[i : i + arg]
    return bytes(b)


def _read_or_format_error(path, **kw):
    """The contract for untrusted input: a valid Scan or a ScanFormatError, nothing else."""
    try:
        scan = read_quiet(path, **kw)
    except bx.ScanFormatError as e:
        assert str(path) in str(e)
        event("ScanFormatError: " + re.sub(r"[\d'\"(].*", "", e.problem)[:40])  # --hypothesis-show-statistics
        return None
    event("read a Scan")
    assert isinstance(scan, bx.Scan)
    assert scan.heights.ndim == 2 and scan.heights.dtype == np.float64
    assert not np.isinf(scan.heights).any()
    assert scan.dx > 0 and scan.dy > 0
    return scan


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.integers(0, len(FUZZ_BASES) - 1), ops=st.lists(mutation, min_size=1, max_size=6), strict=st.booleans())
def test_fuzz_byte_mutations(tmp_path, base, ops, strict):
    path = tmp_path / "fuzz.x3p"
    path.write_bytes(_mutate(FUZZ_BASES[base], FUZZ_HEADERS[base], ops))
    _read_or_format_error(path, strict=strict)


XML_DEFAULTS = {
    "size_x": "11",
    "size_y": "7",
    "size_z": "1",
    "dx": "1e-06",
    "dy": "2e-06",
    "data_type": "D",
    "cz_increment": "1",
    "cz_offset": "0",
    "feature": "SUR",
    "cx_axis": "I",
    "cy_axis": "I",
    "point_link": "bindata/data.bin",
    "checksum_file": "md5checksum.hex",
    "valid_link": None,
    "valid_md5": None,
}
ODD_VALUES = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "7",
    "11",
    "77",
    "154",
    "1e999",
    "nan",
    "inf",
    "-0",
    "0x10",
    "1_0",
    "١٢",
    "11.0",
    "1e-320",
    "D",
    "F",
    "L",
    "I",
    "d",
    "Q",
    "SUR",
    "PRF",
    "PCL",
    "A",
    "R",
    "i",
    "../x",
    "/x",
    "bindata\\data.bin",
    "./bindata/data.bin",
    "bindata/valid.bin",
    "main.xml",
    "md5checksum.hex",
    ".",
]
field_value = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),  # may hold control characters
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.dictionaries(st.sampled_from(sorted(XML_DEFAULTS)), field_value, min_size=1, max_size=4),
    ns=st.sampled_from(["p", "default", None]),
)
def test_fuzz_main_xml_fields(tmp_path, changes, ns):
    """A few main.xml fields at a time get odd values; everything else stays valid."""
    data = sample_heights().tobytes()
    fields = {**XML_DEFAULTS, **changes}
    fields = {k: None if v is None else escape(v) for k, v in fields.items()}
    xml = main_xml(ns=ns, data_md5=md5(data), **fields)
    path = build_x3p(tmp_path / "fuzz.x3p", xml, {"bindata/data.bin": data, "bindata/valid.bin": b"\xf7" * 10})
    _read_or_format_error(path)


XML_ALPHABET = b"<>/=\"' &;#x0123456789abcdefDFLI?!-[]:pxmlns\xff\xfe\x00\n"
FUZZ_XML = main_xml(data_md5=md5(sample_heights().tobytes()), valid_link="bindata/valid.bin").encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete", "truncate"]),
            st.integers(0, 2**16),
            st.binary(min_size=1, max_size=6).map(lambda b: bytes(XML_ALPHABET[c % len(XML_ALPHABET)] for c in b)),
        ),
        min_size=1,
        max_size=4,
    ),
    strict=st.booleans(),
)
def test_fuzz_main_xml_bytes(tmp_path, ops, strict):
    """Mutated main.xml inside an otherwise sound zip (correct CRCs and md5checksum.hex)."""
    b = bytearray(FUZZ_XML)
    for op, pos, arg in ops:
        i = pos % (len(b) + 1)
        if op == "set" and i < len(b):
            b[i] = arg[0]
        elif op == "insert":
            b[i:i] = arg
        elif op == "delete":
            del b[i : i + len(arg) * 4]
        elif op == "truncate":
            del b[i:]
    members = {"bindata/data.bin": sample_heights().tobytes(), "bindata/valid.bin": b"\xff" * 10}
    _read_or_format_error(build_x3p(tmp_path / "fuzz.x3p", bytes(b), members), strict=strict)


# ----------------------------------------------------------------------------
# real scans (../shared/data, skipped when absent)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(shared_data) -> Path:
    """../shared/data beside the repository (conftest.py skips when it is absent)."""
    return shared_data


@functools.cache
def _read_real(path: Path) -> bx.Scan:
    return bx.read_x3p(path)


def _check_real(files, spacing, side_range, valid_range):
    assert files
    problems = []
    for f in files:
        s = _read_real(f)
        ny, nx = s.shape
        checks = {
            "spacing": s.dx == spacing and s.dy == spacing,
            "shape": side_range[0] <= ny <= side_range[1] and side_range[0] <= nx <= side_range[1],
            "valid_fraction": valid_range[0] <= s.valid_fraction <= valid_range[1],
            "checksums": s.meta["x3p"]["checksums"] == {"point_data": "verified", "main_xml": "verified"},
            "metres": 1e-7 < float(np.nanstd(s.heights)) < 1e-4,
            "float64": s.heights.dtype == np.float64,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            problems.append(f"{f.name}: {bad} shape={s.shape} dx={s.dx} valid={s.valid_fraction:.3f}")
    assert not problems, "\n".join(problems)


def test_real_fadul_processed(data_dir):
    files = sorted((data_dir / "fadul").glob("*.x3p"))
    assert len(files) == 40
    # 498 x 498 (fadul-8-1) to 579 x 579 (fadul-C); P and Q are one column wider than tall
    _check_real(files, 6.25e-6, (490, 590), (0.2, 0.45))
    for f in files:
        ny, nx = _read_real(f).shape
        assert abs(ny - nx) <= 1, f.name


def test_real_fadul_raw(data_dir):
    files = sorted((data_dir / "fadul-raw").glob("*.x3p"))
    assert len(files) == 3
    _check_real(files, 3.125e-6, (1200, 1235), (0.4, 0.6))


def test_real_fadul_metadata(data_dir):
    s = _read_real(data_dir / "fadul" / "fadul-1-1.x3p")
    assert s.meta["instrument"]["manufacturer"] == "NanoFocus"
    assert s.meta["format"] == "x3p"
    assert len(s.meta["sha256"]) == 64


def test_real_files_match_labels_csv(data_dir):
    with open(data_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 43
    listed = {r["file"] for r in rows}
    on_disk = {p.relative_to(data_dir).as_posix() for p in data_dir.glob("fadul*/*.x3p")}
    assert on_disk <= listed
    for r in rows:
        s = _read_real(data_dir / r["file"])
        expected = float(r["spacing_um"]) * 1e-6
        assert s.dx == pytest.approx(expected, rel=1e-9), r["file"]
        assert s.dy == pytest.approx(expected, rel=1e-9), r["file"]


def test_real_file_round_trip(data_dir, tmp_path):
    s = _read_real(data_dir / "fadul" / "fadul-1-1.x3p")
    back = bx.read_x3p(bx.write_x3p(s, tmp_path / "copy.x3p"))
    assert back.heights.tobytes() == s.heights.tobytes()
    assert (back.dx, back.dy) == (s.dx, s.dy)
    assert back.meta["instrument"] == s.meta["instrument"]
    assert back.meta["date"] == s.meta["date"]


def test_checksum_file_named_but_absent_is_not_silently_skipped(tmp_path):
    p = simple_x3p(tmp_path / "nock.x3p", checksum=None, checksum_file="md5checksum.hex")
    with pytest.raises(bx.ChecksumError, match="not in the archive"):
        bx.read_x3p(p)
    with pytest.warns(bx.ScanFormatWarning):
        scan = bx.read_x3p(p, strict=False)
    assert scan.meta["x3p"]["checksums"]["main_xml"] == "missing"


@pytest.mark.parametrize("name", ["../md5checksum.hex", "/etc/md5checksum.hex"])
def test_unsafe_checksum_file_name_is_refused(tmp_path, name):
    p = simple_x3p(tmp_path / "unsafe.x3p", checksum_file=name)
    with pytest.raises(bx.ScanFormatError, match="unsafe.x3p"):
        bx.read_x3p(p)


@pytest.mark.parametrize("bad", [0, -5, "100", 1.5, True])
def test_max_points_must_be_a_positive_integer(tmp_path, bad):
    p = simple_x3p(tmp_path / "ok.x3p")
    with pytest.raises(bx.ParameterError, match="max_points"):
        bx.read_x3p(p, max_points=bad)


def test_writing_is_deterministic(tmp_path, monkeypatch):
    import time

    (s,) = bx.datasets.simulate(1, 1, seed=0, resolution="fast")
    a = bx.write_x3p(s, tmp_path / "a.x3p").read_bytes()
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 3600.0)  # an hour later (zip member times: 2 s resolution)
    b = bx.write_x3p(s, tmp_path / "b.x3p").read_bytes()
    assert a == b


# ----------------------------------------------------------------------------
# length units: files in micrometres or millimetres (units=)
# ----------------------------------------------------------------------------


def _scaled_number(factor):
    return lambda mo: mo.group(1) + repr(float(mo.group(2)) * factor)


def rescaled_x3p(path: Path, scan: bx.Scan, factor: float, *, height_factor: float | None = None) -> Path:
    """``scan`` written by write_x3p, then main.xml's CX/CY increments and offsets multiplied by
    ``factor`` and the float64 heights by ``height_factor`` (default ``factor``), with correct MD5s
    of the point data and of main.xml: the file an instrument or an x3ptools pipeline writing
    micrometres (1e6) or millimetres (1e3) would write."""
    src = bx.write_x3p(scan, path.with_name("metres-" + path.name))
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    hf = factor if height_factor is None else height_factor
    data = (np.frombuffer(members["bindata/data.bin"], "<f8") * hf).astype("<f8").tobytes()
    xml = members["main.xml"].decode()
    for tag in ("Increment", "Offset"):
        xml, n = re.subn(rf"(<C[XY]>(?:(?!</C[XY]>).)*?<{tag}>)([^<]+)", _scaled_number(factor), xml, flags=re.S)
        assert n == 2, tag
    xml, n = re.subn(r"(<MD5ChecksumPointData>)\w+", lambda mo: mo.group(1) + md5(data), xml)
    assert n == 1
    members.update({"main.xml": xml.encode(), "bindata/data.bin": data, "md5checksum.hex": md5(xml.encode()) + "\n"})
    return build_zip(path, members)


def units_scan(dx=3.125e-6, span=4e-5, dy=None) -> bx.Scan:
    """A small metre scan (dy = 2 dx unless given) with heights spanning ``span`` metres, offsets and a label."""
    h = sample_heights()
    h = (h - np.nanmin(h)) / (np.nanmax(h) - np.nanmin(h)) * span
    return bx.Scan(
        h, dx, 2 * dx if dy is None else dy, {"labels": {"exhibit": "U1"}, "x3p": {"offset_m": [1e-4, -2e-4, 0.0]}}
    )


def test_units_helper_writes_what_it_says(tmp_path):
    scan = units_scan()
    p = rescaled_x3p(tmp_path / "um.x3p", scan, 1e6)
    with zipfile.ZipFile(p) as zf:
        root = ET.fromstring(zf.read("main.xml"))  # our own output: trusted
    assert float(root.findtext("Record1/Axes/CX/Increment")) == pytest.approx(3.125)
    back = bx.read_x3p(p, units="m")  # as given: the numbers in the file
    assert back.dx == pytest.approx(3.125) and back.dy == pytest.approx(6.25)
    np.testing.assert_allclose(back.heights, scan.heights * 1e6, rtol=1e-12)
    assert back.meta["x3p"]["offset_m"] == pytest.approx([100.0, -200.0, 0.0])
    assert back.meta["x3p"]["checksums"] == {"point_data": "verified", "main_xml": "verified"}


def test_units_auto_reads_a_micrometre_file_as_metres_and_warns(tmp_path):
    scan = units_scan()
    p = rescaled_x3p(tmp_path / "um.x3p", scan, 1e6)
    with pytest.warns(bx.ScanFormatWarning, match=r"um\.x3p.*units='um'.*not a plausible spacing in metres"):
        back = bx.read_x3p(p)
    np.testing.assert_allclose(back.heights, scan.heights, rtol=1e-12, atol=0)
    assert np.array_equal(np.isnan(back.heights), np.isnan(scan.heights))
    assert back.dx == pytest.approx(3.125e-6, rel=1e-12) and back.dy == pytest.approx(6.25e-6, rel=1e-12)
    assert back.meta["x3p"]["offset_m"] == pytest.approx([1e-4, -2e-4, 0.0], rel=1e-12)
    units = back.meta["units"]
    assert units["file"] == "um" and units["scale_to_m"] == 1e-6
    assert units["how"].startswith("auto: lateral increment 3.125 x 6.25 is not a plausible spacing in metres")
    assert back.meta["labels"] == {"exhibit": "U1"}  # the sidecar still applies
    with pytest.warns(bx.ScanFormatWarning, match="units='um'"):  # read_scan passes units="auto" on
        assert bx.read_scan(p).meta["units"]["file"] == "um"


def test_units_auto_reads_a_millimetre_file_as_metres(tmp_path):
    scan = bx.datasets.simulate(1, 1, seed=0, resolution="fast")[0]  # 12.5 um grid, heights span ~0.1 mm
    p = rescaled_x3p(tmp_path / "mm.x3p", scan, 1e3)
    with pytest.warns(bx.ScanFormatWarning, match=r"mm\.x3p.*units='mm'"):
        back = bx.read_x3p(p)
    np.testing.assert_allclose(back.heights, scan.heights, rtol=1e-12, atol=0)
    assert back.dx == pytest.approx(12.5e-6, rel=1e-12)
    assert back.meta["units"]["file"] == "mm" and back.meta["units"]["scale_to_m"] == 1e-3


@pytest.mark.parametrize("units, factor", [("um", 1e6), ("mm", 1e3), ("m", 1.0)])
def test_units_given_read_without_warning(tmp_path, units, factor):
    scan = units_scan()
    p = rescaled_x3p(tmp_path / f"{units}.x3p", scan, factor)
    for reader in (bx.read_x3p, bx.read_scan):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            back = reader(p, units=units)
        np.testing.assert_allclose(back.heights, scan.heights, rtol=1e-12, atol=0)
        assert back.dx == pytest.approx(scan.dx, rel=1e-12)
        assert back.meta["units"] == {
            "file": units,
            "how": "given",
            "scale_to_m": {"m": 1.0, "mm": 1e-3, "um": 1e-6}[units],
        }


def test_units_metre_files_say_so_without_warning(tmp_path):
    p = bx.write_x3p(units_scan(), tmp_path / "m.x3p")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = bx.read_x3p(p)
    assert back.meta["units"]["file"] == "m" and back.meta["units"]["scale_to_m"] == 1.0
    assert back.meta["units"]["how"].startswith("auto: lateral increment 3.125e-06 x 6.25e-06 is a plausible")


def test_units_micrometre_file_written_back_is_metres(tmp_path):
    scan = units_scan()
    with pytest.warns(bx.ScanFormatWarning):
        um = bx.read_x3p(rescaled_x3p(tmp_path / "um.x3p", scan, 1e6))
    out = bx.write_x3p(um, tmp_path / "back.x3p")
    with zipfile.ZipFile(out) as zf:
        root = ET.fromstring(zf.read("main.xml"))
        sidecar = json.loads(zf.read("ballistix.json"))
    assert float(root.findtext("Record1/Axes/CX/Increment")) == pytest.approx(3.125e-6, rel=1e-12)
    assert "units" not in sidecar  # describes the file read, never stored in the one written
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = bx.read_x3p(out)
    assert again.heights.tobytes() == um.heights.tobytes()
    assert (again.dx, again.dy) == (um.dx, um.dy)
    assert again.meta["units"]["file"] == "m"
    assert again.meta["x3p"]["offset_m"] == um.meta["x3p"]["offset_m"]
    assert again.meta["labels"] == {"exhibit": "U1"}


def test_units_in_a_sidecar_are_ignored(tmp_path):
    # a sidecar claiming micrometres (hand-made or from elsewhere) does not relabel a metre file
    scan = units_scan()
    data = np.ascontiguousarray(scan.heights, "<f8").tobytes()
    side = json.dumps({"units": {"file": "um", "how": "given", "scale_to_m": 1e-6}, "labels": {"exhibit": "S"}})
    p = build_x3p(
        tmp_path / "side.x3p",
        main_xml(dx="3.125e-06", dy="3.125e-06", data_md5=md5(data)),
        {"bindata/data.bin": data, "ballistix.json": side.encode()},
    )
    back = bx.read_x3p(p)
    assert back.meta["units"]["file"] == "m" and back.meta["labels"] == {"exhibit": "S"}
    assert np.array_equal(back.heights, scan.heights, equal_nan=True)


def test_units_integer_data_scale_cz_increment_and_offset(tmp_path):
    # L data: heights = count * CZ Increment + CZ Offset, all in micrometres here
    data = RAW.astype("<i4").tobytes()
    xml = main_xml(
        size_x=5,
        size_y=3,
        dx="3.125",
        dy="3.125",
        data_type="L",
        cz_increment="0.01",
        cz_offset="2.5",
        data_md5=md5(data),
    )
    p = build_x3p(tmp_path / "int-um.x3p", xml, {"bindata/data.bin": data})
    with pytest.warns(bx.ScanFormatWarning, match="units='um'"):
        back = bx.read_x3p(p)
    np.testing.assert_allclose(back.heights, (RAW * 0.01 + 2.5) * 1e-6, rtol=1e-12)
    assert back.meta["x3p"]["z_increment"] == pytest.approx(1e-8)
    assert back.meta["x3p"]["offset_m"][2] == pytest.approx(2.5e-6)
    assert back.dx == pytest.approx(3.125e-6)


def test_units_heights_decide_between_millimetres_and_micrometres(tmp_path):
    # increment 0.07 is 70 um in mm or 70 nm in um; heights spanning 40 units are 4 cm in mm (no
    # cartridge case) but 40 um in um
    scan = units_scan(dx=7e-8, dy=7e-8, span=4e-5)
    with pytest.warns(bx.ScanFormatWarning, match="units='um'"):
        back = bx.read_x3p(rescaled_x3p(tmp_path / "um.x3p", scan, 1e6))
    assert back.meta["units"]["file"] == "um" and "and in micrometres" in back.meta["units"]["how"]
    np.testing.assert_allclose(back.heights, scan.heights, rtol=1e-12)


@pytest.mark.parametrize(
    "dx, span, factor, height_factor, pattern",
    [
        (1e-3, 4e-5, 1e6, None, r"not a plausible spacing in metres.*nor in millimetres or micrometres"),
        (3.125e-6, 4e-5, 1e6, 1.0, r"inconsistent length units.*heights span 3.99"),  # lateral um, heights m
        (3.125e-6, 4e-5, 1e3, 1e6, r"inconsistent length units"),  # lateral mm, heights um
        (5e-5, 1e-3, 1e3, None, r"ambiguous length units.*units='mm' or units='um'"),  # 0.07 and span 1: both fit
    ],
    ids=["no-unit-fits", "lateral-um-heights-m", "lateral-mm-heights-um", "mm-or-um"],
)
def test_units_auto_refuses_ambiguous_files(tmp_path, dx, span, factor, height_factor, pattern):
    p = rescaled_x3p(tmp_path / "odd.x3p", units_scan(dx=dx, span=span), factor, height_factor=height_factor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(bx.ScanFormatError) as err:
            bx.read_x3p(p)
    msg = str(err.value)
    assert str(p) in msg and "units=" in msg
    assert re.search(pattern, msg), msg


@pytest.mark.parametrize("heights", [np.full((7, 11), np.nan), np.full((7, 11), 5e-6)], ids=["no-valid", "flat"])
def test_units_auto_without_height_evidence_follows_the_increments(tmp_path, heights):
    p = rescaled_x3p(tmp_path / "um.x3p", bx.Scan(heights, 3.125e-6, 3.125e-6), 1e6)
    with pytest.warns(bx.ScanFormatWarning, match="heights give no evidence"):
        back = bx.read_x3p(p)
    assert back.meta["units"]["file"] == "um" and back.dx == pytest.approx(3.125e-6)
    np.testing.assert_allclose(back.heights, heights, rtol=1e-12)


def test_units_explicit_wrong_unit_reads_as_given_and_preprocess_refuses(tmp_path):
    p = rescaled_x3p(tmp_path / "um.x3p", bx.datasets.simulate(1, 1, seed=0, resolution="fast")[0], 1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrong = bx.read_x3p(p, units="m")  # trusted as given
    assert wrong.dx == pytest.approx(12.5) and wrong.meta["units"]["how"] == "given"
    with pytest.raises(bx.ParameterError, match="micrometres or millimetres passed as metres"):
        bx.preprocess(wrong)


@pytest.mark.parametrize("bad", ["furlong", "M", "µm", None, 1e-6, ""])
def test_units_must_be_one_of_the_choices(tmp_path, bad):
    p = simple_x3p(tmp_path / "ok.x3p")
    for reader in (bx.read_x3p, bx.read_scan):
        with pytest.raises(bx.ParameterError, match="units must be one of 'auto', 'm', 'mm', 'um'"):
            reader(p, units=bad)
