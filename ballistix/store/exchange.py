"""Exhibits exchanged between labs as one bundle file (`CaseStore.export_exhibits`,
`CaseStore.import_exhibits`; ``ballistix export-exhibits`` / ``import-exhibits``), in the spirit
of INTERPOL's IBIN exchange of ballistic data.

A bundle is a zip archive (stored, not compressed: x3p files are zip archives already) of

- ``manifest.json``: the format and its version, the sending lab (``lab``: an identifier and a
  name), when and with which ballistix it was written, and for each exhibit its id, kind, scene,
  firearm, calibre, date, labels, source file name, the SHA-256 of its source file and the
  units it was read in, with the sender's ingest provenance (when, by whom, which ballistix);
  and the sender's records of the scenes and firearms those exhibits refer to;
- ``manifest.sha256``: the SHA-256 of ``manifest.json``;
- ``exhibits/<sha256>.x3p``: each exhibit's source file, named by its SHA-256.

Reading checks everything before the store is touched: the archive (`ballistix._files`: member
names, sizes, zip bombs), the manifest's checksum and structure, and every file against the
SHA-256 the manifest gives. One failure refuses the whole bundle. The checksums protect against
damage and mix-ups, not against a sender who rewrites both file and manifest: that needs signed
bundles (not done).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

from .._files import atomic_file, iter_member, list_members, open_zip, read_member, sha256_file
from .._records import check_date, check_firearm, check_scene, check_text
from .._version import __version__
from ..errors import FileFormatError, ParameterError

__all__ = ["FORMAT", "FORMAT_VERSION", "read_bundle", "write_bundle"]

FORMAT, FORMAT_VERSION = "ballistix-exhibits", 1
MAX_MANIFEST_BYTES = 50_000_000
MAX_EXHIBITS = 100_000
#: Largest source file in a bundle (bytes); the x3p reader has its own, tighter limits.
MAX_FILE_BYTES = 4_000_000_000
_SHA = re.compile(r"[0-9a-f]{64}")
_EXHIBIT_TEXT = ("exhibit_id", "source_name")
_EXHIBIT_OPTIONAL = ("scene_id", "firearm_id", "calibre")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(path, *, lab: dict, exhibits: list[dict], files: list[Path], scenes: dict, firearms: dict) -> Path:
    """Write a bundle (see the module notes): ``exhibits`` (manifest records, each with its
    ``source_sha256``) and their source ``files`` in the same order; ``scenes`` and ``firearms``:
    the records they refer to, by id. All or nothing."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lab": lab,
        "ballistix_version": __version__,
        "exhibits": exhibits,
        "scenes": scenes,
        "firearms": firearms,
    }
    body = json.dumps(manifest, indent=1, sort_keys=True, default=str).encode("utf-8")
    path = Path(path)
    with atomic_file(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("manifest.json", body)
        zf.writestr("manifest.sha256", _sha256(body) + "\n")
        for rec, src in zip(exhibits, files):
            zf.write(src, f"exhibits/{rec['source_sha256']}{rec['suffix']}")
    return path


def _refuse(path, problem: str):
    raise FileFormatError(path, f"not a usable exhibit bundle: {problem}")


def _check_manifest(path, m) -> dict:
    """The manifest, its structure and values checked (names the exhibit and field at fault)."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        _refuse(path, f"its manifest is not a {FORMAT} manifest")
    if m.get("format_version") != FORMAT_VERSION:
        _refuse(path, f"format version {m.get('format_version')!r}; this ballistix reads {FORMAT_VERSION}")
    lab = m.get("lab")
    if not isinstance(lab, dict):
        _refuse(path, "the manifest names no sending lab")
    try:
        check_text(lab.get("id"), "lab id", required=True)
        check_text(lab.get("name"), "lab name")
    except ParameterError as e:
        _refuse(path, str(e))
    ex = m.get("exhibits")
    if not isinstance(ex, list) or not 0 < len(ex) <= MAX_EXHIBITS:
        _refuse(path, f"the manifest must list 1 to {MAX_EXHIBITS} exhibits")
    if not isinstance(m.get("scenes"), dict) or not isinstance(m.get("firearms"), dict):
        _refuse(path, "the manifest's scenes and firearms must be records by id")
    for table, check in (("scenes", check_scene), ("firearms", check_firearm)):
        for ident, attrs in m[table].items():
            try:
                if not isinstance(attrs, dict):
                    raise ParameterError(f"{table[:-1]} {ident!r} is not a record")
                check(ident, attrs)
            except ParameterError as e:
                _refuse(path, str(e))
    seen = set()
    for i, e in enumerate(ex):
        what = f"exhibit {i + 1} of the manifest"
        if not isinstance(e, dict):
            _refuse(path, f"{what} is not a record")
        try:
            for k in _EXHIBIT_TEXT:
                check_text(e.get(k), f"{what}: {k}", required=True)
            for k in _EXHIBIT_OPTIONAL:
                check_text(e.get(k), f"{what}: {k}")
            check_date(e.get("date"), f"{what}: date")
        except ParameterError as err:
            _refuse(path, str(err))
        if e.get("kind") not in ("scene", "test_fire"):
            _refuse(path, f"{what}: kind must be scene or test_fire")
        if not (isinstance(e.get("source_sha256"), str) and _SHA.fullmatch(e["source_sha256"])):
            _refuse(path, f"{what}: source_sha256 must be 64 lowercase hex digits")
        if e.get("suffix") not in (".x3p",):
            _refuse(path, f"{what}: only x3p source files are exchanged, got {e.get('suffix')!r}")
        if e.get("units") not in ("auto", "m", "mm", "um"):
            _refuse(path, f"{what}: units must be auto, m, mm or um")
        if not isinstance(e.get("labels", {}), dict):
            _refuse(path, f"{what}: labels must be a record")
        if e["source_sha256"] in seen:
            _refuse(path, f"{what}: its source file is listed twice")
        seen.add(e["source_sha256"])
    return m


def read_bundle(path, dest: Path) -> tuple[dict, str, list[Path]]:
    """Check a bundle whole and extract its source files into ``dest``: (manifest, the bundle's
    SHA-256, the extracted files in the manifest's order). Any problem raises `FileFormatError`
    (or its subclass `ScanFormatError`) naming the bundle, and leaves nothing in ``dest``."""
    path = Path(path)
    zf = open_zip(path, "an exhibit bundle")
    written: list[Path] = []
    try:
        members = list_members(path, zf, max_members=MAX_EXHIBITS + 2)
        if "manifest.json" not in members or "manifest.sha256" not in members:
            _refuse(path, "no manifest.json and manifest.sha256")
        body = bytes(read_member(path, zf, members["manifest.json"], MAX_MANIFEST_BYTES, "the manifest"))
        sha = bytes(read_member(path, zf, members["manifest.sha256"], 100, "the manifest's checksum"))
        if sha.decode("ascii", "replace").strip() != _sha256(body):
            _refuse(path, "manifest.json does not match manifest.sha256 (altered or damaged)")
        try:
            manifest = _check_manifest(path, json.loads(body.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            _refuse(path, f"manifest.json is not JSON ({e})")
        expected = {f"exhibits/{e['source_sha256']}{e['suffix']}" for e in manifest["exhibits"]}
        extra = sorted(set(members) - expected - {"manifest.json", "manifest.sha256"})
        if extra:
            _refuse(path, f"files the manifest does not list: {extra[:5]}")
        dest.mkdir(parents=True, exist_ok=True)
        for e in manifest["exhibits"]:
            name = f"exhibits/{e['source_sha256']}{e['suffix']}"
            if name not in members:
                _refuse(path, f"exhibit {e['exhibit_id']!r}: its file {name} is missing")
            info = members[name]
            if info.file_size > MAX_FILE_BYTES:
                _refuse(path, f"exhibit {e['exhibit_id']!r}: {name} declares {info.file_size} bytes")
            out = dest / f"{e['source_sha256']}{e['suffix']}"
            h = hashlib.sha256()
            with atomic_file(out) as f:
                written.append(out)
                for chunk in iter_member(path, zf, info, 1 << 22, f"exhibit {e['exhibit_id']!r}"):
                    h.update(chunk)
                    f.write(chunk)
                if h.hexdigest() != e["source_sha256"]:
                    _refuse(
                        path,
                        f"exhibit {e['exhibit_id']!r}: {name} does not match its SHA-256 in the manifest "
                        "(altered or damaged)",
                    )
    except BaseException:
        for w in written:
            w.unlink(missing_ok=True)
        raise
    finally:
        zf.close()
    return manifest, sha256_file(path), written
