"""Per-room caption state and fan-out of caption events to every ``/captions`` client.

:class:`CaptionHub` is the one owner of a room's caption state (on/off, language, who
changed it, captioner presence, degraded): hosts change it through :mod:`meeting.api`,
the captioner reports its languages and degraded, and every change goes to the pages and
to the captioner (over ``/captions/publish``). The sidecar hands each room's events to
the hub, which stores finals in the :class:`~meeting.store.TranscriptStore` and puts
every message into each client's own :class:`ClientQueue`; a slow client therefore never
delays the others.

Live captions never wait for the database: a final is broadcast at once (once: a final
sent again after a publisher's reconnect is recognised by ``(room, stream, utterance)``
among the last ``dedup_window`` of the room), and :meth:`CaptionHub.persist` stores it,
retrying with backoff while the database is unreachable (a PostgreSQL restart, a full
disk); the publisher is acknowledged only after the write, so nothing acknowledged is
lost. The store's failure is logged once per change of state (failing, working again),
not per attempt, and every room's ``room_state`` says ``saving: false`` meanwhile, so the
host's page shows "Transcript not being saved"; it flips back by itself on the first
write that succeeds.

:class:`ClientQueue` is sans-I/O. Its policy when a client does not keep up:

- a caption *partial* replaces the pending partial of the same ``(speaker, utterance)``
  (in place, so order is kept), and is dropped once that utterance's final is queued;
- a ``room_state`` replaces the pending one;
- every other message (finals, backlog, notices) is kept; when more than
  ``max_finals`` of them are pending the queue is *overflowed*: the client is closed
  (``CloseCode.TOO_SLOW``, ``too_slow``) and can reconnect to get the backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

from captions.events import CaptionEvent
from common.aio import cancel_requests, raise_if_cancelled_since
from common.exceptions import StoreRejectedError, StoreUnavailableError
from meeting.protocol import (
    Backlog,
    Caption,
    Hello,
    Person,
    RoomState,
    ServerMessage,
    SidecarStatus,
    TranscriptDeleted,
)
from meeting.store import TranscriptStore

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Slot:
    message: ServerMessage | None
    key: Hashable | None = None


class ClientQueue:
    """One client's bounded outbox (see the module docstring for the overflow policy)."""

    def __init__(self, *, max_finals: int = 256) -> None:
        self.max_finals = max(1, max_finals)
        self._slots: deque[_Slot] = deque()
        self._by_key: dict[Hashable, _Slot] = {}
        self._kept = 0
        self.overflowed = False
        self.coalesced = 0

    def __len__(self) -> int:
        return self._kept + len(self._by_key)

    def put(self, message: ServerMessage) -> None:
        if self.overflowed:
            return
        key = _coalescing_key(message)
        if key is not None:
            slot = self._by_key.get(key)
            if slot is not None:
                slot.message = message
                self.coalesced += 1
                return
            slot = _Slot(message, key)
            self._by_key[key] = slot
            self._slots.append(slot)
            return
        if isinstance(message, Caption):  # a final supersedes its pending partial
            stale = self._by_key.pop(_utterance_key(message), None)
            if stale is not None:
                stale.message = None
                self.coalesced += 1
        if self._kept >= self.max_finals:
            self.overflowed = True
            return
        self._slots.append(_Slot(message))
        self._kept += 1

    def take(self) -> ServerMessage | None:
        """The next message to send, or None when empty."""
        while self._slots:
            slot = self._slots.popleft()
            if slot.message is None:
                continue
            if slot.key is not None:
                del self._by_key[slot.key]
            else:
                self._kept -= 1
            return slot.message
        return None


def _utterance_key(message: Caption) -> Hashable:
    return ("caption", message.event.speaker.id, message.event.utterance)


def _coalescing_key(message: ServerMessage) -> Hashable | None:
    if isinstance(message, Caption) and message.event.kind == "partial":
        return _utterance_key(message)
    if isinstance(message, RoomState):
        return ("room_state",)
    return None


class Subscription:
    """A client's queue plus the wake-up its sender task waits on."""

    def __init__(self, room: str, *, max_finals: int) -> None:
        self.room = room
        self.queue = ClientQueue(max_finals=max_finals)
        self._ready = asyncio.Event()
        self.on_overflow: Callable[[], None] = lambda: None

    def put(self, message: ServerMessage) -> None:
        was = self.queue.overflowed
        self.queue.put(message)
        self._ready.set()
        if self.queue.overflowed and not was:
            self.on_overflow()

    async def next(self) -> ServerMessage | None:
        """Waits for the next message; None once the queue overflowed."""
        while True:
            if self.queue.overflowed:
                return None
            message = self.queue.take()
            if message is not None:
                return message
            self._ready.clear()
            await self._ready.wait()


