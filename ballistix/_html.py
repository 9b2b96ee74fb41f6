"""The look of ballistix's HTML pages (the store report, the validation report, the graph view) and
of their figures: one palette, the CSS the reports share, escaping, tables, inline figures, pages."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping

from ._records import safe_text

#: Paul Tol's "bright" colours (told apart by colour-blind readers).
BLUE = "#4477aa"
RED = "#ee6677"
GREEN = "#228833"
#: The colour of each kind of node in graph views and figures (green: also a recovered or traced firearm).
KIND_COLOURS = {"exhibit": BLUE, "scene": RED, "firearm": GREEN}
#: Neutrals: text and links; secondary text; table and header borders; header fill; other edges;
#: background bars and box borders; a comparison that is not a link.
INK = "#222222"
MUTED = "#666666"
BORDER = "#dddddd"
FILL = "#f4f4f4"
FAINT = "#bbbbbb"
LIGHT = "#cccccc"
NO_LINK = "#d08080"

#: The reports' style sheet (the store report and the validation report).
CSS = f"""
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: {INK};
       padding: 0 16px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }}
h2 {{ font-size: 18px; margin-top: 28px; border-bottom: 1px solid {BORDER}; }}
h3 {{ font-size: 15px; margin-top: 18px; }}
table {{ border-collapse: collapse; margin: 8px 0; font-size: 13px; }}
th, td {{ border: 1px solid {BORDER}; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: {FILL}; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.muted {{ color: {MUTED}; font-size: 12px; }} img {{ max-width: 100%; }}
.big {{ font-size: 28px; font-weight: 600; }}
.box {{ border: 1px solid {FAINT}; background: #f8f8f4; padding: 10px 14px; margin: 12px 0; }}
.warn {{ border-color: #c96; background: #fff6ec; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 12px; }} .figs figure {{ margin: 0; flex: 1 1 460px; }}
figcaption {{ font-size: 12px; color: #555; }} code {{ background: #f2f2f2; padding: 0 3px; }}
.wrap {{ overflow-wrap: anywhere; }} details {{ margin: 8px 0; }}
table.rules td:nth-child(2), table.rules td:nth-child(3), table.rules td:nth-child(6) {{ white-space: nowrap; }}
"""


def escape(v) -> str:
    """``v`` as HTML text: ``-`` for nothing, a list joined with commas, bytes of undecodable
    file names as ``\\xff`` (`safe_text`), special characters escaped."""
    if v is None or v == "" or v == []:
        return "-"
    text = ", ".join(map(str, v)) if isinstance(v, (list, tuple, set)) else str(v)
    return html.escape(safe_text(text))


def table(
    rows: list[dict], empty: str = "none", *, cls: str = "", num: tuple = (), link=None, short: Mapping | None = None
) -> str:
    """An HTML table of ``rows`` (dicts with the same keys: the header, ``_`` read as a space);
    ``empty``: said instead when there are no rows; ``cls``: the table's class; ``num``: the
    columns aligned as numbers; ``link``: ``(header, text, href)``, a last column whose cells
    link to ``href(row)`` (a URL, or None for no link) with ``text``; ``short``: column to
    length, cells of that column longer than it shown shortened, whole in their title."""
    short = dict(short or {})
    if not rows:
        return f"<p class='muted'>{escape(empty)}</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{escape(k.replace('_', ' '))}</th>" for k in keys)
    if link is not None:
        head += f"<th>{escape(link[0])}</th>"

    def last(r) -> str:
        if link is None:
            return ""
        href = link[2](r)
        return f"<td><a href='{html.escape(href, quote=True)}'>{escape(link[1])}</a></td>" if href else "<td></td>"

    def cell(k, v) -> str:
        attrs = " class=num" if k in num else ""
        text = "" if v is None else str(v)
        if k in short and len(text) > short[k]:
            attrs += f" title='{html.escape(safe_text(text), quote=True)}'"
            v = text[: short[k]] + "\u2026"
        return f"<td{attrs}>{escape(v)}</td>"

    body = "".join("<tr>" + "".join(cell(k, r[k]) for k in keys) + last(r) + "</tr>" for r in rows)
    opening = f"<table class='{escape(cls)}'>" if cls else "<table>"
    return f"{opening}<tr>{head}</tr>{body}</table>"


def png(fig, alt: str = "figure", *, dpi: int = 100) -> str:
    """A matplotlib figure as an inline ``<img>`` (PNG without a software tag); closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return (
        f"<img alt='{html.escape(alt, quote=True)}' "
        f"src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"
    )


def page(title: str, body: str) -> str:
    """One self-contained HTML page with the reports' style sheet."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>"
    )
