"""The sidecar in a real meeting over loopback: aiortc bots, the SFU, /captions.

The scripted engine stands in for speech recognition here (the engine is not the point):
it turns any audio into scripted words and counts the samples that reach it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from captions.runtime import EngineRunner
from common.aio import bounded, wait_ended
from meeting.app import Meeting
from meeting.protocol import parse_server
from meeting.sidecar import Sidecar
from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track
from sfu.settings import Settings
from sfu.tokens import Grants, mint_token
from tests.fakes import ScriptedEngine

SECRET = "t" * 40
ROOM = "lobby"
SCRIPT = [("hello", 0.2, 0.5), ("there", 0.6, 0.9), ("friend", 1.2, 1.5)]
# Generous bounds: these tests run beside others on loaded 2-core machines.
WAIT_SECONDS = 60.0
CLEANUP_SECONDS = 60.0

Closers = list[Callable[[], Awaitable[Any]]]


def tone(seconds: float = 1.0, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * 48_000)) / 48_000
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def token(name: str, role: str = "participant", **kw: Any) -> str:
    grants = Grants.for_role(ROOM, name.title(), role, identity=name)  # type: ignore[arg-type]
    return mint_token(SECRET, grants, **kw)


async def start_meeting(
    tmp_path: Path, engine: ScriptedEngine, *, port: int = 0, **kw: Any
) -> Meeting:
    settings = Settings(port=port, data_dir=tmp_path, secret_override=SECRET)
    meeting = Meeting(settings, EngineRunner(engine), **kw)
    await meeting.start()
    return meeting


@pytest.fixture
def engine() -> ScriptedEngine:
    engine = ScriptedEngine(SCRIPT, delay=5.0)  # words stay tentative until a flush
    engine.info = dataclasses.replace(engine.info, languages=("en", "fr"))
    return engine


@pytest.fixture
async def meeting(tmp_path: Path, engine: ScriptedEngine) -> AsyncIterator[Meeting]:
    m = await start_meeting(tmp_path, engine)
    yield m
    await bounded(m.stop(), timeout=CLEANUP_SECONDS, what="stopping the meeting")


@pytest.fixture
async def closers() -> AsyncIterator[Closers]:
    """Closes what a test opened (newest first, each bounded), even when it fails.

    Requested after ``meeting``, so it runs before the meeting stops.
    """
    pending: Closers = []
    yield pending
    for close in reversed(pending):
        await bounded(close(), timeout=CLEANUP_SECONDS, what="test cleanup")


class CaptionReader:
    """A /captions client collecting every message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                parse_server(msg.data)  # everything the server says is valid protocol
                self.messages.append(json.loads(msg.data))

    def captions(self, kind: str | None = None, speaker: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m["type"] == "caption"
            and kind in (None, m["kind"])
            and speaker in (None, m["speaker"])
        ]

    def states(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "room_state"]


async def reader(
    http: aiohttp.ClientSession, meeting: Meeting, name: str, role: str = "guest"
) -> CaptionReader:
    ws = await http.ws_connect(f"{meeting.base_url}/captions?token={token(name, role)}")
    return CaptionReader(ws)


async def until(
    condition: Callable[[], Any], timeout: float = WAIT_SECONDS, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)


async def speaker(
    meeting: Meeting, name: str, closers: Closers, *, role: str = "participant"
) -> SfuClient:
    client = await SfuClient.connect(meeting.base_url, token(name, role))
    closers.append(client.close)  # closing twice is harmless
    await client.publish(audio=pcm_audio_track(tone(), 48_000, loop=True))
    return client


