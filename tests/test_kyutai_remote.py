"""kyutai-remote against our own /api/asr-streaming server, end to end over loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from captions.asr_server import AsrServerLimits, create_asr_app
from captions.engines import EngineOptions, create_engine
from captions.engines.kyutai_remote import KyutaiRemoteEngine, RemoteSettings, ServerTimeline
from captions.events import CaptionEvent, Speaker
from captions.runtime import EngineRunner
from common.exceptions import EngineError
from tests.fakes import ScriptedEngine

KEY = "loopback-key"
SCRIPT = [("good", 0.3, 0.6), ("morning", 0.7, 1.1), ("everyone", 1.2, 1.7)]


class Server:
    def __init__(self, engine: ScriptedEngine, **limits: Any) -> None:
        self.engine = engine
        self.app = create_asr_app(engine, [KEY], limits=AsrServerLimits(**limits))
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
