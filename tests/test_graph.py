import itertools
import json
import math

import pytest

import ballistix as bx
from ballistix.graph import LinkageGraph

# The grouping rules below are the same under any link rule: these tests state links as CMC counts
# under an explicit count rule (a lab's choice); the default LR rule has its own tests further down.
COUNT_RULE = 6


def counted(comps, **kw):
    return LinkageGraph.from_comparisons(comps, count_rule=COUNT_RULE, **kw)


def clique(ids, cmc=20):
    return [(a, b, cmc) for a, b in itertools.combinations(ids, 2)]


# ------------------------------------------------------------- grouping
@pytest.mark.parametrize("cmc, linked", [(5, False), (6, True), (30, True)])
def test_threshold_decides_a_link(cmc, linked):
    g = counted([("A", "B", cmc)])
    assert (g.groups() == [{"A", "B"}]) == linked


def test_single_false_link_does_not_merge_two_groups():
    comps = clique("ABCD") + clique("WXYZ") + [("D", "W", 9)]
    g = counted(comps)
    assert g.groups() == [{"A", "B", "C", "D"}, {"W", "X", "Y", "Z"}]
    assert g.weak_links() == [{"a": "D", "b": "W", "cmc_count": 9}]


def test_two_independent_links_do_merge():
    comps = clique("ABCD") + clique("WXYZ") + [("D", "W", 9), ("C", "X", 8)]
    assert counted(comps).groups() == [set("ABCDWXYZ")]


def test_examiner_confirmed_bridge_is_kept_and_rejected_link_is_not_a_link():
    g = counted(clique("ABCD") + clique("WXYZ"))
    g.add_comparison("D", "W", 9, confirmed=True)
    assert g.groups() == [set("ABCDWXYZ")]
    g.add_comparison("D", "W", 9, confirmed=False)  # the later verdict replaces the earlier one
    assert g.groups() == [set("ABCD"), set("WXYZ")]
    assert g.weak_links() == []


def test_single_exhibit_joins_on_one_link_but_bare_chain_splits():
    g = counted(clique("ABC") + [("C", "D", 7)])
    assert g.groups() == [set("ABCD")]  # a pendant exhibit is not a merge of two groups
    chain = counted([("A", "B", 20), ("B", "C", 20), ("C", "D", 20)])
    assert chain.groups() == [{"A", "B"}, {"C", "D"}]  # the documented price of the rule


def test_confirmed_only_mode():
    g = counted([("A", "B", 25), ("C", "D", {"cmc_count": 3, "confirmed": True})], confirmed_only=True)
    assert g.groups() == [{"C", "D"}, {"A"}, {"B"}]


def test_test_fires_of_one_firearm_are_one_gun_and_name_it():
    g = counted(
        [("E1", "T1", 15)],
        exhibits=[
            {"id": "T1", "test_fired_from": "F1"},
            {"id": "T2", "test_fired_from": "F1"},
            {"id": "E1", "scene": "S1"},
        ],
    )
    assert g.groups() == [{"E1", "T1", "T2"}]
    (s,) = g.group_summaries()
    assert s["firearm"] == "F1" and s["scenes"] == ["S1"]


def test_groups_update_when_comparisons_arrive():
    g = counted([("A", "B", 20)])
    assert g.groups() == [{"A", "B"}]
    g.add_comparison("B", "C", 11)
    assert g.groups() == [{"A", "B", "C"}]
    g.add_exhibit("D", scene="S9")
    assert g.groups()[-1] == {"D"} and g.scene_of("D") == "S9"


class FakeComparison:
    cmc_count, score, rotation_deg = 17, 17.62, 123.0


