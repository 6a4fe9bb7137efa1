"""Engine ``kyutai-remote``: a client of any ``/api/asr-streaming`` server.

Works against a real ``moshi-server`` or our own :mod:`captions.asr_server`, so the
captioning sidecar can use a GPU pool of Kyutai servers on other machines.

- One WebSocket per speaker (``websockets``), key in the ``kyutai-api-key`` header.
- Audio arrives at 24 kHz (the runtime resamples) and leaves in 80 ms ``Audio`` frames.
- ``Word`` opens a word (the partial); ``EndWord`` (or the next ``Word``) makes it
  final. A silence longer than ``utterance_gap_seconds`` after the last word closes
  the utterance, as does a server pause probability (``Step.prs``) above
  ``end_of_turn_threshold``.
- Closing a stream sends a ``Marker`` and then silence until the marker comes back
  (at most ``flush_timeout`` seconds), so the last words arrive.
- A muted speaker sends nothing; after ``keepalive_seconds`` without audio one frame of
  silence goes out, so the server (which closes after 120 s without audio) keeps the
  connection. Inserted silence is subtracted from the server's word times.
- A server that refuses our API key (HTTP 401/403 at the handshake) is not asked again
  by that stream; once every server of the pool has refused it, the stream ends with
  :class:`~common.exceptions.EngineAuthError` (a wrong key does not fix itself), which
  its owner receives from the runtime.
- A dropped connection reconnects with capped exponential backoff and jitter
  (:class:`common.aio.Backoff`, the project's one policy); audio is kept meanwhile
  (at most ``max_buffer_seconds``, oldest dropped) and times stay on our timeline.
- A pool of servers (``--kyutai-url`` repeated, :class:`ServerPool`): each connection
  goes to the server with the fewest of this engine's connections among those that have
  not failed in the last ``server_cooldown_seconds``; a server that drops a stream,
  refuses a connection or answers "no free channels" is skipped for that long, so the
  stream moves to another server with its buffered audio. A new connection waits for the
  server's ``Ready`` (at most ``ready_timeout``) before sending audio, so a full server
  costs none. What is lost is the words in flight: audio the failed server had received
  but not yet transcribed.

The network runs on its own asyncio loop in a background thread; :meth:`step` (on the
runtime's worker thread) only moves audio and received messages across, and a
session's ``wake()`` tells the worker when messages arrived.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import websockets

from captions.audio import PCM
from captions.engine import AudioInbox, Engine, EngineInfo, Session
from captions.engines import EngineOptions, ModelListing
from captions.events import Word
from captions.kyutai_protocol import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Audio,
    EndWord,
    Error,
    Marker,
    ServerMessage,
    Step,
    WordMessage,
    decode_server_message,
    encode,
)
from captions.track import CaptionTrack
from common.aio import Backoff, cancel_and_wait
from common.exceptions import EngineAuthError, EngineError, ProtocolError

log = logging.getLogger(__name__)

AUTH_REFUSED_STATUSES = (401, 403)


def refused_status(exc: BaseException) -> int | None:
    """The HTTP status of a handshake the server refused for our credentials, else None."""
    if isinstance(exc, websockets.InvalidStatus):
        status = exc.response.status_code
        if status in AUTH_REFUSED_STATUSES:
            return status
    return None


@dataclass(frozen=True)
class RemoteSettings:
    url: str
    api_key: str | None = None
    more_urls: tuple[str, ...] = ()
    """Further servers of the pool, after ``url``."""
    server_cooldown_seconds: float = 5.0
    ready_timeout: float = 2.0
    """How long a new connection waits for the server's ``Ready`` before sending audio."""
    delay_seconds: float = 0.5
    utterance_gap_seconds: float = 1.5
    end_of_turn_threshold: float = 0.6
    end_of_turn_head: int = 2
    keepalive_seconds: float = 5.0
    flush_timeout: float = 10.0
    max_buffer_seconds: float = 10.0
    backoff_initial: float = 0.25
    backoff_max: float = 10.0
    max_message_bytes: int = 1 << 20
    max_received_messages: int = 4096


