"""Run the benchmarks and print one summary table.

    python -m benchmarks [--quick | --full] [--jobs 2] [names ...] [--update-readme]
    ballistix bench ...            (the same, from a source checkout)

``--quick`` runs every benchmark at small sizes and leaves out the slow
real-scan parts (all 780 Fadul pairs) except the speed pair (minutes;
numbers are rough),
the default sizes are each benchmark's own, and ``--full`` gives the sizes
quoted in the README (hours on 2 cores). Each benchmark writes
benchmarks/results/<name>.json (and PNG figures); this command then reads
them all, prints the summary, writes benchmarks/results/summary.json and, with
``--update-readme``, puts the table into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time

from ballistix.graph.linkage import CONVENTIONAL_CMC_RULE as RULE

from ._common import RESULTS, ROOT, machine, table, write_json

#: benchmark -> (quick arguments, full arguments); default arguments are the benchmark's own
SIZES: dict[str, tuple[list[str], list[str]]] = {
    "realism": (["--guns", "4"], []),
    "cmc_speed": (["--repeat", "1"], ["--repeat", "5"]),
    "cmc_accuracy": (
        ["--skip-real", "--sim-guns", "6", "--sim-shots", "3", "--knm-per-km", "3"],
        ["--sim-guns", "100", "--sim-shots", "5", "--knm-per-km", "10"],
    ),
    "retrieval": (
        ["--skip-real", "--sim-sizes", "200", "--rerank-queries", "2", "--km-pairs", "100"],
        ["--sim-sizes", "1000", "10000", "--rerank-queries", "20", "--km-pairs", "800"],
    ),
    "index_scale": (
        ["--sizes", "10000", "100000", "--queries", "100"],
        ["--sizes", "10000", "100000", "1000000", "--also", "HNSW32"],
    ),
    "linkage": (
        ["--skip-real", "--firearms", "8", "--scenes", "20", "--shortlist", "5", "--scale", "100000"],
        ["--shortlist", "8"],
    ),
    "evidence": (
        ["--skip-real", "--extra", "sim-realistic", "--extra-guns", "6", "--extra-shots", "3"],
        ["--write-default"],
    ),
    "store": (["--exhibits", "12"], ["--exhibits", "300"]),
    "graph_scale": (["--quick"], ["--exhibits", "1000000", "--read"]),
    "store_graph": (["--quick"], ["--exhibits", "20000", "100000", "200000", "--all-up-to", "100000"]),
    "populations": (["--quick", "--skip-real"], []),
    "cross_population": (["--quick", "--skip-real"], ["--store", "batch", "subclass"]),
    "skimage_choices": (["--quick"], []),
    "verify_scale": (["--quick", "--skip-real"], []),
    "backlog": (["--old-guns", "8", "--new", "4", "--shortlist", "5", "--verify-top", "2"], []),
    "first_stage": (["--quick", "--skip-real"], []),
    "store_concurrency": (["--quick"], []),
    "marks": (["--quick", "--skip-real"], ["--guns", "16", "--shots", "4", "--knm-per-km", "5"]),
}
TAKES_JOBS = {
    "cmc_accuracy",
    "retrieval",
    "linkage",
    "evidence",
    "store",
    "populations",
    "cross_population",
    "verify_scale",
    "backlog",
    "first_stage",
    "marks",
}


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _fmt(v, spec=".3g"):
    return "n/a" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def summary_rows() -> list[list[str]]:
    """Headline numbers from the result files present: [benchmark, measure, value, date]."""
    rows = []

    def load(name):
        p = RESULTS / f"{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def add(name, measure, value, d):
        rows.append([name, measure, value, _get(d, "machine", "date", default="?")[:10]])

    if d := load("realism"):
        r = [
            v
            for sub in _get(d, "ratios_sim_over_real", default={}).values()
            for k, v in sub.items()
            if k not in ("skewness",)
        ]
        add("realism", "simulated / real statistics (range)", f"{min(r):.2f}-{max(r):.2f}" if r else "n/a", d)
    if d := load("cmc_accuracy"):
        for mode in ("reference", "full"):
            c = _get(d, "real", "modes", mode, "cmc_count")
            if c:
                add(
                    "cmc_accuracy",
                    f"Fadul 780 pairs, {mode} rotation: AUC / FP / FN at {RULE} CMCs",
                    f"{_fmt(c['auc'])} / {c['at_threshold']['false_positives']} / "
                    f"{c['at_threshold']['false_negatives']}",
                    d,
                )
        rho = _get(d, "real", "modes", "reference", "spearman_vs_nist")
        if rho is not None:
            add(
                "cmc_accuracy",
                "Spearman vs NIST per-pair counts, reference grid (all / known matches)",
                f"{_fmt(rho)} / {_fmt(_get(d, 'real', 'modes', 'reference', 'spearman_vs_nist_km'))}",
                d,
            )
    for name in ("cmc_accuracy_simulated", "cmc_accuracy"):
        if (d := load(name)) and (s := _get(d, "simulated")):
            c = s["cmc_count"]
            add(
                name,
                f"simulated realistic-hard {s['n_km']} KM / {s['n_knm']} KNM: AUC / EER / FPR / FNR at {RULE}",
                f"{_fmt(c['auc'])} / {_fmt(c['eer'])} / {_fmt(c['at_threshold']['false_positive_rate'])} / "
                f"{_fmt(c['at_threshold']['false_negative_rate'])}",
                d,
            )
            break
    if d := load("cmc_speed"):
        for mode, v in _get(d, "modes", default={}).items():
            add(
                "cmc_speed",
                f"{mode}: s per pair (one core)",
                f"{_fmt(v['seconds'])} ({v['pairs_per_second']:.2f}/s)",
                d,
            )
    if d := (load("retrieval") or load("retrieval_simulated")):
        if _get(d, "real"):
            add(
                "retrieval",
                "Fadul descriptor R@10 / top-1; re-ranked top-1",
                f"{_fmt(_get(d, 'real', 'descriptor', 'recall_at', '10'))} / "
                f"{_fmt(_get(d, 'real', 'descriptor', 'top1'))}; {_fmt(_get(d, 'real', 'reranked', 'top1'))}",
                d,
            )
        for size, s in _get(d, "simulated", default={}).items():
            add(
                "retrieval",
                f"simulated {size}: descriptor R@200; shortlist holds CMC-identified",
                f"{_fmt(_get(s, 'descriptor', 'recall_at', '200'))}; {_fmt(s.get('shortlist200_holds_identified'))}",
                d,
            )
    if d := load("index_scale"):
        sizes = _get(d, "sizes", default={})
        if sizes:
            n = max(sizes, key=int)
            auto = next((v for v in _get(sizes[n], "approx", default={}).values() if v.get("auto")), None)
            if not auto and _get(sizes[n], "exact"):  # small sizes: the automatic choice is exact search
                e = sizes[n]["exact"]
                add(
                    "index_scale",
                    f"{int(n):,} vectors, {e['factory']} (exact, automatic at this size): p50 ms",
                    _fmt(e.get("p50_ms")),
                    d,
                )
            if auto:  # at the index's default setting (refine 25 x k, nprobe 64, ef 200)
                sweep = auto.get("sweep", {})
                knob = {"refine_factor": "25", "nprobe": "64", "ef_search": "200"}.get(auto.get("knob"))
                v = sweep.get(knob) or auto
                add(
                    "index_scale",
                    f"{int(n):,} vectors, {auto['factory']} (default setting): p50 ms / recall@200",
                    f"{_fmt(v.get('p50_ms'))} / {_fmt(v.get('recall_at_k'))}",
                    d,
                )
    if d := load("linkage"):
        for key, what in (("LR>=100", "the default rule, LR >= 100"), (str(RULE), f"a {RULE}-CMC count rule")):
            q = _get(d, "casework", "quality", "thresholds", key, "rule")
            if q:
                add(
                    "linkage",
                    f"simulated casework, {what}: precision / recall",
                    f"{_fmt(q['precision'])} / {_fmt(q['recall'])}",
                    d,
                )
        m = _get(d, "casework", "quality", "injected", "single_link_trials_with_a_merge")
        if m:
            add(
                "linkage",
                "single false links that merged groups (rule / components)",
                f"{m['rule']} / {m['components']} of {_get(d, 'casework', 'quality', 'injected', 'n')}",
                d,
            )
        if _get(d, "fadul", "equals_slides") is not None:
            add("linkage", "Fadul groups equal the ten slides", str(d["fadul"]["equals_slides"]), d)
    if d := load("evidence"):
        for pop, r in _get(d, "populations", default={}).items():
            m = r["misleading"]
            add(
                "evidence",
                f"{pop} ({r['n_same']} KM / {r['n_different']} KNM), CV by gun: Cllr / Cllr-min / "
                f"misleading beyond 100",
                f"{_fmt(r['cllr'])} / {_fmt(r['cllr_min'])} / {m['strong_for_same'] + m['strong_for_different']}",
                d,
            )
    if d := load("populations"):
        for pop, r in _get(d, "populations", default={}).items():
            add(
                "populations",
                f"{pop}: different-gun pairs at >= {RULE} CMCs within / across batch; AUC raw / cohort-normalised",
                f"{r[f'different_at_{RULE}_within_batch']}/{r['n_different_within_batch']} / "
                f"{r[f'different_at_{RULE}_across_batch']}/{r['n_different_across_batch']}; "
                f"{_fmt(_get(r, 'auc', 'cmc'))} / {_fmt(_get(r, 'auc', d.get('chosen_normalisation', 'cmc_excess')))}",
                d,
            )
    if d := load("cross_population"):
        for rule, u in _get(d, "unseen", default={}).items():
            value = (
                f"{u['false_links']}/{u['n_different']} ({_fmt(u['false_link_upper95'])})"
                f" / {_fmt(u['linked_same_share'])}"
            )
            add(
                "cross_population",
                f"{rule} on populations it has not seen: false links (95% bound) / same-gun linked",
                value,
                d,
            )
        for kind, r in _get(d, "store", default={}).items():
            add(
                "cross_population",
                f"case store on simulated {kind}: false links / same-gun pairs grouped",
                f"{r['false_links']} / {r['same_gun_pairs_grouped']} of {r['same_gun_pairs']}",
                d,
            )
    if d := load("skimage_choices"):
        dec = _get(d, "decision", default={})
        add(
            "skimage_choices",
            "scikit-image instead of our circle fit / polar resampling / filters",
            " / ".join(
                "n/a" if k not in dec else "switch" if dec[k]["switch"] else "keep ours"
                for k in ("circle", "polar", "filters")
            ),
            d,
        )
    if d := (load("graph_scale") or load("graph_scale_quick")):
        s, f = _get(d, "steps", default={}), _get(d, "files_mb", default={})
        add(
            "graph_scale",
            f"{_get(d, 'graph', 'exhibits', default=0):,} exhibits: build / GraphML export / report: s (peak GB)",
            " / ".join(
                f"{_fmt(_get(s, k, 'seconds'))} ({_fmt((_get(s, k, 'peak_rss_mb') or 0) / 1024, '.2f')})"
                for k in ("build", "export .graphml", "report")
            )
            + f"; report {_fmt(f.get('report.html'))} MB",
            d,
        )
    if d := (load("store_graph") or load("store_graph_quick")):
        for row in _get(d, "results", default=[]):
            st, modes = row["store"], row["modes"]
            add(
                "store_graph",
                f"store of {st['exhibits']:,} exhibits, {st['comparisons']:,} comparisons: graph() of all / "
                f"of the evidence: s (peak GB)",
                " / ".join(
                    "-"
                    if "graph_seconds" not in modes.get(m, {})
                    else f"{_fmt(modes[m]['graph_seconds'])} ({_fmt(modes[m]['graph_peak_rss_mb'] / 1024, '.2f')})"
                    for m in ("all", "evidence")
                ),
                d,
            )
    if d := load("verify_scale"):
        for name in ("fadul", "simulated"):
            rec = _get(d, name, "recommended", "precheck")
            if rec:
                add(
                    "verify_scale",
                    f"{name}, 200-shortlist, 2 cores: largest verify_top within 15 s / partners kept / s a query",
                    f"{rec['verify_top']} / {_fmt(rec['kept_share'])} / "
                    f"{_fmt(rec.get('seconds_on_jobs_with_overhead', rec['seconds_on_jobs']))}",
                    d,
                )
    if d := load("backlog"):
        modes, ways = d.get("modes", {}), ("one process", "process pool", "Dask cluster")
        add(
            "backlog",
            f"link_new of {_get(d, 'store', 'backlog')} new exhibits x shortlist {_get(d, 'params', 'shortlist')}: "
            "pairs/s one process / pool / Dask (2 workers); identical",
            " / ".join(_fmt(_get(modes, m, "pairs_per_second")) for m in ways) + f"; {d.get('identical')}",
            d,
        )
    if d := load("store_scale"):
        b, f = d.get("build", {}), d.get("first_stage", {})
        add(
            "store_scale",
            f"{b.get('exhibits', 0):,} exhibits: import /s, disk GB, open s, peak RSS GB",
            f"{_fmt(b.get('import_per_second'))}, {_fmt(b.get('disk_gb'))}, {_fmt(f.get('open_seconds'))}, "
            f"{_fmt((f.get('peak_rss_mb') or 0) / 1024)}",
            d,
        )
        add(
            "store_scale",
            "first stage p50 ms: compact / re-ranked 10 x k (cold); Fadul partners kept of the full shortlist",
            f"{_fmt(_get(f, 'first_stage_ms', 'p50'))} / {_fmt(_get(f, 'first_stage_refined_ms', 'p50'))}; "
            f"{_fmt(_get(f, 'partners_fadul', 'compact_keeps_of_full'))} / "
            f"{_fmt(_get(f, 'partners_fadul', 'refined_keeps_of_full'))}",
            d,
        )
        secs = [q["seconds"] for q in _get(d, "verified", "queries", default=[])]
        all_secs = [q["seconds"] for q in _get(d, "verified_all", "queries", default=[])]
        if secs or all_secs:
            add(
                "store_scale",
                "verified search s: verify_top=20 / all 200 of the shortlist (2 cores)",
                f"{_fmt(min(secs)) if secs else 'n/a'}-{_fmt(max(secs)) if secs else 'n/a'} / "
                f"{_fmt(min(all_secs)) if all_secs else 'n/a'}-{_fmt(max(all_secs)) if all_secs else 'n/a'}",
                d,
            )
    if d := load("first_stage"):
        res = d.get("results", {})
        for where in ("all sets in one index", "batch", "fadul"):
            if where in res.get("v2", {}):
                add(
                    "first_stage",
                    f"{where}: first same-gun partner at rank 1 / in top 10, descriptor v1 -> v2",
                    " -> ".join(
                        f"{_fmt(_get(res, v, where, 'rank1'))} / {_fmt(_get(res, v, where, 'top10'))}"
                        for v in ("v1", "v2")
                    ),
                    d,
                )
    if d := load("store_concurrency"):
        for backend, by_n in _get(d, "runs", default={}).items():
            ns = sorted(by_n, key=int)
            add(
                "store_concurrency",
                f"{backend}, {'/'.join(ns)} clients: ingest exhibits/s; link distinct comparisons/s "
                f"(recorded/distinct); searches/s; nothing lost",
                " / ".join(_fmt(_get(by_n, n, "ingest", "exhibits_per_second")) for n in ns)
                + "; "
                + " / ".join(
                    f"{_fmt(_get(by_n, n, 'link', 'comparisons_per_second'))} "
                    f"({_get(by_n, n, 'link', 'recorded_sum')}/{_get(by_n, n, 'link', 'distinct_comparisons')})"
                    for n in ns
                )
                + "; "
                + " / ".join(_fmt(_get(by_n, n, "search", "searches_per_second")) for n in ns)
                + f"; {all(_get(by_n, n, ph, 'ok') for n in ns for ph in ('ingest', 'link', 'search'))}",
                d,
            )
    if d := load("marks"):
        for view, v in _get(d, "views", default={}).items():
            bf, fu = v.get("breech_face", {}), v.get("fused", {})
            add(
                "marks",
                f"sim. realistic-hard, {view} view ({v.get('n_same')} KM / {v.get('n_different')} KNM), CV by gun: "
                f"KM found at 0 FP, BF alone / fused; Cllr BF / fused",
                f"{_fmt(bf.get('found_at_zero_fp'))} / {_fmt(fu.get('found_at_zero_fp'))}; "
                f"{_fmt(bf.get('cllr'))} / {_fmt(fu.get('cllr'))}",
                d,
            )
    if d := load("store"):
        add(
            "store",
            f"{d['exhibits']} exhibits: ingest s each / link all s / store MB",
            f"{_fmt(d['ingest_seconds_per_exhibit'])} / {_fmt(_get(d, 'seconds', 'link all (shortlisted pairs)'))} / "
            f"{_fmt(d['store_mb'])}",
            d,
        )
    return rows


def markdown(rows) -> str:
    lines = ["| benchmark | measure | value | run on |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines)


def update_readme(rows, command: str) -> None:
    path = ROOT / "benchmarks" / "README.md"
    text = path.read_text()
    start, end = "<!-- summary:start -->", "<!-- summary:end -->"
    m = machine()
    block = (
        f"{start}\nLatest summary ({time.strftime('%Y-%m-%d')}, ballistix {m['ballistix']}, "
        f"{m['cpus']} cores, {platform.machine()}, Python {m['python']}; `{command}`):\n\n{markdown(rows)}\n{end}"
    )
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(SIZES)}")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: minutes")
    size.add_argument("--full", action="store_true", help="the sizes quoted in the README: hours")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--summary-only", action="store_true", help="run nothing; summarise the result files present")
    p.add_argument("--update-readme", action="store_true", help="write the summary table into benchmarks/README.md")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in SIZES]
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; known: {', '.join(SIZES)}", file=sys.stderr)
        return 2
    failed = []
    if not args.summary_only:
        for name in args.names or list(SIZES):
            argv_b = SIZES[name][0] if args.quick else SIZES[name][1] if args.full else []
            argv_b = argv_b + (["--jobs", str(args.jobs)] if name in TAKES_JOBS else [])
            print(f"== {name} {' '.join(argv_b)}", flush=True)
            t = time.perf_counter()
            if importlib.import_module(f"benchmarks.{name}").main(argv_b):
                failed.append(name)
            print(f"== {name}: {time.perf_counter() - t:.0f} s\n", flush=True)
    rows = summary_rows()
    write_json("summary", {"rows": rows, "failed": failed})
    print("SUMMARY")
    print(table(rows, ["benchmark", "measure", "value", "run on"]))
    if args.update_readme:
        update_readme(rows, "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
