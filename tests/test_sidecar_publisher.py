"""CaptionPublisher: finals reach the store even when the server is down for a while."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from captions.events import CaptionEvent, Speaker, Word
from meeting.api import install_captions_api
from meeting.hub import CaptionHub
from meeting.sidecar import CaptionPublisher
from meeting.store import SqliteTranscriptStore
from sfu.tokens import Grants, mint_token
from tests.browser import free_port

SECRET = "p" * 40


def event(utterance: int, kind: str, text: str) -> CaptionEvent:
    words = tuple(Word(t, i, i + 0.5, kind == "final") for i, t in enumerate(text.split()))
    return CaptionEvent(Speaker("alice", "Alice"), utterance, 1, kind, words, time.time())


async def serve(hub: CaptionHub, port: int) -> web.AppRunner:
    app = web.Application()
    install_captions_api(app, hub, SECRET)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_finals_made_while_the_server_is_down_are_resent_once(tmp_path: Path) -> None:
    port = free_port()
    token = mint_token(SECRET, Grants.captioner_for("r"))
    publisher = CaptionPublisher(
        f"ws://127.0.0.1:{port}/captions/publish", token, reconnect_seconds=0.1
    )
    publisher.start()
    server: web.AppRunner | None = None
    try:
        publisher.caption(event(0, "partial", "lost partial"), stream="s", stream_started_at=10.0)
        publisher.caption(event(0, "final", "first words"), stream="s", stream_started_at=10.0)
        await asyncio.sleep(0.3)
        assert publisher.unacked == 1  # nobody to acknowledge it yet

        hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"))
        server = await serve(hub, port)
        await until(lambda: publisher.unacked == 0)
        assert [e.text for e in await hub.store.transcript("r")] == ["first words"]

        # The server goes away and comes back: new finals are delivered, old ones not doubled.
        await server.cleanup()
        server = None
        publisher.caption(event(1, "final", "second words"), stream="s", stream_started_at=10.0)
        await asyncio.sleep(0.3)
        server = await serve(hub, port)
        await until(lambda: publisher.unacked == 0)
    finally:  # also when an assertion failed: no task or listener outlives the test
        await publisher.aclose(timeout=1.0)
        if server is not None:
            await server.cleanup()
    assert [e.text for e in await hub.store.transcript("r")] == ["first words", "second words"]
