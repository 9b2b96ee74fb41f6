"""The store's descriptors: read from SQLite in chunks, and the compact index built from them.

SQLite keeps each exhibit's full descriptor (9,216 float32 values, 36 KB),
once. From ``PROJECT_FROM`` exhibits the FAISS index keeps a compact copy:
the descriptors projected on the ``PROJECTION_DIM`` leading singular vectors
of the store's own descriptors (uncentred, then L2-normalised: cosines of
vectors inside that subspace are kept exactly), 1 KB an exhibit, so a
million exhibits need about 1 GB of index instead of 37 GB. A search takes
the best ``REFINE_FACTOR`` x k candidates by the compact vectors and orders
them by the cosine of their full descriptors, read from SQLite
(`ScanIndex.refine_with`): the shortlist is the full descriptor's, and its
scores are the full cosines.

Measured (``python -m benchmarks.compact``, 2,000 simulated realistic-hard
scans of 388 guns and the 40 Fadul scans, shortlists of 200; "kept" is the
share of the same-gun scans in the full descriptor's shortlist that the
compact one also holds):

============================  =============  ===========================
                              256 values     256 values, 1,000 re-ranked
============================  =============  ===========================
simulated store               0.923          0.996
new exhibits, not refitted    0.835          0.997
Fadul in a simulated store    1.000          1.000
============================  =============  ===========================

At a million exhibits (``python -m benchmarks.store_scale --reuse --refine-factors 5,10``,
the 40 Fadul scans and 30 simulated guns x 3 shots among a million distractors) re-ranking
5 x k = 1,005 candidates kept 86 of the 88 Fadul partners in the full descriptor's shortlist
(0.977), 10 x k kept 87 (0.989), the simulated ones 40 of 40 either way: ``REFINE_FACTOR`` is
10, for the issue's 98%. It doubles the descriptors a search reads from SQLite (see
docs/store.md for the time: on a store larger than the page cache they are read from disk).

The compact shortlist alone holds *more* same-gun scans than the full one
(recall@200 0.578 against 0.521 on the simulated store): projecting on the
store's leading subspace drops directions that are mostly noise. That is a
different descriptor, not the one the shortlist is measured against, and a
centred PCA does the same with less fidelity (0.887 kept). The re-ranking
keeps the full descriptor's shortlist; what the projection gains is left for
the work on the first stage.

Policy (recorded in the store's ``meta`` table under ``projection`` and in
the index file's manifest):

- below ``PROJECT_FROM`` exhibits the index holds the full descriptors (exact
  search; at most 37 MB): a projection fitted on a few hundred scans would
  describe them and not what comes next;
- at ``PROJECT_FROM`` exhibits the projection is fitted on all of them and
  the index rebuilt compact;
- it is refitted, and the index rebuilt, each time the store has doubled
  since the last fit, until the fit has seen ``TRAIN_MAX`` exhibits (a
  deterministic sample spread evenly over the ingest order). Exhibits added
  between fits are projected on the older subspace: 0.835 of what the full
  shortlist holds, 0.997 after the re-ranking (the table's second row, a fit
  on half the store). Past ``TRAIN_MAX`` a rebuild of a million exhibits
  costs minutes, so refitting is a deliberate act: `CaseStore.rebuild_index()`
  refits on the store as it is then (so does ``ballistix check --store DIR
  --repair`` when it rebuilds a damaged index).

Doubling keeps the total work of refits proportional to the store's size.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator

import numpy as np

from ..index import ScanIndex

__all__ = [
    "PROJECTION_DIM",
    "PROJECT_FROM",
    "TRAIN_MAX",
    "CHUNK",
    "descriptor_chunks",
    "well_formed_rowids",
    "build_index",
    "refit_due",
]

PROJECTION_DIM = 256  # values kept per exhibit in the index
PROJECTION_CENTER = False  # uncentred: cosines inside the fitted subspace kept exactly (see the module notes)
PROJECT_FROM = 1024  # exhibits from which the index is compact (4 x PROJECTION_DIM)
TRAIN_MAX = 16_384  # exhibits a refit is drawn from, at most; past this, refits are deliberate
CHUNK = 8192  # descriptors read from the database at a time (300 MB)


def _vectors(rows: list, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([r[0] for r in rows], np.int64)
    if not rows:
        return ids, np.zeros((0, dim), np.float32)
    return ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)


def _rows_by_rowid(db, size: int, rowids: np.ndarray, chunk: int) -> Iterator:
    """(rowid, descriptor bytes) of the well-formed descriptors (``size`` bytes) among sorted ``rowids``,
    in rowid order, one query a ``chunk``: the one by-rowid read of the store's descriptors."""
    for i in range(0, len(rowids), chunk):
        part = rowids[i : i + chunk].tolist()
        marks = ",".join("?" * len(part))
        rows = db.execute(f"SELECT rowid, descriptor FROM exhibits WHERE rowid IN ({marks}) ORDER BY rowid", part)
        # lengths checked here, not in SQL: length() in the query made a re-ranking's reads about 2x slower
        yield from (r for r in rows if isinstance(r[1], bytes) and len(r[1]) == size)


