"""Populations on which a fixed CMC count fails, and cohort score normalisation.

    python -m benchmarks.populations [--quick] [--jobs 2] [--kinds batch ordinary ...] [--skip-real]

Builds the simulated populations of `ballistix.datasets.populations`
(``batch``: photometric-stereo scans in batches sharing instrument artefacts;
``photometric``: the same instrument without them; ``subclass``: one
manufacturing run sharing subclass marks; ``ordinary``: the default
simulator), preprocesses and compares all pairs of each (features cached in
benchmarks/results/populations_<kind>_<guns>x<shots>x<batches>_pairs.json,
checked against the settings), and
cohort-normalises every pair's scores against the population's own
comparisons (`ballistix.cohort.normalise_pairs`, cohort = the exhibit's
comparisons with exhibits of the other side's scanning batch, leaving out
the pair and the exhibit's top score). With the real Fadul features cached by
``python -m benchmarks.evidence`` (results/evidence_fadul_pairs.json) the
same normalisation is checked on real scans.

Writes benchmarks/results/populations.json (one record per pair: exhibits,
guns, batches, population keys, calibration features, CMC count, normalised
scores) and populations.png, and prints a table per population: same-gun
and different-gun pairs, pairs at 6 or more CMCs within and across batches,
AUC of the raw count and of the normalised scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix import evidence as ev  # noqa: E402
from ballistix.cohort import normalise_pairs  # noqa: E402
from ballistix.evaluation import auc, tpr_at_fpr  # noqa: E402
from ballistix.graph.linkage import CONVENTIONAL_CMC_RULE  # noqa: E402

from ._common import RESULTS, table, write_json  # noqa: E402

#: population -> (n_firearms, shots, n_batches) of the default run; --quick takes half the guns plus one, at least 4
SIZES = {
    "batch": (6, 4, 2),
    "batch-moderate": (6, 4, 2),
    "photometric": (4, 4, 2),
    "subclass": (5, 3, 1),
    "ordinary": (5, 4, 1),
}
THRESHOLD = CONVENTIONAL_CMC_RULE  # the fixed count rule these populations break
EXCESS_RULES = (3, 4, 5, 6, 8)  # fixed rules "cmc_excess >= k": k CMCs above the exhibits' background
#: normalised scores written per pair: name -> (feature, normalise_pairs keyword arguments)
NORMALISATIONS = {
    "cmc_excess": ("cmc", dict(method="excess", exclude_top=1, min_size=5, quantile=0.5)),
    "cmc_snorm": ("cmc", dict(method="s-norm", exclude_top=1, min_size=5, min_scale=1.0)),
    "cell_corr_snorm": ("cell_corr", dict(method="s-norm", exclude_top=1, min_size=5, min_scale=0.01)),
}
CHOSEN = "cmc_excess"


def population_pairs(kind: str, guns: int, shots: int, batches: int, seed: int, resolution: str, jobs: int) -> dict:
    """Per-pair labels and features of one population, all pairs compared (cached)."""
    params = dict(
        kind=kind,
        guns=guns,
        shots=shots,
        batches=batches,
        seed=seed,
        resolution=resolution,
        settings=bx.datasets.POPULATIONS[kind],
        version=bx.__version__,
    )
    cache = RESULTS / f"populations_{kind}_{guns}x{shots}x{batches}_pairs.json"
    if cache.exists():
        d = json.loads(cache.read_text())
        if d.get("params") == json.loads(json.dumps(params)):
            return d
    t = time.perf_counter()
    scans = [
        bx.preprocess(s)
        for s in bx.datasets.iter_population(kind, guns, shots, n_batches=batches, seed=seed, resolution=resolution)
    ]
    t_prep = time.perf_counter() - t
    labels = [s.meta["labels"] for s in scans]
    pairs = list(itertools.combinations(range(len(scans)), 2))
    t = time.perf_counter()
    res = bx.compare_many([(scans[i], scans[j]) for i, j in pairs], n_jobs=jobs, progress=False, calibration=None)
    keys = ("exhibit", "firearm", "batch", "make", "model", "calibre", "instrument", "manufacturing_run")
    out = {
        "params": params,
        "preprocess_seconds": t_prep,
        "compare_seconds": time.perf_counter() - t,
        "description": bx.datasets.POPULATIONS[kind]["description"],
        "scans": [{k: lab[k] for k in keys} for lab in labels],
        "pairs": [[i, j] for i, j in pairs],
        "features": [[ev.feature_values(r)[k] for k in ev.FEATURES] for r in res],
        "score": [float(r.score) for r in res],
        "rotation_deg": [float(r.rotation_deg) if r.rotation_deg is not None else None for r in res],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def fadul_population() -> dict | None:
    """The real Fadul features cached by benchmarks.evidence, in the form of `population_pairs` (or None)."""
    path = RESULTS / "evidence_fadul_pairs.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    names = sorted(set(d["a"]) | set(d["b"]))
    gun = {**dict(zip(d["a"], d["gun_a"])), **dict(zip(d["b"], d["gun_b"]))}
    idx = {n: i for i, n in enumerate(names)}
    return {
        "description": "40 real Fadul scans (10 consecutively made Ruger P95 slides), all pairs, features from "
        "benchmarks.evidence; one scanning batch assumed",
        "scans": [
            {
                "exhibit": n,
                "firearm": gun[n],
                "batch": "fadul",
                "make": "Ruger",
                "model": "P95",
                "calibre": "9mm Luger",
                "instrument": "confocal (NIST)",
                "manufacturing_run": "fadul",
            }
            for n in names
        ],
        "pairs": [[idx[a], idx[b]] for a, b in zip(d["a"], d["b"])],
        "features": d["features"],
        "score": [f[0] + f[1] for f in d["features"]],
        "params": {"source": str(path.name)},
    }


def records(name: str, d: dict) -> list[dict]:
    """One complete record per pair, with the cohort-normalised scores."""
    sc, pairs = d["scans"], np.array(d["pairs"], int).reshape(-1, 2)
    X = np.array(d["features"], float).reshape(-1, len(ev.FEATURES))
    ids_a = [sc[i]["exhibit"] for i in pairs[:, 0]]
    ids_b = [sc[j]["exhibit"] for j in pairs[:, 1]]
    ka = [sc[i]["batch"] for i in pairs[:, 0]]
    kb = [sc[j]["batch"] for j in pairs[:, 1]]
    norm = {}
    for nm, (feat, kw) in NORMALISATIONS.items():
        col = X[:, list(ev.FEATURES).index(feat)]
        norm[nm] = normalise_pairs(ids_a, ids_b, col, keys_a=ka, keys_b=kb, **kw)
    out = []
    for k, (i, j) in enumerate(pairs):
        a, b = sc[i], sc[j]
        out.append(
            {
                "population": name,
                "exhibit_a": a["exhibit"],
                "exhibit_b": b["exhibit"],
                "gun_a": a["firearm"],
                "gun_b": b["firearm"],
                "batch_a": a["batch"],
                "batch_b": b["batch"],
                "make": a["make"],
                "model": a["model"],
                "calibre": a["calibre"],
                "instrument": a["instrument"],
                "run_a": a["manufacturing_run"],
                "run_b": b["manufacturing_run"],
                "same_gun": a["firearm"] == b["firearm"],
                "same_batch": a["batch"] == b["batch"],
                **{f: float(X[k, n]) for n, f in enumerate(ev.FEATURES)},
                "score": float(d["score"][k]),
                **{nm: (None if np.isnan(v[k]) else float(v[k])) for nm, v in norm.items()},
            }
        )
    return out


def _auc(x, same):
    x = np.asarray(x, float)
    ok = ~np.isnan(x)
    if same[ok].all() or not same[ok].any():
        return None
    return float(auc(x[ok], same[ok]))


def summarise(recs: list[dict]) -> dict:
    same = np.array([r["same_gun"] for r in recs])
    within = np.array([r["same_batch"] for r in recs])
    cmc = np.array([r["cmc"] for r in recs])
    s = {
        "n_same": int(same.sum()),
        "n_different": int((~same).sum()),
        "n_different_within_batch": int((~same & within).sum()),
        "n_different_across_batch": int((~same & ~within).sum()),
        "n_same_within_batch": int((same & within).sum()),
        f"different_at_{THRESHOLD}_within_batch": int((~same & within & (cmc >= THRESHOLD)).sum()),
        f"different_at_{THRESHOLD}_across_batch": int((~same & ~within & (cmc >= THRESHOLD)).sum()),
        f"same_at_{THRESHOLD}": int((same & (cmc >= THRESHOLD)).sum()),
        f"same_at_{THRESHOLD}_within_batch": int((same & within & (cmc >= THRESHOLD)).sum()),
        "cmc_quartiles": {
            grp: (np.quantile(cmc[m], [0.25, 0.5, 0.75, 1.0]).tolist() if m.any() else None)
            for grp, m in [
                ("same_within", same & within),
                ("same_across", same & ~within),
                ("different_within", ~same & within),
                ("different_across", ~same & ~within),
            ]
        },
        "auc": {
            "cmc": _auc(cmc, same),
            **{nm: _auc([np.nan if r[nm] is None else r[nm] for r in recs], same) for nm in NORMALISATIONS},
        },
        "auc_within_batch": {
            "cmc": _auc(cmc[within], same[within]),
            **{
                nm: _auc([np.nan if r[nm] is None else r[nm] for r, w in zip(recs, within) if w], same[within])
                for nm in NORMALISATIONS
            },
        },
        "no_cohort": {nm: int(sum(r[nm] is None for r in recs)) for nm in NORMALISATIONS},
    }
    z = np.array([np.nan if r[CHOSEN] is None else r[CHOSEN] for r in recs])
    ok = np.isfinite(z)
    rules = {f"cmc>={THRESHOLD}": cmc >= THRESHOLD, **{f"{CHOSEN}>={k}": ok & (z >= k) for k in EXCESS_RULES}}
    s["rules"] = {
        name: {
            "same": int((same & m).sum()),
            "different_within_batch": int((~same & within & m).sum()),
            "different_across_batch": int((~same & ~within & m).sum()),
        }
        for name, m in rules.items()
    }
    s["tpr_at_fpr"] = {}
    for fpr in (0.01, 0.05):
        row = {}
        for nm, x, m in (("cmc", cmc, np.ones_like(same)), (CHOSEN, z, ok)):
            row[nm] = tpr_at_fpr(x[m], same[m], fpr)["tpr"] if same[m].any() and (~same[m]).any() else None
        s["tpr_at_fpr"][str(fpr)] = row
    # the chosen normalised score at the threshold that keeps as many same-gun pairs as the raw count at 6
    k = int((same & (cmc >= THRESHOLD)).sum())
    if k > 0 and np.isfinite(z[same]).sum() >= k:
        t = float(np.sort(z[same & np.isfinite(z)])[::-1][k - 1])
        s["normalised_threshold_same_recall"] = {
            "threshold": t,
            "same_at_or_above": int((same & (z >= t)).sum()),
            "different_within_batch_at_or_above": int((~same & within & (z >= t)).sum()),
            "different_across_batch_at_or_above": int((~same & ~within & (z >= t)).sum()),
        }
    return s


def _rule(s: dict, name: str) -> str:
    r = s["rules"][name]
    return f"{r['same']}, {r['different_within_batch']}/{r['different_across_batch']}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer guns per population")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--kinds", nargs="*", default=list(SIZES), help=f"populations: {list(SIZES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", default="standard")
    p.add_argument("--skip-real", action="store_true", help="leave out the Fadul features even when cached")
    args = p.parse_args(argv)
    unknown = [k for k in args.kinds if k not in SIZES]
    if unknown:
        print(f"error: unknown populations {unknown}; known: {list(SIZES)}", file=sys.stderr)
        return 2
    pops = {}
    for kind in args.kinds:
        g, s, b = SIZES[kind]
        if args.quick:
            g = max(4, g // 2 + 1)  # 8 or more scans per batch: cohorts of 5 after leaving out the pair and the top
        pops[kind] = population_pairs(kind, g, s, b, args.seed, args.resolution, args.jobs)
    if not args.skip_real and (f := fadul_population()):
        pops["fadul"] = f
    out = {
        "params": vars(args),
        "threshold": THRESHOLD,
        "chosen_normalisation": CHOSEN,
        "normalisations": {k: {"feature": f, **kw} for k, (f, kw) in NORMALISATIONS.items()},
        "cohort": "each exhibit's comparisons with exhibits of the other side's scanning batch, leaving out the "
        "pair itself and the exhibit's highest score",
        "populations": {},
        "pairs": [],
    }
    rows = []
    for name, d in pops.items():
        recs = records(name, d)
        s = summarise(recs)
        s.update(
            description=d["description"],
            params=d["params"],
            seconds={k: d[k] for k in ("preprocess_seconds", "compare_seconds") if k in d},
        )
        out["populations"][name] = s
        out["pairs"] += recs
        rows.append(
            [
                name,
                s["n_same"],
                s["n_different"],
                f"{s[f'different_at_{THRESHOLD}_within_batch']}/{s['n_different_within_batch']}",
                f"{s[f'different_at_{THRESHOLD}_across_batch']}/{s['n_different_across_batch']}",
                f"{s[f'same_at_{THRESHOLD}']}/{s['n_same']}",
                _rule(s, f"{CHOSEN}>=5"),
                s["auc"]["cmc"],
                s["auc"][CHOSEN],
                s["auc"]["cmc_snorm"],
                s["auc"]["cell_corr_snorm"],
                s["auc_within_batch"]["cmc"],
                s["auc_within_batch"][CHOSEN],
                s["tpr_at_fpr"]["0.01"]["cmc"],
                s["tpr_at_fpr"]["0.01"][CHOSEN],
            ]
        )
    sim = [r for r in out["pairs"] if r["population"] in SIZES]
    if len({r["population"] for r in sim}) > 1:  # one rule for all simulated populations at once
        s = summarise(sim)
        s["description"] = "all simulated populations pooled: one threshold for every population"
        out["pooled_simulated"] = s
        rows.append(
            [
                "pooled simulated",
                s["n_same"],
                s["n_different"],
                f"{s[f'different_at_{THRESHOLD}_within_batch']}/{s['n_different_within_batch']}",
                f"{s[f'different_at_{THRESHOLD}_across_batch']}/{s['n_different_across_batch']}",
                f"{s[f'same_at_{THRESHOLD}']}/{s['n_same']}",
                _rule(s, f"{CHOSEN}>=5"),
                s["auc"]["cmc"],
                s["auc"][CHOSEN],
                s["auc"]["cmc_snorm"],
                s["auc"]["cell_corr_snorm"],
                s["auc_within_batch"]["cmc"],
                s["auc_within_batch"][CHOSEN],
                s["tpr_at_fpr"]["0.01"]["cmc"],
                s["tpr_at_fpr"]["0.01"][CHOSEN],
            ]
        )
    path = write_json("populations", out)
    _figure(out, RESULTS / "populations.png")
    print(
        table(
            rows,
            [
                "population",
                "KM",
                "KNM",
                f"KNM>={THRESHOLD} within",
                f"KNM>={THRESHOLD} across",
                f"KM>={THRESHOLD}",
                "excess>=5: KM, KNM within/across",
                "AUC cmc",
                "AUC excess",
                "AUC cmc s-norm",
                "AUC cell s-norm",
                "AUC cmc within",
                "AUC excess within",
                "TPR@FPR1% cmc",
                "TPR@FPR1% excess",
            ],
        )
    )
    print(
        f"\nexcess = {CHOSEN}: CMCs above the larger of the two exhibits' cohort medians (cohort: the exhibit's "
        f"comparisons with the other side's batch,\nleaving out the pair and its top score); 'within' = pairs "
        f"of one scanning batch.\nwrote {path}"
    )
    return 0


def _figure(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["populations"])
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6.5), squeeze=False)
    groups = [
        ("same gun, same batch", True, True, "tab:green"),
        ("same gun, other batch", True, False, "tab:olive"),
        ("different gun, same batch", False, True, "tab:red"),
        ("different gun, other batch", False, False, "tab:blue"),
    ]
    for col, name in enumerate(names):
        recs = [r for r in out["pairs"] if r["population"] == name]
        for row, key in enumerate(("cmc", CHOSEN)):
            ax = axes[row, col]
            for label, same, within, c in groups:
                v = [r[key] for r in recs if r["same_gun"] == same and r["same_batch"] == within and r[key] is not None]
                if v:
                    ax.hist(v, bins=np.arange(min(v) - 0.5, max(v) + 1.5, 1.0), alpha=0.55, color=c, label=label)
            if key == "cmc":
                ax.axvline(THRESHOLD - 0.5, color="k", lw=0.8, ls="--")
            ax.set_title(f"{name}: {'raw CMC' if key == 'cmc' else key}", fontsize=9)
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
