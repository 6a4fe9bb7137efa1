"""The captioning sidecar: a hidden participant that captions every speaker of a room.

It joins the room through the SFU like any participant (``sfu.client``, with a hidden
``captioner`` token), subscribes to every published microphone, and feeds each speaker's
decoded audio into one :class:`~captions.runtime.SpeechStream` of a shared
:class:`~captions.runtime.EngineRunner`. The speaker is the participant's identity and
display name, so attribution is exact. Caption events go to the server over the
authenticated ``/captions/publish`` WebSocket (docs/captions-api.md), which stores finals
and fans everything out: ``captions serve`` runs this very code over loopback, and
``captions sidecar`` runs it as its own process.

Following the room (:class:`RoomCaptioner`, free of network I/O):

- a participant who leaves, or whose track ends, has their stream closed: its last
  words arrive as a final;
- a muted track costs nothing (the SFU stops forwarding it, and any audio that still
  arrives is dropped), and the open utterance is flushed on mute;
- digital silence is not pushed after ``silence_grace_seconds`` (enough for the
  engine's end-of-speech detection), and the utterance is flushed instead;
- someone who rejoins gets a fresh stream;
- captions *off* (set by the host) closes every stream and drops all audio before the
  engine; *on* resumes; a new room language reopens streams in that language when the
  engine supports it. The room's state comes from the server's hub, its one owner, over
  ``/captions/publish``; until the sidecar has heard it, no audio is captioned.

Word times stay on the wall clock across the audio that is not pushed: each stream keeps
anchors (stream time, wall time) taken whenever audio resumes after a gap, and every
published event carries ``stream_started_at`` for its words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import aiohttp
import numpy as np
import numpy.typing as npt

from captions.events import CaptionEvent, Speaker
from captions.runtime import EngineRunner, SpeechStream
from common.aio import cancel_and_wait
from common.exceptions import CaptionsError, EngineError, ProtocolError
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


class CaptionSink(Protocol):
    """Where a room's captions go (the server's hub, through :class:`CaptionPublisher`)."""

    def caption(self, event: CaptionEvent, *, stream: str, stream_started_at: float) -> None:
        """Hands over one event; never blocks."""

    def status(self, status: SidecarStatus) -> None:
        """Hands over what only the captioner knows (languages, degraded, participants)."""


class _Anchors:
    """Maps a stream's time to wall-clock time across gaps of audio that was not pushed."""

    MAX = 256

    def __init__(self) -> None:
        self.stream_times: list[float] = []
        self.wall_times: list[float] = []

    def add(self, stream_time: float, wall_time: float) -> None:
        self.stream_times.append(stream_time)
        self.wall_times.append(wall_time)
        if len(self.stream_times) > self.MAX:  # old utterances are long final
            del self.stream_times[0], self.wall_times[0]

    def expected_wall(self, stream_time: float) -> float | None:
        if not self.stream_times:
            return None
        return self.wall_times[-1] + stream_time - self.stream_times[-1]

    def origin_for(self, stream_time: float) -> float:
        """Wall-clock time of stream time 0 as seen by audio at ``stream_time``."""
        i = max(0, bisect_right(self.stream_times, stream_time + 1e-6) - 1)
        return self.wall_times[i] - self.stream_times[i]


