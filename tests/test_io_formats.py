"""read_scan dispatch, the ballistix .npz format, and 2-D image reading."""

from __future__ import annotations

import io
import json
import re
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import ballistix as bx

MB = 1024 * 1024


def heights(ny=7, nx=11, dtype=np.float64) -> np.ndarray:
    h = (np.arange(ny * nx, dtype=np.float64).reshape(ny, nx) - 20.0) * 3e-7
    h[1, 2] = h[6, 10] = np.nan
    return h.astype(dtype)


def make_scan(dtype=np.float64, meta=None) -> bx.Scan:
    return bx.Scan(heights(dtype=dtype), dx=1.5e-6, dy=2.5e-6, meta=meta or {})


def gray8() -> np.ndarray:
    return (np.arange(6 * 9).reshape(6, 9) * 4).astype(np.uint8)  # 0 .. 212


def assert_format_error(path, call, pattern):
    with pytest.raises(bx.ScanFormatError) as err:
        call()
    msg = str(err.value)
    assert str(path) in msg, msg
    assert re.search(pattern, msg, re.IGNORECASE), msg
    return err.value


# ----------------------------------------------------------------------------
# read_scan dispatch
# ----------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    """One small file of each kind, plus upper-case-suffix copies."""
    scan = make_scan(meta={"labels": {"exhibit": "E1"}})
    out = {
        "x3p": bx.write_x3p(scan, tmp_path / "a.x3p"),
        "npz": bx.write_npz(scan, tmp_path / "a.npz"),
        "png": tmp_path / "a.png",
        "tif": tmp_path / "a.tif",
        "tiff": tmp_path / "a.tiff",
    }
    Image.fromarray(gray8()).save(out["png"])
    Image.fromarray(gray8()).save(out["tif"])
    Image.fromarray(gray8()).save(out["tiff"])
    for kind in ("x3p", "npz", "png"):
        upper = tmp_path / f"UPPER.{kind.upper()}"
        upper.write_bytes(out[kind].read_bytes())
        out[kind.upper()] = upper
    return out


@pytest.mark.parametrize(
    "kind, fmt",
    [
        ("x3p", "x3p"),
        ("npz", "npz"),
        ("png", "image"),
        ("tif", "image"),
        ("tiff", "image"),
        ("X3P", "x3p"),
        ("NPZ", "npz"),
        ("PNG", "image"),
    ],
)
def test_read_scan_dispatches_on_suffix(files, kind, fmt):
    kwargs = {"pixel_size_m": 2e-6} if fmt == "image" else {}
    scan = bx.read_scan(files[kind], **kwargs)
    assert scan.meta["format"] == fmt
    assert scan.meta["source"] == str(files[kind])
    if fmt == "image":
        assert np.array_equal(scan.heights, gray8() / 255.0)
        assert scan.dx == scan.dy == 2e-6
    else:
        assert np.array_equal(scan.heights, heights(), equal_nan=True)
        assert (scan.dx, scan.dy) == (1.5e-6, 2.5e-6)
        assert scan.meta["labels"] == {"exhibit": "E1"}


def test_read_scan_accepts_str_paths_and_passes_keywords(files):
    scan = bx.read_scan(str(files["x3p"]), strict=False, max_points=1000)
    assert scan.shape == (7, 11)
    with pytest.raises(bx.ScanFormatError, match="exceeds the limit of 10"):
        bx.read_scan(files["x3p"], max_points=10)


@pytest.mark.parametrize(
    "name, shown", [("scan.jpg", "'.jpg'"), ("scan.x3p.bak", "'.bak'"), ("noext", "(none)"), ("scan.PLY", "'.ply'")]
)
def test_read_scan_unknown_suffix(tmp_path, name, shown):
    path = tmp_path / name
    path.write_bytes(b"whatever")
    err = assert_format_error(path, lambda: bx.read_scan(path), r"unsupported suffix")
    assert shown in str(err)


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("x3p", {"pixel_size_m": 1e-6}),
        ("png", {"strict": True}),
        ("npz", {"strict": False}),
        ("x3p", {"bogus": 1}),
        ("npz", {"pixel_size_m": 1e-6}),
    ],
)
def test_read_scan_bad_keyword_is_parameter_error(files, kind, kwargs):
    with pytest.raises(bx.ParameterError) as err:
        bx.read_scan(files[kind], **kwargs)
    assert next(iter(kwargs)) in str(err.value)
    assert not isinstance(err.value, bx.ScanFormatError)


