"""The SFU's HTTP side: the signalling WebSocket.

``create_app(settings)`` returns an ``aiohttp`` application with ``GET /ws``: signalling
(``docs/signalling.md``), one socket per participant. The meeting layer adds the page and
the caption routes to the same app.

Other components reach the live state through ``app[SFU]`` (an :class:`SfuServer`):
rooms, and listeners called when a room opens or goes idle (no visible participant
left). The SFU knows nothing of captions: their state lives in the meeting layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web, web_response

from common.aio import bounded, cancel_and_wait, wait_ended
from common.closecodes import CloseCode, close_code_for
from common.exceptions import (
    AuthError,
    CaptionsError,
    ForbiddenError,
    MalformedMessageError,
    RoomFullError,
    TokenInvalidError,
)
from common.security_headers import SERVER_NAME, security_headers
from sfu.peer import OUTBOX_MESSAGES, Peer, offer_loopback_candidates
from sfu.room import Room, Rooms
from sfu.settings import Settings
from sfu.signalling import (
    Answer,
    Candidate,
    ClientMessage,
    ClientSession,
    Join,
    Leave,
    Mute,
    Offer,
    Ping,
    encode,
    error_code,
    error_message,
)
from sfu.tokens import Grants, verify_token

logger = logging.getLogger(__name__)
CLOSE_TIMEOUT_SECONDS = 5.0  # for each socket and task on shutdown
WRITER_DRAIN_SECONDS = 2.0  # for a closing connection to send what is queued
RoomListener = Callable[[Room], None]


class SfuServer:
    """Live SFU state shared by every signalling connection of one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = settings.secret
        self.rooms = Rooms(max_participants=settings.max_participants_per_room)
        self.on_room_opened: list[RoomListener] = []
        """Called when a visible participant joins a room that had none."""
        self.on_room_idle: list[RoomListener] = []
        """Called when the last visible participant has left a room."""
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drops: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def drop(self, peer: Peer, room: Room) -> asyncio.Task[None]:
        """Drops a participant that left, in a task of the server's, not of its socket's
        handler: aiohttp may cancel a handler once its client's TCP connection goes
        (``handler_cancellation``), and an interrupted drop would leave a peer out of the
        room but never announced nor closed. :meth:`close` lets drops finish."""
        task = self.spawn(_drop_peer(self, peer, room, announce=True))
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("SFU task failed", exc_info=task.exception())

    async def close(self) -> None:
        await asyncio.gather(
            *(
                bounded(
                    ws.close(code=CloseCode.GOING_AWAY, message=b"server shutting down"),
                    timeout=CLOSE_TIMEOUT_SECONDS,
                    what="closing a signalling socket",
                )
                for ws in list(self._sockets)
            )
        )
        if self._drops:  # the peers just closed are leaving: let them close their media
            await asyncio.wait(set(self._drops), timeout=2 * CLOSE_TIMEOUT_SECONDS)
        await asyncio.gather(
            *(cancel_and_wait(task, timeout=CLOSE_TIMEOUT_SECONDS) for task in list(self._tasks))
        )

    @staticmethod
    def _notify(listeners: list[RoomListener], room: Room) -> None:
        for listener in listeners:
            try:
                listener(room)
            except Exception:
                logger.exception("room listener failed")

    # ---------------------------------------------------------------- connection

    async def handle_socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.settings.max_message_bytes, heartbeat=30)
        await ws.prepare(request)
        self._sockets.add(ws)
        connection = Connection(self, ws)
        try:
            await connection.run()
        finally:
            self._sockets.discard(ws)
            await connection.leave()
        return ws


