"""Case data in and out of a store as CSV (`ballistix.store.casedata`, `CaseStore.import_table`)."""

import csv
import json
import subprocess
import sys

import pytest

from ballistix.errors import BallistixError, FileFormatError, ParameterError
from ballistix.store import CaseStore
from ballistix.store.casedata import FORMULA_START, guard_cell, unguard_cell

# every test here runs on SQLite and on PostgreSQL (conftest: store_backend) but those marked sqlite_only
pytestmark = pytest.mark.usefixtures("store_backend")

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


FORMULAS = [
    '=HYPERLINK("http://x")',
    "+31 20 555",
    "@SUM(A1)",
    "-2+3",
    "-",
    "'=already quoted",
    "''+twice",
    "'plain apostrophe",
    "'",
    "plain",
]
NUMBERS = ["-33.9", "+5", "1e-05", "-.5"]


@pytest.mark.parametrize("text", [*FORMULAS, *NUMBERS, "=", "@"])
@pytest.mark.sqlite_only  # no store
def test_guard_cell_is_undone_by_unguard_cell(text):
    cell = guard_cell(text)
    assert unguard_cell(cell) == text
    # what a spreadsheet reads first is never a formula start, unless the cell is a plain number
    assert not cell.startswith(FORMULA_START) or text in NUMBERS
    assert (cell == text) == (text in [*NUMBERS, "'plain apostrophe", "'", "plain"])


def test_exported_cells_a_spreadsheet_would_run_are_guarded_and_come_back_the_same(tmp_path):
    with CaseStore(tmp_path / "a") as st:
        st.add_scene("S-1", lat=-33.9, lon=-70.65, place="=1+1", context="@evil")
        st.add_scene("=S-2", lon=151.2, place="-")
        for k, text in enumerate(FORMULAS):
            st.add_firearm(f"F-{k}", make=text, tracing_result=text, origin_country="AT")
        st.add_firearm("+F", model="+31 20 555")
        out = {k: st.export_table(tmp_path / f"{k}.csv", k) for k in ("scenes", "firearms", "tracing")}
        before = _tables(st)
    scenes = out["scenes"].read_text(encoding="utf-8").splitlines()
    assert scenes[1:] == ["'=S-2,,'-,,151.2,", "S-1,,'=1+1,-33.9,-70.65,'@evil"]  # numbers stay numbers
    rows = list(csv.reader(out["firearms"].open(encoding="utf-8", newline="")))
    makes = {r[0]: r[1] for r in rows[1:]}
    assert [makes[f"F-{k}"] for k in range(len(FORMULAS))] == [
        "'" + FORMULAS[0],
        "'+31 20 555",
        "'@SUM(A1)",
        "'-2+3",
        "'-",
        "''=already quoted",
        "'''+twice",
        "'plain apostrophe",
        "'",
        "plain",
    ]
    assert rows[1][0] == "'+F" and rows[1][2] == "'+31 20 555"
    assert """'=HYPERLINK(""http://x"")""" in out["tracing"].read_text(encoding="utf-8")  # CSV-quoted
    for row in rows[1:]:  # no cell a spreadsheet would run
        assert not any(c.startswith(FORMULA_START) for c in row)
    with CaseStore(tmp_path / "b") as st:  # imported again: the same values, byte for byte when exported again
        for k in ("scenes", "firearms"):
            st.import_table(out[k])
        assert _tables(st) == before
        f0 = dict(_tables(st)["firearms"])["F-0"]
        assert f0["make"] == '=HYPERLINK("http://x")' and f0["tracing_result"] == '=HYPERLINK("http://x")'
        assert dict(_tables(st)["scenes"])["S-1"]["lon"] == -70.65
        st.import_table(out["tracing"])
        assert _tables(st) == before
        again = {k: st.export_table(tmp_path / f"again-{k}.csv", k) for k in ("scenes", "firearms", "tracing")}
    for k in again:
        assert again[k].read_bytes() == out[k].read_bytes()


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


@pytest.mark.sqlite_only  # the command line in a process of its own: a new store there is SQLite
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
    first = (tmp_path / "f2.csv").read_text().splitlines()[1]
    assert first.startswith("F-1,Ruger,P95,,9mm Luger,,yes,seized,,2025-05-01")
    bad = _write(tmp_path, "bad.csv", "scene_id,date\nS-9,31/12/2025\n")
    out = subprocess.run([*run, "import", str(bad), "--store", str(tmp_path / "st")], capture_output=True, text=True)
    assert out.returncode != 0 and "bad.csv: line 2: scene S-9: date must be an ISO 8601 date" in out.stderr
    assert "Traceback" not in out.stderr


