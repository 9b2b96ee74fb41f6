"""The linkage graph and its report at national scale (issue 17): analyses that visit only what they
report and never copy the graph, exports written node by node, a report that stays a few MB.

The large graphs are `benchmarks.graph_scale.synthetic_graph` (a store's mix: most exhibits the
only one of their gun, groups of 2-10 over scenes, recovered guns' test fires, comparisons with
the store's attributes), at a few thousand exhibits.
"""

from __future__ import annotations

import itertools
import time
import tracemalloc

import pytest

import ballistix as bx
from ballistix.graph import analysis
from benchmarks.graph_scale import synthetic_graph


@pytest.fixture(scope="module")
def big():
    return synthetic_graph(3000, seed=5)


# ------------------------------------------------------------------ analyses
def _summaries_0_2(g):
    """Group summaries as 0.2 made them: every group, copied."""
    out = []
    for k, members in enumerate(g.groups()):
        scenes = sorted({s for e in members if (s := g.scene_of(e)) is not None})
        guns = sorted({f for e in members if (f := g.firearm_of(e)) is not None})
        dates = sorted(d for s in scenes if (d := g.node("scene", s).get("date")))
        out.append({"group": k, "scenes": scenes, "guns": guns, "first_date": dates[0] if dates else None})
    return out


def test_analyses_give_what_0_2_gave(big):
    ref = _summaries_0_2(big)
    summaries = big.group_summaries(min_size=2)
    assert [(s["group"], s["scenes"]) for s in summaries] == [
        (r["group"], r["scenes"]) for r in ref if len(big.groups()[r["group"]]) >= 2
    ]
    unrecovered = [r for r in ref if r["scenes"] and not r["guns"]]
    unrecovered.sort(key=lambda r: (-len(r["scenes"]), r["first_date"] or "", r["group"]))
    assert [s["group"] for s in big.unrecovered_guns()] == [r["group"] for r in unrecovered]
    assert len(unrecovered) > 1000  # most guns are seen once, at one scene
    pairs = {}
    for r in ref:
        for a, b in itertools.combinations(r["scenes"], 2):
            pairs.setdefault((a, b), []).append(r["group"])
    sl = big.scene_links()
    assert {(a, b) if a < b else (b, a): d["groups"] for a, b, d in sl.edges(data=True)} == pairs
    assert sl.number_of_nodes() == len(big.ids("scene")) and len(pairs) > 50
    contexts = {}
    for s in big.ids("scene"):
        c = contexts.setdefault(big.node("scene", s).get("context") or "unknown", {"scenes": 0, "linked": 0})
        c["scenes"] += 1
        c["linked"] += sl.degree(s) > 0
    for r in ref:
        for c in {big.node("scene", s).get("context") or "unknown" for s in r["scenes"]}:
            contexts[c]["guns"] = contexts[c].get("guns", 0) + 1
    assert big.counts_by_context() == {
        c: {"scenes": v["scenes"], "linked_scenes": v["linked"], "guns": v.get("guns", 0)}
        for c, v in sorted(contexts.items())
    }


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_summaries_hold_what_they_report_not_every_group(big):
    """0.2 copied every group (a million sets) to summarise the few hundred thousand of 2+ exhibits,
    and summarised every group to list the unrecovered guns."""
    big.groups()
    every_group = _peak(big.groups)
    assert _peak(lambda: big.group_summaries(min_size=2)) < every_group / 4
    every_summary = _peak(big.unrecovered_guns)
    assert _peak(lambda: sum(1 for _ in analysis.iter_unrecovered_guns(big))) < every_summary / 4
    assert [s["group"] for s in analysis.iter_unrecovered_guns(big)] == [s["group"] for s in big.unrecovered_guns()]


