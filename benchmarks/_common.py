"""Shared helpers for benchmarks: result paths, machine description, JSON writing, tables."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import ballistix
from ballistix._table import format_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("BALLISTIX_BENCH_RESULTS") or ROOT / "benchmarks" / "results")  # env: for tests
SHARED_DATA = ROOT.parent / "shared" / "data"


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "ballistix": ballistix.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2, sort_keys=True))
    return path


def table(rows: list[list], header: list[str]) -> str:
    """``rows`` under ``header`` as text (floats to 3 significant digits), by ballistix's one table printer."""
    return format_table([[f"{c:.3g}" if isinstance(c, float) else c for c in r] for r in rows], header)
