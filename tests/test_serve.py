"""The examiners' review app (issue 18): ``ballistix serve``, `ballistix.serve`.

Most tests drive the Flask application with its test client (fast): the queue and its filters,
the comparison page and its numbers, decisions with and without the form's safety token, escaping,
the security headers, the Host check, the login, read-only stores and the command line. One test
reviews a queue end to end in headless Chromium over HTTP (a waitress server on a free local
port), failing on any JavaScript or console error, and checks that the decisions land in the store
and in the report.

The store: simulated casework at the "fast" resolution (12 exhibits, linked), with the link rule
raised to LR 1000 so that its queue holds links and candidates, with and without an LR; one
exhibit id carries HTML. Built once; tests that write work on a copy.
"""

from __future__ import annotations

import html
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

import markupsafe
import pytest
from _browser import BROKEN_IMAGES_JS, LOCAL_SCHEMES, Tab, chromium_or_skip, problems_in

import ballistix as bx
from ballistix.cli import main
from ballistix.errors import ParameterError
from ballistix.serve import check_binding, create_app
from ballistix.serve.review import QueueFilter, overlap_correlation, queue, review_pair

pytest.importorskip("flask")
from werkzeug.security import generate_password_hash  # noqa: E402

EVIL = 'E0002<script>alert("x")</script>&\''  # an exhibit id a lab could type
WHO = {"examiner": "A. Jansen", "reason": "breech-face marks agree over the primer"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The store (see the module notes), built once."""
    folder = tmp_path_factory.mktemp("serve") / "store"
    cw = bx.datasets.simulate_casework(n_firearms=3, n_scenes=4, seed=1, resolution="fast")
    cw.exhibits[1]["id"] = EVIL
    with bx.CaseStore(folder, shortlist=3) as st:
        st.add_casework(cw, progress=False)
        st.link_new(progress=False)
        st.set_decision_rule(link_lr=1000)
    return folder


@pytest.fixture()
def folder(base, tmp_path):
    return shutil.copytree(base, tmp_path / "s")


def client(folder, **kw):
    return create_app(folder, **kw).test_client()


def token(c, url="/compare?a=E0008&b=T0003") -> str:
    """The form token of the client's session (a page holds it in every form)."""
    page = c.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def pairs_on(page: str) -> list[tuple[str, str]]:
    """The (a, b) of each comparison the page links to, in order."""
    out = []
    for href in re.findall(r"""href=["'](/compare\?[^"']+)["']""", page):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(html.unescape(href)).query)
        out.append((q["a"][0], q["b"][0]))
    return out


def decide(c, a, b, verdict, tok, headers=None, **kw):
    """Post the decision form (``kw``: fields other than the default examiner and reason)."""
    data = {"csrf_token": tok, "a": a, "b": b, "verdict": verdict, **WHO, **kw}
    return c.post("/compare", data=data, headers=headers or {})


# ----------------------------------------------------------------- queue
def test_queue_lists_links_and_candidates_strongest_first(base):
    with bx.CaseStore(base, create=False, read_only=True) as st:
        g = st.graph()
    rows = queue(g)
    kinds = {r["state"] for r in rows}
    assert kinds == {"link", "candidate"}, kinds
    lrs = [r["log10_lr"] for r in rows]
    known = [v for v in lrs if v is not None]
    assert known == sorted(known, reverse=True) and lrs[: len(known)] == known  # no LR: last
    evidence = [(u, v) for u, v, d in g.nx.edges(data=True) if d["kind"] == "match" and g.rule.is_evidence(d)]
    eliminations = sum(1 for *_, d in g.nx.edges(data=True) if d["kind"] == "match") - len(evidence)
    assert len(rows) == len(evidence) and eliminations > 0  # the eliminations are not in the queue
    page = client(base).get("/")
    assert page.status_code == 200
    assert pairs_on(page.get_data(as_text=True)) == [(r["a"], r["b"]) for r in rows]


