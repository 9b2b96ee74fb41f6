"""Case-store integrity (issue 15, "trust nothing from outside the code"): swapped or damaged cached
scans, an index from another store, a lost database, read-only stores, a full disk, `check`, and
kill -9 during link_new and rebuild_index."""

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import ballistix as bx
from ballistix.cli import main
from ballistix.errors import StoreWarning
from ballistix.store import SCHEMA_VERSION, CaseStore, StoreError
from ballistix.store.casestore import DamagedScanError

FAST = {"spacing_um": 12.5}  # 12.5 um grids keep the tests quick
ROOT = os.geteuid() == 0  # root ignores file permissions


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Six x3p files: three guns of three models, two shots each (easy impressions), and each file's gun."""
    d = tmp_path_factory.mktemp("sources")
    scans = bx.datasets.simulate(
        n_firearms=3,
        shots=2,
        seed=3,
        difficulty="easy",
        resolution="fast",
        models=["Glock 17", "Ruger P95", "SIG Sauer P226"],
    )
    paths = [bx.write_x3p(s, d / f"e-{k}.x3p") for k, s in enumerate(scans)]
    return paths, {p.stem: s.meta["labels"]["firearm"] for p, s in zip(paths, scans)}


@pytest.fixture(scope="module")
def base(tmp_path_factory, sources):
    """A store of the six files (not linked), built once; tests work on copies (`fresh`)."""
    folder = tmp_path_factory.mktemp("base") / "store"
    with CaseStore(folder, preprocess_params=FAST, shortlist=5) as st:
        assert len(st.ingest(sources[0], progress=False).added) == 6
    return folder


def fresh(base, tmp_path, name="s"):
    return shutil.copytree(base, tmp_path / name)


def digest(folder) -> dict:
    """SHA-256 of every file of a store except SQLite's side files (-wal, -shm)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def scan_file(folder, exhibit_id):
    db = sqlite3.connect(folder / "store.sqlite")
    (rel,) = db.execute("SELECT scan_file FROM exhibits WHERE exhibit_id=?", (exhibit_id,)).fetchone()
    db.close()
    return folder / rel


def column(folder, sql, *args):
    db = sqlite3.connect(f"file:{folder / 'store.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def permuted_index(st):
    """An index with the store's ids but other vectors (each id holds the next exhibit's descriptor), as
    another store's index of as many exhibits would."""
    rows = column(st.folder, "SELECT rowid, descriptor FROM exhibits ORDER BY rowid")
    ids, vecs = np.array([r[0] for r in rows]), np.array([np.frombuffer(r[1], np.float32) for r in rows])
    idx = bx.ScanIndex(st.descriptor["dim"], descriptor=st.descriptor)
    idx.add(ids, np.roll(vecs, 1, axis=0))
    return idx


# ---------------------------------------------------------------- 1. swapped cached scan
def test_swapped_cached_scan_is_refused_not_reported_as_a_45_cmc_match(base, tmp_path, sources):
    paths, guns = sources
    folder = fresh(base, tmp_path)
    # e-0 and e-2 are of different guns: copying e-0's processed scan over e-2's made a search for e-0
    # report e-2 (another gun) with as many CMCs as e-0 against itself
    assert guns["e-0"] != guns["e-2"]
    shutil.copyfile(scan_file(folder, "e-0"), scan_file(folder, "e-2"))
    with CaseStore(folder) as st:
        with pytest.raises(DamagedScanError, match="e-2.*SHA-256 differs"):
            st.scan("e-2")
        with pytest.warns(StoreWarning, match=r"skipped exhibit 'e-2'.*" + scan_file(folder, "e-2").name):
            res = st.search(paths[0], k=6)
        assert [s["exhibit_id"] for s in res.skipped] == ["e-2"]
        assert "e-2" not in [c["exhibit_id"] for c in res]
        strong = [c["exhibit_id"] for c in res if c["cmc_count"] >= 6]
        assert strong and all(guns[e] == guns["e-0"] for e in strong)  # e-1, the same gun, still found
        assert column(folder, "SELECT scan_state FROM exhibits WHERE exhibit_id='e-2'") == [("damaged",)]
        report = st.check()
        assert not report["ok"]
        assert [(p["check"], "e-2" in p["problem"]) for p in report["problems"]] == [("scan", True)]


