"""Decisions on populations they were not fitted on: false links and missed links.

    python -m benchmarks.cross_population [--quick] [--jobs 2] [--kinds batch photometric subclass ordinary]

A decision rule chosen on one population and applied to another is what a
lab does whenever its casework differs from its validation set. For each
population P (the real Fadul scans when present, and the simulated
populations of `ballistix.datasets.populations`, all pairs compared by
``benchmarks.populations``, cached), every rule below decides every pair of
P as "link" or "no link", and the benchmark counts false links
(different-gun pairs linked) and missed links (same-gun pairs not linked):

- ``6 CMC``: the fixed count rule that 0.2 used everywhere;
- ``shipped LR>=100``: the shipped default calibration (fitted on Fadul and
  other simulated populations: for Fadul it is *seen* data);
- ``shipped cohort LR>=100``: the shipped cohort calibration, a store's
  default where exhibits have backgrounds (fitted on every population here
  but the held-out ``batch-moderate``, `HELD_OUT`);
- ``pair LR>=100, P unseen``: a pair calibration fitted on every population
  but P (each weighing the same), applied to P;
- ``cohort LR>=100, P unseen``: the same with the cohort feature (each
  pair's count above both exhibits' backgrounds in their population, within
  the other exhibit's scanning batch; `ballistix.cohort.normalise_pairs`).

The headline is the false-link rate on populations the rule has not seen.
Writes benchmarks/results/cross_population.json and prints a table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from ballistix import evidence as ev  # noqa: E402
from ballistix.cohort import normalise_pairs  # noqa: E402
from ballistix.evaluation import lr  # noqa: E402
from ballistix.evaluation.lr import _upper95  # noqa: E402
from ballistix.graph.linkage import CONVENTIONAL_CMC_RULE, LINK_LR  # noqa: E402

from ._common import ROOT, table, write_json  # noqa: E402
from .populations import SIZES, fadul_population, population_pairs  # noqa: E402

#: cohort settings of the cohort rule and of the shipped cohort calibration: an exhibit's background is
#: the median of its CMC counts against the exhibits of the other side's scanning batch, leaving out
#: the pair itself and its highest count (an unknown same-gun mate); at least 3 counts (batches of a
#: handful of scans). An exhibit whose background reaches ``max_background`` CMCs shares that many
#: congruent cells with guns that did not fire it (an impression drowned in instrument artefacts, or
#: marks shared by a whole manufacturing run): it does not discriminate in its population, and its
#: pairs get no LR at all (candidates for an examiner). On the simulated populations any limit from 5 to
#: 10 gives the same decisions (discriminating exhibits have backgrounds of 0-2 CMCs, the drowned ones
#: 14 or more; from 12 up the drowned ones enter the fit and it links nothing): 8 lies between the two.
COHORT = {"exclude_top": 1, "min_size": 3, "quantile": 0.5, "by_batch": True, "max_background": 8.0}
LINK_LOG10 = math.log10(LINK_LR)
COUNT_RULE = f"{CONVENTIONAL_CMC_RULE} CMC"  # the fixed rule of 0.2, set on Fadul
#: populations never used to fit a shipped calibration: unseen by every rule, the check of the default
HELD_OUT = ("batch-moderate",)


def arrays(d: dict) -> dict:
    """Features, truth, guns and cohort excess of one population's pairs."""
    sc, pairs = d["scans"], np.array(d["pairs"], int).reshape(-1, 2)
    X = np.array(d["features"], float).reshape(-1, len(ev.FEATURES))
    ga = [f"{sc[i]['firearm']}" for i in pairs[:, 0]]
    gb = [f"{sc[j]['firearm']}" for j in pairs[:, 1]]
    kw = {k: COHORT[k] for k in ("exclude_top", "min_size", "quantile")}
    excess, st = normalise_pairs(
        [sc[i]["exhibit"] for i in pairs[:, 0]],
        [sc[j]["exhibit"] for j in pairs[:, 1]],
        X[:, 0],
        keys_a=[sc[i]["batch"] for i in pairs[:, 0]],
        keys_b=[sc[j]["batch"] for j in pairs[:, 1]],
        method="excess",
        return_stats=True,
        **kw,
    )
    background = np.fmax([s.location for s in st["a"]], [s.location for s in st["b"]])
    excess = np.where(background >= COHORT["max_background"], np.nan, excess)  # not discriminating: no LR
    within = np.array([sc[i]["batch"] == sc[j]["batch"] for i, j in pairs])
    return {
        "X": X,
        "same": np.array([a == b for a, b in zip(ga, gb)]),
        "gun_a": ga,
        "gun_b": gb,
        "excess": excess,
        "background": background,
        "within_batch": within,
    }