def test_queue_filters_by_scene_date_exhibit_and_status(base, monkeypatch):
    c = client(base)
    with bx.CaseStore(base, create=False, read_only=True) as st:
        g = st.graph()
    every = queue(g, QueueFilter(status="all"))
    by_scene = pairs_on(c.get("/?scene=S004").get_data(as_text=True))
    assert by_scene and all("S004" in (g.scene_of(a), g.scene_of(b)) for a, b in by_scene)
    assert len(by_scene) == sum("S004" in (r["scene_a"], r["scene_b"]) for r in every)
    t0 = pairs_on(c.get("/?exhibit=t0003").get_data(as_text=True))  # a piece of an id, any case
    assert t0 and all("T0003" in (a, b) for a, b in t0)
    dated = queue(g, QueueFilter(date_from="2024-11-01", date_to="2024-11-30", status="all"))
    assert dated and all(any(d and "2024-11" in d for d in (r["date_a"], r["date_b"])) for r in dated)
    assert pairs_on(c.get("/?from=2024-11-01&to=2024-11-30&status=all").get_data(as_text=True)) == [
        (r["a"], r["b"]) for r in dated
    ]
    assert pairs_on(c.get("/?status=decided").get_data(as_text=True)) == []
    monkeypatch.setattr("ballistix.serve.app.QUEUE_ROWS", 3)  # a long queue shows its strongest rows
    page = c.get("/?status=all").get_data(as_text=True)
    assert pairs_on(page) == [(r["a"], r["b"]) for r in every[:3]]
    assert f"{len(every)} comparisons: the\n  strongest 3 shown" in page
    bad = c.get("/?from=2024-13-01&scene=<b>x</b>")
    assert bad.status_code == 400
    text = bad.get_data(as_text=True)
    assert "from must be an ISO 8601 date" in text and "<b>x</b>" not in text
    assert c.get("/?status=maybe").status_code == 400


# ----------------------------------------------------------------- comparison view
def test_the_comparison_page_shows_the_numbers_and_draws_both_surfaces(base):
    c = client(base)
    with bx.CaseStore(base, create=False, read_only=True) as st:
        row = queue(st.graph())[0]  # the strongest: a link with an LR
    page = c.get("/compare", query_string={"a": row["b"], "b": row["a"]})  # either order
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    cell = lambda name: re.search(rf'id="{name}"[^>]*>(.*?)</td>', text, re.S).group(1)  # noqa: E731
    assert cell("cmc").strip() == str(row["cmc_count"])
    assert row["lr"] in cell("lr") and f"log10 {row['log10_lr']:.2f}" in cell("lr")
    assert cell("verbal") == row["verbal"] == bx.evidence.verbal(row["log10_lr"])
    assert "sha256" in cell("calibration") and "ballistix" in cell("calibration")
    assert f"{row['cmc_count']} of" in cell("recomputed-cmc") and "as recorded" in cell("recomputed-cmc")
    assert 'id="mismatch"' not in text and 'id="problem"' not in text
    assert text.count('class="cell congruent"') >= 3 * row["cmc_count"]  # reference, aligned, overlay
    images = [html.unescape(u) for u in re.findall(r'src="(/compare/[a-z]+\.png[^"]*)"', text)]
    assert len(images) == 4
    sizes = set()
    for u in images:
        r = c.get(u)
        assert r.status_code == 200 and r.mimetype == "image/png" and r.data[:8] == b"\x89PNG\r\n\x1a\n"
        sizes.add((int.from_bytes(r.data[16:20], "big"), int.from_bytes(r.data[20:24], "big")))
    assert len(sizes) == 1  # the compared surface is drawn on the reference's grid
    assert c.get("/scale.png").mimetype == "image/png"


def test_the_compared_surface_is_drawn_where_the_found_pose_puts_it(base):
    with bx.CaseStore(base, create=False, read_only=True) as st:
        rows = [r for r in queue(st.graph()) if r["cmc_count"] >= 15][:3]
        for r in rows:
            rp = review_pair(st, r["a"], r["b"])
            assert rp.matches_record, rp.problem
            za, zb = st.scan(rp.reference).heights, st.scan(rp.compared).heights
            h, w = min(za.shape[0], zb.shape[0]), min(za.shape[1], zb.shape[1])
            unaligned = overlap_correlation(za[:h, :w], zb[:h, :w])
            # aligned, the same gun's marks lie on each other: the heights correlate
            assert rp.overlap_corr > 0.2 and rp.overlap_corr > unaligned + 0.15, (rp.overlap_corr, unaligned)
            congruent = [cl for cl in rp.cells if cl["congruent"]]
            assert len(congruent) == rp.comparison.cmc_count or rp.comparison.directions.get("ba")
            # a congruent cell's best match lies where the pose puts it, within the shift tolerance
            tol = rp.comparison.params["shift_tolerance_um"] * 1e-6 / rp.spacing_m
            assert all(max(abs(cl["dx"]), abs(cl["dy"])) <= tol + 1e-6 for cl in congruent)


