import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import networkx as nx
import numpy as np
import pytest
from _stores import connect, sql

import ballistix as bx
from ballistix.errors import StoreWarning
from ballistix.store import CaseStore, StoreError

FAST = {"spacing_um": 12.5}  # 12.5 um grids keep the tests quick
# every test here runs on SQLite and on PostgreSQL (conftest: store_backend) but those marked sqlite_only
pytestmark = pytest.mark.usefixtures("store_backend")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Nine x3p files: three guns of three different models, three shots each (easy impressions;
    two guns of one model share class marks that can reach the 6-CMC rule in the simulator)."""
    d = tmp_path_factory.mktemp("scans")
    scans = bx.datasets.simulate(
        n_firearms=3,
        shots=3,
        seed=3,
        difficulty="easy",
        resolution="fast",
        models=["Glock 17", "Ruger P95", "SIG Sauer P226"],
    )
    paths = [bx.write_x3p(s, d / f"case-{k:02d}.x3p") for k, s in enumerate(scans)]
    guns = {p.stem: s.meta["labels"]["firearm"] for p, s in zip(paths, scans)}
    return paths, guns


@pytest.fixture()
def store(store_backend, tmp_path, files):
    st = CaseStore(tmp_path / "casefile", preprocess_params=FAST, shortlist=4)
    st.ingest(files[0], progress=False)
    yield st
    st.close()


def test_ingest_is_idempotent(tmp_path, files):
    paths, _ = files
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        r = st.ingest(paths[:4] + [paths[0]], progress=False)
        assert r.added == [p.stem for p in paths[:4]] and r.existing == ["case-00"] and not r.failed
        r = st.ingest(paths[2:5], progress=False)
        assert r.added == ["case-04"] and r.existing == ["case-02", "case-03"]
        assert len(st) == 5
        rows = st.exhibits()
        assert len({r["source_sha256"] for r in rows}) == 5
        assert all(r["created_by"] and r["ballistix_version"] == bx.__version__ for r in rows)
    with CaseStore(tmp_path / "s") as st:  # reopened: the same five, in the index too
        assert len(st) == 5 and len(bx.ScanIndex.load(st.index_path)) == 5
        st.check_index()


def test_bad_inputs_are_recorded_and_skipped(tmp_path, files):
    paths, _ = files
    bad = tmp_path / "broken.x3p"
    bad.write_bytes(b"not a zip at all")
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        r = st.ingest([bad, paths[0], tmp_path / "missing.x3p", paths[1]], progress=False)
        assert r.added == ["case-00", "case-01"]
        reasons = dict(r.failed)
        assert "zip" in reasons[str(bad)] and "no such file" in reasons[str(tmp_path / "missing.x3p")]
        assert sorted(f["source"] for f in st.failures()) == sorted([str(bad), str(tmp_path / "missing.x3p")])
        r = st.ingest([paths[2]], meta={"kind": "evidence"}, progress=False)
        assert r.failed and "kind" in r.failed[0][1] and len(st) == 2


def test_ids_and_meta_from_the_caller(tmp_path, files):
    paths, _ = files
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.add_scene("S1", date="2024-05-01", context="street gang")
        st.add_firearm("F1", status="seized", tracing_status="traced")
        r = st.ingest(
            paths[:2],
            meta=[{"exhibit_id": "E-17", "scene_id": "S1"}, {"exhibit_id": "T-1", "firearm_id": "F1"}],
            progress=False,
        )
        assert r.added == ["E-17", "T-1"]
        kinds = {e["exhibit_id"]: (e["kind"], e["scene_id"], e["firearm_id"]) for e in st.exhibits()}
        assert kinds == {"E-17": ("scene", "S1", None), "T-1": ("test_fire", None, "F1")}
        g = st.graph()
        assert g.scene_of("E-17") == "S1" and g.firearm_of("T-1") == "F1"
        assert g.indicator_16_4_2()["value"] == 1.0


def test_search_by_file_scan_and_exhibit(store, files):
    paths, guns = files
    by_id = store.search("case-00", k=3)
    assert "case-00" not in [c["exhibit_id"] for c in by_id]
    assert set(by_id[0]) == {
        "exhibit_id",
        "source_name",
        "cmc_count",
        "score",
        "descriptor_score",
        "descriptor_rank",
        "log10_lr",
        "calibration",
        "calibration_sha256",
        "calibration_origin",
        "conclusion",
    }
    for c in by_id:  # a conclusion only where a calibration gave an LR; otherwise a candidate, said so
        assert (c["log10_lr"] is None) == (c["conclusion"] == "candidate") == (c["calibration"] is None)
    assert guns[by_id[0]["exhibit_id"]] == guns["case-00"] and by_id[0]["cmc_count"] >= 6
    by_file = store.search(paths[4], k=2)
    assert by_file[0]["exhibit_id"] == "case-04" and by_file[0]["source_name"] == "case-04.x3p"
    by_scan = store.search(bx.read_scan(paths[4]), k=2)
    assert [c["exhibit_id"] for c in by_scan] == [c["exhibit_id"] for c in by_file]


def test_link_new_records_comparisons_once_and_the_graph_groups_guns(store, files):
    _, guns = files
    n = store.link_new(progress=False)
    assert n > 0 and store.link_new(progress=False) == 0
    # no calibration applies to this store's 12.5 um grids: by default no comparison is a link,
    # the strong ones wait for an examiner
    g = store.graph()
    assert g.groups(min_size=2) == [] and len(g.candidates()) > 0
    assert all(c["log10_lr"] is None for c in g.candidates())
    with pytest.raises(bx.ParameterError, match="reason"):
        store.set_decision_rule(count_rule=6)
    store.set_decision_rule(count_rule=6, reason="validated on this lab's test fires (report V-1)")
    assert store.decision_rule["count_rule"] == 6 and store.decision_rule["set_by"]
    g = store.graph()
    assert "6 or more congruent matching cells" in g.decision_rule()
    truth = {}
    for e, f in guns.items():
        truth.setdefault(f, set()).add(e)
    assert sorted(map(sorted, g.groups())) == sorted(map(sorted, truth.values()))
    x, y = sorted(min(g.link_graph().edges(), key=sorted))  # two shots of one gun, linked by their count
    assert guns[x] == guns[y]
    store.confirm(x, y, "elimination", examiner="A. Examiner", reason="test")  # rejected: no longer a link
    g = store.graph()
    assert not g.link_graph().has_edge(x, y) and g.nx.edges[f"exhibit:{x}", f"exhibit:{y}"]["confirmed"] is False
    with pytest.raises(bx.ParameterError, match="no exhibit"):
        store.confirm("nobody", x, "identification", examiner="A. Examiner", reason="test")
    # the shipped calibration is for 6.25 um grids: this 12.5 um store records why there is no LR
    rows = sql(store.folder, "SELECT log10_lr, evidence_json FROM comparisons")
    assert len(rows) == n
    for lr, ev in rows:
        assert lr is None and "no likelihood ratio" in json.loads(ev)["note"]


@pytest.mark.sqlite_only  # the SQLite file itself (PostgreSQL stores start at the current schema)
def test_v1_store_is_migrated_and_keeps_its_comparisons(store):
    store.link_new(progress=False)
    folder = store.folder
    before = sorted(sql(folder, "SELECT a, b, cmc_count, score FROM comparisons"))
    assert before
    store.close()
    db = sqlite3.connect(folder / "store.sqlite")
    db.execute("ALTER TABLE comparisons DROP COLUMN log10_lr")  # as ballistix 0.1.0 left it
    db.execute("ALTER TABLE comparisons DROP COLUMN evidence_json")
    db.execute("DROP TABLE decisions")  # schema 4's log (its index and triggers go with it)
    db.execute("DROP TABLE imports")  # schema 5's log
    for col in ("scan_sha256", "scan_state", "source_path", "source_read"):  # schema 3's columns: 0.1.0 had none
        db.execute(f"ALTER TABLE exhibits DROP COLUMN {col}")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    with CaseStore(folder) as st:
        assert st.schema_version >= 2
        assert sorted(sql(folder, "SELECT a, b, cmc_count, score FROM comparisons")) == before
        assert {r[0] for r in sql(folder, "SELECT log10_lr FROM comparisons")} == {None}
        g = st.graph()
        assert g.nx.number_of_edges() >= len(before)


@pytest.mark.parametrize("damage", ["delete", "corrupt", "stale"])
def test_lost_or_corrupt_index_is_detected_and_rebuilt(store, damage):
    before = store.search("case-03", k=4)
    ids_before = bx.ScanIndex.load(store.index_path).ids
    assert len(ids_before) == len(store) == 9
    if damage == "delete":
        store.index_path.unlink()
    elif damage == "corrupt":
        b = bytearray(store.index_path.read_bytes())
        b[len(b) // 2] ^= 0xFF
        store.index_path.write_bytes(bytes(b))
    else:
        idx = bx.ScanIndex.load(store.index_path)
        idx.remove(idx.ids[:2])
        idx.save(store.index_path)
    with pytest.raises(bx.IndexFormatError):
        store.check_index()
    rebuilt = store.rebuild_index()
    store.check_index()
    assert np.array_equal(rebuilt.ids, ids_before)
    assert store.search("case-03", k=4) == before
    # and a store opened on a damaged index repairs it itself
    store.index_path.unlink()
    with CaseStore(store.folder, shortlist=store.shortlist) as again:
        again.check_index()
        assert again.search("case-03", k=4) == before


@pytest.mark.sqlite_only  # the SQLite file itself (PostgreSQL stores start at the current schema)
def test_schema_versions_and_foreign_files(tmp_path, files):
    from ballistix.store import casestore

    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        assert st.schema_version == casestore.SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "s" / "store.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        CaseStore(tmp_path / "s")
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / "store.sqlite")
    db.execute("CREATE TABLE stuff (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a ballistix store"):
        CaseStore(other)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "store.sqlite").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(StoreError, match="SQLite"):
        CaseStore(junk)


@pytest.mark.sqlite_only  # the SQLite file itself (PostgreSQL stores start at the current schema)
def test_migrations_run_in_order(tmp_path, monkeypatch):
    from ballistix.store import casestore

    with CaseStore(tmp_path / "s"):
        pass
    v = casestore.SCHEMA_VERSION
    monkeypatch.setattr(casestore, "SCHEMA_VERSION", v + 1)
    monkeypatch.setitem(casestore.MIGRATIONS, v, ["ALTER TABLE exhibits ADD COLUMN examiner TEXT"])
    with CaseStore(tmp_path / "s") as st:
        assert st.schema_version == v + 1
        cols = [r[1] for r in sql(st.folder, "PRAGMA table_info(exhibits)")]
        assert "examiner" in cols


def test_other_parameters_on_reopen_are_refused(tmp_path):
    with CaseStore(tmp_path / "s", preprocess_params=FAST):
        pass
    with pytest.raises(bx.ParameterError, match="preprocess_params"):
        CaseStore(tmp_path / "s", preprocess_params={"spacing_um": 6.25})


def test_a_store_keeps_the_descriptor_it_was_made_with(tmp_path, files, monkeypatch):
    """A new store records the current descriptor (version 2). A store made before descriptors were
    recorded holds version-1 vectors: it is opened as version 1 (its index is not rebuilt), and a query
    is described with version 1, so that an exhibit's own file is found with similarity 1."""
    from ballistix.features.describe import DESCRIPTOR_NAME, V1_INFO
    from ballistix.store import casestore

    paths, _ = files
    with CaseStore(tmp_path / "new", preprocess_params=FAST) as st:
        assert st.descriptor["name"] == DESCRIPTOR_NAME
    assert json.loads(sql(tmp_path / "new", "SELECT value FROM meta WHERE key='descriptor'")[0][0]) == st.descriptor

    with monkeypatch.context() as m:  # a store of an older ballistix: version-1 vectors
        m.setattr(casestore, "descriptor_info", lambda: dict(V1_INFO))
        with CaseStore(tmp_path / "old", preprocess_params=FAST) as st:
            st.ingest(paths[:5], progress=False)
    sql(tmp_path / "old", "DELETE FROM meta WHERE key='descriptor'")  # it recorded none
    index_before = (tmp_path / "old" / "index.bxi").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rebuild, no warning
        with CaseStore(tmp_path / "old") as st:
            assert st.descriptor == V1_INFO
            hit = st.search(paths[4], k=1)[0]
            assert hit["exhibit_id"] == "case-04" and hit["descriptor_score"] == pytest.approx(1.0, abs=1e-5)
            st.ingest(paths[5:6], progress=False)  # a new exhibit of an old store: version 1 as well
            assert st.search(paths[5], k=1)[0]["descriptor_score"] == pytest.approx(1.0, abs=1e-5)
    assert index_before != (tmp_path / "old" / "index.bxi").read_bytes()  # the ingest added to it
    assert json.loads(sql(tmp_path / "old", "SELECT value FROM meta WHERE key='descriptor'")[0][0]) == V1_INFO