class Connection:
    """One signalling socket: protocol state, outbox, and (after join) its peer."""

    def __init__(self, server: SfuServer, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.ws = ws
        self.session = ClientSession(max_bytes=server.settings.max_message_bytes)
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX_MESSAGES)
        self.peer: Peer | None = None
        self.room: Room | None = None
        self._writer: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> bool:
        """Queues a message; a client that lets its outbox fill is disconnected."""
        try:
            self.outbox.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.server.spawn(self.close(CloseCode.POLICY_VIOLATION, "not reading"))
            return False

    async def _write(self) -> None:
        # One message that cannot be written must not end the writer (then nothing more
        # would reach this client, while its socket stayed open): it is logged, skipped.
        while (message := await self.outbox.get()) is not None:
            try:
                await self.ws.send_str(encode(message))
            except (ConnectionError, RuntimeError):
                pass
            except Exception:
                logger.exception("a %r message could not be sent", message.get("type"))

    async def close(self, code: int, reason: str) -> None:
        """Sends what is queued (such as the error that explains the close), then closes."""
        await self._stop_writer()
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None or writer.done():
            return
        try:
            self.outbox.put_nowait(None)
        except asyncio.QueueFull:
            writer.cancel()  # the client is not reading; what it missed is lost
        # Not ``suppress(CancelledError)``: that would also eat a cancel aimed at us.
        await wait_ended(writer, timeout=WRITER_DRAIN_SECONDS)

    async def run(self) -> None:
        self._writer = asyncio.ensure_future(self._write())
        try:
            # One deadline for the whole unauthenticated phase: pings (or refused joins)
            # before a successful join do not extend it.
            deadline = asyncio.get_running_loop().time() + self.server.settings.join_timeout_seconds
            while not self.ws.closed and not self.session.joined:
                try:
                    async with asyncio.timeout_at(deadline):
                        frame = await self.ws.receive()
                except TimeoutError:
                    await self.close(CloseCode.TIMEOUT, "no join message")
                    return
                await self._handle_frame(frame)
            while not self.ws.closed:
                await self._handle_frame(await self.ws.receive())
        finally:
            await self._stop_writer()

    async def _handle_frame(self, frame: Any) -> None:
        if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            if not self.ws.closed:
                await self.ws.close()
            return
        request: str | None = None
        try:
            message = self.session.read(frame.data)
            request = type(message).__name__
            await self._dispatch(message)
        except RoomFullError as exc:
            self.send(error_message("room_full", str(exc), "join"))
            await self.close(CloseCode.ROOM_FULL, "room full")
        except AuthError as exc:
            self.send(error_message(exc.code, str(exc), request and _wire_type(request)))
            # A refused join closes the socket; a refused action after joining does not.
            if not self.session.joined:
                await self.close(close_code_for(exc.code), exc.code)
        except CaptionsError as exc:
            code = (
                "not_joined"
                if self.session.close_code == CloseCode.PROTOCOL and not (self.session.joined)
                else error_code(exc)
            )
            self.send(error_message(code, str(exc), request and _wire_type(request)))
            if self.session.close_code is not None:
                await self.close(self.session.close_code, code)

    # ---------------------------------------------------------------- messages

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, Ping):
            self.send({"type": "pong", "id": message.id})
        elif isinstance(message, Join):
            await self._join(message)
        elif self.peer is None or self.room is None:
            return  # unreachable: ClientSession refuses everything but join and ping first
        elif isinstance(message, Offer):
            await self._publish(self.peer, self.room, message)
        elif isinstance(message, Answer):
            await self.peer.apply_subscriber_answer(message.sdp)
        elif isinstance(message, Candidate):
            # mDNS names may take aioice up to 1 s to (fail to) resolve; don't stall the socket.
            self.server.spawn(self.peer.add_candidate(message))
        elif isinstance(message, Mute):
            self.peer.set_muted(message.kind, message.muted)
            if not self.peer.grants.hidden:
                self.room.broadcast(
                    {"type": "participant_updated", "participant": self.peer.describe()}
                )
        elif isinstance(message, Leave):
            await self.close(CloseCode.NORMAL, "left")

    async def _join(self, message: Join) -> None:
        grants: Grants = verify_token(self.server.secret, message.token, room=message.room)
        chosen = (message.name or "").strip()
        if chosen and not grants.name:
            # A signed name always wins: only a nameless link lets people name themselves.
            # Grants validation (length) applies; a bad name is a bad join, not a crash.
            try:
                grants = dataclasses.replace(grants, name=chosen)
            except TokenInvalidError as exc:
                raise MalformedMessageError(f"join.name: {exc}") from exc
        room = self.server.rooms.get_or_create(grants.room)
        had_visible = any(not p.grants.hidden for p in room.peers.values())
        peer = Peer(
            grants,
            send=self.send,
            connect_timeout=self.server.settings.media_connect_timeout_seconds,
        )
        peer.disconnect = self.close

        def media_lost(reason: str) -> None:
            self.server.spawn(self._media_lost(peer, reason))

        peer.on_media_lost = media_lost
        try:
            replaced = room.add(peer)
        except RoomFullError:
            self.server.rooms.discard_if_empty(room)
            raise
        self.session.joined = True
        self.peer, self.room = peer, room
        if replaced is not None:
            replaced.send({"type": "error", "code": "replaced", "message": "joined elsewhere"})
            self.server.spawn(self._evict(replaced, room))
        self.send(
            {
                "type": "joined",
                "room": room.name,
                "you": peer.describe(),
                "participants": room.visible_others(peer),
                "limits": {"max_message_bytes": self.server.settings.max_message_bytes},
            }
        )
        if not grants.hidden:
            room.broadcast(
                {"type": "participant_joined", "participant": peer.describe()}, exclude=peer
            )
            if not had_visible:
                self.server._notify(self.server.on_room_opened, room)
        for other in room.others(peer):
            for kind in list(other.publications):
                peer.subscribe(other, kind)
        if peer.subscriptions:
            await peer.renegotiate()

    async def _evict(self, replaced: Peer, room: Room) -> None:
        # The replaced socket's own cleanup drops its peer (without a participant_left).
        if replaced.disconnect is not None:
            await replaced.disconnect(CloseCode.REPLACED, "replaced")

    async def _media_lost(self, peer: Peer, reason: str) -> None:
        """A participant whose media died is gone, whatever its socket says.

        Its socket is closed with ``MEDIA_LOST`` first (the close frame goes out before
        its peer connections close, so the client learns why), then the peer is dropped
        as on a leave: the others get ``participant_left``, forwarding stops, the peer
        connections close. Bounded: a client too stuck to answer the close costs
        ``CLOSE_TIMEOUT_SECONDS``; the close of its socket's own cleanup is then a no-op.
        """
        if self.peer is not peer:
            return  # already left or replaced
        await bounded(
            self.close(CloseCode.MEDIA_LOST, reason),
            timeout=CLOSE_TIMEOUT_SECONDS,
            what="closing the socket of a participant whose media died",
        )
        await self.leave()

    async def _publish(self, peer: Peer, room: Room, message: Offer) -> None:
        if peer.grants.hidden or not peer.grants.can_publish:
            raise ForbiddenError("this token may not publish")
        answer, added, removed = await peer.apply_publisher_offer(message.sdp)
        self.send({"type": "answer", "sdp": answer})
        if not added and not removed:
            return
        for other in room.others(peer):
            for kind in removed:
                await other.unsubscribe(peer, kind)
            for kind in added:
                other.subscribe(peer, kind)
            self.server.spawn(other.renegotiate())
        room.broadcast({"type": "participant_updated", "participant": peer.describe()})

    async def leave(self) -> None:
        peer, room = self.peer, self.room
        self.peer = self.room = None
        if peer is not None and room is not None:
            await asyncio.shield(self.server.drop(peer, room))


