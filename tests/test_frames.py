"""The analyst's layer: the graph's and the store's tables as DataFrames, the figures, the inline view."""

import html
import math
import re
import socket
import sys

import numpy as np
import pytest

import ballistix as bx
from ballistix.graph import LinkageGraph, frames, plot_flows, plot_map, plot_timeline
from ballistix.graph.figures import NO_BASEMAP
from ballistix.index.search import Candidate
from ballistix.store import CaseStore, SearchResult

pd = pytest.importorskip("pandas")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

STRING = pd.StringDtype()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture()
def small():
    """Gun 0: E1 (S1), E2 (S2), test fire T1 of F1 (seized, traced, Belgium -> Netherlands).
    Gun 1: E3 (S2), E4 (S3), linked by an LR. E5 alone at S4, whose date is no date; S5 has no
    coordinates. F2 found, not traced. A candidate (C) with an LR short of the rule."""
    g = LinkageGraph()
    for sid, date, ctx, lat, lon in (
        ("S1", "2024-01-05", "street gang", 52.08, 4.30),
        ("S2", "2024-03-01", "street gang", 52.07, 4.32),
        ("S3", "2024-02-01", "drug trafficking", 52.10, 4.28),
        ("S4", "sometime", "robbery", 52.05, 4.35),
        ("S5", "2024-06-01", None, None, None),
    ):
        g.add_scene(sid, date=date, context=ctx, place="Oude Haven", lat=lat, lon=lon)
    g.add_firearm(
        "F1",
        status="seized",
        tracing_status="traced",
        origin_country="Belgium",
        recovery_country="Netherlands",
        recovery_date="2024-05-01",
    )
    g.add_firearm("F2", status="found", tracing_status="in progress", origin_country="Germany", recovery_country="NL")
    for eid, sid in (("E1", "S1"), ("E2", "S2"), ("E3", "S2"), ("E4", "S3"), ("E5", "S4"), ("E6", "S5")):
        g.add_exhibit(eid, scene=sid)
    g.add_exhibit("T1", test_fired_from="F1")
    g.add_comparison("E1", "E2", {"cmc_count": 22, "log10_lr": 3.1})
    g.add_comparison("E3", "E4", {"cmc_count": 14, "log10_lr": 2.4})
    g.add_comparison("T1", "E1", {"cmc_count": 25, "log10_lr": 3.5})
    g.add_comparison("E5", "E6", {"cmc_count": 7, "log10_lr": 1.2})  # a candidate: LR 16, short of 100
    g.add_comparison("E1", "E3", {"cmc_count": 1, "log10_lr": -2.0})  # an elimination
    return g


def _assert_matches(df, records, columns):
    """``df`` holds ``records`` row by row, with exactly ``columns`` in order."""
    assert list(df.columns) == list(columns)
    assert len(df) == len(records)
    for i, r in enumerate(records):
        for c in columns:
            v, want = df.at[i, c], r.get(c)
            if want is None:
                assert v is None or pd.isna(v), (c, v)
            elif isinstance(want, list):
                assert v == want, (c, v, want)
            elif isinstance(want, float):
                assert v == pytest.approx(want), (c, v, want)
            elif c.endswith("date"):
                ts = pd.to_datetime(want, errors="coerce")  # a text that is no date: NaT
                assert (pd.isna(v) and pd.isna(ts)) or v == ts, (c, v, want)
            else:
                assert v == want, (c, v, want)


SUMMARY = [
    "group",
    "exhibits",
    "scenes",
    "first_date",
    "last_date",
    "places",
    "contexts",
    "firearm",
    "firearm_conflict",
]


# ----------------------------------------------------------------- frames
def test_groups_frame_is_the_group_summaries(small):
    df = small.frame("groups")
    _assert_matches(df, small.group_summaries(), SUMMARY)
    assert df["group"].dtype == "int64" and df["firearm"].dtype == STRING
    assert df["first_date"].dtype == "datetime64[ns]" and df["last_date"].dtype == "datetime64[ns]"
    assert df.at[0, "exhibits"] == ["E1", "E2", "T1"] and df.at[0, "firearm"] == "F1"
    assert (df["last_date"] - df["first_date"])[0] == pd.Timedelta(days=56)  # dates are dates: arithmetic works
    assert small.frame("groups", min_size=2)["group"].tolist() == [0, 1]
    assert frames.groups_frame(small).equals(df)  # the method is the function


