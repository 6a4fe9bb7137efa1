"""Real Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright.

Never ``playwright install``: the system browser is used through ``executable_path``.
Each participant gets its own browser process, because Chromium's fake microphone
(``--use-file-for-fake-audio-capture``) is per process, and its own fresh profile.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
STATIC = ROOT / "sfu" / "static"
SCREENSHOTS = ROOT / ".cache" / "screenshots"
SERVE = (sys.executable, "-m", "cli.main", "serve")

BASE_FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    # Keep timers and media running in pages nobody looks at (every page is headless).
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def browser_page(
    playwright: Any,
    *,
    fake_audio: Path | None = None,
    locale: str = "en-US",
    reduced_motion: str = "no-preference",
    viewport: tuple[int, int] = (1280, 720),
    extra_args: list[str] | None = None,
) -> Iterator[Any]:
    """One Chromium process with a fresh profile; yields its page.

    With ``fake_audio`` (a WAV, looped by Chromium) the page gets a fake microphone and
    camera and media permission is granted without a prompt.
    """
    args = list(BASE_FLAGS)
    if fake_audio is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_audio}",
        ]
    args += extra_args or []
    profile = tempfile.mkdtemp(prefix="captions-chromium-")
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=str(CHROMIUM),
        headless=True,
        args=args,
        locale=locale,
        reduced_motion=reduced_motion,
        viewport={"width": viewport[0], "height": viewport[1]},
    )
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(20_000)
        yield page
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves sfu/static the way the server does: the page at / and /room/{room}."""

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


@contextmanager
def captions_server(
    data_dir: Path, secret: str, *, extra_args: list[str] | None = None
) -> Iterator[str]:
    """``captions serve`` as a subprocess on a free port (whisper engine); yields its base URL."""
    port = free_port()
    env = dict(os.environ, CAPTIONS_SECRET=secret)
    log = (data_dir / "serve.log").open("wb")
    command = [*SERVE, "--port", str(port), "--data-dir", str(data_dir), *(extra_args or [])]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"captions serve exited: {(data_dir / 'serve.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/static/index.html", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("captions serve did not start within 90 s") from None
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass
class InProcessServer:
    """A server running in a thread of this process (see :func:`sfu_server`)."""

    url: str
    loop: asyncio.AbstractEventLoop
    hub: Any = None
    """The captions hub, when the captions API is installed."""

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Runs ``function(*args)`` in the server's event loop (its objects are not thread-safe)."""
        self.loop.call_soon_threadsafe(function, *args)


@contextmanager
def sfu_server(secret: str, data_dir: Path, *, captions: bool = False) -> Iterator[InProcessServer]:
    """The SFU and the page (``sfu.server.create_app``) in a thread, without a speech engine.

    With ``captions``, the captions API (``/captions``, transcripts) is installed too, with
    no sidecar: the test publishes caption events and room status through ``hub``.
    For tests of joining, media, meeting controls and the page's caption handling.
    """
    from aiohttp import web

    from sfu.server import create_app
    from sfu.settings import Settings

    port = free_port()
    settings = Settings(port=port, data_dir=data_dir, secret_override=secret)
    loop = asyncio.new_event_loop()
    app = create_app(settings)
    hub = None
    if captions:
        from captions.caption_hub import CaptionHub
        from captions.captions_api import install_captions_api
        from captions.store import TranscriptStore

        hub = CaptionHub(TranscriptStore(data_dir / "transcripts.sqlite"))
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
