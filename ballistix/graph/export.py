"""Files and pictures of a `LinkageGraph`: GraphML, GEXF, node-link JSON, an offline HTML view, a figure.

GraphML and GEXF hold only strings, numbers and booleans, one type per
attribute name: other values (lists, mappings, or an attribute whose type
differs between nodes) are written as the string ``"json:"`` + their JSON,
and `read` turns them back, so every format reads back to the same graph.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
import time
from pathlib import Path

import networkx as nx
from defusedxml.ElementTree import iterparse
from defusedxml.ElementTree import parse as defused_parse

from .._files import atomic_file
from .._html import BORDER, FAINT, FILL, INK, KIND_COLOURS, LIGHT, NO_LINK
from ..errors import FileFormatError, ParameterError
from ._intern import shared
from .rules import LINK_LR

__all__ = ["write", "read", "to_html", "html_document", "GraphView", "plot", "FORMATS"]

FORMATS = (".graphml", ".gexf", ".json")
_JSON = "json:"
_GEXF_MARK = "ballistix linkage graph: "
_NATIVE = (bool, int, float, str)


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in FORMATS:
        raise ParameterError(f"{path}: graph files are {', '.join(FORMATS)}; got suffix {s or '(none)'!r}")
    return s


class _Encoding:
    """How one scope's attributes (the graph's, the nodes' or the edges') are written to GraphML and GEXF.

    Made in one pass over the scope's attribute mappings, holding only the names seen: a name is
    *plain* when every value of it has one type among bool, int, float and str; its values are then
    written as they are, except a string that starts with ``"json:"`` or holds a character XML 1.0
    cannot carry. Every other value is written as ``"json:"`` + its JSON. ``names``: the attribute
    names in order of first appearance, each with the type written (str for encoded names).
    """

    def __init__(self, mappings):
        types: dict[str, set] = {}
        for d in mappings:
            for k, v in d.items():
                t = types.get(k)
                if t is None:
                    types[k] = {type(v)}
                elif type(v) not in t:
                    t.add(type(v))
        self.plain = {k for k, t in types.items() if len(t) == 1 and next(iter(t)) in _NATIVE}
        self.names = {k: next(iter(types[k])) if k in self.plain else str for k in types}

    def value(self, k: str, v):
        if k in self.plain and not (isinstance(v, str) and (v.startswith(_JSON) or _NOT_XML.search(v))):
            return v
        return _JSON + json.dumps(v, sort_keys=True)


def _decoded(d: dict) -> dict:
    return {k: json.loads(v[len(_JSON) :]) if isinstance(v, str) and v.startswith(_JSON) else v for k, v in d.items()}


# XML 1.0 characters (https://www.w3.org/TR/xml/#charsets); a value with any other goes as "json:" + JSON
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(s: str) -> str:
    """Character data, escaped as ElementTree escapes it (and a carriage return kept as one)."""
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if "\r" in s:  # a parser reads a bare CR as a newline
        s = s.replace("\r", "&#13;")
    return s


def _attr(s: str) -> str:
    """An attribute value, escaped as ElementTree escapes it."""
    s = _text(s)
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "\n" in s:
        s = s.replace("\n", "&#10;")
    if "\t" in s:
        s = s.replace("\t", "&#09;")
    return s


def _xml_id(path: Path, what: str, s: str) -> str:
    """A node key as an XML attribute value; a key XML cannot carry is refused (the file would not read)."""
    m = _NOT_XML.search(s)
    if m:
        raise ParameterError(
            f"{path}: {what} {s!r} holds the character U+{ord(m.group()):04X}, which XML 1.0 cannot carry: "
            f"export to .json instead"
        )
    return _attr(s)


class _Chunks:
    """Text written to a binary file in chunks of about 256 kB (UTF-8): the document is never in memory."""

    def __init__(self, f):
        self.f, self.parts, self.size = f, [], 0

    def write(self, s: str) -> None:
        self.parts.append(s)
        self.size += len(s)
        if self.size > 1 << 18:
            self.flush()

    def flush(self) -> None:
        self.f.write("".join(self.parts).encode("utf-8"))
        self.parts, self.size = [], 0


# GraphML: the document NetworkX's write_graphml writes (same keys and declarations, ids d0, d1, ...),
# written element by element
_GRAPHML_HEAD = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
    'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
)
_GRAPHML_TYPES = {bool: "boolean", int: "long", float: "double", str: "string"}


def _graphml_value(v) -> str:
    return _text(v if isinstance(v, str) else str(v))


def _write_graphml(g, f, path: Path) -> None:
    G = g.nx
    graph = {k: v for k, v in G.graph.items() if k not in ("node_default", "edge_default")}
    scopes = {
        "graph": _Encoding([graph]),
        "node": _Encoding(d for _, d in G.nodes(data=True)),
        "edge": _Encoding(d for *_, d in G.edges(data=True)),
    }
    keys = {}  # (scope, name) -> key id, numbered in the order NetworkX meets them: graph, nodes, edges
    for scope, enc in scopes.items():
        for name in enc.names:
            keys[scope, name] = f"d{len(keys)}"
    out = _Chunks(f)
    out.write(_GRAPHML_HEAD)
    for (scope, name), kid in reversed(keys.items()):  # NetworkX inserts each new key first
        kind = _GRAPHML_TYPES[scopes[scope].names[name]]
        out.write(f'  <key id="{kid}" for="{scope}" attr.name="{_attr(name)}" attr.type="{kind}" />\n')

    def data(scope, d, indent):
        enc, parts = scopes[scope], []
        for k, v in d.items():
            text = _graphml_value(enc.value(k, v))
            kid = keys[scope, k]
            parts.append(f'{indent}<data key="{kid}">{text}</data>\n' if text else f'{indent}<data key="{kid}" />\n')
        return "".join(parts)

    body = data("graph", graph, "    ")  # NetworkX appends the graph's data after its nodes and edges
    if not (body or G.number_of_nodes() or G.number_of_edges()):
        out.write('  <graph edgedefault="undirected" />\n</graphml>\n')
        out.flush()
        return
    out.write('  <graph edgedefault="undirected">\n')
    for n, d in G.nodes(data=True):
        nid = _xml_id(path, "node", str(n))
        head = f'    <node id="{nid}"'
        out.write(f"{head}>\n{data('node', d, '      ')}    </node>\n" if d else f"{head} />\n")
    for u, v, d in G.edges(data=True):
        e = f'    <edge source="{_xml_id(path, "node", str(u))}" target="{_xml_id(path, "node", str(v))}"'
        out.write(f"{e}>\n{data('edge', d, '      ')}    </edge>\n" if d else f"{e} />\n")
    out.write(body + "  </graph>\n</graphml>\n")
    out.flush()


# GEXF 1.2: the document NetworkX's write_gexf writes, element by element. NetworkX reads some attribute
# names as parts of the format (a node's label, an edge's weight, ...): those are refused, not mangled.
_GEXF_TYPES = {bool: "boolean", int: "long", float: "double", str: "string"}
_GEXF_RESERVED = {
    "node": {"id", "label", "pid", "start", "end", "parents", "spells", "viz", "key"},
    "edge": {"id", "label", "weight", "type", "start", "end", "spells", "viz", "key"},
}


def _gexf_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    s = str(v)
    if isinstance(v, float):
        s = {"inf": "INF", "nan": "NaN", "-inf": "-INF"}.get(s, s)
    return _attr(s)


def _write_gexf(g, f, path: Path) -> None:
    G = g.nx

    def nodes():  # GEXF takes an "id" attribute for its own node id; the key holds it anyway
        return ((n, {k: v for k, v in d.items() if k != "id"}) for n, d in G.nodes(data=True))

    scopes = {"node": _Encoding(d for _, d in nodes()), "edge": _Encoding(d for *_, d in G.edges(data=True))}
    for scope, enc in scopes.items():
        bad = sorted(_GEXF_RESERVED[scope] & set(enc.names))
        if bad:
            raise ParameterError(
                f"{path}: GEXF reads the {scope} attribute(s) {bad} as part of its format; "
                f"rename them or export to .graphml or .json"
            )
    ids = {}  # (scope, name) -> attribute id, numbered as NetworkX numbers them: nodes, then edges
    for scope, enc in scopes.items():
        for name in enc.names:
            ids[scope, name] = str(len(ids))
    name = G.graph.get("name", "")
    mode = "dynamic" if G.graph.get("mode") == "dynamic" else "static"
    desc = html.escape(_GEXF_MARK + json.dumps(G.graph, sort_keys=True), quote=False)
    out = _Chunks(f)
    out.write(
        "<?xml version='1.0' encoding='utf-8'?>\n"
        '<gexf xmlns="http://www.gexf.net/1.2draft" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.gexf.net/1.2draft http://www.gexf.net/1.2draft/gexf.xsd" version="1.2">\n'
        f'  <meta lastmodifieddate="{time.strftime("%Y-%m-%d")}">\n'
        f"    <creator>NetworkX {_text(nx.__version__)}</creator>\n"
        f"    <description>{desc}</description>\n"
        "  </meta>\n"
        f'  <graph defaultedgetype="undirected" mode="{mode}" name="{_attr(str(name))}">\n'
    )
    for scope in ("edge", "node"):  # NetworkX inserts each class's declarations first: edges end up on top
        if scopes[scope].names:
            out.write(f'    <attributes mode="static" class="{scope}">\n')
            for k, t in scopes[scope].names.items():
                out.write(f'      <attribute id="{ids[scope, k]}" title="{_attr(k)}" type="{_GEXF_TYPES[t]}" />\n')
            out.write("    </attributes>\n")

    def attvalues(scope, d):
        enc = scopes[scope]
        values = "".join(
            f'          <attvalue for="{ids[scope, k]}" value="{_gexf_value(enc.value(k, v))}" />\n'
            for k, v in d.items()
        )
        return f"        <attvalues>\n{values}        </attvalues>\n"

    if G.number_of_nodes():
        out.write("    <nodes>\n")
        for n, d in nodes():
            nid = _xml_id(path, "node", str(n))
            head = f'      <node id="{nid}" label="{nid}"'
            out.write(f"{head}>\n{attvalues('node', d)}      </node>\n" if d else f"{head} />\n")
        out.write("    </nodes>\n")
    else:
        out.write("    <nodes />\n")
    if G.number_of_edges():
        out.write("    <edges>\n")
        for i, (u, v, d) in enumerate(G.edges(data=True)):
            head = (
                f'      <edge source="{_xml_id(path, "node", str(u))}" target="{_xml_id(path, "node", str(v))}" '
                f'id="{i}"'
            )
            out.write(f"{head}>\n{attvalues('edge', d)}      </edge>\n" if d else f"{head} />\n")
        out.write("    </edges>\n")
    else:
        out.write("    <edges />\n")
    out.write("  </graph>\n</gexf>\n")
    out.flush()


def _write_json(g, f) -> None:
    """Node-link JSON as `networkx.node_link_data` makes it (``edges="edges"``), one node or edge a line."""
    G = g.nx
    out = _Chunks(f)
    head = {"format": "ballistix-linkage-graph", "graph": {"directed": False, "multigraph": False, "graph": G.graph}}
    out.write(json.dumps(head)[:-2] + ',\n"nodes": [')
    for i, (n, d) in enumerate(G.nodes(data=True)):
        out.write(("," if i else "") + "\n" + json.dumps({**d, "id": n}))
    out.write('\n],\n"edges": [')
    for i, (u, v, d) in enumerate(G.edges(data=True)):
        out.write(("," if i else "") + "\n" + json.dumps({**d, "source": u, "target": v}))
    out.write("\n]}}\n")
    out.flush()


def write(g, path) -> Path:
    """Write ``g`` to ``path``; the format follows the suffix (see `FORMATS`).

    The file is written node by node and edge by edge, never whole in memory (a graph of a
    million exhibits writes in constant memory beyond the graph itself), to a temporary
    name that replaces ``path`` only when complete. GraphML and GEXF are the documents
    NetworkX writes (`networkx.write_graphml`, `networkx.write_gexf`) for the graph with
    non-native values as ``"json:"`` strings; JSON is `networkx.node_link_data` with
    ``edges="edges"`` under a ``format`` marker, one node or edge a line.

    Parameters
    ----------
    g : LinkageGraph
    path : str or Path
        ``.graphml``, ``.gexf`` or ``.json``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ParameterError
        An unknown suffix; for GEXF, an attribute name GEXF reads as part of its format
        (a node's ``label``, an edge's ``weight``, ...); for XML, a node key with a character
        XML cannot carry.

    Examples
    --------
    >>> import ballistix as bx, tempfile, pathlib
    >>> g = bx.LinkageGraph.from_comparisons([("A", "B", {"cmc_count": 24, "log10_lr": 3.0})])
    >>> p = g.export(pathlib.Path(tempfile.mkdtemp()) / "links.graphml")
    >>> bx.LinkageGraph.read(p).groups()
    [{'A', 'B'}]
    """
    path = Path(path)
    s = _suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        if s == ".json":
            _write_json(g, f)
        elif s == ".graphml":
            _write_graphml(g, f, path)
        else:
            _write_gexf(g, f, path)
    return path


def _gexf_graph_attrs(root) -> dict:
    for el in root.iter():
        if el.tag.endswith("description") and (el.text or "").startswith(_GEXF_MARK):
            return json.loads(el.text[len(_GEXF_MARK) :])
    return {}


class _Builder:
    """Puts what a reader finds into a new `LinkageGraph`, node by node and edge by edge, then the
    graph's attributes (which GraphML holds after its edges): the decision rule, then the links."""

    def __init__(self, cls, path: Path, suffix: str):
        self.cls, self.path, self.suffix = cls, path, suffix
        self.g = cls()
        self.dec = dict if suffix == ".json" else _decoded  # node-link JSON holds any value as it is

    def node(self, n, d: dict) -> None:
        d = self.dec(d)
        if d.get("label") == n:
            d.pop("label")
        if "id" not in d and ":" in str(n):
            d["id"] = str(n).split(":", 1)[1]
        if d.get("kind") not in KIND_COLOURS or "id" not in d:
            raise FileFormatError(self.path, f"node {n!r} is not an exhibit, scene or firearm with an id")
        self.g.nx.add_node(sys.intern(str(n)), **shared(d))

    def edge(self, u, v, d: dict) -> None:
        gexf = self.suffix == ".gexf"  # GEXF adds edge ids
        d = shared({k: val for k, val in self.dec(d).items() if not (gexf and k == "id")})
        self.g.nx.add_edge(sys.intern(str(u)), sys.intern(str(v)), **d)

    def finish(self, graph: dict):
        graph = self.dec(graph)
        for k in ("mode", "node_default", "edge_default"):  # added by the GEXF/GraphML readers
            graph.pop(k, None)
        if "threshold" in graph and "link_lr" not in graph:  # written by 0.2 and earlier: a count rule, kept as such
            graph["count_rule"] = graph.pop("threshold")
            graph["link_lr"] = LINK_LR
        if "link_lr" not in graph:
            raise FileFormatError(self.path, "not a ballistix linkage graph (no link_lr attribute)")
        try:
            rule = self.cls(
                link_lr=float(graph["link_lr"]),
                count_rule=int(graph.get("count_rule") or 0) or None,
                confirmed_only=bool(graph.get("confirmed_only", False)),
            )
        except (TypeError, ValueError) as e:
            raise FileFormatError(self.path, f"the graph's decision rule is not valid: {e}") from None
        graph.update({k: rule.nx.graph[k] for k in ("link_lr", "count_rule", "confirmed_only")})
        self.g.nx.graph.clear()
        self.g.nx.graph.update(rule.nx.graph)
        self.g.nx.graph.update(graph)
        self.g._rebuild_links()
        return self.g


