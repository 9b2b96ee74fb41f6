"""A national-size case store: one million exhibits on one machine, through the store's own API.

    python -m benchmarks.store_scale [--exhibits 1000000] [--sim-guns 30] [--queries 200]
        [--refine-factors 5,10] [--verify 2] [--verify-top 20] [--jobs 2] [--keep]
    python -m benchmarks.store_scale --reuse [--work DIR] ...   # measure a kept store again

What is in the store:

- **planted exhibits with true partners**: the 40 processed Fadul scans (real,
  ten slides) when ``../shared/data`` is present, and ``--sim-guns`` simulated
  guns x 3 shots (realistic-hard, standard resolution), each with its scan;
- **the bulk**: the rest, up to ``--exhibits``, with descriptors drawn from a
  Gaussian fitted to the planted descriptors and, when cached, the 2,000
  simulated scans of ``python -m benchmarks.retrieval --sim-sizes 2000
  --skip-real --no-verify`` (their mean, their 256 leading principal
  components with their variances, and the remaining variance spread evenly
  over the other directions), L2-normalised. Checked: the cosine of a
  simulated scan with bulk descriptors has mean 0.116 and 99th percentile
  0.37; with real scans of other simulated guns 0.118 and 0.40. Each bulk exhibit
  references one of ``--pool`` processed scans of other simulated guns, so
  that verification compares real surfaces. Their descriptors are not those
  of their scans: the bulk is a crowd of distractors for the first stage.

Everything goes in through `CaseStore.import_prepared` (batches of 10,000,
one transaction each; the index is built compact at the end). Then, each step
in a fresh process so that its memory is its own (peak RSS: the process's own
``VmHWM``):

- opening the store, its files dropped from the page cache first;
- the first stage (the store's index), one query at a time, for the planted
  exhibits and for bulk-like descriptors, p50/p99: the compact index alone
  (``ScanIndex.search(..., refine=False)``), then re-ranked by the full
  descriptors read from SQLite as the store does it, for each of
  ``--refine-factors`` (the best factor x k compact candidates), store.sqlite
  dropped from the page cache first (cold: a national store's descriptors do
  not fit in memory), each query searched twice in a row (the second time its
  candidates are cached), with the time spent reading SQLite;
- whether each planted query's same-gun partners are in its shortlist of 200,
  against the shortlist of the full 9,216-value descriptors (exact, by brute
  force over the store's descriptors);
- ``--verify`` verified searches of Fadul and as many of simulated planted
  exhibits (`CaseStore.search`, shortlist 200, CMC on the pre-checked best
  ``--verify-top``, or on all 200 with ``--verify-top 0``; ``--jobs``
  processes): time, best three with their CMC counts, whether the best is
  of the query's gun, and the peak memory of the verification workers.

``--reuse`` measures the store already in ``WORK/store`` with
``WORK/planted.npz`` (``--work``, by default benchmarks/results/store_scale_work):
no planting, no import; the new measurements replace the old ones in
benchmarks/results/store_scale.json, whose build section is kept (and its
verified searches with ``--verify 0``, and its first stage with ``--queries
0``; verified searches with ``--verify-top 0`` are kept apart, under
``verified_all``).

Writes benchmarks/results/store_scale.json, prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402

from ._common import RESULTS, SHARED_DATA, table, write_json  # noqa: E402
from .retrieval import load_sim_cache  # noqa: E402

CHUNK = 10_000
SHORTLIST = 200
FIT_RANK = 256  # principal components of the planted descriptors kept in the bulk's Gaussian


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: Linux's ``VmHWM`` (of this process's own memory).

    Not ``getrusage``'s ``ru_maxrss``: a child started by `subprocess` (vfork, then exec) keeps the
    parent's peak there, so every step reported the import's 4,299 MB.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ChildPeaks:
    """Peak resident memory (``VmHWM``) of this process's child processes (the verification
    workers), polled while they live: `getrusage` cannot tell (see `peak_rss_mb`)."""

    def __init__(self, every: float = 0.2):
        import threading

        self.every, self.peaks, self._stop = every, {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            pids = set()
            for f in Path("/proc/self/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    pids.update(int(x) for x in f.read_text().split())
            for pid in pids:
                with contextlib.suppress(OSError, ValueError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            # the latest reading, not the largest: a child read between fork and exec
                            # still shares this process's memory, and showed its peak (3.3 GB)
                            self.peaks[pid] = int(line.split()[1]) / 1024

    def __enter__(self) -> ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def du_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def _prepare(args):
    """Worker: preprocess and describe one raw scan, write the processed scan as .npz."""
    import cv2

    cv2.setNumThreads(1)
    raw, path = args
    proc = bx.preprocess(raw)
    bx.write_npz(proc, path)
    return str(path), bx.describe(proc)


def planted(work: Path, sim_guns: int, pool: int, seed: int, jobs: int) -> dict:
    """Processed scans (.npz) and descriptors: Fadul, simulated guns x 3 shots, and the bulk's scan pool."""
    scans = work / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    jobs_in, labels = [], []
    fadul = sorted((SHARED_DATA / "fadul").glob("*.x3p"))
    if fadul:
        lab = {r["file"].split("/")[-1][:-4]: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))}
        for f in fadul:
            jobs_in.append((bx.read_scan(f), scans / f"{f.stem}.npz"))
            labels.append(("fadul", f.stem, lab[f.stem]))
    sim = bx.datasets.simulate(sim_guns, 3, seed=seed, difficulty="realistic-hard", resolution="standard")
    for s in sim:
        name = s.meta["labels"]["exhibit"]
        jobs_in.append((s, scans / f"sim-{name}.npz"))
        labels.append(("simulated", f"sim-{name}", f"sim-{s.meta['labels']['firearm']}"))
    other = bx.datasets.simulate(pool, 1, seed=seed + 1000, difficulty="realistic-hard", resolution="standard")
    for i, s in enumerate(other):
        jobs_in.append((s, scans / f"pool-{i}.npz"))
        labels.append(("pool", f"pool-{i}", f"pool-{i}"))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        done = list(ex.map(_prepare, jobs_in))
    return {
        "set": [x[0] for x in labels],
        "name": [x[1] for x in labels],
        "gun": [x[2] for x in labels],
        "path": [d[0] for d in done],
        "vecs": np.array([d[1] for d in done], np.float32),
    }


