"""Resource exhaustion: decompression bombs within the point limit, and legitimate large scans.

The ingest path (`read_scan` -> `preprocess` -> `describe`) runs in a child
process whose peak resident memory (``VmHWM``, read in the child when it is
done) must stay under `PEAK_MEMORY_MB` (1.5 GB) for every file, accepted or
refused; the outcome must be a processed scan or a clean `BallistixError`
naming the file. On 0.2.0 the 12 kB PNG bomb took 10.5 GB, the 760 kB x3p of
zeros 1.9-3.6 GB (by spacing), the 780 kB npz of zeros 2.4 GB.

The bombs are written without ever holding their data in this process (zip
members streamed in chunks). Each child runs a few seconds. The unit tests
below them check the budget's pieces in process, on small inputs: the
block-averaged reading gives exactly the block means of the whole reading, for
every format and chunking, and normal scans are not touched.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_io_formats import IMAGE_HOSTILE, NPZ_HOSTILE
from test_io_x3p import HOSTILE, main_xml, pack_bits_lsb_first, simple_x3p

import ballistix as bx
import ballistix.io.formats as formats_mod
import ballistix.io.x3p as x3p_mod
from ballistix._limits import (
    MAX_FIELD_MM,
    MAX_WORKING_POINTS,
    PEAK_MEMORY_MB,
    block_factor,
    block_mean,
    block_mean_rows,
)
from ballistix.features.preprocessing import find_breech_face

MB = 1024 * 1024
N = 10_000  # the bombs: 10,000 x 10,000 points, 1e8 = MAX_POINTS
# a child that goes wrong gets a MemoryError at this address-space size instead of taking the machine
# (a healthy run peaks at ~1.7 GB of address space for ~1.1 GB resident)
_GUARD_BYTES = 6 * 1024 * MB

CHILD = r"""
import json, resource, sys, warnings
guard = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (guard, guard))
import numpy as np
import ballistix as bx

results = []
for job in json.loads(sys.argv[1]):
    r = {"path": job["path"], "warnings": []}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if job.get("memory"):  # a scan made in memory: the simulator's, upsampled by repetition
                    gun = bx.datasets.make_firearm("M1", resolution="full")
                    raw = bx.datasets.fire(gun, 0, resolution="full")
                    rep = job["memory"]
                    scan = bx.Scan(np.repeat(np.repeat(raw.heights, rep, 0), rep, 1), raw.dx / rep, raw.dy / rep,
                                   {"source": job["path"]})
                else:
                    scan = getattr(bx, job.get("reader", "read_scan"))(job["path"], **job.get("kwargs", {}))
                r["read_shape"], r["read_spacing_um"] = list(scan.shape), scan.dx * 1e6
                r["downsampled"] = scan.meta.get("downsampled")
                r["outcome"] = "read"
                if job.get("process", True):
                    proc = bx.preprocess(scan)
                    vec = bx.describe(proc)
                    r["outcome"] = "processed"
                    r["processed_shape"], r["processed_spacing_um"] = list(proc.shape), proc.dx * 1e6
                    r["steps"] = [st["step"] for st in proc.meta["processing"]]
                    r["segmentation"] = proc.meta["quality"]["segmentation"]["status"]
                    r["descriptor_finite"] = bool(np.isfinite(vec).all())
                    if job.get("descriptor"):
                        r["descriptor"] = [float(v) for v in vec]
            finally:
                r["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
    except bx.BallistixError as e:
        r["outcome"], r["message"] = type(e).__name__, str(e)
        r["in_family"] = True
    except MemoryError:
        r["outcome"] = "MemoryError"
    results.append(r)
# VmHWM: the peak of this program's own memory. (ru_maxrss is no good here: Linux carries the parent's
# peak across exec, so a child of a large pytest process would report the parent's.)
try:
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"results": results, "peak_rss_mb": peak}))
"""


def run_child(jobs: list[dict], timeout: float = 240) -> tuple[list[dict], float]:
    """Run the ingest path on ``jobs`` in a fresh interpreter (this very ballistix); (results, peak RSS in MB)."""
    env = dict(os.environ)
    here = str(Path(bx.__file__).resolve().parents[1])
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(jobs), str(_GUARD_BYTES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["results"], out["peak_rss_mb"]


def assert_clean(r: dict, path) -> None:
    """Processed, or a ballistix error naming the file: never a MemoryError or another exception."""
    assert r["outcome"] in ("processed", "read") or r.get("in_family"), r
    if r["outcome"] not in ("processed", "read"):
        assert str(path) in r["message"], r["message"]


# ----------------------------------------------------------------------------
# the bombs, written in chunks
# ----------------------------------------------------------------------------


@functools.lru_cache
def _zeros_md5(nbytes: int) -> str:
    md5 = hashlib.md5()
    chunk = bytes(8 * MB)
    for start in range(0, nbytes, len(chunk)):
        md5.update(chunk[: min(len(chunk), nbytes - start)])
    return md5.hexdigest()


def _zeros_member(zf: zipfile.ZipFile, name: str, nbytes: int, header: bytes = b"") -> None:
    """Write ``header`` then ``nbytes`` zero bytes as a deflated member, 8 MB at a time."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = bytes(8 * MB)
    with zf.open(info, "w") as f:
        f.write(header)
        for start in range(0, nbytes, len(chunk)):
            f.write(chunk[: min(len(chunk), nbytes - start)])