class _Unusual(Exception):
    """A file the streaming readers leave to NetworkX's readers (which hold the whole document):
    one that ballistix did not write (nested graphs, parallel or directed edges, dynamic GEXF, ...)."""


def _tag(el) -> str:
    return el.tag.rpartition("}")[2]


_GRAPHML_READ = {"integer": int, "int": int, "long": int, "float": float, "double": float, "string": str}
_GEXF_READ = {**_GRAPHML_READ, "liststring": str, "anyURI": str}
_BOOL = {"true": True, "false": False, "0": False, "1": True}


def _read_graphml(b: _Builder) -> dict:
    """GraphML as `networkx.read_graphml` reads it, element by element (each node and edge dropped
    from the tree once read)."""
    keys: dict[str, tuple[str, str]] = {}
    stack: list[str] = []
    graph_el, graph = None, {}

    def data(el) -> dict:
        out = {}
        for child in el:
            if _tag(child) != "data" or len(child) or child.get("key") not in keys:
                raise _Unusual  # ports, nested graphs, yFiles data, undeclared keys
            name, kind = keys[child.get("key")]
            text = child.text
            if text is None:
                out[name] = ""
            elif kind == "boolean":
                out[name] = _BOOL[text.lower()]
            else:
                out[name] = _GRAPHML_READ[kind](text)
        return out

    for event, el in iterparse(b.path, events=("start", "end")):
        tag = _tag(el)
        if event == "start":
            parent = stack[-1] if stack else None
            stack.append(tag)
            if tag == "graph":
                if graph_el is not None or parent != "graphml" or el.get("edgedefault") == "directed":
                    raise _Unusual
                graph_el = el
            elif (tag in ("node", "edge") and parent != "graph") or tag == "hyperedge":
                raise _Unusual
            continue
        stack.pop()
        parent = stack[-1] if stack else None
        if tag == "key":
            kind = el.get("attr.type") or "string"
            if (
                el.get("yfiles.type") is not None
                or el.get("attr.name") is None
                or kind not in {*_GRAPHML_READ, "boolean"}
            ):
                raise _Unusual
            keys[el.get("id")] = (el.get("attr.name"), kind)
        elif tag == "data" and parent == "graph":
            graph.update(data([el]))
        elif tag == "node":
            n = el.get("id")
            if n in b.g.nx:
                raise _Unusual
            b.node(n, data(el))
            del graph_el[:]
        elif tag == "edge":
            u, v, d = el.get("source"), el.get("target"), data(el)
            if el.get("id"):
                d["id"] = el.get("id")
            if el.get("directed") == "true" or u not in b.g.nx or v not in b.g.nx or b.g.nx.has_edge(u, v):
                raise _Unusual  # directed, an edge before its node, or parallel edges
            b.edge(u, v, d)
            del graph_el[:]
    if graph_el is None:
        raise _Unusual
    return graph


