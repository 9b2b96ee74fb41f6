import os
import sys

# numpy picks its SIMD code when it is imported. Its AVX-512 paths (X86_V4) compute sin, cos, exp and
# power a last bit differently from its AVX2 ones, which changes the simulator's heights in their last
# bits and so every checksum of simulated data (tests/golden.json, test_simulate, test_populations). The
# tests run numpy's AVX2 paths on every machine, so one set of checksums holds across CPUs (a user's
# AVX-512 machine simulates data sets that differ from these in the last bits only).
if "numpy" in sys.modules:
    raise RuntimeError("numpy was imported before tests/conftest.py could choose its SIMD paths")
os.environ.setdefault("NPY_DISABLE_CPU_FEATURES", "X86_V4 AVX512_ICL AVX512_SPR")

from pathlib import Path  # noqa: E402

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


# ------------------------------------------------------------------ case stores on PostgreSQL
# Tests that take the ``store_backend`` fixture run twice: on SQLite (the default) and on a PostgreSQL
# server that the session starts itself (Debian's postgresql package; skipped cleanly without it or
# without psycopg). On PostgreSQL every store a test creates gets a new database of its own. A test
# marked ``sqlite_only`` (it reads or damages the store.sqlite file itself) runs on SQLite only.


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: a store test about the SQLite file itself")


def pytest_generate_tests(metafunc):
    if "store_backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("store_backend", ["sqlite"] if only else ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (one per xdist worker), or skip."""
    pytest.importorskip("psycopg")
    from benchmarks._postgres import PostgresServer, find_bindir

    if find_bindir() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    server = PostgresServer(durable=False).start()
    yield server
    server.stop()


@pytest.fixture()
def store_backend(request, monkeypatch):
    """ "sqlite", or "postgresql": then a `CaseStore` made in a new folder (without ``database``) is made
    on the session's server, in a new database dropped after the test."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    server = request.getfixturevalue("postgres_server")
    from ballistix.store import CaseStore

    made, original = [], CaseStore.__init__

    def init(self, folder, *, database=None, create=True, read_only=False, **kw):
        f = Path(folder)
        new = not f.exists() or (f.is_dir() and not any(f.iterdir()))
        if database is None and new and create and not read_only:
            database = server.create_database()
            made.append(database)
        original(self, folder, database=database, create=create, read_only=read_only, **kw)

    monkeypatch.setattr(CaseStore, "__init__", init)
    request.node.postgres_server = server
    yield "postgresql"
    monkeypatch.undo()
    for url in made:
        server.drop_database(url)