async def test_room_changes_leave_mute_rejoin(
    meeting: Meeting, engine: ScriptedEngine, closers: Closers
) -> None:
    async with aiohttp.ClientSession() as http:
        watcher = await reader(http, meeting, "watcher")
        alice = await speaker(meeting, "alice", closers)
        bob = await speaker(meeting, "bob", closers)
        await until(lambda: watcher.captions("partial", "alice"), what="alice's partials")
        await until(lambda: watcher.captions("partial", "bob"), what="bob's partials")
        assert watcher.captions("partial", "alice")[0]["speaker_name"] == "Alice"

        # Leaving mid-utterance: the last words arrive as a final.
        assert not watcher.captions("final", "alice")
        await alice.close()
        await until(lambda: watcher.captions("final", "alice"), what="alice's final")
        (final,) = watcher.captions("final", "alice")
        assert final["text"].startswith("hello") and all(w["final"] for w in final["words"])

        # Muting flushes the utterance and stops bob's audio reaching the engine.
        await bob.set_muted("audio", True)
        await until(lambda: watcher.captions("final", "bob"), what="bob's final on mute")
        await asyncio.sleep(0.5)
        muted_at = engine.samples_seen["bob"]
        await asyncio.sleep(1.5)
        assert engine.samples_seen["bob"] - muted_at < 0.1 * 16_000
        await bob.set_muted("audio", False)
        await until(lambda: engine.samples_seen["bob"] > muted_at + 16_000, what="unmute")

        # Rejoining gets a fresh stream: new, higher utterance numbers.
        alice = await speaker(meeting, "alice", closers)
        await until(
            lambda: any(
                m["utterance"] > final["utterance"] for m in watcher.captions("partial", "alice")
            ),
            what="alice's new stream",
        )
        await alice.close()
        await bob.close()
        await until(lambda: len(watcher.captions("final", "alice")) == 2, what="second final")
        await watcher.ws.close()


async def test_host_toggle_stops_engine_input_and_on_resumes(
    meeting: Meeting, engine: ScriptedEngine, closers: Closers
) -> None:
    async with aiohttp.ClientSession() as http:
        watcher = await reader(http, meeting, "watcher")
        host = await speaker(meeting, "hannah", closers, role="host")
        await until(lambda: engine.samples_seen.get("hannah", 0) > 16_000, what="audio")

        # Host actions go to the meeting layer over /captions; the grant is checked there.
        guest = await reader(http, meeting, "gus")
        await guest.ws.send_json({"type": "set_captions", "enabled": False})  # not the host
        await until(
            lambda: any(m.get("code") == "forbidden" for m in guest.messages), what="refusal"
        )
        assert all(s["captions"] == "on" for s in guest.states())  # nothing changed
        controls = await reader(http, meeting, "hannah", role="host")
        await controls.ws.send_json({"type": "set_captions", "enabled": False})
        await until(
            lambda: watcher.states() and watcher.states()[-1]["captions"] == "off", what="off"
        )
        assert watcher.states()[-1]["changed_by"]["identity"] == "hannah"
        await asyncio.sleep(0.3)
        off_at = engine.samples_seen["hannah"]
        await asyncio.sleep(2.0)
        assert engine.samples_seen["hannah"] == off_at  # nothing reaches the engine
        assert meeting.runner.active_streams == 0

        await controls.ws.send_json({"type": "set_captions", "enabled": True})
        await until(lambda: engine.samples_seen["hannah"] > off_at + 16_000, what="resumed")
        assert watcher.states()[-1]["captions"] == "on"
        assert watcher.states()[-1]["languages"] == ["en", "fr"]

        # The host's room language reopens the streams in that language.
        def languages() -> set[str | None]:
            return {s.session.language for s in meeting.runner._streams.values()}

        assert languages() == {"en"}
        await controls.ws.send_json({"type": "set_language", "language": "fr"})
        await until(lambda: watcher.states()[-1]["language"] == "fr", what="language state")
        await until(lambda: languages() == {"fr"}, what="a stream in French")
        await guest.ws.close()
        await controls.ws.close()
        await host.close()
        await watcher.ws.close()


