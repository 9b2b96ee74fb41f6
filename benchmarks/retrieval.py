"""Database search accuracy: descriptor shortlist (FAISS) and CMC re-ranking, on real and simulated scans.

    python -m benchmarks.retrieval [--jobs 2] [--sim-sizes 1000 10000] [--rerank-queries 10] [--skip-real]

1. Real: the 40 processed Fadul scans, each a query against the other 39
   (ten consecutively made slides: the hard case). Recall@1/5/10 of the
   same-slide scans and top-1 accuracy for the descriptor alone and after
   CMC re-ranking (every pair compared once with `compare`, both directions
   combined, and the result used for both queries).
2. Simulated databases of raw scans (realistic-hard, consecutive slides,
   full rotation, 2-8 shots a gun), simulated and preprocessed like lab
   scans: descriptor recall@10/50/200 of the same-gun scans. On the first
   size also: the CMC count of every same-gun pair, the share of the
   same-gun scans CMC identifies (>= 6) that the 200-shortlist holds, and
   for ``--rerank-queries`` sampled queries the top-1 after re-ranking their
   whole shortlist with CMC (exhaustive CMC over all 500k pairs is out of
   reach on 2 cores: about 110 core-hours).

Writes benchmarks/results/retrieval.json and retrieval.png, prints a table.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # workers inherit: one thread each
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix.datasets.simulate import MODELS, fire, gun_plan, make_firearm  # noqa: E402
from ballistix.features.describe import V1_INFO, descriptor_info, descriptor_params  # noqa: E402
from ballistix.graph.linkage import CONVENTIONAL_CMC_RULE  # noqa: E402
from ballistix.index.search import Candidate, rerank  # noqa: E402

from ._common import RESULTS, SHARED_DATA, table, write_json  # noqa: E402

RULE = CONVENTIONAL_CMC_RULE  # a same-gun pair CMC identifies at this count
#: descriptor versions a simulated database is described with (the same scans): version -> descriptor info
DESCRIPTORS = {"v2": descriptor_info(), "v1": V1_INFO}
KS = (1, 5, 10, 20, 50, 100, 200)


def recall_at(order_same: np.ndarray, n_same: np.ndarray, ks) -> dict:
    """Mean over queries (with at least one same-source scan) of the share of their same-source
    scans within the first k of their ranking; ``order_same`` is (queries, ranked) booleans."""
    ok = n_same > 0
    hits = np.cumsum(order_same[ok], axis=1)
    return {int(k): float((hits[:, min(k, hits.shape[1]) - 1] / n_same[ok]).mean()) for k in ks}


def descriptor_rankings(vecs: np.ndarray, k: int, info: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each scan as a query against all the others through a ScanIndex: (scores, positions)."""
    index = bx.ScanIndex(vecs.shape[1], descriptor=info or descriptor_info())
    index.add(np.arange(len(vecs)), vecs)
    scores, ids = index.search(vecs, min(k + 1, len(vecs)))
    keep = ids != np.arange(len(vecs))[:, None]  # drop the query itself
    n = keep.sum(1).min()
    return (np.array([s[m][:n] for s, m in zip(scores, keep)]), np.array([i[m][:n] for i, m in zip(ids, keep)]))


def real(jobs: int) -> dict:
    labels = {r["file"].split("/")[-1][:-4]: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))}
    names = sorted(p.stem for p in (SHARED_DATA / "fadul").glob("*.x3p"))
    scans = [bx.preprocess(bx.read_scan(SHARED_DATA / "fadul" / f"{n}.x3p")) for n in names]
    lab = np.array([labels[n] for n in names])
    t = time.perf_counter()
    vecs = np.array([bx.describe(s) for s in scans])
    t_desc = (time.perf_counter() - t) / len(scans)
    dscore, dorder = descriptor_rankings(vecs, len(scans))
    same = lab[dorder] == lab[:, None]
    n_same = (lab[:, None] == lab[None, :]).sum(1) - 1
    pairs = list(itertools.combinations(range(len(scans)), 2))
    t = time.perf_counter()
    res = bx.compare_many([(scans[i], scans[j]) for i, j in pairs], n_jobs=jobs, progress=False)
    t_cmp = time.perf_counter() - t
    cmc = {}
    for (i, j), r in zip(pairs, res):
        cmc[i, j] = cmc[j, i] = (int(r.cmc_count), float(r.score))
    rer_same = []
    for q in range(len(scans)):
        cands = [Candidate(int(c), float(s), r, *cmc[q, int(c)]) for r, (s, c) in enumerate(zip(dscore[q], dorder[q]))]
        rer_same.append([lab[c.id] == lab[q] for c in rerank(cands)])
    rer_same = np.array(rer_same)
    return {
        "n_scans": len(scans),
        "descriptor_seconds_per_scan": t_desc,
        "compare_seconds": t_cmp,
        "descriptor": {"recall_at": recall_at(same, n_same, (1, 5, 10)), "top1": float(same[:, 0].mean())},
        "reranked": {"recall_at": recall_at(rer_same, n_same, (1, 5, 10)), "top1": float(rer_same[:, 0].mean())},
        "curves": {
            "descriptor": recall_at(same, n_same, range(1, 40)),
            "reranked": recall_at(rer_same, n_same, range(1, 40)),
        },
    }