def _read_gexf(b: _Builder) -> dict:
    """GEXF as `networkx.read_gexf` reads it (static graphs), element by element."""
    attrs: dict[str, dict[str, tuple[str, str]]] = {"node": {}, "edge": {}}
    stack: list[str] = []
    graph, described, container, attr_class = {}, {}, None, None

    def values(el, scope) -> dict:
        out = {}
        for child in el:
            if _tag(child) != "attvalues":
                raise _Unusual  # viz, spells, parents, nested nodes
            for a in child:
                key = a.get("for")
                if key not in attrs[scope] or a.get("start") is not None or a.get("end") is not None:
                    raise _Unusual
                title, kind = attrs[scope][key]
                value = a.get("value")
                out[title] = _GEXF_BOOL[value] if kind == "boolean" else _GEXF_READ[kind](value)
        return out

    for event, el in iterparse(b.path, events=("start", "end")):
        tag = _tag(el)
        if event == "start":
            parent = stack[-1] if stack else None
            stack.append(tag)
            if tag == "graph":
                if el.get("defaultedgetype") == "directed" or el.get("mode") == "dynamic" or el.get("timeformat"):
                    raise _Unusual
                if el.get("start") is not None or el.get("end") is not None:
                    raise _Unusual
                if el.get("name"):
                    graph["name"] = el.get("name")
            elif tag == "attributes":
                attr_class = el.get("class")
                if attr_class not in attrs or el.get("mode", "static") != "static":
                    raise _Unusual
            elif tag in ("nodes", "edges"):
                if parent != "graph":
                    raise _Unusual  # nodes inside a node
                container = el
            continue
        stack.pop()
        if tag == "description" and (el.text or "").startswith(_GEXF_MARK):
            described = json.loads(el.text[len(_GEXF_MARK) :])  # over the graph's name, as 0.2 read it
        elif tag == "attribute":
            kind = el.get("type")
            if kind not in {*_GEXF_READ, "boolean"}:
                raise _Unusual
            attrs[attr_class][el.get("id")] = (el.get("title"), kind)
        elif tag == "node":
            n = el.get("id")
            if n in b.g.nx or any(el.get(k) is not None for k in ("pid", "start", "end")):
                raise _Unusual
            d = values(el, "node")
            d["label"] = el.get("label")
            b.node(n, d)
            del container[:]
        elif tag == "edge":
            u, v = el.get("source"), el.get("target")
            if el.get("type") in ("directed", "mutual") or any(el.get(k) is not None for k in ("start", "end")):
                raise _Unusual
            if u not in b.g.nx or v not in b.g.nx or b.g.nx.has_edge(u, v):
                raise _Unusual
            d = values(el, "edge")
            if el.get("id") is not None:
                d["id"] = el.get("id")
            if "networkx_key" in d:
                raise _Unusual
            if el.get("weight") is not None:
                d["weight"] = float(el.get("weight"))
            if el.get("label") is not None:
                d["label"] = el.get("label")
            b.edge(u, v, d)
            del container[:]
    return {**graph, **described}


