"""Following one room for captions, free of network I/O (:class:`RoomCaptioner`).

The sidecar (:mod:`meeting.sidecar`) feeds each speaker's decoded audio into one
:class:`~captions.runtime.SpeechStream` of a shared :class:`~captions.runtime.EngineRunner`
through this module; the speaker is the participant's identity and display name, so
attribution is exact. Events go to a :class:`CaptionSink` (the acked publisher,
:mod:`meeting.publisher`).

- a participant who leaves, or whose track ends, has their stream closed: its last
  words arrive as a final;
- a muted track costs nothing (the SFU stops forwarding it, and any audio that still
  arrives is dropped), and the open utterance is flushed on mute;
- digital silence is not pushed after ``silence_grace_seconds`` (enough for the
  engine's end-of-speech detection), and the utterance is flushed instead;
- someone who rejoins gets a fresh stream, and so does a speaker whose stream the
  engine ended by itself (a failed step): their next audio opens a new one;
- a stream the engine gave up on (``SpeechStream.failure``, e.g. a remote server that
  refused our API key) is logged as an error and dropped; the room reports captions
  unavailable (``SidecarStatus.unavailable``) until a stream works again, and the speaker
  gets a fresh stream after ``retry_refused_seconds``. Other speakers and rooms go on;
- captions *off* (set by the host) closes every stream and drops all audio before the
  engine; *on* resumes; a new room language reopens streams in that language when the
  engine supports it.

Word times stay on the wall clock across the audio that is not pushed: each stream keeps
anchors (stream time, wall time) taken whenever audio resumes after a gap, and every
published event carries ``stream_started_at`` for its words. The anchor is the one of
the event's utterance start: the silence's flush ends the utterance before the gap, so
no utterance spans one (unless the engine is more than the whole gap behind, when the
flush and the next audio reach it in one step and the later words are dated too early).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from captions.events import CaptionEvent, Speaker
from captions.runtime import EngineRunner, SpeechStream
from common.aio import cancel_and_wait
from common.exceptions import CaptionsError, EngineError
from meeting.protocol import SidecarStatus

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
        on_degraded: Callable[[bool], None],
        on_failure: Callable[[SpeakerFeed, CaptionsError], None],
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
        self._on_failure = on_failure
        self.stream: SpeechStream | None = None
        self._pump: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
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
        if self.stream is not None and self.stream.ended and self.stream.failure is None:
            # The runner ended it by itself (a failed engine step): a fresh stream, or
            # this speaker would never be captioned again. (A stream with a ``failure``
            # raises it below and is retried after a wait; see :meth:`_forward`.)
            log.warning("stream of %s ended by the engine; opening a new one", self.speaker.id)
            self._let_finish(self._pump)
            self.stream, self._pump = None, None
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

    def _let_finish(self, pump: asyncio.Task[None] | None) -> None:
        """Keeps an ended stream's pump referenced until it has forwarded its last events."""
        if pump is not None and not pump.done():
            self._finishing.add(pump)
            pump.add_done_callback(self._finishing.discard)

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
        try:
            async for event in stream:
                start = event.start if event.start is not None else 0.0
                self.sink.caption(
                    replace(event, utterance=base + event.utterance),
                    stream=stream_id,
                    stream_started_at=anchors.origin_for(start),
                )
                # Every event says whether its stream is behind; caught up clears the health.
                self._on_degraded(bool(event.flags.get("degraded")))
        except CaptionsError as exc:  # the engine gave up on this stream (e.g. key refused)
            if self.stream is stream:  # the next audio opens a fresh one (after a wait)
                self.stream, self._pump = None, None
            self._on_failure(self, exc)

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
        self.unavailable = False
        """The engine gave up on a stream of this room and none has worked since."""
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
            unavailable=self.unavailable,
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
                on_failure=self._stream_failed,
                **self._feed_options,
            )
        return feed

    def _stream_failed(self, feed: SpeakerFeed, exc: CaptionsError) -> None:
        log.error("captions unavailable for %s in %s: %s", feed.speaker.id, self.room, exc)
        feed.refused_until = time.monotonic() + self.retry_refused_seconds
        if not self.unavailable:
            self.unavailable = True
            self.sink.status(self.status())

    def _mark_degraded(self, degraded: bool) -> None:
        if self.unavailable:  # a stream works again
            self.unavailable = False
            self.sink.status(self.status())
        if degraded and not self.degraded:
            self.degraded = True
            self.sink.status(self.status())
        elif not degraded and self.degraded:
            self._refresh_degraded()

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
        """Clears ``degraded`` once no open stream is behind (or still marked for dropped
        audio)."""
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