def test_comparison_objects_and_mappings_are_accepted():
    g = counted([("A", "B", FakeComparison()), ("B", "C", {"cmc_count": 2, "score": 2.3})])
    e = g.nx.edges["exhibit:A", "exhibit:B"]
    assert e == {"kind": "match", "cmc_count": 17, "score": 17.62, "rotation_deg": 123.0}
    assert g.nx.edges["exhibit:B", "exhibit:C"]["score"] == 2.3


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda g: g.add_comparison("A", "A", 20), "itself"),
        (lambda g: g.add_comparison("A", "B", "many"), "Comparison, a mapping or a CMC count"),
        (lambda g: g.add_comparison("A", "B", True), "bool"),
        (lambda g: g.add_comparison("A", "B", {"score": 3}), "cmc_count"),
        (lambda g: g.add_exhibit("A", scene="S", test_fired_from="F"), "not both"),
        (lambda g: g.add_firearm("F", status="borrowed"), "seized, found or surrendered"),
        (lambda g: g.add_scene(""), "non-empty string"),
        (lambda g: g.add_scene("S", kind="x"), "may not be named"),
        (lambda g: g.ids("gun"), "node kind"),
        (lambda g: LinkageGraph.from_comparisons([("A", "B")]), "triples"),
        (lambda g: LinkageGraph(count_rule=0), "count_rule"),
        (lambda g: LinkageGraph(count_rule=5.5), "count_rule"),
        (lambda g: LinkageGraph(link_lr=1.0), "link_lr"),
        (lambda g: LinkageGraph(link_lr=float("nan")), "link_lr"),
        (lambda g: g.group_of("nobody"), "no exhibit"),
    ],
)
def test_bad_input_is_a_parameter_error(call, match):
    with pytest.raises(bx.ParameterError, match=match):
        call(LinkageGraph())


# ------------------------------------------------------------- analysis
@pytest.fixture()
def small():
    """Gun 1 at scenes S1, S2 (recovered as F1, traced); gun 2 at S2, S3; gun 3 at S4 only."""
    g = LinkageGraph(count_rule=COUNT_RULE)
    for sid, date, ctx in (
        ("S1", "2024-01-05", "street gang"),
        ("S2", "2024-03-01", "street gang"),
        ("S3", "2024-02-01", "drug trafficking"),
        ("S4", "2024-04-01", "robbery"),
    ):
        g.add_scene(sid, date=date, context=ctx, place="Oude Haven")
    g.add_firearm(
        "F1",
        status="seized",
        tracing_status="traced",
        origin_country="Belgium",
        recovery_country="Netherlands",
        recovery_date="2024-05-01",
    )
    g.add_firearm(
        "F2", status="found", tracing_status="in progress", origin_country="Germany", recovery_country="Netherlands"
    )
    for eid, sid in (("E1", "S1"), ("E2", "S2"), ("E3", "S2"), ("E4", "S3"), ("E5", "S4")):
        g.add_exhibit(eid, scene=sid)
    g.add_exhibit("T1", test_fired_from="F1")
    g.add_comparison("E1", "E2", 22)
    g.add_comparison("E3", "E4", 14)
    g.add_comparison("E1", "E3", 1)
    g.add_comparison("T1", "E1", 25)
    return g


def test_summaries_scene_links_and_connection(small):
    sums = {tuple(s["exhibits"]): s for s in small.group_summaries(min_size=2)}
    s = sums[("E1", "E2", "T1")]
    assert s["firearm"] == "F1" and s["scenes"] == ["S1", "S2"] and s["first_date"] == "2024-01-05"
    sl = small.scene_links()
    assert set(map(frozenset, sl.edges())) == {frozenset(("S1", "S2")), frozenset(("S2", "S3"))}
    hops = small.scene_connection("S1", "S3")
    assert [(h["from"], h["to"]) for h in hops] == [("S1", "S2"), ("S2", "S3")]
    assert small.scene_connection("S1", "S4") is None


def test_timeline_is_ordered_and_ends_with_recovery(small):
    t = small.timeline("E2")
    assert [e.get("scene") or e.get("firearm") for e in t] == ["S1", "S2", "F1"]
    assert t[-1]["event"] == "firearm seized"


