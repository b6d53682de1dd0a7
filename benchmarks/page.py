"""The static page (webapp/web, onnxruntime-web) driven in headless Chromium, as a visitor would:
build the site for a model, serve it, fill the form, press Generate, read what the page wrote
and the timing it measured itself (window.chargptLastRun).

Needs node with webapp/web/node_modules (npm ci --ignore-scripts), Debian's chromium and the
playwright package; PageUnavailable says which is missing.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / "webapp" / "web"
CHROMIUM = "/usr/bin/chromium"
# As the project runs it everywhere (the tests too): without the background-networking flags, a
# closed network refuses its connections, many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY = "!document.getElementById('generate').disabled"


class PageUnavailable(RuntimeError):
    """What the page needs and this machine lacks, in one sentence."""


def build_site(model: Path, out: Path) -> Path:
    """`node build.mjs MODEL --out OUT`: the static site for `model`."""
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        raise PageUnavailable(
            "the static page needs node and webapp/web/node_modules (cd webapp/web && npm ci --ignore-scripts)."
        )
    result = subprocess.run(
        [node, "build.mjs", str(Path(model).resolve()), "--out", str(Path(out).resolve())],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise PageUnavailable(f"building the static page failed: {result.stderr.strip()[:300]}")
    return out


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per file served
        pass


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Any static server will do; this is Python's, on a free port of 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


@dataclass
class PageRun:
    text: str  # the continuation, without the prompt
    chars: int
    seconds: float  # from the click to the last character, as the page measured it
    first_ms: float


class StaticPage:
    """A loaded static page in headless Chromium: `generate` as a visitor (the form, the button)."""

    def __init__(self, page):
        self.page = page

    def generate(
        self,
        prompt: str,
        chars: int,
        temperature: float = 0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        timeout_s: float = 300,
    ) -> PageRun:
        page = self.page
        page.evaluate("window.chargptLastRun = null")
        page.fill("#prompt", prompt)
        for field, value in (
            ("#length", chars),
            ("#temperature", temperature),
            ("#top-k", top_k),
            ("#top-p", top_p),
            ("#seed", seed),
        ):
            page.fill(field, str(value))
        page.click("#generate")
        page.wait_for_function(
            "window.chargptLastRun !== null || document.getElementById('status').classList.contains('error')",
            timeout=timeout_s * 1000,
        )
        run = page.evaluate("window.chargptLastRun")
        if run is None:
            raise RuntimeError(f"the page refused: {page.locator('#status').inner_text()}")
        return PageRun(run["text"], run["chars"], run["seconds"], run["firstMs"])


@contextlib.contextmanager
def static_page(model: Path, workdir: Path, viewport=(1100, 900)) -> Iterator[StaticPage]:
    """The site for `model` built in `workdir`, served, and open in headless Chromium, ready."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PageUnavailable("the static page needs the playwright package (pip install playwright).") from None
    if not Path(CHROMIUM).exists():
        raise PageUnavailable(f"the static page needs Debian's chromium at {CHROMIUM} (apt-get install chromium).")
    site = build_site(model, workdir / "site")
    with static_server(site) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function(READY, timeout=120_000)
            yield StaticPage(page)
        finally:
            browser.close()
        if errors:
            raise RuntimeError(f"the page raised: {json.dumps(errors)[:300]}")
