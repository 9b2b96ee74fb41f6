import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ballistix as bx
from ballistix.cli import main


def test_demo_tells_the_whole_story(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--firearms", "3", "--scenes", "3", "--resolution", "fast", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical_after_roundtrip"] and report["checksums_verified"]
    files = sorted((out / "exhibits").glob("*.x3p"))
    assert len(files) == report["n_exhibits"] == len(report["ingest"]["added"]) > 0
    cw = bx.datasets.Casework.from_json((out / "casework.json").read_text())
    assert sorted(e["id"] for e in cw.exhibits) == [f.stem for f in files]
    same, other = report["comparisons"]  # first exhibit vs a same-gun and a different-gun exhibit
    assert same["same_gun_truth"] and not other["same_gun_truth"] and same["a"] == other["a"]
    for pair in (same, other):  # the LR's conclusion follows its thresholds (or no LR, said so)
        lr = pair["log10_lr"]
        assert pair["conclusion"] == (
            "no LR" if lr is None else "identification" if lr >= 2 else "elimination" if lr <= -2 else "inconclusive"
        )
    # search: the first exhibit against the store, re-ranked by CMC
    search = report["search"]
    cands = search["candidates"]
    assert search["query"] == same["a"] and search["query"] not in [c["exhibit_id"] for c in cands]
    assert 0 < len(cands) <= 5
    assert [c["cmc_count"] for c in cands] == sorted((c["cmc_count"] for c in cands), reverse=True)
    # linkage: groups, linked scenes, leads, 16.4.2 from the store's graph
    link = report["linkage"]
    truth = {e["id"]: e["firearm_truth"] for e in cw.exhibits}
    scenes_of = {f["id"]: f["scenes"] for f in cw.firearms}
    assert link["groups"] and link["leads"]  # this world has recovered guns seen at scenes: there is something to link
    for grp in link["groups"]:  # each group is one true gun, named by its test fires when recovered
        assert len(grp["true_guns"].split()) == 1 and grp["firearm"] in (grp["true_guns"], "not recovered")
    assert link["linked_scenes"] == link["linked_scenes_truth"]
    for r in link["leads"]:  # leads of test fires: each names its own gun and scenes that gun was used at
        gun = truth[r["exhibit"]]
        assert r["kind"] == "firearm hit" and r["firearm"] == gun
        assert set(r["linked_scenes"].split()) <= set(scenes_of[gun])
    assert link["indicator_16_4_2"] == link["indicator_16_4_2_truth"]  # tracing records come with the casework
    g = bx.LinkageGraph.read(report["files"]["graph"])
    assert len(g.ids("exhibit")) == len(files)
    html = (out / "report.html").read_text()
    assert "Same-gun groups" in html and "16.4.2" in html and "src='http" not in html
    # running it again into the same folder: the store recognises every exhibit
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--firearms", "3", "--scenes", "3", "--resolution", "fast", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ingest"]["added"] == [] and len(again["ingest"]["existing"]) == len(files)


def graph_content(g):
    """Every node and edge of a linkage graph with its attributes (edges unordered)."""
    return dict(g.nx.nodes(data=True)), {frozenset((u, v)): d for u, v, d in g.nx.edges(data=True)}


def test_demo_is_deterministic(tmp_path, capsys):
    reports, graphs = [], []
    for name in ("a", "b"):
        main(
            [
                "demo",
                "--out",
                str(tmp_path / name),
                "--firearms",
                "2",
                "--scenes",
                "2",
                "--resolution",
                "fast",
                "--json",
            ]
        )
        report = json.loads(capsys.readouterr().out)
        graphs.append(bx.LinkageGraph.read(report["files"]["graph"]))
        reports.append({k: v for k, v in report.items() if k not in ("out", "files", "seconds")})  # paths, timing
    files = sorted((tmp_path / "a" / "exhibits").glob("*.x3p"))
    assert files and [f.name for f in files] == sorted(f.name for f in (tmp_path / "b" / "exhibits").glob("*.x3p"))
    for fa in files:
        fb = tmp_path / "b" / "exhibits" / fa.name
        assert np.array_equal(bx.read_scan(fa).heights, bx.read_scan(fb).heights, equal_nan=True)
    a, b = reports
    # comparisons, search, and the linkage: groups, linked scenes, leads, 16.4.2
    assert a["linkage"]["leads"] and a == b
    ga, gb = graphs
    assert ga.groups(min_size=2) and ga.groups() == gb.groups()
    assert graph_content(ga) == graph_content(gb)