_GEXF_BOOL = {"true": True, "false": False, "True": True, "False": False, "0": False, "1": True}
_JSON_HEAD = '{"format": "ballistix-linkage-graph", "graph": {"directed": false, "multigraph": false, "graph": '


def _read_json(b: _Builder) -> dict:
    """Node-link JSON as `write` lays it out (one node or edge a line), a line at a time."""

    def items(f, end: str):
        for line in f:
            if line.rstrip("\n") == end:
                return
            d = json.loads(line.rstrip("\n").removesuffix(","))
            if not isinstance(d, dict):
                raise _Unusual
            yield d
        raise _Unusual  # the file ended early

    with open(b.path, encoding="utf-8") as f:
        head = f.readline()
        if not head.startswith(_JSON_HEAD) or not head.endswith(",\n") or f.readline() != '"nodes": [\n':
            raise _Unusual  # another layout (0.2 indented its files): read whole
        graph = json.loads(head[len(_JSON_HEAD) : -2])
        if not isinstance(graph, dict):
            raise _Unusual
        for d in items(f, "],"):
            n = d.pop("id", None)
            if not isinstance(n, str) or n in b.g.nx:
                raise _Unusual
            b.node(n, d)
        if f.readline() != '"edges": [\n':
            raise _Unusual
        for d in items(f, "]}}"):
            u, v = d.pop("source", None), d.pop("target", None)
            if u not in b.g.nx or v not in b.g.nx:
                raise _Unusual
            b.edge(u, v, d)
        if f.read().strip():
            raise _Unusual
    return graph