class Bulk:
    """Distractor descriptors: a Gaussian fitted to real descriptors, drawn deterministically by chunk."""

    def __init__(self, vecs: np.ndarray, rank: int, seed: int):
        x = vecs.astype(np.float64)
        self.mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        var = s**2 / (len(x) - 1)
        r = min(rank, len(var) - 1)
        self.comp, self.sd = vt[:r].astype(np.float32), np.sqrt(var[:r]).astype(np.float32)
        self.resid_sd = float(np.sqrt(var[r:].sum() / (x.shape[1] - r)))  # the rest, spread evenly
        self.seed = seed

    def chunk(self, i: int, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, i])
        z = rng.standard_normal((n, len(self.sd)), dtype=np.float32) * self.sd
        x = z @ self.comp
        x += rng.standard_normal(x.shape, dtype=np.float32) * self.resid_sd
        x += self.mean.astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def fit_set(planted_vecs: np.ndarray) -> np.ndarray:
    """The descriptors the bulk's Gaussian is fitted on: the planted ones, plus the simulated database
    of `benchmarks.retrieval` when it is cached (2,000 scans of 388 guns: a fuller covariance)."""
    for n in (2000, 10000):
        got = load_sim_cache(n, 0)  # descriptors of the version the store makes
        if got is not None:
            return np.vstack([planted_vecs, got[0]])
    return planted_vecs


