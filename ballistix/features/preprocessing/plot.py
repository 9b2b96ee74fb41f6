"""`plot_preprocess`: a figure of every preprocessing step."""

from __future__ import annotations

import numpy as np

from ...scan import Scan
from .pipeline import preprocess

__all__ = ["plot_preprocess"]


def plot_preprocess(scan: Scan, *, fig=None, **params):
    """Figure of every preprocessing step: raw scan with the fitted circles, mask, levelled,
    outliers removed, band-passed, final.

    Parameters
    ----------
    scan : Scan
    fig : matplotlib Figure, optional
    **params
        Passed to `preprocess`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    out, d = preprocess(scan, diagnostics=True, **params)
    if fig is None:
        fig = plt.figure(figsize=(15, 9.5))
    axs = fig.subplots(2, 3).ravel()
    dx, dy = scan.dx, scan.dy
    ny, nx = scan.shape
    ext = (0, nx * dx * 1e3, ny * dy * 1e3, 0)
    # after a block_average the steps work on a coarser grid whose first point lies at origin_m
    (wdx, wdy), (x0, y0) = (dx, dy), (0.0, 0.0)
    for st in out.meta["processing"][len(scan.meta.get("processing") or []) :]:
        if st.get("step") == "block_average":
            (wdx, wdy), (x0, y0) = st["result"]["spacing_m"], st["result"]["origin_m"]
    wny, wnx = d["masked"].shape
    wext = (0, wnx * wdx * 1e3, wny * wdy * 1e3, 0)

    def show(ax, a, title, extent=wext, sym=False):
        v = a[np.isfinite(a)] * 1e6
        lo, hi = np.percentile(v, [1, 99]) if v.size else (0, 1)
        if sym:
            lim = max(abs(lo), abs(hi))
            lo, hi = -lim, lim
        im = ax.imshow(a * 1e6, cmap="viridis", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.75, label="um")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (mm)")

    reg = d["region"]
    show(axs[0], scan.heights, "raw, fitted circles", extent=ext)
    if reg is not None:
        t = np.linspace(0, 2 * np.pi, 361)
        circles = [
            (reg.primer_center_m, reg.primer_radius_m, "w:", "primer edge"),
            (reg.primer_center_m, reg.outer_radius_m, "r-", f"outer ({reg.outer_edge})"),
        ]
        if reg.aperture_center_m is not None:
            circles += [
                (reg.aperture_center_m, reg.aperture_radius_m, "m--", "aperture"),
                (reg.aperture_center_m, reg.inner_radius_m, "r-", f"inner ({reg.inner_edge})"),
            ]
        if reg.crater_center_m is not None:
            circles += [(reg.crater_center_m, reg.crater_radius_m, "c:", "crater")]
        for c, rad, style, lab in circles:
            axs[0].plot(
                (x0 + c[0] + rad * np.cos(t)) * 1e3, (y0 + c[1] + rad * np.sin(t)) * 1e3, style, lw=1, label=lab
            )
        axs[0].legend(fontsize=6, loc="lower right")
        axs[1].imshow(reg.mask, cmap="gray", extent=wext, interpolation="nearest")
        axs[1].set_title(f"breech-face mask ({100 * reg.mask.mean():.1f} % of grid)", fontsize=9)
    else:
        axs[1].imshow(~np.isnan(d["masked"]), cmap="gray", extent=wext, interpolation="nearest")
        axs[1].set_title("mask (given)", fontsize=9)
    show(axs[2], d["levelled"], "levelled")
    show(axs[3], d["cleaned"], f"outliers removed ({int(d['outliers'].sum())} points)")
    r0, c0 = d["crop_origin_px"]
    fy, fx = d["filtered"].shape
    cext = (c0 * wdx * 1e3, (c0 + fx) * wdx * 1e3, (r0 + fy) * wdy * 1e3, r0 * wdy * 1e3)
    show(axs[4], d["filtered"], "band-passed", extent=cext, sym=True)
    oy, ox = out.shape
    show(
        axs[5],
        out.heights.astype(np.float64),
        f"final {oy}x{ox} at {out.dx * 1e6:.4g} um",
        sym=True,
        extent=(0, ox * out.dx * 1e3, oy * out.dy * 1e3, 0),
    )
    fig.suptitle(repr(scan)[1:-1], fontsize=10, parse_math=False, usetex=False)  # a file name, as typed
    fig.tight_layout()
    return fig
