"""A store's evidence-only graph (`CaseStore.graph(comparisons="evidence")`): the links, candidates for
review and examiner verdicts of the whole graph, decided by the same rule on the same (cohort) LRs,
the eliminations left out and counted; and the cohort LRs computed a chunk at a time, equal to the
bit to those `normalise_pairs` gives over every comparison at once.

The stores are filled by `benchmarks.store_graph.fill_store` (rows shaped like `link_new`'s, with the
default settings: the shipped cohort calibration weighs them)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

import ballistix as bx
from ballistix import evidence as ev
from ballistix.cli import main
from ballistix.graph.rules import LINK_LR, DecisionRule
from ballistix.store import casestore, cohort_lrs
from ballistix.store.cohort_lrs import CohortWeigher
from benchmarks.store_graph import fill_store


# ------------------------------------------------------------ the cohort LRs
def _reference(cals, exhibits, rows) -> dict:
    """The cohort LRs as `cohort_lrs` computed them before it streamed: `normalise_pairs` over all rows."""
    from ballistix.cohort import normalise_pairs
    from ballistix.evidence import cap_without_cells, select_calibration
    from ballistix.provenance import population, processing_signature

    cals = [c for c in cals if c.needs_cohort]
    ex = {}
    for rowid, kind, gun, calibre, meta, proc in exhibits:
        m = json.loads(meta)
        labels = {**(m.get("labels") or {}), **({"calibre": calibre} if calibre else {})}
        ex[rowid] = {
            "gun": gun if kind == "test_fire" else None,
            "batch": m.get("batch"),
            "population": population({"labels": labels, "population": m.get("population")}),
            "processing": processing_signature(json.loads(proc)),
        }
    ida = np.array([r[0] for r in rows])
    idb = np.array([r[1] for r in rows])
    cmc = np.array([r[2] for r in rows], float)
    same = np.array([ex[a]["gun"] is not None and ex[a]["gun"] == ex[b]["gun"] for a, b in zip(ida, idb)])
    batches = all(e["batch"] is not None for e in ex.values())
    out = {}
    for cal in cals:
        settings = dict(cal.reference.get("cohort") or {})
        kw = {k: settings[k] for k in ("exclude_top", "min_size", "quantile") if k in settings}
        keys = (
            {"keys_a": [str(ex[a]["batch"]) for a in ida], "keys_b": [str(ex[b]["batch"]) for b in idb]}
            if batches and settings.get("by_batch", True)
            else {}
        )
        excess, st = normalise_pairs(ida, idb, cmc, known_same=same, method="excess", return_stats=True, **keys, **kw)
        background = np.fmax([x.location for x in st["a"]], [x.location for x in st["b"]])
        limit = settings.get("max_background")
        for k, (a, b, *_, params) in enumerate(rows):
            if (a, b) in out or not np.isfinite(excess[k]):
                continue
            probe = cohort_lrs._PairRecord.__new__(cohort_lrs._PairRecord)
            probe.params = json.loads(params)
            probe.inputs = {
                s: {"processing": ex[i]["processing"], "population": ex[i]["population"]}
                for s, i in (("a", a), ("b", b))
            }
            chosen, _ = select_calibration(probe, cals, cohort=True)
            if chosen is not cal:
                continue
            if limit is not None and background[k] >= limit:
                out[(a, b)] = {
                    "log10_lr": None,
                    "pair_log10_lr": rows[k][6],
                    "cmc_background": background[k],
                    "calibration_sha256": None,
                    "calibration_origin": None,
                    "lr_basis": f"withheld: an exhibit reaches {background[k]:g} CMCs against others "
                    f"of its population (limit {limit:g} of {cal.name}): not discriminating",
                }
                continue
            out[(a, b)] = {
                "log10_lr": cap_without_cells(float(cal.log10_lr(np.array([[excess[k]]]))[0]), rows[k][2]),
                "pair_log10_lr": rows[k][6],
                "cmc_excess": float(excess[k]),
                "cmc_background": float(background[k]),
                "lr_basis": f"cohort: {cal.name}",
                "calibration_sha256": cal.sha256,
                "calibration_origin": cal.describe_origin(),
            }
    return out


def _cohort_calibrations():
    rng = np.random.default_rng(1)
    X = np.r_[rng.poisson(12, 80), rng.normal(0.0, 1.5, 400)][:, None]
    same = np.r_[np.ones(80, bool), np.zeros(400, bool)]
    nine = ev.fit(
        X,
        same,
        features=["cmc_excess"],
        name="9 mm cohort",
        domain={"calibre": ["9mm Luger"]},
        extra_reference={"cohort": {"exclude_top": 2, "min_size": 4}},
    )
    other = ev.fit(
        X,
        same,
        features=["cmc_excess"],
        name="any cohort",
        extra_reference={"cohort": {"exclude_top": 0, "min_size": 3, "quantile": 0.3, "max_background": 2.5}},
    )
    return [nine, other]


def _case(seed: int, *, batches: bool):
    """Exhibits (sparse rowids, test fires of three guns, two calibres, batches) and random comparisons."""
    rng = np.random.default_rng(seed)
    rowids = np.sort(rng.choice(np.arange(1, 400), 60, replace=False)).tolist()
    exhibits = []
    for i, r in enumerate(rowids):
        fire = i % 7 == 0
        meta = {"batch": f"B{i % 3}"} if batches or i % 2 else {}
        exhibits.append(
            (
                r,
                "test_fire" if fire else "scene",
                f"F{i % 3}" if fire else None,
                "9mm Luger" if i % 5 else ".45 ACP",
                json.dumps(meta),
                "[]",
            )
        )
    pairs = set()
    while len(pairs) < 700:
        a, b = sorted(rng.choice(rowids, 2, replace=False).tolist())
        pairs.add((a, b))
    rows = []
    for a, b in sorted(pairs):
        loud = a % 4 == 0 or b % 4 == 0  # exhibits that share cells with every gun: high backgrounds
        cmc = int(rng.integers(10, 30)) if rng.random() < 0.1 else int(rng.poisson(4.0 if loud else 1.5))
        lr = None if rng.random() < 0.2 else float(rng.uniform(-3, 4))
        rows.append((a, b, cmc, float(cmc), 0.0, None, lr, "{}"))
    return exhibits, rows


@pytest.mark.parametrize("batches", [False, True])
def test_cohort_lrs_a_chunk_at_a_time_are_those_of_normalise_pairs(batches, monkeypatch):
    """Both calibrations chosen by population, cohorts within batches or not, test fires of one gun out
    of the cohorts, backgrounds withheld: the LRs are the reference's to the bit, however the
    comparisons are chunked (the histograms merged on the way)."""
    cals = _cohort_calibrations()
    exhibits, rows = _case(3, batches=batches)
    want = _reference(cals, exhibits, rows)
    assert {d["lr_basis"].split(":")[0] for d in want.values()} == {"cohort", "withheld"}
    assert {d["lr_basis"][8:] for d in want.values() if d["lr_basis"].startswith("cohort")} == {
        "9 mm cohort",
        "any cohort",
    }
    one = CohortWeigher(cals, exhibits, [[r[:3] for r in rows]])
    monkeypatch.setattr(cohort_lrs, "_MERGE", 16)
    rng = np.random.default_rng(0)
    shuffled = [rows[i][:3] for i in rng.permutation(len(rows))]
    chunked = CohortWeigher(cals, exhibits, [shuffled[i : i + 37] for i in range(0, len(shuffled), 37)])
    for w in (one, chunked):
        got = {}
        for i in range(0, len(rows), 50):
            part = rows[i : i + 50]
            got.update({(r[0], r[1]): d for r, d in zip(part, w.weigh(part)) if d is not None})
        assert got == want


def test_cohort_lrs_without_a_cohort_calibration_are_none():
    exhibits, rows = _case(4, batches=False)
    w = CohortWeigher(ev.shipped_calibrations()[-1:], exhibits, [[r[:3] for r in rows]])
    assert not w.active and w.weigh(rows) == [None] * len(rows)


# ----------------------------------------------------------------- the store
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of 300 exhibits and 12 comparisons each, with two rows whose own LR and cohort LR
    disagree, and examiner verdicts against the rule both ways."""
    folder = tmp_path_factory.mktemp("evidence") / "store"
    fill_store(folder, 300, per_exhibit=12, seed=2, real_descriptors=True)
    db = sqlite3.connect(folder / "store.sqlite")
    # among different guns (cohorts of CMC 0-3): a pair LR of a link on 1 cell, and 25 cells with a pair LR of 1/1000
    (a1, b1), (a2, b2), (a3, b3), (a4, b4) = db.execute(
        "SELECT a, b FROM comparisons WHERE cmc_count <= 1 AND a > 100 ORDER BY a, b LIMIT 4"
    ).fetchall()
    db.execute("UPDATE comparisons SET log10_lr=5.0 WHERE a=? AND b=?", (a1, b1))
    db.execute("UPDATE comparisons SET cmc_count=25, log10_lr=-3.0 WHERE a=? AND b=?", (a2, b2))
    db.execute("UPDATE comparisons SET confirmed=1 WHERE a=? AND b=?", (a3, b3))  # an elimination, confirmed
    (a5, b5) = db.execute("SELECT a, b FROM comparisons WHERE cmc_count >= 20 ORDER BY a, b LIMIT 1").fetchone()
    db.execute("UPDATE comparisons SET confirmed=0 WHERE a=? AND b=?", (a5, b5))  # a link, rejected
    db.commit()
    name = dict(db.execute("SELECT rowid, exhibit_id FROM exhibits"))
    db.close()
    pairs = {
        k: frozenset((f"exhibit:{name[a]}", f"exhibit:{name[b]}"))
        for k, (a, b) in {
            "pair_link": (a1, b1),
            "cohort_link": (a2, b2),
            "confirmed": (a3, b3),
            "rejected": (a5, b5),
            "plain": (a4, b4),
        }.items()
    }
    with bx.CaseStore(folder, create=False) as st:
        full, evid, auto = st.graph(comparisons="all"), st.graph(comparisons="evidence"), st.graph()
    return {"folder": folder, "all": full, "evidence": evid, "auto": auto, "pairs": pairs}


