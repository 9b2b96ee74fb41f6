"""`CaseStore`: a lab's case database in one folder, nothing to install or start.

Layout of the folder::

    store.sqlite     exhibits, scenes, firearms, comparisons, decisions, failures, provenance (SQLite, WAL)
    scans/ab/<sha256>.npz   processed scans, named by the SHA-256 of their source
    index.bxi        the FAISS index of the exhibits' descriptors (`ScanIndex`)
    calibrations/<sha256>.json   calibrations the lab registered (`register_calibration`)

SQLite is the source of truth. Each exhibit is committed in one transaction
together with its descriptor, the SHA-256 of its source file and of its
processed scan (``scan_sha256``), the source's absolute path and units
(``source_path``, ``source_read``: what `check` needs to re-create a lost
scan) and the state of its cached scan (``scan_state``: ``ok``, ``damaged``
when a search found it altered or unreadable, ``missing`` when `check`
dropped it). The processed scan is written under a private name first and
moved to its content-derived name inside that transaction, so a crash leaves
at worst an orphan file and a committed exhibit always has its scan.
`scan` checks the file against ``scan_sha256`` before every use (stores
from before schema 3: against the source SHA-256 inside the file, until
``check(repair=True)`` records the checksum).

The index file is derived data, saved after each batch; after each save the
store records in ``meta.index_digest`` the SHA-256 of the checksums of the
file's members (which `ScanIndex.load` verifies anyway, so the check costs
nothing). When the store opens, a missing, corrupt or stale index, or one
whose digest differs (another store's index, an altered file), is rebuilt from
the stored descriptors with a `StoreWarning`. A crash or ``kill -9`` at any
moment therefore leaves a store that reopens consistent; ingesting the same
files again skips what was committed (an exhibit is its source's SHA-256) and
resumes. Readers may search while one writer ingests (WAL mode).

A store is created whole: the schema is built in a temporary database in the
folder and hard-linked to ``store.sqlite``, so a ``store.sqlite`` that is
empty, has no tables or is missing beside the store's other files is damage,
reported and never replaced. ``CaseStore(folder, read_only=True)`` writes
nothing; `check` verifies everything (fsck-style) and repairs what it can
(``store/check.py``). Searching and linking are `ballistix.index.search` over
the store's index and cached scans; the cohort likelihood ratios of the graph
are in ``store/cohort_lrs.py``, the HTML report in ``store/report.py``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import getpass
import hashlib
import json
import os
import secrets
import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import atomic_file, list_members, open_zip, read_member, sha256_file
from .._records import check_exhibit_meta, check_firearm, check_scene, check_text, safe_id, safe_text
from .._version import __version__
from ..errors import BallistixError, DamagedScanError, IndexFormatError, ParameterError, StoreError, StoreWarning
from ..evidence import weigh
from ..features.comparison import DEFAULTS as COMPARE_DEFAULTS
from ..features.comparison import process_pool
from ..features.describe import V1_INFO, describe, descriptor_info, descriptor_params
from ..features.preprocessing import preprocess
from ..fusion import weigh_comparison_marks
from ..graph.linkage import LINK_LR, mark_edge_fields, node_key
from ..index import ScanIndex
from ..index.search import check_top
from ..index.search import search as search_index
from ..io import check_units, read_scan, write_npz
from ..provenance import population
from ..scan import Scan, scan_sha256
from .bulk import import_prepared
from .casedata import KINDS, read_table_sha256, write_table
from .db import Database, Dialects, is_url, path_from_db, path_to_db, redact, render
from .db import errors as db_errors
from .decisions import _DECISIONS, VERDICTS
from .descriptors import PROJECT_FROM, build_index, descriptor_chunks, refine, refit_due
from .exchange import read_bundle, write_bundle
from .iafq import iafq_figures, write_iafq
from .imports import _IMPORTS
from .link import Job, Outcome, ScanRef, plan, read_cached_scan, run_jobs

__all__ = [
    "CaseStore",
    "StoreError",
    "DamagedScanError",
    "SearchResult",
    "SCHEMA_VERSION",
    "GRAPH_ALL_LIMIT",
    "VERDICTS",
    "IngestReport",
]

SCHEMA_VERSION = 5
#: `CaseStore.graph` keeps every comparison of a store of up to this many comparisons (by default);
#: above, only those an analysis uses (links, candidates, verdicts): see docs/store.md, "A national-size store".
GRAPH_ALL_LIMIT = 2_000_000


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
        created_utc TEXT NOT NULL, created_by TEXT NOT NULL, ballistix_version TEXT NOT NULL,
        scan_sha256 TEXT,                     -- of the processed scan file (NULL: ingested before schema 3)
        scan_state TEXT NOT NULL DEFAULT 'ok' CHECK (scan_state IN ('ok', 'damaged', 'missing')),
        source_path TEXT,                     -- absolute path of the source at ingest (NULL: in-memory scan;
                                              -- a BLOB: the path's bytes, where they are not UTF-8)
        source_read TEXT)                     -- read_scan's keywords at ingest (JSON: units, pixel_size_m)""",
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
    Dialects(  # PostgreSQL's tables have no rowid: the failures' order is kept in a column of their own
        "CREATE TABLE failures (source TEXT NOT NULL, sha256 TEXT, reason TEXT NOT NULL, created_utc TEXT NOT NULL)",
        'CREATE TABLE failures (source TEXT COLLATE "C" NOT NULL, sha256 TEXT COLLATE "C", '
        'reason TEXT COLLATE "C" NOT NULL, created_utc TEXT COLLATE "C" NOT NULL, '
        "failure_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY)",
    ),
    *_DECISIONS,
    *_IMPORTS,
]
#: Migrations: MIGRATIONS[v] takes a store at schema version v to v + 1.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE comparisons ADD COLUMN log10_lr REAL", "ALTER TABLE comparisons ADD COLUMN evidence_json TEXT"],
    2: [
        "ALTER TABLE exhibits ADD COLUMN scan_sha256 TEXT",
        "ALTER TABLE exhibits ADD COLUMN scan_state TEXT NOT NULL DEFAULT 'ok' "
        "CHECK (scan_state IN ('ok', 'damaged', 'missing'))",
        "ALTER TABLE exhibits ADD COLUMN source_path TEXT",
        "ALTER TABLE exhibits ADD COLUMN source_read TEXT",
    ],
    3: list(_DECISIONS),
    4: list(_IMPORTS),
}
#: Temporary databases of a store being created start with this (see `CaseStore._create`).
_NEW_PREFIX = ".store.sqlite.new-"
#: A store whose database is on a PostgreSQL server names it in this file of its folder (see `CaseStore`).
_POINTER = "store.database"
#: The file whose bytes SQLite clients lock to claim the exhibits they link (`Database.claim`).
_CLAIMS = "store.sqlite-claims"
#: Files that mark a folder as a case store's, beside store.sqlite.
_STORE_FILES = ("scans", "index.bxi", "calibrations", "store.sqlite-wal", "store.sqlite-shm", _CLAIMS)
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_SPACE_SQLITE = ("database or disk is full", "disk i/o error")
#: The columns a comparison recorded again replaces (all but the pair and the examiner's ``confirmed``).
_RECOMPARED = (
    "cmc_count",
    "score",
    "rotation_deg",
    "params_json",
    "created_utc",
    "created_by",
    "ballistix_version",
    "log10_lr",
    "evidence_json",
)


class SearchResult(list):
    """The candidates `CaseStore.search` found (a list, best first).

    ``skipped`` lists the shortlisted exhibits left out because their cached
    scan is damaged or missing: dicts with ``exhibit_id``, ``file``,
    ``problem`` and ``state``.
    """

    def __init__(self, candidates=(), skipped=()):
        super().__init__(candidates)
        self.skipped = list(skipped)

    def to_frame(self):
        """The candidates as a pandas DataFrame, best first (`ballistix.graph.frames.search_frame`:
        the columns and their types; ``attrs["skipped"]``). Needs ``pip install 'ballistix[analysis]'``."""
        from ..graph.frames import search_frame

        return search_frame(self)


def _no_space(e: BaseException) -> bool:
    """Whether ``e`` says a write failed for lack of room (full disk, quota, file size limit)."""
    if getattr(e, "sqlstate", None) == "53100":  # PostgreSQL's disk_full
        return True
    if isinstance(e, sqlite3.OperationalError):
        return str(e).lower() in _NO_SPACE_SQLITE
    return isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS


