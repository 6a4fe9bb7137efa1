"""A PostgreSQL restart mid-meeting: live captions keep flowing, finals are acknowledged
only once written, and nothing acknowledged is lost (a real PostgreSQL, stopped and
started again)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from captions.events import CaptionEvent
from common.exceptions import StoreUnavailableError
from evaluation.services import PostgresServer
from meeting.api import CaptionsApi, CaptionsApiLimits, install_captions_api
from meeting.hub import CaptionHub, StoreRetry
from meeting.postgres_store import PostgresTranscriptStore
from meeting.protocol import parse_publish
from meeting.store import TranscriptStore
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


STOP_BOUND = 10.0  # seconds a cancelled writer may take to end (cancel_and_wait's 5 s, twice)


def writer_tasks() -> list[asyncio.Task[Any]]:
    """The publish handler's helper tasks still alive (they must not outlive it)."""
    names = {"CaptionsApi._write_finals", "CaptionsApi._send_loop"}
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ in names]  # type: ignore[union-attr]


@pytest.mark.timeout(60)
async def test_server_shutdown_while_postgres_is_down_leaves_no_writer_behind(
    own_postgres: PostgresServer,
) -> None:
    """The hang seen in a failed outage test's teardown: the server shut down (cancelling
    the publish handler mid-way through its bounded wait for the last writes) while the
    database was down; the writer, never cancelled, retried for ever and outlived the loop."""
    store = PostgresTranscriptStore(own_postgres.url, timeout_seconds=1.0)
    await store.open()
    hub = CaptionHub(store, retry=StoreRetry(first_seconds=0.1, max_seconds=0.5))
    app = web.Application()
    install_captions_api(app, hub, SECRET, limits=CaptionsApiLimits(writes_after_close_seconds=2.0))
    try:
        async with TestClient(TestServer(app)) as client:
            pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
            await pub.send_json(caption(0, "final", "before the stop", seq=1))
            assert (await receive_until(pub, "ack"))["seq"] == 1
            await asyncio.to_thread(own_postgres.stop)
            await pub.send_json(caption(1, "final", "while the database is down", seq=2))
            assert await no_ack(pub, 1.0)
            assert hub.pending_writes == 1
        deadline = time.monotonic() + STOP_BOUND
        while writer_tasks() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not writer_tasks(), f"left running after the server stopped: {writer_tasks()}"
        assert hub.pending_writes == 0
    finally:
        await hub.aclose()
        await store.aclose()


class CancelSwallowingStore:
    """A store whose append loses the first cancellation it sees, as a library can (Python
    3.11's wait_for when the cancel meets the inner result), then fails or succeeds."""

    def __init__(self, *, available: bool) -> None:
        self.available = available
        self.swallowed = 0

    async def append(self, room: str, event: CaptionEvent, **_: Any) -> bool:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.swallowed += 1  # lost: the caller's retry loop must still stop
        if not self.available:
            raise StoreUnavailableError("down")
        return True

    async def touch(self, room: str, **_: Any) -> None:
        pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("available", [False, True], ids=["store-down", "store-up"])
async def test_a_swallowed_cancellation_still_ends_the_writer(available: bool) -> None:
    """Down: persist would retry for ever; up: the writer would wait for the next final
    for ever; either way the task must end within a bound of being cancelled."""
    store = CancelSwallowingStore(available=available)
    hub = CaptionHub(cast(TranscriptStore, store), retry=StoreRetry(first_seconds=0.01))
    api = CaptionsApi(hub, SECRET)
    ws = cast(web.WebSocketResponse, SimpleNamespace(closed=True))  # no ack is sent
    writes: asyncio.Queue[Any] = asyncio.Queue()
    final = parse_publish(json.dumps(caption(1, "final", "a final", seq=1)), max_bytes=65536)
    await writes.put(("r", final))
    writer = asyncio.create_task(api._write_finals(ws, writes))
    await asyncio.sleep(0.02)  # inside the store's append
    writer.cancel()
    await asyncio.wait({writer}, timeout=STOP_BOUND)
    assert store.swallowed == 1
    assert writer.done(), "the writer outlived its cancellation"
    assert writer.cancelled()