def test_a_store_with_a_descriptor_this_ballistix_cannot_compute_is_refused(tmp_path):
    with CaseStore(tmp_path / "s", preprocess_params=FAST):
        pass
    sql(
        tmp_path / "s",
        "UPDATE meta SET value=? WHERE key='descriptor'",
        json.dumps({"name": "future-v9", "params": {}}),
    )
    with pytest.raises(StoreError, match="descriptor.*future-v9"):
        CaseStore(tmp_path / "s")


_INGEST = textwrap.dedent("""
    import sys
    from ballistix.store import CaseStore
    st = CaseStore(sys.argv[1], preprocess_params={"spacing_um": 12.5})
    print("ready", flush=True)
    st.ingest(sys.argv[2:], progress=False)
    print("done", flush=True)
""")


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    scans = bx.datasets.simulate(n_firearms=10, shots=4, seed=4, difficulty="easy", resolution="fast")
    return [bx.write_x3p(s, d / f"m-{k:02d}.x3p") for k, s in enumerate(scans)]


def test_kill_9_during_ingest_never_loses_or_duplicates(tmp_path, many_files):
    """Twenty `kill -9` at random moments of an ingest of 40 files; after each, the store opens
    consistent (every committed exhibit has its scan and descriptor, the index agrees), and the
    final run completes the set with no duplicate."""
    paths = many_files
    folder = tmp_path / "s"
    script = tmp_path / "ingest.py"
    script.write_text(_INGEST)
    args = [sys.executable, str(script), str(folder)] + [str(p) for p in paths]
    CaseStore(folder, preprocess_params=FAST).close()  # made here: on the backend under test
    rnd = random.Random(0)
    counts = []
    for _ in range(20):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"  # imports done, store open: ingest starts now
        time.sleep(rnd.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with CaseStore(folder) as st:
            rows = st.exhibits()
            assert len({r["source_sha256"] for r in rows}) == len(rows)
            for r in rows:
                assert (folder / r["scan_file"]).is_file()
                st.scan(r["exhibit_id"])  # readable
            st.check_index()
            counts.append(len(rows))
    print("exhibits after each kill:", counts)
    assert counts == sorted(counts)  # nothing committed is ever lost
    assert sum(0 < c < len(paths) for c in counts) >= 5  # the kills did land in the middle of ingests
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    with CaseStore(folder) as st:
        assert len(st) == len(paths) and sorted(e["exhibit_id"] for e in st.exhibits()) == sorted(p.stem for p in paths)
        st.check_index()


def test_readers_see_a_consistent_store_while_a_writer_ingests(tmp_path, files):
    paths, _ = files
    folder = tmp_path / "s"
    with CaseStore(folder, preprocess_params=FAST) as st:
        st.ingest(paths[:1], progress=False)
    script = tmp_path / "ingest.py"
    script.write_text(_INGEST)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)] + [str(p) for p in paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = []
    while proc.poll() is None:
        db = connect(folder)  # a reader of its own (store.sqlite, or the PostgreSQL database)
        n = db.execute("SELECT COUNT(*) FROM exhibits").fetchone()[0]
        assert db.integrity_check() == ["ok"]
        db.close()
        seen.append(n)
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read()
    assert seen == sorted(seen) and seen[0] >= 1
    with CaseStore(folder) as st:
        assert len(st) == len(paths)
    assert os.path.exists(folder / "index.bxi")


LINK_ROWS = "SELECT a, b, cmc_count, score, rotation_deg, log10_lr, evidence_json FROM comparisons"


def _linked_store(folder, paths, shortlist=3, **link):
    """A store of ``paths`` linked with ``link_new(**link)``: (exhibits, descriptors, comparisons)."""
    client = link.pop("ingest_client", None)
    with CaseStore(folder, preprocess_params=FAST, shortlist=shortlist) as st:
        r = st.ingest(paths, progress=False, client=client)
        assert len(r.added) == len(paths)
        st.link_new(progress=False, **link)
        return (
            st.exhibits(),
            sql(st.folder, "SELECT descriptor FROM exhibits ORDER BY rowid"),
            sorted(sql(st.folder, LINK_ROWS)),
        )


def test_dask_cluster_and_a_process_pool_give_the_same_store_as_a_local_run(tmp_path, files):
    distributed = pytest.importorskip("distributed")
    paths, _ = files
    local = _linked_store(tmp_path / "local", paths)
    pool = _linked_store(tmp_path / "pool", paths, n_jobs=2)  # one exhibit a worker at a time
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        distributed.Client(lc) as client,
    ):
        remote = _linked_store(tmp_path / "dask", paths, ingest_client=client, client=client)
    keys = ("exhibit_id", "source_sha256", "kind", "scan_file")
    assert [{k: e[k] for k in keys} for e in local[0]] == [{k: e[k] for k in keys} for e in remote[0]]
    assert len(local[1]) == len(paths) and local[1] == remote[1]  # bit-identical descriptors
    # identical comparisons, weighed alike; every exhibit compared with its 3 nearest, no pair twice
    assert local[2] and local[2] == remote[2] == pool[2]
    assert len({(a, b) for a, b, *_ in local[2]}) == len(local[2]) >= len(paths) * 3 // 2