def test_info_bad_file_exits_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "broken.x3p"
    bad.write_bytes(b"not a zip at all")
    r = subprocess.run([sys.executable, "-m", "ballistix.cli", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.x3p" in lines[0] and "zip" in lines[0]


def test_info_reads_good_file(tmp_path, capsys):
    (s,) = bx.datasets.simulate(1, 1, seed=0, resolution="fast")
    p = bx.write_x3p(s, tmp_path / "ok.x3p")
    assert main(["info", str(p), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["file"] == "ok.x3p" and row["shape"] == "300x300" and row["checksums"] == "verified"


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert bx.__version__ in capsys.readouterr().out


def test_store_commands(tmp_path, capsys):
    from ballistix.store import CaseStore

    scans = bx.datasets.simulate(
        n_firearms=2, shots=2, seed=3, difficulty="easy", resolution="fast", models=["Glock 17", "Ruger P95"]
    )
    files = [str(bx.write_x3p(s, tmp_path / f"c{k}.x3p")) for k, s in enumerate(scans)]
    store = tmp_path / "store"
    CaseStore(store, preprocess_params={"spacing_um": 12.5}).close()  # the CLI keeps the store's parameters
    bad = tmp_path / "bad.x3p"
    bad.write_bytes(b"junk")
    assert main(["ingest", *files[:3], str(bad), "--store", str(store), "--scene", "S1", "--json"]) == 2
    cap = capsys.readouterr()
    report = json.loads(cap.out)
    assert report["added"] == ["c0", "c1", "c2"] and len(report["failed"]) == 1 and report["exhibits"] == 3
    assert cap.err.strip().splitlines() == [line for line in cap.err.strip().splitlines() if "bad.x3p" in line]
    assert main(["search", files[3], "--store", str(store), "-k", "2", "--shortlist", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    best = out["candidates"][0]
    assert best["exhibit_id"] == "c2" and best["source_name"] == "c2.x3p" and best["cmc_count"] >= 6
    assert {"descriptor_score", "score"} <= set(best)
    assert main(["link", "--store", str(store), "--out", str(tmp_path / "g.json"), "--shortlist", "2"]) == 0
    assert "links: likelihood ratio >= 100" in capsys.readouterr().out
    g = bx.LinkageGraph.read(tmp_path / "g.json")  # no calibration for 12.5 um grids: candidates, not links
    assert g.groups(min_size=2) == [] and ("c0", "c1") in [(c["a"], c["b"]) for c in g.candidates()]
    assert main(["rule", "--store", str(store), "--count-rule", "6"]) == 2  # a count rule needs its reason
    assert "reason" in capsys.readouterr().err
    assert main(["rule", "--store", str(store), "--count-rule", "six", "--reason", "x"]) == 2
    assert "whole number" in capsys.readouterr().err
    assert main(["rule", "--store", str(store), "--count-rule", "6", "--reason", "lab validation V-1"]) == 0
    assert "6 or more congruent matching cells" in capsys.readouterr().out
    assert main(["link", "--store", str(store), "--out", str(tmp_path / "g.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["comparisons_recorded"] == 0
    g = bx.LinkageGraph.read(tmp_path / "g.json")
    assert {"c0", "c1"} in g.groups() and g.count_rule == 6
    assert main(["compare", files[0], files[1], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["cmc_count"] >= 6
    if res["log10_lr"] is None:
        assert "no likelihood ratio" in res["evidence"]["note"]
    else:
        assert res["lr"] == pytest.approx(10 ** res["log10_lr"]) and res["evidence"]["conclusion"]["conclusion"]
    assert main(["compare", files[0], files[1]]) == 0
    printed = capsys.readouterr().out
    assert "likelihood ratio" in printed


def test_search_of_a_missing_store_file_is_one_line(tmp_path):
    from ballistix.store import CaseStore

    CaseStore(tmp_path / "s").close()  # search never creates a store (tests/test_store_integrity.py)
    r = subprocess.run(
        [sys.executable, "-m", "ballistix.cli", "search", str(tmp_path / "nope.x3p"), "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope.x3p" in r.stderr


def test_bench_refuses_unknown_names(capfd):
    assert main(["bench", "no-such-benchmark"]) == 2  # python -m benchmarks, run in the checkout
    assert "unknown benchmark" in capfd.readouterr().err


def test_bench_without_a_checkout_says_how_to_run_the_benchmarks(monkeypatch, capsys):
    import ballistix.cli

    monkeypatch.setattr(ballistix.cli, "_checkout", lambda: None)  # installed from a wheel: no benchmarks/
    assert main(["bench", "--quick", "cmc_speed"]) == 2
    assert "python -m benchmarks --quick cmc_speed" in capsys.readouterr().err


def test_benchmark_command_runs_end_to_end_and_summarises(tmp_path):
    # one quick benchmark through `python -m benchmarks`, results written to a temporary folder
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "BALLISTIX_BENCH_RESULTS": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks", "cmc_speed", "--quick"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "SUMMARY" in r.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    if (root.parent / "shared" / "data" / "fadul").is_dir():
        speed = json.loads((tmp_path / "cmc_speed.json").read_text())
        assert speed["modes"] and all(v["seconds"] > 0 for v in speed["modes"].values())
        assert sum(row[0] == "cmc_speed" for row in summary["rows"]) == len(speed["modes"])


def _micrometre_x3p(scan, path: Path) -> Path:
    """``scan`` as an x3p file in micrometres (CX/CY increments and float64 heights times 1e6, MD5s right)."""
    import hashlib
    import re
    import zipfile

    with zipfile.ZipFile(bx.write_x3p(scan, path)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    data = (np.frombuffer(members["bindata/data.bin"], "<f8") * 1e6).astype("<f8").tobytes()
    xml = re.sub(
        r"(<C[XY]>\s*<AxisType>I</AxisType>\s*<DataType>D</DataType>\s*<Increment>)([^<]+)",
        lambda m: m.group(1) + repr(float(m.group(2)) * 1e6),
        members["main.xml"].decode(),
    )
    xml = re.sub(r"(<MD5ChecksumPointData>)\w+", lambda m: m.group(1) + hashlib.md5(data).hexdigest(), xml)
    members.update(
        {
            "main.xml": xml.encode(),
            "bindata/data.bin": data,
            "md5checksum.hex": hashlib.md5(xml.encode()).hexdigest() + "\n",
        }
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def test_info_units(tmp_path, capsys):
    (s,) = bx.datasets.simulate(1, 1, seed=0, resolution="fast")
    p = _micrometre_x3p(s, tmp_path / "um.x3p")
    with pytest.warns(bx.ScanFormatWarning, match="units='um'"):
        assert main(["info", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["spacing_um"] == 12.5
    assert main(["info", str(p), "--units", "um", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["spacing_um"] == 12.5
    assert main(["info", str(p), "--units", "m", "--json"]) == 0  # as given: 12.5 "metres"
    assert json.loads(capsys.readouterr().out)[0]["spacing_um"] == 12.5e6


def test_units_option_of_compare_ingest_and_search(tmp_path, capsys):
    from ballistix.store import CaseStore

    scans = bx.datasets.simulate(n_firearms=1, shots=2, seed=0, resolution="fast")
    metres = [str(bx.write_x3p(s, tmp_path / f"m{k}.x3p")) for k, s in enumerate(scans)]
    um = [str(_micrometre_x3p(s, tmp_path / f"u{k}.x3p")) for k, s in enumerate(scans)]
    assert main(["compare", *metres, "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(["compare", *um, "--units", "um", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["cmc_count"] == ref["cmc_count"] and res["score"] == pytest.approx(ref["score"], abs=1e-9)
    store = tmp_path / "store"
    CaseStore(store, preprocess_params={"spacing_um": 12.5}).close()
    assert main(["ingest", *um, "--store", str(store), "--units", "um", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == ["u0", "u1"]
    # micrometres read as metres: refused, with the reason, by preprocess
    assert main(["ingest", *um, "--store", str(tmp_path / "wrong"), "--units", "m", "--json"]) == 2
    cap = capsys.readouterr()
    assert len(json.loads(cap.out)["failed"]) == 2 and "passed as metres" in cap.err
    assert main(["search", um[0], "--store", str(store), "--units", "m"]) == 2
    assert "passed as metres" in capsys.readouterr().err