def _fit(pops, names, cohort: bool, **kw):
    """A calibration fitted on the named populations, each weighing the same within each class (on the
    pairs that have the feature: a cohort calibration leaves out pairs without a usable background)."""
    names = [n for n in names if not cohort or (np.isfinite(pops[n]["excess"]) & pops[n]["same"]).any()]
    X = np.concatenate([pops[n]["excess"][:, None] if cohort else pops[n]["X"] for n in names])
    same = np.concatenate([pops[n]["same"] for n in names])
    ok = np.isfinite(X).all(axis=1)
    w = []
    for n in names:
        s, f = pops[n]["same"], np.isfinite(pops[n]["excess"]) if cohort else np.ones(len(pops[n]["same"]), bool)
        w.append(np.where(s, 1.0 / max(1, (s & f).sum()), 1.0 / max(1, (~s & f).sum())))
    return ev.fit(
        X[ok], same[ok], sample_weight=np.concatenate(w)[ok], features=["cmc_excess"] if cohort else None, **kw
    )


def decide(pops: dict[str, dict]) -> dict:
    shipped = ev.default_calibration()
    cohort = next((c for c in ev.shipped_calibrations() if c.needs_cohort), None)
    out = {}
    for p, d in pops.items():
        others = [n for n in pops if n != p]
        rules = {
            COUNT_RULE: d["X"][:, 0] >= CONVENTIONAL_CMC_RULE,
            "shipped LR>=100": shipped.log10_lr(d["X"]) >= LINK_LOG10,
        }
        if cohort is not None:  # a store's default where exhibits have backgrounds
            ok = np.isfinite(d["excess"])
            link = np.zeros(len(ok), bool)
            link[ok] = cohort.log10_lr(d["excess"][ok][:, None]) >= LINK_LOG10
            rules["shipped cohort LR>=100"] = link
        if others:
            rules["pair LR>=100, P unseen"] = _fit(pops, others, False).log10_lr(d["X"]) >= LINK_LOG10
            cal = _fit(pops, others, True)
            ok = np.isfinite(d["excess"])
            link = np.zeros(len(ok), bool)
            link[ok] = cal.log10_lr(d["excess"][ok][:, None]) >= LINK_LOG10
            rules["cohort LR>=100, P unseen"] = link
        same = d["same"]
        out[p] = {}
        for name, link in rules.items():
            fl, nd = int((link & ~same).sum()), int((~same).sum())
            ml, ns = int((~link & same).sum()), int(same.sum())
            out[p][name] = {
                "false_links": fl,
                "n_different": nd,
                "false_link_rate": fl / nd if nd else None,
                "false_link_upper95": _upper95(fl, nd) if nd else None,
                "missed_links": ml,
                "n_same": ns,
                "linked_same_share": (ns - ml) / ns if ns else None,
                "false_links_within_batch": int((link & ~same & d["within_batch"]).sum()),
            }
    return out


