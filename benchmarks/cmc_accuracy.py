"""Accuracy of the CMC comparison: real Fadul scans against NIST's table, raw scans, simulated populations.

    python -m benchmarks.cmc_accuracy [--jobs 2] [--sim-guns 20 --sim-shots 3] [--skip-sim]

1. Real processed scans: all 780 pairs of the 40 Fadul scans, each
   preprocessed with the defaults and compared with the reference rotation
   grid (like for like with NIST) and with the default full-circle search;
   CMC-count distributions next to NIST's published counts, AUC, EER, error
   rates at the 6-CMC rule, Spearman correlation with NIST per pair.
2. Raw scans: fadul-1-1 vs 1-2 (same slide) and vs 2-1, the target turned
   by a random angle first: preprocess + compare from the microscope files.
3. Simulated: realistic-hard, consecutively manufactured slides (one run per
   model), full rotation; every same-gun pair and a sample of different-gun
   pairs; AUC, EER, error rates at 6, histograms.
4. Baseline on the same pairs: the peak whole-surface correlation after the
   rotation search (what the cell method adds).

Writes benchmarks/results/cmc_accuracy.json and cmc_accuracy.png, prints tables.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time

import numpy as np
from scipy import stats

import ballistix as bx
from ballistix.evaluation import summarise_scores, tpr_at_fpr
from ballistix.features.cmc import rotate_nan
from ballistix.features.comparison import coarse_rotations
from ballistix.graph.linkage import CONVENTIONAL_CMC_RULE

from ._common import RESULTS, SHARED_DATA, table, write_json

RULE = CONVENTIONAL_CMC_RULE  # the fixed count rule the tables compare against


def baseline_score(a: bx.Scan, b: bx.Scan) -> float:
    """Whole-surface correlation after a full-circle rotation search (factor-2 reduction)."""
    _, curve = coarse_rotations(
        a.heights.astype(np.float32), b.heights.astype(np.float32), factor=2, step_deg=3.0, candidates=1
    )
    return float(curve.max())


def _nist_table():
    rows = list(csv.DictReader(open(SHARED_DATA / "reference" / "fadul_cmc_nist.csv", encoding="utf-8-sig")))
    key = lambda s: "fadul-" + s.replace("Fadul ", "").strip()  # noqa: E731
    return {
        frozenset((key(r["Reference"]), key(r["Compare"]))): (r["KM or KNM"] == "KM", int(r["# CMCs"])) for r in rows
    }


def real_processed(jobs: int, modes: list[str]) -> dict:
    labels = {r["file"].split("/")[-1][:-4]: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))}
    names = sorted(p.stem for p in (SHARED_DATA / "fadul").glob("*.x3p"))
    t = time.perf_counter()
    scans = {n: bx.preprocess(bx.read_scan(SHARED_DATA / "fadul" / f"{n}.x3p")) for n in names}
    t_pre = time.perf_counter() - t
    nist = _nist_table()
    pairs = list(itertools.combinations(names, 2))
    out = {"n_pairs": len(pairs), "preprocess_seconds": t_pre, "modes": {}}
    same = np.array([labels[a] == labels[b] for a, b in pairs])
    nist_counts = np.array([nist[frozenset(p)][1] for p in pairs])
    nist_same = np.array([nist[frozenset(p)][0] for p in pairs])
    assert (nist_same == same).all(), "labels.csv and NIST's table disagree on ground truth"
    out["nist"] = summarise_scores(nist_counts, same, RULE)
    for mode in modes:
        t = time.perf_counter()
        res = bx.compare_many(
            [(scans[a], scans[b]) for a, b in pairs], n_jobs=jobs, progress=False, rotation=mode, calibration=None
        )
        dt = time.perf_counter() - t
        counts = np.array([r.cmc_count for r in res])
        scores = np.array([r.score for r in res])
        rho = stats.spearmanr(counts, nist_counts).statistic
        out["modes"][mode] = {
            "seconds": dt,
            "pairs_per_second": len(pairs) / dt,
            "jobs": jobs,
            "cmc_count": summarise_scores(counts, same, RULE),
            "score_auc": summarise_scores(scores, same, RULE)["auc"],
            "spearman_vs_nist": float(rho),
            "spearman_vs_nist_km": float(stats.spearmanr(counts[same], nist_counts[same]).statistic),
            "pairs": [
                {
                    "a": a,
                    "b": b,
                    "same": bool(s),
                    "cmc": int(c),
                    "score": float(sc),
                    "nist": int(nc),
                    "rotation_deg": r.rotation_deg,
                    "directions": {k: {"original": v["original"], "high": v["high"]} for k, v in r.directions.items()},
                }
                for (a, b), s, c, sc, nc, r in zip(pairs, same, counts, scores, nist_counts, res)
            ],
        }
    t = time.perf_counter()
    base = np.array(_baseline_many([(scans[a], scans[b]) for a, b in pairs], jobs))
    out["baseline"] = {
        **summarise_scores(base, same, 0.5),
        "seconds": time.perf_counter() - t,
        "scores": [round(float(x), 5) for x in base],
        "matched": {
            f"fpr<={f:g}": {
                m: tpr_at_fpr(np.array([p["cmc"] for p in r["pairs"]]), same, f) for m, r in out["modes"].items()
            }
            | {"baseline": tpr_at_fpr(base, same, f)}
            for f in (0.0, 0.01)
        },
    }
    out["baseline"]["note"] = "whole-surface correlation; the 'at_threshold' entry uses 0.5, an arbitrary cut"
    return out


def raw_scans(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    raw = {n: bx.read_scan(SHARED_DATA / "fadul-raw" / f"fadul-{n}-raw.x3p") for n in ("1-1", "1-2", "2-1")}
    out = {}
    t = time.perf_counter()
    a = bx.preprocess(raw["1-1"])
    for n in ("1-2", "2-1"):
        angle = float(rng.uniform(0, 360))
        s = raw[n]
        side = int(np.ceil(np.hypot(*s.shape)))
        turned = bx.Scan(rotate_nan(s.heights, angle, (side, side)).astype(np.float64), s.dx, s.dy, dict(s.meta))
        r = bx.compare(a, bx.preprocess(turned))
        out[f"fadul-1-1 vs fadul-{n}"] = {
            "same": n == "1-2",
            "turned_deg": angle,
            "cmc_count": r.cmc_count,
            "score": r.score,
            "rotation_deg": r.rotation_deg,
            "directions": {k: {"original": v["original"], "high": v["high"]} for k, v in r.directions.items()},
        }
    out["seconds"] = time.perf_counter() - t
    return out


def _baseline_pair(ab):
    return baseline_score(*ab)


def _baseline_many(pairs, jobs: int) -> list[float]:
    if jobs == 1:
        return [_baseline_pair(p) for p in pairs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(ex.map(_baseline_pair, pairs, chunksize=16))


def _pair_records(pairs, res, fire, run, same) -> dict:
    """Per-pair comparison features as columns (for the evidence calibration and re-analysis)."""

    def cells_corr(r):
        c = np.array([x["correlation"] for x in r.cells], float)
        return c[np.isfinite(c)]

    return {
        "a": [int(i) for i, _ in pairs],
        "b": [int(j) for _, j in pairs],
        "gun_a": [str(fire[i]) for i, _ in pairs],
        "gun_b": [str(fire[j]) for _, j in pairs],
        "same_run": [bool(run[i] == run[j]) for i, j in pairs],
        "same": [bool(x) for x in same],
        "cmc": [r.cmc_count for r in res],
        "score": [round(r.score, 4) for r in res],
        "rotation_deg": [
            round(r.rotation_deg, 2) if r.rotation_deg is not None and np.isfinite(r.rotation_deg) else None
            for r in res
        ],
        "n_cells": [[r.directions[d]["n_cells"] for d in r.directions] for r in res],
        "original": [[r.directions[d]["original"] for d in r.directions] for r in res],
        "high": [[r.directions[d]["high"] for d in r.directions] for r in res],
        "cell_corr_mean": [round(float(cells_corr(r).mean()), 4) if cells_corr(r).size else None for r in res],
        "cell_corr_p90": [
            round(float(np.percentile(cells_corr(r), 90)), 4) if cells_corr(r).size else None for r in res
        ],
    }


def _resume(pairs, scans, jobs: int, n_check: int = 12, seed: int = 1) -> dict | None:
    """The records of a stopped run from the partial file, when it is this run's (same pairs, and a
    sample of its recorded pairs compare to the same counts and scores now); None if there is none."""
    import json

    path = RESULTS / "cmc_accuracy_simulated_partial.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    rec = d["pairs"]
    n = d["done"]
    if d["of"] != len(pairs) or list(zip(rec["a"], rec["b"])) != [tuple(p) for p in pairs[:n]]:
        raise SystemExit(f"--resume: {path} is from a different run (other pairs); delete it or drop --resume")
    rng = np.random.default_rng(seed)
    same = np.array(rec["same"])
    check = np.r_[
        rng.choice(np.flatnonzero(same), min(n_check // 2, same.sum()), replace=False),
        rng.choice(np.flatnonzero(~same), min(n_check // 2, (~same).sum()), replace=False),
    ].astype(int)
    now = bx.compare_many(
        [(scans[rec["a"][k]], scans[rec["b"][k]]) for k in check], n_jobs=jobs, progress=False, calibration=None
    )
    for k, r in zip(check, now):
        if r.cmc_count != rec["cmc"][k] or round(r.score, 4) != rec["score"][k]:
            raise SystemExit(
                f"--resume: pair {k} of {path} compares to {r.cmc_count} CMCs now, "
                f"{rec['cmc'][k]} then: the code or the data changed; start afresh"
            )
    rec.setdefault("rotation_deg", [None] * n)  # older partial files did not keep the rotation
    print(f"resuming after {n} of {len(pairs)} pairs ({check.size} recorded pairs re-compared: identical)")
    return {"records": rec, "seconds": d["seconds"], "checked": check.size}


def simulated(
    jobs: int,
    guns: int,
    shots: int,
    knm_per_km: float,
    seed: int,
    spacing_um: float = 6.25,
    chunk: int = 500,
    resume: bool = False,
) -> dict:
    t = time.perf_counter()
    scans = [
        bx.preprocess(s, spacing_um=spacing_um)
        for s in bx.datasets.iter_simulate(
            guns, shots, seed=seed, difficulty="realistic-hard", resolution="standard", run_size=max(2, guns // 4)
        )
    ]
    t_sim = time.perf_counter() - t
    fire = [s.meta["labels"]["firearm"] for s in scans]
    allpairs = list(itertools.combinations(range(len(scans)), 2))
    km = [p for p in allpairs if fire[p[0]] == fire[p[1]]]
    knm = [p for p in allpairs if fire[p[0]] != fire[p[1]]]
    rng = np.random.default_rng(seed)
    n_knm = min(len(knm), int(knm_per_km * len(km)))
    knm = [knm[i] for i in rng.choice(len(knm), n_knm, replace=False)]  # random order: a stopped run's
    pairs = km + knm  # partial file holds a random subset
    same = np.array([True] * len(km) + [False] * len(knm))
    run = [s.meta["labels"]["manufacturing_run"] for s in scans]
    same_run = np.array([run[i] == run[j] for i, j in pairs])
    # in chunks, each written to a partial file, so that a long run leaves its numbers behind if stopped
    # (and --resume carries on from it)
    before = _resume(pairs, scans, jobs) if resume else None
    rec = before["records"] if before else None
    t = time.perf_counter() - (before["seconds"] if before else 0.0)
    for start in range(len(rec["a"]) if rec else 0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        res = bx.compare_many([(scans[i], scans[j]) for i, j in part], n_jobs=jobs, progress=False, calibration=None)
        new = _pair_records(part, res, fire, run, same[start : start + chunk])
        rec = new if rec is None else {k: rec[k] + new[k] for k in rec}
        write_json(
            "cmc_accuracy_simulated_partial",
            {"done": len(rec["a"]), "of": len(pairs), "seconds": time.perf_counter() - t, "pairs": rec},
        )
    dt = time.perf_counter() - t
    counts = np.array(rec["cmc"])
    # the baseline: up to 500 same-gun and 1,000 different-gun pairs
    km_idx, knm_idx = np.flatnonzero(same), np.flatnonzero(~same)
    sub = np.r_[
        np.sort(rng.choice(km_idx, min(500, km_idx.size), replace=False)),
        np.sort(rng.choice(knm_idx, min(1000, knm_idx.size), replace=False)),
    ]
    base = np.array(_baseline_many([(scans[pairs[k][0]], scans[pairs[k][1]]) for k in sub], jobs))
    truth_rot = np.array(
        [(scans[j].meta["truth"]["rotation_deg"] - scans[i].meta["truth"]["rotation_deg"]) % 360 for i, j in pairs]
    )
    rot = np.array([np.nan if x is None else x for x in rec["rotation_deg"]], float)
    rot_err = np.abs((rot - truth_rot + 180) % 360 - 180)
    km_rot = same & np.isfinite(rot)  # resumed older records have no rotation
    km_id = km_rot & (counts >= RULE)
    return {
        "guns": guns,
        "shots": shots,
        "n_scans": len(scans),
        "n_km": len(km),
        "n_knm": len(knm),
        "spacing_um": spacing_um,
        "simulate_and_preprocess_seconds": t_sim,
        "compare_seconds": dt,
        "pairs_per_second": len(pairs) / dt,
        "cmc_count": summarise_scores(counts, same, RULE),
        "knm_same_run_max_cmc": int(counts[~same & same_run].max()) if (~same & same_run).any() else None,
        "resumed_after": len(before["records"]["a"]) if before else 0,
        "km_rotation_checked": int(km_rot.sum()),
        "km_rotation_within_6deg": float((rot_err[km_rot] <= 6).mean()) if km_rot.any() else None,
        "km_rotation_within_6deg_when_identified": float((rot_err[km_id] <= 6).mean()) if km_id.any() else None,
        "baseline": {
            **summarise_scores(base, same[sub], 0.5),
            "n_pairs": int(sub.size),
            "pairs_index": sub.tolist(),
            "scores": [round(float(x), 5) for x in base],
            # the two methods on the same pairs, at the same false-positive budgets
            "matched": {
                f"fpr<={f:g}": {
                    "cmc": tpr_at_fpr(counts[sub], same[sub], f),
                    "baseline": tpr_at_fpr(base, same[sub], f),
                }
                for f in (0.0, 0.001, 0.01, 0.05)
            },
        },
        "counts_km": counts[same].tolist(),
        "counts_knm": counts[~same].tolist(),
        "pairs": rec,
    }


def simulated_from_partial() -> dict:
    """The simulated part from the partial file of a run that was stopped (no baseline, no rotation check)."""
    import json

    d = json.loads((RESULTS / "cmc_accuracy_simulated_partial.json").read_text())
    p = d["pairs"]
    counts, same = np.array(p["cmc"]), np.array(p["same"])
    same_run = np.array(p["same_run"])
    return {
        "complete": False,
        "done": d["done"],
        "of": d["of"],
        "compare_seconds": d["seconds"],
        "n_km": int(same.sum()),
        "n_knm": int((~same).sum()),
        "n_guns": len(set(p["gun_a"]) | set(p["gun_b"])),
        "cmc_count": summarise_scores(counts, same, RULE),
        "knm_same_run_max_cmc": int(counts[~same & same_run].max()) if (~same & same_run).any() else None,
        "counts_km": counts[same].tolist(),
        "counts_knm": counts[~same].tolist(),
        "pairs": p,
    }


def figure(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    real = out.get("real", {})
    for mode, r in real.get("modes", {}).items():
        panels.append((f"Fadul, {mode} rotation", r["pairs"]))
    n_ax = len(panels) + bool(panels) + ("simulated" in out)
    fig, axes = plt.subplots(1, n_ax, figsize=(5 * n_ax, 4))
    axes = np.atleast_1d(axes)
    bins = np.arange(-0.5, 40.5, 1)
    for ax, (title, pairs) in zip(axes, panels):
        c = np.array([p["cmc"] for p in pairs])
        s = np.array([p["same"] for p in pairs])
        n = np.array([p["nist"] for p in pairs])
        ax.hist(c[~s], bins, alpha=0.6, label="ballistix KNM", color="tab:red")
        ax.hist(c[s], bins, alpha=0.6, label="ballistix KM", color="tab:green")
        ax.hist(n[~s], bins, histtype="step", color="darkred", label="NIST KNM")
        ax.hist(n[s], bins, histtype="step", color="darkgreen", label="NIST KM")
        ax.axvline(RULE - 0.5, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("CMC count")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    if panels:
        ax = axes[len(panels)]
        pairs = panels[-1][1]
        c = np.array([p["cmc"] for p in pairs])
        n = np.array([p["nist"] for p in pairs])
        s = np.array([p["same"] for p in pairs])
        ax.scatter(n[~s], c[~s], s=6, color="tab:red", label="KNM")
        ax.scatter(n[s], c[s], s=10, color="tab:green", label="KM")
        ax.plot([0, 35], [0, 35], "k:", lw=0.8)
        ax.set_xlabel("NIST CMC count")
        ax.set_ylabel("ballistix CMC count")
        ax.set_title("per pair: ballistix vs NIST", fontsize=9)
        ax.legend(fontsize=7)
    if "simulated" in out:
        ax = axes[-1]
        sim = out["simulated"]
        ax.hist(sim["counts_knm"], bins, alpha=0.6, color="tab:red", label=f"KNM ({sim['n_knm']})")
        ax.hist(sim["counts_km"], bins, alpha=0.6, color="tab:green", label=f"KM ({sim['n_km']})")
        ax.axvline(RULE - 0.5, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("CMC count")
        ax.set_title("simulated, realistic-hard, consecutive slides", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["reference", "full"])
    p.add_argument("--sim-guns", type=int, default=20)
    p.add_argument("--sim-shots", type=int, default=3)
    p.add_argument("--knm-per-km", type=float, default=10.0)
    p.add_argument(
        "--sim-spacing-um",
        type=float,
        default=6.25,
        help="comparison grid of the simulated set (12.5 makes a 1,000/10,000 run fit in ~30 min)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-sim", action="store_true")
    p.add_argument(
        "--resume",
        action="store_true",
        help="carry on a stopped simulated run from its partial file (checked to be the same run)",
    )
    p.add_argument(
        "--from-partial",
        action="store_true",
        help="summarise the partial file of a stopped simulated run instead of simulating",
    )
    args = p.parse_args(argv)
    out = {"params": vars(args)}
    have_real = (SHARED_DATA / "fadul").is_dir() and not args.skip_real
    if have_real:
        out["real"] = real_processed(args.jobs, args.modes)
        out["raw"] = raw_scans(args.seed)
    if args.from_partial:
        out["simulated"] = simulated_from_partial()
    elif not args.skip_sim:
        out["simulated"] = simulated(
            args.jobs,
            args.sim_guns,
            args.sim_shots,
            args.knm_per_km,
            args.seed,
            args.sim_spacing_um,
            resume=args.resume,
        )
    name = "cmc_accuracy" if have_real else "cmc_accuracy_simulated"
    path = write_json(name, out)
    figure(out, RESULTS / f"{name}.png")

    rows = []
    if have_real:
        n = out["real"]["nist"]
        rows.append(
            [
                "NIST published (Fadul)",
                n["auc"],
                n["eer"],
                n["at_threshold"]["false_positives"],
                n["at_threshold"]["false_negatives"],
                f"{n['same']['min']:.0f}-{n['same']['max']:.0f}",
                f"{n['different']['min']:.0f}-{n['different']['max']:.0f}",
                "-",
            ]
        )
        for mode, r in out["real"]["modes"].items():
            c = r["cmc_count"]
            rows.append(
                [
                    f"ballistix Fadul, {mode}",
                    c["auc"],
                    c["eer"],
                    c["at_threshold"]["false_positives"],
                    c["at_threshold"]["false_negatives"],
                    f"{c['same']['min']:.0f}-{c['same']['max']:.0f}",
                    f"{c['different']['min']:.0f}-{c['different']['max']:.0f}",
                    f"{r['spearman_vs_nist']:.3f}",
                ]
            )
        b = out["real"]["baseline"]
        rows.append(
            [
                "baseline whole-surface corr, Fadul",
                b["auc"],
                b["eer"],
                "-",
                "-",
                f"{b['same']['min']:.2f}-{b['same']['max']:.2f}",
                f"{b['different']['min']:.2f}-{b['different']['max']:.2f}",
                "-",
            ]
        )
    if "simulated" in out:
        s = out["simulated"]["cmc_count"]
        rows.append(
            [
                f"simulated realistic-hard ({out['simulated']['n_km']} KM / {out['simulated']['n_knm']} KNM)",
                s["auc"],
                s["eer"],
                s["at_threshold"]["false_positives"],
                s["at_threshold"]["false_negatives"],
                f"{s['same']['min']:.0f}-{s['same']['max']:.0f}",
                f"{s['different']['min']:.0f}-{s['different']['max']:.0f}",
                "-",
            ]
        )
        b = out["simulated"].get("baseline")
        if b:
            rows.append(
                [
                    "baseline whole-surface corr, simulated",
                    b["auc"],
                    b["eer"],
                    "-",
                    "-",
                    f"{b['same']['min']:.2f}-{b['same']['max']:.2f}",
                    f"{b['different']['min']:.2f}-{b['different']['max']:.2f}",
                    "-",
                ]
            )
            matched = [[k, v["cmc"]["tpr"], v["baseline"]["tpr"]] for k, v in b.get("matched", {}).items()]
    print(table(rows, ["comparisons", "AUC", "EER", "FP at 6", "FN at 6", "KM range", "KNM range", "Spearman/NIST"]))
    if "simulated" in out and out["simulated"].get("baseline", {}).get("matched"):
        n = out["simulated"]["baseline"]["n_pairs"]
        print()
        print(table(matched, [f"simulated, same {n} pairs", "CMC count: TPR", "baseline: TPR"]))
    if have_real:
        print()
        print(
            table(
                [
                    [k, v["same"], v["cmc_count"], f"{v['turned_deg']:.0f}"]
                    for k, v in out["raw"].items()
                    if isinstance(v, dict)
                ],
                ["raw scans (target turned)", "same slide", "CMCs", "turned deg"],
            )
        )
    print(f"\nwrote {path} and {RESULTS / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
