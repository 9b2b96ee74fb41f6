from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real NIST/CSAFE scans beside the project; tests using it skip when absent."""
    if not (SHARED_DATA / "fadul").is_dir():
        pytest.skip(f"real scans not available at {SHARED_DATA}")
    return SHARED_DATA
