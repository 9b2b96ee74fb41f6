"""The case store's HTML report: leads, same-gun groups, scene timeline, tracing figures, in one offline file."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import itertools
import math
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._files import atomic_file
from .._html import GREEN, LIGHT, escape, page, png, table
from .._records import check_since, safe_text
from .._version import __version__
from ..errors import ParameterError
from ..graph.analysis import iter_group_summaries, iter_unrecovered_guns, scene_pairs
from ..graph.figures import plot_timeline
from ..graph.linkage import MARK_EDGE_KEYS
from .casedata import guard_cell

__all__ = ["write_report", "write_graph_report", "REPORT_ROWS", "TIMELINE_ROWS"]


def _png(fig) -> str:
    return png(fig, dpi=110)


def _timeline_figure(g, groups) -> str | None:
    import matplotlib.pyplot as plt

    rows = [s["group"] for s in groups if len(s["scenes"]) >= 2 or s["firearm"]]
    if not rows:
        return None
    shown = f"the {TIMELINE_ROWS} largest of {len(rows):,} linked guns: " if len(rows) > TIMELINE_ROWS else ""
    rows = rows[:TIMELINE_ROWS]
    _, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    plot_timeline(g, rows, ax=ax, labels=False, max_rows=TIMELINE_ROWS)
    ax.set_title(f"{shown}scenes of each linked gun (circles) and its recovery (triangle)", fontsize=10)
    return _png(ax.figure)


def _tracing_figure(ind: dict) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not ind["firearms"]:
        return None
    fig, ax = plt.subplots(figsize=(5, 2.6))
    st = list(ind["by_status"])
    ax.bar(st, [ind["by_status"][s]["firearms"] for s in st], color=LIGHT, label="recovered")
    ax.bar(st, [ind["by_status"][s]["traced"] for s in st], color=GREEN, label="origin traced")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # firearms are counted whole
    ax.set_ylabel("firearms", fontsize=9)
    ax.set_title(f"SDG 16.4.2: {ind['value']:.0%} traced", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _lr(log10_lr) -> str:
    """A likelihood ratio for a table: 508, 1/60, or '-'."""
    if log10_lr is None:
        return "-"
    v = 10.0**log10_lr
    return f"{v:.3g}" if v >= 1 else f"1/{1 / v:.3g}"


def _calibrations_used(g) -> list[dict]:
    """One row per calibration behind the graph's likelihood ratios: checksum, origin, comparisons."""
    used: dict[tuple, int] = {}
    for *_, d in g.nx.edges(data=True):
        if d.get("kind") == "match" and d.get("log10_lr") is not None:
            key = (d.get("calibration_sha256") or "not recorded", d.get("calibration_origin") or "not recorded")
            used[key] = used.get(key, 0) + 1
            if d.get("marks_calibration_sha256"):  # the marks' calibration, fused with the breech face's
                key = (d["marks_calibration_sha256"], f"marks: {d.get('marks_calibration_origin')}")
                used[key] = used.get(key, 0) + 1
    return [
        {"calibration sha256": sha, "calibration and origin": origin, "comparisons": n}
        for (sha, origin), n in sorted(used.items())
    ]


def _mark_rows(g) -> Iterable[dict]:
    """One row per comparison whose other marks were weighed (`ballistix.fusion`), strongest fused LR first:
    each mark's own LR beside the fused one, and what was fused."""
    rows = [
        (u, v, d)
        for u, v, d in g.nx.edges(data=True)
        if d.get("kind") == "match" and any(d.get(k) is not None for k in MARK_EDGE_KEYS[1:])
    ]
    rows.sort(key=lambda r: (-(r[2].get("log10_lr") if r[2].get("log10_lr") is not None else -math.inf), r[0], r[1]))
    for u, v, d in rows:
        yield {
            "a": g.nx.nodes[u]["id"],
            "b": g.nx.nodes[v]["id"],
            "CMC": d.get("cmc_count"),
            "breech face LR": _lr(d.get("breech_face_log10_lr")),
            "firing pin LR": _lr(d.get("firing_pin_log10_lr")),
            "aperture shear LR": _lr(d.get("aperture_shear_log10_lr")),
            "fused LR": _lr(d.get("log10_lr")) if d.get("lr_basis", "").startswith("fused") else "-",
            "basis": d.get("lr_basis") or "the breech face alone (the marks add nothing to fuse)",
        }