def write_cohort(pops: dict[str, dict], raw: dict[str, dict]) -> dict:
    """Fit the shipped cohort calibration on every population (each weighing the same within each class)
    and write it, with its cohort settings and its decisions on each population (in-sample)."""
    from ballistix.evidence import cross_validate

    from .evidence import DOMAINS, fadul_pairs

    names = [n for n in pops if n not in HELD_OUT]
    fadul = fadul_pairs(1)  # cached: the preprocessing and comparison parameters of the reference pairs
    desc = "; ".join(
        f"{n}: {raw[n]['description']} ({int(pops[n]['same'].sum())} same-gun, "
        f"{int((~pops[n]['same']).sum())} different-gun pairs)"
        for n in names
    )
    cal = _fit(
        pops,
        names,
        True,
        name=f"ballistix cohort {__import__('ballistix').__version__}",
        description=desc,
        preprocessing=fadul["preprocessing"],
        comparison=fadul["comparison"],
        domain=DOMAINS["default"],
        extra_reference={"cohort": COHORT, "populations": {n: {"n_pairs": int(len(pops[n]["same"]))} for n in names}},
    )
    X = np.concatenate([pops[n]["excess"] for n in names])
    same = np.concatenate([pops[n]["same"] for n in names])
    ga = np.concatenate([[f"{n}:{g}" for g in pops[n]["gun_a"]] for n in names])
    gb = np.concatenate([[f"{n}:{g}" for g in pops[n]["gun_b"]] for n in names])
    ok = np.isfinite(X)
    llr = cross_validate(X[ok][:, None], same[ok], ga[ok], gb[ok], features=["cmc_excess"])
    cal.performance = {
        "cross_validation": "10 folds of guns over all populations (pairs with a background)",
        "cllr": lr.cllr(llr, same[ok]),
        "cllr_min": lr.cllr_min(llr, same[ok]),
        "misleading": lr.misleading(llr, same[ok]),
        "conclusions": lr.conclusion_rates(llr, same[ok]),
    }
    path = cal.save(ROOT / "ballistix" / "data" / "calibration_cohort.json")
    ev._SHIPPED = None  # the store runs below read the file just written ...
    ev.SHIPPED_SHA256[path.name] = cal.sha256  # ... which the code must pin: see the line printed below
    print(f"pin it in ballistix/evidence.py: SHIPPED_SHA256[{path.name!r}] = {cal.sha256!r}")
    thr = next((e for e in np.arange(-5, 60, 0.5) if cal.log10_lr(np.array([[e]]))[0] >= LINK_LOG10), None)
    print(f"wrote {path}: LR 100 at {thr} CMCs above the background; bounds {cal.bounds_log10}")
    return {
        "path": str(path.relative_to(ROOT)),
        "bounds_log10": cal.bounds_log10,
        "coef": cal.coef,
        "excess_for_lr_100": thr,
        "cllr_cv": cal.performance["cllr"],
    }


