"""Optional Dask (``dask.distributed``) execution for batch work that outgrows one machine.

Every function that takes ``client=`` runs locally when it is None, and on the
cluster when it is a `distributed.Client` or a scheduler address
("tcp://host:8786"). Tasks are pure functions of their arguments, results come
back in input order, and each worker runs OpenCV and FAISS single-threaded
(the cluster's parallelism is its workers).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

from .errors import ParameterError

__all__ = ["get_client", "dask_map", "dask_as_completed", "single_threaded", "steady_malloc", "versions"]


def single_threaded() -> None:
    """Make this worker process's OpenCV, and FAISS where it is loaded, single-threaded (workers
    share the machine: the parallelism is theirs). Used by Dask workers and `process_pool`."""
    import cv2

    cv2.setNumThreads(1)
    faiss = sys.modules.get("faiss")  # loaded with ballistix.index; a compare worker never needs it
    if faiss is not None:
        faiss.omp_set_num_threads(1)


#: Seconds to wait for a first worker to join the scheduler (a cluster manager starts them as jobs).
WAIT_FOR_WORKERS_S = 300.0


def versions() -> dict[str, str]:
    """The versions of the libraries that decide a result's bits, in this process."""
    import cv2
    import numpy
    import scipy

    from ._version import __version__

    return {"ballistix": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__, "opencv": cv2.__version__}


def get_client(client, *, wait_s: float | None = None):
    """A `distributed.Client` from a client or a scheduler address, checked: at least one worker
    joins within ``wait_s`` seconds (default `WAIT_FOR_WORKERS_S`), and every worker runs the same
    versions of ballistix, NumPy, SciPy and OpenCV as this process (`versions`), so that the
    results are the ones this process would give."""
    try:
        from distributed import Client
    except ImportError:
        raise ParameterError("client= needs dask.distributed: pip install 'ballistix[dask]'") from None
    if isinstance(client, str):
        client = Client(client)
    elif not isinstance(client, Client):
        raise ParameterError(f"client must be a distributed.Client or a scheduler address, got {type(client).__name__}")
    wait_s = WAIT_FOR_WORKERS_S if wait_s is None else wait_s
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError:
        raise ParameterError(
            f"no Dask worker joined the scheduler {client.scheduler.address} within {wait_s:.0f} s"
        ) from None
    here = versions()
    for worker, there in client.run(versions).items():
        if there != here:
            diff = ", ".join(f"{k} {there.get(k)} (here {v})" for k, v in here.items() if there.get(k) != v)
            raise ParameterError(
                f"Dask worker {worker} runs {diff}: its results could differ from this process's; "
                "install the same versions on the workers"
            )
    return client


#: glibc malloc settings in a Dask worker. Dask's nanny starts workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at 128 KiB: every large
#: temporary array of a comparison is then mapped and unmapped again, each page faulted in anew.
#: Measured on Fadul 1-1 vs 1-2, one core: 1.06 s a comparison (0.38 s of it system time, 169,000
#: page faults) instead of 0.59 s (3,600 faults). Large blocks up to 64 MiB now come from the heap,
#: and up to 256 MiB of freed heap is kept for the next task.
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
_malloc_set = False


def steady_malloc() -> None:
    """Set `MMAP_THRESHOLD_BYTES` and `TRIM_THRESHOLD_BYTES` in this process (once; glibc only,
    elsewhere nothing)."""
    global _malloc_set
    if _malloc_set or not sys.platform.startswith("linux"):
        return
    _malloc_set = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no mallopt worth setting)
        return
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def _run(fn, item):
    single_threaded()
    steady_malloc()
    return fn(item)


def dask_map(fn: Callable, items: Sequence, client) -> list:
    """``[fn(x) for x in items]`` on a Dask cluster, in order (``fn`` must be importable by the workers)."""
    c = get_client(client)
    futures = c.map(_run, [fn] * len(items), list(items), pure=False)
    return c.gather(futures)


def dask_as_completed(fn: Callable, items: Iterable, client, *, ahead: int | None = None) -> Iterator:
    """``fn(x)`` for each of ``items`` on a Dask cluster, yielded as each finishes, so that the caller
    records results while the others run. ``items`` is read lazily, ``ahead`` tasks at most in
    flight (default: four per worker thread), so that producing them (a link's plan) overlaps the
    work. A task's exception is raised here."""
    from distributed import wait

    c = get_client(client)
    ahead = ahead or 4 * max(1, sum(c.nthreads().values()))
    running: set = set()

    def finished(block: bool):
        done = {f for f in running if f.done()}
        if block and not done:
            done = set(wait(running, return_when="FIRST_COMPLETED").done)
        for f in done:
            running.discard(f)
            result = f.result()
            f.release()  # the scheduler and the worker let go of it now
            yield result

    for item in items:
        running.add(c.submit(_run, fn, item, pure=False))
        yield from finished(block=len(running) >= ahead)
    while running:
        yield from finished(block=True)