def test_link_new_with_verify_top_records_each_shortlists_best(tmp_path, files):
    paths, guns = files
    full = {(a, b): rest for a, b, *rest in _linked_store(tmp_path / "full", paths, shortlist=4)[2]}
    top = _linked_store(tmp_path / "top", paths, shortlist=4, verify_top=1)[2]
    # one comparison recorded per exhibit at most (its shortlist's best by the pre-check), each the
    # same as the full link's comparison of that pair
    assert 0 < len(top) <= len(paths) < len(full)
    assert all(full[(a, b)] == rest for a, b, *rest in top)
    names = {i + 1: p.stem for i, p in enumerate(paths)}  # rowids in ingest order
    # the pairs recorded with 6+ cells still join each gun's three shots, and only them (an
    # exhibit whose same-gun shots were planned by earlier ones records its best other: a low count)
    g = nx.Graph([(names[a], names[b]) for a, b, cmc, *_ in top if cmc >= 6])
    truth = {}
    for e, f in guns.items():
        truth.setdefault(f, set()).add(e)
    assert sorted(map(sorted, nx.connected_components(g))) == sorted(map(sorted, truth.values()))
    with CaseStore(tmp_path / "full") as st:
        for bad in (0, -1, 1.5, True):
            with pytest.raises(bx.ParameterError, match="verify_top must be a positive integer"):
                st.link_new(progress=False, verify_top=bad)
        with pytest.raises(bx.ParameterError, match="without verify_top"):
            st.link_new(progress=False, precheck={"factor": 4})