def build(work: Path, n: int, plant: dict, seed: int) -> dict:
    """Import everything through CaseStore.import_prepared; returns the timings and the bulk's chunks."""
    keep = [i for i, s in enumerate(plant["set"]) if s != "pool"]
    pool_files = [plant["path"][i] for i, s in enumerate(plant["set"]) if s == "pool"]
    bulk = Bulk(fit_set(plant["vecs"][keep]), FIT_RANK, seed)
    n_bulk = n - len(keep)

    def records():
        for i in keep:
            yield {
                "exhibit_id": plant["name"][i],
                "source_sha256": hashlib.sha256(plant["name"][i].encode()).hexdigest(),
                "descriptor": plant["vecs"][i],
                "scan_file": plant["path"][i],
                "firearm_label": plant["gun"][i],
            }
        for c in range(0, n_bulk, CHUNK):
            vecs = bulk.chunk(c // CHUNK, min(CHUNK, n_bulk - c))
            for j, v in enumerate(vecs):
                k = c + j
                yield {
                    "exhibit_id": f"B{k:08d}",
                    "source_sha256": hashlib.sha256(f"bulk-{seed}-{k}".encode()).hexdigest(),
                    "descriptor": v,
                    "scan_file": pool_files[k % len(pool_files)],
                    "scene_id": f"S{k // 3:07d}",
                }

    folder = work / "store"
    t = time.perf_counter()
    with bx.CaseStore(folder) as st:
        out = st.import_prepared(records())
        projection = st.projection
    seconds = time.perf_counter() - t
    return {
        "exhibits": n,
        "planted": len(keep),
        "bulk": n_bulk,
        "import_seconds": seconds,
        "import_per_second": n / seconds,
        "import_peak_rss_mb": peak_rss_mb(),
        "added": out["added"],
        "projection": projection,
        "disk_gb": du_gb(folder),
        "disk_sqlite_gb": (folder / "store.sqlite").stat().st_size / 1e9,
        "disk_index_gb": (folder / "index.bxi").stat().st_size / 1e9,
        "bulk_fit": {"rank": len(bulk.sd), "resid_sd": bulk.resid_sd},
    }


def evict(path: Path) -> bool:
    """Drop ``path``'s pages from the page cache (``POSIX_FADV_DONTNEED``: this file only, nothing
    else's); False where the system cannot. A national store's descriptors do not fit the cache:
    a query's candidates are read from disk."""
    if not hasattr(os, "posix_fadvise"):  # pragma: no cover - not Linux
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def _ms(x) -> dict:
    x = np.asarray(x) * 1e3
    return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99))}


def refined_pass(index, db, dim: int, queries: np.ndarray, factor: int) -> tuple[dict, dict, list]:
    """One query at a time, re-ranked as the store does it (`store.descriptors.refine`: the best
    ``factor`` x k compact candidates ordered by their full descriptors, `descriptors.fetch` from
    SQLite), with the time spent reading them (the rest is the compact search and the products).
    Each query is searched twice in a row: first as it comes (its candidates mostly not in the page
    cache when the pass starts with store.sqlite evicted), then again with all of them cached."""
    from ballistix.store.descriptors import fetch

    spent = []

    def timed(ids):
        t = time.perf_counter()
        out = fetch(db, dim, ids)
        spent[-1] += time.perf_counter() - t
        return out

    index.refine_with(timed, factor=factor)
    lat, lists = [], []
    for v in queries:
        for again in (False, True):
            spent.append(0.0)
            t = time.perf_counter()
            _, ids = index.search(v[None], SHORTLIST + 1)
            lat.append(time.perf_counter() - t)
            if again:
                assert np.array_equal(ids[0], lists[-1])
            else:
                lists.append(ids[0])
    lat, spent = np.array(lat).reshape(-1, 2), np.array(spent).reshape(-1, 2)
    rec = [
        {**_ms(lat[:, j]), "sqlite_read_ms": _ms(spent[:, j]), "rest_ms": _ms(lat[:, j] - spent[:, j]), "n": len(lat)}
        for j in (0, 1)
    ]
    return rec[0], rec[1], lists