def _matches(g) -> dict:
    return {frozenset((u, v)): d for u, v, d in g.nx.edges(data=True) if d["kind"] == "match"}


def test_the_evidence_graph_keeps_exactly_the_links_candidates_and_verdicts(store):
    full, evid = store["all"], store["evidence"]
    rule = full.rule
    every, kept = _matches(full), _matches(evid)
    want = {k: d for k, d in every.items() if rule.is_evidence(d)}
    assert kept == want  # attributes and all: an elimination kept or a candidate dropped fails here
    # not vacuous: links, both kinds of candidates, verdicts both ways, and eliminations left out
    assert sum(rule.is_link(d) and d.get("confirmed") is None for d in kept.values()) > 50
    why = [c["why"] for c in full.candidates()]
    assert any(w.startswith("LR above 1") for w in why)
    assert {d.get("confirmed") for d in kept.values()} == {None, True, False}
    assert len(every) - len(kept) > 0.8 * len(every)
    assert all(d["lr_basis"].startswith("cohort") for d in every.values() if d.get("cmc_excess") is not None)
    # the store's default rule and every analysis: the same answers
    assert evid.decision_rule() == full.decision_rule()
    assert evid.groups() == full.groups()
    assert evid.candidates() == full.candidates()
    assert evid.weak_links() == full.weak_links()
    assert evid.group_summaries() == full.group_summaries()
    exhibits = full.ids("exhibit")
    assert evid.leads(exhibits) == full.leads(exhibits)
    assert sorted(map(sorted, evid.scene_links().edges())) == sorted(map(sorted, full.scene_links().edges()))
    assert evid.indicator_16_4_2() == full.indicator_16_4_2()
    assert evid.counts_by_context() == full.counts_by_context()


