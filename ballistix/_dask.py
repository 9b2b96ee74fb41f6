"""Optional Dask (``dask.distributed``) execution for batch work that outgrows one machine.

Every function that takes ``client=`` runs locally when it is None, and on the
cluster when it is a `distributed.Client` or a scheduler address
("tcp://host:8786"). Tasks are pure functions of their arguments, results come
back in input order, and each worker runs OpenCV and FAISS single-threaded
(the cluster's parallelism is its workers).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

from .errors import ParameterError

__all__ = ["get_client", "dask_map", "dask_as_completed", "single_threaded"]


def single_threaded() -> None:
    """Make this worker process's OpenCV, and FAISS where it is loaded, single-threaded (workers
    share the machine: the parallelism is theirs). Used by Dask workers and `process_pool`."""
    import cv2

    cv2.setNumThreads(1)
    faiss = sys.modules.get("faiss")  # loaded with ballistix.index; a compare worker never needs it
    if faiss is not None:
        faiss.omp_set_num_threads(1)


def get_client(client):
    """A `distributed.Client` from a client or a scheduler address."""
    try:
        from distributed import Client
    except ImportError:
        raise ParameterError("client= needs dask.distributed: pip install 'ballistix[dask]'") from None
    if isinstance(client, Client):
        return client
    if isinstance(client, str):
        return Client(client)
    raise ParameterError(f"client must be a distributed.Client or a scheduler address, got {type(client).__name__}")


def _run(fn, item):
    single_threaded()
    return fn(item)


def dask_map(fn: Callable, items: Sequence, client) -> list:
    """``[fn(x) for x in items]`` on a Dask cluster, in order (``fn`` must be importable by the workers)."""
    c = get_client(client)
    futures = c.map(_run, [fn] * len(items), list(items), pure=False)
    return c.gather(futures)


def dask_as_completed(fn: Callable, items: Iterable, client) -> Iterator:
    """``fn(x)`` for each of ``items`` on a Dask cluster, yielded as each finishes (so that the
    caller can record results while the others run); a task's exception is raised here."""
    from distributed import as_completed

    c = get_client(client)
    items = list(items)
    if not items:
        return
    for future in as_completed(c.map(_run, [fn] * len(items), items, pure=False)):
        result = future.result()
        future.release()  # the scheduler and the worker let go of it now
        yield result
