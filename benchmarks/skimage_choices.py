"""scikit-image against our own code: circle fits, the descriptor's polar resampling, Gaussian filters.

    python -m benchmarks.skimage_choices [--quick] [--skip-real] [--repeat 3]

Issue 16 asked whether scikit-image serves better than ballistix's own code
in three places; this measures both, on the real Fadul scans (processed and
raw) and on simulated scans (default view and whole case head):

1. Circle fits: `skimage.measure.ransac` with `CircleModel` (400 trials, the
   same inlier distance and plausible-radius check) against `fit_circle`
   (vectorised RANSAC, MSAC scoring, geometric refinement on the inliers),
   on the edge points `preprocess` itself hands to `fit_circle` (the primer
   edge, the crater, the aperture; the located primer in a case-head view):
   centre and radius difference, CPU time, the shift that 10 % / 30 % added
   outlier points cause, the error against the simulator's truth
   (``meta["truth"]``; not for fits inside a case-head window, whose origin
   moved), and the effect on `preprocess`'s output and on retrieval.
2. The descriptor's polar resampling (`describe`: cv2.remap of the power
   spectrum at 24 log-spaced radii x 256 angles) against
   `skimage.transform.warp_polar` (log radii: the nearest column to each of
   ours; linear radii at 1/8 frequency bin: the nearest column) and
   `skimage.transform.warp` at our exact sample points: CPU time, the
   descriptor's largest difference, whether it stays bit-identical (the
   golden tests pin descriptors by their bytes), NaN behaviour, and
   descriptor retrieval (top-1, R@10 of same-gun scans) on Fadul and simulated
   scans. Each variant runs the same `describe` with only its ``cv2.remap``
   call swapped.
3. Filters: `skimage.filters.gaussian` inside our normalised-weights
   (NaN-aware) low-pass, and `skimage.filters.difference_of_gaussians` as a
   drop-in for `gaussian_bandpass` (on zero-filled heights, and on heights
   with NaN), against `gaussian_bandpass`: CPU time, difference, points lost;
   and `preprocess` run with the skimage filter in place, bit for bit.

Also the cost of importing scikit-image. The decision per candidate, and why,
is printed at the end and written with the numbers to
benchmarks/results/skimage_choices.json. ``--quick`` (seconds) runs a few
scans of each kind for the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: CPU time is one-core time
    os.environ.setdefault(_v, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import ballistix as bx  # noqa: E402
from ballistix.features import describe as describe_module  # noqa: E402
from ballistix.features import filters as filters_module  # noqa: E402
from ballistix.features.filters import _sigma_px, gaussian_bandpass  # noqa: E402
from ballistix.features.preprocessing import firing_pin, locate, primer  # noqa: E402
from ballistix.features.preprocessing.circle import Circle, fit_circle  # noqa: E402
from ballistix.features.preprocessing.firing_pin import CRATER_MIN_RADIUS_M  # noqa: E402

from ._common import SHARED_DATA, table, write_json  # noqa: E402
from .retrieval import descriptor_rankings, recall_at  # noqa: E402

#: Shares of outlier points added to the edge points (of the final point set).
OUTLIER_SHARES = (0.1, 0.3)
#: Outliers fall uniformly in the square of this many fitted radii about the fitted centre.
OUTLIER_BOX_RADII = 1.5
#: RANSAC trials, both methods (fit_circle's default).
RANSAC_TRIALS = 400
#: Radial sampling of the dense linear warp_polar variant, in frequency bins.
DENSE_POLAR_BIN_STEP = 0.125
#: Band-pass cutoffs measured (the preprocess defaults, micrometres).
SHORT_CUTOFF_UM, LONG_CUTOFF_UM = 16.0, 250.0
#: Gaussian kernel truncation of `gaussian_lowpass`, in sigmas.
TRUNCATE_SIGMAS = 3.0


def _cpu(f, repeat: int):
    """Best of ``repeat`` runs of ``f``: (CPU seconds, result)."""
    best, out = np.inf, None
    for _ in range(repeat):
        c = time.process_time()
        out = f()
        best = min(best, time.process_time() - c)
    return best, out


def _stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return {"n": 0, "median": None, "max": None}
    return {"n": int(v.size), "median": float(np.median(v)), "max": float(v.max())}


# --- data -------------------------------------------------------------------------------------------------


def load_data(quick: bool, skip_real: bool) -> dict:
    """Raw scans by kind: ``fadul`` (processed by CSAFE), ``fadul-raw``, ``sim`` and ``sim-head`` (simulated)."""
    data = {}
    if not skip_real and (SHARED_DATA / "fadul").is_dir():
        names = sorted(p.stem for p in (SHARED_DATA / "fadul").glob("*.x3p"))
        if quick:
            names = ["fadul-1-1", "fadul-1-2", "fadul-2-1"]  # two guns: retrieval is measured too
        data["fadul"] = [bx.read_scan(SHARED_DATA / "fadul" / f"{n}.x3p") for n in names]
        if not quick:
            data["fadul-raw"] = [bx.read_scan(p) for p in sorted((SHARED_DATA / "fadul-raw").glob("*.x3p"))]
    guns, shots = (1, 2) if quick else (8, 3)
    data["sim"] = bx.datasets.simulate(n_firearms=guns, shots=shots, seed=0, resolution="fast")
    data["sim-head"] = bx.datasets.simulate(
        n_firearms=1 if quick else 3, shots=1, seed=1, resolution="fast", view="case_head"
    )
    return data


def labels_of(kind: str, scans) -> list[str]:
    """The firearm of each scan (Fadul: labels.csv; simulated: the scan's labels)."""
    if kind.startswith("fadul"):
        lab = {Path(r["file"]).stem: r["firearm"] for r in csv.DictReader(open(SHARED_DATA / "labels.csv"))}
        return [lab[Path(s.meta["source"]).stem] for s in scans]
    return [s.meta["labels"]["firearm"] for s in scans]


# --- 1. circle fits ---------------------------------------------------------------------------------------


def skimage_circle(x, y, *, threshold: float, radius_range=None, max_trials: int = RANSAC_TRIALS, seed: int = 0):
    """`fit_circle`'s robust fit done by ``skimage.measure.ransac(CircleModel)``, as a `Circle`.

    The same inlier distance, trials, seed and plausible-radius check (``is_model_valid``); the final
    model is scikit-image's own (its total-least-squares `CircleModel` on the best sample's inliers).
    Raises `bx.ParameterError` like `fit_circle` when no circle is found.
    """
    from skimage.measure import CircleModel, ransac

    pts = np.column_stack([np.asarray(x, np.float64), np.asarray(y, np.float64)])

    def plausible(model, *_):
        return radius_range is None or radius_range[0] <= _radius(model) <= radius_range[1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inliers = ransac(
            pts,
            CircleModel,
            min_samples=3,
            residual_threshold=threshold,
            max_trials=max_trials,
            rng=seed,
            is_model_valid=plausible,
        )
    if model is None or inliers is None or not plausible(model):
        raise bx.ParameterError("skimage ransac: no plausible circle")
    (cx, cy), r = _centre(model), _radius(model)
    e = np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r
    rms = float(np.sqrt(np.mean(e[inliers] ** 2))) if inliers.any() else float("nan")
    return Circle(float(cx), float(cy), float(r), np.asarray(inliers, bool), rms)


def _centre(model):
    return tuple(model.center) if hasattr(model, "center") else tuple(model.params[:2])


def _radius(model):
    return float(model.radius) if hasattr(model, "radius") else float(model.params[2])


def _with_circle_fit(fit_for):
    """Within the block, the three callers of `fit_circle` in the preprocessing (`primer`, `locate`,
    `firing_pin`) call ``fit_for(module_name)`` instead."""
    stack = contextlib.ExitStack()
    for m in (primer, locate, firing_pin):
        stack.enter_context(mock.patch.object(m, "fit_circle", fit_for(m.__name__.rsplit(".", 1)[-1])))
    return stack


def _truth_of(scan, role: str, in_window: bool):
    """The simulator's true centre (and radius where it knows the edge fitted) for a fit, or None."""
    t = scan.meta.get("truth")
    if not t or in_window:
        return None
    if role in ("primer edge", "located primer"):
        return {"center": t["primer_center_m"], "radius": None}
    key = "crater_radius_m" if role == "crater" else "aperture_radius_m"
    return {"center": t["firing_pin_center_m"], "radius": t.get(key)}


def circle_calls(data: dict) -> list[dict]:
    """The point sets `preprocess` hands to `fit_circle`, with their parameters, role and truth."""
    calls = []
    for kind, scans in data.items():
        for i, scan in enumerate(scans):
            mine = []

            def recorder(module, mine=mine):
                def fit(x, y, **kw):
                    role = {"locate": "located primer", "primer": "primer edge"}.get(module)
                    if role is None:
                        role = "crater" if kw.get("radius_range", (0,))[0] == CRATER_MIN_RADIUS_M else "aperture"
                    mine.append({"x": np.array(x, np.float64), "y": np.array(y, np.float64), "kw": kw, "role": role})
                    return fit_circle(x, y, **kw)

                return fit

            with _with_circle_fit(recorder):
                bx.preprocess(scan)
            located = any(c["role"] == "located primer" for c in mine)
            for c in mine:
                in_window = located and c["role"] != "located primer"  # coordinates in the window about the primer
                calls.append({**c, "kind": kind, "scan": i, "truth": _truth_of(scan, c["role"], in_window)})
    return calls


def _fit_or_none(fit, x, y, kw):
    try:
        return fit(x, y, **kw)
    except bx.ParameterError:
        return None


def _shift_um(a, b):
    """Centre and radius differences of two circles (micrometres); None when either fit failed."""
    if a is None or b is None:
        return None, None
    return float(np.hypot(a.x - b.x, a.y - b.y) * 1e6), float(abs(a.r - b.r) * 1e6)


def _truth_error_um(circ, truth) -> float:
    return float(np.hypot(circ.x - truth["center"][0], circ.y - truth["center"][1]) * 1e6)


def circle_bench(calls: list[dict], repeat: int) -> dict:
    """Both fits on every recorded point set: agreement, CPU time, outlier robustness, truth error."""
    methods = {"ours": fit_circle, "skimage": skimage_circle}
    per = []
    for k, c in enumerate(calls):
        x, y, kw = c["x"], c["y"], c["kw"]
        row = {"kind": c["kind"], "role": c["role"], "n_points": int(x.size)}
        fits = {}
        for name, fit in methods.items():
            t, fits[name] = _cpu(lambda fit=fit, x=x, y=y, kw=kw: _fit_or_none(fit, x, y, kw), repeat)
            row[f"{name}_ms"] = t * 1e3
            row[f"{name}_failed"] = fits[name] is None
            truth = c["truth"]
            if truth and fits[name] is not None:
                row[f"{name}_truth_center_um"] = _truth_error_um(fits[name], truth)
                if truth["radius"] is not None:
                    row[f"{name}_truth_radius_um"] = abs(fits[name].r - truth["radius"]) * 1e6
        row["center_diff_um"], row["radius_diff_um"] = _shift_um(fits["ours"], fits["skimage"])
        ref = fits["ours"] or fits["skimage"]
        if ref is not None:
            rng = np.random.default_rng(1000 + k)
            for share in OUTLIER_SHARES:
                m = int(round(x.size * share / (1 - share)))
                half = OUTLIER_BOX_RADII * ref.r
                xo = np.concatenate([x, rng.uniform(ref.x - half, ref.x + half, m)])
                yo = np.concatenate([y, rng.uniform(ref.y - half, ref.y + half, m)])
                order = rng.permutation(xo.size)  # the outliers anywhere in the sequence
                for name, fit in methods.items():
                    noisy = _fit_or_none(fit, xo[order], yo[order], kw)
                    dc, dr = _shift_um(noisy, fits[name])
                    if c["truth"] and noisy is not None:
                        row[f"{name}_outliers{int(share * 100)}_truth_center_um"] = _truth_error_um(noisy, c["truth"])
                    row[f"{name}_outliers{int(share * 100)}_center_shift_um"] = dc
                    row[f"{name}_outliers{int(share * 100)}_radius_shift_um"] = dr
                    row[f"{name}_outliers{int(share * 100)}_failed"] = noisy is None
        per.append(row)
    out = {}
    for kind in dict.fromkeys(r["kind"] for r in per):
        rows = [r for r in per if r["kind"] == kind]
        s = {"fits": len(rows), "roles": sorted({r["role"] for r in rows})}
        s["center_diff_um"] = _stats(r["center_diff_um"] for r in rows)
        s["radius_diff_um"] = _stats(r["radius_diff_um"] for r in rows)
        for name in methods:
            s[name] = {
                "ms": _stats(r[f"{name}_ms"] for r in rows),
                "failed": int(sum(r[f"{name}_failed"] for r in rows)),
                "truth_center_um": _stats(r.get(f"{name}_truth_center_um") for r in rows),
                "truth_radius_um": _stats(r.get(f"{name}_truth_radius_um") for r in rows),
            }
            for share in OUTLIER_SHARES:
                p = f"{name}_outliers{int(share * 100)}"
                s[name][f"outliers{int(share * 100)}"] = {
                    "center_shift_um": _stats(r.get(f"{p}_center_shift_um") for r in rows),
                    "radius_shift_um": _stats(r.get(f"{p}_radius_shift_um") for r in rows),
                    "failed": int(sum(r.get(f"{p}_failed", False) for r in rows)),
                    "truth_center_um": _stats(r.get(f"{p}_truth_center_um") for r in rows),
                }
        out[kind] = s
    return {"by_data": out, "fits": per}


def _same_heights(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a.heights, b.heights, equal_nan=True)


def circle_downstream(data: dict, repeat: int) -> tuple[dict, dict]:
    """`preprocess` with skimage's circles in place: identical output? mask points changed, time.
    Returns the measures and our processed scans by kind."""
    out, ours = {}, {}
    for kind, scans in data.items():
        same, changed, n_mask, t_ours, t_sk, processed = 0, 0, 0, 0.0, 0.0, {"ours": [], "skimage": []}
        for s in scans:
            t, a = _cpu(lambda s=s: bx.preprocess(s), repeat)
            t_ours += t
            with _with_circle_fit(lambda _module: skimage_circle):
                t, b = _cpu(lambda s=s: bx.preprocess(s), repeat)
            t_sk += t
            processed["ours"].append(a)
            processed["skimage"].append(b)
            same += _same_heights(a, b)
            kept = int((~np.isnan(a.heights)).sum())
            n_mask += kept
            changed += int((np.isnan(a.heights) != np.isnan(b.heights)).sum()) if a.shape == b.shape else kept
        out[kind] = {
            "scans": len(scans),
            "identical_output": same,
            "mask_points_changed_share": changed / max(n_mask, 1),
            "preprocess_seconds_per_scan": {"ours": t_ours / len(scans), "skimage": t_sk / len(scans)},
        }
        ours[kind] = processed["ours"]
        labels = labels_of(kind, scans)
        if _rankable(labels):
            out[kind]["retrieval"] = {
                name: _recall([bx.describe(p) for p in procs], labels) for name, procs in processed.items()
            }
    return out, ours


# --- 2. polar resampling ----------------------------------------------------------------------------------


def _polar_points(power, mx, my):
    """Our sample points, back as (centre, radii, number of angles)."""
    c = power.shape[0] / 2
    return c, np.hypot(mx[:, 0] - c, my[:, 0] - c), mx.shape[1]


def remap_cv2(power, mx, my):
    """Ours: `describe`'s own call."""
    return cv2.remap(power, mx, my, cv2.INTER_LINEAR)


def remap_warp(power, mx, my):
    """``skimage.transform.warp`` (bilinear) at our sample points (``warp_polar``'s engine)."""
    from skimage.transform import warp

    return warp(power, np.array([my, mx]), order=1, mode="constant", cval=0.0, preserve_range=True).astype(np.float32)


def remap_warp_polar_log(power, mx, my):
    """``skimage.transform.warp_polar(scaling="log")``: radii ``q**col`` with our ratio ``q`` between radii,
    angles as ours (half of its 360-degree rows); the nearest column to each of our radii."""
    from skimage.transform import warp_polar

    c, rho, n_angles = _polar_points(power, mx, my)
    q = rho[1] / rho[0]
    cols = np.rint(np.log(rho) / np.log(q)).astype(int)
    width = int(cols[-1]) + 1
    out = warp_polar(
        power,
        center=(c, c),
        radius=q**width,
        output_shape=(2 * n_angles, width),
        scaling="log",
        order=1,
        preserve_range=True,
    )
    return out[:n_angles, cols].T.astype(np.float32)


def remap_warp_polar_dense(power, mx, my):
    """``skimage.transform.warp_polar(scaling="linear")`` every `DENSE_POLAR_BIN_STEP` bins, angles as ours;
    the nearest column to each of our radii."""
    from skimage.transform import warp_polar

    c, rho, n_angles = _polar_points(power, mx, my)
    width = int(np.ceil(rho[-1] / DENSE_POLAR_BIN_STEP)) + 2
    out = warp_polar(
        power,
        center=(c, c),
        radius=width * DENSE_POLAR_BIN_STEP,
        output_shape=(2 * n_angles, width),
        scaling="linear",
        order=1,
        preserve_range=True,
    )
    return out[:n_angles, np.rint(rho / DENSE_POLAR_BIN_STEP).astype(int)].T.astype(np.float32)


RESAMPLERS = {
    "ours: cv2.remap": remap_cv2,
    "skimage warp at our points": remap_warp,
    "skimage warp_polar, log radii": remap_warp_polar_log,
    "skimage warp_polar, linear 1/8 bin": remap_warp_polar_dense,
}


class _Remap:
    """Stands in for the ``cv2`` module inside `describe`: its ``remap`` call goes to ``resample`` (and the
    arguments are kept for timing)."""

    INTER_LINEAR = cv2.INTER_LINEAR

    def __init__(self, resample):
        self.resample, self.last = resample, None

    def remap(self, power, mx, my, _interpolation):
        self.last = (power, mx, my)
        return self.resample(power, mx, my)


def describe_with(scan, resample):
    """`describe` with its polar resampling done by ``resample``: (descriptor, the resampler's input)."""
    shim = _Remap(resample)
    with mock.patch.object(describe_module, "cv2", shim):
        return bx.describe(scan), shim.last


def _rankable(labels) -> bool:
    """Retrieval means something: more than one gun, and some gun with more than one scan."""
    return 1 < len(set(labels)) < len(labels)


def _recall(vecs, labels) -> dict:
    vecs, lab = np.asarray(vecs), np.asarray(labels)
    _, order = descriptor_rankings(vecs, len(vecs))
    same = lab[order] == lab[:, None]
    n_same = (lab[:, None] == lab[None, :]).sum(1) - 1
    r = recall_at(same, n_same, (1, 10))
    return {"R@1": r[1], "R@10": r[10], "top1": float(same[:, 0].mean())}


def nan_probe(seed: int = 0) -> dict:
    """Share of NaN outputs when sampling a field with 1 % NaN points at random points, per resampler,
    against the share whose bilinear neighbourhood holds a NaN (`describe` itself never passes NaN: it
    resamples the power spectrum of the zero-filled surface)."""
    rng = np.random.default_rng(seed)
    n = 256
    f = rng.standard_normal((n, n)).astype(np.float32)
    f[rng.random((n, n)) < 0.01] = np.nan
    c = n / 2
    rho = np.geomspace(5, 100, 24)
    th = np.linspace(0, np.pi, 256, endpoint=False)
    mx = (c + rho[:, None] * np.cos(th)).astype(np.float32)
    my = (c + rho[:, None] * np.sin(th)).astype(np.float32)
    x0, y0 = np.floor(mx).astype(int), np.floor(my).astype(int)
    touch = np.isnan(f[y0, x0]) | np.isnan(f[y0, x0 + 1]) | np.isnan(f[y0 + 1, x0]) | np.isnan(f[y0 + 1, x0 + 1])
    out = {"neighbourhood_holds_nan": float(touch.mean())}
    for name, fn in RESAMPLERS.items():
        out[name] = float(np.isnan(fn(f, mx, my)).mean())
    return out


def polar_bench(processed: dict, labels: dict, repeat: int) -> dict:
    """Each resampler in `describe`: CPU time, descriptor difference, bit identity, recall."""
    out = {"nan": nan_probe()}
    for kind, scans in processed.items():
        res = {}
        ref = None
        for name, fn in RESAMPLERS.items():
            t_desc, (vecs, args) = _cpu(lambda fn=fn, scans=scans: _describe_all(scans, fn), repeat)
            t_res, _ = _cpu(lambda fn=fn, args=args: [fn(*a) for a in args], max(repeat, 3))
            vecs = np.asarray(vecs)
            ref = vecs if ref is None else ref
            r = {
                "resample_ms": t_res / len(scans) * 1e3,
                "describe_ms": t_desc / len(scans) * 1e3,
                "descriptor_max_abs_diff": float(np.abs(vecs - ref).max()),
                "min_cosine_to_ours": float(np.min(np.sum(vecs * ref, axis=1))),
                "bit_identical": int(sum(np.array_equal(a, b) for a, b in zip(vecs, ref))),
            }
            if _rankable(labels[kind]):
                r["retrieval"] = _recall(vecs, labels[kind])
            res[name] = r
        out[kind] = {"scans": len(scans), "resamplers": res}
    return out


def _describe_all(scans, fn):
    got = [describe_with(s, fn) for s in scans]
    return [v for v, _ in got], [a for _, a in got]


# --- 3. filters -------------------------------------------------------------------------------------------


def lowpass_skimage(z, spacing_m, cutoff_um, min_weight=0.05):
    """`gaussian_lowpass`'s normalised weights with ``skimage.filters.gaussian`` as the blur."""
    from skimage.filters import gaussian

    z = np.asarray(z, dtype=np.float64)  # as gaussian_lowpass
    valid = ~np.isnan(z)
    sigma = (_sigma_px(cutoff_um, spacing_m), _sigma_px(cutoff_um, spacing_m))
    kw = dict(mode="constant", cval=0.0, truncate=TRUNCATE_SIGMAS, preserve_range=True)
    num = gaussian(np.where(valid, z, 0.0), sigma=sigma, **kw)
    den = gaussian(valid.astype(np.float64), sigma=sigma, **kw)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~valid | (den < min_weight)] = np.nan
    return out


def bandpass_skimage_normalised(z, spacing_m):
    return lowpass_skimage(z, spacing_m, SHORT_CUTOFF_UM) - lowpass_skimage(z, spacing_m, LONG_CUTOFF_UM)


def _dog(z, spacing_m):
    from skimage.filters import difference_of_gaussians

    lo, hi = _sigma_px(SHORT_CUTOFF_UM, spacing_m), _sigma_px(LONG_CUTOFF_UM, spacing_m)
    return difference_of_gaussians(z, lo, hi, mode="constant", cval=0.0, truncate=TRUNCATE_SIGMAS)


def bandpass_dog_zero_filled(z, spacing_m):
    """``skimage.filters.difference_of_gaussians`` on the heights with missing points as 0, NaN put back."""
    valid = ~np.isnan(z)
    out = _dog(np.where(valid, z, 0.0), spacing_m)
    out[~valid] = np.nan
    return out


def bandpass_dog_nan(z, spacing_m):
    """``skimage.filters.difference_of_gaussians`` on the heights as they are (NaN spreads)."""
    return _dog(z, spacing_m)


FILTERS = {
    "ours: gaussian_bandpass (NaN-aware)": lambda z, d: gaussian_bandpass(
        z, d, short_cutoff_um=SHORT_CUTOFF_UM, long_cutoff_um=LONG_CUTOFF_UM
    ),
    "skimage gaussian, same normalised weights": bandpass_skimage_normalised,
    "skimage difference_of_gaussians, zero-filled": bandpass_dog_zero_filled,
    "skimage difference_of_gaussians, NaN as is": bandpass_dog_nan,
}


class _Ndimage:
    """Stands in for ``scipy.ndimage`` inside `ballistix.features.filters`: ``gaussian_filter`` by skimage."""

    @staticmethod
    def gaussian_filter(image, sigma, mode, cval, truncate):
        from skimage.filters import gaussian

        return gaussian(image, sigma=sigma, mode=mode, cval=cval, truncate=truncate, preserve_range=True)


def filter_bench(data: dict, processed: dict, repeat: int, per_kind: int = 6) -> dict:
    """Each band-pass on the surface `preprocess`'s band-pass step receives (region, levelled, outliers
    removed, cropped), and `preprocess` with skimage's gaussian in place, bit for bit."""
    out = {}
    for kind, scans in data.items():
        scans = scans[:per_kind]  # a filter's behaviour hardly depends on the scan: a few of each kind
        res = {
            name: {"seconds": 0.0, "max_abs_diff_um": 0.0, "rms_diff_share": [], "valid_lost_share": []}
            for name in FILTERS
        }
        identical = 0
        for raw, a in zip(scans, processed[kind]):
            s = bx.preprocess(raw, short_cutoff_um=None, long_cutoff_um=None, spacing_um=None)
            z = s.heights
            ref = None
            for name, fn in FILTERS.items():
                t, b = _cpu(lambda fn=fn, z=z, d=s.dx: fn(z, d), repeat)
                ref = b if ref is None else ref
                both = ~np.isnan(ref) & ~np.isnan(b)
                r = res[name]
                r["seconds"] += t / len(scans)
                if both.any():
                    d = np.abs(b[both] - ref[both])
                    r["max_abs_diff_um"] = max(r["max_abs_diff_um"], float(d.max()) * 1e6)
                    r["rms_diff_share"].append(float(np.sqrt(np.mean(d**2)) / np.sqrt(np.mean(ref[both] ** 2))))
                kept = ~np.isnan(ref)
                r["valid_lost_share"].append(float((kept & np.isnan(b)).sum() / max(kept.sum(), 1)))
                r["bit_identical"] = r.get("bit_identical", 0) + int(np.array_equal(b, ref, equal_nan=True))
            with mock.patch.object(filters_module, "ndimage", _Ndimage):
                b = bx.preprocess(raw)
            identical += _same_heights(a, b)
        for r in res.values():
            r["rms_diff_share"] = max(r["rms_diff_share"], default=0.0)
            r["valid_lost_share"] = max(r["valid_lost_share"], default=0.0)
        out[kind] = {"scans": len(scans), "filters": res, "preprocess_identical_with_skimage_gaussian": identical}
    return out


# --- cost and decision ------------------------------------------------------------------------------------


def import_cost(repeat: int) -> float:
    """Seconds to import the skimage functions measured here, after numpy, scipy, cv2 and ballistix."""
    code = (
        "import time, numpy, scipy.ndimage, cv2, ballistix.features\n"
        "t = time.perf_counter()\n"
        "from skimage.filters import gaussian; from skimage.measure import ransac, CircleModel\n"
        "from skimage.transform import warp, warp_polar\n"
        "print(time.perf_counter() - t)"
    )
    cmd = [sys.executable, "-c", code]
    runs = [float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout) for _ in range(repeat)]
    return min(runs)


