"""Linking a store's new exhibits (`CaseStore.link_new`): plan, verify, record.

1. **Plan** (in the calling process): each new exhibit's shortlist, found in the
   store's index by its stored descriptor, exhibits in rowid order. A pair
   compared before, or already planned for an earlier exhibit of the same run,
   is left out (the shortlist is not refilled). The plan depends only on the
   store, never on where the work runs.
2. **Verify** (one task an exhibit: here, on a pool of processes, or on a Dask
   cluster): the exhibit's scan and its shortlisted scans are read from the
   store's folder and checked against their recorded SHA-256
   (`read_cached_scan`), then compared (`ballistix.index.search.verify`: CMC,
   after the pre-check when ``verify_top`` is set). A task needs the store's
   folder and nothing else: no database, no calibration.
3. **Record** (in the calling process): each exhibit's comparisons are weighed
   with the store's calibrations and committed together with its ``linked``
   mark, as the exhibit's task finishes.

Results are therefore the same wherever the tasks run (tested: a process,
a pool, a two-worker Dask cluster). A damaged cached scan is reported back by
the task; the store records it and warns (`CaseStore._note_damaged`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BallistixError, DamagedScanError
from ..index.search import Candidate, verify
from ..io import read_npz
from ..scan import Scan
from .descriptors import fetch

__all__ = ["read_cached_scan", "ScanRef", "Job", "Outcome", "plan", "run_jobs", "verify_job"]

#: Exhibits whose descriptors are read and searched at a time while planning.
PLAN_CHUNK = 512


@dataclass(frozen=True)
class ScanRef:
    """Where an exhibit's cached scan is and what it must be: a row of ``exhibits``."""

    rowid: int
    exhibit_id: str
    scan_file: str  # relative to the store's folder
    scan_sha256: str | None
    source_sha256: str
    scan_state: str


def read_cached_scan(folder: Path, ref: ScanRef) -> Scan:
    """The cached processed scan of ``ref``, checked against the SHA-256 recorded when it was written
    (stores from before schema 3: against the exhibit's source SHA-256 kept inside the file).

    Raises
    ------
    DamagedScanError
        The file is missing, unreadable, or not the one recorded.
    """
    path, eid = Path(folder) / ref.scan_file, ref.exhibit_id
    if not path.is_file():
        if ref.scan_state == "missing":
            raise DamagedScanError(
                path,
                eid,
                "was dropped as damaged by `ballistix check --repair` (put its "
                "source back and repair again, or restore the file from a backup)",
                state="missing",
            )
        raise DamagedScanError(path, eid, "is missing from the cache")
    try:
        scan = read_npz(path)
    except (BallistixError, OSError) as e:
        raise DamagedScanError(path, eid, f"is unreadable ({e})") from None
    if ref.scan_sha256 is not None and scan.meta.get("sha256") != ref.scan_sha256:
        raise DamagedScanError(
            path,
            eid,
            "is not the file recorded at ingest (its SHA-256 differs: altered, "
            "or another exhibit's scan copied over it)",
        )
    if ref.scan_sha256 is None and scan.meta.get("source_sha256") != ref.source_sha256:
        raise DamagedScanError(
            path,
            eid,
            "was made from another source (the source SHA-256 inside it is not "
            "the exhibit's): another exhibit's scan copied over it",
        )
    return scan


@dataclass
class Job:
    """One exhibit's verification: its scan, its shortlist (candidates and their scans), and how."""

    folder: str
    query: ScanRef
    candidates: list[Candidate]
    refs: list[ScanRef]
    compare_params: dict
    verify_top: int | None = None
    precheck: dict | None = None


@dataclass
class Outcome:
    """What a `Job` found: the verified candidates (best first; unweighed), the scans found damaged
    (``{"rowid", "exhibit_id", "file", "problem", "state"}``; the query's own among them when it is
    damaged, and then ``verified`` is None: the exhibit stays unlinked), and the rowids of scans read
    fine whose recorded state was not ``ok`` (restored since)."""

    rowid: int
    verified: list[Candidate] | None
    damaged: list[dict] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)


def _read(job: Job, ref: ScanRef, out: Outcome) -> Scan | None:
    try:
        scan = read_cached_scan(Path(job.folder), ref)
    except DamagedScanError as e:  # reported, not raised: a task's exceptions would stop the batch
        out.damaged.append(
            {"rowid": ref.rowid, "exhibit_id": e.exhibit_id, "file": e.path, "problem": e.problem, "state": e.state}
        )
        return None
    if ref.scan_state != "ok":
        out.restored.append(ref.rowid)
    return scan