@pytest.mark.parametrize("kind", ["npz", "png"])
def test_read_scan_units_of_other_formats(files, kind):
    # only x3p files have a unit to choose: npz is always metres, images take pixel_size_m in metres
    kw = {"pixel_size_m": 2e-6} if kind == "png" else {}
    for units in ("auto", "m"):
        scan = bx.read_scan(files[kind], units=units, **kw)
        assert scan.meta["units"]["file"] == "m" and scan.meta["units"]["scale_to_m"] == 1.0
    for units in ("mm", "um"):
        with pytest.raises(bx.ParameterError, match=f"units='{units}' applies to x3p files only") as err:
            bx.read_scan(files[kind], units=units, **kw)
        assert str(files[kind]) in str(err.value)
    with pytest.raises(bx.ParameterError, match="units must be one of"):
        bx.read_scan(files[kind], units="furlong", **kw)


def test_read_scan_passes_units_to_x3p(files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = bx.read_scan(files["x3p"], units="m")
    assert scan.meta["units"] == {"file": "m", "how": "given", "scale_to_m": 1.0}
    assert bx.read_scan(files["x3p"]).meta["units"]["how"].startswith("auto")


# ----------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------

NPZ_META = {
    "labels": {"exhibit": "E-9", "firearm": "G1"},
    "processing": [{"step": "level", "order": 2}],
    "truth": {"rotation_deg": -3.5},
    "note": "µm ünïcode",
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npz_round_trip(tmp_path, dtype):
    scan = make_scan(dtype, meta=dict(NPZ_META, source="/somewhere/else.x3p", format="x3p"))
    path = bx.write_npz(scan, tmp_path / "s.npz")
    assert path == tmp_path / "s.npz"
    back = bx.read_npz(path)
    assert back.heights.dtype == dtype
    assert back.heights.tobytes() == scan.heights.tobytes()  # bitwise, NaN included
    assert (back.dx, back.dy) == (1.5e-6, 2.5e-6)
    for k, v in NPZ_META.items():
        assert back.meta[k] == v
    # provenance describes the file just read, not the one the scan came from
    assert back.meta["source"] == str(path) and back.meta["format"] == "npz"
    assert len(back.meta["sha256"]) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temporary left behind


def test_npz_units_describe_the_file_read(tmp_path):
    # a scan read from a micrometre x3p is in metres: its npz says metres, not the x3p's unit
    scan = make_scan(meta={"units": {"file": "um", "how": "given", "scale_to_m": 1e-6}})
    back = bx.read_npz(bx.write_npz(scan, tmp_path / "u.npz"))
    assert back.meta["units"] == {"file": "m", "how": "npz: ballistix's own format, always metres", "scale_to_m": 1.0}
    with np.load(tmp_path / "u.npz", allow_pickle=False) as z:
        assert "units" not in json.loads(str(z["meta"]))


def test_npz_is_plain_numpy_without_pickle(tmp_path):
    path = bx.write_npz(make_scan(meta={"labels": {"a": 1}}), tmp_path / "s.npz")
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["heights", "meta", "spacing", "version"]
        assert int(z["version"]) == 1
        assert json.loads(str(z["meta"])) == {"labels": {"a": 1}}
        assert z["spacing"].tolist() == [1.5e-6, 2.5e-6]


def test_write_npz_refuses_bad_input(tmp_path):
    with pytest.raises(bx.ParameterError):
        bx.write_npz(np.zeros((2, 2)), tmp_path / "a.npz")
    with pytest.raises(bx.ParameterError, match="JSON"):
        bx.write_npz(make_scan(meta={"x": {1, 2}}), tmp_path / "b.npz")
    assert list(tmp_path.iterdir()) == []


def npy(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def good_members() -> dict[str, bytes]:
    return {
        "heights.npy": npy(heights()),
        "spacing.npy": npy(np.array([1e-6, 1e-6])),
        "meta.npy": npy(np.array("{}")),
        "version.npy": npy(np.array(1, np.int64)),
    }


def npz_case(**changes):
    """An npz with members replaced (bytes), or removed (None)."""

    def build(tmp):
        members = good_members()
        for name, value in changes.items():
            key = name + ".npy"
            if value is None:
                members.pop(key)
            else:
                members[key] = value
        path = tmp / "hostile.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for k, v in members.items():
                zf.writestr(k, v)
        return path

    return build


def raw_npy(header: str, data: bytes) -> bytes:
    """A version-1.0 .npy file with exactly this header text (padded as numpy pads it)."""
    h = header.encode("latin1")
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


def _npy_declaring(shape) -> bytes:
    """A well-formed .npy header declaring ``shape`` of float64, followed by only 32 data bytes."""
    return raw_npy(repr({"descr": "<f8", "fortran_order": False, "shape": shape}), bytes(32))


def _declared_huge_in_zip(tmp):
    path = tmp / "hostile.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in good_members().items():
            zf.writestr(k, v)
        zf.writestr("extra.bin", b"")
    raw = bytearray(path.read_bytes())
    # claim heights.npy holds 2**31 bytes (more than 100e6 points * 8)
    eocd = raw.rfind(b"PK\x05\x06")
    pos = struct.unpack("<I", raw[eocd + 16 : eocd + 20])[0]
    assert raw[pos + 46 : pos + 57] == b"heights.npy"
    struct.pack_into("<I", raw, pos + 24, 2**31)
    path.write_bytes(bytes(raw))
    return path


def _write(tmp, data):
    p = tmp / "hostile.npz"
    p.write_bytes(data)
    return p


def _too_many(tmp):
    path = npz_case()(tmp)
    with zipfile.ZipFile(path, "a") as zf:
        for i in range(20):  # more than the 4 members and 13 of marks a scan may hold
            zf.writestr(f"junk{i}.npy", b"")
    return path


NPZ_HOSTILE = [
    (
        "pickled-object-heights",
        npz_case(heights=npy(np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)),
        r"heights\.npy.*(pickle|object)",
        {},
    ),
    (
        "pickled-object-meta",
        npz_case(meta=npy(np.array({"a": 1}, dtype=object), allow_pickle=True)),
        r"meta\.npy.*(pickle|object)",
        {},
    ),
    ("missing-spacing", npz_case(spacing=None), r"spacing\.npy is missing", {}),
    ("missing-version", npz_case(version=None), r"version\.npy is missing", {}),
    ("wrong-version", npz_case(version=npy(np.array(2, np.int64))), r"version.*not 1", {}),
    ("float-version", npz_case(version=npy(np.array(1.0))), r"version", {}),
    ("3d-heights", npz_case(heights=npy(np.zeros((2, 3, 4)))), r"2-D float", {}),
    ("int-heights", npz_case(heights=npy(np.zeros((3, 4), np.int32))), r"2-D float", {}),
    ("inf-heights", npz_case(heights=npy(np.full((3, 4), np.inf))), r"inf", {}),
    ("spacing-shape", npz_case(spacing=npy(np.array([1e-6, 1e-6, 1e-6]))), r"spacing must be two floats", {}),
    ("spacing-int", npz_case(spacing=npy(np.array([1, 1]))), r"spacing must be two floats", {}),
    ("spacing-negative", npz_case(spacing=npy(np.array([-1e-6, 1e-6]))), r"dx must be a positive", {}),
    ("meta-not-json", npz_case(meta=npy(np.array("{not json"))), r"meta is not valid JSON", {}),
    ("meta-deeply-nested", npz_case(meta=npy(np.array("[" * 200_000))), r"meta is not valid JSON", {}),
    ("meta-json-list", npz_case(meta=npy(np.array("[1, 2]"))), r"must be an object", {}),
    ("meta-bytes", npz_case(meta=npy(np.array(b"{}"))), r"unicode string", {}),
    ("npy-bad-magic", npz_case(heights=b"not an npy file at all"), r"heights\.npy is not a valid", {}),
    ("npy-huge-shape", npz_case(heights=_npy_declaring((100_000, 100_000))), r"header declares", {}),
    ("npy-absurd-shape", npz_case(heights=_npy_declaring((10**12, 10**12))), r"header declares", {}),
    ("npy-negative-shape", npz_case(heights=_npy_declaring((-2, 2))), r"heights\.npy", {}),
    (
        "npy-header-unclosed",
        npz_case(heights=raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,", b"")),
        r"heights\.npy is not a valid",
        {},
    ),
    (
        "npy-header-syntax",
        npz_case(heights=raw_npy("{'descr': '<,8', 'fortran_order': False, 'shape': (2,), }", b"")),
        r"heights\.npy is not a valid",
        {},
    ),
    (
        "npy-header-bytes-key",
        npz_case(spacing=raw_npy("{'descr': '<f8', 'fortran_order': False, b'shape': (2,)}", bytes(16))),
        r"spacing\.npy is not a valid",
        {},
    ),
    ("npy-header-not-dict", npz_case(heights=raw_npy("[1, 2, 3]", b"")), r"heights\.npy is not a valid", {}),
    (
        "meta-beyond-unicode",
        npz_case(
            meta=raw_npy(
                "{'descr': '<U2', 'fortran_order': False, 'shape': (), }", struct.pack("<II", ord("{"), 0x28000000)
            )
        ),
        r"U\+10FFFF",
        {},
    ),
    ("npy-short-data", npz_case(heights=npy(heights())[:-8]), r"heights\.npy", {}),
    ("npy-declared-huge-in-zip", _declared_huge_in_zip, r"declares 2147483648 bytes", {}),
    ("too-many-points", npz_case(), r"77 points, more than the limit of 50", {"max_points": 50}),
    ("too-many-members", _too_many, r"members", {}),
    ("member-dotdot", lambda t: _write(t, _zip_bytes({"../heights.npy": b"x"})), r"'\.\.'", {}),
    ("not-a-zip", lambda t: _write(t, b"\x93NUMPY" + bytes(200)), r"not a readable zip", {}),
    ("empty-file", lambda t: _write(t, b""), r"not a readable zip", {}),
    ("nonexistent", lambda t: t / "nothing.npz", r"no such file", {}),
]


def _zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(zipfile.ZipInfo(k), v)
    return buf.getvalue()


@pytest.mark.parametrize("builder, pattern, kwargs", [c[1:] for c in NPZ_HOSTILE], ids=[c[0] for c in NPZ_HOSTILE])
def test_npz_hostile_files(tmp_path, builder, pattern, kwargs):
    path = builder(tmp_path)
    tracemalloc.start()
    try:
        err = assert_format_error(path, lambda: bx.read_npz(path, **kwargs), pattern)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(err) is bx.ScanFormatError
    assert peak < 50 * MB, f"peak memory {peak / MB:.1f} MB"


def test_npz_huge_header_helper_is_well_formed():
    # the header of the hostile case parses: only the data size gives it away
    f = io.BytesIO(_npy_declaring((100_000, 100_000)))
    assert np.lib.format.read_magic(f) == (1, 0)
    assert np.lib.format.read_array_header_1_0(f)[0] == (100_000, 100_000)


NPY_ALPHABET = b"0123456789(),' <>fiubUO|-[]{}:\x00\xff"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    member=st.sampled_from(sorted(good_members())),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "truncate"]), st.integers(0, 2**12), st.integers(0, 255), st.booleans()
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_npz_members(tmp_path, member, ops):
    """Mutated .npy members (mostly their headers) inside a sound zip: a Scan or a ScanFormatError."""
    b = bytearray(good_members()[member])
    for op, pos, val, in_header in ops:
        i = pos % (min(len(b), 128) if in_header else len(b) + 1) if b else 0
        ch = NPY_ALPHABET[val % len(NPY_ALPHABET)] if val < 200 else val
        if op == "set" and i < len(b):
            b[i] = ch
        elif op == "insert":
            b[i:i] = bytes([ch])
        elif op == "truncate":
            del b[i:]
    path = npz_case(**{member[:-4]: bytes(b)})(tmp_path)
    try:
        scan = bx.read_npz(path)
    except bx.ScanFormatError as e:
        assert str(path) in str(e)
        return
    assert scan.heights.ndim == 2 and scan.heights.dtype.kind == "f" and scan.dx > 0


# ----------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------


def test_png_8bit_scaled_to_unit_interval(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(gray8()).save(path)
    scan = bx.read_image(path, pixel_size_m=2e-6)
    assert scan.heights.dtype == np.float64
    assert np.array_equal(scan.heights, gray8() / 255.0)
    assert scan.dx == scan.dy == 2e-6
    assert scan.meta["z_unit"] == "intensity"
    assert scan.meta["format"] == "image"
    assert scan.meta["pixel_size_from"] == "argument"
    assert scan.meta["image_mode"] == "L"


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_16bit_scaled_to_unit_interval(tmp_path, suffix):
    a = np.array([[0, 1, 32768], [40000, 65534, 65535]], dtype=np.uint16)
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(a).save(path)
    scan = bx.read_image(path, pixel_size_m=1e-6)
    np.testing.assert_array_equal(scan.heights, a / 65535.0)
    assert scan.heights.max() == 1.0 and scan.heights.min() == 0.0


def test_rgb_converted_to_luminance(tmp_path):
    g = gray8()
    path = tmp_path / "rgb.png"
    Image.fromarray(np.dstack([g, g, g])).save(path)
    scan = bx.read_image(path, pixel_size_m=1e-6)
    assert scan.shape == g.shape
    assert np.array_equal(scan.heights, g / 255.0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_nan(tmp_path, mode):
    g = gray8()
    alpha = np.full(g.shape, 255, np.uint8)
    alpha[0, :3] = 0
    alpha[4, 7] = 0
    alpha[2, 2] = 1  # almost transparent is still measured
    arr = np.dstack([g, g, g, alpha]) if mode == "RGBA" else np.dstack([g, alpha])
    path = tmp_path / "a.png"
    Image.fromarray(arr, mode=mode).save(path)
    scan = bx.read_image(path, pixel_size_m=1e-6)
    assert np.array_equal(np.isnan(scan.heights), alpha == 0)
    assert np.array_equal(scan.heights[alpha > 0], (g / 255.0)[alpha > 0])


def test_pixel_size_required_without_physical_resolution(tmp_path):
    path = tmp_path / "nodpi.png"
    Image.fromarray(gray8()).save(path)
    with pytest.raises(bx.ParameterError) as err:
        bx.read_image(path)
    assert "pixel_size_m" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(bx.ParameterError, match="pixel_size_m"):
        bx.read_scan(path)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_pixel_size_from_file_resolution(tmp_path, suffix):
    path = tmp_path / f"dpi{suffix}"
    Image.fromarray(gray8()).save(path, dpi=(8128, 8128))  # 8128 dpi = 3.125 um pixels
    scan = bx.read_image(path)
    assert scan.dx == pytest.approx(3.125e-6, rel=1e-6)
    assert scan.dy == scan.dx
    assert scan.meta["pixel_size_from"] == "file"
    # an explicit argument wins over the file
    assert bx.read_image(path, pixel_size_m=5e-6).dx == 5e-6


def test_pixel_size_from_tiff_centimetre_resolution(tmp_path):
    path = tmp_path / "cm.tif"
    Image.fromarray(gray8()).save(path, resolution_unit="cm", x_resolution=3200, y_resolution=3200)
    assert bx.read_image(path).dx == pytest.approx(3.125e-6, rel=1e-6)


@pytest.mark.parametrize(
    "suffix, save_kw",
    [
        (".png", {"dpi": (72, 72)}),
        (".tif", {"dpi": (72, 72)}),
        (".png", {"dpi": (96, 96)}),
        (".png", {"dpi": (8128, 4064)}),  # non-square pixels: not a calibration we can use
        (".tif", {"resolution_unit": "none", "x_resolution": 8128, "y_resolution": 8128}),  # no physical unit
    ],
)
def test_untrusted_file_resolutions(tmp_path, suffix, save_kw):
    path = tmp_path / f"res{suffix}"
    Image.fromarray(gray8()).save(path, **save_kw)
    with pytest.raises(bx.ParameterError, match="pixel_size_m"):
        bx.read_image(path)


@pytest.mark.parametrize("bad", [0, -1e-6, float("nan"), float("inf"), "abc", [1e-6]])
def test_bad_pixel_size_argument(tmp_path, bad):
    path = tmp_path / "g.png"
    Image.fromarray(gray8()).save(path)
    with pytest.raises(bx.ParameterError, match="pixel_size_m"):
        bx.read_image(path, pixel_size_m=bad)


def _png_bytes(arr=None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray8() if arr is None else arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR (with a correct CRC) declares width x height; no pixel data follows."""
    raw = bytearray(_png_bytes())
    assert raw[12:16] == b"IHDR"
    struct.pack_into(">II", raw, 16, width, height)
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])))
    return bytes(raw)


def _gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray8()).save(buf, format="GIF")
    return buf.getvalue()


def _bmp_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray8()).save(buf, format="BMP")
    return buf.getvalue()


def _noisy_png() -> bytes:
    """Incompressible 64 x 64 PNG, so that cutting it leaves the pixel data incomplete."""
    return _png_bytes(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8))


def _bad_ihdr_crc() -> bytes:
    raw = bytearray(_png_bytes())
    raw[29] ^= 0xFF  # first byte of the IHDR chunk's CRC
    return bytes(raw)


# (id, suffix, file bytes, regex for the message, read_image keywords)
IMAGE_HOSTILE = [
    ("truncated-png", ".png", lambda: _noisy_png()[:2000], r"not a readable image.*truncated", {}),
    ("png-signature-only", ".png", lambda: _png_bytes()[:8], r"not a readable image", {}),
    ("png-bad-ihdr-crc", ".png", _bad_ihdr_crc, r"not a readable image", {}),
    ("random-bytes", ".png", lambda: np.random.default_rng(5).bytes(2000), r"not a readable image", {}),
    ("empty", ".tif", lambda: b"", r"not a readable image", {}),
    ("text", ".tiff", lambda: b"II*\x00 this is not really a tiff", r"not a readable image", {}),
    ("gif-named-png", ".png", _gif_bytes, r"not a readable image", {}),
    ("bmp-named-tif", ".tif", _bmp_bytes, r"not a readable image", {}),
    (
        "huge-dimensions",
        ".png",
        lambda: _png_declaring(5000, 5000),
        r"image size 5000 x 5000 exceeds the limit of 1000000",
        {"max_points": 10**6},
    ),
    ("huge-dimensions-default-limit", ".png", lambda: _png_declaring(100_000, 100_000), r"exceeds", {}),
    ("huge-dimensions-max", ".png", lambda: _png_declaring(2**31 - 1, 2**31 - 1), r"exceeds", {}),
]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.parametrize(
    "suffix, make, pattern, kwargs", [c[1:] for c in IMAGE_HOSTILE], ids=[c[0] for c in IMAGE_HOSTILE]
)
def test_image_hostile_files(tmp_path, suffix, make, pattern, kwargs):
    path = tmp_path / f"hostile{suffix}"
    path.write_bytes(make())
    tracemalloc.start()
    try:
        assert_format_error(path, lambda: bx.read_image(path, pixel_size_m=1e-6, **kwargs), pattern)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * MB, f"peak memory {peak / MB:.1f} MB"


def test_noisy_png_reads_whole(tmp_path):
    # guard for the truncation case: the untruncated file is fine and much longer than the cut
    path = tmp_path / "noisy.png"
    path.write_bytes(_noisy_png())
    assert path.stat().st_size > 4000
    assert bx.read_image(path, pixel_size_m=1e-6).shape == (64, 64)


def test_image_max_points_limit(tmp_path):
    path = tmp_path / "g.png"
    path.write_bytes(_png_bytes())  # 6 x 9 = 54 pixels
    assert bx.read_image(path, pixel_size_m=1e-6, max_points=54).shape == (6, 9)
    assert_format_error(
        path, lambda: bx.read_image(path, pixel_size_m=1e-6, max_points=53), r"image size 9 x 6 exceeds the limit of 53"
    )


def test_image_nonexistent(tmp_path):
    path = tmp_path / "missing.png"
    assert_format_error(path, lambda: bx.read_image(path, pixel_size_m=1e-6), r"no such file")


def _image_variants() -> list[bytes]:
    out = [_png_bytes(), _png_bytes(dpi=(8128, 8128))]
    for arr, kw in [(gray8().astype(np.uint16) * 300, {}), (gray8(), {"compression": "tiff_lzw"})]:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="TIFF", **kw)
        out.append(buf.getvalue())
    return out


IMAGE_BASES = _image_variants()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.integers(0, len(IMAGE_BASES) - 1),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["set", "truncate", "insert"]), st.integers(0, 2**16), st.binary(min_size=1, max_size=8)
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_fuzz_images(tmp_path, base, ops):
    b = bytearray(IMAGE_BASES[base])
    for op, pos, arg in ops:
        if not b:
            break
        i = pos % len(b)
        if op == "set":
            b[i] = arg[0]
        elif op == "truncate":
            del b[i:]
        else:
            b[i:i] = arg
    path = tmp_path / ("fuzz.png" if base < 2 else "fuzz.tif")
    path.write_bytes(bytes(b))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about some corrupt TIFF tags
            scan = bx.read_image(path, pixel_size_m=1e-6)
    except bx.ScanFormatError as e:
        assert str(path) in str(e)
        return
    assert scan.heights.ndim == 2 and not np.isinf(scan.heights).any()
