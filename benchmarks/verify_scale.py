"""Verification at scale: search stage 2 with the query prepared once and a pre-check that prunes the shortlist.

    python -m benchmarks.verify_scale [--jobs 2] [--sim-scans 1000] [--queries 40] [--skip-real] [--quick]

For queries with a real 200-shortlist from the descriptor index:

1. Shared query work: CPU per candidate of the CMC comparison when each pair
   prepares the query itself (``compare(query, b)``, the path of one pair) and
   when the query is prepared once for the whole shortlist (`Query`: what
   ``compare_many`` and ``bx.search`` do), on one core.
2. The trade-off curve. Every shortlisted candidate is scored by the pre-check
   (`ballistix.features.precheck`, default settings and a cheaper one) and by
   its descriptor rank; the same-gun candidates are compared in full (count
   >= `CONVENTIONAL_CMC_RULE`: the partners CMC identifies), and a sample of
   the others is compared to time the comparison. For each ``verify_top`` m:
   the share of the identified partners among the m best candidates (pooled
   over queries) and the time of a query: the pre-check's CPU plus m times the
   mean CPU of a comparison, on one core and divided over ``--jobs`` cores.
3. Direct runs: ``bx.search(..., shortlist=200, n_jobs=jobs, verify_top=m)``
   end to end for a few m (wall time, and CPU of this process and its
   workers), and once without pruning.

Data: the 40 processed Fadul scans (ten consecutively made slides; same slide =
same gun), indexed together with the simulated database so that each has a
200-shortlist (36 real different-gun scans, the rest simulated); and a
simulated database of raw scans (realistic-hard, consecutive slides, full
rotation, 2-8 shots a gun; `benchmarks.retrieval.simulated_db`), simulated,
preprocessed and described like lab scans. Writes
benchmarks/results/verify_scale.json and verify_scale.png, prints tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # workers inherit: one thread each
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix.features.comparison import Query, compare  # noqa: E402
from ballistix.features.describe import descriptor_info  # noqa: E402
from ballistix.features.precheck import CoarseQuery  # noqa: E402
from ballistix.graph.rules import CONVENTIONAL_CMC_RULE  # noqa: E402

from ._common import RESULTS, SHARED_DATA, table, write_json  # noqa: E402

RULE = CONVENTIONAL_CMC_RULE
#: Pruning scores compared: name -> pre-check settings (None: the descriptor rank, free).
PRUNERS = {"precheck": {}, "precheck factor 8": {"factor": 8}, "descriptor rank": None}
KEEP = (5, 10, 15, 20, 30, 40, 60, 100, 150, 200)
BUDGET_SECONDS = 15.0  # the target for a verified answer, 200-shortlist, 2 cores
FADUL_OFFSET = 1_000_000  # ids of the real scans, after the simulated ones


# ---------------------------------------------------------------- scans on disk, shared by workers
class Scans:
    """Processed scans kept as .npy files in a folder, read on demand (``scans(id)``, as
    ``bx.search`` asks for them): workers of any start method read them without receiving them."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, i: int, scan: bx.Scan) -> None:
        np.save(self.folder / f"{i}.npy", np.asarray(scan.heights, np.float32))
        np.save(self.folder / f"{i}.dx.npy", np.array([scan.dx, scan.dy]))

    def __call__(self, i: int) -> bx.Scan:
        dx, dy = np.load(self.folder / f"{i}.dx.npy")
        return bx.Scan(np.load(self.folder / f"{i}.npy"), float(dx), float(dy), {})


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


