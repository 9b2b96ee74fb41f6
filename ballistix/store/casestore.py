"""`CaseStore`: a lab's case database in one folder, nothing to install or start.

Layout of the folder::

    store.sqlite     exhibits, scenes, firearms, comparisons, failures, provenance (SQLite, WAL)
    scans/ab/<sha256>.npz   processed scans, named by the SHA-256 of their source
    index.bxi        the FAISS index of the exhibits' descriptors (`ScanIndex`)

SQLite is the source of truth. Each exhibit is committed in one transaction
together with its descriptor, after its processed scan is written (atomically,
under a content-derived name); the index file is derived data, saved after
each batch and checked against SQLite when the store opens: a stale, missing
or corrupt index is rebuilt from the stored descriptors. A crash or
``kill -9`` at any moment therefore leaves a store that reopens consistent;
ingesting the same files again skips what was committed (an exhibit is its
source's SHA-256) and resumes. Readers may search while one writer ingests
(WAL mode).
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._records import check_exhibit_meta, check_firearm, check_scene, safe_id, safe_text
from .._version import __version__
from ..errors import BallistixError, IndexFormatError, ParameterError
from ..evidence import population
from ..features.comparison import DEFAULTS as COMPARE_DEFAULTS
from ..features.comparison import compare_many, process_pool, processing_signature
from ..features.describe import describe, descriptor_info
from ..features.preprocessing import preprocess
from ..index import ScanIndex
from ..index.search import Candidate, rerank
from ..io import read_npz, read_scan, write_npz
from ..io._units import check_units
from ..scan import Scan

__all__ = ["CaseStore", "StoreError", "SCHEMA_VERSION", "IngestReport"]

SCHEMA_VERSION = 2

_SCHEMA = [
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE exhibits (
        rowid INTEGER PRIMARY KEY,            -- the index id
        exhibit_id TEXT NOT NULL UNIQUE,
        source_sha256 TEXT NOT NULL UNIQUE,   -- of the source file (or of the heights of an in-memory scan)
        source_name TEXT,
        kind TEXT NOT NULL DEFAULT 'scene' CHECK (kind IN ('scene', 'test_fire')),
        scene_id TEXT, firearm_id TEXT, calibre TEXT, date TEXT,
        meta_json TEXT NOT NULL,              -- labels and other metadata given at ingest
        processing_json TEXT NOT NULL,        -- preprocess steps and parameters
        descriptor BLOB NOT NULL,             -- float32 descriptor
        scan_file TEXT NOT NULL,              -- processed scan, relative to the store
        linked INTEGER NOT NULL DEFAULT 0,    -- compared with the store by link_new
        created_utc TEXT NOT NULL, created_by TEXT NOT NULL, ballistix_version TEXT NOT NULL)""",
    """CREATE TABLE scenes (scene_id TEXT PRIMARY KEY, attrs_json TEXT NOT NULL,
        created_utc TEXT NOT NULL, created_by TEXT NOT NULL)""",
    """CREATE TABLE firearms (firearm_id TEXT PRIMARY KEY, attrs_json TEXT NOT NULL,
        created_utc TEXT NOT NULL, created_by TEXT NOT NULL)""",
    """CREATE TABLE comparisons (
        a INTEGER NOT NULL REFERENCES exhibits(rowid), b INTEGER NOT NULL REFERENCES exhibits(rowid),
        cmc_count INTEGER NOT NULL, score REAL NOT NULL, rotation_deg REAL,
        params_json TEXT NOT NULL, confirmed INTEGER, created_utc TEXT NOT NULL, created_by TEXT NOT NULL,
        ballistix_version TEXT NOT NULL,
        log10_lr REAL,                        -- calibrated likelihood ratio (NULL: no calibration applied)
        evidence_json TEXT,                   -- calibration, conclusion and its error rates, or why no LR
        PRIMARY KEY (a, b), CHECK (a < b))""",
    """CREATE TABLE failures (source TEXT NOT NULL, sha256 TEXT, reason TEXT NOT NULL, created_utc TEXT NOT NULL)""",
]
#: Migrations: MIGRATIONS[v] takes a store at schema version v to v + 1.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE comparisons ADD COLUMN log10_lr REAL", "ALTER TABLE comparisons ADD COLUMN evidence_json TEXT"],
}


class StoreError(BallistixError):
    """The store folder is not a ballistix store, is newer than this library, or is damaged."""


@dataclass
class IngestReport:
    """What `CaseStore.ingest` did: exhibit ids added, ids of inputs already in the store,
    and ``(source, reason)`` for inputs skipped as bad."""

    added: list[str]
    existing: list[str]
    failed: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return {"added": self.added, "existing": self.existing, "failed": [list(f) for f in self.failed]}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return f"{getpass.getuser()}@ballistix-{__version__}"
    except (KeyError, OSError):  # no user name in some containers
        return f"uid{os.getuid()}@ballistix-{__version__}"