async def test_transcript_survives_sidecar_and_server_restarts(
    tmp_path: Path, closers: Closers
) -> None:
    # A separate sidecar (as ``captions sidecar`` runs it), with its own engine.
    engine = ScriptedEngine(SCRIPT, delay=5.0)
    runner = EngineRunner(engine)
    closers.append(runner.aclose)
    meetings: list[Meeting] = []  # the running server, if any (stopped on failure too)

    async def start_server(**kw: Any) -> Meeting:
        server = await start_meeting(tmp_path, ScriptedEngine(), embedded_sidecar=False, **kw)
        meetings.append(server)
        return server

    async def stop_server() -> None:
        while meetings:
            await meetings.pop().stop()

    closers.append(stop_server)
    meeting = await start_server()
    port = meeting.port
    captioner = mint_token(SECRET, Grants.captioner_for(ROOM))
    host_token = token("hannah", "host")

    def run_sidecar() -> tuple[Sidecar, asyncio.Task[None]]:
        sidecar = Sidecar(meeting.base_url, captioner, runner, reconnect_seconds=0.2)
        task = asyncio.create_task(sidecar.run())
        closers.append(lambda: wait_ended(task, timeout=CLEANUP_SECONDS))
        closers.append(sidecar.stop)
        return sidecar, task

    async def stored() -> list[dict[str, Any]]:
        url = f"{meeting.base_url}/rooms/{ROOM}/transcript.json"
        async with http.get(url, headers={"Authorization": f"Bearer {host_token}"}) as resp:
            assert resp.status == 200
            data: list[dict[str, Any]] = json.loads(await resp.text())
            return data

    async def until_stored(count: int) -> list[dict[str, Any]]:
        # Not "no unacked final and no open stream": under load that holds for a moment
        # between the engine ending a stream and its final reaching the publisher.
        deadline = time.monotonic() + WAIT_SECONDS
        while len(events := await stored()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return events

    async with aiohttp.ClientSession() as http:
        alice = await speaker(meeting, "alice", closers)
        first, task = run_sidecar()
        await until(lambda: engine.samples_seen.get("alice", 0) > 24_000, what="audio")
        await first.stop()  # a clean stop flushes alice's open utterance into the store
        await asyncio.wait_for(task, WAIT_SECONDS)
        assert [e["speaker"] for e in await stored()] == ["alice"]

        second, task = run_sidecar()  # a restarted sidecar resumes captioning the room
        seen = engine.samples_seen["alice"]
        await until(lambda: engine.samples_seen["alice"] > seen + 24_000, what="resumed")
        await alice.close()
        assert len(await until_stored(2)) == 2

        # The server restarts under the running sidecar, which rejoins by itself.
        await stop_server()
        meeting = await start_server(port=port)
        alice = await speaker(meeting, "alice", closers)
        seen = engine.samples_seen["alice"]
        await until(lambda: engine.samples_seen["alice"] > seen + 24_000, what="rejoined")
        await alice.close()
        events = await until_stored(3)
        assert len(events) == 3 and all(e["text"].startswith("hello") for e in events)
        await until(lambda: second.publisher.unacked == 0, what="every final acknowledged")
        await second.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)
    await stop_server()
    await runner.aclose()

    # A new server on the same data directory still has the whole transcript.
    meeting = await start_server()
    async with aiohttp.ClientSession() as http:
        events = await stored()
        assert len(events) == 3
        # One timeline: each run's words come after the previous run's.
        starts = [e["words"][0]["start"] for e in events]
        assert starts == sorted(starts) and starts[0] == 0.0
    await stop_server()


async def test_a_stop_during_the_join_ends_the_run(
    tmp_path: Path, closers: Closers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM may arrive while the sidecar is still joining (no client to leave yet)."""
    meeting = await start_meeting(tmp_path, ScriptedEngine(), embedded_sidecar=False)
    closers.append(meeting.stop)
    runner = EngineRunner(ScriptedEngine())
    closers.append(runner.aclose)
    sidecar = Sidecar(meeting.base_url, mint_token(SECRET, Grants.captioner_for(ROOM)), runner)
    real_connect = SfuClient.connect

    async def connect_then_stop(url: str, token: str, **kw: Any) -> SfuClient:
        client = await real_connect(url, token, **kw)
        await sidecar.stop()  # the stop lands just before the join returns
        return client

    monkeypatch.setattr(SfuClient, "connect", connect_then_stop)
    # An empty room sends no events, so only the stop itself can end the run.
    await asyncio.wait_for(sidecar.run(), WAIT_SECONDS)
    await until(lambda: not meeting.hub.state(ROOM).captioner, what="the captioner left")