def _decision_rows(g, decisions: Iterable[dict] | None) -> Iterable[dict]:
    """The rows of the decisions table: the store's current decisions or, for a bare graph, those its
    match edges carry."""
    if decisions is not None:
        for d in decisions:
            yield {
                "a": d["exhibit_a"],
                "b": d["exhibit_b"],
                "verdict": d["verdict"],
                "examiner": d["examiner"],
                "reason": d["reason"],
                "when (UTC)": d["created_utc"],
                "earlier decisions": d["earlier"],
            }
        return
    rows = []
    for u, v, d in g.nx.edges(data=True):
        if d.get("kind") == "match" and d.get("verdict"):
            a, b = sorted((g.nx.nodes[u]["id"], g.nx.nodes[v]["id"]))
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "verdict": d["verdict"],
                    "examiner": d.get("examiner"),
                    "when (UTC)": d.get("decided_utc"),
                }
            )
    yield from sorted(rows, key=lambda r: (str(r["when (UTC)"]), r["a"], r["b"]))


#: Rows a table of the report shows; a longer table shows its first rows, and all of them go to a
#: CSV file beside the report (``<report>-tables/<table>.csv``), linked below the table.
REPORT_ROWS = 500
#: Guns the timeline figure draws at most (largest groups first); all of them are in the groups table.
TIMELINE_ROWS = 60
_TABLES = (
    "leads",
    "groups",
    "scene_links",
    "unrecovered",
    "trafficking_routes",
    "contexts",
    "candidates",
    "marks",
    "weak_links",
    "decisions",
    "calibrations",
    "failures",
    "imports",
)


def _import_rows(imports: Iterable[dict]) -> Iterable[dict]:
    """The rows of the imports table (`CaseStore.imports`)."""
    for d in imports:
        s = d.get("summary") or {}
        lab = (s.get("lab") or {}).get("id")
        yield {
            "file": d["source_name"],
            "kind": d["kind"] + (f" from {lab}" if lab else ""),
            "sha256": d["sha256"],
            "rows": d["rows"],
            "added": d["added"],
            "updated": d["updated"],
            "by": d["created_by"],
            "when": d["created_utc"],
        }


def _csv_cell(v) -> str:
    """A value as a CSV cell: lists joined with "; ", None empty, and text a spreadsheet would run as
    a formula behind an apostrophe (`ballistix.store.casedata.guard_cell`: not plain numbers)."""
    if v is None:
        return ""
    if isinstance(v, (list, tuple, set)):
        v = "; ".join(map(str, v))
    if isinstance(v, str):
        return guard_cell(safe_text(v))  # as the case-data tables' export guards them (`casedata.guard_cell`)
    return str(v)


class _Tables:
    """The report's tables: short ones whole, long ones as their first `REPORT_ROWS` rows plus a
    CSV file of every row, written row by row."""

    def __init__(self, path: Path, max_rows: int, links: Mapping | None = None):
        self.folder = path.with_name(path.stem + "-tables")
        self.max_rows = max_rows
        self.links = dict(links or {})
        self.written: list[Path] = []
        self.long: list[str] = []

    def show(self, name: str, rows: Iterable[dict], empty: str = "none", **kw) -> str:
        assert name in _TABLES
        if name in self.links:
            kw["link"] = self.links[name]
        rows = iter(rows)
        head = list(itertools.islice(rows, self.max_rows + 1))
        if len(head) <= self.max_rows:
            return table(head, empty, **kw)
        csv_path = self.folder / f"{name}.csv"
        self.folder.mkdir(parents=True, exist_ok=True)
        n = 0
        with atomic_file(csv_path) as f:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            try:
                w = csv.writer(text)
                w.writerow(list(head[0]))
                for r in itertools.chain(head, rows):
                    w.writerow([_csv_cell(v) for v in r.values()])
                    n += 1
            finally:
                text.flush()
                text.detach()  # atomic_file closes the file
        self.written.append(csv_path)
        self.long.append(name)
        href = urllib.parse.quote(f"{self.folder.name}/{csv_path.name}")
        return table(head[: self.max_rows], empty, **kw) + (
            f"<p class='muted'>The first {self.max_rows:,} of {n:,} rows; all of them: "
            f"<a href='{escape(href)}'>{escape(self.folder.name)}/{escape(csv_path.name)}</a> (CSV).</p>"
        )

    def remove_stale(self) -> None:
        """The tables' CSV files an earlier report left and this one did not write (short now)."""
        for name in _TABLES:
            old = self.folder / f"{name}.csv"
            if old not in self.written and old.is_file():
                old.unlink()


