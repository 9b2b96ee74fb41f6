"""The store at scale: bulk import of prepared exhibits, and the compact (PCA) index it switches to."""

import hashlib
import warnings

import numpy as np
import pytest

import ballistix as bx
import ballistix.store.descriptors as D
from ballistix.errors import DamagedScanError, ParameterError
from ballistix.store import CaseStore

FAST = {"spacing_um": 12.5}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two processed scans written as .npz (the shared archive bulk records point to)."""
    d = tmp_path_factory.mktemp("pool")
    scans = bx.datasets.simulate(n_firearms=2, shots=1, seed=5, difficulty="easy", resolution="fast")
    out = []
    for i, s in enumerate(scans):
        proc = bx.preprocess(s, **FAST)
        bx.write_npz(proc, d / f"p{i}.npz")
        out.append((d / f"p{i}.npz", bx.describe(proc), s))
    return out


def unit_rows(n, dim, seed, rank=None):
    rng = np.random.default_rng(seed)
    if rank is None:
        x = rng.standard_normal((n, dim))
    else:  # vectors inside a rank-``rank`` subspace
        x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def records(vecs, pool, start=0, prefix="B"):
    for i, v in enumerate(vecs):
        k = start + i
        yield {
            "exhibit_id": f"{prefix}{k}",
            "source_sha256": hashlib.sha256(f"{prefix}{k}".encode()).hexdigest(),
            "descriptor": v,
            "scan_file": pool[k % len(pool)][0],
            "scene_id": f"S{k % 7}",
            "calibre": "9mm Luger",
        }


@pytest.fixture
def small_policy(monkeypatch):
    """The projection policy scaled down: compact from 16 exhibits, 8 values, refits up to 32 exhibits."""
    monkeypatch.setattr(D, "PROJECT_FROM", 16)
    monkeypatch.setattr(D, "PROJECTION_DIM", 8)
    monkeypatch.setattr(D, "TRAIN_MAX", 32)


def test_import_prepared_adds_searches_and_references_scans(tmp_path, pool):
    dim = bx.describe(bx.read_npz(pool[0][0])).size
    vecs = np.vstack([pool[0][1], pool[1][1], unit_rows(4, dim, 0)])
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        out = st.import_prepared(records(vecs, pool), batch=4)
        assert out == {"added": 6, "existing": 0, "scan_files": 2}
        assert len(st) == 6 and len(st._index) == 6
        again = st.import_prepared(records(vecs[:3], pool))  # same sources: nothing new
        assert again["added"] == 0 and again["existing"] == 3
        rows = {e["exhibit_id"]: e for e in st.exhibits()}
        assert rows["B0"]["scene_id"] == "S0" and rows["B0"]["calibre"] == "9mm Luger"
        hits = st.search(pool[1][2], k=2, shortlist=2)  # the raw scan B1 was made from
        assert hits[0]["exhibit_id"] == "B1" and hits[0]["descriptor_rank"] == 0
        assert hits[0]["descriptor_score"] == pytest.approx(1.0, abs=1e-5)
        assert np.array_equal(
            st.scan("B2").heights, bx.read_npz(pool[0][0]).heights, equal_nan=True
        )  # referenced, not copied
        assert not any((tmp_path / "s" / "scans").rglob("*.npz"))


def test_import_prepared_checks_the_referenced_scan(tmp_path, pool):
    src = tmp_path / "p.npz"
    src.write_bytes(pool[0][0].read_bytes())
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.import_prepared(records([pool[0][1]], [(src, None, None)]))
        data = bytearray(src.read_bytes())
        other = pool[1][0].read_bytes()
        src.write_bytes(other)  # another valid scan put in its place
        assert bytes(data) != other
        with pytest.raises(DamagedScanError, match="SHA-256"):
            st.scan("B0")


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"exhibit_id": "a\nb"}, "exhibit_id"),
        ({"exhibit_id": None}, "exhibit_id"),
        ({"source_sha256": "xyz"}, "source_sha256"),
        ({"descriptor": np.ones(5, np.float32)}, "descriptor"),
        ({"descriptor": None}, "descriptor"),
        ({"scan_file": None}, "scan_file"),
        ({"date": "2026-13-45"}, "date"),
        ({"kind": "suspect"}, "kind"),
    ],
)
def test_a_bad_record_stops_the_import_and_its_batch(tmp_path, pool, bad, match):
    dim = pool[0][1].size
    recs = list(records(unit_rows(6, dim, 1), pool))
    recs[4] = {**recs[4], **bad}
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        with pytest.raises(ParameterError, match=rf"record 5: .*{match}"):
            st.import_prepared(recs, batch=3)
        assert [e["exhibit_id"] for e in st.exhibits()] == ["B0", "B1", "B2"]  # the first batch only
        assert np.array_equal(st._index.ids, st._rowids())


def test_a_scan_on_another_grid_is_refused(tmp_path, pool):
    with CaseStore(tmp_path / "s", preprocess_params={"spacing_um": 6.25}) as st:
        with pytest.raises(ParameterError, match="grid"):
            st.import_prepared(records([pool[0][1]], pool))
        assert len(st) == 0


def test_the_index_turns_compact_and_refits_by_doubling(tmp_path, pool, small_policy):
    dim = pool[0][1].size
    vecs = unit_rows(80, dim, 2, rank=6)  # the store's descriptors span 6 dimensions
    folder = tmp_path / "s"
    with CaseStore(folder, preprocess_params=FAST) as st:
        st.import_prepared(records(vecs[:10], pool))
        assert st.projection["kind"] == "none" and st._index.pca_dim is None  # full descriptors while small
        st.import_prepared(records(vecs[10:20], pool, start=10))
        p = st.projection
        assert (p["kind"], p["dim"], p["fitted_on"], p["refit_at"]) == ("subspace", 8, 20, 40)
        assert st._index.pca_dim == 8 and len(st._index) == 20
        st.import_prepared(records(vecs[20:30], pool, start=20))
        assert st.projection["sha256"] == p["sha256"]  # not due yet: added with the same projection
        st.import_prepared(records(vecs[30:45], pool, start=30))
        q = st.projection
        assert q["fitted_on"] == 32 and q["store_size_at_fit"] == 45 and q["refit_at"] is None  # sample cap
        assert q["sha256"] != p["sha256"]
        # inside the fitted subspace the compact search ranks like the full descriptors
        scores, ids = st._index.search(vecs[:45], k=5)
        full = np.argsort(-(vecs[:45] @ vecs[:45].T), axis=1)[:, :5] + 1  # rowids start at 1
        assert np.array_equal(ids[:, 0], np.arange(1, 46))
        assert np.array_equal(ids, full)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the saved index and its projection are taken as they are
        with CaseStore(folder) as st:
            assert st.projection == q and st._index.projection_sha256 == q["sha256"]


def test_a_projection_that_disagrees_with_the_record_is_rebuilt(tmp_path, pool, small_policy):
    dim = pool[0][1].size
    folder = tmp_path / "s"
    with CaseStore(folder, preprocess_params=FAST) as st:
        st.import_prepared(records(unit_rows(20, dim, 3), pool))
        st._db.execute("UPDATE meta SET value=? WHERE key='projection'", ('{"kind": "subspace", "sha256": "0"}',))
    with pytest.warns(bx.errors.StoreWarning, match="projection"):
        with CaseStore(folder) as st:
            assert st.projection["sha256"] == st._index.projection_sha256


def test_training_sample_is_spread_over_the_ingest_order(monkeypatch):
    monkeypatch.setattr(D, "TRAIN_MAX", 10)
    rows = np.arange(1, 1001)
    sample = D.training_rowids(rows)
    assert len(sample) == 10 and sample[0] == 1 and sample[-1] == 1000
    assert np.array_equal(D.training_rowids(rows[:7]), rows[:7])


def test_refine_with_reranks_by_the_full_vectors():
    dim = 64
    x = unit_rows(40, dim, 4)  # full rank: an 8-value projection loses most of each vector
    index = bx.ScanIndex(dim, pca_dim=8, pca_center=False)
    index.train(x)
    index.add(np.arange(40), x)
    exact = np.argsort(-(x[:10] @ x.T), axis=1)[:, :3]
    _, compact = index.search(x[:10], 3)
    assert not np.array_equal(compact, exact)  # the projection alone ranks otherwise
    index.refine_with(lambda ids: x[ids], factor=14)  # 42 candidates: all of them
    scores, ids = index.search(x[:10], 3)
    assert np.array_equal(ids, exact)
    assert np.allclose(scores, np.take_along_axis(x[:10] @ x.T, exact, 1), atol=1e-6)  # the full cosines
    index.refine_with(lambda ids: np.where(ids[:, None] == exact[0, 1], np.nan, x[ids]), factor=14)
    _, ids = index.search(x[:1], 3)
    assert exact[0, 1] not in ids[0]  # a vector the source cannot give is left out


def test_search_refine_false_is_the_projected_search_alone():
    dim = 64
    x = unit_rows(40, dim, 4)
    index = bx.ScanIndex(dim, pca_dim=8, pca_center=False)
    index.train(x)
    index.add(np.arange(40), x)
    compact = index.search(x[:10], 3)
    calls = []
    index.refine_with(lambda ids: calls.append(len(ids)) or x[ids], factor=14)
    alone = index.search(x[:10], 3, refine=False)
    assert not calls  # the source is not read
    assert all(np.array_equal(a, b) for a, b in zip(alone, compact, strict=True))
    _, refined = index.search(x[:10], 3)  # the switch is per search: the next one re-ranks again
    assert len(calls) == 10 and not np.array_equal(refined, compact[1])
    plain = bx.ScanIndex(dim)
    plain.add(np.arange(40), x)
    assert np.array_equal(plain.search(x[:2], 3, refine=False)[1], plain.search(x[:2], 3)[1])  # nothing to skip
    with pytest.raises(ParameterError, match="refine"):
        index.search(x[:1], 3, refine=5)


def test_the_store_rowids_are_sorted_whatever_index_sqlite_reads_them_from(tmp_path, pool):
    dim = pool[0][1].size
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.import_prepared(records(unit_rows(12, dim, 9), pool))  # exhibit ids B0, B1, B10, B11, B2, ...
        plan = st._db.execute("EXPLAIN QUERY PLAN SELECT rowid FROM exhibits").fetchall()
        assert "COVERING INDEX" in plan[0][-1]  # not the table's pages
        assert np.array_equal(st._rowids(), np.arange(1, 13))
        assert np.array_equal(st._index.ids, st._rowids())


def test_fetch_gives_the_full_descriptors_in_the_order_asked(tmp_path, pool):
    dim = pool[0][1].size
    vecs = unit_rows(6, dim, 8)
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.import_prepared(records(vecs, pool))
        st._db.execute("UPDATE exhibits SET descriptor=? WHERE rowid=4", (b"\x00" * 8,))  # damaged: too short
        got = D.fetch(st._db, dim, np.array([5, 1, 4, 99, 5, 2]))  # unsorted, a repeat, damaged and absent ids
        assert D.fetch(st._db, dim, np.zeros(0, np.int64)).shape == (0, dim)
    assert np.array_equal(got[[0, 1, 4, 5]], vecs[[4, 0, 4, 1]])
    assert np.isnan(got[[2, 3]]).all()


def test_a_compact_store_shortlists_like_its_full_descriptors(tmp_path, pool, small_policy):
    dim = pool[0][1].size
    vecs = unit_rows(30, dim, 6)
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.import_prepared(records(vecs, pool))
        assert st.projection["kind"] == "subspace"
        scores, ids = st._index.search(vecs[:5], 4)
    full = vecs[:5] @ vecs.T
    top = np.argsort(-full, axis=1)[:, :4]
    covered = ids == top + 1  # rowids start at 1; 20 candidates of 30 by the 8-value projection
    assert covered.mean() > 0.9
    assert np.allclose(scores[covered], np.take_along_axis(full, top, 1)[covered], atol=1e-5)


def test_store_search_verifies_only_the_prechecked_best(tmp_path, pool):
    dim = pool[0][1].size
    vecs = np.vstack([pool[0][1], pool[1][1], unit_rows(2, dim, 7)])
    with CaseStore(tmp_path / "s", preprocess_params=FAST) as st:
        st.import_prepared(records(vecs, pool))
        every = st.search(pool[1][2], k=4, shortlist=4)
        top = st.search(pool[1][2], k=4, shortlist=4, verify_top=1)
    assert len(every) == 4 and len(top) == 1
    assert top[0]["exhibit_id"] == "B1" and top[0]["cmc_count"] == every[0]["cmc_count"]
