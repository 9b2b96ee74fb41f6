"""`LinkageGraph`: exhibits, scenes, firearms and the comparisons between exhibits, in one NetworkX graph.

Nodes (key ``"<kind>:<id>"``, attributes ``kind`` and ``id`` plus the rest):

- ``exhibit``: a cartridge case from a scene or a test fire (``sha256``,
  ``calibre``, ``date``, ...);
- ``scene``: an incident (``date``, ``place``, ``lat``, ``lon``, ``context``);
- ``firearm``: a recovered gun (``make``, ``model``, ``calibre``, ``serial``,
  ``status`` seized/found/surrendered, ``recovery_date``, ``recovery_place``,
  ``recovery_country``, ``origin_country``, ``tracing_status``,
  ``tracing_result``).

Edges (attribute ``kind``):

- ``match`` exhibit-exhibit: ``cmc_count``, ``score``, ``confirmed`` (True:
  an examiner confirmed the identification; False: an examiner rejected it;
  None: not reviewed, or reviewed and found inconclusive), ``verdict``
  (``identification``, ``elimination`` or ``inconclusive``, with ``examiner``
  and ``decided_utc``, when an examiner decided: a store's current decision,
  see `CaseStore.confirm`) and, when built from a `Comparison`, ``rotation_deg``;
- ``found_at`` exhibit-scene; ``test_fired`` exhibit-firearm.

A match edge is a *link* (evidence of one gun) when an examiner confirmed it,
or, unless ``confirmed_only``, when no examiner ruled on it and its calibrated
likelihood ratio reaches ``link_lr`` (100 by default: the "identification"
step of the conclusion scale). An examiner's inconclusive verdict makes a
comparison neither a link (whatever its LR) nor an elimination: it stays a
candidate for review. The LR comes from a calibration whose domain
holds both scans (see `ballistix.evidence`); a comparison without one is an
unverified *candidate* for an examiner (`candidates`), never a link, whatever
its CMC count. A lab that has validated a count rule on its own population
may set one explicitly (``count_rule``, e.g. `CONVENTIONAL_CMC_RULE`): the rule is then named in
every output. Test fires of one firearm are one gun by definition.

Same-gun groups (`groups`) are the connected sets of links, with one rule
against chaining: a link that is the only connection between two sets of two
or more exhibits (a bridge of the link graph with two or more exhibits on
each side) is cut, unless an examiner confirmed it. A single false link can
then never merge two groups; the cut links are kept as `weak_links`, for an
examiner to review. The price: a true group whose comparisons form a bare
chain (a-b, b-c, c-d, and nothing else) splits in two; the benchmark
measures how often.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from .._version import __version__
from ..errors import ParameterError
from . import analysis, export
from ._intern import shared
from .rules import CONVENTIONAL_CMC_RULE, LINK_LR, DecisionRule

__all__ = ["LinkageGraph", "node_key", "LINK_LR", "CONVENTIONAL_CMC_RULE", "DecisionRule"]


KINDS = ("exhibit", "scene", "firearm")


def node_key(kind: str, id_: str) -> str:
    """The NetworkX node key of an exhibit, scene or firearm id."""
    if kind not in KINDS:
        raise ParameterError(f"node kind must be one of {KINDS}, got {kind!r}")
    return sys.intern(f"{kind}:{id_}")  # one string per node, however often it is named


def _result_fields(result) -> dict[str, Any]:
    """Edge attributes from a Comparison, a mapping with ``cmc_count`` (and ``score``,
    ``confirmed``), or a bare CMC count."""
    if isinstance(result, bool):
        raise ParameterError("a comparison result must be a Comparison, a mapping or a CMC count, got a bool")
    if isinstance(result, int) or (hasattr(result, "__index__") and not hasattr(result, "cmc_count")):
        return {"cmc_count": int(result), "score": float(int(result))}
    if isinstance(result, Mapping):
        if "cmc_count" not in result:
            raise ParameterError(f"a comparison mapping needs 'cmc_count', got keys {sorted(result)}")
        out = {"cmc_count": int(result["cmc_count"]), "score": float(result.get("score", result["cmc_count"]))}
        for k in (
            "confirmed",
            "verdict",
            "decided_utc",
            "rotation_deg",
            "log10_lr",
            "examiner",
            "comparison_id",
            "lr_basis",
            "cmc_excess",
            "cmc_background",
            "pair_log10_lr",
            "calibration_sha256",
            "calibration_origin",
            *MARK_EDGE_KEYS,
            "marks_calibration_sha256",
            "marks_calibration_origin",
        ):
            if result.get(k) is not None:
                out[k] = result[k]
        return _with_verdict(out)
    if hasattr(result, "cmc_count") and hasattr(result, "score"):
        out = {
            "cmc_count": int(result.cmc_count),
            "score": float(result.score),
            "rotation_deg": float(result.rotation_deg),
        }
        if getattr(result, "log10_lr", None) is not None:
            out["log10_lr"] = float(result.log10_lr)
            ev = getattr(result, "evidence", None) or {}
            if ev.get("calibration_sha256"):
                out["calibration_sha256"] = ev["calibration_sha256"]
                out["calibration_origin"] = (ev.get("calibration_origin") or {}).get("text", ev.get("calibration"))
            out.update(mark_edge_fields(ev))
        return out
    raise ParameterError(
        f"a comparison result must be a Comparison, a mapping or a CMC count, got {type(result).__name__}"
    )


#: Edge attributes of a comparison whose marks were weighed (`mark_edge_fields`): each mark's own log10 LR
#: beside the fused ``log10_lr``, and ``lr_basis`` naming what was fused.
MARK_EDGE_KEYS = ("breech_face_log10_lr", "firing_pin_log10_lr", "aperture_shear_log10_lr")


def mark_edge_fields(evidence: Mapping) -> dict:
    """The edge attributes a comparison's ``evidence["marks"]`` gives (`MARK_EDGE_KEYS`, ``lr_basis``, the
    marks calibration's ``marks_calibration_sha256`` and ``marks_calibration_origin``): flat numbers and
    text, so that GraphML and GEXF keep them; nothing where no mark but the breech face was weighed."""
    marks = (evidence or {}).get("marks") or {}
    out = {
        f"{m}_log10_lr": float(e["log10_lr"])
        for m, e in (marks.get("per_mark") or {}).items()
        if f"{m}_log10_lr" in MARK_EDGE_KEYS and e.get("log10_lr") is not None
    }
    if len(out) < 2:  # the breech face alone: no other mark was weighed
        return {}
    if evidence.get("lr_basis"):
        out["lr_basis"] = str(evidence["lr_basis"])
    cal = marks.get("calibration") or {}
    if cal.get("sha256"):
        out["marks_calibration_sha256"] = str(cal["sha256"])
        out["marks_calibration_origin"] = str(cal.get("origin") or cal.get("name"))
    return out


#: An examiner's verdict and the ``confirmed`` it means (None: inconclusive, neither link nor elimination).
VERDICT_CONFIRMED = {"identification": True, "elimination": False, "inconclusive": None}


def _with_verdict(fields: dict) -> dict:
    """``fields`` with ``confirmed`` following its ``verdict``, if it has one (an unknown verdict,
    or a ``confirmed`` that says otherwise, is refused)."""
    if "verdict" not in fields:
        return fields
    verdict = fields["verdict"]
    if verdict not in VERDICT_CONFIRMED:
        raise ParameterError(f"verdict must be one of {list(VERDICT_CONFIRMED)}, got {verdict!r}")
    confirmed = VERDICT_CONFIRMED[verdict]
    if "confirmed" in fields and fields["confirmed"] != confirmed:
        raise ParameterError(f"verdict {verdict!r} and confirmed={fields['confirmed']!r} disagree")
    if confirmed is None:
        fields.pop("confirmed", None)
    else:
        fields["confirmed"] = confirmed
    return fields


class LinkageGraph:
    """The crime-linkage graph.

    Parameters
    ----------
    link_lr : float
        Likelihood ratio at or above which an unreviewed comparison is a link
        (100, the conclusion scale's identification step). Comparisons with no
        calibrated LR are never links unless an examiner confirms them.
    count_rule : int or None
        A CMC count at or above which an unreviewed comparison is a link,
        *instead of* the LR rule: only for a lab that validated the rule on its
        own population (see `ballistix.validate`). None (default): no count rule.
    confirmed_only : bool
        Only examiner-confirmed comparisons are links.

    Examples
    --------
    >>> import ballistix as bx
    >>> g = bx.LinkageGraph.from_comparisons([("A", "B", {"cmc_count": 24, "log10_lr": 3.0}),
    ...                                       ("B", "C", {"cmc_count": 19, "log10_lr": 2.6}),
    ...                                       ("C", "D", {"cmc_count": 9})])  # no LR: a candidate
    >>> g.groups()
    [{'A', 'B', 'C'}, {'D'}]
    >>> [(c["a"], c["b"]) for c in g.candidates()]
    [('C', 'D')]
    """

    def __init__(self, *, link_lr: float = LINK_LR, count_rule: int | None = None, confirmed_only: bool = False):
        if (
            isinstance(link_lr, bool)
            or not isinstance(link_lr, (int, float))
            or not (math.isfinite(link_lr) and link_lr > 1)
        ):
            raise ParameterError(f"link_lr must be a likelihood ratio above 1, got {link_lr!r}")
        if count_rule is not None and (isinstance(count_rule, bool) or int(count_rule) != count_rule or count_rule < 1):
            raise ParameterError(f"count_rule must be None or a positive integer CMC count, got {count_rule!r}")
        # graph attributes are scalars (GraphML, GEXF): count_rule 0 means "no count rule"
        self.nx = nx.Graph(
            link_lr=float(link_lr),
            count_rule=int(count_rule or 0),
            confirmed_only=bool(confirmed_only),
            ballistix_version=__version__,
        )
        self._reset_links()

    def _reset_links(self) -> None:
        """Empty the derived structures: the link graph (exhibit ids), the groups and the set of
        exhibits whose group must be recomputed. They are kept up to date as nodes and
        comparisons arrive, and groups are recomputed only where something changed."""
        self._links = nx.Graph()
        self._test_fires: dict[str, set[str]] = {}
        self._group_of: dict[str, int] = {}
        self._groups: dict[int, frozenset] = {}
        self._weak: dict[int, list[tuple[str, str]]] = {}
        self._next_group = 0
        self._dirty: set[str] = set()
        self._sorted: list[frozenset] | None = None

    def _rebuild_links(self) -> None:
        """Recompute every derived structure from ``self.nx`` (after reading a file)."""
        self._reset_links()
        for _, d in self.nx.nodes(data=True):
            if d["kind"] == "exhibit":
                self._link_exhibit(d["id"], self.firearm_of(d["id"]))
        for u, v, d in self.nx.edges(data=True):
            if d["kind"] == "match":
                self._link_comparison(self.nx.nodes[u]["id"], self.nx.nodes[v]["id"], d)

    # ------------------------------------------------------------ settings
    @property
    def link_lr(self) -> float:
        return float(self.nx.graph["link_lr"])

    @property
    def count_rule(self) -> int | None:
        return int(self.nx.graph["count_rule"]) or None

    @property
    def confirmed_only(self) -> bool:
        return bool(self.nx.graph["confirmed_only"])

    @property
    def rule(self) -> DecisionRule:
        """The decision rule of the graph's attributes (``link_lr``, ``count_rule``,
        ``confirmed_only``): what makes a comparison a link, a candidate or an elimination."""
        g = self.nx.graph
        key = (g["link_lr"], g["count_rule"], g["confirmed_only"])
        if getattr(self, "_rule_key", None) != key:
            self._rule = DecisionRule(
                link_lr=float(key[0]), count_rule=int(key[1]) or None, confirmed_only=bool(key[2])
            )
            self._rule_key = key
        return self._rule

    def decision_rule(self) -> str:
        """The rule that makes a comparison a link, in words (shown in every output)."""
        return self.rule.describe()

    def __repr__(self) -> str:
        n = {k: 0 for k in KINDS}
        for _, kind in self.nx.nodes(data="kind"):
            n[kind] += 1
        links = sum(1 for *_, d in self.nx.edges(data=True) if d["kind"] == "match" and self.is_link(d))
        rule = (
            "confirmed only"
            if self.confirmed_only
            else f"CMC >= {self.count_rule}"
            if self.count_rule is not None
            else f"LR >= {self.link_lr:g}"
        )
        return (
            f"<LinkageGraph: {n['exhibit']} exhibits, {n['scene']} scenes, {n['firearm']} firearms, "
            f"{links} links ({rule})>"
        )

    def _link_exhibit(self, exhibit: str, firearm: str | None) -> None:
        self._links.add_node(exhibit)
        self._dirty.add(exhibit)
        if firearm is not None:
            mates = self._test_fires.setdefault(firearm, set())
            for m in mates:
                self._links.add_edge(exhibit, m, cmc_count=None, confirmed=True, same_firearm=True)
                self._dirty.add(m)
            mates.add(exhibit)

    def _link_comparison(self, a: str, b: str, edge: Mapping) -> None:
        self._dirty.update((a, b))
        if self._links.has_edge(a, b) and self._links.edges[a, b].get("same_firearm"):
            return  # test fires of one firearm: one gun whatever a comparison says
        if self._links.has_edge(a, b):
            self._links.remove_edge(a, b)  # a new comparison replaces the old link, attributes and all
        if self.is_link(edge):
            lr = {"log10_lr": edge["log10_lr"]} if edge.get("log10_lr") is not None else {}
            self._links.add_edge(a, b, cmc_count=edge["cmc_count"], confirmed=bool(edge.get("confirmed")), **lr)

    # --------------------------------------------------------------- nodes
    def _add(self, kind: str, id_, attrs: dict) -> str:
        if not isinstance(id_, str) or not id_:
            raise ParameterError(f"{kind} id must be a non-empty string, got {id_!r}")
        bad = {"kind", "id"} & set(attrs)
        if bad:
            raise ParameterError(f"{kind} attributes may not be named {sorted(bad)}")
        key = node_key(kind, id_)
        clean = shared({k: v for k, v in attrs.items() if v is not None})
        if key in self.nx:
            self.nx.nodes[key].update(clean)
        else:
            self.nx.add_node(key, kind=kind, id=id_, **clean)
        self._sorted = None  # summaries read node attributes
        return key

    def add_scene(self, id_: str, **attrs) -> str:
        """Add (or update) a scene: ``date``, ``place``, ``lat``, ``lon``, ``context``, ..."""
        return self._add("scene", id_, attrs)

    def add_firearm(self, id_: str, **attrs) -> str:
        """Add (or update) a recovered firearm: ``make``, ``model``, ``calibre``, ``serial``, ``status``
        (seized / found / surrendered), ``recovery_date``, ``recovery_place``, ``recovery_country``,
        ``origin_country``, ``tracing_status`` ("traced" when its origin is established), ``tracing_result``."""
        status = attrs.get("status")
        if status is not None and status not in ("seized", "found", "surrendered"):
            raise ParameterError(f"firearm {id_}: status must be seized, found or surrendered, got {status!r}")
        return self._add("firearm", id_, attrs)

    def add_exhibit(self, id_: str, *, scene: str | None = None, test_fired_from: str | None = None, **attrs) -> str:
        """Add (or update) an exhibit, found at ``scene`` or test-fired from the firearm
        ``test_fired_from`` (nodes created if new); other attributes: ``sha256``, ``calibre``, ``date``."""
        if scene is not None and test_fired_from is not None:
            raise ParameterError(f"exhibit {id_!r}: a cartridge case comes from a scene or a test fire, not both")
        if node_key("exhibit", id_) in self.nx:  # an exhibit's origin is recorded once
            old_scene, old_gun = self.scene_of(id_), self.firearm_of(id_)
            if (scene is not None and (old_scene not in (None, scene) or old_gun is not None)) or (
                test_fired_from is not None and (old_gun not in (None, test_fired_from) or old_scene)
            ):
                raise ParameterError(
                    f"exhibit {id_!r} is already recorded at scene {old_scene!r} / test-fired from {old_gun!r}"
                )
        key = self._add("exhibit", id_, attrs)
        self._link_exhibit(id_, test_fired_from)
        if scene is not None:
            s = node_key("scene", scene)
            if s not in self.nx:
                self.add_scene(scene)
            self.nx.add_edge(key, s, kind="found_at")
        if test_fired_from is not None:
            f = node_key("firearm", test_fired_from)
            if f not in self.nx:
                self.add_firearm(test_fired_from)
            self.nx.add_edge(key, f, kind="test_fired")
        return key

    def add_comparison(self, a: str, b: str, result, *, confirmed: bool | None = None) -> None:
        """Record the comparison of exhibits ``a`` and ``b`` (created if new); a later
        comparison of the same pair replaces the earlier one. ``confirmed``: the examiner's
        verdict (True / False), if any."""
        if a == b:
            raise ParameterError(f"cannot compare exhibit {a!r} with itself")
        fields = shared(_result_fields(result))
        if confirmed is not None:
            fields["confirmed"] = bool(confirmed)
        ka, kb = node_key("exhibit", a), node_key("exhibit", b)
        for k, i in ((ka, a), (kb, b)):
            if k not in self.nx:
                self.add_exhibit(i)
        if self.nx.has_edge(ka, kb):
            self.nx.remove_edge(ka, kb)  # the new result replaces the old one, verdict included
        self.nx.add_edge(ka, kb, kind="match", **fields)
        self._link_comparison(a, b, self.nx.edges[ka, kb])

    # ------------------------------------------------------- constructors
    @classmethod
    def from_comparisons(
        cls,
        comparisons: Iterable,
        *,
        link_lr: float = LINK_LR,
        count_rule: int | None = None,
        confirmed_only: bool = False,
        exhibits: Iterable[Mapping] = (),
        scenes: Iterable[Mapping] = (),
        firearms: Iterable[Mapping] = (),
    ) -> LinkageGraph:
        """Build from ``(id_a, id_b, result)`` triples (result: a `Comparison`, a mapping with
        ``cmc_count`` and optionally ``score``/``log10_lr``/``confirmed``, or a bare CMC count,
        which carries no LR), and optional records of exhibits, scenes and firearms (mappings
        with an ``id``). ``link_lr``, ``count_rule``, ``confirmed_only``: the decision rule
        (see the class)."""
        g = cls(link_lr=link_lr, count_rule=count_rule, confirmed_only=confirmed_only)
        for rec in scenes:
            g.add_scene(**_record(rec))
        for rec in firearms:
            g.add_firearm(**_record(rec))
        for rec in exhibits:
            g.add_exhibit(**_record(rec))
        for item in comparisons:
            try:
                a, b, result = item
            except (TypeError, ValueError):
                raise ParameterError(f"comparisons must be (id_a, id_b, result) triples, got {item!r}") from None
            g.add_comparison(str(a), str(b), result)
        return g

    @classmethod
    def from_casework(cls, casework, comparisons: Iterable = (), **kw) -> LinkageGraph:
        """The analyst's view of simulated casework: its scenes, recovered firearms and exhibits
        (without the ground truth), plus the given comparisons."""
        exhibits = [
            {
                "id": e["id"],
                "scene": e["scene"],
                "test_fired_from": e["test_fired_from"],
                "calibre": e.get("calibre"),
                "date": e.get("date"),
            }
            for e in casework.exhibits
        ]
        firearms = [
            {k: v for k, v in f.items() if k not in ("scenes", "recovered", "manufacturing_run")}
            for f in casework.firearms
            if f["recovered"]
        ]
        scenes = [{k: v for k, v in s.items() if k != "firearms"} for s in casework.scenes]
        return cls.from_comparisons(comparisons, exhibits=exhibits, scenes=scenes, firearms=firearms, **kw)

    # ------------------------------------------------------------ queries
    def ids(self, kind: str) -> list[str]:
        """Ids of the nodes of one kind, sorted."""
        node_key(kind, "")  # validates the kind
        return sorted(d["id"] for _, d in self.nx.nodes(data=True) if d["kind"] == kind)

    def node(self, kind: str, id_: str) -> dict:
        """The attributes of one node (a copy)."""
        key = node_key(kind, id_)
        if key not in self.nx:
            raise ParameterError(f"no {kind} {id_!r} in the graph")
        return dict(self.nx.nodes[key])

    def is_link(self, edge: Mapping) -> bool:
        """Whether a match edge's attributes make it a link (see the module notes; `DecisionRule.is_link`)."""
        return self.rule.is_link(edge)

    def candidates(self) -> list[dict]:
        """Comparisons for an examiner to review: not links, not rejected, and either with no
        applicable calibration (no LR: an unverified candidate, whatever its count) and at
        least one congruent cell, or with an LR above 1 that falls short of the link rule.
        Strongest first (LR, then CMC count); each with ``a``, ``b``, ``cmc_count``,
        ``log10_lr`` (None: no calibration applied) and ``why``."""
        out = []
        rule = self.rule
        for u, v, d in self.nx.edges(data=True):
            if d["kind"] != "match" or (why := rule.review(d)) is None:
                continue
            a, b = sorted((self.nx.nodes[u]["id"], self.nx.nodes[v]["id"]))
            out.append(
                {"a": a, "b": b, "cmc_count": d.get("cmc_count") or 0, "log10_lr": d.get("log10_lr"), "why": why}
            )
        return sorted(
            out,
            key=lambda r: (
                -(r["log10_lr"] if r["log10_lr"] is not None else -math.inf),
                -r["cmc_count"],
                r["a"],
                r["b"],
            ),
        )

    def scene_of(self, exhibit: str) -> str | None:
        for nb in self.nx[node_key("exhibit", exhibit)]:
            if self.nx.nodes[nb]["kind"] == "scene":
                return self.nx.nodes[nb]["id"]
        return None

    def firearm_of(self, exhibit: str) -> str | None:
        """The firearm an exhibit was test-fired from (None for scene exhibits)."""
        for nb in self.nx[node_key("exhibit", exhibit)]:
            if self.nx.nodes[nb]["kind"] == "firearm":
                return self.nx.nodes[nb]["id"]
        return None

    def link_graph(self) -> nx.Graph:
        """Exhibits (by id) and the links between them, test fires of one firearm linked to each
        other, before the chaining rule. Kept up to date; do not modify it."""
        return self._links

    def _regroup(self) -> None:
        """Recompute the groups of the link-graph components that hold a changed exhibit."""
        if not self._dirty:
            return
        seen: set[str] = set()
        for start in sorted(self._dirty):
            if start in seen or start not in self._links:
                continue
            comp = nx.node_connected_component(self._links, start)
            seen |= comp
            for gid in {self._group_of[e] for e in comp if e in self._group_of}:
                self._groups.pop(gid, None)  # a group split by a removed link is met once per part
                self._weak.pop(gid, None)
            weak = _weak_bridges(self._links, comp)
            parts = (
                [comp]
                if not weak
                else nx.connected_components(nx.restricted_view(self._links.subgraph(comp), [], weak))
            )
            for part in parts:
                gid = self._next_group
                self._next_group += 1
                self._groups[gid] = frozenset(part)
                for e in part:
                    self._group_of[e] = gid
            if weak:
                self._weak[gid] = weak
        self._dirty.clear()
        self._sorted = None

    def groups(self, min_size: int = 1) -> list[set[str]]:
        """Same-gun groups: sets of exhibit ids, largest first (ties by smallest id).

        Every exhibit is in exactly one group (a gun seen once is a group of
        one); ``min_size`` drops smaller groups. After new exhibits or
        comparisons only the groups they touch are recomputed.
        """
        return [set(s) for s in itertools.takewhile(lambda s: len(s) >= min_size, self._sorted_groups())]

    def _sorted_groups(self) -> list[frozenset]:
        """The groups as `groups` orders them, without copies (the analyses read them; never modify them)."""
        self._regroup()
        if self._sorted is None:
            self._sorted = sorted(self._groups.values(), key=lambda s: (-len(s), min(s)))
        return self._sorted

    def weak_links(self) -> list[dict]:
        """Links cut by the chaining rule (each the only link between two sets of 2+ exhibits),
        with their CMC counts: for examiner review."""
        self._regroup()
        pairs = sorted(p for w in self._weak.values() for p in w)
        return [{"a": a, "b": b, "cmc_count": self._links.edges[a, b]["cmc_count"]} for a, b in pairs]

    def group_of(self, exhibit: str) -> set[str]:
        """The same-gun group holding ``exhibit``."""
        self._regroup()
        try:
            return set(self._groups[self._group_of[exhibit]])
        except KeyError:
            raise ParameterError(f"no exhibit {exhibit!r} in the graph") from None

    # ------------------------------------------------------------ analysis
    def group_summaries(self, min_size: int = 1) -> list[dict]:
        """See `analysis.group_summaries`."""
        return analysis.group_summaries(self, min_size)

    def scene_links(self) -> nx.Graph:
        """See `analysis.scene_links`."""
        return analysis.scene_links(self)

    def scene_connection(self, a: str, b: str) -> list[dict] | None:
        """See `analysis.scene_connection`."""
        return analysis.scene_connection(self, a, b)

    def timeline(self, exhibit: str) -> list[dict]:
        """See `analysis.timeline`."""
        return analysis.timeline(self, exhibit)

    def leads(self, new_exhibits: Iterable[str]) -> list[dict]:
        """See `analysis.leads`."""
        return analysis.leads(self, new_exhibits)

    def indicator_16_4_2(self) -> dict:
        """See `analysis.indicator_16_4_2`."""
        return analysis.indicator_16_4_2(self)

    def counts_by_context(self) -> dict[str, dict]:
        """See `analysis.counts_by_context`."""
        return analysis.counts_by_context(self)

    def trafficking_flows(self) -> dict[tuple[str, str], int]:
        """See `analysis.trafficking_flows`."""
        return analysis.trafficking_flows(self)

    def unrecovered_guns(self) -> list[dict]:
        """See `analysis.unrecovered_guns`."""
        return analysis.unrecovered_guns(self)

    def frame(self, name: str, *args, **kwargs):
        """One of the graph's tables as a pandas DataFrame (needs ``pip install 'ballistix[analysis]'``).

        ``name`` is one of `frames.FRAMES`: ``"groups"``, ``"scene_links"``, ``"leads"``,
        ``"timeline"``, ``"flows"``, ``"indicator"``, ``"contexts"``, ``"candidates"``,
        ``"weak_links"``, ``"unrecovered"``, ``"nodes"``; ``g.frame(name, ...)`` is
        ``ballistix.graph.frames.<name>_frame(g, ...)``, whose docstring lists the columns and
        their types. Arguments follow the analysis: ``g.frame("leads", new_ids)``,
        ``g.frame("timeline", exhibit)``, ``g.frame("groups", min_size=2)``, ``g.frame("nodes", "firearm")``.

        Examples
        --------
        >>> import ballistix as bx
        >>> g = bx.LinkageGraph.from_comparisons([("A", "B", {"cmc_count": 20, "log10_lr": 3.0})])
        >>> g.frame("groups").loc[0, "exhibits"]  # doctest: +SKIP
        ['A', 'B']
        """
        from . import frames

        if name not in frames.FRAMES:
            raise ParameterError(f"no frame {name!r}: one of {', '.join(frames.FRAMES)}")
        return getattr(frames, f"{name}_frame")(self, *args, **kwargs)

    # ------------------------------------------------------ files, pictures
    def export(self, path) -> Path:
        """Write the graph; the format follows the suffix: .graphml, .gexf or .json (node-link)."""
        return export.write(self, path)

    @classmethod
    def read(cls, path) -> LinkageGraph:
        """Read a graph written by `export` (any of its formats), attributes as they were."""
        return export.read(cls, path)

    def to_html(self, path, *, title: str = "ballistix linkage graph") -> Path:
        """A self-contained interactive view (no network needed), for a browser or a notebook."""
        return export.to_html(self, path, title=title)

    def view(self, *, title: str = "ballistix linkage graph", height: int = 520, seed: int = 0):
        """The interactive view of `to_html`, shown inline in Jupyter: an object whose rich display is
        the whole page in an ``<iframe srcdoc=...>``, so that a saved or exported notebook shows it
        without a file beside it. ``height``: of the frame, in pixels. See `export.GraphView`."""
        return export.GraphView(export.html_document(self, title=title, seed=seed), title=title, height=height)

    def plot(self, ax=None, *, seed: int = 0):
        """A static matplotlib figure of the graph; returns the axes."""
        return export.plot(self, ax=ax, seed=seed)


def _weak_bridges(links: nx.Graph, comp: set[str]) -> list[tuple[str, str]]:
    """Unconfirmed bridges of one component with at least two exhibits on each side."""
    if len(comp) < 4:
        return []
    sub = links.subgraph(comp)
    bridges = [(u, v) for u, v in nx.bridges(sub) if not sub.edges[u, v]["confirmed"]]
    if not bridges:
        return []
    # a bridge is an edge of every spanning tree: in a depth-first tree, the side of the bridge away
    # from the root is the subtree of its lower end (one pass for all bridges, not one search each)
    tree = list(nx.dfs_edges(sub, min(comp)))
    parent = {child: up for up, child in tree}
    below = dict.fromkeys(comp, 1)
    for up, child in reversed(tree):
        below[up] += below[child]
    weak = []
    for u, v in bridges:
        side = below[v] if parent.get(v) == u else below[u]
        if 2 <= side <= len(comp) - 2:
            weak.append(tuple(sorted((u, v))))
    return sorted(weak)


def _record(rec: Mapping) -> dict:
    if not isinstance(rec, Mapping) or "id" not in rec:
        raise ParameterError(f"records must be mappings with an 'id', got {rec!r}")
    d = dict(rec)
    return {"id_": str(d.pop("id")), **d}