def test_leads_rank_firearm_hits_first(small):
    small.add_exhibit("E9", scene="S5")
    small.add_comparison("E9", "E4", 12)
    small.add_exhibit("T9", test_fired_from="F2")
    small.add_comparison("T9", "E5", 18)
    leads = small.leads(["E9", "T9"])
    assert [r["exhibit"] for r in leads] == ["T9", "E9"]
    assert leads[0]["firearm"] == "F2" and leads[0]["linked_scenes"] == ["S4"]
    assert leads[1]["linked_scenes"] == ["S2", "S3"] and leads[1]["best_cmc"] == 12
    # E5, the only case from S4, now matches F2's test fire: a firearm hit though it links no other scene
    assert small.leads(["E5"]) == [
        {
            "exhibit": "E5",
            "scene": "S4",
            "linked_exhibits": ["T9"],
            "linked_scenes": [],
            "firearm": "F2",
            "best_cmc": 18,
            "best_log10_lr": None,
            "kind": "firearm hit",
        }
    ]


def test_tracing_figures(small):
    ind = small.indicator_16_4_2()
    assert ind["value"] == 0.5 and ind["traced"] == 1 and ind["firearms"] == 2
    assert ind["by_status"]["found"] == {"firearms": 1, "traced": 0}
    assert small.trafficking_flows() == {("Belgium", "Netherlands"): 1, ("Germany", "Netherlands"): 1}
    ctx = small.counts_by_context()
    assert ctx["street gang"] == {"scenes": 2, "linked_scenes": 2, "guns": 2}
    unrec = small.unrecovered_guns()
    assert [u["exhibits"] for u in unrec] == [["E3", "E4"], ["E5"]]
    assert math.isnan(LinkageGraph().indicator_16_4_2()["value"])


def test_casework_with_perfect_comparisons_recovers_the_truth():
    cw = bx.datasets.simulate_casework(n_firearms=6, n_scenes=15, seed=1, scans=False)
    truth = {e["id"]: e["firearm_truth"] for e in cw.exhibits}
    comps = [(a, b, 25 if truth[a] == truth[b] else 1) for a, b in itertools.combinations(sorted(truth), 2)]
    g = LinkageGraph.from_casework(cw, comps, count_rule=COUNT_RULE)
    by_gun = {}
    for e, f in truth.items():
        by_gun.setdefault(f, set()).add(e)
    assert sorted(map(sorted, g.groups())) == sorted(map(sorted, by_gun.values()))
    assert g.indicator_16_4_2()["value"] == pytest.approx(cw.indicator_16_4_2())
    linked = {tuple(sorted(e)) for e in g.scene_links().edges()}
    assert linked == cw.linked_scenes()
    assert all("firearm_truth" not in d for _, d in g.nx.nodes(data=True))


# ------------------------------------------------------------ files
@pytest.mark.parametrize("suffix", [".graphml", ".gexf", ".json"])
def test_export_and_read_back_without_loss(small, tmp_path, suffix):
    small.add_comparison("E4", "E5", {"cmc_count": 2, "confirmed": False, "examiner": "J. Doe"})
    small.nx.nodes["scene:S1"]["tags"] = ["night", "vehicle"]
    small.nx.nodes["scene:S2"]["note"] = "json:looks encoded"
    small.nx.nodes["scene:S3"]["lat"] = 52.1
    path = small.export(tmp_path / f"links{suffix}")
    back = LinkageGraph.read(path)
    assert dict(back.nx.nodes(data=True)) == dict(small.nx.nodes(data=True))
    edges = lambda g: {frozenset((u, v)): d for u, v, d in g.nx.edges(data=True)}  # noqa: E731
    assert edges(back) == edges(small)
    assert back.nx.graph == small.nx.graph and back.count_rule == small.count_rule == COUNT_RULE
    assert back.groups() == small.groups()


# The writer of ballistix 0.2, kept here as the reference the streaming writer must match: a plain
# copy of the graph (values GraphML/GEXF cannot hold as "json:" strings), then NetworkX's writers,
# which build the whole document in memory.
def _encoded_0_2(items):
    items = list(items)
    types = {}
    for *_, d in items:
        for k, v in d.items():
            types.setdefault(k, set()).add(type(v))
    plain = {k for k, t in types.items() if len(t) == 1 and next(iter(t)) in (bool, int, float, str)}
    return [
        (
            *key,
            {
                k: v
                if k in plain and not (isinstance(v, str) and v.startswith("json:"))
                else "json:" + json.dumps(v, sort_keys=True)
                for k, v in d.items()
            },
        )
        for *key, d in items
    ]