def test_counts_by_context_and_the_report_need_no_scene_graph(big, monkeypatch):
    expected = big.counts_by_context()

    def copy_of_every_scene(g):
        raise AssertionError("the scene graph (a copy of every scene) was built")

    monkeypatch.setattr(analysis, "scene_links", copy_of_every_scene)
    assert big.counts_by_context() == expected
    assert sum(map(len, analysis.scene_pairs(big).values())) >= len(analysis.scene_pairs(big)) > 0


def test_chaining_rule_is_linear_in_a_long_chain():
    """1,000 triangles, each joined to the next by one link: 999 bridges in one component. 0.2
    searched the component once per bridge (27 s); one depth-first pass finds every side."""
    comps = []
    strong, single = {"cmc_count": 30, "log10_lr": 4.0}, {"cmc_count": 20, "log10_lr": 3.0}
    for i in range(1000):
        comps += [(f"a{i}", f"b{i}", strong), (f"a{i}", f"c{i}", strong), (f"b{i}", f"c{i}", strong)]
        if i:
            comps.append((f"b{i - 1}", f"a{i}", single))
    g = bx.LinkageGraph.from_comparisons(comps)
    t = time.perf_counter()
    weak = g.weak_links()
    assert time.perf_counter() - t < 5
    assert [(w["a"], w["b"]) for w in weak] == sorted((f"a{i}", f"b{i - 1}") for i in range(1, 1000))
    assert sorted(map(sorted, g.groups())) == sorted(sorted((f"a{i}", f"b{i}", f"c{i}")) for i in range(1000))


@pytest.mark.parametrize("seed", range(6))
def test_chaining_rule_cuts_what_a_search_per_bridge_cuts(seed):
    """Random link graphs: the weak links are the bridges with 2+ exhibits on each side, as found by
    removing each bridge and measuring its side (the 0.2 way)."""
    import networkx as nx

    g = bx.LinkageGraph(count_rule=6)
    rand = nx.gnm_random_graph(40, 48, seed=seed)
    for u, v in rand.edges():
        g.add_comparison(f"e{u:02d}", f"e{v:02d}", 10)
    links = g.link_graph()
    expected = []
    for comp in nx.connected_components(links):
        if len(comp) < 4:
            continue
        sub = links.subgraph(comp)
        for u, v in nx.bridges(sub):
            side = nx.node_connected_component(nx.restricted_view(sub, [], [(u, v)]), u)
            if 2 <= len(side) <= len(comp) - 2:
                expected.append(tuple(sorted((u, v))))
    assert [(w["a"], w["b"]) for w in g.weak_links()] == sorted(expected)


def test_values_many_records_share_are_kept_once(big):
    """Node keys, and attributes such as a calibre or a calibration's checksum, are one string each
    however many nodes or comparisons hold them (at a million exhibits: hundreds of MB)."""
    keys = {n: n for n in big.nx}
    assert all(keys[v] is v for u in big.nx for v in big.nx[u])  # adjacency holds the node's own key
    calibres = {id(d["calibre"]) for _, d in big.nx.nodes(data=True) if d["kind"] == "exhibit"}
    origins = {id(d["calibration_origin"]) for *_, d in big.nx.edges(data=True) if "calibration_origin" in d}
    assert len(calibres) == 1 and len(origins) == 1
    shas = {id(d["sha256"]) for _, d in big.nx.nodes(data=True) if d["kind"] == "exhibit"}
    assert len(shas) == len(big.ids("exhibit"))  # unique values are left alone


# -------------------------------------------------------------------- report
def _rows(html: str, heading: str) -> int:
    """Rows (header excluded) of the first table after ``heading``."""
    part = html.split(heading, 1)[1]
    return part.split("</table>", 1)[0].count("<tr>") - 1