def x3p_of_zeros(path: Path, n: int = N, increment: str = "1e-06") -> Path:
    """A valid x3p of n x n float64 zeros (about 780 kB for n = 10,000), main.xml from the x3p test helpers."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        _zeros_member(zf, "bindata/data.bin", n * n * 8)
        xml = main_xml(size_x=n, size_y=n, dx=increment, dy=increment, data_md5=_zeros_md5(n * n * 8)).encode()
        zf.writestr("main.xml", xml)
        zf.writestr("md5checksum.hex", hashlib.md5(xml).hexdigest() + "\n")
    return path


def npz_of_zeros(path: Path, n: int = N, spacing_m: float = 1e-6) -> Path:
    """A ballistix .npz of n x n float64 zeros (heights.npy streamed)."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (n, n)})

    def npy(a):
        b = io.BytesIO()
        np.save(b, a, allow_pickle=False)
        return b.getvalue()

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        _zeros_member(zf, "heights.npy", n * n * 8, header=head.getvalue())
        zf.writestr("spacing.npy", npy(np.array([spacing_m, spacing_m])))
        zf.writestr("meta.npy", npy(np.array("{}")))
        zf.writestr("version.npy", npy(np.array(1, np.int64)))
    return path


def png_bomb(path: Path, dpi: float, n: int = N) -> Path:
    """A 1-bit n x n PNG of zeros (12 kB for n = 10,000) with a resolution tag of ``dpi``."""
    Image.new("1", (n, n), 0).save(path, dpi=(dpi, dpi))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_builders_write_what_they_say(tmp_path):
    p = png_bomb(tmp_path / "b.png", 254)
    assert p.stat().st_size < 20_000
    with Image.open(p) as img:
        assert img.size == (N, N) and img.mode == "1" and round(img.info["dpi"][0]) == 254
    small = x3p_of_zeros(tmp_path / "z.x3p", n=40)
    s = bx.read_x3p(small)
    assert s.shape == (40, 40) and not s.heights.any() and s.meta["x3p"]["checksums"]["point_data"] == "verified"
    s = bx.read_npz(npz_of_zeros(tmp_path / "z.npz", n=30, spacing_m=2e-6))
    assert s.shape == (30, 30) and s.dx == 2e-6 and not s.heights.any()


# ----------------------------------------------------------------------------
# the ingest path in a child: peak RSS under the ceiling
# ----------------------------------------------------------------------------


