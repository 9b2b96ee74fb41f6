"""The tables of a `LinkageGraph` and a `CaseStore` as pandas DataFrames, for analysts in Jupyter.

Each function builds its frame from the list of records the graph's analysis gives
(`ballistix.graph.analysis`, `LinkageGraph.candidates`, ...): one row per record, the
record's keys as columns, in the same order. `LinkageGraph.frame` names them
(``g.frame("groups")`` is ``groups_frame(g)``). pandas is optional: install it with
``pip install 'ballistix[analysis]'``; the rest of ballistix does not need it.

Column types, the same in every frame (an empty graph gives an empty frame with the same
columns and types):

- ids, names and texts: ``string`` (pandas' `StringDtype`, missing values ``<NA>``);
- dates: ``datetime64[ns]`` (a missing date, or a text that is no date, is ``NaT``);
- counts: ``int64``; a count that may be missing (a search without CMC verification): ``Int64``;
- likelihood ratios (``log10_lr``, log10), scores, shares, coordinates: ``float64`` (missing: NaN);
- lists (a group's exhibits, scenes, ...): ``object``, each cell a Python list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .._records import FIREARM_STATUS
from . import analysis

__all__ = [
    "FRAMES",
    "groups_frame",
    "scene_links_frame",
    "leads_frame",
    "timeline_frame",
    "flows_frame",
    "indicator_frame",
    "contexts_frame",
    "candidates_frame",
    "weak_links_frame",
    "unrecovered_frame",
    "nodes_frame",
    "iafq_frame",
    "search_frame",
]

#: The frames `LinkageGraph.frame` gives, by name (``name`` -> ``<name>_frame``).
FRAMES = (
    "groups",
    "scene_links",
    "leads",
    "timeline",
    "flows",
    "indicator",
    "contexts",
    "candidates",
    "weak_links",
    "unrecovered",
    "nodes",
)

INSTALL = "pip install 'ballistix[analysis]'"

# column kinds: the dtype each becomes
STR, DATE, INT, NINT, FLOAT, LIST = "string", "date", "int", "nullable int", "float", "list"
_DTYPES = {STR: "string", DATE: "datetime64[ns]", INT: "int64", NINT: "Int64", FLOAT: "float64", LIST: "object"}

_SUMMARY = {
    "group": INT,
    "exhibits": LIST,
    "scenes": LIST,
    "first_date": DATE,
    "last_date": DATE,
    "places": LIST,
    "contexts": LIST,
    "firearm": STR,
    "firearm_conflict": LIST,
}


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(f"ballistix's DataFrames need pandas: {INSTALL}") from None
    return pd


def _frame(rows: Iterable[Mapping], columns: Mapping[str, str]):
    """A DataFrame of ``rows`` with exactly ``columns`` (name -> kind), each of its kind's dtype."""
    pd = _pandas()
    rows = list(rows)
    data = {}
    for name, kind in columns.items():
        values = [r.get(name) for r in rows]
        if kind == DATE:
            col = pd.to_datetime(pd.Series(values, dtype=object).astype("string"), errors="coerce", format="ISO8601")
            col = col.astype("datetime64[ns]")
        elif kind == LIST:
            col = pd.Series(values, dtype=object)
        elif kind == STR:
            col = pd.Series([None if v is None else str(v) for v in values], dtype="string")
        elif kind == FLOAT:
            col = pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
        else:
            col = pd.Series(values, dtype=_DTYPES[kind])
        data[name] = col
    return pd.DataFrame(data, columns=list(columns))


def groups_frame(g, min_size: int = 1):
    """Same-gun groups, largest first (`LinkageGraph.group_summaries`).

    Columns: ``group`` (int64, the index in `LinkageGraph.groups`), ``exhibits``, ``scenes``
    (lists of ids), ``first_date``, ``last_date`` (datetime64[ns]), ``places``, ``contexts``
    (lists), ``firearm`` (string: the recovered gun whose test fire is in the group),
    ``firearm_conflict`` (a list when test fires of two or more guns are in one group, else None).

    Examples
    --------
    >>> import ballistix as bx
    >>> g = bx.LinkageGraph.from_comparisons([("A", "B", {"cmc_count": 20, "log10_lr": 3.0})])
    >>> groups_frame(g)[["group", "exhibits"]]  # doctest: +SKIP
       group exhibits
    0      0   [A, B]
    """
    return _frame(analysis.group_summaries(g, min_size), _SUMMARY)


def unrecovered_frame(g):
    """Guns seen at scenes and not recovered, most scenes first (`LinkageGraph.unrecovered_guns`):
    the columns of `groups_frame`."""
    return _frame(analysis.unrecovered_guns(g), _SUMMARY)