def _read_whole(b: _Builder):
    """Any GraphML, GEXF or node-link JSON NetworkX reads, through NetworkX's readers (the whole
    document in memory): files ballistix did not write, and those of ballistix 0.2."""
    path, s = b.path, b.suffix
    try:
        if s != ".json":  # refuse DTDs and entities before networkx's parser sees the file
            root = defused_parse(path).getroot()
        if s == ".json":
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or doc.get("format") != "ballistix-linkage-graph":
                raise FileFormatError(path, "not a ballistix linkage graph (no 'format' marker)")
            h = nx.node_link_graph(doc["graph"], edges="edges")
        elif s == ".graphml":
            h = nx.read_graphml(path)
        else:
            h = nx.read_gexf(path)
            h.graph.update(_gexf_graph_attrs(root))
    except FileFormatError:
        raise
    except Exception as e:  # XML and JSON parsers raise many types on malformed files
        raise FileFormatError(path, f"cannot read the graph: {type(e).__name__}: {e}") from None
    if h.is_directed() or h.is_multigraph():
        h = nx.Graph(h)
    for n, d in h.nodes(data=True):
        b.node(n, d)
    for u, v, d in h.edges(data=True):
        b.edge(u, v, d)
    return b.finish(h.graph)


def read(cls, path):
    """Read a graph file into a new ``cls`` (a `LinkageGraph`); see `LinkageGraph.read`.

    The files `write` makes are read element by element (line by line for JSON), so that
    reading needs little memory beyond the graph itself; any other file NetworkX reads
    (ballistix 0.2's, or one another tool wrote) goes through NetworkX's readers, which
    hold the whole document. XML with a DTD or entities is refused either way.

    Raises
    ------
    FileFormatError
        No such file, a file that is not a graph or not a ballistix linkage graph (no
        decision rule, a node that is no exhibit, scene or firearm), named in the message.
    """
    path = Path(path)
    s = _suffix(path)
    if not path.is_file():
        raise FileFormatError(path, "no such file")
    stream = {".json": _read_json, ".graphml": _read_graphml, ".gexf": _read_gexf}[s]
    try:
        b = _Builder(cls, path, s)
        return b.finish(stream(b))
    except _Unusual:
        pass
    except FileFormatError:
        raise
    except Exception as e:  # XML and JSON parsers raise many types on malformed files
        raise FileFormatError(path, f"cannot read the graph: {type(e).__name__}: {e}") from None
    return _read_whole(_Builder(cls, path, s))