def _downgrade_to_v2(folder):
    """Make a store look as ballistix 0.2 left it: no schema-3 columns, no schema-4 decisions, no schema-5
    imports log, schema version 2."""
    db = sqlite3.connect(folder / "store.sqlite")
    db.execute("DROP TABLE decisions")
    db.execute("DROP TABLE imports")
    for col in ("scan_sha256", "scan_state", "source_path", "source_read"):
        db.execute(f"ALTER TABLE exhibits DROP COLUMN {col}")
    db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    db.commit()
    db.close()


def test_migrated_store_checks_scans_by_source_until_repair_records_their_checksums(base, tmp_path):
    folder = fresh(base, tmp_path)
    _downgrade_to_v2(folder)
    with CaseStore(folder) as st:
        assert st.schema_version == SCHEMA_VERSION
        assert {r["scan_sha256"] for r in st.exhibits()} == {None}
        st.scan("e-1")  # verified by the source SHA-256 inside the file
        report = st.check()
        assert report["ok"] and "6 cached scans made before schema 3" in report["notes"][0]
    shutil.copyfile(scan_file(folder, "e-0"), scan_file(folder, "e-3"))  # swapped: caught by the fallback
    with CaseStore(folder) as st:
        with pytest.raises(DamagedScanError, match="another source"):
            st.scan("e-3")
    shutil.copytree(base / "scans", folder / "scans", dirs_exist_ok=True)  # the lab restores its backup
    with CaseStore(folder) as st:
        report = st.check(repair=True)
        assert report["ok"] and "recorded now" in report["notes"][0]
        shas = {r["exhibit_id"]: r["scan_sha256"] for r in st.exhibits()}
        assert all(shas[e] == hashlib.sha256(scan_file(folder, e).read_bytes()).hexdigest() for e in shas)
    # from now on the exact file is checked: a copy with the right source inside but other bytes is refused
    s = bx.read_npz(scan_file(folder, "e-4"))
    s.meta.pop("sha256")
    bx.write_npz(
        bx.Scan(s.heights * 0.5, s.dx, s.dy, {"source_sha256": s.meta["source_sha256"]}), scan_file(folder, "e-4")
    )
    with CaseStore(folder) as st, pytest.raises(DamagedScanError, match="SHA-256 differs"):
        st.scan("e-4")


# ---------------------------------------------------------------- 2. index of another store
def test_index_with_the_same_ids_but_other_vectors_is_detected_and_rebuilt(base, tmp_path, sources):
    paths, _ = sources
    folder = fresh(base, tmp_path)
    with CaseStore(folder, shortlist=1) as st:
        before = st.search(paths[1], k=1)
        assert before[0]["exhibit_id"] == "e-1"
        permuted_index(st).save(st.index_path)  # another store's index: same ids, other vectors
        with pytest.raises(bx.IndexFormatError, match="not the ones this store saved"):
            st.check_index()
        assert st.check()["problems"][0]["check"] == "index"
    foreign = st.index_path.read_bytes()
    with pytest.warns(StoreWarning, match="not the ones this store saved.*in memory"):
        with CaseStore(folder, shortlist=1, read_only=True) as ro:
            assert ro.search(paths[1], k=1)[0]["exhibit_id"] == "e-1"
    assert st.index_path.read_bytes() == foreign  # read-only: rebuilt in memory, the file left alone
    with pytest.warns(StoreWarning, match="not the ones this store saved.*rebuilt from the descriptors"):
        st = CaseStore(folder, shortlist=1)
    with st:
        st.check_index()
        assert st.search(paths[1], k=1) == before
        assert st.check()["ok"]


