"""Case store under concurrent clients: ingest, link and search with 1, 2 and 4 processes on SQLite and PostgreSQL.

    python -m benchmarks.store_concurrency [--files 48] [--clients 1 2 4] [--searches 8]
                                           [--backends sqlite postgresql] [--quick]

For each backend and each number of clients N the parent process creates a new
store (SQLite in the folder, or a new database on a throwaway PostgreSQL server
with fsync on: `benchmarks._postgres.PostgresServer(durable=True)`), then starts
N client processes ("spawn"), each opening the store by its folder alone and
keeping it open through three phases. Each phase starts at one barrier (all
clients at once) and lasts until the last client is done:

1. ingest: the same x3p files every time (simulated, easy, fast resolution;
   written once and kept in benchmarks/results/store_concurrency_files/), split
   between the clients (client k takes every N-th file); exhibits/s.
2. link: every client calls ``link_new`` at once. On PostgreSQL each client
   claims an exhibit before verifying it (a session advisory lock); on SQLite
   a client only skips what another has already linked, so clients that start
   together verify the same exhibits. The sum of the comparisons the clients
   report against the distinct comparison rows recorded shows duplicated work;
   comparisons/s counts the distinct rows.
3. search: each client searches ``--searches`` exhibit ids (k=5); searches/s
   and latency.

Each client also times its waits for the write lock (`Database.begin_write`:
SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory lock), patched in the client
process only. After every phase the parent opens the store afresh and checks
that nothing was lost: as many exhibits as files, one per source checksum (the
files' own), every exhibit linked after the link phase, ``check()`` ok, and no
warning on opening. Anything lost makes the run fail (exit status 1).

Writes benchmarks/results/store_concurrency.json and store_concurrency.png and
prints a table. On a 2-core machine 4 clients share 2 cores: the phases are
CPU-bound (preprocessing, CMC), so throughput cannot grow past 2 clients there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import queue
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # clients inherit: one thread each
    os.environ.setdefault(_v, "1")

import ballistix as bx  # noqa: E402

from . import _common  # noqa: E402
from ._common import table, write_json  # noqa: E402

FAST = {"spacing_um": 12.5}
PHASES = ("ingest", "link", "search")
TIMEOUT = 1800  # s: a client that hangs fails the run instead of blocking it


# ------------------------------------------------------------------ input files
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_files(n_files: int, seed: int) -> tuple[list[Path], dict[str, str]]:
    """``n_files`` simulated x3p files (3 shots a gun), written once into the results folder and reused
    while their recorded checksums hold; returns the paths and their SHA-256 by file name."""
    guns = -(-n_files // 3)
    folder = _common.RESULTS / "store_concurrency_files" / f"{guns}x3-seed{seed}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        sums = json.loads(manifest.read_text())
        paths = [folder / name for name in sorted(sums)][:n_files]
        if len(paths) == n_files and all(p.is_file() and _sha256(p) == sums[p.name] for p in paths):
            return paths, {p.name: sums[p.name] for p in paths}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    scans = bx.datasets.simulate(n_firearms=guns, shots=3, seed=seed, difficulty="easy", resolution="fast")
    paths = [bx.write_x3p(s, folder / f"case-{k:03d}.x3p") for k, s in enumerate(scans)]
    sums = {p.name: _sha256(p) for p in paths}
    manifest.write_text(json.dumps(sums, indent=1, sort_keys=True))
    paths = paths[:n_files]
    return paths, {p.name: sums[p.name] for p in paths}


# ------------------------------------------------------------------ the client processes
def _time_lock_waits() -> dict:
    """Patch `Database.begin_write` in this process to add up the time spent waiting to begin a write."""
    from ballistix.store import db as store_db

    waits = {"seconds": 0.0, "count": 0, "max": 0.0}
    begin = store_db.Database.begin_write

    def timed(self):
        t = time.monotonic()
        begin(self)
        dt = time.monotonic() - t
        waits["seconds"] += dt
        waits["count"] += 1
        waits["max"] = max(waits["max"], dt)

    store_db.Database.begin_write = timed
    return waits


def _client(k: int, folder: str, files: list[str], searches: int, shortlist: int, barrier, results) -> None:
    """One client: open the store by its folder, then ingest its share, link, and search, each phase
    started at ``barrier`` with the other clients. Times are ``time.monotonic`` (on Linux one clock for
    every process). Reports each phase (or its error) on ``results``."""
    phase = "open"
    try:
        waits = _time_lock_waits()
        st = bx.CaseStore(folder, create=False, shortlist=shortlist)

        def run(name, work):
            nonlocal phase
            phase = name
            barrier.wait(TIMEOUT)
            before = dict(waits)
            t0 = time.monotonic()
            out = work()
            t1 = time.monotonic()
            lock = {
                "seconds": waits["seconds"] - before["seconds"],
                "count": waits["count"] - before["count"],
                "max": waits["max"],
            }
            results.put((name, k, {"start": t0, "end": t1, "lock_wait": lock, **out}))

        def ingest():
            rep = st.ingest(files, progress=False)
            return {"added": len(rep.added), "existing": len(rep.existing), "failed": [f for f in rep.failed]}

        def link():
            recorded = st.link_new(progress=False)  # takes the index other clients saved first (_fresh_index)
            index_size = len(st._index)  # what this client's shortlists were drawn from (its in-memory index)
            return {"recorded": recorded, "index_size": index_size, "store_size": len(st)}

        def search():
            ids = [e["exhibit_id"] for e in st.exhibits()]
            mine = [ids[(k * searches + j) % len(ids)] for j in range(searches)]
            lat, hits = [], []
            for eid in mine:
                t = time.monotonic()
                res = st.search(eid, k=5)
                lat.append(time.monotonic() - t)
                hits.append(len(res))
            return {"latencies": lat, "hits": hits, "index_size": len(st._index)}

        run("ingest", ingest)
        run("link", link)
        run("search", search)
        st.close()
    except BaseException:
        results.put(("error", k, {"phase": phase, "traceback": traceback.format_exc()}))
        barrier.abort()


# ------------------------------------------------------------------ the parent: one store, N clients
def _distinct(st) -> dict:
    """Counts read from the store's database (the parent's own connection)."""
    db = st._db
    return {
        "exhibits": db.execute("SELECT COUNT(*) FROM exhibits").fetchone()[0],
        "distinct_sources": db.execute("SELECT COUNT(DISTINCT source_sha256) FROM exhibits").fetchone()[0],
        "comparisons": db.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0],
    }


def _pairs(st) -> list[list[str]]:
    names = {e["rowid"]: e["exhibit_id"] for e in st.exhibits()}
    rows = st._db.execute("SELECT a, b FROM comparisons").fetchall()
    return sorted(sorted([names[a], names[b]]) for a, b in rows)


def _verify(folder: Path, phase: str, sums: dict[str, str]) -> dict:
    """Open the store afresh and check that nothing was lost after ``phase``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = bx.CaseStore(folder, create=False)
    try:
        exhibits = st.exhibits()
        counts = _distinct(st)
        check = st.check()
        n = len(sums)
        out = {
            "len_equals_files": len(st) == n,
            "distinct_sources_equal_files": counts["distinct_sources"] == n,
            "every_file_present": {e["source_sha256"] for e in exhibits} == set(sums.values()),
            "check_ok": bool(check["ok"]),
            "no_warning_on_opening": not caught,
        }
        if phase != "ingest":
            out["every_exhibit_linked"] = all(e["linked"] == 1 for e in exhibits)
        details = {
            "counts": counts,
            "problems": [p["problem"] for p in check["problems"]],
            "opening_warnings": [str(w.message) for w in caught],
        }
        if phase != "ingest":
            details["unlinked"] = [e["exhibit_id"] for e in exhibits if e["linked"] != 1]
            details["pairs"] = _pairs(st)
        return {"lost_nothing": out, "ok": all(out.values()), **details}
    finally:
        st.close()


