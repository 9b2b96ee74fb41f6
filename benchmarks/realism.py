"""Simulator realism: simulated cartridge cases against the real Fadul scans.

Processed breech faces: RMS height, distribution shape (Pearson kurtosis,
skewness, tail ratio) and autocorrelation length after the same 16-500 um
Gaussian band-pass at 6.25 um. Raw scans: missing-data fraction, crater core
radius, primer edge radius, relief, flowback-ring height, all measured the
same way on real and simulated scans (no ground truth used).

    python -m benchmarks.realism [--guns 10] [--shots 2] [--seed 0]

Writes benchmarks/results/realism.json and realism.png, prints a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import ballistix as bx
from ballistix.evaluation.realism import fadul_like, raw_scan_stats, surface_stats, truth_breech_face
from ballistix.features.filters import gaussian_bandpass

from ._common import RESULTS, SHARED_DATA, table, write_json

TEXTURE_KEYS = ["rms_um", "kurtosis", "skewness", "tail_ratio", "acf_length_um"]
RAW_KEYS = ["missing_fraction", "crater_core_radius_mm", "outer_radius_mm", "relief_um", "ring_height_um"]


def texture_stats(z: np.ndarray, spacing_m: float) -> dict:
    st = surface_stats(z, spacing_m)
    st["kurtosis"] = st.pop("excess_kurtosis") + 3.0  # Pearson: ratios are meaningful
    return st


def real_stats(data: Path = SHARED_DATA):
    tex = []
    for f in sorted((data / "fadul").glob("*.x3p")):
        s = bx.read_scan(f)
        tex.append(texture_stats(gaussian_bandpass(s.heights, s.dx), s.dx))
    raw = [raw_scan_stats(bx.read_scan(f)) for f in sorted((data / "fadul-raw").glob("*.x3p"))]
    return tex, raw


def sim_stats(scans):
    tex = [texture_stats(fadul_like(s, truth_breech_face(s)), 6.25e-6) for s in scans]
    raw = [raw_scan_stats(s) for s in scans]
    return tex, raw


def summarise(rows, keys):
    return {
        k: {
            "median": float(np.nanmedian([r[k] for r in rows])),
            "p10": float(np.nanpercentile([r[k] for r in rows], 10)),
            "p90": float(np.nanpercentile([r[k] for r in rows], 90)),
        }
        for k in keys
    }


def figure(real_raw, real_proc, sims, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = sims[0]
    sim_proc = fadul_like(sim, truth_breech_face(sim))
    fig, ax = plt.subplots(2, 3, figsize=(15, 9.5))
    for a, s, t in (
        (ax[0, 0], real_raw, "real raw: " + Path(real_raw.meta["source"]).name),
        (ax[0, 1], sim, f"simulated raw: {sim.meta['labels']['exhibit']} ({sim.meta['labels']['model']})"),
    ):
        im = a.imshow(s.heights * 1e6, cmap="viridis", extent=(0, s.extent_m[0] * 1e3, s.extent_m[1] * 1e3, 0))
        fig.colorbar(im, ax=a, shrink=0.8, label="height (um)")
        a.set_title(t, fontsize=9)
        a.set_xlabel("mm")
    for a, z, t in (
        (ax[1, 0], real_proc.heights, "real processed (CSAFE), band-passed"),
        (ax[1, 1], sim_proc, "simulated, same treatment"),
    ):
        lim = np.nanpercentile(np.abs(z), 99) * 1e6
        im = a.imshow(
            z * 1e6, cmap="gray", vmin=-lim, vmax=lim, extent=(0, z.shape[1] * 6.25e-3, z.shape[0] * 6.25e-3, 0)
        )
        fig.colorbar(im, ax=a, shrink=0.8, label="height (um)")
        a.set_title(t, fontsize=9)
        a.set_xlabel("mm")
    # radial valid-data profile
    a = ax[0, 2]
    for s, c, lab in ((real_raw, "k", "real"), (sim, "tab:orange", "simulated")):
        st = raw_scan_stats(s)
        e = np.array(st["radius_bins_mm"])
        a.plot((e[:-1] + e[1:]) / 2, st["valid_by_radius"], color=c, label=lab)
    a.set_xlabel("distance from crater centre (mm)")
    a.set_ylabel("share of points measured")
    a.legend()
    a.set_title("missing-data pattern", fontsize=9)
    # height distributions
    a = ax[1, 2]
    zr = gaussian_bandpass(real_proc.heights, real_proc.dx)
    for z, c, lab in ((zr, "k", "real"), (sim_proc, "tab:orange", "simulated")):
        v = z[~np.isnan(z)] * 1e6
        a.hist(v, bins=np.linspace(-8, 8, 161), density=True, histtype="step", color=c, label=lab)
    a.set_yscale("log")
    a.set_xlabel("band-passed height (um)")
    a.legend()
    a.set_title("height distribution", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guns", type=int, default=10)
    p.add_argument("--shots", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", default="realistic")
    args = p.parse_args(argv)
    if not (SHARED_DATA / "fadul").is_dir():
        print(f"skipped: real scans not found at {SHARED_DATA}")
        return 0
    real_tex, real_raw = real_stats()
    sets = {
        "mixed models": bx.datasets.simulate(args.guns, args.shots, seed=args.seed, difficulty=args.difficulty),
        "Fadul-like (one run of Ruger P95 slides)": bx.datasets.simulate(
            args.guns,
            args.shots,
            seed=args.seed + 1,
            difficulty=args.difficulty,
            models=["Ruger P95"],
            run_size=args.guns,
        ),
    }
    out = {
        "params": vars(args),
        "real": {
            "texture": summarise(real_tex, TEXTURE_KEYS),
            "raw": summarise(real_raw, RAW_KEYS),
            "n_processed": len(real_tex),
            "n_raw": len(real_raw),
        },
        "simulated": {},
    }
    rows = []
    for name, scans in sets.items():
        tex, raw = sim_stats(scans)
        out["simulated"][name] = {
            "texture": summarise(tex, TEXTURE_KEYS),
            "raw": summarise(raw, RAW_KEYS),
            "n": len(scans),
        }
    for group, keys in (("texture", TEXTURE_KEYS), ("raw", RAW_KEYS)):
        for k in keys:
            r = out["real"][group][k]["median"]
            row = [k, r]
            for name in sets:
                s = out["simulated"][name][group][k]["median"]
                # skewness is near zero on both: a ratio means nothing, report the difference
                row += [s, (s - r) if k == "skewness" else (s / r if r else float("nan"))]
            rows.append(row)
    out["ratios_sim_over_real"] = {name: {r[0]: r[3 + 2 * i] for r in rows} for i, name in enumerate(sets)}
    path = write_json("realism", out)
    figure(
        bx.read_scan(SHARED_DATA / "fadul-raw" / "fadul-1-1-raw.x3p"),
        bx.read_scan(SHARED_DATA / "fadul" / "fadul-1-1.x3p"),
        sets["Fadul-like (one run of Ruger P95 slides)"],
        RESULTS / "realism.png",
    )
    header = ["statistic (median)", "real"]
    for name in sets:
        header += [name.split(" (")[0], "sim/real"]
    print(table(rows, header))
    print("(skewness row: sim - real)")
    print(f"\nwrote {path} and {RESULTS / 'realism.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