# ----------------------------------------------------------------- pictures
def _layout(g, seed: int) -> dict:
    if g.nx.number_of_nodes() > 5000:
        raise ParameterError(
            f"drawing {g.nx.number_of_nodes()} nodes is not useful: draw a subgraph "
            f"(for example one group and its scenes)"
        )
    return nx.spring_layout(g.nx, seed=seed, k=1.5 / math.sqrt(max(1, g.nx.number_of_nodes())))


def _label(d: dict) -> str:
    return str(d.get("id"))


def plot(g, ax=None, *, seed: int = 0):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 7))
    pos = _layout(g, seed)
    links = [(u, v) for u, v, d in g.nx.edges(data=True) if d["kind"] == "match" and g.is_link(d)]
    other = [(u, v) for u, v, d in g.nx.edges(data=True) if d["kind"] != "match"]
    nx.draw_networkx_edges(g.nx, pos, edgelist=other, ax=ax, edge_color=FAINT, width=0.8)
    nx.draw_networkx_edges(g.nx, pos, edgelist=links, ax=ax, edge_color=INK, width=1.6)
    for kind, marker in (("exhibit", "o"), ("scene", "s"), ("firearm", "^")):
        nodes = [n for n, k in g.nx.nodes(data="kind") if k == kind]
        nx.draw_networkx_nodes(
            g.nx,
            pos,
            nodelist=nodes,
            ax=ax,
            node_color=KIND_COLOURS[kind],
            node_shape=marker,
            node_size=60 if kind == "exhibit" else 140,
            label=kind,
        )
    labels = {n: _label(d) for n, d in g.nx.nodes(data=True) if d["kind"] != "exhibit"}
    for t in nx.draw_networkx_labels(g.nx, pos, labels=labels, ax=ax, font_size=7).values():
        t.set_parse_math(False)  # ids drawn as typed: "$x$" is no formula
        t.set_usetex(False)
    ax.set_title(
        f"{len(g.groups(min_size=2))} same-gun groups of 2+ exhibits; black: links "
        f"({repr(g).rsplit('(', 1)[-1].rstrip('>')}",
        fontsize=9,
    )
    ax.legend(scatterpoints=1, fontsize=8, loc="lower right")
    ax.set_axis_off()
    return ax


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 0; color: {ink}; height: 100vh; display: flex;
        flex-direction: column; }}