def run_clients(folder: Path, paths: list[Path], sums: dict, n: int, args) -> dict:
    """Start ``n`` clients on the store at ``folder`` and run the three phases; returns each phase's
    measures and checks."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=_client,
            args=(k, str(folder), [str(p) for p in paths[k::n]], args.searches, args.shortlist, barrier, results),
            daemon=True,
        )
        for k in range(n)
    ]
    for p in procs:
        p.start()
    out = {}
    try:
        for phase in PHASES:
            barrier.wait(TIMEOUT)  # every client is ready: the phase starts now
            reports = {}
            while len(reports) < n:
                try:
                    name, k, rep = results.get(timeout=TIMEOUT)
                except queue.Empty:
                    raise RuntimeError(f"{phase}: no word from the clients in {TIMEOUT} s") from None
                if name == "error":
                    raise RuntimeError(f"client {k} failed in {rep['phase']}:\n{rep['traceback']}")
                reports[k] = rep
            reports = [reports[k] for k in range(n)]
            wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
            lock = {
                "seconds": sum(r["lock_wait"]["seconds"] for r in reports),
                "count": sum(r["lock_wait"]["count"] for r in reports),
                "max": max(r["lock_wait"]["max"] for r in reports),
            }
            res = {
                "wall_seconds": wall,
                "client_seconds": [r["end"] - r["start"] for r in reports],
                "lock_wait": lock,
                "verify": _verify(folder, phase, sums),
            }
            if phase == "ingest":
                res["added"] = sum(r["added"] for r in reports)
                res["existing"] = sum(r["existing"] for r in reports)
                res["failed"] = [f for r in reports for f in r["failed"]]
                res["exhibits_per_second"] = len(paths) / wall
                res["verify"]["lost_nothing"]["all_added_none_failed"] = (
                    res["added"] == len(paths) and not res["failed"]
                )
            elif phase == "link":
                recorded = [r["recorded"] for r in reports]
                distinct = res["verify"]["counts"]["comparisons"]
                res.update(
                    {
                        "recorded_per_client": recorded,
                        "recorded_sum": sum(recorded),
                        "distinct_comparisons": distinct,
                        "duplicated": sum(recorded) - distinct,
                        "comparisons_per_second": distinct / wall,
                        "index_size_per_client": [r["index_size"] for r in reports],
                        "store_size_seen_per_client": [r["store_size"] for r in reports],
                        "clients_with_stale_index": sum(r["index_size"] < len(paths) for r in reports),
                    }
                )
            else:
                lat = sorted(x for r in reports for x in r["latencies"])
                hits = [h for r in reports for h in r["hits"]]
                res.update(
                    {
                        "searches": len(lat),
                        "searches_per_second": len(lat) / wall,
                        "latency_p50_seconds": statistics.median(lat),
                        "latency_max_seconds": lat[-1],
                        "searches_without_hits": sum(h == 0 for h in hits),
                        "index_size_per_client": [r["index_size"] for r in reports],
                        "clients_with_stale_index": sum(r["index_size"] < len(paths) for r in reports),
                    }
                )
            res["ok"] = res["verify"]["ok"] = all(res["verify"]["lost_nothing"].values())
            out[phase] = res
    except BaseException:
        barrier.abort()
        raise
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
    return out


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def _postgres_missing() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    from ._postgres import find_bindir

    if find_bindir() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    return None


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = (
        ("ingest", "exhibits_per_second", "ingest: exhibits / s"),
        ("link", "comparisons_per_second", "link_new: distinct comparisons / s"),
        ("search", "searches_per_second", "search (k=5): searches / s"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (phase, key, title) in zip(axes, measures):
        for backend, by_n in runs.items():
            ns = sorted(by_n, key=int)
            ax.plot([int(n) for n in ns], [by_n[n][phase][key] for n in ns], "o-", label=backend)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("concurrent client processes")
        ax.set_xticks(sorted({int(n) for by_n in runs.values() for n in by_n}))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"CaseStore with concurrent clients ({os.cpu_count()} CPUs)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, help="x3p files ingested by the clients together (default 48; quick 12)")
    p.add_argument("--clients", type=int, nargs="+", help="client counts (default 1 2 4; quick 1 2)")
    p.add_argument("--searches", type=int, help="searches by each client (default 8; quick 3)")
    p.add_argument("--shortlist", type=int, default=4, help="candidates verified per exhibit and per search")
    p.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="12 files, 1 and 2 clients, 3 searches each: a smoke test")
    args = p.parse_args(argv)
    args.files = args.files or (12 if args.quick else 48)
    args.clients = args.clients or ([1, 2] if args.quick else [1, 2, 4])
    args.searches = args.searches or (3 if args.quick else 8)

    paths, sums = input_files(args.files, args.seed)
    versions = {"ballistix": bx.__version__, "sqlite": sqlite3.sqlite_version}
    skipped, runs = {}, {}
    server = None
    work = Path(tempfile.mkdtemp(prefix="bx-store-concurrency-"))
    try:
        for backend in args.backends:
            if backend == "postgresql":
                why = _postgres_missing()
                if why:
                    print(f"postgresql skipped: {why}", flush=True)
                    skipped[backend] = why
                    continue
                from ._postgres import PostgresServer

                server = PostgresServer(durable=True).start()
            runs[backend] = {}
            for n in args.clients:
                folder = work / f"{backend}-{n}"
                url = server.create_database() if backend == "postgresql" else None
                if url and "postgresql" not in versions:
                    versions["postgresql"] = _server_version(url)
                bx.CaseStore(folder, database=url, preprocess_params=FAST, shortlist=args.shortlist).close()
                t, load = time.perf_counter(), os.getloadavg()
                runs[backend][str(n)] = run_clients(folder, paths, sums, n, args)
                runs[backend][str(n)]["load_average_before_after"] = [load[0], os.getloadavg()[0]]
                print(f"{backend}, {n} client(s): {time.perf_counter() - t:.0f} s", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
                if url:
                    server.drop_database(url)
            if server is not None:
                server.stop()
                server = None
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    # the pairs compared against those of the fewest clients (each exhibit against the shortlist of the
    # whole store): a client whose in-memory index misses others' exhibits draws other shortlists
    for by_n in runs.values():
        one = {tuple(x) for x in by_n[min(by_n, key=int)]["link"]["verify"]["pairs"]}
        for r in by_n.values():
            pairs = {tuple(x) for x in r["link"]["verify"]["pairs"]}
            r["link"]["pairs_vs_fewest_clients"] = {
                "same": pairs == one,
                "missing": sorted(one - pairs),
                "extra": sorted(pairs - one),
            }
        for r in by_n.values():
            for phase in ("link", "search"):
                r[phase]["verify"].pop("pairs", None)
    lost = [
        f"{backend}/{n} clients/{phase}: {[k for k, v in r[phase]['verify']['lost_nothing'].items() if not v]}"
        for backend, by_n in runs.items()
        for n, r in by_n.items()
        for phase in PHASES
        if not r[phase]["ok"]
    ]
    _common.RESULTS.mkdir(parents=True, exist_ok=True)
    png = _common.RESULTS / "store_concurrency.png"
    if runs:
        plot(runs, png)
    out = {
        "params": {**vars(args), "preprocess_params": FAST, "search_k": 5, "difficulty": "easy", "resolution": "fast"},
        "versions": versions,
        "cpus": os.cpu_count(),
        "note": f"{os.cpu_count()} CPUs: with more clients than CPUs the clients share the cores; "
        "load_average_before_after (1 min) shows other work on the machine",
        "inputs": {"files": len(paths), "sha256": sums},
        "skipped": skipped,
        "runs": runs,
        "lost_nothing": not lost,
        "lost": lost,
    }
    path = write_json("store_concurrency", out)

    rows = []
    for backend, by_n in runs.items():
        for n, r in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            i, lk, s = r["ingest"], r["link"], r["search"]
            rows.append(
                [
                    backend,
                    int(n),
                    i["exhibits_per_second"],
                    lk["wall_seconds"],
                    f"{lk['recorded_sum']}/{lk['distinct_comparisons']}",
                    lk["comparisons_per_second"],
                    s["searches_per_second"],
                    s["latency_p50_seconds"],
                    i["lock_wait"]["seconds"] + lk["lock_wait"]["seconds"] + s["lock_wait"]["seconds"],
                    f"{lk['clients_with_stale_index']}/{int(n)}",
                    f"{len(lk['pairs_vs_fewest_clients']['missing'])}/{len(lk['pairs_vs_fewest_clients']['extra'])}",
                    "yes" if all(r[ph]["ok"] for ph in PHASES) else "NO",
                ]
            )
    print(
        table(
            rows,
            [
                "backend",
                "clients",
                "ingest /s",
                "link s",
                "recorded/distinct",
                "comparisons /s",
                "searches /s",
                "search p50 s",
                "lock wait s",
                "stale index",
                "pairs missing/extra",
                "nothing lost",
            ],
        )
    )
    print(
        f"\n{len(paths)} files, shortlist {args.shortlist}, {args.searches} searches a client; {os.cpu_count()} CPUs "
        f"(more clients than CPUs share them); versions {versions}\n"
        "recorded/distinct: comparisons the clients' link_new calls returned / distinct comparison rows; "
        "stale index: clients whose in-memory index lacked exhibits others added, after link_new; "
        "pairs missing/extra: compared pairs against the fewest clients' run\n"
        f"wrote {path} and {png}"
    )
    for backend, why in skipped.items():
        print(f"{backend} skipped: {why}")
    if lost:
        print("LOST:\n  " + "\n  ".join(lost), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
