"""Headless Chromium for the tests (and benchmarks) that look at an HTML report.

`open_page(path)` loads a file:// URL in a fresh Chromium profile through Playwright,
driving the system's browser (Debian's `chromium`; Playwright's own download is never
used) with flags that keep it off the network, and records every request, every console
message and page error, the text of the graph's SVG, a screenshot and the render time.
`browser_or_skip(layout)` skips a test when Chromium or the graph layout ("dot": Graphviz
`dot`; "grandalf": the Python package) is missing, unless CAFFE_SURGERY_REQUIRE_BROWSER=1
(CI sets it); then the test fails instead. `hidden_dot(monkeypatch, tmp_path)` runs the
report as a pip-only user would, with a PATH that has no `dot`.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path():
    """The system Chromium, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _skip_or_fail(missing):
    import pytest

    if missing:
        why = "missing " + "; ".join(missing)
        if os.environ.get("CAFFE_SURGERY_REQUIRE_BROWSER") == "1":
            pytest.fail(why + "; CAFFE_SURGERY_REQUIRE_BROWSER=1 asks for them")
        pytest.skip(why)


def dot_or_skip():
    """Skip (or fail, see the module docstring) when Graphviz `dot` is missing."""
    _skip_or_fail([] if shutil.which("dot") else ["Graphviz dot (Debian: apt-get install graphviz)"])


def layout_or_skip(layout):
    """Skip (or fail, see the module docstring) when the graph layout is missing."""
    if layout == "dot":
        dot_or_skip()
        return
    try:
        import grandalf  # noqa: F401
    except ImportError:
        _skip_or_fail(["the Python package grandalf (pip install '.[test]')"])


def browser_or_skip(layout="dot"):
    """The Chromium path, after checking Playwright and the graph layout are there too."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright (pip install '.[test]')")
    if chromium_path() is None:
        missing.append("Chromium (Debian: apt-get install chromium)")
    _skip_or_fail(missing)
    layout_or_skip(layout)
    return chromium_path()


def hidden_dot(monkeypatch, folder):
    """Set PATH to an empty folder for the rest of the test (or the monkeypatch context),
    so the report finds no Graphviz `dot` and lays the graph out with grandalf."""
    empty = Path(folder) / "no-dot-here"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


class PageLoad(NamedTuple):
    url: str
    requests: list        # every URL the page asked for, the page itself included
    console: list         # (type, text) of every console message
    errors: list          # uncaught page errors
    graph_text: str       # textContent of the graph's <svg>
    nodes: dict           # graph node <title> (the box's layer name) -> its class attribute
    screenshot: bytes     # PNG of the viewport
    render_ms: float      # navigation start to the first frame after `load`


RENDER_MS = """() => new Promise(done => requestAnimationFrame(() =>
    requestAnimationFrame(() => done(performance.now()))))"""


def open_page(path, *, width=1400, height=900, screenshot=None, executable=None):
    """Load `path` in headless Chromium and report what happened (see PageLoad)."""
    from playwright.sync_api import sync_playwright

    url = Path(path).resolve().as_uri()
    requests, console, errors = [], [], []
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, \
            sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable or chromium_path(), headless=True, args=FLAGS,
            viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="load")
            render_ms = page.evaluate(RENDER_MS)
            graph_text = page.evaluate(
                "() => { const s = document.querySelector('#viewport svg'); "
                "return s ? s.textContent : ''; }")
            nodes = dict(page.evaluate(
                "() => Array.from(document.querySelectorAll('#viewport g.node'))"
                ".map(g => [g.querySelector('title').textContent, g.getAttribute('class')])"))
            png = page.screenshot(path=screenshot)
        finally:
            context.close()
    return PageLoad(url, requests, console, errors, graph_text, nodes, png, render_ms)


def pixel_spread(png):
    """Standard deviation of the screenshot's grey levels (0 for a blank page)."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    return float(image.std())
