"""Exhibits exchanged between labs as bundles (`CaseStore.export_exhibits` / `import_exhibits`)."""

import hashlib
import json
import subprocess
import sys
import zipfile

import pytest
from _stores import sql

import ballistix as bx
from ballistix.errors import FileFormatError, ParameterError
from ballistix.store import CaseStore, casestore

# every test here runs on SQLite and on PostgreSQL (conftest: store_backend): the receiving store is on each
pytestmark = pytest.mark.usefixtures("store_backend")

FAST = {"spacing_um": 12.5}


@pytest.fixture(scope="module")
def lab_a(tmp_path_factory):
    """A store of four x3p files (two guns, two shots each) with a scene and a firearm."""
    d = tmp_path_factory.mktemp("lab-a")
    scans = bx.datasets.simulate(n_firearms=2, shots=2, seed=4, difficulty="easy", resolution="fast")
    paths = [bx.write_x3p(s, d / f"case-{k}.x3p") for k, s in enumerate(scans)]
    with CaseStore(d / "store", preprocess_params=FAST) as st:
        st.add_scene("S-1", date="2025-03-02", context="organized crime")
        st.add_firearm("F-1", make="Ruger", status="seized")
        metas = [{"scene_id": "S-1"}, {"scene_id": "S-1"}, {"firearm_id": "F-1"}, {"firearm_id": "F-1"}]
        st.ingest(paths, metas, progress=False)
        bundle = st.export_exhibits(d / "bundle.bxex", lab="LAB-A", lab_name="Lab A")
    return d, paths, bundle


def _rows(folder):
    return sql(folder, "SELECT exhibit_id, source_sha256, descriptor, meta_json FROM exhibits ORDER BY 1")


def test_a_bundle_moves_exhibits_with_their_records_and_the_senders_identity(tmp_path, lab_a):
    d, _, bundle = lab_a
    with CaseStore(tmp_path / "b", preprocess_params=FAST) as st:
        st.add_scene("S-1", date="2024-01-01", place="our own record")  # this lab's own record is kept
        r = st.import_exhibits(bundle)
        assert sorted(r["added"]) == ["case-0", "case-1", "case-2", "case-3"] and not r["failed"]
        assert r["firearms_added"] == ["F-1"] and r["kept_local"] == ["scene S-1"]
        assert r["lab"]["id"] == "LAB-A" and len(r["bundle_sha256"]) == 64
        g = st.graph()
        assert g.nx.nodes["scene:S-1"]["place"] == "our own record"
        assert g.nx.nodes["firearm:F-1"]["received_from"] == "LAB-A"
        again = st.import_exhibits(bundle)  # the same bundle twice: nothing new
        assert again["added"] == [] and sorted(again["existing"]) == sorted(r["added"])
        log = st.imports()  # each import of the bundle is in the log, with its checksum and counts
    assert [(d["import_id"], d["kind"], d["source_name"], d["rows"], d["added"], d["updated"]) for d in log] == [
        (1, "exhibits-bundle", str(bundle), 4, 4, 0),
        (2, "exhibits-bundle", str(bundle), 4, 0, 0),
    ]
    assert [d["import_id"] for d in log] == [r["import_id"], again["import_id"]]
    assert {d["sha256"] for d in log} == {r["bundle_sha256"], hashlib.sha256(bundle.read_bytes()).hexdigest()}
    assert log[0]["summary"] == {
        "lab": {"id": "LAB-A", "name": "Lab A", "sent_utc": r["lab"]["sent_utc"], "sent_by": r["lab"]["sent_by"]},
        "exhibits_added": 4,
        "exhibits_existing": 0,
        "exhibits_failed": 0,
        "scenes_added": 0,
        "firearms_added": 1,
        "kept_local": 1,
    }
    assert (log[1]["summary"]["exhibits_existing"], log[1]["summary"]["firearms_added"]) == (4, 0)
    assert log[1]["summary"]["kept_local"] == 2  # the scene, and now the firearm the first import added
    a, b = _rows(d / "store"), _rows(tmp_path / "b")
    assert [x[:3] for x in a] == [x[:3] for x in b]  # the same sources, bit-identical descriptors
    meta = json.loads(b[0][3])["received_from"]
    assert meta["lab"] == "LAB-A" and meta["exhibit_id"] == "case-0" and meta["bundle_sha256"] == r["bundle_sha256"]
    assert meta["ingested"]["ballistix_version"] == bx.__version__
    assert (tmp_path / "b" / "received" / f"{a[0][1]}.x3p").is_file()  # the evidence received, kept


