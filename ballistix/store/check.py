"""`CaseStore.check`: verify a whole store, fsck-style, and repair what can be repaired.

Checked in turn: the database (integrity, schema version, settings, comparisons that name
exhibits), the descriptors, the cached scans (against the checksum recorded at ingest), the
index file, the registered calibrations, and leftovers of interrupted writes. A damaged cached
scan is re-created from its source only when the source is unchanged and re-processing it gives
the stored descriptor exactly; otherwise it is dropped and the exhibit's scan marked missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from .._files import sha256_file
from ..errors import BallistixError, DamagedScanError, StoreError
from ..features.describe import describe
from ..features.preprocessing import preprocess
from ..io import read_scan, write_npz

__all__ = ["check_store"]


def check_store(store, repair: bool, *, schema_version: int, new_prefix: str, cached) -> dict:
    """The body of `CaseStore.check` (see there): what was checked, the problems found and what
    was done about them. ``schema_version``, ``new_prefix`` (of a store database being created)
    and ``cached`` (a processed scan as the cache keeps it) come from `casestore`, which calls this."""
    problems = [dict(p) for p in store._opening]
    notes: list[str] = []

    def problem(check, item, text, action="", repaired=False):
        problems.append({"check": check, "item": str(item), "problem": text, "repaired": repaired, "action": action})

    db = store._db
    backup = "restore store.sqlite from a backup"
    checked = {}
    # the database
    result = [r[0] for r in db.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        problem("database", store.db_path, "integrity_check: " + "; ".join(result[:5]), backup)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if meta.get("format") != "ballistix-case-store":
        problem("database", store.db_path, f"meta format is {meta.get('format')!r}, not 'ballistix-case-store'", backup)
    if meta.get("schema_version") != str(schema_version):
        problem(
            "database",
            store.db_path,
            f"schema version {meta.get('schema_version')!r}, expected {schema_version}",
            backup,
        )
    for key, kind in (
        ("preprocess_params", dict),
        ("compare_params", dict),
        ("decision_rule", dict),
        ("calibrations", list),
    ):
        try:
            ok = key not in meta or isinstance(json.loads(meta[key]), kind)
        except ValueError:
            ok = False
        if not ok:
            problem("database", f"meta.{key}", f"not a JSON {kind.__name__}", backup)
    dangling = db.execute(
        "SELECT COUNT(*) FROM comparisons WHERE a NOT IN (SELECT rowid FROM exhibits) "
        "OR b NOT IN (SELECT rowid FROM exhibits)"
    ).fetchone()[0]
    if dangling:
        problem("database", "comparisons", f"{dangling} comparisons name an exhibit that is not in the store", backup)
    checked["database"] = 1
    # descriptors
    size = 4 * store.descriptor["dim"]
    rows = db.execute("SELECT rowid, exhibit_id, descriptor FROM exhibits ORDER BY rowid").fetchall()
    bad_descriptors = set()
    for rowid, eid, blob in rows:
        if not isinstance(blob, bytes) or len(blob) != size:
            bad_descriptors.add(rowid)
            problem("descriptor", eid, f"{len(blob) if isinstance(blob, bytes) else 0} bytes, expected {size}", backup)
        elif not np.isfinite(np.frombuffer(blob, np.float32)).all():
            bad_descriptors.add(rowid)
            problem("descriptor", eid, "holds NaN or infinite values", backup)
    checked["descriptors"] = len(rows)
    # cached scans
    rows = db.execute(
        "SELECT rowid, exhibit_id, scan_file, scan_sha256, source_sha256, scan_state, source_path, "
        "source_read, descriptor, meta_json FROM exhibits ORDER BY rowid"
    ).fetchall()
    unrecorded = 0
    for rowid, eid, rel, sha, source_sha, state, src, read, blob, meta_json in rows:
        try:
            scan = store._read_cached(rowid, eid, rel, sha, source_sha, state)
        except DamagedScanError as e:
            if not repair:
                problem(
                    "scan",
                    e.path,
                    f"exhibit {eid}: {e.problem}",
                    "`ballistix check --repair` re-creates it from its source, or drops it",
                )
                continue
            done, action = _repair_scan(
                store, rowid, eid, rel, source_sha, src, read, blob, meta_json, rowid not in bad_descriptors, cached
            )
            problem("scan", e.path, f"exhibit {eid}: {e.problem}", action, repaired=done)
            continue
        if sha is None:
            unrecorded += 1
            if repair:
                db.execute("UPDATE exhibits SET scan_sha256=? WHERE rowid=?", (scan.meta["sha256"], rowid))
    if unrecorded:
        notes.append(
            f"{unrecorded} cached scans made before schema 3 had no checksum recorded (checked against "
            f"their source SHA-256 instead); " + ("recorded now" if repair else "`--repair` records it")
        )
    checked["scans"] = len(rows)
    # the index
    _, index_problem = store._read_index()
    if index_problem is not None:
        problems = [p for p in problems if p["check"] != "index"]  # the same problem, seen again
        if not repair:
            problem(
                "index",
                store.index_path,
                index_problem,
                "`ballistix check --repair` rebuilds it from the descriptors in store.sqlite",
            )
        else:
            try:
                store.rebuild_index()
                problem(
                    "index",
                    store.index_path,
                    index_problem,
                    "rebuilt from the descriptors in store.sqlite",
                    repaired=True,
                )
            except StoreError as e:
                problem("index", store.index_path, index_problem, f"not rebuilt: {e}")
    checked["index"] = 1
    # registered calibrations
    recs = store.calibration_records() if "meta.calibrations" not in {p["item"] for p in problems} else []
    for r in recs:
        path = store.folder / str(r.get("file", ""))
        try:
            ok = sha256_file(path) == r.get("sha256")
        except OSError:
            ok = False
        if not ok:
            problem(
                "calibration",
                path,
                f"the registered calibration {r.get('name')!r} is missing or altered "
                f"(SHA-256 recorded at registration differs)",
                "register it again from a trusted copy",
            )
    checked["calibrations"] = len(recs)
    # leftovers of interrupted writes (harmless; removed by repair when over an hour old)
    stale = [
        p
        for p in [
            *(store.folder / "scans").glob("*/.*"),
            *store.folder.glob(".index.bxi.*"),
            *store.folder.glob(f"{new_prefix}*"),
        ]
        if p.is_file()
    ]
    old = [p for p in stale if time.time() - p.stat().st_mtime > 3600]
    if repair:
        for p in old:
            with contextlib.suppress(OSError):
                p.unlink()
    if stale:
        notes.append(
            f"{len(stale)} temporary files of interrupted writes in {store.folder}"
            + (f"; {len(old)} over an hour old removed" if repair and old else "")
        )
    store._opening = []
    return {
        "store": str(store.folder),
        "ok": all(p["repaired"] for p in problems),
        "repair": repair,
        "checked": checked,
        "problems": problems,
        "notes": notes,
    }


def _repair_scan(
    store, rowid, eid, rel, source_sha, src, read, blob, meta_json, descriptor_ok, cached
) -> tuple[bool, str]:
    """Re-create a damaged cached scan from its source, or drop it. Returns (re-created, what was done)."""
    path = store.folder / rel
    src = os.fsdecode(src) if isinstance(src, bytes) else src
    why = None
    if not src:
        why = "no source file recorded (an in-memory scan, or ingested before schema 3)"
    elif not Path(src).is_file():
        why = f"its source {src} is no longer there"
    elif sha256_file(Path(src)) != source_sha:
        why = f"its source {src} has changed since ingest (its SHA-256 differs)"
    elif not descriptor_ok:
        why = "its stored descriptor is damaged: nothing to check a re-processed scan against"
    else:
        try:
            kw = json.loads(read) if read else {"units": "auto"}
            proc = preprocess(read_scan(src, **kw), **store.preprocess_params)
            vec = describe(proc)
        except BallistixError as e:
            why = f"re-reading its source {src} failed ({e})"
        else:
            if vec.astype(np.float32).tobytes() != blob:
                why = (
                    f"re-processing its source {src} gives another descriptor than the stored one (not "
                    f"reproducible with this ballistix): not replaced"
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_npz(cached(proc, source_sha, json.loads(meta_json).get("population")), path)
                store._db.execute(
                    "UPDATE exhibits SET scan_sha256=?, scan_state='ok', linked=0 WHERE rowid=?",
                    (sha256_file(path), rowid),
                )
                return True, (
                    f"re-created from its source {src} (the same descriptor); the next link compares it again"
                )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    store._db.execute("UPDATE exhibits SET scan_state='missing' WHERE rowid=?", (rowid,))
    return False, (
        f"{why}; the damaged file was removed and the exhibit's scan marked missing (searches skip "
        f"it): put the source back at its path and repair again, or restore the file from a backup"
    )
