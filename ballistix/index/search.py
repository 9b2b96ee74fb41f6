"""Two-stage database search: a FAISS shortlist by descriptor, then CMC verification."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..errors import DescriptorMismatchError, ParameterError
from ..features.comparison import Comparison, process_pool
from ..features.describe import describe, descriptor_params
from ..features.precheck import precheck_scores
from ..scan import Scan
from ..verify import compare_many
from .scan_index import ScanIndex

__all__ = ["Candidate", "check_top", "query_vector", "rerank", "search", "verify"]


@dataclass
class Candidate:
    """One database scan returned by `search`.

    ``descriptor_score`` is the cosine similarity of the descriptors (first
    stage, in [-1, 1]) and ``descriptor_rank`` the candidate's place in the
    shortlist (0 = most similar). ``cmc_count`` and ``score`` come from
    `compare` (second stage; None when no scans were given for it), and
    ``comparison`` is the full `Comparison`. ``precheck_score`` is the
    pre-check's whole-surface correlation when the search was asked to
    verify only its best candidates (``verify_top``; otherwise None).
    """

    id: int
    descriptor_score: float
    descriptor_rank: int
    cmc_count: int | None = None
    score: float | None = None
    comparison: Comparison | None = None
    precheck_score: float | None = None

    def to_dict(self) -> dict:
        d = {
            "id": self.id,
            "descriptor_score": self.descriptor_score,
            "descriptor_rank": self.descriptor_rank,
            "cmc_count": self.cmc_count,
            "score": self.score,
        }
        if self.precheck_score is not None:  # only when the search ran the pre-check (verify_top)
            d["precheck_score"] = self.precheck_score
        return d


def rerank(candidates: list[Candidate]) -> list[Candidate]:
    """Sort verified candidates best first: CMC count, then the comparison's score, then
    descriptor similarity, then id (so that ties resolve the same way every time)."""
    candidates.sort(key=lambda c: (-c.cmc_count, -c.score, -c.descriptor_score, c.id))
    return candidates


def query_vector(index: ScanIndex, scan: Scan) -> np.ndarray:
    """The descriptor of ``scan`` made with the parameters ``index`` was built with."""
    info = index.descriptor
    vec = describe(scan) if info is None else describe(scan, **descriptor_params(info))
    if vec.size != index.dim:
        raise DescriptorMismatchError(f"descriptor of length {vec.size} for an index of dimension {index.dim}")
    return vec


def search(
    index: ScanIndex,
    scan: Scan,
    *,
    k: int = 20,
    shortlist: int = 200,
    scans: Mapping[int, Scan] | Callable[[int], Scan | None] | None = None,
    exclude=(),
    n_jobs: int = 1,
    progress: bool = False,
    client=None,
    executor=None,
    verify_top: int | None = None,
    precheck: dict | None = None,
    **compare_params,
) -> list[Candidate]:
    """Find the database scans most likely fired by the same gun as ``scan``.

    Stage 1: the ``shortlist`` nearest descriptors in ``index`` (milliseconds).
    Stage 2: `compare` (Congruent Matching Cells) of ``scan`` with each
    shortlisted scan, which decides the final order: CMC count first, then the
    comparison's score, then the descriptor similarity.

    Parameters
    ----------
    index : ScanIndex
        Built from `describe` vectors of processed scans.
    scan : Scan
        The processed query scan (see `preprocess`).
    k : int
        Candidates returned.
    shortlist : int
        Candidates verified by CMC (at least ``k``).
    scans : mapping or callable, optional
        Gives the processed database scan of an id (``scans[id]`` or
        ``scans(id)``), asked for each shortlisted id in turn. A callable may
        return None for an id it cannot or need not give (a damaged cached
        scan, a pair compared before): that candidate is left out, and the
        shortlist is not refilled. Without ``scans`` only stage 1 runs.
    exclude : iterable of int
        Ids never returned (for example the query's own id); the shortlist
        holds the ``shortlist`` nearest other ids.
    n_jobs, progress, client, executor, **compare_params
        Passed to `compare_many` (``bx.compare_many``: comparison parameters and
        ``calibration``). With ``n_jobs`` > 1 and neither ``executor`` nor
        ``client``, one pool of workers serves the pre-check and the comparisons.
    verify_top : int, optional
        Verify only this many candidates: every shortlisted scan is first
        scored by a cheap pre-check (`ballistix.features.precheck`:
        whole-surface correlation over the full circle, a few milliseconds
        a candidate), and only the ``verify_top`` best go on to `compare`;
        the others are neither compared nor returned. None (the default):
        every shortlisted scan is compared. It trades recall for time;
        docs/search.md ("Verification at scale") gives the measured curve.
    precheck : dict, optional
        Pre-check settings (`ballistix.features.precheck.PRECHECK_DEFAULTS`:
        ``factor``, ``step_deg``, ``max_shift_um``), used with ``verify_top``.

    Returns
    -------
    list of Candidate
        Best first, at most ``k`` (and at most ``verify_top``).

    Examples
    --------
    >>> import ballistix as bx
    >>> sims = [bx.preprocess(s) for s in bx.datasets.simulate(n_firearms=3, shots=2, seed=0)]  # doctest: +SKIP
    >>> index = bx.ScanIndex(dim=bx.describe(sims[0]).size)  # doctest: +SKIP
    >>> index.add(range(6), [bx.describe(s) for s in sims])  # doctest: +SKIP
    >>> hits = bx.search(index, sims[0], k=3, shortlist=5, scans=dict(enumerate(sims)), exclude=[0])  # doctest: +SKIP
    """
    if not isinstance(index, ScanIndex):
        raise ParameterError(f"search expects a ScanIndex, got {type(index).__name__}")
    for name, v in (("k", k), ("shortlist", shortlist)):
        _check_positive(name, v)
    check_top(verify_top, precheck)
    k, shortlist = int(k), max(int(shortlist), int(k))
    excluded = {int(i) for i in np.atleast_1d(np.asarray(list(exclude), dtype=np.int64))}
    vec = query_vector(index, scan)
    dscores, ids = index.search(vec[None, :], shortlist + len(excluded))
    cands = []
    for s, i in zip(dscores[0], ids[0]):
        if i < 0 or int(i) in excluded:
            continue
        cands.append(Candidate(int(i), float(s), len(cands)))
        if len(cands) == shortlist:
            break
    if scans is None:
        return cands[:k]
    get = scans if callable(scans) else scans.__getitem__
    kept, targets = [], []
    for c in cands:
        try:
            t = get(c.id)
        except (KeyError, IndexError):
            raise ParameterError(f"scans has no scan for id {c.id}, which is in the index") from None
        if t is None and callable(scans):  # left out by the caller
            continue
        if not isinstance(t, Scan):
            raise ParameterError(f"scans gave a {type(t).__name__} for id {c.id}, expected a Scan")
        kept.append(c)
        targets.append(t)
    return verify(
        scan,
        kept,
        targets,
        n_jobs=n_jobs,
        progress=progress,
        client=client,
        executor=executor,
        verify_top=verify_top,
        precheck=precheck,
        **compare_params,
    )[:k]


def _check_positive(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or int(v) != v or v < 1:
        raise ParameterError(f"{name} must be a positive integer, got {v!r}")


def check_top(verify_top, precheck) -> None:
    """Check ``verify_top`` (None or a positive integer) and ``precheck`` (only with it)."""
    if verify_top is not None:
        _check_positive("verify_top", verify_top)
    if precheck is not None and verify_top is None:
        raise ParameterError("precheck settings were given without verify_top: the pre-check only runs with it")


def verify(
    scan: Scan,
    candidates: list[Candidate],
    targets: list[Scan],
    *,
    n_jobs: int = 1,
    progress: bool = False,
    client=None,
    executor=None,
    verify_top: int | None = None,
    precheck: dict | None = None,
    **compare_params,
) -> list[Candidate]:
    """The second stage of `search`: compare ``scan`` with the shortlisted ``targets`` (the scans of
    ``candidates``, in the same order) and return the candidates verified, best first (`rerank`).

    ``verify_top``, ``precheck``, ``n_jobs``, ``progress``, ``client``, ``executor`` and
    ``**compare_params`` as for `search`. Used by `search` and by a store's `link_new`, which
    draws up every new exhibit's shortlist first and verifies each here or on a worker.
    """
    check_top(verify_top, precheck)
    if len(candidates) != len(targets):
        raise ParameterError(f"{len(candidates)} candidates for {len(targets)} scans")
    kept = list(candidates)
    own_pool = n_jobs > 1 and executor is None and client is None and verify_top is not None
    with process_pool(n_jobs) if own_pool else nullcontext(executor) as pool:
        if verify_top is not None:
            kept, targets = _precheck(scan, kept, targets, verify_top, precheck or {}, n_jobs, client, pool)
        results = compare_many(
            [(scan, t) for t in targets],
            n_jobs=n_jobs,
            progress=progress,
            client=client,
            executor=pool,
            **compare_params,
        )
    for c, r in zip(kept, results):
        c.cmc_count, c.score, c.comparison = int(r.cmc_count), float(r.score), r
    return rerank(kept)


def _precheck(scan, kept, targets, top, settings, n_jobs, client, pool):
    """The ``top`` candidates (and their scans) by the pre-check's score, in shortlist order; every
    candidate's ``precheck_score`` is set. Ties go to the better descriptor rank."""
    scores = precheck_scores(scan, targets, n_jobs=n_jobs, client=client, executor=pool, **settings)
    for c, s in zip(kept, scores):
        c.precheck_score = float(s)
    best = sorted(np.argsort(-scores, kind="stable")[:top].tolist())
    return [kept[i] for i in best], [targets[i] for i in best]
