"""ballistix: ballistic matching and firearm-linkage analysis.

>>> import ballistix as bx
>>> scan = bx.read_scan("exhibit-17.x3p")  # doctest: +SKIP

See ``DESIGN.md`` for the data flow: read_scan -> preprocess -> describe ->
ScanIndex -> compare -> LinkageGraph -> CaseStore.
"""

from ._version import __version__
from .errors import (
    BallistixError,
    ChecksumError,
    DescriptorMismatchError,
    FileFormatError,
    IndexFormatError,
    ParameterError,
    ResolutionWarning,
    ScanFormatError,
    ScanFormatWarning,
    SegmentationError,
    SegmentationWarning,
)
from .features.comparison import Comparison
from .features.describe import describe
from .features.preprocessing import plot_preprocess, preprocess
from .io import read_image, read_npz, read_scan, read_x3p, write_npz, write_x3p
from .scan import Scan
from .verify import compare, compare_many

__all__ = [
    "__version__",
    "Scan",
    "BallistixError",
    "ScanFormatError",
    "ChecksumError",
    "ParameterError",
    "ScanFormatWarning",
    "IndexFormatError",
    "DescriptorMismatchError",
    "SegmentationError",
    "SegmentationWarning",
    "read_scan",
    "read_x3p",
    "write_x3p",
    "read_image",
    "read_npz",
    "write_npz",
    "compare",
    "compare_many",
    "Comparison",
    "preprocess",
    "plot_preprocess",
    "describe",
    "ScanIndex",
    "search",
    "LinkageGraph",
    "FileFormatError",
    "CaseStore",
    "datasets",
    "validate",
    "ResolutionWarning",
]


def __getattr__(name):  # lazy submodules: keep `import ballistix` fast (FAISS loads on first use)
    import importlib

    if name == "datasets":
        return importlib.import_module(".datasets", __name__)
    if name in ("ScanIndex", "search"):
        return getattr(importlib.import_module(".index", __name__), name)
    if name == "LinkageGraph":
        return importlib.import_module(".graph", __name__).LinkageGraph
    if name == "CaseStore":
        return importlib.import_module(".store", __name__).CaseStore
    if name == "validate":
        return importlib.import_module(".validation", __name__).validate
    raise AttributeError(f"module 'ballistix' has no attribute {name!r}")
