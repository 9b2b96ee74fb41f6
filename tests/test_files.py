import os
import stat

import pytest

from ballistix._files import atomic_file


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
