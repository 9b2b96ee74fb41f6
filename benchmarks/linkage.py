"""Crime-linkage graph: group quality on simulated casework and on the real Fadul scans, and graph scale.

    python -m benchmarks.linkage [--jobs 2] [--scenes 150 --firearms 40] [--shortlist 10] [--scale 1000000]

1. Simulated casework (hundreds of scenes, tens of guns, realistic
   settings), run through the whole pipeline a lab would run: every exhibit
   preprocessed and described, each searched in a `ScanIndex` of all the
   others, its descriptor shortlist verified with `compare` (CMC), the
   comparisons put in a `LinkageGraph`. Same-gun groups against the truth:
   pairwise precision and recall and the adjusted Rand index under the
   default rule (LR >= 100 from the calibration that applies) and under count
   rules of 3-12 CMCs (a lab's explicit choice); then false links injected (random different-gun pairs given CMC
   counts of 6-30): how many true groups merge with the chaining rule and
   with plain connected components.
2. The 40 real Fadul scans: all 780 pairs compared and grouped; the groups
   against the ten slides.
3. Scale: a synthetic graph of ``--scale`` exhibits (guns of 1-8 exhibits,
   same-gun links, one different-gun non-link per exhibit): time and memory
   to build, group, summarise and export.

Writes benchmarks/results/linkage.json and linkage.png, prints tables.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np

import ballistix as bx
from ballistix.evaluation import grouping_scores
from ballistix.features.describe import descriptor_info
from ballistix.graph.linkage import CONVENTIONAL_CMC_RULE

from ._common import RESULTS, SHARED_DATA, table, write_json
from .index_scale import rss_mb

THRESHOLDS = list(range(3, 13))


def casework_pipeline(n_firearms: int, n_scenes: int, shortlist: int, jobs: int, seed: int, difficulty: str):
    t0 = time.perf_counter()
    cw = bx.datasets.simulate_casework(
        n_firearms=n_firearms, n_scenes=n_scenes, seed=seed, difficulty=difficulty, resolution="standard"
    )
    procs = [bx.preprocess(s) for s in cw.scans]
    t_sim = time.perf_counter() - t0
    ids = [e["id"] for e in cw.exhibits]
    info = descriptor_info()
    index = bx.ScanIndex(info["dim"], descriptor=info)
    index.add(np.arange(len(procs)), np.array([bx.describe(p) for p in procs]))
    pairs = set()
    for q in range(len(procs)):
        _, got = index.search(bx.describe(procs[q])[None], shortlist + 1)
        pairs |= {tuple(sorted((q, int(c)))) for c in got[0] if c >= 0 and c != q}
    pairs = sorted(pairs)
    t1 = time.perf_counter()
    res = bx.compare_many([(procs[i], procs[j]) for i, j in pairs], n_jobs=jobs, progress=False)
    t_cmp = time.perf_counter() - t1
    comps = [(ids[i], ids[j], r) for (i, j), r in zip(pairs, res)]
    truth = {e["id"]: e["firearm_truth"] for e in cw.exhibits}
    return (
        cw,
        comps,
        truth,
        {
            "exhibits": len(ids),
            "scenes": len(cw.scenes),
            "firearms": len(cw.firearms),
            "compared_pairs": len(pairs),
            "simulate_preprocess_seconds": t_sim,
            "compare_seconds": t_cmp,
            "difficulty": difficulty,
            "shortlist": shortlist,
        },
    )


def plain_components(g: bx.LinkageGraph) -> list[set]:
    return [set(c) for c in nx.connected_components(g.link_graph())]


def casework_quality(cw, comps, truth, seed: int, n_false: int) -> dict:
    out = {"thresholds": {}}
    for t in ["LR>=100", *THRESHOLDS]:
        g = bx.LinkageGraph.from_casework(cw, comps, **({} if t == "LR>=100" else {"count_rule": t}))
        out["thresholds"][t] = {
            "rule": grouping_scores(g.groups(), truth),
            "components": grouping_scores(plain_components(g), truth),
            "weak_links": len(g.weak_links()),
            "candidates": len(g.candidates()),
        }
    # injected false links (as CMC counts, under a 6-CMC count rule): what the chaining rule protects
    rng = np.random.default_rng(seed)
    ids = sorted(truth)
    g = bx.LinkageGraph.from_casework(cw, comps, count_rule=CONVENTIONAL_CMC_RULE)
    injected = []
    while len(injected) < n_false:
        a, b = rng.choice(len(ids), 2, replace=False)
        if truth[ids[a]] != truth[ids[b]]:
            injected.append((ids[a], ids[b], int(rng.integers(CONVENTIONAL_CMC_RULE, 31))))
    trials = []
    for a, b, c in injected:  # one false link at a time
        h = bx.LinkageGraph.from_casework(cw, comps, count_rule=CONVENTIONAL_CMC_RULE)
        h.add_comparison(a, b, c)
        trials.append(
            (
                grouping_scores(h.groups(), truth)["merged_groups"],
                grouping_scores(plain_components(h), truth)["merged_groups"],
            )
        )
    base = (
        grouping_scores(g.groups(), truth)["merged_groups"],
        grouping_scores(plain_components(g), truth)["merged_groups"],
    )
    for a, b, c in injected:  # all at once
        g.add_comparison(a, b, c)
    out["injected"] = {
        "n": n_false,
        "cmc_range": [CONVENTIONAL_CMC_RULE, 30],
        "merged_groups_before": {"rule": base[0], "components": base[1]},
        "single_link_trials_with_a_merge": {
            "rule": sum(t[0] > base[0] for t in trials),
            "components": sum(t[1] > base[1] for t in trials),
        },
        "all_at_once": {
            "rule": grouping_scores(g.groups(), truth),
            "components": grouping_scores(plain_components(g), truth),
        },
    }
    return out


def fadul(jobs: int) -> dict | None:
    if not (SHARED_DATA / "fadul").is_dir():
        return None
    labels = {r["file"].split("/")[-1][:-4]: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))}
    names = sorted(p.stem for p in (SHARED_DATA / "fadul").glob("*.x3p"))
    scans = [bx.preprocess(bx.read_scan(SHARED_DATA / "fadul" / f"{n}.x3p")) for n in names]
    pairs = list(itertools.combinations(range(len(names)), 2))
    t = time.perf_counter()
    res = bx.compare_many([(scans[i], scans[j]) for i, j in pairs], n_jobs=jobs, progress=False)
    dt = time.perf_counter() - t
    g = bx.LinkageGraph.from_comparisons([(names[i], names[j], r) for (i, j), r in zip(pairs, res)])  # LR rule
    truth = {n: labels[n] for n in names}
    slides = {}
    for n, s in truth.items():
        slides.setdefault(s, set()).add(n)
    groups = g.groups()
    return {
        "compare_seconds": dt,
        "groups": [sorted(s) for s in groups],
        "equals_slides": sorted(map(sorted, groups)) == sorted(map(sorted, slides.values())),
        "scores": grouping_scores(groups, truth),
        "weak_links": g.weak_links(),
    }


def scale(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 9)))
    sizes[-1] -= sum(sizes) - n
    rss0 = rss_mb()
    t = time.perf_counter()
    g = bx.LinkageGraph()
    ids = [f"E{i:07d}" for i in range(n)]
    k = 0
    for gi, s in enumerate(sizes):
        scene = f"S{gi:07d}"
        for e in ids[k : k + s]:
            g.add_exhibit(e, scene=scene)
        for a, b in itertools.combinations(ids[k : k + s], 2):
            g.add_comparison(a, b, 20)
        k += s
    other = rng.integers(0, n, n)
    for i, j in enumerate(other):
        if i != j:
            g.add_comparison(ids[i], ids[int(j)], 1)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    groups = g.groups()
    t_group = time.perf_counter() - t
    t = time.perf_counter()
    summaries = g.group_summaries(min_size=2)
    t_sum = time.perf_counter() - t
    out = {
        "exhibits": n,
        "nodes": g.nx.number_of_nodes(),
        "edges": g.nx.number_of_edges(),
        "groups": len(groups),
        "build_seconds": t_build,
        "group_seconds": t_group,
        "summaries_seconds": t_sum,
        "summaries": len(summaries),
        "rss_growth_mb": rss_mb() - rss0,
        "export": {},
    }
    with tempfile.TemporaryDirectory() as d:
        for suffix in (".json", ".graphml"):
            t = time.perf_counter()
            p = g.export(Path(d) / f"g{suffix}")
            out["export"][suffix] = {"seconds": time.perf_counter() - t, "mb": p.stat().st_size / 2**20}
    return out


def figure(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    th = out["casework"]["quality"]["thresholds"]
    ts = sorted((t for t in th if t.isdigit()), key=int)
    for key, style in (("rule", "-"), ("components", "--")):
        ax.plot(
            [int(t) for t in ts],
            [th[t][key]["precision"] for t in ts],
            "o" + style,
            ms=3,
            label=f"precision ({'chaining rule' if key == 'rule' else 'connected components'})",
        )
        ax.plot(
            [int(t) for t in ts],
            [th[t][key]["recall"] for t in ts],
            "s" + style,
            ms=3,
            label=f"recall ({'chaining rule' if key == 'rule' else 'connected components'})",
        )
    if "LR>=100" in th:
        lr = th["LR>=100"]["rule"]
        ax.axhline(lr["precision"], color="tab:green", lw=0.8, ls=":", label="precision, default LR >= 100")
        ax.axhline(lr["recall"], color="tab:red", lw=0.8, ls=":", label="recall, default LR >= 100")
    ax.set_xlabel("CMC count rule for a link")
    ax.set_ylabel("pairwise precision / recall of same-gun groups")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    c = out["casework"]["run"]
    ax.set_title(
        f"simulated casework: {c['exhibits']} exhibits, {c['scenes']} scenes, {c['firearms']} guns ({c['difficulty']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_scale(s: dict) -> None:
    print(
        f"scale: {s['exhibits']:,} exhibits, {s['edges']:,} edges: build {s['build_seconds']:.0f} s, "
        f"group {s['group_seconds']:.1f} s, summaries {s['summaries_seconds']:.1f} s, "
        f"RSS +{s['rss_growth_mb']:.0f} MB; export "
        + ", ".join(f"{k} {v['seconds']:.0f} s ({v['mb']:.0f} MB)" for k, v in s["export"].items())
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--firearms", type=int, default=40)
    p.add_argument("--scenes", type=int, default=150)
    p.add_argument("--shortlist", type=int, default=10)
    p.add_argument("--difficulty", default="realistic")
    p.add_argument("--false-links", type=int, default=50)
    p.add_argument("--scale", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--scale-only", action="store_true", help="only the scale part (to linkage_scale.json)")
    args = p.parse_args(argv)
    out = {"params": vars(args)}
    if args.scale_only:
        s = out["scale"] = scale(args.scale, args.seed)
        path = write_json("linkage_scale", out)
        _print_scale(s)
        print(f"\nwrote {path}")
        return 0
    cw, comps, truth, run = casework_pipeline(
        args.firearms, args.scenes, args.shortlist, args.jobs, args.seed, args.difficulty
    )
    out["casework"] = {"run": run, "quality": casework_quality(cw, comps, truth, args.seed, args.false_links)}
    if not args.skip_real:
        out["fadul"] = fadul(args.jobs)
    if args.scale:
        out["scale"] = scale(args.scale, args.seed)
    path = write_json("linkage", out)
    figure(out, RESULTS / "linkage.png")

    q = out["casework"]["quality"]
    rows = [
        [
            t,
            r["rule"]["precision"],
            r["rule"]["recall"],
            r["rule"]["adjusted_rand_index"],
            r["components"]["precision"],
            r["components"]["recall"],
            r["weak_links"],
        ]
        for t, r in q["thresholds"].items()
    ]
    print(
        f"simulated casework: {run['exhibits']} exhibits, {run['scenes']} scenes, {run['firearms']} guns, "
        f"{run['compared_pairs']} pairs compared (shortlist {run['shortlist']}, {run['difficulty']})"
    )
    print(
        table(
            rows, ["rule", "precision", "recall", "ARI", "precision (components)", "recall (components)", "weak links"]
        )
    )
    inj = q["injected"]
    print(
        f"\n{inj['n']} false links (CMC {inj['cmc_range'][0]}-{inj['cmc_range'][1]}) injected one at a time: "
        f"a true-group merge in "
        f"{inj['single_link_trials_with_a_merge']['rule']} with the chaining rule, "
        f"{inj['single_link_trials_with_a_merge']['components']} with plain components; all at once: "
        f"precision {inj['all_at_once']['rule']['precision']:.3f} vs "
        f"{inj['all_at_once']['components']['precision']:.3f}"
    )
    if out.get("fadul"):
        f = out["fadul"]
        print(
            f"Fadul: {len(f['groups'])} groups, equal to the ten slides: {f['equals_slides']}; "
            f"precision {f['scores']['precision']:.3f}, recall {f['scores']['recall']:.3f}"
        )
    if out.get("scale"):
        s = out["scale"]
        _print_scale(s)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
