"""Likelihood ratios of a store's recorded comparisons from a cohort calibration: each pair's CMC
count above the background of both exhibits among the store's other comparisons (see
`cohort_lrs`). Used by `CaseStore.graph`; recomputed at every call, as backgrounds change when
exhibits arrive.

A background is a quantile of an exhibit's other CMC counts, so it needs every comparison of
the store, not only the ones a graph keeps. `CohortWeigher` reads them once and keeps, per
exhibit (and per scanning batch of the other exhibit, where exhibits carry one), only how many
comparisons reached each count: its memory grows with the exhibits and the distinct counts of
each, not with the comparisons. Each pair's background leaves the pair itself out
(`ballistix.cohort.normalise_pairs` with ``leave_pair_out``): the multiset of an exhibit's other
counts is its counts less one of the pair's count, so one table of locations per exhibit and
count serves all its pairs. The locations are `numpy.quantile` of the same sorted values
`ballistix.cohort.cohort_stats` takes, so the LRs are those `normalise_pairs` gives, to the bit
(a test compares them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import StoreError
from ..provenance import population, processing_signature

__all__ = ["cohort_lrs", "CohortWeigher"]

#: A histogram entry is ``(slot << _BITS) | cmc_count``: counts of cells below 2**20.
_BITS = 20
_MASK = (1 << _BITS) - 1
#: Comparisons read from SQLite at a time (a row with its parameters and evidence record: ~2 kB).
CHUNK = 1 << 13
#: Elements of the value matrices handed to one `numpy.quantile` call.
_BLOCK = 1 << 20
#: Histogram entries waiting before they are merged (at least; or twice the merged ones).
_MERGE = 1 << 20


def cohort_lrs(store, rows) -> dict[tuple[int, int], dict]:
    """Likelihood ratios of the recorded comparisons from a cohort calibration (registered or
    shipped), where one applies: each pair's CMC count above both exhibits' backgrounds in
    this store (their other comparisons, `ballistix.cohort.normalise_pairs`, with the
    calibration's cohort settings; within the other exhibit's scanning ``batch`` when
    exhibits carry one), weighed by the calibration fitted on such excesses. A pair whose
    exhibits have too few comparisons keeps its own LR. Recomputed at every call: the
    backgrounds change as exhibits arrive.

    ``rows``: ``(a, b, cmc_count, score, rotation_deg, confirmed, log10_lr, params_json, ...)``
    of the comparisons (exhibit rowids); the backgrounds come from these rows. Returns
    ``{(a, b): fields}`` for the pairs a cohort calibration weighed (see `CohortWeigher.weigh`).
    `CaseStore.graph` streams the comparisons through a `CohortWeigher` instead.
    """
    rows = list(rows)
    w = CohortWeigher.from_store(store, comparisons=[r[:3] for r in rows])
    return {(r[0], r[1]): out for r, out in zip(rows, w.weigh(rows)) if out is not None}


class CohortWeigher:
    """The cohort likelihood ratios of a set of comparisons, one chunk of rows at a time.

    Parameters
    ----------
    calibrations : sequence of Calibration
        The store's calibrations (`CaseStore.calibrations`); only the cohort ones are used.
    exhibits : iterable of tuple
        ``(rowid, kind, firearm_id, calibre, meta_json, processing_json)`` of every exhibit.
    comparisons : iterable of tuple
        ``(a, b, cmc_count)`` of every comparison (exhibit rowids): the cohorts. Read once,
        in any order, a chunk at a time; nothing of it is kept but, per exhibit, how many
        comparisons reached each count.

    Examples
    --------
    >>> w = CohortWeigher.from_store(store)                          # doctest: +SKIP
    >>> w.weigh([(a, b, cmc, score, rot, None, lr, params_json)])    # doctest: +SKIP
    [{'log10_lr': 3.1, 'cmc_excess': 21.0, ...}]
    """

    def __init__(self, calibrations: Sequence, exhibits: Iterable[tuple], comparisons: Iterable[tuple]):
        self.cals = [c for c in calibrations if c.needs_cohort]
        self.active = bool(self.cals)
        if not self.active:
            return
        self._read_exhibits(exhibits)
        # per calibration: its cohort settings and whether its cohorts are within the other exhibit's batch
        self._settings = []
        for cal in self.cals:
            s = dict(cal.reference.get("cohort") or {})
            kw = {"exclude_top": 1, "min_size": 5, "quantile": 0.5}  # normalise_pairs' defaults
            kw.update({k: s[k] for k in kw if k in s})
            from ..cohort import _check_options

            e, m, q, _ = _check_options(kw["exclude_top"], kw["min_size"], kw["quantile"], 0.0)
            self._settings.append((e, m, q, self._batches and s.get("by_batch", True), s.get("max_background")))
        modes = sorted({st[3] for st in self._settings})
        self._hist = dict(zip(modes, _histograms(comparisons, self, modes)))
        self._loc = {}  # (mode, exclude_top, min_size, quantile) -> (slots, full locations, codes, leave-one-out)
        for e, m, q, keyed, _ in self._settings:
            if (keyed, e, m, q) not in self._loc:
                codes, counts = self._hist[keyed]
                self._loc[(keyed, e, m, q)] = (*_locations(codes, counts, e, m, q), codes)
        self._chosen = {}  # (params_json, processing a, processing b, population a, population b) -> cal index
        self._lr = {}  # (cal index, excess, cmc) -> capped log10 LR
        self._names = {}  # cal index -> its checksum and origin

    @classmethod
    def from_store(cls, store, comparisons: Iterable[tuple] | None = None) -> CohortWeigher:
        """The weigher of a store's comparisons (``comparisons``: ``(a, b, cmc_count)`` rows to take
        as the cohorts instead of the store's, read a chunk at a time). The store's exhibits and
        comparisons are read only when a cohort calibration is registered or shipped."""
        cals = store.calibrations()
        if not any(c.needs_cohort for c in cals):
            return cls(cals, (), ())
        db = store._db
        exhibits = db.execute(
            "SELECT rowid, kind, firearm_id, calibre, meta_json, processing_json FROM exhibits ORDER BY rowid"
        )
        if comparisons is None:
            comparisons = _chunks(db.stream("SELECT a, b, cmc_count FROM comparisons"), 1 << 16)
        else:
            comparisons = [list(comparisons)]
        return cls(cals, exhibits, comparisons)

    # ----------------------------------------------------------- exhibits
    def _read_exhibits(self, exhibits) -> None:
        rowids, guns, batches, pops, procs = [], [], [], [], []
        gun_ids: dict[str, int] = {}
        self._pops: list[dict] = []
        pop_ids: dict[str, int] = {}
        self._procs: list[list] = []
        proc_ids: dict[str, int] = {}
        raw_proc: dict[str, int] = {}
        for rowid, kind, gun, calibre, meta, proc in exhibits:
            m = json.loads(meta)
            labels = {**(m.get("labels") or {}), **({"calibre": calibre} if calibre else {})}
            pop = population({"labels": labels, "population": m.get("population")})
            key = json.dumps(pop, sort_keys=True)
            if key not in pop_ids:
                pop_ids[key] = len(self._pops)
                self._pops.append(pop)
            if proc not in raw_proc:
                sig = processing_signature(json.loads(proc))
                skey = json.dumps(sig, sort_keys=True, default=str)
                if skey not in proc_ids:
                    proc_ids[skey] = len(self._procs)
                    self._procs.append(sig)
                if len(raw_proc) > 4096:  # processing records that differ by their results: keep few
                    raw_proc.clear()
                raw_proc[proc] = proc_ids[skey]
            rowids.append(rowid)
            guns.append(gun_ids.setdefault(gun, len(gun_ids)) if kind == "test_fire" and gun is not None else -1)
            batches.append(m.get("batch"))
            pops.append(pop_ids[key])
            procs.append(raw_proc[proc])
        self._rowids = np.array(rowids, dtype=np.int64)
        if np.any(np.diff(self._rowids) <= 0):
            order = np.argsort(self._rowids, kind="stable")
            self._rowids = self._rowids[order]
            guns, pops, procs = (np.asarray(x)[order] for x in (guns, pops, procs))
            batches = [batches[i] for i in order]
        self._gun = np.asarray(guns, dtype=np.int64)
        self._pop = np.asarray(pops, dtype=np.int64)
        self._proc = np.asarray(procs, dtype=np.int64)
        self._batches = bool(batches) and all(x is not None for x in batches)
        if self._batches:
            names: dict[str, int] = {}
            self._key = np.array([names.setdefault(str(x), len(names)) for x in batches], dtype=np.int64)
            self._nkeys = max(len(names), 1)
        else:
            self._key = np.zeros(len(rowids), dtype=np.int64)
            self._nkeys = 1
        if len(rowids) * self._nkeys >= 1 << (62 - _BITS):
            raise StoreError(f"too many exhibits x scanning batches ({len(rowids)} x {self._nkeys}) for the cohorts")

    def _pos(self, ids: np.ndarray) -> np.ndarray:
        """Positions of exhibit rowids in the exhibits read."""
        p = np.searchsorted(self._rowids, ids)
        if ids.size and (
            np.any(p >= self._rowids.size) or np.any(self._rowids[np.minimum(p, self._rowids.size - 1)] != ids)
        ):
            raise StoreError("a comparison names an exhibit that is not in the store (run `ballistix check`)")
        return p

    def _sides(self, a, b, keyed: bool):
        """Both sides of each pair: (slot of a among b's key, slot of b among a's key, counted in
        the cohorts: not test fires of one gun)."""
        pa, pb = self._pos(a), self._pos(b)
        same = (self._gun[pa] >= 0) & (self._gun[pa] == self._gun[pb])
        ka = self._key[pa] if keyed else 0
        kb = self._key[pb] if keyed else 0
        n = self._nkeys if keyed else 1
        return pa * n + kb, pb * n + ka, ~same, pa, pb

    # -------------------------------------------------------------- weigh
    def weigh(self, rows: Sequence[tuple]) -> list[dict | None]:
        """The cohort fields of each row (``a, b, cmc_count, score, rotation_deg, confirmed,
        log10_lr, params_json, ...``), or None where no cohort calibration weighs it: ``log10_lr``
        (None: withheld), ``pair_log10_lr`` (the row's own), ``cmc_excess``, ``cmc_background``,
        ``lr_basis``, ``calibration_sha256``, ``calibration_origin``."""
        if not self.active or not rows:
            return [None] * len(rows)
        from ..evidence import cap_without_cells, select_calibration

        a = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        b = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        cmc = _counts(np.fromiter((r[2] for r in rows), np.float64, len(rows)))
        excess, background = [], []
        pa = pb = None
        for e, m, q, keyed, _ in self._settings:
            slots, full, wo, codes = self._loc[(keyed, e, m, q)]
            sa, sb, counted, pa, pb = self._sides(a, b, keyed)
            la = _lookup(sa, cmc, counted, slots, full, codes, wo)
            lb = _lookup(sb, cmc, counted, slots, full, codes, wo)
            with np.errstate(invalid="ignore"):
                excess.append(cmc - np.maximum(la, lb))  # NaN where either exhibit has no cohort
            background.append(np.fmax(la, lb))
        out: list[dict | None] = []
        ia, ib = pa.tolist(), pb.tolist()
        proc_a, proc_b, pop_a, pop_b = (
            x.tolist() for x in (self._proc[pa], self._proc[pb], self._pop[pa], self._pop[pb])
        )
        for k, row in enumerate(rows):
            i, j = ia[k], ib[k]
            key = (row[7], proc_a[k], proc_b[k], pop_a[k], pop_b[k])
            ci = self._chosen.get(key)
            if ci is None:
                probe = _PairRecord(json.loads(row[7]), self, i, j, row[0], row[1])
                chosen, _ = select_calibration(probe, self.cals, cohort=True)
                ci = -1 if chosen is None else next(n for n, c in enumerate(self.cals) if c is chosen)
                self._chosen[key] = ci
            x = excess[ci][k] if ci >= 0 else np.nan
            if not np.isfinite(x):
                out.append(None)
                continue
            cal, limit, bg = self.cals[ci], self._settings[ci][4], float(background[ci][k])
            if limit is not None and bg >= limit:  # an exhibit that does not discriminate here
                out.append(
                    {
                        "log10_lr": None,
                        "pair_log10_lr": row[6],
                        "cmc_background": bg,
                        "calibration_sha256": None,
                        "calibration_origin": None,
                        "lr_basis": f"withheld: an exhibit reaches {bg:g} CMCs against others "
                        f"of its population (limit {limit:g} of {cal.name}): not "
                        f"discriminating",
                    }
                )
                continue
            lk = (ci, float(x), row[2])
            lr = self._lr.get(lk)
            if lr is None:
                lr = cap_without_cells(float(cal.log10_lr(np.array([[x]]))[0]), row[2])
                if len(self._lr) > 100_000:
                    self._lr.clear()
                self._lr[lk] = lr
            out.append(
                {
                    "log10_lr": lr,
                    "pair_log10_lr": row[6],
                    "cmc_excess": float(x),
                    "cmc_background": bg,
                    **self._named(ci),
                }
            )
        return out

    def _named(self, ci: int) -> dict:
        """A calibration's checksum and origin, once (each canonicalises the whole calibration)."""
        if ci not in self._names:
            cal = self.cals[ci]
            self._names[ci] = {
                "lr_basis": f"cohort: {cal.name}",
                "calibration_sha256": cal.sha256,
                "calibration_origin": cal.describe_origin(),
            }
        return self._names[ci]


def _chunks(cursor, size: int = CHUNK) -> Iterable[list]:
    while rows := cursor.fetchmany(size):
        yield rows


def _counts(cmc: np.ndarray) -> np.ndarray:
    """CMC counts as integers, checked: the cohorts are tables of counts."""
    if cmc.size and (not np.all(np.isfinite(cmc)) or np.any(cmc < 0) or np.any(cmc > _MASK) or np.any(cmc % 1)):
        bad = cmc[~(np.isfinite(cmc) & (cmc >= 0) & (cmc <= _MASK) & (cmc % 1 == 0))][0]
        raise StoreError(f"a recorded comparison has a CMC count of {bad!r}: not a count of cells")
    return cmc.astype(np.int64)


def _histograms(comparisons, w: CohortWeigher, modes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per key mode: the sorted distinct ``slot << _BITS | count`` of the comparisons' sides that
    count in a cohort, and how many sides have each. Merged as they come, so that memory holds
    the distinct entries, not the comparisons."""
    parts = {mode: [] for mode in modes}
    merged = {mode: (np.zeros(0, np.int64), np.zeros(0, np.int64)) for mode in modes}
    pending = dict.fromkeys(modes, 0)
    for chunk in comparisons:
        if not len(chunk):
            continue
        arr = np.asarray(chunk, dtype=np.float64).reshape(-1, 3)
        a, b, cmc = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), _counts(arr[:, 2])
        for mode in modes:
            sa, sb, counted, *_ = w._sides(a, b, mode)
            codes = np.concatenate([(sa[counted] << _BITS) | cmc[counted], (sb[counted] << _BITS) | cmc[counted]])
            u, c = np.unique(codes, return_counts=True)
            parts[mode].append((u, c))
            pending[mode] += u.size
            if pending[mode] > max(_MERGE, 2 * merged[mode][0].size):
                merged[mode] = _merge([merged[mode], *parts[mode]])
                parts[mode], pending[mode] = [], 0
    return [_merge([merged[mode], *parts[mode]]) for mode in modes]


def _merge(parts) -> tuple[np.ndarray, np.ndarray]:
    codes = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    if not codes.size:
        return codes, counts
    order = np.argsort(codes, kind="stable")
    codes, counts = codes[order], counts[order]
    first = np.r_[True, codes[1:] != codes[:-1]]
    return codes[first], np.add.reduceat(counts, np.flatnonzero(first))


def _locations(codes, counts, exclude_top: int, min_size: int, quantile: float):
    """Each slot's cohort location (`cohort_stats`: the ``quantile`` of its sorted counts less the
    ``exclude_top`` highest; NaN with fewer than ``min_size``), over all its counts (``full``, per
    slot) and with one comparison of each count left out (``wo``, per entry of ``codes``).
    Returns ``(slots, full, wo)``."""
    if not codes.size:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    slot = codes >> _BITS
    value = (codes & _MASK).astype(np.float64)
    first_of_slot = np.r_[True, slot[1:] != slot[:-1]]
    start = np.flatnonzero(first_of_slot)
    slots = slot[start]
    ends = np.cumsum(counts)  # global: entry k's values sit at [ends[k] - counts[k], ends[k])
    base = (ends - counts)[start]  # the slot's first value
    size = np.diff(np.r_[base, ends[-1]])
    owner = np.cumsum(first_of_slot) - 1  # the slot of each entry
    # targets: every slot whole, then every entry's slot with one of that entry's count left out
    t_base = np.r_[base, base[owner]]
    t_cut = np.r_[np.full(slots.size, np.iinfo(np.int64).max), (ends - counts) - base[owner]]
    t_len = np.r_[size, size[owner] - 1] - exclude_top
    loc = np.full(t_base.size, np.nan)
    ok = np.flatnonzero(t_len >= min_size)
    ok = ok[np.argsort(t_len[ok], kind="stable")]
    lens = t_len[ok]
    bounds = np.flatnonzero(np.r_[True, lens[1:] != lens[:-1], True]) if lens.size else np.zeros(1, np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        n = int(lens[lo])
        step = max(1, _BLOCK // n)
        p = np.arange(n)
        for s in range(lo, hi, step):
            idx = ok[s : min(hi, s + step)]
            pos = p[None, :] + (p[None, :] >= t_cut[idx, None])  # the cut-out value's place skipped
            entry = np.searchsorted(ends, t_base[idx, None] + pos, side="right")
            loc[idx] = np.quantile(value[entry], quantile, axis=1)  # rows are sorted: as cohort_stats
    return slots, loc[: slots.size], loc[slots.size :]


def _lookup(slot, cmc, counted, slots, full, codes, wo) -> np.ndarray:
    """The cohort location of one side of each pair: its slot less the pair itself (where the
    pair counts in the cohort), else its slot whole (NaN: no cohort)."""
    out = np.full(slot.size, np.nan)
    if not codes.size:
        if np.any(counted):
            raise StoreError("the store's comparisons changed while they were read; read them again")
        return out
    code = (slot << _BITS) | cmc
    j = np.minimum(np.searchsorted(codes, code), codes.size - 1)
    hit = codes[j] == code
    if np.any(counted & ~hit):
        raise StoreError("the store's comparisons changed while they were read; read them again")
    out[counted] = wo[j[counted]]
    rest = ~counted
    if np.any(rest):
        i = np.minimum(np.searchsorted(slots, slot[rest]), slots.size - 1)
        found = slots[i] == slot[rest]
        out[np.flatnonzero(rest)[found]] = full[i[found]]
    return out


class _PairRecord:
    """A recorded comparison as `Calibration.check` reads it: parameters and both inputs'
    processing and population."""

    def __init__(self, params: dict, w: CohortWeigher, i: int, j: int, ia, ib):
        self.params = params
        self.inputs = {
            "a": {"processing": w._procs[w._proc[i]], "population": w._pops[w._pop[i]], "label": str(ia)},
            "b": {"processing": w._procs[w._proc[j]], "population": w._pops[w._pop[j]], "label": str(ib)},
        }
