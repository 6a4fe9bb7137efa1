"""Chromium and a ``captions serve`` subprocess, for browser tests and the end-to-end
latency measurement: Debian's /usr/bin/chromium driven by Playwright.

Never ``playwright install``: the system browser is used through ``executable_path``.
Each participant gets its own browser process, because Chromium's fake microphone
(``--use-file-for-fake-audio-capture``) is per process, and its own fresh profile.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")


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