# ---------------------------------------------------------------- one query, in a worker
def query_job(args) -> dict:
    """Pre-check scores of a whole shortlist under each pruner, and full comparisons of its
    same-gun candidates and of ``n_timed`` others, with one-core CPU times (this process)."""
    import cv2

    cv2.setNumThreads(1)
    folder, q, shortlist, same, n_timed, n_unshared, seed = args
    scans = Scans(folder)
    query = scans(q)
    cands = [scans(int(c)) for c in shortlist]  # read before the timings
    out = {"query": int(q), "shortlist": [int(c) for c in shortlist], "same": [bool(s) for s in same]}
    out["precheck"] = {}
    for name, settings in PRUNERS.items():
        if settings is None:
            continue
        t = time.process_time()
        pre = CoarseQuery(query, **settings)
        prep = time.process_time() - t
        scores = [pre.score(c)[0] for c in cands]
        out["precheck"][name] = {
            "scores": scores,
            "prepare_cpu": prep,
            "cpu": time.process_time() - t,
        }
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(~np.asarray(same))
    timed = sorted(rng.choice(others, min(n_timed, len(others)), replace=False).tolist())
    todo = sorted(set(np.flatnonzero(same).tolist()) | set(timed))
    t = time.process_time()
    prepared = Query(query)
    out["query_prepare_cpu"] = time.process_time() - t
    cmc, cpu = {}, {}
    for i in todo:
        t = time.process_time()
        r = compare(prepared, cands[i])
        cpu[i] = time.process_time() - t
        cmc[i] = int(r.cmc_count)
    out["cmc"] = {str(i): v for i, v in cmc.items()}
    out["compare_cpu"] = {str(i): v for i, v in cpu.items()}
    # shared query work: a few of these pairs again, each preparing the query itself (the path of
    # one pair) and with the query prepared before, alternately, best of two (a busy machine)
    unshared, shared = [], []
    for i in todo[:n_unshared]:
        u, s = [], []
        for _ in range(2):
            t = time.process_time()
            r = compare(query, cands[i])
            u.append(time.process_time() - t)
            assert int(r.cmc_count) == cmc[i]  # bit-identical counts (tests/test_compare.py holds the rest)
            t = time.process_time()
            compare(prepared, cands[i])
            s.append(time.process_time() - t)
        unshared.append(min(u))
        shared.append(min(s))
    out["compare_cpu_unshared"] = unshared
    out["compare_cpu_shared_same_pairs"] = shared
    return out


# ---------------------------------------------------------------- the curve
def curve(jobs_out: list[dict], pruner: str, keep, n_jobs: int, real=None) -> dict:
    """Share of the CMC-identified same-gun partners among the m best candidates by ``pruner``,
    pooled over queries, and the modelled time of a query, for each m of ``keep``.

    The model: the pre-check's CPU, the query's preparation and m times the mean CPU of a
    comparison, on one core (``cpu_seconds``) and over ``n_jobs`` cores (``seconds_on_jobs``).
    ``real``: ids of real scans; the worst rank of a partner among the real candidates alone is
    reported too."""
    ranks, real_ranks = [], []
    for j in jobs_out:
        n = len(j["shortlist"])
        if PRUNERS[pruner] is None:
            order = np.arange(n)
        else:
            order = np.argsort(-np.asarray(j["precheck"][pruner]["scores"]), kind="stable")
        rank = np.empty(n, int)
        rank[order] = np.arange(n)
        if real is not None:
            is_real = np.isin(j["shortlist"], list(real))
            rank_real = np.empty(n, int)
            rank_real[order] = np.cumsum(is_real[order]) - 1  # place among the real candidates
        for i, c in j["cmc"].items():
            if j["same"][int(i)] and c >= RULE:
                ranks.append(int(rank[int(i)]))
                if real is not None:
                    real_ranks.append(int(rank_real[int(i)]))
    ranks = np.array(ranks, int)
    compare_cpu = float(np.mean([v for j in jobs_out for v in j["compare_cpu"].values()]))
    pre_cpu = 0.0 if PRUNERS[pruner] is None else float(np.mean([j["precheck"][pruner]["cpu"] for j in jobs_out]))
    prep = float(np.mean([j["query_prepare_cpu"] for j in jobs_out]))
    top = max(len(j["shortlist"]) for j in jobs_out)
    out = {"identified_partners": len(ranks), "worst_rank": int(ranks.max()) if len(ranks) else None, "keep": {}}
    if real_ranks:
        out["worst_rank_among_real"] = int(max(real_ranks))
    for m in keep:
        cpu = pre_cpu + prep + min(m, top) * compare_cpu
        out["keep"][str(m)] = {
            "kept_share": float((ranks < m).mean()) if len(ranks) else None,
            "cpu_seconds": cpu,
            "seconds_on_jobs": cpu / n_jobs,
        }
    out["compare_cpu_mean"] = compare_cpu
    out["precheck_cpu_per_query"] = pre_cpu
    return out


def overhead(curve_precheck: dict, direct_runs: dict | None) -> float | None:
    """CPU that ``bx.search`` spent beyond the model of `curve` (workers starting, scans read and
    sent, results weighed), averaged over the pruned direct runs; None without them."""
    over = [
        v["cpu_mean"] - curve_precheck["keep"][m]["cpu_seconds"]
        for m, v in (direct_runs or {}).items()
        if m in curve_precheck["keep"]
    ]
    return float(np.mean(over)) if over else None