def write_report(
    store,
    path,
    *,
    since: str | None = None,
    max_rows: int = REPORT_ROWS,
    comparisons: str = "auto",
    links: Mapping | None = None,
) -> Path:
    """Write the store's report to ``path`` (one self-contained HTML file; figures inline).

    ``since`` (ISO date or time): exhibits ingested from then on are the new
    ones whose leads head the report; default: the latest day of ingest.
    Links follow the store's decision rule (`CaseStore.decision_rule`), named
    at the top; comparisons no calibration applies to are listed for review.
    Tables longer than ``max_rows`` show their first rows; every row goes to a CSV
    file in ``<report name>-tables/`` beside the report (see `write_graph_report`).
    ``comparisons``: those of the store's graph (`CaseStore.graph`); a graph of the
    evidence only says at the top what it left out. ``links``: as for `write_graph_report`.
    """
    check_since(since)
    g = store.graph(comparisons=comparisons)
    db = store._db  # the new exhibits' ids only: a store of a million exhibits is not read whole
    if since is None:
        (latest,) = db.execute("SELECT max(created_utc) FROM exhibits").fetchone()
        since = latest[:10] if latest else None
    new = (
        [e for (e,) in db.execute("SELECT exhibit_id FROM exhibits WHERE created_utc >= ? ORDER BY rowid", (since,))]
        if since
        else []
    )
    return write_graph_report(
        g,
        path,
        new_exhibits=new,
        since=since,
        source=str(store.folder),
        rule=store.decision_rule,
        failures=store.failures(),
        decisions=store.decisions(current=True),
        imports=store.imports(),
        max_rows=max_rows,
        links=links,
    )