class SpeakerFeed:
    """One participant's audio on its way to the engine, and their events on the way out."""

    def __init__(
        self,
        speaker: Speaker,
        runner: EngineRunner,
        sink: CaptionSink,
        *,
        silence_level: float,
        silence_grace_seconds: float,
        gap_seconds: float,
        now: Callable[[], float],
        on_degraded: Callable[[], None],
    ) -> None:
        self.speaker = speaker
        self.runner = runner
        self.sink = sink
        self.muted = False
        self.silence_level = silence_level
        self.silence_grace_seconds = silence_grace_seconds
        self.gap_seconds = gap_seconds
        self._now = now
        self._on_degraded = on_degraded
        self.stream: SpeechStream | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stream_id = ""
        self._utterance_base = 0
        self._anchors = _Anchors()
        self._pushed = 0.0  # seconds of audio pushed into the current stream
        self._silent_run = 0.0
        self.skipped_seconds = 0.0
        self.refused_until = 0.0  # monotonic time until which the engine refused a stream

    def push(self, pcm: npt.NDArray[np.float32], sample_rate: int, language: str | None) -> None:
        """Feeds audio unless muted or digital silence (see the module docstring)."""
        if self.muted or pcm.size == 0:
            return
        seconds = pcm.shape[0] / float(sample_rate)
        if float(np.max(np.abs(pcm))) < self.silence_level:
            self._silent_run += seconds
            if self._silent_run > self.silence_grace_seconds:
                if self._silent_run - seconds <= self.silence_grace_seconds and self.stream:
                    self.stream.flush()
                self.skipped_seconds += seconds
                return
            if self.stream is None:
                return  # silence never opens a stream
        else:
            self._silent_run = 0.0
        if self.stream is None:
            self._open(language)
        assert self.stream is not None
        now = self._now()
        expected = self._anchors.expected_wall(self._pushed)
        if expected is None or now - expected > self.gap_seconds:
            # ``now`` is when the chunk *ended*; its first sample was ``seconds`` earlier.
            self._anchors.add(self._pushed, now - seconds)
        self.stream.push_audio(pcm, sample_rate)
        self._pushed += seconds

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()

    def _open(self, language: str | None) -> None:
        self.stream = self.runner.open_stream(self.speaker, language=language)
        self._stream_id = uuid.uuid4().hex[:16]
        # Utterance numbers keep increasing for a speaker across streams and restarts.
        self._utterance_base = int(time.time() * 1000)
        self._anchors = _Anchors()
        self._pushed = 0.0
        self._pump = asyncio.create_task(self._forward(self.stream))

    async def _forward(self, stream: SpeechStream) -> None:
        stream_id, base, anchors = self._stream_id, self._utterance_base, self._anchors
        async for event in stream:
            start = event.start if event.start is not None else 0.0
            self.sink.caption(
                replace(event, utterance=base + event.utterance),
                stream=stream_id,
                stream_started_at=anchors.origin_for(start),
            )
            if event.flags.get("degraded"):
                self._on_degraded()

    async def end_stream(self) -> None:
        """Closes the stream: its last words become final and are handed to the sink."""
        stream, pump = self.stream, self._pump
        self.stream, self._pump = None, None
        self._silent_run = 0.0
        try:
            if stream is not None:
                await stream.aclose()
            if pump is not None:
                await pump
        except asyncio.CancelledError:  # given up on (see RoomCaptioner.aclose): drop it all
            if stream is not None:
                stream.abort()
            if pump is not None:
                pump.cancel()
            raise