def test_a_text_that_is_no_date_is_NaT_not_an_error(small):
    recs = {r["scenes"][0]: r for r in small.unrecovered_guns()}
    assert recs["S4"]["first_date"] == "sometime"  # as recorded
    df = frames.unrecovered_frame(small).set_index(frames.unrecovered_frame(small)["scenes"].str[0])
    assert pd.isna(df.at["S4", "first_date"]) and df.at["S5", "first_date"] == pd.Timestamp("2024-06-01")
    nodes = small.frame("nodes", "scene").set_index("id")
    assert pd.isna(nodes.loc["S4", "date"]) and nodes.loc["S1", "date"] == pd.Timestamp("2024-01-05")


def test_unrecovered_frame(small):
    df = small.frame("unrecovered")
    _assert_matches(df, small.unrecovered_guns(), SUMMARY)
    assert df["firearm"].isna().all() and df["group"].tolist() == [s["group"] for s in small.unrecovered_guns()]


def test_scene_links_frame_is_the_scene_graph(small):
    df = small.frame("scene_links")
    sg = small.scene_links()
    assert list(df.columns) == ["a", "b", "shared_guns", "groups"]
    assert len(df) == sg.number_of_edges() == 2
    for r in df.itertuples():
        assert sg.edges[r.a, r.b]["weight"] == r.shared_guns and sg.edges[r.a, r.b]["groups"] == r.groups
        assert r.a < r.b
    assert df["a"].dtype == STRING and df["shared_guns"].dtype == "int64"


def test_leads_frame(small):
    leads = small.leads(["E2", "T1", "E4", "E5"])
    df = small.frame("leads", ["E2", "T1", "E4", "E5"])
    cols = ["exhibit", "scene", "linked_exhibits", "linked_scenes", "firearm", "best_cmc", "best_log10_lr", "kind"]
    _assert_matches(df, leads, cols)
    assert len(df) == len(leads) == 3  # E5's candidate is no link: nothing new
    assert df["best_log10_lr"].dtype == "float64" and df["best_cmc"].dtype == "int64"
    assert df.at[0, "kind"] == "firearm hit" and df["exhibit"].dtype == STRING


def test_timeline_frame(small):
    events = small.timeline("E2")
    df = small.frame("timeline", "E2")
    _assert_matches(df, events, ["date", "event", "scene", "firearm", "place", "context", "exhibits"])
    assert df["date"].is_monotonic_increasing and df["date"].dtype == "datetime64[ns]"
    assert df["event"].tolist() == ["scene", "scene", "firearm seized"]
    assert pd.isna(df.at[2, "scene"]) and df.at[2, "firearm"] == "F1" and pd.isna(df.at[0, "firearm"])


def test_flows_indicator_contexts_candidates_weak_links(small):
    flows = small.frame("flows")
    assert flows.to_dict("records") == [
        {"origin_country": o, "recovery_country": r, "firearms": n} for (o, r), n in small.trafficking_flows().items()
    ]
    assert flows["firearms"].dtype == "int64"
    ind = small.indicator_16_4_2()
    df = small.frame("indicator")
    assert df["status"].tolist() == ["seized", "found", "surrendered"]
    assert df["firearms"].tolist() == [v["firearms"] for v in ind["by_status"].values()]
    assert df["traced"].tolist() == [v["traced"] for v in ind["by_status"].values()]
    assert df["share"].tolist()[:2] == [1.0, 0.0] and math.isnan(df["share"].iloc[2])
    assert df.attrs == {"value": 0.5, "traced": 1, "firearms": 2, "not_traced": {"in progress": 1}}
    ctx = small.frame("contexts")
    assert ctx.set_index("context").to_dict("index") == small.counts_by_context()
    cands = small.frame("candidates")
    _assert_matches(cands, small.candidates(), ["a", "b", "cmc_count", "log10_lr", "why"])
    assert len(cands) == 1 and cands.at[0, "log10_lr"] == pytest.approx(1.2) and cands["log10_lr"].dtype == "float64"
    chain = LinkageGraph.from_comparisons(
        [(a, b, {"cmc_count": 20, "log10_lr": 3.0}) for a, b in ("AB", "BC", "AC", "CD", "DE", "EF", "DF")]
    )
    _assert_matches(chain.frame("weak_links"), chain.weak_links(), ["a", "b", "cmc_count"])
    assert chain.frame("weak_links").to_dict("records") == [{"a": "C", "b": "D", "cmc_count": 20}]