def decide(circles: dict, downstream: dict, polar: dict, filt: dict) -> dict:
    """Per candidate: switch or not, and why, from the numbers (golden tests pin bit-identical output)."""
    d = {}
    ident = ", ".join(f"{k} {v['identical_output']} of {v['scans']}" for k, v in downstream.items())
    truth = {
        name: {
            level: _stats(
                x
                for v in circles.values()
                for x in [(v[name] if level == "clean" else v[name][level])["truth_center_um"]["median"]]
            )["median"]
            for level in ["clean"] + [f"outliers{int(share * 100)}" for share in OUTLIER_SHARES]
        }
        for name in ("ours", "skimage")
    }
    d["circle"] = {
        "switch": False,
        "why": f"preprocess output bit-identical with skimage's circles on {ident} scans (the golden tests pin "
        "it bit for bit); median centre error against the simulator's truth (um), ours / skimage: "
        + ", ".join(f"{lvl} {_f(truth['ours'][lvl])} / {_f(truth['skimage'][lvl])}" for lvl in truth["ours"])
        + "; skimage's final model is algebraic on the best sample's inliers, ours is refined geometrically.",
    }
    kinds = {k: v["resamplers"] for k, v in polar.items() if k != "nan"}
    ours = "ours: cv2.remap"
    bit = {name: all(r[name]["bit_identical"] == polar[k]["scans"] for k, r in kinds.items()) for name in RESAMPLERS}
    recall = {
        name: all(r[name]["retrieval"] == r[ours]["retrieval"] for r in kinds.values() if "retrieval" in r[ours])
        for name in RESAMPLERS
    }
    slower = {
        name: min((r[name]["resample_ms"] / r[ours]["resample_ms"] for r in kinds.values()), default=np.nan)
        for name in RESAMPLERS
    }
    d["polar"] = {
        "switch": False,
        "why": "descriptors bit-identical (goldens pin their bytes) / same recall / resampling at least x times "
        "slower: "
        + "; ".join(f"{k}: {bit[k]} / {recall[k]} / {slower[k]:.0f}x" for k in RESAMPLERS if not k.startswith("ours"))
        + ". warp at our points is scipy's map_coordinates and differs from cv2.remap by float rounding; "
        "warp_polar samples its own radii (its log scale starts at 1 bin) and comes near ours only densely.",
    }
    same_filter = all(
        v["filters"]["skimage gaussian, same normalised weights"]["bit_identical"] == v["scans"] for v in filt.values()
    )
    d["filters"] = {
        "switch": False,
        "why": f"skimage.filters.gaussian is scipy.ndimage.gaussian_filter behind a dtype check (bit-identical: "
        f"{same_filter}): the same numbers through one more dependency; difference_of_gaussians is not NaN-aware "
        "(zero-filled it pulls edges towards 0, with NaN as is it loses points around every hole).",
    }
    d["scikit-image"] = (
        "nothing in it serves better than the code we have: removed from the package's dependencies "
        "(kept in the test extra for this benchmark)"
    )
    return d


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few scans of each kind: seconds (for the tests)")
    p.add_argument("--skip-real", action="store_true", help="simulated scans only")
    p.add_argument("--repeat", type=int, default=3, help="timings: best of this many runs")
    args = p.parse_args(argv)
    try:
        import skimage
    except ImportError:
        print("skipped: scikit-image is not installed (pip install -e '.[test]')")
        return 0
    cv2.setNumThreads(1)
    repeat = 1 if args.quick else args.repeat
    t0 = time.perf_counter()
    data = load_data(args.quick, args.skip_real)
    calls = circle_calls(data)
    circles = circle_bench(calls, repeat)
    downstream, processed = circle_downstream(data, repeat)
    described = {k: processed[k] for k in ("fadul", "sim") if k in processed}
    polar = polar_bench(described, {k: labels_of(k, data[k]) for k in described}, repeat)
    filt = filter_bench(data, processed, repeat, per_kind=1 if args.quick else 6)
    cost = import_cost(repeat)
    decision = decide(circles["by_data"], downstream, polar, filt)
    out = {
        "skimage_version": skimage.__version__,
        "quick": args.quick,
        "scans": {k: len(v) for k, v in data.items()},
        "circle": {**circles, "downstream": downstream},
        "polar": polar,
        "filters": filt,
        "skimage_import_seconds": cost,
        "decision": decision,
        "seconds": time.perf_counter() - t0,
    }
    path = write_json("skimage_choices", out)
    print(table(_rows(out), ["candidate", "data", "measure", "ours", "scikit-image"]))
    print("\ndecision:")
    for k, v in decision.items():
        print(f"- {k}: {v if isinstance(v, str) else ('switch' if v['switch'] else 'keep ours') + ': ' + v['why']}")
    print(f"\nwrote {path}")
    return 0


