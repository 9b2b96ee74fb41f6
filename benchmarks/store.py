"""Case store: ingest, reopen, search, link and report timings on simulated x3p files.

    python -m benchmarks.store [--exhibits 60] [--jobs 2]

Writes simulated scans as x3p files, then times: ingest (read, checksum,
preprocess, describe, index; per exhibit), ingesting the same files again
(idempotent: nothing added), reopening the store (index checked against the
database), a search (descriptor shortlist plus CMC re-ranking), linking every
new exhibit with its shortlist, and writing the HTML report. Checks that a
same-gun exhibit is the top search hit. Writes benchmarks/results/store.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ballistix as bx  # noqa: E402

from ._common import table, write_json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exhibits", type=int, default=60, help="simulated scans (3 per gun)")
    p.add_argument("--shortlist", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    guns = max(2, args.exhibits // 3)
    out = {"params": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files, truth = [], {}
        for s in bx.datasets.iter_simulate(guns, 3, seed=args.seed, difficulty="realistic", resolution="standard"):
            lab = s.meta["labels"]
            path = tmp / "scans" / f"{lab['firearm']}-{lab['shot']}.x3p"
            path.parent.mkdir(exist_ok=True)
            bx.write_x3p(s, path)
            files.append(path)
            truth[path.stem] = lab["firearm"]
        clock = {}
        t = time.perf_counter()
        with bx.CaseStore(tmp / "store") as st:
            rep = st.ingest(files, progress=False)
            clock["ingest"] = time.perf_counter() - t
            t = time.perf_counter()
            again = st.ingest(files, progress=False)
            clock["ingest again (nothing new)"] = time.perf_counter() - t
        t = time.perf_counter()
        st = bx.CaseStore(tmp / "store")
        clock["reopen (index checked)"] = time.perf_counter() - t
        query = files[0].stem
        t = time.perf_counter()
        cands = st.search(query, k=5, shortlist=args.shortlist)
        clock[f"search (shortlist {args.shortlist}, CMC re-ranked)"] = time.perf_counter() - t
        st.shortlist = args.shortlist
        t = time.perf_counter()
        n_linked = st.link_new(n_jobs=args.jobs, progress=False)
        clock["link all (shortlisted pairs)"] = time.perf_counter() - t
        t = time.perf_counter()
        st.report(tmp / "report.html")
        clock["report"] = time.perf_counter() - t
        st.close()
        size_mb = sum(f.stat().st_size for f in (tmp / "store").rglob("*") if f.is_file()) / 1e6
    out.update(
        {
            "exhibits": len(files),
            "added": len(rep.added),
            "failed": len(rep.failed),
            "added_again": len(again.added),
            "seconds": clock,
            "ingest_seconds_per_exhibit": clock["ingest"] / len(files),
            "pairs_linked": n_linked,
            "store_mb": size_mb,
            "top_hit_same_gun": bool(cands) and truth[cands[0]["exhibit_id"]] == truth[query],
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    path = write_json("store", out)
    print(table([[k, v] for k, v in clock.items()], ["step", "seconds"]))
    print(
        f"\n{len(files)} exhibits, {out['ingest_seconds_per_exhibit']:.2f} s each to ingest, store {size_mb:.1f} MB, "
        f"top search hit same gun: {out['top_hit_same_gun']}\nwrote {path}"
    )
    return 0 if not rep.failed and not again.added else 1


if __name__ == "__main__":
    sys.exit(main())