def _simulate_chunk(args):
    """Worker: simulate, preprocess and describe (every version of `DESCRIPTORS`) the shots of some
    guns of a plan: [(gun, {version: descriptor}, processed scan or None)]."""
    import cv2

    cv2.setNumThreads(1)
    plan, shots, keep_scans = args
    out = []
    for gun_args, n in zip(plan, shots):
        gun = make_firearm(**gun_args, subclass_share=0.5, resolution="standard")
        for k, shot_seed in enumerate(gun_args["seed"].spawn(n)):
            raw = fire(gun, k, seed=shot_seed, difficulty="realistic-hard", resolution="standard")
            proc = bx.preprocess(raw)
            keep = bx.Scan(proc.heights.astype(np.float32), proc.dx, proc.dy, {}) if keep_scans else None
            vecs = {v: bx.describe(proc, **descriptor_params(info)) for v, info in DESCRIPTORS.items()}
            out.append((raw.meta["labels"]["firearm"], vecs, keep))
    return out


def sim_cache_path(n_scans: int, seed: int):
    """Where a simulated database's gun labels and descriptors (``vecs_<version>`` for every version of
    `DESCRIPTORS`) are kept (reused by `benchmarks.compact` and `benchmarks.store_scale`)."""
    return RESULTS / f"sim_descriptors_{n_scans}_seed{seed}_{'_'.join(sorted(DESCRIPTORS))}.npz"


def load_sim_cache(n_scans: int, seed: int, version: str = "v2") -> tuple[np.ndarray, np.ndarray] | None:
    """(descriptors of ``version``, gun labels) of a cached simulated database, or None."""
    cache = sim_cache_path(n_scans, seed)
    if not cache.is_file():
        return None
    with np.load(cache) as z:
        return z[f"vecs_{version}"].astype(np.float32), z["gun"].astype(str)


def _resumable(ex, chunks: list, parts: Path) -> list:
    """The rows of every chunk (guns, descriptors of every version; no scans): those in ``parts`` from an earlier,
    interrupted run are read back (the plan is the same for the same seed), the others simulated
    and saved there one by one. ``parts`` is removed once the whole database is cached."""
    parts.mkdir(parents=True, exist_ok=True)
    path = [parts / f"chunk_{i:05d}.npz" for i in range(len(chunks))]
    todo = [i for i, p in enumerate(path) if not p.is_file()]
    for i, part in zip(todo, ex.map(_simulate_chunk, [chunks[i] for i in todo])):
        tmp = path[i].with_suffix(".tmp.npz")
        vecs = {f"vecs_{v}": np.array([r[1][v] for r in part], np.float32) for v in DESCRIPTORS}
        np.savez(tmp, gun=np.array([r[0] for r in part]), **vecs)
        tmp.replace(path[i])
    rows = []
    for p in path:
        with np.load(p) as z:
            rows += [
                (g, dict(zip(DESCRIPTORS, v)), None) for g, *v in zip(z["gun"], *(z[f"vecs_{v}"] for v in DESCRIPTORS))
            ]
    return rows


