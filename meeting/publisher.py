"""The acked publisher: hands a room's captions to the server over ``/captions/publish``.

A :class:`~meeting.captioner.CaptionSink` that survives reconnects (see
:class:`CaptionPublisher` for its bounds and policy), and the sidecar's source of the
room's caption state, which the server's hub owns and sends on connect and on change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import aiohttp

from captions.events import CaptionEvent
from common.aio import Backoff, cancel_and_wait
from common.exceptions import ProtocolError
from meeting.protocol import (
    Ack,
    Error,
    NotSaved,
    Publication,
    RoomState,
    SidecarStatus,
    parse_publish_reply,
    serialize_publish,
)

log = logging.getLogger(__name__)


class CaptionPublisher:
    """Hands a room's captions to the server over ``/captions/publish``, surviving reconnects.

    Bounded, with this policy: finals wait for the server's ack (at most ``max_unacked``;
    beyond that the oldest is dropped and counted in ``dropped_finals``) and are resent
    after a reconnect, and ``resend_seconds`` after the server answered ``not_saved`` (its
    store is far behind: the final went out live, storing it must wait); only the newest
    partial per ``(speaker, utterance)`` is kept, and partials are dropped while
    disconnected; only the newest status is kept.

    The server answers with acks and with the room's caption state, on connect and on
    every change: the newest is :attr:`room_state`; :meth:`next_room_state` waits for one.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        max_unacked: int = 10_000,
        reconnect_seconds: float = 1.0,
        reconnect_max_seconds: float = 10.0,
        resend_seconds: float = 5.0,
        ssl: Any = True,
    ) -> None:
        self.url = url
        self.token = token
        self.max_unacked = max_unacked
        self.reconnect_seconds = reconnect_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.resend_seconds = resend_seconds
        self._resend_at: dict[int, float] = {}  # seq -> when to send a not_saved final again
        self.ssl = ssl
        self._seq = 0
        self._unacked: OrderedDict[int, Publication] = OrderedDict()
        self._to_send: list[int] = []
        self._partials: dict[tuple[str, int], Publication] = {}
        self._status: SidecarStatus | None = None
        self._status_dirty = False
        self._work = asyncio.Event()
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.room_state: RoomState | None = None
        self.room_states = 0
        self._room_state_changed = asyncio.Event()
        self.dropped_finals = 0
        self.connected_event = asyncio.Event()

    # CaptionSink
    def caption(self, event: CaptionEvent, *, stream: str, stream_started_at: float) -> None:
        self._seq += 1
        message = Publication(event, self._seq, stream, stream_started_at)
        key = (event.speaker.id, event.utterance)
        if event.kind == "final":
            self._partials.pop(key, None)
            self._unacked[self._seq] = message
            self._to_send.append(self._seq)
            while len(self._unacked) > self.max_unacked:
                self._unacked.popitem(last=False)
                self.dropped_finals += 1
        elif self._connected:
            self._partials[key] = message
        self._work.set()

    def status(self, status: SidecarStatus) -> None:
        self._status = status
        self._status_dirty = True
        self._work.set()

    async def next_room_state(self, after: int) -> tuple[int, RoomState]:
        """The newest room state once more than ``after`` were received, and their count."""
        while self.room_states <= after or self.room_state is None:
            self._room_state_changed.clear()
            await self._room_state_changed.wait()
        return self.room_states, self.room_state

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def aclose(self, *, timeout: float = 10.0) -> None:
        """Waits (up to ``timeout``) until every final is acknowledged, then disconnects."""
        deadline = time.monotonic() + timeout
        while self._unacked and time.monotonic() < deadline and self._task is not None:
            await asyncio.sleep(0.05)
        if self._unacked:
            log.warning("%d final captions were not acknowledged by the server", self.unacked)
        self._stopping = True
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        backoff = Backoff(base=self.reconnect_seconds, cap=self.reconnect_max_seconds)
        async with aiohttp.ClientSession() as http:
            async for _ in backoff.attempts():
                if self._stopping:
                    return
                try:
                    async with http.ws_connect(
                        self.url, params={"token": self.token}, heartbeat=30.0, ssl=self.ssl
                    ) as ws:
                        backoff.reset()
                        await self._serve(ws)
                except (aiohttp.ClientError, OSError) as exc:
                    log.info("caption publisher: %s; retrying", exc)
                finally:
                    self._connected = False
                    self.connected_event.clear()
                    self._partials.clear()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._connected = True
        self.connected_event.set()
        self._to_send = list(self._unacked)  # resend whatever was not acknowledged
        self._status_dirty = self._status is not None
        reader = asyncio.create_task(self._read_acks(ws))
        waiter: asyncio.Task[Any] | None = None
        try:
            while not reader.done():
                self._work.clear()
                self._queue_resends()
                await self._send_pending(ws)
                waiter = asyncio.create_task(self._work.wait())
                await asyncio.wait(
                    {waiter, reader},
                    timeout=self.resend_seconds if self._resend_at else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
        finally:
            if waiter is not None:
                waiter.cancel()
            await cancel_and_wait(reader)

    async def _send_pending(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self._status_dirty and self._status is not None:
            self._status_dirty = False
            await ws.send_str(serialize_publish(self._status))
        while self._to_send:
            message = self._unacked.get(self._to_send.pop(0))
            if message is not None:
                await ws.send_str(serialize_publish(message))
        while self._partials:
            key = next(iter(self._partials))
            await ws.send_str(serialize_publish(self._partials.pop(key)))

    def _queue_resends(self) -> None:
        """Queues the ``not_saved`` finals whose wait is over."""
        now = time.monotonic()
        for seq, due in list(self._resend_at.items()):
            if due <= now:
                del self._resend_at[seq]
                if seq in self._unacked and seq not in self._to_send:
                    self._to_send.append(seq)

    async def _read_acks(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                reply = parse_publish_reply(msg.data)
            except ProtocolError as exc:
                log.warning("unreadable reply from the caption server: %s", exc)
                continue
            if isinstance(reply, Ack):
                self._unacked.pop(reply.seq, None)
            elif isinstance(reply, NotSaved):
                self._resend_at[reply.seq] = time.monotonic() + self.resend_seconds
                self._work.set()
            elif isinstance(reply, RoomState):
                self.room_state = reply
                self.room_states += 1
                self._room_state_changed.set()
            elif isinstance(reply, Error):
                log.warning("server refused a caption message: %s", reply.message)