header {{ flex: none; padding: 8px 12px; background: {fill}; border-bottom: 1px solid {border}; }}
#view {{ flex: 1 1 auto; min-height: 0; width: 100%; display: block; cursor: grab; }}
#info {{ position: absolute; right: 12px; top: 60px; max-width: 340px; background: #fff; border: 1px solid {light};
        padding: 8px; font-size: 12px; white-space: pre-wrap; overflow-wrap: anywhere; display: none;
        max-height: calc(100vh - 90px); overflow: auto; }}
.key {{ white-space: nowrap; margin-left: 12px; }}
.key b {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
.key i {{ display: inline-block; width: 22px; height: 0; margin-right: 4px; vertical-align: middle; }}
</style></head><body>
<header><b>{title}</b> &middot; {summary}
<span class="key"><b style="background:{exhibit}"></b>exhibit</span>
<span class="key"><b style="background:{scene}"></b>scene</span>
<span class="key"><b style="background:{firearm}"></b>firearm</span>
<span class="key"><i style="border-top: 3px solid {ink}"></i>link ({rule})</span>
<span class="key"><i style="border-top: 2px dotted {no_link}"></i>compared, no link</span>
<span class="key"><i style="border-top: 1px solid {faint}"></i>found at / test-fired from</span>
&middot; drag to pan, wheel to zoom, click a node for details
</header>
<svg id="view" xmlns="http://www.w3.org/2000/svg"><g id="world"></g></svg>
<div id="info"></div>
<script>
const data = {data};
const svgNS = "http://www.w3.org/2000/svg";
const svg = document.getElementById("view"), world = document.getElementById("world");
const info = document.getElementById("info");
let scale = 1, tx = 0, ty = 0;
function apply() {{ world.setAttribute("transform", `translate(${{tx}},${{ty}}) scale(${{scale}})`); }}
function fit() {{
  const w = svg.clientWidth || 800, h = svg.clientHeight || 600;
  scale = Math.min(w, h) / 2.3; tx = w / 2; ty = h / 2; apply();
}}
const nodeEls = {{}};
for (const e of data.edges) {{
  const a = data.nodes[e.source], b = data.nodes[e.target];
  const l = document.createElementNS(svgNS, "line");
  l.setAttribute("x1", a.x); l.setAttribute("y1", a.y); l.setAttribute("x2", b.x); l.setAttribute("y2", b.y);
  l.setAttribute("stroke", e.link ? "{ink}" : (e.kind === "match" ? "{no_link}" : "{faint}"));
  l.setAttribute("stroke-width", e.link ? 0.012 : 0.005);
  if (e.kind === "match" && !e.link) l.setAttribute("stroke-dasharray", "0.01 0.01");
  world.appendChild(l);
}}
for (const [key, n] of Object.entries(data.nodes)) {{
  const c = document.createElementNS(svgNS, n.kind === "exhibit" ? "circle" : "rect");
  const r = n.kind === "exhibit" ? 0.018 : 0.03;
  if (n.kind === "exhibit") {{ c.setAttribute("cx", n.x); c.setAttribute("cy", n.y); c.setAttribute("r", r); }}
  else {{ c.setAttribute("x", n.x - r); c.setAttribute("y", n.y - r); c.setAttribute("width", 2 * r);
         c.setAttribute("height", 2 * r); }}
  c.setAttribute("fill", n.colour); c.setAttribute("stroke", "#fff"); c.setAttribute("stroke-width", 0.004);
  c.style.cursor = "pointer";
  const t = document.createElementNS(svgNS, "title"); t.textContent = n.kind + " " + n.id; c.appendChild(t);
  c.addEventListener("click", ev => {{
    ev.stopPropagation();
    info.style.display = "block";
    info.textContent = n.kind + " " + n.id + "\\n" + Object.entries(n.attrs).map(([k, v]) => k + ": " + v).join("\\n");
  }});
  world.appendChild(c); nodeEls[key] = c;
  if (n.kind !== "exhibit") {{
    const s = document.createElementNS(svgNS, "text");
    s.setAttribute("x", n.x + 0.035); s.setAttribute("y", n.y + 0.01); s.setAttribute("font-size", 0.03);
    s.textContent = n.id; world.appendChild(s);
  }}
}}
let drag = null;
svg.addEventListener("mousedown", e => {{ drag = [e.clientX - tx, e.clientY - ty]; }});
window.addEventListener("mouseup", () => {{ drag = null; }});
svg.addEventListener("mousemove", e => {{
  if (drag) {{ tx = e.clientX - drag[0]; ty = e.clientY - drag[1]; apply(); }}
}});
svg.addEventListener("wheel", e => {{
  e.preventDefault(); const f = e.deltaY < 0 ? 1.15 : 1 / 1.15;
  tx = e.offsetX - (e.offsetX - tx) * f; ty = e.offsetY - (e.offsetY - ty) * f; scale *= f; apply();
}}, {{ passive: false }});
svg.addEventListener("click", () => {{ info.style.display = "none"; }});
window.addEventListener("resize", fit);
fit();
</script></body></html>
"""


def html_document(g, *, title: str = "ballistix linkage graph", seed: int = 0) -> str:
    """The text of the graph's interactive view: one page, its data and script inline (no network)."""
    pos = _layout(g, seed)
    nodes = {}
    for n, d in g.nx.nodes(data=True):
        x, y = (float(v) for v in pos[n])
        nodes[n] = {
            "kind": d["kind"],
            "id": str(d["id"]),
            "x": round(x, 4),
            "y": round(y, 4),
            "colour": KIND_COLOURS[d["kind"]],
            "attrs": {k: str(v) for k, v in d.items() if k not in ("kind", "id")},
        }
    edges = [
        {"source": u, "target": v, "kind": d["kind"], "link": d["kind"] == "match" and g.is_link(d)}
        for u, v, d in g.nx.edges(data=True)
    ]
    summary = html.escape(repr(g).strip("<>"))
    # JSON inside <script>: no raw <, > or & so that no value can end or alter the script element
    data = (
        json.dumps({"nodes": nodes, "edges": edges})
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    rule = html.escape(g.decision_rule())
    text = _HTML.format(
        title=html.escape(title),
        summary=summary,
        data=data,
        rule=rule,
        ink=INK,
        fill=FILL,
        border=BORDER,
        light=LIGHT,
        faint=FAINT,
        no_link=NO_LINK,
        **KIND_COLOURS,
    )
    return text


def to_html(g, path, *, title: str = "ballistix linkage graph", seed: int = 0) -> Path:
    path = Path(path)
    text = html_document(g, title=title, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return path


class GraphView:
    """The interactive graph view for Jupyter (`LinkageGraph.view`).

    Its ``_repr_html_`` is an ``<iframe>`` whose ``srcdoc`` holds the whole page (escaped), run in a
    sandbox that allows its script and nothing else (no access to the notebook, no forms, no
    pop-ups); the page loads nothing from the network. ``html`` is the page itself; `save` writes it.
    """

    def __init__(self, document: str, *, title: str = "ballistix linkage graph", height: int = 520):
        if isinstance(height, bool) or not isinstance(height, int) or height < 50:
            raise ParameterError(f"height must be a whole number of pixels (50 or more), got {height!r}")
        self.html = document
        self.title = title
        self.height = height

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="{html.escape(self.title, quote=True)}" '
            f'sandbox="allow-scripts" style="width: 100%; height: {self.height}px; border: 1px solid {BORDER};">'
            "</iframe>"
        )

    def save(self, path) -> Path:
        """Write the page to ``path`` (as `LinkageGraph.to_html` does)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            f.write(self.html.encode("utf-8"))
        return path

    def __repr__(self) -> str:
        return f"<GraphView {self.title!r}: {len(self.html):,} characters of HTML>"
