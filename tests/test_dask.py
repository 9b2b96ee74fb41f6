"""The checks a Dask cluster passes before ballistix sends it work (`ballistix._dask.get_client`)."""

import pytest

from ballistix import ParameterError
from ballistix._dask import dask_as_completed, dask_map, get_client, versions

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        distributed.Client(lc) as c,
    ):
        yield c


def _square(x):
    return x * x


def test_tasks_run_on_the_workers_in_order_or_as_they_finish(client):
    assert dask_map(_square, [3, 1, 2], client) == [9, 1, 4]
    assert sorted(dask_as_completed(_square, [3, 1, 2], client)) == [1, 4, 9]
    assert list(dask_as_completed(_square, [], client)) == []


def test_a_worker_with_other_versions_is_refused(client, monkeypatch):
    there = versions()["ballistix"]  # the worker process keeps the real version
    monkeypatch.setattr("ballistix._version.__version__", "0.0.0+other")
    with pytest.raises(ParameterError, match=rf"runs ballistix {there} \(here 0.0.0\+other\).*same versions"):
        get_client(client)


def test_a_scheduler_without_workers_is_refused_after_waiting():
    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as lc,
        distributed.Client(lc) as c,
    ):
        with pytest.raises(ParameterError, match="no Dask worker joined the scheduler .* within 1 s"):
            get_client(c, wait_s=1)


@pytest.mark.parametrize("bad", [3, object(), None])
def test_client_must_be_a_client_or_an_address(bad):
    with pytest.raises(ParameterError, match="distributed.Client or a scheduler address"):
        get_client(bad)
