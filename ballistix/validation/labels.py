"""The scans of a validation and their firearms: the labels CSV (or mapping) and the scans it
lists or that are given, each with its firearm and population columns."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import sha256_file
from ..errors import ParameterError
from .errors import LabelsError

_MAX_LABELS_BYTES = 20_000_000
_POP_COLUMNS = ("calibre", "make", "model", "instrument")


def read_labels(path) -> list[dict[str, str]]:
    """Rows of a labels CSV: ``file`` and ``firearm`` (required), ``calibre``, ``make``, ``model``,
    ``instrument`` (optional) and any other columns, kept as given.

    Column names are matched case-blind (``caliber`` is read as ``calibre``). A relative
    ``file`` is resolved against the CSV's folder (``path`` in each row is the resolved
    path). A missing column, an empty ``file`` or ``firearm`` cell, or a file listed twice
    raises `LabelsError` naming the CSV, the row and the problem.

    Examples
    --------
    >>> rows = read_labels("../shared/data/labels.csv")  # doctest: +SKIP
    >>> rows[0]["firearm"], rows[0]["path"]  # doctest: +SKIP
    ('fadul-slide-1', '/work/shared/data/fadul/fadul-1-1.x3p')
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(path, "no such labels file")
    if path.stat().st_size > _MAX_LABELS_BYTES:
        raise LabelsError(path, f"too large for a labels file (over {_MAX_LABELS_BYTES // 1_000_000} MB)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(path, f"not a readable UTF-8 CSV file ({e})") from None
    try:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header:
            raise LabelsError(path, "empty: expected a header row with at least the columns file,firearm")
        cols = [{"caliber": "calibre"}.get(c.strip().casefold(), c.strip().casefold()) for c in header]
        missing = [c for c in ("file", "firearm") if c not in cols]
        if missing:
            raise LabelsError(
                path,
                f"missing column(s) {missing}; found {[c.strip() for c in header]}, "
                f"expected at least file,firearm (optional: {','.join(_POP_COLUMNS)})",
            )
        dup = [c for c, n in Counter(cols).items() if n > 1 and c]
        if dup:
            raise LabelsError(path, f"column(s) {dup} appear more than once")
        rows, seen = [], {}
        for line, rec in enumerate(reader, start=2):
            if not any(v.strip() for v in rec):
                continue
            if len(rec) != len(cols):
                raise LabelsError(path, f"row {line} has {len(rec)} fields, the header {len(cols)}")
            row = {c: v.strip() for c, v in zip(cols, rec) if c}
            for c in ("file", "firearm"):
                if not row[c]:
                    raise LabelsError(path, f"row {line}: empty {c!r}")
            full = Path(row["file"]).expanduser()
            full = (full if full.is_absolute() else path.parent / full).resolve()
            if str(full) in seen:
                raise LabelsError(path, f"row {line}: file {row['file']!r} is listed already in row {seen[str(full)]}")
            seen[str(full)] = line
            rows.append({**row, "path": str(full), "row": line})
    except csv.Error as e:
        raise LabelsError(path, f"not a valid CSV file ({e})") from None
    if not rows:
        raise LabelsError(path, "no rows: list one scan file and its firearm a row")
    return rows


def _labels_from_mapping(labels: Mapping) -> list[dict[str, str]]:
    rows = []
    for f, v in labels.items():
        row = dict(v) if isinstance(v, Mapping) else {"firearm": v}
        if row.get("firearm") is None or str(row["firearm"]).strip() == "":
            raise LabelsError(f, "no firearm given in the labels mapping")
        row = {k: str(x).strip() for k, x in row.items() if x is not None}
        rows.append({**row, "file": str(f), "path": str(Path(str(f)).expanduser().resolve())})
    return rows


@dataclass
class _Input:
    name: str
    path: str | None
    firearm: str
    labels: dict[str, str]
    item: Any  # path or Scan
    sha256: str | None = None
    population: dict | None = None
    scan: Any = None
    error: str | None = None


def _inputs(files_or_scans, labels) -> tuple[list[_Input], dict | None]:
    from ..scan import Scan

    labels_info = None
    if isinstance(labels, (str, Path)):
        rows = read_labels(labels)
        labels_info = {
            "path": str(Path(labels).resolve()),
            "sha256": sha256_file(Path(labels)),
            "columns": sorted({k for r in rows for k in r if k not in ("path", "row")}),
        }
        where = Path(labels)
    elif isinstance(labels, Mapping):
        rows = _labels_from_mapping(labels)
        where = None
    elif labels is None:
        rows, where = [], None
    else:
        raise ParameterError(f"labels must be a CSV path or a mapping file -> firearm, got {type(labels).__name__}")
    by_path = {r["path"]: r for r in rows}
    by_name: dict[str, list] = {}
    for r in rows:
        by_name.setdefault(Path(r["file"]).name, []).append(r)

    def pick(row):
        return {k: row[k] for k in _POP_COLUMNS if row.get(k)}

    items = list(files_or_scans) if files_or_scans is not None else []
    out = []
    if not items:
        if not rows:
            raise ParameterError("no scans given, and no labels listing any")
        for r in rows:
            p = Path(r["path"])
            if not p.is_file():
                raise LabelsError(
                    p,
                    f"no such file (listed in {where or 'the labels'}"
                    + (f", row {r['row']}" if "row" in r else "")
                    + ")",
                )
            out.append(_Input(p.name, str(p), r["firearm"], pick(r), str(p)))
    for k, item in enumerate(items):
        if isinstance(item, Scan):
            lab = item.meta.get("labels") if isinstance(item.meta.get("labels"), dict) else {}
            name = str(lab.get("exhibit") or Path(str(item.meta.get("source", f"scan-{k}"))).name)
            row = by_name.get(name, [None])[0] if len(by_name.get(name, [])) == 1 else None
            firearm = row["firearm"] if row else lab.get("firearm")
            if firearm in (None, ""):
                raise LabelsError(
                    name, "in-memory scan with no firearm: not in the labels and no meta['labels']['firearm']"
                )
            out.append(_Input(name, None, str(firearm), pick(row) if row else {}, item))
            continue
        p = Path(item).expanduser()
        if not p.is_file():
            raise LabelsError(p, "no such file")
        row = by_path.get(str(p.resolve()))
        if row is None and len(by_name.get(p.name, [])) == 1:
            row = by_name[p.name][0]
        if row is None:
            raise LabelsError(p, f"not listed in the labels{f' ({where})' if where else ''}: its firearm is unknown")
        out.append(_Input(p.name, str(p), row["firearm"], pick(row), str(p)))
    names = Counter(i.name for i in out)
    for i in out:  # file names shown in tables must be unique: fall back to the path as given
        if names[i.name] > 1 and i.path:
            i.name = i.path
    dups = [n for n, c in Counter(i.path for i in out if i.path).items() if c > 1]
    if dups:
        raise LabelsError(dups[0], "given more than once")
    return out, labels_info