def test_a_damaged_descriptor_leaves_its_exhibit_unlinked_with_a_warning(tmp_path, files):
    paths, _ = files
    with CaseStore(tmp_path / "s", preprocess_params=FAST, shortlist=3) as st:
        st.ingest(paths[:5], progress=False)
    sql(tmp_path / "s", "UPDATE exhibits SET descriptor=? WHERE exhibit_id='case-02'", b"\0" * 10)
    with CaseStore(tmp_path / "s") as st:
        with pytest.warns(StoreWarning, match="'case-02' was not linked: its stored descriptor is damaged"):
            assert st.link_new(progress=False) > 0
    linked = dict(sql(tmp_path / "s", "SELECT exhibit_id, linked FROM exhibits"))
    assert linked.pop("case-02") == 0 and all(linked.values())


def test_link_on_a_cluster_started_the_way_cluster_managers_start_one(tmp_path, files):
    """dask-jobqueue and Kubernetes start ``dask scheduler`` and ``dask worker`` processes: the CLI's
    ``--scheduler`` address then links the store there, with the same comparisons as a local run."""
    distributed = pytest.importorskip("distributed")
    paths, _ = files
    local = _linked_store(tmp_path / "local", paths[:6])[2]
    with CaseStore(tmp_path / "s", preprocess_params=FAST, shortlist=3) as st:
        st.ingest(paths[:6], progress=False)
    info = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--scheduler-file", str(info), "--no-dashboard", "--port", "0"],
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [*dask, "worker", "--scheduler-file", str(info), "--nthreads", "1", "--no-dashboard"],
                    stderr=subprocess.DEVNULL,
                    cwd=tmp_path,  # the workers see the store's folder at the same path, as on a shared file system
                )
            )
        deadline = time.monotonic() + 60
        while not (info.is_file() and info.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "ballistix",
                "link",
                "--store",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "g.json"),
                "--shortlist",
                "3",
                "--scheduler",
                address,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["comparisons_recorded"] == len(local)
        with distributed.Client(address) as client:  # the exhibits were verified there: one task each
            done = client.run_on_scheduler(
                lambda dask_scheduler: sum(p.state_counts["forgotten"] for p in dask_scheduler.task_prefixes.values())
            )
        assert done == 6
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert sorted(sql(tmp_path / "s", LINK_ROWS)) == local


