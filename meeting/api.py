"""aiohttp routes of the captions API (docs/captions-api.md).

- ``GET /captions`` (WebSocket): live captions of the token's room, for any participant;
- ``GET /captions/publish`` (WebSocket): the captioning sidecar hands its events over;
- ``GET /rooms/{room}/transcript.{vtt,srt,txt,json}`` and ``DELETE /rooms/{room}/transcript``:
  host-only transcript download and deletion.

Every route verifies a room token (``sfu.tokens``). Per-client fan-out and its
slow-client policy live in :mod:`meeting.hub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from captions.formats import MEDIA_TYPES, render
from common.aio import bounded, cancel_and_wait, cancel_requests, raise_if_cancelled_since
from common.exceptions import (
    AuthError,
    ForbiddenError,
    ProtocolError,
    RoomFullError,
    StoreUnavailableError,
    TokenMissingError,
    UnknownFormatError,
)
from meeting.hub import CaptionHub, Subscription
from meeting.protocol import (
    Ack,
    Auth,
    CloseCode,
    Error,
    Hello,
    NotSaved,
    Person,
    Ping,
    Pong,
    Publication,
    PublishReply,
    ServerMessage,
    SetCaptions,
    close_code_for,
    parse_client,
    parse_publish,
    serialize_publish_reply,
    serialize_server,
)
from sfu.signalling import error_code
from sfu.tokens import Grants, require_host, verify_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionsApiLimits:
    max_client_message_bytes: int = 4096
    max_publish_message_bytes: int = 64 * 1024
    auth_timeout_seconds: float = 10.0
    close_timeout_seconds: float = 2.0
    # A client whose socket takes nothing for this long is dropped (see _send_loop).
    send_timeout_seconds: float = 10.0
    max_sockets_per_room: int = 500
    """/captions sockets of one room; beyond, 4429 (room_full)."""
    max_pending_writes: int = 1000
    """Finals of one publisher waiting for the store; beyond, a final is still fanned out
    live but answered ``not_saved`` (the publisher keeps it and sends it again later),
    so a long outage of the store (a full disk) never stops live captions."""
    writes_after_close_seconds: float = 30.0
    """How long finals still pending when a publisher disconnects keep being retried."""


HUB_KEY = web.AppKey("captions_hub", CaptionHub)


class CaptionsApi:
    """The routes, bound to one hub and one token secret."""

    def __init__(
        self,
        hub: CaptionHub,
        secret: str,
        *,
        limits: CaptionsApiLimits | None = None,
        retention_hours: float = 24.0,
        purge_interval_seconds: float = 600.0,
    ) -> None:
        self.hub = hub
        self.secret = secret
        self.limits = limits or CaptionsApiLimits()
        self.retention_hours = retention_hours
        self.purge_interval_seconds = purge_interval_seconds
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self, app: web.Application) -> None:
        app[HUB_KEY] = self.hub
        app.router.add_get("/captions", self.captions_socket)
        app.router.add_get("/captions/publish", self.publish_socket)
        app.router.add_get(r"/rooms/{room}/transcript.{fmt:[a-z]+}", self.download)
        app.router.add_delete("/rooms/{room}/transcript", self.delete)
        app.on_shutdown.append(self._close_sockets)
        app.cleanup_ctx.append(self._retention)

    # -- /captions --------------------------------------------------------------------

    async def captions_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.max_client_message_bytes,
            heartbeat=30.0,
            timeout=self.limits.close_timeout_seconds,
        )
        await ws.prepare(request)
        grants = await self._authenticate(ws, request, first_message=True)
        if grants is None:
            return ws
        if self.hub.subscribers(grants.room) >= self.limits.max_sockets_per_room:
            await self._refuse(ws, RoomFullError("too many caption sockets in this room"))
            return ws
        hello = Hello(
            room=grants.room,
            identity=grants.identity,
            role=grants.role,
            max_message_bytes=self.limits.max_client_message_bytes,
            max_pending_finals=self.hub.max_pending_finals,
        )
        sub = await self.hub.subscribe(grants.room, hello)
        sender = asyncio.create_task(self._send_loop(ws, sub))
        sub.on_overflow = lambda: self._spawn(self._drop_slow(ws, sub))
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    reply = self._client_message(grants, msg.data)
                    if reply is not None:
                        sub.put(reply)
        finally:
            self._sockets.discard(ws)
            self.hub.unsubscribe(sub)
            sender.cancel()
            await asyncio.wait({sender}, timeout=self.limits.close_timeout_seconds)
            if not sender.done():
                # Stuck in a send to a peer that is gone (aiohttp lets the drain finish
                # before the cancel lands, and nothing would wake it): free it.
                _abort(ws)
            await cancel_and_wait(sender)
        return ws

    def _client_message(self, grants: Grants, data: str | bytes) -> ServerMessage | None:
        """Acts on one page message: a ping, or a host's change of the room's captions.

        The reply, if any: a ``pong``, or an ``error`` (malformed, or ``forbidden`` for a
        host action by anyone else; nothing changes then).
        """
        try:
            message = parse_client(data, max_bytes=self.limits.max_client_message_bytes)
        except ProtocolError as exc:
            return Error(error_code(exc), str(exc)[:200])
        if isinstance(message, Ping):
            return Pong(message.id)
        if isinstance(message, Auth):
            return Error("malformed", "already authenticated")
        by = Person(grants.identity, grants.display_name)
        try:
            if isinstance(message, SetCaptions):
                require_host(grants, "turn captions on or off")
                self.hub.set_captions(grants.room, message.enabled, by=by)
            else:
                require_host(grants, "set the language")
                self.hub.set_language(grants.room, message.language, by=by)
        except AuthError as exc:
            return Error(exc.code, str(exc))
        return None

    async def _send_loop(self, ws: web.WebSocketResponse, sub: Subscription) -> None:
        # Every send has a deadline: aiohttp's writer waits (drains) while the kernel's
        # send buffer (up to net.ipv4.tcp_wmem's max, 4 MiB here) and the transport's
        # are full, so a peer that stopped reading would otherwise hold this task forever.
        with contextlib.suppress(ConnectionError):
            while (message := await sub.next()) is not None:
                try:
                    await asyncio.wait_for(
                        ws.send_str(serialize_server(message)), self.limits.send_timeout_seconds
                    )
                except TimeoutError:
                    log.info("dropping a /captions client of %s: a send took too long", sub.room)
                    self.hub.unsubscribe(sub)
                    _abort(ws)
                    return

    async def _drop_slow(self, ws: web.WebSocketResponse, sub: Subscription) -> None:
        # A separate task: the sender may be stuck waiting for the peer to read.
        log.info("closing a /captions client of %s: too slow", sub.room)
        self.hub.unsubscribe(sub)  # it gets nothing more from now on
        if _backed_up(ws):
            # The peer is not reading what it already has: a close frame would only
            # queue behind it and the socket would linger for close_timeout_seconds.
            _abort(ws)
            return
        await self._close(ws, CloseCode.TOO_SLOW, "too_slow")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        """Closes, or aborts the connection when the peer does not take the close frame."""
        try:
            await asyncio.wait_for(
                ws.close(code=code, message=reason.encode()),
                self.limits.close_timeout_seconds,
            )
        except (TimeoutError, ConnectionError):
            _abort(ws)

    async def _authenticate(
        self, ws: web.WebSocketResponse, request: web.Request, *, first_message: bool
    ) -> Grants | None:
        token = request.query.get("token")
        try:
            if token is None and first_message:
                token = await self._auth_message(ws)
            return verify_token(self.secret, token, room=request.query.get("room"))
        except AuthError as exc:
            await self._refuse(ws, exc)
            return None

    async def _auth_message(self, ws: web.WebSocketResponse) -> str:
        try:
            # One deadline for the whole wait (not receive(timeout=...): aiohttp restarts
            # that on every ping it answers, so a pinging client would never time out).
            async with asyncio.timeout(self.limits.auth_timeout_seconds):
                msg = await ws.receive()
        except TimeoutError:
            await self._close(ws, CloseCode.TIMEOUT, "token_missing")
            raise TokenMissingError("no auth message within the time limit") from None
        message = None
        if msg.type == WSMsgType.TEXT:  # not a close, an error (oversize) or binary
            with contextlib.suppress(ProtocolError):
                message = parse_client(msg.data, max_bytes=self.limits.max_client_message_bytes)
        if not isinstance(message, Auth):
            raise TokenMissingError("the first message must be an auth message")
        return message.token

    async def _refuse(self, ws: web.WebSocketResponse, exc: AuthError) -> None:
        if ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await ws.send_str(serialize_server(Error(exc.code, str(exc))))
        await self._close(ws, close_code_for(exc.code), exc.code)

    # -- /captions/publish ------------------------------------------------------------

    async def publish_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.max_publish_message_bytes, heartbeat=30.0
        )
        await ws.prepare(request)
        grants = await self._authenticate(ws, request, first_message=False)
        if grants is None:
            return ws
        if not grants.captioner:
            await self._refuse(ws, ForbiddenError("only the captioner may publish captions"))
            return ws
        room = grants.room
        # The room's state (room_state, as pages get it) reaches the captioner from its
        # own sender task; acks are sent inline (aiohttp serialises concurrent sends).
        sub = self.hub.attach_captioner(room)
        sender = asyncio.create_task(self._send_loop(ws, sub))
        self._sockets.add(ws)
        writes: asyncio.Queue[tuple[str, Publication]] = asyncio.Queue(
            self.limits.max_pending_writes
        )
        writer = asyncio.create_task(self._write_finals(ws, writes))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                reply = self._accept_publication(room, msg.data)
                if isinstance(reply, Publication):
                    try:
                        writes.put_nowait((room, reply))
                    except asyncio.QueueFull:  # the store is far behind: live only, for now
                        await ws.send_str(serialize_publish_reply(NotSaved(reply.seq)))
                elif reply is not None:
                    await ws.send_str(serialize_publish_reply(reply))
        finally:
            self._sockets.discard(ws)
            self.hub.unsubscribe(sub)
            try:
                # Finals already broadcast are still stored (the publisher may never come back).
                if not await bounded(
                    writes.join(),
                    timeout=self.limits.writes_after_close_seconds,
                    what=f"storing the last finals of {room}",
                ):
                    log.warning("%d finals of %s unstored at disconnect", writes.qsize(), room)
            finally:
                # Also when this handler is cancelled mid-wait (server shutdown): a writer
                # left behind retries a down database for ever and outlives the loop.
                await cancel_and_wait(writer)
                await cancel_and_wait(sender)
        return ws

    async def _write_finals(
        self, ws: web.WebSocketResponse, writes: asyncio.Queue[tuple[str, Publication]]
    ) -> None:
        """Stores each final (retrying), then acknowledges it, in order."""
        cancels = cancel_requests()
        while True:
            raise_if_cancelled_since(cancels)
            room, final = await writes.get()
            await self.hub.persist(
                room, final.event, stream=final.stream, stream_started_at=final.stream_started_at
            )
            writes.task_done()
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(serialize_publish_reply(Ack(final.seq)))

    def _accept_publication(self, room: str, text: str) -> PublishReply | Publication | None:
        """Hands one sidecar message to the hub: an error reply, or a final to store (and
        acknowledge once stored), or None."""
        try:
            message = parse_publish(text, max_bytes=self.limits.max_publish_message_bytes)
        except ProtocolError as exc:
            return Error(error_code(exc), str(exc)[:200])
        if not isinstance(message, Publication):
            self.hub.update_status(room, message)
            return None
        self.hub.publish(
            room,
            message.event,
            stream=message.stream,
            stream_started_at=message.stream_started_at,
        )
        return message if message.event.kind == "final" else None

    # -- transcripts ------------------------------------------------------------------

    def _host_of(self, request: web.Request) -> Grants:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        token = token or request.query.get("token")
        grants = verify_token(self.secret, token, room=request.match_info["room"])
        require_host(grants, "access the transcript")
        return grants

    async def download(self, request: web.Request) -> web.Response:
        fmt = request.match_info["fmt"]
        try:
            self._host_of(request)
            if fmt not in MEDIA_TYPES:
                raise UnknownFormatError(fmt)
        except AuthError as exc:
            return web.json_response({"error": exc.code}, status=exc.http_status)
        except UnknownFormatError:
            return web.json_response({"error": "unknown_format"}, status=404)
        room = request.match_info["room"]
        try:
            events = await self.hub.store.transcript(room)
        except StoreUnavailableError as exc:
            self.hub.store_failures += 1
            log.warning("transcript of %s unavailable: %s", room, exc)
            return web.json_response({"error": "store_unavailable"}, status=503)
        body = render(fmt, events)
        return web.Response(
            text=body,
            content_type=MEDIA_TYPES[fmt].split(";")[0],
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{room}.{fmt}"'},
        )

    async def delete(self, request: web.Request) -> web.Response:
        try:
            grants = self._host_of(request)
        except AuthError as exc:
            return web.json_response({"error": exc.code}, status=exc.http_status)
        try:
            await self.hub.delete_transcript(
                grants.room, Person(grants.identity, grants.display_name)
            )
        except StoreUnavailableError as exc:
            self.hub.store_failures += 1
            log.warning("deleting the transcript of %s failed: %s", grants.room, exc)
            return web.json_response({"error": "store_unavailable"}, status=503)
        return web.Response(status=204)

    # -- lifecycle --------------------------------------------------------------------

    async def _close_sockets(self, app: web.Application) -> None:
        await asyncio.gather(
            *(self._close(ws, CloseCode.GOING_AWAY, "shutdown") for ws in list(self._sockets)),
            return_exceptions=True,
        )

    async def _retention(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._purge_forever())
        yield
        await cancel_and_wait(task)

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.retention_pass()
            except StoreUnavailableError as exc:
                self.hub.store_failures += 1
                log.warning("retention pass failed: %s", exc)
            await asyncio.sleep(self.purge_interval_seconds)

    async def retention_pass(self) -> list[str]:
        """Refreshes this node's live rooms (so that other nodes never purge them), then
        deletes expired transcripts; returns the rooms purged."""
        now = time.time()
        for room in self.hub.live_rooms():
            await self.hub.store.touch(room, now=now)
        purged = await self.hub.store.purge_expired(self.retention_hours, now=now)
        if purged:
            log.info("retention: deleted transcripts of %s", ", ".join(purged))
        return purged


def _transport(ws: web.WebSocketResponse) -> asyncio.Transport | None:
    request = ws._req  # aiohttp offers no public transport or abort of a WebSocketResponse
    transport = request.transport if request is not None else None
    return transport if isinstance(transport, asyncio.Transport) else None


def _abort(ws: web.WebSocketResponse) -> None:
    transport = _transport(ws)
    if transport is not None:
        transport.abort()


def _backed_up(ws: web.WebSocketResponse) -> bool:
    """Whether data waits in the transport because the kernel's send buffer is full."""
    transport = _transport(ws)
    return transport is not None and transport.get_write_buffer_size() > 0


def install_captions_api(
    app: web.Application, hub: CaptionHub, secret: str, **options: Any
) -> CaptionsApi:
    """Adds the captions routes to ``app`` (the SFU server's, in ``captions serve``)."""
    api = CaptionsApi(hub, secret, **options)
    api.install(app)
    return api