def verify_job(job: Job, *, n_jobs: int = 1, executor=None, strip: bool = False) -> Outcome:
    """Verify one exhibit's shortlist (see the module notes); ``n_jobs``/``executor``: compare its
    pairs on these workers. ``strip``: drop the surfaces from the comparisons (a task's result
    travels back to the caller; the store keeps no surfaces)."""
    out = Outcome(job.query.rowid, None)
    scan = _read(job, job.query, out)
    if scan is None:
        return out
    kept, targets = [], []
    for c, ref in zip(job.candidates, job.refs):
        t = _read(job, ref, out)
        if t is not None:
            kept.append(Candidate(c.id, c.descriptor_score, c.descriptor_rank))
            targets.append(t)
    out.verified = verify(
        scan,
        kept,
        targets,
        n_jobs=n_jobs,
        executor=executor,
        verify_top=job.verify_top,
        precheck=job.precheck,
        calibration=None,  # weighed where the store's calibrations are: when recorded
        **job.compare_params,
    )
    if strip:
        for c in out.verified:
            c.comparison._surfaces = ()
    return out


def _verify_task(job: Job) -> Outcome:
    return verify_job(job, strip=True)


def plan(index, db, dim: int, todo: list[int], shortlist: int) -> Iterator[tuple[int, list[Candidate] | None]]:
    """(rowid, shortlisted candidates) of each exhibit of ``todo`` (ascending rowids), lazily; None
    for an exhibit whose stored descriptor is damaged (it cannot be searched for: `check`).

    The shortlist is the ``shortlist`` nearest other exhibits by the stored descriptors (the
    store's index: compact, re-ranked by the full descriptors), less those the exhibit was
    compared with before and those planned for an earlier exhibit of ``todo``."""
    planned: dict[int, set[int]] = {}
    for start in range(0, len(todo), PLAN_CHUNK):
        part = np.asarray(todo[start : start + PLAN_CHUNK], np.int64)
        vecs = fetch(db, dim, part)
        ok = np.isfinite(vecs).all(axis=1)  # a damaged descriptor: not in the index, not planned
        scores = np.full((len(part), shortlist + 1), -np.inf, np.float32)
        ids = np.full((len(part), shortlist + 1), -1, np.int64)
        if ok.any():
            scores[ok], ids[ok] = index.search(vecs[ok], shortlist + 1)
        for rowid, good, s_row, i_row in zip(part.tolist(), ok.tolist(), scores, ids):
            if not good:
                yield rowid, None
                continue
            have = {b for (b,) in db.execute("SELECT b FROM comparisons WHERE a=?", (rowid,))}
            have |= {a for (a,) in db.execute("SELECT a FROM comparisons WHERE b=?", (rowid,))}
            have |= planned.pop(rowid, set())
            cands = []
            for s, i in zip(s_row.tolist(), i_row.tolist()):
                if i < 0 or i == rowid:
                    continue
                if len(cands) == shortlist:
                    break
                cands.append(Candidate(int(i), float(s), len(cands)))
            cands = [c for c in cands if c.id not in have]
            for c in cands:
                if c.id > rowid:  # a later exhibit of this run need not compare back
                    planned.setdefault(c.id, set()).add(rowid)
            yield rowid, cands


def run_jobs(jobs: Iterable[Job], *, n_jobs: int = 1, client=None, pool=None, many: bool = True) -> Iterator[Outcome]:
    """The `Outcome` of each job: on a Dask ``client`` (one task a job), on ``pool`` (one job a
    worker at a time when ``many``; else each job's pairs spread over the pool), or here. Jobs are
    drawn from ``jobs`` as workers free up, and outcomes come in the order they finish."""
    if client is not None:
        from .._dask import dask_as_completed

        yield from dask_as_completed(_verify_task, jobs, client)
    elif pool is not None and many:
        yield from _pool_as_completed(pool, jobs, ahead=2 * n_jobs)
    else:
        for job in jobs:
            yield verify_job(job, n_jobs=n_jobs, executor=pool)


def _pool_as_completed(pool, jobs: Iterable[Job], ahead: int) -> Iterator[Outcome]:
    running: set = set()
    for job in jobs:
        running.add(pool.submit(_verify_task, job))
        if len(running) >= ahead:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in sorted(done, key=lambda f: f.result().rowid))
    while running:
        done, running = wait(running, return_when=FIRST_COMPLETED)
        yield from (f.result() for f in sorted(done, key=lambda f: f.result().rowid))
