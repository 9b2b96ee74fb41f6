"""bx.compare / compare_many / Comparison on simulated and real surfaces."""

import json
from concurrent.futures import Executor, Future
from types import SimpleNamespace

import numpy as np
import pytest

import ballistix as bx
from ballistix.evaluation.realism import fadul_like, truth_breech_face
from ballistix.features.cmc import rotate_nan
from ballistix.features.comparison import compare_many
from ballistix.features.filters import gaussian_bandpass


def processed(scan, spacing_m=12.5e-6):
    """A simulated raw scan made comparable with its ground truth (no preprocess needed)."""
    z = fadul_like(scan, truth_breech_face(scan), spacing_m=spacing_m, long_cutoff_um=250)
    return bx.Scan(z, spacing_m, spacing_m, {"labels": scan.meta["labels"], "truth": scan.meta["truth"]})


@pytest.fixture(scope="module")
def sims():
    raw = bx.datasets.simulate(2, 2, seed=21, difficulty="easy", resolution="standard", models=["Ruger P95"])
    return [processed(s) for s in raw]


@pytest.fixture(scope="module")
def km(sims):
    return bx.compare(sims[0], sims[1])


def test_same_gun_identified_with_the_true_rotation(sims, km):
    assert km.cmc_count >= 6
    truth = (sims[1].meta["truth"]["rotation_deg"] - sims[0].meta["truth"]["rotation_deg"]) % 360
    assert abs((km.rotation_deg - truth + 180) % 360 - 180) <= 6
    assert int(km.score) == km.cmc_count and 0 < km.score - km.cmc_count < 1


def test_different_guns_not_identified(sims):
    res = bx.compare(sims[0], sims[2])
    assert res.cmc_count < 6
    assert res.cmc_count < bx.compare(sims[0], sims[1]).cmc_count


def test_comparison_records_cells_params_inputs_and_version(sims, km):
    assert len(km.cells) == km.n_cells > 10
    congruent = [c for c in km.cells if c["congruent"]]
    assert len(congruent) >= 6 and all(c["correlation"] >= 0.5 for c in congruent)
    assert km.params["grid"] == [8, 8] and km.params["rotation"] == "full"
    assert km.inputs["a"]["label"] == sims[0].meta["labels"]["exhibit"]
    assert len(km.inputs["a"]["heights_sha256"]) == 64
    assert km.version == bx.__version__
    d = json.loads(json.dumps(km.to_dict()))
    assert d["cmc_count"] == km.cmc_count and len(d["cells"]) == len(km.cells)


def test_deterministic(sims, km):
    again = bx.compare(sims[0], sims[1])
    assert again.to_dict() == km.to_dict()


def test_plot_draws_cells_on_both_surfaces(km):
    fig = km.plot()
    axa, axb = fig.axes[:2]
    assert len(axa.patches) == km.n_cells
    assert len(axb.patches) == sum(np.isfinite(c["correlation"]) for c in km.cells)


def test_reference_grid_mode_finds_small_rotations(sims):
    a = sims[0]
    b = bx.Scan(rotate_nan(a.heights, 12.0).astype(float), a.dx, a.dy, {})
    res = bx.compare(a, b, rotation="reference")
    # b is a turned 12 deg counter-clockwise: b must turn back by -12 deg to align with a
    assert res.cmc_count >= 20 and abs(res.rotation_deg - 348.0) <= 3
    assert res.params["rotation"] == "reference"


def test_compare_many_matches_compare_in_order(sims):
    pairs = [(sims[0], sims[1]), (sims[0], sims[2])]
    serial = bx.compare_many(pairs, progress=False)
    parallel = bx.compare_many(pairs, n_jobs=2, progress=False)
    assert (
        [r.cmc_count for r in serial]
        == [r.cmc_count for r in parallel]
        == [bx.compare(a, b).cmc_count for a, b in pairs]
    )
    drawn = parallel[0].plot().axes[0].images[0].get_array()  # results from workers draw the caller's scans
    assert np.array_equal(np.ma.filled(drawn, np.nan), sims[0].heights, equal_nan=True)
    assert len(parallel[1].plot().axes[0].patches) == parallel[1].n_cells
    # one pool kept across calls gives the same results
    psutil = pytest.importorskip("psutil")
    from ballistix import evidence
    from ballistix.features.comparison import process_pool

    def workers():  # this process's pool workers (not multiprocessing's resource tracker)
        pids = set()
        for child in psutil.Process().children():
            try:
                if any("spawn_main" in a for a in child.cmdline()):
                    pids.add(child.pid)
            except psutil.Error:  # gone meanwhile
                pass
        return pids

    cal = evidence.fit(
        np.array([[0, 0.0, 0.1], [1, 0.0, 0.15], [20, 0.7, 0.4], [25, 0.75, 0.45]]), [False, False, True, True]
    )
    before, seen = workers(), []
    with process_pool(2) as pool:
        kept = []
        for p in pairs:
            kept.append(bx.compare_many([p], executor=pool, progress=False, calibration=cal)[0])
            seen.append(workers() - before)
    assert seen[0] and seen[0] <= seen[1]  # the workers of the first call are still up for the second
    assert not workers() & seen[1]  # and gone once the pool is closed
    assert [r.to_dict()["cells"] for r in kept] == [r.to_dict()["cells"] for r in serial]
    # weighed after the workers return: as if weighed here
    assert [r.to_dict() for r in kept] == [evidence.weigh(r, cal).to_dict() for r in serial]
    assert all(r.log10_lr is not None for r in kept) and [r.evidence for r in parallel] == [r.evidence for r in serial]