@dataclass
class RoomCaptions:
    """A room's caption state, owned here; :meth:`message` is what everyone is told.

    Hosts change ``enabled`` and ``language`` (checked in :mod:`meeting.api`); the
    captioner reports only what it alone knows: ``languages``, ``degraded`` and the
    number of participants it sees.
    """

    room: str
    enabled: bool = True
    language: str | None = None
    """The language the host chose (or the server's default)."""
    changed_by: Person | None = None
    degraded: bool = False
    unavailable: bool = False
    participants: int = 0
    languages: tuple[str, ...] = ()
    saving: bool = True

    @property
    def effective_language(self) -> str | None:
        """The chosen language if the captioner supports it, else its first one."""
        if not self.languages or self.language in self.languages:
            return self.language
        return self.languages[0]

    def message(self, *, captioner: bool) -> RoomState:
        return RoomState(
            room=self.room,
            enabled=self.enabled,
            language=self.effective_language,
            changed_by=self.changed_by,
            captioner=captioner,
            unavailable=captioner and self.unavailable,
            degraded=self.degraded,
            languages=self.languages,
            saving=self.saving,
        )


@dataclass
class _Room:
    state: RoomCaptions
    subscribers: set[Subscription] = field(default_factory=set)
    captioners: set[Subscription] = field(default_factory=set)
    seen: OrderedDict[tuple[str, int], None] = field(default_factory=OrderedDict)

    def message(self) -> RoomState:
        return self.state.message(captioner=bool(self.captioners))


@dataclass(frozen=True)
class StoreRetry:
    """Backoff of a final's write while the store is unavailable (doubling, capped)."""

    first_seconds: float = 0.2
    max_seconds: float = 5.0


