"""Features: filters, breech-face preprocessing, CMC comparison."""

from .compare import Comparison, compare, compare_many
from .preprocess import BreechFaceRegion, find_breech_face, plot_preprocess, preprocess

__all__ = ["compare", "compare_many", "Comparison",
           "preprocess", "plot_preprocess", "find_breech_face", "BreechFaceRegion"]
