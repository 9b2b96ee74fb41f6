"""benchmarks/verify_scale.py: the trade-off of search stage 2 (pre-check, then CMC), its curve and quick mode."""

import json

import numpy as np
import pytest

from benchmarks import verify_scale as vs  # noqa: E402  (the tests run from a checkout: pyproject pythonpath)


def _query(scores, same, cmc, cpu=0.5):
    n = len(scores)
    return {
        "shortlist": list(range(n)),
        "same": same,
        "precheck": {p: {"scores": scores, "cpu": 0.2} for p, kw in vs.PRUNERS.items() if kw is not None},
        "cmc": {str(i): c for i, c in cmc.items()},
        "compare_cpu": {str(i): cpu for i in cmc},
        "query_prepare_cpu": 0.01,
    }


def test_curve_counts_the_identified_partners_among_the_best_m():
    # candidate 3 is an identified partner ranked first by the pre-check, fourth by the descriptor;
    # candidate 1 is same-gun but not identified (CMC 2): it does not count
    q = _query([0.1, 0.5, 0.2, 0.9, 0.0], [False, True, False, True, False], {1: 2, 3: 12, 0: 0})
    pre = vs.curve([q], "precheck", [1, 3, 4], 2)
    desc = vs.curve([q], "descriptor rank", [1, 3, 4], 2)
    assert pre["identified_partners"] == desc["identified_partners"] == 1
    assert [pre["keep"][m]["kept_share"] for m in ("1", "3", "4")] == [1.0, 1.0, 1.0]
    assert [desc["keep"][m]["kept_share"] for m in ("1", "3", "4")] == [0.0, 0.0, 1.0]
    # time: pre-check + query preparation + m comparisons, over 2 cores; the descriptor rank is free
    assert pre["keep"]["3"]["cpu_seconds"] == pytest.approx(0.2 + 0.01 + 3 * 0.5)
    assert desc["keep"]["3"]["seconds_on_jobs"] == pytest.approx((0.01 + 3 * 0.5) / 2)
    assert vs.recommend(pre, 1.0)["verify_top"] == 3 and vs.recommend(pre, 0.1) is None


@pytest.mark.slow
def test_quick_run_writes_the_curve(tmp_path, monkeypatch):
    from benchmarks import _common

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(vs, "RESULTS", tmp_path)
    assert vs.main(["--quick", "--skip-real", "--jobs", "2"]) == 0
    out = json.loads((tmp_path / "verify_scale.json").read_text())
    sim = out["simulated"]
    assert set(sim["curves"]) == set(vs.PRUNERS) and sim["queries"] == 3
    keep = sorted(sim["curves"]["precheck"]["keep"].items(), key=lambda kv: int(kv[0]))  # JSON keys sort as text
    assert all(v["kept_share"] is None or 0 <= v["kept_share"] <= 1 for _, v in keep)
    times = [v["cpu_seconds"] for _, v in keep]
    assert times == sorted(times) and np.all(np.array(times) > 0)
    assert sim["direct"]["5"]["queries"][0]["hits"] <= 5
    assert (tmp_path / "verify_scale.png").is_file()
