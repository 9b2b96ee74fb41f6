"""benchmarks/store_concurrency.py at tiny sizes: client processes ingest, link and search one store together
and nothing is lost, on SQLite and (when installed) PostgreSQL."""

import json

import pytest

from benchmarks import store_concurrency as sc  # noqa: E402  (the tests run from a checkout: pyproject pythonpath)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_tiny_run_loses_nothing(tmp_path, monkeypatch, backend):
    if backend == "postgresql" and (why := sc._postgres_missing()):
        pytest.skip(why)
    from benchmarks import _common

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    argv = ["--files", "6", "--clients", "1", "2", "--searches", "1", "--shortlist", "2", "--backends", backend]
    assert sc.main(argv) == 0
    out = json.loads((tmp_path / "store_concurrency.json").read_text())
    assert out["lost_nothing"] and not out["lost"] and not out["skipped"]
    assert len(out["inputs"]["sha256"]) == 6
    runs = out["runs"][backend]
    assert set(runs) == {"1", "2"}
    for n, r in runs.items():
        for phase in sc.PHASES:
            assert r[phase]["ok"] and all(r[phase]["verify"]["lost_nothing"].values())
        assert r["ingest"]["added"] == 6 and r["ingest"]["exhibits_per_second"] > 0
        link = r["link"]
        assert link["recorded_sum"] >= link["distinct_comparisons"] > 0  # duplicated work shows as more
        assert r["search"]["searches"] == int(n) and r["search"]["latency_p50_seconds"] > 0
    assert runs["1"]["link"]["recorded_sum"] == runs["1"]["link"]["distinct_comparisons"]
    assert (tmp_path / "store_concurrency.png").is_file()
