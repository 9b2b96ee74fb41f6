"""What analysts ask of a `LinkageGraph`: group summaries, scene links, timelines, leads, tracing figures.

Plain functions over the graph (``g``); `LinkageGraph` exposes each as a method.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable

import networkx as nx

from ..errors import ParameterError

__all__ = [
    "group_summaries",
    "scene_links",
    "scene_connection",
    "timeline",
    "leads",
    "indicator_16_4_2",
    "counts_by_context",
    "trafficking_flows",
    "unrecovered_guns",
]

TRACEABLE = ("seized", "found", "surrendered")


def _scene(g, sid):
    return g.nx.nodes[f"scene:{sid}"]


def group_summaries(g, min_size: int = 1) -> list[dict]:
    """One record per same-gun group: its exhibits, scenes, date span, places, contexts, and
    the recovered firearm when one of its test fires belongs to it."""
    out = []
    for k, members in enumerate(g.groups()):
        if len(members) < min_size:
            continue
        scenes = sorted({s for e in members if (s := g.scene_of(e)) is not None})
        guns = sorted({f for e in members if (f := g.firearm_of(e)) is not None})
        info = [_scene(g, s) for s in scenes]
        dates = sorted(d["date"] for d in info if d.get("date"))
        out.append(
            {
                "group": k,
                "exhibits": sorted(members),
                "scenes": scenes,
                "first_date": dates[0] if dates else None,
                "last_date": dates[-1] if dates else None,
                "places": sorted({d["place"] for d in info if d.get("place")}),
                "contexts": sorted({d["context"] for d in info if d.get("context")}),
                "firearm": guns[0] if len(guns) == 1 else None,
                "firearm_conflict": guns if len(guns) > 1 else None,
            }
        )
    return out


def scene_links(g) -> nx.Graph:
    """Scene-scene graph: an edge where one same-gun group has exhibits at both scenes,
    ``weight`` = number of such groups (guns), ``groups`` = their indices."""
    sg = nx.Graph()
    for sid in g.ids("scene"):
        sg.add_node(sid, **{k: v for k, v in _scene(g, sid).items() if k not in ("kind", "id")})
    for k, members in enumerate(g.groups(min_size=2)):
        scenes = sorted({s for e in members if (s := g.scene_of(e)) is not None})
        for a, b in itertools.combinations(scenes, 2):
            if sg.has_edge(a, b):
                sg.edges[a, b]["weight"] += 1
                sg.edges[a, b]["groups"].append(k)
            else:
                sg.add_edge(a, b, weight=1, groups=[k])
    return sg


def scene_connection(g, a: str, b: str) -> list[dict] | None:
    """How scene ``a`` connects to scene ``b``: the hops of a shortest path in the scene graph
    (fewest hops, then most shared guns), each with the groups that make it; None if unconnected."""
    sg = scene_links(g)
    for s in (a, b):
        if s not in sg:
            raise ParameterError(f"no scene {s!r} in the graph")
    try:
        path = nx.shortest_path(sg, a, b, weight=lambda u, v, d: 1.0 + 1e-3 / d["weight"])
    except nx.NetworkXNoPath:
        return None
    return [
        {"from": u, "to": v, "shared_guns": sg.edges[u, v]["weight"], "groups": sg.edges[u, v]["groups"]}
        for u, v in zip(path, path[1:])
    ]


def timeline(g, exhibit: str) -> list[dict]:
    """The use of one gun over time: the scenes of the group holding ``exhibit``, by date, and
    the recovery of its firearm if known."""
    members = g.group_of(exhibit)
    events = []
    by_scene = defaultdict(list)
    for e in members:
        s = g.scene_of(e)
        if s is not None:
            by_scene[s].append(e)
    for s, ex in by_scene.items():
        d = _scene(g, s)
        events.append(
            {
                "date": d.get("date"),
                "event": "scene",
                "scene": s,
                "place": d.get("place"),
                "context": d.get("context"),
                "exhibits": sorted(ex),
            }
        )
    for f in sorted({f for e in members if (f := g.firearm_of(e)) is not None}):
        d = g.nx.nodes[f"firearm:{f}"]
        events.append(
            {
                "date": d.get("recovery_date"),
                "event": f"firearm {d.get('status', 'recovered')}",
                "firearm": f,
                "place": d.get("recovery_place"),
                "exhibits": [],
            }
        )
    return sorted(events, key=lambda e: (e["date"] or "9999", e["event"]))


def leads(g, new_exhibits: Iterable[str]) -> list[dict]:
    """New links that new exhibits make, ranked for investigators (like a network's lead report).

    For each new exhibit whose gun (same-gun group) was also seen at another
    scene, or, for a scene exhibit, whose gun was recovered: the other exhibits of that gun, the
    other scenes (open cases) it connects, the firearm if a test fire is in
    the group, and the strongest CMC count and calibrated likelihood ratio
    (log10; None when no comparison carries one) to another exhibit. New exhibits
    may link to each other (a first report of a new store has only new
    ones). Ranked: firearm hits first, then the number of other scenes, then
    the likelihood ratio, then the CMC count.
    """
    new = [str(e) for e in new_exhibits]
    links = g.link_graph()
    out = []
    for e in new:
        if f"exhibit:{e}" not in g.nx:
            raise ParameterError(f"no exhibit {e!r} in the graph")
        others = sorted(g.group_of(e) - {e})
        own = g.scene_of(e)
        scenes = sorted({s for x in others if (s := g.scene_of(x)) is not None} - {own})
        guns = sorted({f for x in others + [e] if (f := g.firearm_of(x)) is not None})
        if not scenes and not (guns and own is not None):
            continue  # links within one scene, or test fires of one gun: nothing new for an investigator
        edges = [links.edges[e, x] for x in others if links.has_edge(e, x)]
        lrs = [d["log10_lr"] for d in edges if d.get("log10_lr") is not None]
        out.append(
            {
                "exhibit": e,
                "scene": own,
                "linked_exhibits": others,
                "linked_scenes": scenes,
                "firearm": guns[0] if len(guns) == 1 else None,
                "best_cmc": max((d.get("cmc_count") or 0 for d in edges), default=0),
                "best_log10_lr": max(lrs, default=None),
                "kind": "firearm hit" if guns else "scene link",
            }
        )
    return sorted(
        out,
        key=lambda r: (
            r["firearm"] is None,
            -len(r["linked_scenes"]),
            -(r["best_log10_lr"] if r["best_log10_lr"] is not None else -math.inf),
            -r["best_cmc"],
            r["exhibit"],
        ),
    )


def indicator_16_4_2(g) -> dict:
    """SDG indicator 16.4.2: the share of seized, found or surrendered firearms whose illicit
    origin or context has been traced or established (``tracing_status == "traced"``)."""
    guns = [d for _, d in g.nx.nodes(data=True) if d["kind"] == "firearm" and d.get("status") in TRACEABLE]
    traced = [d for d in guns if d.get("tracing_status") == "traced"]
    by_status = {
        s: {"firearms": sum(d["status"] == s for d in guns), "traced": sum(d["status"] == s for d in traced)}
        for s in TRACEABLE
    }
    return {
        "value": len(traced) / len(guns) if guns else float("nan"),
        "traced": len(traced),
        "firearms": len(guns),
        "by_status": by_status,
        "not_traced": dict(
            Counter(d.get("tracing_status") or "unknown" for d in guns if d.get("tracing_status") != "traced")
        ),
    }


def counts_by_context(g) -> dict[str, dict]:
    """Per scene context: scenes, scenes linked to another scene by a gun, and guns (groups) involved."""
    sg = scene_links(g)
    out: dict[str, dict] = {}
    groups_at = defaultdict(set)
    for k, members in enumerate(g.groups()):
        for e in members:
            s = g.scene_of(e)
            if s is not None:
                groups_at[s].add(k)
    for sid in g.ids("scene"):
        c = _scene(g, sid).get("context") or "unknown"
        r = out.setdefault(c, {"scenes": 0, "linked_scenes": 0, "guns": set()})
        r["scenes"] += 1
        r["linked_scenes"] += sg.degree(sid) > 0
        r["guns"] |= groups_at[sid]
    return {c: {**r, "guns": len(r["guns"])} for c, r in sorted(out.items())}


def trafficking_flows(g) -> dict[tuple[str, str], int]:
    """Recovered firearms by (origin country, recovery country): the routes of trafficking."""
    flows = Counter()
    for _, d in g.nx.nodes(data=True):
        if d["kind"] == "firearm" and d.get("origin_country") and d.get("recovery_country"):
            flows[d["origin_country"], d["recovery_country"]] += 1
    return dict(sorted(flows.items(), key=lambda kv: (-kv[1], kv[0])))


def unrecovered_guns(g) -> list[dict]:
    """Guns seen at scenes but not recovered: groups with scene exhibits and no test fire,
    most scenes first."""
    rows = [s for s in group_summaries(g) if s["scenes"] and s["firearm"] is None and not s["firearm_conflict"]]
    return sorted(rows, key=lambda s: (-len(s["scenes"]), s["first_date"] or "", s["group"]))