# ---------------------------------------------------------------- 3. lost database, where stores are made
@pytest.mark.parametrize("damage", ["empty", "missing", "no tables", "unreadable"])
def test_a_lost_or_unreadable_database_is_an_error_never_a_new_store(base, tmp_path, sources, damage, capsys):
    paths, _ = sources
    folder = fresh(base, tmp_path)
    db = folder / "store.sqlite"
    if damage == "empty":
        db.write_bytes(b"")
        match = "empty \\(0 bytes\\)"
    elif damage == "missing":
        db.unlink()
        match = "store.sqlite: missing"
    elif damage == "no tables":
        db.unlink()
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version=7")  # a valid SQLite file without tables
        con.commit()
        con.close()
        match = "holds no tables"
    else:
        if ROOT:
            pytest.skip("root reads files whatever their permissions")
        db.chmod(0)
        match = "cannot be read"
    before = digest(folder)
    with pytest.raises(StoreError, match=match) as e:
        CaseStore(folder)
    assert str(db) in str(e.value) and "nothing was changed" in str(e.value)
    assert main(["search", str(paths[0]), "--store", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(db) in err[0]
    assert digest(folder) == before  # the index holding every descriptor is untouched


def test_a_store_is_made_only_in_a_missing_or_empty_folder(tmp_path, sources, capsys):
    paths, _ = sources
    other = tmp_path / "notes"
    other.mkdir()
    (other / "case.txt").write_text("not a store")
    with pytest.raises(StoreError, match="not empty and not a case store"):
        CaseStore(other)
    assert sorted(p.name for p in other.iterdir()) == ["case.txt"]
    with pytest.raises(StoreError, match="no case store at"):
        CaseStore(tmp_path / "typo", create=False)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    with CaseStore(tmp_path / "empty") as st:
        assert st.created and len(st) == 0
    with CaseStore(tmp_path / "empty") as st:
        assert not st.created
    # the command line: only ingest creates a store, and says so
    for cmd in (
        ["search", str(paths[0])],
        ["report", "--out", str(tmp_path / "r.html")],
        ["rule"],
        ["link", "--out", str(tmp_path / "g.json")],
        ["register-calibration", str(paths[0]), "--reason", "x"],
    ):
        assert main([*cmd, "--store", str(tmp_path / "typo")]) == 2
        err = capsys.readouterr().err
        assert f"no case store at {tmp_path / 'typo'}; `ballistix ingest --store" in err
    assert not (tmp_path / "typo").exists()
    assert main(["ingest", str(paths[0]), "--store", str(tmp_path / "new")]) == 0
    assert f"created a new case store at {tmp_path / 'new'}" in capsys.readouterr().out
    assert main(["ingest", str(paths[1]), "--store", str(tmp_path / "new")]) == 0
    assert "created" not in capsys.readouterr().out


_CREATE = textwrap.dedent("""
    import sys, time
    from ballistix.store import CaseStore
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    with CaseStore(sys.argv[1]) as st:
        print("created" if st.created else "opened", st.schema_version, len(st), flush=True)
""")


def test_processes_creating_one_store_at_once_make_one_store(tmp_path):
    script = tmp_path / "create.py"
    script.write_text(_CREATE)
    folder = tmp_path / "s"
    for trial in range(3):
        target = folder / str(trial)
        start = time.time() + 4.0  # every process has imported ballistix by then
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(target), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
        said = sorted(o.split()[0] for o, _ in outs)
        assert said == ["created", "opened", "opened", "opened"], outs
        assert sorted(p.name for p in target.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
            "index.bxi",
            "scans",
            "store.sqlite",
        ]  # no temporary database left behind
        with CaseStore(target) as st:
            assert st.check()["ok"]


def test_store_created_between_the_checks_is_opened_not_called_damaged(tmp_path, monkeypatch):
    """Another process may create the store after this one saw no store.sqlite but before it listed
    the folder: the listing then shows a whole store, which is opened (it is not 'missing its
    database'). The race is forced here by hiding store.sqlite from the first existence check."""
    folder = tmp_path / "s"
    with CaseStore(folder) as st:
        assert st.created
    real_exists, hidden = os.path.exists, []

    def exists(self):
        if self.name == "store.sqlite" and not hidden:
            hidden.append(True)
            return False
        return real_exists(self)

    monkeypatch.setattr(type(folder), "exists", exists)
    with CaseStore(folder) as st:
        assert not st.created and hidden


# ---------------------------------------------------------------- 4. read-only stores
def test_read_only_store_searches_writes_nothing_and_refuses_writes(base, tmp_path, sources):
    paths, guns = sources
    folder = fresh(base, tmp_path)
    before = digest(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound store opens read-only without a word
        with CaseStore(folder, read_only=True) as st:
            res = st.search(paths[0], k=2)
            assert guns[res[0]["exhibit_id"]] == guns["e-0"] and st.check()["ok"]
            st.graph()
            st.report(tmp_path / "r.html")
            for call in (
                lambda: st.ingest(paths[:1], progress=False),
                lambda: st.link_new(progress=False),
                lambda: st.confirm("e-0", "e-1", "identification", examiner="A. Examiner", reason="x"),
                lambda: st.set_decision_rule(link_lr=10.0),
                lambda: st.register_calibration(paths[0], reason="x"),
                st.rebuild_index,
                lambda: st.add_scene("S1"),
                lambda: st.check(repair=True),
            ):
                with pytest.raises(StoreError, match="read-only"):
                    call()
    assert digest(folder) == before
    with pytest.raises(StoreError, match="no case store.*read-only"):
        CaseStore(tmp_path / "nothing", read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_read_only_reads_an_immutable_database_where_sqlite_cannot_keep_its_side_files(
    base, tmp_path, sources, monkeypatch
):
    paths, guns = sources
    folder = fresh(base, tmp_path)
    before = digest(folder)
    real, uris = sqlite3.connect, []

    def connect(database, *args, **kwargs):  # SQLite in a folder the user may not write (as root cannot test)
        uris.append(str(database))
        if "mode=ro" in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        return real(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    with CaseStore(folder, read_only=True) as st:
        assert guns[st.search(paths[3], k=1)[0]["exhibit_id"]] == guns["e-3"]
    assert uris[-1].endswith("?immutable=1")
    monkeypatch.undo()
    assert digest(folder) == before


@pytest.mark.skipif(ROOT, reason="root writes whatever the permissions (the read_only=True test covers the store)")
def test_a_store_on_read_only_media_is_searched_read_only(base, tmp_path, sources, capsys):
    paths, _ = sources
    folder = fresh(base, tmp_path)
    before = digest(folder)
    subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            CaseStore(folder)
        assert main(["search", str(paths[0]), "--store", str(folder), "-k", "2", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["candidates"][0]["exhibit_id"] in ("e-0", "e-1")
        assert main(["report", "--store", str(folder), "--out", str(tmp_path / "r.html")]) == 0
        assert main(["check", "--store", str(folder)]) == 0
        with CaseStore(folder, read_only=True) as st:
            assert len(st) == 6
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
    assert digest(folder) == before


# ---------------------------------------------------------------- 5. full disk
_FULL = textwrap.dedent("""
    import resource, signal, sys
    from ballistix.cli import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("where", ["new store", "existing store"])
def test_a_full_disk_is_one_clear_error_and_the_store_stays_intact(base, tmp_path, sources, where):
    paths, _ = sources
    script = tmp_path / "full.py"
    script.write_text(_FULL)
    if where == "new store":
        folder, limit = tmp_path / "new", 8192  # not even the empty database fits
    else:
        folder, limit = fresh(base, tmp_path), 65536  # the store opens; a processed scan does not fit
    extra = tmp_path / "extra.x3p"
    bx.write_x3p(bx.datasets.simulate(1, 1, seed=9, resolution="fast")[0], extra)
    r = subprocess.run(
        [sys.executable, str(script), str(limit), "ingest", str(extra), "--store", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no space left to write {folder} ("), r.stderr
    assert "Traceback" not in r.stderr
    if where == "new store":
        assert not (folder / "store.sqlite").exists()  # no half-made store: the next run creates it whole
        with CaseStore(folder, preprocess_params=FAST) as st:
            assert st.created and st.check()["ok"]
    else:
        assert column(folder, "SELECT COUNT(*) FROM exhibits") == [(6,)]
        assert column(folder, "PRAGMA integrity_check") == [("ok",)]
        with CaseStore(folder) as st:
            assert st.check()["ok"] and len(st) == 6


# ---------------------------------------------------------------- 6. damaged scans do not stop searches
@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_damaged_cached_scan_is_skipped_by_search_and_link(base, tmp_path, sources, damage, capsys):
    paths, guns = sources
    folder = fresh(base, tmp_path)
    target = scan_file(folder, "e-1")
    if damage == "garbage":
        target.write_bytes(b"\x00" * 1000)
    else:
        target.unlink()
    with CaseStore(folder) as st:
        with pytest.warns(StoreWarning, match=f"skipped exhibit 'e-1'.*{target.name}.*check --store"):
            res = st.search(paths[0], k=5)
        assert [s["exhibit_id"] for s in res.skipped] == ["e-1"] and len(res) == 5
        assert column(folder, "SELECT scan_state FROM exhibits WHERE exhibit_id='e-1'") == [("damaged",)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            n = st.link_new(progress=False)
        assert n > 0 and [s["exhibit_id"] for s in st.skipped] == ["e-1"]
        assert len([w for w in caught if "e-1" in str(w.message)]) == 1  # said once per call
        linked = dict(column(folder, "SELECT exhibit_id, linked FROM exhibits"))
        assert linked == {e: int(e != "e-1") for e in linked}  # the damaged exhibit is left unlinked
        assert column(
            folder,
            "SELECT COUNT(*) FROM comparisons c JOIN exhibits e ON e.rowid IN (c.a, c.b) WHERE e.exhibit_id='e-1'",
        ) == [(0,)]
    assert main(["search", str(paths[0]), "--store", str(folder), "-k", "3"]) == 0
    cap = capsys.readouterr()
    assert cap.err.strip() == (
        f"warning: 1 candidate skipped: damaged cached scan of exhibit e-1; run "
        f"`ballistix check --store {folder} --repair`"
    )
    assert main(["search", "e-0", "--store", str(folder), "-k", "3", "--json"]) == 0
    assert [s["exhibit_id"] for s in json.loads(capsys.readouterr().out)["skipped"]] == ["e-1"]
    with CaseStore(folder) as st:  # the query's own scan damaged: an error naming it, not a traceback
        with pytest.raises(DamagedScanError, match="e-1"):
            st.search("e-1")


# ---------------------------------------------------------------- 7. check and repair
def test_check_finds_every_kind_of_damage_and_repair_mends_it(tmp_path, sources, capsys):
    paths, guns = sources
    src = tmp_path / "sources"
    src.mkdir()
    own = [shutil.copy(p, src / p.name) for p in paths]  # sources this test may move
    folder = tmp_path / "s"
    with CaseStore(folder, preprocess_params=FAST, shortlist=5) as st:
        st.ingest(own, progress=False)
        st.link_new(progress=False)
        good = st.search(paths[0], k=5)
        assert st.check() == {
            "store": str(folder),
            "ok": True,
            "repair": False,
            "checked": {
                "database": 1,
                "decisions": 0,
                "imports": 0,
                "descriptors": 6,
                "scans": 6,
                "index": 1,
                "calibrations": 0,
            },
            "problems": [],
            "notes": [],
        }
        permuted_index(st).save(st.index_path)
    assert main(["check", "--store", str(folder)]) == 1  # the index: found, not repaired (read-only)
    capsys.readouterr()
    assert main(["check", "--store", str(folder), "--repair"]) == 0
    assert "repaired: index" in capsys.readouterr().out
    assert main(["check", "--store", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "all well" in out and "scans" in out and "index" in out
    scan_file(folder, "e-0").write_bytes(b"junk")  # unreadable
    shutil.copyfile(scan_file(folder, "e-2"), scan_file(folder, "e-3"))  # swapped
    scan_file(folder, "e-4").unlink()  # lost
    before = digest(folder)
    assert main(["check", "--store", str(folder)]) == 1
    out = capsys.readouterr().out
    assert out.count("PROBLEM: scan") == 3 and "3 problems left" in out
    assert digest(folder) == before  # checking writes nothing
    assert main(["check", "--store", str(folder), "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and sorted(p["problem"].split(":")[0] for p in report["problems"]) == [
        "exhibit e-0",
        "exhibit e-3",
        "exhibit e-4",
    ]
    assert all("re-created from its source" in p["action"] for p in report["problems"])
    with CaseStore(folder) as st:
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)
            again = st.search(paths[0], k=5)
        assert again == good and not again.skipped
        assert {e["exhibit_id"] for e in st.exhibits() if not e["linked"]} == {"e-0", "e-3", "e-4"}
        assert st.link_new(progress=False) == 0  # their comparisons were all recorded before
    # a source that moved away: the damaged file is dropped, the exhibit's scan marked missing
    scan_file(folder, "e-5").write_bytes(b"junk")
    moved = own[5].rename(tmp_path / "elsewhere.x3p")
    assert main(["check", "--store", str(folder), "--repair"]) == 1
    out = capsys.readouterr().out
    assert "is no longer there" in out and "marked missing" in out and "1 problem left" in out
    assert not scan_file(folder, "e-5").exists()
    with CaseStore(folder) as st:
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)  # skipped quietly: the repair said it already
            res = st.search(paths[4], k=5)
        assert [(s["exhibit_id"], s["state"]) for s in res.skipped] == [("e-5", "missing")]
    moved.rename(own[5])  # the source is back: the next repair re-creates the scan
    assert main(["check", "--store", str(folder), "--repair"]) == 0
    capsys.readouterr()
    # not reproducible: the stored descriptor is not what re-processing gives; the file is not replaced
    db = sqlite3.connect(folder / "store.sqlite")
    (blob,) = db.execute("SELECT descriptor FROM exhibits WHERE exhibit_id='e-1'").fetchone()
    db.execute(
        "UPDATE exhibits SET descriptor=? WHERE exhibit_id='e-1'",
        (np.roll(np.frombuffer(blob, np.float32), 1).tobytes(),),
    )
    db.execute("UPDATE exhibits SET descriptor=? WHERE exhibit_id='e-2'", (b"\x00" * 12,))
    db.commit()
    db.close()
    scan_file(folder, "e-1").write_bytes(b"junk")
    with CaseStore(folder) as st:
        report = st.check(repair=True)
        size = 4 * st.descriptor["dim"]
        with pytest.raises(StoreError, match=f"descriptor of exhibit 'e-2' has 12 bytes, expected {size}"):
            st.rebuild_index()
    assert not report["ok"]
    (desc,) = [p for p in report["problems"] if p["check"] == "descriptor"]
    assert desc["item"] == "e-2" and desc["problem"] == f"12 bytes, expected {size}" and not desc["repaired"]
    (scan,) = [p for p in report["problems"] if p["check"] == "scan"]
    assert scan["problem"].startswith("exhibit e-1: is unreadable") and not scan["repaired"]
    assert "gives another descriptor than the stored one" in scan["action"] and "not replaced" in scan["action"]
    st.index_path.unlink()  # the index must be rebuilt now, and the damaged descriptor cannot go in it
    with pytest.warns(StoreWarning, match="not rebuilt.*'e-2' has 12 bytes"):
        st = CaseStore(folder)  # opens all the same, for check to say what is wrong
    with st:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)  # e-1's unreadable scan is skipped
            res = st.search(paths[3], k=6)
        # searches run on an index of the other five exhibits
        assert sorted([c["exhibit_id"] for c in res] + [s["exhibit_id"] for s in res.skipped]) == [
            "e-0",
            "e-1",
            "e-3",
            "e-4",
            "e-5",
        ]
        assert {p["check"] for p in st.check()["problems"]} == {"descriptor", "scan", "index"}


# ---------------------------------------------------------------- 8. kill -9 never half-applies an operation
_LINK = textwrap.dedent("""
    import sys, time
    from ballistix.store import CaseStore
    st = CaseStore(sys.argv[1], shortlist=3)
    print("ready", flush=True)
    t = time.perf_counter()
    st.link_new(progress=False)
    print("done", time.perf_counter() - t, flush=True)
""")

_REBUILD = textwrap.dedent("""
    import sys
    from ballistix.store import CaseStore
    st = CaseStore(sys.argv[1])
    print("ready", flush=True)
    while True:
        st.rebuild_index()
""")


def _run_and_kill(script, folder, delay):
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line.strip() == b"ready", proc.stderr.read()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)  # a process that finished already is fine: nothing to kill
    proc.wait()
    rest = proc.stdout.read().split()
    return float(rest[1]) if rest[:1] == [b"done"] else None


def _assert_consistent(folder):
    """The store opens, SQLite is sound, every comparison names two exhibits, and `check` finds nothing
    that an index rebuild (done when the store opens) does not mend."""
    assert column(folder, "PRAGMA integrity_check") == [("ok",)]
    assert column(
        folder,
        "SELECT COUNT(*) FROM comparisons WHERE a NOT IN (SELECT rowid FROM exhibits) "
        "OR b NOT IN (SELECT rowid FROM exhibits)",
    ) == [(0,)]
    with CaseStore(folder) as st:
        report = st.check()
        assert report["ok"], report
        assert all(p["check"] == "index" and p["repaired"] for p in report["problems"])
        assert len(st) == 6
        st.check_index()  # the index file holds the six exhibits
        return st.exhibits(), {
            (a, b): (n, s) for a, b, n, s in column(folder, "SELECT a, b, cmc_count, score FROM comparisons")
        }


def test_kill_9_during_link_new_never_half_links_an_exhibit(base, tmp_path):
    """Ten kill -9 at random moments of link_new; after each, every exhibit marked linked has all of
    its shortlist's comparisons recorded (with the values an uninterrupted run records), and the rest
    of the store is sound."""
    script = tmp_path / "link.py"
    script.write_text(_LINK)
    ref_folder = fresh(base, tmp_path, "ref")
    proc = subprocess.run([sys.executable, str(script), str(ref_folder)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    took = float(proc.stdout.split()[-1])
    _, reference = _assert_consistent(ref_folder)
    with CaseStore(ref_folder, shortlist=3) as st:  # each exhibit's shortlist, as link_new searches it
        shortlists = {}
        index = bx.ScanIndex.load(st.index_path)
        for e in st.exhibits():
            _, ids = index.search(bx.describe(st.scan(e["rowid"]))[None], st.shortlist + 1)
            shortlists[e["rowid"]] = {int(i) for i in ids[0] if i >= 0 and int(i) != e["rowid"]}
    rnd = random.Random(8)
    partial = 0
    for trial in range(10):
        folder = fresh(base, tmp_path, f"t{trial}")
        _run_and_kill(script, folder, rnd.uniform(0.0, took))
        exhibits, recorded = _assert_consistent(folder)
        assert all(recorded[p] == reference[p] for p in recorded)  # nothing half-written, nothing different
        pairs = set(recorded)
        for e in exhibits:
            if e["linked"]:
                assert {tuple(sorted((e["rowid"], t))) for t in shortlists[e["rowid"]]} <= pairs
        partial += 0 < sum(e["linked"] for e in exhibits) < len(exhibits)
    assert partial >= 3  # the kills did land in the middle of linking
    with CaseStore(folder, shortlist=3) as st:  # and linking again completes the interrupted run exactly
        st.link_new(progress=False)
    assert _assert_consistent(folder)[1] == reference


def test_kill_9_during_rebuild_index_leaves_a_sound_store(base, tmp_path, sources):
    paths, _ = sources
    script = tmp_path / "rebuild.py"
    script.write_text(_REBUILD)
    folder = fresh(base, tmp_path)
    with CaseStore(folder, shortlist=2) as st:
        expected = st.search(paths[2], k=2)
    rnd = random.Random(9)
    for _ in range(10):
        _run_and_kill(script, folder, rnd.uniform(0.0, 0.5))
        _assert_consistent(folder)
        with CaseStore(folder, shortlist=2) as st:
            st.check_index()
            assert st.search(paths[2], k=2) == expected
