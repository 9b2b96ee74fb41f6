"""A national-size case store: one million exhibits on one machine, through the store's own API.

    python -m benchmarks.store_scale [--exhibits 1000000] [--sim-guns 30] [--queries 200] [--verify 2]

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
in a fresh process so that its memory is its own: opening the store; the
first stage (`ballistix.search` without scans) one query at a time for the
planted exhibits and for bulk-like descriptors, p50/p99; whether each planted
query's same-gun partners are in its compact shortlist of 200, against the
shortlist of the full 9,216-value descriptors (exact, computed by brute force
over the regenerated bulk); and ``--verify`` full verified searches
(`CaseStore.search`, shortlist 200, 2 processes).

Writes benchmarks/results/store_scale.json, prints a table.
"""

from __future__ import annotations

import argparse
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
from .retrieval import sim_cache_path  # noqa: E402

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
    cache = sim_cache_path(2000, 0)
    if not cache.is_file():
        return planted_vecs
    with np.load(cache) as z:
        return np.vstack([planted_vecs, z["vecs"].astype(np.float32)])


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


def first_stage(work: Path, plant: dict, seed: int, queries: int) -> dict:
    """In a fresh process: open time, first-stage latency, and the planted partners kept (compact vs full)."""
    t = time.perf_counter()
    st = bx.CaseStore(work / "store", read_only=True)
    open_s = time.perf_counter() - t
    open_rss = peak_rss_mb()
    index = st._index
    keep = [i for i, s in enumerate(plant["set"]) if s != "pool"]
    names = [plant["name"][i] for i in keep]
    gun = np.array([plant["gun"][i] for i in keep])
    qv = plant["vecs"][keep]
    rowid = {e: r for r, e in st._db.execute("SELECT rowid, exhibit_id FROM exhibits WHERE rowid <= ?", (len(keep),))}
    ids_planted = np.array([rowid[e] for e in names])
    # one query at a time: the planted exhibits, then bulk-like descriptors
    bulk = Bulk(fit_set(qv), FIT_RANK, seed + 7)
    extra = bulk.chunk(0, max(0, queries - len(qv)))
    refine, index._exact = index._exact, None  # first the compact search alone, then as the store runs it
    lat, shortlists = [], []
    for v in np.vstack([qv, extra]):
        t = time.perf_counter()
        _, ids = index.search(v[None], SHORTLIST + 1)
        lat.append(time.perf_counter() - t)
        shortlists.append(ids[0])
    lat = np.array(lat) * 1e3
    index._exact = refine
    lat_r, refined = [], []
    for v in np.vstack([qv, extra]) if refine is not None else ():
        t = time.perf_counter()
        _, ids = index.search(v[None], SHORTLIST + 1)
        lat_r.append(time.perf_counter() - t)
        refined.append(ids[0])
    lat_r = np.array(lat_r) * 1e3
    # exact shortlists of the full descriptors, by brute force over the store's descriptors
    t = time.perf_counter()
    best_s = np.full((len(qv), SHORTLIST + 1), -np.inf, np.float32)
    best_i = np.zeros((len(qv), SHORTLIST + 1), np.int64)
    from ballistix.store.descriptors import descriptor_chunks

    for ids, vecs in descriptor_chunks(st._db, st.descriptor["dim"], chunk=20_000):
        s = qv @ vecs.T
        cat_s, cat_i = np.hstack([best_s, s]), np.hstack([best_i, np.broadcast_to(ids, s.shape)])
        top = np.argpartition(-cat_s, SHORTLIST, axis=1)[:, : SHORTLIST + 1]
        best_s, best_i = np.take_along_axis(cat_s, top, 1), np.take_along_axis(cat_i, top, 1)
    exact_seconds = time.perf_counter() - t
    rows = []
    for q in range(len(qv)):
        partners = set(ids_planted[(gun == gun[q]) & (ids_planted != ids_planted[q])].tolist())
        full = partners & set(best_i[q].tolist())
        compact = partners & set(shortlists[q].tolist())
        ref = partners & set(refined[q].tolist()) if refined else compact
        rows.append(
            (
                plant["set"][keep[q]],
                len(partners),
                len(full),
                len(full & compact),
                len(compact),
                len(full & ref),
                len(ref),
            )
        )
    out = {"open_seconds": open_s, "open_peak_rss_mb": open_rss, "index_type": index.index_type}
    out["first_stage_ms"] = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "n": len(lat)}
    if len(lat_r):
        out["first_stage_refined_ms"] = {"p50": float(np.percentile(lat_r, 50)), "p99": float(np.percentile(lat_r, 99))}
    out["exact_full_seconds"] = exact_seconds
    for name in sorted({r[0] for r in rows}):
        rs = [r for r in rows if r[0] == name]
        full, both, compact, partners, both_r, refined_n = (sum(r[i] for r in rs) for i in (2, 3, 4, 1, 5, 6))
        first = [r for r in rs if r[1]]
        out[f"partners_{name}"] = {
            "queries": len(rs),
            "partners": partners,
            "in_full_shortlist": full,
            "in_compact_shortlist": compact,
            "compact_keeps_of_full": both / full if full else None,
            "in_refined_shortlist": refined_n,
            "refined_keeps_of_full": both_r / full if full else None,
            "queries_with_a_partner_in_compact_shortlist": sum(r[4] > 0 for r in first) / max(1, len(first)),
        }
    out["peak_rss_mb"] = peak_rss_mb()
    st.close()
    return out