def scene_links_frame(g):
    """Pairs of scenes one same-gun group links (`analysis.scene_pairs`, the edges of
    `LinkageGraph.scene_links`).

    Columns: ``a``, ``b`` (string scene ids, ``a < b``), ``shared_guns`` (int64: the groups at
    both), ``groups`` (list of group indices).
    """
    rows = [{"a": a, "b": b, "shared_guns": len(k), "groups": k} for (a, b), k in analysis.scene_pairs(g).items()]
    return _frame(rows, {"a": STR, "b": STR, "shared_guns": INT, "groups": LIST})


def leads_frame(g, new_exhibits: Iterable[str]):
    """What new exhibits link to, firearm hits first (`LinkageGraph.leads`).

    Columns: ``exhibit``, ``scene`` (string), ``linked_exhibits``, ``linked_scenes`` (lists),
    ``firearm`` (string), ``best_cmc`` (int64), ``best_log10_lr`` (float64, NaN: no calibrated
    comparison), ``kind`` (string: "firearm hit" or "scene link").
    """
    cols = {
        "exhibit": STR,
        "scene": STR,
        "linked_exhibits": LIST,
        "linked_scenes": LIST,
        "firearm": STR,
        "best_cmc": INT,
        "best_log10_lr": FLOAT,
        "kind": STR,
    }
    return _frame(analysis.leads(g, new_exhibits), cols)


def timeline_frame(g, exhibit: str):
    """One gun's use over time: the scenes of the group holding ``exhibit`` and its firearm's
    recovery, by date (`LinkageGraph.timeline`).

    Columns: ``date`` (datetime64[ns]), ``event`` (string: "scene" or "firearm <status>"),
    ``scene``, ``firearm``, ``place``, ``context`` (string; a scene event has no firearm, a
    recovery no scene or context), ``exhibits`` (list: the group's exhibits from that scene).
    """
    cols = {"date": DATE, "event": STR, "scene": STR, "firearm": STR, "place": STR, "context": STR, "exhibits": LIST}
    return _frame(analysis.timeline(g, exhibit), cols)


def flows_frame(g):
    """Trafficking routes: recovered firearms by country of origin and of recovery, most first
    (`LinkageGraph.trafficking_flows`).

    Columns: ``origin_country``, ``recovery_country`` (string), ``firearms`` (int64).
    """
    rows = [
        {"origin_country": o, "recovery_country": r, "firearms": n}
        for (o, r), n in analysis.trafficking_flows(g).items()
    ]
    return _frame(rows, {"origin_country": STR, "recovery_country": STR, "firearms": INT})


def indicator_frame(g):
    """SDG indicator 16.4.2 by status of recovery (`LinkageGraph.indicator_16_4_2`).

    Columns: ``status`` (string: seized, found, surrendered), ``firearms``, ``traced`` (int64),
    ``share`` (float64: traced / firearms, NaN without firearms). The indicator itself and the
    reasons for not tracing are in ``frame.attrs``: ``value`` (float, NaN without firearms),
    ``traced``, ``firearms`` and ``not_traced`` (reason -> firearms).
    """
    ind = analysis.indicator_16_4_2(g)
    rows = [
        {"status": s, **v, "share": v["traced"] / v["firearms"] if v["firearms"] else None}
        for s, v in ind["by_status"].items()
    ]
    df = _frame(rows, {"status": STR, "firearms": INT, "traced": INT, "share": FLOAT})
    df.attrs.update({k: ind[k] for k in ("value", "traced", "firearms", "not_traced")})
    return df


def contexts_frame(g):
    """Scenes, linked scenes and guns by scene context (`LinkageGraph.counts_by_context`).

    Columns: ``context`` (string, "unknown" where none was recorded), ``scenes``,
    ``linked_scenes``, ``guns`` (int64).
    """
    rows = [{"context": c, **v} for c, v in analysis.counts_by_context(g).items()]
    return _frame(rows, {"context": STR, "scenes": INT, "linked_scenes": INT, "guns": INT})


def candidates_frame(g):
    """Comparisons for an examiner to review, strongest first (`LinkageGraph.candidates`).

    Columns: ``a``, ``b`` (string exhibit ids), ``cmc_count`` (int64), ``log10_lr`` (float64,
    NaN: no calibration applies), ``why`` (string).
    """
    return _frame(g.candidates(), {"a": STR, "b": STR, "cmc_count": INT, "log10_lr": FLOAT, "why": STR})


def weak_links_frame(g):
    """Links the chaining rule cut, for examiner review (`LinkageGraph.weak_links`).

    Columns: ``a``, ``b`` (string exhibit ids), ``cmc_count`` (int64).
    """
    return _frame(g.weak_links(), {"a": STR, "b": STR, "cmc_count": INT})


_NODE_COLUMNS = {
    "scene": {"id": STR, "date": DATE, "place": STR, "lat": FLOAT, "lon": FLOAT, "context": STR},
    "firearm": {
        "id": STR,
        "make": STR,
        "model": STR,
        "calibre": STR,
        "serial": STR,
        "status": STR,
        "recovery_date": DATE,
        "recovery_place": STR,
        "recovery_country": STR,
        "origin_country": STR,
        "tracing_status": STR,
        "tracing_result": STR,
    },
    "exhibit": {"id": STR, "scene": STR, "firearm": STR, "calibre": STR, "date": DATE, "sha256": STR},
}