def test_missing_lr_is_nan_and_nodes_frames(small):
    small.add_comparison("E6", "E4", 9)  # no calibration: a candidate without an LR
    cands = small.frame("candidates")
    assert cands["log10_lr"].isna().sum() == 1 and cands["log10_lr"].dtype == "float64"
    scenes = small.frame("nodes", "scene")
    assert scenes["id"].tolist() == small.ids("scene") and scenes["lat"].dtype == "float64"
    assert scenes["lat"].isna().sum() == 1
    guns = small.frame("nodes", "firearm")
    assert guns.set_index("id").at["F1", "recovery_date"] == pd.Timestamp("2024-05-01")
    ex = small.frame("nodes", "exhibit").set_index("id")
    assert ex.at["T1", "firearm"] == "F1" and pd.isna(ex.at["T1", "scene"]) and ex.at["E1", "scene"] == "S1"


def test_an_empty_graph_gives_empty_frames_with_the_same_columns_and_types(small):
    empty = LinkageGraph()
    args = {"leads": ([],), "nodes": ("scene",)}
    for name in frames.FRAMES:
        if name == "timeline":
            continue  # needs an exhibit
        full, none = small.frame(name, *args.get(name, ())), empty.frame(name, *args.get(name, ()))
        if name == "indicator":  # the three statuses, with nothing in them
            assert none["firearms"].sum() == 0 and len(none) == 3 and none.attrs["firearms"] == 0
        elif name != "nodes":
            assert len(none) == 0, name
        assert list(none.columns) == list(full.columns), name
        assert none.dtypes.to_dict() == full.dtypes.to_dict(), name


def test_unknown_frame_and_missing_pandas(small, monkeypatch):
    with pytest.raises(bx.ParameterError, match="no frame 'group'.*groups"):
        small.frame("group")
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails
    with pytest.raises(ImportError, match=re.escape("pip install 'ballistix[analysis]'")):
        small.frame("groups")
    assert small.groups()  # the rest of the graph does not need pandas


def test_iafq_frame_from_a_store_and_from_its_figures(tmp_path):
    with CaseStore(tmp_path / "s") as st:
        st.add_firearm("G-1", type="pistol", status="seized", recovery_date="2025-03-01", tracing_status="traced")
        st.add_firearm("G-2", type="pistol", status="found", recovery_date="2025-04-01", origin_country="AT")
        st.add_firearm("G-3", type="rifle", status="seized", recovery_date="2024-04-01")
        st.add_firearm("G-4", type="rifle", status="surrendered")
        fig = st.iafq(2025)
        df = frames.iafq_frame(st, 2025)
    rows = [{"breakdown": b, **r} for b, t in fig["tables"].items() for r in t]
    assert df.to_dict("records") == rows
    assert df.attrs == {k: fig[k] for k in ("year", "firearms", "undated", "sdg_16_4_2")}
    pistols = df[(df["breakdown"] == "type") & (df["category"] == "pistol")].iloc[0]
    assert (pistols["seized"], pistols["found"], pistols["total"]) == (1, 1, 2)
    assert df["total"].dtype == "int64" and df["category"].dtype == STRING
    assert df.groupby("breakdown")["total"].sum().eq(2).all()  # each breakdown counts the year's two
    assert frames.iafq_frame(fig).equals(df)
    with pytest.raises(ValueError, match="of 2025, not 2024"):
        frames.iafq_frame(fig, 2024)