def test_each_comparison_is_judged_by_the_lr_the_graph_gives_it(store):
    """With a cohort calibration the graph's LR is the cohort LR, not the pair's own: a pair LR of a
    link on one cell is an elimination, 25 cells with a pair LR of 1/1000 a link; verdicts stand."""
    full, evid, p = store["all"], store["evidence"], store["pairs"]
    every, kept = _matches(full), _matches(evid)
    d = every[p["pair_link"]]
    assert d["pair_log10_lr"] == 5.0 and d["log10_lr"] < 0 and p["pair_link"] not in kept
    d = every[p["cohort_link"]]
    assert d["pair_log10_lr"] == -3.0 and full.rule.is_link(d) and kept[p["cohort_link"]] == d
    assert kept[p["confirmed"]]["confirmed"] is True and kept[p["rejected"]]["confirmed"] is False
    assert p["plain"] not in kept


def test_what_the_evidence_graph_left_out_is_counted(store):
    full, evid = store["all"], store["evidence"]
    every, kept = _matches(full), _matches(evid)
    assert "comparisons" not in full.nx.graph  # the whole graph is as it was
    assert all("comparisons_left_out" not in d for _, d in full.nx.nodes(data=True))
    g = evid.nx.graph
    assert g["comparisons"] == "evidence"
    assert g["comparisons_recorded"] == len(every)
    assert g["comparisons_left_out"] == len(every) - len(kept)
    assert "eliminations" in g["comparisons_rule"] and full.decision_rule().split(";")[0] in g["comparisons_rule"]
    total = 0
    for e in full.ids("exhibit"):
        key = f"exhibit:{e}"
        n = sum(1 for nb in full.nx[key] if full.nx.edges[key, nb]["kind"] == "match") - sum(
            1 for nb in evid.nx[key] if evid.nx.edges[key, nb]["kind"] == "match"
        )
        assert evid.node("exhibit", e)["comparisons_left_out"] == n
        total += n
    assert total == 2 * g["comparisons_left_out"]
    # the same nodes otherwise, and what was left out survives an export
    strip = lambda d: {k: v for k, v in d.items() if k != "comparisons_left_out"}  # noqa: E731
    assert {n: strip(d) for n, d in evid.nx.nodes(data=True)} == dict(full.nx.nodes(data=True))


