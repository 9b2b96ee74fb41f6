"""Linkage graph at national scale: build, group, summarise, export and report a graph of a million exhibits.

    python -m benchmarks.graph_scale [--exhibits 1000000] [--comparisons 1] [--quick]

A synthetic `LinkageGraph` shaped like the one `CaseStore.graph()` builds
for a large store: ``--exhibits`` exhibits (sha256, source name, calibre,
date), most of them the only exhibit of their gun; ``--grouped`` of them
(20 %) in same-gun groups of 2-10 spread over 1-4 scenes; a third of those
guns recovered, with two test fires each, plus recovered guns with one test
fire of their own; scenes of one to a few exhibits (date, place, lat, lon,
context); firearms with make, model, serial, status, recovery and tracing
fields. Comparisons carry what the store records (CMC count, score,
rotation, calibrated log10 LR, the calibration's checksum and origin, the
cohort fields): every same-gun pair (most of them links, some weak
candidates, a few examiner verdicts) and ``--comparisons`` different-gun
non-links per exhibit.

Then, one step after the other in this process, the time and the peak
resident memory of each (``VmHWM``, reset before each step through
``/proc/self/clear_refs``; where that is not allowed, the process's peak
so far): building, grouping, the analyses (group summaries, scene links,
leads of the newest 1 % of exhibits, 16.4.2, counts by context, unrecovered
guns, review candidates, weak links), GraphML, node-link JSON and GEXF
export, the HTML report with its CSV tables, and with ``--read`` reading
each exported file back, each in a process of its own (one graph in memory
at a time). ``--quick``: 2,000 exhibits, every export read back and compared
with the graph.

Writes benchmarks/results/graph_scale.json (``--quick``: graph_scale_quick.json)
and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import ballistix as bx

from ._common import table, write_json

PLACES = [f"{p} {q}" for p in ("North", "South", "East", "West", "Old", "New") for q in range(40)]
CONTEXTS = ("street gang", "drug trade", "robbery", "domestic", "organised crime", "terrorism", "unknown", "hunting")
COUNTRIES = ("AT", "BE", "CZ", "DE", "FR", "HR", "IT", "NL", "PL", "RS", "SK", "US")
MAKES = (("Glock", "17"), ("Glock", "19"), ("CZ", "75"), ("Walther", "P99"), ("Zastava", "M57"), ("Beretta", "92"))
# an evidence record as the store keeps it (evidence_json), parsed per comparison as `CaseStore.graph` does
_EVIDENCE = json.dumps(
    {
        "calibration_sha256": hashlib.sha256(b"calibration").hexdigest(),
        "calibration_origin": {"text": "shipped: ballistix default calibration (simulated realistic, 6.25 um)"},
    }
)


def _fresh(s: str) -> str:
    """A new string object equal to ``s``, as each row read from SQLite or JSON gives one."""
    return (s + ".")[:-1]


def _date(rng, lo=2015, hi=2025) -> str:
    return f"{int(rng.integers(lo, hi + 1))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"


def _comparison(rng, kind: str) -> dict:
    """A recorded comparison's fields as `CaseStore.graph` passes them: ``link`` (same gun, strong),
    ``weak`` (same gun, LR above 1 below the rule), ``none`` (different guns), ``uncalibrated``
    (no calibration applied: no LR)."""
    ev = json.loads(_EVIDENCE)
    if kind == "link":
        cmc, lr = int(rng.integers(12, 41)), float(rng.uniform(2.2, 6.0))
    elif kind == "weak":
        cmc, lr = int(rng.integers(4, 9)), float(rng.uniform(0.3, 1.9))
    else:
        cmc, lr = int(rng.integers(0, 5)), float(rng.uniform(-4.0, 0.0))
    out = {"cmc_count": cmc, "score": cmc / 48.0, "rotation_deg": float(rng.uniform(-180, 180))}
    if kind == "uncalibrated":
        return out
    out.update(
        log10_lr=lr,
        calibration_sha256=ev["calibration_sha256"],
        calibration_origin=ev["calibration_origin"]["text"],
        pair_log10_lr=lr,
        cmc_excess=float(cmc - 2),
        cmc_background=2.0,
        lr_basis="cohort: ballistix default calibration",
    )
    return out


def synthetic_graph(n: int, *, grouped: float = 0.2, comparisons: int = 1, seed: int = 0) -> bx.LinkageGraph:
    """A `LinkageGraph` of ``n`` exhibits with the mix and attributes described in the module notes
    (deterministic for a seed). Exhibit ids ``E0000000``... in ingest order."""
    rng = np.random.default_rng(seed)
    g = bx.LinkageGraph()
    sizes = []
    target = int(grouped * n)
    while sum(sizes) < target:
        sizes.append(int(rng.integers(2, 11)))
    if sizes and sum(sizes) > n:
        sizes[-1] -= sum(sizes) - n
    sizes = [s for s in sizes if s >= 2] + [1] * (n - sum(s for s in sizes if s >= 2))
    order = rng.permutation(len(sizes))  # guns interleaved in ingest order
    ids = [f"E{i:07d}" for i in range(n)]
    counter = {"scene": 0, "firearm": 0}

    def scene() -> str:
        sid = f"S{counter['scene']:07d}"
        counter["scene"] += 1
        attrs = {
            "date": _date(rng),
            "place": PLACES[int(rng.integers(len(PLACES)))],
            "lat": round(float(rng.uniform(50.8, 53.5)), 5),
            "lon": round(float(rng.uniform(3.4, 7.2)), 5),
            "context": CONTEXTS[int(rng.integers(len(CONTEXTS)))],
        }
        g.add_scene(sid, **json.loads(json.dumps(attrs)))  # as the store keeps them (attrs_json)
        return sid

    def firearm() -> str:
        fid = f"F{counter['firearm']:06d}"
        counter["firearm"] += 1
        make, model = MAKES[int(rng.integers(len(MAKES)))]
        traced = rng.random()
        attrs = {
            "make": make,
            "model": model,
            "calibre": "9mm Luger",
            "serial": f"{make[:2].upper()}{int(rng.integers(10**6, 10**7))}",
            "status": ("seized", "found", "surrendered")[int(rng.integers(3))],
            "recovery_date": _date(rng, 2020),
            "recovery_place": PLACES[int(rng.integers(len(PLACES)))],
            "recovery_country": "NL",
            "origin_country": COUNTRIES[int(rng.integers(len(COUNTRIES)))],
            "tracing_status": "traced" if traced < 0.4 else "pending" if traced < 0.8 else "not traceable",
            "tracing_result": "licensed dealer, diverted" if traced < 0.4 else None,
        }
        g.add_firearm(fid, **json.loads(json.dumps(attrs)))
        return fid

    def exhibit(eid: str, **origin) -> None:
        g.add_exhibit(
            eid,
            sha256=hashlib.sha256(eid.encode()).hexdigest(),
            source_name=f"scans/{eid[:4]}/{eid}.x3p",
            calibre=_fresh("9mm Luger"),
            date=_date(rng),
            **origin,
        )

    k = 0
    shared_scene = None
    members_of = []
    for gi in order:
        s = sizes[gi]
        members = ids[k : k + s]
        k += s
        if s == 1:
            if rng.random() < 0.03:  # a recovered gun's own test fire, never seen at a scene
                exhibit(members[0], test_fired_from=firearm())
            else:  # several guns may fire at one scene
                if shared_scene is None or rng.random() > 0.3:
                    shared_scene = scene()
                exhibit(members[0], scene=shared_scene)
            continue
        members_of.append(members)
        fires = min(2, s - 1) if rng.random() < 1 / 3 else 0
        if fires:
            fid = firearm()
            for e in members[:fires]:
                exhibit(e, test_fired_from=fid)
        at_scenes = members[fires:]
        scenes = [scene() for _ in range(int(rng.integers(1, min(4, len(at_scenes)) + 1)))]
        for j, e in enumerate(at_scenes):
            exhibit(e, scene=scenes[j % len(scenes)])
    for members in members_of:  # every same-gun pair compared (a store's shortlist finds them)
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                u = rng.random()
                res = _comparison(rng, "link" if u < 0.85 else "weak" if u < 0.97 else "uncalibrated")
                if rng.random() < 0.005:
                    res["confirmed"], res["examiner"] = True, "examiner 7"
                g.add_comparison(a, b, res)
    partners = rng.integers(0, n, (n, comparisons))
    for i in range(n):  # different-gun comparisons (the rest of each shortlist): no link
        for j in partners[i]:
            if j != i:
                res = _comparison(rng, "uncalibrated" if rng.random() < 0.05 else "none")
                if rng.random() < 0.001:
                    res["confirmed"], res["examiner"] = False, "examiner 7"
                g.add_comparison(ids[i], ids[int(j)], res)
    return g


# ------------------------------------------------------------------ memory
def _status(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset this process's peak resident memory (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Steps:
    """Time and peak resident memory of each step, one after the other in this process."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self.resets = True

    def run(self, name: str, fn, *args, **kw):
        gc.collect()
        start = _status("VmRSS")
        self.resets &= _reset_peak()
        t = time.perf_counter()
        out = fn(*args, **kw)
        seconds = time.perf_counter() - t
        peak = _status("VmHWM")
        self.rows[name] = {
            "seconds": round(seconds, 3),
            "peak_rss_mb": round(peak, 1),
            "rss_before_mb": round(start, 1),
            "peak_growth_mb": round(peak - start, 1),
        }
        return out


