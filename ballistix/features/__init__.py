"""Features: filters, breech-face preprocessing, CMC comparison."""

from .compare import Comparison, compare, compare_many

__all__ = ["compare", "compare_many", "Comparison"]
