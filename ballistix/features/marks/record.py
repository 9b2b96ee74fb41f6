"""A mark's extraction as a record of JSON fields and float arrays, and back: how a processed scan keeps
its marks in a ``.npz`` file (`ballistix.io.write_npz` writes any record it is given, and `read_npz` reads
records back without knowing what a mark is).

A record read from a file is untrusted: `from_record` accepts only the fields of the mark's dataclass,
arrays of floats of the expected dimensions, and plain JSON values, and raises `ParameterError`
naming the scan and the field otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ...errors import ParameterError
from .aperture_shear import ShearProfile
from .firing_pin import FiringPinImpression

__all__ = ["KINDS", "to_record", "from_record", "as_mark"]

#: Mark name -> the dataclass of its extraction.
KINDS = {"firing_pin": FiringPinImpression, "aperture_shear": ShearProfile}
#: What each JSON field of a stored record must be: "number" (NaN stored as null), "number?" (or None),
#: "pair" / "pair?" (two numbers), "int", "text" / "text?", "dict".
_FIELDS = {
    "firing_pin": {
        "usable": "bool",
        "reason": "text?",
        "source": "text",
        "centre_m": "pair?",
        "crater_radius_m": "number?",
        "aperture_radius_m": "number?",
        "outer_radius_m": "number",
        "spacing_um": "number",
        "n_theta": "int",
        "depth_m": "number",
        "floor_measured_share": "number",
        "measured_share": "number",
        "params": "dict",
    },
    "aperture_shear": {
        "usable": "bool",
        "reason": "text?",
        "spacing_um": "number",
        "direction_deg": "number?",
        "axis_deg": "number?",
        "centre_m": "pair?",
        "width_um": "number",
        "coherence": "number",
        "band_um": "pair",
        "sector_deg": "pair?",
        "source": "text",
        "features": "dict",
    },
}


def _field(kind: str, v):
    """A JSON value as the field's type (NaN for a null number), or ValueError."""
    if v is None and kind.endswith("?"):
        return None
    kind = kind.rstrip("?")
    if kind == "number":
        if v is None:
            return float("nan")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("a number")
        return float(v)
    if kind == "pair":
        if not (
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        ):
            raise ValueError("two finite numbers")
        return (float(v[0]), float(v[1]))
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("an integer")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise ValueError("true or false")
        return v
    if kind == "text":
        if not isinstance(v, str):
            raise ValueError("text")
        return v
    if not isinstance(v, dict):
        raise ValueError("an object")
    return v


def to_record(name: str, mark) -> dict[str, Any]:
    """``{"fields": JSON-ready dict, "arrays": {field: float ndarray}}`` of a mark's extraction."""
    if name not in KINDS or not isinstance(mark, KINDS[name]):
        raise ParameterError(f"marks[{name!r}] must be a {KINDS.get(name, object).__name__}, got {type(mark).__name__}")
    return mark.to_record()


def from_record(name: str, record, label: str = "scan"):
    """The mark's extraction from a record (`to_record`, or what `read_npz` read), checked."""

    def bad(what: str):
        return ParameterError(f"{label}: stored {name.replace('_', ' ')} mark: {what}")

    if name not in KINDS:
        raise bad(f"unknown mark (expected one of {sorted(KINDS)})")
    if not isinstance(record, dict) or not isinstance(record.get("fields"), dict):
        raise bad("expected a record with 'fields' and 'arrays'")
    arrays = record.get("arrays") or {}
    if not isinstance(arrays, dict):
        raise bad("'arrays' must map field names to arrays")
    cls = KINDS[name]
    dims = cls.ARRAY_FIELDS
    known = {f.name for f in dataclasses.fields(cls)}
    fields = record["fields"]
    unknown = sorted((set(fields) | set(arrays)) - known)
    if unknown:
        raise bad(f"unknown fields {unknown}")
    if set(fields) & set(dims):
        raise bad(f"array fields {sorted(set(fields) & set(dims))} given as JSON")
    kw: dict[str, Any] = {}
    for k, v in fields.items():
        try:
            kw[k] = _field(_FIELDS[name].get(k, "dict"), v)
        except ValueError as e:
            raise bad(f"{k} must be {e}, got {v!r}") from None
    for k, v in arrays.items():
        a = np.asarray(v)
        if k not in dims or a.ndim != dims[k] or a.dtype.kind != "f":
            raise bad(f"{k} must be a {dims.get(k, '?')}-D float array, got {a.dtype} of shape {a.shape}")
        kw[k] = a
    if "usable" not in kw:
        raise bad("'usable' is missing")
    if kw["usable"]:
        need = [k for k in dims if k not in kw and not (name == "aperture_shear" and k == "patch_um")]
        if need:
            raise bad(f"a usable mark needs its arrays {need}")
    if name == "aperture_shear" and kw["usable"] and not kw.get("spacing_um", 0) > 0:
        raise bad("a usable shear profile needs a positive spacing_um")
    if name == "firing_pin" and kw["usable"]:
        m, dm = kw["marks_m"], kw["depth_map_m"]
        if (
            m.shape[0] != dm.shape[0]
            or kw.get("n_theta") != m.shape[1]
            or kw["profile_radii_m"].shape != kw["depth_profile_m"].shape
        ):
            raise bad("the arrays' shapes do not agree with each other and with n_theta")
        if not (kw.get("spacing_um", 0) > 0 and kw.get("centre_m") is not None):
            raise bad("a usable impression needs a positive spacing_um and its centre_m")
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise bad(str(e)) from None


def as_mark(name: str, mark, label: str = "scan"):
    """A mark's extraction as its dataclass: the object itself, or one built from a stored record."""
    if name in KINDS and isinstance(mark, KINDS[name]):
        return mark
    return from_record(name, mark, label)
