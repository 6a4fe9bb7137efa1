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
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from captions.events import CaptionEvent
from captions.formats import MEDIA_TYPES, render
from common.aio import cancel_and_wait
from common.exceptions import (
    AuthError,
    ForbiddenError,
    MalformedMessageError,
    TokenMissingError,
    UnknownFormatError,
)
from meeting.hub import CaptionHub, Message, Subscription
from sfu.tokens import Grants, require_host, verify_token

log = logging.getLogger(__name__)

# Shared with the signalling socket (docs/signalling.md); the close reason names the code.
CLOSE_CODES = {
    "token_missing": 4401,
    "token_invalid": 4401,
    "token_expired": 4401,
    "wrong_room": 4403,
    "forbidden": 4403,
}
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4008
CLOSE_SHUTDOWN = 1001


@dataclass(frozen=True)
class CaptionsApiLimits:
    max_client_message_bytes: int = 4096
    max_publish_message_bytes: int = 64 * 1024
    auth_timeout_seconds: float = 10.0
    close_timeout_seconds: float = 2.0
    # A client whose socket takes nothing for this long is dropped (see _send_loop).
    send_timeout_seconds: float = 10.0


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
        hello = {
            "type": "hello",
            "room": grants.room,
            "identity": grants.identity,
            "role": grants.role,
            "limits": {
                "max_message_bytes": self.limits.max_client_message_bytes,
                "max_pending_finals": self.hub.max_pending_finals,
            },
        }
        sub = self.hub.subscribe(grants.room, hello)
        sender = asyncio.create_task(self._send_loop(ws, sub))
        sub.on_overflow = lambda: self._spawn(self._drop_slow(ws, sub))
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = _client_reply(msg.data)
                    if reply is not None:
                        sub.put(reply)
                elif msg.type == WSMsgType.BINARY:
                    sub.put(_error("malformed", "binary frames are not accepted"))
        finally:
            self._sockets.discard(ws)
            self.hub.unsubscribe(sub)
            await cancel_and_wait(sender)
        return ws

    async def _send_loop(self, ws: web.WebSocketResponse, sub: Subscription) -> None:
        # Every send has a deadline: aiohttp's writer waits (drains) while the kernel's
        # send buffer (up to net.ipv4.tcp_wmem's max, 4 MiB here) and the transport's
        # are full, so a peer that stopped reading would otherwise hold this task forever.
        with contextlib.suppress(ConnectionError):
            while (message := await sub.next()) is not None:
                try:
                    await asyncio.wait_for(
                        ws.send_str(json.dumps(message)), self.limits.send_timeout_seconds
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
        await self._close(ws, CLOSE_TOO_SLOW, "too_slow")

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
            msg = await ws.receive(timeout=self.limits.auth_timeout_seconds)
        except TimeoutError:
            await self._close(ws, CLOSE_AUTH_TIMEOUT, "token_missing")
            raise TokenMissingError("no auth message within the time limit") from None
        if msg.type != WSMsgType.TEXT:
            raise TokenMissingError("the first message must be an auth message")
        try:
            data = json.loads(msg.data)
        except ValueError:
            raise TokenMissingError("the first message must be an auth message") from None
        if not isinstance(data, dict) or data.get("type") != "auth":
            raise TokenMissingError("the first message must be an auth message")
        token = data.get("token")
        return token if isinstance(token, str) else ""

    async def _refuse(self, ws: web.WebSocketResponse, exc: AuthError) -> None:
        if ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await ws.send_json(_error(exc.code, str(exc)))
        await self._close(ws, CLOSE_CODES.get(exc.code, 4401), exc.code)

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
        self.hub.captioner_attached(room)
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    ack = self._accept_publication(room, msg.data)
                except MalformedMessageError as exc:
                    await ws.send_json(_error("malformed", str(exc)))
                    continue
                if ack is not None:
                    await ws.send_json(ack)
        finally:
            self._sockets.discard(ws)
            self.hub.captioner_detached(room)
        return ws

    def _accept_publication(self, room: str, text: str) -> Message | None:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MalformedMessageError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise MalformedMessageError("not a JSON object")
        if data.get("type") == "room_state":
            self.hub.update_status(room, data)
            return None
        event = CaptionEvent.from_json(data)
        stream, started, seq = data.get("stream"), data.get("stream_started_at"), data.get("seq")
        if not isinstance(stream, str) or not isinstance(started, int | float):
            raise MalformedMessageError("a caption needs 'stream' and 'stream_started_at'")
        self.hub.publish(room, event, stream=stream, stream_started_at=float(started))
        return {"type": "ack", "seq": seq} if event.kind == "final" else None

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
        body = render(fmt, self.hub.store.transcript(room))
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
        self.hub.delete_transcript(
            grants.room, {"identity": grants.identity, "name": grants.display_name}
        )
        return web.Response(status=204)

    # -- lifecycle --------------------------------------------------------------------

    async def _close_sockets(self, app: web.Application) -> None:
        await asyncio.gather(
            *(self._close(ws, CLOSE_SHUTDOWN, "shutdown") for ws in list(self._sockets)),
            return_exceptions=True,
        )

    async def _retention(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._purge_forever())
        yield
        await cancel_and_wait(task)

    async def _purge_forever(self) -> None:
        while True:
            purged = self.hub.store.purge_expired(self.retention_hours, now=time.time())
            if purged:
                log.info("retention: deleted transcripts of %s", ", ".join(purged))
            await asyncio.sleep(self.purge_interval_seconds)


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


def _error(code: str, message: str) -> Message:
    return {"type": "error", "code": code, "message": message}


def _client_reply(text: str) -> Message | None:
    """Answers one client message on /captions (ping); errors for anything else."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return _error("malformed", "not JSON")
    if not isinstance(data, dict):
        return _error("malformed", "not a JSON object")
    kind = data.get("type")
    if kind == "ping":
        reply: Message = {"type": "pong"}
        if isinstance(data.get("id"), int | str):
            reply["id"] = data["id"]
        return reply
    if kind == "auth":
        return _error("malformed", "already authenticated")
    return _error("unknown_type", f"unknown message type {kind!r}")


def install_captions_api(
    app: web.Application, hub: CaptionHub, secret: str, **options: Any
) -> CaptionsApi:
    """Adds the captions routes to ``app`` (the SFU server's, in ``captions serve``)."""
    api = CaptionsApi(hub, secret, **options)
    api.install(app)
    return api