class _InProcess(Executor):
    """A caller's executor that is none of the standard library's pools."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_compare_many_on_any_callers_executor_gives_the_same_results():
    raw = bx.datasets.simulate(1, 2, seed=3, difficulty="easy", resolution="fast")
    scans = [bx.Scan(fadul_like(s, truth_breech_face(s), spacing_m=25e-6), 25e-6, 25e-6) for s in raw]
    pairs = [(scans[0], scans[1]), (scans[1], scans[0])]
    executor = _InProcess()
    got = bx.compare_many(pairs, executor=executor, progress=False)
    want = bx.compare_many(pairs, progress=False)
    assert [r.to_dict()["cells"] for r in got] == [r.to_dict()["cells"] for r in want]


class _Chunks(Executor):
    """An executor that records how `compare_many` splits the pairs among its workers (the
    chunks of ``map``), and returns placeholders instead of comparing."""

    def submit(self, fn, /, *args, **kwargs):
        raise AssertionError("compare_many maps its pairs")

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        jobs = list(zip(*iterables))
        self.chunks = [jobs[i : i + chunksize] for i in range(0, len(jobs), chunksize)]
        return [SimpleNamespace() for _ in jobs]


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_compare_many_hands_every_worker_of_a_callers_executor_a_few_chunks(sims, workers):
    pairs = [(sims[0], sims[1])] * 64
    told, untold = _Chunks(), _Chunks()
    compare_many(pairs, n_jobs=workers, executor=told, progress=False)
    assert sum(len(c) for c in told.chunks) == len(pairs)
    assert 2 * workers <= len(told.chunks) < len(pairs)  # a few chunks per worker, of several pairs each
    # a caller's executor of untold size: one pair at a time keeps all of its workers busy
    compare_many(pairs, executor=untold, progress=False)
    assert [len(c) for c in untold.chunks] == [1] * len(pairs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(grid=(0, 8)),
        dict(wobble=1),
        dict(method="best"),
        dict(directions="up"),
        dict(rotation="any"),
        dict(rotation=[]),
        dict(corr_threshold=2.0),
        dict(shift_tolerance_um=-1),
    ],
)
def test_bad_parameters(sims, kwargs):
    with pytest.raises(bx.ParameterError):
        bx.compare(sims[0], sims[1], **kwargs)


def test_bad_inputs(sims):
    a = sims[0]
    with pytest.raises(bx.ParameterError, match="grid"):
        bx.compare(a, bx.Scan(a.heights, a.dx * 2, a.dy * 2))
    with pytest.raises(bx.ParameterError, match="no valid points"):
        bx.compare(a, bx.Scan(np.full((50, 50), np.nan), a.dx, a.dy))
    with pytest.raises(bx.ParameterError):
        bx.compare(a, a.heights)


def _fadul(shared_data, name):
    s = bx.read_scan(shared_data / "fadul" / f"fadul-{name}.x3p")
    return bx.Scan(gaussian_bandpass(s.heights, s.dx, long_cutoff_um=250), s.dx, s.dy, {"labels": {"exhibit": name}})


@pytest.mark.slow
def test_real_fadul_pair_in_any_orientation(shared_data):
    a, b, c = (_fadul(shared_data, n) for n in ("1-1", "1-2", "2-1"))
    rng = np.random.default_rng(0)
    angle = float(rng.uniform(0, 360))
    side = int(np.ceil(np.hypot(*b.shape)))
    b_rot = bx.Scan(rotate_nan(b.heights, angle, (side, side)).astype(float), b.dx, b.dy, {})
    km = bx.compare(a, b_rot)
    knm = bx.compare(a, c)
    assert km.cmc_count >= 15  # NIST: 27
    assert knm.cmc_count < 6  # NIST: 0


def _with_segmentation(s, status, reasons=()):
    meta = {
        **s.meta,
        "processing": [
            {
                "step": "find_breech_face",
                "params": {},
                "result": {"status": status, "reasons": list(reasons), "field_of_view": "wide"},
            }
        ],
    }
    return bx.Scan(s.heights, s.dx, s.dy, meta)


def test_lr_withheld_when_a_region_is_doubtful(sims):
    """A comparison resting on a doubtful breech-face region gives no likelihood ratio, in either direction."""
    from ballistix import evidence

    X = np.array([[0, 0.0, 0.1], [1, 0.0, 0.15], [20, 0.7, 0.4], [25, 0.75, 0.45]])
    cal = evidence.fit(X, [False, False, True, True])
    a, b = sims[0], sims[1]
    plain = bx.compare(a, b, calibration=cal)
    assert plain.log10_lr is not None and "segmentation" not in plain.evidence  # nothing on record: as before
    ok = bx.compare(_with_segmentation(a, "ok"), _with_segmentation(b, "ok"), calibration=cal)
    assert ok.log10_lr == plain.log10_lr and ok.evidence["segmentation"] == {"a": "ok", "b": "ok", "lr_withheld": False}
    assert ok.inputs["a"]["segmentation"]["status"] == "ok"
    doubt = bx.compare(
        _with_segmentation(a, "ok"), _with_segmentation(b, "doubtful", ["31% of the annulus clipped"]), calibration=cal
    )
    assert doubt.cmc_count == plain.cmc_count  # the count stays, as a feature for an examiner
    assert doubt.log10_lr is None and doubt.lr is None and "conclusion" not in doubt.evidence
    assert doubt.evidence["segmentation"] == {"a": "ok", "b": "doubtful", "lr_withheld": True}
    assert "not trustworthy" in doubt.evidence["note"] and "31% of the annulus clipped" in doubt.evidence["note"]
    assert json.loads(json.dumps(doubt.to_dict()))["inputs"]["b"]["segmentation"]["status"] == "doubtful"
    # without a calibration too
    failed = bx.compare(_with_segmentation(a, "failed", ["x"]), b, calibration=None)
    assert failed.evidence["segmentation"]["lr_withheld"]


def test_a_prepared_query_gives_the_same_comparison_bit_for_bit(sims):
    import pickle

    from ballistix.features import comparison as cmp

    q = cmp.Query(sims[0])
    for b in sims[1:]:
        assert cmp.compare(q, b).to_dict() == cmp.compare(sims[0], b).to_dict()
    kw = dict(rotation="reference", directions="forward")
    fwd = cmp.Query(sims[0], **kw)
    want = cmp.compare(sims[0], sims[1], **kw).to_dict()
    assert cmp.compare(fwd, sims[1]).to_dict() == cmp.compare(fwd, sims[1], **kw).to_dict() == want
    with pytest.raises(bx.ParameterError, match="other comparison parameters"):
        cmp.compare(q, sims[1], grid=(6, 6))
    # in a worker: prepared once per query, whatever the number of chunks it arrives in
    cmp._worker_queries.clear()
    one, two = pickle.loads(pickle.dumps(q)), pickle.loads(pickle.dumps(q))
    assert one is not q and one._shared is two._shared and one.scan is not two.scan
    assert list(cmp._worker_queries) == [q.token()]
    assert cmp.compare(two, sims[1]).to_dict() == cmp.compare(sims[0], sims[1]).to_dict()
    other = pickle.loads(pickle.dumps(cmp.Query(sims[1])))
    assert other._shared is not one._shared and len(cmp._worker_queries) == 2
    cmp._worker_queries.clear()


def test_compare_many_prepares_each_shared_a_once(sims, monkeypatch):
    from ballistix.features import comparison as cmp

    made = []
    real = cmp.Query.__init__
    monkeypatch.setattr(cmp.Query, "__init__", lambda self, *a, **k: made.append(1) or real(self, *a, **k))
    pairs = [(sims[0], sims[1]), (sims[0], sims[2]), (sims[1], sims[2]), (sims[0], sims[3])]
    got = compare_many(pairs, progress=False)
    assert len(made) == 2
    assert [r.to_dict() for r in got] == [cmp.compare(a, b).to_dict() for a, b in pairs]
