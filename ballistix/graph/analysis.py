"""What analysts ask of a `LinkageGraph`: group summaries, scene links, timelines, leads, tracing figures.

Plain functions over the graph (``g``); `LinkageGraph` exposes each as a method.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

import networkx as nx

from ..errors import ParameterError

__all__ = [
    "group_summaries",
    "iter_group_summaries",
    "scene_links",
    "scene_pairs",
    "scene_connection",
    "timeline",
    "leads",
    "indicator_16_4_2",
    "counts_by_context",
    "trafficking_flows",
    "unrecovered_guns",
    "iter_unrecovered_guns",
]

TRACEABLE = ("seized", "found", "surrendered")


def _scene(g, sid):
    return g.nx.nodes[f"scene:{sid}"]


def _origins(g, members) -> tuple[set[str], set[str]]:
    """The scenes and the firearms (test fires) of a group's exhibits, each exhibit's
    neighbours read once (`scene_of` and `firearm_of` each read them all)."""
    nodes, adj = g.nx.nodes, g.nx.adj
    scenes, guns = set(), set()
    for e in members:
        for nb in adj[f"exhibit:{e}"]:
            d = nodes[nb]
            if d["kind"] == "scene":
                scenes.add(d["id"])
            elif d["kind"] == "firearm":
                guns.add(d["id"])
    return scenes, guns


def _summary(g, k: int, members) -> dict:
    scenes, guns = (sorted(x) for x in _origins(g, members))
    info = [_scene(g, s) for s in scenes]
    dates = sorted(d["date"] for d in info if d.get("date"))
    return {
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


def iter_group_summaries(g, min_size: int = 1) -> Iterator[dict]:
    """`group_summaries`, one at a time (for a store of a million exhibits: a million groups).

    Groups come largest first, so only the groups of ``min_size`` or more are visited.
    """
    for k, members in enumerate(g._sorted_groups()):
        if len(members) < min_size:
            return
        yield _summary(g, k, members)


def group_summaries(g, min_size: int = 1) -> list[dict]:
    """One record per same-gun group: its exhibits, scenes, date span, places, contexts, and
    the recovered firearm when one of its test fires belongs to it.

    ``group`` is the group's index in `LinkageGraph.groups` (largest first); ``min_size``
    leaves out smaller groups.
    """
    return list(iter_group_summaries(g, min_size))


def scene_pairs(g) -> dict[tuple[str, str], list[int]]:
    """Pairs of scenes that a same-gun group links: ``{(scene a, scene b): [group indices]}``, ids in
    order within a pair, groups as `LinkageGraph.groups` numbers them. `scene_links` without the
    scenes that share no gun (what a report of a million exhibits can hold)."""
    pairs: dict[tuple[str, str], list[int]] = {}
    for k, members in enumerate(g._sorted_groups()):
        if len(members) < 2:
            break
        scenes = sorted({s for e in members if (s := g.scene_of(e)) is not None})
        for pair in itertools.combinations(scenes, 2):
            pairs.setdefault(pair, []).append(k)
    return pairs


def scene_links(g) -> nx.Graph:
    """Scene-scene graph: an edge where one same-gun group has exhibits at both scenes,
    ``weight`` = number of such groups (guns), ``groups`` = their indices. Every scene is a
    node, with its attributes."""
    sg = nx.Graph()
    for sid in g.ids("scene"):
        sg.add_node(sid, **{k: v for k, v in _scene(g, sid).items() if k not in ("kind", "id")})
    for (a, b), groups in scene_pairs(g).items():
        sg.add_edge(a, b, weight=len(groups), groups=groups)
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
    linked = {s for pair in scene_pairs(g) for s in pair}
    out: dict[str, dict] = {}
    for _, d in g.nx.nodes(data=True):
        if d["kind"] == "scene":
            r = out.setdefault(d.get("context") or "unknown", {"scenes": 0, "linked_scenes": 0, "guns": 0})
            r["scenes"] += 1
            r["linked_scenes"] += d["id"] in linked
    for members in g._sorted_groups():  # a gun counts once in each context it was seen in
        contexts = {_scene(g, s).get("context") or "unknown" for e in members if (s := g.scene_of(e)) is not None}
        for c in contexts:
            out[c]["guns"] += 1
    return dict(sorted(out.items()))


def trafficking_flows(g) -> dict[tuple[str, str], int]:
    """Recovered firearms by (origin country, recovery country): the routes of trafficking."""
    flows = Counter()
    for _, d in g.nx.nodes(data=True):
        if d["kind"] == "firearm" and d.get("origin_country") and d.get("recovery_country"):
            flows[d["origin_country"], d["recovery_country"]] += 1
    return dict(sorted(flows.items(), key=lambda kv: (-kv[1], kv[0])))


def iter_unrecovered_guns(g) -> Iterator[dict]:
    """`unrecovered_guns`, one at a time: only the sort keys of all groups are held, never all
    their summaries at once."""
    groups = g._sorted_groups()
    keys = []
    for k, members in enumerate(groups):
        scenes, guns = _origins(g, members)
        if scenes and not guns:
            dates = [d for s in scenes if (d := _scene(g, s).get("date"))]
            keys.append((-len(scenes), min(dates) if dates else "", k))
    keys.sort()
    for *_, k in keys:
        yield _summary(g, k, groups[k])


def unrecovered_guns(g) -> list[dict]:
    """Guns seen at scenes but not recovered: groups with scene exhibits and no test fire,
    most scenes first (then the earliest first date), as `group_summaries` records."""
    return list(iter_unrecovered_guns(g))
