"""Batch verification of a backlog: `CaseStore.link_new` in one process, on a process pool, on Dask.

    python -m benchmarks.backlog [--old-guns 60] [--new 24] [--shortlist 50] [--verify-top 20] [--jobs 2]

A store holds exhibits already linked (``--old-guns`` simulated guns x 3 shots,
realistic-hard, standard resolution, and the processed Fadul scans when
``../shared/data`` is present) and a backlog of ``--new`` exhibits not linked
yet: a fourth shot of simulated guns, and for a quarter of the backlog one scan
of a Fadul slide (the others of its slide are in the store), so each has true
partners in the store.
The store's folder is copied (scans hard-linked) once for each way of running
the same backlog, and ``link_new`` (shortlist ``--shortlist``) is timed:

- **one process** (``n_jobs=1``);
- **a process pool** of ``--jobs`` workers (one exhibit a worker at a time);
- **a local Dask cluster** of ``--jobs`` workers x 1 thread (`distributed.LocalCluster`;
  its start-up is timed apart);
- and the cluster again with ``verify_top`` (the pre-check keeps each
  shortlist's best ``--verify-top``).

The recorded comparisons of the first three must be identical (pairs, counts,
scores, poses, LRs); the benchmark fails otherwise. It reports the pairs
compared, wall time, pairs a second, the speed-up over one process, the
per-pair cost, the same-gun partners found (6+ cells), and what a backlog of
10,000 exhibits x shortlist 50 would take at the measured rates.

Writes benchmarks/results/backlog.json, prints a table.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # workers inherit: one thread each
    os.environ.setdefault(_v, "1")

import ballistix as bx  # noqa: E402
from ballistix.graph.rules import CONVENTIONAL_CMC_RULE  # noqa: E402

from ._common import RESULTS, SHARED_DATA, table, write_json  # noqa: E402

ROWS = "SELECT a, b, cmc_count, score, rotation_deg, log10_lr, evidence_json FROM comparisons ORDER BY a, b"
BACKLOG = (10_000, 50)  # the example: 10,000 new exhibits x shortlist 50


def inputs(old_guns: int, new: int, seed: int) -> tuple[list, list, list, dict]:
    """(items already linked, backlog items, the backlog's exhibit ids, gun of each exhibit id)."""
    gun, old, backlog = {}, [], []
    labels = SHARED_DATA / "labels.csv"
    fadul = []
    if labels.is_file():
        with open(labels, newline="") as f:
            fadul = [r for r in csv.DictReader(f) if r["file"].startswith("fadul/")]
    slides = sorted({r["firearm"] for r in fadul})[: new // 4]  # a quarter of the backlog: real slides
    arrived = set()
    for r in fadul:
        eid = Path(r["file"]).stem
        gun[eid] = r["firearm"]
        late = r["firearm"] in slides and r["firearm"] not in arrived  # a slide's first listed scan arrives late
        arrived.add(r["firearm"])
        (backlog if late else old).append((SHARED_DATA / r["file"], {"exhibit_id": eid}))
    n_sim = new - len(backlog)
    sims = bx.datasets.simulate(
        n_firearms=old_guns,
        shots=[4] * n_sim + [3] * (old_guns - n_sim),
        seed=seed,
        difficulty="realistic-hard",
        resolution="standard",
    )
    count: dict[str, int] = {}
    for s in sims:
        name = s.meta["labels"]["firearm"]
        count[name] = count.get(name, 0) + 1
        eid = f"{name}-{count[name]}"
        gun[eid] = name
        (backlog if count[name] == 4 else old).append((s, {"exhibit_id": eid}))
    return old, backlog, [m["exhibit_id"] for _, m in backlog], gun


def build(folder: Path, old: list, backlog: list, shortlist: int) -> None:
    with bx.CaseStore(folder, shortlist=shortlist) as st:
        st.ingest([i for i, _ in old], [m for _, m in old], progress=False)
    # the exhibits already in the store were linked before: only the backlog waits
    db = sqlite3.connect(folder / "store.sqlite")
    with db:
        db.execute("UPDATE exhibits SET linked=1")
    db.close()
    with bx.CaseStore(folder, shortlist=shortlist) as st:
        st.ingest([i for i, _ in backlog], [m for _, m in backlog], progress=False)


def copy_store(src: Path, dst: Path) -> Path:
    """A copy of a store to link: its database copied, its scans and index hard-linked (read only)."""

    def link_or_copy(a, b):
        if Path(a).name.startswith("store.sqlite"):
            return shutil.copy2(a, b)
        return os.link(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


def cpu_seconds() -> float:
    """CPU time of this process and every live process under it (pool and Dask workers, the
    scheduler), user + system."""
    import psutil  # (installed with dask.distributed)

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(folder: Path, shortlist: int, **link) -> dict:
    with bx.CaseStore(folder, shortlist=shortlist) as st:
        _children_cpu()  # (from here on)
        cpu, t = cpu_seconds(), time.perf_counter()
        n = st.link_new(progress=False, **link)
        seconds = time.perf_counter() - t
        # a pool's workers have exited by now (their CPU is in this process's children's times)
        cpu = cpu_seconds() + _children_cpu() - cpu
        rows = st._db.execute(ROWS).fetchall()
        ids = dict(st._db.execute("SELECT rowid, exhibit_id FROM exhibits"))
    return {"pairs": n, "seconds": seconds, "cpu_seconds": cpu, "rows": rows, "ids": ids}


def _children_cpu() -> float:
    """CPU time of the child processes that have exited and been waited for, since the last call."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = r.ru_utime + r.ru_stime
    spent, _children_cpu.seen = now - _children_cpu.seen, now
    return spent


_children_cpu.seen = 0.0


def partners(res: dict, gun: dict, backlog: list[str]) -> int:
    """Backlog exhibits with a same-gun exhibit compared at 6+ cells."""
    found = set()
    for a, b, cmc, *_ in res["rows"]:
        ea, eb = res["ids"][a], res["ids"][b]
        if cmc >= CONVENTIONAL_CMC_RULE and gun.get(ea) == gun.get(eb):
            found |= {ea, eb}
    return len(found & set(backlog))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old-guns", type=int, default=60)
    p.add_argument("--new", type=int, default=24)
    p.add_argument("--shortlist", type=int, default=50)
    p.add_argument("--verify-top", type=int, default=20)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import distributed

    with tempfile.TemporaryDirectory(dir=RESULTS if RESULTS.is_dir() else None) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        old, backlog, new_ids, gun = inputs(args.old_guns, args.new, args.seed)
        build(tmp / "base", old, backlog, args.shortlist)
        build_s = time.perf_counter() - t
        modes = {}
        modes["one process"] = run(copy_store(tmp / "base", tmp / "one"), args.shortlist)
        modes["process pool"] = run(copy_store(tmp / "base", tmp / "pool"), args.shortlist, n_jobs=args.jobs)
        t = time.perf_counter()
        with (
            distributed.LocalCluster(
                n_workers=args.jobs, threads_per_worker=1, processes=True, dashboard_address=None
            ) as lc,
            distributed.Client(lc) as client,
        ):
            start_s = time.perf_counter() - t
            modes["Dask cluster"] = run(copy_store(tmp / "base", tmp / "dask"), args.shortlist, client=client)
            modes[f"Dask cluster, verify_top={args.verify_top}"] = run(
                copy_store(tmp / "base", tmp / "top"), args.shortlist, client=client, verify_top=args.verify_top
            )
    ref = modes["one process"]
    identical = all(modes[m]["rows"] == ref["rows"] for m in ("process pool", "Dask cluster"))
    per_pair = ref["seconds"] / max(1, ref["pairs"])
    out = {
        "params": vars(args),
        "store": {"exhibits": len(old) + len(backlog), "backlog": len(backlog), "build_seconds": build_s},
        "dask_start_seconds": start_s,
        "identical": identical,
        "seconds_per_pair_one_process": per_pair,
        "modes": {},
    }
    rows = []
    n_pairs, n_exhibits = BACKLOG[0] * BACKLOG[1], BACKLOG[0]
    for name, r in modes.items():
        rate = r["pairs"] / r["seconds"]
        # wall time an exhibit of the backlog, scaled to a shortlist of 50 (a shortlist's cost is linear in it)
        per_exhibit = r["seconds"] / len(backlog) * BACKLOG[1] / args.shortlist
        hours = n_exhibits * per_exhibit / 3600
        out["modes"][name] = {
            "pairs": r["pairs"],
            "seconds": r["seconds"],
            "pairs_per_second": rate,
            "cpu_seconds": r["cpu_seconds"],
            "cpu_seconds_per_pair": r["cpu_seconds"] / max(1, r["pairs"]),
            "cores_busy": r["cpu_seconds"] / r["seconds"],
            "speedup": ref["seconds"] / r["seconds"],
            "backlog_exhibits_with_a_partner_found": partners(r, gun, new_ids),
            "hours_for_10000_x_50": hours,
        }
        rows.append(
            [
                name,
                r["pairs"],
                f"{r['seconds']:.1f}",
                f"{rate:.2f}",
                f"{ref['seconds'] / r['seconds']:.2f}",
                f"{r['cpu_seconds'] / max(1, r['pairs']):.2f} ({r['cpu_seconds'] / r['seconds']:.2f})",
                f"{partners(r, gun, new_ids)} / {len(backlog)}",
                f"{hours:.1f}",
            ]
        )
    out["pairs_10000_x_50"] = n_pairs
    path = write_json("backlog", out)
    print(
        table(
            rows,
            [
                "run",
                "pairs",
                "wall s",
                "pairs/s",
                "speed-up",
                "CPU s a pair (cores busy)",
                "backlog with a partner (6+ cells)",
                "h for 10,000 x 50",
            ],
        )
    )
    print(
        f"\n{len(old) + len(backlog)} exhibits, backlog {len(backlog)}, shortlist {args.shortlist}; "
        f"{per_pair * 1e3:.0f} ms a pair in one process; Dask start-up {start_s:.1f} s; "
        f"identical comparisons in all three: {identical}\nwrote {path}"
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
