"""Evidence strength: likelihood ratios on real and simulated comparisons, cross-validated by gun.

    python -m benchmarks.evidence [--jobs 2] [--write-default]

1. Fadul (40 real scans, 10 slides): all 780 pairs compared with the
   defaults (features cached in benchmarks/results/evidence_fadul_pairs.json);
   leave-one-gun-out LRs: Cllr, Cllr-min, misleading evidence, Tippett plot,
   error rates of the conclusion scale.
2. Simulated realistic-hard (the per-pair features written by
   ``python -m benchmarks.cmc_accuracy --skip-real ...``), and two smaller
   simulated populations made here (realistic impressions; another
   "instrument": 3.125 um scans with more noise, dropouts and blur): the
   same, by 10 folds of guns.
3. Transfer: a calibration fitted on one population applied to each other one.
4. ``--write-default``: fit the shipped default calibration on both
   populations (each weighted equally) and write it to
   ballistix/data/calibration_default.json, with its cross-validated
   performance.

Writes benchmarks/results/evidence.json and evidence.png, prints a table.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix import evidence as ev  # noqa: E402
from ballistix.evaluation import lr  # noqa: E402
from ballistix.features.comparison import DEFAULTS  # noqa: E402
from ballistix.validation import lr_performance, plan_pairs  # noqa: E402

from ._common import RESULTS, ROOT, SHARED_DATA, table, write_json  # noqa: E402

FADUL_CACHE = RESULTS / "evidence_fadul_pairs.json"

#: The populations the shipped calibrations claim (see ballistix.evidence.domain_check). The default is
#: fitted on varied populations (real Ruger P95 on a confocal microscope, simulated makes and
#: instruments): it claims 9 mm Luger breech faces, and takes an unrecorded calibre to be one. The
#: Fadul-only calibration claims what Fadul is, and nothing it has not seen: a Ruger P95 (make and
#: model must be recorded) scanned on a NanoFocus uSurf.
DOMAINS = {
    "default": {
        "calibre": ["9mm Luger"],
        "unknown_ok": ["calibre"],
        "description": "9 mm Luger breech faces, any make and instrument (varied reference populations)",
    },
    "ruger-p95-nanofocus": {
        "calibre": ["9mm Luger"],
        "make_model": ["Ruger P95"],
        "instrument": ["NanoFocus uSurf"],
        "unknown_ok": ["calibre"],
        "description": "Ruger P95 slides scanned with a NanoFocus uSurf confocal microscope",
    },
}


def fadul_pairs(jobs: int) -> dict:
    """Features of all 780 Fadul pairs (cached: delete the file to recompute)."""
    if FADUL_CACHE.exists():
        return json.loads(FADUL_CACHE.read_text())
    labels = {r["file"].split("/")[-1][:-4]: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))}
    names = sorted(p.stem for p in (SHARED_DATA / "fadul").glob("*.x3p"))
    scans = {n: bx.preprocess(bx.read_scan(SHARED_DATA / "fadul" / f"{n}.x3p")) for n in names}
    pairs = list(itertools.combinations(names, 2))
    t = time.perf_counter()
    res = bx.compare_many([(scans[a], scans[b]) for a, b in pairs], n_jobs=jobs, progress=False, calibration=None)
    out = {
        "seconds": time.perf_counter() - t,
        "preprocessing": ev.processing_signature(scans[names[0]].meta["processing"]),
        "comparison": {k: res[0].params[k] for k in DEFAULTS},
        "a": [a for a, _ in pairs],
        "b": [b for _, b in pairs],
        "gun_a": [labels[a] for a, _ in pairs],
        "gun_b": [labels[b] for _, b in pairs],
        "features": [[ev.feature_values(r)[k] for k in ev.FEATURES] for r in res],
    }
    FADUL_CACHE.write_text(json.dumps(out))
    return out


#: simulated populations besides the realistic-hard one: (difficulty, resolution, description)
EXTRA = {
    "sim-realistic": ("realistic", "standard", "simulated realistic impressions, 6.25 um instrument"),
    "sim-noisy-instrument": (
        {"noise_um": 0.25, "dropout": 0.03, "blur_um": 4.0},
        "full",
        "simulated realistic impressions, other instrument: 3.125 um scans, 5x the noise, 5x the dropouts, more blur",
    ),
}


def extra_pairs(name: str, guns: int, shots: int, knm_per_km: float, jobs: int, seed: int = 1) -> dict:
    """Features of a smaller simulated population (cached in results/evidence_<name>.json)."""
    cache = RESULTS / f"evidence_{name}.json"
    if cache.exists():
        d = json.loads(cache.read_text())
        if d.get("params") == [guns, shots, knm_per_km, seed]:
            return d
    difficulty, resolution, description = EXTRA[name]
    scans = [
        bx.preprocess(s)
        for s in bx.datasets.iter_simulate(
            guns, shots, seed=seed, difficulty=difficulty, resolution=resolution, run_size=max(2, guns // 3)
        )
    ]
    fire = [s.meta["labels"]["firearm"] for s in scans]
    n_km = plan_pairs(fire)[1]["n_same"]
    pairs, plan = plan_pairs(fire, max(1, int(knm_per_km * n_km)), seed)  # every same-gun pair, sampled others
    km, knm = pairs[: plan["n_same"]], pairs[plan["n_same"] :]
    t = time.perf_counter()
    res = bx.compare_many([(scans[i], scans[j]) for i, j in pairs], n_jobs=jobs, progress=False, calibration=None)
    out = {
        "params": [guns, shots, knm_per_km, seed],
        "seconds": time.perf_counter() - t,
        "description": f"{description}; {guns} guns x {shots} shots, {len(km)} same-gun and {len(knm)} "
        f"different-gun pairs",
        "gun_a": [fire[i] for i, _ in pairs],
        "gun_b": [fire[j] for _, j in pairs],
        "features": [[ev.feature_values(r)[k] for k in ev.FEATURES] for r in res],
    }
    cache.write_text(json.dumps(out))
    return out


def simulated_pairs() -> dict | None:
    """The realistic-hard pairs of benchmarks.cmc_accuracy (or of its partial file, if the run is unfinished)."""
    path, partial = RESULTS / "cmc_accuracy_simulated.json", RESULTS / "cmc_accuracy_simulated_partial.json"
    if path.exists():
        d = json.loads(path.read_text())["simulated"]
    elif partial.exists():
        d = json.loads(partial.read_text())
        same = np.array(d["pairs"]["same"])
        d.update(n_km=int(same.sum()), n_knm=int((~same).sum()))
    else:
        return None
    p = d["pairs"]
    cmc = np.array(p["cmc"], float)
    score = np.array(p["score"], float)
    congruent = np.where(cmc > 0, score - cmc, 0.0)
    cell = np.array([v if v is not None else 0.0 for v in p["cell_corr_mean"]], float)
    return {
        "gun_a": p["gun_a"],
        "gun_b": p["gun_b"],
        "features": np.c_[cmc, congruent, cell].tolist(),
        "description": f"simulated realistic-hard, {len(set(p['gun_a']) | set(p['gun_b']))} guns in consecutive "
        f"manufacturing runs, {d['n_km']} same-gun and {d['n_knm']} different-gun pairs",
    }


def evaluate(llr: np.ndarray, same: np.ndarray) -> dict:
    return lr_performance(llr, same)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--write-default", action="store_true")
    p.add_argument("--extra", nargs="*", default=list(EXTRA), help=f"smaller simulated populations: {list(EXTRA)}")
    p.add_argument("--extra-guns", type=int, default=12)
    p.add_argument("--extra-shots", type=int, default=4)
    p.add_argument("--skip-real", action="store_true", help="leave out the Fadul population")
    args = p.parse_args(argv)
    pops = {}
    if (SHARED_DATA / "fadul").is_dir() and not args.skip_real:
        f = fadul_pairs(args.jobs)
        pops["fadul"] = {**f, "description": "40 real Fadul scans (10 consecutively made Ruger slides), all 780 pairs"}
    sim = simulated_pairs()
    if sim:
        pops["sim-hard"] = sim
    for name in args.extra:
        pops[name] = extra_pairs(name, args.extra_guns, args.extra_shots, 5.0, args.jobs)
    if not pops:
        print("skipped: neither the real scans nor the simulated pair file are present")
        return 0
    out = {"params": vars(args), "populations": {}, "transfer": {}}
    rows, curves = [], {}
    for name, d in pops.items():
        X = np.array(d["features"], float)
        same = np.array([a == b for a, b in zip(d["gun_a"], d["gun_b"])])
        t = time.perf_counter()
        llr = ev.cross_validate(X, same, d["gun_a"], d["gun_b"], n_folds=args.folds)
        r = evaluate(llr, same)
        r.update(
            n_same=int(same.sum()),
            n_different=int((~same).sum()),
            description=d["description"],
            cv_seconds=time.perf_counter() - t,
            n_guns=len(set(d["gun_a"]) | set(d["gun_b"])),
        )
        # count-only model: what the other features add
        Xc = np.c_[X[:, 0], np.zeros((len(X), 2))]
        r["count_only"] = {
            "cllr": lr.cllr(ev.cross_validate(Xc, same, d["gun_a"], d["gun_b"], n_folds=args.folds), same)
        }
        out["populations"][name] = r
        curves[name] = (llr, same)
        m = r["misleading"]
        c = r["conclusions"]
        rows.append(
            [
                name,
                int(same.sum()),
                int((~same).sum()),
                r["cllr"],
                r["cllr_min"],
                r["count_only"]["cllr"],
                m["rate_for_same"],
                m["rate_for_different"],
                m["strong_for_same"],
                m["strong_for_different"],
                c["identification"]["rate_same"],
                c["identification"]["different"],
                c["elimination"]["same"],
            ]
        )
    # the shipped default's decisions (LR >= 100 links) on each population (it was fitted on them: in-sample)
    shipped = ev.default_calibration()
    out["shipped_decisions"] = {}
    for name, d in pops.items():
        X = np.array(d["features"], float)
        same = np.array([a == b for a, b in zip(d["gun_a"], d["gun_b"])])
        llr = shipped.log10_lr(X)
        out["shipped_decisions"][name] = {
            "links_same": int((llr[same] >= 2).sum()),
            "n_same": int(same.sum()),
            "links_different": int((llr[~same] >= 2).sum()),
            "n_different": int((~same).sum()),
            "weakest_same": {"cmc": float(X[same, 0].min()), "log10_lr": float(llr[same].min())},
            "strongest_different": {"cmc": float(X[~same, 0].max()), "log10_lr": float(llr[~same].max())},
        }
    # transfer: a calibration fitted on one whole population, applied to each other one
    for src, dst in itertools.permutations(pops, 2):
        a, b = pops[src], pops[dst]
        cal = ev.fit(np.array(a["features"]), [x == y for x, y in zip(a["gun_a"], a["gun_b"])])
        same = np.array([x == y for x, y in zip(b["gun_a"], b["gun_b"])])
        llr = cal.log10_lr(np.array(b["features"]))
        r = out["transfer"][f"{src} -> {dst}"] = {**evaluate(llr, same), "bounds_log10": cal.bounds_log10}
        rows.append(
            [
                f"fit {src}, test {dst}",
                int(same.sum()),
                int((~same).sum()),
                r["cllr"],
                r["cllr_min"],
                "-",
                r["misleading"]["rate_for_same"],
                r["misleading"]["rate_for_different"],
                r["misleading"]["strong_for_same"],
                r["misleading"]["strong_for_different"],
                r["conclusions"]["identification"]["rate_same"],
                r["conclusions"]["identification"]["different"],
                r["conclusions"]["elimination"]["same"],
            ]
        )
    if args.write_default and "fadul" in pops:
        X = np.concatenate([np.array(d["features"], float) for d in pops.values()])
        ga = [f"{n}:{g}" for n, d in pops.items() for g in d["gun_a"]]
        gb = [f"{n}:{g}" for n, d in pops.items() for g in d["gun_b"]]
        same = np.array([a == b for a, b in zip(ga, gb)])
        # each population counts equally within each class
        pop = np.array([n for n, d in pops.items() for _ in d["gun_a"]])
        key = np.char.add(pop.astype(str), same.astype(str))
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        weight = 1.0 / counts[inv]
        llr = ev.cross_validate(X, same, ga, gb, n_folds=args.folds, sample_weight=weight)
        cal = ev.fit(
            X,
            same,
            sample_weight=weight,
            name="ballistix default " + bx.__version__,
            description="; ".join(d["description"] for d in pops.values()),
            preprocessing=pops["fadul"]["preprocessing"],
            comparison=pops["fadul"]["comparison"],
            extra_reference={"populations": {n: {"n_pairs": len(d["gun_a"])} for n, d in pops.items()}},
            domain=DOMAINS["default"],
        )
        cal.performance = {
            "cross_validation": f"{args.folds} folds of guns over all populations",
            **evaluate(llr, same),
            "per_population": {
                n: {
                    "cllr": lr.cllr(llr[pop == n], same[pop == n]),
                    "cllr_min": lr.cllr_min(llr[pop == n], same[pop == n]),
                }
                for n in pops
            },
        }
        path = cal.save(ROOT / "ballistix" / "data" / "calibration_default.json")
        out["default"] = {
            "path": str(path.relative_to(ROOT)),
            "bounds_log10": cal.bounds_log10,
            "coef": cal.coef,
            **{k: cal.performance[k] for k in ("cllr", "cllr_min")},
        }
        print(f"wrote {path}; pin it in ballistix/evidence.py: SHIPPED_SHA256[{path.name!r}] = {cal.sha256!r}")
    path = write_json("evidence", out)
    _figure(curves, out, RESULTS / "evidence.png")
    print(
        table(
            rows,
            [
                "population",
                "KM",
                "KNM",
                "Cllr",
                "Cllr-min",
                "Cllr count-only",
                "KNM LR>1",
                "KM LR<1",
                "KNM LR>100",
                "KM LR<1/100",
                "KM ident.",
                "KNM ident.",
                "KM elim.",
            ],
        )
    )
    print("\nshipped default calibration, links at LR >= 100 (in-sample: it was fitted on these populations):")
    print(
        table(
            [
                [
                    n,
                    f"{r['links_same']} / {r['n_same']}",
                    f"{r['links_different']} / {r['n_different']}",
                    f"{r['weakest_same']['cmc']:.0f} ({r['weakest_same']['log10_lr']:+.2f})",
                    f"{r['strongest_different']['cmc']:.0f} ({r['strongest_different']['log10_lr']:+.2f})",
                ]
                for n, r in out["shipped_decisions"].items()
            ],
            [
                "population",
                "same-gun linked",
                "different-gun linked",
                "weakest same-gun: CMC (log10 LR)",
                "strongest different-gun: CMC (log10 LR)",
            ],
        )
    )
    print(f"\nwrote {path}")
    return 0


def _figure(curves, out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (name, (llr, same)) in zip(axes[0], curves.items()):
        r = out["populations"][name]
        lr.tippett(
            llr, same, ax=ax, title=f"{name}: cross-validated by gun, Cllr {r['cllr']:.3f} (min {r['cllr_min']:.3f})"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