def write_0_2(g, path):
    import html as _html
    import io

    import networkx as nx

    if path.suffix == ".json":
        doc = {"format": "ballistix-linkage-graph", "graph": nx.node_link_data(g.nx, edges="edges")}
        path.write_text(json.dumps(doc, indent=1))
        return path
    h = nx.Graph()
    h.graph.update(_encoded_0_2([("graph", g.nx.graph)])[0][1])
    nodes = g.nx.nodes(data=True)
    if path.suffix == ".gexf":
        nodes = [(n, {k: v for k, v in d.items() if k != "id"}) for n, d in nodes]
    h.add_nodes_from(_encoded_0_2(nodes))
    h.add_edges_from(_encoded_0_2(g.nx.edges(data=True)))
    if path.suffix == ".graphml":
        nx.write_graphml(h, path)
        return path
    buf = io.BytesIO()
    nx.write_gexf(h, buf)
    desc = _html.escape("ballistix linkage graph: " + json.dumps(g.nx.graph, sort_keys=True), quote=False)
    meta = f"</creator>\n    <description>{desc}</description>".encode()
    path.write_bytes(buf.getvalue().replace(b"</creator>", meta, 1))
    return path


@pytest.fixture()
def every_type(small):
    """`small` with every kind of value the graph may hold: text with markup characters, numbers,
    infinities, booleans, lists, mappings, an attribute whose type differs between nodes, empty text."""
    small.add_comparison(
        "E4", "E5", {"cmc_count": 2, "score": 0.25, "confirmed": False, "examiner": "J. Doe", "log10_lr": -1.5}
    )
    small.add_comparison("E2", "E5", {"cmc_count": 7, "rotation_deg": 12.5, "lr_basis": "withheld: <x> & 'y'"})
    small.nx.nodes["scene:S1"].update(tags=["night", "vehicle"], lat=52.08, lon=4.3, note='a <b> & "c"\n\tnext')
    small.nx.nodes["scene:S2"].update(note="json:looks encoded", lat=float("inf"), unicode="Zürich – 東京")
    small.nx.nodes["scene:S3"].update(note={"nested": [1, 2.5, None]}, lat=52, empty="")  # lat: int here
    small.nx.nodes["firearm:F1"].update(seized=True, rounds=15)
    small.nx.graph["note"] = {"source": "test", "n": [1, 2]}
    return small


def _read_back(path):
    g = LinkageGraph.read(path)
    return dict(g.nx.nodes(data=True)), {frozenset((u, v)): d for u, v, d in g.nx.edges(data=True)}, g.nx.graph


@pytest.mark.parametrize("suffix", [".graphml", ".gexf", ".json"])
def test_streamed_export_reads_back_as_the_0_2_writer_and_networkx_did(every_type, tmp_path, suffix):
    new = every_type.export(tmp_path / f"new{suffix}")
    old = write_0_2(every_type, tmp_path / f"old{suffix}")
    assert _read_back(new) == _read_back(old)
    nodes, edges, graph = _read_back(new)
    assert nodes == dict(every_type.nx.nodes(data=True)) and graph == every_type.nx.graph
    assert edges == {frozenset((u, v)): d for u, v, d in every_type.nx.edges(data=True)}
    if suffix == ".json":  # the same node-link document, one node or edge a line instead of indented
        assert json.loads(new.read_text()) == json.loads(old.read_text())
        assert new.read_text().count("\n") == 5 + every_type.nx.number_of_nodes() + every_type.nx.number_of_edges()
    else:  # the very document NetworkX writes (same keys, ids, declarations and layout)
        assert new.read_bytes() == old.read_bytes()


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_xml_exports_keep_what_xml_parsers_would_change_or_refuse(small, tmp_path, suffix):
    # a carriage return (read back as a newline from plain text) and a control character (not XML)
    small.nx.nodes["scene:S1"].update(note="line\r\nbreak", ctrl="bell\x07")
    nodes, *_ = _read_back(small.export(tmp_path / f"links{suffix}"))
    assert nodes["scene:S1"]["note"] == "line\r\nbreak" and nodes["scene:S1"]["ctrl"] == "bell\x07"
    small.add_exhibit("bad\x01id", scene="S1")  # a node key XML cannot carry at all: refused, no file
    with pytest.raises(bx.ParameterError, match=r"U\+0001") as e:
        small.export(tmp_path / f"bad{suffix}")
    assert f"bad{suffix}" in str(e.value) and not list(tmp_path.glob(f"*bad{suffix}*"))
    assert "bad\x01id" in _read_back(small.export(tmp_path / "ok.json"))[0]["exhibit:bad\x01id"]["id"]