class RoomCaptioner:
    """Follows one room's participants and caption state; sans network I/O."""

    def __init__(
        self,
        room: str,
        runner: EngineRunner,
        sink: CaptionSink,
        *,
        enabled: bool = True,
        language: str | None = None,
        silence_level: float = 1e-4,
        silence_grace_seconds: float = 1.0,
        gap_seconds: float = 0.5,
        retry_refused_seconds: float = 5.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.room = room
        self.retry_refused_seconds = retry_refused_seconds
        self.runner = runner
        self.sink = sink
        self.enabled = enabled
        self.language = language
        self.feeds: dict[str, SpeakerFeed] = {}
        self._feed_options: dict[str, Any] = {
            "silence_level": silence_level,
            "silence_grace_seconds": silence_grace_seconds,
            "gap_seconds": gap_seconds,
            "now": now,
        }
        self.participants = 0
        self.degraded = False
        self._ending: set[asyncio.Task[None]] = set()

    @property
    def engine_language(self) -> str | None:
        """The room language if the engine supports it, else the engine's default."""
        languages = self.runner.engine.info.languages
        if self.language is None or self.language in languages:
            return self.language
        return None

    def status(self) -> SidecarStatus:
        return SidecarStatus(
            degraded=self.degraded,
            participants=self.participants,
            languages=tuple(self.runner.engine.info.languages),
        )

    def _feed(self, identity: str, name: str) -> SpeakerFeed:
        feed = self.feeds.get(identity)
        if feed is None:
            feed = self.feeds[identity] = SpeakerFeed(
                Speaker(identity, name),
                self.runner,
                self.sink,
                on_degraded=self._mark_degraded,
                **self._feed_options,
            )
        return feed

    def _mark_degraded(self) -> None:
        if not self.degraded:
            self.degraded = True
            self.sink.status(self.status())

    def set_participants(self, count: int) -> None:
        if count != self.participants:
            self.participants = count
            self.sink.status(self.status())

    def audio(self, identity: str, name: str, pcm: npt.NDArray[np.float32], rate: int) -> None:
        """One chunk of a participant's decoded audio; dropped while captions are off."""
        if not self.enabled:
            return
        feed = self._feed(identity, name)
        now = time.monotonic()
        if now < feed.refused_until:
            return
        try:
            feed.push(pcm, rate, self.engine_language)
        except EngineError as exc:  # e.g. no free engine slot: retried a little later
            feed.refused_until = now + self.retry_refused_seconds
            log.warning("cannot caption %s in %s: %s", identity, self.room, exc)

    def set_muted(self, identity: str, name: str, muted: bool) -> None:
        feed = self._feed(identity, name)
        if muted and not feed.muted:
            feed.flush()
        feed.muted = muted

    async def participant_left(self, identity: str) -> None:
        """Closes and flushes the participant's stream; a rejoin starts a fresh one.

        The flush runs in its own task, which :meth:`aclose` also waits for, so that
        cancelling the caller (the track's consumer) never loses the last words.
        """
        feed = self.feeds.pop(identity, None)
        if feed is not None:
            await asyncio.shield(self._end_in_background(feed))
            self._refresh_degraded()

    def _refresh_degraded(self) -> None:
        """Clears ``degraded`` once no open stream has dropped audio."""
        still = any(f.stream is not None and f.stream.degraded for f in self.feeds.values())
        if self.degraded and not still:
            self.degraded = False
            self.sink.status(self.status())

    def _end_in_background(self, feed: SpeakerFeed) -> asyncio.Task[None]:
        task = asyncio.create_task(feed.end_stream())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return task

    async def set_state(self, *, enabled: bool, language: str | None) -> None:
        """Applies the room's caption state: off closes streams, a new language reopens them."""
        language_changed = language != self.language
        was_enabled = self.enabled
        if enabled == was_enabled and not language_changed:
            return
        self.enabled, self.language = enabled, language
        if (was_enabled and not enabled) or language_changed:
            ending = [self._end_in_background(feed) for feed in self.feeds.values()]
            await asyncio.shield(asyncio.gather(*ending))
            self.degraded = False
        self.sink.status(self.status())

    async def aclose(self, *, timeout: float = 10.0) -> None:
        """Flushes every stream (their last words are handed to the sink).

        A stream the engine has not flushed within ``timeout`` (a stalled or stopped
        engine) is dropped, so that leaving the room never hangs.
        """
        for feed in self.feeds.values():
            self._end_in_background(feed)
        self.feeds.clear()
        if self._ending:
            await asyncio.wait(set(self._ending), timeout=timeout)
        unfinished = list(self._ending)
        if unfinished:
            log.warning("%s: %d streams not flushed in %.1f s", self.room, len(unfinished), timeout)
        await asyncio.gather(*(cancel_and_wait(task) for task in unfinished))


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
        resend_seconds: float = 5.0,
        ssl: Any = True,
    ) -> None:
        self.url = url
        self.token = token
        self.max_unacked = max_unacked
        self.reconnect_seconds = reconnect_seconds
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
        async with aiohttp.ClientSession() as http:
            while not self._stopping:
                try:
                    async with http.ws_connect(
                        self.url, params={"token": self.token}, heartbeat=30.0, ssl=self.ssl
                    ) as ws:
                        await self._serve(ws)
                except (aiohttp.ClientError, OSError) as exc:
                    log.info("caption publisher: %s; retrying", exc)
                finally:
                    self._connected = False
                    self.connected_event.clear()
                    self._partials.clear()
                await asyncio.sleep(self.reconnect_seconds)

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


