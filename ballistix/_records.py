"""Checks of what a lab types into a case store: ids, dates, places, vocabularies.

A value the graph, the report or its figures cannot use is refused when it is
recorded (`ParameterError` naming the record and the field), not later, when
it would break every report of the store. File names are not refused: a name
that is not valid UTF-8 (undecodable bytes, read by Python as lone surrogates)
is kept with those bytes written as ``\\xff`` (`safe_text`).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import unicodedata
from collections.abc import Mapping

from .errors import ParameterError

__all__ = [
    "FIREARM_STATUS",
    "TRACING_STATUS",
    "safe_text",
    "safe_id",
    "check_text",
    "check_date",
    "check_since",
    "check_scene",
    "check_firearm",
    "check_exhibit_meta",
]

#: Firearm ``status``: how it was recovered (SDG 16.4.2 counts these three).
FIREARM_STATUS = ("seized", "found", "surrendered")
#: Firearm ``tracing_status``: "traced" when its illicit origin or context is established.
TRACING_STATUS = ("traced", "in progress", "not traced", "not requested")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?")
#: Attributes read as text by the graph's summaries (sorted, grouped, drawn).
_SCENE_TEXT = ("place", "context")
_FIREARM_TEXT = (
    "make",
    "model",
    "type",
    "context",
    "calibre",
    "serial",
    "recovery_place",
    "recovery_country",
    "origin_country",
    "tracing_result",
)


def safe_text(s) -> str:
    """``s`` as text that any UTF-8 writer (SQLite, JSON, HTML) takes: bytes that were not valid
    UTF-8 (surrogate-escaped by Python, as in undecodable file names) become ``\\xff``.

    Examples
    --------
    >>> safe_text(b"caso_\\xff.x3p".decode("utf-8", "surrogateescape"))
    'caso_\\\\xff.x3p'
    """
    s = str(s)
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _shown(value) -> str:
    """``value`` for a message: text quoted as typed, bytes that are not UTF-8 as \\xNN."""
    return f"'{safe_text(value)}'" if isinstance(value, str) else repr(value)


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def safe_id(s) -> str:
    """`safe_text` with control characters (newlines, tabs, ...) written as escapes: an id made
    from a file name."""
    return "".join(c.encode("unicode_escape").decode("ascii") if _is_control(c) else c for c in safe_text(s))


def check_text(value, what: str, *, required: bool = False) -> str | None:
    """``value`` if it is text a report can show: a string, valid UTF-8, no control characters,
    not blank. None passes unless ``required``. ``what`` names the record and field."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(f"{what} must be a non-empty string, got {_shown(value)}")
    if safe_text(value) != value:
        raise ParameterError(
            f"{what} is not valid UTF-8 text: {safe_text(value)} (the bytes that are not shown as \\xNN)"
        )
    bad = sorted({c for c in value if _is_control(c)})
    if bad:
        raise ParameterError(f"{what} may not hold control characters, got {safe_id(value)!r}")
    return value


def check_date(value, what: str) -> str | None:
    """``value`` as an ISO 8601 calendar date ``YYYY-MM-DD`` (a `datetime.date` is converted);
    None passes."""
    if value is None:
        return None
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        return value.isoformat()
    ok = isinstance(value, str) and _DATE.fullmatch(value)
    if ok:
        try:
            _dt.date.fromisoformat(value)
        except ValueError:
            ok = False
    if not ok:
        raise ParameterError(f"{what} must be an ISO 8601 date YYYY-MM-DD, got {_shown(value)}")
    return value


def check_since(value, what: str = "since") -> str | None:
    """``value`` as an ISO 8601 date or UTC date and time (``2024-05-01``, ``2024-05-01T08:30``);
    None passes."""
    if value is None:
        return None
    ok = isinstance(value, str) and _TIME.fullmatch(value)
    if ok:
        try:
            _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            ok = False
    if not ok:
        raise ParameterError(
            f"{what} must be an ISO 8601 date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM), got {_shown(value)}"
        )
    return value


def _check_vocabulary(value, allowed: tuple, what: str):
    if value is not None and value not in allowed:
        raise ParameterError(f"{what} must be one of {list(allowed)}, got {_shown(value)}")
    return value


def _check_number(value, lo: float, hi: float, what: str):
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        raise ParameterError(f"{what} must be a number of degrees from {lo:g} to {hi:g}, got {_shown(value)}")
    return value


def _check_attr_names(attrs: Mapping, what: str) -> None:
    for k in attrs:
        check_text(k, f"{what}: attribute name {k!r}", required=True)
    bad = {"kind", "id"} & set(attrs)
    if bad:
        raise ParameterError(f"{what}: attributes may not be named {sorted(bad)}")


def check_scene(scene_id, attrs: Mapping) -> dict:
    """The attributes of a scene as recorded, checked: ``date`` (YYYY-MM-DD), ``lat`` (-90 to 90),
    ``lon`` (-180 to 180), ``place`` and ``context`` (text). Other attributes are kept as given."""
    check_text(scene_id, "scene_id", required=True)
    what = f"scene {scene_id}"
    _check_attr_names(attrs, what)
    out = dict(attrs)
    out["date"] = check_date(attrs.get("date"), f"{what}: date")
    _check_number(attrs.get("lat"), -90, 90, f"{what}: lat")
    _check_number(attrs.get("lon"), -180, 180, f"{what}: lon")
    for k in _SCENE_TEXT:
        check_text(attrs.get(k), f"{what}: {k}")
    return {k: v for k, v in out.items() if k in attrs}


def check_firearm(firearm_id, attrs: Mapping) -> dict:
    """The attributes of a recovered firearm as recorded, checked: ``status`` (`FIREARM_STATUS`),
    ``tracing_status`` (`TRACING_STATUS`), ``recovery_date`` (YYYY-MM-DD), and text for make,
    model, calibre, serial, places, countries and the tracing result. Others are kept as given."""
    check_text(firearm_id, "firearm_id", required=True)
    what = f"firearm {firearm_id}"
    _check_attr_names(attrs, what)
    out = dict(attrs)
    _check_vocabulary(attrs.get("status"), FIREARM_STATUS, f"{what}: status")
    _check_vocabulary(attrs.get("tracing_status"), TRACING_STATUS, f"{what}: tracing_status")
    out["recovery_date"] = check_date(attrs.get("recovery_date"), f"{what}: recovery_date")
    for k in _FIREARM_TEXT:
        check_text(attrs.get(k), f"{what}: {k}")
    return {k: v for k, v in out.items() if k in attrs}


def check_exhibit_meta(m: Mapping) -> dict:
    """The metadata of an ingest, checked: ``kind``, the ids (text), ``date`` (YYYY-MM-DD) and
    ``calibre`` (text). Returns the metadata with a `datetime.date` written as text."""
    what = f"exhibit {safe_id(m['exhibit_id'])}" if isinstance(m.get("exhibit_id"), str) else "ingest metadata"
    kind = m.get("kind")
    if kind is not None and kind not in ("scene", "test_fire"):
        raise ParameterError(f"kind must be 'scene' or 'test_fire', got {kind!r}")
    for key in ("exhibit_id", "scene_id", "firearm_id", "calibre"):
        if m.get(key) is not None:
            check_text(m[key], f"{what}: {key}" if key != "exhibit_id" else key)
    out = dict(m)
    if m.get("date") is not None:
        out["date"] = check_date(m["date"], f"{what}: date")
    return out