def test_unknown_exhibits_and_pairs_are_refused_escaped(base):
    c = client(base)
    r = c.get("/compare", query_string={"a": "E0001", "b": "<img src=x onerror=alert(1)>"})
    assert r.status_code == 404
    text = r.get_data(as_text=True)
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert c.get("/compare", query_string={"a": "E0001", "b": "E0001"}).status_code == 400
    assert c.get("/compare?a=E0001").status_code == 400
    with bx.CaseStore(base, create=False, read_only=True) as st:
        compared = {(d["a"], d["b"]) for d in queue(st.graph(), QueueFilter(status="all"))}
    assert ("E0007", "T0001") not in compared
    r = c.get("/compare", query_string={"a": "E0007", "b": "T0001"})
    assert r.status_code == 404 and "no recorded comparison" in r.get_data(as_text=True)
    assert c.get("/compare/other.png?a=E0001&b=E0003").status_code == 404


# ----------------------------------------------------------------- decisions
def test_a_decision_without_the_right_token_or_from_another_site_is_refused(folder):
    c = client(folder)
    a, b = "E0008", "T0003"
    assert decide(c, a, b, "identification", "").status_code == 400  # no session token yet
    tok = token(c)
    assert decide(c, a, b, "identification", "").status_code == 400
    assert decide(c, a, b, "identification", tok[:-2] + "xx").status_code == 400
    assert decide(c, a, b, "identification", "é" * 10).status_code == 400  # not ASCII: refused, no crash
    other = decide(c, a, b, "identification", tok, headers={"Origin": "http://evil.example"})
    assert other.status_code == 400 and "safety token" in other.get_data(as_text=True)
    referer = decide(c, a, b, "identification", tok, headers={"Referer": "http://evil.example/page"})
    assert referer.status_code == 400
    assert decide(c, a, b, "identification", tok, headers={"Origin": "null"}).status_code == 400
    assert client(folder).post("/compare", data={"a": a, "b": b}).status_code == 400  # another session
    with bx.CaseStore(folder, create=False, read_only=True) as st:
        assert st.decisions() == []


def test_decisions_land_in_the_store_the_graph_the_queue_and_the_report(folder):
    c = client(folder, examiner="A. Jansen")
    tok = token(c)
    page = c.get("/compare?a=E0008&b=T0003").get_data(as_text=True)
    assert 'name="examiner" value="A. Jansen"' in page and 'id="no-history"' in page
    r = decide(c, "T0003", "E0008", "inconclusive", tok, headers={"Origin": "http://localhost"})
    assert r.status_code == 303
    r = c.get(r.headers["Location"])
    assert 'id="recorded"' in r.get_data(as_text=True) and 'id="next"' in r.get_data(as_text=True)
    second = decide(c, "E0008", "T0003", "identification", tok, reason="second look under ring light")
    assert second.status_code == 303
    with bx.CaseStore(folder, create=False, read_only=True) as st:
        ds = st.decisions("E0008", "T0003")
        assert [d["verdict"] for d in ds] == ["inconclusive", "identification"]
        assert ds[1]["supersedes"] == ds[0]["decision_id"] and ds[1]["examiner"] == WHO["examiner"]
        edge = st.graph().nx.edges["exhibit:E0008", "exhibit:T0003"]
        assert edge["verdict"] == "identification" and edge["confirmed"] is True
    assert ("E0008", "T0003") not in pairs_on(c.get("/").get_data(as_text=True))  # no longer open
    assert pairs_on(c.get("/?status=identification").get_data(as_text=True)) == [("E0008", "T0003")]
    page = c.get("/compare?a=E0008&b=T0003").get_data(as_text=True)
    history = re.search(r'<table id="history">(.*?)</table>', page, re.S).group(1)
    assert history.index("inconclusive") < history.index("second look under ring light")
    report = c.get("/report")
    assert report.status_code == 200 and "sandbox" not in report.headers["Content-Security-Policy"]
    text = report.get_data(as_text=True)
    decisions = text[text.index("Examiners' decisions") :]
    assert "second look under ring light" in decisions and "identification" in decisions
    assert ("E0008", "T0003") in pairs_on(decisions)  # the report's rows link to the comparisons
    assert "<script" not in text.lower() and "script-src" not in report.headers["Content-Security-Policy"]


