"""`ScanIndex`: a FAISS similarity index of scan descriptors with explicit int64 ids.

Index types (inner product on L2-normalised vectors, so scores are cosine
similarities):

- ``Flat``: exact search, wrapped in ``IndexIDMap2``; removal is exact.
- ``IVF...``: inverted lists hold the caller's ids natively (``add_with_ids``),
  with a hash-table direct map for reconstruction and removal. They are *not*
  wrapped in ``IndexIDMap2``: FAISS's ID map assumes the wrapped index
  renumbers its entries on removal, which IVF does not, and returns wrong ids
  after a removal (checked with FAISS 1.15).
- ``HNSW...``, ``...,RFlat`` (re-ranked codes) and ``IVF...,PQ...x4fs``: FAISS
  cannot remove entries from them (`_removes_entries`). Removed ids become
  tombstones: searches fetch extra neighbours and drop them, and the index is
  rebuilt without them once they exceed 10% of its entries (or before one of
  them is added again).

``factory="auto"`` picks the type by the number of vectors, following the
FAISS guidelines (exact while small, then a SIMD scan of 4-bit codes with
exact re-ranking, inverted lists with compressed codes for tens of millions;
see `choose_factory`) and rebuilds itself
when a tier is crossed. Any other FAISS factory string is used as given.

An optional PCA (``pca_dim``), fitted by `train` on a reference set, projects
descriptors to a smaller dimension (then re-normalises them); it is saved with
the index.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import io
import json
import math
import zipfile
from contextlib import nullcontext
from pathlib import Path

import faiss
import numpy as np

from .._files import atomic_file, list_members, open_zip, read_member
from .._version import __version__
from ..errors import DescriptorMismatchError, IndexFormatError, ParameterError, ScanFormatError

__all__ = ["ScanIndex", "choose_factory", "principal_components", "FORMAT", "FORMAT_VERSION"]

FORMAT = "ballistix-scan-index"
FORMAT_VERSION = 1
FLAT_WORK = 2**24  # exact search while vectors x dimension stays below this (~2 ms a query)
PQFS_MAX = 4_000_000  # exhaustive 4-bit PQ fast scan with exact re-ranking below this
SQ_MAX = 20_000_000  # IVF with an HNSW quantizer and 8-bit codes below this; PQ above
TOMBSTONE_FRACTION = 0.10
RANDOMIZED_FROM = 4  # PCA by randomized SVD once both sides of the training matrix exceed 4 x pca_dim
POWER_ITERATIONS = 3
REFINE_FACTOR = 10  # refine_with: candidates re-ranked by the full vectors, as a multiple of k (see
# ballistix.store.descriptors: 5 kept 0.977 of the full shortlist's Fadul partners at 1M, 10 kept 0.989)
SMALL_BATCH = 64  # fewer query vectors than this are projected and searched on one thread


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def choose_factory(n: int, dim: int) -> str:
    """The FAISS factory string `ScanIndex` uses for ``n`` vectors of dimension ``dim``.

    From the FAISS guidelines ("Guidelines to choose an index") and what
    `benchmarks/index_scale.py` measured on descriptor-like vectors:

    - ``Flat`` (exact) while n * dim < 2^24 (131,072 vectors of 128 values,
      1,820 full 9,216-long descriptors): about 2 ms a query on one core;
    - ``PQ{m}x4fs,RFlat`` below 4 million: every vector scanned as a 4-bit
      product-quantization code with SIMD ("fast scan", ``m`` = dim/2 codes,
      dim/4 bytes a vector), the best ``refine_factor`` x k re-ranked with the
      exact vectors (kept beside the codes: dim * 4 + dim/4 bytes a vector);
    - ``IVF{k}_HNSW32,SQ8`` (about 4 sqrt(n) lists, 8-bit codes) below 20
      million, ``IVF{k}_HNSW32,PQ{dim/4}`` above, for memory.

    Why not HNSW or IVF in the middle: descriptor neighbourhoods beyond the
    same-gun scans are nearly isotropic (different guns look alike to a
    global descriptor), and graph and inverted-list searches lose most of the
    true top 200 there: at 1 million vectors HNSW32 kept 0.72 of them at
    6.4 ms, fast scan with exact re-ranking 0.98 at 3 ms.
    """
    n, dim = int(n), int(dim)
    if n * dim < FLAT_WORK:
        return "Flat"
    if n < PQFS_MAX:
        m = dim // 2 - (dim // 2) % 2
        while m > 2 and dim % m:
            m -= 2
        return f"PQ{max(m, 2)}x4fs,RFlat"
    k = 2 ** int(round(math.log2(4 * math.sqrt(n))))
    if n < SQ_MAX:
        return f"IVF{k}_HNSW32,SQ8"
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return f"IVF{k}_HNSW32,PQ{m}"


def principal_components(x: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """The ``k`` leading right singular vectors of ``x`` (rows: centred samples), as rows.

    Exact (LAPACK SVD) while the smaller side of ``x`` is under ``RANDOMIZED_FROM``
    times ``k``; above, the randomized range finder of Halko, Martinsson and
    Tropp (2011): ``k + 32`` random directions, ``POWER_ITERATIONS`` power
    iterations with re-orthonormalisation, then an exact SVD of the small
    projected matrix. 16,384 training descriptors of 9,216 values: seconds
    instead of minutes. Deterministic (a fixed seed); signs are fixed so that
    each component's largest coefficient is positive.
    """
    n, d = x.shape
    one_thread = _blas_controller().limit(limits=1, user_api="blas")  # thin QR and SVD: threads only spin
    if min(n, d) < RANDOMIZED_FROM * k:
        _, _, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
        comp = vt[:k]
    else:
        omega = np.random.default_rng(seed).standard_normal((d, k + 32)).astype(np.float32)
        y = x @ omega
        for _ in range(POWER_ITERATIONS):
            with one_thread:
                q, _ = np.linalg.qr(y)
            z = x.T @ q
            with one_thread:
                q, _ = np.linalg.qr(z)
            y = x @ q
        with one_thread:
            q, _ = np.linalg.qr(y)
            _, _, vt = np.linalg.svd((q.T @ x).astype(np.float64), full_matrices=False)
        comp = vt[:k]
    return comp * np.sign(comp[np.arange(len(comp)), np.abs(comp).argmax(1)])[:, None]


def _removes_entries(index) -> bool:
    """Whether FAISS removes entries from ``index`` (told by its type: FAISS has no query for it).

    Inverted lists (by id, through the hash-table direct map) and flat arrays of
    codes (Flat, SQ, PQ, 4-bit fast-scan PQ, behind a transform or not) do; graphs
    (HNSW, NSG), re-ranked indexes (``...,RFlat``) and inverted lists of fast-scan
    blocks (``IVF...,PQ...x4fs``) raise instead (checked with FAISS 1.15). Any other
    type keeps its removed ids as tombstones: always correct, only larger.
    """
    if isinstance(index, faiss.IndexIVF):
        return not isinstance(index, faiss.IndexIVFFastScan)
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    while isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    return isinstance(inner, (faiss.IndexFlatCodes, faiss.IndexFastScan))


def _id_selector(index, ids: np.ndarray):
    """The selector of ``ids`` that ``index.remove_ids`` takes: a hash-table direct map (IVF)
    takes only an array; the others a batch (a hashed set: fast membership tests)."""
    if isinstance(index, faiss.IndexIVF):
        return faiss.IDSelectorArray(ids)
    return faiss.IDSelectorBatch(ids)


def _as_ids(ids, what="ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ParameterError(f"{what} must be a 1-D array of integers, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ParameterError(f"{what} must be non-negative (FAISS uses -1 for 'no result'), got {int(arr.min())}")
    return arr


def _sha256(b) -> str:
    return hashlib.sha256(b).hexdigest()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


class ScanIndex:
    """Similarity index of scan descriptors (FAISS inside), with int64 ids.

    Parameters
    ----------
    dim : int
        Length of the vectors added and searched (the descriptor's length).
    factory : str
        ``"auto"`` (default: type by size, see `choose_factory`) or a FAISS
        factory string such as ``"Flat"``, ``"IVF1024,Flat"``, ``"HNSW32"``,
        ``"IVF4096,PQ32"``.
    descriptor : dict, optional
        What made the vectors (``describe.descriptor_info()``): name, parameters
        and dimension. Saved in the manifest and checked by `load` and `search`.
    pca_dim : int, optional
        Project vectors to this dimension with a PCA fitted by `train` (then
        re-normalise). None keeps the full vectors.
    pca_center : bool, default True
        Centre the vectors on the training mean before projecting (a PCA). False
        projects on the leading singular vectors of the uncentred training
        vectors: cosine similarities of vectors inside that subspace are then
        kept exactly, so the compact search ranks like the full one.
    nprobe : int, optional
        Inverted lists visited per query for IVF types (default max(16, nlist / 16)).
    ef_search : int, optional
        Graph candidates kept per query for HNSW types (default max(64, 4 k)).
    refine_factor : int, optional
        For ``...,RFlat`` types: candidates re-ranked exactly, as a multiple of
        k (default 25: recall@200 of 0.98 against exact search at 1 million
        vectors in `benchmarks/index_scale.py`).
    threads : int, optional
        FAISS (OpenMP) and BLAS threads for add, train and search; None leaves
        their settings. Whatever this says, the projection of fewer than
        ``SMALL_BATCH`` queries runs on one BLAS thread: a 9,216 x 256 product
        gains nothing from threads, and on a busy machine their spin-waiting
        made it 20 times slower (0.25 ms became 4-40 ms).

    Examples
    --------
    >>> import numpy as np, ballistix as bx
    >>> v = np.eye(4, dtype="float32")
    >>> index = bx.ScanIndex(dim=4)
    >>> index.add([10, 11, 12, 13], v)
    >>> scores, ids = index.search(v[:1], k=2)
    >>> int(ids[0, 0]), float(scores[0, 0])
    (10, 1.0)
    """

    def __init__(
        self,
        dim: int,
        *,
        factory: str = "auto",
        descriptor: dict | None = None,
        pca_dim: int | None = None,
        pca_center: bool = True,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
        threads: int | None = None,
    ):
        if int(dim) != dim or dim < 1:
            raise ParameterError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(factory, str) or not factory.strip():
            raise ParameterError(f"factory must be 'auto' or a FAISS factory string, got {factory!r}")
        if pca_dim is not None and (int(pca_dim) != pca_dim or not 1 <= pca_dim <= dim):
            raise ParameterError(f"pca_dim must be an integer in [1, {dim}], got {pca_dim!r}")
        for name, v in (("nprobe", nprobe), ("ef_search", ef_search), ("refine_factor", refine_factor)):
            if v is not None and (int(v) != v or v < 1):
                raise ParameterError(f"{name} must be a positive integer, got {v!r}")
        if threads is not None and (int(threads) != threads or threads < 1):
            raise ParameterError(f"threads must be a positive integer, got {threads!r}")
        if descriptor is not None and (not isinstance(descriptor, dict) or descriptor.get("dim", dim) != dim):
            raise DescriptorMismatchError(f"descriptor {descriptor!r} does not describe {dim}-long vectors")
        self.dim = int(dim)
        self.auto = factory.strip() == "auto"
        self.descriptor = descriptor
        self.pca_dim = None if pca_dim is None else int(pca_dim)
        self.pca_center = bool(pca_center)
        self.nprobe = None if nprobe is None else int(nprobe)
        self.ef_search = None if ef_search is None else int(ef_search)
        self.refine_factor = None if refine_factor is None else int(refine_factor)
        self.threads = None if threads is None else int(threads)
        self._pca_mean: np.ndarray | None = None
        self._pca_components: np.ndarray | None = None
        self._exact = None  # (fetch, factor): see refine_with
        self._ids = np.zeros(0, np.int64)  # live ids, sorted
        self._tombstones = np.zeros(0, np.int64)  # removed from the results, still in the FAISS index
        self.factory = choose_factory(0, self.inner_dim) if self.auto else factory.strip()
        self._index = self._new_index(self.factory)

    # ----------------------------------------------------------------- basics
    @property
    def inner_dim(self) -> int:
        """Dimension of the vectors FAISS holds (``pca_dim`` when a PCA is used)."""
        return self.pca_dim or self.dim

    def __len__(self) -> int:
        return int(self._ids.size)

    def __contains__(self, id_) -> bool:
        i = np.searchsorted(self._ids, int(id_))
        return bool(i < self._ids.size and self._ids[i] == int(id_))

    @property
    def ids(self) -> np.ndarray:
        """The ids in the index, sorted (a copy)."""
        return self._ids.copy()

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained) and (self.pca_dim is None or self._pca_components is not None)

    @property
    def projection_sha256(self) -> str | None:
        """SHA-256 of the fitted PCA (mean and components; None without one): names the projection."""
        if self._pca_components is None:
            return None
        return _sha256(self._pca_mean.tobytes() + self._pca_components.tobytes())

    @property
    def index_type(self) -> str:
        """Class name of the FAISS index doing the search (e.g. IndexFlat, IndexIVFFlat, IndexHNSWFlat)."""
        inner = faiss.downcast_index(self._index.index) if isinstance(self._index, faiss.IndexIDMap2) else self._index
        return type(inner).__name__

    def __repr__(self) -> str:
        return (
            f"ScanIndex(dim={self.dim}, factory={self.factory!r}{' (auto)' if self.auto else ''}, "
            f"n={len(self)}, pca_dim={self.pca_dim}, type={self.index_type})"
        )

    def _blas(self, n_rows: int):
        """BLAS threads for a product over ``n_rows`` vectors (see ``threads``)."""
        limit = 1 if n_rows < SMALL_BATCH else self.threads
        return nullcontext() if limit is None else _blas_controller().limit(limits=limit, user_api="blas")

    @contextlib.contextmanager
    def _omp(self, n_rows: int | None = None):
        """FAISS (OpenMP) threads for an operation over ``n_rows`` vectors (see ``threads``)."""
        threads = 1 if n_rows is not None and n_rows < SMALL_BATCH else self.threads
        if threads is None:
            yield
            return
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    def _new_index(self, factory: str):
        spec = factory
        if spec.upper().startswith("IDMAP"):
            spec = spec.split(",", 1)[1] if "," in spec else ""
        try:
            index = faiss.index_factory(self.inner_dim, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ParameterError(f"FAISS cannot build index {factory!r}: {str(e).splitlines()[0]}") from None
        # (index_factory returns the concrete class and owns it: never replace it by a downcast proxy)
        if isinstance(index, faiss.IndexIVF):  # ids held natively (see the module notes)
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            return index
        if faiss.try_extract_index_ivf(index) is not None:
            raise ParameterError(
                f"index {factory!r}: an IVF index behind a transform is not supported; use pca_dim for a PCA"
            )
        return faiss.IndexIDMap2(index)

    def _set_search_params(self, index, k: int) -> None:
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = min(index.nlist, self.nprobe or max(16, index.nlist // 16))
            q = faiss.downcast_index(index.quantizer)
            if isinstance(q, faiss.IndexHNSW):
                q.hnsw.efSearch = max(64, 2 * index.nprobe)
        elif isinstance(index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(index.index)
            if isinstance(inner, faiss.IndexHNSW):
                inner.hnsw.efSearch = max(k, self.ef_search or max(64, 4 * k))
            elif isinstance(inner, faiss.IndexRefine):
                inner.k_factor = float(self.refine_factor or 25)

    # --------------------------------------------------------------- vectors
    def _check_vectors(self, vectors, what="vectors") -> np.ndarray:
        x = np.asarray(vectors)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ParameterError(f"{what} must have shape (n, {self.dim}), got {x.shape}")
        if x.size and not np.issubdtype(x.dtype, np.number):
            raise ParameterError(f"{what} must be numeric, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ParameterError(f"{what} hold NaN or infinite values")
        return x

    def _project(self, x: np.ndarray) -> np.ndarray:
        if self.pca_dim is not None:
            if self._pca_components is None:
                raise ParameterError("this index projects with a PCA: call train(reference_vectors) first")
            with self._blas(len(x)):
                x = (x - self._pca_mean) @ self._pca_components.T
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x / np.where(norm > 0, norm, 1.0), dtype=np.float32)

    def train(self, vectors) -> ScanIndex:
        """Fit the PCA (if ``pca_dim``) and train the FAISS index type if it needs it.

        ``vectors`` is a reference set like the vectors to come (a few times
        ``pca_dim`` at least; for IVF about 40 vectors per list or more). IVF
        types chosen by ``factory="auto"`` train themselves on the indexed
        vectors when they are built.
        """
        x = self._check_vectors(vectors, "training vectors")
        if self.pca_dim is not None:
            if len(x) < 2:
                raise ParameterError(f"a PCA needs at least 2 training vectors, got {len(x)}")
            mean = x.mean(0, dtype=np.float64) if self.pca_center else np.zeros(self.dim)
            with self._blas(len(x)):
                comp = principal_components(x - mean.astype(np.float32), self.pca_dim)
            if len(comp) < self.pca_dim:
                comp = np.vstack([comp, np.zeros((self.pca_dim - len(comp), self.dim))])
            self._pca_mean, self._pca_components = mean.astype(np.float32), comp.astype(np.float32)
        if not self._index.is_trained:
            if len(self):
                raise ParameterError("train the index before adding vectors")
            self._train_faiss(self._index, self._project(x))
        return self

    def _train_faiss(self, index, y: np.ndarray) -> None:
        need = index.nlist if isinstance(index, faiss.IndexIVF) else 1
        if len(y) < need:
            raise ParameterError(f"index {self.factory!r} needs at least {need} training vectors, got {len(y)}")
        with self._omp():
            index.train(y)

    def add(self, ids, vectors) -> None:
        """Add vectors under the given ids (each id at most once in the index)."""
        ids = _as_ids(ids)
        x = self._check_vectors(vectors)
        if len(ids) != len(x):
            raise ParameterError(f"{len(ids)} ids for {len(x)} vectors")
        if not len(ids):
            return
        uniq = np.unique(ids)
        if uniq.size != ids.size:
            repeated = ids[np.r_[False, np.diff(np.sort(ids)) == 0]][:5].tolist()
            raise ParameterError(f"ids repeat within the batch: {repeated}")
        dup = uniq[np.isin(uniq, self._ids)]
        if dup.size:
            raise ParameterError(f"{dup.size} id(s) already in the index, e.g. {dup[:5].tolist()}; remove them first")
        if np.isin(uniq, self._tombstones).any():
            self._compact()
        y = self._project(x)
        if self.auto and choose_factory(len(self) + len(ids), self.inner_dim) != self.factory:
            old_ids, old_y = self._live_vectors()
            self._rebuild(
                np.concatenate([old_ids, ids]),
                np.concatenate([old_y, y]),
                choose_factory(len(self) + len(ids), self.inner_dim),
            )
            return
        if not self._index.is_trained:
            raise ParameterError(f"index {self.factory!r} needs training: call train(reference_vectors) first")
        with self._omp():
            self._index.add_with_ids(y, ids)
        self._ids = np.union1d(self._ids, uniq)

    def remove(self, ids) -> int:
        """Remove ids; returns how many were in the index (absent ids are ignored)."""
        ids = np.unique(_as_ids(ids))
        present = ids[np.isin(ids, self._ids)]
        if not present.size:
            return 0
        if _removes_entries(self._index):
            n = self._index.remove_ids(_id_selector(self._index, present))
            if n != present.size:
                raise RuntimeError(f"FAISS removed {n} of {present.size}")  # pragma: no cover
        else:
            self._tombstones = np.union1d(self._tombstones, present)  # e.g. HNSW: cannot remove
        self._ids = np.setdiff1d(self._ids, present, assume_unique=True)
        if self._tombstones.size > TOMBSTONE_FRACTION * max(1, self._index.ntotal):
            self._compact()
        return int(present.size)

    def search(self, vectors, k: int = 10, *, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed vectors of each query.

        Returns ``(scores, ids)``, arrays of shape (n_queries, k), best first;
        scores are inner products of unit vectors (cosine similarity, 1 = same
        direction). Where fewer than ``k`` vectors exist, ids are -1 and scores -inf.

        ``refine``: with a source of full vectors set by `refine_with`, False
        searches the projected vectors alone (scores are then the projected
        cosines): what the re-ranking costs and what it changes. Without such a
        source it changes nothing.
        """
        if int(k) != k or k < 1:
            raise ParameterError(f"k must be a positive integer, got {k!r}")
        if not isinstance(refine, (bool, np.bool_)):
            raise ParameterError(f"refine must be True or False, got {refine!r}")
        k = int(k)
        x = self._check_vectors(vectors, "query vectors")
        if self._exact is None or self.pca_dim is None or not refine:
            return self._search_projected(self._project(x), k)
        fetch, factor = self._exact
        _, ids = self._search_projected(self._project(x), k * factor)
        return self._rerank(x, ids, k, fetch)

    def refine_with(self, fetch, *, factor: int = REFINE_FACTOR) -> ScanIndex:
        """Re-rank searches by the full vectors: the best ``factor * k`` candidates by the projected
        vectors are ordered by the exact cosine of their full vectors, ``fetch(ids)`` (an array of
        shape (len(ids), dim), NaN rows for ids it cannot give). Only for an index with a PCA; the
        source is not saved with the index (a `CaseStore` sets its SQLite descriptors). Scores are
        then the full vectors' cosines. ``search(..., refine=False)`` skips the re-ranking for one
        search."""
        if int(factor) != factor or factor < 1:
            raise ParameterError(f"factor must be a positive integer, got {factor!r}")
        self._exact = (fetch, int(factor))
        return self

    def _rerank(self, x: np.ndarray, ids: np.ndarray, k: int, fetch) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(x), k), -np.inf, np.float32)
        out = np.full((len(x), k), -1, np.int64)
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        for r, row in enumerate(ids):
            live = row[row >= 0]
            if not live.size:
                continue
            full = np.asarray(fetch(live), np.float32)
            with self._blas(1):  # einsum: the norms without a temporary copy (8 ms -> 2.5 ms, 1,005 x 9,216)
                sims = (full @ xn[r]) / np.sqrt(np.einsum("ij,ij->i", full, full))
            sims = np.where(np.isfinite(sims), sims, -np.inf).astype(np.float32)
            order = np.argsort(-sims, kind="stable")[:k]
            order = order[np.isfinite(sims[order])]
            scores[r, : len(order)], out[r, : len(order)] = sims[order], live[order]
        return scores, out

    def _search_projected(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(q), k), -np.inf, np.float32)
        out = np.full((len(q), k), -1, np.int64)
        if not len(self) or not len(q):
            return scores, out
        extra = int(self._tombstones.size)
        kk = min(k + extra, int(self._index.ntotal))
        self._set_search_params(self._index, kk)
        with self._omp(len(q)):
            d, i = self._index.search(q, kk)
        if extra:
            dead = np.isin(i, self._tombstones)
            for r in range(len(q)):
                keep = ~dead[r] & (i[r] >= 0)
                n = min(k, int(keep.sum()))
                scores[r, :n], out[r, :n] = d[r][keep][:n], i[r][keep][:n]
        else:
            scores[:, :kk], out[:, :kk] = d, i
            bad = out < 0
            scores[bad] = -np.inf
        return scores, out

    # ------------------------------------------------------------ rebuilding
    def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, projected vectors) of every live entry, in id order (exact for Flat/IVF-Flat/HNSW-Flat,
        decoded codes for SQ/PQ types)."""
        if not len(self):
            return np.zeros(0, np.int64), np.zeros((0, self.inner_dim), np.float32)
        if isinstance(self._index, faiss.IndexIDMap2):
            all_ids = faiss.vector_to_array(self._index.id_map)
            inner = self._index.index
            vecs = inner.reconstruct_n(0, inner.ntotal)
            order = np.argsort(all_ids)
            all_ids, vecs = all_ids[order], vecs[order]
            keep = np.isin(all_ids, self._ids)
            return all_ids[keep], np.ascontiguousarray(vecs[keep])
        return self._ids.copy(), self._index.reconstruct_batch(self._ids.copy())

    def _rebuild(self, ids: np.ndarray, y: np.ndarray, factory: str) -> None:
        index = self._new_index(factory)
        if not index.is_trained:
            # a deterministic sample: up to 64 vectors per list (FAISS warns below 39), 100,000 for codes
            cap = 64 * index.nlist if isinstance(index, faiss.IndexIVF) else 100_000
            sample = y if len(y) <= cap else y[np.random.default_rng(0).choice(len(y), cap, replace=False)]
            self.factory = factory
            self._train_faiss(index, np.ascontiguousarray(sample))
        with self._omp():
            index.add_with_ids(np.ascontiguousarray(y, dtype=np.float32), ids)
        self._index, self.factory = index, factory
        self._ids = np.sort(ids)
        self._tombstones = np.zeros(0, np.int64)

    def _compact(self) -> None:
        ids, y = self._live_vectors()
        self._rebuild(ids, y, self.factory)

    def rebuild(self, factory: str | None = None) -> ScanIndex:
        """Rebuild from the stored vectors, with another factory if given ("auto" picks by size).

        Types that store compressed codes (SQ, PQ) rebuild from their decoded
        vectors: re-add the original descriptors instead when they are at hand.
        """
        if factory is not None:
            self.auto = factory.strip() == "auto"
        target = choose_factory(len(self), self.inner_dim) if self.auto else (factory or self.factory).strip()
        ids, y = self._live_vectors()
        if not len(ids):
            self.factory, self._index = target, self._new_index(target)
            return self
        self._rebuild(ids, y, target)
        return self

    # ----------------------------------------------------------- persistence
    def _manifest(self, members: dict[str, bytes]) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "inner_dim": self.inner_dim,
            "pca_dim": self.pca_dim,
            "pca_center": self.pca_center,
            "factory": self.factory,
            "auto": self.auto,
            "index_type": self.index_type,
            "count": len(self),
            "tombstones": int(self._tombstones.size),
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "refine_factor": self.refine_factor,
            "descriptor": self.descriptor,
            "ballistix_version": __version__,
            "faiss_version": faiss.__version__,
            "saved_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "sha256": {name: _sha256(b) for name, b in members.items()},
        }

    def save(self, path) -> Path:
        """Write the whole index (FAISS data, ids, PCA, manifest) to one file, atomically.

        The file is a zip archive (stored, not compressed) holding
        ``manifest.json`` and the members it lists with their SHA-256. It is
        written to a temporary file in the same folder and renamed over
        ``path``, so a crash never leaves a half-written index under that name.
        """
        path = Path(path)
        members = {
            "index.faiss": faiss.serialize_index(self._index).tobytes(),
            "ids.npy": _npy_bytes(self._ids),
            "tombstones.npy": _npy_bytes(self._tombstones),
        }
        if self._pca_components is not None:
            members["pca_mean.npy"] = _npy_bytes(self._pca_mean)
            members["pca_components.npy"] = _npy_bytes(self._pca_components)
        manifest = json.dumps(self._manifest(members), indent=2, sort_keys=True).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.json", manifest)
            for name, b in members.items():
                zf.writestr(name, b)
        return path

    @classmethod
    def load(cls, path, *, descriptor: dict | None = None, threads: int | None = None) -> ScanIndex:
        """Read an index written by `save`.

        Raises `IndexFormatError` (naming the file and the problem) when the
        file is not such an index, is truncated or corrupt, or its checksums
        or counts disagree; `DescriptorMismatchError` when ``descriptor`` is
        given and differs from the one the index was built with.
        """
        path = Path(path)
        try:
            zf = open_zip(path, "a ballistix index")
        except ScanFormatError as e:
            raise IndexFormatError(path, e.problem) from None
        budget = path.stat().st_size  # members are stored uncompressed: none can exceed the file
        with zf:
            try:
                members = list_members(path, zf, max_members=16)
                if "manifest.json" not in members:
                    raise IndexFormatError(path, "not a ballistix index: no manifest.json")
                raw = {name: bytes(read_member(path, zf, info, budget, name)) for name, info in members.items()}
            except ScanFormatError as e:
                raise IndexFormatError(path, e.problem) from None
        try:
            man = json.loads(raw.pop("manifest.json"))
        except (ValueError, UnicodeDecodeError) as e:
            raise IndexFormatError(path, f"manifest.json is not valid JSON ({e})") from None
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            fmt = man.get("format") if isinstance(man, dict) else man
            raise IndexFormatError(path, f"not a ballistix index (format {fmt!r})")
        if man.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                path,
                f"index format version {man.get('format_version')!r}; this ballistix reads version {FORMAT_VERSION}",
            )
        sums = man.get("sha256")
        if not isinstance(sums, dict) or set(sums) != set(raw):
            raise IndexFormatError(path, f"members {sorted(raw)} do not match the manifest's {sorted(sums or {})}")
        for name, b in raw.items():
            if _sha256(b) != sums[name]:
                raise IndexFormatError(path, f"{name} is corrupt: its SHA-256 differs from the manifest's")
        if descriptor is not None and _descriptor_key(descriptor) != _descriptor_key(man.get("descriptor")):
            raise DescriptorMismatchError(
                f"{path}: index built with descriptor {man.get('descriptor')!r}, expected {descriptor!r}"
            )
        try:
            ids = np.load(io.BytesIO(raw["ids.npy"]), allow_pickle=False)
            tomb = np.load(io.BytesIO(raw["tombstones.npy"]), allow_pickle=False)
            self = cls(
                int(man["dim"]),
                factory="auto" if man["auto"] else str(man["factory"]),
                descriptor=man["descriptor"],
                pca_dim=man["pca_dim"],
                pca_center=man.get("pca_center", True),
                nprobe=man["nprobe"],
                ef_search=man.get("ef_search"),
                refine_factor=man.get("refine_factor"),
                threads=threads,
            )
            self.factory = str(man["factory"])
            if "pca_components.npy" in raw:
                self._pca_mean = np.load(io.BytesIO(raw["pca_mean.npy"]), allow_pickle=False)
                self._pca_components = np.load(io.BytesIO(raw["pca_components.npy"]), allow_pickle=False)
            index = faiss.deserialize_index(np.frombuffer(raw["index.faiss"], dtype=np.uint8))
        except (KeyError, TypeError, ValueError, RuntimeError, ParameterError) as e:
            raise IndexFormatError(path, f"cannot rebuild the index: {e}") from None
        if not isinstance(index, (faiss.IndexIVF, faiss.IndexIDMap2)):
            raise IndexFormatError(path, f"unexpected FAISS index class {type(index).__name__}")
        if (
            index.d != self.inner_dim
            or ids.dtype != np.int64
            or ids.ndim != 1
            or len(ids) != man["count"]
            or index.ntotal != len(ids) + len(tomb)
        ):
            raise IndexFormatError(
                path,
                f"counts disagree: manifest {man['count']} ids, file holds {len(ids)} ids, "
                f"{len(tomb)} tombstones and {index.ntotal} vectors of dimension {index.d}",
            )
        if self.pca_dim is not None and (
            self._pca_components is None or self._pca_components.shape != (self.pca_dim, self.dim)
        ):
            raise IndexFormatError(path, "the PCA projection is missing or has the wrong shape")
        if isinstance(index, faiss.IndexIVF):
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._index, self._ids, self._tombstones = index, ids, tomb.astype(np.int64)
        return self


def _descriptor_key(d) -> str:
    return json.dumps(d, sort_keys=True)
