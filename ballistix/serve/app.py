"""The review app on Flask: pages, the decision form, the safety checks (see `ballistix.serve`)."""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import os
import secrets
import tempfile
import threading
import urllib.parse
import warnings
from pathlib import Path

from flask import Flask, Response, abort, g, redirect, render_template, request, send_from_directory, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash

from ..errors import BallistixError, DamagedScanError, ParameterError, StoreError, StoreWarning
from ..graph.linkage import node_key
from ..store import CaseStore
from ..store.casestore import VERDICTS
from ..store.report import write_report
from .review import (
    STATUSES,
    QueueFilter,
    colour_lut,
    comparison_record,
    graph_drawing,
    group_rows,
    lr_text,
    mark_rows,
    queue,
    review_pair,
    scale_png,
    verbal_text,
)

__all__ = ["create_app", "LOCAL_NAMES", "is_loopback"]

#: Host names a browser uses for this machine; a server bound to a loopback address answers only
#: requests addressed to one of them (a page elsewhere whose name resolves to 127.0.0.1, DNS
#: rebinding, is refused).
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
#: Comparisons computed again and drawn, kept in memory (each a few hundred kB of PNG).
PAIRS_KEPT = 16
#: Rows the queue page shows at most (the strongest first; the filters narrow it).
QUEUE_ROWS = 500
#: The pages' Content-Security-Policy: everything from the app itself, no inline script or style.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: The report's (one self-contained file: inline style, inline images, no script at all).
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind to) is this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Review:
    """What the app keeps between requests: the store's folder and settings, the latest graph
    (rebuilt when the store changes), the comparisons drawn lately, the latest report."""

    def __init__(self, folder: Path, *, examiner, password_hash, read_only, hosts):
        self.folder = folder
        self.examiner = examiner
        self.password_hash = password_hash
        self.read_only = read_only
        self.hosts = hosts
        self.lock = threading.Lock()
        self._graph = (None, None, None)
        self._pairs: collections.OrderedDict = collections.OrderedDict()
        self._report_dir = tempfile.TemporaryDirectory(prefix="ballistix-review-")
        self._report_state = None
        self.lut = colour_lut()
        self.scale = scale_png(self.lut)

    def state(self, store) -> tuple:
        """What changes whenever the store is written: its files and its latest decision."""
        files = []
        for name in ("store.sqlite", "store.sqlite-wal"):
            try:
                st = os.stat(self.folder / name)
                files.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                files.append(None)
        (latest,) = store._db.execute("SELECT max(decision_id) FROM decisions").fetchone()
        (n,) = store._db.execute("SELECT COUNT(*) FROM comparisons").fetchone()
        return (*files, latest, n)

    def graph(self, store):
        """The store's `LinkageGraph`, built again only when the store has changed."""
        with self.lock:
            key = self.state(store)
            if self._graph[0] != key:
                self._graph = (key, store.graph(), None)
            return self._graph[1]

    def open_queue(self, store) -> list[tuple[str, str]]:
        """The pairs of the unfiltered queue (what waits for review), in order: for "next"."""
        graph = self.graph(store)
        with self.lock:
            key, g, pairs = self._graph
            if pairs is None or g is not graph:
                pairs = [(r["a"], r["b"]) for r in queue(graph)]
                if g is graph:
                    self._graph = (key, g, pairs)
            return pairs

    def pair(self, store, a: str, b: str, record: dict):
        """The comparison of ``a`` and ``b`` computed again and drawn (`review_pair`), kept for the
        images the page asks for next."""
        key = (
            *sorted((a, b)),
            record["cmc_count"],
            record["rotation_deg"],
            record["created_utc"],
        )
        with self.lock:
            if key in self._pairs:
                self._pairs.move_to_end(key)
                return self._pairs[key], key
        reviewed = review_pair(store, a, b, self.lut)  # outside the lock: a second or two
        with self.lock:
            self._pairs[key] = reviewed
            while len(self._pairs) > PAIRS_KEPT:
                self._pairs.popitem(last=False)
        return reviewed, key

    def report(self, store) -> Path:
        """The store's report, written again when the store has changed, with each table's rows
        linked to the app's pages."""
        folder = Path(self._report_dir.name)
        path = folder / "report.html"
        with self.lock:
            key = self.state(store)
            if self._report_state != key or not path.is_file():
                write_report(store, path, links=_report_links())
                self._report_state = key
        return path


