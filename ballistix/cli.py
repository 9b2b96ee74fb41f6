"""The ``ballistix`` command.

``ballistix demo`` runs the main job on built-in simulated casework;
``ballistix ingest | search | compare | link`` work on a case store;
``ballistix info FILE...`` reads scans and prints what is in them.
Errors print one line to stderr and exit with a non-zero code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._version import __version__
from .errors import BallistixError

EXIT_BAD_INPUT = 2


def _scan_row(scan) -> dict:
    m = scan.meta
    return {
        "file": Path(m.get("source", "")).name,
        "shape": f"{scan.shape[0]}x{scan.shape[1]}",
        "spacing_um": round(scan.dx * 1e6, 4),
        "valid_%": round(100 * scan.valid_fraction, 1),
        "checksums": ",".join(sorted(set((m.get("x3p") or {}).get("checksums", {}).values()))) or "-",
        "sha256": m.get("sha256", "")[:12],
    }


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(width[k]) for k in keys))
    print("  ".join("-" * width[k] for k in keys))
    for r in rows:
        print("  ".join(str(r[k]).ljust(width[k]) for k in keys))


def cmd_info(args) -> int:
    from .io import read_scan

    rows, failed = [], 0
    for path in args.files:
        suffix = Path(path).suffix.lower()
        kw = {"strict": not args.lenient} if suffix == ".x3p" else {}
        if suffix in (".png", ".tif", ".tiff") and args.pixel_size_um:
            kw["pixel_size_m"] = args.pixel_size_um / 1e6
        try:
            scan = read_scan(path, **kw)
        except BallistixError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        rows.append(_scan_row(scan))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return EXIT_BAD_INPUT if failed else 0


def cmd_demo(args) -> int:
    """Simulate casework, write every exhibit as x3p, read it back, summarise, compare one
    exhibit with a same-gun and a different-gun exhibit (preprocess + CMC), and search an index
    of all exhibits for it (descriptor shortlist, CMC re-ranking)."""
    import numpy as np

    from .datasets import simulate_casework
    from .features.preprocessing import preprocess
    from .io import read_scan, write_x3p

    t0 = time.perf_counter()
    out = Path(args.out)
    (out / "exhibits").mkdir(parents=True, exist_ok=True)
    cw = simulate_casework(n_firearms=args.firearms, n_scenes=args.scenes, seed=args.seed,
                           resolution=args.resolution)
    t_sim = time.perf_counter() - t0
    (out / "casework.json").write_text(cw.to_json(indent=2))
    paths = [write_x3p(scan, out / "exhibits" / f"{ex['id']}.x3p") for ex, scan in zip(cw.exhibits, cw.scans)]
    t_write = time.perf_counter() - t0 - t_sim
    back = [read_scan(p) for p in paths]
    t_read = time.perf_counter() - t0 - t_sim - t_write
    identical = all(np.array_equal(a.heights, b.heights, equal_nan=True) and a.meta["labels"] == b.meta["labels"]
                    for a, b in zip(cw.scans, back))
    verified = all(set(b.meta["x3p"]["checksums"].values()) == {"verified"} for b in back)

    rows = []
    for ex, scan in zip(cw.exhibits, back):
        rows.append({"exhibit": ex["id"], "kind": ex["kind"], "scene": ex["scene"] or "-",
                     "test-fired from": ex["test_fired_from"] or "-", **{k: v for k, v in _scan_row(scan).items()
                                                                        if k in ("shape", "spacing_um", "valid_%", "sha256")}})
    report = {"out": str(out), "exhibits": rows, "identical_after_roundtrip": identical,
              "checksums_verified": verified, "n_scenes": len(cw.scenes), "n_firearms": len(cw.firearms),
              "truth_indicator_16_4_2": cw.indicator_16_4_2()}
    if not args.json:
        _print_table(rows)
        recovered = [f for f in cw.firearms if f["recovered"]]
        print()
        print(f"simulated casework (seed {args.seed}): {len(cw.scenes)} scenes, {len(cw.firearms)} firearms "
              f"({len(recovered)} recovered), {len(cw.exhibits)} exhibits")
        print(f"same-gun exhibit pairs (truth): {len(cw.same_gun_pairs())}; "
              f"scenes linked by a shared gun (truth): {len(cw.linked_scenes())}")
        print(f"indicator 16.4.2 (truth): {cw.indicator_16_4_2():.0%} of recovered firearms traced")
        print(f"wrote {len(paths)} x3p files and casework.json to {out}/; read back: "
              f"{'identical' if identical else 'DIFFERENT'}, checksums {'verified' if verified else 'NOT verified'}")
        print(f"time: simulate {t_sim:.1f} s, write {t_write:.1f} s, read {t_read:.1f} s")
        print()
    t = time.perf_counter()
    proc = [preprocess(s) for s in back]
    t_proc = time.perf_counter() - t
    pairs, dt = _demo_comparisons(cw, proc)
    search_report, dt_search = _demo_search(cw, proc, out)
    link_report, dt_link = _demo_link(cw, proc, out)
    if args.json:
        report["comparisons"] = pairs
        report["search"] = search_report
        report["linkage"] = link_report
        print(json.dumps(report, indent=2))
    else:
        _print_table(pairs)
        print(f"(preprocess {len(proc)} exhibits: {t_proc:.1f} s; compare: {dt:.1f} s; decision rule: 6 or more "
              f"congruent matching cells)")
        print()
        print(f"database search for {search_report['query']} among the other {len(proc) - 1} exhibits "
              f"(descriptor shortlist, then CMC re-ranking; index saved to {search_report['index']}):")
        _print_table(search_report["candidates"])
        print(f"(describe + index + search: {dt_search:.1f} s)")
        _print_linkage(link_report, dt_link)
    # a comparison that disagrees with the truth is a result to report, not a failure of the command
    return 0 if identical and verified else 1


def _demo_comparisons(cw, proc) -> tuple[list[dict], float]:
    """Compare the first exhibit with a same-gun and a different-gun exhibit (processed scans)."""
    from .features.comparison import compare

    truth = [e["firearm_truth"] for e in cw.exhibits]
    first = 0
    same = next((j for j in range(1, len(truth)) if truth[j] == truth[first]), None)
    other = next((j for j in range(1, len(truth)) if truth[j] != truth[first]), None)
    out = []
    t0 = time.perf_counter()
    for j in (same, other):
        if j is None:
            continue
        r = compare(proc[first], proc[j])
        same_gun = truth[j] == truth[first]
        out.append({"a": cw.exhibits[first]["id"], "b": cw.exhibits[j]["id"], "same_gun_truth": same_gun,
                    "cmc_count": r.cmc_count, "cells": r.n_cells, "score": round(r.score, 3),
                    "rotation_deg": round(r.rotation_deg, 1), "decision": "identification" if r.cmc_count >= 6
                    else "no identification", "agrees_with_truth": (r.cmc_count >= 6) == same_gun})
    return out, time.perf_counter() - t0


def _demo_search(cw, proc, out: Path) -> tuple[dict, float]:
    """Index every exhibit's descriptor, save and reload the index, and search it for the first
    exhibit: shortlist by descriptor, re-rank by CMC."""
    import numpy as np

    from .features.describe import describe, descriptor_info
    from .index import ScanIndex, search

    t0 = time.perf_counter()
    info = descriptor_info()
    index = ScanIndex(info["dim"], descriptor=info)
    index.add(np.arange(len(proc)), np.array([describe(p) for p in proc]))
    path = index.save(out / "index.bxi")
    index = ScanIndex.load(path, descriptor=info)
    hits = search(index, proc[0], k=5, shortlist=6, scans=dict(enumerate(proc)), exclude=[0])
    truth = [e["firearm_truth"] for e in cw.exhibits]
    rows = [{"rank": r + 1, "exhibit": cw.exhibits[h.id]["id"], "cmc_count": h.cmc_count,
             "score": round(h.score, 3), "descriptor_score": round(h.descriptor_score, 3),
             "descriptor_rank": h.descriptor_rank + 1, "same_gun_truth": truth[h.id] == truth[0]}
            for r, h in enumerate(hits)]
    return {"query": cw.exhibits[0]["id"], "index": str(path), "candidates": rows}, time.perf_counter() - t0


def _demo_link(cw, proc, out: Path, shortlist: int = 3) -> tuple[dict, float]:
    """Link the casework: each exhibit's descriptor shortlist verified by CMC, the results in a
    LinkageGraph; same-gun groups, linked scenes, leads from the test fires, 16.4.2."""
    import os

    import numpy as np

    from .features.comparison import compare_many
    from .features.describe import describe, descriptor_info
    from .graph import LinkageGraph
    from .index import ScanIndex

    t0 = time.perf_counter()
    info = descriptor_info()
    vecs = np.array([describe(p) for p in proc])
    index = ScanIndex(info["dim"], descriptor=info)
    index.add(np.arange(len(proc)), vecs)
    _, near = index.search(vecs, shortlist + 1)
    pairs = sorted({tuple(sorted((q, int(c)))) for q in range(len(proc)) for c in near[q] if c >= 0 and c != q})
    res = compare_many([(proc[i], proc[j]) for i, j in pairs], n_jobs=min(2, os.cpu_count() or 1), progress=False)
    ids = [e["id"] for e in cw.exhibits]
    graph = LinkageGraph.from_casework(cw, [(ids[i], ids[j], r) for (i, j), r in zip(pairs, res)])
    graph.export(out / "links.graphml")
    graph.to_html(out / "links.html", title="ballistix demo: simulated casework")
    truth = {e["id"]: e["firearm_truth"] for e in cw.exhibits}
    groups = []
    for g in graph.group_summaries(min_size=2):
        guns = {truth[e] for e in g["exhibits"]}
        groups.append({"exhibits": len(g["exhibits"]), "scenes": " ".join(g["scenes"]) or "-",
                       "dates": f"{g['first_date']}..{g['last_date']}" if g["first_date"] else "-",
                       "firearm": g["firearm"] or "not recovered", "true_guns": " ".join(sorted(guns))})
    links = sorted(tuple(sorted(e)) for e in graph.scene_links().edges())
    test_fires = [e["id"] for e in cw.exhibits if e["kind"] == "test_fire"]
    leads = [{"exhibit": r["exhibit"], "kind": r["kind"], "firearm": r["firearm"] or "-",
              "linked_scenes": " ".join(r["linked_scenes"]) or "-", "best_cmc": r["best_cmc"]}
             for r in graph.leads(test_fires)]
    ind = graph.indicator_16_4_2()
    report = {"compared_pairs": len(pairs), "groups": groups, "linked_scenes": [list(p) for p in links],
              "linked_scenes_truth": [list(p) for p in sorted(cw.linked_scenes())], "leads": leads,
              "indicator_16_4_2": ind["value"], "indicator_16_4_2_truth": cw.indicator_16_4_2(),
              "graph": str(out / "links.graphml"), "view": str(out / "links.html")}
    return report, time.perf_counter() - t0


def _print_linkage(r: dict, dt: float) -> None:
    print()
    print(f"linkage: {r['compared_pairs']} shortlisted pairs compared; same-gun groups of 2+ exhibits:")
    _print_table(r["groups"])
    found, truth = {tuple(p) for p in r["linked_scenes"]}, {tuple(p) for p in r["linked_scenes_truth"]}
    print(f"linked scenes: {', '.join('-'.join(p) for p in sorted(found)) or 'none'} "
          f"({len(found & truth)} of {len(truth)} true scene links found, {len(found - truth)} false)")
    print("leads from the test fires of recovered guns:")
    _print_table(r["leads"]) if r["leads"] else print("  none")
    print(f"indicator 16.4.2: {r['indicator_16_4_2']:.0%} of recovered firearms traced; graph: {r['graph']}, "
          f"view: {r['view']} ({dt:.1f} s)")


def _store(args):
    from .store import CaseStore

    return CaseStore(args.store, **({"shortlist": args.shortlist} if getattr(args, "shortlist", None) else {}))


def cmd_ingest(args) -> int:
    """Add scan files to a case store (created if new); bad files are reported and skipped."""
    meta = {k: v for k, v in (("scene_id", args.scene), ("firearm_id", args.firearm), ("kind", args.kind),
                              ("date", args.date), ("calibre", args.calibre)) if v}
    with _store(args) as st:
        r = st.ingest(args.files, meta=meta, progress=not args.json)
        total = len(st)
    for source, reason in r.failed:
        print(f"error: {reason}" if source in reason else f"error: {source}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({**r.to_dict(), "store": str(args.store), "exhibits": total}, indent=2))
    else:
        print(f"{len(r.added)} added, {len(r.existing)} already in the store, {len(r.failed)} failed; "
              f"{total} exhibits in {args.store}")
    return EXIT_BAD_INPUT if r.failed else 0


def cmd_search(args) -> int:
    """Find the exhibits of a store most likely fired by the same gun as a scan (or a stored exhibit)."""
    with _store(args) as st:
        cands = st.search(args.query, k=args.k, n_jobs=args.jobs)
    if args.json:
        print(json.dumps({"query": args.query, "store": str(args.store), "candidates": cands}, indent=2))
    else:
        _print_table([{**c, "score": round(c["score"], 3), "descriptor_score": round(c["descriptor_score"], 3),
                       "identification": "yes" if c["cmc_count"] >= 6 else "no"} for c in cands])
    return 0


def cmd_compare(args) -> int:
    """Compare two scan files: preprocess both, Congruent Matching Cells, decision at 6 CMCs."""
    from .features.comparison import compare
    from .features.preprocessing import preprocess
    from .io import read_scan

    a, b = (preprocess(read_scan(f)) for f in (args.a, args.b))
    r = compare(a, b)
    out = {"a": args.a, "b": args.b, "cmc_count": r.cmc_count, "score": r.score, "rotation_deg": r.rotation_deg,
           "translation_m": [float(t) for t in r.translation], "cells": r.n_cells,
           "decision": "identification" if r.cmc_count >= 6 else "no identification"}
    if args.json:
        print(json.dumps({**out, "comparison": r.to_dict()}, indent=2, default=str))
    else:
        _print_table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()
                       if k != "translation_m"}])
    return 0


def cmd_link(args) -> int:
    """Compare every new exhibit of a store with its shortlist, and write the linkage graph."""
    with _store(args) as st:
        n = st.link_new(n_jobs=args.jobs, progress=not args.json)
        g = st.graph(threshold=args.threshold)
    out = Path(args.out)
    g.to_html(out) if out.suffix.lower() == ".html" else g.export(out)
    groups = g.group_summaries(min_size=2)
    if args.json:
        print(json.dumps({"comparisons_recorded": n, "groups": groups, "out": str(out)}, indent=2))
    else:
        print(f"{n} comparisons recorded; {len(groups)} same-gun groups of 2+ exhibits; wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ballistix", description="Ballistic matching and firearm-linkage analysis.")
    p.add_argument("--version", action="version", version=f"ballistix {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="simulate labelled casework, write it as x3p, read it back, summarise",
                       description=cmd_demo.__doc__)
    d.add_argument("--out", default="ballistix-demo", help="output folder (default: ./ballistix-demo)")
    d.add_argument("--firearms", type=int, default=4, help="number of guns (default 4)")
    d.add_argument("--scenes", type=int, default=6, help="number of crime scenes (default 6)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--resolution", default="standard", choices=["fast", "standard", "full"],
                   help="scan resolution: fast 12.5 um, standard 6.25 um, full 3.125 um (default standard)")
    d.add_argument("--json", action="store_true", help="print JSON instead of tables")
    d.set_defaults(func=cmd_demo)

    ing = sub.add_parser("ingest", help="add scan files to a case store", description=cmd_ingest.__doc__)
    ing.add_argument("files", nargs="+")
    ing.add_argument("--store", required=True, help="the store's folder (created if new)")
    ing.add_argument("--scene", help="scene id of these cartridge cases")
    ing.add_argument("--firearm", help="firearm id, for test fires")
    ing.add_argument("--kind", choices=["scene", "test_fire"])
    ing.add_argument("--date")
    ing.add_argument("--calibre")
    ing.add_argument("--json", action="store_true")
    ing.set_defaults(func=cmd_ingest)

    se = sub.add_parser("search", help="search a case store for a scan or an exhibit", description=cmd_search.__doc__)
    se.add_argument("query", help="a scan file, or the id of an exhibit in the store")
    se.add_argument("--store", required=True)
    se.add_argument("-k", type=int, default=20, help="candidates to list (default 20)")
    se.add_argument("--shortlist", type=int, help="candidates verified by CMC (default: the store's, 50)")
    se.add_argument("--jobs", type=int, default=1)
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search)

    co = sub.add_parser("compare", help="compare two scan files (CMC)", description=cmd_compare.__doc__)
    co.add_argument("a")
    co.add_argument("b")
    co.add_argument("--json", action="store_true")
    co.set_defaults(func=cmd_compare)

    li = sub.add_parser("link", help="link new exhibits of a store and write the graph", description=cmd_link.__doc__)
    li.add_argument("--store", required=True)
    li.add_argument("--out", required=True, help="graph file: .graphml, .gexf, .json or .html (interactive view)")
    li.add_argument("--threshold", type=int, default=6)
    li.add_argument("--shortlist", type=int, help="candidates compared per new exhibit (default: the store's, 50)")
    li.add_argument("--jobs", type=int, default=1)
    li.add_argument("--json", action="store_true")
    li.set_defaults(func=cmd_link)

    i = sub.add_parser("info", help="read scans (.x3p, .png, .tif, .npz) and print what is in them")
    i.add_argument("files", nargs="+")
    i.add_argument("--lenient", action="store_true", help="warn instead of failing on checksum mismatches")
    i.add_argument("--pixel-size-um", type=float, help="pixel size of 2-D images that do not carry one")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BallistixError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
