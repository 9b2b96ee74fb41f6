"""Database search: `ScanIndex` (FAISS) and the two-stage `search` (descriptor shortlist, then CMC)."""

from .scan_index import ScanIndex, choose_factory
from .search import Candidate, query_vector, search

__all__ = ["ScanIndex", "choose_factory", "search", "Candidate", "query_vector"]