def store_check(
    kind: str, guns: int, shots: int, batches: int, seed: int, resolution: str, shortlist: int, jobs: int
) -> dict:
    """The product itself on one simulated population: ingest every scan into a case store (with its
    scanning batch), link with the store's shortlist, and count the false and missed links of the
    store's graph under its default rule (the shipped calibrations, cohort where the store has the
    backgrounds)."""
    import tempfile
    import time

    import ballistix as bx

    scans = bx.datasets.simulate_population(kind, guns, shots, n_batches=batches, seed=seed, resolution=resolution)
    truth = {s.meta["labels"]["exhibit"]: s.meta["labels"]["firearm"] for s in scans}
    with tempfile.TemporaryDirectory() as tmp, bx.CaseStore(tmp, shortlist=shortlist) as st:
        t = time.perf_counter()
        st.ingest(
            scans,
            [{"exhibit_id": s.meta["labels"]["exhibit"], "batch": s.meta["labels"]["batch"]} for s in scans],
            progress=False,
        )
        n = st.link_new(n_jobs=jobs, progress=False)
        g = st.graph()
        seconds = time.perf_counter() - t
    edges = [(g.nx.nodes[u]["id"], g.nx.nodes[v]["id"], d) for u, v, d in g.nx.edges(data=True) if d["kind"] == "match"]
    links = [(a, b) for a, b, d in edges if g.is_link(d)]
    same_pairs = sum(1 for a in truth for b in truth if a < b and truth[a] == truth[b])
    grouped = {frozenset((a, b)) for grp in g.groups(min_size=2) for a in grp for b in grp if a < b}
    return {
        "kind": kind,
        "exhibits": len(scans),
        "comparisons": n,
        "shortlist": shortlist,
        "seconds": seconds,
        "false_links": sum(truth[a] != truth[b] for a, b in links),
        "links": len(links),
        "same_gun_pairs": same_pairs,
        "same_gun_pairs_grouped": sum(truth[a] == truth[b] for a, b in map(tuple, grouped)),
        "different_gun_pairs_grouped": sum(truth[a] != truth[b] for a, b in map(tuple, grouped)),
        "lr_basis": {
            k: sum(1 for *_, d in edges if str(d.get("lr_basis", "pair")).split(":")[0] == k)
            for k in ("cohort", "withheld", "pair")
        },
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="half the guns of each simulated population")
    p.add_argument("--kinds", nargs="*", default=list(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", default="standard")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument(
        "--store",
        nargs="*",
        default=[],
        metavar="KIND",
        help="also run these simulated populations through a case store (ingest, link, graph)",
    )
    p.add_argument("--shortlist", type=int, default=10, help="the store's shortlist in --store runs")
    p.add_argument(
        "--write-cohort",
        action="store_true",
        help="fit the shipped cohort calibration on all populations (needs Fadul) and write it to "
        "ballistix/data/calibration_cohort.json",
    )
    args = p.parse_args(argv)
    raw = {}
    f = None if args.skip_real else fadul_population()
    if f:
        raw["fadul"] = f
    for kind in args.kinds:
        guns, shots, batches = SIZES[kind]
        if args.quick:
            guns = max(3, guns // 2)
        raw[kind] = population_pairs(kind, guns, shots, batches, args.seed, args.resolution, args.jobs)
    pops = {n: arrays(d) for n, d in raw.items()}
    res = decide(pops)
    unseen = {}
    for rule in (
        COUNT_RULE,
        "shipped LR>=100",
        "shipped cohort LR>=100",
        "pair LR>=100, P unseen",
        "cohort LR>=100, P unseen",
    ):
        if rule == "shipped cohort LR>=100":  # fitted on every population but the held-out ones
            cells = [(n, r[rule]) for n, r in res.items() if rule in r and n in HELD_OUT]
        else:  # the fixed rule was set on Fadul, the shipped pair calibration fitted on it
            cells = [
                (n, r[rule])
                for n, r in res.items()
                if rule in r and not (rule in (COUNT_RULE, "shipped LR>=100") and n == "fadul")
            ]
        fl, nd = sum(c["false_links"] for _, c in cells), sum(c["n_different"] for _, c in cells)
        ml, ns = sum(c["missed_links"] for _, c in cells), sum(c["n_same"] for _, c in cells)
        unseen[rule] = {
            "populations": [n for n, _ in cells],
            "false_links": fl,
            "n_different": nd,
            "false_link_rate": fl / nd if nd else None,
            "false_link_upper95": _upper95(fl, nd) if nd else None,
            "linked_same_share": (ns - ml) / ns if ns else None,
        }
    out = {
        "params": {**vars(args), "cohort": COHORT, "link_lr": 10**LINK_LOG10},
        "populations": {
            n: {
                "description": raw[n]["description"],
                "n_pairs": int(len(pops[n]["same"])),
                "n_same": int(pops[n]["same"].sum()),
            }
            for n in pops
        },
        "decisions": res,
        "unseen": unseen,
    }
    if args.write_cohort and "fadul" in pops:
        out["shipped_cohort"] = write_cohort(pops, raw)
    out["store"] = {}
    for kind in args.store:
        guns, shots, batches = SIZES[kind]
        out["store"][kind] = store_check(
            kind, guns, shots, batches, args.seed, args.resolution, args.shortlist, args.jobs
        )
    path = write_json("cross_population", out)
    rows = [
        [
            n,
            rule,
            f"{c['false_links']} / {c['n_different']}",
            c["false_links_within_batch"],
            f"{c['n_same'] - c['missed_links']} / {c['n_same']}",
        ]
        for n, r in res.items()
        for rule, c in r.items()
    ]
    print(table(rows, ["population", "rule", "false links", "of them within a batch", "same-gun linked"]))
    print("\non populations each rule has not seen (headline):")
    print(
        table(
            [
                [rule, f"{u['false_links']} / {u['n_different']}", u["false_link_upper95"], u["linked_same_share"]]
                for rule, u in unseen.items()
            ],
            ["rule", "false links", "95% upper bound of the rate", "share of same-gun pairs linked"],
        )
    )
    if out["store"]:
        print("\nthrough a case store (default rule; groups against the truth):")
        print(
            table(
                [
                    [
                        k,
                        r["exhibits"],
                        r["comparisons"],
                        f"{r['false_links']} of {r['links']}",
                        f"{r['same_gun_pairs_grouped']} / {r['same_gun_pairs']}",
                        r["different_gun_pairs_grouped"],
                        ", ".join(f"{a} {b}" for a, b in r["lr_basis"].items()),
                    ]
                    for k, r in out["store"].items()
                ],
                [
                    "population",
                    "exhibits",
                    "comparisons",
                    "false links",
                    "same-gun pairs grouped",
                    "different-gun pairs grouped",
                    "LR basis of the comparisons",
                ],
            )
        )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