def nodes_frame(g, kind: str = "scene"):
    """The exhibits, scenes or firearms of the graph with their attributes, by id.

    Columns, by ``kind``: scene: ``id``, ``date``, ``place``, ``lat``, ``lon`` (float64,
    degrees), ``context``; firearm: ``id``, ``make``, ``model``, ``calibre``, ``serial``,
    ``status``, ``recovery_date``, ``recovery_place``, ``recovery_country``,
    ``origin_country``, ``tracing_status``, ``tracing_result``; exhibit: ``id``, ``scene``,
    ``firearm`` (the gun it was test-fired from), ``calibre``, ``date``, ``sha256``. Any
    other attribute recorded on the nodes follows as an ``object`` column, in name order.
    """
    ids = g.ids(kind)  # validates the kind
    rows = []
    for i in ids:
        d = {k: v for k, v in g.node(kind, i).items() if k != "kind"}
        if kind == "exhibit":
            d["scene"], d["firearm"] = g.scene_of(i), g.firearm_of(i)
        rows.append(d)
    cols = dict(_NODE_COLUMNS[kind])
    cols.update({k: LIST for k in sorted({k for r in rows for k in r} - set(cols))})
    return _frame(rows, cols)


def iafq_frame(source, year: int | None = None):
    """The UNODC IAFQ tables of one year, stacked (`CaseStore.iafq`, `ballistix.store.iafq.iafq_figures`).

    Parameters
    ----------
    source : CaseStore or dict
        A store (``year`` needed), or the figures `CaseStore.iafq` returned.
    year : int, optional
        The calendar year of recovery.

    Returns
    -------
    pandas.DataFrame
        One row per breakdown and category: ``breakdown`` (string: type, context,
        tracing_status, tracing_result, origin_country), ``category`` (string),
        ``seized``, ``found``, ``surrendered``, ``status not recorded``, ``total`` (int64).
        ``frame.attrs``: ``year``, ``firearms`` (recovered in the year), ``undated`` and
        ``sdg_16_4_2`` (the figures' dict).
    """
    if isinstance(source, Mapping):
        fig = source
        if year is not None and year != fig["year"]:
            raise ValueError(f"the figures are of {fig['year']}, not {year}")
    else:
        if year is None:
            raise TypeError("iafq_frame(store, year): the year is needed with a store")
        fig = source.iafq(year)
    counts = (*FIREARM_STATUS, "status not recorded", "total")  # `ballistix.store.iafq.COLUMNS`
    rows = [{"breakdown": b, **r} for b, table in fig["tables"].items() for r in table]
    df = _frame(rows, {"breakdown": STR, "category": STR, **dict.fromkeys(counts, INT)})
    df.attrs.update({k: fig[k] for k in ("year", "firearms", "undated", "sdg_16_4_2")})
    return df


_STORE_SEARCH = {
    "exhibit_id": STR,
    "source_name": STR,
    "cmc_count": NINT,
    "score": FLOAT,
    "descriptor_score": FLOAT,
    "descriptor_rank": INT,
    "log10_lr": FLOAT,
    "calibration": STR,
    "calibration_sha256": STR,
    "calibration_origin": STR,
    "conclusion": STR,
}
_INDEX_SEARCH = {"id": INT, "descriptor_score": FLOAT, "descriptor_rank": INT, "cmc_count": NINT, "score": FLOAT}


def search_frame(result):
    """Search candidates, best first: a `CaseStore.search` result (`SearchResult.to_frame`) or
    the `Candidate` list `ballistix.search` returns.

    Columns, for a store's search: ``exhibit_id``, ``source_name`` (string), ``cmc_count``
    (Int64), ``score``, ``descriptor_score`` (float64), ``descriptor_rank`` (int64),
    ``log10_lr`` (float64, NaN: no calibration applies), ``calibration``,
    ``calibration_sha256``, ``calibration_origin``, ``conclusion`` (string); the frame's
    ``attrs["skipped"]`` lists the exhibits left out (damaged scans). For `ballistix.search`:
    ``id`` (int64, the index id), ``descriptor_score`` (float64), ``descriptor_rank`` (int64),
    ``cmc_count`` (Int64: missing when only the descriptor stage ran), ``score`` (float64),
    and ``precheck_score`` (float64) when the search ran the pre-check.
    """
    rows = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in result]
    store = "exhibit_id" in rows[0] if rows else hasattr(result, "skipped")  # a SearchResult, even empty
    if not store:
        cols = dict(_INDEX_SEARCH)
        if any("precheck_score" in r for r in rows):
            cols["precheck_score"] = FLOAT
    else:
        cols = _STORE_SEARCH
    df = _frame(rows, cols)
    if hasattr(result, "skipped"):
        df.attrs["skipped"] = list(result.skipped)
    return df
