"""Case data in and out of a store as CSV: scenes, recovered firearms, tracing results.

The columns (the first row of the file names them, in any order; only ``scene_id`` /
``firearm_id`` is required, and an empty cell means "not known"):

- **scenes**: ``scene_id``, ``date`` (YYYY-MM-DD), ``place``, ``lat``, ``lon`` (decimal
  degrees), ``context`` (for example organized crime, terrorism, other);
- **firearms**: ``firearm_id``, ``make``, ``model``, ``type`` (pistol, revolver, rifle,
  shotgun, submachine gun, machine gun, other: the UNODC questionnaire's), ``calibre``,
  ``serial``, ``serial_obliterated`` (yes / no), ``status`` (seized, found, surrendered),
  ``context`` of the recovery (organized crime, terrorism, other, ...), ``recovery_date``,
  ``recovery_place``, ``recovery_country``, ``origin_country``,
  ``tracing_status`` (traced, in progress, not traced, not requested), ``tracing_result``;
- **tracing**: ``firearm_id`` (a firearm already in the store), ``tracing_status``,
  ``tracing_result``, ``origin_country``.

Each row sets, for its scene or firearm, the fields of the file's columns (an empty cell clears
the field); fields of columns the file does not have are kept. A tracing file thus updates the
tracing fields of firearms the store holds, and nothing else.

A file is checked whole before anything is written: an unknown column, a bad value (named by
its line and column), an id given twice or, for tracing, a firearm the store does not hold
refuse the whole file, and the store is unchanged. A good file is written in one transaction,
with its record in the store's imports log (`CaseStore.imports`).
Export writes the same columns, so a table exported and imported again is the same table.

**Formulas.** A spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return as a formula ("CSV injection"). Export writes such a text behind an apostrophe
(``'=HYPERLINK(...)``), as OWASP advises; a number (``-33.9``, a negative longitude) stays a
number. Import takes the apostrophe off again (`unguard_cell`), so a table exported and imported
again is still the same table. To keep that exact, a text that starts with apostrophes followed by
one of those characters gets one apostrophe more (``'=x`` is written ``''=x``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path

from .._files import atomic_file
from .._records import check_firearm, check_scene
from ..errors import FileFormatError, ParameterError

__all__ = ["COLUMNS", "KINDS", "guard_cell", "read_table", "table_rows", "unguard_cell", "write_table"]

COLUMNS = {
    "scenes": ("scene_id", "date", "place", "lat", "lon", "context"),
    "firearms": (
        "firearm_id",
        "make",
        "model",
        "type",
        "calibre",
        "serial",
        "serial_obliterated",
        "status",
        "context",
        "recovery_date",
        "recovery_place",
        "recovery_country",
        "origin_country",
        "tracing_status",
        "tracing_result",
    ),
    "tracing": ("firearm_id", "tracing_status", "tracing_result", "origin_country"),
}
KINDS = tuple(COLUMNS)
#: Largest CSV file read (bytes): a lab's tables are far smaller.
MAX_CSV_BYTES = 200_000_000
_YES, _NO = ("yes", "true", "1", "y"), ("no", "false", "0", "n")
#: The first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: A plain decimal number (``-33.9``, ``1e-05``): written as it is, never guarded.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _guarded(text: str) -> bool:
    """Whether ``text`` as written by `guard_cell` carries its guard: apostrophes, then a formula start."""
    return text.startswith("'") and text.lstrip("'").startswith(FORMULA_START)


def guard_cell(v):
    """A CSV cell a spreadsheet will not run as a formula: a text starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return, that is not a plain number, gets a leading apostrophe (and
    so does one that `unguard_cell` would otherwise take an apostrophe off); anything else,
    numbers and other types included, is returned as it is.

    Examples
    --------
    >>> guard_cell("=1+2"), guard_cell("-33.9"), guard_cell("'=x"), guard_cell("'abc"), guard_cell(-1)
    ("'=1+2", '-33.9', "''=x", "'abc", -1)
    """
    if not isinstance(v, str):
        return v
    if (v.startswith(FORMULA_START) and not _NUMBER.fullmatch(v)) or _guarded(v):
        return "'" + v
    return v


def unguard_cell(text: str) -> str:
    """A cell as `guard_cell` had it: one leading apostrophe taken off a text whose apostrophes are
    followed by a formula start (``'=x`` is ``=x``, ``''=x`` is ``'=x``, ``'abc`` stays)."""
    return text[1:] if _guarded(text) else text


def _kind_of(header: list[str], path) -> str:
    """The table a header belongs to: scenes (``scene_id``), tracing (``firearm_id`` and only
    tracing columns) or firearms (``firearm_id``)."""
    cols = set(header)
    if "scene_id" in cols:
        return "scenes"
    if "firearm_id" in cols:
        return "tracing" if cols <= set(COLUMNS["tracing"]) and len(cols) > 1 else "firearms"
    raise FileFormatError(
        path, "the first row names no scene_id or firearm_id column: not a scenes, firearms or tracing table"
    )


def _value(kind: str, col: str, text: str, where: str):
    """A cell as recorded: None when empty, numbers for lat/lon, a bool for serial_obliterated."""
    text = unguard_cell(text.strip())
    if not text:
        return None
    if col in ("lat", "lon"):
        try:
            return float(text)
        except ValueError:
            raise ParameterError(f"{where}: {col} must be a number of degrees, got {text!r}") from None
    if col == "serial_obliterated":
        if text.lower() in _YES:
            return True
        if text.lower() in _NO:
            return False
        raise ParameterError(f"{where}: serial_obliterated must be yes or no, got {text!r}")
    return text


def read_table(path, kind: str | None = None) -> tuple[str, list[dict]]:
    """Read and check a scenes, firearms or tracing CSV file: (kind, records), each record the id
    column and every other column of the file (None for an empty cell).

    Parameters
    ----------
    path : path
        A CSV file (UTF-8, an optional byte-order mark; comma-separated, first row the column names).
    kind : {"scenes", "firearms", "tracing"}, optional
        The table; by default told from the columns.

    Raises
    ------
    FileFormatError
        The file cannot be read as such a table (not UTF-8, too large, malformed, unknown columns).
    ParameterError
        A value is refused: the message names the file, the line and the column.
    """
    return read_table_sha256(path, kind)[:2]


def read_table_sha256(path, kind: str | None = None) -> tuple[str, list[dict], str]:
    """`read_table`, and the SHA-256 of the bytes it read: (kind, records, sha256)."""
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise ParameterError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise FileFormatError(path, f"larger than {MAX_CSV_BYTES:,} bytes: not a case-data table")
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as e:
        raise FileFormatError(path, f"cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise FileFormatError(path, f"is not UTF-8 text (byte {e.start})") from None
    if "\0" in text:
        raise FileFormatError(path, "holds NUL bytes: not a CSV text file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise FileFormatError(path, "is empty: the first row must name the columns") from None
    except csv.Error as e:
        raise FileFormatError(path, f"line 1: {e}") from None
    kind = kind or _kind_of(header, path)
    allowed = COLUMNS[kind]
    unknown = [h for h in header if h not in allowed]
    if unknown or len(set(header)) != len(header):
        problem = f"unknown columns {unknown}" if unknown else "a column named twice"
        raise FileFormatError(path, f"{problem} for a {kind} table (its columns: {', '.join(allowed)})")
    key = allowed[0]
    if key not in header:
        raise FileFormatError(path, f"a {kind} table needs a {key} column")
    records, seen = [], {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue  # a blank line
            if len(row) != len(header):
                raise FileFormatError(path, f"line {line}: {len(row)} cells for {len(header)} columns")
            where = f"{path}: line {line}"
            rec = {col: _value(kind, col, cell, where) for col, cell in zip(header, row)}
            ident = rec.pop(key, None)
            if ident is None:
                raise ParameterError(f"{where}: {key} is empty")
            if ident in seen:
                raise ParameterError(f"{where}: {key} {ident!r} was given on line {seen[ident]} already")
            seen[ident] = line
            try:
                check = check_scene if kind == "scenes" else check_firearm
                check(ident, {k: v for k, v in rec.items() if v is not None})
            except ParameterError as e:
                raise ParameterError(f"{where}: {e}") from None
            records.append({key: ident, **rec})
    except csv.Error as e:
        raise FileFormatError(path, f"line {reader.line_num}: {e}") from None
    return kind, records, hashlib.sha256(data).hexdigest()


def table_rows(kind: str, records: list[dict]) -> list[list[str]]:
    """``records`` (as a store lists them: the id column and attributes) as CSV rows of ``kind``'s
    columns, the header first; attributes outside the columns are left out; text a spreadsheet
    would run as a formula behind an apostrophe (`guard_cell`)."""
    if kind not in KINDS:
        raise ParameterError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    cols = COLUMNS[kind]

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "yes" if v else "no"
        return repr(v) if isinstance(v, float) else str(v)

    return [list(cols)] + [[guard_cell(cell(r.get(c))) for c in cols] for r in records]


def write_table(path, kind: str, records: list[dict]) -> Path:
    """Write ``records`` as a ``kind`` CSV file (UTF-8, all or nothing); returns its path."""
    rows = table_rows(kind, records)
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path = Path(path)
    with atomic_file(path) as f:
        f.write(buf.getvalue().encode("utf-8"))
    return path
