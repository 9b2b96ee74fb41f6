"""The figures of the UNODC Illicit Arms Flows Questionnaire (IAFQ) and of SDG indicator 16.4.2,
from a store's recovered firearms (`CaseStore.iafq`, ``ballistix export iafq``).

For one calendar year (a firearm counts in the year of its ``recovery_date``): the firearms
seized, found and surrendered, each broken down by type, by context of the recovery, by tracing
status, by tracing result (the text recorded) and by country of origin; and the SDG 16.4.2 share,
the firearms whose illicit origin or context was traced among those seized, found or surrendered
(`ballistix.graph.analysis.indicator_16_4_2`'s definition). What the records do not say is
counted as such ("not recorded"), never guessed: a firearm with no status has its own column,
and the firearms with no recovery date are counted apart, in no year.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .._files import atomic_file
from .._records import FIREARM_STATUS
from .._version import __version__
from ..errors import ParameterError
from .casedata import guard_cell

__all__ = ["BREAKDOWNS", "iafq_figures", "write_iafq"]

#: The breakdowns of the questionnaire's seizure tables, by firearm attribute.
BREAKDOWNS = ("type", "context", "tracing_status", "tracing_result", "origin_country")
NOT_RECORDED = "not recorded"
COLUMNS = (*FIREARM_STATUS, "status not recorded", "total")


def iafq_figures(firearms: Iterable[tuple[str, dict]], year: int) -> dict:
    """The questionnaire's figures for ``year`` from ``(firearm_id, attributes)`` records.

    Returns
    -------
    dict
        ``year``; ``firearms`` (recovered in the year), ``undated`` (no recovery date: in no
        year); ``tables``: for each of `BREAKDOWNS`, rows ``{"category", "seized", "found",
        "surrendered", "status not recorded", "total"}`` sorted by total, then name;
        ``sdg_16_4_2``: ``value`` (traced / seized, found or surrendered; None without any),
        ``traced``, ``firearms`` and the same by status.
    """
    if isinstance(year, bool) or not isinstance(year, int) or not 1900 <= year <= 2200:
        raise ParameterError(f"year must be a calendar year (1900-2200), got {year!r}")
    guns, undated = [], 0
    for _, d in firearms:
        date = d.get("recovery_date")
        if not date:
            undated += 1
        elif int(date[:4]) == year:
            guns.append(d)
    tables = {}
    for attr in BREAKDOWNS:
        rows: dict[str, dict] = {}
        for d in guns:
            row = rows.setdefault(d.get(attr) or NOT_RECORDED, dict.fromkeys(COLUMNS, 0))
            row[d.get("status") if d.get("status") in FIREARM_STATUS else "status not recorded"] += 1
            row["total"] += 1
        tables[attr] = [{"category": k, **v} for k, v in sorted(rows.items(), key=lambda kv: (-kv[1]["total"], kv[0]))]
    recovered = [d for d in guns if d.get("status") in FIREARM_STATUS]
    traced = [d for d in recovered if d.get("tracing_status") == "traced"]
    n_recovered, n_traced = Counter(d["status"] for d in recovered), Counter(d["status"] for d in traced)
    return {
        "year": year,
        "firearms": len(guns),
        "undated": undated,
        "tables": tables,
        "sdg_16_4_2": {
            "value": len(traced) / len(recovered) if recovered else None,
            "traced": len(traced),
            "firearms": len(recovered),
            "by_status": {s: {"firearms": n_recovered[s], "traced": n_traced[s]} for s in FIREARM_STATUS},
        },
    }


def _csv_rows(fig: dict) -> list[list]:
    rows = [["table", "category", *COLUMNS]]
    for attr, table in fig["tables"].items():
        rows += [[f"by {attr}", r["category"], *(r[c] for c in COLUMNS)] for r in table]
    sdg = fig["sdg_16_4_2"]
    by = sdg["by_status"]
    rows.append(["SDG 16.4.2", "firearms", *(by[s]["firearms"] for s in FIREARM_STATUS), "", sdg["firearms"]])
    rows.append(["SDG 16.4.2", "traced", *(by[s]["traced"] for s in FIREARM_STATUS), "", sdg["traced"]])
    share = [f"{by[s]['traced'] / by[s]['firearms']:.4f}" if by[s]["firearms"] else "" for s in FIREARM_STATUS]
    rows.append(["SDG 16.4.2", "share traced", *share, "", "" if sdg["value"] is None else f"{sdg['value']:.4f}"])
    return rows


def write_iafq(path, fig: dict, *, source: dict | None = None) -> Path:
    """Write ``fig`` (`iafq_figures`) as CSV, or as an XLSX workbook when ``path`` ends in .xlsx
    (openpyxl: ``pip install 'ballistix[xlsx]'``): a summary sheet (year, counts, the SDG 16.4.2
    share, ``source``: where the figures come from) and one sheet a breakdown. Text is written
    as text, never as a formula: in the workbook typed as text, in the CSV file behind an
    apostrophe where a spreadsheet would run it (``=``, ``+``, ``-``, ``@``, ...: `guard_cell`)."""
    path = Path(path)
    rows = _csv_rows(fig)
    if path.suffix.lower() != ".xlsx":
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\n").writerows([[guard_cell(v) for v in row] for row in rows])
        with atomic_file(path) as f:
            f.write(buf.getvalue().encode("utf-8"))
        return path
    try:
        from openpyxl import Workbook
    except ImportError:
        raise ParameterError("an XLSX workbook needs openpyxl: pip install 'ballistix[xlsx]' (or write .csv)") from None
    wb = Workbook()
    summary = wb.active
    summary.title = "summary"
    sdg = fig["sdg_16_4_2"]
    meta = [
        ["UNODC Illicit Arms Flows Questionnaire: firearms recovered in", fig["year"]],
        ["firearms recovered in the year", fig["firearms"]],
        ["firearms with no recovery date (in no year)", fig["undated"]],
        ["SDG 16.4.2: traced / seized, found or surrendered", sdg["value"] if sdg["value"] is not None else "n/a"],
        ["SDG 16.4.2: traced", sdg["traced"]],
        ["SDG 16.4.2: seized, found or surrendered", sdg["firearms"]],
        ["written by", f"ballistix {__version__}"],
        *[[k, v] for k, v in (source or {}).items()],
    ]
    _append(summary, meta)
    for attr, table in fig["tables"].items():
        ws = wb.create_sheet(f"by {attr}"[:31])
        _append(ws, [[attr, *COLUMNS], *[[r["category"], *(r[c] for c in COLUMNS)] for r in table]])
    with atomic_file(path) as f:
        wb.save(f)
    return path


def _append(ws, rows) -> None:
    """Rows into a worksheet, every string cell typed as text (a value starting with "=" is not
    a formula)."""
    for r, row in enumerate(rows, start=1):
        for c, v in enumerate(row, start=1):
            cell = ws.cell(row=r, column=c)
            if isinstance(v, str):
                cell.value = v
                cell.data_type = "s"
            else:
                cell.value = v