class Sidecar:
    """Captions one room: joins it through the SFU, publishes to the server, reconnects.

    ``run()`` keeps the sidecar in the room until :meth:`stop`; if the SFU connection
    drops (server restart), streams are flushed and it joins again.
    """

    def __init__(
        self,
        sfu_url: str,
        token: str,
        runner: EngineRunner,
        *,
        publish_url: str | None = None,
        reconnect_seconds: float = 1.0,
        ssl: Any = True,
        **captioner_options: Any,
    ) -> None:
        self.sfu_url = sfu_url.rstrip("/")
        self.token = token
        self.runner = runner
        base = self.sfu_url.replace("http", "ws", 1)
        self.publisher = CaptionPublisher(publish_url or f"{base}/captions/publish", token, ssl=ssl)
        self.ssl = ssl
        self.reconnect_seconds = reconnect_seconds
        self.captioner_options = captioner_options
        self.captioner: RoomCaptioner | None = None
        self.joined = asyncio.Event()
        self._stop = asyncio.Event()
        self._client: Any = None

    async def run(self) -> None:
        from sfu.client import SfuClient  # the SFU client pulls in aiortc

        self.publisher.start()
        try:
            while not self._stop.is_set():
                try:
                    self._client = await SfuClient.connect(self.sfu_url, self.token, ssl=self.ssl)
                except CaptionsError as exc:
                    log.warning("sidecar cannot join %s: %s", self.sfu_url, exc)
                    if getattr(exc, "code", None) in ("token_invalid", "token_expired"):
                        raise
                else:
                    try:
                        await self._follow(self._client)
                    finally:
                        await self._client.close()  # bounded, even when we are cancelled
                        self._client = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.reconnect_seconds):
                        await self._stop.wait()
        finally:
            await self.publisher.aclose()

    async def stop(self) -> None:
        """Leaves the room after flushing every stream to the server."""
        self._stop.set()
        if self._client is not None:
            await self._client.leave()

    async def _follow(self, client: Any) -> None:
        # Nothing is captioned until the hub has said whether captions are on.
        state = self.publisher.room_state
        captioner = self.captioner = RoomCaptioner(
            client.room,
            self.runner,
            self.publisher,
            enabled=state.enabled if state is not None else False,
            language=state.language if state is not None else None,
            **self.captioner_options,
        )
        captioner.set_participants(len(client.participants))
        self.publisher.status(captioner.status())
        for participant in client.participants.values():
            captioner.set_muted(participant.identity, participant.name, participant.audio_muted)
        self.joined.set()
        consumers: dict[str, asyncio.Task[None]] = {}
        follower = asyncio.create_task(
            self._follow_state(captioner, seen=0 if state is None else -1)
        )
        try:
            async for event in client.events():
                if event.type == "closed" or self._stop.is_set():
                    break
                await self._on_event(client, captioner, event, consumers)
        finally:
            await cancel_and_wait(follower)
            await asyncio.gather(*(cancel_and_wait(task) for task in consumers.values()))
            await captioner.aclose()
            self.joined.clear()

    async def _on_event(
        self,
        client: Any,
        captioner: RoomCaptioner,
        event: Any,
        consumers: dict[str, asyncio.Task[None]],
    ) -> None:
        participant = event.participant
        if event.type == "track" and event.track.kind == "audio":
            old = consumers.pop(participant.identity, None)
            if old is not None:  # a new track of the same person: a fresh stream
                old.cancel()
                await captioner.participant_left(participant.identity)
            consumers[participant.identity] = asyncio.create_task(
                self._consume(captioner, participant, event.track)
            )
        elif event.type == "participant_updated" and participant is not None:
            captioner.set_muted(participant.identity, participant.name, participant.audio_muted)
        elif event.type == "participant_left":
            identity = event.data.get("identity") or (participant and participant.identity)
            task = consumers.pop(identity, None)
            if task is not None:
                task.cancel()
            await captioner.participant_left(identity)
        if event.type in ("participant_joined", "participant_left"):
            captioner.set_participants(len(client.participants))

    async def _follow_state(self, captioner: RoomCaptioner, *, seen: int) -> None:
        """Applies every room state the hub sends (host on/off, language)."""
        while True:
            seen, state = await self.publisher.next_room_state(seen)
            await captioner.set_state(enabled=state.enabled, language=state.language)

    @staticmethod
    async def _consume(captioner: RoomCaptioner, participant: Any, track: Any) -> None:
        async for pcm, rate in track.pcm():
            captioner.audio(participant.identity, participant.name, pcm, rate)
        # The track ended (unpublished): the speaker's last words become final.
        await captioner.participant_left(participant.identity)
