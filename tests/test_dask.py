"""The checks a Dask cluster passes before ballistix sends it work (`ballistix._dask.get_client`)."""

import os
import platform
import sys

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


def _page_faults(_):
    """Minor page faults of allocating, filling and freeing a 16 MB array 20 times in this process."""
    import resource

    import numpy as np

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        a = np.empty(4 << 20, np.float32)
        a.fill(1.0)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_workers_reuse_large_blocks_instead_of_faulting_them_in_each_time(client):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which maps and unmaps every large
    array again (4,096 page faults for each 16 MB): the tasks ballistix sends reset glibc's thresholds."""
    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        pytest.skip("glibc's malloc only")
    if not all(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()):
        pytest.skip("this Dask starts its workers without MALLOC_TRIM_THRESHOLD_")
    faults = dask_map(_page_faults, [None], client)[0]
    assert faults < 4096  # 20 x 4,096 without the reset: every array faulted in anew