async def _drop_peer(server: SfuServer, peer: Peer, room: Room, *, announce: bool) -> None:
    removed = room.remove(peer)
    # A snapshot: other peers leave meanwhile (every bot closing at once changed the
    # dict during the awaits below: "dictionary changed size during iteration").
    for other in list(room.others(peer)):
        if await other.unsubscribe(peer):
            server.spawn(other.renegotiate())
    if removed and announce and not peer.grants.hidden:
        room.broadcast({"type": "participant_left", "identity": peer.identity, "name": peer.name})
        if not any(not p.grants.hidden for p in room.peers.values()):
            server._notify(server.on_room_idle, room)
    await peer.close()
    server.rooms.discard_if_empty(room)


def _wire_type(class_name: str) -> str:
    return class_name.lower()


SFU = web.AppKey("sfu", SfuServer)


def create_app(settings: Settings) -> web.Application:
    """The SFU as an aiohttp application; ``app[SFU]`` is its :class:`SfuServer`."""
    if settings.ice_loopback:
        offer_loopback_candidates()
    app = web.Application(client_max_size=settings.max_message_bytes)
    install_security_headers(app)
    server = SfuServer(settings)
    app[SFU] = server

    async def signalling(request: web.Request) -> web.StreamResponse:
        return await server.handle_socket(request)

    async def on_shutdown(app: web.Application) -> None:
        await server.close()

    app.router.add_get("/ws", signalling)
    app.on_shutdown.append(on_shutdown)
    return app


def install_security_headers(app: web.Application) -> None:
    """Every response of ``app`` gets :mod:`common.security_headers`."""
    # aiohttp's own replies to unparsable requests bypass the hook; they name the product
    # too, without a version.
    web_response.SERVER_SOFTWARE = SERVER_NAME

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(security_headers(request.host, tls=request.secure))

    app.on_response_prepare.append(add_headers)