class ServerPool:
    """The servers of one engine, used from its network loop only (no locking)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        cooldown_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.urls = tuple(dict.fromkeys(urls))
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self.connections = dict.fromkeys(self.urls, 0)
        self.failed_at = dict.fromkeys(self.urls, -float("inf"))

    def pick(self, exclude: frozenset[str] | set[str] = frozenset()) -> str:
        """Least connections among servers that have not failed lately; when all have,
        the one that failed longest ago. Servers in ``exclude`` (they refused our key)
        only when every server is excluded."""
        now = self.clock()
        urls = [u for u in self.urls if u not in exclude] or list(self.urls)
        healthy = [u for u in urls if now - self.failed_at[u] >= self.cooldown_seconds]
        if not healthy:
            return min(urls, key=lambda u: self.failed_at[u])
        return min(healthy, key=lambda u: self.connections[u])

    def acquire(self, url: str) -> None:
        self.connections[url] += 1

    def release(self, url: str) -> None:
        self.connections[url] -= 1

    def failed(self, url: str) -> None:
        self.failed_at[url] = self.clock()


class ServerTimeline:
    """Maps the server's times (which include inserted silence) back to ours."""

    def __init__(self) -> None:
        self.base = 0.0  # our time at which the current connection's time 0 lies
        self._starts: list[float] = []  # server seconds where silence was inserted
        self._totals: list[float] = []  # inserted seconds up to and including that one

    def reconnected(self, our_seconds: float) -> None:
        self.base = our_seconds
        self._starts.clear()
        self._totals.clear()

    def inserted(self, server_seconds: float, seconds: float) -> None:
        total = (self._totals[-1] if self._totals else 0.0) + seconds
        self._starts.append(server_seconds)
        self._totals.append(total)
        if len(self._starts) > 4096:  # keep it bounded: merge the oldest half
            del self._starts[:2048]
            del self._totals[:2048]

    def ours(self, server_seconds: float) -> float:
        i = bisect.bisect_right(self._starts, server_seconds)
        inserted = self._totals[i - 1] if i else 0.0
        return self.base + max(0.0, server_seconds - inserted)


@dataclass(eq=False)
class RemoteSession(Session):
    received: deque[WordMessage | EndWord | Step | None] = field(default_factory=deque)
    """Messages from the network thread, in our time; ``None`` means the stream ended."""
    ending: bool = False
    done: bool = False
    open_word: Word | None = None
    last_end: float = 0.0
    connection: _Connection | None = None

    def ready(self) -> bool:
        if self.finished:
            return False
        if self.received or self.inbox.available or self.flush_requested:
            return True
        return self.end_requested and (not self.ending or self.done)


