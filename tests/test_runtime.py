import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from captions.engine import Session
from captions.events import CaptionEvent, Speaker
from captions.runtime import EngineRunner
from common.exceptions import CapacityError, StreamClosedError
from tests.fakes import ScriptedEngine

SCRIPT = [("one", 0.0, 0.3), ("two", 0.4, 0.7), ("three", 0.8, 1.1)]


async def _collect(stream) -> list[CaptionEvent]:  # type: ignore[no-untyped-def]
    return [e async for e in stream]


async def test_close_flushes_last_words_as_final() -> None:
    engine = ScriptedEngine(SCRIPT, delay=10.0)  # nothing would finalise on its own
    async with EngineRunner(engine) as runner:
        stream = runner.open_stream(Speaker("a", "Alice"))
        collector = asyncio.create_task(_collect(stream))
        stream.push_audio(np.zeros(48_000, dtype=np.float32), 48_000)  # 1 s at 48 kHz
        await stream.aclose()
        events = await collector
    assert events[-1].kind == "final"
    assert events[-1].text == "one two"
    assert all(w.final for w in events[-1].words)
    with pytest.raises(StreamClosedError):
        stream.push_audio(np.zeros(10, dtype=np.float32), 16_000)


async def test_resamples_any_rate_and_layout() -> None:
    engine = ScriptedEngine(SCRIPT)
    async with EngineRunner(engine) as runner:
        stream = runner.open_stream(Speaker("a"))
        stereo = np.zeros((44_100, 2), dtype=np.int16)
        stream.push_audio(stereo, 44_100)
        await stream.aclose()
    assert abs(engine.samples_seen["a"] - 16_000) < 200


async def test_capacity_refusal_is_clear() -> None:
    engine = ScriptedEngine(SCRIPT, max_streams=1)
    async with EngineRunner(engine) as runner:
        runner.open_stream(Speaker("a"))
        with pytest.raises(CapacityError, match="no free channels"):
            runner.open_stream(Speaker("b"))


async def test_overflow_drops_old_audio_and_marks_degraded() -> None:
    engine = ScriptedEngine(SCRIPT)
    runner = EngineRunner(engine, max_buffer_seconds=0.5)
    # Not started: the worker never drains, as if the engine had fallen behind.
    runner._loop = asyncio.get_running_loop()
    runner._thread = object()  # type: ignore[assignment]
    stream = runner.open_stream(Speaker("a"))
    for _ in range(20):
        stream.push_audio(np.zeros(1600, dtype=np.float32), 16_000)
    assert stream.session.inbox.available == 8000
    assert stream.session.inbox.dropped_samples == 20 * 1600 - 8000
    assert stream.degraded


async def test_a_late_engine_marks_its_streams_delayed_until_it_catches_up() -> None:
    """Overload loses nothing: the audio waits (coarser steps), events say "degraded"
    while it waits too long, and the mark clears once the engine has caught up."""

    class SlowEngine(ScriptedEngine):
        slow = True

        def step(self, sessions: Sequence[Session]) -> None:
            super().step(sessions)  # takes the audio first, as real engines do
            if self.slow:
                time.sleep(0.6)  # then computes longer than the audio it took lasts

    engine = SlowEngine([(f"w{i}", i * 0.2, i * 0.2 + 0.1) for i in range(30)], delay=0.0)
    async with EngineRunner(engine, delayed_after_seconds=1.0) as runner:
        stream = runner.open_stream(Speaker("a"))
        collector = asyncio.create_task(_collect(stream))
        pushed = 0
        while not stream.degraded and pushed < 100:  # 5x faster than real time
            stream.push_audio(np.zeros(1600, dtype=np.float32), 16_000)
            pushed += 1
            await asyncio.sleep(0.02)
        assert stream.degraded
        engine.slow = False
        limit = pushed + 40
        while stream.degraded and pushed < limit:  # now the engine keeps up: within 2 s
            stream.push_audio(np.zeros(1600, dtype=np.float32), 16_000)
            pushed += 1
            await asyncio.sleep(0.05)
        assert not stream.degraded
        await stream.aclose()
        events = await collector
    assert stream.session.inbox.dropped_samples == 0
    assert any(e.flags.get("degraded") for e in events)
    assert not events[-1].flags.get("degraded")
    assert engine.samples_seen["a"] == pushed * 1600  # every sample reached the engine


async def test_every_speaker_gets_served_in_rotating_order() -> None:
    engine = ScriptedEngine(SCRIPT)
    async with EngineRunner(engine) as runner:
        streams = [runner.open_stream(Speaker(n)) for n in "abc"]
        for _ in range(5):
            for s in streams:
                s.push_audio(np.zeros(1600, dtype=np.float32), 16_000)
            await asyncio.sleep(0.02)
        await asyncio.gather(*(s.aclose() for s in streams))
    assert set(engine.samples_seen) == {"a", "b", "c"}
    assert all(v == 8000 for v in engine.samples_seen.values())


async def test_partials_coalesce_when_consumer_is_slow() -> None:
    engine = ScriptedEngine([(f"w{i}", i * 0.1, i * 0.1 + 0.05) for i in range(50)], delay=100)
    async with EngineRunner(engine, max_pending_events=4) as runner:
        stream = runner.open_stream(Speaker("a"))
        for _ in range(50):
            stream.push_audio(np.zeros(1600, dtype=np.float32), 16_000)
            await asyncio.sleep(0.001)
        await stream.aclose()
        events = await _collect(stream)
    assert len(events) <= 4
    assert events[-1].kind == "final" and len(events[-1].words) == 50


async def test_close_is_bounded_when_the_engine_is_stuck() -> None:
    import threading

    release = threading.Event()

    class StuckEngine(ScriptedEngine):
        def step(self, sessions):  # type: ignore[no-untyped-def]
            release.wait(10)  # a step that does not come back in time
            super().step(sessions)

    runner = EngineRunner(StuckEngine(SCRIPT))
    runner.start()
    stream = runner.open_stream(Speaker("a"))
    stream.push_audio(np.zeros(1600, dtype=np.float32), 16_000)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(runner.aclose(timeout=0.3), 5)
    assert stream.closed
    release.set()
