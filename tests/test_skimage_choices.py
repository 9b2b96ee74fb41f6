"""benchmarks/skimage_choices.py: scikit-image measured against ballistix's own code (issue 16).

scikit-image is not a dependency of the package (the measurement found nothing it does better;
docs/architecture.md); it comes with the test extras so that this measurement stays reproducible.
These tests keep the benchmark's candidates equivalent to the code they stand in for, and its quick
mode running.
"""

import json

import numpy as np
import pytest

import ballistix as bx

pytest.importorskip("skimage")

from benchmarks import skimage_choices as sc  # noqa: E402  (the tests run from a checkout: pyproject pythonpath)


def test_skimage_circle_fits_an_arc_with_outliers_like_fit_circle():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, np.pi, 200)
    x = np.concatenate([1e-3 + 2e-3 * np.cos(t), rng.uniform(-1e-3, 3e-3, 40)])
    y = np.concatenate([-0.5e-3 + 2e-3 * np.sin(t), rng.uniform(-2.5e-3, 1.5e-3, 40)])
    kw = dict(threshold=10e-6, radius_range=(1e-3, 3e-3))
    ours, theirs = bx.features.preprocessing.fit_circle(x, y, **kw), sc.skimage_circle(x, y, **kw)
    for c in (ours, theirs):
        assert abs(c.x - 1e-3) < 1e-7 and abs(c.y + 0.5e-3) < 1e-7 and abs(c.r - 2e-3) < 1e-7
        assert c.inliers[:200].all() and c.inliers.size == 240
    with pytest.raises(bx.ParameterError):
        sc.skimage_circle(x, y, threshold=10e-6, radius_range=(1e-9, 2e-9))  # no triple fits: like fit_circle


def test_resamplers_sample_describe_at_the_same_points():
    scan = bx.preprocess(bx.datasets.simulate(n_firearms=1, shots=1, seed=0, resolution="fast")[0])
    ours, (power, mx, my) = sc.describe_with(scan, sc.remap_cv2)
    assert np.array_equal(ours, bx.describe(scan))  # the stand-in for cv2 changes nothing by itself
    polar = sc.remap_cv2(power, mx, my)
    scale = float(polar.max())
    assert np.abs(sc.remap_warp(power, mx, my) - polar).max() < 1e-5 * scale  # float rounding only
    dense = sc.remap_warp_polar_dense(power, mx, my)
    assert dense.shape == polar.shape and np.corrcoef(dense.ravel(), polar.ravel())[0, 1] > 0.9


def test_skimage_gaussian_in_our_weights_is_our_lowpass_bit_for_bit():
    z = np.random.default_rng(1).standard_normal((120, 100)) * 1e-6
    z[40:60, 30:50] = np.nan
    ours = bx.features.filters.gaussian_lowpass(z, 6.25e-6, 100.0)
    assert np.array_equal(sc.lowpass_skimage(z, 6.25e-6, 100.0), ours, equal_nan=True)


@pytest.mark.slow
def test_quick_run_measures_every_candidate_and_keeps_our_code(tmp_path, monkeypatch):
    from benchmarks import _common

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    assert sc.main(["--quick"]) == 0
    out = json.loads((tmp_path / "skimage_choices.json").read_text())
    assert out["circle"]["by_data"]["sim"]["fits"] > 0 and out["circle"]["downstream"]["sim"]["scans"] > 0
    assert set(out["polar"]["sim"]["resamplers"]) == set(sc.RESAMPLERS)
    assert out["filters"]["sim"]["filters"]["skimage gaussian, same normalised weights"]["bit_identical"] >= 1
    assert {k: v["switch"] for k, v in out["decision"].items() if isinstance(v, dict)} == {
        "circle": False,
        "polar": False,
        "filters": False,
    }