@pytest.mark.sqlite_only  # the SQLite file itself (PostgreSQL stores start at the current schema)
def test_failed_migration_leaves_the_store_unchanged(tmp_path, monkeypatch):
    from ballistix.store import casestore

    with CaseStore(tmp_path / "s"):
        pass
    v = casestore.SCHEMA_VERSION
    monkeypatch.setattr(casestore, "SCHEMA_VERSION", v + 1)
    monkeypatch.setitem(casestore.MIGRATIONS, v, ["ALTER TABLE exhibits ADD COLUMN x TEXT", "NOT SQL AT ALL"])
    with pytest.raises(StoreError, match=f"migration from schema version {v} failed"):
        CaseStore(tmp_path / "s")
    monkeypatch.setattr(casestore, "SCHEMA_VERSION", v)
    with CaseStore(tmp_path / "s") as st:
        assert st.schema_version == v
        assert "x" not in [r[1] for r in sql(st.folder, "PRAGMA table_info(exhibits)")]


def test_unwritable_folder_is_a_store_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        CaseStore(f)
    with pytest.raises(StoreError, match="cannot create"):
        CaseStore(f / "sub")


def test_links_carry_the_likelihood_ratio_into_graph_leads_and_report(tmp_path, files):
    # default settings (6.25 um grids): the shipped calibration applies and every comparison keeps its LR
    paths, guns = files
    with CaseStore(tmp_path / "s", shortlist=2) as st:
        st.ingest(paths[:4], [{"scene_id": f"S{k}"} for k in range(4)], progress=False)  # one scene each
        assert st.link_new(progress=False) > 0
        rows = sql(st.folder, "SELECT cmc_count, log10_lr, evidence_json FROM comparisons")
        assert rows and all(lr is not None for _, lr, _ in rows)
        assert all(json.loads(ev)["conclusion"]["log10_lr"] == pytest.approx(lr) for _, lr, ev in rows)
        assert max(rows, key=lambda r: r[1])[0] >= 6  # the strongest LR is an identification-level count
        g = st.graph()
        lrs = [d.get("log10_lr") for _, _, d in g.nx.edges(data=True) if d.get("kind") == "match"]
        assert lrs and all(v is not None for v in lrs)
        leads = g.leads([e["exhibit_id"] for e in st.exhibits()])
        assert leads and all((r["best_log10_lr"] is not None) == (r["best_cmc"] > 0) for r in leads)  # direct links
        html = st.report(tmp_path / "r.html").read_text()
        assert "<th>best LR</th>" in html and "likelihood ratio &gt;= 100" in html