def _compare_url(a: str, b: str) -> str:
    return url_for("compare", a=a, b=b)


def _report_links() -> dict:
    """The report's tables, each row linked to the comparison (or the queue rows) behind it."""
    pair = ("review", "comparison", lambda r: _compare_url(r["a"], r["b"]))
    return {
        "leads": ("review", "its comparisons", lambda r: url_for("queue", exhibit=r["exhibit"], status="all")),
        "groups": ("review", "the group's comparisons", lambda r: url_for("groups") + f"#gun-{r['gun']}"),
        "candidates": pair,
        "marks": pair,
        "weak_links": pair,
        "decisions": pair,
    }


def create_app(
    store_dir,
    *,
    examiner: str | None = None,
    password_hash: str | None = None,
    read_only: bool = False,
    hosts=LOCAL_NAMES,
) -> Flask:
    """The review app of the case store in ``store_dir`` (a Flask application; WSGI).

    Parameters
    ----------
    store_dir : path
        An existing case store (checked now: `StoreError` when there is none).
    examiner : str, optional
        The name the decision form starts with.
    password_hash : str, optional
        A password hash (`werkzeug.security.generate_password_hash`): every page then needs a
        login. Required to serve anything but this machine (`ballistix serve --allow-remote`).
    read_only : bool
        Open the store without writing: the pages, no decisions.
    hosts : sequence of str or None
        Host names the requests may be addressed to (default: this machine's names only, against
        DNS rebinding); None: any (a server on another interface, behind its login).

    Returns
    -------
    flask.Flask
    """
    folder = Path(store_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        CaseStore(folder, create=False, read_only=read_only).close()  # a store at all? (StoreError)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # sessions die with the process
        SESSION_COOKIE_NAME="ballistix_review",
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_HTTPONLY=True,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    review = _Review(
        folder,
        examiner=examiner,
        password_hash=password_hash,
        read_only=read_only,
        hosts=None if hosts is None else {h.strip("[]").lower() for h in hosts},
    )
    app.extensions["ballistix_review"] = review

    def store() -> CaseStore:
        """This request's store (SQLite connections belong to one thread: one store a request)."""
        if "store" not in g:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", StoreWarning)
                g.store = CaseStore(folder, create=False, read_only=read_only)
        return g.store

    @app.teardown_appcontext
    def close_store(exc):
        st = g.pop("store", None)
        if st is not None:
            st.close()

    # ------------------------------------------------------------------ safety
    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    app.jinja_env.globals.update(csrf_token=csrf_token, compare_url=_compare_url)

    @app.before_request
    def guard():
        if review.hosts is not None and _hostname(request.host) not in review.hosts:
            abort(400, description="this server answers requests addressed to this machine only")
        if request.method not in ("GET", "HEAD"):
            expected, given = session.get("csrf"), request.form.get("csrf_token", "")
            if not (expected and _same_origin() and hmac.compare_digest(given.encode(), expected.encode())):
                abort(400, description="the form's safety token is missing or wrong: open the page again and resubmit")
        if review.password_hash and not session.get("user") and request.endpoint not in ("login", "static"):
            return redirect(url_for("login", next=request.full_path if request.args else request.path))

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if resp.mimetype == "text/html":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return render_template("error.html", code=e.code, name=e.name, message=e.description), e.code

    @app.errorhandler(BallistixError)
    def store_error(e: BallistixError):
        code = 404 if isinstance(e, ParameterError) and "no exhibit" in str(e) else 400
        return render_template("error.html", code=code, name="refused", message=str(e)), code

    @app.context_processor
    def common():
        return {
            "store_folder": str(folder),
            "read_only": read_only,
            "login": bool(review.password_hash),
            "user": session.get("user"),
            "statuses": STATUSES,
        }

    # ------------------------------------------------------------------ pages
    @app.get("/", endpoint="queue")
    def queue_page():
        st = store()
        graph = review.graph(st)
        error, rows = None, []
        try:
            flt = QueueFilter.from_args(request.args)
        except ParameterError as e:
            flt, error = QueueFilter(), str(e)
        else:
            rows = queue(graph, flt)
        return (
            render_template(
                "queue.html",
                rows=rows[:QUEUE_ROWS],
                total=len(rows),
                flt=flt,
                error=error,
                scenes=graph.ids("scene"),
                rule=graph.decision_rule(),
            ),
            400 if error else 200,
        )

    def pair_args(source) -> tuple[str, str]:
        a, b = (source.get(k) or "" for k in ("a", "b"))
        if not a or not b:
            abort(400, description="a comparison needs two exhibits: ?a=...&b=...")
        if a == b:
            abort(400, description=f"a comparison is of two exhibits, got {a!r} twice")
        return a, b

    def record_of(st, a: str, b: str) -> dict:
        try:
            record = comparison_record(st, a, b)
        except ParameterError as e:
            abort(404, description=str(e))
        if record is None:
            abort(404, description=f"no recorded comparison of {a!r} and {b!r} in the store")
        return record

    def exhibit_info(graph, e: str) -> dict:
        d = graph.nx.nodes.get(node_key("exhibit", e), {})
        return {
            "id": e,
            "scene": graph.scene_of(e),
            "firearm": graph.firearm_of(e),
            "date": d.get("date"),
            "source_name": d.get("source_name"),
            "sha256": d.get("sha256"),
            "calibre": d.get("calibre"),
        }

    def compare_page(error=None, form=None, status=200):
        st = store()
        a, b = pair_args(request.values)
        record = record_of(st, a, b)
        graph = review.graph(st)
        edge = graph.nx.get_edge_data(node_key("exhibit", record["a"]), node_key("exhibit", record["b"])) or {}
        reviewed, problem, key = None, None, None
        try:
            reviewed, key = review.pair(st, a, b, record)
        except (DamagedScanError, BallistixError) as e:
            problem = str(e)
        pairs = review.open_queue(st)
        here = (record["a"], record["b"]) if record["a"] < record["b"] else (record["b"], record["a"])
        nxt = None
        if pairs:
            i = pairs.index(here) + 1 if here in pairs else 0
            nxt = next((p for p in pairs[i:] + pairs[:i] if p != here), None)
        lr = edge.get("log10_lr")
        evidence = record["evidence"]
        version = hashlib.sha256(repr(key).encode()).hexdigest()[:16] if key else ""
        return (
            render_template(
                "compare.html",
                a=record["a"],
                b=record["b"],
                record=record,
                edge=edge,
                reviewed=reviewed,
                problem=problem,
                judged={
                    "log10_lr": None if lr is None else round(lr, 2),
                    "lr": lr_text(lr),
                    "verbal": verbal_text(lr),
                    "basis": edge.get("lr_basis") or ("the pair's own LR" if lr is not None else None),
                    "pair_log10_lr": edge.get("pair_log10_lr"),
                    "calibration": edge.get("calibration_origin") or evidence.get("calibration"),
                    "calibration_sha256": edge.get("calibration_sha256") or evidence.get("calibration_sha256"),
                    "conclusion": evidence.get("conclusion"),
                    "note": evidence.get("note") or evidence.get("reason"),
                    "state": _state(graph, edge),
                    "why": graph.rule.review(edge),
                },
                rule=graph.decision_rule(),
                marks=mark_rows(evidence),
                info={e: exhibit_info(graph, e) for e in (record["a"], record["b"])},
                history=st.decisions(record["a"], record["b"]),
                verdicts=list(VERDICTS),
                form=form or {"examiner": session.get("examiner") or session.get("user") or review.examiner or ""},
                error=error,
                recorded=request.args.get("recorded"),
                next_pair=nxt,
                version=version,
            ),
            status,
        )

    @app.get("/compare")
    def compare():
        return compare_page()

    @app.post("/compare")
    def decide():
        if read_only:
            abort(403, description="the store is open read-only: no decisions can be recorded")
        a, b = pair_args(request.form)
        form = {k: request.form.get(k, "") for k in ("verdict", "examiner", "reason")}
        st = store()
        record_of(st, a, b)
        try:
            d = st.confirm(a, b, form["verdict"], examiner=form["examiner"].strip(), reason=form["reason"].strip())
        except (ParameterError, StoreError) as e:
            return compare_page(error=str(e), form=form, status=400)
        session["examiner"] = d["examiner"]
        return redirect(url_for("compare", a=a, b=b, recorded=d["decision_id"]), code=303)

    @app.get("/compare/<side>.png")
    def surface(side: str):
        if side not in ("reference", "aligned"):
            abort(404, description="no such image")
        st = store()
        a, b = pair_args(request.args)
        try:
            reviewed, _ = review.pair(st, a, b, record_of(st, a, b))
        except BallistixError as e:
            abort(404, description=str(e))
        resp = Response(reviewed.images[side], mimetype="image/png")
        resp.headers["Cache-Control"] = "private, max-age=3600"  # the page's URL names the version
        return resp

    @app.get("/scale.png")
    def scale():
        return Response(review.scale, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/favicon.ico")
    def favicon():  # asked for by pages without an icon of their own (the report)
        return send_from_directory(app.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=3600)

    @app.get("/groups")
    def groups():
        return render_template("groups.html", groups=group_rows(review.graph(store())))

    @app.get("/graph")
    def graph_page():
        graph = review.graph(store())
        try:
            drawing, error = graph_drawing(graph), None
        except ParameterError as e:
            drawing, error = None, str(e)
        return render_template("graph.html", drawing=drawing, error=error, summary=repr(graph).strip("<>"))

    @app.get("/report")
    def report():
        path = review.report(store())
        resp = send_from_directory(path.parent, path.name, mimetype="text/html", max_age=0)
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        return resp

    @app.get("/report-tables/<name>")
    def report_table(name: str):
        folder = review.report(store()).parent / "report-tables"
        return send_from_directory(folder, name, mimetype="text/csv", as_attachment=True)

    # ------------------------------------------------------------------ login
    @app.route("/login", methods=["GET", "POST"])
    def login():
        if not review.password_hash:
            return redirect(url_for("queue"))
        nxt = request.values.get("next") or url_for("queue")
        if not nxt.startswith("/") or "\\" in nxt or urllib.parse.urlsplit(nxt).netloc:  # never off this server
            nxt = url_for("queue")
        error = None
        if request.method == "POST":
            name = request.form.get("name", "").strip()
            if check_password_hash(review.password_hash, request.form.get("password", "")):
                session.clear()  # a new session (and token) for the logged-in user
                session["user"] = name or "examiner"
                return redirect(nxt, code=303)
            error = "wrong password"
        return render_template("login.html", error=error, next=nxt), 401 if error else 200

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login") if review.password_hash else url_for("queue"), code=303)

    return app


def _hostname(host: str | None) -> str:
    """The name in a ``Host`` header, without the port: ``localhost``, ``127.0.0.1``, ``::1``."""
    host = (host or "").lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _state(graph, edge: dict) -> str:
    """A comparison under the store's rule: its verdict, a link, a candidate or an elimination."""
    if edge.get("verdict"):
        return edge["verdict"]
    if graph.is_link(edge):
        return "link"
    return "candidate" if graph.rule.review(edge) else "elimination (not a link, not a candidate)"


def _same_origin() -> bool:
    """Whether a form came from this server: its ``Origin`` (or, without one, its ``Referer``)
    names this host. Browsers send one of them with every form; a request with neither is
    judged by its token alone."""
    origin = request.headers.get("Origin")
    if origin is None:
        ref = request.headers.get("Referer")
        if ref is None:
            return True
        origin = ref
    if origin == "null":
        return False
    parts = urllib.parse.urlsplit(origin)
    return parts.netloc.lower() == (request.host or "").lower()