class _Connection:
    """One speaker's WebSocket, run on the engine's network loop."""

    def __init__(
        self,
        session: RemoteSession,
        settings: RemoteSettings,
        loop: asyncio.AbstractEventLoop,
        pool: ServerPool,
    ) -> None:
        self.session = session
        self.settings = settings
        self.loop = loop
        self.pool = pool
        self.url = settings.url
        self.servers: list[str] = []
        """The server of each connection, in order (a stream that moved lists several)."""
        self.audio: deque[PCM] = deque()
        self.pending = np.zeros(0, dtype=np.float32)  # less than a frame, kept across reconnects
        self.audio_samples = 0
        self.our_samples = 0  # samples of real audio sent, on our timeline
        self.server_samples = 0  # samples sent on the current connection
        self.timeline = ServerTimeline()
        self.ending = False
        self.closed = False
        self._wake = asyncio.Event()
        self._marker_ids = itertools.count(1)
        self.task: asyncio.Task[None] | None = None
        self.connects = 0
        self.marker: int | None = None
        self.keepalive_frames = 0
        self.give_up_at = float("inf")
        self.refused: set[str] = set()
        """Servers that refused our API key: not asked again by this stream."""

    # Called on the network loop (through call_soon_threadsafe).
    def feed(self, pcm: PCM) -> None:
        self.audio.append(pcm)
        self.audio_samples += pcm.size
        cap = int(self.settings.max_buffer_seconds * SAMPLE_RATE)
        while self.audio_samples > cap and len(self.audio) > 1:
            dropped = self.audio.popleft()  # the server is unreachable: drop the oldest
            self.audio_samples -= dropped.size
            self.our_samples += dropped.size
            self.session.track.degraded = True
        self._wake.set()

    def finish(self) -> None:
        self.ending = True
        self.give_up_at = self.loop.time() + self.settings.flush_timeout
        self._wake.set()

    def _deliver(self, message: WordMessage | EndWord | Step | None) -> None:
        received = self.session.received
        if len(received) >= self.settings.max_received_messages:
            received.popleft()  # bounded: the worker is far behind; lose the oldest
        received.append(message)
        self.session.wake()

    async def run(self) -> None:
        backoff = Backoff(base=self.settings.backoff_initial, cap=self.settings.backoff_max)
        try:
            async for attempt in backoff.attempts():
                if self.closed:
                    return
                try:
                    if await self._session_once():
                        return
                    backoff.reset()
                except (OSError, websockets.WebSocketException, ProtocolError, TimeoutError) as exc:
                    self.pool.failed(self.url)
                    status = refused_status(exc)
                    if status is not None:
                        self.refused.add(self.url)
                        if self.refused.issuperset(self.pool.urls):
                            self.session.failure = EngineAuthError(
                                f"kyutai-remote: API key refused (HTTP {status}) by"
                                f" {', '.join(sorted(self.refused))}; check --kyutai-api-key"
                            )
                            return
                        log.warning("kyutai-remote %s refused the API key", self.url)
                        continue
                    if self.loop.time() >= self.give_up_at:  # closing: keep what arrived
                        log.warning("kyutai-remote %s: %s while closing", self.url, exc)
                        return
                    log.warning("kyutai-remote %s: %s; retry %d", self.url, exc, attempt + 1)
        finally:
            self._deliver(None)

    async def _session_once(self) -> bool:
        """Runs one connection; True when the stream is complete."""
        headers = {"kyutai-api-key": self.settings.api_key} if self.settings.api_key else {}
        self.url = self.pool.pick(exclude=self.refused)
        self.pool.acquire(self.url)
        try:
            return await self._connect_once(headers)
        finally:
            self.pool.release(self.url)

    async def _connect_once(self, headers: dict[str, str]) -> bool:
        async with websockets.connect(
            self.url,
            additional_headers=headers,
            max_size=self.settings.max_message_bytes,
            open_timeout=10,
        ) as ws:
            self.connects += 1
            self.servers.append(self.url)
            await self._await_ready(ws)
            self.server_samples = 0
            self.timeline.reconnected(self.our_samples / SAMPLE_RATE)
            receiver = asyncio.create_task(self._receive(ws))
            try:
                return await self._send(ws, receiver)
            finally:
                if not receiver.done():  # else _send has taken its result or exception
                    await cancel_and_wait(receiver)

    async def _await_ready(self, ws: websockets.ClientConnection) -> None:
        """Waits (at most ``ready_timeout``) for the server's first message before sending
        audio: a full server answers ``Error{"no free channels"}`` instead of ``Ready``,
        and audio sent to it meanwhile would be lost when the stream moves on."""
        try:
            data = await asyncio.wait_for(ws.recv(), self.settings.ready_timeout)
        except TimeoutError:
            return  # a server that does not announce itself: go on
        if isinstance(data, str):
            raise ProtocolError("server sent a text frame")
        self._on_message(decode_server_message(data, max_bytes=self.settings.max_message_bytes))

    async def _send(self, ws: websockets.ClientConnection, receiver: asyncio.Task[bool]) -> bool:
        idle = 0.0
        while True:
            if receiver.done():
                return receiver.result()  # raises what the receiver raised
            while self.audio:
                chunk = self.audio.popleft()
                self.audio_samples -= chunk.size
                self.pending = np.concatenate([self.pending, chunk])
            while self.pending.size >= FRAME_SAMPLES:
                await ws.send(encode(Audio(self.pending[:FRAME_SAMPLES])))
                self.pending = self.pending[FRAME_SAMPLES:]
                self.our_samples += FRAME_SAMPLES
                self.server_samples += FRAME_SAMPLES
                self.keepalive_frames += 1
                idle = 0.0
            if self.ending and not self.audio:
                if self.pending.size:
                    pad = np.zeros(FRAME_SAMPLES - self.pending.size, dtype=np.float32)
                    await ws.send(encode(Audio(np.concatenate([self.pending, pad]))))
                    self.our_samples += self.pending.size
                    self.server_samples += FRAME_SAMPLES
                    self.pending = self.pending[:0]
                return await self._flush(ws, receiver)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.1)
            except TimeoutError:
                idle += 0.1
            if idle >= self.settings.keepalive_seconds:
                # Muted speaker: one frame of silence keeps the server from timing out.
                self.timeline.inserted(
                    self.server_samples / SAMPLE_RATE, FRAME_SAMPLES / SAMPLE_RATE
                )
                await ws.send(encode(Audio(np.zeros(FRAME_SAMPLES, dtype=np.float32))))
                self.server_samples += FRAME_SAMPLES
                self.keepalive_frames += 1
                idle = 0.0

    async def _flush(self, ws: websockets.ClientConnection, receiver: asyncio.Task[bool]) -> bool:
        """Marker, then silence until the marker is echoed (or the time runs out)."""
        self.marker = next(self._marker_ids)
        await ws.send(encode(Marker(self.marker)))
        silence = encode(Audio(np.zeros(FRAME_SAMPLES, dtype=np.float32)))
        deadline = self.loop.time() + self.settings.flush_timeout
        while not receiver.done() and self.loop.time() < deadline:
            await ws.send(silence)
            self.server_samples += FRAME_SAMPLES
            await asyncio.sleep(0.01)  # faster than real time, so flushing is quick
        with contextlib.suppress(Exception):
            await ws.close()
        if receiver.done():
            # Raises what the receiver raised ("no free channels", a dropped connection):
            # the stream is not complete, so it is tried again (on another server of a pool).
            return receiver.result()
        return True

    async def _receive(self, ws: websockets.ClientConnection) -> bool:
        async for data in ws:
            if isinstance(data, str):
                raise ProtocolError("server sent a text frame")
            message = decode_server_message(data, max_bytes=self.settings.max_message_bytes)
            if self._on_message(message):
                return True
        raise ConnectionError("server closed the connection")

    def _on_message(self, message: ServerMessage) -> bool:
        """Hands a server message on; True once our closing marker came back."""
        if isinstance(message, WordMessage):
            self._deliver(WordMessage(message.text, self.timeline.ours(message.start_time)))
        elif isinstance(message, EndWord):
            self._deliver(EndWord(self.timeline.ours(message.stop_time)))
        elif isinstance(message, Step):
            self._deliver(message)
        elif isinstance(message, Marker):
            return self.ending and message.id == self.marker
        elif isinstance(message, Error):
            raise ProtocolError(f"server error: {message.message}")
        return False