def test_an_exported_evidence_graph_reads_back_with_what_it_left_out(store, tmp_path):
    evid = store["evidence"]
    for suffix in (".graphml", ".json"):
        back = bx.LinkageGraph.read(evid.export(tmp_path / f"g{suffix}"))
        assert back.nx.graph["comparisons_left_out"] == evid.nx.graph["comparisons_left_out"]
        e = evid.ids("exhibit")[7]
        assert back.node("exhibit", e)["comparisons_left_out"] == evid.node("exhibit", e)["comparisons_left_out"]
        assert back.groups() == evid.groups() and back.candidates() == evid.candidates()


def test_a_small_store_gets_every_comparison_by_default(store):
    assert _matches(store["auto"]) == _matches(store["all"])
    assert store["auto"].nx.graph == store["all"].nx.graph


def test_above_the_limit_the_graph_report_and_link_keep_the_evidence_and_say_so(store, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(casestore, "GRAPH_ALL_LIMIT", 100)
    with bx.CaseStore(store["folder"], create=False) as st:
        g = st.graph()
        assert g.nx.graph["comparisons"] == "evidence" and _matches(g) == _matches(store["evidence"])
        html = st.report(tmp_path / "report.html").read_text()
    assert "eliminations" in html and f"{store['evidence'].nx.graph['comparisons_left_out']:,}" in html
    assert main(["report", "--store", str(store["folder"]), "--out", str(tmp_path / "r2.html")]) == 0
    out = capsys.readouterr().out
    assert "evidence only" in out and "left out" in out
    assert main(["link", "--store", str(store["folder"]), "--out", str(tmp_path / "g.graphml")]) == 0
    out = capsys.readouterr().out
    assert "evidence only" in out and "left out" in out
    assert main(["link", "--store", str(store["folder"]), "--out", str(tmp_path / "g.json"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["graph"]["comparisons"] == "evidence" and rec["graph"]["comparisons_left_out"] > 0
    # asked for, every comparison
    assert (
        main(["report", "--store", str(store["folder"]), "--out", str(tmp_path / "r3.html"), "--comparisons", "all"])
        == 0
    )
    assert "evidence only" not in capsys.readouterr().out


def test_the_comparisons_option_is_checked(store):
    with bx.CaseStore(store["folder"], create=False) as st, pytest.raises(bx.ParameterError, match="comparisons"):
        st.graph(comparisons="links")


def test_decision_rule_is_the_graphs():
    """`DecisionRule` is what `LinkageGraph.is_link` and `candidates` apply, under each kind of rule."""
    comps = [
        ("A", "B", {"cmc_count": 24, "log10_lr": 3.0}),
        ("B", "C", {"cmc_count": 7, "log10_lr": 1.0}),
        ("C", "D", {"cmc_count": 9}),
        ("D", "E", {"cmc_count": 0, "log10_lr": -2.0}),
        ("E", "F", {"cmc_count": 2, "log10_lr": -0.5, "confirmed": True}),
        ("F", "G", {"cmc_count": 30, "log10_lr": 4.0, "confirmed": False}),
        ("G", "H", {"cmc_count": 0}),
    ]
    for kw in ({}, {"count_rule": 8}, {"confirmed_only": True}, {"link_lr": 5.0}):
        g = bx.LinkageGraph.from_comparisons(comps, **kw)
        rule = DecisionRule(**{"link_lr": float(LINK_LR), **kw})
        assert g.rule == rule and g.decision_rule() == rule.describe()
        for *_, d in g.nx.edges(data=True):
            assert g.is_link(d) == rule.is_link(d)
        cands = {(c["a"], c["b"]): c["why"] for c in g.candidates()}
        kept = set()
        for u, v, d in g.nx.edges(data=True):
            pair = tuple(sorted((g.nx.nodes[u]["id"], g.nx.nodes[v]["id"])))
            assert cands.get(pair) == rule.review(d)
            if rule.is_evidence(d):
                kept.add(pair)
        assert ("D", "E") not in kept and ("G", "H") not in kept  # eliminations, under every rule
        assert {("E", "F"), ("F", "G")} <= kept
