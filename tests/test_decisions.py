"""Examiners' decisions (issue 18): an append-only audit log in the store (`CaseStore.confirm`,
`CaseStore.decisions`), its effect on the graph (identification, elimination, inconclusive), the
report, `check`, the migration of a schema-3 store, and ``ballistix confirm`` / ``ballistix decisions``.

Most tests work on a copy of a store filled by `benchmarks.store_graph.fill_store` (rows shaped like
`link_new`'s, weighed by the shipped cohort calibration: links and eliminations by their LR); the
comparison recorded again runs `link_new` on a small store of simulated scans."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

import ballistix as bx
from ballistix.cli import VERDICTS as CLI_VERDICTS
from ballistix.cli import main
from ballistix.graph.rules import INCONCLUSIVE
from ballistix.store import CaseStore, StoreError
from ballistix.store.casestore import SCHEMA_VERSION, VERDICTS
from benchmarks.store_graph import fill_store

WHO = {"examiner": "A. Jansen", "reason": "breech-face marks agree over the primer"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store of 40 exhibits and 185 comparisons, built once; tests work on copies (`fresh`)."""
    folder = tmp_path_factory.mktemp("decisions") / "store"
    fill_store(folder, 40, per_exhibit=5, seed=1, real_descriptors=True)
    return folder


@pytest.fixture()
def folder(base, tmp_path):
    return shutil.copytree(base, tmp_path / "s")


def sql(folder, query, *args):
    db = sqlite3.connect(folder / "store.sqlite")
    try:
        out = db.execute(query, args).fetchall()
        db.commit()
        return out
    finally:
        db.close()


def edge(g, a, b) -> dict:
    return g.nx.edges[f"exhibit:{a}", f"exhibit:{b}"]


def pairs(g):
    """A link by the LR rule, an elimination (neither link nor candidate) and a candidate, each as
    (a, b) ids in the store's order."""
    found = {}
    for u, v, d in sorted(g.nx.edges(data=True), key=lambda e: (e[0], e[1])):
        if d["kind"] != "match" or d.get("confirmed") is not None:
            continue
        kind = "link" if g.is_link(d) else "candidate" if g.rule.review(d) else "elimination"
        found.setdefault(kind, (g.nx.nodes[u]["id"], g.nx.nodes[v]["id"]))
    assert set(found) == {"link", "elimination", "candidate"}
    return found


# ---------------------------------------------------------------- the log
def test_a_decision_is_recorded_with_who_when_why_and_superseded_never_overwritten(folder):
    with CaseStore(folder, create=False) as st:
        a, b = pairs(st.graph())["link"]
        first = st.confirm(b, a, "inconclusive", **WHO)  # either order
        assert first["exhibit_a"] == a and first["exhibit_b"] == b
        assert first["verdict"] == "inconclusive" and first["supersedes"] is None and first["earlier"] == 0
        assert first["examiner"] == WHO["examiner"] and first["reason"] == WHO["reason"]
        assert first["created_utc"].endswith("+00:00") and first["created_by"].endswith(bx.__version__)
        assert first["ballistix_version"] == bx.__version__
        second = st.confirm(a, b, "identification", examiner="B. Smit", reason="second look, better light")
        third = st.confirm(a, b, "elimination", examiner="C. de Vries", reason="class marks only")
        assert second["supersedes"] == first["decision_id"] and third["supersedes"] == second["decision_id"]
        assert third["earlier"] == 2
        history = st.decisions(a, b)
        assert [d["decision_id"] for d in history] == [
            first["decision_id"],
            second["decision_id"],
            third["decision_id"],
        ]
        assert history[0] == first  # the first decision is still there, as it was written
        assert st.decisions(b, a) == history and st.decisions(a) == history and st.decisions() == history
        assert st.decisions(a, b, current=True) == [third]
    assert sql(
        folder,
        "SELECT c.confirmed FROM comparisons c JOIN exhibits x ON x.rowid=c.a JOIN exhibits y ON y.rowid=c.b "
        "WHERE x.exhibit_id=? AND y.exhibit_id=?",
        a,
        b,
    ) == [(0,)]  # the comparison follows the current decision
    with CaseStore(folder, create=False, read_only=True) as st:  # and it is all there when reopened
        assert [d["verdict"] for d in st.decisions(a, b)] == ["inconclusive", "identification", "elimination"]


