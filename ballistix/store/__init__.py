"""The lab's case database: `CaseStore` (SQLite + processed-scan cache + FAISS index in one folder)."""

from ..errors import StoreWarning
from .casestore import SCHEMA_VERSION, CaseStore, DamagedScanError, IngestReport, SearchResult, StoreError

__all__ = [
    "SCHEMA_VERSION",
    "CaseStore",
    "DamagedScanError",
    "IngestReport",
    "SearchResult",
    "StoreError",
    "StoreWarning",
]
