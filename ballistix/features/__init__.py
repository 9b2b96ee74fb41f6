"""Features: filters, breech-face preprocessing, CMC comparison."""

from .comparison import Comparison, compare, compare_many
from .preprocessing import BreechFaceRegion, find_breech_face, plot_preprocess, preprocess

__all__ = [
    "compare",
    "compare_many",
    "Comparison",
    "preprocess",
    "plot_preprocess",
    "find_breech_face",
    "BreechFaceRegion",
]
