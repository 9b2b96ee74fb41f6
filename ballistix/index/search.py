"""Two-stage database search: a FAISS shortlist by descriptor, then CMC verification."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import DescriptorMismatchError, ParameterError
from ..features.comparison import Comparison
from ..features.describe import DESCRIPTOR_NAME, describe
from ..scan import Scan
from ..verify import compare_many
from .scan_index import ScanIndex

__all__ = ["Candidate", "query_vector", "rerank", "search"]


@dataclass
class Candidate:
    """One database scan returned by `search`.

    ``descriptor_score`` is the cosine similarity of the descriptors (first
    stage, in [-1, 1]) and ``descriptor_rank`` the candidate's place in the
    shortlist (0 = most similar). ``cmc_count`` and ``score`` come from
    `compare` (second stage; None when no scans were given for it), and
    ``comparison`` is the full `Comparison`.
    """

    id: int
    descriptor_score: float
    descriptor_rank: int
    cmc_count: int | None = None
    score: float | None = None
    comparison: Comparison | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "descriptor_score": self.descriptor_score,
            "descriptor_rank": self.descriptor_rank,
            "cmc_count": self.cmc_count,
            "score": self.score,
        }


def rerank(candidates: list[Candidate]) -> list[Candidate]:
    """Sort verified candidates best first: CMC count, then the comparison's score, then
    descriptor similarity, then id (so that ties resolve the same way every time)."""
    candidates.sort(key=lambda c: (-c.cmc_count, -c.score, -c.descriptor_score, c.id))
    return candidates


def query_vector(index: ScanIndex, scan: Scan) -> np.ndarray:
    """The descriptor of ``scan`` made with the parameters ``index`` was built with."""
    info = index.descriptor
    if info is None:
        vec = describe(scan)
    else:
        if info.get("name") != DESCRIPTOR_NAME:
            raise DescriptorMismatchError(
                f"index built with descriptor {info.get('name')!r}; this ballistix "
                f"computes {DESCRIPTOR_NAME!r}: pass vectors to index.search instead"
            )
        vec = describe(scan, **{k: tuple(v) if isinstance(v, list) else v for k, v in info["params"].items()})
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
        ``calibration``).

    Returns
    -------
    list of Candidate
        Best first, at most ``k``.

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
        if int(v) != v or v < 1:
            raise ParameterError(f"{name} must be a positive integer, got {v!r}")
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
    results = compare_many(
        [(scan, t) for t in targets],
        n_jobs=n_jobs,
        progress=progress,
        client=client,
        executor=executor,
        **compare_params,
    )
    for c, r in zip(kept, results):
        c.cmc_count, c.score, c.comparison = int(r.cmc_count), float(r.score), r
    return rerank(kept)[:k]
