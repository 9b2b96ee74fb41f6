"""The store's database layer (ballistix/store/db.py): what it does to the SQL, without a server."""

import os

import pytest

from ballistix.store.db import Dialects, _pyformat, path_from_db, path_to_db, redact, render


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT a FROM t WHERE b=? AND c=?", "SELECT a FROM t WHERE b=%s AND c=%s"),
        ("SELECT '?', ? FROM t", "SELECT '?', %s FROM t"),  # a quoted ? is text
        ("SELECT 'it''s ?' || ?", "SELECT 'it''s ?' || %s"),  # a doubled quote inside text
        ("SELECT x FROM t WHERE y LIKE 'a%' AND z=?", "SELECT x FROM t WHERE y LIKE 'a%%' AND z=%s"),
        ('SELECT "col?" FROM t WHERE d % 2 = ?', 'SELECT "col?" FROM t WHERE d %% 2 = %s'),
    ],
)
def test_placeholders_become_psycopgs_outside_quoted_text(sql, expected):
    assert _pyformat(sql) == expected


def test_the_schema_is_rendered_per_engine():
    stmt = "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v REAL, b BLOB, s TEXT NOT NULL, TEXTURE INTEGER)"
    assert render(stmt, "sqlite") == stmt
    assert render(stmt, "postgresql") == (
        'CREATE TABLE t (id BIGINT PRIMARY KEY, v DOUBLE PRECISION, b BYTEA, s TEXT COLLATE "C" NOT NULL, '
        "TEXTURE BIGINT)"
    )
    assert render("CREATE TABLE u (a TEXT, -- a note\n b INTEGER)", "postgresql") == (
        'CREATE TABLE u (a TEXT COLLATE "C", \n b BIGINT)'
    )
    both = Dialects("CREATE TRIGGER x ...", "")
    assert render(both, "sqlite") == "CREATE TRIGGER x ..." and render(both, "postgresql") == ""


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://lab:s3cret@db.lab:5433/cases", "postgresql://lab@db.lab:5433/cases"),
        ("postgresql://lab@db.lab/cases?sslmode=verify-full", "postgresql://lab@db.lab/cases?sslmode=verify-full"),
        ("postgresql://:pw@db/cases", "postgresql://db/cases"),
    ],
)
def test_a_password_is_never_shown_or_recorded(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_path_that_is_not_utf8_comes_back_as_os_fsdecode_gives_it(dialect):
    name = os.fsdecode(b"/scans/caso-\xff.x3p")
    kept = path_to_db(name, dialect)
    assert isinstance(kept, bytes if dialect == "sqlite" else str)
    assert path_from_db(kept) == name
    assert path_to_db("/scans/ok.x3p", dialect) == "/scans/ok.x3p" and path_from_db(None) is None


def test_sqlite_claims_exclude_other_processes_and_end_with_them(tmp_path):
    """A claim (an exhibit a client is linking) is a lock on one byte of the claims file: another
    process cannot take it while the holder lives, and gets it once the holder is killed."""
    import signal
    import sqlite3
    import subprocess
    import sys

    from ballistix.store import db as dbmod

    if dbmod.fcntl is None:
        pytest.skip("no POSIX locks on this platform")
    path = tmp_path / "store.sqlite-claims"
    holder = (
        "import sqlite3, sys; from ballistix.store.db import Database; "
        "d = Database.sqlite(sqlite3.connect(':memory:'), 'x', sys.argv[1]); print(d.claim(5), flush=True); "
        "sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "True"
        mine = dbmod.Database.sqlite(sqlite3.connect(":memory:"), "mine", path)
        assert not mine.claim(5) and mine.claim(6)  # byte 5 is the child's, byte 6 free
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert mine.claim(5)  # the operating system released the killed holder's claim
        mine.release(5)
        mine.release_all()
        mine.close()
    finally:
        if child.poll() is None:
            child.kill()
