"""Odd but legal input (file names that are not UTF-8, ids that look like formulas or HTML) and
input that would break later work (metadata no report can use, options out of range): handled or
refused at the door with an error that names the file or record and the option of the command."""

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import ballistix as bx
from ballistix.cli import build_parser, main
from ballistix.store import CaseStore

FAST = {"spacing_um": 12.5}  # 12.5 um grids keep the tests quick
CLI = [sys.executable, "-m", "ballistix"]
#: a strict UTF-8 terminal: printing a name that is not UTF-8 would raise, not be escaped quietly
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
BAD = b"caso_\xff\xfe"  # not UTF-8


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six x3p files at 12.5 um: three guns, two shots each."""
    d = tmp_path_factory.mktemp("odd")
    scans = bx.datasets.simulate(
        n_firearms=3,
        shots=2,
        seed=3,
        difficulty="easy",
        resolution="fast",
        models=["Glock 17", "Ruger P95", "SIG Sauer P226"],
    )
    return [bx.write_x3p(s, d / f"c{k}.x3p") for k, s in enumerate(scans)]


def _bytes_copy(src: Path, name: bytes) -> bytes:
    """A copy of ``src`` beside it under a name that is not UTF-8; returns its path as bytes."""
    target = os.path.join(os.fsencode(src.parent), name)
    try:
        with open(target, "wb") as f:
            f.write(src.read_bytes())
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    return target


def _cache_files(store: Path) -> int:
    return len(list((store / "scans").rglob("*.npz")))


# ------------------------------------------------------------------ case 7: names that are not UTF-8
def test_cli_ingest_keeps_a_file_name_that_is_not_utf8_and_the_batch_goes_on(files, tmp_path):
    bad = _bytes_copy(files[0], BAD + b".x3p")
    broken = os.path.join(os.fsencode(tmp_path), b"broken_\xff.x3p")
    with open(broken, "wb") as f:
        f.write(b"not a zip at all")
    store = os.path.join(os.fsencode(tmp_path), b"store_\xff")
    argv = [*CLI, "ingest", os.fsencode(files[1]), bad, broken, os.fsencode(files[2]), "--store", store, "--json"]
    r = subprocess.run(argv, capture_output=True, env=ENV)
    err = r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and r.returncode == 2  # the broken file failed; nothing crashed
    out = json.loads(r.stdout)
    assert out["added"] == ["c1", "caso_\\xff\\xfe", "c2"] and out["exhibits"] == 3
    (line,) = err.strip().splitlines()  # the broken file: one line, its name with \xff
    assert line.startswith("error: ") and "broken_\\xff.x3p" in line and "zip" in line
    folder = Path(os.fsdecode(store))
    assert _cache_files(folder) == 3  # no orphan cache file
    with CaseStore(folder) as st:
        names = {e["exhibit_id"]: e["source_name"] for e in st.exhibits()}
        assert names["caso_\\xff\\xfe"] == "caso_\\xff\\xfe.x3p"
        assert [f["source"].endswith("broken_\\xff.x3p") for f in st.failures()] == [True]
    # the same name is found again, as a file and as an exhibit id; the report and the graph work
    r = subprocess.run([*CLI, "search", bad, "--store", store, "-k", "2"], capture_output=True, env=ENV)
    assert r.returncode == 0 and b"Traceback" not in r.stderr and b"caso_\\xff\\xfe" in r.stdout
    r = subprocess.run([*CLI, "ingest", bad, "--store", store], capture_output=True, env=ENV)  # table output
    assert r.returncode == 0 and b"1 already in the store" in r.stdout and b"store_\\xff" in r.stdout
    for out in (b"g.json", b"g_\xff.html"):
        graph = os.path.join(os.fsencode(tmp_path), out)
        r = subprocess.run([*CLI, "link", "--store", store, "--out", graph], capture_output=True, env=ENV)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert "exhibit:caso_\\xff\\xfe" in bx.LinkageGraph.read(tmp_path / "g.json").nx
    assert json.dumps("caso_\\xff\\xfe")[1:-1] in Path(os.fsdecode(graph)).read_text("utf-8")
    report = os.path.join(os.fsencode(tmp_path), b"report.html")
    r = subprocess.run([*CLI, "report", "--store", store, "--out", report], capture_output=True, env=ENV)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    html = Path(os.fsdecode(report)).read_text("utf-8")
    assert "broken_\\xff.x3p" in html and "store_\\xff" in html


@pytest.mark.parametrize("option", ["--scene", "--firearm", "--calibre", "--date"])
def test_cli_refuses_metadata_that_is_not_utf8_up_front(files, tmp_path, option):
    store = tmp_path / "store"
    r = subprocess.run(
        [*CLI, "ingest", os.fsencode(files[0]), "--store", os.fsencode(store), option, b"S\xff"],
        capture_output=True,
        env=ENV,
    )
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2 and "Traceback" not in err
    assert f"argument {option}" in err and ("not valid UTF-8" in err or "YYYY-MM-DD" in err) and "S\\xff" in err
    assert not store.exists()  # refused before the store was touched


def test_store_ingest_takes_bytes_paths_and_names_that_are_not_utf8(files, tmp_path):
    bad = _bytes_copy(files[0], BAD + b".x3p")
    as_text = _bytes_copy(files[3], b"other_\xff.x3p")
    with CaseStore(tmp_path / "s", preprocess_params=FAST, shortlist=3) as st:
        r = st.ingest([bad, os.fsdecode(as_text), files[1]], progress=False)
        assert r.added == ["caso_\\xff\\xfe", "other_\\xff", "c1"] and not r.failed
        # metadata that is not UTF-8, from Python: refused, with the reason, and the batch goes on
        r = st.ingest([files[2], files[4]], meta=[{"scene_id": "S\udcff"}, {"scene_id": "S1"}], progress=False)
        assert r.added == ["c4"] and "not valid UTF-8" in r.failed[0][1] and "S\\xff" in r.failed[0][1]
        assert _cache_files(st.folder) == 4
        assert st.search(os.fsdecode(bad), k=1)[0]["exhibit_id"] == "caso_\\xff\\xfe"
        assert st.search("caso_\udcff\udcfe", k=1)  # the id as the file name gave it
        st.link_new(progress=False)
        assert "caso_\\xff\\xfe" in st.graph().ids("exhibit")
        assert "caso_\\xff\\xfe" in st.report(tmp_path / "r.html").read_text("utf-8")


# ------------------------------------------------------------------ case 8: metadata that breaks reports
@pytest.mark.parametrize(
    "record, match",
    [
        (
            lambda st: st.add_firearm("F1", status="stolen"),
            r"firearm F1: status must be one of \['seized', 'found', 'surrendered'\], got 'stolen'",
        ),
        (lambda st: st.add_firearm("F1", status="seized", tracing_status="Traced"), "firearm F1: tracing_status"),
        (lambda st: st.add_firearm("F1", recovery_date="last week"), "firearm F1: recovery_date must be an ISO 8601"),
        (lambda st: st.add_firearm("F1", origin_country=7), "firearm F1: origin_country must be a non-empty string"),
        (lambda st: st.add_firearm("F1", id="F2"), "firearm F1: attributes may not be named"),
        (lambda st: st.add_scene("S1", date="not-a-date"), "scene S1: date must be an ISO 8601 date YYYY-MM-DD"),
        (lambda st: st.add_scene("S1", date="2024-02-30"), "scene S1: date"),
        (lambda st: st.add_scene("S1", lat=91.0), "scene S1: lat must be a number of degrees from -90 to 90"),
        (lambda st: st.add_scene("S1", lon="4.3"), "scene S1: lon"),
        (lambda st: st.add_scene("S1", context=["gang"]), "scene S1: context"),
        (lambda st: st.add_scene("S1\n2"), "scene_id may not hold control characters"),
        (lambda st: st.add_scene("   "), "scene_id must be a non-empty string"),
        (lambda st: st.add_firearm("F\udcff1"), "firearm_id is not valid UTF-8"),
    ],
)
def test_store_refuses_records_that_would_break_every_report(tmp_path, record, match):
    with CaseStore(tmp_path / "s") as st:
        with pytest.raises(bx.ParameterError, match=match):
            record(st)
        g = st.graph()  # nothing was recorded: the graph and the report still work
        assert g.ids("firearm") == [] and g.ids("scene") == []
        st.report(tmp_path / "r.html")


@pytest.mark.parametrize(
    "meta, match",
    [({"date": "01/05/2024"}, "date must be an ISO 8601"), ({"exhibit_id": "E\t1"}, "exhibit_id may not hold control")],
)
def test_ingest_refuses_metadata_no_report_can_use(files, tmp_path, meta, match):
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        r = st.ingest([files[0]], meta=meta, progress=False)
        assert not r.added and len(r.failed) == 1
        assert match in r.failed[0][1]


def test_valid_records_are_kept_as_given(tmp_path):
    import datetime

    with CaseStore(tmp_path / "s") as st:
        st.add_scene(
            "S1",
            date=datetime.date(2024, 5, 1),
            place="Oude Haven",
            lat=52.08,
            lon=-4.3,
            context="street gang",
            officer="K. Visser",
        )
        st.add_firearm(
            "F1",
            status="surrendered",
            tracing_status="not requested",
            recovery_date="2024-06-01",
            serial_obliterated=True,
        )
        g = st.graph()
        assert g.node("scene", "S1")["date"] == "2024-05-01" and g.node("scene", "S1")["officer"] == "K. Visser"
        assert g.node("firearm", "F1")["serial_obliterated"] is True


ODD_IDS = ["$x^2$", "$x^$", "a\\b $c$", "<script>alert(1)</script>"]


def test_report_figures_and_html_show_ids_literally(files, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    drawn = []
    original = Figure.savefig

    def keep_texts(fig, *args, **kwargs):  # the report's figures, as they are rendered into it
        drawn.extend(t for ax in fig.axes for t in ax.get_yticklabels())
        return original(fig, *args, **kwargs)  # renders: a formula parse error would raise here

    monkeypatch.setattr(Figure, "savefig", keep_texts)
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        for k, fid in enumerate(ODD_IDS[:3]):  # test fires of one firearm: a group with a firearm, on the timeline
            st.add_firearm(fid, status="seized", recovery_date=f"2024-0{k + 1}-15")
            r = st.ingest(files[2 * k : 2 * k + 2], meta={"firearm_id": fid}, progress=False)
            assert len(r.added) == 2
        st.add_scene(ODD_IDS[3], date="2024-01-01")
        s = bx.read_scan(files[0])  # another exhibit, found at the scene: a gun seen once
        r = st.ingest(
            [bx.Scan(s.heights[::-1].copy(), s.dx, s.dy, {})],
            meta={"scene_id": ODD_IDS[3], "exhibit_id": "<b>E1</b>"},
            progress=False,
        )
        assert r.added == ["<b>E1</b>"]  # its scene is listed with the guns seen once
        html = st.report(tmp_path / "r.html").read_text("utf-8")
    labels = {t.get_text(): t for t in drawn}
    for fid in ODD_IDS[:3]:
        (t,) = [t for text, t in labels.items() if text.endswith(f" ({fid})")]
        assert t.get_parse_math() is False and t.get_usetex() is False
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "$x^2$" in html  # in the tables, as typed


def test_report_of_an_older_store_with_a_date_that_is_no_date_still_works(files, tmp_path):
    """Records written before dates were checked at the door: left off the timeline, never a failure."""
    import sqlite3

    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.add_firearm("F1", status="seized", recovery_date="2024-02-01")
        st.add_scene("S1", date="2024-01-01")
        st.add_scene("S2", date="2024-01-05")
        st.ingest(files[:2], meta={"firearm_id": "F1"}, progress=False)
        st.ingest(files[2:4], meta=[{"scene_id": "S1"}, {"scene_id": "S2"}], progress=False)
        st.link_new(progress=False)
        st.confirm("c0", "c2", "identification", examiner="A. Examiner", reason="test")
        st.confirm("c2", "c3", "identification", examiner="A. Examiner", reason="test")
    db = sqlite3.connect(tmp_path / "s" / "store.sqlite")
    db.execute("""UPDATE scenes SET attrs_json='{"date": "not-a-date"}' WHERE scene_id='S1'""")
    db.execute("""UPDATE firearms SET attrs_json='{"status": "seized", "recovery_date": "soon"}'""")
    db.commit()
    db.close()
    with CaseStore(tmp_path / "s") as st:
        html = st.report(tmp_path / "r.html").read_text("utf-8")
    assert "scenes of each linked gun" in html or "<img" in html


def test_graph_plot_draws_ids_literally():
    import matplotlib.pyplot as plt

    g = bx.LinkageGraph()
    for k, sid in enumerate(ODD_IDS):
        g.add_exhibit(f"E{k}", scene=sid)
    g.add_exhibit("T1", test_fired_from="$F^$")
    ax = g.plot()
    texts = {t.get_text(): t for t in ax.texts}
    for name in ODD_IDS + ["$F^$"]:
        assert texts[name].get_parse_math() is False
    ax.figure.savefig(io.BytesIO(), format="png")  # "$x^$" parsed as a formula would raise here
    plt.close(ax.figure)


def test_scan_figures_show_the_file_name_literally(files):
    import matplotlib.pyplot as plt

    s = bx.Scan(np.zeros((20, 20)), 1e-5, 1e-5, {"source": "/cases/case_$x^$.x3p"})
    ax = s.plot()
    assert "case_$x^$" in ax.get_title() and ax.title.get_parse_math() is False
    ax.figure.savefig(io.BytesIO(), format="png")
    plt.close(ax.figure)
    raw = bx.read_scan(files[0])
    raw.meta.pop("labels", None)
    raw.meta["source"] = "/cases/case_$x^$.x3p"
    fig = bx.plot_preprocess(raw, spacing_um=12.5)
    (title,) = [t for t in fig.texts if t.get_text() == fig.get_suptitle()]
    assert "case_$x^$" in title.get_text() and title.get_parse_math() is False
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


# ------------------------------------------------------------------ case 9: clear errors
@pytest.fixture(scope="module")
def unusable(files, tmp_path_factory):
    """Scans preprocess refuses: all missing, a corner too small to hold a breech face, 25 points."""
    d = tmp_path_factory.mktemp("unusable")
    s = bx.read_scan(files[0])
    few = np.full(s.shape, np.nan)
    few[100:105, 100:105] = 1e-6
    out = {"allnan.x3p": np.full(s.shape, np.nan), "corner.x3p": s.heights[:40, :40].copy(), "few.x3p": few}
    return {name: bx.write_x3p(bx.Scan(h, s.dx, s.dy, {}), d / name) for name, h in out.items()}


@pytest.mark.parametrize("name", ["allnan.x3p", "corner.x3p", "few.x3p"])
def test_compare_and_search_errors_name_the_file_and_advise_only_options_that_exist(
    files, unusable, tmp_path, capsys, name
):
    bad = str(unusable[name])
    store = tmp_path / "store"
    CaseStore(store, preprocess_params=FAST).close()
    for argv in (
        ["compare", str(files[0]), bad],
        ["compare", bad, str(files[0])],
        ["search", bad, "--store", str(store)],
    ):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {bad}: ") or line.startswith(f"error: {bad} ")
        assert "region=None" not in line and "pass " not in line


def test_png_without_a_pixel_size_advises_the_option_of_the_command(files, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from ballistix.store import casestore

    png = tmp_path / "nodpi.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(png)
    store = tmp_path / "store"
    CaseStore(store, preprocess_params=FAST).close()
    for argv in (
        ["compare", str(files[0]), str(png)],
        ["search", str(png), "--store", str(store)],
        ["ingest", str(png), "--store", str(store), "--json"],
        ["info", str(png)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "nodpi.png" in err and "--pixel-size-um" in err and "pixel_size_m" not in err
    # the option reaches the reader: of images only (an x3p carries its own spacing)
    seen = []

    def spy(path, **kw):
        seen.append((Path(path).suffix, kw.get("pixel_size_m")))
        return bx.read_scan(path, **kw)

    monkeypatch.setattr(casestore, "read_scan", spy)
    for argv in (
        ["ingest", str(png), str(files[0]), "--store", str(store), "--pixel-size", "3.5", "--json"],
        ["search", str(png), "--store", str(store), "--pixel-size-um", "3.5"],
    ):
        main(argv)
        assert "pixel size" not in capsys.readouterr().err  # read; what fails now is the image itself
    assert seen == [(".png", 3.5e-6), (".x3p", None), (".png", 3.5e-6)]
    assert main(["compare", str(png), str(files[0]), "--pixel-size", "3.5"]) == 2
    assert "pixel size" not in capsys.readouterr().err


def test_library_advice_becomes_the_option_of_the_command_or_is_dropped():
    from ballistix.cli import _say

    p = build_parser()
    info, ingest = p.parse_args(["info", "f.x3p"]), p.parse_args(["ingest", "f.x3p", "--store", "s"])
    validate = p.parse_args(["validate", "--labels", "l.csv"])
    checksum = (
        "f.x3p: MD5 checksum of main.xml does not match the one stored in the file "
        "(pass strict=False to read it anyway)"
    )
    assert _say(checksum, info).endswith("(use --lenient to read it anyway)")
    assert _say(checksum, ingest).endswith("stored in the file")
    units = "f.x3p: ambiguous length units: ...; pass units='mm' or units='um' (or units='m' to read it as metres)"
    assert _say(units, ingest).endswith("; use --units mm or --units um (or --units m to read it as metres)")
    assert _say(units, validate).endswith("ambiguous length units: ...")
    skip = "f.x3p: not a zip (pass skip_unreadable=True to leave it out and list it)"
    assert _say(skip, validate).endswith("(use --skip-unreadable to leave it out and list it)")


@pytest.mark.parametrize(
    "argv, option",
    [
        (["report", "--store", "{s}", "--since", "garbage"], "--since"),
        (["report", "--store", "{s}", "--since", "2024-13-01"], "--since"),
        (["search", "q.x3p", "--store", "{s}", "--shortlist", "0"], "--shortlist"),
        (["search", "q.x3p", "--store", "{s}", "-k", "0"], "-k"),
        (["link", "--store", "{s}", "--out", "g.json", "--shortlist", "0"], "--shortlist"),
        (["link", "--store", "{s}", "--out", "g.json", "--jobs", "0"], "--jobs"),
        (["ingest", "q.x3p", "--store", "{s}", "--date", "1 May 2024"], "--date"),
        (["ingest", "q.x3p", "--store", "{s}", "--pixel-size", "0"], "--pixel-size-um"),
        (["compare", "a.x3p", "b.x3p", "--pixel-size-um", "nan"], "--pixel-size-um"),
        (["demo", "--out", "{s}", "--firearms", "0"], "--firearms"),
        (["demo", "--out", "{s}", "--scenes", "-2"], "--scenes"),
        (["rule", "--store", "{s}", "--link-lr", "0.5"], "--link-lr"),
        (["validate", "--labels", "l.csv", "--out", "{s}", "--folds", "1"], "--folds"),
        (["validate", "--labels", "l.csv", "--out", "{s}", "--fpr-target", "5"], "--fpr-target"),
        (["validate", "--labels", "l.csv", "--out", "{s}", "--pairs", "0"], "--pairs"),
    ],
)
def test_cli_refuses_out_of_range_options_before_any_work(tmp_path, capsys, argv, option):
    s = tmp_path / "s"
    with pytest.raises(SystemExit) as e:
        main([a.replace("{s}", str(s)) for a in argv])
    assert e.value.code == 2 and f"argument {option}" in capsys.readouterr().err
    assert not s.exists()


def test_report_refuses_a_since_that_is_no_date(tmp_path):
    with CaseStore(tmp_path / "s") as st:
        with pytest.raises(bx.ParameterError, match="since must be an ISO 8601 date"):
            st.report(tmp_path / "r.html", since="last tuesday")
        assert not (tmp_path / "r.html").exists()
        st.report(tmp_path / "r.html", since="2024-05-01T08:30")


@pytest.fixture(scope="module")
def coarse(files, tmp_path_factory):
    """files[0] sampled 4 times more coarsely (50 um, 8 times the comparison grid of 6.25 um)."""
    s = bx.read_scan(files[0])
    return bx.write_x3p(
        bx.Scan(s.heights[::4, ::4].copy(), 4 * s.dx, 4 * s.dy, {}), tmp_path_factory.mktemp("coarse") / "coarse.x3p"
    )


def test_compare_warns_when_a_scan_was_sampled_far_more_coarsely_than_the_grid(files, coarse):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bx.SegmentationWarning)
        a = bx.preprocess(bx.read_scan(files[0]))  # 12.5 um onto 6.25: twice, within the limit
        b = bx.preprocess(bx.read_scan(coarse))
    with warnings.catch_warnings():
        warnings.simplefilter("error", bx.ResolutionWarning)
        assert bx.compare(a, a, calibration=None).warnings == []
    with pytest.warns(
        bx.ResolutionWarning,
        match=r"scan b \(coarse.x3p\) was sampled at 50 um, 8 times coarser "
        r"than the comparison grid of 6.25 um",
    ):
        r = bx.compare(a, b, calibration=None)
    assert r.inputs["b"]["original_spacing_um"] == pytest.approx(50) and "original_spacing_um" not in r.inputs["a"]
    assert len(r.warnings) == 1 and json.loads(json.dumps(r.to_dict()))["warnings"] == r.warnings
    # a scan processed before the resample step recorded its input spacing: read from the origin shift
    for st in b.meta["processing"]:
        if st["step"] == "resample":
            del st["result"]["from_spacing_um"]
    with pytest.warns(bx.ResolutionWarning, match="scan a .* 50 um"):
        bx.compare(b, a, calibration=None)


def test_cli_compare_says_when_a_scan_was_far_coarser(files, coarse, capsys):
    assert main(["compare", str(files[0]), str(coarse), "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert len(out["warnings"]) == 1 and "50 um, 8 times coarser" in out["warnings"][0]
    lines = [ln for ln in cap.err.splitlines() if "ResolutionWarning" in ln or ln.startswith("warning:")]
    assert lines == [f"warning: {out['warnings'][0]}"]  # once, in one line
