"""The first stage across populations: where each query's first same-gun partner ranks.

    python -m benchmarks.first_stage [--guns 12] [--seeds 11 21] [--jobs 2] [--skip-real] [--quick]

The descriptor (`ballistix.describe`) ranks a store so that CMC verifies only
a shortlist; a same-gun partner that ranks low is never verified. This ranks
each set's scans against each other, and all sets together (a store holding
several instruments and makes), for every descriptor variant in `VARIANTS`:
version 1, version 2 (the default) and version 2 with one of its changes
taken back. The sets:

- **fadul**: the 40 real Fadul scans (`../shared/data/fadul`), if present;
- simulated `ballistix.datasets` populations, ``--guns`` guns each, for
  every ``--seeds`` seed (independent guns): ``ordinary`` (confocal, every
  make), ``faint`` (the same at realistic-hard: more poor and faint
  impressions), ``photometric`` (photometric stereo, Glock 17), ``batch``
  and ``batch-moderate`` (photometric stereo in 4 scanning batches sharing
  an instrument artefact and mounting; a gun's shots are each in another
  batch, so every same-gun partner is across batches), ``subclass`` (one
  manufacturing run sharing subclass marks).

For each (variant, set): the share of queries whose first same-gun partner
is at rank 1 and within the top 10, the mean and the worst rank. Writes
benchmarks/results/first_stage.json and first_stage.png, and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix.datasets import iter_population  # noqa: E402
from ballistix.features.describe import DESCRIBE_DEFAULTS, V1_PARAMS  # noqa: E402

from ._common import RESULTS, SHARED_DATA, table, write_json  # noqa: E402

#: descriptor variants: name -> describe parameters
VARIANTS = {
    "v1": dict(V1_PARAMS),
    "v2": dict(DESCRIBE_DEFAULTS),
    "v2, linear spectrum": {**DESCRIBE_DEFAULTS, "log_spectrum": False},
    "v2, harmonics unweighted": {**DESCRIBE_DEFAULTS, "harmonic_weight": 0.0},
    "v2, v1 band": {**DESCRIBE_DEFAULTS, "band_um": V1_PARAMS["band_um"]},
}
#: simulated sets: name -> (population kind, shots per gun, scanning batches, overrides)
SETS = {
    "ordinary": ("ordinary", 4, 1, {}),
    "faint": ("ordinary", 4, 1, {"difficulty": "realistic-hard"}),
    "photometric": ("photometric", 4, 2, {}),
    "batch": ("batch", 4, 4, {}),
    "batch-moderate": ("batch-moderate", 4, 4, {}),
    "subclass": ("subclass", 3, 1, {}),
}


def _describe_all(scan) -> tuple[str, list[np.ndarray]]:
    """Worker: preprocess one raw scan and describe it with every variant."""
    import cv2

    cv2.setNumThreads(1)
    proc = bx.preprocess(scan)
    return scan.meta["labels"]["firearm"], [bx.describe(proc, **kw) for kw in VARIANTS.values()]


def describe_sets(guns: int, seeds: list[int], jobs: int, real: bool) -> dict:
    """{set name: (gun labels, {variant: vectors})} for the simulated sets (and Fadul)."""
    out = {}
    with ProcessPoolExecutor(jobs) as ex:
        if real and (SHARED_DATA / "fadul").is_dir():
            files = sorted((SHARED_DATA / "fadul").glob("*.x3p"))
            lab = {
                r["file"].split("/")[-1][:-4]: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))
            }
            rows = list(ex.map(_describe_all, [_labelled(bx.read_scan(f), lab[f.stem]) for f in files]))
            out["fadul"] = _pack(rows)
        for seed in seeds:
            for i, (name, (kind, shots, batches, over)) in enumerate(SETS.items()):
                # a seed of its own for every set: one seed would give two sets the same guns
                scans = iter_population(kind, guns, shots, n_batches=batches, seed=100 * seed + i, **over)
                rows = list(ex.map(_describe_all, scans))
                out[f"{name} seed {seed}"] = _pack(rows)
                print(f"  described {name} seed {seed}: {len(rows)} scans", file=sys.stderr, flush=True)
    return out


def _labelled(scan, gun):
    scan.meta.setdefault("labels", {})["firearm"] = gun
    return scan


def _pack(rows):
    gun = np.array([r[0] for r in rows])
    return gun, {v: np.array([r[1][i] for r in rows], np.float32) for i, v in enumerate(VARIANTS)}


def first_partner_ranks(vecs: np.ndarray, gun: np.ndarray) -> np.ndarray:
    """Each scan (with a same-gun partner) as a query against all the others: the rank of its first
    same-gun partner by cosine similarity (1 = the nearest)."""
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    out = []
    for i in range(len(vecs)):
        same = gun == gun[i]
        same[i] = False
        if same.any():
            order = np.argsort(-sims[i], kind="stable")
            out.append(int(np.flatnonzero(same[order])[0]) + 1)
    return np.array(out)


def summarise(ranks: np.ndarray) -> dict:
    return {
        "queries": int(ranks.size),
        "rank1": float(np.mean(ranks == 1)),
        "top10": float(np.mean(ranks <= 10)),
        "mean_rank": float(np.mean(ranks)),
        "worst_rank": int(ranks.max()),
    }


def measure(sets: dict) -> dict:
    """{variant: {set: summary}}: each set's replicates pooled (``"ordinary"`` holds every seed's
    queries, ranked within their own replicate), each replicate on its own (``"ordinary seed 11"``),
    and ``"all sets in one index"`` (every scan of every set ranked against all the others)."""
    res = {}
    for v in VARIANTS:
        res[v], pooled = {}, {}
        for name, (gun, vecs) in sets.items():
            r = first_partner_ranks(vecs[v], gun)
            pooled.setdefault(name.split(" seed ")[0], []).append(r)
            if " seed " in name:
                res[v][name] = summarise(r)
        for kind, parts in pooled.items():
            res[v][kind] = summarise(np.concatenate(parts))
        gun = np.concatenate([[f"{n}:{g}" for g in sets[n][0]] for n in sets])
        vecs = np.concatenate([sets[n][1][v] for n in sets])
        res[v]["all sets in one index"] = summarise(first_partner_ranks(vecs, gun))
    return res


def headline(res: dict) -> list[str]:
    """The sets shown in the table and figure: every set with its replicates pooled, and all together."""
    return [k for k in next(iter(res.values())) if " seed " not in k]


def figure(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = headline(res)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(res)
    for i, (v, by_set) in enumerate(res.items()):
        ax.bar(np.arange(len(keys)) + i * width, [by_set[k]["top10"] for k in keys], width, label=v)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys, rotation=25)
    ax.set_ylabel("queries with a same-gun partner in the top 10")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("First stage: descriptor variants across populations")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guns", type=int, default=12, help="guns per simulated set")
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 21], help="one replicate of every set per seed")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-real", action="store_true", help="leave out the Fadul scans")
    ap.add_argument("--quick", action="store_true", help="4 guns, one seed")
    a = ap.parse_args(argv)
    guns, seeds = (4, a.seeds[:1]) if a.quick else (a.guns, a.seeds)
    t = time.perf_counter()
    sets = describe_sets(guns, seeds, a.jobs, not a.skip_real)
    seconds = time.perf_counter() - t
    res = measure(sets)
    rows = []
    for k in headline(res):
        for v in VARIANTS:
            s = res[v][k]
            rows.append([k, v, s["queries"], s["rank1"], s["top10"], s["mean_rank"], s["worst_rank"]])
    print(table(rows, ["set", "descriptor", "queries", "rank 1", "top 10", "mean rank", "worst"]))
    write_json(
        "first_stage",
        {
            "params": {"guns": guns, "seeds": seeds, "real": "fadul" in sets},
            "variants": {
                v: {k: list(x) if isinstance(x, tuple) else x for k, x in kw.items()} for v, kw in VARIANTS.items()
            },
            "sets": {n: {"scans": len(g), "guns": len(set(g.tolist()))} for n, (g, _) in sets.items()},
            "results": res,
            "seconds_to_describe": seconds,
        },
    )
    figure(res, RESULTS / "first_stage.png")
    print(f"wrote {RESULTS / 'first_stage.json'} and first_stage.png ({seconds:.0f} s to simulate and describe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