def test_search_frames():
    rows = [
        {
            "exhibit_id": "case-01",
            "source_name": "/x/case-01.x3p",
            "cmc_count": 19,
            "score": 19.6,
            "descriptor_score": 0.91,
            "descriptor_rank": 0,
            "log10_lr": None,
            "calibration": None,
            "calibration_sha256": None,
            "calibration_origin": None,
            "conclusion": "candidate",
        },
        {"exhibit_id": "case-07", "cmc_count": 2, "score": 2.3, "descriptor_score": 0.4, "descriptor_rank": 3}
        | {"log10_lr": -1.5, "conclusion": "elimination", "source_name": "b", "calibration": "cal"}
        | {"calibration_sha256": "ab", "calibration_origin": "lab"},
    ]
    res = SearchResult(rows, skipped=[{"exhibit_id": "case-03", "problem": "damaged"}])
    df = res.to_frame()
    _assert_matches(df, rows, list(rows[0]))
    assert df["cmc_count"].dtype == "Int64" and df["log10_lr"].dtype == "float64" and math.isnan(df.at[0, "log10_lr"])
    assert df.attrs["skipped"] == res.skipped
    empty = SearchResult([]).to_frame()
    assert list(empty.columns) == list(df.columns) and len(empty) == 0
    cands = [Candidate(4, 0.9, 0, 17, 17.5), Candidate(2, 0.8, 1), Candidate(9, 0.7, 2, 3, 3.2)]
    df = frames.search_frame(cands)
    assert list(df.columns) == ["id", "descriptor_score", "descriptor_rank", "cmc_count", "score"]
    assert df["id"].tolist() == [4, 2, 9] and df["cmc_count"].isna().tolist() == [False, True, False]
    assert df["cmc_count"].dtype == "Int64"
    pre = frames.search_frame([Candidate(4, 0.9, 0, 17, 17.5, precheck_score=0.3)])
    assert pre.at[0, "precheck_score"] == pytest.approx(0.3)


@pytest.mark.slow
def test_a_store_search_as_a_frame(tmp_path):
    scans = bx.datasets.simulate(n_firearms=2, shots=2, seed=3, difficulty="easy", resolution="fast")
    with CaseStore(tmp_path / "s", preprocess_params={"spacing_um": 12.5}, shortlist=3) as st:
        st.ingest(scans, meta=[{"exhibit_id": f"e{k}"} for k in range(4)], progress=False)
        res = st.search("e0", k=3)
    df = res.to_frame()
    assert df["exhibit_id"].tolist() == [r["exhibit_id"] for r in res] and "e0" not in df["exhibit_id"].tolist()
    assert df["cmc_count"].tolist() == [r["cmc_count"] for r in res]
    assert df["conclusion"].tolist() == [r["conclusion"] for r in res]


# ----------------------------------------------------------------- figures
def test_timeline_figure_draws_each_gun_and_its_recovery(small):
    ax = plot_timeline(small)
    # the default: guns that link two scenes or a scene to a firearm, i.e. gun 0 (S1, S2, F1) and gun 1 (S2, S3)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gun 0 (F1)", "gun 1"]
    lines = [ln for ln in ax.lines if len(ln.get_xdata())]
    circles = [ln for ln in lines if ln.get_marker() == "o"]
    triangles = [ln for ln in lines if ln.get_marker() == "^"]
    assert [len(ln.get_xdata()) for ln in circles] == [2, 2] and len(triangles) == 1
    assert sorted(t.get_text() for t in ax.texts) == ["S1", "S2", "S2", "S3"]
    one = plot_timeline(small, "E4")
    assert [t.get_text() for t in one.get_yticklabels()] == ["gun 1"]
    assert [t.get_text() for t in plot_timeline(small, [1, "E1"]).get_yticklabels()] == ["gun 1", "gun 0 (F1)"]
    for bad in ("nope", 99, 1.5):
        with pytest.raises(bx.ParameterError):
            plot_timeline(small, bad)


def test_map_draws_one_point_per_scene_offline(small, no_network):
    ax = plot_map(small)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 1
    drawn = points[0].get_offsets()
    assert len(drawn) == 4  # S5 has no coordinates
    scenes = small.frame("nodes", "scene").dropna(subset=["lat"])
    assert np.allclose(np.sort(drawn[:, 0]), np.sort(scenes["lon"])) and np.allclose(
        np.sort(drawn[:, 1]), np.sort(scenes["lat"])
    )
    notes = " ".join(t.get_text() for t in ax.texts)
    assert NO_BASEMAP in notes and "1 scene without coordinates" in notes
    assert ax.get_aspect() == pytest.approx(1 / math.cos(math.radians(52.075)), rel=1e-3)
    assert ax.xaxis._major_tick_kw.get("gridOn") or any(gl.get_visible() for gl in ax.get_xgridlines())
    # lines join the scenes that share a gun: S1-S2 and S2-S3
    joins = {tuple(np.round(ln.get_xdata(), 2)) for ln in ax.lines}
    assert joins == {(4.30, 4.32), (4.32, 4.28)}
    colours = points[0].get_facecolors()
    assert len({tuple(c) for c in colours}) == 3  # gun 0, gun 1, grey for S4


