"""kyutai-remote against our own /api/asr-streaming server, end to end over loopback."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from captions.asr_server import AsrServerLimits, create_asr_app
from captions.engines import EngineOptions, create_engine
from captions.engines.kyutai_remote import (
    KyutaiRemoteEngine,
    RemoteSettings,
    ServerPool,
    ServerTimeline,
)
from captions.events import CaptionEvent, Speaker
from captions.runtime import EngineRunner
from common.exceptions import EngineAuthError, EngineError
from tests.fakes import ScriptedEngine
from tests.speech import write_wav

KEY = "loopback-key"
SCRIPT = [("good", 0.3, 0.6), ("morning", 0.7, 1.1), ("everyone", 1.2, 1.7)]


class Server:
    def __init__(self, engine: ScriptedEngine, *, key: str = KEY, **limits: Any) -> None:
        self.engine = engine
        self.app = create_asr_app(engine, [key], limits=AsrServerLimits(**limits))
        self.runner = web.AppRunner(self.app)
        self.url = ""

    async def __aenter__(self) -> Server:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/api/asr-streaming"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def collect(stream: Any) -> list[CaptionEvent]:
    return [event async for event in stream]


def remote(url: str, **settings: Any) -> KyutaiRemoteEngine:
    return KyutaiRemoteEngine(RemoteSettings(url=url, api_key=KEY, **settings))


async def test_remote_engine_end_to_end_over_loopback() -> None:
    backend = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0)
    async with Server(backend) as server:
        runner = EngineRunner(remote(server.url, delay_seconds=0.0))
        async with runner:
            stream = runner.open_stream(Speaker("alice"))
            events = asyncio.create_task(collect(stream))
            # 16 kHz stereo in: the runtime resamples to the engine's 24 kHz.
            rng = np.random.default_rng(1)
            for _ in range(20):
                chunk = (rng.standard_normal((1600, 2)) * 0.01).astype(np.float32)
                stream.push_audio(chunk, 16_000)
                await asyncio.sleep(0.01)
            await stream.aclose()
            got = await asyncio.wait_for(events, 20)
    finals = [e for e in got if e.kind == "final"]
    words = [w for e in finals for w in e.words]
    assert [w.text for w in words] == ["good", "morning", "everyone"]
    for w, (_, start, end) in zip(words, SCRIPT, strict=True):
        assert w.start == pytest.approx(start, abs=0.01)
        assert w.end == pytest.approx(end, abs=0.01)
    # The server got the whole 2 s of audio, plus the flush silence after the marker.
    assert sum(backend.samples_seen.values()) >= 2 * 24_000


async def test_muted_speaker_is_kept_alive_and_times_stay_ours() -> None:
    # Scripted on the server's timeline, which includes the keep-alive silence.
    backend = ScriptedEngine([("late", 1.6, 1.9)], sample_rate=24_000, delay=0.0)
    # The server would close after 0.8 s without audio; the speaker is silent for 2 s.
    async with Server(backend, audio_timeout=0.8, idle_timeout=0.8) as server:
        engine = remote(server.url, delay_seconds=0.0, keepalive_seconds=0.3)
        runner = EngineRunner(engine)
        async with runner:
            stream = runner.open_stream(Speaker("bob"))
            events = asyncio.create_task(collect(stream))
            await asyncio.sleep(2.0)
            connection = stream.session.connection  # type: ignore[attr-defined]
            assert connection.connects == 1, "the muted speaker's connection was dropped"
            inserted = connection.keepalive_frames * 0.08
            assert inserted > 0
            stream.push_audio(np.zeros(48_000, dtype=np.float32), 24_000)
            await stream.aclose()
            got = await asyncio.wait_for(events, 20)
    words = [w for e in got if e.kind == "final" for w in e.words]
    assert [w.text for w in words] == ["late"]
    # Keep-alive silence went to the server, but it is not on the speaker's timeline.
    assert words[0].start == pytest.approx(1.6 - inserted, abs=0.01)
    assert words[0].end == pytest.approx(1.9 - inserted, abs=0.01)


async def test_reconnects_with_backoff_when_the_server_is_full() -> None:
    backend = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0, max_streams=1)
    async with Server(backend) as server:
        runner = EngineRunner(remote(server.url, delay_seconds=0.0, backoff_initial=0.05))
        async with runner:
            first = runner.open_stream(Speaker("a"))
            first_events = asyncio.create_task(collect(first))
            await asyncio.sleep(0.3)
            second = runner.open_stream(Speaker("b"))  # refused: "no free channels"
            second_events = asyncio.create_task(collect(second))
            await asyncio.sleep(0.3)
            first.push_audio(np.zeros(48_000, dtype=np.float32), 24_000)
            await first.aclose()
            second.push_audio(np.zeros(48_000, dtype=np.float32), 24_000)
            await second.aclose()
            a = await asyncio.wait_for(first_events, 20)
            b = await asyncio.wait_for(second_events, 20)
    for got in (a, b):
        assert [w.text for e in got if e.kind == "final" for w in e.words] == [
            "good",
            "morning",
            "everyone",
        ]


def test_timeline_subtracts_inserted_silence() -> None:
    t = ServerTimeline()
    t.inserted(1.0, 0.08)
    t.inserted(3.0, 0.16)
    assert t.ours(0.5) == pytest.approx(0.5)
    assert t.ours(2.0) == pytest.approx(2.0 - 0.08)
    assert t.ours(4.0) == pytest.approx(4.0 - 0.24)
    t.reconnected(10.0)
    assert t.ours(1.0) == pytest.approx(11.0)


def test_load_needs_a_url() -> None:
    with pytest.raises(EngineError, match="--kyutai-url"):
        create_engine("kyutai-remote", EngineOptions())
    with pytest.raises(EngineError, match="ws://"):
        create_engine("kyutai-remote", EngineOptions(kyutai_url="http://x"))


async def test_reconnects_after_a_drop_and_keeps_our_timeline() -> None:
    backend = ScriptedEngine([("good", 0.3, 0.6)], sample_rate=24_000, delay=0.0)
    # No keep-alive: the server drops the silent speaker after 0.5 s without audio.
    async with Server(backend, audio_timeout=0.5, idle_timeout=0.5) as server:
        engine = remote(server.url, delay_seconds=0.0, keepalive_seconds=60, backoff_initial=0.05)
        runner = EngineRunner(engine)
        async with runner:
            stream = runner.open_stream(Speaker("carol"))
            events = asyncio.create_task(collect(stream))
            # 1.3 s: 16 whole frames and a half one that must survive the reconnect.
            stream.push_audio(np.zeros(31_200, dtype=np.float32), 24_000)
            connection = stream.session.connection  # type: ignore[attr-defined]
            async with asyncio.timeout(10):
                while connection.connects < 2:  # dropped, then reconnected
                    await asyncio.sleep(0.05)
            stream.push_audio(np.zeros(24_000, dtype=np.float32), 24_000)
            await stream.aclose()
            got = await asyncio.wait_for(events, 20)
    words = [w for e in got if e.kind == "final" for w in e.words]
    # The second connection starts with the half frame still unsent (our 1.28 s): its
    # word at its own 0.3 s is our 1.58 s.
    assert [(w.text, round(w.start, 2), round(w.end, 2)) for w in words] == [
        ("good", 0.3, 0.6),
        ("good", 1.58, 1.88),
    ]


# -- a pool of servers (--kyutai-url repeated) ---------------------------------------------


def test_pool_picks_least_connections_and_skips_failed_servers() -> None:
    now = [0.0]
    pool = ServerPool(["ws://a", "ws://b", "ws://a"], cooldown_seconds=5.0, clock=lambda: now[0])
    assert pool.urls == ("ws://a", "ws://b")
    picked = []
    for _ in range(4):
        url = pool.pick()
        pool.acquire(url)
        picked.append(url)
    assert sorted(picked) == ["ws://a", "ws://a", "ws://b", "ws://b"]
    pool.failed("ws://a")
    assert pool.pick() == "ws://b"  # a failed lately, however loaded b is
    now[0] = 6.0
    pool.release("ws://a")
    assert pool.pick() == "ws://a"  # cooled down, and now the least loaded
    pool.failed("ws://a")
    pool.failed("ws://b")
    now[0] = 7.0
    assert pool.pick() == "ws://a"  # all failed: the one that failed longest ago


async def test_speakers_spread_over_a_pool_and_move_when_a_server_dies() -> None:
    script = [("good", 0.3, 0.6), ("morning", 0.7, 1.1), ("everyone", 3.2, 3.7)]
    first = ScriptedEngine(script, sample_rate=24_000, delay=0.0)
    second = ScriptedEngine(script, sample_rate=24_000, delay=0.0)
    async with Server(first) as a, Server(second) as b:
        engine = KyutaiRemoteEngine(
            RemoteSettings(
                url=a.url,
                more_urls=(b.url,),
                api_key=KEY,
                delay_seconds=0.0,
                backoff_initial=0.05,
            )
        )
        runner = EngineRunner(engine)
        async with runner:
            streams = [runner.open_stream(Speaker(name)) for name in ("s1", "s2")]
            events = [asyncio.create_task(collect(s)) for s in streams]
            for s in streams:
                s.push_audio(np.zeros(24_000, dtype=np.float32), 24_000)
            await asyncio.sleep(0.5)
            connections = [s.session.connection for s in streams]  # type: ignore[attr-defined]
            assert sorted(c.servers[0] for c in connections) == sorted([a.url, b.url])
            # The server of s1 dies mid-stream; s1 moves to the other one.
            dying = a if connections[0].servers[0] == a.url else b
            await dying.runner.cleanup()
            await asyncio.sleep(0.5)
            for s in streams:
                s.push_audio(np.zeros(120_000, dtype=np.float32), 24_000)
                await s.aclose()
            got = [await asyncio.wait_for(e, 20) for e in events]
    moved = connections[0]
    assert len(moved.servers) == 2 and moved.servers[1] != dying.url
    assert connections[1].servers == [connections[1].servers[0]]
    # Words after the move still arrive (this fake server starts its script again on every
    # connection): the stream lost at most what was in flight.
    moved_words = [w.text for e in got[0] if e.kind == "final" for w in e.words]
    assert "everyone" in moved_words, moved_words
    assert [w.text for e in got[1] if e.kind == "final" for w in e.words] == [
        "good",
        "morning",
        "everyone",
    ]


async def test_a_full_server_sends_the_stream_to_another() -> None:
    full = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0, max_streams=0)
    free = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0)
    async with Server(full) as a, Server(free) as b:
        engine = KyutaiRemoteEngine(
            RemoteSettings(url=a.url, more_urls=(b.url,), api_key=KEY, delay_seconds=0.0)
        )
        runner = EngineRunner(engine)
        async with runner:
            stream = runner.open_stream(Speaker("c"))
            events = asyncio.create_task(collect(stream))
            stream.push_audio(np.zeros(48_000, dtype=np.float32), 24_000)
            await stream.aclose()
            got = await asyncio.wait_for(events, 20)
    assert [w.text for e in got if e.kind == "final" for w in e.words] == [w for w, _, _ in SCRIPT]
    # The full server was tried (it answered "no free channels"), then skipped.
    assert stream.session.connection.servers == [a.url, b.url]  # type: ignore[attr-defined]


def test_load_accepts_a_pool_of_urls() -> None:
    options = EngineOptions(kyutai_url="ws://a/x", kyutai_urls=("ws://a/x", "ws://b/x"))
    engine = create_engine("kyutai-remote", options)
    try:
        assert isinstance(engine, KyutaiRemoteEngine)
        assert engine.pool.urls == ("ws://a/x", "ws://b/x")
    finally:
        engine.close()
    with pytest.raises(EngineError, match="ws://"):
        create_engine("kyutai-remote", EngineOptions(kyutai_urls=("ws://a/x", "http://b")))


# -- a refused API key ---------------------------------------------------------------------


async def test_a_refused_api_key_ends_the_stream_with_an_auth_error_at_once() -> None:
    """QA: a wrong --kyutai-api-key was retried for 15 s, then the transcript was empty."""
    backend = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0)
    async with Server(backend, key="the-right-key") as server:
        engine = remote(server.url, delay_seconds=0.0, backoff_initial=0.05)
        async with EngineRunner(engine) as runner:
            stream = runner.open_stream(Speaker("dave"))
            stream.push_audio(np.zeros(24_000, dtype=np.float32), 24_000)
            with pytest.raises(EngineAuthError, match="API key refused") as refused:
                await asyncio.wait_for(collect(stream), 5)
            assert server.url in str(refused.value) and "401" in str(refused.value)
            connection = stream.session.connection  # type: ignore[attr-defined]
            await asyncio.sleep(0.3)  # a retry would have happened by now
            assert connection.refused == {server.url} and connection.connects == 0
            assert connection.task.done()
            with pytest.raises(EngineAuthError):
                stream.push_audio(np.zeros(2400, dtype=np.float32), 24_000)
            assert runner.active_streams == 0


async def test_a_pool_server_refusing_the_key_is_skipped_for_one_that_accepts_it() -> None:
    refusing = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0)
    accepting = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0)
    async with Server(refusing, key="another-key") as a, Server(accepting) as b:
        engine = KyutaiRemoteEngine(
            RemoteSettings(url=a.url, more_urls=(b.url,), api_key=KEY, delay_seconds=0.0)
        )
        async with EngineRunner(engine) as runner:
            streams = [runner.open_stream(Speaker(name)) for name in ("e1", "e2")]
            events = [asyncio.create_task(collect(s)) for s in streams]
            for s in streams:
                s.push_audio(np.zeros(48_000, dtype=np.float32), 24_000)
                await s.aclose()
            got = [await asyncio.wait_for(e, 20) for e in events]
    for stream, words in zip(streams, got, strict=True):
        assert [w.text for e in words if e.kind == "final" for w in e.words] == [
            w for w, _, _ in SCRIPT
        ]
        assert stream.session.connection.servers == [b.url]  # type: ignore[attr-defined]


async def test_transcribe_with_a_refused_key_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "tone.wav", np.zeros(16_000, dtype=np.float32), 16_000)
    backend = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0)
    async with Server(backend) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "transcribe",
            "--engine",
            "kyutai-remote",
            "--kyutai-url",
            server.url,
            "--kyutai-api-key",
            "WRONG",
            str(clip),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started = time.monotonic()
        out, err = await asyncio.wait_for(process.communicate(), 60)
        elapsed = time.monotonic() - started
    assert process.returncode == 2, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "API key refused" in lines[0] and server.url in lines[0]
    # It stops at the refusal instead of retrying (the clip is 1 s; QA saw 15 s).
    assert elapsed < 10, elapsed


async def test_a_room_whose_key_is_refused_reports_captions_unavailable_and_others_go_on() -> None:
    """Sidecar path: the refusal is logged, the room says captions unavailable, nothing
    raises, and another room (with a key its server accepts) is still captioned."""
    from meeting.captioner import RoomCaptioner
    from tests.test_sidecar_core import ListSink

    backend = ScriptedEngine(SCRIPT, sample_rate=24_000, delay=0.0)
    async with Server(backend) as server:
        wrong = KyutaiRemoteEngine(
            RemoteSettings(url=server.url, api_key="WRONG", delay_seconds=0.0)
        )
        right = remote(server.url, delay_seconds=0.0)
        async with EngineRunner(wrong) as refused_runner, EngineRunner(right) as runner:
            bad_sink, good_sink = ListSink(), ListSink()
            bad = RoomCaptioner("bad", refused_runner, bad_sink, retry_refused_seconds=60)
            good = RoomCaptioner("good", runner, good_sink)
            tone = (0.2 * np.sin(np.arange(960) / 7)).astype(np.float32)
            for _ in range(100):  # 2 s of 20 ms chunks for each room
                bad.audio("alice", "Alice", tone, 48_000)
                good.audio("bob", "Bob", tone, 48_000)
                await asyncio.sleep(0.01)
            async with asyncio.timeout(5):
                while not bad.unavailable:
                    await asyncio.sleep(0.05)
            assert bad_sink.statuses[-1].unavailable
            assert bad.feeds["alice"].stream is None  # dropped, not retried for 60 s
            bad.audio("alice", "Alice", tone, 48_000)
            assert bad.feeds["alice"].stream is None
            await bad.participant_left("alice")  # does not raise
            await good.participant_left("bob")
            await bad.aclose()
            await good.aclose()
    assert bad_sink.events == []
    assert [w.text for w in good_sink.finals("bob")[0].words][:1] == ["good"]
    assert not any(s.unavailable for s in good_sink.statuses)