def first_stage(work: Path, plant: dict, seed: int, queries: int, factors: list[int]) -> dict:
    """In a fresh process: open time, first-stage latency (compact alone, then re-ranked by the full
    descriptors with each of ``factors``, its SQLite reads cold and cached), and the planted partners
    kept (compact, re-ranked, against the full descriptors' exact shortlist)."""
    from ballistix.index.scan_index import REFINE_FACTOR

    cold_open = all([evict(work / "store" / "store.sqlite"), evict(work / "store" / "index.bxi")])
    t = time.perf_counter()
    st = bx.CaseStore(work / "store", read_only=True)
    open_s = time.perf_counter() - t
    open_rss = peak_rss_mb()
    index, dim = st._index, int(st.descriptor["dim"])
    keep = [i for i, s in enumerate(plant["set"]) if s != "pool"]
    names = [plant["name"][i] for i in keep]
    gun = np.array([plant["gun"][i] for i in keep])
    qv = plant["vecs"][keep]
    rowid = {e: r for r, e in st._db.execute("SELECT rowid, exhibit_id FROM exhibits WHERE rowid <= ?", (len(keep),))}
    ids_planted = np.array([rowid[e] for e in names])
    # one query at a time: the planted exhibits, then bulk-like descriptors
    bulk = Bulk(fit_set(qv), FIT_RANK, seed + 7)
    extra = bulk.chunk(0, max(0, queries - len(qv)))
    allq = np.vstack([qv, extra])
    lat, shortlists = [], []
    for v in allq:  # the compact index alone
        t = time.perf_counter()
        _, ids = index.search(v[None], SHORTLIST + 1, refine=False)
        lat.append(time.perf_counter() - t)
        shortlists.append(ids[0])
    out = {"open_seconds": open_s, "open_cold": cold_open, "open_peak_rss_mb": open_rss, "index_type": index.index_type}
    out["first_stage_ms"] = {**_ms(lat), "n": len(lat)}
    refined, out["refined"] = {}, {}
    db_file = work / "store" / "store.sqlite"
    for f in factors if index.pca_dim is not None else ():
        evicted = evict(db_file)  # the descriptors read from disk, as at a national size, and again cached
        rec, rec_warm, refined[f] = refined_pass(index, st._db, dim, allq, f)
        out["refined"][str(f)] = {
            "candidates": f * (SHORTLIST + 1),
            "cold": rec,
            "evicted_first": evicted,
            "cached": rec_warm,
        }
        if f == REFINE_FACTOR:
            out["first_stage_refined_ms"] = {"p50": rec["p50"], "p99": rec["p99"], "factor": f}
    # exact shortlists of the full descriptors, by brute force over the store's descriptors
    t = time.perf_counter()
    best_s = np.full((len(qv), SHORTLIST + 1), -np.inf, np.float32)
    best_i = np.zeros((len(qv), SHORTLIST + 1), np.int64)
    from ballistix.store.descriptors import descriptor_chunks

    for ids, vecs in descriptor_chunks(st._db, dim, chunk=20_000):
        s = qv @ vecs.T
        cat_s, cat_i = np.hstack([best_s, s]), np.hstack([best_i, np.broadcast_to(ids, s.shape)])
        top = np.argpartition(-cat_s, SHORTLIST, axis=1)[:, : SHORTLIST + 1]
        best_s, best_i = np.take_along_axis(cat_s, top, 1), np.take_along_axis(cat_i, top, 1)
    out["exact_full_seconds"] = time.perf_counter() - t
    for name in sorted(set(plant["set"][i] for i in keep)):
        qs = [q for q in range(len(qv)) if plant["set"][keep[q]] == name]
        partners = {q: set(ids_planted[(gun == gun[q]) & (ids_planted != ids_planted[q])].tolist()) for q in qs}
        full = {q: partners[q] & set(best_i[q].tolist()) for q in qs}
        n_full = sum(len(full[q]) for q in qs)

        def kept(lists, qs=qs, partners=partners, full=full, n_full=n_full):
            held = {q: partners[q] & set(lists[q].tolist()) for q in qs}
            both = sum(len(full[q] & held[q]) for q in qs)
            return sum(len(h) for h in held.values()), (both / n_full if n_full else None), held

        compact, compact_kept, held = kept(shortlists)
        rec = {
            "queries": len(qs),
            "partners": sum(len(p) for p in partners.values()),
            "in_full_shortlist": n_full,
            "in_compact_shortlist": compact,
            "compact_keeps_of_full": compact_kept,
            "queries_with_a_partner_in_compact_shortlist": sum(bool(held[q]) for q in qs if partners[q])
            / max(1, sum(bool(partners[q]) for q in qs)),
        }
        for f, lists in refined.items():
            n, share, _ = kept(lists)
            rec[f"refined_x{f}"] = {"in_shortlist": n, "keeps_of_full": share}
            if f == REFINE_FACTOR:
                rec["in_refined_shortlist"], rec["refined_keeps_of_full"] = n, share
        out[f"partners_{name}"] = rec
    out["peak_rss_mb"] = peak_rss_mb()
    st.close()
    return out