def test_png_bomb_with_a_metre_wide_field_is_refused_before_decoding(tmp_path):
    # 254 dpi = 100 um pixels: the 12 kB file claims a 1 m x 1 m field (0.2.0: 10.5 GB, MemoryError)
    path = png_bomb(tmp_path / "bomb.png", 254)
    (r,), peak = run_child([{"path": str(path)}])
    assert r["outcome"] == "ScanFormatError", r
    assert_clean(r, path)
    assert "field of view 1000 x 1000 mm" in r["message"] and "10000 x 10000 points" in r["message"]
    assert peak < 400, f"refusing took {peak:.0f} MB: the pixels were decoded"
    assert peak < PEAK_MEMORY_MB


def test_png_bomb_with_a_plausible_field_is_block_averaged_as_read(tmp_path):
    # 25,400 dpi = 1 um pixels: a 10 mm field, plausible; 1e8 pixels are 11 x the working grid
    path = png_bomb(tmp_path / "fine.png", 25_400)
    (r,), peak = run_child([{"path": str(path)}])
    assert_clean(r, path)
    assert r["read_shape"] == [2500, 2500] and r["read_spacing_um"] == pytest.approx(4.0)
    d = r["downsampled"]
    assert d["factor"] == 4 and d["from_shape"] == [N, N] and d["max_working_points"] == MAX_WORKING_POINTS
    assert any(c == "ScanFormatWarning" and "block-averaged 4 x 4" in m and str(path) in m for c, m in r["warnings"])
    # zeros hold no primer: refused by segmentation, cleanly
    assert r["outcome"] == "SegmentationError"
    assert peak < PEAK_MEMORY_MB, f"peak RSS {peak:.0f} MB"


@pytest.fixture(scope="module")
def x3p_zeros_20um(tmp_path_factory):
    return x3p_of_zeros(tmp_path_factory.mktemp("bomb") / "zeros-20um.x3p", increment="2e-05")


@pytest.mark.slow
@pytest.mark.parametrize("increment, refused", [("1e-06", False), ("2e-05", True)])
def test_x3p_of_zeros(tmp_path, x3p_zeros_20um, increment, refused):
    # 760 kB: 10 mm at 1 um is read block-averaged; 200 mm at 20 um is refused unread (0.2.0: 1.9 / 3.6 GB)
    path = x3p_zeros_20um if refused else x3p_of_zeros(tmp_path / "zeros.x3p", increment=increment)
    assert path.stat().st_size < 1_000_000
    (r,), peak = run_child([{"path": str(path)}])
    assert_clean(r, path)
    if refused:
        assert r["outcome"] == "ScanFormatError" and "field of view 200 x 200 mm" in r["message"]
        assert peak < 400, f"refusing took {peak:.0f} MB: the points were decoded"
    else:
        assert r["downsampled"]["factor"] == 4 and r["read_shape"] == [2500, 2500]
        assert r["outcome"] == "SegmentationError"
    assert peak < PEAK_MEMORY_MB, f"peak RSS {peak:.0f} MB"


@pytest.mark.slow
def test_x3p_of_zeros_read_with_a_unit_given_is_refused_by_preprocess(x3p_zeros_20um):
    # units="m": read as given, no questions asked (but block-averaged); preprocess refuses the field
    path = x3p_zeros_20um
    (r,), peak = run_child([{"path": str(path), "kwargs": {"units": "m"}}])
    assert r["outcome"] == "ParameterError" and "larger than any cartridge case" in r["message"], r
    assert_clean(r, path)
    assert r["downsampled"]["factor"] == 4
    assert peak < PEAK_MEMORY_MB, f"peak RSS {peak:.0f} MB"


@pytest.mark.slow
def test_npz_of_zeros_is_block_averaged_as_read(tmp_path):
    # 0.2.0 held the member, a copy and the array: 2.4 GB before preprocessing began
    path = npz_of_zeros(tmp_path / "zeros.npz")
    wide = npz_of_zeros(tmp_path / "wide.npz", spacing_m=1e-4)
    (r, w), peak = run_child([{"path": str(path), "process": False}, {"path": str(wide)}])
    assert r["outcome"] == "read" and r["read_shape"] == [2500, 2500] and r["downsampled"]["factor"] == 4
    assert w["outcome"] == "ScanFormatError" and "field of view 1000 x 1000 mm" in w["message"]
    assert_clean(w, wide)
    assert peak < 400, f"peak RSS {peak:.0f} MB: the heights were held whole"


