"""Asyncio layer over an :class:`~captions.engine.Engine`: streams, a worker thread, events.

The engine's compute runs in one dedicated worker thread so network I/O on the
event loop never waits behind inference. Each round, the worker takes every session
that has work, in an order that rotates every round so no speaker starves, and calls
``engine.step`` once with all of them (engines batch or serve them in turn).

Bounded everywhere:

- audio: each session's :class:`AudioInbox` keeps at most ``max_buffer_seconds``
  (30 s); only an engine that far behind drops the oldest audio;
- overload: an engine that cannot keep up with every speaker does not drop captions:
  each step finds more audio waiting and covers it at once (coarser steps, later
  captions, less compute per second of audio). A stream whose audio waited more than
  ``delayed_after_seconds`` when its step began is marked degraded (its events carry
  ``flags.degraded``: the page shows "Captions delayed"), and unmarked once its backlog
  is under half of that again;
- events: each stream's queue holds at most ``max_pending_events``; a newer partial
  of an utterance replaces the queued one (coalescing), and if finals alone overflow
  the queue the oldest are dropped and counted in ``SpeechStream.dropped_events``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator

import numpy.typing as npt

from captions.audio import PCM, StreamResampler
from captions.clock import Clock, WallClock
from captions.engine import AudioInbox, Engine, Session, sessions_needing_work
from captions.events import CaptionEvent, Speaker
from captions.track import CaptionTrack
from common.exceptions import CaptionsError, StreamClosedError

log = logging.getLogger(__name__)


class SpeechStream:
    """One speaker's live stream: push audio in, iterate caption events out."""

    def __init__(
        self,
        runner: EngineRunner,
        session: Session,
        *,
        max_pending_events: int,
    ) -> None:
        self._runner = runner
        self.session = session
        self.speaker: Speaker = session.track.speaker
        self._resampler = StreamResampler(session.inbox.sample_rate)
        self._events: deque[CaptionEvent] = deque()
        self._max_events = max(2, max_pending_events)
        self._event_ready = asyncio.Event()
        self._done = asyncio.Event()
        self._closing = False
        self.dropped_events = 0
        self.failure: CaptionsError | None = None
        """Set when the engine gave up on the stream (e.g. its server refused our key):
        iteration raises it after the last events, and so does :meth:`push_audio`."""

    @property
    def degraded(self) -> bool:
        """Captions are late (the engine is behind) or audio was dropped; cleared once
        the engine has caught up."""
        return self.session.track.degraded

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def ended(self) -> bool:
        """The runner finished the stream (closed, aborted, or its engine step failed):
        audio pushed now reaches no engine."""
        return self._done.is_set()

    def push_audio(self, pcm: npt.ArrayLike, sample_rate: int) -> None:
        """Queues audio of any rate and layout; never blocks (see the module's policy)."""
        if self.failure is not None:
            raise self.failure
        if self._closing:
            raise StreamClosedError(f"stream for {self.speaker.id} is closed")
        native = self._resampler(pcm, sample_rate)
        dropped = self.session.inbox.push(native)
        if dropped:
            self._runner.dropped_audio_seconds += dropped / self.session.inbox.sample_rate
        if dropped and not self.session.track.degraded:
            log.warning("engine behind: dropping old audio of %s", self.speaker.id)
            self.session.track.degraded = True
        self._runner._wake()

    def flush(self) -> None:
        """Asks the engine to finalise the current utterance with the audio it has."""
        if not self._closing:
            self.session.flush_requested = True
            self._runner._wake()

    async def aclose(self) -> None:
        """Ends the stream: its last words arrive as a final event, then iteration stops."""
        if not self._closing:
            self._closing = True
            self.session.end_requested = True
            self._runner._wake()
        await self._done.wait()

    def abort(self) -> None:
        """Drops the stream without flushing (its owner is gone)."""
        self._closing = True
        self._runner._abandon(self)

    def __aiter__(self) -> AsyncIterator[CaptionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[CaptionEvent]:
        while True:
            while self._events:
                yield self._events.popleft()
            if self._done.is_set():
                if self.failure is not None:
                    raise self.failure
                return
            self._event_ready.clear()
            await self._event_ready.wait()

    # Called on the event loop by the worker through call_soon_threadsafe.
    def _deliver(self, events: list[CaptionEvent]) -> None:
        for event in events:
            self._enqueue(event)
        self._event_ready.set()

    def _enqueue(self, event: CaptionEvent) -> None:
        q = self._events
        if q and q[-1].utterance == event.utterance and q[-1].kind == "partial":
            q.pop()  # coalesce: the newer revision of the same utterance supersedes it
        q.append(event)
        while len(q) > self._max_events:
            victim = next((e for e in q if e.kind == "partial"), None)
            if victim is not None:
                q.remove(victim)
            else:
                q.popleft()
            self.dropped_events += 1

    def _finish(self, failure: CaptionsError | None = None) -> None:
        self.failure = failure
        self._done.set()
        self._event_ready.set()


class EngineRunner:
    """Owns one engine and the worker thread that runs it for every stream."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        max_buffer_seconds: float = 30.0,
        max_pending_events: int = 256,
        delayed_after_seconds: float = 2.0,
    ) -> None:
        self.engine = engine
        self.clock: Clock = clock or WallClock()
        self.max_buffer_seconds = max_buffer_seconds
        self.delayed_after_seconds = delayed_after_seconds
        self.max_pending_events = max_pending_events
        self._streams: dict[int, SpeechStream] = {}
        self._order: list[int] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.steps = 0
        self.busy_seconds = 0.0
        """Time the worker spent in engine steps (its busy fraction is the rate of this)."""
        self.dropped_audio_seconds = 0.0
        """Audio dropped because the engine fell behind, over every stream."""

    async def __aenter__(self) -> EngineRunner:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._work, name=f"engine-{self.engine.info.name}", daemon=True
        )
        self._thread.start()

    @property
    def active_streams(self) -> int:
        with self._cond:
            return len(self._streams)

    def open_stream(self, speaker: Speaker, *, language: str | None = None) -> SpeechStream:
        """Starts a stream for ``speaker``. Raises CapacityError when the engine is full."""
        if self._thread is None:
            self.start()
        track = CaptionTrack(speaker, self.clock)
        inbox = AudioInbox(self.engine.info.sample_rate, max_seconds=self.max_buffer_seconds)
        with self._cond:
            # Engine sessions are created under the lock: slot pools are not thread-safe.
            session = self.engine.create_session(track, inbox, language=language)
            session.wake = self._wake
            stream = SpeechStream(self, session, max_pending_events=self.max_pending_events)
            self._streams[id(session)] = stream
            self._order.append(id(session))
            self._cond.notify()
        return stream

    async def aclose(self, *, timeout: float = 30.0) -> None:
        """Flushes every open stream, then stops the worker and releases the engine.

        Bounded: streams that have not flushed within ``timeout`` seconds (an engine
        stuck in a step) are aborted, and the worker thread, a daemon, is not waited
        for longer than that either.
        """
        streams = list(self._streams.values())
        if streams:
            flushes = [asyncio.ensure_future(s.aclose()) for s in streams]
            _, pending = await asyncio.wait(flushes, timeout=timeout)
            for task in pending:
                task.cancel()
            for stream in streams:
                if not stream._done.is_set():
                    log.warning("stream of %s did not flush in time; aborted", stream.speaker.id)
                    stream.abort()
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await asyncio.get_running_loop().run_in_executor(None, thread.join, timeout)
            if thread.is_alive():
                log.warning("engine worker still busy after %.0f s; not waiting for it", timeout)
                return  # closing the engine under a running step could crash it
        self.engine.close()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _abandon(self, stream: SpeechStream) -> None:
        stream.session.end_requested = False
        with self._cond:
            if self._streams.pop(id(stream.session), None) is not None:
                self._order.remove(id(stream.session))
                self.engine.release_session(stream.session)
        stream._finish()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    batch = sessions_needing_work([self._streams[k].session for k in self._order])
                    if batch:
                        break
                    self._cond.wait(timeout=0.5)
                if self._stop:
                    return
                # Rotate so whoever went first this round goes last next round.
                self._order.append(self._order.pop(0))
            self._mark_delays(batch)
            started = time.perf_counter()
            try:
                self.engine.step(batch)
            except Exception:
                log.exception("engine step failed; ending the affected streams")
                for s in batch:
                    s.finished = True
            self.busy_seconds += time.perf_counter() - started
            self.steps += 1
            self._dispatch(batch)

    def _mark_delays(self, batch: list[Session]) -> None:
        """Degraded while a stream's audio waits longer than ``delayed_after_seconds``."""
        for session in batch:
            backlog = session.inbox.available / session.inbox.sample_rate
            if backlog > self.delayed_after_seconds:
                if not session.track.degraded:
                    log.info("engine behind: %s waits %.1f s", session.track.speaker.id, backlog)
                session.track.degraded = True
            elif backlog < self.delayed_after_seconds / 2:
                session.track.degraded = False

    def _dispatch(self, batch: list[Session]) -> None:
        assert self._loop is not None
        for session in batch:
            stream = self._streams.get(id(session))
            if stream is None:
                continue
            events = session.track.take_events()
            if events:
                self._loop.call_soon_threadsafe(stream._deliver, events)
            if session.finished:
                with self._cond:
                    self._streams.pop(id(session), None)
                    if id(session) in self._order:
                        self._order.remove(id(session))
                    self.engine.release_session(session)
                self._loop.call_soon_threadsafe(stream._finish, session.failure)


async def push_in_real_time(
    stream: SpeechStream,
    pcm: PCM,
    sample_rate: int,
    *,
    chunk_seconds: float = 0.1,
    clock: Clock | None = None,
) -> float:
    """Pushes ``pcm`` as if it were being spoken from now on; returns the start time.

    Each chunk is pushed at the moment its last sample has been spoken (audio does not
    exist before that), on an absolute schedule so pacing does not drift.
    """
    clock = clock or WallClock()
    chunk = max(1, round(chunk_seconds * sample_rate))
    origin = clock.now()
    for begin in range(0, pcm.size, chunk):
        end = min(begin + chunk, pcm.size)
        await asyncio.sleep(max(0.0, origin + end / sample_rate - clock.now()))
        stream.push_audio(pcm[begin:end], sample_rate)
    return origin
