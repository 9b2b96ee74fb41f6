"""The imports log: the schema of the store's append-only record of each file imported (see
`CaseStore.import_table`, `CaseStore.import_exhibits`, `CaseStore.imports`).

Kept apart from `casestore` so that `check` reads it without importing the store module.
"""

from __future__ import annotations

from .decisions import REFUSE_FUNCTION, _issued, _refuse

__all__ = ["IMPORT_KINDS", "IMPORT_TRIGGERS"]

#: What an imported file held: a case-data table (`ballistix.store.casedata`) or another lab's
#: bundle of exhibits (`ballistix.store.exchange`).
IMPORT_KINDS = ("scenes", "firearms", "tracing", "exhibits-bundle")

#: Each file imported into the store (schema 5): an append-only log, written in the transaction of
#: the import it records (a refused file leaves no row). ``source_name``: the file as it was given;
#: ``sha256``: of the bytes imported; ``rows``: the table's records, or the bundle's exhibits;
#: ``added`` / ``updated``: records (or exhibits) added and updated; ``summary_json``: what else the
#: kind has to say (a bundle: the sending lab, its exhibits added, already here and failed, the
#: scenes and firearms added and kept); NULL for a table.
_IMPORTS = [
    f"""CREATE TABLE imports (
        import_id INTEGER PRIMARY KEY AUTOINCREMENT,     -- never reused: a gap is a deleted row
        kind TEXT NOT NULL CHECK (kind IN ({", ".join(f"'{k}'" for k in IMPORT_KINDS)})),
        source_name TEXT NOT NULL,
        sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
        rows INTEGER NOT NULL, added INTEGER NOT NULL, updated INTEGER NOT NULL,
        summary_json TEXT,
        created_utc TEXT NOT NULL, created_by TEXT NOT NULL, ballistix_version TEXT NOT NULL)""",
    REFUSE_FUNCTION,
    _refuse(
        "imports_no_update", "imports", "UPDATE", "imports are append-only: a record of an import is never changed"
    ),
    _refuse(
        "imports_no_delete", "imports", "DELETE", "imports are append-only: a record of an import is never deleted"
    ),
    _issued("imports", "import_id"),
    _refuse(
        "imports_no_truncate", "imports", "TRUNCATE", "imports are append-only: never truncated", postgresql_only=True
    ),
]
#: The triggers that keep `_IMPORTS` append-only (`check` verifies they are there).
IMPORT_TRIGGERS = ("imports_no_update", "imports_no_delete")
