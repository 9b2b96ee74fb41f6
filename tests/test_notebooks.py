"""The analyst notebooks run top to bottom, and the committed copies carry no outputs.

Each notebook is executed with nbclient in a fresh kernel, from the
``notebooks/`` folder (so it finds ``../shared/data`` the way it does for an
analyst; without the data it falls back to simulated scans). Parameters are
injected after the cell tagged "parameters", as papermill does; notebook 03
writes its interactive view to the test's ``tmp_path``. A probe cell appended
at the end prints the notebook's key values as JSON for the checks.

To strip outputs before committing: ``python tests/test_notebooks.py --strip``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_compare_two_scans.ipynb", "02_search_a_database.ipynb", "03_crime_linkage.ipynb"]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_REAL = (SHARED_DATA / "fadul").is_dir()
PROBE = "PROBE "


def strip(path: Path) -> bool:
    """Remove the outputs and execution counts of a notebook's code cells in place.

    Returns True when the file changed.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
        if cell.metadata.pop("execution", None) is not None:
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def run_notebook(name: str, params: dict | None = None, probe: str | None = None):
    """Execute ``notebooks/<name>`` in a new kernel and return the executed notebook.

    Parameters
    ----------
    name : str
        File name in ``notebooks/``.
    params : dict, optional
        Values assigned in a cell inserted after the cell tagged "parameters".
    probe : str, optional
        A Python expression evaluated in a cell appended at the end; its JSON is printed
        after ``PROBE`` (see `probe_value`).

    Raises
    ------
    nbclient.exceptions.CellExecutionError
        When any cell raises.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if params:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        text = "\n".join(f"{k} = {v!r}" for k, v in params.items())
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(text, metadata={"tags": ["injected-parameters"]}))
    if probe:
        nb.cells.append(nbformat.v4.new_code_cell(f"import json\nprint({PROBE!r} + json.dumps({probe}))"))
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def stdout_of(nb) -> str:
    """Everything the notebook's code cells printed."""
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and o.name == "stdout"
    )


def text_of(nb) -> str:
    """What the notebook's code cells printed, and the plain text and HTML of what they displayed
    (DataFrames, the inline graph view)."""
    out = [stdout_of(nb)]
    for c in nb.cells:
        if c.cell_type == "code":
            for o in c.outputs:
                if o.output_type in ("execute_result", "display_data"):
                    out += [o.get("data", {}).get("text/plain", ""), o.get("data", {}).get("text/html", "")]
    return "\n".join(out)


