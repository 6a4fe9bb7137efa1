"""Live-runtime measurement: audio paced in real time through an EngineRunner, words
stamped on arrival (wall clock). ``captions bench`` runs many speakers this way, and
``captions eval`` runs items this way (``mode=realtime``) beside its simulation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from captions.audio import PCM
from captions.clock import WallClock
from captions.engine import AudioInbox, Engine, Session
from captions.events import CaptionEvent, Speaker
from captions.runtime import EngineRunner, SpeechStream, push_in_real_time
from captions.simulate import StreamRecord
from captions.track import CaptionTrack


class TimedEngine(Engine):
    """Delegates to an engine, adding up the time spent in ``step``; never closes it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.info = engine.info
        self.costs = engine.costs
        self.busy_seconds = 0.0

    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> Session:
        return self.engine.create_session(track, inbox, language=language)

    def step(self, sessions: Sequence[Session]) -> None:
        begin = time.perf_counter()
        try:
            self.engine.step(sessions)
        finally:
            self.busy_seconds += time.perf_counter() - begin

    def release_session(self, session: Session) -> None:
        self.engine.release_session(session)

    def close(self) -> None:
        """The engine is reused across runs; its owner closes it."""


async def stream_in_real_time(
    stream: SpeechStream,
    pcm: PCM,
    *,
    tail_seconds: float,
    chunk_seconds: float = 0.1,
) -> StreamRecord:
    """Speaks ``pcm`` then ``tail_seconds`` of silence into ``stream`` at real-time pace,
    closes it, and returns every event it emitted (times relative to the first sample)."""
    rate = stream.session.inbox.sample_rate
    audio = np.concatenate([pcm, np.zeros(round(tail_seconds * rate), np.float32)])
    events: list[CaptionEvent] = []

    async def collect() -> None:
        async for event in stream:
            events.append(event)

    collector = asyncio.create_task(collect())
    origin = await push_in_real_time(stream, audio, rate, chunk_seconds=chunk_seconds)
    await stream.aclose()
    await collector
    return StreamRecord(
        events=tuple(events),
        origin=origin,
        audio_seconds=pcm.size / rate,
        fed_seconds=audio.size / rate,
        compute_seconds=0.0,
        steps=0,
        dropped_seconds=stream.session.inbox.dropped_samples / rate,
    )


def run_in_real_time(
    engine: Engine,
    pcm: PCM,
    *,
    speaker: Speaker,
    language: str | None = None,
    tail_seconds: float = 2.0,
    chunk_seconds: float = 0.1,
) -> StreamRecord:
    """One item through a fresh live runtime; ``compute_seconds`` is the engine's busy time."""
    timed = TimedEngine(engine)

    async def run() -> StreamRecord:
        async with EngineRunner(timed, clock=WallClock()) as runner:
            stream = runner.open_stream(speaker, language=language)
            record = await stream_in_real_time(
                stream, pcm, tail_seconds=tail_seconds, chunk_seconds=chunk_seconds
            )
            steps = runner.steps
        return replace(record, compute_seconds=timed.busy_seconds, steps=steps)

    return asyncio.run(run())
