"""A PostgreSQL restart mid-meeting: live captions keep flowing, finals are acknowledged
only once written, and nothing acknowledged is lost (a real PostgreSQL, stopped and
started again)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from evaluation.services import PostgresServer
from meeting.api import CaptionsApiLimits, install_captions_api
from meeting.hub import CaptionHub, StoreRetry
from meeting.postgres_store import PostgresTranscriptStore
from tests.conftest import require_services
from tests.test_serve_captions_api import SECRET, caption, receive_until, token


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own: it is stopped mid-test."""
    require_services("postgresql")
    with PostgresServer() as server:
        yield server


async def no_ack(ws: Any, seconds: float) -> bool:
    """True when no ack arrives within ``seconds`` (room states may)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            return True
        assert '"ack"' not in str(msg.data), f"acknowledged while not stored: {msg}"
    return True


@pytest.mark.timeout(120)
async def test_postgres_restart_mid_meeting_loses_nothing_acknowledged(
    own_postgres: PostgresServer,
) -> None:
    store = PostgresTranscriptStore(own_postgres.url, timeout_seconds=1.0)
    await store.open()
    hub = CaptionHub(store, retry=StoreRetry(first_seconds=0.1, max_seconds=0.5))
    app = web.Application()
    limits = CaptionsApiLimits(writes_after_close_seconds=2.0)
    install_captions_api(app, hub, SECRET, limits=limits)
    try:
        async with TestClient(TestServer(app)) as client:
            pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
            viewer = await client.ws_connect(f"/captions?token={token()}")
            await receive_until(viewer, "room_state")
            await pub.send_json(caption(0, "final", "before the restart", seq=1))
            assert (await receive_until(pub, "ack"))["seq"] == 1
            assert (await receive_until(viewer, "caption"))["text"] == "before the restart"

            await asyncio.to_thread(own_postgres.stop)
            await pub.send_json(caption(1, "final", "while the database is down", seq=2))
            await pub.send_json(caption(2, "partial", "still live", seq=3))
            # Live captions do not wait for the database...
            assert (await receive_until(viewer, "caption"))["text"] == "while the database is down"
            assert (await receive_until(viewer, "caption"))["text"] == "still live"
            # ...but the final is not acknowledged until it is written.
            assert await no_ack(pub, 1.5)
            assert hub.store_failures > 0 and hub.pending_writes == 1

            restarted = time.monotonic()
            await asyncio.to_thread(own_postgres.start)
            ack = await asyncio.wait_for(receive_until(pub, "ack"), 30)
            assert ack["seq"] == 2
            print(f"final acknowledged {time.monotonic() - restarted:.2f} s after the restart")
            texts = [e.text for e in await store.transcript("r")]
            assert texts == ["before the restart", "while the database is down"]
            # The download works again too (503 while down is covered by the store's errors).
            resp = await client.get(f"/rooms/r/transcript.txt?token={token('host')}")
            assert resp.status == 200 and "while the database is down" in await resp.text()
            await pub.close()
            await viewer.close()
    finally:
        if not (own_postgres.data / "postmaster.pid").exists():
            await asyncio.to_thread(own_postgres.start)  # a failed test leaves no hang behind
        await hub.aclose()
        await store.aclose()
