"""CaptionPublisher: finals reach the store even when the server is down for a while."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from captions.events import CaptionEvent, Speaker, Word
from meeting.api import install_captions_api
from meeting.hub import CaptionHub
from meeting.publisher import CaptionPublisher
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


async def test_a_full_disk_keeps_captions_live_and_saving_resumes_by_itself(
    tmp_path: Path,
) -> None:
    """Issue 10, item 4: a full store must not stop live captions, must be shown to the
    host (room_state.saving), logged once, and nothing acknowledged may be lost; with the
    server's write queue full, finals are answered not_saved and resent later."""
    import json
    import logging

    import aiohttp

    from meeting.api import CaptionsApiLimits
    from meeting.hub import StoreRetry
    from meeting.protocol import SidecarStatus
    from tests.test_store import fill_up, make_room

    port = free_port()
    store = SqliteTranscriptStore(tmp_path / "t.sqlite")
    hub = CaptionHub(store, retry=StoreRetry(first_seconds=0.05, max_seconds=0.2))
    app = web.Application()
    install_captions_api(app, hub, SECRET, limits=CaptionsApiLimits(max_pending_writes=3))
    server = web.AppRunner(app)
    await server.setup()
    await web.TCPSite(server, "127.0.0.1", port).start()
    publisher = CaptionPublisher(
        f"ws://127.0.0.1:{port}/captions/publish",
        mint_token(SECRET, Grants.captioner_for("r")),
        reconnect_seconds=0.1,
        resend_seconds=0.3,
    )
    host = mint_token(SECRET, Grants.for_role("r", "Host", "host"))
    errors: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = errors.append  # type: ignore[method-assign]
    handler.setLevel(logging.ERROR)
    logging.getLogger("meeting.hub").addHandler(handler)
    publisher.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}/captions?token={host}") as viewer,
        ):
            await until(lambda: publisher.connected_event.is_set())
            fill_up(store)
            publisher.status(SidecarStatus(participants=2))  # a store write too
            texts = [f"final number {i} " + "padding " * 300 for i in range(12)]
            for i, text in enumerate(texts):
                publisher.caption(event(i, "final", text), stream="s", stream_started_at=1.0)
            seen: list[str] = []
            saving_off = False
            async with asyncio.timeout(10):
                while len(seen) < len(texts) or not saving_off:
                    data = json.loads((await viewer.receive()).data)
                    if data["type"] == "caption":
                        seen.append(data["text"])
                    saving_off |= data["type"] == "room_state" and data["saving"] is False
            assert seen == [t.strip() for t in texts]  # all live, in order, despite the store
            await asyncio.sleep(1.0)  # many failed attempts and resends meanwhile
            assert publisher.unacked == len(texts) and await store.count("r") == 0
            assert len(errors) == 1, [r.getMessage() for r in errors]  # logged once
            make_room(store)  # space is back: everything is saved and acknowledged
            await until(lambda: publisher.unacked == 0)
            assert await store.count("r") == len(texts) and hub.saving
            async with asyncio.timeout(10):
                while True:  # the viewer hears that saving is back, and no duplicate
                    data = json.loads((await viewer.receive()).data)
                    assert data["type"] != "caption"
                    if data["type"] == "room_state" and data["saving"] is True:
                        break
    finally:
        logging.getLogger("meeting.hub").removeHandler(handler)
        await publisher.aclose(timeout=1)
        await server.cleanup()