def test_a_registered_calibration_gives_this_store_its_likelihood_ratios(tmp_path, files):
    """A 12.5 um store: no shipped calibration applies. A calibration made for its settings (as
    `ballistix validate` writes one) is registered; its LRs then decide the links."""
    from ballistix import evidence as ev
    from ballistix.features.comparison import DEFAULTS

    paths, guns = files
    rng = np.random.default_rng(0)  # reference features: same-gun counts high, different-gun low
    X = np.r_[
        np.c_[rng.poisson(14, 60), np.full(60, 0.7), rng.normal(0.4, 0.05, 60)],
        np.c_[rng.poisson(1, 300), np.full(300, 0.55), rng.normal(0.2, 0.05, 300)],
    ]
    X[X[:, 0] == 0, 1] = 0.0
    same = np.r_[np.ones(60, bool), np.zeros(300, bool)]
    with CaseStore(tmp_path / "s", preprocess_params=FAST, shortlist=3) as st:
        st.ingest(paths[:6], progress=False)
        proc = st.scan("case-00")
        cal = ev.fit(
            X,
            same,
            name="lab 12.5 um",
            preprocessing=ev.processing_signature(proc.meta["processing"]),
            comparison={k: DEFAULTS[k] for k in DEFAULTS},
            domain={"calibre": ["9mm Luger"]},
        )
        cal.save(tmp_path / "lab.json")
        with pytest.raises(bx.ParameterError, match="why"):
            st.register_calibration(tmp_path / "lab.json", reason=" ")
        rec = st.register_calibration(tmp_path / "lab.json", reason="validation V-2")
        assert rec["registered_by"] and (st.folder / rec["file"]).is_file()
        st.link_new(progress=False)
        rows = sql(st.folder, "SELECT cmc_count, log10_lr, evidence_json FROM comparisons")
        assert rows and all(lr is not None and json.loads(e)["calibration"] == "lab 12.5 um" for _, lr, e in rows)
        g = st.graph()
        truth = {}
        for e in ("case-00", "case-01", "case-02", "case-03", "case-04", "case-05"):
            truth.setdefault(guns[e], set()).add(e)
        assert sorted(map(sorted, g.groups(min_size=2))) == sorted(map(sorted, truth.values()))
    copy = tmp_path / "s" / rec["file"]
    copy.write_text(copy.read_text().replace("lab 12.5 um", "lab 12.5 um!"))  # altered after registration
    with CaseStore(tmp_path / "s") as st, pytest.raises(StoreError, match="altered"):
        st.calibrations()


