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
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from ballistix import evidence as ev  # noqa: E402
from ballistix.cohort import normalise_pairs  # noqa: E402
from ballistix.evidence import _upper95  # noqa: E402

from ._common import table, write_json  # noqa: E402
from .populations import SIZES, fadul_population, population_pairs  # noqa: E402

#: cohort settings of the cohort rule (and of a shipped cohort calibration): leave out each exhibit's
#: 3 highest scores (its unknown same-gun mates), need 5 scores left
COHORT = {"exclude_top": 3, "min_size": 5, "quantile": 0.5, "by_batch": True}
LINK_LOG10 = 2.0


def arrays(d: dict) -> dict:
    """Features, truth, guns and cohort excess of one population's pairs."""
    sc, pairs = d["scans"], np.array(d["pairs"], int).reshape(-1, 2)
    X = np.array(d["features"], float).reshape(-1, len(ev.FEATURES))
    ga = [f"{sc[i]['firearm']}" for i in pairs[:, 0]]
    gb = [f"{sc[j]['firearm']}" for j in pairs[:, 1]]
    kw = {k: COHORT[k] for k in ("exclude_top", "min_size", "quantile")}
    excess = normalise_pairs([sc[i]["exhibit"] for i in pairs[:, 0]], [sc[j]["exhibit"] for j in pairs[:, 1]],
                             X[:, 0], keys_a=[sc[i]["batch"] for i in pairs[:, 0]],
                             keys_b=[sc[j]["batch"] for j in pairs[:, 1]], method="excess", **kw)
    within = np.array([sc[i]["batch"] == sc[j]["batch"] for i, j in pairs])
    return {"X": X, "same": np.array([a == b for a, b in zip(ga, gb)]), "gun_a": ga, "gun_b": gb,
            "excess": excess, "within_batch": within}


def _weights(pops: dict[str, dict], names: list[str]) -> np.ndarray:
    """Each population weighs the same within each class."""
    w = []
    for n in names:
        s = pops[n]["same"]
        w.append(np.where(s, 1.0 / max(1, s.sum()), 1.0 / max(1, (~s).sum())))
    return np.concatenate(w)


def _fit(pops, names, cohort: bool):
    X = np.concatenate([pops[n]["excess"][:, None] if cohort else pops[n]["X"] for n in names])
    same = np.concatenate([pops[n]["same"] for n in names])
    w = _weights(pops, names)
    ok = np.isfinite(X).all(axis=1)
    return ev.fit(X[ok], same[ok], sample_weight=w[ok], features=["cmc_excess"] if cohort else None)


def decide(pops: dict[str, dict]) -> dict:
    shipped = ev.default_calibration()
    out = {}
    for p, d in pops.items():
        others = [n for n in pops if n != p]
        rules = {"6 CMC": d["X"][:, 0] >= 6,
                 "shipped LR>=100": shipped.log10_lr(d["X"]) >= LINK_LOG10}
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
            out[p][name] = {"false_links": fl, "n_different": nd, "false_link_rate": fl / nd if nd else None,
                            "false_link_upper95": _upper95(fl, nd) if nd else None,
                            "missed_links": ml, "n_same": ns, "linked_same_share": (ns - ml) / ns if ns else None,
                            "false_links_within_batch": int((link & ~same & d["within_batch"]).sum())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="half the guns of each simulated population")
    p.add_argument("--kinds", nargs="*", default=list(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", default="standard")
    p.add_argument("--skip-real", action="store_true")
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
    for rule in ("6 CMC", "shipped LR>=100", "pair LR>=100, P unseen", "cohort LR>=100, P unseen"):
        cells = [(n, r[rule]) for n, r in res.items() if rule in r and not (rule in ("6 CMC", "shipped LR>=100") and n == "fadul")]
        fl, nd = sum(c["false_links"] for _, c in cells), sum(c["n_different"] for _, c in cells)
        ml, ns = sum(c["missed_links"] for _, c in cells), sum(c["n_same"] for _, c in cells)
        unseen[rule] = {"populations": [n for n, _ in cells], "false_links": fl, "n_different": nd,
                        "false_link_rate": fl / nd if nd else None, "false_link_upper95": _upper95(fl, nd) if nd else None,
                        "linked_same_share": (ns - ml) / ns if ns else None}
    out = {"params": {**vars(args), "cohort": COHORT, "link_lr": 10 ** LINK_LOG10},
           "populations": {n: {"description": raw[n]["description"], "n_pairs": int(len(pops[n]["same"])),
                               "n_same": int(pops[n]["same"].sum())} for n in pops},
           "decisions": res, "unseen": unseen}
    path = write_json("cross_population", out)
    rows = [[n, rule, f"{c['false_links']} / {c['n_different']}", c["false_links_within_batch"],
             f"{c['n_same'] - c['missed_links']} / {c['n_same']}"]
            for n, r in res.items() for rule, c in r.items()]
    print(table(rows, ["population", "rule", "false links", "of them within a batch", "same-gun linked"]))
    print("\non populations each rule has not seen (headline):")
    print(table([[rule, f"{u['false_links']} / {u['n_different']}", u["false_link_upper95"], u["linked_same_share"]]
                 for rule, u in unseen.items()],
                ["rule", "false links", "95% upper bound of the rate", "share of same-gun pairs linked"]))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
