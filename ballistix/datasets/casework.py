"""Simulated casework: crime scenes, firearms and exhibits with ground truth.

A small fictional world for the linkage graph and SDG indicator 16.4.2 (share
of seized, found or surrendered firearms whose illicit origin or context has
been traced). Guns are used at scenes in one city, "Havenstad" (52.0-52.2 N,
4.2-4.5 E); some are recovered, test-fired and traced. Each gun has one
context (gangs keep their guns), one or two home districts and a heavy-tailed
reuse weight: a few guns turn up at many scenes, most at one or two. Every
cartridge case fired by gun X is fired by the same `make_firearm` gun, so it
carries X's marks; gun ids, models and marks are those `simulate` gives for the
same ``seed``, ``models`` and ``run_size``. The casework's own draws come from
``SeedSequence([seed, 3])`` (streams 1 and 2 are the simulator's).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..scan import Scan
from .simulate import MODELS, _as_difficulty, _resolution, fire, gun_plan, make_firearm

__all__ = ["simulate_casework", "Casework", "CONTEXTS", "DISTRICTS"]

CITY, COUNTRY, CALIBRE = "Havenstad", "Netherlands", "9mm Luger"  # every simulated model is 9 mm
#: District of the fictional city -> (centre latitude, centre longitude, share of gun activity).
DISTRICTS: dict[str, tuple[float, float, float]] = {
    "Oude Haven": (52.078, 4.300, 0.18),
    "Noorderkwartier": (52.140, 4.330, 0.15),
    "Zuidpoort": (52.030, 4.360, 0.14),
    "Molenwijk": (52.100, 4.420, 0.12),
    "Stationsbuurt": (52.090, 4.350, 0.12),
    "Kanaaleiland": (52.060, 4.250, 0.11),
    "Westerduinen": (52.110, 4.240, 0.10),
    "Lindenhof": (52.170, 4.400, 0.08),
}
#: Context -> (share of guns, reuse factor: how many scenes such a gun tends to turn up at).
CONTEXTS: dict[str, tuple[float, float]] = {
    "street gang": (0.35, 1.5),
    "drug trafficking": (0.25, 1.2),
    "organized crime": (0.15, 1.0),
    "robbery": (0.12, 0.6),
    "domestic": (0.10, 0.15),
    "terrorism": (0.03, 0.3),
}
_MAKER_COUNTRY = {
    "Ruger": "United States",
    "Glock": "Austria",
    "Smith & Wesson": "United States",
    "Hi-Point": "United States",
    "SIG Sauer": "Germany",
    "Beretta": "Italy",
    "Taurus": "Brazil",
}
_HELD_IN = {
    COUNTRY: 0.35,
    "Belgium": 0.15,
    "Germany": 0.15,
    "Czechia": 0.1,
    "Serbia": 0.1,
    "Croatia": 0.08,
    "Slovakia": 0.07,
}  # last legally held, when not the maker's country
_SERIALS = {
    "Ruger": "ddd-ddddd",
    "Glock": "LLLddd",
    "Smith & Wesson": "LLLdddd",
    "Hi-Point": "Pddddddd",
    "SIG Sauer": "Udddddd",
    "Beretta": "BERdddddd",
    "Taurus": "TLLddddd",
}  # L letter, d digit
_STATUS = {"seized": (0.75, 0.5), "found": (0.2, 0.2), "surrendered": (0.05, 0.3)}  # (seen at a scene, not seen)
_UNTRACED = {"in progress": 0.4, "not traced": 0.35, "not requested": 0.25}
_RESULTS = {
    "diverted from lawful stock in {}": 0.4,
    "stolen from private owner": 0.3,
    "legally held, misused": 0.2,
    "illicit manufacture": 0.1,
}
_P_OBLITERATED, _P_UNSEEN, _P_PARTNER = 0.2, 0.3, 0.15  # serials; recovered guns never at a scene; 2-gun scenes


def _draw(rng: np.random.Generator, table: dict, col: int | None = None) -> str:
    keys = list(table)
    p = np.array([table[k] if col is None else table[k][col] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _country(name: str) -> str:
    return f"the {name}" if name in ("Netherlands", "United States") else name


def _serial(rng: np.random.Generator, make: str) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return "".join(
        letters[rng.integers(len(letters))] if c == "L" else str(rng.integers(10)) if c == "d" else c
        for c in _SERIALS[make]
    )


@dataclass(repr=False)
class Casework:
    """Simulated casework: scenes, firearms and exhibits (dicts), and scans aligned with exhibits.

    ``firearms`` and the ``firearm_truth`` key of each exhibit are ground
    truth; an analyst knows a scene exhibit's gun only through matching.
    ``scans`` (empty for a metadata-only run) is not compared by ``==`` and
    not saved by `to_json`.
    """

    scenes: list[dict[str, Any]]
    firearms: list[dict[str, Any]]
    exhibits: list[dict[str, Any]]
    scans: list[Scan] = field(default_factory=list, compare=False)
    params: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        n_rec = sum(f["recovered"] for f in self.firearms)
        return (
            f"<Casework: {len(self.scenes)} scenes, {len(self.firearms)} firearms ({n_rec} recovered), "
            f"{len(self.exhibits)} exhibits, {len(self.scans) or 'no'} scans>"
        )

    def same_gun_pairs(self) -> set[tuple[str, str]]:
        """Truth: every pair ``(a, b)``, ``a < b``, of exhibit ids fired by the same gun."""
        by_gun: dict[str, list[str]] = {}
        for x in self.exhibits:
            by_gun.setdefault(x["firearm_truth"], []).append(x["id"])
        return {tuple(sorted(p)) for ids in by_gun.values() for p in itertools.combinations(ids, 2)}

    def linked_scenes(self) -> set[tuple[str, str]]:
        """Truth: every pair ``(a, b)``, ``a < b``, of scene ids where the same gun was used."""
        return {tuple(sorted(p)) for f in self.firearms for p in itertools.combinations(f["scenes"], 2)}

    def indicator_16_4_2(self) -> float:
        """Truth of SDG 16.4.2: traced recovered guns / recovered guns (NaN if none was recovered)."""
        rec = [f for f in self.firearms if f["recovered"]]
        return sum(f["tracing_status"] == "traced" for f in rec) / len(rec) if rec else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The metadata (not the scans) as plain JSON-ready Python objects."""
        return copy.deepcopy(
            {
                "format": "ballistix-casework",
                "version": 1,
                "params": self.params,
                "scenes": self.scenes,
                "firearms": self.firearms,
                "exhibits": self.exhibits,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Casework:
        """Inverse of `to_dict` (``scans`` is left empty)."""
        if not isinstance(d, dict) or d.get("format") != "ballistix-casework":
            raise ParameterError("expected a dict from Casework.to_dict() with format 'ballistix-casework'")
        d = copy.deepcopy(d)
        return cls(d["scenes"], d["firearms"], d["exhibits"], [], d.get("params", {}))

    def to_json(self, indent: int | None = None) -> str:
        """`to_dict` as a JSON string, to save beside the scans."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Casework:
        """Inverse of `to_json`."""
        return cls.from_dict(json.loads(text))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check(
    n_firearms,
    n_scenes,
    seed,
    recovered_share,
    traced_share,
    shots_per_scene,
    test_fires,
    start_date,
    days,
    difficulty,
    resolution,
    scans,
    models,
    run_size,
):
    for name, v, lo in [
        ("n_firearms", n_firearms, 1),
        ("n_scenes", n_scenes, 1),
        ("seed", seed, 0),
        ("test_fires", test_fires, 0),
        ("days", days, 1),
        ("run_size", run_size, 1),
    ]:
        if not _is_int(v) or v < lo:
            raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}")
    for name, v in [("recovered_share", recovered_share), ("traced_share", traced_share)]:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= v <= 1:
            raise ParameterError(f"{name} must be a number in [0, 1], got {v!r}")
    sps = shots_per_scene
    if not (isinstance(sps, (tuple, list)) and len(sps) == 2 and all(map(_is_int, sps)) and 1 <= sps[0] <= sps[1]):
        raise ParameterError(
            f"shots_per_scene must be a (min, max) pair of integers with 1 <= min <= max, got {shots_per_scene!r}"
        )
    try:
        start = start_date if type(start_date) is dt.date else dt.date.fromisoformat(str(start_date))
    except ValueError:
        raise ParameterError(f"start_date must be an ISO date 'YYYY-MM-DD', got {start_date!r}") from None
    if not isinstance(scans, bool):
        raise ParameterError(f"scans must be True or False, got {scans!r}")
    if models is not None and not (isinstance(models, (list, tuple)) and models):
        raise ParameterError(f"models must be None or a non-empty list of keys of MODELS, got {models!r}")
    for mm in models or []:
        if mm not in MODELS:
            raise ParameterError(f"unknown model {mm!r}; known: {sorted(MODELS)}")
    _as_difficulty(difficulty)
    _resolution(resolution)
    return start, list(models) if models else sorted(MODELS)


def simulate_casework(
    n_firearms: int = 8,
    n_scenes: int = 20,
    *,
    seed: int = 0,
    recovered_share: float = 0.5,
    traced_share: float = 0.6,
    shots_per_scene: tuple[int, int] = (1, 3),
    test_fires: int = 2,
    start_date: str = "2024-01-01",
    days: int = 365,
    difficulty="realistic",
    resolution="fast",
    scans: bool = True,
    models: list[str] | None = None,
    run_size: int = 1,
) -> Casework:
    """Simulate a year of gun crime in one city: scenes, guns, exhibits, scans and ground truth.

    Parameters
    ----------
    n_firearms, n_scenes : int
        Guns in the world, crime scenes. If there are more guns than scenes
        can hold, some unrecovered guns are never seen (they stay in
        ``firearms`` with ``scenes=[]``).
    seed : int
        Everything is deterministic given the seed and the other arguments.
    recovered_share : float in [0, 1]
        Share of guns recovered (seized, found or surrendered), rounded to a count.
    traced_share : float in [0, 1]
        Share of recovered guns whose tracing_status is "traced" (rounded to a
        count; guns with an obliterated serial are less likely to be traced).
    shots_per_scene : (int, int)
        Min and max cartridge cases one gun leaves at a scene.
    test_fires : int
        Test fires per recovered gun, fired in the lab after recovery.
    start_date, days : str (ISO date), int
        Scene dates are spread over ``days`` days from ``start_date``.
    difficulty, resolution, models, run_size
        As for `simulate` (default resolution "fast": 12.5 um, 300 x 300).
    scans : bool
        False: metadata only (fast, for graph tests); ``Casework.scans`` is empty.

    Returns
    -------
    Casework
        ``scenes`` (id, date, place, lat, lon, context, firearms),
        ``firearms`` (id, make, model, calibre, manufacturing_run, serial,
        serial_obliterated, scenes, recovered, status, recovery_date,
        recovery_place, recovery_country, origin_country, tracing_status,
        tracing_result; the recovery fields are None for unrecovered guns),
        ``exhibits`` (id "E0001"/"T0001", kind "scene"/"test_fire", scene,
        firearm_truth, test_fired_from, calibre, date) and ``scans`` in the
        order of ``exhibits``, whose ``meta["labels"]`` repeat the exhibit
        (``exhibit``, ``kind``, ``scene``, ``test_fired_from``, ``calibre``,
        ``date`` and ``firearm`` = the truth).

    Examples
    --------
    >>> from ballistix.datasets import simulate_casework
    >>> cw = simulate_casework(n_firearms=4, n_scenes=6, seed=1, scans=False)
    >>> cw
    <Casework: 6 scenes, 4 firearms (2 recovered), 14 exhibits, no scans>
    >>> cw.scenes[0]["id"], cw.exhibits[0]["kind"], cw.indicator_16_4_2()
    ('S001', 'scene', 0.5)
    """
    start, models = _check(
        n_firearms,
        n_scenes,
        seed,
        recovered_share,
        traced_share,
        shots_per_scene,
        test_fires,
        start_date,
        days,
        difficulty,
        resolution,
        scans,
        models,
        run_size,
    )
    n, (lo, hi) = int(n_firearms), (int(shots_per_scene[0]), int(shots_per_scene[1]))
    plan = gun_plan(n, int(seed), models, run_size)  # the guns `simulate` makes for this seed
    ids = [g["firearm_id"] for g in plan]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))

    # The steps below draw from ``rng`` in this order, and that order defines every simulated casework:
    # a new draw goes after the last one.
    ctx, weight, homes, recovered, active = _draw_guns(rng, n, recovered_share)
    guns_at = _guns_at_scenes(rng, n_scenes, ctx, weight, active)
    scenes, seen_at, last = _scenes(rng, guns_at, ctx, homes, ids, start, days)
    firearms = _firearms(rng, plan, seen_at, last, recovered, homes, start, days)
    _trace(rng, firearms, recovered, traced_share)
    exhibits = _exhibits(rng, scenes, guns_at, firearms, ids, (lo, hi), test_fires)

    params = {
        "n_firearms": n,
        "n_scenes": int(n_scenes),
        "seed": int(seed),
        "recovered_share": float(recovered_share),
        "traced_share": float(traced_share),
        "shots_per_scene": [lo, hi],
        "test_fires": int(test_fires),
        "start_date": start.isoformat(),
        "days": int(days),
        "difficulty": difficulty,
        "resolution": resolution,
        "scans": scans,
        "models": models,
        "run_size": int(run_size),
    }
    params = json.loads(json.dumps(params, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    cw = Casework(scenes, firearms, exhibits, [], params)
    if scans:
        cw.scans = _fire_exhibits(exhibits, plan, difficulty, resolution)
    return cw


def _day(start: dt.date, k) -> str:
    """The ISO date ``k`` days (rounded down) after ``start``."""
    return (start + dt.timedelta(days=int(k))).isoformat()


def _draw_guns(rng: np.random.Generator, n: int, recovered_share: float):
    """Who uses each of ``n`` guns: ``(context index, reuse weight, home district indices, recovered?,
    active?)``. Reuse is heavy-tailed (Pareto) and scaled by the context; one or two home districts by
    their share of activity; ``recovered_share`` of the guns (rounded) recovered; a recovered gun is never
    seen at a scene with chance `_P_UNSEEN`, but at least one gun is active."""
    cnames, dnames = list(CONTEXTS), list(DISTRICTS)
    ctx = rng.choice(len(cnames), n, p=[CONTEXTS[c][0] for c in cnames])
    weight = (rng.pareto(2.0, n) + 1.0) * np.array([CONTEXTS[cnames[c]][1] for c in ctx])
    d_p = np.array([DISTRICTS[d][2] for d in dnames])
    homes = [
        [int(d) for d in rng.choice(len(dnames), 2 if rng.random() < 0.35 else 1, replace=False, p=d_p)]
        for _ in range(n)
    ]
    recovered = np.zeros(n, bool)
    recovered[rng.choice(n, int(np.floor(recovered_share * n + 0.5)), replace=False)] = True
    active = ~(recovered & (rng.random(n) < _P_UNSEEN))
    if not active.any():
        active[int(rng.integers(n))] = True
    return ctx, weight, homes, recovered, active


def _guns_at_scenes(rng: np.random.Generator, n_scenes: int, ctx, weight, active) -> list[list[int]]:
    """The guns (indices) used at each scene: every active gun once as far as scenes allow, the other
    scenes by reuse weight; guns left over join a one-gun scene of their context; a one-gun scene gets a
    partner of its context with chance `_P_PARTNER`."""
    act = np.flatnonzero(active)
    order = rng.permutation(act)
    prim = [int(g) for g in order[:n_scenes]]
    prim += [int(g) for g in rng.choice(act, n_scenes - len(prim), p=weight[act] / weight[act].sum())]
    guns_at = [[int(g)] for g in rng.permutation(prim)]
    for g in order[n_scenes:]:  # more guns than scenes: join a scene of the same context
        free = [j for j, gs in enumerate(guns_at) if len(gs) == 1 and ctx[gs[0]] == ctx[g]]
        if free:
            guns_at[int(rng.choice(free))].append(int(g))
    for gs in guns_at:
        if len(gs) == 1 and rng.random() < _P_PARTNER:
            mates = np.array([g for g in act if g != gs[0] and ctx[g] == ctx[gs[0]]], int)
            if mates.size:
                gs.append(int(rng.choice(mates, p=weight[mates] / weight[mates].sum())))
    return guns_at


def _scenes(rng: np.random.Generator, guns_at, ctx, homes, ids, start: dt.date, days: int):
    """The scene records, in date order over ``days`` from ``start``, each in a home district of its
    first gun (the first one 70% of the time) a little off the district centre: ``(scenes, scene ids per
    gun, day offset of each gun's last scene)``."""
    cnames, dnames = list(CONTEXTS), list(DISTRICTS)
    offsets = np.sort(rng.integers(0, days, len(guns_at)))
    scenes, seen_at, last = [], [[] for _ in ids], {}
    for j, (off, gs) in enumerate(zip(offsets, guns_at)):
        home = homes[gs[0]]
        d = home[0] if len(home) == 1 or rng.random() < 0.7 else home[1]
        lat, lon = np.array(DISTRICTS[dnames[d]][:2]) + rng.normal(0, 0.006, 2)
        scenes.append(
            {
                "id": f"S{j + 1:03d}",
                "date": _day(start, off),
                "place": dnames[d],
                "lat": round(float(np.clip(lat, 52.0, 52.2)), 5),
                "lon": round(float(np.clip(lon, 4.2, 4.5)), 5),
                "context": cnames[ctx[gs[0]]],
                "firearms": [ids[g] for g in gs],
            }
        )
        for g in gs:
            seen_at[g].append(scenes[-1]["id"])
            last[g] = int(off)
    return scenes, seen_at, last


def _firearms(rng: np.random.Generator, plan, seen_at, last, recovered, homes, start: dt.date, days: int):
    """The firearm records: identity (serial, obliterated with chance `_P_OBLITERATED`), the scenes it
    was seen at, and for a recovered gun its status, recovery date (after its last scene, or any day
    for one never seen), place and origin country. Tracing is filled in by `_trace`."""
    dnames = list(DISTRICTS)
    firearms = []
    for i, gun in enumerate(plan):
        m = MODELS[gun["make_model"]]
        obliterated = bool(rng.random() < _P_OBLITERATED)
        f = {
            "id": gun["firearm_id"],
            "make": m["make"],
            "model": m["model"],
            "calibre": CALIBRE,
            "manufacturing_run": gun["run"] or gun["firearm_id"],
            "serial": None if obliterated else _serial(rng, m["make"]),
            "serial_obliterated": obliterated,
            "scenes": seen_at[i],
            "recovered": bool(recovered[i]),
            "status": None,
            "recovery_date": None,
            "recovery_place": None,
            "recovery_country": None,
            "origin_country": None,
            "tracing_status": None,
            "tracing_result": None,
        }
        if recovered[i]:
            seen = i in last
            f["status"] = _draw(rng, _STATUS, 0 if seen else 1)
            f["recovery_date"] = _day(start, last[i] + 1 + rng.exponential(45.0) if seen else rng.integers(0, days))
            f["recovery_place"] = dnames[homes[i][0]] if seen or rng.random() < 0.8 else f"{CITY} port"
            f["recovery_country"] = COUNTRY
            f["origin_country"] = _MAKER_COUNTRY[m["make"]] if rng.random() < 0.35 else _draw(rng, _HELD_IN)
        firearms.append(f)
    return firearms


def _trace(rng: np.random.Generator, firearms, recovered, traced_share: float) -> None:
    """Fill in (in place) the tracing of the recovered guns: ``traced_share`` of them (rounded; an
    obliterated serial makes a gun less likely to be picked) traced, with a result; the others in
    progress, not traced or not requested."""
    rec = np.flatnonzero(recovered)
    traced = set()
    if rec.size:
        p = np.where([firearms[i]["serial_obliterated"] for i in rec], 0.3, 1.0)
        traced = {
            int(i) for i in rng.choice(rec, int(np.floor(traced_share * rec.size + 0.5)), replace=False, p=p / p.sum())
        }
    for i in rec:
        f = firearms[i]
        if i in traced:
            result = _draw(rng, _RESULTS)
            if result in ("legally held, misused", "stolen from private owner"):
                f["origin_country"] = COUNTRY
            f.update(tracing_status="traced", tracing_result=result.format(_country(f["origin_country"])))
        else:
            f["tracing_status"] = _draw(rng, _UNTRACED)


def _exhibits(rng: np.random.Generator, scenes, guns_at, firearms, ids, shots_per_scene, test_fires: int):
    """The exhibit records: ``shots_per_scene`` (min, max) cartridge cases per gun at each scene
    (``E0001``...), then ``test_fires`` test fires of each recovered gun 1-30 days after its recovery
    (``T0001``...)."""
    lo, hi = shots_per_scene
    exhibits = []
    for s, gs in zip(scenes, guns_at):
        for g in gs:
            for _ in range(int(rng.integers(lo, hi + 1))):
                exhibits.append(
                    {
                        "id": f"E{len(exhibits) + 1:04d}",
                        "kind": "scene",
                        "scene": s["id"],
                        "firearm_truth": ids[g],
                        "test_fired_from": None,
                        "calibre": CALIBRE,
                        "date": s["date"],
                    }
                )
    k = 0
    for f in firearms:
        if f["recovered"]:
            when = dt.date.fromisoformat(f["recovery_date"]) + dt.timedelta(days=int(rng.integers(1, 31)))
            for _ in range(test_fires):
                k += 1
                exhibits.append(
                    {
                        "id": f"T{k:04d}",
                        "kind": "test_fire",
                        "scene": None,
                        "firearm_truth": f["id"],
                        "test_fired_from": f["id"],
                        "calibre": CALIBRE,
                        "date": when.isoformat(),
                    }
                )
    return exhibits


def _fire_exhibits(exhibits, plan, difficulty, resolution) -> list[Scan]:
    """One gun at a time, seeded as `iter_simulate` does: fire its exhibits in order."""
    by_gun: dict[str, list[int]] = {}
    for e, x in enumerate(exhibits):
        by_gun.setdefault(x["firearm_truth"], []).append(e)
    out: list[Scan] = [None] * len(exhibits)  # type: ignore[list-item]
    for gun_args in plan:
        mine = by_gun.get(gun_args["firearm_id"])
        if not mine:
            continue
        gun = make_firearm(**gun_args, resolution=resolution)
        for shot, (e, ss) in enumerate(zip(mine, gun_args["seed"].spawn(len(mine)))):
            x = exhibits[e]
            s = fire(gun, shot, seed=ss, difficulty=difficulty, resolution=resolution)
            s.meta["labels"].update(
                exhibit=x["id"],
                kind=x["kind"],
                scene=x["scene"],
                firearm=x["firearm_truth"],
                test_fired_from=x["test_fired_from"],
                calibre=x["calibre"],
                date=x["date"],
            )
            out[e] = s
    return out