@pytest.mark.parametrize("scope, name", [("node", "label"), ("node", "start"), ("edge", "weight"), ("edge", "id")])
def test_gexf_refuses_attribute_names_it_reads_as_its_own(small, tmp_path, scope, name):
    if scope == "node":
        small.nx.nodes["scene:S1"][name] = "x"
    else:
        small.nx.edges["exhibit:E1", "exhibit:E2"][name] = 2
    with pytest.raises(bx.ParameterError, match=f"'{name}'") as e:
        small.export(tmp_path / "links.gexf")
    assert "links.gexf" in str(e.value) and not list(tmp_path.iterdir())
    assert _read_back(small.export(tmp_path / "links.graphml"))[0] == dict(small.nx.nodes(data=True))


@pytest.mark.parametrize("suffix", [".graphml", ".gexf", ".json"])
def test_export_memory_does_not_grow_with_the_graph(tmp_path, suffix):
    """Streaming: the writer holds one node or edge (and 256 kB of text) at a time, never the document:
    a graph four times larger is written with the same memory. (The 0.2 writers held several times
    the file's size: 1.9 GB for a 161 MB GraphML file.)"""
    import tracemalloc

    from benchmarks.graph_scale import synthetic_graph

    sizes, peaks = [], []
    for n in (1500, 6000):
        g = synthetic_graph(n, seed=3)
        tracemalloc.start()
        try:
            path = g.export(tmp_path / f"{n}{suffix}")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        sizes.append(path.stat().st_size)
    assert sizes[1] > 3.5 * sizes[0] and sizes[1] > 6 * 2**20
    assert peaks[1] < 1.5 * 2**20 and peaks[1] - peaks[0] < 0.25 * 2**20, (sizes, peaks)


@pytest.mark.parametrize("suffix", [".graphml", ".gexf", ".json"])
def test_own_files_are_read_element_by_element_and_others_by_networkx(every_type, tmp_path, suffix, monkeypatch):
    from ballistix.graph import export

    whole = export._read_whole
    path = every_type.export(tmp_path / f"links{suffix}")
    expected = _read_back(path)
    monkeypatch.setattr(export, "_read_whole", lambda b: pytest.fail("read whole"))
    assert _read_back(path) == expected
    # another layout of the same graph (0.2's indented JSON; a directed GraphML or GEXF, as other tools
    # write them): through NetworkX's readers, to the same graph
    monkeypatch.setattr(export, "_read_whole", lambda b: (seen.append(b.path), whole(b))[1])
    seen = []
    if suffix == ".json":
        other = write_0_2(every_type, tmp_path / "other.json")
    else:
        other = tmp_path / f"other{suffix}"
        text = path.read_text().replace('edgedefault="undirected"', 'edgedefault="directed"')
        other.write_text(text.replace('defaultedgetype="undirected"', 'defaultedgetype="directed"'))
    assert _read_back(other) == expected and seen == [other]