def test_a_cohort_calibration_weighs_each_pair_against_both_exhibits_backgrounds(tmp_path, files):
    """With a cohort calibration registered, a pair's LR comes from its count above both exhibits'
    other comparisons in the store (their background); exhibits with too few comparisons keep the
    pair's own LR."""
    from ballistix import evidence as ev
    from ballistix.features.comparison import DEFAULTS

    paths, guns = files
    rng = np.random.default_rng(1)
    X = np.r_[rng.poisson(12, 80), rng.normal(0.0, 1.5, 400)][:, None]
    same = np.r_[np.ones(80, bool), np.zeros(400, bool)]
    with CaseStore(tmp_path / "s", preprocess_params=FAST, shortlist=8) as st:
        st.ingest(paths, [{"batch": "B1"}] * len(paths), progress=False)
        proc = st.scan("case-00")
        cal = ev.fit(
            X,
            same,
            features=["cmc_excess"],
            name="lab cohort",
            preprocessing=ev.processing_signature(proc.meta["processing"]),
            comparison={k: DEFAULTS[k] for k in DEFAULTS},
            domain={"calibre": ["9mm Luger"]},
            extra_reference={"cohort": {"exclude_top": 2, "min_size": 4}},
        )
        assert cal.needs_cohort
        cal.save(tmp_path / "cohort.json")
        st.register_calibration(tmp_path / "cohort.json", reason="validation V-3")
        st.link_new(progress=False)
        g = st.graph()
        edges = [d for *_, d in g.nx.edges(data=True) if d["kind"] == "match"]
        assert edges and all(d["lr_basis"] == "cohort: lab cohort" for d in edges)
        for d in edges:  # the count above the background, weighed; the pair's own LR kept beside it
            assert d["log10_lr"] == pytest.approx(cal.log10_lr(np.array([[d["cmc_excess"]]]))[0])
            assert d["cmc_excess"] <= d["cmc_count"] and d.get("pair_log10_lr") is None  # no pair calibration here
        truth = {}
        for e, f in guns.items():
            truth.setdefault(f, set()).add(e)
        assert sorted(map(sorted, g.groups(min_size=2))) == sorted(map(sorted, truth.values()))


