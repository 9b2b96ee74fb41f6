"""The case store's HTML report: leads, same-gun groups, scene timeline, tracing figures, in one offline file."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .._files import atomic_file
from .._html import BLUE, GREEN, LIGHT, escape, page, png, table
from .._records import check_since
from .._version import __version__

__all__ = ["write_report"]


def _png(fig) -> str:
    return png(fig, dpi=110)


def _date(value) -> _dt.date | None:
    """A record's date, or None where there is none or it is no date (stores written before dates
    were checked at the door may hold one; the report leaves it off the timeline, never fails)."""
    try:
        return _dt.date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _timeline_figure(g, groups) -> str | None:
    import matplotlib
    import matplotlib.dates
    import matplotlib.pyplot as plt

    rows = [(k, s) for k, s in enumerate(groups) if len(s["scenes"]) >= 2 or s["firearm"]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    for y, (_, s) in enumerate(rows):
        dates = [d for d in (_date(g.node("scene", sc).get("date")) for sc in s["scenes"]) if d]
        if dates:
            ax.plot(dates, [y] * len(dates), "o-", color=BLUE)
        if s["firearm"]:
            rd = _date(g.node("firearm", s["firearm"]).get("recovery_date"))
            if rd:
                ax.plot([rd], [y], "^", color=GREEN, ms=9)
    ax.set_yticks(
        range(len(rows)),
        [f"gun {s['group']}" + (f" ({s['firearm']})" if s["firearm"] else "") for _, s in rows],
        fontsize=8,
        parse_math=False,
        usetex=False,
    )  # firearm ids drawn as typed: "$x$" is no formula
    ax.set_ylim(len(rows) - 0.4, -0.6)  # gun 0 on top, as in the groups table; room for the markers
    ax.set_title("scenes of each linked gun (circles) and its recovery (triangle)", fontsize=10)
    locator = matplotlib.dates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    return _png(fig)


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
    return [
        {"calibration sha256": sha, "calibration and origin": origin, "comparisons": n}
        for (sha, origin), n in sorted(used.items())
    ]


def write_report(store, path, *, since: str | None = None) -> Path:
    """Write the store's report to ``path`` (one self-contained HTML file; figures inline).

    ``since`` (ISO date or time): exhibits ingested from then on are the new
    ones whose leads head the report; default: the latest day of ingest.
    Links follow the store's decision rule (`CaseStore.decision_rule`), named
    at the top; comparisons no calibration applies to are listed for review.
    """
    check_since(since)
    g = store.graph()
    rule = store.decision_rule
    exhibits = store.exhibits()
    if since is None and exhibits:
        since = max(e["created_utc"] for e in exhibits)[:10]
    new = [e["exhibit_id"] for e in exhibits if since and e["created_utc"] >= since]
    leads = g.leads(new)
    groups = g.group_summaries(min_size=2)
    ind = g.indicator_16_4_2()
    flows = [{"origin": o, "recovered in": r, "firearms": n} for (o, r), n in g.trafficking_flows().items()]
    context = [{"context": c, **v} for c, v in g.counts_by_context().items()]
    unrec = [
        {
            "gun": s["group"],
            "scenes": s["scenes"],
            "first": s["first_date"],
            "last": s["last_date"],
            "places": s["places"],
        }
        for s in g.unrecovered_guns()
        if s["scenes"]
    ]
    value = f"{ind['value']:.0%}" if ind["firearms"] else "-"
    sl = g.scene_links()
    links = [{"scene a": a, "scene b": b, "shared guns": d["weight"]} for a, b, d in sorted(sl.edges(data=True))]
    parts = [
        f"<h1>Case store report</h1><p class='muted'>{escape(store.folder)} &middot; generated "
        f"{_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} &middot; ballistix {__version__} "
        f"&middot; links: {escape(g.decision_rule())}"
        + (
            f" (set by {escape(rule.get('set_by'))} on {escape(rule.get('set_utc'))}: {escape(rule.get('reason'))})"
            if rule.get("count_rule") is not None
            else ""
        )
        + "</p>",
        f"<p>{len(exhibits)} exhibits, {len(g.ids('scene'))} scenes, {len(g.ids('firearm'))} recovered firearms; "
        f"{len(groups)} same-gun groups of two or more exhibits; {sl.number_of_edges()} scene links.</p>",
        f"<h2>Leads: new exhibits since {escape(since)}</h2>",
        table(
            [
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
            ],
            "no new links",
        ),
        "<p class='muted'>Leads are investigative aids from automated comparisons: each needs an examiner's "
        "confirmation before it is evidence. LR: the calibrated likelihood ratio of the strongest comparison "
        "(same gun against different guns; see docs/evidence.md), '-' where no calibration applies to the "
        "store's settings.</p>",
        "<h2>Same-gun groups</h2>",
        table(
            [
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
            ]
        ),
        "<h2>Scene timeline</h2>",
        _timeline_figure(g, groups) or "<p class='muted'>no linked guns</p>",
        "<h2>Scene links</h2>",
        table(links, "no scene shares a gun with another"),
        "<h2>Guns seen at scenes, not recovered (including guns seen once)</h2>",
        table(unrec),
        "<h2>Tracing (SDG indicator 16.4.2)</h2>",
        f"<p class='big'>{escape(value)}</p>",
        f"<p>{ind['traced']} of {ind['firearms']} seized, found or surrendered firearms have their illicit origin "
        f"or context traced.</p>",
        _tracing_figure(ind) or "",
        "<h3>Origin to recovery (trafficking routes)</h3>",
        table(flows),
        "<h3>By context</h3>",
        table(context),
        "<h2>Review: candidates that are not links</h2>",
        "<p class='muted'>Comparisons that no calibration applies to (no LR: the CMC count alone decides "
        "nothing), or whose LR is above 1 but below the link rule. For an examiner; never a link until "
        "confirmed.</p>",
        table(
            [
                {"a": c["a"], "b": c["b"], "CMC": c["cmc_count"], "LR": _lr(c["log10_lr"]), "why": c["why"]}
                for c in g.candidates()[:200]
            ],
            "none",
        ),
        "<h2>Review: links cut by the chaining rule</h2>",
        table(g.weak_links(), "none: no group rests on a single link between two sets of exhibits"),
        "<h2>Calibrations behind the likelihood ratios</h2>",
        "<p class='muted'>Only calibrations shipped with ballistix (checksums pinned in its code) or registered "
        "in this store weigh its comparisons; each LR above names the one it came from.</p>",
        table(_calibrations_used(g), "no comparison has a likelihood ratio"),
    ]
    if store.failures():
        parts += ["<h2>Files that could not be ingested</h2>", table(store.failures())]
    doc = page("ballistix report", "".join(parts))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(doc.encode("utf-8"))
    return path