def _scan_sha256(scan: Scan) -> str:
    if scan.meta.get("sha256"):
        return str(scan.meta["sha256"])
    h = hashlib.sha256(np.ascontiguousarray(scan.heights, dtype="<f8").tobytes())
    h.update(np.array([scan.dx, scan.dy], "<f8").tobytes())
    return h.hexdigest()


class CaseStore:
    """A lab's case database in one folder (see the module notes).

    Parameters
    ----------
    folder : path
        Created if missing. An existing store is opened, migrated to the
        current schema, and its index checked.
    preprocess_params, compare_params : dict, optional
        Passed to `preprocess` and `compare`; recorded with every exhibit and
        comparison. A store keeps the parameters it was created with.
    """

    def __init__(self, folder, *, preprocess_params: Mapping | None = None,
                 compare_params: Mapping | None = None, shortlist: int = 50):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"{self.folder}: not a folder")
        try:
            (self.folder / "scans").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.folder}: cannot create the store here ({e.strerror})") from None
        self.db_path = self.folder / "store.sqlite"
        self.index_path = self.folder / "index.bxi"
        self._db = self._connect()
        self._migrate()
        self.preprocess_params = self._setting("preprocess_params", dict(preprocess_params or {}))
        self.compare_params = self._setting("compare_params", dict(compare_params or {}))
        self.shortlist = int(shortlist)
        self.descriptor = descriptor_info()
        self._index = self._load_or_rebuild_index()
        self._cals = None  # calibrations to choose from (registered, then shipped), read when first needed

    # ------------------------------------------------------------ database
    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)  # explicit transactions
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.db_path}: not a readable SQLite database ({e})") from None
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        db = self._db
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.db_path}: not a readable SQLite database ({e})") from None
        if not tables:
            db.execute("BEGIN IMMEDIATE")  # two processes creating one store: the second sees the first's
            if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table'").fetchone():
                for stmt in _SCHEMA:
                    db.execute(stmt)
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("format", "ballistix-case-store"), ("schema_version", str(SCHEMA_VERSION)),
                    ("created_utc", _now()), ("created_by", _user())])
            db.execute("COMMIT")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            raise StoreError(f"{self.db_path}: not a ballistix store (no meta table)")
        version = int(dict(db.execute("SELECT key, value FROM meta")).get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.db_path}: schema version {version} is newer than this ballistix "
                             f"({SCHEMA_VERSION}); upgrade ballistix")
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise StoreError(f"{self.db_path}: no migration from schema version {version}")
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[version]:
                    db.execute(stmt)
                db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version + 1),))
                db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                db.execute("ROLLBACK")
                raise StoreError(f"{self.db_path}: migration from schema version {version} failed ({e}); "
                                 f"the store is unchanged") from None
            version += 1

    def _setting(self, key: str, value: dict) -> dict:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))
            return value
        stored = json.loads(row[0])
        if value and value != stored:
            raise ParameterError(f"this store was made with {key}={stored}; open it without {key} or use a new store")
        return stored

    @property
    def decision_rule(self) -> dict:
        """The store's link rule: ``{"link_lr": 100.0, "count_rule": None}`` unless the lab set
        another with `set_decision_rule` (then also ``set_by``, ``set_utc``, ``reason``)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='decision_rule'").fetchone()
        return json.loads(row[0]) if row else {"link_lr": 100.0, "count_rule": None}

    def set_decision_rule(self, *, link_lr: float = 100.0, count_rule: int | None = None,
                          reason: str = "") -> dict:
        """Set the rule by which an unreviewed comparison becomes a link in this store's graph,
        leads and report (see `LinkageGraph`). ``count_rule`` (a CMC count) replaces the LR
        rule: set it only for a population on which the lab validated it (``reason`` should
        say where, e.g. the validation report); it is named in every output."""
        from ..graph import LinkageGraph

        LinkageGraph(link_lr=link_lr, count_rule=count_rule)  # validates both
        if count_rule is not None and not str(reason).strip():
            raise ParameterError("a count rule replaces calibrated evidence: give the reason (the lab's "
                                 "validation that supports it)")
        rule = {"link_lr": float(link_lr), "count_rule": None if count_rule is None else int(count_rule),
                "reason": str(reason), "set_by": _user(), "set_utc": _now()}
        self._db.execute("INSERT INTO meta VALUES ('decision_rule', ?) ON CONFLICT(key) DO UPDATE SET "
                         "value=excluded.value", (json.dumps(rule, sort_keys=True),))
        return rule

    # -------------------------------------------------------- calibrations
    def register_calibration(self, path, *, reason: str) -> dict:
        """Register a calibration file (for example the one `ballistix.validate` wrote from the
        lab's own reference scans) for this store's comparisons.

        The file is checked (`evidence.load_calibration`) and copied into the
        store's ``calibrations/`` folder under its SHA-256; who registered it,
        when, from which file, from what reference data (the counts and
        validation record the calibration states) and why are recorded. Only
        shipped and registered calibrations weigh this store's comparisons
        (see `evidence.trusted_calibration`). From then on each new
        comparison takes the most specific calibration, registered or shipped,
        whose domain holds both scans. Returns the record.
        """
        from .. import evidence

        if not str(reason).strip():
            raise ParameterError("say why this calibration applies (for example its validation report)")
        evidence.load_calibration(path)  # size, format and checksum checked before anything is copied
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        rel = f"calibrations/{sha}.json"
        (self.folder / "calibrations").mkdir(exist_ok=True)
        target = self.folder / rel
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        try:
            cal = evidence.load_calibration(tmp)  # the bytes that are kept are the bytes checked
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
        ref = cal.reference
        rec = {"file": rel, "sha256": sha, "content_sha256": cal.sha256, "name": cal.name, "domain": cal.domain,
               "source": str(path), "reason": str(reason), "registered_by": _user(), "registered_utc": _now(),
               "reference": {k: ref.get(k) for k in ("description", "n_same", "n_different", "features_sha256",
                                                     "validation") if ref.get(k) is not None}}
        recs = [r for r in self.calibration_records() if r["sha256"] != sha] + [rec]
        self._db.execute("INSERT INTO meta VALUES ('calibrations', ?) ON CONFLICT(key) DO UPDATE SET "
                         "value=excluded.value", (json.dumps(recs, sort_keys=True),))
        self._cals = None
        return rec

    def calibration_records(self) -> list[dict]:
        """The calibrations registered in this store (see `register_calibration`)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='calibrations'").fetchone()
        return json.loads(row[0]) if row else []

    def calibrations(self) -> list:
        """The calibrations this store's comparisons choose from: the registered ones (each checked
        against the checksum recorded when it was registered), then the shipped ones."""
        from .. import evidence

        if self._cals is None:
            cals = []
            for r in self.calibration_records():
                path = self.folder / r["file"]
                try:
                    ok = hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"]
                except OSError:
                    ok = False
                if not ok:
                    raise StoreError(f"{path}: the registered calibration {r['name']!r} is missing or altered")
                cal = evidence.load_calibration(path)
                cal.origin = {"kind": "registered", "store": str(self.folder), "sha256": cal.sha256,
                              **{k: r.get(k) for k in ("registered_by", "registered_utc", "reason", "source")}}
                cals.append(cal)
            self._cals = cals + evidence.shipped_calibrations()
        return self._cals

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM exhibits").fetchone()[0])

    def __repr__(self) -> str:
        return f"<CaseStore {self.folder}: {len(self)} exhibits, index {len(self._index)}>"

    # --------------------------------------------------------------- index
    def _descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._db.execute("SELECT rowid, descriptor FROM exhibits ORDER BY rowid").fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1) if rows else \
            np.zeros((0, self.descriptor["dim"]), np.float32)
        return ids, vecs

    def rebuild_index(self) -> ScanIndex:
        """Rebuild the FAISS index from the descriptors in SQLite and save it (atomically)."""
        ids, vecs = self._descriptors()
        index = ScanIndex(self.descriptor["dim"], descriptor=self.descriptor)
        if len(ids):
            index.add(ids, vecs)
        index.save(self.index_path)
        self._index = index
        return index

    def _load_or_rebuild_index(self) -> ScanIndex:
        if not self.index_path.exists():
            return self.rebuild_index()
        try:
            index = ScanIndex.load(self.index_path, descriptor=self.descriptor)
        except (IndexFormatError, BallistixError):
            return self.rebuild_index()
        ids = np.array([r[0] for r in self._db.execute("SELECT rowid FROM exhibits ORDER BY rowid")], np.int64)
        if not np.array_equal(index.ids, ids):
            return self.rebuild_index()
        return index

    def check_index(self) -> None:
        """Raise `IndexFormatError` if the index file is missing, corrupt, or disagrees with SQLite."""
        index = ScanIndex.load(self.index_path, descriptor=self.descriptor)
        ids = np.array([r[0] for r in self._db.execute("SELECT rowid FROM exhibits ORDER BY rowid")], np.int64)
        if not np.array_equal(index.ids, ids):
            raise IndexFormatError(self.index_path, f"holds {len(index)} exhibits, the store {len(ids)}")

    # -------------------------------------------------------------- ingest
    def add_scene(self, scene_id: str, **attrs) -> None:
        """Record (or update) a scene: date (YYYY-MM-DD), place, lat, lon, context, ...
        (checked: see `ballistix._records.check_scene`)."""
        self._upsert("scenes", "scene_id", scene_id, check_scene(scene_id, attrs))

    def add_firearm(self, firearm_id: str, **attrs) -> None:
        """Record (or update) a recovered firearm: make, model, serial, status (seized, found or
        surrendered), recovery_date (YYYY-MM-DD), tracing_status (traced, in progress, not traced,
        not requested), ... (checked: see `ballistix._records.check_firearm`)."""
        self._upsert("firearms", "firearm_id", firearm_id, check_firearm(firearm_id, attrs))

    def _upsert(self, table: str, key: str, value: str, attrs: dict) -> None:
        if not isinstance(value, str) or not value:
            raise ParameterError(f"{key} must be a non-empty string, got {value!r}")
        self._db.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?) ON CONFLICT({key}) DO UPDATE SET "
                         f"attrs_json=excluded.attrs_json", (value, json.dumps(attrs, sort_keys=True, default=str),
                                                             _now(), _user()))


    def ingest(self, items: Iterable, meta: Mapping | Iterable[Mapping] | None = None, *,
               progress: bool = True, client=None, units: str = "auto",
               pixel_size_m: float | None = None) -> IngestReport:
        """Add scan files (or in-memory `Scan` objects) to the store.

        ``meta``: one mapping for all items or one per item, with any of
        ``exhibit_id`` (default: the source file's stem, made unique), ``kind``
        ("scene" or "test_fire"), ``scene_id``, ``firearm_id``, ``calibre``,
        ``date`` and other labels (kept as JSON). An input whose SHA-256 is
        already in the store is not added again (reported as existing). A bad
        input is recorded in ``failures`` with its reason and skipped; the
        batch goes on. Each exhibit is committed on its own, and the index is
        saved at the end. ``client`` (a `distributed.Client` or a scheduler
        address): read, preprocess and describe on a Dask cluster (workers must
        see the store's folder); the database is written here. ``units``
        ("auto", "m", "mm", "um"): the length unit of the x3p files, passed
        to `read_scan` (see `read_x3p`); in-memory scans are already in metres.
        ``pixel_size_m``: the pixel size of 2-D images (.png, .tif) that do not
        carry one, in metres (passed to `read_image`; other files ignore it).
        A file name that is not valid UTF-8 is recorded with its undecodable
        bytes written as ``\\xff``.
        """
        from tqdm.auto import tqdm

        check_units(units)
        items = [os.fsdecode(i) if isinstance(i, bytes) else i for i in items]  # bytes paths (os.listdir(b"."))
        metas = [dict(meta or {})] * len(items) if meta is None or isinstance(meta, Mapping) else \
            [dict(m) for m in meta]
        if len(metas) != len(items):
            raise ParameterError(f"{len(metas)} meta records for {len(items)} items")
        report = IngestReport([], [], [])
        new_ids, new_vecs = [], []
        jobs = []  # inputs to read, preprocess and describe
        for item, m in zip(items, metas):
            source = str(item.meta.get("source", "in-memory scan")) if isinstance(item, Scan) else str(item)
            try:
                _check_meta(m)
                if not isinstance(item, Scan) and not Path(item).is_file():
                    raise ParameterError(f"{item}: no such file")
                sha_known = None if isinstance(item, Scan) else _file_sha256(Path(item))
            except (BallistixError, OSError) as e:
                self._fail(report, source, str(e))
                continue
            row = self._db.execute("SELECT exhibit_id FROM exhibits WHERE source_sha256=?",
                                   (sha_known,)).fetchone() if sha_known else None
            if row:
                report.existing.append(row[0])
            else:
                jobs.append((source, m, (str(self.folder), self.preprocess_params, item, m, sha_known, units,
                                         pixel_size_m)))
        if client is not None:  # the heavy part on the cluster, the database writes here
            from .._dask import dask_map

            prepared = dask_map(_prepare, [j for *_, j in jobs], client)
        else:
            prepared = (_prepare(j) for *_, j in jobs)
        for (source, m, _), out in tqdm(zip(jobs, prepared), total=len(jobs), disable=not progress, desc="ingest"):
            if out[0] is None:
                self._fail(report, source, out[1])
                continue
            rowid, exhibit_id, added = self._insert(*out, m)
            (report.added if added else report.existing).append(exhibit_id)
            if added:
                new_ids.append(rowid)
                new_vecs.append(out[3])
        if new_ids:
            try:
                self._index.add(np.array(new_ids, np.int64), np.array(new_vecs))
                self._index.save(self.index_path)
            except BallistixError:
                self.rebuild_index()
        return report

    def _fail(self, report: IngestReport, source: str, reason: str) -> None:
        source, reason = safe_text(source), safe_text(reason)  # names that are not UTF-8 (bytes on disk)
        self._db.execute("INSERT INTO failures VALUES (?, ?, ?, ?)", (source, None, reason, _now()))
        report.failed.append((source, reason))

    def _insert(self, sha, name, processing, vec, rel, pop, m) -> tuple[int, str, bool]:
        m = {**m, "population": pop}
        kind = m.pop("kind", None) or ("test_fire" if m.get("firearm_id") else "scene")
        name = safe_text(name)  # a file name that is not UTF-8: its bytes kept as \xff
        wanted = m.pop("exhibit_id", None) or safe_id(Path(name).stem) or sha[:12]
        fields = {k: m.pop(k, None) for k in ("scene_id", "firearm_id", "calibre", "date")}
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT rowid, exhibit_id FROM exhibits WHERE source_sha256=?", (sha,)).fetchone()
            if row:  # another writer (or an earlier run) committed it meanwhile
                db.execute("ROLLBACK")
                return row[0], row[1], False
            exhibit_id, k = str(wanted), 1
            while db.execute("SELECT 1 FROM exhibits WHERE exhibit_id=?", (exhibit_id,)).fetchone():
                k += 1
                exhibit_id = f"{wanted}-{k}"
            cur = db.execute(
                "INSERT INTO exhibits (exhibit_id, source_sha256, source_name, kind, scene_id, firearm_id, calibre,"
                " date, meta_json, processing_json, descriptor, scan_file, created_utc, created_by,"
                " ballistix_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (exhibit_id, sha, Path(name).name, kind, fields["scene_id"], fields["firearm_id"], fields["calibre"],
                 fields["date"], json.dumps(m, sort_keys=True, default=str),
                 json.dumps(processing, default=str), vec.astype(np.float32).tobytes(), rel,
                 _now(), _user(), __version__))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(cur.lastrowid), exhibit_id, True

    # -------------------------------------------------------------- access
    def add_casework(self, cw, items=None, *, progress: bool = True, client=None) -> IngestReport:
        """Register a simulated casework's scenes and recovered firearms (`bx.datasets.Casework`) and
        ingest its exhibits with their labels; ``items``: the exhibits' scans (default ``cw.scans``)
        or the files they were written to, in the order of ``cw.exhibits``."""
        for sc in cw.scenes:
            self.add_scene(sc["id"], **{k: v for k, v in sc.items() if k not in ("id", "firearms")})
        for f in cw.firearms:
            if f["recovered"]:
                self.add_firearm(f["id"], **{k: v for k, v in f.items() if k not in ("id", "scenes", "recovered")})
        meta = [{"exhibit_id": e["id"], "kind": e["kind"], "scene_id": e["scene"], "firearm_id": e["test_fired_from"],
                 "date": e["date"], "calibre": e["calibre"]} for e in cw.exhibits]
        return self.ingest(cw.scans if items is None else items, meta=meta, progress=progress, client=client)

    def exhibits(self) -> list[dict]:
        """Every exhibit's record (without the descriptor), in ingest order."""
        cols = ["rowid", "exhibit_id", "source_sha256", "source_name", "kind", "scene_id", "firearm_id", "calibre",
                "date", "meta_json", "scan_file", "linked", "created_utc", "created_by", "ballistix_version"]
        rows = self._db.execute(f"SELECT {', '.join(cols)} FROM exhibits ORDER BY rowid").fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def failures(self) -> list[dict]:
        rows = self._db.execute("SELECT source, reason, created_utc FROM failures ORDER BY rowid").fetchall()
        return [{"source": s, "reason": r, "created_utc": t} for s, r, t in rows]

    def _rowid(self, exhibit_id: str) -> int:
        key = safe_text(exhibit_id) if isinstance(exhibit_id, str) else exhibit_id  # ids from file names
        row = self._db.execute("SELECT rowid FROM exhibits WHERE exhibit_id=?", (key,)).fetchone()
        if row is None:
            raise ParameterError(f"no exhibit {exhibit_id!r} in the store {self.folder}")
        return int(row[0])

    def scan(self, exhibit_id_or_rowid) -> Scan:
        """The processed scan of an exhibit (from the cache)."""
        rowid = exhibit_id_or_rowid if isinstance(exhibit_id_or_rowid, (int, np.integer)) else \
            self._rowid(exhibit_id_or_rowid)
        row = self._db.execute("SELECT scan_file FROM exhibits WHERE rowid=?", (int(rowid),)).fetchone()
        if row is None:
            raise ParameterError(f"no exhibit with index id {rowid} in the store")
        path = self.folder / row[0]
        if not path.is_file():
            raise StoreError(f"{path}: the processed scan of exhibit {rowid} is missing from the cache")
        return read_npz(path)

    # -------------------------------------------------------------- search
    def search(self, query, k: int = 20, *, shortlist: int | None = None, n_jobs: int = 1,
               units: str = "auto", pixel_size_m: float | None = None) -> list[dict]:
        """Two-stage search of the store for a scan file, a `Scan`, or an exhibit id in the store.

        ``units``: the length unit of a query x3p file, passed to `read_scan`;
        ``pixel_size_m``: the pixel size of a query image that does not carry one.

        Returns up to ``k`` candidates, best first, each a dict with
        ``exhibit_id``, ``source_name``, ``cmc_count``, ``score``,
        ``descriptor_score``, ``descriptor_rank``, ``log10_lr`` (None: no
        calibration applies to the pair), ``calibration`` (its name,
        ``calibration_sha256`` and ``calibration_origin``) and ``conclusion``
        ("identification", "inconclusive", "elimination", or "candidate" when
        there is no LR: for an examiner, never an identification).
        """
        exclude = ()
        if isinstance(query, str) and not Path(query).suffix and self._db.execute(
                "SELECT 1 FROM exhibits WHERE exhibit_id=?", (safe_text(query),)).fetchone():
            rowid = self._rowid(query)
            proc, exclude = self.scan(rowid), (rowid,)
        else:
            raw = query if isinstance(query, Scan) else read_scan(query, units=units,
                                                                  **_image_kw(query, pixel_size_m))
            proc = preprocess(raw, **self.preprocess_params)
        cands = self._candidates(proc, k, shortlist or self.shortlist, exclude, n_jobs)
        names = dict(self._db.execute("SELECT rowid, exhibit_id FROM exhibits"))
        files = dict(self._db.execute("SELECT rowid, source_name FROM exhibits"))
        return [{"exhibit_id": names[c.id], "source_name": files[c.id], "cmc_count": c.cmc_count,
                 "score": c.score, "descriptor_score": c.descriptor_score, "descriptor_rank": c.descriptor_rank,
                 "log10_lr": c.comparison.log10_lr, "calibration": c.comparison.evidence.get("calibration"),
                 "calibration_sha256": c.comparison.evidence.get("calibration_sha256"),
                 "calibration_origin": (c.comparison.evidence.get("calibration_origin") or {}).get("text"),
                 "conclusion": (c.comparison.evidence.get("conclusion") or {}).get("conclusion", "candidate")}
                for c in cands]

    def _candidates(self, proc: Scan, k: int, shortlist: int, exclude, n_jobs: int) -> list[Candidate]:
        if int(k) != k or k < 1:
            raise ParameterError(f"k must be a positive integer, got {k!r}")
        shortlist = max(int(shortlist), int(k))
        scores, ids = self._index.search(describe(proc)[None], shortlist + len(exclude))
        cands = [Candidate(int(i), float(s), r) for r, (s, i) in enumerate(zip(scores[0], ids[0]))
                 if i >= 0 and int(i) not in exclude][:shortlist]
        res = compare_many([(proc, self.scan(c.id)) for c in cands], n_jobs=n_jobs, progress=False,
                           calibration=self.calibrations(), **self.compare_params)
        for c, r in zip(cands, res):
            c.cmc_count, c.score, c.comparison = int(r.cmc_count), float(r.score), r
        return rerank(cands)[:k]

    # ---------------------------------------------------------------- link
    def link_new(self, *, n_jobs: int = 1, progress: bool = True, client=None) -> int:
        """Compare every exhibit not linked yet with its shortlist in the store and record the
        comparisons; returns the number of comparisons recorded. ``client``: compare on a Dask
        cluster (see `ingest`)."""
        todo = [r[0] for r in self._db.execute("SELECT rowid FROM exhibits WHERE linked=0 ORDER BY rowid")]
        if not todo:
            return 0
        # one pool of workers for every exhibit's shortlist (a pool per exhibit cost a second each)
        with process_pool(n_jobs) if n_jobs > 1 and client is None else nullcontext() as pool:
            return self._link(todo, n_jobs, progress, client, pool)

    def _link(self, todo, n_jobs, progress, client, pool) -> int:
        from tqdm.auto import tqdm

        params = json.dumps({**COMPARE_DEFAULTS, **self.compare_params}, sort_keys=True, default=str)
        n = 0
        for rowid in tqdm(todo, disable=not progress, desc="link"):
            have = {b for (b,) in self._db.execute("SELECT b FROM comparisons WHERE a=?", (rowid,))} | \
                   {a for (a,) in self._db.execute("SELECT a FROM comparisons WHERE b=?", (rowid,))}
            proc = self.scan(rowid)
            scores, ids = self._index.search(describe(proc)[None], self.shortlist + 1)
            targets = [int(i) for i in ids[0] if i >= 0 and int(i) != rowid and int(i) not in have]
            res = compare_many([(proc, self.scan(t)) for t in targets], n_jobs=n_jobs, progress=False,
                               client=client, executor=pool, calibration=self.calibrations(), **self.compare_params)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for t, r in zip(targets, res):
                    a, b = sorted((rowid, t))
                    self._db.execute(
                        "INSERT OR REPLACE INTO comparisons (a, b, cmc_count, score, rotation_deg, params_json, "
                        "confirmed, created_utc, created_by, ballistix_version, log10_lr, evidence_json) "
                        "VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                        (a, b, int(r.cmc_count), float(r.score), float(r.rotation_deg), params, _now(), _user(),
                         __version__, r.log10_lr, json.dumps(r.evidence, sort_keys=True, default=str)))
                self._db.execute("UPDATE exhibits SET linked=1 WHERE rowid=?", (rowid,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            n += len(targets)
        return n

    def confirm(self, exhibit_a: str, exhibit_b: str, verdict: bool) -> None:
        """Record an examiner's verdict on a recorded comparison."""
        a, b = sorted((self._rowid(exhibit_a), self._rowid(exhibit_b)))
        cur = self._db.execute("UPDATE comparisons SET confirmed=? WHERE a=? AND b=?", (int(bool(verdict)), a, b))
        if cur.rowcount == 0:
            raise ParameterError(f"no comparison of {exhibit_a!r} and {exhibit_b!r} in the store")

    def report(self, path, *, since: str | None = None) -> Path:
        """Write the HTML report (leads, same-gun groups, scene timeline, 16.4.2) under the store's
        decision rule; see `report.write_report`."""
        from .report import write_report

        return write_report(self, path, since=since)

    def graph(self, *, confirmed_only: bool = False):
        """The `LinkageGraph` of everything in the store, under the store's `decision_rule`
        (``confirmed_only``: only examiner-confirmed links)."""
        from ..graph import LinkageGraph

        rule = self.decision_rule
        g = LinkageGraph(link_lr=rule["link_lr"], count_rule=rule["count_rule"], confirmed_only=confirmed_only)
        for sid, attrs in self._db.execute("SELECT scene_id, attrs_json FROM scenes"):
            g.add_scene(sid, **json.loads(attrs))
        for fid, attrs in self._db.execute("SELECT firearm_id, attrs_json FROM firearms"):
            g.add_firearm(fid, **json.loads(attrs))
        names = {}
        for rowid, eid, sha, src, kind, scene, gun, cal, date in self._db.execute(
                "SELECT rowid, exhibit_id, source_sha256, source_name, kind, scene_id, firearm_id, calibre, date "
                "FROM exhibits ORDER BY rowid"):
            names[rowid] = eid
            g.add_exhibit(eid, scene=scene if kind == "scene" else None,
                          test_fired_from=gun if kind == "test_fire" else None,
                          sha256=sha, source_name=src, calibre=cal, date=date)
        rows = self._db.execute("SELECT a, b, cmc_count, score, rotation_deg, confirmed, log10_lr, params_json, "
                                "evidence_json FROM comparisons ORDER BY a, b").fetchall()
        cohort = self._cohort_lrs([r[:8] for r in rows])
        for a, b, cmc, score, rot, confirmed, lr, _, ev in rows:
            ev = json.loads(ev or "{}")
            origin = {"calibration_sha256": ev.get("calibration_sha256"),
                      "calibration_origin": (ev.get("calibration_origin") or {}).get("text")} if lr is not None else {}
            res = {"cmc_count": cmc, "score": score, "rotation_deg": rot, "log10_lr": lr, **origin,
                   **cohort.get((a, b), {})}
            if confirmed is not None:
                res["confirmed"] = bool(confirmed)
            g.add_comparison(names[a], names[b], res)
        return g

    def _cohort_lrs(self, rows) -> dict[tuple[int, int], dict]:
        """Likelihood ratios of the recorded comparisons from a cohort calibration (registered or
        shipped), where one applies: each pair's CMC count above both exhibits' backgrounds in
        this store (their other comparisons, `ballistix.cohort.normalise_pairs`, with the
        calibration's cohort settings; within the other exhibit's scanning ``batch`` when
        exhibits carry one), weighed by the calibration fitted on such excesses. A pair whose
        exhibits have too few comparisons keeps its own LR. Recomputed at every call: the
        backgrounds change as exhibits arrive."""
        from ..cohort import normalise_pairs
        from ..evidence import cap_without_cells, population, select_calibration

        cals = [c for c in self.calibrations() if c.needs_cohort]
        if not cals or not rows:
            return {}
        ex = {}
        for rowid, kind, gun, calibre, meta, proc in self._db.execute(
                "SELECT rowid, kind, firearm_id, calibre, meta_json, processing_json FROM exhibits"):
            m = json.loads(meta)
            labels = {**(m.get("labels") or {}), **({"calibre": calibre} if calibre else {})}
            ex[rowid] = {"gun": gun if kind == "test_fire" else None, "batch": m.get("batch"),
                         "population": population({"labels": labels, "population": m.get("population")}),
                         "processing": processing_signature(json.loads(proc))}
        ida = np.array([r[0] for r in rows])
        idb = np.array([r[1] for r in rows])
        cmc = np.array([r[2] for r in rows], float)
        same = np.array([ex[a]["gun"] is not None and ex[a]["gun"] == ex[b]["gun"] for a, b in zip(ida, idb)])
        batches = all(e["batch"] is not None for e in ex.values())
        out: dict[tuple[int, int], dict] = {}
        for cal in cals:
            settings = dict(cal.reference.get("cohort") or {})
            kw = {k: settings[k] for k in ("exclude_top", "min_size", "quantile") if k in settings}
            keys = {"keys_a": [str(ex[a]["batch"]) for a in ida], "keys_b": [str(ex[b]["batch"]) for b in idb]} \
                if batches and settings.get("by_batch", True) else {}
            excess, st = normalise_pairs(ida, idb, cmc, known_same=same, method="excess", return_stats=True,
                                         **keys, **kw)
            background = np.fmax([x.location for x in st["a"]], [x.location for x in st["b"]])
            limit = settings.get("max_background")
            for k, (a, b, *_, params) in enumerate(rows):
                if (a, b) in out or not np.isfinite(excess[k]):
                    continue
                probe = _PairRecord(json.loads(params), ex[a], ex[b], a, b)
                chosen, _ = select_calibration(probe, cals, cohort=True)
                if chosen is not cal:
                    continue
                if limit is not None and background[k] >= limit:  # an exhibit that does not discriminate here
                    out[(a, b)] = {"log10_lr": None, "pair_log10_lr": rows[k][6], "cmc_background": background[k],
                                   "calibration_sha256": None, "calibration_origin": None,
                                   "lr_basis": f"withheld: an exhibit reaches {background[k]:g} CMCs against others "
                                               f"of its population (limit {limit:g} of {cal.name}): not "
                                               f"discriminating"}
                    continue
                lr = cap_without_cells(float(cal.log10_lr(np.array([[excess[k]]]))[0]), rows[k][2])
                out[(a, b)] = {"log10_lr": lr, "pair_log10_lr": rows[k][6], "cmc_excess": float(excess[k]),
                               "cmc_background": float(background[k]), "lr_basis": f"cohort: {cal.name}",
                               "calibration_sha256": cal.sha256, "calibration_origin": cal.describe_origin()}
        return out


class _PairRecord:
    """A recorded comparison as `Calibration.check` reads it: parameters and both inputs'
    processing and population."""

    def __init__(self, params: dict, a: dict, b: dict, ia, ib):
        self.params = params
        self.inputs = {"a": {"processing": a["processing"], "population": a["population"], "label": str(ia)},
                       "b": {"processing": b["processing"], "population": b["population"], "label": str(ib)}}


def _prepare(job: tuple) -> tuple:
    """Read, preprocess and describe one input and write its processed scan to the cache (no
    database access: runs in this process or on a Dask worker). Returns (sha256, name,
    processing steps, descriptor, cache path relative to the store, population) or (None, reason)."""
    folder, params, item, meta, sha, units, pixel_size_m = job
    try:
        if isinstance(item, Scan):
            raw, name = item, str(item.meta.get("source") or meta.get("exhibit_id") or "in-memory scan")
        else:
            name = str(item)
            raw = read_scan(item, units=units, **_image_kw(item, pixel_size_m))
        sha = sha or _scan_sha256(raw)
        proc = preprocess(raw, **params)
        vec = describe(proc)
        rel = f"scans/{sha[:2]}/{sha}.npz"
        (Path(folder) / "scans" / sha[:2]).mkdir(exist_ok=True)
        labels = {**(raw.meta.get("labels") or {}), **(meta.get("labels") or {}),
                  **{k: meta[k] for k in ("calibre", "make", "model", "instrument") if meta.get(k)}}
        pop = population({**raw.meta, "labels": labels})
        small = Scan(proc.heights.astype(np.float32), proc.dx, proc.dy,
                     {"processing": proc.meta.get("processing", []), "source_sha256": sha, "population": pop})
        write_npz(small, Path(folder) / rel)  # atomic, content-named: a crash leaves at worst an orphan file
        return sha, name, proc.meta.get("processing", []), vec, rel, pop
    except Exception as e:  # a bad input never stops the batch: recorded with its reason
        return None, str(e) if isinstance(e, BallistixError) else f"{type(e).__name__}: {e}"


def _check_meta(m: Mapping) -> None:
    check_exhibit_meta(m)  # kind, ids and calibre as text, date as YYYY-MM-DD


def _image_kw(path, pixel_size_m) -> dict:
    """``pixel_size_m`` for `read_scan` when ``path`` is an image and a size was given."""
    from ..io.formats import IMAGE_SUFFIXES

    return {"pixel_size_m": pixel_size_m} if pixel_size_m is not None and \
        Path(path).suffix.lower() in IMAGE_SUFFIXES else {}


def _file_sha256(path: Path) -> str:
    from ..io._zip import sha256_file

    return sha256_file(path)
