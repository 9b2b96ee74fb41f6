"""Files and pictures of a `LinkageGraph`: GraphML, GEXF, node-link JSON, an offline HTML view, a figure.

GraphML and GEXF hold only strings, numbers and booleans, one type per
attribute name: other values (lists, mappings, or an attribute whose type
differs between nodes) are written as the string ``"json:"`` + their JSON,
and `read` turns them back, so every format reads back to the same graph.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path

import networkx as nx
from defusedxml.ElementTree import parse as defused_parse

from .._files import atomic_file
from .._html import BORDER, FAINT, FILL, INK, KIND_COLOURS, LIGHT, NO_LINK
from ..errors import FileFormatError, ParameterError
from .rules import LINK_LR

__all__ = ["write", "read", "to_html", "plot", "FORMATS"]

FORMATS = (".graphml", ".gexf", ".json")
_JSON = "json:"
_GEXF_MARK = "ballistix linkage graph: "
_NATIVE = (bool, int, float, str)


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in FORMATS:
        raise ParameterError(f"{path}: graph files are {', '.join(FORMATS)}; got suffix {s or '(none)'!r}")
    return s


def _encoded(items) -> list[tuple]:
    """(key, attrs) pairs with every attribute GraphML/GEXF cannot hold as it is made a json: string."""
    items = list(items)
    types = defaultdict(set)
    for *_, d in items:
        for k, v in d.items():
            types[k].add(type(v))
    plain = {k for k, t in types.items() if len(t) == 1 and next(iter(t)) in _NATIVE}
    out = []
    for *key, d in items:
        e = {}
        for k, v in d.items():
            if k in plain and not (isinstance(v, str) and v.startswith(_JSON)):
                e[k] = v
            else:
                e[k] = _JSON + json.dumps(v, sort_keys=True)
        out.append((*key, e))
    return out


def _decoded(d: dict) -> dict:
    return {k: json.loads(v[len(_JSON) :]) if isinstance(v, str) and v.startswith(_JSON) else v for k, v in d.items()}


def _plain_copy(g, *, node_ids: bool = True) -> nx.Graph:
    h = nx.Graph()
    h.graph.update(_encoded([("graph", g.nx.graph)])[0][1])
    nodes = g.nx.nodes(data=True)
    if not node_ids:  # GEXF takes an "id" attribute for its own node id; the key holds it anyway
        nodes = [(n, {k: v for k, v in d.items() if k != "id"}) for n, d in nodes]
    h.add_nodes_from(_encoded(nodes))
    h.add_edges_from(_encoded(g.nx.edges(data=True)))
    return h


def write(g, path) -> Path:
    path = Path(path)
    s = _suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        if s == ".json":
            doc = {"format": "ballistix-linkage-graph", "graph": nx.node_link_data(g.nx, edges="edges")}
            f.write(json.dumps(doc, indent=1).encode())
        elif s == ".graphml":
            nx.write_graphml(_plain_copy(g), f)
        else:
            f.write(_gexf_bytes(g))
    return path


def _gexf_bytes(g) -> bytes:
    """GEXF has no graph attributes: they go, as JSON, in the meta description."""
    buf = io.BytesIO()
    nx.write_gexf(_plain_copy(g, node_ids=False), buf)
    desc = html.escape(_GEXF_MARK + json.dumps(g.nx.graph, sort_keys=True), quote=False)
    return buf.getvalue().replace(b"</creator>", f"</creator>\n    <description>{desc}</description>".encode(), 1)


def _gexf_graph_attrs(root) -> dict:
    for el in root.iter():
        if el.tag.endswith("description") and (el.text or "").startswith(_GEXF_MARK):
            return json.loads(el.text[len(_GEXF_MARK) :])
    return {}


def read(cls, path):
    path = Path(path)
    s = _suffix(path)
    if not path.is_file():
        raise FileFormatError(path, "no such file")
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
    dec = (lambda d: dict(d)) if s == ".json" else _decoded  # node-link JSON holds any value as it is
    graph = dec(h.graph)
    for k in ("mode", "node_default", "edge_default"):  # added by the GEXF/GraphML readers
        graph.pop(k, None)
    if "threshold" in graph and "link_lr" not in graph:  # written by 0.2 and earlier: a count rule, kept as such
        graph["count_rule"] = graph.pop("threshold")
        graph["link_lr"] = LINK_LR
    if "link_lr" not in graph:
        raise FileFormatError(path, "not a ballistix linkage graph (no link_lr attribute)")
    try:
        g = cls(
            link_lr=float(graph["link_lr"]),
            count_rule=int(graph.get("count_rule") or 0) or None,
            confirmed_only=bool(graph.get("confirmed_only", False)),
        )
    except (TypeError, ValueError) as e:
        raise FileFormatError(path, f"the graph's decision rule is not valid: {e}") from None
    graph.update({k: g.nx.graph[k] for k in ("link_lr", "count_rule", "confirmed_only")})
    g.nx.graph.update(graph)
    for n, d in h.nodes(data=True):
        d = dec(d)
        if d.get("label") == n:
            d.pop("label")
        if "id" not in d and ":" in str(n):
            d["id"] = str(n).split(":", 1)[1]
        if d.get("kind") not in KIND_COLOURS or "id" not in d:
            raise FileFormatError(path, f"node {n!r} is not an exhibit, scene or firearm with an id")
        g.nx.add_node(str(n), **d)
    for u, v, d in h.edges(data=True):
        d = {k: val for k, val in dec(d).items() if not (s == ".gexf" and k == "id")}  # GEXF adds edge ids
        g.nx.add_edge(str(u), str(v), **d)
    g._rebuild_links()
    return g


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


def to_html(g, path, *, title: str = "ballistix linkage graph", seed: int = 0) -> Path:
    path = Path(path)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return path