def run_queries(name, folder, queries, shortlists, same, jobs, n_timed, n_unshared) -> list[dict]:
    jobs_in = zip(queries, shortlists, same)
    args = [(str(folder), q, sl, sm, n_timed, n_unshared, k) for k, (q, sl, sm) in enumerate(jobs_in)]
    t = time.perf_counter()
    if jobs == 1:
        res = [query_job(a) for a in args]
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            res = list(ex.map(query_job, args))
    print(f"{name}: {len(res)} queries measured in {time.perf_counter() - t:.0f} s", flush=True)
    return res


def direct(index, scans, queries, keeps, jobs, shortlist) -> dict:
    """``bx.search`` end to end on ``jobs`` workers: wall and CPU (this process and its workers)."""
    out = {}
    for m in keeps:
        rows = []
        for q in queries if m is not None else queries[:1]:  # unpruned: one query (minutes)
            query = scans(q)
            c, t = _cpu(), time.perf_counter()
            hits = bx.search(
                index, query, k=20, shortlist=shortlist, scans=scans, exclude=[q], n_jobs=jobs, verify_top=m
            )
            rows.append({"query": int(q), "wall": time.perf_counter() - t, "cpu": _cpu() - c, "hits": len(hits)})
        out["all" if m is None else str(m)] = {
            "queries": rows,
            "load_average": os.getloadavg()[0],
            "wall_mean": float(np.mean([r["wall"] for r in rows])),
            "cpu_mean": float(np.mean([r["cpu"] for r in rows])),
        }
        print(f"  bx.search verify_top={m}: wall {out['all' if m is None else str(m)]['wall_mean']:.1f} s", flush=True)
    return out


# ---------------------------------------------------------------- data
def simulated_scans(n: int, jobs: int, seed: int, folder: Scans, offset: int = 0):
    """Simulate, preprocess and describe ``n`` raw scans; store them; (guns, descriptors)."""
    from .retrieval import simulated_db

    rows, seconds, n_guns = simulated_db(n, jobs, seed, keep_scans=True)
    for i, (_, _, s) in enumerate(rows):
        folder.put(offset + i, s)
    print(f"simulated {n} scans of {n_guns} guns in {seconds:.0f} s", flush=True)
    return np.array([r[0] for r in rows]), np.array([r[1]["v2"] for r in rows], np.float32)


def fadul_scans(folder: Scans, offset: int):
    labels = {r["file"].split("/")[-1][:-4]: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))}
    names = sorted(p.stem for p in (SHARED_DATA / "fadul").glob("*.x3p"))
    guns, vecs = [], []
    for i, n in enumerate(names):
        s = bx.preprocess(bx.read_scan(SHARED_DATA / "fadul" / f"{n}.x3p"))
        folder.put(offset + i, s)
        guns.append(labels[n])
        vecs.append(bx.describe(s))
    return np.array(guns), np.array(vecs, np.float32)


def shortlists(index, vecs, ids, queries, size):
    """Each query's descriptor shortlist (its own id left out), as ids."""
    scores, found = index.search(vecs[[int(np.flatnonzero(ids == q)[0]) for q in queries]], size + 1)
    return [[int(c) for c in row if c != q][:size] for q, row in zip(queries, found)]


def padded_shortlists(real_ids, real_vecs, pad_index, size):
    """Each real scan's shortlist: all the other real scans (a small set) and the scans of
    ``pad_index`` nearest to it by descriptor, up to ``size``, in descriptor order."""
    out = []
    for k, q in enumerate(real_ids):
        own = [(float(real_vecs[k] @ real_vecs[j]), int(c)) for j, c in enumerate(real_ids) if c != q]
        pads = []
        if size > len(own):
            s, found = pad_index.search(real_vecs[k : k + 1], size - len(own))
            pads = [(float(v), int(c)) for v, c in zip(s[0], found[0]) if c >= 0]
        out.append([c for _, c in sorted(own + pads, key=lambda t: -t[0])][:size])
    return out


def evaluate(name, folder, gun_of, queries, lists, args, index, real=None) -> dict:
    """Measure ``queries`` with their shortlists ``lists`` (see `query_job`); ``index``: for the
    end-to-end ``bx.search`` runs; ``real``: ids whose ranks among themselves are reported too."""
    same = [[gun_of[c] == gun_of[q] for c in sl] for q, sl in zip(queries, lists)]
    res = run_queries(name, folder, queries, lists, same, args.jobs, args.timed, args.unshared)
    shortlist = max(map(len, lists))
    out = {
        "queries": len(queries),
        "shortlist": shortlist,
        "same_gun_in_shortlist": int(sum(map(sum, same))),
        "queries_with_identified_partner": int(
            sum(any(j["same"][int(i)] and c >= RULE for i, c in j["cmc"].items()) for j in res)
        ),
        "per_query": res,
    }
    if real is not None:
        out["real_in_shortlist"] = float(np.mean([np.isin(sl, list(real)).sum() for sl in lists]))
    un = [v for j in res for v in j["compare_cpu_unshared"]]
    sh = [v for j in res for v in j["compare_cpu_shared_same_pairs"]]
    out["shared_query"] = {
        "pairs": len(un),
        "cpu_per_candidate_each_pair_prepares": float(np.median(un)) if un else None,
        "cpu_per_candidate_query_prepared_once": float(np.median(sh)) if sh else None,
        "query_prepare_cpu": float(np.median([j["query_prepare_cpu"] for j in res])),
    }
    if args.direct_queries:
        dq = queries[: args.direct_queries]
        keeps = list(args.direct_keep) + ([None] if args.direct_all else [])
        out["direct"] = direct(index, Scans(folder), dq, keeps, args.jobs, shortlist)
    summarise(out, args.keep, args.jobs, real)
    return out


