"""The imports log (issue 18): each case-data table imported is recorded in the store's append-only
``imports`` table, in the import's own transaction (`CaseStore.import_table`, `CaseStore.imports`),
checked by `check`, migrated into a schema-4 store, listed by ``ballistix imports`` and by the report.
Bundles of exhibits (`CaseStore.import_exhibits`) are tested in test_exchange.py."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from _stores import sql

import ballistix as bx
from ballistix import __version__
from ballistix.cli import main
from ballistix.errors import BallistixError, ParameterError
from ballistix.store import CaseStore
from ballistix.store import casestore as casestore_module
from ballistix.store.casestore import SCHEMA_VERSION
from ballistix.store.imports import IMPORT_TRIGGERS
from ballistix.store.report import write_graph_report, write_report

# every test here runs on SQLite and on PostgreSQL (conftest: store_backend) but those marked sqlite_only
pytestmark = pytest.mark.usefixtures("store_backend")

SCENES = "scene_id,date,place,lat,lon\nS-1,2025-03-02,Harbour,51.5,-0.12\nS-2,2025-04-11,Market,,\n"
FIREARMS = "firearm_id,make,status\nF-1,Ruger,seized\nF-2,Glock,found\nF-3,Beretta,seized\n"
TRACING = "firearm_id,tracing_status,origin_country\nF-1,traced,US\n"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _tables(st):
    return {k: st._db.execute(f"SELECT * FROM {k} ORDER BY 1").fetchall() for k in ("scenes", "firearms")}


@pytest.fixture()
def store(store_backend, tmp_path):
    """A store with a scenes, a firearms and a tracing table imported (in that order)."""
    with CaseStore(tmp_path / "s") as st:
        for name, text in (("scenes.csv", SCENES), ("firearms.csv", FIREARMS), ("tracing.csv", TRACING)):
            st.import_table(_write(tmp_path, name, text))
    return tmp_path / "s"


def test_each_accepted_file_is_logged_with_its_checksum_counts_who_and_when(tmp_path):
    with CaseStore(tmp_path / "s") as st:
        assert st.imports() == []
        paths = [_write(tmp_path, n, t) for n, t in (("s.csv", SCENES), ("f.csv", FIREARMS), ("t.csv", TRACING))]
        got = [st.import_table(p) for p in paths]
        again = st.import_table(paths[1])  # the same file twice: logged twice, updating this time
        log = st.imports()
    assert [d["import_id"] for d in log] == [1, 2, 3, 4] == [g["import_id"] for g in [*got, again]]
    assert [(d["kind"], d["rows"], d["added"], d["updated"]) for d in log] == [
        ("scenes", 2, 2, 0),
        ("firearms", 3, 3, 0),
        ("tracing", 1, 0, 1),
        ("firearms", 3, 0, 3),
    ]
    assert [d["source_name"] for d in log] == [str(p) for p in (*paths, paths[1])]
    assert [d["sha256"] for d in log] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (*paths, paths[1])]
    assert all(d["sha256"] == g["sha256"] for d, g in zip(log, got))
    assert {d["created_by"] for d in log} == {casestore_module._user()}
    assert {d["ballistix_version"] for d in log} == {__version__}
    assert {d["summary"] for d in log} == {None}
    assert [d["created_utc"] for d in log] == sorted(d["created_utc"] for d in log)
    assert log[0]["created_utc"][:4].isdigit() and log[0]["created_utc"].endswith("+00:00")


def test_the_checksum_is_of_the_bytes_imported_byte_order_mark_and_all(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"\xef\xbb\xbf" + SCENES.encode())
    with CaseStore(tmp_path / "s") as st:
        st.import_table(path)
        assert st.imports()[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "text, message",
    [
        (SCENES + "S-3,yesterday,,,\n", "line 4"),  # refused while reading: nothing written
        ("firearm_id,tracing_status\nF-1,traced\nF-9,traced\n", "F-9"),  # refused inside the transaction
        ("scene_id,weather\nS-1,rain\n", "unknown columns"),
    ],
)
def test_a_refused_file_writes_no_log_row_and_nothing_else(store, tmp_path, text, message):
    with CaseStore(store, create=False) as st:
        before, log = _tables(st), st.imports()
        with pytest.raises(BallistixError, match=message):
            st.import_table(_write(tmp_path, "bad.csv", text))
        assert st.imports() == log and _tables(st) == before
        # the next accepted file gets the next id: the refused one took none
        st.import_table(_write(tmp_path, "good.csv", SCENES))
        assert [d["import_id"] for d in st.imports()] == [1, 2, 3, 4]


def test_the_records_and_their_log_row_are_one_transaction(store, tmp_path, monkeypatch):
    """A log row that cannot be written undoes the records it would have recorded."""

    def fail(*args, **kwargs):
        raise sqlite3.OperationalError("the log cannot be written")

    with CaseStore(store, create=False) as st:
        before, log = _tables(st), st.imports()
        monkeypatch.setattr(CaseStore, "_log_import", staticmethod(fail))
        with pytest.raises(sqlite3.OperationalError, match="the log"):
            st.import_table(_write(tmp_path, "more.csv", "scene_id,place\nS-1,changed\nS-9,new\n"))
        assert _tables(st) == before and st.imports() == log


@pytest.mark.sqlite_only  # SQLite's own triggers and schema (PostgreSQL's: test_postgresql.py)
def test_the_log_is_append_only_in_sqlite_itself(store):
    for stmt in (
        "UPDATE imports SET rows = 0",
        "UPDATE imports SET sha256 = ? WHERE import_id = 1",
        "DELETE FROM imports WHERE import_id = 2",
        "DELETE FROM imports",
    ):
        args = ("0" * 64,) if "?" in stmt else ()
        with pytest.raises(sqlite3.DatabaseError, match="imports are append-only"):
            sql(store, stmt, *args)
    assert [r[0] for r in sql(store, "SELECT import_id FROM imports ORDER BY 1")] == [1, 2, 3]
    with pytest.raises(sqlite3.IntegrityError):  # a kind outside the four
        sql(store, "INSERT INTO imports (kind, source_name, sha256, rows, added, updated, created_utc, created_by, "
            "ballistix_version) VALUES ('photos', 'x', ?, 0, 0, 0, 't', 'u', 'v')", "0" * 64)  # fmt: skip


@pytest.mark.sqlite_only  # SQLite's own triggers and schema (PostgreSQL's: test_postgresql.py)
def test_check_reports_a_dropped_trigger_and_a_deleted_row(store):
    with CaseStore(store, create=False) as st:
        r = st.check()
        assert r["ok"] and r["checked"]["imports"] == 3
    sql(store, "DROP TRIGGER imports_no_delete")
    with CaseStore(store, create=False) as st:
        problems = [p for p in st.check()["problems"] if p["check"] == "imports"]
    assert len(problems) == 1 and "imports_no_delete" in problems[0]["problem"] and not problems[0]["repaired"]
    sql(store, "DELETE FROM imports WHERE import_id = 2")  # possible now the trigger is gone
    with CaseStore(store, create=False, read_only=True) as st:
        report = st.check()
    problems = [p["problem"] for p in report["problems"] if p["check"] == "imports"]
    assert not report["ok"]
    assert any("imports_no_delete" in p for p in problems)
    assert any("1 of the 3 imports recorded are missing" in p for p in problems)
    sql(store, "DROP TRIGGER imports_no_update")
    with CaseStore(store, create=False, read_only=True) as st:
        problems = [p["problem"] for p in st.check()["problems"] if p["check"] == "imports"]
    assert any("imports_no_update, imports_no_delete" in p for p in problems)


@pytest.mark.sqlite_only  # SQLite's own triggers and schema (PostgreSQL's: test_postgresql.py)
def test_a_schema_4_store_is_migrated_and_keeps_its_data(store, tmp_path):
    # as ballistix left a schema-4 store: no imports table (its triggers go with it)
    sql(store, "DROP TABLE imports")
    sql(store, "UPDATE meta SET value='4' WHERE key='schema_version'")
    before = sql(store, "SELECT * FROM scenes ORDER BY 1"), sql(store, "SELECT * FROM firearms ORDER BY 1")
    with CaseStore(store, create=False) as st:
        assert st.schema_version == SCHEMA_VERSION == 5
        assert (
            sql(store, "SELECT * FROM scenes ORDER BY 1"),
            sql(store, "SELECT * FROM firearms ORDER BY 1"),
        ) == before
        assert st.imports() == []
        report = st.check()
        assert report["ok"] and not report["problems"], report["problems"]
        st.import_table(_write(tmp_path, "t.csv", TRACING))
        assert [(d["import_id"], d["kind"]) for d in st.imports()] == [(1, "tracing")]
    triggers = {r[0] for r in sql(store, "SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert set(IMPORT_TRIGGERS) <= triggers
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        sql(store, "DELETE FROM imports")


def test_imports_from_the_command_line(store, tmp_path, capsys):
    assert main(["imports", "--store", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "id",
        "kind",
        "file",
        "sha256",
        "rows",
        "added",
        "updated",
        "by",
        "when",
        "(UTC)",
        "notes",
    ]
    assert len(lines) == 2 + 3
    sha = hashlib.sha256((tmp_path / "firearms.csv").read_bytes()).hexdigest()
    row = lines[3].split()
    assert row[:7] == ["2", "firearms", str(tmp_path / "firearms.csv"), sha[:12], "3", "3", "0"]
    assert main(["imports", "--store", str(store), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    with CaseStore(store, create=False, read_only=True) as st:
        assert got == st.imports()
    assert got[1]["sha256"] == sha
    # an empty log, and a folder that holds no store
    with CaseStore(tmp_path / "empty"):
        pass
    assert main(["imports", "--store", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.strip() == "none"
    assert main(["imports", "--store", str(tmp_path / "nowhere")]) != 0
    assert not (tmp_path / "nowhere").exists()


def test_the_report_lists_the_imports_escaped(tmp_path):
    path = _write(tmp_path, "<b>scenes.csv", SCENES)
    with CaseStore(tmp_path / "s") as st:
        st.import_table(path)
        out = st.report(tmp_path / "report.html")
        # a long table goes to CSV: the whole checksum, the file name as it is
        write_report(st, tmp_path / "small.html", max_rows=1)
        st.import_table(_write(tmp_path, "f.csv", FIREARMS))
        write_report(st, tmp_path / "small.html", max_rows=1)
    html = out.read_text(encoding="utf-8")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert "<h2>Files imported</h2>" in html
    assert "<b>scenes.csv" not in html and "&lt;b&gt;scenes.csv" in html
    assert f"<td title='{sha}'>{sha[:12]}\u2026</td>" in html
    assert f"<td>{casestore_module._user()}</td>" in html
    rows = (tmp_path / "small-tables" / "imports.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "file,kind,sha256,rows,added,updated,by,when"
    assert rows[1].startswith(f"{path},scenes,{sha},2,2,0,")
    assert len(rows) == 3


def test_a_bare_graph_report_has_no_imports_section(tmp_path):
    g = bx.LinkageGraph.from_comparisons([("A", "B", {"cmc_count": 24, "log10_lr": 3.0})])
    html = write_graph_report(g, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Files imported" not in html
    html = write_graph_report(g, tmp_path / "r.html", imports=[]).read_text(encoding="utf-8")
    assert "Files imported" in html and "no file has been imported" in html


def test_a_read_only_store_imports_nothing_and_logs_nothing(store, tmp_path):
    with CaseStore(store, create=False, read_only=True) as st:
        with pytest.raises(BallistixError, match="read-only"):
            st.import_table(_write(tmp_path, "s2.csv", SCENES))
        assert len(st.imports()) == 3
    with CaseStore(store, create=False) as st:
        with pytest.raises(ParameterError, match="kind must be one of"):
            st.import_table(_write(tmp_path, "x.csv", SCENES), kind="photos")
        assert len(st.imports()) == 3
