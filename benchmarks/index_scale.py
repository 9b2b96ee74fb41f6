"""Index scale: query latency, memory and recall of `ScanIndex` from 10 thousand to 10 million scans.

    python -m benchmarks.index_scale [--sizes 10000 100000 1000000] [--dim 128] [--queries 300]

Vectors are drawn to mimic descriptors after the PCA a large database uses
(``pca_dim=128``): guns are Gaussian centres whose eigen-spectrum decays as
i^-alpha (alpha fitted to the descriptors of the 40 real Fadul scans when
they are present), each scan its gun's centre plus noise of the same
spectrum, scaled so that two scans of one gun have a cosine of about 0.5,
L2-normalised. Queries are new scans of guns in the database.

For each size: the exact index (``Flat``) and the type `choose_factory`
picks, built through `ScanIndex` (train on a sample, add in chunks); one
query at a time on one core (indexes are built with every core): p50/p95 latency, recall@200 of the approximate
search against the exact one, the share of the query gun's database scans in
the top 200, and memory (serialized size and resident-set growth), for a
sweep of ``ef_search`` (HNSW) or ``nprobe`` (IVF). Writes benchmarks/results/index_scale.json
and index_scale.png, prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix.index import choose_factory  # noqa: E402

from ._common import RESULTS, SHARED_DATA, table, write_json  # noqa: E402

SHOTS = 5  # scans per gun in the synthetic database
SAME_GUN_COS = 0.5  # target cosine of two scans of one gun
CHUNK = 250_000


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover


def fitted_alpha() -> float | None:
    """Decay exponent of the descriptor PCA spectrum on the real scans (None without them)."""
    files = sorted((SHARED_DATA / "fadul").glob("*.x3p"))
    if not files:
        return None
    x = np.array([bx.describe(bx.read_scan(f)) for f in files], dtype=np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    i = np.arange(1, len(s))  # the last value is ~0 (n-1 degrees of freedom)
    slope, _ = np.polyfit(np.log(i[:30]), np.log(s[:-1][:30]), 1)
    return float(-slope)


class Population:
    """Synthetic descriptor population: gun centres plus per-scan noise, deterministic by seed."""

    def __init__(self, dim: int, alpha: float, seed: int = 0):
        self.dim, self.seed = dim, seed
        self.scale = np.arange(1, dim + 1) ** (-alpha / 2)
        # noise/centre ratio r such that cos(same gun) = 1 / (1 + r^2) = SAME_GUN_COS
        self.r = np.sqrt(1 / SAME_GUN_COS - 1)

    def _centres(self, guns: np.ndarray) -> np.ndarray:
        out = np.empty((len(guns), self.dim), np.float32)
        for k, g in enumerate(guns):
            out[k] = np.random.default_rng([self.seed, int(g)]).standard_normal(self.dim) * self.scale
        return out

    def scans(self, start: int, stop: int, shot: int = 0) -> np.ndarray:
        """Vectors of database scans start..stop-1 (scan i is shot i % SHOTS of gun i // SHOTS)."""
        idx = np.arange(start, stop)
        centres = self._centres(idx // SHOTS)
        rng = np.random.default_rng([self.seed, 1, start, shot])
        x = centres + self.r * rng.standard_normal((len(idx), self.dim)).astype(np.float32) * self.scale
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def queries(self, n_db: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """New scans of ``n`` guns in the database, and those guns' database ids (n, SHOTS)."""
        guns = np.random.default_rng([self.seed, 2, n_db]).choice(n_db // SHOTS, n, replace=False)
        x = (
            self._centres(guns)
            + self.r
            * np.random.default_rng([self.seed, 3]).standard_normal((n, self.dim)).astype(np.float32)
            * self.scale
        )
        same = guns[:, None] * SHOTS + np.arange(SHOTS)[None, :]
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), same


def build(pop: Population, n: int, factory: str) -> tuple[bx.ScanIndex, dict]:
    rss0 = rss_mb()
    t = time.perf_counter()
    index = bx.ScanIndex(pop.dim, factory=factory)  # built with every core; searched on one (below)
    if not index.is_trained:  # IVF: 64 vectors a list; codes: 100,000 vectors
        head = factory.split(",")[0]
        cap = 64 * int(head[3:].split("_")[0]) if head.startswith("IVF") else 100_000
        index.train(pop.scans(0, min(n, cap)))
    t_train = time.perf_counter() - t
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        index.add(np.arange(a, b), pop.scans(a, b))
    faiss.omp_set_num_threads(1)
    index.threads = 1
    t_build = time.perf_counter() - t
    return index, {
        "factory": factory,
        "index_type": index.index_type,
        "train_seconds": t_train,
        "build_seconds": t_build,
        "rss_growth_mb": rss_mb() - rss0,
        "serialized_mb": faiss.serialize_index(index._index).nbytes / 2**20,
    }


def latency(index: bx.ScanIndex, q: np.ndarray, k: int) -> tuple[np.ndarray, dict]:
    index.search(q[:5], k)  # warm up
    times, ids = [], []
    for v in q:
        t = time.perf_counter()
        _, i = index.search(v[None, :], k)
        times.append(time.perf_counter() - t)
        ids.append(i[0])
    ms = np.array(times) * 1e3
    return np.array(ids), {
        "p50_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
    }


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of ``exact`` found in the same row of ``approx``."""
    return float(np.mean([len(set(a[a >= 0]) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--nprobe", type=int, nargs="+", default=[64, 256, 1024], help="IVF types")
    p.add_argument("--ef-search", type=int, nargs="+", default=[200, 400, 800, 1600], help="HNSW types")
    p.add_argument("--refine-factor", type=int, nargs="+", default=[4, 10, 25, 50], help="...,RFlat types")
    p.add_argument(
        "--also",
        nargs="*",
        default=["HNSW32"],
        help="other factories measured at every size beyond exact (for comparison)",
    )
    p.add_argument(
        "--exact-queries", type=int, default=None, help="queries timed on the exact index (default: all; fewer for 10M)"
    )
    args = p.parse_args(argv)
    faiss.omp_set_num_threads(1)
    alpha = fitted_alpha()
    pop = Population(args.dim, alpha if alpha is not None else 1.0)
    out = {
        "params": vars(args),
        "alpha": alpha,
        "alpha_source": "fadul descriptors" if alpha else "default 1.0",
        "same_gun_cosine": SAME_GUN_COS,
        "sizes": {},
    }
    rows = []
    for n in args.sizes:
        q, same = pop.queries(n, args.queries)
        res = {}
        exact, info = build(pop, n, "Flat")
        nq = args.exact_queries or len(q)
        exact_ids, lat = latency(exact, q[:nq], args.k)
        if nq < len(q):  # the rest of the ground truth in one batch (not timed)
            exact_ids = np.vstack([exact_ids, exact.search(q[nq:], args.k)[1]])
        res["exact"] = {**info, **lat, "same_gun_recall": recall(exact_ids, same)}
        rows.append(
            [
                f"{n:,}",
                "Flat (exact)",
                "-",
                lat["p50_ms"],
                lat["p95_ms"],
                1.0,
                res["exact"]["same_gun_recall"],
                info["serialized_mb"],
                info["build_seconds"],
            ]
        )
        del exact
        factories = [choose_factory(n, args.dim)]
        if factories[0] != "Flat":
            factories += [f for f in args.also if f not in factories]
        res["approx"] = {}
        for factory in factories:
            if factory == "Flat":
                continue
            approx, info = build(pop, n, factory)
            knob, values = (
                ("ef_search", args.ef_search)
                if factory.startswith("HNSW")
                else ("refine_factor", args.refine_factor)
                if factory.endswith("RFlat")
                else ("nprobe", args.nprobe)
            )
            r_f = res["approx"][factory] = {**info, "knob": knob, "auto": factory == factories[0], "sweep": {}}
            for v in values:
                setattr(approx, knob, v)
                ids, lat = latency(approx, q, args.k)
                r, g = recall(ids, exact_ids), recall(ids, same)
                r_f["sweep"][v] = {**lat, "recall_at_k": r, "same_gun_recall": g}
                rows.append(
                    [
                        f"{n:,}",
                        factory,
                        f"{knob} {v}",
                        lat["p50_ms"],
                        lat["p95_ms"],
                        r,
                        g,
                        info["serialized_mb"],
                        info["build_seconds"],
                    ]
                )
            del approx
        out["sizes"][n] = res
    path = write_json("index_scale", out)
    figure(out, RESULTS / "index_scale.png")
    print(
        table(
            rows,
            [
                "vectors",
                "index",
                "setting",
                "p50 ms",
                "p95 ms",
                f"recall@{args.k} vs exact",
                f"same-gun in top {args.k}",
                "MB",
                "build s",
            ],
        )
    )
    print(f"\nwrote {path}")
    return 0


def figure(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(out["sizes"], key=int)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    n = [int(s) for s in sizes]
    a1.plot(n, [out["sizes"][s]["exact"]["p50_ms"] for s in sizes], "o-", label="exact (Flat)")
    a2.plot(n, [out["sizes"][s]["exact"]["serialized_mb"] for s in sizes], "o-", label="exact (Flat)")
    factories = sorted({f for s in sizes for f in out["sizes"][s].get("approx", {})})
    for factory in factories:
        pts = [
            (int(s), out["sizes"][s]["approx"][factory]) for s in sizes if factory in out["sizes"][s].get("approx", {})
        ]
        # per size, the fastest setting reaching recall@k 0.95 against exact (else the most accurate)
        best = []
        for x, r in pts:
            sw = list(r["sweep"].values())
            ok = [v for v in sw if v["recall_at_k"] >= 0.95]
            best.append((x, min(ok, key=lambda v: v["p50_ms"]) if ok else max(sw, key=lambda v: v["recall_at_k"])))
        a1.plot(
            [x for x, _ in best],
            [v["p50_ms"] for _, v in best],
            "s--",
            label=f"{factory} (recall@k " + ", ".join(f"{v['recall_at_k']:.2f}" for _, v in best) + ")",
        )
        a2.plot([x for x, _ in pts], [r["serialized_mb"] for _, r in pts], "s--", label=factory)
    for ax, lab in ((a1, "p50 latency per query, one core (ms)"), (a2, "index size (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors in the index")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