def verified(work: Path, plant: dict, n: int, jobs: int, verify_top: int | None) -> dict:
    """In a fresh process: verified searches (`CaseStore.search`, shortlist 200, CMC on the best
    ``verify_top`` after the pre-check, or on all 200 when None) of ``n`` Fadul and ``n`` simulated
    planted exhibits; for each, its time, its best three and whether the best is of the same gun."""
    st = bx.CaseStore(work / "store", read_only=True)
    gun = {e: g for e, g, s in zip(plant["name"], plant["gun"], plant["set"], strict=True) if s != "pool"}
    names = []
    for s in ("fadul", "simulated"):
        names += [e for e, t in zip(plant["name"], plant["set"], strict=True) if t == s][:n]
    out = []
    for name in names:
        t = time.perf_counter()
        with ChildPeaks() as workers:
            hits = st.search(name, k=20, shortlist=SHORTLIST, n_jobs=jobs, verify_top=verify_top)
        seconds = time.perf_counter() - t
        same = [h["exhibit_id"] != name and gun.get(h["exhibit_id"]) == gun[name] for h in hits]
        out.append(
            {
                "query": name,
                "set": "fadul" if name.startswith("fadul") else "simulated",
                "seconds": seconds,
                "top": [h["exhibit_id"] for h in hits[:3]],
                "cmc": [h["cmc_count"] for h in hits[:3]],
                "top_is_partner": bool(same and same[0]),
                "partners_in_results": int(sum(same)),
                "partners_in_store": sum(g == gun[name] for e, g in gun.items() if e != name),
                "workers_peak_rss_mb": sorted(workers.peaks.values(), reverse=True),
            }
        )
    st.close()
    return {
        "verify_top": verify_top,
        "shortlist": SHORTLIST,
        "jobs": jobs,
        "queries": out,
        "peak_rss_mb": peak_rss_mb(),
    }


