"""One string per value in memory: the attribute names of every node and comparison, and the values
many of them share (a kind, a calibre, a date, a place, the calibration a likelihood ratio came
from), whether they come from the caller, the store's rows or a file being read.

At a million exhibits every record read from SQLite or JSON brings its own copy of each name and
value; kept once (`sys.intern`) they cost nothing per record.
"""

from __future__ import annotations

import sys

__all__ = ["SHARED_VALUES", "shared"]

#: Attributes whose values many nodes or comparisons share; other values (ids, checksums of
#: scans, numbers) are left as they are.
SHARED_VALUES = frozenset(
    {
        "kind",
        "calibre",
        "date",
        "place",
        "context",
        "status",
        "make",
        "model",
        "recovery_date",
        "recovery_place",
        "recovery_country",
        "origin_country",
        "tracing_status",
        "tracing_result",
        "examiner",
        "verdict",
        "lr_basis",
        "calibration_sha256",
        "calibration_origin",
        "marks_calibration_sha256",
        "marks_calibration_origin",
    }
)


def shared(d: dict) -> dict:
    """``d`` with its names, and the values of `SHARED_VALUES`, each one string in memory (a new dict).

    Examples
    --------
    >>> a, b = shared({"calibre": "".join(["9mm", " Luger"])}), shared({"calibre": "9mm Luger"})
    >>> a["calibre"] is b["calibre"]
    True
    """
    intern = sys.intern
    return {
        intern(k) if type(k) is str else k: intern(v) if type(v) is str and k in SHARED_VALUES else v
        for k, v in d.items()
    }