def verified(work: Path, plant: dict, n: int, jobs: int) -> dict:
    """In a fresh process: full searches (shortlist 200, CMC on every candidate) of planted exhibits."""
    st = bx.CaseStore(work / "store", read_only=True)
    names = [plant["name"][i] for i, s in enumerate(plant["set"]) if s == "fadul"][:n] or [
        plant["name"][i] for i, s in enumerate(plant["set"]) if s == "simulated"
    ][:n]
    out = []
    for name in names:
        t = time.perf_counter()
        hits = st.search(name, k=20, shortlist=SHORTLIST, n_jobs=jobs)
        out.append({"query": name, "seconds": time.perf_counter() - t, "top": hits[0]["exhibit_id"] if hits else None})
    st.close()
    return {"queries": out, "peak_rss_mb": peak_rss_mb()}


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exhibits", type=int, default=1_000_000)
    p.add_argument("--sim-guns", type=int, default=30)
    p.add_argument("--pool", type=int, default=20, help="processed scans the bulk exhibits reference")
    p.add_argument("--queries", type=int, default=200, help="first-stage queries timed")
    p.add_argument("--verify", type=int, default=2, help="verified searches (shortlist 200)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=RESULTS / "store_scale_work")
    p.add_argument("--keep", action="store_true", help="keep the store (it is large)")
    p.add_argument("--step", choices=["first-stage", "verified"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    plant_file = args.work / "planted.npz"
    if args.step:  # a child process
        z = dict(np.load(plant_file, allow_pickle=False))
        plant = {k: (v.tolist() if k != "vecs" else v) for k, v in z.items()}
        res = first_stage(args.work, plant, args.seed, args.queries) if args.step == "first-stage" else None
        res = res or verified(args.work, plant, args.verify, args.jobs)
        print(json.dumps(res))
        return 0
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    t = time.perf_counter()
    plant = planted(args.work, args.sim_guns, args.pool, args.seed, args.jobs)
    np.savez(plant_file, **{k: np.asarray(v) for k, v in plant.items()})
    out = {"params": {k: str(v) for k, v in vars(args).items()}, "planting_seconds": time.perf_counter() - t}
    out["build"] = build(args.work, args.exhibits, plant, args.seed)
    write_json("store_scale", out)
    out["first_stage"] = _step(["--step", "first-stage", "--work", str(args.work), "--queries", str(args.queries)])
    write_json("store_scale", out)
    if args.verify:
        out["verified"] = _step(
            ["--step", "verified", "--work", str(args.work), "--verify", str(args.verify), "--jobs", str(args.jobs)]
        )
    path = write_json("store_scale", out)
    if not args.keep:
        shutil.rmtree(args.work / "store", ignore_errors=True)
    b, f = out["build"], out["first_stage"]
    rows = [
        ["exhibits", b["exhibits"]],
        ["import, exhibits/s", b["import_per_second"]],
        ["import peak RSS, GB", b["import_peak_rss_mb"] / 1024],
        ["disk, GB (sqlite / index)", f"{b['disk_gb']:.2f} ({b['disk_sqlite_gb']:.2f} / {b['disk_index_gb']:.2f})"],
        ["open, s (peak RSS GB)", f"{f['open_seconds']:.2f} ({f['open_peak_rss_mb'] / 1024:.2f})"],
        ["index", f"{f['index_type']}, {b['projection'].get('kind')} {b['projection'].get('dim')}"],
        ["first stage p50 / p99, ms", f"{f['first_stage_ms']['p50']:.2f} / {f['first_stage_ms']['p99']:.2f}"],
    ]
    if "first_stage_refined_ms" in f:
        r = f["first_stage_refined_ms"]
        rows.append(["... re-ranked by full descriptors, ms", f"{r['p50']:.1f} / {r['p99']:.1f}"])
    for k, v in f.items():
        if k.startswith("partners_"):
            rows.append(
                [
                    f"{k[9:]}: partners in full / compact / re-ranked shortlist (kept)",
                    f"{v['in_full_shortlist']} / {v['in_compact_shortlist']} / {v['in_refined_shortlist']} of "
                    f"{v['partners']} ({v['compact_keeps_of_full']} / {v['refined_keeps_of_full']})",
                ]
            )
    for q in out.get("verified", {}).get("queries", []):
        rows.append([f"verified search {q['query']}, s", f"{q['seconds']:.1f} (top {q['top']})"])
    print(table(rows, ["measure", "value"]))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