def test_a_refused_decision_says_why_and_writes_nothing(folder):
    c = client(folder)
    tok = token(c)
    r = decide(c, "E0008", "T0003", "identification", tok, reason="   ")
    assert r.status_code == 400
    text = r.get_data(as_text=True)
    assert 'id="error"' in text and "reason" in text
    assert 'value="identification" required checked' in text  # the form keeps what was typed
    assert decide(c, "E0008", "T0003", "probable", tok).status_code == 400
    assert decide(c, "E0007", "T0001", "elimination", tok).status_code == 404  # never compared
    with bx.CaseStore(folder, create=False, read_only=True) as st:
        assert st.decisions() == []


def test_every_value_is_escaped(folder):
    c = client(folder)
    tok = token(c)
    evil_reason = "<script>alert('reason')</script> & \"quoted\""
    with bx.CaseStore(folder, create=False, read_only=True) as st:
        other = next(r["b"] if r["a"] == EVIL else r["a"] for r in queue(st.graph()) if EVIL in (r["a"], r["b"]))
    assert decide(c, EVIL, other, "elimination", tok, reason=evil_reason).status_code == 303
    with bx.CaseStore(folder, create=False, read_only=True) as st:
        assert st.decisions()[0]["reason"] == evil_reason
    pages = {
        "queue": c.get("/?status=all"),
        "compare": c.get("/compare", query_string={"a": EVIL, "b": other}),
        "groups": c.get("/groups"),
        "graph": c.get("/graph"),
        "report": c.get("/report"),
        "filtered": c.get("/", query_string={"exhibit": "<script>alert(1)</script>"}),
    }
    for name, r in pages.items():
        assert r.status_code == 200, name
        text = r.get_data(as_text=True)
        assert "<script>alert" not in text, name
        assert "</script>&" not in text, name
    assert str(markupsafe.escape(EVIL)) in pages["queue"].get_data(as_text=True)
    assert "&lt;script&gt;alert(&#39;reason&#39;)" in pages["compare"].get_data(as_text=True)
    assert "&lt;script&gt;alert(" in pages["report"].get_data(as_text=True)
    assert (EVIL, other) in pairs_on(pages["queue"].get_data(as_text=True))  # its links work


# ----------------------------------------------------------------- safety
def test_pages_carry_security_headers_and_no_inline_script_or_style(base):
    c = client(base)
    for url in ("/", "/compare?a=E0008&b=T0003", "/groups", "/graph", "/static/review.js", "/login"):
        r = c.get(url)
        assert r.status_code in (200, 302), url
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
        if r.mimetype == "text/html":
            text = r.get_data(as_text=True)
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), url  # every script is a file
            assert not re.search(r"\sstyle=|<style", text), url
            assert not re.search(r"(src|href)=\"(https?:)?//", text), url  # nothing from elsewhere
            assert r.headers["Cache-Control"] == "no-store"
    cookie = client(base).get("/compare?a=E0008&b=T0003").headers.get("Set-Cookie", "")
    assert "SameSite=Strict" in cookie and "HttpOnly" in cookie


def test_requests_addressed_to_another_host_are_refused(base):
    c = client(base)
    assert c.get("/", headers={"Host": "127.0.0.1:8750"}).status_code == 200
    assert c.get("/", headers={"Host": "[::1]:8750"}).status_code == 200
    r = c.get("/", headers={"Host": "evil.example"})  # DNS rebinding: a foreign name resolving here
    assert r.status_code == 400 and "this machine only" in r.get_data(as_text=True)
    assert client(base, hosts=None).get("/", headers={"Host": "lab-pc.example"}).status_code == 200