IAFQ_FIREARMS = """firearm_id,type,status,context,recovery_date,origin_country,tracing_status,tracing_result
G-1,pistol,seized,organized crime,2025-02-01,AT,traced,diverted from a dealer
G-2,pistol,seized,organized crime,2025-03-01,,not traced,
G-3,rifle,found,other,2025-07-15,US,traced,stolen from an owner
G-4,revolver,surrendered,,2025-12-31,,,
G-5,pistol,seized,terrorism,2024-12-31,BE,traced,
G-6,=HYPERLINK("http://x"),,,2025-05-05,,,
G-7,pistol,seized,,,,traced,
"""


def test_iafq_figures_count_the_years_recoveries_by_status_and_breakdown(tmp_path):
    with CaseStore(tmp_path / "s") as st:
        st.import_table(_write(tmp_path, "f.csv", IAFQ_FIREARMS))
        fig = st.iafq(2025)
    assert (fig["firearms"], fig["undated"]) == (5, 1)  # G-5 is 2024's, G-7 in no year
    by_type = {r["category"]: r for r in fig["tables"]["type"]}
    assert by_type["pistol"] == {
        "category": "pistol",
        "seized": 2,
        "found": 0,
        "surrendered": 0,
        "status not recorded": 0,
        "total": 2,
    }
    assert by_type['=HYPERLINK("http://x")']["status not recorded"] == 1
    ctx = {r["category"]: r["total"] for r in fig["tables"]["context"]}
    assert ctx == {"organized crime": 2, "other": 1, "not recorded": 2}
    assert {r["category"]: r["total"] for r in fig["tables"]["origin_country"]} == {"AT": 1, "US": 1, "not recorded": 3}
    sdg = fig["sdg_16_4_2"]  # traced among the year's seized, found or surrendered: G-1 and G-3 of 4
    assert (sdg["traced"], sdg["firearms"], sdg["value"]) == (2, 4, 0.5)
    assert sdg["by_status"]["seized"] == {"firearms": 2, "traced": 1}
    with pytest.raises(ParameterError, match="calendar year"):
        CaseStore(tmp_path / "s").iafq("2025")


@pytest.mark.sqlite_only  # the command line in a process of its own: a new store there is SQLite
def test_iafq_export_as_csv_and_as_a_workbook_whose_text_is_never_a_formula(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    with CaseStore(tmp_path / "s") as st:
        st.import_table(_write(tmp_path, "f.csv", IAFQ_FIREARMS))
    run = [sys.executable, "-m", "ballistix", "export", "iafq", "--store", str(tmp_path / "s"), "--year", "2025"]
    out = subprocess.run([*run, "--out", str(tmp_path / "iafq.csv")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "5 firearms recovered in 2025 (1 with no recovery date); SDG 16.4.2 traced share: 50.0%" in out.stdout
    lines = (tmp_path / "iafq.csv").read_text().splitlines()
    assert lines[0] == "table,category,seized,found,surrendered,status not recorded,total"
    assert "by type,pistol,2,0,0,0,2" in lines and "SDG 16.4.2,share traced,0.5000,1.0000,0.0000,,0.5000" in lines
    assert """by type,"'=HYPERLINK(""http://x"")",0,0,0,1,1""" in lines  # text a spreadsheet would run: guarded
    out = subprocess.run([*run, "--out", str(tmp_path / "iafq.xlsx")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    wb = openpyxl.load_workbook(tmp_path / "iafq.xlsx")
    assert wb.sheetnames == [
        "summary",
        "by type",
        "by context",
        "by tracing_status",
        "by tracing_result",
        "by origin_country",
    ]
    cells = {c.value: c.data_type for row in wb["by type"].iter_rows() for c in row}
    assert cells['=HYPERLINK("http://x")'] == "s"  # kept as text
    assert [c.value for c in wb["summary"]["A"]][:2] == [
        "UNODC Illicit Arms Flows Questionnaire: firearms recovered in",
        "firearms recovered in the year",
    ]
    out = subprocess.run(run[:-2] + ["--out", str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert out.returncode != 0 and "needs --year" in out.stderr