def write_graph_report(
    g,
    path,
    *,
    new_exhibits: Iterable[str] = (),
    since: str | None = None,
    source: str = "",
    rule: dict | None = None,
    failures: Iterable[dict] = (),
    decisions: Iterable[dict] | None = None,
    max_rows: int = REPORT_ROWS,
    links: Mapping | None = None,
    imports: Iterable[dict] | None = None,
) -> Path:
    """Write the report of a `LinkageGraph` to ``path``: leads, same-gun groups, scene timeline and
    links, unrecovered guns, tracing (SDG 16.4.2), review lists, examiners' decisions, calibrations.

    `write_report` calls it for a store. For a large graph the HTML stays a few MB: a table
    of more than ``max_rows`` rows shows its first rows (the strongest leads, the largest
    groups, the scene pairs sharing most guns, ...), and all its rows go, row by row, to
    ``<report name>-tables/<table>.csv`` beside the report, linked below the table; the
    timeline draws the `TIMELINE_ROWS` largest linked guns. CSV cells: lists joined with
    "; ", text a spreadsheet would run as a formula behind an apostrophe.

    Parameters
    ----------
    g : LinkageGraph
    path : str or Path
        The HTML file (written atomically, as each CSV file).
    new_exhibits : iterable of str
        The exhibits whose leads head the report.
    since : str, optional
        Shown in the leads heading ("new exhibits since ...").
    source : str
        What the report is about (the store's folder), shown under the title.
    rule : dict, optional
        The store's decision rule record (`CaseStore.decision_rule`): who set a count rule, when, why.
    failures : list of dict
        Files that could not be ingested (source, reason, created_utc).
    decisions : list of dict, optional
        The examiners' current decisions (`CaseStore.decisions` with ``current=True``: pair,
        verdict, examiner, reason, time, how many earlier decisions of the pair each superseded).
        Default: those the graph's edges carry (verdict, examiner, time; no reason).
    max_rows : int
        Rows a table shows before the rest goes to its CSV file.
    links : mapping, optional
        Table name (``leads``, ``groups``, ``candidates``, ``weak_links``, ``decisions``, ...) to
        ``(header, text, href)``: the table gets a last column whose cells link to ``href(row)``
        (a URL or None), shown as ``text`` (the review app links rows to its comparison pages;
        the CSV files are unchanged).
    imports : list of dict, optional
        The files imported into the store (`CaseStore.imports`): listed with their kind, SHA-256
        (shortened on the page, whole in its title and in the CSV file), rows, who and when.
        Default: no such section (a bare graph has no imports).

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import ballistix as bx, tempfile, pathlib
    >>> from ballistix.store.report import write_graph_report
    >>> g = bx.LinkageGraph.from_comparisons([("A", "B", {"cmc_count": 24, "log10_lr": 3.0})])
    >>> write_graph_report(g, pathlib.Path(tempfile.mkdtemp()) / "report.html", new_exhibits=["B"]).name
    'report.html'
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ParameterError(f"max_rows must be a positive number of table rows, got {max_rows!r}")
    rule, failures = rule or {}, list(failures)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = _Tables(path, max_rows, links)
    n = Counter(kind for _, kind in g.nx.nodes(data="kind"))
    leads = g.leads(new_exhibits)
    groups = list(iter_group_summaries(g, min_size=2))
    ind = g.indicator_16_4_2()
    flows = [{"origin": o, "recovered in": r, "firearms": k} for (o, r), k in g.trafficking_flows().items()]
    context = [{"context": c, **v} for c, v in g.counts_by_context().items()]
    value = f"{ind['value']:.0%}" if ind["firearms"] else "-"
    pairs = sorted(scene_pairs(g).items(), key=lambda kv: (-len(kv[1]), kv[0]))
    n_links = len(pairs)
    sections = [
        f"<h2>Leads: new exhibits{' since ' + escape(since) if since else ''}</h2>",
        tables.show(
            "leads",
            (
                {
                    "exhibit": r["exhibit"],
                    "scene": r["scene"],
                    "kind": r["kind"],
                    "firearm": r["firearm"],
                    "linked scenes": r["linked_scenes"],
                    "linked exhibits": r["linked_exhibits"],
                    "best CMC": r["best_cmc"],
                    "best LR": _lr(r["best_log10_lr"]),
                }
                for r in leads
            ),
            "no new links",
        ),
        "<p class='muted'>Leads are investigative aids from automated comparisons: each needs an examiner's "
        "confirmation before it is evidence. LR: the calibrated likelihood ratio of the strongest comparison "
        "(same gun against different guns; see docs/evidence.md), '-' where no calibration applies to the "
        "store's settings.</p>",
        "<h2>Same-gun groups</h2>",
        tables.show(
            "groups",
            (
                {
                    "gun": s["group"],
                    "exhibits": len(s["exhibits"]),
                    "scenes": s["scenes"],
                    "from": s["first_date"],
                    "to": s["last_date"],
                    "places": s["places"],
                    "contexts": s["contexts"],
                    "firearm": s["firearm"]
                    or ("conflict: " + ", ".join(s["firearm_conflict"]) if s["firearm_conflict"] else "not recovered"),
                }
                for s in groups
            ),
        ),
        "<h2>Scene timeline</h2>",
        _timeline_figure(g, groups) or "<p class='muted'>no linked guns</p>",
        "<h2>Scene links</h2>",
        tables.show(
            "scene_links",
            ({"scene a": a, "scene b": b, "shared guns": len(k)} for (a, b), k in pairs),
            "no scene shares a gun with another",
        ),
        "<h2>Guns seen at scenes, not recovered (including guns seen once)</h2>",
        tables.show(
            "unrecovered",
            (
                {
                    "gun": s["group"],
                    "scenes": s["scenes"],
                    "first": s["first_date"],
                    "last": s["last_date"],
                    "places": s["places"],
                }
                for s in iter_unrecovered_guns(g)
            ),
        ),
        "<h2>Tracing (SDG indicator 16.4.2)</h2>",
        f"<p class='big'>{escape(value)}</p>",
        f"<p>{ind['traced']} of {ind['firearms']} seized, found or surrendered firearms have their illicit origin "
        f"or context traced.</p>",
        _tracing_figure(ind) or "",
        "<h3>Origin to recovery (trafficking routes)</h3>",
        tables.show("trafficking_routes", flows),
        "<h3>By context</h3>",
        tables.show("contexts", context),
        "<h2>Review: candidates that are not links</h2>",
        "<p class='muted'>Comparisons that no calibration applies to (no LR: the CMC count alone decides "
        "nothing), or whose LR is above 1 but below the link rule. For an examiner; never a link until "
        "confirmed.</p>",
        tables.show(
            "candidates",
            (
                {"a": c["a"], "b": c["b"], "CMC": c["cmc_count"], "LR": _lr(c["log10_lr"]), "why": c["why"]}
                for c in g.candidates()
            ),
            "none",
        ),
        "<h2>Other marks: firing pin and aperture shear</h2>",
        "<p class='muted'>Comparisons whose firing-pin impression or aperture shear was weighed by a marks "
        "calibration and fused with the breech face (logistic fusion fitted on reference pairs: the marks are "
        "not independent, so their LRs are never multiplied). The fused LR is the comparison's LR everywhere in "
        "this report. A mark shown '-' was absent from a scan, not usable, or not weighed: no evidence either "
        "way. Marks are compared only in a store that extracts them (<code>ballistix ingest --marks</code>), "
        "and weighed only where a marks calibration applies to both scans (the shipped one: simulated scans "
        "only; see docs/comparison.md).</p>",
        tables.show("marks", _mark_rows(g), "no comparison's other marks were weighed"),
        "<h2>Review: links cut by the chaining rule</h2>",
        tables.show("weak_links", g.weak_links(), "none: no group rests on a single link between two sets of exhibits"),
        "<h2>Examiners' decisions</h2>",
        "<p class='muted'>The current decision on each comparison an examiner ruled on, from the store's "
        "append-only log: a decision is never changed, only superseded by a later one (counted here). An "
        "identification is a link whatever the LR, an elimination never is; an inconclusive comparison is "
        "neither, and stays a candidate for review.</p>",
        tables.show("decisions", _decision_rows(g, decisions), "no examiner has ruled on a comparison"),
        "<h2>Calibrations behind the likelihood ratios</h2>",
        "<p class='muted'>Only calibrations shipped with ballistix (checksums pinned in its code) or registered "
        "in this store weigh its comparisons; each LR above names the one it came from.</p>",
        tables.show("calibrations", _calibrations_used(g), "no comparison has a likelihood ratio"),
    ]
    if failures:
        sections += ["<h2>Files that could not be ingested</h2>", tables.show("failures", failures)]
    if imports is not None:
        sections += [
            "<h2>Files imported</h2>",
            "<p class='muted'>Case-data tables and other labs' bundles of exhibits imported into the store, "
            "oldest first, from its append-only log; the SHA-256 of each file as it was read (whole in the "
            "cell's tooltip).</p>",
            tables.show("imports", _import_rows(imports), "no file has been imported", short={"sha256": 12}),
        ]
    head = [
        f"<h1>Case store report</h1><p class='muted'>{escape(source)} &middot; generated "
        f"{_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} &middot; ballistix {__version__} "
        f"&middot; links: {escape(g.decision_rule())}"
        + (
            f" (set by {escape(rule.get('set_by'))} on {escape(rule.get('set_utc'))}: {escape(rule.get('reason'))})"
            if rule.get("count_rule") is not None
            else ""
        )
        + "</p>",
        f"<p>{n['exhibit']} exhibits, {n['scene']} scenes, {n['firearm']} recovered firearms; "
        f"{len(groups)} same-gun groups of two or more exhibits; {n_links} scene links.</p>",
    ]
    kept = g.nx.graph
    if kept.get("comparisons") == "evidence":
        recorded, left = kept.get("comparisons_recorded", 0), kept.get("comparisons_left_out", 0)
        head.append(
            f"<p class='muted'>Of the {recorded:,} comparisons recorded, this report's graph keeps the "
            f"{recorded - left:,} that an analysis uses (links, candidates for review, examiner verdicts) and "
            f"leaves out {left:,} eliminations (compared, no link): each exhibit's count of them is in the "
            f"graph ({escape('comparisons_left_out')}); the calibrations table counts the comparisons kept.</p>"
        )
    if tables.long:
        head.append(
            f"<p class='muted'>A large store: tables show their first {max_rows:,} rows (strongest leads, "
            f"largest groups, scene pairs sharing most guns first); every row of "
            f"{', '.join(escape(t.replace('_', ' ')) for t in tables.long)} is in the CSV files in "
            f"{escape(tables.folder.name)}/ beside this report.</p>"
        )
    tables.remove_stale()
    doc = page("ballistix report", "".join(head + sections))
    with atomic_file(path) as f:
        f.write(doc.encode("utf-8"))
    return path