def descriptor_chunks(db, dim: int, *, rowids=None, chunk: int = CHUNK) -> Iterator:
    """(rowids, descriptors) of the store's exhibits in rowid order, ``chunk`` at a time.

    Only well-formed descriptors (``4 * dim`` bytes) are read; `CaseStore` and
    `check` deal with the others. ``rowids``: only these exhibits (sorted).
    """
    size = 4 * dim
    if rowids is not None:
        rowids = np.asarray(rowids, np.int64)
        for i in range(0, len(rowids), chunk):
            yield _vectors(list(_rows_by_rowid(db, size, rowids[i : i + chunk], chunk)), dim)
        return
    last = -1
    while True:
        rows = db.execute(
            "SELECT rowid, descriptor FROM exhibits WHERE rowid > ? AND length(descriptor)=? ORDER BY rowid LIMIT ?",
            (last, size, chunk),
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield _vectors(rows, dim)


def fetch(db, dim: int, rowids: np.ndarray) -> np.ndarray:
    """The full descriptors of ``rowids``, in that order (NaN rows for those missing or damaged):
    what the compact index re-ranks its candidates with (`ScanIndex.refine_with`).

    Each row is copied once, from SQLite's bytes into the result: joining them into chunks first
    and then scattering the chunks made a re-ranking's reads twice as slow when the pages are
    cached (1,005 descriptors of the million-exhibit store of ``benchmarks.store_scale``: 118 ms
    against 59 ms, on the loaded 2-core machine).
    """
    rowids = np.asarray(rowids, np.int64)
    out = np.full((len(rowids), dim), np.nan, np.float32)
    uniq, first = np.unique(rowids, return_index=True)
    where = dict(zip(uniq.tolist(), first.tolist(), strict=True))
    for r, blob in _rows_by_rowid(db, 4 * dim, uniq, CHUNK):
        out[where[r]] = np.frombuffer(blob, np.float32)
    if len(uniq) < len(rowids):  # an id asked for twice: every place gets its row
        out = out[first[np.searchsorted(uniq, rowids)]]
    return out


def training_rowids(rowids: np.ndarray) -> np.ndarray:
    """The exhibits a PCA is fitted on: all, or ``TRAIN_MAX`` spread evenly over the ingest order."""
    if len(rowids) <= TRAIN_MAX:
        return rowids
    return rowids[np.unique(np.linspace(0, len(rowids) - 1, TRAIN_MAX).round().astype(np.int64))]


def refit_due(projection: dict | None, n_exhibits: int) -> bool:
    """Whether the store's index must be rebuilt (and its PCA refitted) now that it holds ``n_exhibits``."""
    if projection is None or projection.get("dim") is None:
        return n_exhibits >= PROJECT_FROM
    due = projection.get("refit_at")
    return due is not None and n_exhibits >= due


def well_formed_rowids(db, dim: int) -> np.ndarray:
    """Rowids of the exhibits whose descriptor is ``4 * dim`` bytes, sorted."""
    rows = db.execute(
        f"SELECT rowid FROM exhibits WHERE NOT {db.blob_length_sql('descriptor')} ORDER BY rowid", (4 * dim,)
    )
    return np.array([r[0] for r in rows], np.int64)


def build_index(db, descriptor: dict) -> tuple[ScanIndex, dict]:
    """The index of every exhibit with a well-formed descriptor, and its projection record.

    Compact (a PCA fitted on `training_rowids`) from ``PROJECT_FROM`` exhibits,
    full descriptors below. The record says which, when, on how many, and the
    SHA-256 of the components, so a result can name the projection it was
    found with.
    """
    dim = int(descriptor["dim"])
    rowids = well_formed_rowids(db, dim)
    n = len(rowids)
    if n < PROJECT_FROM:
        index = ScanIndex(dim, descriptor=descriptor)
        record = {"kind": "none", "dim": None, "compact_from": PROJECT_FROM}
    else:
        index = ScanIndex(dim, descriptor=descriptor, pca_dim=PROJECTION_DIM, pca_center=PROJECTION_CENTER)
        train = training_rowids(rowids)
        index.train(np.concatenate([v for _, v in descriptor_chunks(db, dim, rowids=train)]))
        record = {
            "kind": "pca" if PROJECTION_CENTER else "subspace",
            "dim": PROJECTION_DIM,
            "fitted_on": int(len(train)),
            "store_size_at_fit": int(n),
            "refit_at": int(2 * n) if len(train) < TRAIN_MAX else None,
            "fitted_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "sha256": index.projection_sha256,
        }
    for ids, vecs in descriptor_chunks(db, dim):
        index.add(ids, vecs)
    return refine(index, db), record


def refine(index: ScanIndex, db) -> ScanIndex:
    """A compact index re-ranks its best ``REFINE_FACTOR * k`` candidates by the full descriptors in
    SQLite, so that the store's shortlist is the full descriptor's (see the module notes)."""
    if index.pca_dim is not None:
        dim = index.dim
        index.refine_with(lambda ids: fetch(db, dim, ids))
    return index
