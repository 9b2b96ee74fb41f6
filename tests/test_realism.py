"""The simulator against reality: statistics of simulated and real Fadul scans within a factor of 2."""

import numpy as np
import pytest

import ballistix as bx
from ballistix.evaluation.realism import fadul_like, raw_scan_stats, surface_stats, truth_breech_face
from ballistix.features.filters import gaussian_bandpass


@pytest.fixture(scope="module")
def fadul_like_sims():
    # one manufacturing run of Ruger P95 slides, like the Fadul set, at the raw scans' resolution
    return bx.datasets.simulate(3, 1, seed=11, models=["Ruger P95"], run_size=3, difficulty="realistic")


def _texture(z, spacing):
    st = surface_stats(z, spacing)
    st["kurtosis"] = st["excess_kurtosis"] + 3.0
    return st


@pytest.mark.parametrize("key", ["rms_um", "kurtosis", "tail_ratio", "acf_length_um"])
def test_breech_face_texture_within_factor_two(shared_data, fadul_like_sims, key):
    real = [
        _texture(gaussian_bandpass(s.heights, s.dx), s.dx)
        for s in (bx.read_scan(p) for p in sorted((shared_data / "fadul").glob("*.x3p"))[::4])
    ]
    sim = [_texture(fadul_like(s, truth_breech_face(s)), 6.25e-6) for s in fadul_like_sims]
    r = np.median([x[key] for x in real])
    s = np.median([x[key] for x in sim])
    assert 0.5 <= s / r <= 2.0, f"{key}: simulated {s:.3g} vs real {r:.3g}"


def test_skewness_close_to_real(shared_data, fadul_like_sims):
    real = [
        surface_stats(gaussian_bandpass(s.heights, s.dx), s.dx)["skewness"]
        for s in (bx.read_scan(p) for p in sorted((shared_data / "fadul").glob("*.x3p"))[::4])
    ]
    sim = [surface_stats(fadul_like(s, truth_breech_face(s)), 6.25e-6)["skewness"] for s in fadul_like_sims]
    assert abs(np.median(sim) - np.median(real)) < 0.5


@pytest.mark.parametrize(
    "key", ["missing_fraction", "crater_core_radius_mm", "outer_radius_mm", "relief_um", "ring_height_um"]
)
def test_raw_scan_form_within_factor_two(shared_data, fadul_like_sims, key):
    real = [raw_scan_stats(bx.read_scan(p))[key] for p in sorted((shared_data / "fadul-raw").glob("*.x3p"))]
    sim = [raw_scan_stats(s)[key] for s in fadul_like_sims]
    r, s = np.median(real), np.median(sim)
    assert 0.5 <= s / r <= 2.0, f"{key}: simulated {s:.3g} vs real {r:.3g}"


def test_raw_missing_pattern_by_radius(shared_data, fadul_like_sims):
    # the share of measured points, ring by ring from the crater out, follows the real scans
    real = np.median(
        [raw_scan_stats(bx.read_scan(p))["valid_by_radius"] for p in sorted((shared_data / "fadul-raw").glob("*.x3p"))],
        axis=0,
    )
    sim = np.median([raw_scan_stats(s)["valid_by_radius"] for s in fadul_like_sims], axis=0)
    assert np.mean(np.abs(real - sim)) < 0.15
    assert real[:3].max() == sim[:3].max() == 0.0  # crater floor unmeasured
    assert sim[12:17].min() > 0.7  # breech face well measured


@pytest.fixture(scope="module")
def pin_real_and_sim(shared_data, fadul_like_sims):
    from benchmarks.realism import pin_stats

    real = [pin_stats(bx.read_scan(p)) for p in sorted((shared_data / "fadul-raw").glob("*.x3p"))]
    return real, [pin_stats(s) for s in fadul_like_sims]


@pytest.mark.parametrize("key", ["hole_radius_mm", "aperture_radius_mm", "lip_height_um"])
def test_firing_pin_impression_form_within_factor_two(pin_real_and_sim, key):
    # measured on 1-1, 1-2, 2-1 raw: hole 0.66-0.74 mm, aperture 1.26-1.29 mm, lip 29-39 um; the simulated
    # Ruger P95s are smaller (hole 0.47-0.61, aperture 1.03-1.15 mm): within the factor, not equal
    real, sim = pin_real_and_sim
    r, s = np.median([x[key] for x in real]), np.median([x[key] for x in sim])
    assert 0.5 <= s / r <= 2.0, f"{key}: simulated {s:.3g} vs real {r:.3g}"


def test_crater_floor_unseen_on_raw_scans_real_and_simulated(pin_real_and_sim):
    # neither the real raw scans nor the simulated primer view see the crater floor (the firing pin is
    # 150-200 um deep): the deepest measured point near the hole is at most ~100 um below the face
    real, sim = pin_real_and_sim
    assert max(x["deepest_seen_um"] for x in real) < 130
    assert max(x["deepest_seen_um"] for x in sim) < 130
    assert all(x["hole_radius_mm"] > 0.4 for x in real + sim)


@pytest.fixture(scope="module")
def realistic_pin(shared_data):
    from benchmarks.realism import pin_stats

    # the same Fadul-like guns and shots as fadul_like_sims, with the opt-in realistic crater
    sims = bx.datasets.simulate(
        3, 1, seed=11, models=["Ruger P95"], run_size=3, difficulty="realistic", crater="realistic"
    )
    return [pin_stats(s) for s in sims]


@pytest.mark.parametrize(
    "key", ["hole_radius_mm", "aperture_radius_mm", "lip_height_um", "edge_slope_deg", "deepest_seen_um"]
)
def test_realistic_crater_close_to_the_raw_fadul_scans(pin_real_and_sim, realistic_pin, key):
    # benchmarks.realism (8 guns): every median within 15 % of the real one; with 3 guns here, within 25 %.
    # The v1 crater is far off on the last two (wall slope 2 vs 19 deg, deepest point seen 11 vs 79 um).
    real, _ = pin_real_and_sim
    r = np.median([x[key] for x in real])
    s = np.median([x[key] for x in realistic_pin if x is not None])
    assert sum(x is not None for x in realistic_pin) == 3
    assert 0.75 <= s / r <= 1.25, f"{key}: realistic crater {s:.3g} vs real {r:.3g}"