def _f(v, spec=".3g"):
    return "n/a" if v is None else format(v, spec)


def _mm(stats: dict) -> str:
    """``median, max`` of a `_stats` summary."""
    return f"{_f(stats['median'])}, {_f(stats['max'])}"


def _rows(out) -> list[list[str]]:
    """The printed table: [candidate, data, measure, ours, scikit-image]."""
    rows = []

    def add(candidate, kind, measure, ours, skimage):
        rows.append([candidate, kind, measure, ours, skimage])

    for kind, s in out["circle"]["by_data"].items():
        o, k = s["ours"], s["skimage"]
        diff = f"{_mm(s['center_diff_um'])} / {_mm(s['radius_diff_um'])}"
        add("circle", kind, f"{s['fits']} fits: skimage - ours, centre / radius um (median, max)", "", diff)
        add("circle", kind, "CPU ms per fit (median, max)", _mm(o["ms"]), _mm(k["ms"]))
        levels = [(f"outliers{int(f * 100)}", f"+{int(f * 100)}% outliers: ") for f in OUTLIER_SHARES]
        for key, what in levels:
            shift = "center_shift_um"
            add(
                "circle",
                kind,
                what + "centre shift from own fit um (median, max)",
                _mm(o[key][shift]),
                _mm(k[key][shift]),
            )
        if o["truth_center_um"]["n"]:
            add(
                "circle",
                kind,
                "centre error vs truth um (median, max)",
                _mm(o["truth_center_um"]),
                _mm(k["truth_center_um"]),
            )
            for key, what in levels:
                err = "truth_center_um"
                add("circle", kind, what + "centre error vs truth um (median, max)", _mm(o[key][err]), _mm(k[key][err]))
    for kind, s in out["circle"]["downstream"].items():
        t = s["preprocess_seconds_per_scan"]
        ours, sk = f"{s['scans']} / 0 / {_f(t['ours'])}", f"{s['identical_output']} / "
        sk += f"{s['mask_points_changed_share']:.2%} / {_f(t['skimage'])}"
        add("circle", kind, "preprocess: bit-identical output / mask points changed / s per scan", ours, sk)
        if "retrieval" in s:
            r = s["retrieval"]
            add("circle", kind, "descriptor top-1 / R@10", _recall_cell(r["ours"]), _recall_cell(r["skimage"]))
    for kind, s in out["polar"].items():
        if kind == "nan":
            continue
        ours = s["resamplers"]["ours: cv2.remap"]
        for name, r in s["resamplers"].items():
            if name.startswith("ours"):
                continue
            times = "{0} / {1}"
            add("polar: " + name, kind, "resample ms / describe ms",
                times.format(_f(ours["resample_ms"]), _f(ours["describe_ms"])),
                times.format(_f(r["resample_ms"]), _f(r["describe_ms"])))  # fmt: skip
            diff = f"{_f(r['descriptor_max_abs_diff'])} / {_f(r['min_cosine_to_ours'], '.4g')} / {r['bit_identical']}"
            add(
                "polar: " + name,
                kind,
                "descriptor max |diff| / min cosine / bit-identical",
                f"0 / 1 / {s['scans']}",
                diff,
            )
            if "retrieval" in r:
                add(
                    "polar: " + name,
                    kind,
                    "descriptor top-1 / R@10",
                    _recall_cell(ours["retrieval"]),
                    _recall_cell(r["retrieval"]),
                )
    nan = out["polar"]["nan"]
    sk = ", ".join(_f(v) for k, v in nan.items() if k.startswith("skimage"))
    add("polar: NaN", "1% NaN field", f"NaN outputs (a NaN neighbour: {nan['neighbourhood_holds_nan']:.3f})",
        _f(nan["ours: cv2.remap"]), sk)  # fmt: skip
    for kind, s in out["filters"].items():
        ours = s["filters"]["ours: gaussian_bandpass (NaN-aware)"]
        for name, r in s["filters"].items():
            if name.startswith("ours"):
                continue
            sk = f"{_f(r['seconds'])} / {_f(r['max_abs_diff_um'])} / {_f(r['rms_diff_share'])} / "
            sk += _f(r["valid_lost_share"])
            measure = "CPU s / max |diff| um / RMS diff share / points lost"
            add("filter: " + name, kind, measure, f"{_f(ours['seconds'])} / 0 / 0 / 0", sk)
        same = str(s["preprocess_identical_with_skimage_gaussian"])
        add("filter: skimage gaussian in preprocess", kind, "bit-identical preprocess output", str(s["scans"]), same)
    add("import", "", "seconds to import what is measured here", "0", _f(out["skimage_import_seconds"]))
    return rows


def _recall_cell(r: dict) -> str:
    return f"{_f(r['top1'])} / {_f(r['R@10'])}"


if __name__ == "__main__":
    sys.exit(main())