def test_map_on_a_basemap_the_caller_has(small, no_network):
    image = np.zeros((10, 20, 3))
    ax = plot_map(small, basemap=(image, (4.2, 4.4, 52.0, 52.2), "(c) test tiles"))
    assert len(ax.images) == 1 and tuple(ax.images[0].get_extent()) == (4.2, 4.4, 52.0, 52.2)
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "(c) test tiles" in notes and NO_BASEMAP not in notes
    called = []
    plot_map(small, basemap=lambda a: called.append(a.get_xlim()))
    assert len(called) == 1 and called[0][0] < 4.28 < 4.35 < called[0][1]  # called with the scenes' extent set
    with pytest.raises(bx.ParameterError, match="basemap"):
        plot_map(small, basemap="OpenStreetMap")
    with pytest.raises(bx.ParameterError, match="west, east, south, north"):
        plot_map(small, basemap=(image, (4.4, 4.2, 52.0, 52.2)))


def test_flows_figure_has_one_bar_per_route(small):
    ax = plot_flows(small)
    assert [round(p.get_width()) for p in ax.patches] == list(small.trafficking_flows().values())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Belgium \u2192 Netherlands", "Germany \u2192 NL"]
    empty = plot_flows(LinkageGraph())
    assert not empty.patches and "no recovered firearm" in empty.texts[0].get_text()
    assert "no scene has coordinates" in plot_map(LinkageGraph()).texts[0].get_text()
    assert not plot_timeline(LinkageGraph()).get_yticklabels()


def test_figures_draw_ids_as_typed():
    g = LinkageGraph.from_comparisons(
        [("E1", "E2", {"cmc_count": 20, "log10_lr": 3.0})],
        scenes=[
            {"id": "$x^$", "date": "2024-01-01", "lat": 52.0, "lon": 4.3},
            {"id": "$y$", "date": "2024-02-01", "lat": 52.1, "lon": 4.2},
        ],
        firearms=[{"id": "$f$", "origin_country": "$a$", "recovery_country": "NL"}],
        exhibits=[{"id": "E1", "scene": "$x^$"}, {"id": "E2", "scene": "$y$"}, {"id": "T1", "test_fired_from": "$f$"}],
    )
    for ax in (plot_timeline(g), plot_map(g), plot_flows(g)):
        texts = [t for t in [*ax.texts, *ax.get_yticklabels()] if "$" in t.get_text()]
        assert texts and all(t.get_parse_math() is False for t in texts)
        ax.figure.canvas.draw()  # "$x^$" as a formula would fail to render


def test_figures_draw_on_the_axes_given(small):
    fig, axs = plt.subplots(1, 3)
    assert plot_timeline(small, ax=axs[0]) is axs[0]
    assert plot_map(small, ax=axs[1]) is axs[1]
    assert plot_flows(small, ax=axs[2]) is axs[2]
    assert len(fig.axes) == 3


# ----------------------------------------------------------------- the inline view
URL = re.compile(
    r"""(?:src|href|action)\s*=|url\(|@import|\bfetch\(|XMLHttpRequest|<link|https?://(?!www\.w3\.org/2000/svg)"""
)


def test_inline_view_embeds_the_whole_page(small, tmp_path):
    small.nx.nodes["scene:S1"]["note"] = '</script>"<b>&'
    view = small.view(height=400)
    out = view._repr_html_()
    assert out.startswith('<iframe srcdoc="') and out.endswith("</iframe>") and 'sandbox="allow-scripts"' in out
    srcdoc = re.match(r'<iframe srcdoc="([^"]*)"', out).group(1)  # the attribute ends at the first raw quote
    assert html.unescape(srcdoc) == view.html == small.to_html(tmp_path / "v.html").read_text()
    assert "<" not in srcdoc and '"' not in srcdoc  # escaped: nothing ends the attribute or the element
    assert "height: 400px" in out
    assert not URL.search(view.html)  # nothing loaded from elsewhere: the page stands alone
    assert view.save(tmp_path / "w.html").read_text() == view.html
    with pytest.raises(bx.ParameterError):
        small.view(height=True)