class CaptionHub:
    """Rooms, their subscribers and caption state; the one owner of that state, and the
    single place caption events go through."""

    def __init__(
        self,
        store: TranscriptStore,
        *,
        backlog: int = 50,
        max_pending_finals: int = 256,
        dedup_window: int = 4096,
        retry: StoreRetry | None = None,
        default_language: str | None = None,
    ) -> None:
        self.store = store
        self.backlog = backlog
        self.max_pending_finals = max_pending_finals
        self.dedup_window = dedup_window
        self.retry = retry or StoreRetry()
        self.default_language = default_language
        self._rooms: dict[str, _Room] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.store_failures = 0
        """Failed store operations (each retry of a write counts), for /metrics."""
        self.saving = True
        """False from a failed store operation until one succeeds (see the module doc)."""
        self.pending_writes = 0
        self.on_final: list[Callable[[str, CaptionEvent, float | None], None]] = []
        """Called with (room, event, stream_started_at) for every final broadcast, once
        (metrics: caption latency)."""

    def _room(self, room: str) -> _Room:
        entry = self._rooms.get(room)
        if entry is None:
            state = RoomCaptions(room, language=self.default_language, saving=self.saving)
            entry = self._rooms[room] = _Room(state)
        return entry

    # -- store health ---------------------------------------------------------------

    def _store_failed(self, what: str, exc: StoreUnavailableError) -> None:
        self.store_failures += 1
        if self.saving:
            log.error("transcripts are not being saved (live captions go on): %s: %s", what, exc)
            self._set_saving(False)
        else:
            log.debug("%s failed: %s", what, exc)

    def _store_worked(self) -> None:
        if not self.saving:
            log.warning("transcripts are being saved again")
            self._set_saving(True)

    def _set_saving(self, saving: bool) -> None:
        self.saving = saving
        for entry in list(self._rooms.values()):
            entry.state.saving = saving
            self._broadcast_state(entry)

    def state(self, room: str) -> RoomState:
        """What pages and the captioner are told about the room now."""
        return self._room(room).message()

    def subscribers(self, room: str) -> int:
        entry = self._rooms.get(room)
        return len(entry.subscribers) if entry else 0

    # -- pages ----------------------------------------------------------------------

    def live_rooms(self) -> list[str]:
        """Rooms on this node with participants present (as their captioner reports)."""
        return [name for name, entry in self._rooms.items() if entry.state.participants > 0]

    async def subscribe(self, room: str, hello: Hello) -> Subscription:
        """Registers a page; its queue starts with hello, the backlog and the room state.

        With the store unavailable the backlog is empty (live captions still flow)."""
        sub = Subscription(room, max_finals=self.max_pending_finals)
        sub.put(hello)
        try:
            recent = await self.store.recent(room, self.backlog)
        except StoreUnavailableError as exc:
            self._store_failed(f"reading the backlog of {room}", exc)
            recent = []
        sub.put(Backlog(tuple(recent)))
        entry = self._room(room)
        sub.put(entry.message())
        entry.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forgets a page or a captioner (idempotent)."""
        entry = self._rooms.get(sub.room)
        if entry is None:
            return
        entry.subscribers.discard(sub)
        if sub in entry.captioners:
            entry.captioners.discard(sub)
            if not entry.captioners:
                entry.state.degraded = entry.state.unavailable = False
                self.touch(sub.room, active=False)
                self._broadcast_state(entry)
        self._forget_if_idle(sub.room)

    def _broadcast(self, room: str, message: ServerMessage) -> None:
        for sub in list(self._room(room).subscribers):
            sub.put(message)

    def _broadcast_state(self, entry: _Room) -> None:
        message = entry.message()
        for sub in [*entry.subscribers, *entry.captioners]:
            sub.put(message)

    # -- host actions (the caller checked the host grant) ----------------------------

    def set_captions(self, room: str, enabled: bool, *, by: Person) -> None:
        """Captions on or off for everyone; off means no audio reaches the engine."""
        entry = self._room(room)
        entry.state.enabled, entry.state.changed_by = enabled, by
        self._broadcast_state(entry)

    def set_language(self, room: str, language: str, *, by: Person) -> None:
        entry = self._room(room)
        entry.state.language, entry.state.changed_by = language, by
        self._broadcast_state(entry)

    # -- captioner side -------------------------------------------------------------

    def attach_captioner(self, room: str) -> Subscription:
        """Registers a captioner; its queue gets the room state now and on every change."""
        entry = self._room(room)
        sub = Subscription(room, max_finals=self.max_pending_finals)
        entry.captioners.add(sub)
        if len(entry.captioners) == 1:
            self._broadcast_state(entry)
        else:
            sub.put(entry.message())
        return sub

    def publish(
        self,
        room: str,
        event: CaptionEvent,
        *,
        stream: str,
        stream_started_at: float | None = None,
    ) -> bool:
        """Fans the event out to the room; returns False for a final already broadcast.

        Finals must also be :meth:`persist`-ed (the captions API does it before acking).
        While the room's captions are off, partials are dropped: they are in flight from
        before the switch, and the page would show them, dim and never finished, under
        "Captions turned off"; the finals the captioner flushes at the switch still go out."""
        if event.kind != "final" and not self._room(room).state.enabled:
            return True
        if event.kind == "final":
            seen = self._room(room).seen
            key = (stream, event.utterance)
            if key in seen:
                return False  # a resend after a reconnect: clients already have it
            seen[key] = None
            while len(seen) > self.dedup_window:
                seen.popitem(last=False)
            for listener in self.on_final:
                listener(room, event, stream_started_at)
        self._broadcast(room, Caption(event))
        return True

    async def persist(
        self, room: str, event: CaptionEvent, *, stream: str, stream_started_at: float
    ) -> None:
        """Stores a final, retrying with backoff until it is written (or cancelled)."""
        delay = self.retry.first_seconds
        cancels = cancel_requests()
        self.pending_writes += 1
        try:
            while True:
                raise_if_cancelled_since(cancels)
                try:
                    await self.store.append(
                        room, event, stream=stream, stream_started_at=stream_started_at
                    )
                    self._store_worked()
                    return
                except StoreRejectedError as exc:  # retrying would block the writes behind it
                    self.store_failures += 1
                    log.error("a final of %s cannot be stored, dropped: %s", room, exc)
                    return
                except StoreUnavailableError as exc:
                    self._store_failed(f"storing a final of {room}", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry.max_seconds)
        finally:
            self.pending_writes -= 1

    def _in_background(self, what: str, coro: Coroutine[Any, Any, Any]) -> None:
        """Runs a best-effort store update (room activity); failures are counted and logged."""

        async def run() -> None:
            try:
                await coro
            except StoreUnavailableError as exc:
                self._store_failed(what, exc)
            else:
                self._store_worked()

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def touch(self, room: str, *, active: bool | None = None) -> None:
        """Records the room's activity in the store, in the background."""
        self._in_background(f"activity of {room}", self.store.touch(room, active=active))

    async def aclose(self) -> None:
        """Lets pending activity updates finish (bounded), then forgets them."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=5.0)
        for task in list(self._background):
            task.cancel()

    def update_status(self, room: str, status: SidecarStatus) -> None:
        """Applies what only the captioner knows: its languages, degraded, unavailable,
        participants."""
        entry = self._room(room)
        before = entry.message()
        entry.state.languages, entry.state.degraded = status.languages, status.degraded
        entry.state.unavailable = status.unavailable
        entry.state.participants = status.participants
        self.touch(room, active=status.participants > 0)
        if entry.message() != before:
            self._broadcast_state(entry)

    async def delete_transcript(self, room: str, by: Person) -> int:
        """Deletes the room's transcript (raises StoreUnavailableError) and tells its clients."""
        removed = await self.store.delete(room)
        self._room(room).seen.clear()
        self._broadcast(room, TranscriptDeleted(room, by))
        return removed

    def _forget_if_idle(self, room: str) -> None:
        entry = self._rooms.get(room)
        if entry is not None and not entry.subscribers and not entry.captioners:
            del self._rooms[room]
