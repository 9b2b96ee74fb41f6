import os
from pathlib import Path

import matplotlib
import pytest
from hypothesis import settings

# CI runs the fuzz tests on a fixed sequence of examples (no flaky red runs);
# HYPOTHESIS_PROFILE=explore searches fresh inputs, many more of them.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real NIST/CSAFE scans beside the project; tests using it skip when absent."""
    if not (SHARED_DATA / "fadul").is_dir():
        pytest.skip(f"real scans not available at {SHARED_DATA}")
    return SHARED_DATA