def test_exhibits_that_do_not_discriminate_in_their_population_give_no_lr(tmp_path, files):
    """A cohort calibration's max_background: an exhibit whose background reaches it (it shares that many
    cells with guns that did not fire it) gets no LR for any of its pairs: candidates, never links."""
    from ballistix import evidence as ev
    from ballistix.features.comparison import DEFAULTS

    paths, _ = files
    rng = np.random.default_rng(1)
    X = np.r_[rng.poisson(12, 80), rng.normal(0.0, 1.5, 400)][:, None]
    same = np.r_[np.ones(80, bool), np.zeros(400, bool)]
    with CaseStore(tmp_path / "s", preprocess_params=FAST, shortlist=8) as st:
        st.ingest(paths, progress=False)
        proc = st.scan("case-00")
        cal = ev.fit(
            X,
            same,
            features=["cmc_excess"],
            name="strict cohort",
            preprocessing=ev.processing_signature(proc.meta["processing"]),
            comparison={k: DEFAULTS[k] for k in DEFAULTS},
            extra_reference={"cohort": {"exclude_top": 2, "min_size": 4, "max_background": 0.0}},
        )
        cal.save(tmp_path / "strict.json")
        st.register_calibration(tmp_path / "strict.json", reason="test: every background is too high")
        st.link_new(progress=False)
        g = st.graph()
        edges = [d for *_, d in g.nx.edges(data=True) if d["kind"] == "match"]
        assert edges and all(d.get("log10_lr") is None and d["lr_basis"].startswith("withheld") for d in edges)
        assert g.groups(min_size=2) == []
        cands = g.candidates()
        assert cands and all(c["why"].startswith("withheld") for c in cands)


def test_a_store_kept_open_sees_the_exhibits_another_client_added(tmp_path, files):
    """Two clients of one store (two processes in a lab; two objects here): what the other one ingested
    and indexed is searched and linked by the first without reopening it."""
    paths, guns = files
    a = CaseStore(tmp_path / "s", preprocess_params=FAST, shortlist=4)
    a.ingest(paths[:5], progress=False)
    with CaseStore(tmp_path / "s", shortlist=4) as b:
        b.ingest(paths[5:], progress=False)
        assert len(b._index) == len(paths)
    assert len(a) == len(paths) and len(a._index) == 5  # not yet: a reads the index when it searches
    found = {c["exhibit_id"] for c in a.search(paths[8], k=3)}
    assert len(a._index) == len(paths)
    assert {p.stem for p in paths[6:8] if guns[p.stem] == guns[paths[8].stem]} <= found
    a.link_new(progress=False)
    linked = sql(tmp_path / "s", "SELECT COUNT(*) FROM exhibits WHERE linked=1")[0][0]
    assert linked == len(paths)
    a.close()
