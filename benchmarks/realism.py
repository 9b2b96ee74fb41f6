"""Simulator realism: simulated cartridge cases against the real Fadul scans.

Processed breech faces: RMS height, distribution shape (Pearson kurtosis,
skewness, tail ratio) and autocorrelation length after the same 16-500 um
Gaussian band-pass at 6.25 um. Raw scans: missing-data fraction, crater core
radius, primer edge radius, relief, flowback-ring height, all measured the
same way on real and simulated scans (no ground truth used). Firing-pin
impression and aperture shear (issue 19), from `find_breech_face` on the raw
scans: crater hole and aperture radii, the flowback lip's height, the slope
where the crater's measured wall ends, how deep into the crater the instrument
still saw, and how far an aperture shear reaches beyond the aperture circle; for
the default crater ("v1") and the opt-in realistic one (``crater="realistic"``,
the same guns and shots otherwise).

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
PIN_KEYS = [
    "hole_radius_mm",
    "aperture_radius_mm",
    "lip_height_um",
    "edge_slope_deg",
    "deepest_seen_um",
    "shear_extension_max_mm",
    "shear_extension_share",
]


def pin_stats(scan: bx.Scan, *, bin_um: float = 25.0) -> dict | None:
    """The firing-pin impression and aperture shear of a raw scan (real or simulated), as the breech-face
    search sees them (no ground truth used); None when it finds no crater or aperture.

    ``hole_radius_mm`` and ``aperture_radius_mm``: the fitted crater (the hole of missing data) and
    aperture circles; heights are taken about the crater centre relative to the face 1.35-1.6 mm out, in
    ``bin_um`` rings (``profile_um``, the median of each): ``lip_height_um`` is the flowback's highest ring
    between hole and aperture, ``edge_slope_deg`` the slope over the first 50 um outside the hole (how steep
    the wall is where the measurement stops), ``deepest_seen_um`` the deepest measured point within 50 um
    of the hole's edge, below the face; ``shear_extension_max_mm`` and ``shear_extension_share`` how far and
    on what share of the rays the impression goes on beyond the aperture circle (an aperture shear that
    pushed primer metal out, or a drag mark)."""
    from ballistix.features.preprocessing import find_breech_face

    reg = find_breech_face(scan)
    if reg.crater_center_m is None or reg.aperture_center_m is None:
        return None
    ny, nx = scan.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot(xx * scan.dx - reg.crater_center_m[0], yy * scan.dy - reg.crater_center_m[1])
    z, v = scan.heights, scan.valid_mask
    face = np.median(z[v & (r > 1.35e-3) & (r < 1.6e-3)])
    edges = np.arange(0, 1.6e-3 + 1e-9, bin_um * 1e-6)
    idx = np.digitize(r, edges) - 1
    prof = np.array(
        [np.median(z[v & (idx == i)]) - face if (v & (idx == i)).sum() > 20 else np.nan for i in range(len(edges) - 1)]
    )
    hole, mids = reg.crater_radius_m, (edges[:-1] + edges[1:]) / 2
    i0 = np.nonzero((mids > hole) & ~np.isnan(prof))[0][0]
    slope = (prof[i0 + 2] - prof[i0]) / (mids[i0 + 2] - mids[i0])
    near = v & (r < hole + 50e-6)
    ext = reg.pin_extension_m
    return {
        "hole_radius_mm": hole * 1e3,
        "aperture_radius_mm": reg.aperture_radius_m * 1e3,
        "lip_height_um": float(np.nanmax(prof[(mids > hole) & (mids < reg.aperture_radius_m)])) * 1e6,
        "edge_slope_deg": float(np.rad2deg(np.arctan(abs(slope)))),
        "deepest_seen_um": float((face - np.min(z[near])) * 1e6) if near.any() else float("nan"),
        "shear_extension_max_mm": float(ext.max() * 1e3) if ext.size else 0.0,
        "shear_extension_share": float((ext > 50e-6).mean()) if ext.size else 0.0,
        "profile_um": [round(float(p), 2) for p in prof * 1e6],
    }


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


def real_pin_stats(data: Path = SHARED_DATA) -> dict:
    return {f.stem: pin_stats(bx.read_scan(f)) for f in sorted((data / "fadul-raw").glob("*.x3p"))}


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
    fadul_run = dict(seed=args.seed + 1, difficulty=args.difficulty, models=["Ruger P95"], run_size=args.guns)
    sets = {
        "mixed models": bx.datasets.simulate(args.guns, args.shots, seed=args.seed, difficulty=args.difficulty),
        "Fadul-like (one run of Ruger P95 slides)": bx.datasets.simulate(args.guns, args.shots, **fadul_run),
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
    # firing-pin impression and aperture shear: the real raw scans against the Fadul-like simulated Ruger P95s,
    # with the default (v1) crater and the realistic one (the same guns and shots otherwise)
    real_pin = real_pin_stats()
    sim_scans = sets["Fadul-like (one run of Ruger P95 slides)"]
    realistic_scans = bx.datasets.simulate(args.guns, args.shots, crater="realistic", **fadul_run)
    out["firing_pin"] = {
        "real": real_pin,
        "real_summary": summarise([st for st in real_pin.values() if st], PIN_KEYS),
        "simulated_with_shear": sum(s.meta["truth"]["aperture_shear"]["present"] for s in sim_scans),
    }
    for crater, scans in (("v1", sim_scans), ("realistic", realistic_scans)):
        found = [st for st in (pin_stats(s) for s in scans) if st is not None]
        key = "simulated" if crater == "v1" else "simulated_realistic"
        out["firing_pin"][f"{key}_summary"] = summarise(found, PIN_KEYS)
        out["firing_pin"][f"n_{key}"] = len(found)
    fp = out["firing_pin"]
    pin_rows = []
    for k in PIN_KEYS:
        r, v1, re = (fp[f"{x}_summary"][k]["median"] for x in ("real", "simulated", "simulated_realistic"))
        pin_rows.append([k, r, v1, re, re / r if r else float("nan")])
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
    print("\nfiring-pin impression and aperture shear (raw scans, as find_breech_face sees them)")
    print(
        table(
            pin_rows,
            ["statistic (median)", "real raw Fadul", "Ruger P95 (v1 crater)", "realistic crater", "realistic/real"],
        )
    )
    print(f"\nwrote {path} and {RESULTS / 'realism.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
