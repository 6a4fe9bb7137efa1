"""Real Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright.

Never ``playwright install``: the system browser is used through ``executable_path``.
Each participant gets its own browser process, because Chromium's fake microphone
(``--use-file-for-fake-audio-capture``) is per process, and its own fresh profile.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evaluation.browser import CHROMIUM, browser_page, captions_server, free_port

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "meeting" / "static"
SCREENSHOTS = ROOT / ".cache" / "screenshots"


def require_chromium() -> None:
    """Skips visibly when the browser or Playwright is missing (make system-deps installs it)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (Debian packages chromium, chromium-driver)")
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")


@contextmanager
def chromium_playwright() -> Iterator[Any]:
    """Playwright's sync API, after checking that the system Chromium is there."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves meeting/static the way the server does: the page at / and /room/{room}."""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path.startswith("/static/"):
            return str(STATIC / path.removeprefix("/static/"))
        return str(STATIC / "index.html")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_server() -> Iterator[str]:
    """The page's files alone (no SFU), for tests of the page's own logic."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StaticHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class InProcessServer:
    """A server running in a thread of this process (see :func:`sfu_server`)."""

    url: str
    loop: asyncio.AbstractEventLoop
    hub: Any = None
    """The captions hub, when the captions API is installed."""
    _tasks: set[asyncio.Future[Any]] = field(default_factory=set)

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Runs ``function(*args)`` in the server's event loop (its objects are not thread-safe);
        a coroutine it returns is run there as a task."""

        def run() -> None:
            result = function(*args)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self.loop.call_soon_threadsafe(run)


@contextmanager
def sfu_server(
    secret: str, data_dir: Path, *, captions: bool = False, **settings: Any
) -> Iterator[InProcessServer]:
    """The SFU and the page (``sfu.server.create_app``) in a thread, without a speech engine.

    With ``captions``, the captions API (``/captions``, transcripts) is installed too, with
    no sidecar: the test publishes caption events and room status through ``hub``.
    For tests of joining, media, meeting controls and the page's caption handling.
    ``settings`` override the SFU's (``sfu.settings.Settings``).
    """
    from aiohttp import web

    from meeting.page import add_page_routes
    from sfu.server import create_app
    from sfu.settings import Settings

    port = free_port()
    loop = asyncio.new_event_loop()
    app = create_app(Settings(port=port, data_dir=data_dir, secret_override=secret, **settings))
    add_page_routes(app)
    hub = None
    if captions:
        from meeting.api import install_captions_api
        from meeting.hub import CaptionHub
        from meeting.store import SqliteTranscriptStore

        hub = CaptionHub(SqliteTranscriptStore(data_dir / "transcripts.sqlite"))
        install_captions_api(app, hub, secret)
    runner = web.AppRunner(app)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not started.wait(20):
        raise RuntimeError("the SFU did not start")
    try:
        yield InProcessServer(f"http://127.0.0.1:{port}", loop, hub)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=20)


__all__ = [
    "CHROMIUM",
    "SCREENSHOTS",
    "InProcessServer",
    "browser_page",
    "captions_server",
    "chromium_playwright",
    "free_port",
    "require_chromium",
    "sfu_server",
    "static_server",
]