def test_report_of_a_large_graph_shows_the_top_rows_and_writes_every_row_to_csv(big, tmp_path, monkeypatch):
    import base64
    import csv
    import io

    from PIL import Image

    import ballistix.store.report as report

    monkeypatch.setattr(report, "TIMELINE_ROWS", 8)
    big.add_scene("S0000000", place='=HYPERLINK("http://x")')  # a value a spreadsheet would run
    new = big.ids("exhibit")[-900:]
    path = report.write_graph_report(big, tmp_path / "r.html", new_exhibits=new, max_rows=25)
    html = path.read_text()
    folder = tmp_path / "r-tables"
    expected = {
        "leads": len(big.leads(new)),
        "groups": len(big.group_summaries(min_size=2)),
        "scene_links": len(analysis.scene_pairs(big)),
        "unrecovered": len(big.unrecovered_guns()),
        "candidates": len(big.candidates()),
    }
    assert all(n > 25 for n in expected.values()), expected
    assert sorted(p.stem for p in folder.glob("*.csv")) == sorted(expected)
    for name, n in expected.items():
        with open(folder / f"{name}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert len(rows) == 1 + n  # header and every row
        assert f"The first 25 of {n:,} rows" in html and f"href='r-tables/{name}.csv'" in html
    for heading in ("<h2>Leads", "<h2>Same-gun groups</h2>", "<h2>Scene links</h2>", "<h2>Guns seen at scenes"):
        assert _rows(html, heading) == 25
    groups = list(csv.DictReader(open(folder / "groups.csv", encoding="utf-8")))
    assert [int(r["gun"]) for r in groups] == [s["group"] for s in big.group_summaries(min_size=2)]
    assert groups[0]["exhibits"] == str(len(big.groups()[0]))  # largest first, as in the HTML
    unrec = list(csv.DictReader(open(folder / "unrecovered.csv", encoding="utf-8")))
    cells = [r["places"] for r in unrec if "HYPERLINK" in r["places"]]
    assert cells and all(c.startswith("'=") for c in cells)  # shown as text, never run
    assert "A large store: tables show their first 25 rows" in html
    assert len(html) < 600_000
    timeline = html.split("<h2>Scene timeline</h2>", 1)[1].split("base64,", 1)[1].split("'", 1)[0]
    assert Image.open(io.BytesIO(base64.b64decode(timeline))).height < 110 * (0.45 * 8 + 2)  # 8 guns drawn
    # the same report with room for every row: no CSV, and the files of the earlier report are gone
    (folder / "notes.csv").write_text("an analyst's own file\n")
    report.write_graph_report(big, path, new_exhibits=new, max_rows=100_000)
    assert [p.name for p in folder.glob("*.csv")] == ["notes.csv"] and "A large store" not in path.read_text()


def test_report_of_a_small_graph_is_one_file(tmp_path):
    from ballistix.store.report import write_graph_report

    g = synthetic_graph(200, seed=1)
    path = write_graph_report(g, tmp_path / "r.html", new_exhibits=g.ids("exhibit"), since="2025-01-01")
    html = path.read_text()
    assert list(tmp_path.iterdir()) == [path] and "A large store" not in html and "CSV" not in html
    assert "<h2>Leads: new exhibits since 2025-01-01</h2>" in html
    assert f"{len(g.ids('exhibit'))} exhibits, {len(g.ids('scene'))} scenes" in html
    with pytest.raises(bx.ParameterError, match="max_rows"):
        write_graph_report(g, tmp_path / "x.html", max_rows=0)


def test_benchmark_runs_quick_and_is_summarised(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks", "graph_scale", "--quick"],
        cwd=root,
        env={**os.environ, "BALLISTIX_BENCH_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "graph_scale_quick.json").read_text())
    assert out["graph"]["exhibits"] == 2000 and all(out["checks"].values()) and len(out["checks"]) == 3
    assert {"build", "groups", "export .graphml", "export .json", "export .gexf", "report"} <= set(out["steps"])
    assert {"read .graphml", "read .json", "read .gexf"} <= set(out["steps"])
    assert all(s["seconds"] >= 0 and s["peak_rss_mb"] > 0 for s in out["steps"].values())
    assert "graph_scale" in r.stdout and "export .graphml" in r.stdout
