"""Issue 10, item 10: connection caps (per address, in total), a header-read timeout, and
sockets per room; each answered with a clear HTTP status or close code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from meeting.api import CaptionsApiLimits, install_captions_api
from meeting.hub import CaptionHub
from meeting.store import SqliteTranscriptStore
from sfu.connections import ConnectionGuard, ConnectionLimits, GuardedTCPSite
from sfu.tokens import Grants, mint_token

SECRET = "g" * 40


@asynccontextmanager
async def guarded(**limits: Any) -> AsyncIterator[tuple[int, ConnectionGuard]]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    guard = ConnectionGuard(ConnectionLimits(**limits))
    site = GuardedTCPSite(runner, "127.0.0.1", 0, guard=guard)
    await site.start()
    try:
        yield site.port, guard
    finally:
        await runner.cleanup()


async def reply_of(reader: asyncio.StreamReader, timeout: float = 5.0) -> str:
    data = await asyncio.wait_for(reader.read(4096), timeout)
    return data.decode("latin-1").split("\r\n", 1)[0]


async def get(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as r:
        return await r.text()


async def test_slowloris_connections_are_closed_at_the_header_timeout() -> None:
    async with guarded(header_timeout_seconds=0.5) as (port, guard):
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        started = time.monotonic()
        for _, writer in conns:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        for reader, _ in conns:
            assert await reply_of(reader) == "HTTP/1.1 408 Request Timeout"
            assert await reader.read() == b""  # closed
        assert time.monotonic() - started < 3
        assert guard.timed_out == 50 and guard.total == 0
        assert await get(port) == "hello"  # a well-behaved client is served
        for _, writer in conns:
            writer.close()


async def test_connections_are_capped_per_address_and_in_total() -> None:
    async with guarded(max_per_address=3, max_total=100) as (port, guard):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reply_of(reader) == "HTTP/1.1 429 Too Many Requests"
        writer.close()
        for _, w in held:
            w.close()
        async with asyncio.timeout(5):
            while guard.total:
                await asyncio.sleep(0.02)
        assert await get(port) == "hello"
    async with guarded(max_per_address=100, max_total=2) as (port, guard):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reply_of(reader) == "HTTP/1.1 503 Service Unavailable"
        writer.close()
        for _, w in held:
            w.close()


async def test_caption_sockets_per_room_are_capped(tmp_path: Path) -> None:
    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"))
    app = web.Application()
    install_captions_api(app, hub, SECRET, limits=CaptionsApiLimits(max_sockets_per_room=2))
    token = mint_token(SECRET, Grants.for_role("r", "Viewer", "guest"))
    async with TestClient(TestServer(app)) as client:
        first = await client.ws_connect(f"/captions?token={token}")
        second = await client.ws_connect(f"/captions?token={token}")
        for ws in (first, second):
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
        third = await client.ws_connect(f"/captions?token={token}")
        refusal = await third.receive_json(timeout=5)
        assert refusal["type"] == "error" and refusal["code"] == "room_full"
        await third.receive(timeout=5)
        assert third.close_code == 4429
        other = mint_token(SECRET, Grants.for_role("elsewhere", "Viewer", "guest"))
        fourth = await client.ws_connect(f"/captions?token={other}")  # other rooms unaffected
        assert (await fourth.receive_json(timeout=5))["type"] == "hello"
        for ws in (first, second, fourth):
            await ws.close()


async def test_the_meeting_server_applies_the_connection_limits(tmp_path: Path) -> None:
    from captions.runtime import EngineRunner
    from meeting.app import Meeting
    from sfu.settings import Settings
    from tests.fakes import ScriptedEngine

    settings = Settings(
        port=0,
        data_dir=tmp_path,
        secret_override=SECRET,
        header_timeout_seconds=0.5,
        max_connections_per_address=4,
    )
    meeting = Meeting(settings, EngineRunner(ScriptedEngine()))
    await meeting.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", meeting.port)
        writer.write(b"GET / HTTP/1.1\r\n")
        assert await reply_of(reader) == "HTTP/1.1 408 Request Timeout"
        writer.close()
        async with asyncio.timeout(5):
            while meeting.connections.total:
                await asyncio.sleep(0.02)
        held = [await asyncio.open_connection("127.0.0.1", meeting.port) for _ in range(4)]
        reader, writer = await asyncio.open_connection("127.0.0.1", meeting.port)
        assert await reply_of(reader) == "HTTP/1.1 429 Too Many Requests"
        for _, w in (*held, (reader, writer)):
            w.close()
    finally:
        await meeting.stop()
