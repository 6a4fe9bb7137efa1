"""Media behaviour of the SFU: bounded queues, keyframe relay, camera renegotiation."""

from __future__ import annotations

import asyncio
from typing import Any

import av
from aiohttp.test_utils import TestServer

from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track, video_test_track
from sfu.forwarding import AUDIO_QUEUE_FRAMES, EncodedTrack, Publication, relay_keyframe_requests
from sfu.server import SFU
from tests.test_sfu_forwarding import sfu, token, tone, url

__all__ = ["sfu"]


def test_encoded_track_drops_oldest_and_asks_for_keyframe() -> None:
    asked = []
    track = EncodedTrack("video", max_frames=3, on_drop=lambda: asked.append(1))
    for index in range(5):
        track.push(av.Packet(bytes([index])))
    assert track.queued == 3 and track.dropped == 2 and len(asked) == 2

    async def first() -> bytes:
        return bytes(await track.recv())

    assert asyncio.run(first()) == b"\x02"  # 0 and 1 were the oldest


def test_publication_without_subscribers_keeps_nothing() -> None:
    publication = Publication("audio")
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
    for _ in range(1000):
        publication.on_frame(av.Packet(b"x" * 100), opus)
    assert publication.frames_in == 1000 and not publication.subscribers


async def collect(client: SfuClient, types: set[str], timeout: float = 10) -> dict[str, Any]:
    """The first event of each type, in whatever order they come."""
    seen: dict[str, Any] = {}

    async def run() -> None:
        async for event in client.events():
            if event.type in types and event.type not in seen:
                seen[event.type] = event
                if len(seen) == len(types):
                    return

    await asyncio.wait_for(run(), timeout)
    return seen


def _aiortc_queues(pc: Any) -> list[int]:
    """Sizes of aiortc's own (unbounded) remote-track queues on a peer connection."""
    return [
        t.receiver.track._queue.qsize()
        for t in pc.getTransceivers()
        if t.receiver.track is not None
    ]


async def test_unconsumed_tracks_stay_bounded(sfu: TestServer) -> None:
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        await alice.publish(audio=pcm_audio_track(tone(10), 48000))
        track = (await bob.wait_for("track", timeout=10)).track
        assert track is not None
        await asyncio.sleep(1.5)  # 75 frames arrive; bob never reads them
        assert track.frames_received > AUDIO_QUEUE_FRAMES
        assert track.buffer.queued <= AUDIO_QUEUE_FRAMES and track.dropped > 0
        assert bob.subscriber_pc is not None and set(_aiortc_queues(bob.subscriber_pc)) <= {0}
        peer = sfu.app[SFU].rooms.get("lobby").peers[alice.me["identity"]]  # type: ignore[union-attr]
        assert set(_aiortc_queues(peer.publisher_pc)) <= {0}
        assert not any(t.name.endswith("decoder") for t in __import__("threading").enumerate())
    finally:
        await alice.close()
        await bob.close()


async def test_camera_start_stop_and_keyframe_relay(sfu: TestServer) -> None:
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        await alice.publish(audio=pcm_audio_track(tone(20), 48000))
        assert (await bob.wait_for("track", timeout=10)).track.kind == "audio"  # type: ignore[union-attr]

        await alice.publish(video=video_test_track(5))
        plis: list[int] = []
        assert alice.publisher_pc is not None
        for transceiver in alice.publisher_pc.getTransceivers():
            if transceiver.kind == "video":
                relay_keyframe_requests(transceiver.sender, lambda: plis.append(1))
        seen = await collect(bob, {"track", "participant_updated"})
        event = seen["track"]
        assert event.track is not None and event.track.kind == "video"
        update = seen["participant_updated"]
        assert update.participant is not None and update.participant.video_published
        await asyncio.sleep(1.0)
        assert event.track.frames_received > 0
        before = len(plis)
        await asyncio.sleep(0.6)  # past the SFU's 500 ms PLI rate limit
        await event.track.request_keyframe()
        for _ in range(50):
            if len(plis) > before:
                break
            await asyncio.sleep(0.05)
        assert len(plis) > before, "bob's PLI did not reach alice"

        await alice.unpublish_video()
        seen = await collect(bob, {"track_ended", "participant_updated"})
        assert seen["track_ended"].track is event.track
        update = seen["participant_updated"]
        assert update.participant is not None and not update.participant.video_published
        assert update.participant.audio_published
    finally:
        await alice.close()
        await bob.close()


async def test_same_identity_replaces_old_connection(sfu: TestServer) -> None:
    from sfu.tokens import Grants, mint_token
    from tests.test_sfu_forwarding import SECRET

    grants = Grants.for_role("lobby", "Alice", "participant")
    first = await SfuClient.connect(url(sfu), mint_token(SECRET, grants))
    second = await SfuClient.connect(url(sfu), mint_token(SECRET, grants))
    try:
        closed = await first.wait_for("closed", timeout=5)
        assert closed.data["code"] == 4409
        await second.send_raw('{"type": "ping", "id": 1}')
        await second.wait_for("pong", timeout=5)
        room = sfu.app[SFU].rooms.get("lobby")
        assert room is not None and list(room.peers) == [grants.identity]
    finally:
        await first.close()
        await second.close()


async def test_browser_mdns_candidates_do_not_break_the_meeting(sfu: TestServer) -> None:
    """Browsers hide host addresses behind ``<uuid>.local``; those must be harmless."""
    mdns = (
        "a=candidate:1 1 udp 2122260223 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0.local 54321 typ host"
    )
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    original = alice._send

    async def send_with_mdns(message: dict[str, Any]) -> None:
        if message["type"] == "offer":
            lines = message["sdp"].split("\r\n")
            at = next(i for i, line in enumerate(lines) if line.startswith("a=candidate:"))
            message = {**message, "sdp": "\r\n".join([*lines[:at], mdns, *lines[at:]])}
        await original(message)

    alice._send = send_with_mdns  # type: ignore[method-assign]
    try:
        await alice.publish(audio=pcm_audio_track(tone(10), 48000))
        await alice.send_raw(
            '{"type":"candidate","pc":"publisher","candidate":"'
            + mdns.removeprefix("a=")
            + '","sdp_mid":"0","sdp_mline_index":0}'
        )
        await alice.send_raw('{"type": "ping", "id": 9}')
        assert (await alice.wait_for("pong", timeout=1.0)).data["id"] == 9
        track = (await bob.wait_for("track", timeout=10)).track
        assert track is not None
        await asyncio.sleep(1.0)
        assert track.frames_received > 20
    finally:
        await alice.close()
        await bob.close()