class KyutaiRemoteEngine(Engine):
    def __init__(self, settings: RemoteSettings, *, max_streams: int | None = None) -> None:
        urls = (settings.url, *settings.more_urls)
        for url in urls:
            if not url.startswith(("ws://", "wss://")):
                raise EngineError(f"--kyutai-url must be ws:// or wss://, got {url!r}")
        self.settings = settings
        self.pool = ServerPool(urls, cooldown_seconds=settings.server_cooldown_seconds)
        self.info = EngineInfo(
            name="kyutai-remote",
            sample_rate=SAMPLE_RATE,
            frame_samples=FRAME_SAMPLES,
            delay_seconds=settings.delay_seconds,
            languages=("en", "fr"),
            max_streams=max_streams,
            model=" ".join(self.pool.urls),
            description=f"Kyutai ASR streaming server(s) at {', '.join(self.pool.urls)}",
            real_time_only=True,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kyutai-remote-net", daemon=True
        )
        self._thread.start()

    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> RemoteSession:
        session = RemoteSession(track=track, inbox=inbox, language=language)
        connection = _Connection(session, self.settings, self._loop, self.pool)
        session.connection = connection

        def start() -> None:
            connection.task = self._loop.create_task(connection.run())

        self._loop.call_soon_threadsafe(start)
        return session

    def step(self, sessions: Sequence[Session]) -> None:
        for s in sessions:
            if not isinstance(s, RemoteSession) or s.connection is None:
                continue
            # Read the end flag before draining the inbox: audio pushed just before a
            # close lands in the inbox before the flag is set, so it is sent, not lost.
            ending = s.end_requested
            if s.inbox.available:
                _, pcm = s.inbox.take()
                self._loop.call_soon_threadsafe(s.connection.feed, pcm)
            if ending and not s.ending:
                s.ending = True
                self._loop.call_soon_threadsafe(s.connection.finish)
            self._apply_received(s)
            if s.flush_requested:
                s.flush_requested = False
                self._close_utterance(s)
            if s.done and (s.ending or s.failure is not None):
                self._close_utterance(s)
                s.end_requested = False
                s.finished = True

    def _apply_received(self, s: RemoteSession) -> None:
        while s.received:
            message = s.received.popleft()
            if message is None:
                s.done = True
            elif isinstance(message, WordMessage):
                if s.open_word is not None:
                    self._end_word(s, max(s.open_word.start, message.start_time))
                if (
                    s.track.is_open
                    and message.start_time - s.last_end > self.settings.utterance_gap_seconds
                ):
                    s.track.end_utterance()
                s.open_word = Word(message.text, message.start_time, message.start_time)
                s.track.update(tail=[s.open_word])
            elif isinstance(message, EndWord):
                if s.open_word is not None:
                    self._end_word(s, message.stop_time)
            else:
                self._on_step(s, message)

    def _on_step(self, s: RemoteSession, step: Step) -> None:
        head = self.settings.end_of_turn_head
        paused = len(step.prs) > head and step.prs[head] > self.settings.end_of_turn_threshold
        heard = step.step_idx * FRAME_SAMPLES / SAMPLE_RATE - self.settings.delay_seconds
        silent = heard - s.last_end > self.settings.utterance_gap_seconds
        if s.open_word is None and s.track.is_open and (paused or silent):
            s.track.end_utterance()

    def _end_word(self, s: RemoteSession, end: float) -> None:
        assert s.open_word is not None
        word = Word(s.open_word.text, s.open_word.start, max(s.open_word.start, end))
        s.open_word = None
        s.last_end = word.end
        s.track.update(commit=[word])

    def _close_utterance(self, s: RemoteSession) -> None:
        if s.open_word is not None:
            self._end_word(s, s.open_word.end)
        s.track.end_utterance()

    def release_session(self, session: Session) -> None:
        if isinstance(session, RemoteSession) and session.connection is not None:
            connection = session.connection

            def stop() -> None:
                connection.closed = True
                if connection.task is not None and not connection.task.done():
                    connection.task.cancel()

            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(stop)

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def load(options: EngineOptions) -> KyutaiRemoteEngine:
    if not (options.kyutai_urls or options.kyutai_url):
        raise EngineError(
            "kyutai-remote needs --kyutai-url ws://HOST:PORT/api/asr-streaming "
            "(and --kyutai-api-key KEY)"
        )
    urls = options.kyutai_urls or (str(options.kyutai_url),)
    settings = RemoteSettings(
        url=urls[0], more_urls=tuple(urls[1:]), api_key=options.kyutai_api_key
    )
    return KyutaiRemoteEngine(settings, max_streams=options.max_streams)


def available_models() -> list[ModelListing]:
    return [
        ModelListing(
            "kyutai-remote",
            "-",
            "--kyutai-url",
            True,
            "any /api/asr-streaming server (moshi-server or `captions asr-serve`)",
        )
    ]