def test_the_log_is_append_only_in_the_database_itself(folder):
    with CaseStore(folder, create=False) as st:
        a, b = pairs(st.graph())["link"]
        d = st.confirm(a, b, "identification", **WHO)
    db = sqlite3.connect(folder / "store.sqlite")
    try:
        for statement in (
            "UPDATE decisions SET verdict='elimination'",
            "UPDATE decisions SET examiner='someone else' WHERE decision_id=1",
            "DELETE FROM decisions",
            "DELETE FROM decisions WHERE decision_id=1",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
        row = db.execute("SELECT a, b FROM decisions").fetchone()
        insert = (
            "INSERT INTO decisions (a, b, verdict, examiner, reason, created_utc, created_by, ballistix_version, "
            "supersedes) VALUES (?, ?, ?, ?, ?, 't', 'u', 'v', ?)"
        )
        with pytest.raises(sqlite3.DatabaseError, match="supersedes the latest"):  # a second chain for the pair
            db.execute(insert, (*row, "elimination", "X", "r", None))
        with pytest.raises(sqlite3.DatabaseError, match="CHECK"):
            db.execute(insert, (*row, "probable", "X", "r", d["decision_id"]))
        with pytest.raises(sqlite3.DatabaseError, match="CHECK"):
            db.execute(insert, (*row, "elimination", "  ", "r", d["decision_id"]))
        with pytest.raises(sqlite3.DatabaseError, match="CHECK"):
            db.execute(insert, (*row, "elimination", "X", "", d["decision_id"]))
        db.rollback()
        assert db.execute("SELECT decision_id, verdict, examiner FROM decisions").fetchall() == [
            (d["decision_id"], "identification", WHO["examiner"])
        ]
    finally:
        db.close()


def test_what_confirm_refuses_and_that_it_writes_nothing_then(folder):
    with CaseStore(folder, create=False) as st:
        found = pairs(st.graph())
        a, b = found["link"]
        g = st.graph()
        uncompared = next(e for e in g.ids("exhibit") if e != a and not g.nx.has_edge(f"exhibit:{a}", f"exhibit:{e}"))
        for call, message in (
            (lambda: st.confirm(a, b, "probable", **WHO), "verdict must be one of"),
            (lambda: st.confirm(a, b, True, **WHO), "no longer taken"),
            (lambda: st.confirm(a, b, "identification", examiner="  ", reason="x"), "examiner must be"),
            (lambda: st.confirm(a, b, "identification", examiner="X", reason=""), "reason must be"),
            (lambda: st.confirm(a, b, "identification", examiner="X", reason="a\nb"), "control characters"),
            (lambda: st.confirm(a, a, "identification", **WHO), "twice"),
            (lambda: st.confirm(a, "nobody", "identification", **WHO), "no exhibit 'nobody'"),
            (lambda: st.confirm(a, uncompared, "identification", **WHO), "no recorded comparison"),
        ):
            with pytest.raises(bx.ParameterError, match=message):
                call()
        with pytest.raises(TypeError):
            st.confirm(a, b, "identification")  # examiner and reason are required
        assert st.decisions() == []
    assert sql(folder, "SELECT COUNT(*) FROM comparisons WHERE confirmed IS NOT NULL") == [(0,)]
    with CaseStore(folder, create=False, read_only=True) as st:
        with pytest.raises(StoreError, match="read-only"):
            st.confirm(a, b, "identification", **WHO)


# ---------------------------------------------------------------- the graph
def test_each_verdict_on_the_graph_identification_links_elimination_cuts_inconclusive_stays_for_review(folder):
    with CaseStore(folder, create=False) as st:
        g = st.graph()
        found = pairs(g)
        link, elim, cand = found["link"], found["elimination"], found["candidate"]
        assert g.link_graph().has_edge(*link) and not g.link_graph().has_edge(*elim)
        st.confirm(*link, "inconclusive", **WHO)  # a link by its LR: no longer one
        st.confirm(*elim, "identification", **WHO)  # an elimination by its LR: an examiner's link
        st.confirm(*cand, "elimination", **WHO)  # a candidate: settled
        g = st.graph()
        d = edge(g, *link)
        assert d["verdict"] == "inconclusive" and "confirmed" not in d and d["examiner"] == WHO["examiner"]
        assert d["decided_utc"] and not g.is_link(d) and not g.link_graph().has_edge(*link)
        review = {(c["a"], c["b"]): c["why"] for c in g.candidates()}
        assert review[tuple(sorted(link))] == INCONCLUSIVE  # kept for review, not an elimination
        d = edge(g, *elim)
        assert d["verdict"] == "identification" and d["confirmed"] is True and g.link_graph().has_edge(*elim)
        d = edge(g, *cand)
        assert d["verdict"] == "elimination" and d["confirmed"] is False and tuple(sorted(cand)) not in review
        # the evidence graph keeps every decided comparison with its verdict, the inconclusive one too
        ev = st.graph(comparisons="evidence")
        for p, verdict in ((link, "inconclusive"), (elim, "identification"), (cand, "elimination")):
            assert edge(ev, *p)["verdict"] == verdict
        assert ev.candidates() == g.candidates() and ev.groups() == g.groups()
        # confirmed_only: only the identification is a link
        only = st.graph(confirmed_only=True)
        assert only.link_graph().has_edge(*elim) and not only.link_graph().has_edge(*link)
        # a later decision supersedes: the inconclusive link identified after all
        st.confirm(*link, "identification", examiner="B. Smit", reason="second look")
        d = edge(st.graph(), *link)
        assert d["verdict"] == "identification" and d["examiner"] == "B. Smit" and d["confirmed"] is True


def test_a_verdict_on_a_bare_graph_sets_confirmed():
    g = bx.LinkageGraph.from_comparisons(
        [
            ("A", "B", {"cmc_count": 30, "log10_lr": 3.0, "verdict": "inconclusive"}),
            ("C", "D", {"cmc_count": 1, "log10_lr": -2.0, "verdict": "identification"}),
            ("E", "F", {"cmc_count": 30, "log10_lr": 3.0, "verdict": "elimination"}),
        ]
    )
    assert sorted(map(sorted, g.link_graph().edges())) == [["C", "D"]]
    assert [(c["a"], c["why"]) for c in g.candidates()] == [("A", INCONCLUSIVE)]
    assert "confirmed" not in edge(g, "A", "B") and edge(g, "E", "F")["confirmed"] is False
    with pytest.raises(bx.ParameterError, match="verdict must be one of"):
        g.add_comparison("A", "B", {"cmc_count": 3, "verdict": "probable"})
    with pytest.raises(bx.ParameterError, match="disagree"):
        g.add_comparison("A", "B", {"cmc_count": 3, "verdict": "elimination", "confirmed": True})


def test_a_graph_file_keeps_the_verdicts(folder, tmp_path):
    with CaseStore(folder, create=False) as st:
        link = pairs(st.graph())["link"]
        st.confirm(*link, "inconclusive", **WHO)
        g = st.graph()
    for suffix in (".graphml", ".json"):
        back = bx.LinkageGraph.read(g.export(tmp_path / f"g{suffix}"))
        assert edge(back, *link)["verdict"] == "inconclusive" and not back.link_graph().has_edge(*link)
        assert back.candidates() == g.candidates()


def test_a_comparison_recorded_again_keeps_its_examiners_verdict(tmp_path):
    """`link_new` plans no pair twice; should a pair's comparison be recorded again all the same,
    its measurements are replaced and its examiner's verdict is not."""
    from ballistix.index.search import Candidate
    from ballistix.store.link import Outcome

    scans = bx.datasets.simulate(n_firearms=1, shots=2, seed=3, difficulty="easy", resolution="fast")
    with CaseStore(tmp_path / "s", preprocess_params={"spacing_um": 12.5}) as st:
        st.ingest(scans, meta=[{"exhibit_id": f"x{k}"} for k in range(2)], progress=False)
        st.link_new(progress=False)
        st.confirm("x0", "x1", "identification", **WHO)
        sql(st.folder, "UPDATE comparisons SET cmc_count=-1, created_utc='2000'")
        comparison = bx.compare(st.scan("x0"), st.scan("x1"))
        cand = Candidate(st._rowid("x1"), 1.0, 0, comparison=comparison)
        assert st._record_links([Outcome(st._rowid("x0"), [cand])]) == 1
        assert sql(st.folder, "SELECT cmc_count, created_utc > '2000', confirmed FROM comparisons") == [
            (comparison.cmc_count, 1, 1)
        ]
        assert not [p for p in st.check()["problems"] if p["check"] == "decisions"]


# ---------------------------------------------------------------- the report
def test_the_report_lists_the_decisions_escaped(folder, tmp_path):
    bad = "<script>alert(1)</script>"
    with CaseStore(folder, create=False) as st:
        link = pairs(st.graph())["link"]
        st.confirm(*link, "inconclusive", examiner="A. Jansen", reason="first look")
        st.confirm(*link, "identification", examiner=bad, reason=f"{bad} & more")
        html = st.report(tmp_path / "r.html").read_text("utf-8")
    assert "Examiners' decisions" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    decisions = html.split("Examiners' decisions</h2>")[1].split("</table>")[0]
    head, *rows = decisions.split("<tr>")[1:]
    assert "<th>examiner</th>" in head and "<th>reason</th>" in head and "<th>earlier decisions</th>" in head
    (row,) = rows  # the pair's current decision, with the one it superseded counted
    for value in (*sorted(link), "<td>identification</td>", "first look", "<td>1</td>"):
        assert (value in row) == (value != "first look"), value


# ---------------------------------------------------------------- check
def test_check_finds_a_confirmed_changed_outside_confirm_and_repair_sets_it_from_the_log(folder):
    with CaseStore(folder, create=False) as st:
        link = pairs(st.graph())["link"]
        st.confirm(*link, "elimination", **WHO)
        assert not [p for p in st.check()["problems"] if p["check"] == "decisions"]
        assert st.check()["checked"]["decisions"] == 1
    sql(folder, "UPDATE comparisons SET confirmed=1 WHERE confirmed=0")  # tampered: the rejected pair a link
    with CaseStore(folder, create=False) as st:
        assert not st.graph().link_graph().has_edge(*link)  # the graph follows the log meanwhile
        (p,) = [p for p in st.check()["problems"] if p["check"] == "decisions"]
        assert link[0] in p["item"] and "elimination" in p["problem"] and not p["repaired"]
        (p,) = [p for p in st.check(repair=True)["problems"] if p["check"] == "decisions"]
        assert p["repaired"]
        assert not [p for p in st.check()["problems"] if p["check"] == "decisions"]
    assert sql(folder, "SELECT COUNT(*) FROM comparisons WHERE confirmed=1") == [(0,)]


def test_check_finds_a_log_edited_behind_its_triggers(folder):
    with CaseStore(folder, create=False) as st:
        found = pairs(st.graph())
        st.confirm(*found["link"], "inconclusive", **WHO)
        st.confirm(*found["link"], "identification", **WHO)
        st.confirm(*found["elimination"], "elimination", **WHO)
    sql(folder, "DROP TRIGGER decisions_no_delete")
    sql(folder, "DELETE FROM decisions WHERE decision_id=1")
    with CaseStore(folder, create=False) as st:
        problems = [p["problem"] for p in st.check()["problems"] if p["check"] == "decisions"]
    assert any("decisions_no_delete" in p for p in problems)
    assert any("1 of the 3 decisions recorded are missing" in p for p in problems)
    assert any("supersedes decision 1, but its pair's previous decision is None" in p for p in problems)


# ---------------------------------------------------------------- migration
def test_a_schema_3_store_is_migrated_and_keeps_its_verdicts(folder):
    with CaseStore(folder, create=False) as st:
        link = pairs(st.graph())["link"]
    # as ballistix left a schema-3 store: no decisions table, a verdict written by the old confirm(a, b, True)
    sql(folder, "DROP TABLE decisions")
    sql(folder, "DROP TABLE imports")  # schema 5's, which came later
    sql(folder, "UPDATE meta SET value='3' WHERE key='schema_version'")
    sql(folder, "UPDATE comparisons SET confirmed=0 WHERE rowid=(SELECT min(rowid) FROM comparisons)")
    before = sql(folder, "SELECT a, b, cmc_count, confirmed, log10_lr FROM comparisons ORDER BY a, b")
    with pytest.raises(StoreError, match="older"):
        CaseStore(folder, create=False, read_only=True)
    with CaseStore(folder, create=False) as st:
        assert st.schema_version == SCHEMA_VERSION == 5
        assert sql(folder, "SELECT a, b, cmc_count, confirmed, log10_lr FROM comparisons ORDER BY a, b") == before
        assert st.decisions() == []
        report = st.check()
        assert not [p for p in report["problems"] if p["check"] in ("decisions", "database")]
        assert any("1 comparisons carry a verdict recorded without a decision" in n for n in report["notes"])
        st.confirm(*link, "identification", **WHO)
        assert st.decisions()[0]["decision_id"] == 1
    triggers = {r[0] for r in sql(folder, "SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {"decisions_no_update", "decisions_no_delete", "decisions_chain"} <= triggers
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        sql(folder, "DELETE FROM decisions")


# ---------------------------------------------------------------- the command line
def test_confirm_and_decisions_from_the_command_line(folder, capsys):
    assert CLI_VERDICTS == tuple(VERDICTS)
    with CaseStore(folder, create=False) as st:
        a, b = pairs(st.graph())["link"]
    store = ["--store", str(folder)]
    assert (
        main(["confirm", a, b, *store, "--verdict", "inconclusive", "--examiner", "A. Jansen", "--reason", "r1"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(f"decision 1: {a} - {b}: inconclusive by A. Jansen at ") and out.count("\n") == 1
    argv = ["confirm", b, a, *store, "--verdict", "identification", "--examiner", "B. Smit", "--reason", "r2", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["decision_id"] == 2 and d["supersedes"] == 1 and d["verdict"] == "identification"
    assert main(["decisions", *store, "--json"]) == 0
    assert [(r["decision_id"], r["examiner"]) for r in json.loads(capsys.readouterr().out)] == [
        (1, "A. Jansen"),
        (2, "B. Smit"),
    ]
    assert main(["decisions", a, b, *store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "a", "b", "verdict", "examiner", "when", "(UTC)", "supersedes", "reason"]
    assert (
        len(lines) == 4
        and "inconclusive" in lines[2]
        and "B. Smit" in lines[3]
        and lines[3].split()[-2:]
        == [
            "1",
            "r2",
        ]
    )
    assert main(["decisions", a, *store, "--current", "--json"]) == 0
    assert [r["decision_id"] for r in json.loads(capsys.readouterr().out)] == [2]
    # errors: one line on stderr, exit code 2, nothing recorded
    for argv, message in (
        (
            ["confirm", a, "nobody", *store, "--verdict", "elimination", "--examiner", "X", "--reason", "r"],
            "no exhibit",
        ),
        (["confirm", a, a, *store, "--verdict", "elimination", "--examiner", "X", "--reason", "r"], "twice"),
        (["decisions", "nobody", *store], "no exhibit"),
        (
            [
                "confirm",
                a,
                b,
                "--store",
                str(folder / "nothing"),
                "--verdict",
                "elimination",
                "--examiner",
                "X",
                "--reason",
                "r",
            ],
            "no case store",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    for argv in (
        ["confirm", a, b, *store, "--verdict", "probable", "--examiner", "X", "--reason", "r"],
        ["confirm", a, b, *store, "--verdict", "elimination", "--examiner", " ", "--reason", "r"],
        ["confirm", a, b, *store, "--verdict", "elimination", "--examiner", "X"],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    capsys.readouterr()
    with CaseStore(folder, create=False) as st:
        assert len(st.decisions()) == 2
