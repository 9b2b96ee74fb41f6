"""`CaseStore.check`: verify a whole store, fsck-style, and repair what can be repaired.

Checked in turn: the database (integrity, schema version, settings, comparisons that name
exhibits), the examiners' decisions (the audit log whole and append-only, each comparison's
``confirmed`` the effect of its current decision), the imports log (whole and append-only), the
descriptors, the cached scans (against the checksum recorded at ingest), the index file, the
registered calibrations, and leftovers of interrupted writes. A damaged cached scan is re-created
from its source only when the source is unchanged and re-processing it gives the stored
descriptor exactly; otherwise it is dropped and the exhibit's scan marked missing.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from .._files import sha256_file
from ..errors import BallistixError, DamagedScanError, StoreError
from ..features.describe import describe, descriptor_params
from ..features.preprocessing import preprocess
from ..io import read_scan, write_npz
from .db import path_from_db
from .decisions import DECISION_TRIGGERS, VERDICTS
from .imports import IMPORT_TRIGGERS

__all__ = ["check_store"]


#: What to do about damage to the database itself.
RESTORE = "restore the store's database (store.sqlite, or the PostgreSQL database) from a backup"
#: Leftovers of interrupted writes older than this (seconds) are removed by repair.
STALE_AFTER_S = 3600


def check_store(store, repair: bool, *, schema_version: int, new_prefix: str, cached) -> dict:
    """The body of `CaseStore.check` (see there): what was checked, the problems found and what
    was done about them. ``schema_version``, ``new_prefix`` (of a store database being created)
    and ``cached`` (a processed scan as the cache keeps it) come from `casestore`, which calls this."""
    problems = [dict(p) for p in store._opening]
    notes: list[str] = []
    checked = {"database": _check_database(store, schema_version, problems)}
    checked["decisions"] = _check_decisions(store, repair, problems, notes)
    checked["imports"] = _check_imports(store, problems)
    checked["descriptors"], bad_descriptors = _check_descriptors(store, problems)
    checked["scans"] = _check_scans(store, repair, bad_descriptors, cached, problems, notes)
    checked["index"] = _check_index(store, repair, problems)
    checked["calibrations"] = _check_calibrations(store, problems)
    _check_leftovers(store, repair, new_prefix, notes)
    store._opening = []
    return {
        "store": str(store.folder),
        "ok": all(p["repaired"] for p in problems),
        "repair": repair,
        "checked": checked,
        "problems": problems,
        "notes": notes,
    }


def _problem(problems: list, check: str, item, text: str, action: str = "", repaired: bool = False) -> None:
    problems.append({"check": check, "item": str(item), "problem": text, "repaired": repaired, "action": action})


def _check_database(store, schema_version: int, problems: list) -> int:
    """The database: SQLite's integrity check, format and schema version, settings that are JSON of
    the right kind, comparisons that name exhibits of the store. Returns 1 (one database checked)."""
    db = store._db
    result = db.integrity_check()
    if result != ["ok"]:
        _problem(problems, "database", store.db_path, "integrity_check: " + "; ".join(result[:5]), RESTORE)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if meta.get("format") != "ballistix-case-store":
        _problem(
            problems,
            "database",
            store.db_path,
            f"meta format is {meta.get('format')!r}, not 'ballistix-case-store'",
            RESTORE,
        )
    if meta.get("schema_version") != str(schema_version):
        _problem(
            problems,
            "database",
            store.db_path,
            f"schema version {meta.get('schema_version')!r}, expected {schema_version}",
            RESTORE,
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
            _problem(problems, "database", f"meta.{key}", f"not a JSON {kind.__name__}", RESTORE)
    dangling = db.execute(
        "SELECT COUNT(*) FROM comparisons WHERE a NOT IN (SELECT rowid FROM exhibits) "
        "OR b NOT IN (SELECT rowid FROM exhibits)"
    ).fetchone()[0]
    if dangling:
        _problem(
            problems,
            "database",
            "comparisons",
            f"{dangling} comparisons name an exhibit that is not in the store",
            RESTORE,
        )
    return 1


def _check_decisions(store, repair: bool, problems: list, notes: list) -> int:
    """The examiners' decisions (`CaseStore.confirm`): the triggers that keep the log append-only
    are there, no decision is missing (ids are never reused: a gap, or a highest id below the one
    SQLite handed out last, is a deleted decision), each supersedes its pair's previous decision,
    each names a recorded comparison, and each comparison's ``confirmed`` is what its current
    decision makes it. The log is the record: only a ``confirmed`` that disagrees with it is
    repaired (set from the current decision; the graph follows the decision meanwhile). Returns
    the number of decisions checked."""

    db = store._db
    rows = db.execute("SELECT decision_id, a, b, verdict, supersedes FROM decisions ORDER BY decision_id").fetchall()
    _check_append_only(db, "decisions", "decisions", DECISION_TRIGGERS, [r[0] for r in rows], problems)
    latest: dict[tuple[int, int], tuple[int, str]] = {}
    for did, a, b, verdict, supersedes in rows:
        before = latest.get((a, b), (None,))[0]
        if supersedes != before:
            _problem(
                problems,
                "decisions",
                f"decision {did}",
                f"supersedes decision {supersedes}, but its pair's previous decision is {before}",
                RESTORE,
            )
        latest[(a, b)] = (did, verdict)
    names = dict(
        db.execute(
            "SELECT rowid, exhibit_id FROM exhibits WHERE rowid IN (SELECT a FROM decisions "
            "UNION SELECT b FROM decisions)"
        )
    )
    for (a, b), (did, verdict) in latest.items():
        row = db.execute("SELECT confirmed FROM comparisons WHERE a=? AND b=?", (a, b)).fetchone()
        pair = f"{names.get(a, a)} - {names.get(b, b)}"
        if row is None:
            _problem(problems, "decisions", pair, f"decision {did} is on a comparison that is not recorded", RESTORE)
            continue
        effect = VERDICTS.get(verdict)
        if row[0] == effect:
            continue
        text = (
            f"the comparison's confirmed is {row[0]!r}, but its current decision ({did}, {verdict}) makes it "
            f"{effect!r}: changed outside `confirm`"
        )
        if repair:
            db.execute("UPDATE comparisons SET confirmed=? WHERE a=? AND b=?", (effect, a, b))
            _problem(problems, "decisions", pair, text, f"set from decision {did}", repaired=True)
        else:
            _problem(
                problems,
                "decisions",
                pair,
                text + " (the graph and the report follow the decision)",
                "`ballistix check --repair` sets it from the decision",
            )
    (legacy,) = db.execute(
        "SELECT COUNT(*) FROM comparisons c WHERE confirmed IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM decisions d WHERE d.a = c.a AND d.b = c.b)"
    ).fetchone()
    if legacy:
        notes.append(
            f"{legacy} comparisons carry a verdict recorded without a decision (before schema 4, or written "
            f"directly): no examiner, reason or time; `ballistix confirm` records one"
        )
    return len(rows)


def _check_imports(store, problems: list) -> int:
    """The imports log (`CaseStore.imports`): the triggers that keep it append-only are there and no
    row is missing (ids are never reused: a gap, or a highest id below the one SQLite handed out
    last, is a deleted row), and every bundle some exhibit was received from has its row (an import
    interrupted after some exhibits were committed has none: importing the bundle again completes
    it). Nothing is repaired: the log is the record. Returns the rows checked."""
    db = store._db
    ids = [r[0] for r in db.execute("SELECT import_id FROM imports ORDER BY import_id")]
    _check_append_only(db, "imports", "the imports log", IMPORT_TRIGGERS, ids, problems)
    logged = {sha for (sha,) in db.execute("SELECT sha256 FROM imports WHERE kind='exhibits-bundle'")}
    received: dict[str, list[str]] = {}
    for eid, meta in db.execute(
        "SELECT exhibit_id, meta_json FROM exhibits WHERE meta_json LIKE '%\"received_from\"%' ORDER BY rowid"
    ):
        try:
            sha = (json.loads(meta).get("received_from") or {}).get("bundle_sha256")
        except (ValueError, AttributeError):
            continue  # a damaged record: the database check says so
        if sha and sha not in logged:
            received.setdefault(sha, []).append(eid)
    for sha, eids in received.items():
        _problem(
            problems,
            "imports",
            f"bundle {sha[:12]}",
            f"{len(eids)} exhibits ({', '.join(eids[:3])}{', ...' if len(eids) > 3 else ''}) were received from "
            f"a bundle (SHA-256 {sha}) whose import is not in the log: the import was interrupted",
            "import the same bundle again: it completes the import and logs it",
        )
    return len(ids)


def _check_append_only(db, table: str, log: str, trigger_names, ids: list[int], problems: list) -> None:
    """An append-only log (``table``, AUTOINCREMENT ids ``ids`` in order): the triggers that keep it
    append-only are there, and no row is missing (ids are never reused: a gap, or a highest id below
    the one SQLite handed out last, is a deleted row)."""
    triggers = db.triggers()
    missing = [t for t in trigger_names if t not in triggers]
    if missing:
        _problem(
            problems,
            table,
            table,
            f"the triggers that keep {log} append-only are missing ({', '.join(missing)}): the log may have "
            f"been edited",
            RESTORE,
        )
    issued = max(db.issued(table), ids[-1] if ids else 0)
    if issued > len(ids):
        _problem(
            problems,
            table,
            table,
            f"{issued - len(ids)} of the {issued} {table} recorded are missing (deleted from the log)",
            RESTORE,
        )


def _check_descriptors(store, problems: list) -> tuple[int, set[int]]:
    """Each exhibit's descriptor: of the store's size and finite. Returns the number checked and
    the rowids of the damaged ones."""
    size = 4 * store.descriptor["dim"]
    rows = store._db.execute("SELECT rowid, exhibit_id, descriptor FROM exhibits ORDER BY rowid").fetchall()
    bad = set()
    for rowid, eid, blob in rows:
        if not isinstance(blob, bytes) or len(blob) != size:
            bad.add(rowid)
            _problem(
                problems,
                "descriptor",
                eid,
                f"{len(blob) if isinstance(blob, bytes) else 0} bytes, expected {size}",
                RESTORE,
            )
        elif not np.isfinite(np.frombuffer(blob, np.float32)).all():
            bad.add(rowid)
            _problem(problems, "descriptor", eid, "holds NaN or infinite values", RESTORE)
    return len(rows), bad


def _check_scans(store, repair: bool, bad_descriptors: set[int], cached, problems: list, notes: list) -> int:
    """Each cached scan against the checksum recorded at ingest; with ``repair``, a damaged one is
    re-created or dropped (`_repair_scan`) and a missing checksum recorded. Returns the number checked."""
    db = store._db
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
                _problem(
                    problems,
                    "scan",
                    e.path,
                    f"exhibit {eid}: {e.problem}",
                    "`ballistix check --repair` re-creates it from its source, or drops it",
                )
                continue
            done, action = _repair_scan(
                store, rowid, eid, rel, source_sha, src, read, blob, meta_json, rowid not in bad_descriptors, cached
            )
            _problem(problems, "scan", e.path, f"exhibit {eid}: {e.problem}", action, repaired=done)
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
    return len(rows)


def _check_index(store, repair: bool, problems: list) -> int:
    """The index file; with ``repair``, a damaged one is rebuilt from the descriptors. Returns 1."""
    _, index_problem = store._read_index()
    if index_problem is None:
        return 1
    problems[:] = [p for p in problems if p["check"] != "index"]  # the same problem, seen again
    if not repair:
        action = "`ballistix check --repair` rebuilds it from the descriptors in the database"
        _problem(problems, "index", store.index_path, index_problem, action)
        return 1
    try:
        store.rebuild_index()
    except StoreError as e:
        _problem(problems, "index", store.index_path, index_problem, f"not rebuilt: {e}")
    else:
        action = "rebuilt from the descriptors in the database"
        _problem(problems, "index", store.index_path, index_problem, action, repaired=True)
    return 1


def _check_calibrations(store, problems: list) -> int:
    """Each registered calibration file against the SHA-256 recorded at registration (none when
    the list of registrations is itself damaged). Returns the number checked."""
    recs = store.calibration_records() if "meta.calibrations" not in {p["item"] for p in problems} else []
    for r in recs:
        path = store.folder / str(r.get("file", ""))
        try:
            ok = sha256_file(path) == r.get("sha256")
        except OSError:
            ok = False
        if not ok:
            _problem(
                problems,
                "calibration",
                path,
                f"the registered calibration {r.get('name')!r} is missing or altered "
                f"(SHA-256 recorded at registration differs)",
                "register it again from a trusted copy",
            )
    return len(recs)


def _check_leftovers(store, repair: bool, new_prefix: str, notes: list) -> None:
    """Temporary files of interrupted writes: harmless, noted; removed by repair when older than
    `STALE_AFTER_S`."""
    stale = [
        p
        for p in [
            *(store.folder / "scans").glob("*/.*"),
            *store.folder.glob(".index.bxi.*"),
            *store.folder.glob(f"{new_prefix}*"),
        ]
        if p.is_file()
    ]
    old = [p for p in stale if time.time() - p.stat().st_mtime > STALE_AFTER_S]
    if repair:
        for p in old:
            with contextlib.suppress(OSError):
                p.unlink()
    if stale:
        notes.append(
            f"{len(stale)} temporary files of interrupted writes in {store.folder}"
            + (f"; {len(old)} over an hour old removed" if repair and old else "")
        )


def _repair_scan(
    store, rowid, eid, rel, source_sha, src, read, blob, meta_json, descriptor_ok, cached
) -> tuple[bool, str]:
    """Re-create a damaged cached scan from its source, or drop it. Returns (re-created, what was done)."""
    path = store.folder / rel
    src = path_from_db(src)
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
            vec = describe(proc, **descriptor_params(store.descriptor))
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
