"""What the review app shows, without the web framework: the review queue of a store's graph, a
recorded comparison computed again with its pose and cells, and the surfaces drawn as PNG images
(height colour scale) with the compared surface turned and shifted into the reference's frame.

Nothing here imports Flask: `ballistix.serve.app` puts it on pages; the tests call it directly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .._records import check_date
from ..errors import ParameterError
from ..evidence import verbal
from ..features.cmc import angle_diff
from ..features.comparison import Comparison, compare
from ..graph.linkage import node_key
from ..scan import Scan

__all__ = ["STATUSES", "QueueFilter", "queue", "lr_text", "ReviewedPair", "review_pair", "colour_lut"]

#: The queue's status filter: what waits for review (default), what no examiner has ruled on yet,
#: what one has, each verdict, everything.
STATUSES = ("open", "undecided", "decided", "identification", "elimination", "inconclusive", "all")


def lr_text(log10_lr) -> str:
    """A likelihood ratio as the report writes it: 508, 1/60, or '-'."""
    if log10_lr is None:
        return "-"
    v = 10.0**log10_lr
    return f"{v:.3g}" if v >= 1 else f"1/{1 / v:.3g}"


def verbal_text(log10_lr) -> str:
    """The ENFSI verbal scale of an LR, or what its absence means."""
    return "no calibrated LR" if log10_lr is None else verbal(log10_lr)


@dataclass(frozen=True)
class QueueFilter:
    """The queue's filters, from the page's query string (all optional): a scene either exhibit was
    found at, a date range either exhibit falls in (its own date, else its scene's), a piece of an
    exhibit id (either exhibit, any case), and a status (`STATUSES`)."""

    scene: str = ""
    date_from: str = ""
    date_to: str = ""
    exhibit: str = ""
    status: str = "open"

    @classmethod
    def from_args(cls, args) -> QueueFilter:
        """Read and check the filters of a query string (a mapping); raises `ParameterError`."""
        f = cls(
            scene=(args.get("scene") or "").strip(),
            date_from=(args.get("from") or "").strip(),
            date_to=(args.get("to") or "").strip(),
            exhibit=(args.get("exhibit") or "").strip(),
            status=(args.get("status") or "open").strip(),
        )
        if f.status not in STATUSES:
            raise ParameterError(f"status must be one of {list(STATUSES)}, got {f.status!r}")
        check_date(f.date_from or None, "from")
        check_date(f.date_to or None, "to")
        return f

    def keeps(self, row: dict) -> bool:
        if self.scene and self.scene not in (row["scene_a"], row["scene_b"]):
            return False
        if self.exhibit and not any(self.exhibit.casefold() in row[k].casefold() for k in ("a", "b")):
            return False
        if self.date_from or self.date_to:
            dates = [d for d in (row["date_a"], row["date_b"]) if d]
            lo, hi = self.date_from or "0000-00-00", self.date_to or "9999-99-99"
            if not any(lo <= d[:10] <= hi for d in dates):
                return False
        verdict = row["verdict"]
        return {
            "open": verdict in (None, "inconclusive"),
            "undecided": verdict is None,
            "decided": verdict is not None,
            "all": True,
        }.get(self.status, verdict == self.status)


def _date_of(g, exhibit: str, scene: str | None):
    d = g.nx.nodes[node_key("exhibit", exhibit)].get("date")
    if not d and scene is not None:
        d = g.nx.nodes[node_key("scene", scene)].get("date")
    return str(d) if d else None


def queue(g, flt: QueueFilter | None = None) -> list[dict]:
    """The comparisons of a `LinkageGraph` that an examiner may rule on, strongest first.

    Every comparison an analysis uses (`DecisionRule.is_evidence`): links made by the rule and
    waiting for an examiner (the leads rest on them), candidates for review, and comparisons
    already decided; not the eliminations nobody needs to look at. Sorted by the likelihood ratio
    the graph judges them by (none last), then the CMC count. Each row: ``a``, ``b``, their scenes,
    firearms and dates, ``cmc_count``, ``log10_lr``, ``lr``, ``verbal``, ``state`` (link,
    candidate, or the examiner's verdict), ``why``, ``verdict``, ``examiner``, ``decided_utc``.
    """
    flt = flt or QueueFilter()
    rule, rows = g.rule, []
    for u, v, d in g.nx.edges(data=True):
        if d.get("kind") != "match" or not rule.is_evidence(d):
            continue
        a, b = sorted((g.nx.nodes[u]["id"], g.nx.nodes[v]["id"]))
        sa, sb = g.scene_of(a), g.scene_of(b)
        why = rule.review(d)
        verdict = d.get("verdict")
        if verdict is None and d.get("confirmed") is not None:  # a verdict from before the audit log
            verdict = "identification" if d["confirmed"] else "elimination"
        lr = d.get("log10_lr")
        row = {
            "a": a,
            "b": b,
            "scene_a": sa,
            "scene_b": sb,
            "firearm_a": g.firearm_of(a),
            "firearm_b": g.firearm_of(b),
            "date_a": _date_of(g, a, sa),
            "date_b": _date_of(g, b, sb),
            "cmc_count": int(d.get("cmc_count") or 0),
            "log10_lr": lr,
            "lr": lr_text(lr),
            "verbal": verbal_text(lr),
            "state": verdict or ("link" if g.is_link(d) else "candidate"),
            "why": why or ("meets the link rule; waits for an examiner" if verdict is None else ""),
            "verdict": verdict,
            "examiner": d.get("examiner"),
            "decided_utc": d.get("decided_utc"),
        }
        if flt.keeps(row):
            rows.append(row)
    rows.sort(
        key=lambda r: (-(r["log10_lr"] if r["log10_lr"] is not None else -math.inf), -r["cmc_count"], r["a"], r["b"])
    )
    return rows


# ----------------------------------------------------------------------------- images
def colour_lut(name: str = "cividis") -> np.ndarray:
    """A (256, 3) uint8 RGB lookup table of a matplotlib colour map (cividis: read alike by
    colour-blind readers, and in grey)."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def height_png(z: np.ndarray, lo: float, hi: float, lut: np.ndarray) -> bytes:
    """Heights (m, NaN missing) as an RGBA PNG: ``lo``..``hi`` across the colour map, missing
    points transparent."""
    valid = np.isfinite(z)
    t = np.zeros(z.shape, np.uint8)
    if hi > lo:
        t[valid] = np.clip((z[valid] - lo) / (hi - lo) * 255, 0, 255).round().astype(np.uint8)
    rgba = np.empty(z.shape + (4,), np.uint8)
    rgba[..., :3] = lut[t][..., ::-1]  # OpenCV writes BGR(A)
    rgba[..., 3] = np.where(valid, 255, 0)
    ok, buf = cv2.imencode(".png", rgba)
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise ParameterError("could not encode the surface as PNG")
    return buf.tobytes()


def scale_png(lut: np.ndarray) -> bytes:
    """The colour scale, left (low) to right (high), as a 256 x 1 PNG (stretched by the page)."""
    ok, buf = cv2.imencode(".png", lut[None, :, ::-1].copy())
    return buf.tobytes()


def aligned_surface(res: Comparison, a: Scan, b: Scan) -> np.ndarray:
    """``b``'s heights turned and shifted into ``a``'s grid by the comparison's found pose (NaN where
    ``b`` has no data there).

    The cell search turns ``b``'s valid box about its centre by ``rotation_deg`` (OpenCV's sense:
    counter-clockwise as displayed) and finds each cell of ``a`` (taken from the centre of ``a``'s
    valid box) at its own place plus a shift; the consensus shift is the congruent cells' (when
    there is none, no shift). The same affine map takes the whole of ``b`` into ``a``'s frame.
    """
    p = res.params
    rb, cb, hb, wb = p["valid_box_px"]["b"]
    ra, ca, ha, wa = p["valid_box_px"]["a"]
    centre_b = (cb + (wb - 1) / 2, rb + (hb - 1) / 2)  # (x, y) in b's grid
    centre_a = (ca + (wa - 1) / 2, ra + (ha - 1) / 2)
    shift = res.directions["ab"]["shift_px"]  # (row, col) of the consensus shift, NaN when none
    sy, sx = (float(v) if np.isfinite(v) else 0.0 for v in np.asarray(shift, float).ravel()[:2])
    m = cv2.getRotationMatrix2D(centre_b, float(res.rotation_deg), 1.0)
    m[0, 2] += centre_a[0] - sx - centre_b[0]
    m[1, 2] += centre_a[1] - sy - centre_b[1]
    zb = b.heights.astype(np.float32)
    valid = np.isfinite(zb)
    kw = dict(dsize=(a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = cv2.warpAffine(np.where(valid, zb, 0).astype(np.float32), m, **kw)
    ok = cv2.warpAffine(valid.astype(np.float32), m, **kw) >= 0.999  # never a value made up near missing data
    out[~ok] = np.nan
    return out


def _cells(res: Comparison) -> list[dict]:
    """The reference cells that were searched (a finite correlation), in ``a``'s pixels: ``x``, ``y``,
    ``w``, ``h``; ``dx``, ``dy``: where the cell's best match lies in the aligned ``b`` relative to
    its own place (its shift less the consensus shift); ``congruent``, ``correlation``."""
    h, w = res.params["cell_px"]
    shift = np.asarray(res.directions["ab"]["shift_px"], float).ravel()[:2]
    sy, sx = (float(v) if np.isfinite(v) else 0.0 for v in shift)
    out = []
    for c in res.cells:
        if not np.isfinite(c["correlation"]):
            continue
        r0, c0 = c["corner_px"]
        cy, cx = c["shift_px"]
        out.append(
            {
                "x": c0 - 0.5,
                "y": r0 - 0.5,
                "w": w,
                "h": h,
                "dx": round(cx - sx, 2),
                "dy": round(cy - sy, 2),
                "congruent": bool(c["congruent"]),
                "correlation": round(float(c["correlation"]), 3),
                "rotation_deg": round(float(c["rotation_deg"]), 1),
            }
        )
    return out


def overlap_correlation(z1: np.ndarray, z2: np.ndarray) -> float:
    """Pearson correlation of two height maps over the points both have (NaN when fewer than 100)."""
    both = np.isfinite(z1) & np.isfinite(z2)
    if both.sum() < 100:
        return float("nan")
    return float(np.corrcoef(z1[both], z2[both])[0, 1])


# ----------------------------------------------------------------------------- a reviewed pair
@dataclass
class ReviewedPair:
    """A recorded comparison, computed again so that its pose and cells can be drawn.

    ``reference`` and ``compared`` are the exhibit ids in the direction the comparison was
    recorded in (the one whose pose matches the record; ``matches_record`` False when neither
    direction gives the recorded CMC count and rotation, with ``problem`` saying what differs).
    """

    reference: str
    compared: str
    comparison: Comparison
    record: dict
    matches_record: bool
    problem: str | None
    width: int
    height: int
    spacing_m: float
    cells: list[dict]
    low_m: float
    high_m: float
    images: dict[str, bytes] = field(repr=False, default_factory=dict)
    overlap_corr: float = float("nan")

    def numbers(self) -> dict:
        """The recomputed comparison's numbers for the page."""
        r = self.comparison
        t = np.asarray(r.translation, float)
        return {
            "cmc_count": r.cmc_count,
            "cells": r.n_cells,
            "score": round(r.score, 3),
            "rotation_deg": round(r.rotation_deg, 1),
            "translation_um": [None if not np.isfinite(v) else round(float(v) * 1e6, 1) for v in t],
            "overlap_corr": None if not np.isfinite(self.overlap_corr) else round(self.overlap_corr, 3),
        }


def mark_rows(evidence: dict) -> dict | None:
    """The compare page's table of a recorded comparison's other marks (``evidence["marks"]``, written
    by `ballistix.fusion.weigh_comparison_marks`), or None when the store did not compare them."""
    marks = (evidence or {}).get("marks")
    if not isinstance(marks, dict):
        return None
    per, results, fused = marks.get("per_mark") or {}, marks.get("results") or {}, marks.get("fused") or {}

    def num(v, spec):
        return "-" if v is None else format(v, spec)

    rows = []
    for m in ("breech_face", "firing_pin", "aperture_shear"):
        e, r = per.get(m) or {}, results.get(m) or {}
        if not e and not r:
            continue
        rows.append(
            {
                "mark": m.replace("_", " "),
                "used": bool(e.get("used")),
                "count": f"{r['count']} of {r['n_elements']}" if m != "breech_face" and r.get("used") else "-",
                "score": "-" if m == "breech_face" else num(r.get("score"), ".3f"),
                "log10_lr": num(e.get("log10_lr"), "+.2f"),
                "note": e.get("reason") or "",
            }
        )
    absent = ", ".join(x.replace("_", " ") for x in fused.get("absent") or [])
    return {
        "rows": rows,
        "fused_used": " + ".join(x.replace("_", " ") for x in fused.get("used") or []) or "nothing fused",
        "fused_lr": num(fused.get("log10_lr"), "+.2f"),
        "fused_note": fused.get("reason") or (f"absent or not weighed: {absent}" if absent else ""),
        "calibration": (marks.get("calibration") or {}).get("origin"),
    }


def comparison_record(store, a: str, b: str) -> dict | None:
    """The store's record of the comparison of exhibits ``a`` and ``b`` (either order), or None:
    ``a``, ``b`` (ids in the store's order), ``cmc_count``, ``score``, ``rotation_deg``,
    ``log10_lr`` (the pair's own), ``evidence`` (calibration, conclusion, or why no LR),
    ``created_utc``, ``created_by``, ``ballistix_version``."""
    ra, rb = store._rowid(a), store._rowid(b)  # ParameterError for an unknown exhibit
    lo, hi = sorted((ra, rb))
    row = store._db.execute(
        "SELECT cmc_count, score, rotation_deg, log10_lr, evidence_json, created_utc, created_by, ballistix_version "
        "FROM comparisons WHERE a=? AND b=?",
        (lo, hi),
    ).fetchone()
    if row is None:
        return None
    cmc, score, rot, lr, ev, when, who, version = row
    first, second = (a, b) if ra < rb else (b, a)
    try:
        evidence = json.loads(ev or "{}")
    except ValueError:
        evidence = {"note": "the evidence record cannot be read"}
    return {
        "a": first,
        "b": second,
        "cmc_count": int(cmc),
        "score": float(score),
        "rotation_deg": None if rot is None else float(rot),
        "log10_lr": lr,
        "evidence": evidence,
        "created_utc": when,
        "created_by": who,
        "ballistix_version": version,
    }


def _agrees(res: Comparison, record: dict) -> str | None:
    """None when a recomputed comparison gives the recorded count and rotation, else what differs."""
    problems = []
    if res.cmc_count != record["cmc_count"]:
        problems.append(f"{res.cmc_count} CMCs, recorded {record['cmc_count']}")
    rot = record["rotation_deg"]
    if rot is not None and abs(float(angle_diff(res.rotation_deg, rot))) > 1e-6:
        problems.append(f"rotation {res.rotation_deg:.1f} deg, recorded {rot:.1f} deg")
    return "; ".join(problems) or None


def review_pair(store, a: str, b: str, lut: np.ndarray | None = None) -> ReviewedPair:
    """Compute the recorded comparison of exhibits ``a`` and ``b`` again, with the store's comparison
    parameters, from their cached scans (checked against their recorded SHA-256), and draw it.

    The store records which pair was compared, not which exhibit was the reference: the
    comparison is computed with the earlier exhibit as the reference first, and the other way
    round when that does not give the recorded CMC count and rotation.

    Raises
    ------
    ParameterError
        An unknown exhibit, or no recorded comparison of the pair.
    DamagedScanError
        A cached scan is missing or is not the file recorded.
    """
    record = comparison_record(store, a, b)
    if record is None:
        raise ParameterError(f"no recorded comparison of {a!r} and {b!r} in the store")
    scans = {record["a"]: store.scan(record["a"]), record["b"]: store.scan(record["b"])}
    tried = []
    for ref, other in ((record["a"], record["b"]), (record["b"], record["a"])):
        res = compare(scans[ref], scans[other], **store.compare_params)
        problem = _agrees(res, record)
        tried.append((ref, other, res, problem))
        if problem is None:
            break
    ref, other, res, problem = next((t for t in tried if t[3] is None), tried[0])
    za, zb = scans[ref].heights, aligned_surface(res, scans[ref], scans[other])
    both = np.concatenate([za[np.isfinite(za)].ravel(), zb[np.isfinite(zb)].ravel()])
    lo, hi = (float(v) for v in np.percentile(both, [1, 99])) if both.size else (0.0, 0.0)
    lut = colour_lut() if lut is None else lut
    return ReviewedPair(
        reference=ref,
        compared=other,
        comparison=res,
        record=record,
        matches_record=problem is None,
        problem=problem,
        width=int(za.shape[1]),
        height=int(za.shape[0]),
        spacing_m=float(scans[ref].dx),
        cells=_cells(res),
        low_m=lo,
        high_m=hi,
        images={"reference": height_png(za, lo, hi, lut), "aligned": height_png(zb, lo, hi, lut)},
        overlap_corr=overlap_correlation(za, zb),
    )


# ----------------------------------------------------------------------------- groups, graph drawing
def group_rows(g) -> list[dict]:
    """The same-gun groups of two or more exhibits, largest first (as the report numbers them): each
    with its summary (scenes, dates, places, firearm) and its ``pairs``: the recorded comparisons
    between its exhibits, with their state (link, candidate, verdict), CMC count and LR."""
    from ..graph.analysis import iter_group_summaries

    out = []
    for s in iter_group_summaries(g, min_size=2):
        members = sorted(s["exhibits"])
        keys = [node_key("exhibit", e) for e in members]
        pairs = []
        for i, u in enumerate(keys):
            for v in keys[i + 1 :]:
                d = g.nx.get_edge_data(u, v)
                if not d or d.get("kind") != "match":
                    continue
                lr = d.get("log10_lr")
                pairs.append(
                    {
                        "a": g.nx.nodes[u]["id"],
                        "b": g.nx.nodes[v]["id"],
                        "cmc_count": d.get("cmc_count"),
                        "lr": lr_text(lr),
                        "log10_lr": lr,
                        "state": d.get("verdict") or ("link" if g.is_link(d) else "no link"),
                    }
                )
        pairs.sort(key=lambda p: (-(p["log10_lr"] if p["log10_lr"] is not None else -math.inf), p["a"], p["b"]))
        out.append({**s, "exhibits": members, "pairs": pairs})
    return out


#: Nodes the graph page draws at most (a spring layout of more is neither quick nor readable).
GRAPH_NODES = 1500


def graph_drawing(g, seed: int = 0) -> dict:
    """Positions for the graph page (an SVG drawn by the server): nodes (kind, id, x, y in
    0..1000) and the match edges an analysis uses (links, candidates, decided), each with its
    state. Raises `ParameterError` above `GRAPH_NODES` nodes."""
    import networkx as nx

    n = g.nx.number_of_nodes()
    if n > GRAPH_NODES:
        raise ParameterError(f"the graph has {n:,} nodes: too many to draw here (at most {GRAPH_NODES:,})")
    if n == 0:
        return {"nodes": [], "edges": [], "others": []}
    pos = nx.spring_layout(g.nx, seed=seed, k=1.5 / math.sqrt(max(1, n)))
    xy = np.array(list(pos.values())) if pos else np.zeros((0, 2))
    lo, span = xy.min(0), np.maximum(xy.max(0) - xy.min(0), 1e-9)

    def at(node):
        x, y = (np.asarray(pos[node]) - lo) / span * 900 + 50
        return round(float(x), 1), round(float(y), 1)

    nodes = [{"kind": d["kind"], "id": d["id"], "xy": at(k)} for k, d in g.nx.nodes(data=True)]
    edges, others = [], []
    rule = g.rule
    for u, v, d in g.nx.edges(data=True):
        if d["kind"] != "match":
            others.append({"p": at(u), "q": at(v)})
        elif rule.is_evidence(d):
            a, b = sorted((g.nx.nodes[u]["id"], g.nx.nodes[v]["id"]))
            edges.append(
                {
                    "a": a,
                    "b": b,
                    "p": at(u),
                    "q": at(v),
                    "state": d.get("verdict") or ("link" if g.is_link(d) else "candidate"),
                    "cmc_count": d.get("cmc_count"),
                    "lr": lr_text(d.get("log10_lr")),
                }
            )
    return {"nodes": nodes, "edges": edges, "others": others}