def test_a_bundle_with_a_failed_exhibit_is_logged_with_it(tmp_path, lab_a, monkeypatch):
    _, _, bundle = lab_a
    prepare = casestore._prepare

    def fail_the_first(job):  # as if the first exhibit's file could not be read here
        return (None, "unreadable here") if job[3]["exhibit_id"] == "case-0" else prepare(job)

    monkeypatch.setattr(casestore, "_prepare", fail_the_first)
    with CaseStore(tmp_path / "b", preprocess_params=FAST) as st:
        r = st.import_exhibits(bundle)
        assert len(r["failed"]) == 1 and len(r["added"]) == 3
        (log,) = st.imports()
    assert (log["rows"], log["added"]) == (4, 3)
    assert (log["summary"]["exhibits_failed"], log["summary"]["exhibits_existing"]) == (1, 0)


def test_an_interrupted_bundle_import_is_logged_when_run_again(tmp_path, lab_a, monkeypatch):
    """The exhibits are committed one by one (as ingest does); the sender's records and the log row
    together at the end. Interrupted, the exhibits committed stay and nothing is logged; the same
    bundle imported again completes the import and logs it."""
    _, _, bundle = lab_a
    insert = CaseStore._insert
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return insert(self, *args)

    monkeypatch.setattr(CaseStore, "_insert", interrupted)
    with CaseStore(tmp_path / "b", preprocess_params=FAST) as st:
        with pytest.raises(KeyboardInterrupt):
            st.import_exhibits(bundle)
        assert len(st) == 1 and st.imports() == []
        assert st._db.execute("SELECT COUNT(*) FROM firearms").fetchone()[0] == 0
        (problem,) = [p for p in st.check()["problems"] if p["check"] == "imports"]  # check says so
        assert "import was interrupted" in problem["problem"] and "again" in problem["action"]
        monkeypatch.setattr(CaseStore, "_insert", insert)
        r = st.import_exhibits(bundle)
        assert (len(r["added"]), len(r["existing"]), r["firearms_added"]) == (3, 1, ["F-1"])
        assert not [p for p in st.check()["problems"] if p["check"] == "imports"]
        (log,) = st.imports()
    assert (log["import_id"], log["added"], log["summary"]["exhibits_existing"]) == (1, 3, 1)


