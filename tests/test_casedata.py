"""Case data in and out of a store as CSV (`ballistix.store.casedata`, `CaseStore.import_table`)."""

import json
import subprocess
import sys

import pytest

from ballistix.errors import BallistixError, FileFormatError, ParameterError
from ballistix.store import CaseStore

SCENES = """scene_id,date,place,lat,lon,context
S-1,2025-03-02,Harbour district,51.5,-0.12,organized crime
S-2,2025-04-11,"Market, north side",,,other
"""
FIREARMS = """firearm_id,make,model,calibre,serial,serial_obliterated,status,recovery_date,recovery_place,\
recovery_country,origin_country,tracing_status,tracing_result
F-1,Ruger,P95,9mm Luger,,yes,seized,2025-05-01,Harbour district,GB,,in progress,
F-2,Glock,17,9mm Luger,AB123,no,surrendered,2025-06-09,,GB,AT,traced,legal export 2019
"""
TRACING = """firearm_id,tracing_status,tracing_result,origin_country
F-1,traced,diverted from a dealer,US
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _tables(st):
    return {
        k: [(r[0], json.loads(r[1])) for r in st._db.execute(f"SELECT * FROM {k} ORDER BY 1")]
        for k in ("scenes", "firearms")
    }


def test_tables_round_trip_and_reach_the_graph(tmp_path):
    with CaseStore(tmp_path / "a") as st:
        got = [st.import_table(_write(tmp_path, n, t)) for n, t in (("s.csv", SCENES), ("f.csv", FIREARMS))]
        assert [(g["kind"], g["rows"], g["added"], g["updated"]) for g in got] == [
            ("scenes", 2, 2, 0),
            ("firearms", 2, 2, 0),
        ]
        assert len(got[0]["sha256"]) == 64
        t = st.import_table(_write(tmp_path, "t.csv", TRACING))
        assert (t["kind"], t["added"], t["updated"]) == ("tracing", 0, 1)
        f1 = dict(_tables(st)["firearms"])["F-1"]
        # the tracing columns changed, the others were kept
        assert f1["tracing_status"] == "traced" and f1["origin_country"] == "US" and f1["make"] == "Ruger"
        assert f1["serial_obliterated"] is True and "serial" not in f1
        assert dict(_tables(st)["scenes"])["S-1"]["lat"] == 51.5
        g = st.graph()
        assert g.nx.nodes["firearm:F-1"]["tracing_status"] == "traced"
        assert g.nx.nodes["scene:S-1"]["context"] == "organized crime"
        out = {k: st.export_table(tmp_path / f"out-{k}.csv", k) for k in ("scenes", "firearms", "tracing")}
        before = _tables(st)
    with CaseStore(tmp_path / "b") as st:  # the exported files are the same tables again
        for k in ("scenes", "firearms"):
            st.import_table(out[k])
        assert _tables(st) == before
        again = st.export_table(tmp_path / "again.csv", "firearms")
    assert again.read_bytes() == out["firearms"].read_bytes()
    assert out["tracing"].read_text().splitlines()[1] == "F-1,traced,diverted from a dealer,US"


def test_a_partial_file_sets_its_columns_and_an_empty_cell_clears(tmp_path):
    with CaseStore(tmp_path / "s") as st:
        st.import_table(_write(tmp_path, "s.csv", SCENES))
        st.import_table(_write(tmp_path, "c.csv", "scene_id,context,place\nS-1,terrorism,\n"))
        s1 = dict(_tables(st)["scenes"])["S-1"]
    assert s1["context"] == "terrorism" and "place" not in s1 and s1["date"] == "2025-03-02"


BAD = [
    ("scene_id,date\nS-1,2025-13-01\n", ParameterError, r"line 2: scene S-1: date must be an ISO 8601 date"),
    ("scene_id,lat\nS-1,95\n", ParameterError, r"line 2: scene S-1: lat must be a number of degrees"),
    ("scene_id,lat\nS-1,north\n", ParameterError, r"line 2: lat must be a number"),
    ("firearm_id,status\nF-9,stolen\n", ParameterError, r"line 2: firearm F-9: status must be one of"),
    ("firearm_id,serial_obliterated\nF-9,maybe\n", ParameterError, r"line 2: serial_obliterated must be yes or no"),
    ("scene_id,date\nS-1,2025-01-01\nS-1,2025-01-02\n", ParameterError, r"line 3: scene_id 'S-1' was given on line 2"),
    ("scene_id,colour\nS-1,red\n", FileFormatError, r"unknown columns \['colour'\] for a scenes table"),
    ("place,date\nX,2025-01-01\n", FileFormatError, r"names no scene_id or firearm_id column"),
    ("scene_id,date\nS-1\n", FileFormatError, r"line 2: 1 cells for 2 columns"),
    ("scene_id,date\n,2025-01-01\n", ParameterError, r"line 2: scene_id is empty"),
    ("", FileFormatError, r"is empty"),
    (
        "firearm_id,tracing_status\nF-404,traced\n",
        ParameterError,
        r"firearm 'F-404' of the tracing table is not in the store",
    ),
]


@pytest.mark.parametrize("text, error, message", BAD)
def test_a_bad_file_is_refused_whole_and_names_the_line(tmp_path, text, error, message):
    with CaseStore(tmp_path / "s") as st:
        st.import_table(_write(tmp_path, "s.csv", SCENES))
        st.import_table(_write(tmp_path, "f.csv", FIREARMS))
        before = _tables(st)
        # a good first row and then the bad ones: nothing of the file is written
        path = _write(tmp_path, "bad.csv", text)
        with pytest.raises(error, match=message) as e:
            st.import_table(path)
        assert str(path) in str(e.value)
        assert _tables(st) == before


@pytest.mark.parametrize(
    "data, message",
    [(b"scene_id,place\nS-1,caf\xe9\n", "is not UTF-8"), (b"scene_id,place\nS-1,a\x00b\n", "NUL bytes")],
)
def test_bytes_that_are_not_csv_text_are_refused(tmp_path, data, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with CaseStore(tmp_path / "s") as st:
        with pytest.raises(FileFormatError, match=message):
            st.import_table(path)
        assert _tables(st) == {"scenes": [], "firearms": []}


def test_a_bad_row_after_good_ones_leaves_the_store_unchanged(tmp_path):
    with CaseStore(tmp_path / "s") as st:
        with pytest.raises(BallistixError, match="line 4"):
            st.import_table(_write(tmp_path, "s.csv", SCENES + "S-3,yesterday,,,,\n"))
        assert _tables(st) == {"scenes": [], "firearms": []}


def test_command_line_import_and_export(tmp_path):
    run = [sys.executable, "-m", "ballistix"]
    s, f = _write(tmp_path, "s.csv", SCENES), _write(tmp_path, "f.csv", FIREARMS)
    out = subprocess.run(
        [*run, "import", str(s), str(f), "--store", str(tmp_path / "st")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "2 scenes rows, 2 added" in out.stdout and "2 firearms rows, 2 added" in out.stdout
    out = subprocess.run(
        [*run, "export", "firearms", "--store", str(tmp_path / "st"), "--out", str(tmp_path / "f2.csv")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f2.csv").read_text().splitlines()[1].startswith("F-1,Ruger,P95,9mm Luger,,yes,seized")
    bad = _write(tmp_path, "bad.csv", "scene_id,date\nS-9,31/12/2025\n")
    out = subprocess.run([*run, "import", str(bad), "--store", str(tmp_path / "st")], capture_output=True, text=True)
    assert out.returncode != 0 and "bad.csv: line 2: scene S-9: date must be an ISO 8601 date" in out.stderr
    assert "Traceback" not in out.stderr