@pytest.mark.parametrize("suffix", [".graphml", ".gexf", ".json"])
def test_reading_needs_little_beyond_the_graph_and_refuses_a_truncated_file(tmp_path, suffix):
    """NetworkX's readers hold the whole document (4.3 GB to read a 100,000-exhibit GraphML file of
    161 MB); the graph's own files are read element by element."""
    import tracemalloc

    from benchmarks.graph_scale import synthetic_graph

    def peak(fn):
        tracemalloc.start()
        try:
            return fn(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    g, built = peak(lambda: synthetic_graph(3000, seed=3))
    path = g.export(tmp_path / f"links{suffix}")
    back, read = peak(lambda: LinkageGraph.read(path))
    assert read < 1.3 * built and back.nx.number_of_edges() == g.nx.number_of_edges()
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3):  # a copy cut short: an error naming it, never part of a graph
        path.write_bytes(data[:cut])
        with pytest.raises(bx.FileFormatError, match="cannot read") as e:
            LinkageGraph.read(path)
        assert path.name in str(e.value)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("x.graphml", "<graphml><broken", "cannot read"),
        ("x.json", json.dumps({"nodes": []}), "not a ballistix linkage graph"),
        ("x.json", "{not json", "cannot read"),
        ("x.gexf", '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><gexf>&a;</gexf>', "cannot read"),
    ],
)
def test_bad_graph_files(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(bx.FileFormatError, match=match) as e:
        LinkageGraph.read(p)
    assert name in str(e.value)


def test_unknown_suffix_and_missing_file(small, tmp_path):
    with pytest.raises(bx.ParameterError, match="suffix"):
        small.export(tmp_path / "links.csv")
    with pytest.raises(bx.FileFormatError, match="no such file"):
        LinkageGraph.read(tmp_path / "missing.json")


def test_html_view_is_self_contained_and_escapes_values(small, tmp_path):
    small.nx.nodes["scene:S1"]["note"] = "</script><script>alert(1)</script>"
    text = small.to_html(tmp_path / "view.html").read_text()
    assert text.count("<script>") == 1 and text.count("</script>") == 1
    for needle in ("src=", "href=", "<link", "@import", "https://"):
        assert needle not in text
    assert '"S1"' in text and "E1" in text


def test_plot_draws_every_node(small):
    from matplotlib.collections import PathCollection

    ax = small.plot()
    drawn = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert drawn == small.nx.number_of_nodes()


@pytest.mark.parametrize("seed", range(5))
def test_incremental_groups_equal_a_fresh_computation(seed):
    """Comparisons arriving one by one (some replaced, some rejected by an examiner), groups
    asked for now and then: always the groups of a graph built from scratch."""
    import random

    rnd = random.Random(seed)
    ex = [f"E{i:02d}" for i in range(30)]
    g = LinkageGraph(count_rule=COUNT_RULE)
    for i, e in enumerate(ex[:6]):
        g.add_exhibit(e, test_fired_from="F1" if i < 3 else "F2")
    final = {}
    for step in range(200):
        a, b = rnd.sample(ex, 2)
        cmc = rnd.choice([0, 2, 5, 6, 9, 20])
        verdict = rnd.choice([None, None, None, True, False])
        g.add_comparison(a, b, cmc, confirmed=verdict)
        final[frozenset((a, b))] = (a, b, {"cmc_count": cmc, "confirmed": verdict})
        if step % 17 == 0:
            g.groups()
    fresh = counted(
        list(final.values()),
        exhibits=[{"id": e, "test_fired_from": "F1" if i < 3 else "F2"} for i, e in enumerate(ex[:6])],
    )
    assert g.groups() == fresh.groups()
    assert g.weak_links() == fresh.weak_links()
    assert [g.group_of(e) for e in ex if e in g.link_graph()] == [fresh.group_of(e) for e in ex if e in g.link_graph()]


def test_leads_skip_links_that_tell_nothing_new():
    g = LinkageGraph(count_rule=COUNT_RULE)
    g.add_exhibit("A", scene="S1")
    g.add_exhibit("B", scene="S1")
    g.add_exhibit("T1", test_fired_from="F1")
    g.add_exhibit("T2", test_fired_from="F1")
    g.add_comparison("A", "B", 20)  # two cases from one scene
    assert g.leads(["A", "B", "T1", "T2"]) == []  # test fires of a gun never seen at a scene: no lead either
    g.add_comparison("T1", "A", 15)  # one link between two sets of two: cut by the chaining rule
    assert g.leads(["A", "T1"]) == [] and g.weak_links() == [{"a": "A", "b": "T1", "cmc_count": 15}]
    g.add_comparison("T2", "B", 12)  # corroborated
    assert [(r["exhibit"], r["kind"], r["linked_scenes"]) for r in g.leads(["A", "T1"])] == [
        ("T1", "firearm hit", ["S1"]),
        ("A", "firearm hit", []),
    ]


def test_an_exhibit_origin_is_recorded_once():
    g = LinkageGraph(count_rule=COUNT_RULE)
    g.add_exhibit("E1", scene="S1")
    g.add_exhibit("E1", scene="S1", date="2024-01-01")  # same origin: an update
    for kw in ({"scene": "S2"}, {"test_fired_from": "F1"}):
        with pytest.raises(bx.ParameterError, match="already recorded"):
            g.add_exhibit("E1", **kw)
    assert g.scene_of("E1") == "S1" and g.firearm_of("E1") is None and g.node("exhibit", "E1")["date"] == "2024-01-01"


# ------------------------------------------------------------- the default rule: calibrated evidence
@pytest.mark.parametrize(
    "result, linked",
    [
        ({"cmc_count": 40}, False),  # a count alone never links, however high
        (40, False),
        ({"cmc_count": 12, "log10_lr": 1.99}, False),  # below LR 100
        ({"cmc_count": 12, "log10_lr": 2.0}, True),
        ({"cmc_count": 1, "log10_lr": 3.0}, True),  # the evidence decides, not the count
        ({"cmc_count": 0, "log10_lr": 3.0}, False),  # but never on a pair with no congruent cells
        ({"cmc_count": 30, "log10_lr": 3.0, "confirmed": False}, False),
        ({"cmc_count": 1, "confirmed": True}, True),
    ],
)
def test_default_rule_links_by_likelihood_ratio(result, linked):
    g = LinkageGraph.from_comparisons([("A", "B", result)])
    assert (g.groups() == [{"A", "B"}]) == linked
    assert "likelihood ratio >= 100" in g.decision_rule() and "LR >= 100" in repr(g)


def test_pairs_without_calibration_are_candidates_not_links():
    g = LinkageGraph.from_comparisons(
        [
            ("A", "B", {"cmc_count": 9}),
            ("C", "D", {"cmc_count": 4, "log10_lr": 1.2}),
            ("E", "F", {"cmc_count": 2, "log10_lr": -0.3}),
            ("G", "H", {"cmc_count": 0}),
            ("I", "J", {"cmc_count": 20, "log10_lr": 2.5}),
            ("K", "L", {"cmc_count": 15, "confirmed": False}),
        ]
    )
    assert g.groups(min_size=2) == [{"I", "J"}]
    cands = g.candidates()
    assert [(c["a"], c["b"]) for c in cands] == [("C", "D"), ("A", "B")]  # LR first, then no-LR by count
    assert cands[1]["log10_lr"] is None and "no calibration" in cands[1]["why"]


def test_link_lr_and_count_rule_are_the_callers_choice():
    comps = [("A", "B", {"cmc_count": 7, "log10_lr": 1.5}), ("C", "D", {"cmc_count": 5, "log10_lr": 2.5})]
    assert LinkageGraph.from_comparisons(comps, link_lr=10).groups(min_size=2) == [{"A", "B"}, {"C", "D"}]
    g = LinkageGraph.from_comparisons(comps, count_rule=6)
    assert g.groups(min_size=2) == [{"A", "B"}]  # the count rule replaces the LR rule, and says so
    assert "6 or more congruent matching cells" in g.decision_rule()
    assert [(c["a"], c["b"]) for c in g.candidates()] == [("C", "D")]  # strong LR the count rule leaves out


def test_graph_written_by_0_2_keeps_its_count_rule(tmp_path):
    g = counted([("A", "B", 8)])
    path = g.export(tmp_path / "old.json")
    doc = json.loads(path.read_text())
    graph = doc["graph"]["graph"]
    graph["threshold"] = graph.pop("count_rule")
    del graph["link_lr"]
    path.write_text(json.dumps(doc))
    back = LinkageGraph.read(path)
    assert back.count_rule == COUNT_RULE and back.groups() == [{"A", "B"}]