def _rewrite(src, dst, change):
    """Copy a bundle, passing each (name, bytes) through ``change`` (None drops it; a list adds)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            for name, data in change(info.filename, zin.read(info)) or ():
                zout.writestr(name, data)
    return dst


def _flip_x3p(name, data):
    if name.startswith("exhibits/"):
        return [(name, data[:-1] + bytes([data[-1] ^ 1]))]
    return [(name, data)]


def _edit_manifest(name, data):
    if name == "manifest.json":
        m = json.loads(data)
        m["exhibits"][0]["exhibit_id"] = "renamed"
        return [(name, json.dumps(m).encode())]
    return [(name, data)]


def _edit_manifest_and_checksum(name, data):
    if name == "manifest.json":
        m = json.loads(data)
        m["exhibits"][0]["source_sha256"] = "0" * 64
        body = json.dumps(m).encode()
        return [(name, body)]
    if name == "manifest.sha256":
        return None
    return [(name, data)]


def _extra(name, data):
    return [(name, data)] + ([("exhibits/notes.txt", b"hello")] if name == "manifest.json" else [])


@pytest.mark.parametrize(
    "change, message",
    [
        (_flip_x3p, "does not match its SHA-256 in the manifest"),
        (_edit_manifest, "manifest.json does not match manifest.sha256"),
        (_edit_manifest_and_checksum, "no manifest.json and manifest.sha256"),
        (_extra, r"files the manifest does not list: \['exhibits/notes.txt'\]"),
    ],
)
def test_a_damaged_or_altered_bundle_is_refused_whole(tmp_path, lab_a, change, message):
    _, _, bundle = lab_a
    bad = _rewrite(bundle, tmp_path / "bad.bxex", change)
    with CaseStore(tmp_path / "b", preprocess_params=FAST) as st:
        with pytest.raises(FileFormatError, match=message) as e:
            st.import_exhibits(bad)
        assert str(bad) in str(e.value)
        assert len(st) == 0 and st.graph().nx.number_of_nodes() == 0
        assert st.imports() == []  # a refused bundle is not logged
    assert not list((tmp_path / "b" / "received").glob("*.x3p"))


def test_a_consistently_rewritten_manifest_still_has_to_match_the_files(tmp_path, lab_a):
    """A manifest edited and its checksum recomputed: the files must still match it. (Which id a
    sender gives which file is the sender's word: only signed bundles could vouch for it.)"""
    _, _, bundle = lab_a

    def change(name, data):
        if name == "manifest.json":
            m = json.loads(data)
            m["exhibits"][0]["source_sha256"] = "0" * 64
            change.body = json.dumps(m).encode()
            return [(name, change.body)]
        if name == "manifest.sha256":
            return [(name, hashlib.sha256(change.body).hexdigest().encode())]
        return [(name, data)]

    bad = _rewrite(bundle, tmp_path / "bad.bxex", change)
    with CaseStore(tmp_path / "b", preprocess_params=FAST) as st:
        with pytest.raises(FileFormatError, match="files the manifest does not list|is missing"):
            st.import_exhibits(bad)
        assert len(st) == 0 and st.imports() == []


@pytest.mark.parametrize("data", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 40])
def test_a_file_that_is_not_a_bundle_is_refused(tmp_path, data):
    path = tmp_path / "x.bxex"
    path.write_bytes(data)
    with CaseStore(tmp_path / "b") as st:
        with pytest.raises(FileFormatError, match="x.bxex"):
            st.import_exhibits(path)
        assert st.imports() == []


def test_export_refuses_a_source_that_changed_since_ingest(tmp_path, lab_a):
    d, paths, _ = lab_a
    changed = tmp_path / "changed.x3p"
    changed.write_bytes(paths[0].read_bytes())
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.ingest([changed], [{"exhibit_id": "e-1"}], progress=False)
        changed.write_bytes(changed.read_bytes() + b"\0")
        with pytest.raises(ParameterError, match="exhibit 'e-1' cannot be exported: .* gone, changed"):
            st.export_exhibits(tmp_path / "b.bxex", lab="LAB-A")
        with pytest.raises(ParameterError, match=r"no exhibits \['nope'\]"):
            st.export_exhibits(tmp_path / "b.bxex", ["nope"], lab="LAB-A")
        with pytest.raises(ParameterError, match="lab must be a non-empty string"):
            st.export_exhibits(tmp_path / "b.bxex", lab="")
    assert not (tmp_path / "b.bxex").exists()


@pytest.mark.sqlite_only  # the command line in a process of its own: a new store there is SQLite
def test_command_line_exchange(tmp_path, lab_a):
    d, _, _ = lab_a
    run = [sys.executable, "-m", "ballistix"]
    bundle = tmp_path / "two.bxex"
    out = subprocess.run(
        [*run, "export-exhibits", "--store", str(d / "store"), "--out", str(bundle), "--lab", "LAB-A",
         "--exhibits", "case-0", "case-2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [*run, "import-exhibits", str(bundle), "--store", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "from LAB-A: 2 exhibits added, 0 already here, 0 failed" in out.stdout
    out = subprocess.run([*run, "imports", "--store", str(tmp_path / "b")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[2]
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert row.split()[:7] == ["1", "exhibits-bundle", str(bundle), sha[:12], "2", "2", "0"]
    assert row.endswith("from LAB-A: 0 already here, 0 failed")
