"""Forwarding under packet loss between the publisher and the SFU.

The publisher's DTLS transport drops every 7th outgoing RTP packet (RTCP passes), an
in-memory lossy link. Audio frames that arrive are still forwarded byte-identical and in
order; lost video packets are recovered by the SFU's NACKs, so video frames still reach
the subscriber intact.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiortc.rtp import is_rtcp

from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track, video_test_track
from tests.test_sfu_forwarding import received_frames, sfu, token, tone, url

__all__ = ["sfu"]


def make_lossy(client: SfuClient, every: int) -> dict[str, int]:
    counts = {"sent": 0, "dropped": 0}
    assert client.publisher_pc is not None
    transport: Any = client.publisher_pc.getTransceivers()[0].sender.transport
    original = transport._send_rtp

    async def lossy_send(data: bytes) -> None:
        if not is_rtcp(data):
            counts["sent"] += 1
            if counts["sent"] % every == 0:
                counts["dropped"] += 1
                return
        await original(data)

    transport._send_rtp = lossy_send
    return counts


@pytest.mark.parametrize("kind", ["audio", "video"])
async def test_forwarding_survives_loss(sfu: TestServer, kind: str) -> None:
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        source = (
            pcm_audio_track(tone(3), 48000, record=True)
            if kind == "audio"
            else video_test_track(3, loop=False, record=True)
        )
        await alice.publish(**{kind: source})
        counts = make_lossy(alice, every=7)
        track = (await bob.wait_for("track", timeout=10)).track
        assert track is not None
        got = await received_frames(track, 4)
        assert counts["dropped"] > 5
        sent = source.sent
        assert got and all(frame in sent for frame in got), "a forwarded frame was altered"
        positions = [sent.index(frame) for frame in got]
        assert positions == sorted(positions), "frames were reordered"
        span = positions[-1] - positions[0] + 1
        if kind == "audio":
            # One RTP packet per Opus frame: about 1 in 7 is gone, the rest is forwarded.
            assert 0.75 * span <= len(got) < span
        else:
            # Video frames span several packets; NACK + retransmission recovers them.
            assert len(got) >= 0.9 * span
    finally:
        await alice.close()
        await bob.close()