def _step(argv: list[str]) -> dict:
    """Run one step of this benchmark in a fresh Python process; returns its JSON output."""
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.store_scale", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if res.returncode:
        raise RuntimeError(f"step {argv[:2]} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _load_plant(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: (z[k].tolist() if k != "vecs" else z[k]) for k in z.files}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exhibits", type=int, default=1_000_000)
    p.add_argument("--sim-guns", type=int, default=30)
    p.add_argument("--pool", type=int, default=20, help="processed scans the bulk exhibits reference")
    p.add_argument(
        "--queries", type=int, default=200, help="first-stage queries timed (with --reuse, 0 keeps those measured)"
    )
    p.add_argument(
        "--refine-factors",
        default=None,
        help="re-rankings measured, comma-separated multiples of k (default: the store's, ScanIndex's REFINE_FACTOR)",
    )
    p.add_argument("--verify", type=int, default=2, help="verified searches of each set, Fadul and simulated")
    p.add_argument(
        "--verify-top",
        type=int,
        default=20,
        help="CMC on the pre-checked best N of the shortlist of 200 (0: on all 200)",
    )
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=RESULTS / "store_scale_work")
    p.add_argument("--keep", action="store_true", help="keep the store (it is large)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="measure the store already in WORK/store (with WORK/planted.npz): no planting, no import; "
        "the results go into store_scale.json beside its build",
    )
    p.add_argument("--step", choices=["first-stage", "verified"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from ballistix.index.scan_index import REFINE_FACTOR

    factors = [int(f) for f in args.refine_factors.split(",")] if args.refine_factors else [REFINE_FACTOR]
    verify_top = args.verify_top or None
    plant_file = args.work / "planted.npz"
    if args.step:  # a child process
        plant = _load_plant(plant_file)
        if args.step == "first-stage":
            res = first_stage(args.work, plant, args.seed, args.queries, factors)
        else:
            res = verified(args.work, plant, args.verify, args.jobs, verify_top)
        print(json.dumps(res))
        return 0
    params = {k: str(v) for k, v in vars(args).items()}
    verified_key = "verified" if verify_top else "verified_all"  # CMC on the best --verify-top, or on all
    if args.reuse:
        if not (args.work / "store" / "store.sqlite").is_file() or not plant_file.is_file():
            p.error(f"--reuse needs a store in {args.work / 'store'} and {plant_file}")
        previous = RESULTS / "store_scale.json"
        out = json.loads(previous.read_text()) if previous.is_file() else {}
        out.pop("benchmark", None), out.pop("machine", None)
        if args.queries:  # measured again below; the build and its parameters are kept
            out.pop("first_stage", None)
        elif "first_stage" not in out:
            p.error("--queries 0 keeps the first stage measured before: store_scale.json holds none")
        if args.verify:
            out.pop(verified_key, None)
        out["measure_params"] = params
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
        t = time.perf_counter()
        plant = planted(args.work, args.sim_guns, args.pool, args.seed, args.jobs)
        np.savez(plant_file, **{k: np.asarray(v) for k, v in plant.items()})
        out = {"params": params, "planting_seconds": time.perf_counter() - t}
        out["build"] = build(args.work, args.exhibits, plant, args.seed)
        write_json("store_scale", out)
    common = ["--work", str(args.work), "--seed", str(args.seed)]
    if args.queries or not args.reuse:
        out["first_stage"] = _step(
            [
                "--step",
                "first-stage",
                *common,
                "--queries",
                str(args.queries),
                "--refine-factors",
                ",".join(map(str, factors)),
            ]
        )
        write_json("store_scale", out)
    if args.verify:
        out[verified_key] = _step(
            [
                "--step",
                "verified",
                *common,
                "--verify",
                str(args.verify),
                "--jobs",
                str(args.jobs),
                "--verify-top",
                str(args.verify_top),
            ]
        )
    path = write_json("store_scale", out)
    if not args.keep and not args.reuse:
        shutil.rmtree(args.work / "store", ignore_errors=True)
    print(table(summary_rows(out), ["measure", "value"]))
    print(f"\nwrote {path}")
    return 0


def summary_rows(out: dict) -> list[list]:
    """The table printed at the end, from the JSON written."""
    b, f = out.get("build"), out["first_stage"]
    rows = []
    if b:
        rows += [
            ["exhibits", b["exhibits"]],
            ["import, exhibits/s", b["import_per_second"]],
            ["import peak RSS, GB", b["import_peak_rss_mb"] / 1024],
            ["disk, GB (sqlite / index)", f"{b['disk_gb']:.2f} ({b['disk_sqlite_gb']:.2f} / {b['disk_index_gb']:.2f})"],
        ]
    rows += [
        ["peak RSS of the first-stage step (exact shortlists included), GB", f["peak_rss_mb"] / 1024],
        [
            f"open{', files not cached' if f.get('open_cold') else ''}, s (peak RSS GB)",
            f"{f['open_seconds']:.2f} ({f['open_peak_rss_mb'] / 1024:.2f})",
        ],
        [
            "index",
            f"{f['index_type']}" + (f", {b['projection'].get('kind')} {b['projection'].get('dim')}" if b else ""),
        ],
        [
            "first stage, compact alone, p50 / p99, ms",
            f"{f['first_stage_ms']['p50']:.2f} / {f['first_stage_ms']['p99']:.2f}",
        ],
    ]
    for factor, r in sorted(f.get("refined", {}).items(), key=lambda kv: int(kv[0])):
        for how in ("cold", "cached"):
            m, rd = r[how], r[how]["sqlite_read_ms"]
            rows.append(
                [
                    f"... re-ranked, best {r['candidates']} ({factor} x k), SQLite {how}: p50 / p99 (reading), ms",
                    f"{m['p50']:.1f} / {m['p99']:.1f} ({rd['p50']:.1f} / {rd['p99']:.1f})",
                ]
            )
    for k, v in f.items():
        if k.startswith("partners_"):
            refined = " / ".join(
                f"x{x[9:]} {r['in_shortlist']} ({r['keeps_of_full']:.3f})"
                for x, r in sorted(v.items(), key=lambda kv: int(kv[0][9:]) if kv[0].startswith("refined_x") else 0)
                if x.startswith("refined_x")
            )
            rows.append(
                [
                    f"{k[9:]}: of {v['partners']} partners, in the full / compact (kept) / re-ranked (kept) shortlist",
                    f"{v['in_full_shortlist']} / {v['in_compact_shortlist']} "
                    f"({v['compact_keeps_of_full']:.3f}) / {refined}",
                ]
            )
    for key in ("verified", "verified_all"):
        if not out.get(key):
            continue
        workers = [sum(q.get("workers_peak_rss_mb", [])) for q in out[key]["queries"]]
        rows.append(
            [
                f"peak RSS of the {key} step, GB: its process (+ its workers' peaks)",
                f"{out[key]['peak_rss_mb'] / 1024:.2f} (+ {max(workers, default=0) / 1024:.2f})",
            ]
        )
        top = out[key].get("verify_top")
        for q in out[key]["queries"]:
            best = ", ".join(f"{e} {c}" for e, c in zip(q["top"], q["cmc"], strict=True))
            rows.append(
                [
                    f"verified {q['query']} (CMC on {top or 'all'}), s",
                    f"{q['seconds']:.1f}: {best} (best {'is' if q['top_is_partner'] else 'not'} same gun)",
                ]
            )
    return rows


if __name__ == "__main__":
    sys.exit(main())