def summarise(out: dict, keep, n_jobs: int, real=None) -> None:
    """The curves, the measured overhead and the recommended settings of one set, from its
    per-query measurements and direct runs."""
    out["curves"] = {p: curve(out["per_query"], p, keep, n_jobs, real) for p in PRUNERS}
    out["overhead_cpu"] = overhead(out["curves"]["precheck"], out.get("direct"))
    out["recommended"] = {
        p: recommend(c, BUDGET_SECONDS, out["overhead_cpu"], n_jobs)
        for p, c in out["curves"].items()
        if PRUNERS[p] is not None
    }


# ---------------------------------------------------------------- report
def recommend(c: dict, budget: float, overhead_cpu: float | None = None, n_jobs: int = 2) -> dict | None:
    """The largest m whose modelled time on the jobs' cores, with the measured overhead of
    ``bx.search`` (when positive), is within ``budget``."""
    extra = max(overhead_cpu or 0.0, 0.0) / n_jobs
    fits = [(int(m), v) for m, v in c["keep"].items() if v["seconds_on_jobs"] + extra <= budget]
    if not fits:
        return None
    m, v = max(fits)
    return {"verify_top": m, **v, "seconds_on_jobs_with_overhead": v["seconds_on_jobs"] + extra}


def figure(out: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [k for k in ("fadul", "simulated") if k in out]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.6 * len(sets), 4.2), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for pruner, c in out[name]["curves"].items():
            ms = list(c["keep"])
            x = [c["keep"][m]["seconds_on_jobs"] for m in ms]
            y = [c["keep"][m]["kept_share"] for m in ms]
            ax.plot(x, y, "o-", ms=3, label=pruner)
            for m, xi, yi in zip(ms, x, y):
                if pruner == "precheck" and yi is not None:
                    ax.annotate(m, (xi, yi), fontsize=6, xytext=(2, -8), textcoords="offset points")
        ax.axvline(BUDGET_SECONDS, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 15, 20, 50, 100])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"seconds a query on {out['params']['jobs']} cores (CPU / cores)")
        ax.set_ylabel(f"CMC-identified same-gun partners kept (>= {RULE})")
        ax.set_ylim(0.5, 1.02)
        ax.set_title(f"{name}: {out[name]['queries']} queries, shortlist {out[name]['shortlist']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_tables(out: dict) -> None:
    for name in ("fadul", "simulated"):
        if name not in out:
            continue
        r = out[name]
        sq = r["shared_query"]
        print(
            f"\n{name}: {r['queries']} queries, shortlist {r['shortlist']}, "
            f"{r['queries_with_identified_partner']} with a CMC-identified partner; CPU a candidate "
            f"{sq['cpu_per_candidate_each_pair_prepares']:.3f} s (each pair prepares the query) -> "
            f"{sq['cpu_per_candidate_query_prepared_once']:.3f} s (prepared once)"
        )
        rows = []
        for m in r["curves"]["precheck"]["keep"]:
            row = [m]
            for p in PRUNERS:
                v = r["curves"][p]["keep"][m]
                row += [v["kept_share"], v["seconds_on_jobs"]]
            rows.append(row)
        head = ["verify_top"] + [f"{p}: {w}" for p in PRUNERS for w in ("kept", "s/query")]
        print(table(rows, head))
        worst = {p: (c["worst_rank"], c.get("worst_rank_among_real")) for p, c in r["curves"].items()}
        print(f"worst rank of an identified partner (0 = first; among the real scans): {worst}")
        rec = r["recommended"]["precheck"]
        if rec:
            print(
                f"largest verify_top within {BUDGET_SECONDS:g} s on {out['params']['jobs']} cores (model, with "
                f"bx.search's measured overhead of {r['overhead_cpu'] or 0:.1f} CPU s): {rec['verify_top']}, "
                f"keeps {rec['kept_share']:.3f}"
            )
        if "direct" in r:
            print(
                table(
                    [[m, v["wall_mean"], v["cpu_mean"]] for m, v in r["direct"].items()],
                    ["bx.search verify_top", "wall s", "CPU s (all processes)"],
                )
            )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--sim-scans", type=int, default=1000)
    p.add_argument("--queries", type=int, default=40, help="simulated queries (Fadul: all 40)")
    p.add_argument("--shortlist", type=int, default=200)
    p.add_argument("--timed", type=int, default=6, help="different-gun candidates compared per query, to time")
    p.add_argument("--unshared", type=int, default=2, help="pairs a query also compared without a prepared query")
    p.add_argument("--keep", type=int, nargs="*", default=list(KEEP))
    p.add_argument("--direct-queries", type=int, default=3, help="queries searched end to end with bx.search")
    p.add_argument("--direct-keep", type=int, nargs="*", default=[20, 40])
    p.add_argument("--no-direct-all", dest="direct_all", action="store_false", help="skip the unpruned search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--cache", type=Path, help="keep the processed scans in this folder (reused when present)")
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    p.add_argument("--report-only", action="store_true", help="recompute curves, tables and figure from the JSON")
    args = p.parse_args(argv)
    if args.report_only:
        out = json.loads((RESULTS / "verify_scale.json").read_text())
        for name in ("fadul", "simulated"):
            if name in out:
                real = set(range(FADUL_OFFSET, FADUL_OFFSET + len(out[name]["per_query"]))) if name == "fadul" else None
                summarise(out[name], out["params"]["keep"], out["params"]["jobs"], real)
        out.pop("benchmark", None)  # the machine and date of the measurement stay
        return report(out)
    if args.quick:
        args.sim_scans, args.queries, args.shortlist = 40, 3, 30
        args.timed, args.unshared, args.direct_queries, args.direct_all = 2, 1, 1, False
        args.keep, args.direct_keep = [k for k in (5, 10, 20, 30) if k <= args.shortlist], [5]
    out = {"params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    work = args.cache or Path(tempfile.mkdtemp(prefix="bx-verify-scale-"))
    try:
        folder = Scans(work / f"sim{args.sim_scans}-seed{args.seed}")
        meta = folder.folder / "index.npz"
        if meta.is_file():
            with np.load(meta) as z:
                guns, vecs = z["guns"], z["vecs"]
        else:
            guns, vecs = simulated_scans(args.sim_scans, args.jobs, args.seed, folder)
            np.savez(meta, guns=guns, vecs=vecs)
        info = descriptor_info()
        ids = np.arange(len(guns))
        index = bx.ScanIndex(info["dim"], descriptor=info)
        index.add(ids, vecs)
        rng = np.random.default_rng(args.seed)
        shots = {g: int((guns == g).sum()) for g in set(guns.tolist())}
        eligible = [i for i in ids if shots[guns[i]] > 1]
        queries = sorted(rng.choice(eligible, min(args.queries, len(eligible)), replace=False).tolist())
        shortlist = min(args.shortlist, len(ids) - 1)
        lists = shortlists(index, vecs, ids, queries, shortlist)
        gun_of = dict(zip(ids.tolist(), guns.tolist()))
        out["simulated"] = evaluate("simulated", folder.folder, gun_of, queries, lists, args, index)
        out["simulated"]["n_scans"] = len(ids)
        write_json("verify_scale", out)
        if (SHARED_DATA / "fadul").is_dir() and not args.skip_real:
            # the 40 real scans: each query's shortlist holds the other 39 and the nearest simulated
            # scans (all different guns) up to the shortlist size
            fguns, fvecs = fadul_scans(folder, FADUL_OFFSET)
            fids = FADUL_OFFSET + np.arange(len(fguns))
            lists = padded_shortlists(fids.tolist(), fvecs, index, args.shortlist)
            gun_of.update(zip(fids.tolist(), fguns.tolist()))
            fq = fids.tolist()[: args.queries if args.quick else None]  # all 40 (quick: a few)
            index.add(fids, fvecs)  # for the end-to-end runs (their shortlists are the index's own)
            real = set(fids.tolist())
            out["fadul"] = evaluate("fadul", folder.folder, gun_of, fq, lists[: len(fq)], args, index, real)
    finally:
        if args.cache is None:
            shutil.rmtree(work, ignore_errors=True)
    return report(out)


def report(out: dict) -> int:
    path = write_json("verify_scale", out)
    figure(out, RESULTS / "verify_scale.png")
    print_tables(out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