@pytest.mark.slow
def test_legitimate_large_scan_is_processed_within_the_ceiling(tmp_path):
    # a primer scanned at 1.04 um: the simulator's full-resolution scan (3.125 um, 1200 px) with every
    # point repeated 3 x 3: 3600 x 3600 points, 13 M, a 3.75 mm field (0.2.0: 4000 x 4000 at 1 um took
    # 1.9 GB and 83 s)
    gun = bx.datasets.make_firearm("M1", resolution="full")
    raw = bx.datasets.fire(gun, 0, resolution="full")
    fine = bx.Scan(np.repeat(np.repeat(raw.heights, 3, 0), 3, 1), raw.dx / 3, raw.dy / 3, {})
    path = bx.write_x3p(fine, tmp_path / "fine.x3p")
    del fine
    # and the same scan handed to preprocess in memory, not through a reader
    (r, m), peak = run_child(
        [{"path": str(path), "descriptor": True}, {"path": "in-memory", "memory": 3, "descriptor": True}]
    )
    assert r["outcome"] == "processed" and r["segmentation"] == "ok", r
    assert r["downsampled"]["factor"] == 2 and r["read_spacing_um"] == pytest.approx(2 * 3.125 / 3)
    assert r["processed_spacing_um"] == pytest.approx(6.25) and r["descriptor_finite"]
    assert "block_average" not in r["steps"]  # 2.08 um: not finer than a quarter of 6.25 um
    # in memory: 13 M points, and 3 x 3 of them fit in half the output spacing: back to 3.125 um
    assert m["outcome"] == "processed" and m["segmentation"] == "ok", m
    assert m["steps"][0] == "block_average"
    assert peak < PEAK_MEMORY_MB, f"peak RSS {peak:.0f} MB"
    # and both describe the very surface of the 3.125 um scan they were made from (another shot of the
    # same gun: about 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = bx.describe(bx.preprocess(raw))

    def cos(v):
        v = np.asarray(v)
        return float(v @ ref / np.linalg.norm(v) / np.linalg.norm(ref))

    assert cos(r["descriptor"]) > 0.99 and cos(m["descriptor"]) > 0.99


def test_hostile_files_stay_under_the_ceiling(tmp_path):
    # every hostile x3p, npz and image file of the format tests, read (and processed, were one read) in
    # one child: each a ScanFormatError naming the file, and the whole run under the ceiling
    jobs = []
    for name, builder, _pattern, kwargs in HOSTILE:
        d = tmp_path / f"x3p-{name}"
        d.mkdir()
        jobs.append({"path": str(builder(d)), "reader": "read_x3p", "kwargs": kwargs})
    for name, builder, _pattern, kwargs in NPZ_HOSTILE:
        d = tmp_path / f"npz-{name}"
        d.mkdir()
        jobs.append({"path": str(builder(d)), "reader": "read_npz", "kwargs": kwargs})
    for name, suffix, make, _pattern, kwargs in IMAGE_HOSTILE:
        p = tmp_path / f"image-{name}{suffix}"
        p.write_bytes(make())
        jobs.append({"path": str(p), "reader": "read_image", "kwargs": {"pixel_size_m": 1e-6, **kwargs}})
    results, peak = run_child(jobs)
    assert len(results) == len(HOSTILE) + len(NPZ_HOSTILE) + len(IMAGE_HOSTILE)
    for job, r in zip(jobs, results):
        assert r["outcome"] == "ScanFormatError", (job, r)
        assert_clean(r, job["path"])
    assert peak < PEAK_MEMORY_MB, f"peak RSS {peak:.0f} MB"


# ----------------------------------------------------------------------------
# the budget's pieces, in process
# ----------------------------------------------------------------------------


