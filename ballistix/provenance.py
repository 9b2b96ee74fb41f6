"""Provenance of a scan: the processing it went through and the population it comes from.

Read from a scan's metadata (``meta["processing"]``, ``meta["labels"]``, the x3p instrument
record), these say which results may be compared or weighed together: `processing_signature`
(the steps and parameters a calibration was fitted for), `original_spacing_um` (how finely the
scan was first sampled) and `population` (calibre, make/model, instrument). The comparison
records them in its inputs; the evidence layer checks them against a calibration.
"""

from __future__ import annotations

__all__ = ["POPULATION_KEYS", "population", "processing_signature", "original_spacing_um"]

#: Steps that only adapt the working grid to the input's sampling: like the input's own spacing,
#: they are not part of what a calibration is fitted for (the output grid and filters are).
_SAMPLING_STEPS = ("block_average",)


def processing_signature(meta_processing) -> list:
    """The steps and parameters of a scan's ``meta["processing"]`` (results and versions dropped).

    ``block_average`` (the anti-aliasing reduction `preprocess` applies to a scan sampled far more
    finely than its output grid, before the area-averaging resample) is left out: like the input
    spacing, it depends on the instrument, not on the processing a calibration was fitted for."""
    return [
        [st.get("step"), st.get("params", {})]
        for st in (meta_processing or [])
        if isinstance(st, dict) and st.get("step") not in _SAMPLING_STEPS
    ]


def original_spacing_um(scan) -> float | None:
    """The coarsest lateral spacing (micrometres) a processed scan was sampled at before
    `preprocess` resampled it, from the ``resample`` steps of ``meta["processing"]``; None when
    no resampling is on record."""
    out = None
    for st in scan.meta.get("processing") or ():
        if not isinstance(st, dict) or st.get("step") != "resample":
            continue
        res, par = st.get("result") or {}, st.get("params") or {}
        try:
            if "from_spacing_um" in res:
                um = max(float(v) for v in res["from_spacing_um"])
            else:  # recorded before from_spacing_um: cv2 shifts the origin by half the change of step
                um = max(float(n) - 2e6 * float(o) for n, o in zip(par["spacing_um"], res["origin_m"]))
        except (KeyError, TypeError, ValueError):
            continue
        out = um if out is None else max(out, um)
    return out


#: What a score means depends on the population both scans come from. A calibration's ``domain``
#: may restrict each of these keys to a list of values (None or absent: any value).
POPULATION_KEYS: dict[str, str] = {
    "calibre": "cartridge calibre (labels 'calibre'), e.g. 9mm Luger",
    "make_model": "make and model of the firearm (labels 'make' + 'model'), when known",
    "instrument": "scanning instrument (x3p Record2 manufacturer + model, or labels 'instrument')",
}

_CALIBRE_ALIASES = {
    "9mm": "9mm Luger",
    "9mmluger": "9mm Luger",
    "9x19": "9mm Luger",
    "9x19mm": "9mm Luger",
    "9mmparabellum": "9mm Luger",
    "9mmpara": "9mm Luger",
    "9mmpb": "9mm Luger",
    "9x19parabellum": "9mm Luger",
    "9mmnato": "9mm Luger",
}


def _norm(v) -> str:
    """Case- and punctuation-blind form of a population value (for matching, not for display)."""
    return "".join(ch for ch in str(v).casefold() if ch.isalnum())


def _canonical(key: str, v) -> str | None:
    if v is None or str(v).strip() == "" or _norm(v) in ("", "na", "none", "unknown", "notavailable"):
        return None
    v = " ".join(str(v).split())
    if key == "calibre":
        return _CALIBRE_ALIASES.get(_norm(v), v)
    return v


def population(meta: dict) -> dict[str, str | None]:
    """The population keys of a scan (`POPULATION_KEYS`) from its metadata; None where unknown.

    Reads ``meta["labels"]`` (calibre, make, model, instrument: as given at ingest or by
    the simulator), then ``meta["population"]`` (recorded by a store), then the x3p
    instrument record. Calibres are brought to one spelling (9x19, 9mm Para -> 9mm Luger).

    Examples
    --------
    >>> population({"labels": {"calibre": "9x19", "make": "Ruger", "model": "P95"}})["make_model"]
    'Ruger P95'
    """
    meta = meta if isinstance(meta, dict) else {}
    lab = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    rec = meta.get("population") if isinstance(meta.get("population"), dict) else {}
    inst = meta.get("instrument") if isinstance(meta.get("instrument"), dict) else {}
    make_model = lab.get("make_model") or " ".join(str(lab[k]) for k in ("make", "model") if lab.get(k))
    instrument = lab.get("instrument") or " ".join(str(inst[k]) for k in ("manufacturer", "model") if inst.get(k))
    out = {
        "calibre": lab.get("calibre") or meta.get("calibre") or rec.get("calibre"),
        "make_model": make_model or rec.get("make_model"),
        "instrument": instrument or rec.get("instrument"),
    }
    return {k: _canonical(k, out[k]) for k in POPULATION_KEYS}