def _same_graph(a: bx.LinkageGraph, b: bx.LinkageGraph) -> bool:
    edges = lambda g: {frozenset((u, v)): d for u, v, d in g.nx.edges(data=True)}  # noqa: E731
    return (
        dict(a.nx.nodes(data=True)) == dict(b.nx.nodes(data=True)) and edges(a) == edges(b) and a.nx.graph == b.nx.graph
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exhibits", type=int, default=1_000_000)
    p.add_argument("--grouped", type=float, default=0.2, help="share of exhibits in same-gun groups of 2-10")
    p.add_argument("--comparisons", type=int, default=1, help="different-gun comparisons per exhibit")
    p.add_argument("--formats", nargs="+", default=[".graphml", ".json", ".gexf"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--read", action="store_true", help="read each exported file back, in a process of its own")
    p.add_argument("--quick", action="store_true", help="2,000 exhibits; exports read back and compared")
    p.add_argument("--keep", type=Path, default=None, help="write the files into this folder and keep them")
    p.add_argument("--read-one", type=Path, help=argparse.SUPPRESS)  # a child of --read
    args = p.parse_args(argv)
    if args.read_one:
        steps = Steps()
        g = steps.run("read", bx.LinkageGraph.read, args.read_one)
        print(json.dumps({**steps.rows["read"], "size": [g.nx.number_of_nodes(), g.nx.number_of_edges()]}))
        return 0
    if args.quick:
        args.exhibits = 2_000
    from ballistix.store.report import write_graph_report

    steps = Steps()
    g = steps.run(
        "build", synthetic_graph, args.exhibits, grouped=args.grouped, comparisons=args.comparisons, seed=args.seed
    )
    groups = steps.run("groups", g.groups, 2)
    new = [f"E{i:07d}" for i in range(args.exhibits - max(1, args.exhibits // 100), args.exhibits)]
    analyses = {
        "group summaries": lambda: len(g.group_summaries(min_size=2)),
        "scene links": lambda: g.scene_links().number_of_edges(),
        "leads (newest 1 %)": lambda: len(g.leads(new)),
        "16.4.2": lambda: g.indicator_16_4_2()["firearms"],
        "counts by context": lambda: len(g.counts_by_context()),
        "unrecovered guns": lambda: len(g.unrecovered_guns()),
        "candidates": lambda: len(g.candidates()),
        "weak links": lambda: len(g.weak_links()),
    }
    counts = {name: steps.run(name, fn) for name, fn in analyses.items()}
    n_kind = {k: len(g.ids(k)) for k in ("exhibit", "scene", "firearm")}
    shape = {
        **{f"{k}s": v for k, v in n_kind.items()},
        "nodes": g.nx.number_of_nodes(),
        "edges": g.nx.number_of_edges(),
        "match_edges": sum(1 for *_, k in g.nx.edges(data="kind") if k == "match"),
        "groups_2plus": len(groups),
    }
    files, checks, exported = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in args.formats:
            path = steps.run(f"export {suffix}", g.export, folder / f"graph{suffix}")
            files[suffix] = round(path.stat().st_size / 2**20, 1)
            exported.append(path)
        report = steps.run("report", write_graph_report, g, folder / "report.html", new_exhibits=new)
        files["report.html"] = round(report.stat().st_size / 2**20, 2)
        tables = sorted(report.parent.glob(f"{report.stem}-tables/*.csv"))
        files["report tables (csv)"] = round(sum(t.stat().st_size for t in tables) / 2**20, 1)
        for path in exported if args.quick else []:  # read back here and compared with the graph
            back = steps.run(f"read {path.suffix}", bx.LinkageGraph.read, path)
            checks[f"{path.suffix} reads back identical"] = _same_graph(back, g)
        for path in exported if args.read and not args.quick else []:  # one process each: one graph in memory
            r = subprocess.run(
                [sys.executable, "-m", "benchmarks.graph_scale", "--read-one", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(r.stdout.splitlines()[-1])
            checks[f"{path.suffix} reads back whole"] = row.pop("size") == [shape["nodes"], shape["edges"]]
            steps.rows[f"read {path.suffix} (own process)"] = row
    out = {
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "graph": shape,
        "counts": counts,
        "steps": steps.rows,
        "peak_reset_per_step": steps.resets,
        "files_mb": files,
        "checks": checks,
    }
    path = write_json("graph_scale_quick" if args.quick else "graph_scale", out)
    gs = out["graph"]
    print(
        f"{gs['exhibits']:,} exhibits, {gs['scenes']:,} scenes, {gs['firearms']:,} firearms; "
        f"{gs['edges']:,} edges ({gs['match_edges']:,} comparisons); {gs['groups_2plus']:,} groups of 2+"
    )
    size = {f"export {k}": v for k, v in files.items() if k.startswith(".")} | {"report": files["report.html"]}
    print(
        table(
            [[k, r["seconds"], r["peak_rss_mb"], r["peak_growth_mb"], size.get(k, "")] for k, r in steps.rows.items()],
            ["step", "seconds", "peak RSS MB", "peak over start MB", "file MB"],
        )
    )
    if not steps.resets:
        print("(peak RSS could not be reset per step: each figure is the process's peak so far)")
    for k, v in checks.items():
        print(f"{k}: {v}")
    print(f"wrote {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
