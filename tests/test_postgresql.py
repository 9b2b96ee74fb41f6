"""A case store on a PostgreSQL server: what the SQLite store tests (test_store.py, run on both backends)
cannot say. The audit logs are append-only in the server itself; two processes ingest and link one
store at once and lose nothing; a writer killed with kill -9 leaves a store that checks clean; a folder
and a database that do not belong together are refused. Skipped without PostgreSQL or psycopg."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from _stores import connect, sql

import ballistix as bx
from ballistix.errors import ParameterError, StoreError
from ballistix.store import CaseStore

psycopg = pytest.importorskip("psycopg")
FAST = {"spacing_um": 12.5}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Twelve x3p files: four guns, three shots each."""
    d = tmp_path_factory.mktemp("scans")
    scans = bx.datasets.simulate(n_firearms=4, shots=3, seed=5, difficulty="easy", resolution="fast")
    return [bx.write_x3p(s, d / f"pg-{k:02d}.x3p") for k, s in enumerate(scans)]


@pytest.fixture()
def url(postgres_server):
    """A new, empty database on the session's server."""
    u = postgres_server.create_database()
    yield u
    postgres_server.drop_database(u)


def test_a_store_on_the_server_is_opened_by_its_folder_alone(tmp_path, url, files):
    folder = tmp_path / "s"
    with CaseStore(folder, database=url, preprocess_params=FAST, shortlist=3) as st:
        assert st.created and st.backend == "postgresql"
        st.ingest(files[:4], progress=False)
        assert st.link_new(progress=False) > 0
    assert not (folder / "store.sqlite").exists()
    pointer = json.loads((folder / "store.database").read_text())
    assert pointer["url"] == url and len(pointer["store_id"]) == 32
    with CaseStore(folder, read_only=True) as st:  # by the folder: the server's records, the folder's scans
        assert st.backend == "postgresql" and len(st) == 4
        assert st.search("pg-00", k=2)[0]["exhibit_id"] in {"pg-01", "pg-02", "pg-03"}
        with pytest.raises(StoreError, match="read-only"):
            st.ingest(files[4:5], progress=False)
    # the server itself refuses a write of a read-only session (not only the store's own check)
    st = CaseStore(folder, read_only=True)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        st._db.execute("UPDATE exhibits SET linked=0")
    st.close()


def test_the_audit_logs_are_append_only_in_the_server_itself(tmp_path, url, files, postgres_server):
    with CaseStore(tmp_path / "s", database=url, preprocess_params=FAST, shortlist=3) as st:
        st.ingest(files[:3], progress=False)
        st.link_new(progress=False)
        (a, b) = sql(
            tmp_path / "s",
            "SELECT ea.exhibit_id, eb.exhibit_id FROM comparisons c JOIN exhibits ea "
            "ON ea.rowid = c.a JOIN exhibits eb ON eb.rowid = c.b ORDER BY c.a, c.b LIMIT 1",
        )[0]
        scenes = tmp_path / "scenes.csv"
        scenes.write_text("scene_id,date,place\nS-1,2025-03-02,Harbour\n")
        assert st.import_table(scenes)["import_id"] == 1 and st.imports()[0]["rows"] == 1
        st.confirm(a, b, "inconclusive", examiner="A. Examiner", reason="too few marks")
        d = st.confirm(a, b, "identification", examiner="B. Examiner", reason="second look, more cells")
        assert d["supersedes"] == 1 and [x["decision_id"] for x in st.decisions()] == [1, 2]
        ra, rb = st._rowid(a), st._rowid(b)
        g = st.graph()
        assert g.nx.edges[f"exhibit:{a}", f"exhibit:{b}"]["verdict"] == "identification"
    for stmt, match in (
        ("UPDATE decisions SET verdict='elimination'", "never changed"),
        ("DELETE FROM decisions", "never deleted"),
        ("TRUNCATE decisions", "never truncated"),
        (f"INSERT INTO decisions VALUES (9, {ra}, {rb}, 'identification', 'x', 'y', 't', 'u', 'v', 1)", "supersedes"),
        ("UPDATE imports SET rows=0", "never changed"),
        ("TRUNCATE imports", "never truncated"),
    ):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match=match):
            sql(tmp_path / "s", stmt)
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(tmp_path / "s", f"INSERT INTO decisions VALUES (3, {ra}, {rb}, 'maybe', 'x', 'y', 't', 'u', 'v', 2)")
    with CaseStore(tmp_path / "s") as st:
        assert st.check()["ok"]
    # a log edited around its triggers is reported: a disabled trigger, a deleted decision
    sql(tmp_path / "s", "ALTER TABLE decisions DISABLE TRIGGER decisions_no_delete")
    sql(tmp_path / "s", "DELETE FROM decisions WHERE decision_id=2")  # the latest: no gap in the ids left
    with CaseStore(tmp_path / "s") as st:
        problems = " | ".join(p["problem"] for p in st.check()["problems"])
    assert "decisions_no_delete" in problems and "1 of the 2 decisions recorded are missing" in problems, problems