def html_outputs(nb) -> list[str]:
    """The HTML the notebook's code cells displayed."""
    return [
        o["data"]["text/html"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/html" in o.get("data", {})
    ]


def images_in(nb) -> int:
    """Number of PNG images among the notebook's outputs."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def probe_value(nb):
    """The JSON printed by the probe cell."""
    line = next(ln for ln in stdout_of(nb).splitlines() if ln.startswith(PROBE))
    return json.loads(line[len(PROBE) :])


# ----------------------------------------------------------------- committed notebooks are clean
@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_stripped_and_has_parameters(name):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{name}: code cells {dirty} have outputs; run python tests/test_notebooks.py --strip"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", f"{name}: needs one code cell tagged 'parameters'"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


# ----------------------------------------------------------------- they run
CMC_LINE = re.compile(r"congruent matching cells: (\d+) of (\d+) valid cells")


@pytest.mark.slow
def test_01_compare_two_scans():
    nb = run_notebook(
        "01_compare_two_scans.ipynb", probe="{'same': same.cmc_count, 'other': other.cmc_count, 'source': source}"
    )
    out = stdout_of(nb)
    counts = [int(m.group(1)) for m in CMC_LINE.finditer(out)]
    assert len(counts) == 2, out  # the same-gun and the different-gun comparison each printed a CMC count
    p = probe_value(nb)
    assert counts == [p["same"], p["other"]]
    assert p["source"].startswith("real scans" if HAVE_REAL else "simulated")
    assert out.count("likelihood ratio: ") == 2  # a value, or the reason there is none
    assert images_in(nb) >= 4  # the scans, every preprocessing step, the cells of both comparisons
    if HAVE_REAL:  # fadul-1-1 vs 1-2 (one slide) and vs 2-1 (another)
        assert p["same"] >= 6 > p["other"]
        assert "meets the conventional 6-CMC count rule" in out and "does not meet" in out
    assert "identification rule" not in out  # the count is a feature; the store decides by a calibrated LR


@pytest.mark.slow
def test_01_falls_back_to_simulated_scans():
    nb = run_notebook(
        "01_compare_two_scans.ipynb",
        {"USE_REAL": False},
        probe="{'same': same.cmc_count, 'other': other.cmc_count, 'source': source}",
    )
    p = probe_value(nb)
    assert p["source"].startswith("simulated")
    assert p["same"] >= 6 > p["other"]  # the simulator's two shots of one gun, and a shot of another
    assert len(CMC_LINE.findall(stdout_of(nb))) == 2


@pytest.mark.slow
def test_02_search_a_database():
    nb = run_notebook(
        "02_search_a_database.ipynb",
        probe="""{
        'sim_desc': list(map(float, sim_desc)), 'sim_reranked': list(map(float, sim_reranked)),
        'hits': [[h.cmc_count, h.descriptor_score, sim_guns[h.id] == sim_guns[query]] for h in hits],
        'real_top1': [real_guns[s[0].id] == real_guns[q] for q, s in real_searches.items()] if have_real else None}""",
    )
    out = text_of(nb)
    p = probe_value(nb)
    assert "descriptor_score" in out and "cmc_count" in out  # the candidate table (a DataFrame) has both scores
    assert any("<table" in h and "same gun (truth)" in h for h in html_outputs(nb))
    assert len(p["hits"]) == 5 and [h[0] for h in p["hits"]] == sorted((h[0] for h in p["hits"]), reverse=True)
    assert p["hits"][0][2] and p["hits"][0][0] >= 6  # the best candidate is from the query's gun
    for curve in (p["sim_desc"], p["sim_reranked"]):
        assert all(0 <= a <= b <= 1 for a, b in zip(curve, curve[1:]))  # recall@k grows with k
    assert images_in(nb) >= 2 + HAVE_REAL  # thumbnails (simulated, and Fadul) and the recall figure
    if HAVE_REAL:
        assert all(p["real_top1"]) and re.search(r"^Fadul\s+40\s", out, re.M)
    else:
        assert "real scans not found" in out


@pytest.mark.slow
def test_03_crime_linkage(tmp_path):
    nb = run_notebook(
        "03_crime_linkage.ipynb",
        {"OUT_DIR": str(tmp_path / "output")},
        probe="""{
        'quality': quality, 'groups': len(groups), 'indicator': ind['value'], 'truth': cw.indicator_16_4_2(),
        'leads': len(leads), 'exhibits': g.nx.number_of_nodes(), 'flows': int(flows['firearms'].sum()),
        'flows_dict': sum(g.trafficking_flows().values())}""",
    )
    out = text_of(nb)
    p = probe_value(nb)
    view = tmp_path / "output" / "linkage.html"
    assert view.is_file() and "<svg" in view.read_text()
    assert p["groups"] >= 2 and p["quality"]["precision"] >= 0.9 and p["quality"]["merged_groups"] == 0
    assert p["indicator"] == pytest.approx(p["truth"])  # every recovered gun is in the graph with its status
    assert re.search(r"indicator 16\.4\.2: \d+% \(\d+ of \d+ recovered firearms traced", out)
    assert p["leads"] >= 1 and "firearm hit" in out
    assert p["flows"] >= 1 and p["flows"] == p["flows_dict"]
    assert images_in(nb) >= 4  # static graph, timeline, map, flows
    # the interactive view travels with the notebook: the whole page inline, nothing loaded from a file
    views = [h for h in html_outputs(nb) if h.startswith("<iframe srcdoc=")]
    assert len(views) == 1 and "&lt;svg" in views[0] and "linkage.html" not in views[0]
    assert not re.search(r"^def print_table", "".join(c.source for c in nb.cells), re.M)  # tables are DataFrames


if __name__ == "__main__":
    if sys.argv[1:] == ["--strip"]:
        for p in sorted(NOTEBOOKS.glob("*.ipynb")):
            print(f"{p}: {'stripped' if strip(p) else 'clean'}")
    else:
        sys.exit("usage: python tests/test_notebooks.py --strip")
