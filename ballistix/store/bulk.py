"""Bulk import of exhibits processed and described elsewhere: `CaseStore.import_prepared`.

A national collection is not ingested one scan file at a time: its exhibits
are read, preprocessed and described on many machines (a Dask cluster, see
`CaseStore.ingest`'s ``client``) or exported from another system, then
imported in batches. Each batch is one transaction, and the index is
updated (or rebuilt compact, see `ballistix.store.descriptors`) and saved
once at the end, so the rate is set by the database and the disk, not by a commit
per exhibit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping

import numpy as np

from .._files import sha256_file
from .._records import check_exhibit_meta, check_text
from .._version import __version__
from ..errors import BallistixError, ParameterError
from ..features.preprocessing.defaults import DEFAULTS as PREPROCESS_DEFAULTS
from ..io import read_npz
from ..provenance import population, processing_signature

__all__ = ["import_prepared", "BATCH"]

BATCH = 10_000  # exhibits a transaction
_SHA = re.compile(r"[0-9a-f]{64}")
_UNIT_TOLERANCE = 1e-3  # descriptors are L2-normalised


def _scan_record(path, cache: dict, spacing_m: float, signature) -> tuple[str, str, dict, str]:
    """(absolute path, SHA-256, population, processing as JSON) of a processed scan file, checked once."""
    if path in cache:
        return cache[path]
    key = os.path.abspath(path)
    if key not in cache:
        scan = read_npz(path)
        if not scan.meta.get("processing"):
            raise ParameterError(f"{path}: not a processed scan (no processing record)")
        if abs(scan.dx - spacing_m) > 1e-3 * spacing_m or abs(scan.dy - spacing_m) > 1e-3 * spacing_m:
            raise ParameterError(
                f"{path}: spacing {scan.dx * 1e6:g} x {scan.dy * 1e6:g} um, the store's grid is {spacing_m * 1e6:g} um"
            )
        if signature is not None and processing_signature(scan.meta["processing"]) != signature:
            raise ParameterError(f"{path}: processed with other steps or parameters than the store's exhibits")
        processing = json.dumps(scan.meta["processing"], default=str)
        cache[key] = (key, sha256_file(path), population(scan.meta), processing)
    cache[path] = cache[key]
    return cache[key]


def _row(rec: Mapping, dim: int, scans: dict, spacing_m: float, signature, now: str, user: str) -> tuple:
    if not isinstance(rec, Mapping):
        raise ParameterError(f"a record must be a mapping, got {type(rec).__name__}")
    m = dict(rec)
    eid, sha = m.pop("exhibit_id", None), m.pop("source_sha256", None)
    check_text(eid, "exhibit_id", required=True)
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise ParameterError(f"{eid}: source_sha256 must be 64 lowercase hex digits, got {sha!r}")
    vec = np.asarray(m.pop("descriptor", None), dtype=np.float32)
    if vec.shape != (dim,) or not np.isfinite(vec).all() or abs(float(np.linalg.norm(vec)) - 1) > _UNIT_TOLERANCE:
        raise ParameterError(f"{eid}: descriptor must be {dim} finite values of unit length, got shape {vec.shape}")
    scan_file = m.pop("scan_file", None)
    if scan_file is None:
        raise ParameterError(f"{eid}: scan_file (the processed scan, a .npz from write_npz) is required")
    path, scan_sha, pop, processing = _scan_record(scan_file, scans, spacing_m, signature)
    kind = m.pop("kind", None) or ("test_fire" if m.get("firearm_id") else "scene")
    m = check_exhibit_meta({"kind": kind, **m})
    m.pop("kind")
    fields = [m.pop(k, None) for k in ("scene_id", "firearm_id", "calibre", "date")]
    m["population"] = pop
    return (
        eid,
        sha,
        m.pop("source_name", None),
        kind,
        *fields,
        json.dumps(m, sort_keys=True, default=str),
        processing,
        vec.tobytes(),
        path,
        now,
        user,
        __version__,
        scan_sha,
    )


_INSERT = (
    "INSERT INTO exhibits (rowid, exhibit_id, source_sha256, source_name, kind, scene_id, firearm_id, calibre, date,"
    " meta_json, processing_json, descriptor, scan_file, created_utc, created_by, ballistix_version, scan_sha256,"
    " scan_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok')"
)


def _existing(db, column: str, values: list) -> set:
    """The ``values`` of ``column`` already in the exhibits table."""
    if not values:
        return set()
    marks = ",".join("?" * len(values))
    return {v for (v,) in db.execute(f"SELECT {column} FROM exhibits WHERE {column} IN ({marks})", values)}


def import_prepared(store, records: Iterable[Mapping], *, batch: int = BATCH, stamp: tuple[str, str]) -> dict:
    """Import exhibits that were preprocessed and described elsewhere (see `CaseStore.import_prepared`)."""
    if int(batch) != batch or batch < 1:
        raise ParameterError(f"batch must be a positive integer, got {batch!r}")
    db = store._db
    dim = int(store.descriptor["dim"])
    spacing_m = 1e-6 * float(store.preprocess_params.get("spacing_um", PREPROCESS_DEFAULTS["spacing_um"]))
    first = db.execute("SELECT processing_json FROM exhibits ORDER BY rowid LIMIT 1").fetchone()
    signature = processing_signature(json.loads(first[0])) if first else None
    scans: dict = {}
    out = {"added": 0, "existing": 0, "scan_files": 0}
    now, user = stamp
    pending: list[tuple] = []
    new_ids: list[np.ndarray] = []

    def flush() -> None:
        db.begin_write()
        try:
            shas = [r[1] for r in pending]
            known = _existing(db, "source_sha256", shas)
            rows = []
            for r in pending:  # first of each source, in order
                if r[1] not in known:
                    known.add(r[1])
                    rows.append(r)
            ids = [r[0] for r in rows]
            taken = _existing(db, "exhibit_id", ids)
            repeated = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
            if taken or repeated:
                raise ParameterError(
                    f"exhibit ids already in the store or repeated in the batch: {sorted(taken | repeated)[:5]}"
                )
            start = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM exhibits").fetchone()[0]
            if rows:  # the ids are given (max + 1 on, under the write lock), as SQLite would assign them
                db.executemany(_INSERT, [(start + 1 + i, *r) for i, r in enumerate(rows)])
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        new_ids.append(np.arange(start + 1, start + 1 + len(rows), dtype=np.int64))
        out["added"] += len(rows)
        out["existing"] += len(pending) - len(rows)
        pending.clear()

    try:
        for rec in records:
            try:
                pending.append(_row(rec, dim, scans, spacing_m, signature, now, user))
            except (BallistixError, OSError) as e:
                n = out["added"] + out["existing"] + len(pending) + 1
                raise ParameterError(f"record {n}: {e}; the records before it are imported") from None
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
    finally:
        if new_ids:
            store._add_to_index(np.concatenate(new_ids))
    out["scan_files"] = len({v[0] for v in scans.values()})
    return out