def test_a_folder_and_a_database_that_do_not_belong_together_are_refused(tmp_path, url, files, postgres_server):
    with CaseStore(tmp_path / "a", database=url, preprocess_params=FAST):
        pass
    with pytest.raises(StoreError, match="not empty.*needs an empty database"):  # the database holds a store
        CaseStore(tmp_path / "b", database=url)
    assert not (tmp_path / "b").exists()  # nothing was left behind
    with CaseStore(tmp_path / "lite"):
        pass
    with pytest.raises(StoreError, match="SQLite file store.sqlite"):
        CaseStore(tmp_path / "lite", database=url)
    other = postgres_server.create_database()
    try:
        with CaseStore(tmp_path / "c", database=other):
            pass
        pointer = tmp_path / "c" / "store.database"
        rec = json.loads(pointer.read_text())
        pointer.write_text(json.dumps({**rec, "url": url}))  # names a database that holds another store
        with pytest.raises(StoreError, match="holds another store"):
            CaseStore(tmp_path / "c")
        pointer.write_text("{not json")
        with pytest.raises(StoreError, match="store.database: cannot be read"):
            CaseStore(tmp_path / "c")
    finally:
        postgres_server.drop_database(other)
    with pytest.raises(StoreError, match="cannot connect"):
        CaseStore(tmp_path / "d", database=url.replace("/store_", "/no_such_database_"))
    with pytest.raises(ParameterError, match="postgresql:// URL"):
        CaseStore(tmp_path / "e", database="mysql://somewhere/db")


def test_a_path_that_is_not_utf8_is_kept_on_the_server(tmp_path, url, files):
    raw = os.fsencode(str(tmp_path)) + b"/scan-\xff.x3p"
    with open(raw, "wb") as f:
        f.write(files[0].read_bytes())
    name = os.fsdecode(raw)
    with CaseStore(tmp_path / "s", database=url, preprocess_params=FAST) as st:
        st.ingest([name], progress=False)
        (e,) = st.exhibits()
        assert e["source_path"] == name  # as os.fsdecode gives it, surrogates and all
        assert st.check(repair=True)["ok"]
    (stored,) = sql(tmp_path / "s", "SELECT source_path FROM exhibits")[0]
    assert stored.startswith("hex:") and bytes.fromhex(stored[4:]) == raw


_CLIENT = textwrap.dedent("""
    import sys
    from ballistix.store import CaseStore
    st = CaseStore(sys.argv[1])
    print("ready", flush=True)
    st.ingest(sys.argv[2:], progress=False)
    st.link_new(progress=False)
    print("done", flush=True)
""")


