import os
import stat
import zipfile
from pathlib import Path

import pytest
from test_io_x3p import build_zip, patch_header

from ballistix._files import atomic_file, iter_member, read_member
from ballistix.errors import ScanFormatError


def test_atomic_file_gets_normal_permissions_and_replaces(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    with atomic_file(p) as f:
        f.write(b"new")
    assert p.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [q.name for q in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_file_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(p) as f:
        f.write(b"half")
        raise RuntimeError("crash")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["out.bin"]


# --- zip members: read_member and iter_member share one set of checks ---


def _zip(tmp_path, data: bytes, **patch) -> Path:
    p = build_zip(tmp_path / "member.zip", {"m.bin": data})
    if patch:
        p.write_bytes(patch_header(p.read_bytes(), "m.bin", **patch))
    return p


def _flip_deflate_bytes(tmp_path) -> Path:
    p = _zip(tmp_path, bytes(range(256)) * 64)
    b = bytearray(p.read_bytes())
    start = 30 + len("m.bin")  # the deflate stream follows the local header
    b[start : start + 16] = b"\xff" * 16
    p.write_bytes(bytes(b))
    return p


HOSTILE_MEMBERS = [
    ("encrypted", lambda t: _zip(t, b"x" * 100, flag_bits=1), r"encrypted"),
    ("inflates-beyond-declared", lambda t: _zip(t, bytes(1 << 20), file_size=1000), r"corrupt|inflates"),
    ("ends-before-declared", lambda t: _zip(t, b"y" * 600, file_size=616), r"truncated: 600 of 616"),
    ("corrupt-deflate", _flip_deflate_bytes, r"corrupt"),
]


@pytest.mark.parametrize("make, match", [c[1:] for c in HOSTILE_MEMBERS], ids=[c[0] for c in HOSTILE_MEMBERS])
def test_read_member_and_iter_member_refuse_the_same_bad_member_alike(tmp_path, make, match):
    path = make(tmp_path)
    errors = []
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("m.bin")
        readers = [
            lambda: read_member(path, zf, info, 1 << 24, "member"),
            lambda: list(iter_member(path, zf, info, 64, "member")),
            lambda: list(iter_member(path, zf, info, 1 << 20, "member")),
        ]
        for read in readers:
            with pytest.raises(ScanFormatError, match=match) as e:
                read()
            errors.append(str(e.value))
    assert len(set(errors)) == 1, errors


def test_read_member_and_iter_member_give_the_same_bytes(tmp_path):
    data = bytes(range(256)) * 1000
    path = _zip(tmp_path, data)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("m.bin")
        assert read_member(path, zf, info, len(data), "member") == data
        assert b"".join(iter_member(path, zf, info, 1000, "member")) == data
        assert b"".join(iter_member(path, zf, info, 1000, "member", skip=10)) == data[10:]
        with pytest.raises(ScanFormatError, match=f"declares {len(data)} bytes, more than the {len(data) - 1}"):
            read_member(path, zf, info, len(data) - 1, "member")
