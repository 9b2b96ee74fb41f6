"""The store's database: SQLite (embedded, the default) or PostgreSQL (a lab's shared server) behind one
connection object, so that the store writes its SQL once.

The store's SQL is the part both engines read alike: ``?`` placeholders (turned into psycopg's ``%s``
here), ``INSERT ... ON CONFLICT``, ``RETURNING``, explicit ``BEGIN``/``COMMIT``. What differs lives
here and nowhere else:

- **The schema** (`render`): one source for both. Types are written as SQLite names and mapped for
  PostgreSQL (``INTEGER`` to ``BIGINT``, ``REAL`` to ``DOUBLE PRECISION``, ``BLOB`` to ``BYTEA``,
  ``TEXT`` to ``TEXT COLLATE "C"``, so that both sort text by its bytes and give the same order).
  A statement that cannot be written once (a trigger) is a `Dialects` with one text per engine.
- **The write lock** (`Database.begin_write`): SQLite's ``BEGIN IMMEDIATE``; on PostgreSQL a
  transaction-level advisory lock taken first thing in the transaction, so writers queue exactly as
  they do on SQLite (one at a time; readers never wait) and each writer's reads, made after it holds
  the lock, see every commit before it.
- **Read snapshots** (`Database.snapshot`): a deferred transaction on SQLite, ``REPEATABLE READ
  READ ONLY`` on PostgreSQL.
- **New ids**: exhibits and logs take ``max + 1`` under the write lock on PostgreSQL (no sequence:
  a sequence leaves gaps on rollback, and a gap in an audit log must mean a deleted row), and a
  trigger keeps the highest id each log handed out (`Database.issued`); SQLite assigns them itself
  (``AUTOINCREMENT`` logs: never reused, counted in ``sqlite_sequence``).
- **The catalogue**: tables, triggers, the integrity check, the ids handed out.

A connection is one `sqlite3.Connection` or one `psycopg.Connection` in autocommit mode (explicit
transactions, as the store writes them). psycopg is needed only for a ``postgresql://`` URL.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import sqlite3
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks; SQLite clients linking at once then repeat each other's work
    fcntl = None

__all__ = ["Database", "Dialects", "render", "is_url", "redact", "path_to_db", "path_from_db", "errors"]

_names = itertools.count()
#: The advisory lock every writer of a PostgreSQL store takes (one store per database).
_LOCK_KEY = 0x62616C6C  # "ball"
#: The class of the advisory locks by which a client claims an exhibit to link (`Database.claim`).
_CLAIM_CLASS = 0x6C696E6B  # "link"


def is_url(database) -> bool:
    """Whether ``database`` names a PostgreSQL server (``postgresql://`` or ``postgres://``)."""
    return isinstance(database, str) and database.split("://", 1)[0] in ("postgresql", "postgres")


def redact(url: str) -> str:
    """The URL without its password (what the store records and its messages show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@functools.cache
def errors() -> tuple[type[BaseException], ...]:
    """The exceptions a database call raises (the DB-API ``Error`` of each driver available)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


@dataclass(frozen=True)
class Dialects:
    """A statement written once per engine (where one text cannot serve both: triggers)."""

    sqlite: str
    postgresql: str


_TYPES = [
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
]


def render(stmt, dialect: str) -> str:
    """A schema statement (text written for SQLite, or `Dialects`) as ``dialect`` runs it."""
    if isinstance(stmt, Dialects):
        return getattr(stmt, dialect)
    if dialect == "sqlite":
        return stmt
    for pattern, replacement in _TYPES:
        stmt = pattern.sub(replacement, stmt)
    return re.sub(r"--[^\n]*", "", stmt)  # SQLite's comments inside a statement: kept out of PostgreSQL's catalogue


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` doubled), outside quoted text."""
    out, quote = [], None
    for ch in sql:
        if quote:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def path_to_db(path: str | None, dialect: str):
    """A source path as the database keeps it: text; a path that is not valid UTF-8 as its bytes on
    SQLite (a BLOB in the text column) and as ``hex:`` and its bytes in hex on PostgreSQL (whose text
    holds only UTF-8; a recorded path is absolute, so the prefix cannot be a path's own)."""
    if path is None:
        return None
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return raw if dialect == "sqlite" else "hex:" + raw.hex()


def path_from_db(value) -> str | None:
    """A path as `path_to_db` kept it, as ``os.fsdecode`` gives it."""
    if isinstance(value, bytes | memoryview):
        return os.fsdecode(bytes(value))
    if isinstance(value, str) and value.startswith("hex:"):
        return os.fsdecode(bytes.fromhex(value[4:]))
    return value


class Database:
    """One connection to a store's database; ``execute`` takes the store's SQL (``?`` placeholders).

    Use `Database.sqlite` and `Database.postgresql` to make one.
    """

    def __init__(self, conn, dialect: str, name: str, claims_path=None):
        self.conn, self.dialect, self.name = conn, dialect, name
        self._claims: set[int] = set()  # work this connection claimed (`claim`)
        self._claims_path, self._claims_fd = claims_path, None  # SQLite: the file whose bytes are claimed

    # -------------------------------------------------------------- connecting
    @classmethod
    def sqlite(cls, conn: sqlite3.Connection, name: str, claims_path=None) -> Database:
        """``claims_path``: the file whose byte ranges `claim` locks (None: claims always succeed)."""
        return cls(conn, "sqlite", name, claims_path)

    @classmethod
    def postgresql(cls, url: str, *, read_only: bool = False, connect_timeout_s: int = 30) -> Database:
        """Connect to a PostgreSQL store; ``read_only``: the server refuses every write of this session."""
        try:
            import psycopg
        except ImportError:
            from ..errors import StoreError

            raise StoreError(
                f"{redact(url)}: a PostgreSQL store needs psycopg: pip install 'ballistix[postgresql]'"
            ) from None
        options = "-c default_transaction_read_only=on" if read_only else None
        conn = psycopg.connect(
            url,
            autocommit=True,  # explicit transactions, as the store writes them
            connect_timeout=connect_timeout_s,
            application_name="ballistix",
            **({"options": options} if options else {}),
        )
        return cls(conn, "postgresql", redact(url))

    # --------------------------------------------------------------- statements
    def execute(self, sql: str, params=()):
        if self.dialect == "sqlite":
            return self.conn.execute(sql, params)
        if not params:  # sent as it is (a schema statement may hold a literal %)
            return self.conn.execute(sql)
        return self.conn.execute(_pyformat(sql), tuple(params))

    def stream(self, sql: str, params=()):
        """A cursor over a large result, read as it is consumed (``fetchmany``; PostgreSQL: a server-side
        cursor, where the client would otherwise receive the whole result at once)."""
        if self.dialect == "sqlite":
            return self.conn.execute(sql, params)
        cur = self.conn.cursor(name=f"ballistix_{id(self)}_{next(_names)}", withhold=not self.in_transaction)
        cur.itersize = 8192
        cur.execute(_pyformat(sql) if params else sql, tuple(params) if params else None)
        return cur

    def executemany(self, sql: str, rows) -> None:
        if self.dialect == "sqlite":
            self.conn.executemany(sql, rows)
        else:
            with self.conn.cursor() as cur:
                cur.executemany(_pyformat(sql), rows)

    def close(self) -> None:
        self.conn.close()
        if self._claims_fd is not None:
            os.close(self._claims_fd)  # releases this process's claims on the file
            self._claims_fd = None

    @property
    def in_transaction(self) -> bool:
        if self.dialect == "sqlite":
            return self.conn.in_transaction
        import psycopg

        return self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    # ------------------------------------------------------------- transactions
    def begin_write(self) -> None:
        """Start a write transaction that other writers wait for (see the module notes)."""
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))

    def rollback(self) -> None:
        with contextlib.suppress(*errors()):
            self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def write(self):
        """One write transaction, rolled back on any error."""
        self.begin_write()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self):
        """Read as one snapshot: a writer in another process cannot change what the queries see."""
        if self.in_transaction:
            yield self
            return
        self.conn.execute("BEGIN" if self.dialect == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield self
        finally:
            self.rollback()

    # ------------------------------------------------------------------ claims
    def claim(self, key: int) -> bool:
        """Claim a piece of work (an exhibit to link) if no other client holds it: on PostgreSQL a
        session-level advisory lock, which the server releases when the client ends, however it ends;
        on SQLite a POSIX lock on byte ``key`` of the claims file beside the database, which the
        operating system releases when the process ends (claims of one process do not exclude each
        other; where the platform has no such locks, every claim succeeds)."""
        if self.dialect == "sqlite":
            return self._claim_byte(int(key))
        got = self.execute("SELECT pg_try_advisory_lock(?, ?)", (_CLAIM_CLASS, int(key) & 0x7FFFFFFF)).fetchone()[0]
        if got:
            self._claims.add(int(key))
        return bool(got)

    def _claim_byte(self, key: int) -> bool:
        if self._claims_path is None or fcntl is None:
            return True
        if self._claims_fd is None:
            try:
                self._claims_fd = os.open(self._claims_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                return True  # a folder we cannot write: linking fails there anyway, and says why
        try:
            fcntl.lockf(self._claims_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
        except OSError:
            return False
        self._claims.add(key)
        return True

    def release(self, key: int) -> None:
        if int(key) not in self._claims:
            return
        self._claims.discard(int(key))
        if self.dialect == "sqlite":
            fcntl.lockf(self._claims_fd, fcntl.LOCK_UN, 1, int(key))
        else:
            self.execute("SELECT pg_advisory_unlock(?, ?)", (_CLAIM_CLASS, int(key) & 0x7FFFFFFF))

    def release_all(self) -> None:
        for key in list(self._claims):
            with contextlib.suppress(*errors()):
                self.release(key)

    # -------------------------------------------------------------------- ids
    def next_id(self, table: str, column: str) -> str:
        """The SQL for a new row's id in an insert: SQLite assigns it (NULL); PostgreSQL takes max + 1
        (under the write lock)."""
        if self.dialect == "sqlite":
            return "NULL"
        return f"(SELECT COALESCE(MAX({column}), 0) + 1 FROM {table})"

    def issued(self, table: str) -> int:
        """The highest id an append-only log has handed out (kept apart from its rows, in the inserting
        transaction: SQLite's ``sqlite_sequence``; on PostgreSQL ``meta.issued:<table>``, kept by a
        trigger), or 0."""
        if self.dialect == "sqlite":
            row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        else:
            row = self.execute("SELECT value FROM meta WHERE key=?", (f"issued:{table}",)).fetchone()
        return int(row[0]) if row else 0

    # -------------------------------------------------------------- catalogue
    def tables(self) -> set[str]:
        if self.dialect == "sqlite":
            return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rows = self.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {r[0] for r in rows}

    def triggers(self) -> set[str]:
        """The triggers in force (PostgreSQL: those enabled)."""
        if self.dialect == "sqlite":
            return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        rows = self.execute(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
        )
        return {r[0] for r in rows}

    def integrity_check(self) -> list[str]:
        """What the engine finds wrong with the database file (SQLite's ``PRAGMA integrity_check``:
        ``["ok"]`` when sound). PostgreSQL checks its pages itself (data checksums, WAL): ``["ok"]``."""
        if self.dialect == "sqlite":
            return [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        return ["ok"]

    def blob_length_sql(self, column: str) -> str:
        """A condition true where ``column`` is not a blob of ``?`` bytes (SQLite's columns take any type)."""
        if self.dialect == "sqlite":
            return f"(typeof({column})!='blob' OR length({column})!=?)"
        return f"(octet_length({column}) IS DISTINCT FROM ?)"