def _check_whole(folder, n: int) -> None:
    """Every exhibit once, linked, its scan and index entry there, and `check` clean."""
    with CaseStore(folder) as st:
        rows = st.exhibits()
        assert len(rows) == n and len({r["source_sha256"] for r in rows}) == n
        assert all(r["linked"] for r in rows)
        st.check_index()
        report = st.check()
        assert report["ok"], report["problems"]
    db = connect(folder)
    try:  # every comparison names two exhibits of the store, each pair once
        pairs = db.execute("SELECT a, b FROM comparisons").fetchall()
        assert len(pairs) == len(set(pairs)) and all(a < b for a, b in pairs)
    finally:
        db.close()


def test_two_processes_ingest_and_link_one_store_at_once(tmp_path, url, files):
    folder = tmp_path / "s"
    CaseStore(folder, database=url, preprocess_params=FAST, shortlist=3).close()
    script = tmp_path / "client.py"
    script.write_text(_CLIENT)
    halves = [files[0::2], files[1::2] + files[:2]]  # overlapping: two exhibits offered by both
    procs = [
        subprocess.Popen([sys.executable, str(script), str(folder), *map(str, h)], stdout=subprocess.PIPE, text=True)
        for h in halves
    ]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0 and out.split() == ["ready", "done"]
    _check_whole(folder, len(files))


def test_a_writer_killed_with_kill_9_leaves_a_store_that_checks_clean(tmp_path, url, files):
    folder = tmp_path / "s"
    CaseStore(folder, database=url, preprocess_params=FAST, shortlist=3).close()
    script = tmp_path / "client.py"
    script.write_text(_CLIENT)
    args = [sys.executable, str(script), str(folder), *map(str, files)]
    for delay in (0.3, 1.0, 2.0, 4.0):  # in the ingest, and later in the link
        proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with CaseStore(folder) as st:  # consistent after each kill: what was committed is whole
            rows = st.exhibits()
            assert len({r["source_sha256"] for r in rows}) == len(rows)
            for r in rows:
                st.scan(r["exhibit_id"])
            assert st.check()["ok"]
    subprocess.run(args, check=True, capture_output=True, timeout=600)  # and a run completes it
    _check_whole(folder, len(files))


def test_command_line_makes_a_store_on_the_server_and_finds_it_by_its_folder(tmp_path, url, files, capsys):
    from ballistix.cli import main

    folder = str(tmp_path / "s")
    assert main(["ingest", *map(str, files[:3]), "--store", folder, "--database", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == ["pg-00", "pg-01", "pg-02"]
    assert main(["link", "--store", folder, "--out", str(tmp_path / "graph.graphml")]) == 0
    assert main(["check", "--store", folder]) == 0
    with CaseStore(folder) as st:
        assert st.backend == "postgresql" and len(st) == 3 and all(e["linked"] for e in st.exhibits())


def test_the_review_app_serves_a_store_on_the_server(tmp_path, url):
    """The review app opens the store by its folder: a decision made in its form lands in the server's
    audit log and the graph follows it."""
    pytest.importorskip("flask")
    from test_serve import decide, pairs_on, token

    from ballistix.serve import create_app

    cw = bx.datasets.simulate_casework(n_firearms=2, n_scenes=3, seed=2, resolution="fast")
    with CaseStore(tmp_path / "s", database=url, shortlist=3) as st:
        st.add_casework(cw, progress=False)
        st.link_new(progress=False)
    c = create_app(tmp_path / "s").test_client()
    queue = c.get("/")
    assert queue.status_code == 200
    a, b = pairs_on(queue.get_data(as_text=True))[0]
    tok = token(c, f"/compare?a={a}&b={b}")
    assert decide(c, a, b, "elimination", tok).status_code in (200, 303)
    with CaseStore(tmp_path / "s", read_only=True) as st:
        (d,) = st.decisions(a, b)
        assert d["verdict"] == "elimination" and st.backend == "postgresql"
        assert st.graph().nx.edges[f"exhibit:{a}", f"exhibit:{b}"]["verdict"] == "elimination"
