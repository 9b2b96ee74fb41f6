"""The lab's case database: `CaseStore` (SQLite + processed-scan cache + FAISS index in one folder)."""

from .casestore import SCHEMA_VERSION, CaseStore, IngestReport, StoreError

__all__ = ["SCHEMA_VERSION", "CaseStore", "IngestReport", "StoreError"]
