import numpy as np
import pytest

import ballistix as bx
from ballistix.features.describe import descriptor_info


@pytest.fixture(scope="module")
def db():
    """Three guns, two shots each, on 12.5 um grids (search works the same on any one grid)."""
    scans = [
        bx.preprocess(s, spacing_um=12.5)
        for s in bx.datasets.simulate(n_firearms=3, shots=2, seed=5, difficulty="moderate", resolution="fast")
    ]
    gun = [s.meta["labels"]["firearm"] for s in scans]
    index = bx.ScanIndex(descriptor_info()["dim"], descriptor=descriptor_info())
    index.add(np.arange(len(scans)) + 100, np.array([bx.describe(s) for s in scans]))
    return index, {100 + i: s for i, s in enumerate(scans)}, gun


def test_two_stage_search_ranks_the_same_gun_first(db):
    index, scans, gun = db
    for q in (100, 102, 104):
        hits = bx.search(index, scans[q], k=3, shortlist=5, scans=scans, exclude=[q])
        assert q not in [h.id for h in hits]
        best = hits[0]
        assert gun[best.id - 100] == gun[q - 100]
        assert best.cmc_count >= 6 and best.comparison.cmc_count == best.cmc_count
        assert [h.cmc_count for h in hits] == sorted((h.cmc_count for h in hits), reverse=True)
        assert -1 <= best.descriptor_score <= 1 and 0 <= best.descriptor_rank < 5


def test_descriptor_only_without_scans(db):
    index, scans, _ = db
    hits = bx.search(index, scans[100], k=4)
    assert len(hits) == 4 and hits[0].id == 100 and hits[0].cmc_count is None
    assert hits[0].descriptor_score == pytest.approx(1.0, abs=1e-5)
    assert [h.descriptor_rank for h in hits] == [0, 1, 2, 3]
    assert set(hits[0].to_dict()) == {"id", "descriptor_score", "descriptor_rank", "cmc_count", "score"}


def test_scans_may_be_a_callable(db):
    index, scans, gun = db
    asked = []

    def lookup(i):
        asked.append(i)
        return scans[i]

    hits = bx.search(index, scans[100], k=1, shortlist=2, scans=lookup, exclude=[100])
    from_mapping = bx.search(index, scans[100], k=1, shortlist=2, scans=scans, exclude=[100])
    assert [h.to_dict() for h in hits] == [h.to_dict() for h in from_mapping]
    assert hits[0].id == 101 and gun[1] == gun[0] and hits[0].cmc_count >= 6  # the same gun, verified by CMC
    assert len(asked) == 2 and 100 not in asked  # only the shortlist is looked up, never the excluded query


def test_missing_database_scan_is_a_clear_error(db):
    index, scans, _ = db
    partial = {k: v for k, v in scans.items() if k != 101}
    with pytest.raises(bx.ParameterError, match="no scan for id 101"):
        bx.search(index, scans[100], k=6, shortlist=6, scans=partial)


def test_index_of_other_descriptor_parameters_is_refused(db):
    _, scans, _ = db
    other = descriptor_info(n_radii=8)
    index = bx.ScanIndex(other["dim"], descriptor={**other, "name": "someone-elses-descriptor"})
    with pytest.raises(bx.DescriptorMismatchError, match="someone-elses-descriptor"):
        bx.search(index, scans[100])
    index = bx.ScanIndex(other["dim"] + 1)
    with pytest.raises(bx.DescriptorMismatchError, match="dimension"):
        bx.search(index, scans[100])


def test_query_uses_the_index_descriptor_parameters(db):
    _, scans, _ = db
    info = descriptor_info(n_radii=8, n_harmonics=4)
    index = bx.ScanIndex(info["dim"], descriptor=info)
    index.add([1], bx.describe(scans[100], n_radii=8, n_harmonics=4)[None])
    hits = bx.search(index, scans[100], k=1)
    assert hits[0].id == 1 and hits[0].descriptor_score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kw, match", [({"k": 0}, "k must"), ({"shortlist": 2.5}, "shortlist")])
def test_bad_arguments(db, kw, match):
    index, scans, _ = db
    with pytest.raises(bx.ParameterError, match=match):
        bx.search(index, scans[100], **kw)


def test_a_callable_may_leave_candidates_out(db):
    index, scans, _ = db
    every = bx.search(index, scans[100], k=5, shortlist=5, scans=scans, exclude=[100])
    left_out = every[0].id
    hits = bx.search(
        index, scans[100], k=5, shortlist=5, exclude=[100], scans=lambda i: None if i == left_out else scans[i]
    )
    assert [h.id for h in hits] == [h.id for h in every if h.id != left_out]  # not refilled, same results
    assert [h.cmc_count for h in hits] == [h.cmc_count for h in every if h.id != left_out]
    with pytest.raises(bx.ParameterError, match="NoneType"):
        bx.search(index, scans[100], k=5, shortlist=5, scans={**scans, left_out: None}, exclude=[100])


def test_verify_top_verifies_only_the_best_prechecked_candidates(db):
    index, scans, gun = db
    full = bx.search(index, scans[100], k=5, shortlist=5, scans=scans, exclude=[100])
    assert all(h.precheck_score is None for h in full) and "precheck_score" not in full[0].to_dict()
    asked = []

    def lookup(i):
        asked.append(i)
        return scans[i]

    top = bx.search(index, scans[100], k=5, shortlist=5, scans=lookup, exclude=[100], verify_top=2)
    assert len(top) == 2 and len(asked) == 5  # every shortlisted scan is pre-checked, two are compared
    assert top[0].id == 101 and gun[1] == gun[0] and top[0].cmc_count >= 6
    assert all(-1 <= h.precheck_score <= 1 for h in top) and "precheck_score" in top[0].to_dict()
    # the verified candidates' comparisons are the full search's, bit for bit
    by_id = {h.id: h for h in full}
    assert all(h.comparison.to_dict() == by_id[h.id].comparison.to_dict() for h in top)
    # on two workers (one pool for both stages): the same
    two = bx.search(index, scans[100], k=5, shortlist=5, scans=scans, exclude=[100], verify_top=2, n_jobs=2)
    assert [h.to_dict() for h in two] == [h.to_dict() for h in top]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"verify_top": 0}, "verify_top must be a positive integer"),
        ({"verify_top": 2.5}, "verify_top must be a positive integer"),
        ({"precheck": {"factor": 8}}, "without verify_top"),
        ({"verify_top": 2, "precheck": {"fctor": 8}}, "unknown pre-check parameters"),
    ],
)
def test_verify_top_and_precheck_are_checked(db, kwargs, match):
    index, scans, _ = db
    with pytest.raises(bx.ParameterError, match=match):
        bx.search(index, scans[100], k=2, shortlist=3, scans=scans, **kwargs)