def simulated_db(n_scans: int, jobs: int, seed: int, keep_scans: bool):
    """Simulate, preprocess and describe a database:
    ([(gun, {version: descriptor}, scan or None)], seconds, n_guns).

    Without ``keep_scans`` the labels and descriptors are cached (`sim_cache_path`) and reused."""
    cache = sim_cache_path(n_scans, seed)
    if not keep_scans and cache.is_file():
        with np.load(cache) as z:
            vecs = zip(*(z[f"vecs_{v}"] for v in DESCRIPTORS))
            rows = [(g, dict(zip(DESCRIPTORS, v)), None) for g, v in zip(z["gun"], vecs)]
            return rows, float(z["seconds"]), int(z["n_guns"])
    rng = np.random.default_rng(seed)
    shots = []
    while sum(shots) < n_scans:
        shots.append(int(rng.integers(2, 9)))
    shots[-1] -= sum(shots) - n_scans
    if shots[-1] < 2:  # keep every gun at 2+ shots
        shots[-2] += shots.pop()
    plan = gun_plan(len(shots), seed, sorted(MODELS), run_size=max(2, len(shots) // 40))
    chunks = [(plan[i : i + 10], shots[i : i + 10], keep_scans) for i in range(0, len(plan), 10)]
    t = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        if keep_scans:
            rows = [r for part in ex.map(_simulate_chunk, chunks) for r in part]
        else:  # each chunk kept as it is done: an interrupted run resumes where it stopped
            rows = _resumable(ex, chunks, cache.with_suffix(".parts"))
    seconds = time.perf_counter() - t
    RESULTS.mkdir(parents=True, exist_ok=True)
    gun = np.array([r[0] for r in rows])
    vecs = {f"vecs_{v}": np.array([r[1][v] for r in rows], np.float32) for v in DESCRIPTORS}
    np.savez(cache, gun=gun, seconds=seconds, n_guns=len(shots), ballistix=bx.__version__, **vecs)
    shutil.rmtree(cache.with_suffix(".parts"), ignore_errors=True)
    return rows, seconds, len(shots)


def simulated(n_scans: int, jobs: int, seed: int, verify: bool, rerank_queries: int, km_pairs: int) -> dict:
    rows, t_sim, n_guns = simulated_db(n_scans, jobs, seed, keep_scans=verify)
    gun = np.array([r[0] for r in rows])
    n_same = (gun[:, None] == gun[None, :]).sum(1) - 1
    out = {"n_scans": len(rows), "n_guns": n_guns, "simulate_preprocess_describe_seconds": t_sim}
    for v in reversed(DESCRIPTORS):  # the current version last: its ranking is the one verified below
        vecs = np.array([r[1][v] for r in rows])
        t = time.perf_counter()
        dscore, dorder = descriptor_rankings(vecs, 200, DESCRIPTORS[v])
        same = gun[dorder] == gun[:, None]
        first = np.where(same.any(1), same.argmax(1) + 1, 201)[n_same > 0]  # first same-gun rank (201: beyond)
        out["descriptor" if v == "v2" else f"descriptor_{v}"] = {
            "recall_at": recall_at(same, n_same, KS),
            "top1": float(same[:, 0].mean()),
            "first_partner_within": {int(k): float(np.mean(first <= k)) for k in KS},
            "flat_search_seconds_per_query": (time.perf_counter() - t) / len(vecs),
        }
    if not verify:
        return out
    scans = [r[2] for r in rows]
    km_all = [(i, j) for i, j in itertools.combinations(range(len(rows)), 2) if gun[i] == gun[j]]
    rng = np.random.default_rng(seed)
    km = (
        km_all
        if len(km_all) <= km_pairs
        else [km_all[i] for i in sorted(rng.choice(len(km_all), km_pairs, replace=False))]
    )
    t = time.perf_counter()
    res = bx.compare_many([(scans[i], scans[j]) for i, j in km], n_jobs=jobs, progress=False)
    km_cmc = {p: int(r.cmc_count) for p, r in zip(km, res)}
    identified = [(i, j) for (i, j), c in km_cmc.items() if c >= RULE]
    shortlist = {q: set(dorder[q, :200].tolist()) for q in range(len(rows))}
    held = [(j in shortlist[i]) for i, j in identified] + [(i in shortlist[j]) for i, j in identified]
    out["km_pairs"] = len(km_all)
    out["km_pairs_compared"] = len(km)
    out["km_cmc_counts"] = [km_cmc[p] for p in km]
    out["km_identified_share"] = len(identified) / max(1, len(km))
    out["shortlist200_holds_identified"] = float(np.mean(held)) if held else None
    out["km_compare_seconds"] = time.perf_counter() - t
    # re-rank whole shortlists of sampled queries that have a CMC-identifiable same-gun scan
    eligible = sorted({i for p in identified for i in p})
    qs = sorted(np.random.default_rng(seed).choice(eligible, min(rerank_queries, len(eligible)), replace=False))
    t = time.perf_counter()
    top1, top1_any = [], []
    for q in qs:  # stage 2 of `bx.search`, on the shortlist stage 1 gave
        res = bx.compare_many([(scans[q], scans[c]) for c in dorder[q, :200]], n_jobs=jobs, progress=False)
        cands = rerank(
            [
                Candidate(int(c), float(s), r, int(x.cmc_count), float(x.score))
                for r, (s, c, x) in enumerate(zip(dscore[q], dorder[q], res))
            ]
        )
        top1.append(bool(gun[cands[0].id] == gun[q]))
        top1_any.append(cands[0].cmc_count)
    out["reranked"] = {
        "queries": [int(q) for q in qs],
        "top1": float(np.mean(top1)) if top1 else None,
        "top1_cmc_counts": top1_any,
        "seconds": time.perf_counter() - t,
    }
    return out


def figure(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if "real" in out:
        for key, style in (("descriptor", "-"), ("reranked", "--")):
            c = out["real"]["curves"][key]
            ax.plot(list(map(int, c)), list(c.values()), style, label=f"Fadul, {key}")
    for name, s in out.get("simulated", {}).items():
        c = s["descriptor"]["recall_at"]
        ax.plot(list(map(int, c)), list(c.values()), "o-", ms=3, label=f"simulated {name}, descriptor")
    ax.set_xscale("log")
    ax.set_xlabel("k (candidates)")
    ax.set_ylabel("recall@k of same-source scans")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--sim-sizes", type=int, nargs="*", default=[1000, 10000])
    p.add_argument("--rerank-queries", type=int, default=10)
    p.add_argument("--km-pairs", type=int, default=100_000, help="same-gun pairs compared (a sample beyond)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--no-verify", action="store_true", help="descriptor recall only (no CMC on the first size)")
    args = p.parse_args(argv)
    out = {"params": vars(args)}
    rows = []
    if (SHARED_DATA / "fadul").is_dir() and not args.skip_real:
        out["real"] = r = real(args.jobs)
        for key in ("descriptor", "reranked"):
            ra = r[key]["recall_at"]
            rows.append([f"Fadul 40, {key}", ra[1], ra[5], ra[10], "-", "-", r[key]["top1"]])
        write_json("retrieval", out)
        print(table(rows, ["set", "R@1", "R@5", "R@10", "R@50", "R@200", "top-1"]), flush=True)
    out["simulated"] = {}
    for i, n in enumerate(args.sim_sizes):
        s = simulated(
            n,
            args.jobs,
            args.seed,
            verify=(i == 0 and not args.no_verify),
            rerank_queries=args.rerank_queries,
            km_pairs=args.km_pairs,
        )
        out["simulated"][str(n)] = s
        for key, name in (("descriptor_v1", "descriptor v1"), ("descriptor", "descriptor v2")):
            ra = s[key]["recall_at"]
            rows.append(
                [f"sim {n} ({s['n_guns']} guns), {name}", ra[1], ra[5], ra[10], ra[50], ra[200], s[key]["top1"]]
            )
        if "reranked" in s:
            rows.append(
                [
                    f"sim {n}: shortlist-200 holds CMC-identified",
                    "-",
                    "-",
                    "-",
                    "-",
                    s["shortlist200_holds_identified"],
                    "-",
                ]
            )
            rows.append(
                [
                    f"sim {n}: re-ranked ({len(s['reranked']['queries'])} queries)",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    s["reranked"]["top1"],
                ]
            )
        write_json("retrieval" if "real" in out else "retrieval_simulated", out)  # each part as it ends
    name = "retrieval" if "real" in out else "retrieval_simulated"
    path = write_json(name, out)
    figure(out, RESULTS / f"{name}.png")
    print(table(rows, ["set", "R@1", "R@5", "R@10", "R@50", "R@200", "top-1"]), flush=True)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
