"""The CMC engine: cell search (fast path == loop reference), rotation, congruence rules."""

import cv2
import numpy as np
import pytest

from ballistix.errors import ParameterError
from ballistix.features.cmc import (
    CellSearch,
    angle_diff,
    cell_search,
    cell_search_reference,
    congruence,
    make_cells,
    rotate_nan,
)


def texture(shape, seed, sigma=2.0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.standard_normal(shape), (0, 0), sigma)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("shift", [(0, 0), (3, -2), (-5, 4)])
def test_fast_path_equals_loop_reference(seed, holes, shift):
    ref = texture((72, 72), seed)
    tgt = np.roll(ref, shift, axis=(0, 1)) + 0.4 * texture((72, 72), seed + 10, 1.0)
    if holes:
        ref[:12, :30] = np.nan
        tgt[40:55, 45:70] = np.nan
        tgt[::7, ::5] = np.nan
    cells = make_cells(ref, (4, 4), max_missing=0.9)
    fast, slow = cell_search(cells, tgt), cell_search_reference(cells, tgt)
    np.testing.assert_allclose(fast["corr"], slow["corr"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fast["shift"], slow["shift"])
    np.testing.assert_array_equal(fast["overlap"], slow["overlap"])


def test_cell_search_finds_a_pure_shift_exactly():
    ref = texture((96, 96), 3)
    tgt = np.roll(ref, (4, -6), axis=(0, 1))
    res = cell_search(make_cells(ref, (4, 4)), tgt)
    inner = np.array([1, 2, 5, 6, 9, 10])  # cells away from the wrapped border
    assert np.all(res["shift"][inner] == [4, -6])
    assert np.all(res["corr"][inner] > 0.999)


def test_cells_skip_mostly_missing_and_flat():
    ref = texture((80, 80), 4)
    ref[:20, :20] = np.nan  # cell (0, 0) all missing
    ref[:20, 20:40] = 1.0  # cell (0, 1) flat: nothing to correlate
    cells = make_cells(ref, (4, 4), max_missing=0.85)
    idx = {tuple(i) for i in cells.index}
    assert (0, 0) not in idx and (0, 1) not in idx and len(cells) == 14
    with pytest.raises(ParameterError):
        make_cells(ref, (40, 40))
    with pytest.raises(ParameterError):
        make_cells(ref, (4, 4), max_missing=1.0)


def test_rotate_nan_zero_and_quarter_turns():
    z = texture((31, 31), 5)
    z[3, 4] = np.nan
    np.testing.assert_allclose(rotate_nan(z, 0.0), z.astype(np.float32), rtol=1e-6, equal_nan=True)
    r = rotate_nan(z, 90.0)  # counter-clockwise as displayed == np.rot90
    np.testing.assert_allclose(r, np.rot90(z).astype(np.float32), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(r).sum() == 1


def test_rotate_nan_never_interpolates_across_missing_points():
    z = np.ones((21, 21))
    z[10, 10] = np.nan
    r = rotate_nan(z, 17.0)
    assert np.isnan(r[9:12, 9:12]).sum() >= 1 and np.nanmax(np.abs(r - 1)) < 1e-6


@pytest.mark.parametrize("a,b,d", [(10, 350, 20), (350, 10, -20), (180, 0, -180), (0, 0, 0), (725, 0, 5)])
def test_angle_diff(a, b, d):
    assert angle_diff(a, b) == pytest.approx(d)


def _synthetic(n=10, rot_peak=2, n_rot=5, shift=(3.0, -4.0), corr=0.8):
    angles = np.arange(n_rot) * 3.0 - 6.0
    c = np.full((n_rot, n), 0.2)
    s = np.random.default_rng(0).uniform(-30, 30, (n_rot, n, 2))
    c[rot_peak] = corr
    s[rot_peak] = shift
    return angles, c, s


def test_congruence_all_cells_agree():
    angles, c, s = _synthetic()
    res = congruence(angles, c, s)
    assert res["original"]["count"] == 10 and res["high"]["count"] == 10 and res["high"]["passed"]
    assert res["original"]["rotation_deg"] == pytest.approx(0.0)
    np.testing.assert_allclose(res["high"]["shift"], (3.0, -4.0))


def test_congruence_rejects_off_consensus_and_weak_cells():
    angles, c, s = _synthetic()
    s[2, 0] = (3.0 + 25, -4.0)  # shift beyond 20 px
    c[2, 1] = 0.45  # below the correlation threshold
    c[0, 2], s[0, 2] = 0.95, (3.0, -4.0)  # best at a rotation 6 deg away: still within tolerance
    c[4, 3], c[2, 3] = 0.99, 0.3  # best at +6 deg for cell 3 with a random shift
    res = congruence(angles, c, s)
    orig = res["original"]["mask"]
    assert not orig[0] and not orig[1] and orig[2] and orig[4:].all()
    assert res["original"]["count"] == int(orig.sum())


def test_high_cmc_falls_back_when_rotations_disagree():
    angles = np.arange(0.0, 60.0, 3.0)
    n = 8
    c = np.full((len(angles), n), 0.9)
    s = np.zeros((len(angles), n, 2))  # every rotation looks equally congruent: no clear peak
    res = congruence(angles, c, s)
    assert not res["high"]["passed"]
    assert res["high"]["count"] == res["original"]["count"]


def test_congruence_wraps_angles_around_zero():
    angles = np.array([354.0, 357.0, 0.0, 3.0, 6.0])
    c = np.full((5, 6), 0.1)
    s = np.zeros((5, 6, 2))
    c[1, :3] = 0.9  # cells 0-2 best at 357
    c[3, 3:] = 0.9  # cells 3-5 best at 3: 6 degrees apart across 0
    res = congruence(angles, c, s)
    assert res["original"]["count"] == 6


def test_cell_search_object_reuses_templates_across_targets():
    ref = texture((64, 64), 7)
    cells = make_cells(ref, (4, 4))
    search = CellSearch(cells)
    r1 = search.search(ref, [0.0, 10.0])
    assert r1["corr"].shape == (2, len(cells)) and r1["shift"].shape == (2, len(cells), 2)
    assert np.nanmean(r1["corr"][0]) > np.nanmean(r1["corr"][1])


def test_counts_from_fast_search_equal_counts_from_loop_reference():
    # the whole decision, over a rotation grid: fast batched search vs the loop reference
    ref = texture((96, 96), 11)
    tgt = rotate_nan(ref, -6.0).astype(float) + 0.3 * texture((96, 96), 12, 1.0)
    tgt[70:, :20] = np.nan
    cells = make_cells(ref, (4, 4))
    angles = np.array([0.0, 3.0, 6.0, 9.0])
    fast = CellSearch(cells).search(tgt, angles)
    pad = int(np.ceil((np.hypot(*tgt.shape) - min(tgt.shape)) / 2))
    shape = (tgt.shape[0] + 2 * pad, tgt.shape[1] + 2 * pad)
    centred = tgt - np.nanmean(tgt)  # search() centres the target on its mean before rotating it
    slow = [cell_search_reference(cells, rotate_nan(centred, a, shape), pad=pad) for a in angles]
    slow_corr = np.stack([r["corr"] for r in slow])
    slow_shift = np.stack([r["shift"] for r in slow])
    np.testing.assert_allclose(fast["corr"], slow_corr, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fast["shift"], slow_shift)
    a, b = congruence(angles, fast["corr"], fast["shift"]), congruence(angles, slow_corr, slow_shift)
    for rule in ("original", "high"):
        assert a[rule]["count"] == b[rule]["count"]
        np.testing.assert_array_equal(a[rule]["mask"], b[rule]["mask"])
    assert a["original"]["count"] >= 10 and a["original"]["rotation_deg"] == pytest.approx(6.0)


def test_search_without_pocketfft_entry_points_gives_identical_results(monkeypatch):
    # the direct pocketfft calls are an optimisation; scipy.fft's public functions give the same answer
    from ballistix.features import cmc

    ref = texture((96, 96), 21)
    tgt = rotate_nan(ref, 4.0).astype(float) + 0.3 * texture((96, 96), 22, 1.0)
    tgt[60:, :30] = np.nan
    search = CellSearch(make_cells(ref, (4, 4)))
    fast = search.search(tgt, [0.0, 3.0, 6.0])
    monkeypatch.setattr(cmc, "_pocketfft", None)
    public = search.search(tgt, [0.0, 3.0, 6.0])
    for key in ("corr", "shift", "overlap"):
        np.testing.assert_array_equal(fast[key], public[key])


def test_coarse_pose_without_pocketfft_entry_points_gives_the_same_curve(monkeypatch):
    from ballistix.features import cmc
    from ballistix.features.comparison import coarse_rotations

    a = texture((120, 120), 31)
    b = rotate_nan(a, 40.0).astype(float) + 0.2 * texture((120, 120), 32, 1.0)
    fast_best, fast_curve = coarse_rotations(a, b, factor=2, step_deg=10.0)
    monkeypatch.setattr(cmc, "_pocketfft", None)
    best, curve = coarse_rotations(a, b, factor=2, step_deg=10.0)
    np.testing.assert_array_equal(fast_best, best)
    np.testing.assert_allclose(fast_curve, curve, rtol=1e-6)
    assert abs(angle_diff(best[0], 320.0)) <= 10  # b turned by -40 deg onto a


def test_target_and_memo_give_the_same_search_and_skip_angles_searched_before(monkeypatch):
    from ballistix.features import cmc

    ref = texture((96, 96), 41)
    tgt = rotate_nan(ref, 5.0).astype(float) + 0.3 * texture((96, 96), 42, 1.0)
    tgt[60:, :30] = np.nan
    search = CellSearch(make_cells(ref, (4, 4)))
    plain = search.search(tgt, [0.0, 3.0, 6.0])
    target, memo = cmc.Target(tgt), {}
    first = search.search(target, [0.0, 3.0, 6.0], memo=memo)
    calls = []
    real = CellSearch._search
    monkeypatch.setattr(CellSearch, "_search", lambda self, *a: calls.append(1) or real(self, *a))
    again = search.search(target, [3.0, 6.0, 9.0], memo=memo)
    assert len(calls) == 1  # only 9 degrees is new
    for key in ("corr", "shift", "overlap"):
        np.testing.assert_array_equal(plain[key], first[key])
        np.testing.assert_array_equal(again[key][:2], first[key][1:])
    np.testing.assert_array_equal(again["corr"][2], search.search(tgt, [9.0])["corr"][0])