def test_budget_constants_hold_a_case_head_at_the_output_spacing():
    # the working grid holds a whole 12 mm head finer than the 6.25 um output; the field limit is more
    # than any cartridge-case head (.50 BMG 20.4 mm, 12-gauge about 22.5 mm)
    assert (12e-3 / 6.25e-6) ** 2 < MAX_WORKING_POINTS
    assert 22.5 < MAX_FIELD_MM < 100
    assert MAX_WORKING_POINTS <= x3p_mod.MAX_POINTS


@pytest.mark.parametrize(
    "ny, nx, limit",
    [
        (10, 10, 100),
        (10, 10, 99),
        (N, N, MAX_WORKING_POINTS),
        (3, 5000, 1000),
        (4001, 3999, 4_000_000),
        (7, 7, 1),
        (2, 10**8 // 2, 1000),
    ],
)
def test_block_factor_is_the_smallest_that_fits(ny, nx, limit):
    k = block_factor(ny, nx, limit)
    assert 1 <= k <= min(ny, nx)
    assert (ny // k) * (nx // k) <= limit or k == min(ny, nx)  # an absurdly thin grid keeps a row
    assert k == 1 or (ny // (k - 1)) * (nx // (k - 1)) > limit
    assert block_factor(ny, nx, None) == 1


def test_block_mean_is_nan_aware_and_drops_partial_blocks():
    z = np.arange(7 * 9, dtype=np.float64).reshape(7, 9)
    z[0, 0] = np.nan  # block (0, 0): 3 of 4 measured -> mean of those
    z[2:4, 2] = np.nan  # block (1, 1): 2 of 4 measured -> still a point (half)
    z[4:6, 4:6] = np.nan  # block (2, 2): nothing -> NaN
    z[4, 6] = z[5, 6] = z[4, 7] = np.nan  # block (2, 3): 1 of 4 -> NaN
    out = block_mean(z, 2)
    assert out.shape == (3, 4)  # the 7th row and 9th column are dropped
    assert out[0, 0] == pytest.approx((1 + 9 + 10) / 3)
    assert out[1, 1] == pytest.approx((21 + 30) / 2)
    assert np.isnan(out[2, 2]) and np.isnan(out[2, 3])
    assert out[0, 1] == pytest.approx(np.mean([2, 3, 11, 12]))
    # chunked as a reader feeds it: any multiple of k rows per chunk gives the very same bits
    for rows in (2, 4, 6):
        chunks = (z[r : r + rows] for r in range(0, 7, rows))
        assert block_mean_rows(chunks, 7, 9, 2).tobytes() == out.tobytes()


def _x3p_grid(ny=23, nx=37, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.normal(0, 2e-6, (ny, nx))
    h[rng.random((ny, nx)) < 0.2] = np.nan
    return h


@pytest.mark.parametrize("chunk_rows", [None, "k"])
@pytest.mark.parametrize("k_limit", [(2, 200), (3, 100)])
def test_x3p_block_averaged_reading_is_the_block_mean_of_the_whole(tmp_path, monkeypatch, chunk_rows, k_limit):
    k, limit = k_limit
    h = _x3p_grid()
    path = simple_x3p(tmp_path / "g.x3p", h, dx="1e-06", dy="1e-06")
    whole = bx.read_x3p(path, max_working_points=None)
    if chunk_rows == "k":  # one block row per chunk: chunk edges everywhere, the mask's bits unaligned
        monkeypatch.setattr(x3p_mod, "rows_per_chunk", lambda nx, k, b: k)
    with pytest.warns(bx.ScanFormatWarning, match=rf"g\.x3p.*block-averaged {k} x {k}"):
        red = bx.read_x3p(path, max_working_points=limit)
    assert red.heights.tobytes() == block_mean(whole.heights, k).tobytes()
    assert (red.dx, red.dy) == (k * 1e-6, k * 1e-6)
    assert red.meta["downsampled"]["factor"] == k and red.meta["downsampled"]["from_shape"] == [23, 37]
    assert red.meta["x3p"]["checksums"]["point_data"] == "verified"
    # the first point is the centre of the first block: the offsets move by (k - 1) / 2 steps
    assert red.meta["x3p"]["offset_m"][:2] == pytest.approx([(k - 1) / 2 * 1e-6] * 2)


@pytest.mark.parametrize("code, dtype", [("I", "<i2"), ("L", "<i4"), ("F", "<f4")])
def test_x3p_block_averaged_reading_with_types_and_a_valid_mask(tmp_path, monkeypatch, code, dtype):
    rng = np.random.default_rng(3)
    ny, nx = 21, 13  # 13 columns: a block row's bits start mid-byte
    raw = rng.integers(-500, 500, (ny, nx)).astype(dtype)
    valid = rng.random((ny, nx)) > 0.3
    data, vbits = raw.tobytes(), pack_bits_lsb_first(valid)
    xml = main_xml(
        size_x=nx,
        size_y=ny,
        data_type=code,
        cz_increment="2e-09",
        cz_offset="1e-06",
        data_md5=hashlib.md5(data).hexdigest(),
        valid_link="bindata/valid.bin",
        valid_md5=hashlib.md5(vbits).hexdigest(),
    )
    from test_io_x3p import build_x3p

    path = build_x3p(tmp_path / "t.x3p", xml, {"bindata/data.bin": data, "bindata/valid.bin": vbits})
    whole = bx.read_x3p(path, max_working_points=None)
    monkeypatch.setattr(x3p_mod, "rows_per_chunk", lambda nx, k, b: k)
    with pytest.warns(bx.ScanFormatWarning, match="block-averaged 2 x 2"):
        red = bx.read_x3p(path, max_working_points=ny * nx // 4)
    assert red.heights.tobytes() == block_mean(whole.heights, 2).tobytes()
    assert red.meta["x3p"]["checksums"] == whole.meta["x3p"]["checksums"]


def test_x3p_block_averaged_reading_still_checks_the_data(tmp_path):
    h = _x3p_grid()
    bad = simple_x3p(tmp_path / "bad.x3p", h, data_md5="0" * 32)
    with pytest.raises(bx.ChecksumError, match="bad.x3p.*point data"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bx.read_x3p(bad, max_working_points=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = bx.read_x3p(bad, strict=False, max_working_points=100)
    assert s.meta["x3p"]["checksums"]["point_data"] == "mismatch"
    said = " | ".join(str(w.message) for w in caught if w.category is bx.ScanFormatWarning)
    assert "MD5 checksum of the point data" in said and "block-averaged 3 x 3" in said


def test_x3p_field_limit(tmp_path):
    h = _x3p_grid(ny=8, nx=600)
    p = simple_x3p(tmp_path / "wide.x3p", h, dx="5e-05", dy="5e-05")  # 600 steps of 50 um: 30 mm
    with pytest.raises(
        bx.ScanFormatError,
        match=r"wide\.x3p: field of view 30 x 0\.4 mm \(600 x 8 points at "
        r"50 um\).*max_field_mm",
    ):
        bx.read_x3p(p)
    assert bx.read_x3p(p, max_field_mm=31).shape == (8, 600)
    assert bx.read_x3p(p, max_field_mm=None).shape == (8, 600)
    assert bx.read_x3p(p, units="m").shape == (8, 600)  # a unit given: read as given
    for bad in (0, -1, float("nan"), "x", True):
        with pytest.raises(bx.ParameterError, match="max_field_mm"):
            bx.read_x3p(p, max_field_mm=bad)
    for bad in (0, 2.5, True, "9"):
        with pytest.raises(bx.ParameterError, match="max_working_points"):
            bx.read_scan(p, max_working_points=bad)


@pytest.mark.parametrize("mode", ["L", "I;16", "F", "RGBA"])
def test_image_block_averaged_reading_is_the_block_mean_of_the_whole(tmp_path, monkeypatch, mode):
    rng = np.random.default_rng(5)
    if mode == "RGBA":
        arr = rng.integers(0, 256, (19, 26, 4), dtype=np.uint8)
        arr[..., 3] = np.where(rng.random((19, 26)) < 0.25, 0, 255)
        img = Image.fromarray(arr, "RGBA")
    elif mode == "F":
        img = Image.fromarray(rng.normal(0, 3, (19, 26)).astype(np.float32), "F")
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (19, 26)).astype(np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (19, 26), dtype=np.uint8))
    path = tmp_path / ("g.tif" if mode == "F" else "g.png")
    img.save(path)
    whole = bx.read_image(path, pixel_size_m=1e-6, max_working_points=None)
    monkeypatch.setattr(formats_mod, "rows_per_chunk", lambda nx, k, b: k)
    with pytest.warns(bx.ScanFormatWarning, match=r"g\.(png|tif).*block-averaged 3 x 3"):
        red = bx.read_image(path, pixel_size_m=1e-6, max_working_points=60)
    assert red.heights.tobytes() == block_mean(whole.heights, 3).tobytes()
    assert red.dx == pytest.approx(3e-6) and red.meta["downsampled"]["from_shape"] == [19, 26]


def test_image_field_and_missing_pixel_size_are_known_before_decoding(tmp_path):
    path = png_bomb(tmp_path / "b.png", 254, n=300)  # 300 px of 100 um: 30 mm
    with pytest.raises(bx.ScanFormatError, match=r"b\.png: field of view 30 x 30 mm.*resolution tags"):
        bx.read_image(path)
    with pytest.raises(bx.ScanFormatError, match=r"field of view 3e\+04 x 3e\+04 mm.*pixel_size_m"):
        bx.read_image(path, pixel_size_m=0.1)
    assert bx.read_image(path, max_field_mm=None).shape == (300, 300)


@pytest.mark.parametrize("fortran", [False, True])
def test_npz_block_averaged_reading_is_the_block_mean_of_the_whole(tmp_path, monkeypatch, fortran):
    h = _x3p_grid(ny=22, nx=15, seed=7)
    path = bx.write_npz(
        bx.Scan(np.asfortranarray(h) if fortran else h, 1e-6, 1e-6, {"labels": {"x": 1}}), tmp_path / "g.npz"
    )
    whole = bx.read_npz(path, max_working_points=None)
    monkeypatch.setattr(formats_mod, "rows_per_chunk", lambda nx, k, b: k)
    with pytest.warns(bx.ScanFormatWarning, match=r"g\.npz.*block-averaged 2 x 2"):
        red = bx.read_npz(path, max_working_points=80)
    assert red.heights.tobytes() == block_mean(whole.heights, 2).tobytes()
    assert red.meta["labels"] == {"x": 1} and red.meta["downsampled"]["factor"] == 2


# ----------------------------------------------------------------------------
# preprocess: the working grid
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_fast():
    return bx.datasets.simulate(1, 1, seed=0, resolution="fast")[0]


@pytest.mark.parametrize("resolution", ["fast", "standard"])
def test_normal_scans_are_not_block_averaged(resolution):
    raw = bx.datasets.simulate(1, 1, seed=0, resolution=resolution)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", bx.ScanFormatWarning)
        proc = bx.preprocess(raw)
    assert [p["step"] for p in proc.meta["processing"]] == [
        "find_breech_face",
        "level",
        "remove_outliers",
        "crop",
        "bandpass",
        "resample",
    ]


def test_preprocess_block_averages_a_grid_finer_than_half_the_output(sim_fast):
    # the fast scan (12.5 um) with each point repeated 2 x 2 (6.25 um), processed to 25 um: the working
    # grid is block-averaged back to 12.5 um, and the region found is the one on the fast scan itself
    raw = sim_fast
    fine = bx.Scan(np.repeat(np.repeat(raw.heights, 2, 0), 2, 1), raw.dx / 2, raw.dy / 2, dict(raw.meta))
    ref, dref = bx.preprocess(raw, spacing_um=25, diagnostics=True)
    out, dout = bx.preprocess(fine, spacing_um=25, diagnostics=True)
    step = out.meta["processing"][0]
    assert step["step"] == "block_average" and step["result"]["factor"] == 2
    assert step["params"] == {"max_spacing_um": 12.5, "max_points": MAX_WORKING_POINTS, "min_valid": 0.5}
    assert step["result"]["origin_m"] == pytest.approx([raw.dx / 4] * 2)
    assert [p["step"] for p in out.meta["processing"][1:]] == [p["step"] for p in ref.meta["processing"]]
    assert dout["masked"].shape == raw.shape
    # the region, in the working grid's frame, is the fast scan's own (the frames coincide)
    assert dout["region"].primer_center_m == pytest.approx(dref["region"].primer_center_m, abs=1e-7)
    assert np.array_equal(dout["region"].mask, dref["region"].mask)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.heights, ref.heights, atol=1e-12, equal_nan=True)
    # the reduction adapts to the instrument's sampling, like the input spacing: a calibration fitted
    # on the coarser scans still applies to the finer one
    from ballistix.provenance import processing_signature

    assert processing_signature(out.meta["processing"]) == processing_signature(ref.meta["processing"])


def test_preprocess_block_averages_a_given_mask_with_the_scan(sim_fast):
    raw = sim_fast
    fine = bx.Scan(np.repeat(np.repeat(raw.heights, 2, 0), 2, 1), raw.dx / 2, raw.dy / 2, {})
    reg = find_breech_face(raw)
    fine_mask = np.repeat(np.repeat(reg.mask, 2, 0), 2, 1)
    out = bx.preprocess(fine, region=fine_mask, spacing_um=25)
    ref = bx.preprocess(raw, region=reg.mask, spacing_um=25)
    assert [p["step"] for p in out.meta["processing"]][:2] == ["block_average", "mask"]
    assert out.meta["processing"][1]["result"]["mask_points"] == int(reg.mask.sum())
    assert out.shape == ref.shape
    with pytest.raises(bx.ParameterError, match="region mask must be a boolean array of shape"):
        bx.preprocess(fine, region=reg.mask, spacing_um=25)  # the coarse mask does not fit the scan given


def test_preprocess_refuses_a_field_no_cartridge_case_fills():
    s = bx.Scan(np.zeros((300, 300)), 1e-4, 1e-4, {"source": "plate.x3p"})  # 30 mm
    with pytest.raises(bx.ParameterError, match=r"plate\.x3p: field of view 30 x 30 mm.*MAX_FIELD_MM"):
        bx.preprocess(s)
    with pytest.raises(bx.ParameterError, match=r"field of view 30 x 30 mm"):
        find_breech_face(s)


def test_preprocess_refuses_an_output_grid_beyond_the_budget(sim_fast):
    # 50 nm from a 12.5 um scan: tens of gigabytes of upsampled grid, refused before it is allocated
    with pytest.raises(
        bx.ParameterError,
        match=r"to 0\.05 um would give \d+ x \d+ points, more than "
        r"MAX_WORKING_POINTS",
    ):
        bx.preprocess(sim_fast, spacing_um=0.05)


def test_plot_preprocess_draws_a_block_averaged_scan_on_its_own_grid(sim_fast):
    import matplotlib.pyplot as plt

    raw = sim_fast
    fine = bx.Scan(np.repeat(np.repeat(raw.heights, 2, 0), 2, 1), raw.dx / 2, raw.dy / 2, {})
    fig = bx.plot_preprocess(fine, spacing_um=25)
    try:
        w = fine.shape[1] * fine.dx * 1e3
        panels = {ax.get_title().split(" (")[0]: ax for ax in fig.axes if ax.images}
        assert {"raw, fitted circles", "levelled", "outliers removed"} <= set(panels)
        for title in ("raw, fitted circles", "levelled", "outliers removed"):  # one field, whatever the grid
            assert panels[title].images[0].get_extent()[1] == pytest.approx(w, rel=1e-9), title
        # the band-passed crop in millimetres of the working grid (12.5 um), not of the input's 6.25 um
        _, d = bx.preprocess(fine, spacing_um=25, diagnostics=True)
        left, right, _, _ = panels["band-passed"].images[0].get_extent()
        assert right - left == pytest.approx(d["filtered"].shape[1] * raw.dx * 1e3, rel=1e-9)
        assert 0 <= left < right <= w
    finally:
        plt.close(fig)
