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
        if v is None and k in (
            "outer_radius_m",
            "depth_m",
            "floor_measured_share",
            "measured_share",
            "spacing_um",
            "width_um",
            "coherence",
        ):
            v = float("nan")
        if isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    for k, v in arrays.items():
        a = np.asarray(v)
        if k not in dims or a.ndim != dims[k] or a.dtype.kind != "f":
            raise bad(f"{k} must be a {dims.get(k, '?')}-D float array, got {a.dtype} of shape {a.shape}")
        kw[k] = a
    if not isinstance(kw.get("usable"), bool):
        raise bad("'usable' must be true or false")
    if kw["usable"]:
        need = [k for k in dims if k not in kw and not (name == "aperture_shear" and k == "patch_um")]
        if need:
            raise bad(f"a usable mark needs its arrays {need}")
    if name == "firing_pin" and kw["usable"]:
        m, dm = kw["marks_m"], kw["depth_map_m"]
        if (
            m.shape[0] != dm.shape[0]
            or kw.get("n_theta") != m.shape[1]
            or kw["profile_radii_m"].shape != kw["depth_profile_m"].shape
        ):
            raise bad("the arrays' shapes do not agree with each other and with n_theta")
        if not all(isinstance(kw.get(k), (int, float)) and math.isfinite(kw[k]) and kw[k] > 0 for k in ("spacing_um",)):
            raise bad("spacing_um must be a positive number")
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise bad(str(e)) from None


def as_mark(name: str, mark, label: str = "scan"):
    """A mark's extraction as its dataclass: the object itself, or one built from a stored record."""
    if name in KINDS and isinstance(mark, KINDS[name]):
        return mark
    return from_record(name, mark, label)
