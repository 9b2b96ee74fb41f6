"""Driving a headless Chromium over the DevTools pipe, for the browser tests
(`test_browser.py`: the report and the linkage view from disk; `test_serve.py`: the review app
over HTTP).

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe``
(file descriptors 3 and 4, messages separated by NUL bytes), so no websocket
or browser-automation package is needed. Tests skip when no Chromium
binary is found (``.ci/run`` installs Debian's ``chromium`` when it can).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable: ``$BALLISTIX_CHROMIUM``, else the first of
    `BROWSERS` on the ``PATH``; None when there is none."""
    exe = os.environ.get("BALLISTIX_CHROMIUM")
    if exe:
        return exe if Path(exe).is_file() else None
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """A headless Chromium driven over the DevTools pipe (``--remote-debugging-pipe``).

    Parameters
    ----------
    exe : str
        The Chromium executable.
    profile : path
        An empty folder for the browser profile.
    timeout : float
        Seconds to wait for any one answer before giving up.
    reach : sequence of str
        Host names or addresses the browser may reach (a test server on ``127.0.0.1``); no other
        name resolves.
    """

    def __init__(self, exe: str, profile: Path, timeout: float = 60.0, reach=()):
        self.timeout = timeout
        self.events: list[dict] = []
        self._buf = b""
        self._id = 0
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds():  # the browser reads commands on fd 3 and writes answers on fd 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.stderr = open(Path(profile) / "stderr.txt", "w+b")
        args = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
            # offline: no host name resolves, so nothing can leave the machine even by accident
            "--host-resolver-rules=MAP * ~NOTFOUND" + "".join(f", EXCLUDE {h}" for h in reach),
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)

    def _read(self, timeout: float) -> dict | None:
        """The next message from the browser, or None after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe; its log:\n{self.log()}")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept in ``events``."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        while True:
            answer = self._read(self.timeout)
            if answer is None:
                raise TimeoutError(f"Chromium did not answer {method} within {self.timeout} s")
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float) -> bool:
        """Collect events until one named ``method`` arrives (True) or ``timeout`` passes (False)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            m = self._read(left)
            if m is None:
                return False
            self.events.append(m)
            if m.get("method") == method:
                return True
        return False

    def settle(self, quiet: float = 0.5, limit: float = 5.0) -> None:
        """Collect events until none has arrived for ``quiet`` seconds (at most ``limit``)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            m = self._read(quiet)
            if m is None:
                return
            self.events.append(m)

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-4000:]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self.stderr.close()


@dataclass
class PageResult:
    """What a page did in the browser: its problems (empty when clean), the screenshot, and
    the values of the JavaScript expressions asked for."""

    url: str
    problems: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    values: dict = field(default_factory=dict)


def problems_in(events: list[dict], local: tuple[str, ...] = LOCAL_SCHEMES) -> list[str]:
    """Everything in a page's DevTools events that a person would call broken: uncaught
    exceptions, console errors and assertions, error log entries (failed resources), failed
    loads, HTTP error statuses, and requests that would leave the machine (any URL that does
    not start with one of ``local``)."""
    urls, out = {}, []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            urls[p["requestId"]] = url
            if not url.startswith(local):
                out.append(f"needs the network: {url}")
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            what = d.get("exception", {}).get("description") or d.get("text")
            out.append(f"uncaught exception at {d.get('url', '?')}:{d.get('lineNumber', -1) + 1}: {what}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append(f"console.{p['type']}: {text}")
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"log error: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"failed to load {urls.get(p['requestId'], p['requestId'])}: {p.get('errorText')}")
        elif m == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
            out.append(f"HTTP {p['response']['status']} for {p['response'].get('url')}")
    return out


BROKEN_IMAGES_JS = "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, read from its header."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def chromium_or_skip() -> str:
    """The Chromium executable, or skip the test (see `find_chromium`)."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (install Debian's 'chromium' or set BALLISTIX_CHROMIUM)")
    return exe


