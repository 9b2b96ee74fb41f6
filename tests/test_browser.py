"""The HTML report and the interactive linkage view in a real browser (headless Chromium).

Each page is opened from disk with the network switched off; the test fails on
any uncaught JavaScript error, console error, resource that did not load,
image that did not decode, or request that would need the network, and saves
a full-page screenshot under the test's ``tmp_path`` (its path is printed).

The browser is driven over the DevTools pipe (`_browser.DevTools`, shared with
test_serve.py); the tests skip when no Chromium binary is found (``.ci/run``
installs Debian's ``chromium`` when it can).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from _browser import (  # noqa: F401  (re-exported: test_validate.py takes its helpers from here)
    BROKEN_IMAGES_JS,
    BROWSERS,
    LOCAL_SCHEMES,
    DevTools,
    PageResult,
    capture_page,
    chromium_or_skip,
    find_chromium,
    png_size,
    problems_in,
)

import ballistix as bx


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()


def render(
    exe: str,
    page: Path,
    screenshot: Path,
    *,
    width: int = 1280,
    height: int = 900,
    evaluate: dict[str, str] | None = None,
    click_js: str | None = None,
) -> PageResult:
    """Open ``page`` (a local HTML file) in headless Chromium with the network off, and report.

    Parameters
    ----------
    exe : str
        Chromium executable.
    page : path
        The HTML file.
    screenshot : path
        Where the PNG goes: the whole page, not only the first screen.
    width, height : int
        Viewport, CSS pixels.
    evaluate : dict of str to str, optional
        Name -> JavaScript expression, evaluated after the page loaded (and after the click);
        their JSON values are returned in ``values``.
    click_js : str, optional
        An expression giving ``[x, y]`` in the viewport: a left click is made there before
        the screenshot.

    Returns
    -------
    PageResult
        ``problems`` lists every error (see `problems_in`) and each ``<img>`` that did not decode.
    """
    url = Path(page).resolve().as_uri()
    result = PageResult(url)
    with tempfile.TemporaryDirectory(prefix="bx-chromium-") as profile:
        b = DevTools(exe, Path(profile))
        try:
            target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                b.call(f"{domain}.enable", session=s)
            b.call(
                "Network.emulateNetworkConditions",
                {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
                session=s,
            )
            b.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=s,
            )
            b.call("Page.navigate", {"url": url}, session=s)
            if not b.wait_for("Page.loadEventFired", b.timeout):
                result.problems.append(f"the page did not finish loading within {b.timeout} s")
            b.settle()
            if click_js:
                x, y = b.call("Runtime.evaluate", {"expression": click_js, "returnByValue": True}, session=s)["result"][
                    "value"
                ]
                for kind in ("mousePressed", "mouseReleased"):
                    b.call(
                        "Input.dispatchMouseEvent",
                        {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                        session=s,
                    )
                b.settle(quiet=0.3)
            for name, expr in {"broken_images": BROKEN_IMAGES_JS, **(evaluate or {})}.items():
                r = b.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=s)
                if "exceptionDetails" in r:
                    result.problems.append(f"evaluating {name}: {r['exceptionDetails'].get('text')}")
                result.values[name] = r["result"].get("value")
            result.screenshot = capture_page(b, s, width, height, screenshot)
            b.settle(quiet=0.2)
        finally:
            b.close()
        result.problems[:0] = problems_in(b.events)
        result.problems += [f"image did not load: {src[:80]}" for src in result.values.get("broken_images") or []]
    print(f"screenshot of {page}: {result.screenshot}")
    return result


# ----------------------------------------------------------------- the checker itself can fail
def test_checker_catches_a_script_error_and_a_missing_image(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>broken</title></head><body>"
        "<h1>a broken page</h1><img src='missing-picture.png' alt='missing'>"
        "<script>console.log('just-a-log-line'); notDefinedAnywhere();</script></body></html>"
    )
    res = render(chromium, page, tmp_path / "broken.png")
    text = "\n".join(res.problems)
    assert "notDefinedAnywhere" in text and "uncaught exception" in text
    assert "missing-picture.png" in text and "ERR_FILE_NOT_FOUND" in text
    assert any(p.startswith("image did not load") for p in res.problems)
    assert "just-a-log-line" not in text  # a console.log is not an error
    assert png_size(res.screenshot) >= (1280, 900)


def test_checker_catches_console_errors_and_network_use(chromium, tmp_path):
    page = tmp_path / "online.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>online</title>"
        "<script src='https://cdn.example.org/lib.js'></script></head><body>"
        "<script>console.error('something went wrong')</script></body></html>"
    )
    res = render(chromium, page, tmp_path / "online.png")
    text = "\n".join(res.problems)
    assert "needs the network: https://cdn.example.org/lib.js" in text
    assert "console.error: something went wrong" in text


def test_checker_passes_a_clean_page(chromium, tmp_path):
    page = tmp_path / "clean.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>clean</title></head><body>"
        "<img alt='dot' src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAD"
        "UlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='><script>document.title = 'ok'</script>"
        "</body></html>"
    )
    res = render(chromium, page, tmp_path / "clean.png", evaluate={"title": "document.title"})
    assert res.problems == [] and res.values["title"] == "ok"


# ----------------------------------------------------------------- ballistix's pages
@pytest.fixture(scope="module")
def casefile(tmp_path_factory):
    """A small case store built from simulated casework (fast resolution), its report and linkage view."""
    out = tmp_path_factory.mktemp("casefile")
    cw = bx.datasets.simulate_casework(n_firearms=4, n_scenes=6, seed=0, resolution="fast")
    store = bx.CaseStore(out / "store", shortlist=3)
    store.add_casework(cw, progress=False)
    store.link_new(progress=False)  # one process: link_new starts a pool per exhibit
    graph = store.graph()
    report = store.report(out / "report.html")
    view = graph.to_html(out / "links.html", title="simulated casework")
    store.close()
    return {"report": report, "view": view, "graph": graph}


def test_report_renders_offline_without_errors(chromium, casefile, tmp_path):
    g = casefile["graph"]
    res = render(
        chromium,
        casefile["report"],
        tmp_path / "report.png",
        evaluate={
            "headings": "[...document.querySelectorAll('h2')].map(h => h.textContent)",
            "figures": "[...document.images].map(i => [i.naturalWidth, i.naturalHeight])",
            "overflow": "document.documentElement.scrollWidth > window.innerWidth",
            "groups_rows": "document.querySelectorAll('h2 + table')[1].rows.length",
        },
    )
    assert res.problems == [], "\n".join(res.problems)
    v = res.values
    for section in ("Same-gun groups", "Scene timeline", "Tracing (SDG indicator 16.4.2)"):
        assert section in v["headings"]
    assert len(v["figures"]) == 2 and all(w > 100 and h > 100 for w, h in v["figures"])  # timeline, tracing
    assert not v["overflow"], "the report is wider than the window"
    assert v["groups_rows"] == 1 + len(g.groups(min_size=2))  # header row + one row a group
    w, h = png_size(res.screenshot)
    assert w >= 1280 and h > 1500  # the whole page, not the first screen


NODE_CENTRE_JS = """(() => {{ const r = [...document.querySelectorAll('#world {sel}')][0].getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2]; }})()"""


def test_linkage_view_renders_offline_and_responds(chromium, casefile, tmp_path):
    g = casefile["graph"]
    # click the first exhibit: its details (a long SHA-256 among them) must stay inside the window
    res = render(
        chromium,
        casefile["view"],
        tmp_path / "links.png",
        click_js=NODE_CENTRE_JS.format(sel="circle"),
        evaluate={
            "nodes": "document.querySelectorAll('#world circle, #world rect').length",
            "info": "document.getElementById('info').textContent",
            "info_shown": "getComputedStyle(document.getElementById('info')).display !== 'none'",
            "info_inside": "document.getElementById('info').getBoundingClientRect().right <= innerWidth",
            "overflow": "document.documentElement.scrollWidth > innerWidth",
            # every node inside the drawing area, none hidden under the header or off screen
            "inside": """(() => { const v = document.getElementById('view').getBoundingClientRect();
                        return [...document.querySelectorAll('#world circle, #world rect')].every(n => {
                          const r = n.getBoundingClientRect();
                          return r.left >= v.left && r.right <= v.right && r.top >= v.top && r.bottom <= v.bottom;
                        }); })()""",
            "fills": """(() => { const v = document.getElementById('view').getBoundingClientRect();
                        const b = document.getElementById('world').getBoundingClientRect();
                        return Math.max(b.width / v.width, b.height / v.height); })()""",
        },
    )
    assert res.problems == [], "\n".join(res.problems)
    v = res.values
    assert v["nodes"] == g.nx.number_of_nodes()
    first = v["info"].split("\n")[0]
    assert v["info_shown"] and first.startswith("exhibit ") and first.split()[1] in g.ids("exhibit")
    assert "sha256: " in v["info"] and v["info_inside"] and not v["overflow"]
    assert v["inside"], "some nodes are drawn outside the view"
    assert v["fills"] > 0.6, f"the graph uses only {v['fills']:.0%} of the view"
    assert png_size(res.screenshot) == (1280, 900)
