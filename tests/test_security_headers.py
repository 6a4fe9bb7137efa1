"""Issue 10, item 9: security headers on every HTTP response of the meeting server and
the standalone ASR server (the page satisfying the CSP: tests/test_browser_captions.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from captions.asr_server import create_asr_app
from common.security_headers import content_security_policy, security_headers
from meeting.api import install_captions_api
from meeting.hub import CaptionHub
from meeting.page import add_page_routes
from meeting.store import SqliteTranscriptStore
from sfu.server import create_app
from sfu.settings import Settings
from tests.fakes import ScriptedEngine

SECRET = "h" * 40


def check(headers: aiohttp.typedefs.LooseHeaders | object, *, host: str) -> None:
    got = dict(headers)  # type: ignore[call-overload]
    csp = got["Content-Security-Policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        f"connect-src 'self' wss://{host} ws://{host}",
    ):
        assert directive in csp, (directive, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert got["X-Content-Type-Options"] == "nosniff"
    assert got["X-Frame-Options"] == "DENY"
    assert got["Referrer-Policy"] == "no-referrer"
    assert got["Server"] == "sovereign-captions"  # no product version
    assert "Strict-Transport-Security" not in got  # plain HTTP here


async def test_every_response_of_the_meeting_server_has_the_headers(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, secret_override=SECRET))
    add_page_routes(app)
    install_captions_api(app, CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite")), SECRET)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        host = f"127.0.0.1:{server.port}"
        base = f"http://{host}"
        for path, status in [
            ("/", 200),
            ("/room/lobby", 200),
            ("/static/app.js", 200),
            ("/nowhere", 404),
            ("/rooms/lobby/transcript.vtt", 401),
            ("/captions", 400),  # not a WebSocket upgrade
        ]:
            async with http.get(base + path) as response:
                assert response.status == status, path
                check(response.headers, host=host)
        async with http.ws_connect(base.replace("http", "ws") + "/captions") as ws:
            pass
        assert ws._response is not None
        check(ws._response.headers, host=host)  # the 101 upgrade too
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GARBAGE\r\n\r\n")
        raw = (await reader.read(4096)).decode("latin-1")
        writer.close()
        assert " 400 " in raw.splitlines()[0] and "aiohttp" not in raw.lower()


async def test_the_standalone_asr_server_has_the_headers() -> None:
    app = create_asr_app(ScriptedEngine([], sample_rate=24_000), ["k"])
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/api/asr-streaming")
        assert response.status == 401
        check(response.headers, host=f"127.0.0.1:{server.port}")
        response.release()


def test_hsts_only_under_tls_and_a_bad_host_is_never_echoed() -> None:
    assert "max-age=" in security_headers("example.org", tls=True)["Strict-Transport-Security"]
    assert "Strict-Transport-Security" not in security_headers("example.org", tls=False)
    tls = content_security_policy("example.org:8443", tls=True)
    assert "wss://example.org:8443" in tls and "ws://" not in tls
    for hostile in ("evil.org; script-src *", "a b", "x\r\nSet-Cookie: y"):
        assert content_security_policy(hostile, tls=False) == content_security_policy(
            None, tls=False
        )


def test_the_page_has_no_inline_script_or_handler() -> None:
    import re

    from meeting.page import STATIC_DIR

    html = (STATIC_DIR / "index.html").read_text()
    assert all(tag.strip() for tag in re.findall(r"<script([^>]*)>", html))  # each has src
    assert not re.search(r"\son[a-z]+=", html) and "style=" not in html