def capture_page(b: DevTools, session: str, width: int, height: int, path) -> Path:
    """Write the whole page of ``session`` (not only the first screen of ``width`` x ``height``) as a PNG."""
    size = b.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
    shot = b.call(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": max(width, size["width"]),
                "height": max(height, size["height"]),
                "scale": 1,
            },
        },
        session=session,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


class Tab:
    """One page of a headless Chromium, driven step by step (open, click, type, read), recording
    every event for `problems_in`. Use as a context manager.

    Parameters
    ----------
    exe : str
        The Chromium executable.
    width, height : int
        Viewport, CSS pixels.
    timeout : float
        Seconds to wait for a page to load or the browser to answer.
    reach : sequence of str
        Host names or addresses the browser may reach (see `DevTools`; default: ``127.0.0.1``).
    """

    def __init__(self, exe: str, *, width: int = 1280, height: int = 900, timeout: float = 60.0, reach=("127.0.0.1",)):
        self.width, self.height = width, height
        self._profile = tempfile.TemporaryDirectory(prefix="bx-chromium-")
        self.b = DevTools(exe, Path(self._profile.name), timeout=timeout, reach=reach)
        target = self.b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.s = self.b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.b.call(f"{domain}.enable", session=self.s)
        self.b.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=self.s,
        )

    def __enter__(self) -> Tab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def events(self) -> list[dict]:
        return self.b.events

    def _loaded(self, what: str) -> None:
        if not self.b.wait_for("Page.loadEventFired", self.b.timeout):
            raise TimeoutError(f"{what}: the page did not finish loading within {self.b.timeout} s")
        self.b.settle(quiet=0.3)

    def goto(self, url: str) -> None:
        """Open ``url`` and wait until it has loaded."""
        self.b.call("Page.navigate", {"url": url}, session=self.s)
        self._loaded(url)

    def eval(self, expr: str):
        """The JSON value of a JavaScript expression in the page (an exception fails the test)."""
        r = self.b.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=self.s)
        if "exceptionDetails" in r:
            raise AssertionError(f"evaluating {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def centre(self, selector: str) -> tuple[float, float]:
        """The viewport centre of the first element ``selector`` matches, scrolled into view."""
        xy = self.eval(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                if (!e) return null; e.scrollIntoView({{block: "center"}});
                const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"""
        )
        assert xy is not None, f"nothing on the page matches {selector!r}"
        return xy[0], xy[1]

    def mouse(self, kind: str, x: float, y: float, **extra) -> None:
        self.b.call(
            "Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", **extra}, session=self.s
        )

    def click(self, selector: str, *, navigates: bool = False) -> None:
        """A real left click (press, release) on the element; ``navigates``: wait for the page it opens."""
        x, y = self.centre(selector)
        self.mouse("mouseMoved", x, y, button="none")
        self.mouse("mousePressed", x, y, clickCount=1)
        self.mouse("mouseReleased", x, y, clickCount=1)
        if navigates:
            self._loaded(f"clicking {selector}")
        else:
            self.b.settle(quiet=0.2)

    def type(self, selector: str, text: str) -> None:
        """Click into a form field and type ``text`` (as keyboard input, after what it holds)."""
        self.click(selector)
        self.b.call("Input.insertText", {"text": text}, session=self.s)

    def wheel(self, selector: str, delta_y: float) -> None:
        x, y = self.centre(selector)
        self.mouse("mouseWheel", x, y, button="none", deltaX=0, deltaY=delta_y)
        self.b.settle(quiet=0.2)

    def drag(self, selector: str, dx: float, dy: float) -> None:
        x, y = self.centre(selector)
        self.mouse("mouseMoved", x, y, button="none")
        self.mouse("mousePressed", x, y, clickCount=1)
        for k in range(1, 6):
            self.mouse("mouseMoved", x + dx * k / 5, y + dy * k / 5, buttons=1)
        self.mouse("mouseReleased", x + dx, y + dy, clickCount=1)
        self.b.settle(quiet=0.2)

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG."""
        path = capture_page(self.b, self.s, self.width, self.height, path)
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        self.b.close()
        self._profile.cleanup()