def _writes(what: str):
    """Decorate a `CaseStore` method that writes: refused on a read-only store, and a full disk
    becomes a `StoreError` (see `CaseStore._space`)."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if self.read_only:
                raise StoreError(f"{self.folder}: the store is opened read-only; cannot {what}")
            with self._space():
                return method(self, *args, **kwargs)

        return wrapper

    return decorate


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
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return f"{getpass.getuser()}@ballistix-{__version__}"
    except (KeyError, OSError):  # no user name in some containers
        return f"uid{os.getuid()}@ballistix-{__version__}"


class CaseStore:
    """A lab's case database in one folder (see the module notes).

    Parameters
    ----------
    folder : path
        The store's folder. An existing store is opened, migrated to the
        current schema, and its index checked.
    preprocess_params, compare_params : dict, optional
        Passed to `preprocess` and `compare`; recorded with every exhibit and
        comparison. A store keeps the parameters it was created with.
    shortlist : int
        Candidates verified by CMC per search (and compared per new exhibit
        by `link_new`).
    create : bool
        Create a new store when ``folder`` is missing or empty (default). With
        ``create=False`` a folder that holds no store is an error. A folder
        that is not empty and holds no store is never made one.
    read_only : bool
        Open without writing anything (a store on read-only media, or one the
        user may only read): a stale index is rebuilt in memory only, with a
        `StoreWarning`, and every method that writes raises `StoreError`.

    Raises
    ------
    StoreError
        The folder is not a store and cannot become one, its database is
        empty, missing, unreadable or damaged, it is newer than this
        ballistix, or there is no space left to write it. Nothing is changed.

    Examples
    --------
    >>> store = CaseStore("casefile/")                                  # doctest: +SKIP
    >>> CaseStore("casefile/", create=False, read_only=True).search("a.x3p")  # doctest: +SKIP
    """

    def __init__(
        self,
        folder,
        *,
        database: str | None = None,
        preprocess_params: Mapping | None = None,
        compare_params: Mapping | None = None,
        shortlist: int = 50,
        create: bool = True,
        read_only: bool = False,
    ):
        self.folder = Path(folder)
        self.db_path = self.folder / "store.sqlite"
        self.index_path = self.folder / "index.bxi"
        self.read_only = bool(read_only)
        self.created = False  # whether this call created the store
        self.skipped: list[dict] = []  # exhibits the last search or link_new left out (damaged cached scans)
        self.shortlist = int(shortlist)
        self.descriptor = descriptor_info()  # a new store's; an existing store's is read from it below
        self._cals = None  # calibrations to choose from (registered, then shipped), read when first needed
        self._marks_cals = None  # the same for the other marks (`marks_calibrations`)
        self._opening: list[dict] = []  # problems found and worked around while opening (reported by check)
        self._migrated_from = None
        self._index_seen = None  # the index digest this process's index is (see `_fresh_index`)
        if database is not None and not is_url(database):
            raise ParameterError(
                f"database must be a postgresql:// URL (or None: SQLite in the folder), got {database!r}"
            )
        with self._space():
            if self._is_new():
                if not create or self.read_only:
                    raise StoreError(
                        f"no case store at {self.folder}; `ballistix ingest --store {self.folder} "
                        f"FILES` creates one"
                        + (" (opened read-only: nothing is created)" if self.read_only and create else "")
                    )
                if database is None:
                    self.created = self._create(preprocess_params, compare_params)
                else:
                    self.created = self._create_postgresql(database, preprocess_params, compare_params)
            self._db = self._connect(database)
            try:
                self._migrate()
                self.preprocess_params = self._setting("preprocess_params", dict(preprocess_params or {}))
                self.compare_params = self._setting("compare_params", dict(compare_params or {}))
                self.descriptor = self._descriptor()
                if not self.read_only:
                    (self.folder / "scans").mkdir(exist_ok=True)
                self._index = self._load_or_rebuild_index()
            except BaseException:
                self._db.close()
                raise

    @property
    def backend(self) -> str:
        """Where the store's records are: ``"sqlite"`` (``store.sqlite`` in the folder) or ``"postgresql"``."""
        return self._db.dialect

    # ------------------------------------------------------------ database
    @contextlib.contextmanager
    def _space(self):
        """Turn a write that failed for lack of room into a `StoreError` naming the store."""
        try:
            yield
        except (*db_errors(), OSError) as e:
            if not _no_space(e):
                raise
            detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise StoreError(
                f"no space left to write {self.folder} ({detail}); what was committed before is "
                f"kept, nothing is half-written: free some space and run it again"
            ) from None

    def _is_new(self) -> bool:
        """Whether ``folder`` holds no store yet and may become one (missing or empty); raise
        `StoreError` for a folder that holds a damaged store or is not a store."""
        folder, db = self.folder, self.db_path
        if folder.exists() and not folder.is_dir():
            raise StoreError(f"{folder}: not a folder")
        if not folder.exists():
            return True
        if (folder / _POINTER).exists():
            return False
        if db.exists() or db.is_symlink():
            if not db.is_file():
                raise StoreError(f"{db}: not a file; the store's database must be a SQLite file; nothing was changed")
            if db.stat().st_size == 0:
                raise StoreError(
                    f"{db}: the database is empty (0 bytes): the store's records were lost or "
                    f"truncated; nothing was changed (restore store.sqlite from a backup; the "
                    f"store's other files are left as they are)"
                )
            return False
        try:
            names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(_NEW_PREFIX))
        except OSError as e:
            raise StoreError(f"{folder}: cannot list the folder ({e.strerror}); nothing was changed") from None
        if not names:
            return True
        if "store.sqlite" in names or _POINTER in names:  # another process created the store since the check above
            return False
        found = [n for n in names if n in _STORE_FILES]
        if found:
            raise StoreError(
                f"{db}: missing: {folder} holds a case store's files ({', '.join(found)}) but not "
                f"its database; nothing was changed (restore store.sqlite from a backup)"
            )
        raise StoreError(
            f"{folder}: not empty and not a case store (no store.sqlite); a new store is created "
            f"only in a missing or empty folder; nothing was changed"
        )

    def _new_meta(self, preprocess_params, compare_params) -> list[tuple[str, str]]:
        return [
            ("format", "ballistix-case-store"),
            ("schema_version", str(SCHEMA_VERSION)),
            ("created_utc", _now()),
            ("created_by", _user()),
            ("preprocess_params", json.dumps(dict(preprocess_params or {}), sort_keys=True)),
            ("compare_params", json.dumps(dict(compare_params or {}), sort_keys=True)),
            ("descriptor", json.dumps(self.descriptor, sort_keys=True)),
        ]

    def _create(self, preprocess_params, compare_params) -> bool:
        """Create the store whole: the schema and settings in a temporary database in the folder,
        then hard-linked to ``store.sqlite`` (which fails if another process created it first:
        then theirs is opened). Returns whether this call created it."""
        folder = self.folder
        made_folder = self._make_folder()
        tmp = folder / f"{_NEW_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        created = False
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
                db.execute("PRAGMA synchronous=FULL")
                db.execute("BEGIN")
                for stmt in _SCHEMA:
                    if sql := render(stmt, "sqlite"):
                        db.execute(sql)
                db.executemany("INSERT INTO meta VALUES (?, ?)", self._new_meta(preprocess_params, compare_params))
                db.execute("COMMIT")
            finally:
                db.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.db_path)
                created = True
            except FileExistsError:  # another process created the store meanwhile: open theirs
                pass
            except OSError as e:
                if _no_space(e):
                    raise
                if not self.db_path.exists():  # a file system without hard links
                    os.rename(tmp, self.db_path)
                    created = True
            _fsync_dir(folder)
        except sqlite3.OperationalError as e:
            if _no_space(e):
                raise
            raise StoreError(f"{folder}: cannot create the store here ({e})") from None
        finally:
            for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
                with contextlib.suppress(OSError):
                    p.unlink()
            if made_folder and not created and not self.db_path.exists():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        return created

    def _make_folder(self) -> bool:
        """Create the store's folder; returns whether it was missing."""
        made = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if _no_space(e):
                raise
            raise StoreError(f"{self.folder}: cannot create the store here ({e.strerror})") from None
        return made

    def _create_postgresql(self, url: str, preprocess_params, compare_params) -> bool:
        """Create a store whose records are in the (empty) PostgreSQL database ``url``: the schema and
        settings in one transaction under the store's write lock, and the folder's ``store.database``
        naming it (its URL without password, and the store's id) linked in before the commit. A
        second process creating the same store waits for the lock, then finds the file and opens
        the store. Returns whether this call created it."""
        folder = self.folder
        made_folder = self._make_folder()
        pointer, tmp = folder / _POINTER, folder / f"{_NEW_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        store_id = secrets.token_hex(16)
        linked = created = False
        db = self._connect_postgresql(url)
        try:
            with db.write():
                if pointer.exists():  # another process created it while this one waited for the lock
                    return False
                if db.tables():
                    raise StoreError(
                        f"{db.name}: the database is not empty (tables {', '.join(sorted(db.tables())[:5])}); a "
                        f"new store needs an empty database of its own; nothing was changed"
                    )
                for stmt in _SCHEMA:
                    if sql := render(stmt, "postgresql"):
                        db.execute(sql)
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [*self._new_meta(preprocess_params, compare_params), ("store_id", store_id)],
                )
                with atomic_file(tmp) as f:
                    f.write(
                        json.dumps(
                            {"format": "ballistix-store-database", "url": db.name, "store_id": store_id}
                        ).encode()
                    )
                os.link(tmp, pointer)  # fails if another process made the store first: nothing is committed
                linked = True
            created = True
            _fsync_dir(folder)
        except FileExistsError:
            return False
        except db_errors() as e:
            if _no_space(e):
                raise
            raise StoreError(f"{db.name}: cannot create the store there ({e}); nothing was changed") from None
        finally:
            db.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            if linked and not created:  # the file was linked, the schema not committed: take it back
                with contextlib.suppress(OSError):
                    pointer.unlink()
            if made_folder and not created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        return created

    def _read_pointer(self) -> dict:
        path = self.folder / _POINTER
        try:
            rec = json.loads(path.read_text())
            if rec.get("format") != "ballistix-store-database" or not is_url(rec.get("url")):
                raise ValueError("not a ballistix store.database file")
            return rec
        except (OSError, ValueError, AttributeError) as e:
            raise StoreError(
                f"{path}: cannot be read ({e}): it names the PostgreSQL database of this store; nothing was changed"
            ) from None

    def _connect_postgresql(self, url: str, *, read_only: bool = False) -> Database:
        try:
            return Database.postgresql(url, read_only=read_only)
        except db_errors() as e:
            raise StoreError(f"{redact(url)}: cannot connect to the store's PostgreSQL server ({e})".strip()) from None

    @staticmethod
    def _store_id(db: Database):
        """The ``(store_id,)`` a PostgreSQL store's database records, or None where it holds no store."""
        return db.execute("SELECT value FROM meta WHERE key='store_id'").fetchone() if "meta" in db.tables() else None

    def _connect(self, database: str | None = None) -> Database:
        if (self.folder / _POINTER).exists():
            rec = self._read_pointer()
            db = self._connect_postgresql(database or rec["url"], read_only=self.read_only)
            self.db_path = db.name
            try:
                row = self._store_id(db)
                if row is None and not self.read_only:
                    with db.write():  # a creation in progress holds the lock until its commit: read after it
                        row = self._store_id(db)
            except BaseException:
                db.close()
                raise
            if row is None or row[0] != rec["store_id"]:
                db.close()
                raise StoreError(
                    f"{db.name}: "
                    + (
                        "holds no store: its creation was interrupted, or the database was emptied; remove "
                        f"{self.folder / _POINTER} to create the store again"
                        if row is None
                        else f"holds another store than the one {self.folder / _POINTER} names (store id {row[0]}, "
                        f"not {rec['store_id']})"
                    )
                    + "; nothing was changed"
                )
            return db
        if database is not None:
            raise StoreError(
                f"{self.folder}: holds a store whose database is the SQLite file store.sqlite, not {redact(database)}"
            )
        return Database.sqlite(self._connect_sqlite(), self.db_path, self.folder / _CLAIMS)

    def _connect_sqlite(self) -> sqlite3.Connection:
        uri = self.db_path.resolve().as_uri()
        try:
            if self.read_only:
                return self._connect_read_only(uri)
            db = sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=60, isolation_level=None)  # explicit transactions
            try:
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # a database at all?
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                db.close()
                raise
            return db  # WAL mode is set by _migrate once the file is known to be a store
        except sqlite3.DatabaseError as e:
            if _no_space(e):
                raise
            if not os.access(self.db_path, os.R_OK):
                raise StoreError(f"{self.db_path}: cannot be read (permission denied); nothing was changed") from None
            if not self.read_only and not (os.access(self.db_path, os.W_OK) and os.access(self.folder, os.W_OK)):
                raise StoreError(
                    f"{self.db_path}: cannot be opened for writing ({e}): the store is read-only "
                    f"here; open it with read_only=True (`--read-only`)"
                ) from None
            raise StoreError(f"{self.db_path}: not a readable SQLite database ({e}); nothing was changed") from None

    def _connect_read_only(self, uri: str) -> sqlite3.Connection:
        """SQLite's read-only mode; where it cannot keep its shared-memory file beside the database (a
        folder the user may not write), the database is read as immutable."""
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        wal = Path(f"{self.db_path}-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            warnings.warn(
                f"{wal}: the write-ahead log cannot be read without write access to {self.folder}; "
                f"changes not yet copied into store.sqlite are not seen",
                StoreWarning,
                stacklevel=4,
            )
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transaction(self):
        """One write transaction (other writers wait: see `Database.begin_write`), rolled back on any error."""
        return self._db.write()

    def _migrate(self) -> None:
        db = self._db
        try:
            tables = db.tables()
        except db_errors() as e:
            raise StoreError(f"{self.db_path}: not a readable SQLite database ({e})") from None
        if not tables:  # a store is created whole (see _create): a database without tables is damage
            raise StoreError(
                f"{self.db_path}: the database holds no tables: it is damaged or was not made by "
                f"ballistix; nothing was changed (restore store.sqlite from a backup)"
            )
        if "meta" not in tables:
            raise StoreError(f"{self.db_path}: not a ballistix store (no meta table)")
        if not self.read_only and db.dialect == "sqlite":
            db.execute("PRAGMA journal_mode=WAL")  # a store made by ballistix is in WAL mode already: no write
        try:
            version = int(dict(db.execute("SELECT key, value FROM meta")).get("schema_version", -1))
        except (*db_errors(), ValueError, TypeError) as e:
            raise StoreError(f"{self.db_path}: the meta table is damaged ({e})") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.db_path}: schema version {version} is newer than this ballistix "
                f"({SCHEMA_VERSION}); upgrade ballistix"
            )
        if version < SCHEMA_VERSION and self.read_only:
            raise StoreError(
                f"{self.db_path}: schema version {version} is older than this ballistix "
                f"({SCHEMA_VERSION}) and the store is opened read-only: open it once writable "
                f"to migrate it"
            )
        if version < SCHEMA_VERSION:
            self._migrated_from = version
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise StoreError(f"{self.db_path}: no migration from schema version {version}")
            db.begin_write()
            try:
                (current,) = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if int(current) == version:  # else another process migrated it meanwhile
                    for stmt in MIGRATIONS[version]:
                        if sql := render(stmt, db.dialect):
                            db.execute(sql)
                    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version + 1),))
                db.execute("COMMIT")
            except db_errors() as e:
                db.rollback()
                if _no_space(e):
                    raise
                raise StoreError(
                    f"{self.db_path}: migration from schema version {version} failed ({e}); the store is unchanged"
                ) from None
            version += 1

    def _setting(self, key: str, value: dict) -> dict:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            if not self.read_only:
                self._db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT DO NOTHING", (key, json.dumps(value, sort_keys=True))
                )
            return value
        stored = json.loads(row[0])
        if value and value != stored:
            raise ParameterError(f"this store was made with {key}={stored}; open it without {key} or use a new store")
        return stored

    def _descriptor(self) -> dict:
        """The descriptor this store's vectors were made with (``meta.descriptor``): a store keeps the one
        it was created with. A store made before descriptors were recorded holds version 1 (`V1_INFO`)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='descriptor'").fetchone()
        if row is None:
            if not self.read_only:
                self._db.execute(
                    "INSERT INTO meta VALUES ('descriptor', ?) ON CONFLICT DO NOTHING", (json.dumps(V1_INFO),)
                )
            return dict(V1_INFO)
        try:
            info = json.loads(row[0])
            descriptor_params(info)
        except (ValueError, BallistixError) as e:
            raise StoreError(f"{self.db_path}: the store's descriptor cannot be computed here ({e})") from None
        return info

    @property
    def decision_rule(self) -> dict:
        """The store's link rule: ``{"link_lr": LINK_LR, "count_rule": None}`` (LR >= 100) unless the lab set
        another with `set_decision_rule` (then also ``set_by``, ``set_utc``, ``reason``)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='decision_rule'").fetchone()
        return json.loads(row[0]) if row else {"link_lr": LINK_LR, "count_rule": None}

    @_writes("set the decision rule")
    def set_decision_rule(self, *, link_lr: float = LINK_LR, count_rule: int | None = None, reason: str = "") -> dict:
        """Set the rule by which an unreviewed comparison becomes a link in this store's graph,
        leads and report (see `LinkageGraph`). ``count_rule`` (a CMC count) replaces the LR
        rule: set it only for a population on which the lab validated it (``reason`` should
        say where, e.g. the validation report); it is named in every output."""
        from ..graph import LinkageGraph

        LinkageGraph(link_lr=link_lr, count_rule=count_rule)  # validates both
        if count_rule is not None and not str(reason).strip():
            raise ParameterError(
                "a count rule replaces calibrated evidence: give the reason (the lab's validation that supports it)"
            )
        rule = {
            "link_lr": float(link_lr),
            "count_rule": None if count_rule is None else int(count_rule),
            "reason": str(reason),
            "set_by": _user(),
            "set_utc": _now(),
        }
        self._db.execute(
            "INSERT INTO meta VALUES ('decision_rule', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (json.dumps(rule, sort_keys=True),),
        )
        return rule

    # -------------------------------------------------------- calibrations
    @_writes("register a calibration")
    def register_calibration(self, path, *, reason: str) -> dict:
        """Register a calibration file (for example the one `ballistix.validate` wrote from the
        lab's own reference scans) for this store's comparisons.

        The file is checked (`evidence.load_calibration`, or for a marks calibration
        `fusion.load_marks_calibration`) and copied into the store's ``calibrations/`` folder under its
        SHA-256; who registered it, when, from which file, from what reference data (the counts and
        validation record the calibration states) and why are recorded. Only shipped and registered
        calibrations weigh this store's comparisons (see `evidence.trusted_calibration`). From then on
        each new comparison takes the most specific calibration, registered or shipped, whose domain
        holds both scans; a registered marks calibration (``kind`` "marks" in the record) weighs and
        fuses the other marks of the pairs its breech-face calibration weighed, before the shipped
        ones (`marks_calibrations`). Returns the record.
        """
        if not str(reason).strip():
            raise ParameterError("say why this calibration applies (for example its validation report)")
        kind, load = self._calibration_kind(path)
        load(path)  # size, format and checksum checked before anything is copied
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        rel = f"calibrations/{sha}.json"
        (self.folder / "calibrations").mkdir(exist_ok=True)
        with atomic_file(self.folder / rel) as f:
            f.write(data)
            f.flush()
            cal = load(f.name)  # the bytes that are kept are the bytes checked
        ref = cal.reference
        rec = {
            "file": rel,
            "sha256": sha,
            "content_sha256": cal.sha256,
            "name": cal.name,
            "domain": cal.domain,
            "source": str(path),
            "reason": str(reason),
            "registered_by": _user(),
            "registered_utc": _now(),
            "reference": {
                k: ref.get(k)
                for k in ("description", "n_same", "n_different", "features_sha256", "validation")
                if ref.get(k) is not None
            },
        }
        if kind == "marks":
            rec.update(kind="marks", breech_face_sha256=cal.breech_face_sha256)
        recs = [r for r in self.calibration_records() if r["sha256"] != sha] + [rec]
        self._db.execute(
            "INSERT INTO meta VALUES ('calibrations', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (json.dumps(recs, sort_keys=True),),
        )
        self._cals = self._marks_cals = None
        return rec

    @staticmethod
    def _calibration_kind(path) -> tuple:
        """``("breech_face" | "marks", loader)`` of a calibration file, by the object it holds (a file of
        neither kind is left to the breech-face loader, whose error names it)."""
        from .. import evidence, fusion

        try:
            doc = json.loads(Path(path).read_bytes()) if Path(path).stat().st_size <= 10_000_000 else None
        except (OSError, ValueError):
            doc = None  # the loader says what is wrong with the file
        if isinstance(doc, dict) and "marks_calibration" in doc:
            return "marks", fusion.load_marks_calibration
        return "breech_face", evidence.load_calibration

    def calibration_records(self) -> list[dict]:
        """The calibrations registered in this store (see `register_calibration`)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='calibrations'").fetchone()
        return json.loads(row[0]) if row else []

    def calibrations(self) -> list:
        """The calibrations this store's comparisons choose from: the registered ones (each checked
        against the checksum recorded when it was registered), then the shipped ones."""
        from .. import evidence

        if self._cals is None:
            self._cals = self._registered("breech_face", evidence.load_calibration) + evidence.shipped_calibrations()
        return self._cals

    def marks_calibrations(self) -> list:
        """The marks calibrations that weigh and fuse the other marks of this store's comparisons (a store
        made with ``preprocess_params={"marks": True}``): the registered ones, then the shipped ones
        (`ballistix.fusion.weigh_comparison_marks` takes the first that applies)."""
        from .. import fusion

        if self._marks_cals is None:
            self._marks_cals = self._registered("marks", fusion.load_marks_calibration) + (
                fusion.shipped_marks_calibrations()
            )
        return self._marks_cals

    def _registered(self, kind: str, load) -> list:
        out = []
        for r in self.calibration_records():
            if r.get("kind", "breech_face") != kind:
                continue
            path = self.folder / r["file"]
            try:
                ok = sha256_file(path) == r["sha256"]
            except OSError:
                ok = False
            if not ok:
                raise StoreError(f"{path}: the registered calibration {r['name']!r} is missing or altered")
            cal = load(path)
            cal.origin = {
                "kind": "registered",
                "store": str(self.folder),
                "sha256": cal.sha256,
                **{k: r.get(k) for k in ("registered_by", "registered_utc", "reason", "source")},
            }
            out.append(cal)
        return out

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM exhibits").fetchone()[0])

    def __repr__(self) -> str:
        return f"<CaseStore {self.folder}: {len(self)} exhibits, index {len(self._index)}>"

    # --------------------------------------------------------------- index
    def _build_index(self, *, skip_damaged: bool = False) -> ScanIndex:
        """A new index of the descriptors in SQLite (in memory; compact from `PROJECT_FROM` exhibits, see
        `ballistix.store.descriptors`). A damaged descriptor raises `StoreError` unless ``skip_damaged``."""
        if not skip_damaged:
            size = 4 * self.descriptor["dim"]
            bad = self._db.execute(
                f"SELECT exhibit_id, descriptor FROM exhibits WHERE {self._db.blob_length_sql('descriptor')} LIMIT 1",
                (size,),
            ).fetchone()
            if bad is not None:
                eid, blob = bad
                raise StoreError(
                    f"{self.db_path}: the descriptor of exhibit {eid!r} has "
                    f"{len(blob) if isinstance(blob, bytes) else type(blob).__name__} bytes, expected "
                    f"{size}: the database is damaged; run `ballistix check --store {self.folder}`"
                )
        index, self._projection = build_index(self._db, self.descriptor)
        return index

    def _rowids(self) -> np.ndarray:
        """The exhibits' rowids, sorted. Read without ORDER BY, so that SQLite takes them from the
        smallest index of the table (a covering index scan) and not from the table's own pages,
        which begin every exhibit's 40 KB row: at a million exhibits, not in the page cache, 3.6 s
        instead of 94 s (most of opening the store)."""
        return np.sort(np.fromiter((r[0] for r in self._db.execute("SELECT rowid FROM exhibits")), np.int64))

    def _index_digest(self) -> str:
        """SHA-256 of the checksums of the index file's members (its manifest's ``sha256``), which
        `ScanIndex.load` checks against the members: equal digests mean the same ids and vectors."""
        path = self.index_path
        with open_zip(path, "a ballistix index") as zf:
            members = list_members(path, zf, max_members=16)
            if "manifest.json" not in members:
                raise IndexFormatError(path, "not a ballistix index: no manifest.json")
            raw = read_member(path, zf, members["manifest.json"], 1 << 20, "manifest.json")
        try:
            sums = json.loads(bytes(raw))["sha256"]
        except (ValueError, KeyError, TypeError) as e:
            raise IndexFormatError(path, f"manifest.json holds no member checksums ({e})") from None
        return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()

    def _read_index(self) -> tuple[ScanIndex | None, str | None]:
        """(the index file, None) when it is readable and is the one this store last saved, else
        (None, what is wrong with it)."""
        if not self.index_path.exists():
            return None, "the index file is missing"
        try:
            index = ScanIndex.load(self.index_path, descriptor=self.descriptor)
            digest = self._index_digest()
        except BallistixError as e:
            return None, f"unreadable ({e})"
        ids = self._rowids()
        if not np.array_equal(index.ids, ids):
            return None, f"holds {len(index)} exhibits, the store {len(ids)}" if len(index) != len(
                ids
            ) else "holds other exhibit ids than the store"
        row = self._db.execute("SELECT value FROM meta WHERE key='index_digest'").fetchone()
        if row is None:
            return None, "no checksum of the index is recorded in the database"
        if row[0] != digest:
            return None, (
                "its vectors are not the ones this store saved (the checksum of its content differs "
                "from the one recorded in the database): another store's index or an altered file"
            )
        row = self._db.execute("SELECT value FROM meta WHERE key='projection'").fetchone()
        projection = json.loads(row[0]) if row else {"kind": "none", "dim": None, "compact_from": PROJECT_FROM}
        if projection.get("sha256") != index.projection_sha256:
            return None, "its projection is not the one recorded in the database"
        self._projection = projection
        self._read_digest = digest
        return refine(index, self._db), None

    def _save_index(self) -> None:
        """Save the index atomically and record its digest, in one write transaction (a crash between
        the two only makes the next opening rebuild it)."""
        with self._transaction():
            if not np.array_equal(self._index.ids, self._rowids()):  # another writer added exhibits meanwhile
                self._index = self._build_index()
            self._index.save(self.index_path)
            self._record_index()

    def _record_index(self) -> None:
        digest = self._index_digest()
        for key, value in (("index_digest", digest), ("projection", json.dumps(self._projection))):
            self._db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
            )
        self._index_seen = digest

    def _fresh_index(self) -> None:
        """Take the index another client saved since this one's was read or saved (its exhibits become
        searchable here): one read of the recorded digest when nothing changed. An index file that is
        not (yet) the store's whole, e.g. while another client has committed exhibits it has not yet
        indexed, is left for that client's save or the next opening; this one's is kept meanwhile."""
        row = self._db.execute("SELECT value FROM meta WHERE key='index_digest'").fetchone()
        if row is None or row[0] == self._index_seen:
            return
        index, problem = self._read_index()
        if problem is None:
            self._index, self._index_seen = index, self._read_digest
        else:
            self._index_seen = row[0]  # tried: again only when another save records a new digest

    @property
    def projection(self) -> dict:
        """How the index holds the descriptors: ``kind`` "none" (full descriptors, below
        `PROJECT_FROM` exhibits) or "subspace" (the uncentred leading subspace of the store's
        descriptors; "pca" if centred) with ``dim``, ``fitted_on``, ``store_size_at_fit``,
        ``refit_at`` (None: refits are now deliberate), ``fitted_utc`` and ``sha256``."""
        return dict(self._projection)

    @_writes("rebuild the index")
    def rebuild_index(self) -> ScanIndex:
        """Rebuild the FAISS index from the descriptors in SQLite and save it (atomically)."""
        with self._transaction():
            self._index = self._build_index()
            self._index.save(self.index_path)
            self._record_index()
        return self._index

    def _load_or_rebuild_index(self) -> ScanIndex:
        index, problem = self._read_index()
        if problem is None:
            self._index_seen = self._read_digest
            return index
        if self.read_only:
            self._rebuilt(
                problem, "rebuilt in memory from the descriptors in the database (read-only: the file is left as it is)"
            )
            return self._build_index(skip_damaged=True)
        with self._transaction():
            index, problem = self._read_index()  # another process may have saved and recorded it meanwhile
            if problem is None:
                self._index_seen = self._read_digest
                return index
            try:
                self._index = self._build_index()
            except StoreError as e:  # a damaged descriptor: open anyway, for `check` to say what is wrong
                warnings.warn(
                    f"{self.index_path}: {problem}; not rebuilt: {e}; searches use an index of the "
                    f"other exhibits, in memory",
                    StoreWarning,
                    stacklevel=3,
                )
                return self._build_index(skip_damaged=True)
            self._rebuilt(problem, "rebuilt from the descriptors in the database")
            self._index.save(self.index_path)
            self._record_index()
        return self._index

    def _rebuilt(self, problem: str, action: str) -> None:
        """Say that the index was rebuilt when the store opened (quietly for a new or just migrated store)."""
        quiet = len(self) == 0 or (self._migrated_from is not None and problem.startswith("no checksum"))
        if quiet:
            return
        self._opening.append(
            {
                "check": "index",
                "item": str(self.index_path),
                "problem": problem,
                "repaired": not self.read_only,
                "action": action,
            }
        )
        warnings.warn(f"{self.index_path}: {problem}; {action}", StoreWarning, stacklevel=4)

    def check_index(self) -> None:
        """Raise `IndexFormatError` if the index file is missing, corrupt, disagrees with SQLite, or is not
        the index this store saved last (its vectors differ)."""
        _, problem = self._read_index()
        if problem is not None:
            raise IndexFormatError(self.index_path, problem)

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

    @_writes("import case data")
    def import_table(self, path, kind: str | None = None) -> dict:
        """Import a scenes, firearms or tracing CSV file (`ballistix.store.casedata`: the columns,
        the checks), all or nothing. Returns ``{"kind", "file", "sha256", "rows", "added",
        "updated", "import_id"}``; a refused file raises (`FileFormatError`, `ParameterError` naming
        the line and column) and changes nothing. The import is recorded in the imports log
        (`imports`) in the same transaction: the file as given, the SHA-256 of the bytes read, the
        counts, when and by whom."""
        kind, records, sha = read_table_sha256(path, kind)
        table, key = ("scenes", "scene_id") if kind == "scenes" else ("firearms", "firearm_id")
        check = check_scene if kind == "scenes" else check_firearm
        added = updated = 0
        with self._transaction() as db:
            for rec in records:
                ident = rec[key]
                row = db.execute(f"SELECT attrs_json FROM {table} WHERE {key}=?", (ident,)).fetchone()
                if row is None and kind == "tracing":
                    raise ParameterError(f"{path}: firearm {ident!r} of the tracing table is not in the store")
                attrs = {**(json.loads(row[0]) if row else {}), **{k: v for k, v in rec.items() if k != key}}
                attrs = check(ident, {k: v for k, v in attrs.items() if v is not None})
                db.execute(
                    f"INSERT INTO {table} VALUES (?, ?, ?, ?) "
                    f"ON CONFLICT({key}) DO UPDATE SET attrs_json=excluded.attrs_json",
                    (ident, json.dumps(attrs, sort_keys=True, default=str), _now(), _user()),
                )
                added, updated = added + (row is None), updated + (row is not None)
            import_id = self._log_import(db, kind, path, sha, len(records), added, updated)
        return {
            "kind": kind,
            "file": str(path),
            "sha256": sha,
            "rows": len(records),
            "added": added,
            "updated": updated,
            "import_id": import_id,
        }

    @staticmethod
    def _log_import(db, kind, path, sha, rows, added, updated, summary=None) -> int:
        """Record an import in the imports log, inside the caller's transaction; returns its id."""
        cur = db.execute(
            "INSERT INTO imports (import_id, kind, source_name, sha256, rows, added, updated, summary_json, "
            f"created_utc, created_by, ballistix_version) VALUES ({db.next_id('imports', 'import_id')}, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING import_id",
            (
                kind,
                safe_text(os.fsdecode(path)),
                sha,
                rows,
                added,
                updated,
                None if summary is None else json.dumps(summary, sort_keys=True, default=str),
                _now(),
                _user(),
                __version__,
            ),
        )
        return int(cur.fetchone()[0])

    def imports(self) -> list[dict]:
        """The imports log, oldest first: each case-data table (`import_table`) and bundle of exhibits
        (`import_exhibits`) imported into the store, as a dict with ``import_id``, ``kind`` (scenes,
        firearms, tracing or exhibits-bundle), ``source_name`` (the file as it was given),
        ``sha256``, ``rows``, ``added``, ``updated``, ``summary`` (a bundle's sending lab and counts;
        None for a table), ``created_utc``, ``created_by`` and ``ballistix_version``."""
        keys = (
            "import_id",
            "kind",
            "source_name",
            "sha256",
            "rows",
            "added",
            "updated",
            "summary",
            "created_utc",
            "created_by",
            "ballistix_version",
        )
        cols = ", ".join("summary_json" if k == "summary" else k for k in keys)
        rows = self._db.execute(f"SELECT {cols} FROM imports ORDER BY import_id").fetchall()
        out = [dict(zip(keys, r)) for r in rows]
        for d in out:
            d["summary"] = None if d["summary"] is None else json.loads(d["summary"])
        return out

    def export_table(self, path, kind: str) -> Path:
        """Write the store's scenes, firearms or tracing table as CSV, in the columns
        `import_table` reads (`ballistix.store.casedata.COLUMNS`), sorted by id."""
        if kind not in KINDS:
            raise ParameterError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        table, key = ("scenes", "scene_id") if kind == "scenes" else ("firearms", "firearm_id")
        records = [
            {key: ident, **json.loads(attrs)}
            for ident, attrs in self._db.execute(f"SELECT {key}, attrs_json FROM {table} ORDER BY {key}")
        ]
        return write_table(path, kind, records)

    def export_exhibits(self, path, exhibit_ids=None, *, lab: str, lab_name: str | None = None) -> Path:
        """Write exhibits (all, or ``exhibit_ids``) as a bundle for another lab
        (`ballistix.store.exchange`): their source x3p files, metadata, ingest provenance and
        SHA-256, the scenes and firearms they refer to, and this lab's identity (``lab``, an
        identifier; ``lab_name``). Each source file must still be the one ingested (its SHA-256 is
        checked); an exhibit whose source is gone, changed, or not an x3p file refuses the export."""
        check_text(lab, "lab", required=True)
        check_text(lab_name, "lab_name")
        cols = (
            "exhibit_id, source_sha256, source_name, kind, scene_id, firearm_id, calibre, date, meta_json, "
            "source_path, source_read, created_utc, created_by, ballistix_version"
        )
        if exhibit_ids is None:
            rows = self._db.execute(f"SELECT {cols} FROM exhibits ORDER BY rowid").fetchall()
        else:
            ids = [str(e) for e in exhibit_ids]
            rows = [self._db.execute(f"SELECT {cols} FROM exhibits WHERE exhibit_id=?", (e,)).fetchone() for e in ids]
            missing = [e for e, r in zip(ids, rows) if r is None]
            if missing:
                raise ParameterError(f"no exhibits {missing} in the store")
        if not rows:
            raise ParameterError("the store holds no exhibits to export")
        records, files, scenes, firearms = [], [], {}, {}
        for eid, sha, name, kind, scene, gun, cal, date, meta, src, read, created, by, version in rows:
            src = Path(path_from_db(src)) if src is not None else None
            if src is None or src.suffix.lower() != ".x3p" or not src.is_file() or sha256_file(src) != sha:
                raise ParameterError(
                    f"exhibit {eid!r} cannot be exported: its source x3p file {safe_text(str(src))} is "
                    + ("not recorded (an in-memory scan)" if src is None else "gone, changed or not an x3p file")
                )
            labels = {k: v for k, v in json.loads(meta).items() if k != "population"}
            records.append(
                {
                    "exhibit_id": eid,
                    "kind": kind,
                    "scene_id": scene,
                    "firearm_id": gun,
                    "calibre": cal,
                    "date": date,
                    "labels": labels,
                    "source_name": name,
                    "source_sha256": sha,
                    "suffix": ".x3p",
                    "units": (json.loads(read or "{}")).get("units", "auto"),
                    "ingested": {"utc": created, "by": by, "ballistix_version": version},
                }
            )
            files.append(src)
            for table, key, ident, out in (
                ("scenes", "scene_id", scene, scenes),
                ("firearms", "firearm_id", gun, firearms),
            ):
                row = self._db.execute(f"SELECT attrs_json FROM {table} WHERE {key}=?", (ident,)).fetchone()
                if ident is not None and row is not None:
                    out[ident] = json.loads(row[0])
        lab_rec = {"id": lab, "name": lab_name, "sent_utc": _now(), "sent_by": _user()}
        return write_bundle(path, lab=lab_rec, exhibits=records, files=files, scenes=scenes, firearms=firearms)

    @_writes("import exhibits")
    def import_exhibits(self, path, *, progress: bool = False) -> dict:
        """Import a bundle from another lab (`export_exhibits`). The whole bundle is checked first
        (`ballistix.store.exchange.read_bundle`: the archive, the manifest's checksum, every source
        file's SHA-256): one failure refuses it and the store is unchanged. The source files are kept
        in the store's ``received/`` folder and ingested like local files. Each exhibit records
        ``received_from`` (the sending lab, its exhibit id and ingest provenance, the bundle's
        SHA-256, when it was received); an exhibit id already taken here gets a suffix, an exhibit
        already in the store (same source SHA-256) is left as it is. The sender's scenes and
        firearms are added where this store has no record of that id (those it has are kept, and
        listed). Returns the `IngestReport` as a dict with ``bundle_sha256``, ``lab``,
        ``scenes_added``, ``firearms_added``, ``kept_local`` and ``import_id``.

        The import is recorded in the imports log (`imports`: the bundle as given, its SHA-256, the
        sending lab, the counts). The exhibits are committed one by one, as `ingest` does; the
        sender's scenes and firearms and the log row are then written in one transaction. An import
        interrupted before it (a full disk) keeps the exhibits it committed, each naming the bundle's
        SHA-256 in ``received_from``, and has no log row: importing the bundle again completes it."""
        manifest, bundle_sha, files = read_bundle(path, self.folder / "received")
        lab = manifest["lab"]
        received = _now()
        metas, units = [], []
        for e in manifest["exhibits"]:
            metas.append(
                {
                    **{k: e.get(k) for k in ("exhibit_id", "kind", "scene_id", "firearm_id", "calibre", "date")},
                    "labels": e.get("labels") or {},
                    "received_from": {
                        "lab": lab.get("id"),
                        "lab_name": lab.get("name"),
                        "exhibit_id": e["exhibit_id"],
                        "source_name": e["source_name"],
                        "ingested": e.get("ingested"),
                        "bundle_sha256": bundle_sha,
                        "sent_utc": lab.get("sent_utc"),
                        "received_utc": received,
                    },
                }
            )
            units.append(e["units"])
        report = IngestReport([], [], [])
        for u in sorted(set(units)):
            part = [i for i, x in enumerate(units) if x == u]
            r = self.ingest([files[i] for i in part], [metas[i] for i in part], progress=progress, units=u)
            report.added += r.added
            report.existing += r.existing
            report.failed += r.failed
        added = {"scenes": [], "firearms": []}
        kept = []
        with self._transaction() as db:  # the sender's records and the log row: together or not at all
            for table, key, check in (("scenes", "scene_id", check_scene), ("firearms", "firearm_id", check_firearm)):
                for ident, attrs in manifest[table].items():
                    if db.execute(f"SELECT 1 FROM {table} WHERE {key}=?", (ident,)).fetchone():
                        kept.append(f"{table[:-1]} {ident}")
                        continue
                    attrs = check(ident, {**attrs, "received_from": lab.get("id")})
                    db.execute(
                        f"INSERT INTO {table} VALUES (?, ?, ?, ?)",
                        (ident, json.dumps(attrs, sort_keys=True, default=str), _now(), _user()),
                    )
                    added[table].append(ident)
            summary = {
                "lab": {k: lab.get(k) for k in ("id", "name", "sent_utc", "sent_by")},
                "exhibits_added": len(report.added),
                "exhibits_existing": len(report.existing),
                "exhibits_failed": len(report.failed),
                "scenes_added": len(added["scenes"]),
                "firearms_added": len(added["firearms"]),
                "kept_local": len(kept),
            }
            n = len(manifest["exhibits"])
            import_id = self._log_import(db, "exhibits-bundle", path, bundle_sha, n, len(report.added), 0, summary)
        return {
            **report.to_dict(),
            "bundle_sha256": bundle_sha,
            "lab": lab,
            "scenes_added": added["scenes"],
            "firearms_added": added["firearms"],
            "kept_local": kept,
            "import_id": import_id,
        }

    def iafq(self, year: int, path=None) -> dict:
        """The UNODC Illicit Arms Flows Questionnaire figures and the SDG 16.4.2 share of the
        firearms recovered in ``year`` (`ballistix.store.iafq.iafq_figures`); with ``path``, also
        written there (CSV, or XLSX when it ends in .xlsx)."""
        rows = [(f, json.loads(a)) for f, a in self._db.execute("SELECT firearm_id, attrs_json FROM firearms")]
        fig = iafq_figures(rows, year)
        if path is not None:
            write_iafq(path, fig, source={"store": str(self.folder), "firearms in the store": len(rows)})
        return fig

    @_writes("record scenes or firearms")
    def _upsert(self, table: str, key: str, value: str, attrs: dict) -> None:
        if not isinstance(value, str) or not value:
            raise ParameterError(f"{key} must be a non-empty string, got {value!r}")
        self._db.execute(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?) ON CONFLICT({key}) DO UPDATE SET attrs_json=excluded.attrs_json",
            (value, json.dumps(attrs, sort_keys=True, default=str), _now(), _user()),
        )

    @_writes("ingest")
    def ingest(
        self,
        items: Iterable,
        meta: Mapping | Iterable[Mapping] | None = None,
        *,
        progress: bool = True,
        client=None,
        units: str = "auto",
        pixel_size_m: float | None = None,
    ) -> IngestReport:
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
        Each exhibit records its source file's absolute path and units (for
        `check` to re-create a lost cached scan) and its processed scan's SHA-256.
        A full disk stops the batch with a `StoreError`; what was committed is kept.
        """
        from tqdm.auto import tqdm

        check_units(units)
        items = [os.fsdecode(i) if isinstance(i, bytes) else i for i in items]  # bytes paths (os.listdir(b"."))
        metas = (
            [dict(meta or {})] * len(items) if meta is None or isinstance(meta, Mapping) else [dict(m) for m in meta]
        )
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
                sha_known = None if isinstance(item, Scan) else sha256_file(Path(item))
            except (BallistixError, OSError) as e:
                self._fail(report, source, str(e))
                continue
            row = (
                self._db.execute("SELECT exhibit_id FROM exhibits WHERE source_sha256=?", (sha_known,)).fetchone()
                if sha_known
                else None
            )
            if row:
                report.existing.append(row[0])
            else:
                origin = (
                    None
                    if isinstance(item, Scan)
                    else (os.path.abspath(item), {"units": units, **_image_kw(item, pixel_size_m)})
                )
                jobs.append(
                    (
                        source,
                        m,
                        origin,
                        (
                            str(self.folder),
                            self.preprocess_params,
                            item,
                            m,
                            sha_known,
                            units,
                            pixel_size_m,
                            descriptor_params(self.descriptor),
                        ),
                    )
                )
        if client is not None:  # the heavy part on the cluster, the database writes here
            from .._dask import dask_map

            prepared = dask_map(_prepare, [j for *_, j in jobs], client)
        else:
            prepared = (_prepare(j) for *_, j in jobs)
        for (source, m, origin, _), out in tqdm(
            zip(jobs, prepared), total=len(jobs), disable=not progress, desc="ingest"
        ):
            if out[0] is None:
                self._fail(report, source, out[1])
                continue
            rowid, exhibit_id, added = self._insert(*out, m, origin)
            (report.added if added else report.existing).append(exhibit_id)
            if added:
                new_ids.append(rowid)
                new_vecs.append(out[3])
        if new_ids:
            self._add_to_index(np.array(new_ids, np.int64), np.array(new_vecs))
        return report

    def _add_to_index(self, ids: np.ndarray, vecs: np.ndarray | None = None) -> None:
        """Add new exhibits to the index (their descriptors ``vecs``, or read from SQLite) and save it;
        rebuild it instead when the projection is due a refit (see `ballistix.store.descriptors`) or
        the index refuses them."""
        if refit_due(self._projection, len(self)):
            self._index = self._build_index()
        else:
            try:
                chunks = (
                    [(ids, vecs)]
                    if vecs is not None
                    else descriptor_chunks(self._db, self.descriptor["dim"], rowids=ids)
                )
                for part_ids, part in chunks:
                    self._index.add(part_ids, part)
            except BallistixError:
                self._index = self._build_index()
        self._save_index()

    @_writes("import exhibits")
    def import_prepared(self, records: Iterable[Mapping], *, batch: int = 10_000) -> dict:
        """Import exhibits preprocessed and described elsewhere, ``batch`` to a transaction.

        Each record is a mapping with ``exhibit_id``, ``source_sha256`` (of the
        source scan, 64 hex digits: an exhibit already in the store is counted
        as existing and skipped), ``descriptor`` (`describe` of the processed
        scan: the store's descriptor, unit length), ``scan_file`` (the processed
        scan, a .npz written by `write_npz`, on the store's grid and with the
        processing of its other exhibits) and any of ``kind``, ``scene_id``,
        ``firearm_id``, ``calibre``, ``date``, ``source_name`` and other labels.

        The scan file is *referenced*, not copied: it stays where it is (a
        shared archive), its SHA-256 is recorded and checked whenever it is
        used, like a cached scan's. Each scan file is read and checked once,
        however many records name it. ``records`` may be a generator: a
        million records never need to be in memory at once. The index is
        updated, or rebuilt compact, and saved once at the end.

        A bad record stops the import with a `ParameterError` naming it; the
        batches before it are committed (and indexed), its own batch is not.
        Returns ``{"added", "existing", "scan_files"}``.
        """
        return import_prepared(self, records, batch=batch, stamp=(_now(), _user()))

    def _fail(self, report: IngestReport, source: str, reason: str) -> None:
        source, reason = safe_text(source), safe_text(reason)  # names that are not UTF-8 (bytes on disk)
        self._db.execute(
            "INSERT INTO failures (source, sha256, reason, created_utc) VALUES (?, ?, ?, ?)",
            (source, None, reason, _now()),
        )
        report.failed.append((source, reason))

    def _insert(self, sha, name, processing, vec, rel, pop, part, scan_sha, m, origin) -> tuple[int, str, bool]:
        """Commit one exhibit; its processed scan (written by `_prepare` under the private name
        ``part``) is moved to its content-derived name ``rel`` inside the transaction."""
        m = {**m, "population": pop}
        source_path, read = origin or (None, None)
        kind = m.pop("kind", None) or ("test_fire" if m.get("firearm_id") else "scene")
        name = safe_text(name)  # a file name that is not UTF-8: its bytes kept as \xff
        wanted = m.pop("exhibit_id", None) or safe_id(Path(name).stem) or sha[:12]
        fields = {k: m.pop(k, None) for k in ("scene_id", "firearm_id", "calibre", "date")}
        db = self._db
        db.begin_write()
        try:
            row = db.execute("SELECT rowid, exhibit_id FROM exhibits WHERE source_sha256=?", (sha,)).fetchone()
            if row:  # another writer (or an earlier run) committed it meanwhile: its scan stays as it is
                db.rollback()
                with contextlib.suppress(OSError):
                    (self.folder / part).unlink()
                return row[0], row[1], False
            exhibit_id, k = str(wanted), 1
            while db.execute("SELECT 1 FROM exhibits WHERE exhibit_id=?", (exhibit_id,)).fetchone():
                k += 1
                exhibit_id = f"{wanted}-{k}"
            cur = db.execute(
                "INSERT INTO exhibits (rowid, exhibit_id, source_sha256, source_name, kind, scene_id, firearm_id,"
                " calibre, date, meta_json, processing_json, descriptor, scan_file, created_utc, created_by,"
                " ballistix_version, scan_sha256, scan_state, source_path, source_read)"
                f" VALUES ({db.next_id('exhibits', 'rowid')}, "
                "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', ?, ?)"
                " RETURNING rowid",
                (
                    exhibit_id,
                    sha,
                    Path(name).name,
                    kind,
                    fields["scene_id"],
                    fields["firearm_id"],
                    fields["calibre"],
                    fields["date"],
                    json.dumps(m, sort_keys=True, default=str),
                    json.dumps(processing, default=str),
                    vec.astype(np.float32).tobytes(),
                    rel,
                    _now(),
                    _user(),
                    __version__,
                    scan_sha,
                    path_to_db(source_path, db.dialect),
                    None if read is None else json.dumps(read, sort_keys=True),
                ),
            )
            rowid = int(cur.fetchone()[0])
            os.replace(self.folder / part, self.folder / rel)  # a crash from here to COMMIT: an orphan file
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            with contextlib.suppress(OSError):
                (self.folder / part).unlink()
            raise
        return rowid, exhibit_id, True

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
        meta = [
            {
                "exhibit_id": e["id"],
                "kind": e["kind"],
                "scene_id": e["scene"],
                "firearm_id": e["test_fired_from"],
                "date": e["date"],
                "calibre": e["calibre"],
            }
            for e in cw.exhibits
        ]
        return self.ingest(cw.scans if items is None else items, meta=meta, progress=progress, client=client)

    def exhibits(self) -> list[dict]:
        """Every exhibit's record (without the descriptor), in ingest order."""
        cols = [
            "rowid",
            "exhibit_id",
            "source_sha256",
            "source_name",
            "kind",
            "scene_id",
            "firearm_id",
            "calibre",
            "date",
            "meta_json",
            "scan_file",
            "linked",
            "created_utc",
            "created_by",
            "ballistix_version",
            "scan_sha256",
            "scan_state",
            "source_path",
            "source_read",
        ]
        rows = self._db.execute(f"SELECT {', '.join(cols)} FROM exhibits ORDER BY rowid").fetchall()
        out = [dict(zip(cols, r)) for r in rows]
        for e in out:  # a path kept as bytes (not UTF-8): as os.listdir would give it
            e["source_path"] = path_from_db(e["source_path"])
        return out

    def failures(self) -> list[dict]:
        order = "rowid" if self._db.dialect == "sqlite" else "failure_id"
        rows = self._db.execute(f"SELECT source, reason, created_utc FROM failures ORDER BY {order}").fetchall()
        return [{"source": s, "reason": r, "created_utc": t} for s, r, t in rows]

    def _rowid(self, exhibit_id: str) -> int:
        key = safe_text(exhibit_id) if isinstance(exhibit_id, str) else exhibit_id  # ids from file names
        row = self._db.execute("SELECT rowid FROM exhibits WHERE exhibit_id=?", (key,)).fetchone()
        if row is None:
            raise ParameterError(f"no exhibit {exhibit_id!r} in the store {self.folder}")
        return int(row[0])

    def scan(self, exhibit_id_or_rowid) -> Scan:
        """The processed scan of an exhibit, from the cache, checked against the SHA-256 recorded
        when it was written (stores from before schema 3, until `check` records one: against the
        exhibit's source SHA-256 kept inside the file).

        Raises
        ------
        DamagedScanError
            The cached file is missing, unreadable, or not the one recorded (altered, or another
            exhibit's copied over it).
        """
        rowid = (
            exhibit_id_or_rowid
            if isinstance(exhibit_id_or_rowid, (int, np.integer))
            else self._rowid(exhibit_id_or_rowid)
        )
        row = self._db.execute(
            "SELECT exhibit_id, scan_file, scan_sha256, source_sha256, scan_state FROM exhibits WHERE rowid=?",
            (int(rowid),),
        ).fetchone()
        if row is None:
            raise ParameterError(f"no exhibit with index id {rowid} in the store")
        return self._read_cached(int(rowid), *row)

    def _read_cached(self, rowid: int, eid: str, rel: str, sha: str | None, source_sha: str, state: str) -> Scan:
        scan = read_cached_scan(self.folder, ScanRef(rowid, eid, rel, sha, source_sha, state))
        if state != "ok":  # restored since: say so where the store can be written
            self._set_scan_state(rowid, "ok")
        return scan

    def _set_scan_state(self, rowid: int, state: str) -> None:
        """Record an exhibit's scan state where the store can be written (best effort: a full disk or
        a busy writer leave it as it was; the caller warns anyway)."""
        if self.read_only:
            return
        with contextlib.suppress(*db_errors()):
            self._db.execute("UPDATE exhibits SET scan_state=? WHERE rowid=?", (state, int(rowid)))

    def _usable_scan(self, rowid: int) -> Scan | None:
        """The cached scan of a candidate, or None when it is damaged (`_note_damaged`)."""
        try:
            return self.scan(int(rowid))
        except DamagedScanError as e:
            self._note_damaged(int(rowid), e.exhibit_id, e.path, e.problem, e.state)
            return None

    def _note_damaged(self, rowid: int, exhibit_id: str, file: str, problem: str, state: str) -> None:
        """A damaged cached scan met by a search or link: listed in ``self.skipped`` (once per search
        or link), recorded as damaged, and named by a `StoreWarning` (not for scans `check` already
        dropped: those are skipped quietly)."""
        if any(s["exhibit_id"] == exhibit_id for s in self.skipped):
            return
        self.skipped.append({"exhibit_id": exhibit_id, "file": file, "problem": problem, "state": state})
        if state != "missing":
            self._set_scan_state(rowid, "damaged")
            warnings.warn(
                f"skipped exhibit {exhibit_id!r}: {file}: the cached scan of exhibit {exhibit_id!r} {problem}; "
                f"run `ballistix check --store {self.folder} --repair`",
                StoreWarning,
                stacklevel=4,
            )

    def search(
        self,
        query,
        k: int = 20,
        *,
        shortlist: int | None = None,
        n_jobs: int = 1,
        units: str = "auto",
        pixel_size_m: float | None = None,
        verify_top: int | None = None,
    ) -> SearchResult:
        """Two-stage search of the store for a scan file, a `Scan`, or an exhibit id in the store.

        ``units``: the length unit of a query x3p file, passed to `read_scan`;
        ``pixel_size_m``: the pixel size of a query image that does not carry one.
        ``verify_top``: pre-check the whole shortlist and verify only its best ``verify_top``
        with CMC (see `ballistix.search`; None, the default, verifies every shortlisted exhibit).

        Returns up to ``k`` candidates, best first, each a dict with
        ``exhibit_id``, ``source_name``, ``cmc_count``, ``score``,
        ``descriptor_score``, ``descriptor_rank`` (as `ballistix.search` gives
        it: an exhibit id's own exhibit is left out), ``log10_lr`` (None: no
        calibration applies to the pair), ``calibration`` (its name,
        ``calibration_sha256`` and ``calibration_origin``) and ``conclusion``
        ("identification", "inconclusive", "elimination", or "candidate" when
        there is no LR: for an examiner, never an identification). A
        shortlisted exhibit whose cached scan is damaged is skipped with a
        `StoreWarning` (and recorded as damaged); the result's ``skipped``
        lists those left out.
        """
        exclude = ()
        self.skipped = []
        self._fresh_index()
        if (
            isinstance(query, str)
            and not Path(query).suffix
            and self._db.execute("SELECT 1 FROM exhibits WHERE exhibit_id=?", (safe_text(query),)).fetchone()
        ):
            rowid = self._rowid(query)
            proc, exclude = self.scan(rowid), (rowid,)
        else:
            raw = query if isinstance(query, Scan) else read_scan(query, units=units, **_image_kw(query, pixel_size_m))
            proc = preprocess(raw, **self.preprocess_params)
        cands = search_index(
            self._index,
            proc,
            k=k,
            shortlist=shortlist or self.shortlist,
            exclude=exclude,
            scans=self._usable_scan,
            n_jobs=n_jobs,
            calibration=self.calibrations(),
            marks_calibration=self.marks_calibrations(),
            verify_top=verify_top,
            **self.compare_params,
        )
        ids = [int(c.id) for c in cands]
        rows = (
            self._db.execute(
                f"SELECT rowid, exhibit_id, source_name FROM exhibits WHERE rowid IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
            if ids
            else []
        )
        names, files = {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows}
        return SearchResult(
            [
                {
                    "exhibit_id": names[c.id],
                    "source_name": files[c.id],
                    "cmc_count": c.cmc_count,
                    "score": c.score,
                    "descriptor_score": c.descriptor_score,
                    "descriptor_rank": c.descriptor_rank,
                    "log10_lr": c.comparison.log10_lr,
                    "calibration": c.comparison.evidence.get("calibration"),
                    "calibration_sha256": c.comparison.evidence.get("calibration_sha256"),
                    "calibration_origin": (c.comparison.evidence.get("calibration_origin") or {}).get("text"),
                    "conclusion": (c.comparison.evidence.get("conclusion") or {}).get("conclusion", "candidate"),
                }
                for c in cands
            ],
            skipped=self.skipped,
        )

    # ---------------------------------------------------------------- link
    @_writes("link exhibits")
    def link_new(
        self,
        *,
        n_jobs: int = 1,
        progress: bool = True,
        client=None,
        verify_top: int | None = None,
        precheck: dict | None = None,
    ) -> int:
        """Compare every exhibit not linked yet with its shortlist in the store and record the
        comparisons; returns the number of comparisons recorded.

        Every new exhibit's shortlist is drawn up first, then each exhibit's is verified as one
        task, then recorded (``store/link.py``): the results are the same in this process, on
        ``n_jobs`` worker processes (one exhibit a worker at a time; fewer exhibits than workers:
        each exhibit's pairs spread over them), or on a Dask cluster (``client``: a
        `distributed.Client` or a scheduler address; the workers need the store's folder at
        the same path, and the database is written only here). ``verify_top``/``precheck``:
        as for `search` (pre-check each shortlist, verify and record only its best ``verify_top``).

        Each exhibit's comparisons are committed together with its ``linked`` mark. An exhibit
        whose cached scan is damaged is left unlinked, and skipped as a candidate of the others,
        with a `StoreWarning`; ``self.skipped`` lists them after the call.
        """
        from tqdm.auto import tqdm

        check_top(verify_top, precheck)
        self.skipped = []
        self._fresh_index()
        todo = [r[0] for r in self._db.execute("SELECT rowid FROM exhibits WHERE linked=0 ORDER BY rowid")]
        if not todo:
            return 0
        local_pool = n_jobs > 1 and client is None
        # one pool of workers for every exhibit (a pool per exhibit cost a second each)
        try:
            with process_pool(n_jobs) if local_pool else nullcontext() as pool:
                outcomes = run_jobs(
                    self._link_jobs(todo, verify_top, precheck),
                    n_jobs=n_jobs,
                    client=client,
                    pool=pool,
                    many=len(todo) >= n_jobs,  # else one exhibit's pairs spread over the workers
                )
                return self._record_links(tqdm(outcomes, total=len(todo), disable=not progress, desc="link"))
        finally:
            self._db.release_all()

    def _link_jobs(self, todo: list[int], verify_top, precheck) -> Iterator[Job]:
        """Each new exhibit's verification `Job` (see `link_new`); an exhibit with a damaged
        descriptor is left unlinked with a `StoreWarning`."""
        refs = {}

        def ref(rowid: int) -> ScanRef:
            if rowid not in refs:
                row = self._db.execute(
                    "SELECT exhibit_id, scan_file, scan_sha256, source_sha256, scan_state FROM exhibits WHERE rowid=?",
                    (rowid,),
                ).fetchone()
                refs[rowid] = ScanRef(rowid, *row)
            return refs[rowid]

        db = self._db
        for rowid, cands in plan(self._index, db, self.descriptor["dim"], todo, self.shortlist):
            # another client linking the store at the same time: what it linked or is verifying is its own
            if db.execute("SELECT linked FROM exhibits WHERE rowid=?", (rowid,)).fetchone()[0] or not db.claim(rowid):
                continue
            if cands is None:
                db.release(rowid)
                eid = ref(rowid).exhibit_id
                warnings.warn(
                    f"exhibit {eid!r} was not linked: its stored descriptor is damaged; run "
                    f"`ballistix check --store {self.folder}`",
                    StoreWarning,
                    stacklevel=5,
                )
                continue
            yield Job(
                str(self.folder),
                ref(rowid),
                cands,
                [ref(c.id) for c in cands],
                dict(self.compare_params),
                verify_top,
                precheck,
            )
            refs.clear()

    def _record_links(self, outcomes: Iterable[Outcome]) -> int:
        """Weigh and record each exhibit's verified comparisons with its ``linked`` mark."""
        params = json.dumps({**COMPARE_DEFAULTS, **self.compare_params}, sort_keys=True, default=str)
        calibrations, marks_calibrations = self.calibrations(), self.marks_calibrations()
        n = 0
        for out in outcomes:
            for d in out.damaged:
                self._note_damaged(**d)
            for rowid in out.restored:
                self._set_scan_state(rowid, "ok")
            if out.verified is None:  # left unlinked: `check --repair`, then link again
                self._db.release(out.rowid)
                continue
            with self._transaction() as db:
                for c in out.verified:
                    r = weigh(c.comparison, calibrations)
                    weigh_comparison_marks(r, marks_calibrations)  # where both scans carry marks
                    a, b = sorted((out.rowid, c.id))
                    db.execute(  # a pair compared again keeps its examiner's verdict (see `confirm`)
                        "INSERT INTO comparisons (a, b, cmc_count, score, rotation_deg, params_json, "
                        "confirmed, created_utc, created_by, ballistix_version, log10_lr, evidence_json) "
                        "VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?) ON CONFLICT (a, b) DO UPDATE SET "
                        + ", ".join(f"{c}=excluded.{c}" for c in _RECOMPARED),
                        (
                            a,
                            b,
                            int(r.cmc_count),
                            float(r.score),
                            float(r.rotation_deg),
                            params,
                            _now(),
                            _user(),
                            __version__,
                            r.log10_lr,
                            json.dumps(r.evidence, sort_keys=True, default=str),
                        ),
                    )
                db.execute("UPDATE exhibits SET linked=1 WHERE rowid=?", (out.rowid,))
            self._db.release(out.rowid)
            n += len(out.verified)
        return n

    # --------------------------------------------------------------- check
    def check(self, *, repair: bool = False) -> dict:
        """Verify the whole store, fsck-style, and with ``repair=True`` mend what can be mended.

        Checked: the database (``PRAGMA integrity_check``, schema version,
        settings, comparisons naming exhibits that exist), every exhibit's
        descriptor (size, finite values) and cached scan (present, readable,
        the file recorded at ingest), the index (readable, the same ids as
        the database, the vectors this store saved) and the registered
        calibrations (their recorded SHA-256).

        ``repair=True`` (refused on a read-only store) rebuilds the index,
        records the checksum of cached scans made before schema 3, and
        re-creates a damaged cached scan from its source file when that file
        is still at its recorded path with its recorded SHA-256 and
        re-processing it with the store's parameters gives exactly the stored
        descriptor; the exhibit is then compared again by the next
        `link_new`. A cached scan that cannot be re-created is removed and the
        exhibit's scan marked missing: searches skip it quietly and list it.

        Returns
        -------
        dict
            ``store``, ``ok`` (no problem left), ``repair``, ``checked`` (what
            was checked: counts), ``problems`` (each with ``check``, ``item``,
            ``problem``, ``repaired`` and ``action``) and ``notes``.

        Examples
        --------
        >>> report = CaseStore("casefile/", create=False).check(repair=True)  # doctest: +SKIP
        >>> report["ok"], [p["problem"] for p in report["problems"] if not p["repaired"]]  # doctest: +SKIP
        """
        from .check import check_store

        if repair and self.read_only:
            raise StoreError(f"{self.folder}: the store is opened read-only; cannot repair it")
        with self._space():
            try:
                return check_store(
                    self, bool(repair), schema_version=SCHEMA_VERSION, new_prefix=_NEW_PREFIX, cached=_cached
                )
            except db_errors() as e:
                if _no_space(e):
                    raise
                raise StoreError(
                    f"{self.db_path}: the database is damaged ({e}); restore the database from a backup"
                ) from None

    @_writes("record a decision")
    def confirm(self, exhibit_a: str, exhibit_b: str, verdict: str, *, examiner: str, reason: str) -> dict:
        """Record an examiner's decision on a recorded comparison, in the store's append-only audit log.

        A decision is never changed or deleted, only superseded: a later decision on the same
        pair is appended and names the one it replaces (``supersedes``); the latest is the
        pair's current decision. Its effect on the comparison (``confirmed``: 1, 0 or NULL) is
        written in the same transaction, and the graph, the leads and the report follow it:
        an identification is a link whatever the LR, an elimination is never one, and an
        inconclusive comparison is neither: not a link (even where its LR passes the rule),
        not an elimination, a candidate that stays for review (see `DecisionRule`).

        Parameters
        ----------
        exhibit_a, exhibit_b : str
            Two exhibits of the store whose comparison is recorded (`link_new`), in either order.
        verdict : {"identification", "elimination", "inconclusive"}
        examiner : str
            Who decided (their name as the lab records it).
        reason : str
            Why: what the examiner saw, or the case note it is in.

        Returns
        -------
        dict
            The decision as `decisions` lists it: ``decision_id``, ``exhibit_a``, ``exhibit_b``,
            ``verdict``, ``examiner``, ``reason``, ``created_utc``, ``created_by`` (the OS user and
            ballistix version), ``ballistix_version``, ``supersedes`` and ``earlier`` (how many
            decisions of the pair came before it).

        Raises
        ------
        ParameterError
            An unknown verdict, a blank examiner or reason, one exhibit twice, an exhibit not
            in the store, or a pair with no recorded comparison. Nothing is written.
        StoreError
            The store is opened read-only.

        Examples
        --------
        >>> store.confirm("case-17", "t1", "identification", examiner="A. Jansen",
        ...               reason="breech-face marks agree over the whole primer")  # doctest: +SKIP
        {'decision_id': 1, 'exhibit_a': 'case-17', 'exhibit_b': 't1', 'verdict': 'identification', ...}
        """
        if isinstance(verdict, bool) or not isinstance(verdict, str) or verdict not in VERDICTS:
            raise ParameterError(
                f"verdict must be one of {list(VERDICTS)}, got {verdict!r}"
                + (
                    " (True/False verdicts are no longer taken: say identification or elimination)"
                    if isinstance(verdict, bool)
                    else ""
                )
            )
        check_text(examiner, "examiner", required=True)
        check_text(reason, "reason", required=True)
        if exhibit_a == exhibit_b:
            raise ParameterError(f"a decision is on two exhibits, got {exhibit_a!r} twice")
        a, b = sorted((self._rowid(exhibit_a), self._rowid(exhibit_b)))
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM comparisons WHERE a=? AND b=?", (a, b)).fetchone() is None:
                raise ParameterError(
                    f"no recorded comparison of {exhibit_a!r} and {exhibit_b!r} in the store: a decision is on a "
                    f"comparison `link_new` (`ballistix link`) recorded"
                )
            (latest,) = db.execute("SELECT max(decision_id) FROM decisions WHERE a=? AND b=?", (a, b)).fetchone()
            cur = db.execute(
                "INSERT INTO decisions (decision_id, a, b, verdict, examiner, reason, created_utc, created_by, "
                f"ballistix_version, supersedes) VALUES ({db.next_id('decisions', 'decision_id')}, "
                "?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING decision_id",
                (a, b, verdict, examiner, reason, _now(), _user(), __version__, latest),
            )
            db.execute("UPDATE comparisons SET confirmed=? WHERE a=? AND b=?", (VERDICTS[verdict], a, b))
            decision_id = int(cur.fetchone()[0])
        return self._decisions("d.decision_id=?", (decision_id,))[0]

    def decisions(
        self, exhibit_a: str | None = None, exhibit_b: str | None = None, *, current: bool = False
    ) -> list[dict]:
        """The examiners' decisions (see `confirm`), oldest first: all of them, those on comparisons
        of ``exhibit_a``, or those on the pair ``exhibit_a``, ``exhibit_b``.

        Each decision is a dict: ``decision_id``, ``exhibit_a``, ``exhibit_b`` (the pair's ids),
        ``verdict``, ``examiner``, ``reason``, ``created_utc``, ``created_by``,
        ``ballistix_version``, ``supersedes`` (the id of the pair's decision it replaced, or None)
        and ``earlier`` (how many decisions of the pair came before it). ``current=True``: only
        each pair's latest decision, the one in force.

        Examples
        --------
        >>> [d["verdict"] for d in store.decisions("case-17", "t1")]  # doctest: +SKIP
        ['inconclusive', 'identification']
        """
        if exhibit_a is None and exhibit_b is not None:
            raise ParameterError("give exhibit_a to list the decisions of a pair (or neither for all of them)")
        if exhibit_a is not None and exhibit_a == exhibit_b:
            raise ParameterError(f"a decision is on two exhibits, got {exhibit_a!r} twice")
        if exhibit_b is not None:
            a, b = sorted((self._rowid(exhibit_a), self._rowid(exhibit_b)))
            out = self._decisions("d.a=? AND d.b=?", (a, b))
        elif exhibit_a is not None:
            r = self._rowid(exhibit_a)
            out = self._decisions("(d.a=? OR d.b=?)", (r, r))
        else:
            out = self._decisions("TRUE", ())
        if current:
            latest = {(d["exhibit_a"], d["exhibit_b"]): d for d in out}
            out = sorted(latest.values(), key=lambda d: d["decision_id"])
        return out

    def _decisions(self, where: str, args: tuple) -> list[dict]:
        """The decisions matching ``where`` (on ``d``, the decisions table), oldest first, as `decisions` lists them."""
        rows = self._db.execute(
            "SELECT d.decision_id, ea.exhibit_id, eb.exhibit_id, d.verdict, d.examiner, d.reason, d.created_utc, "
            "d.created_by, d.ballistix_version, d.supersedes, "
            "(SELECT COUNT(*) FROM decisions p WHERE p.a = d.a AND p.b = d.b AND p.decision_id < d.decision_id) "
            "FROM decisions d JOIN exhibits ea ON ea.rowid = d.a JOIN exhibits eb ON eb.rowid = d.b "
            f"WHERE {where} ORDER BY d.decision_id",
            args,
        ).fetchall()
        keys = (
            "decision_id",
            "exhibit_a",
            "exhibit_b",
            "verdict",
            "examiner",
            "reason",
            "created_utc",
            "created_by",
            "ballistix_version",
            "supersedes",
            "earlier",
        )
        return [dict(zip(keys, r)) for r in rows]

    def report(self, path, *, since: str | None = None, comparisons: str = "auto") -> Path:
        """Write the HTML report (leads, same-gun groups, scene timeline, 16.4.2) under the store's
        decision rule; see `report.write_report`. ``comparisons``: those of its graph (see `graph`:
        by default every one up to `GRAPH_ALL_LIMIT`, else the evidence, which the report says)."""
        from .report import write_report

        return write_report(self, path, since=since, comparisons=comparisons)

    def graph(self, *, confirmed_only: bool = False, comparisons: str = "auto"):
        """The `LinkageGraph` of the store, under the store's `decision_rule`.

        Parameters
        ----------
        confirmed_only : bool
            Only examiner-confirmed comparisons are links.
        comparisons : {"auto", "all", "evidence"}
            Which recorded comparisons become match edges. ``"all"``: every one.
            ``"evidence"``: only those an analysis uses, decided by the graph's own
            `DecisionRule.is_evidence` on the LR each is judged by (a cohort LR where a
            cohort calibration weighs it): links, candidates for review and examiner
            verdicts. The others, eliminations (compared, not linked), are left out and
            counted: each exhibit node's ``comparisons_left_out``, and the graph's
            ``comparisons`` ("evidence"), ``comparisons_recorded``,
            ``comparisons_left_out`` and ``comparisons_rule`` (the rule in words). Groups,
            leads, candidates, weak links and scene links are those of the whole graph; a
            store's comparisons are read one chunk at a time and memory grows with the
            exhibits and the comparisons kept. ``"auto"`` (default): ``"all"`` for a store
            of up to `GRAPH_ALL_LIMIT` comparisons, ``"evidence"`` above.

        Returns
        -------
        LinkageGraph

        Examples
        --------
        >>> g = CaseStore("casefile/", create=False).graph(comparisons="evidence")  # doctest: +SKIP
        >>> g.nx.graph["comparisons_left_out"], g.node("exhibit", "case-17")["comparisons_left_out"]  # doctest: +SKIP
        (48211, 97)
        """
        from ..graph import LinkageGraph
        from .cohort_lrs import CHUNK, CohortWeigher

        rule = self.decision_rule
        g = LinkageGraph(link_lr=rule["link_lr"], count_rule=rule["count_rule"], confirmed_only=confirmed_only)
        with self._snapshot() as db:
            kept = self.graph_comparisons(comparisons)
            comparisons, total = kept["comparisons"], kept["comparisons_recorded"]
            for sid, attrs in db.execute("SELECT scene_id, attrs_json FROM scenes"):
                g.add_scene(sid, **json.loads(attrs))
            for fid, attrs in db.execute("SELECT firearm_id, attrs_json FROM firearms"):
                g.add_firearm(fid, **json.loads(attrs))
            names = {}
            for rowid, eid, sha, src, kind, scene, gun, cal, date in db.execute(
                "SELECT rowid, exhibit_id, source_sha256, source_name, kind, scene_id, firearm_id, calibre, date "
                "FROM exhibits ORDER BY rowid"
            ):
                names[rowid] = eid
                g.add_exhibit(
                    eid,
                    scene=scene if kind == "scene" else None,
                    test_fired_from=gun if kind == "test_fire" else None,
                    sha256=sha,
                    source_name=src,
                    calibre=cal,
                    date=date,
                )
            weigher = CohortWeigher.from_store(self)
            decided = self._current_decisions(db)
            columns = (
                "SELECT a, b, cmc_count, score, rotation_deg, confirmed, log10_lr, params_json, evidence_json "
                "FROM comparisons"
            )
            if comparisons == "all":
                cur = db.stream(columns + " ORDER BY a, b")
                while chunk := cur.fetchmany(CHUNK):
                    for row, cohort in zip(chunk, weigher.weigh(chunk)):
                        fields = _comparison_fields(row, cohort, decided.get((row[0], row[1])))
                        g.add_comparison(names[row[0]], names[row[1]], fields)
                return g
            # evidence: read in the table's order (sequential on disk), keep what an analysis uses, add it
            # in the order "all" adds comparisons (a, b). A comparison is judged by the fields the graph
            # would give it (`_result_fields` only drops empty ones, which the rule reads as absent);
            # the evidence record, which names the calibration and decides nothing, is read for those kept.
            keeps, kept, left = g.rule.is_evidence, [], dict.fromkeys(names, 0)
            record = "SELECT evidence_json FROM comparisons WHERE a=? AND b=?"
            cur = db.stream(columns)
            while chunk := cur.fetchmany(CHUNK):
                for row, cohort in zip(chunk, weigher.weigh(chunk)):
                    decision = decided.get((row[0], row[1]))
                    res = _comparison_fields(row, cohort, decision, origin=False)
                    if keeps(res):
                        if row[6] is not None:
                            (ev,) = db.execute(record, (row[0], row[1])).fetchone()
                            res = _comparison_fields((*row[:8], ev), cohort, decision)
                        kept.append((row[0], row[1], res))
                    else:
                        left[row[0]] += 1
                        left[row[1]] += 1
            kept.sort(key=lambda r: (r[0], r[1]))
            n_kept = len(kept)
            for a, b, res in kept:
                g.add_comparison(names[a], names[b], res)
            del kept
        nodes = g.nx.nodes
        for rowid, n in left.items():
            nodes[node_key("exhibit", names[rowid])]["comparisons_left_out"] = n
        g.nx.graph.update(
            comparisons="evidence",
            comparisons_recorded=int(total),
            comparisons_left_out=int(total - n_kept),
            comparisons_rule=f"kept: links ({g.decision_rule().split(';')[0]}), candidates for review and "
            f"examiner verdicts; left out: the other comparisons (eliminations), counted on each exhibit "
            f"as comparisons_left_out",
        )
        return g

    @staticmethod
    def _current_decisions(db) -> dict[tuple[int, int], tuple[str, str, str]]:
        """Each decided pair's current decision: ``(a, b)`` rowids -> (verdict, examiner, created_utc).
        Decisions are made by people: few next to the comparisons, held in memory."""
        return {
            (a, b): (verdict, examiner, when)
            for a, b, verdict, examiner, when in db.execute(
                "SELECT a, b, verdict, examiner, created_utc FROM decisions WHERE decision_id IN "
                "(SELECT max(decision_id) FROM decisions GROUP BY a, b)"
            )
        }

    def graph_comparisons(self, comparisons: str = "auto") -> dict:
        """Which comparisons `graph` keeps: ``{"comparisons": "all" or "evidence", "comparisons_recorded":
        the store's count}``; ``comparisons`` as `graph` takes it ("auto": "all" up to
        `GRAPH_ALL_LIMIT` recorded comparisons)."""
        if comparisons not in ("auto", "all", "evidence"):
            raise ParameterError(f"comparisons must be 'auto', 'all' or 'evidence', got {comparisons!r}")
        (total,) = self._db.execute("SELECT COUNT(*) FROM comparisons").fetchone()
        if comparisons == "auto":
            comparisons = "all" if total <= GRAPH_ALL_LIMIT else "evidence"
        return {"comparisons": comparisons, "comparisons_recorded": int(total)}

    def _snapshot(self):
        """Read the database as one snapshot (a read transaction), so that a writer in another process
        cannot change it between the queries of one answer."""
        return self._db.snapshot()


def _comparison_fields(row: tuple, cohort: dict | None, decision: tuple | None = None, *, origin: bool = True) -> dict:
    """A recorded comparison as `LinkageGraph.add_comparison` takes it: the row's fields, its
    calibration (parsed from ``evidence_json`` only with ``origin``: no decision reads it), then
    the cohort LR's fields where a cohort calibration weighed it (they replace the pair's), and
    the pair's current examiner decision, ``(verdict, examiner, created_utc)``: the audit log is
    the record, so its verdict sets ``confirmed`` (a row's own ``confirmed`` that disagrees is
    damage `check` reports)."""
    a, b, cmc, score, rot, confirmed, lr, _, ev = row
    res = {"cmc_count": cmc, "score": score, "rotation_deg": rot, "log10_lr": lr}
    if origin and lr is not None:
        ev = json.loads(ev or "{}")
        res["calibration_sha256"] = ev.get("calibration_sha256")
        res["calibration_origin"] = (ev.get("calibration_origin") or {}).get("text")
        res.update(mark_edge_fields(ev))
    if cohort:
        res.update(cohort)
    if decision is not None:
        verdict, examiner, when = decision
        confirmed = VERDICTS[verdict]
        res.update(verdict=verdict, examiner=examiner, decided_utc=when)
    if confirmed is not None:
        res["confirmed"] = bool(confirmed)
    return res


def _prepare(job: tuple) -> tuple:
    """Read, preprocess and describe one input and write its processed scan beside the cache under
    a private name (no database access: runs in this process or on a Dask worker). Returns
    (sha256, name, processing steps, descriptor, cache path relative to the store, population,
    private path relative to the store, SHA-256 of the written file) or (None, reason). No space
    left to write is raised: it would fail every other input too."""
    folder, params, item, meta, sha, units, pixel_size_m, describe_kw = job
    try:
        if isinstance(item, Scan):
            raw, name = item, str(item.meta.get("source") or meta.get("exhibit_id") or "in-memory scan")
        else:
            name = str(item)
            raw = read_scan(item, units=units, **_image_kw(item, pixel_size_m))
        sha = sha or scan_sha256(raw)
        proc = preprocess(raw, **params)
        vec = describe(proc, **describe_kw)
        rel = f"scans/{sha[:2]}/{sha}.npz"
        part = f"scans/{sha[:2]}/.{sha}.{secrets.token_hex(6)}.part"
        (Path(folder) / "scans" / sha[:2]).mkdir(parents=True, exist_ok=True)
        labels = {
            **(raw.meta.get("labels") or {}),
            **(meta.get("labels") or {}),
            **{k: meta[k] for k in ("calibre", "make", "model", "instrument") if meta.get(k)},
        }
        pop = population({**raw.meta, "labels": labels})
        write_npz(_cached(proc, sha, pop), Path(folder) / part)  # atomic; moved to rel when committed
        return sha, name, proc.meta.get("processing", []), vec, rel, pop, part, sha256_file(Path(folder) / part)
    except OSError as e:
        if _no_space(e):
            raise
        return None, f"{type(e).__name__}: {e}"
    except Exception as e:  # a bad input never stops the batch: recorded with its reason
        return None, str(e) if isinstance(e, BallistixError) else f"{type(e).__name__}: {e}"


def _cached(proc: Scan, sha: str, pop) -> Scan:
    """The processed scan as the cache keeps it (float32 heights, provenance in its meta, its other marks
    where the store extracts them)."""
    return Scan(
        proc.heights.astype(np.float32),
        proc.dx,
        proc.dy,
        {"processing": proc.meta.get("processing", []), "source_sha256": sha, "population": pop},
        proc.marks,
    )


def _check_meta(m: Mapping) -> None:
    check_exhibit_meta(m)  # kind, ids and calibre as text, date as YYYY-MM-DD


def _image_kw(path, pixel_size_m) -> dict:
    """``pixel_size_m`` for `read_scan` when ``path`` is an image and a size was given."""
    from ..io.formats import IMAGE_SUFFIXES

    return (
        {"pixel_size_m": pixel_size_m}
        if pixel_size_m is not None and Path(path).suffix.lower() in IMAGE_SUFFIXES
        else {}
    )


def _fsync_dir(folder: Path) -> None:
    """Make a new name in ``folder`` durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
