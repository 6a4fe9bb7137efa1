"""The sidecar's per-speaker logic (RoomCaptioner) against the scripted engine, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from captions.engine import Session
from captions.events import CaptionEvent
from captions.runtime import EngineRunner
from meeting.captioner import RoomCaptioner
from meeting.protocol import SidecarStatus
from tests.fakes import ScriptedEngine

RATE = 48_000
CHUNK = 960  # 20 ms, as Opus frames arrive


class ListSink:
    def __init__(self) -> None:
        self.events: list[tuple[CaptionEvent, str, float]] = []
        self.statuses: list[SidecarStatus] = []

    def caption(self, event: CaptionEvent, *, stream: str, stream_started_at: float) -> None:
        self.events.append((event, stream, stream_started_at))

    def status(self, status: SidecarStatus) -> None:
        self.statuses.append(status)

    def finals(self, speaker: str | None = None) -> list[CaptionEvent]:
        return [
            e for e, _, _ in self.events if e.kind == "final" and speaker in (None, e.speaker.id)
        ]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def feed(
    captioner: RoomCaptioner, identity: str, pcm: np.ndarray, clock: FakeClock | None = None
) -> None:
    for i in range(0, len(pcm), CHUNK):
        chunk = pcm[i : i + CHUNK]
        if clock is not None:
            clock.t += len(chunk) / RATE
        captioner.audio(identity, identity.title(), chunk, RATE)
    await asyncio.sleep(0)


async def settle(engine: ScriptedEngine, runner: EngineRunner) -> None:
    for _ in range(100):
        await asyncio.sleep(0.01)
        if all(not s.session.ready() for s in list(runner._streams.values())):
            return


SCRIPT = [("hello", 0.2, 0.5), ("there", 0.6, 0.9), ("friend", 1.4, 1.8)]


async def test_leaver_is_flushed_and_rejoin_gets_a_fresh_stream() -> None:
    engine = ScriptedEngine(SCRIPT, delay=5.0)  # nothing final before the flush
    sink = ListSink()
    async with EngineRunner(engine) as runner:
        captioner = RoomCaptioner("r", runner, sink)
        await feed(captioner, "alice", tone(1.0))
        await settle(engine, runner)
        assert sink.finals() == []
        first_stream = captioner.feeds["alice"].stream
        await captioner.participant_left("alice")  # mid-utterance
        (final,) = sink.finals("alice")
        assert final.text == "hello there" and all(w.final for w in final.words)
        assert final.speaker.name == "Alice"
        await feed(captioner, "alice", tone(1.0))
        assert captioner.feeds["alice"].stream is not first_stream
        await captioner.aclose()
    streams = {s for e, s, _ in sink.events}
    assert len(streams) == 2
    finals = sink.finals("alice")
    assert len(finals) == 2 and finals[1].utterance > finals[0].utterance


async def test_muted_and_silent_audio_never_reaches_the_engine() -> None:
    engine = ScriptedEngine(SCRIPT)
    sink = ListSink()
    async with EngineRunner(engine) as runner:
        captioner = RoomCaptioner("r", runner, sink, silence_grace_seconds=0.5)
        # Silence alone opens no stream at all.
        await feed(captioner, "bob", np.zeros(RATE * 3, np.float32))
        assert runner.active_streams == 0
        await feed(captioner, "bob", tone(0.5))
        await settle(engine, runner)
        seen = engine.samples_seen["bob"]
        assert abs(seen - 8000) <= 64  # 0.5 s at 16 kHz (resampler latency aside)
        # Long digital silence: only the grace period is pushed.
        await feed(captioner, "bob", np.zeros(RATE * 5, np.float32))
        await settle(engine, runner)
        assert engine.samples_seen["bob"] - seen <= 0.5 * 16000 + 320
        seen = engine.samples_seen["bob"]
        captioner.set_muted("bob", "Bob", True)
        await feed(captioner, "bob", tone(2.0))
        await settle(engine, runner)
        assert engine.samples_seen["bob"] == seen
        captioner.set_muted("bob", "Bob", False)
        await feed(captioner, "bob", tone(0.5))
        await settle(engine, runner)
        assert abs(engine.samples_seen["bob"] - (seen + 8000)) <= 64
        await captioner.aclose()


async def test_host_off_drops_audio_before_the_engine_and_on_resumes() -> None:
    engine = ScriptedEngine(SCRIPT, delay=5.0)
    sink = ListSink()
    async with EngineRunner(engine) as runner:
        captioner = RoomCaptioner("r", runner, sink)
        await feed(captioner, "alice", tone(1.0))
        await captioner.set_state(enabled=False, language=None)
        assert sink.finals("alice")[0].text == "hello there"  # flushed on off
        assert runner.active_streams == 0
        seen = engine.samples_seen["alice"]
        await feed(captioner, "alice", tone(3.0))
        await settle(engine, runner)
        assert engine.samples_seen["alice"] == seen
        assert not sink.statuses[-1].degraded
        await captioner.set_state(enabled=True, language=None)
        await feed(captioner, "alice", tone(1.0))
        await settle(engine, runner)
        assert abs(engine.samples_seen["alice"] - (seen + 16000)) <= 64
        await captioner.aclose()


async def test_language_change_reopens_streams_in_a_supported_language() -> None:
    engine = ScriptedEngine(SCRIPT)
    engine.info = engine.info.__class__(**{**engine.info.__dict__, "languages": ("en", "fr")})
    sink = ListSink()
    async with EngineRunner(engine) as runner:
        captioner = RoomCaptioner("r", runner, sink)
        await feed(captioner, "alice", tone(0.5))
        assert captioner.feeds["alice"].stream.session.language is None
        await captioner.set_state(enabled=True, language="fr")
        await feed(captioner, "alice", tone(0.5))
        assert captioner.feeds["alice"].stream.session.language == "fr"
        assert captioner.engine_language == "fr"
        await captioner.set_state(enabled=True, language="xx")  # unsupported: engine default
        await feed(captioner, "alice", tone(0.5))
        assert captioner.feeds["alice"].stream.session.language is None
        await captioner.aclose()


async def test_word_times_map_to_wall_clock_across_skipped_audio() -> None:
    # Stream time: 1 s tone, 0.2 s of pushed silence (grace), then the second tone at 1.2 s.
    engine = ScriptedEngine([("one", 0.1, 0.4), ("two", 1.3, 1.6)], delay=0.2)
    sink = ListSink()
    clock = FakeClock()
    async with EngineRunner(engine) as runner:
        captioner = RoomCaptioner("r", runner, sink, silence_grace_seconds=0.2, now=clock)
        start = clock.t
        await feed(captioner, "alice", tone(1.0), clock)
        await feed(captioner, "alice", np.zeros(RATE * 10, np.float32), clock)  # 10 s skipped
        # Live, the engine acts on the silence's flush long before 10 s are over; a loaded
        # test machine may not have run that step yet, and a flush still pending would
        # take in the next tone's audio as well (one event, one origin: see the module doc).
        for _ in range(500):
            if sink.finals("alice"):
                break
            await asyncio.sleep(0.01)
        await feed(captioner, "alice", tone(1.0), clock)
        await settle(engine, runner)
        await captioner.aclose()
    wall = {
        w.text: origin + w.start
        for e, _, origin in sink.events
        if e.kind == "final"
        for w in e.words
    }
    assert abs(wall["one"] - (start + 0.1)) < 0.05
    # "two" came 0.1 s into the second tone, which started 11 s after the first one.
    assert abs(wall["two"] - (start + 11.1)) < 0.05


async def test_a_full_engine_refuses_a_speaker_and_is_retried_later() -> None:
    engine = ScriptedEngine(SCRIPT, max_streams=1)
    sink = ListSink()
    async with EngineRunner(engine) as runner:
        captioner = RoomCaptioner("r", runner, sink, retry_refused_seconds=0.2)
        await feed(captioner, "alice", tone(0.2))
        await feed(captioner, "bob", tone(0.2))  # no free slot: bob waits, alice goes on
        assert captioner.feeds["bob"].stream is None and runner.active_streams == 1
        await captioner.participant_left("alice")
        await asyncio.sleep(0.25)
        await feed(captioner, "bob", tone(0.2))
        assert captioner.feeds["bob"].stream is not None
        await captioner.aclose()


async def test_captions_delayed_health_follows_the_engine_backlog() -> None:
    """The room shows "Captions delayed" while a stream's audio waits, and no longer once
    the engine has caught up (events without the flag clear it)."""
    engine = ScriptedEngine(SCRIPT, delay=0.1)
    sink = ListSink()
    async with EngineRunner(engine, delayed_after_seconds=0.0) as runner:
        captioner = RoomCaptioner("r", runner, sink)
        await feed(captioner, "alice", tone(1.0))  # every wait counts as late
        await settle(engine, runner)
        assert sink.statuses and sink.statuses[-1].degraded
        runner.delayed_after_seconds = 60.0  # now no wait does
        await feed(captioner, "alice", tone(1.0))
        await settle(engine, runner)
        assert not sink.statuses[-1].degraded
        await captioner.aclose()


class FailingOnceEngine(ScriptedEngine):
    """A scripted engine whose first step with audio fails (a model error, say)."""

    failed = False

    def step(self, sessions: Sequence[Session]) -> None:
        if not self.failed and any(s.inbox.available for s in sessions):
            self.failed = True
            raise RuntimeError("decoder blew up")
        super().step(sessions)


async def test_a_stream_ended_by_an_engine_failure_is_reopened_on_more_speech() -> None:
    # A failed step ends the streams it served (see captions.runtime). The speaker's next
    # words must reach a fresh stream, not the dead one for good (no error reached them).
    engine = FailingOnceEngine(SCRIPT, delay=0.5)
    sink = ListSink()
    async with EngineRunner(engine) as runner:
        captioner = RoomCaptioner("r", runner, sink)
        await feed(captioner, "alice", tone(0.5))
        dead = captioner.feeds["alice"].stream
        assert dead is not None
        await asyncio.wait_for(dead._done.wait(), timeout=10.0)  # ended by the failure
        assert engine.failed
        await feed(captioner, "alice", tone(2.5))
        await settle(engine, runner)
        assert captioner.feeds["alice"].stream is not dead
        assert engine.samples_seen.get("alice", 0) > 0
        await captioner.aclose()
        assert [w.text for w in sink.finals("alice")[-1].words] == ["hello", "there", "friend"]
