"""The import graph holds the layering of docs/architecture.md: a module imports only from its own
layer or lower ones, never a private module of another package, and no import cycle exists
(imports inside functions count: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ballistix"

#: Layers, lowest first: the same table as docs/architecture.md. A module belongs to the first
#: entry that is its name or a package above it.
LAYERS: list[tuple[str, ...]] = [
    (
        "ballistix.errors",
        "ballistix._version",
        "ballistix._files",
        "ballistix._limits",
        "ballistix._records",
        "ballistix._table",
        "ballistix._html",
        "ballistix._dask",
        "ballistix.scan",
        "ballistix.provenance",
    ),
    ("ballistix.io",),
    ("ballistix.features", "ballistix.datasets"),
    ("ballistix.evaluation",),
    ("ballistix.evidence", "ballistix.fusion", "ballistix.verify", "ballistix.cohort", "ballistix.index"),
    ("ballistix.graph",),
    ("ballistix.store", "ballistix.validation"),
    ("ballistix._demo", "ballistix.serve", "ballistix.cli", "ballistix.__main__", "ballistix"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The ballistix modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("ballistix"):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            found.update(subs if subs and len(subs) == len(node.names) else [target, *subs])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ballistix"))
    resolved = set()
    for t in found:
        while t not in MODULES and "." in t:
            t = t.rsplit(".", 1)[0]
        if t in MODULES and t != name:
            resolved.add(t)
    return resolved


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(name: str) -> int:
    best = None
    for k, entries in enumerate(LAYERS):
        for e in entries:
            if (name == e or name.startswith(e + ".")) and (best is None or len(e) > best[1]):
                best = (k, len(e))
    if best is None:
        raise AssertionError(f"{name} is in no layer of docs/architecture.md: add it to LAYERS and the doc")
    return best[0]


def _package(name: str) -> str:
    return name.rsplit(".", 1)[0]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    here = _layer(module)
    up = sorted(t for t in GRAPH[module] if _layer(t) > here and not module.startswith(t + "."))
    assert not up, f"{module} (layer {here}) imports from higher layers: {[(t, _layer(t)) for t in up]}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_reach_into_another_packages_private_modules(module):
    bad = sorted(
        t
        for t in GRAPH[module]
        if t.rsplit(".", 1)[-1].startswith("_") and t.count(".") >= 2 and not module.startswith(_package(t))
    )
    assert not bad, f"{module} imports private modules of other packages: {bad}"


def test_the_import_graph_has_no_cycles():
    # a package's __init__ re-exporting its own modules is not a cycle: drop edges from a module
    # to the packages above it
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_architecture_doc_lists_the_same_layers():
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    for entries in LAYERS:
        for e in entries:
            assert f"`{e}`" in doc, f"docs/architecture.md does not name {e}"
