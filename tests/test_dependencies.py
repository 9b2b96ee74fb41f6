"""What ballistix takes from its dependencies beyond their public, documented APIs, and the
fallbacks that keep results the same when that changes.

- ``scipy.fft._pocketfft.pypocketfft`` (features/cmc.py): private; without it the public
  ``scipy.fft`` functions give identical results (tests/test_cmc.py,
  ``test_*_without_pocketfft_entry_points_*``). pyproject.toml pins the SciPy range.
- FAISS index removal (index/scan_index.py): FAISS cannot say which index types remove
  entries; `_removes_entries` tells it by type, checked here against FAISS itself.
"""

import numpy as np
import pytest

import ballistix as bx
from ballistix.index.scan_index import _id_selector, _removes_entries


# graphs, re-ranked codes and fast-scan inverted lists cannot remove; the others can
@pytest.mark.parametrize(
    "factory, removes",
    [
        ("Flat", True),
        ("SQ8", True),
        ("PQ8x4", True),
        ("PQ8x4fs", True),
        ("PCA16,Flat", True),
        ("IVF8,Flat", True),
        ("IVF8,SQ8", True),
        ("IVF8_HNSW8,Flat", True),
        ("HNSW16", False),
        ("NSG16,Flat", False),
        ("PQ8x4fs,RFlat", False),
        ("IVF8,PQ8x4fs", False),
    ],
)
def test_removal_by_type_agrees_with_faiss(factory, removes):
    x = np.random.default_rng(0).standard_normal((512, 32)).astype(np.float32)
    index = bx.ScanIndex(32, factory=factory)._new_index(factory)  # the FAISS index as ScanIndex builds it
    with np.errstate(all="ignore"):
        index.train(x)
    index.add_with_ids(x, np.arange(512, dtype=np.int64))
    assert _removes_entries(index) is removes
    gone = np.array([3, 5, 8], dtype=np.int64)
    if removes:
        assert index.remove_ids(_id_selector(index, gone)) == gone.size
    else:  # the index keeps tombstones instead (tests/test_index.py)
        with pytest.raises(RuntimeError):
            index.remove_ids(_id_selector(index, gone))


def test_ivf_removes_its_entries_without_tombstones():
    x = np.random.default_rng(1).standard_normal((600, 32)).astype(np.float32)
    index = bx.ScanIndex(32, factory="IVF8,Flat")
    index.train(x)
    index.add(np.arange(600), x)
    assert index.remove(np.arange(100)) == 100
    assert index._tombstones.size == 0 and index._index.ntotal == 500 == len(index)
    _, ids = index.search(x[:20], 10)
    assert not np.isin(ids, np.arange(100)).any()


def _third_party_imports() -> set[str]:
    """Top-level names of the non-standard-library modules the package imports (inside functions too)."""
    import ast
    import sys
    from pathlib import Path

    found = set()
    for path in (Path(__file__).resolve().parents[1] / "ballistix").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "ballistix"}


def test_every_declared_dependency_is_imported_and_every_import_declared():
    # scikit-image was declared and never imported until issue 16 measured it and dropped it
    # (benchmarks/skimage_choices.py, docs/architecture.md "Dependencies: what each is for")
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    import_name = {"opencv-python-headless": "cv2", "faiss-cpu": "faiss", "pillow": "PIL"}

    def names(requirements):
        dists = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}
        return {import_name.get(d, d.replace("-", "_")) for d in dists}

    declared = names(project["dependencies"])
    extras = project["optional-dependencies"]
    # dask[distributed]; openpyxl; pandas (DataFrames); flask, waitress, werkzeug (the review app, ballistix/serve);
    # psycopg (the shared store on PostgreSQL)
    optional = names(extras["dask"]) | {"distributed"} | names(extras["xlsx"]) | names(extras["analysis"])
    optional |= names(extras["serve"]) | names(extras["postgresql"])
    imported = _third_party_imports()
    assert declared <= imported, f"declared but never imported: {sorted(declared - imported)}"
    assert imported <= declared | optional, f"imported but not declared: {sorted(imported - declared - optional)}"
