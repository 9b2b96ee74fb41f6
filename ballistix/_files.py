"""Files on disk, shared by io, index, store and the report writers: atomic writes, SHA-256 of a
file, and safe reading of zip containers (x3p, npz, index files) from untrusted sources."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ScanFormatError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_file(path) -> Iterator[BinaryIO]:
    """Write ``path`` all or nothing.

    Yields a binary file opened on a temporary name beside ``path`` (``f.name``:
    the block may read back what it wrote, to check it before it is kept). When
    the block ends normally the file is flushed and synced to disk, given the
    permissions a new file gets (umask), and renamed over ``path``; when it
    raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sha256_file(path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------
# zip containers
# ----------------------------------------------------------------------------

try:  # lzma is optional in some Python builds
    from lzma import LZMAError as _LZMAError
except ImportError:  # pragma: no cover
    _LZMAError = zlib.error

# What zipfile and its decompressors raise on corrupt input.
_CORRUPT = (
    zipfile.BadZipFile,
    zlib.error,
    _LZMAError,
    struct.error,
    EOFError,
    OSError,
    NotImplementedError,
    ValueError,
)


def check_member_name(path, name: str) -> None:
    if not name:
        raise ScanFormatError(path, "zip member with an empty name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise ScanFormatError(path, f"zip member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise ScanFormatError(path, f"zip member {name!r} escapes the archive with '..'")


#: Bytes read from a zip member per call: ``readinto`` a larger view makes zipfile build a
#: temporary copy of that size.
READ_PIECE = 1 << 22


def read_member(path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str) -> bytearray:
    """Read one member with a hard byte budget (zip-bomb safe), into one buffer without copies:
    the member's declared size, at most ``limit``, in one chunk of `iter_member` (with its checks)."""
    if info.file_size > limit:
        raise ScanFormatError(
            path, f"{what} ({info.filename}) declares {info.file_size} bytes, more than the {limit} allowed"
        )
    chunks = list(iter_member(path, zf, info, max(info.file_size, 1), what))  # one chunk, none if empty
    return chunks[0] if chunks else bytearray()


def iter_member(path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, chunk_bytes: int, what: str, *, skip: int = 0):
    """Yield a member's bytes in chunks of exactly ``chunk_bytes`` (the last one shorter), checked:
    encrypted, corrupt, inflating beyond or ending before its declared size are all
    `ScanFormatError`. ``skip``: bytes already consumed (a header read separately), not yielded.
    Only one chunk is in memory at a time; memory never exceeds the declared size."""
    if info.flag_bits & 0x1:
        raise ScanFormatError(path, f"{what} ({info.filename}) is encrypted")
    try:
        with zf.open(info) as f:
            n = _skip(f, skip)
            while n < info.file_size:
                buf = bytearray(min(chunk_bytes, info.file_size - n))
                got = _fill(f, buf)
                if got < len(buf):
                    raise ScanFormatError(
                        path, f"{what} ({info.filename}) is truncated: {n + got} of {info.file_size} bytes"
                    )
                n += got
                yield buf
            if f.read(1):
                raise ScanFormatError(
                    path, f"{what} ({info.filename}) inflates beyond its declared {info.file_size} bytes (zip bomb?)"
                )
    except _CORRUPT as e:
        if isinstance(e, ScanFormatError):
            raise
        raise ScanFormatError(path, f"{what} ({info.filename}) is corrupt or truncated: {e}") from None


def _skip(f, n: int) -> int:
    """Read and drop up to ``n`` bytes of ``f``; returns how many there were."""
    done = 0
    while done < n:
        got = f.read(min(n - done, READ_PIECE))
        if not got:
            break
        done += len(got)
    return done


def _fill(f, buf: bytearray) -> int:
    """Read ``f`` into ``buf`` until it is full or ``f`` ends; returns the bytes read."""
    n = 0
    with memoryview(buf) as view:
        while n < len(buf):
            got = f.readinto(view[n : n + READ_PIECE])
            if not got:
                break
            n += got
    return n


def open_zip(path: Path, what: str) -> zipfile.ZipFile:
    """Open ``path`` as a zip archive or raise ScanFormatError."""
    if not path.is_file():
        raise ScanFormatError(path, "no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error) as e:
        raise ScanFormatError(path, f"not {what}: not a readable zip archive ({e})") from None


def list_members(path, zf: zipfile.ZipFile, max_members: int = 1000) -> dict[str, zipfile.ZipInfo]:
    """Checked file members by normalised name; refuses unsafe names and huge listings."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise ScanFormatError(path, f"zip holds {len(infos)} members, more than {max_members}")
    members = {}
    for info in infos:
        check_member_name(path, info.filename)
        if not info.is_dir():
            members[posixpath.normpath(info.filename.replace("\\", "/"))] = info
    return members