def test_another_interface_needs_the_flag_and_a_login(base, capsys, monkeypatch):
    check_binding("127.0.0.1", allow_remote=False, password_hash=None)
    check_binding("::1", allow_remote=False, password_hash=None)
    check_binding("localhost", allow_remote=False, password_hash=None)
    with pytest.raises(ParameterError, match="--allow-remote"):
        check_binding("0.0.0.0", allow_remote=False, password_hash="x")
    with pytest.raises(ParameterError, match="needs a login"):
        check_binding("192.168.1.5", allow_remote=True, password_hash=None)
    monkeypatch.delenv("BALLISTIX_SERVE_PASSWORD", raising=False)
    assert main(["serve", "--store", str(base), "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["serve", "--store", str(base), "--host", "0.0.0.0", "--allow-remote"]) == 2
    assert "needs a login" in capsys.readouterr().err
    assert main(["serve", "--store", str(base.parent / "nothing-here")]) == 2
    assert "no case store" in capsys.readouterr().err


def test_with_a_login_every_page_needs_it(folder, tmp_path):
    c = client(folder, password_hash=generate_password_hash("correct horse"))
    for url in ("/", "/compare?a=E0008&b=T0003", "/compare/reference.png?a=E0008&b=T0003", "/report", "/groups"):
        r = c.get(url)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login"), url
    tok = token(c, "/login")
    assert decide(c, "E0008", "T0003", "identification", tok).status_code == 302  # to the login, nothing written
    wrong = c.post("/login", data={"csrf_token": tok, "password": "wrong", "next": "/groups"})
    assert wrong.status_code == 401 and c.get("/").status_code == 302
    assert c.post("/login", data={"password": "correct horse"}).status_code == 400  # the login form has a token too
    ok = c.post("/login", data={"csrf_token": tok, "password": "correct horse", "name": "B. Smit", "next": "/groups"})
    assert ok.status_code == 303 and ok.headers["Location"] == "/groups"
    assert c.get("/").status_code == 200
    assert 'name="examiner" value="B. Smit"' in c.get("/compare?a=E0008&b=T0003").get_data(as_text=True)
    tok = token(c)  # a new session, a new token
    assert decide(c, "E0008", "T0003", "identification", tok).status_code == 303
    away = c.post("/logout", data={"csrf_token": tok})
    assert away.status_code == 303 and c.get("/").status_code == 302
    c2 = client(folder, password_hash=generate_password_hash("pw"))
    tok2 = token(c2, "/login")
    for elsewhere in ("//evil.example/x", "/\\evil.example/x", "https://evil.example/"):
        off = c2.post("/login", data={"csrf_token": tok2, "password": "pw", "next": elsewhere})
        assert off.headers["Location"] == "/"  # never sent elsewhere after logging in
        tok2 = token(c2)
    with bx.CaseStore(folder, create=False, read_only=True) as st:
        assert len(st.decisions()) == 1


def test_a_read_only_store_is_shown_and_takes_no_decisions(base):
    c = client(base, read_only=True)
    page = c.get("/compare?a=E0008&b=T0003").get_data(as_text=True)
    assert 'id="decision"' not in page and "read-only" in page
    with c.session_transaction() as s:  # a valid token: the refusal is the store's, not the form's
        s["csrf"] = "token"
    assert decide(c, "E0008", "T0003", "identification", "token").status_code == 403


def _ctrl_c_as_in_a_terminal():
    """Ctrl-C's default action in the child: a test run started in the background (``cmd &`` in a
    script, as CI may start it) ignores SIGINT, and a child inherits that, so Python would never see
    the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ballistix_serve_serves_until_interrupted(base):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ballistix", "serve", "--store", str(base), "--port", "0", "--examiner", "D. Maas"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)", line).group(1)
        with urllib.request.urlopen(url + "compare?a=E0008&b=T0003", timeout=60) as r:
            page = r.read().decode()
            assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert 'name="examiner" value="D. Maas"' in page
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in err


def test_serve_without_flask_says_what_to_install(base, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "flask", None)  # import flask fails
    assert main(["serve", "--store", str(base)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ballistix[serve]'" in err and "flask" in err


def test_the_library_does_not_import_flask():
    code = (
        "import sys, ballistix, ballistix.cli, ballistix.store; ballistix.CaseStore; sys.exit('flask' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----------------------------------------------------------------- in a browser
@pytest.fixture()
def server(folder):
    """The app of a copy of the store, served by waitress on a free local port in a thread."""
    from waitress import create_server

    app = create_app(folder, examiner="C. de Vries")
    srv = create_server(app, host="127.0.0.1", port=0, threads=2)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.effective_port}", folder
    srv.task_dispatcher.shutdown()
    # waitress has no stop(): its loop ends when it has nothing left to watch, so close it all from inside
    srv.trigger.pull_trigger(lambda: [d.close() for d in list(srv._map.values())])
    t.join(10)
    assert not t.is_alive()


def test_review_a_queue_end_to_end_in_chromium(server, tmp_path):
    exe = chromium_or_skip()
    origin, folder = server
    local = (origin + "/", *LOCAL_SCHEMES)
    with Tab(exe) as tab:
        tab.goto(origin + "/")
        # filter the queue by scene in the page's form
        tab.eval("document.querySelector('select[name=scene]').value = 'S004'")
        tab.click("#filters button[type=submit]", navigates=True)
        assert "scene=S004" in tab.eval("location.search")
        todo = tab.eval("[...document.querySelectorAll('#queue a.review')].map(a => a.href)")
        assert len(todo) >= 2
        tab.screenshot(tmp_path / "queue.png")
        verdicts = ["identification", "inconclusive", "elimination"]
        tab.click("#queue a.review", navigates=True)
        for k in range(len(todo)):
            assert tab.eval(BROKEN_IMAGES_JS) == []
            assert tab.eval("document.querySelectorAll('.pane-split rect.congruent').length") > 0
            if k == 0:  # zoom, pan, overlay, all cells: the view responds
                stage = "getComputedStyle(document.querySelector('.pane-split .zoom-stage')).transform"
                tab.wheel(".pane-split .zoom-view", -300)
                zoomed = tab.eval(stage)
                assert zoomed != "none" and zoomed == tab.eval(
                    "getComputedStyle(document.querySelectorAll('.pane-split .zoom-stage')[1]).transform"
                )  # both panes move together
                tab.drag(".pane-split .zoom-view", 60, 30)
                assert tab.eval(stage) != zoomed
                tab.click("input[name=mode][value=overlay]")
                assert tab.eval("getComputedStyle(document.querySelector('.pane-overlay')).display") != "none"
                assert tab.eval("getComputedStyle(document.querySelector('.pane-split')).display") == "none"
                tab.eval(
                    "const o = document.getElementById('opacity'); o.value = 80; o.dispatchEvent(new Event('input'))"
                )
                assert tab.eval("document.getElementById('overlay-top').style.opacity") == "0.8"
                tab.click("#all-cells")
                assert tab.eval("document.querySelector('#panes').classList.contains('all-cells')")
                tab.screenshot(tmp_path / "compare.png")
            assert tab.eval("document.querySelector('input[name=examiner]').value") == "C. de Vries"
            tab.click(f"input[name=verdict][value={verdicts[k % 3]}]")
            tab.type("input[name=reason]", f"reviewed in the browser, step {k}")
            tab.click("#decision button[type=submit]", navigates=True)
            assert tab.eval("document.getElementById('recorded') !== null")
            if k + 1 < len(todo):
                tab.goto(origin + "/?scene=S004")  # what is left of the queue
                tab.click("#queue a.review", navigates=True)
        tab.goto(origin + "/?scene=S004")
        left = tab.eval("[...document.querySelectorAll('#queue a.review')].length")
        assert left == sum(verdicts[k % 3] == "inconclusive" for k in range(len(todo)))  # stays open
        tab.goto(origin + "/report")
        report_rows = tab.eval(
            "[...document.querySelectorAll('h2')].find(h => h.textContent === \"Examiners' decisions\")"
            ".nextElementSibling.nextElementSibling.rows.length"
        )
        assert report_rows == 1 + len(todo)
        for url in ("/groups", "/graph"):
            tab.goto(origin + url)
            assert tab.eval(BROKEN_IMAGES_JS) == []
            tab.screenshot(tmp_path / f"{url[1:]}.png")
        tab.click("svg.graph a.edge-link line.hit", navigates=True)  # an edge opens its comparison
        assert tab.eval("location.pathname") == "/compare"
        problems = problems_in(tab.events, local)
    assert problems == [], "\n".join(problems)
    with bx.CaseStore(folder, create=False, read_only=True) as st:
        ds = st.decisions()
        assert len(ds) == len(todo) and all(d["examiner"] == "C. de Vries" for d in ds)
        assert sorted(d["verdict"] for d in ds) == sorted(verdicts[k % 3] for k in range(len(todo)))
