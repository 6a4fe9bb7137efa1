"""Bots over loopback through the real SFU: media is forwarded byte-identical."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from sfu.client import RemoteTrack, SfuClient
from sfu.contrib.media import pcm_audio_track, video_test_track
from sfu.server import SFU, create_app
from sfu.settings import Settings
from sfu.tokens import Grants, mint_token

SECRET = "t" * 48


@pytest.fixture
async def sfu(tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = Settings(data_dir=tmp_path, secret_override=SECRET)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def token(name: str, role: str = "participant", room: str = "lobby", **extra: object) -> str:
    grants = Grants.for_role(room, name, role)  # type: ignore[arg-type]
    if extra:
        from dataclasses import replace

        grants = replace(grants, **extra)  # type: ignore[arg-type]
    return mint_token(SECRET, grants)


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    """A tone plus seeded noise, so that no two Opus frames are byte-equal."""
    t = np.arange(int(seconds * 48000)) / 48000
    noise = np.random.default_rng(int(freq)).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)


async def received_frames(track: RemoteTrack, seconds: float) -> list[bytes]:
    """The encoded frames a subscriber's track yields during ``seconds``."""
    got: list[bytes] = []

    async def drain() -> None:
        async for packet in track.packets():
            got.append(bytes(packet))

    task = asyncio.create_task(drain())
    await asyncio.sleep(seconds)
    task.cancel()
    return got


async def test_audio_and_video_reach_subscriber_byte_identical(sfu: TestServer) -> None:
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        audio = pcm_audio_track(tone(1.5), 48000, record=True)
        video = video_test_track(1.5, loop=False, record=True)
        await alice.publish(audio=audio, video=video)
        tracks = {}
        while len(tracks) < 2:
            event = await bob.wait_for("track", timeout=15)
            assert event.participant is not None and event.participant.name == "Alice"
            assert event.track is not None
            tracks[event.track.kind] = event.track
        audio_got, video_got = await asyncio.gather(
            received_frames(tracks["audio"], 2.5), received_frames(tracks["video"], 2.5)
        )
        received = {"audio": audio_got, "video": video_got}
        assert tracks["audio"].codec == "audio/opus"
        assert tracks["video"].codec == "video/VP8"
        for kind, sent in (("audio", audio.sent), ("video", video.sent)):
            got = received[kind]
            assert len(got) >= 0.8 * len(sent), (kind, len(got), len(sent))
            # Every frame B got is one A sent, bit for bit, in order: no transcoding.
            start = sent.index(got[0])
            assert got == sent[start : start + len(got)], kind
        server = sfu.app[SFU]
        room = server.rooms.get("lobby")
        assert room is not None
        publication = room.peers[alice.me["identity"]].publications["audio"]
        assert publication.frames_in >= len(received["audio"])
    finally:
        await alice.close()
        await bob.close()


async def test_h264_nal_units_reach_subscriber_unchanged(sfu: TestServer) -> None:
    from aiortc.codecs.h264 import H264Encoder

    alice = await SfuClient.connect(url(sfu), token("Alice"))
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        video = video_test_track(2, loop=False, record=True, codec="libx264")
        await alice.publish(video=video, video_codec="video/H264")
        track = (await bob.wait_for("track", timeout=15)).track
        assert track is not None
        got = await received_frames(track, 3)
        assert track.codec == "video/H264"
        assert len(got) >= 0.8 * len(video.sent)
        # Start codes may be rewritten (3 -> 4 bytes) by RTP packetisation; NAL units not.
        sent_nals = [list(H264Encoder._split_bitstream(f)) for f in video.sent]
        got_nals = [list(H264Encoder._split_bitstream(f)) for f in got]
        start = sent_nals.index(got_nals[0])
        assert got_nals == sent_nals[start : start + len(got_nals)]
    finally:
        await alice.close()
        await bob.close()
