"""Speed of the CMC comparison on one core, on a pair of processed Fadul scans.

    python -m benchmarks.cmc_speed [--repeat 3]

Modes: like-for-like with the reference implementation cmcR (-30..30 deg in 3
deg steps, 8x8 cells, one direction) and the default `bx.compare` (both
directions, full 360 deg pose search); plus the time per stage. cmcR takes
22.6-27.2 s per direction on this pair on one core (measured side by side by
the team on this machine type, quiet; R is not available here). Times are the process's CPU
time (everything single-threaded), which is its one-core time even on a busy
machine; wall times are kept too. Writes
benchmarks/results/cmc_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix.features import comparison as cmp_mod  # noqa: E402
from ballistix.features.cmc import CellSearch, congruence, make_cells  # noqa: E402

from ._common import SHARED_DATA, table, write_json  # noqa: E402

CMCR_SECONDS = (22.6, 27.2)  # per direction, one core (the team, side by side, this machine type)


def _load(name):
    return bx.preprocess(bx.read_scan(SHARED_DATA / "fadul" / f"fadul-{name}.x3p"))


def _best_of(f, repeat):
    """Best of ``repeat`` runs: (CPU seconds, wall seconds, result). Everything runs single-threaded, so
    the process's CPU time is its one-core time even on a busy machine (wall time is kept as well)."""
    cpu, wall = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = f()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(cpu), min(wall), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if not (SHARED_DATA / "fadul").is_dir():
        print(f"skipped: real scans not found at {SHARED_DATA}")
        return 0
    cv2.setNumThreads(1)
    a, b = _load("1-1"), _load("1-2")
    rows, out = (
        [],
        {
            "pair": ["fadul-1-1", "fadul-1-2"],
            "shape": [list(a.shape), list(b.shape)],
            "cmcR_seconds_per_direction": CMCR_SECONDS,
            "modes": {},
        },
    )
    modes = {
        "like-for-like (-30..30/3 deg, one direction)": dict(rotation="reference", directions="forward"),
        "reference grid, both directions": dict(rotation="reference"),
        "default (full 360, both directions)": dict(),
    }
    for name, kw in modes.items():
        t, wall, res = _best_of(lambda kw=kw: bx.compare(a, b, calibration=None, **kw), args.repeat)
        out["modes"][name] = {
            "seconds": t,
            "wall_seconds": wall,
            "pairs_per_second": 1 / t,
            "cmc_count": res.cmc_count,
            "speedup_vs_cmcR": [CMCR_SECONDS[0] / t, CMCR_SECONDS[1] / t],
            "params": kw,
        }
        rows.append([name, t, wall, 1 / t, res.cmc_count, f"{CMCR_SECONDS[0] / t:.0f}-{CMCR_SECONDS[1] / t:.0f}x"])
    # stages of one forward direction on the reference grid
    za = a.heights.astype(np.float32)
    zb = b.heights.astype(np.float32)
    angles = cmp_mod.REFERENCE_ANGLES
    stages = {}
    stages["cells + template FFTs"], _, search = _best_of(lambda: CellSearch(make_cells(za)), args.repeat)
    stages["cell search, 21 rotations"], _, res = _best_of(lambda: search.search(zb, angles), args.repeat)
    stages["congruence"], _, _ = _best_of(lambda: congruence(angles, res["corr"], res["shift"]), args.repeat)
    stages["coarse pose, 120 rotations"], _, _ = _best_of(lambda: cmp_mod.coarse_rotations(za, zb), args.repeat)
    out["stages_seconds"] = stages
    path = write_json("cmc_speed", out)
    print(table(rows, ["mode", "CPU s (one core)", "wall s", "pairs/s", "CMCs", "vs cmcR"]))
    print()
    print(table([[k, v] for k, v in stages.items()], ["stage", "CPU s"]))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
