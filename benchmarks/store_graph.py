"""A store's linkage graph at scale: `CaseStore.graph()` with every comparison against the evidence only.

    python -m benchmarks.store_graph [--exhibits 20000 200000] [--per-exhibit 50] [--modes all evidence]
    python -m benchmarks.store_graph --quick

Fills a real `CaseStore`'s SQLite with ``--exhibits`` exhibits and up to
``--per-exhibit`` comparisons each (each exhibit with that many earlier ones, as
`link_new` compares a new exhibit with its shortlist), then builds
``store.graph(comparisons=MODE)`` for each mode in a process of its own and
measures its time and peak resident memory (``VmHWM``; also after opening the
store, before the graph).

How the store is filled: two simulated scans are ingested and linked in a
small store with the default parameters; its exhibit and comparison rows are
the templates. The bulk goes in by direct SQL inserts shaped like those rows
(what `import_prepared` and `link_new` write: the template's meta,
processing record, comparison parameters and evidence record, each
~0.1 / 1.8 / 0.3 / 1.1 kB), with ids, scenes, firearms, CMC counts, scores,
rotations and pair LRs drawn as in `benchmarks.graph_scale`: 20 % of the
exhibits in same-gun groups of 2-10 over 1-4 scenes (a third of those guns
recovered, two test fires each), every same-gun pair compared (CMC 10-40,
some 4-8, a few examiner confirmations), the rest of each shortlist
different-gun pairs (CMC mostly 0-3, a few examiner rejections). So the
shipped cohort calibration weighs the pairs, as in a real store of default
settings. Each exhibit's descriptor is a 4-byte stub and no index is built
(a real one is 36 kB an exhibit; `graph()` reads neither): the store is
opened with the index left out (`GraphStore`).

Writes benchmarks/results/store_graph.json (``--quick``: store_graph_quick.json)
and prints a table. ``--keep DIR`` keeps the stores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import ballistix as bx
from ballistix.errors import StoreWarning
from ballistix.store import CaseStore

from ._common import table, write_json
from .graph_scale import CONTEXTS, COUNTRIES, MAKES, PLACES, _date, _reset_peak, _status

_EXHIBIT_COLUMNS = (
    "rowid, exhibit_id, source_sha256, source_name, kind, scene_id, firearm_id, calibre, date, meta_json, "
    "processing_json, descriptor, scan_file, linked, created_utc, created_by, ballistix_version, scan_sha256, "
    "scan_state"
)
_COMPARISON_COLUMNS = (
    "a, b, cmc_count, score, rotation_deg, params_json, confirmed, created_utc, created_by, ballistix_version, "
    "log10_lr, evidence_json"
)


class GraphStore(CaseStore):
    """A `CaseStore` opened for its graph only: its index is neither read nor rebuilt (the filled
    stores have stub descriptors; `graph` does not use the index)."""

    def _load_or_rebuild_index(self):
        return None


def templates(folder: Path) -> dict:
    """An exhibit row and a comparison row as a store of the default settings writes them: two
    simulated scans of one gun, ingested and linked in a store at ``folder``."""
    scans = bx.datasets.simulate(n_firearms=1, shots=2, seed=11, resolution="fast")
    with CaseStore(folder) as st:
        st.ingest(scans, meta=[{"exhibit_id": f"t{k}", "calibre": "9mm Luger"} for k in range(2)], progress=False)
        st.link_new(progress=False)
        db = st._db
        ex = dict(zip(_EXHIBIT_COLUMNS.split(", "), db.execute(f"SELECT {_EXHIBIT_COLUMNS} FROM exhibits").fetchone()))
        comp = dict(
            zip(
                _COMPARISON_COLUMNS.split(", "), db.execute(f"SELECT {_COMPARISON_COLUMNS} FROM comparisons").fetchone()
            )
        )
    return {"exhibit": ex, "comparison": comp}


def fill_store(
    folder,
    n: int,
    *,
    per_exhibit: int = 50,
    grouped: float = 0.2,
    seed: int = 0,
    real_descriptors: bool = False,
    template: dict | None = None,
) -> dict:
    """Fill a new store at ``folder`` with ``n`` exhibits and their comparisons (see the module
    notes). ``real_descriptors``: every exhibit gets the template's descriptor and the index is
    built (a store `CaseStore` opens as it is), else a 4-byte stub and no index (open it with
    `GraphStore`). Returns counts: exhibits, scenes, firearms, comparisons, seconds, sqlite_bytes."""
    t0 = time.perf_counter()
    folder = Path(folder)
    if template is None:
        with tempfile.TemporaryDirectory() as tmp:
            template = templates(Path(tmp) / "template")
    CaseStore(folder).close()  # a new store of the default settings, empty
    rng = np.random.default_rng(seed)
    ex, cp = template["exhibit"], template["comparison"]
    descriptor = ex["descriptor"] if real_descriptors else b"\0" * 4
    # guns in ingest order: groups of 2-10 for `grouped` of the exhibits, the rest alone
    sizes = []
    while sum(sizes) < int(grouped * n):
        sizes.append(int(rng.integers(2, 11)))
    if sizes and sum(sizes) > n:
        sizes[-1] -= sum(sizes) - n
    sizes = [s for s in sizes if s >= 2]
    sizes += [1] * (n - sum(sizes))
    gun = np.repeat(np.arange(len(sizes)), sizes)[rng.permutation(n)]  # interleaved in ingest order
    gun_size = np.bincount(gun)
    db = sqlite3.connect(folder / "store.sqlite", isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    scenes, firearms, exhibits = [], [], []
    scenes_of_gun, firearm_of_gun, fires_left = {}, {}, {}
    shared_scene = None

    def scene() -> str:
        sid = f"S{len(scenes):07d}"
        attrs = {
            "date": _date(rng),
            "place": PLACES[int(rng.integers(len(PLACES)))],
            "lat": round(float(rng.uniform(50.8, 53.5)), 5),
            "lon": round(float(rng.uniform(3.4, 7.2)), 5),
            "context": CONTEXTS[int(rng.integers(len(CONTEXTS)))],
        }
        scenes.append((sid, json.dumps(attrs), ex["created_utc"], ex["created_by"]))
        return sid

    def firearm() -> str:
        fid = f"F{len(firearms):06d}"
        make, model = MAKES[int(rng.integers(len(MAKES)))]
        attrs = {
            "make": make,
            "model": model,
            "calibre": "9mm Luger",
            "serial": f"{make[:2].upper()}{int(rng.integers(10**6, 10**7))}",
            "status": ("seized", "found", "surrendered")[int(rng.integers(3))],
            "recovery_date": _date(rng, 2020),
            "recovery_country": "NL",
            "origin_country": COUNTRIES[int(rng.integers(len(COUNTRIES)))],
            "tracing_status": ("traced", "in progress", "not traced")[int(rng.integers(3))],
        }
        firearms.append((fid, json.dumps(attrs), ex["created_utc"], ex["created_by"]))
        return fid

    for i in range(n):
        k = int(gun[i])
        scene_id = firearm_id = None
        if gun_size[k] == 1:
            if rng.random() < 0.03:  # a recovered gun's own test fire
                firearm_id = firearm()
            else:
                if shared_scene is None or rng.random() > 0.3:
                    shared_scene = scene()
                scene_id = shared_scene
        else:
            if k not in scenes_of_gun:
                fires_left[k] = min(2, int(gun_size[k]) - 1) if rng.random() < 1 / 3 else 0
                if fires_left[k]:
                    firearm_of_gun[k] = firearm()
                scenes_of_gun[k] = [scene() for _ in range(int(rng.integers(1, min(4, int(gun_size[k])) + 1)))]
            if fires_left[k]:
                fires_left[k] -= 1
                firearm_id = firearm_of_gun[k]
            else:
                scene_id = scenes_of_gun[k][int(rng.integers(len(scenes_of_gun[k])))]
        eid = f"E{i:07d}"
        sha = hashlib.sha256(eid.encode()).hexdigest()
        exhibits.append(
            (
                i + 1,
                eid,
                sha,
                f"scans/{eid[:4]}/{eid}.x3p",
                "test_fire" if firearm_id else "scene",
                scene_id,
                firearm_id,
                "9mm Luger",
                _date(rng),
                ex["meta_json"],
                ex["processing_json"],
                descriptor,
                ex["scan_file"],
                1,
                ex["created_utc"],
                ex["created_by"],
                ex["ballistix_version"],
                ex["scan_sha256"],
                "ok",
            )
        )
    db.executemany("INSERT INTO scenes VALUES (?, ?, ?, ?)", scenes)
    db.executemany("INSERT INTO firearms VALUES (?, ?, ?, ?)", firearms)
    db.executemany(f"INSERT INTO exhibits ({_EXHIBIT_COLUMNS}) VALUES ({', '.join('?' * 19)})", exhibits)
    db.execute("COMMIT")
    # comparisons: each exhibit with its earlier same-gun exhibits and earlier others, up to per_exhibit
    earlier_of_gun: dict[int, list[int]] = {}
    insert = f"INSERT INTO comparisons ({_COMPARISON_COLUMNS}) VALUES ({', '.join('?' * 12)})"
    fixed = (cp["params_json"],)
    stamp = (cp["created_utc"], cp["created_by"], cp["ballistix_version"])
    rows, n_comparisons = [], 0
    db.execute("BEGIN")
    for i in range(n):
        k = int(gun[i])
        mates = earlier_of_gun.setdefault(k, []) if gun_size[k] > 1 else []
        partners = set(mates[:per_exhibit])
        want = min(per_exhibit, i) - len(partners)
        while want > 0:
            for j in rng.integers(0, i, want + 4).tolist():
                if j not in partners and int(gun[j]) != k and want > 0:
                    partners.add(j)
                    want -= 1
        for j in sorted(partners):
            same = int(gun[j]) == k
            u = rng.random()
            if same:
                cmc = int(rng.integers(10, 41)) if u < 0.9 else int(rng.integers(4, 9))
                lr = float(rng.uniform(2.2, 6.0)) if u < 0.9 else float(rng.uniform(0.3, 1.9))
                confirmed = 1 if rng.random() < 0.005 else None
            else:
                cmc = int(min(rng.poisson(1.0), 12))
                lr = float(rng.uniform(-4.0, 0.0)) if cmc < 4 else float(rng.uniform(-1.0, 1.5))
                confirmed = 0 if rng.random() < 0.001 else None
            rows.append(
                (
                    j + 1,
                    i + 1,
                    cmc,
                    cmc + float(rng.random()),
                    float(rng.integers(0, 120)) * 3.0,
                    *fixed,
                    confirmed,
                    *stamp,
                    lr,
                    cp["evidence_json"],
                )
            )
        if gun_size[k] > 1:
            mates.append(i)
        if len(rows) >= 200_000:  # one transaction each: the write-ahead log stays this size
            db.executemany(insert, rows)
            db.execute("COMMIT")
            db.execute("BEGIN")
            n_comparisons += len(rows)
            rows = []
    db.executemany(insert, rows)
    n_comparisons += len(rows)
    db.execute("COMMIT")
    db.close()
    if real_descriptors:  # the index from the descriptors, as a store opening without one builds it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            CaseStore(folder).close()
    (n_scenes,), (n_firearms,) = (
        sqlite3.connect(folder / "store.sqlite").execute(f"SELECT COUNT(*) FROM {t}").fetchone()
        for t in ("scenes", "firearms")
    )
    return {
        "exhibits": n,
        "scenes": n_scenes,
        "firearms": n_firearms,
        "comparisons": n_comparisons,
        "seconds": round(time.perf_counter() - t0, 1),
        "sqlite_bytes": sum(p.stat().st_size for p in folder.glob("store.sqlite*")),
    }


def measure(folder: Path, mode: str) -> dict:
    """Open the store and build its graph in ``mode`` (in this process): time, peak RSS, what it holds."""
    t = time.perf_counter()
    st = GraphStore(folder, create=False, read_only=True)
    opened = {"seconds": round(time.perf_counter() - t, 2), "rss_mb": round(_status("VmRSS"), 1)}
    resets = _reset_peak()
    t = time.perf_counter()
    g = st.graph(comparisons=mode)
    seconds = time.perf_counter() - t
    peak = _status("VmHWM")
    rss = _status("VmRSS")
    t = time.perf_counter()
    groups = len(g.groups(min_size=2))
    candidates = len(g.candidates())
    analyses = time.perf_counter() - t
    links = g.link_graph().number_of_edges()
    match = sum(1 for *_, k in g.nx.edges(data="kind") if k == "match")
    return {
        "mode": mode,
        "open": opened,
        "graph_seconds": round(seconds, 1),
        "graph_peak_rss_mb": round(peak, 1),
        "graph_rss_mb": round(rss, 1),
        "peak_reset": resets,
        "match_edges": match,
        "left_out": g.nx.graph.get("comparisons_left_out", 0),
        "links (incl. test fires)": links,
        "groups_2plus": groups,
        "candidates": candidates,
        "groups_and_candidates_seconds": round(analyses, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exhibits", type=int, nargs="+", default=[20_000, 200_000])
    p.add_argument("--per-exhibit", type=int, default=50, help="comparisons recorded per exhibit (its shortlist)")
    p.add_argument("--modes", nargs="+", default=["all", "evidence"], choices=["all", "evidence"])
    p.add_argument(
        "--all-up-to", type=int, default=10**9, help="measure 'all' only for stores of up to this many exhibits"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="2,000 exhibits")
    p.add_argument("--keep", type=Path, help="fill the stores in this folder and keep them")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # a child: one store, one mode
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.mode)))
        return 0
    if args.quick:
        args.exhibits = [2_000]
    results = []
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        template = templates(Path(tmp) / "template")
        for n in args.exhibits:
            folder = (args.keep or Path(tmp)) / f"store-{n}"
            if folder.exists():
                shutil.rmtree(folder)
            filled = fill_store(folder, n, per_exhibit=args.per_exhibit, seed=args.seed, template=template)
            print(f"filled {n:,} exhibits, {filled['comparisons']:,} comparisons in {filled['seconds']} s", flush=True)
            row = {"store": filled, "modes": {}}
            for mode in args.modes:
                if mode == "all" and n > args.all_up_to:
                    continue
                r = subprocess.run(
                    [sys.executable, "-m", "benchmarks.store_graph", "--measure", str(folder), "--mode", mode],
                    capture_output=True,
                    text=True,
                )
                if r.returncode:
                    row["modes"][mode] = {"failed": r.stderr.strip().splitlines()[-1:]}
                    continue
                row["modes"][mode] = json.loads(r.stdout.splitlines()[-1])
                print(json.dumps(row["modes"][mode]), flush=True)
            results.append(row)
            if not args.keep:
                shutil.rmtree(folder)
    summary = []
    for row in results:
        s, c = row["store"], row["store"]["comparisons"]
        for mode, m in row["modes"].items():
            if "failed" in m:
                summary.append([f"{s['exhibits']:,}", f"{c:,}", mode, "failed", "", "", "", ""])
                continue
            grow = m["graph_peak_rss_mb"] - m["open"]["rss_mb"]
            summary.append(
                [
                    f"{s['exhibits']:,}",
                    f"{c:,}",
                    mode,
                    m["graph_seconds"],
                    round(m["graph_peak_rss_mb"]),
                    round(grow),
                    f"{m['match_edges']:,}",
                    round(grow * 2**20 / c),
                ]
            )
    out = {"params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": results}
    path = write_json("store_graph_quick" if args.quick else "store_graph", out)
    print(
        table(
            summary,
            [
                "exhibits",
                "comparisons",
                "graph",
                "seconds",
                "peak RSS MB",
                "peak over open MB",
                "edges kept",
                "bytes/comparison",
            ],
        )
    )
    for row in results:
        s = row["store"]
        print(f"{s['exhibits']:,} exhibits: SQLite {s['sqlite_bytes'] / s['comparisons']:.0f} bytes per comparison row")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
