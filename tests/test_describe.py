import numpy as np
import pytest

import ballistix as bx
from ballistix.features.cmc import rotate_nan
from ballistix.features.describe import DESCRIBE_DEFAULTS, descriptor_dim, descriptor_info


@pytest.fixture(scope="module")
def sims():
    return [bx.preprocess(s) for s in bx.datasets.simulate(n_firearms=2, shots=2, seed=3, difficulty="moderate")]


def _like(scan, z):
    return bx.Scan(np.asarray(z, float), scan.dx, scan.dy)


def test_unit_float32_vector_of_documented_length(sims):
    v = bx.describe(sims[0])
    assert v.dtype == np.float32
    assert v.shape == (descriptor_dim(),) == (DESCRIBE_DEFAULTS["n_radii"] ** 2 * DESCRIBE_DEFAULTS["n_harmonics"],)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert descriptor_info()["dim"] == v.size


def test_deterministic(sims):
    assert np.array_equal(bx.describe(sims[0]), bx.describe(sims[0].copy()))


@pytest.mark.parametrize(
    "transform, least",
    [
        (lambda z: np.rot90(z), 0.999),  # exact rotation
        (lambda z: np.rot90(z, 2), 0.999),
        (lambda z: rotate_nan(z, 37.0), 0.95),  # interpolated rotation
        (lambda z: np.pad(z, ((20, 0), (0, 35)), constant_values=np.nan), 0.999),  # shift
    ],
)
def test_invariant_to_rotation_and_translation(sims, transform, least):
    a = sims[0]
    assert float(bx.describe(_like(a, transform(a.heights))) @ bx.describe(a)) >= least


def test_mirror_image_is_not_the_same_surface(sims):
    a = sims[0]
    assert float(bx.describe(_like(a, a.heights[::-1])) @ bx.describe(a)) < 0.5


def test_same_gun_more_similar_than_other_guns(sims):
    v = [bx.describe(s) for s in sims]  # guns: 0, 0, 1, 1
    assert v[0] @ v[1] > max(v[0] @ v[2], v[0] @ v[3])
    assert v[2] @ v[3] > max(v[2] @ v[0], v[2] @ v[1])


def test_params_change_the_vector_and_its_length(sims):
    v = bx.describe(sims[0], n_radii=8, n_harmonics=4)
    assert v.shape == (8 * 8 * 4,) == (descriptor_dim(n_radii=8, n_harmonics=4),)
    assert descriptor_info(n_radii=8)["params"]["n_radii"] == 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"band_um": (300, 60)}, "band_um"),
        ({"band_um": (0, 60)}, "band_um"),
        ({"band_um": (5, 60)}, "Nyquist"),
        ({"n_harmonics": 200}, "n_harmonics"),
        ({"n_radii": 1}, "n_radii"),
        ({"n_angles": 2.5}, "n_angles"),
        ({"fft_size_mm": -1}, "fft_size_mm"),
        ({"colour": "red"}, "unknown describe parameter"),
    ],
)
def test_bad_parameters(sims, kwargs, match):
    with pytest.raises(bx.ParameterError, match=match):
        bx.describe(sims[0], **kwargs)


@pytest.mark.parametrize(
    "scan, match",
    [
        ("not a scan", "expects a ballistix Scan"),
        (bx.Scan(np.full((64, 64), np.nan), 6.25e-6, 6.25e-6), "valid points"),
        (bx.Scan(np.zeros((64, 64)), 6.25e-6, 6.25e-6), "flat"),
        (bx.Scan(np.random.default_rng(0).normal(size=(64, 64)), 6.25e-6, 3e-6), "square grid"),
    ],
)
def test_bad_scans(scan, match):
    with pytest.raises(bx.ParameterError, match=match):
        bx.describe(scan)


def test_real_scans_same_slide_ranks_first(shared_data):
    """On the 40 processed Fadul scans (ten consecutively made slides), the most similar
    other scan is from the same slide for most queries (measured: 39 of 40)."""
    import csv

    labels = {r["file"]: r["firearm"] for r in csv.DictReader(open(shared_data / "labels.csv"))}
    files = sorted((shared_data / "fadul").glob("*.x3p"))
    vecs = np.array([bx.describe(bx.read_scan(f)) for f in files])
    lab = np.array([labels[f"fadul/{f.name}"] for f in files])
    sim = vecs @ vecs.T
    np.fill_diagonal(sim, -np.inf)
    top1 = (lab[sim.argmax(1)] == lab).mean()
    assert top1 >= 0.85
