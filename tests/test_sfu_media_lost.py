"""Dead media links: a participant whose WebRTC connection dies is gone, on both ends.

Found by the soak (docs/performance.md): a bot frozen for 35 s lost its media for good,
since aioice ends a link after six unanswered consent checks and nothing watched the
peer connections. Here the link dies the same way, only faster: consent checks every
0.1 s instead of 5 s, and one end stops answering ICE requests (as a frozen process
does), so the other end's consent expires in about 4 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioice.ice
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection

from common.closecodes import CloseCode
from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track
from sfu.peer import Peer
from sfu.server import SFU
from sfu.tokens import Grants
from tests.test_sfu_forwarding import sfu, token, tone, url

__all__ = ["sfu"]
WAIT_SECONDS = 30.0  # consent expires in about 4 s; generous for a loaded machine


@pytest.fixture(autouse=True)
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consent checks every ~0.1 s: six unanswered ones take ~4 s, not ~30 s."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)


def ice_connections(pc: Any) -> set[Any]:
    """aioice's connections under ``pc`` (one: every transceiver is bundled)."""
    return {t.receiver.transport.transport._connection for t in pc.getTransceivers()}


def stop_answering(pc: Any) -> None:
    """This end of ``pc`` ignores every ICE request from now on, like a frozen process;
    its media still flows out, and the other end's consent checks go unanswered."""
    for connection in ice_connections(pc):
        connection.request_received = lambda *args, **kwargs: None


def stop_checking_consent(pc: Any) -> None:
    """This end of ``pc`` never notices a dead link by itself (so the other end must)."""
    for connection in ice_connections(pc):
        connection._query_consent_task.cancel()


def server_peer(server: TestServer, client: SfuClient) -> Peer:
    room = server.app[SFU].rooms.get("lobby")
    assert room is not None
    return room.peers[client.me["identity"]]


async def next_event(client: SfuClient, type: str) -> Any:
    return await client.wait_for(type, timeout=WAIT_SECONDS)


async def closed(client: SfuClient) -> dict[str, Any]:
    async def last() -> dict[str, Any]:
        async for event in client.events():
            if event.type == "closed":
                return event.data
        raise AssertionError("events() ended without a closed event")

    return await asyncio.wait_for(last(), WAIT_SECONDS)


async def joined_pair(server: TestServer) -> tuple[SfuClient, SfuClient]:
    """Alice publishing audio, Bob receiving it."""
    alice = await SfuClient.connect(url(server), token("Alice"))
    bob = await SfuClient.connect(url(server), token("Bob"))
    await alice.publish(audio=pcm_audio_track(tone(30), 48_000))
    track = (await next_event(bob, "track")).track
    assert track is not None
    for _ in range(200):
        if track.frames_received:
            break
        await asyncio.sleep(0.05)
    assert track.frames_received, "no media flowed before the fault"
    return alice, bob


async def test_the_sfu_drops_a_participant_whose_media_died(sfu: TestServer) -> None:
    alice, bob = await joined_pair(sfu)
    try:
        gone = server_peer(sfu, alice)
        assert alice.publisher_pc is not None
        # Alice stops answering the SFU's checks on her publisher connection, and only
        # the SFU's end may notice.
        stop_checking_consent(alice.publisher_pc)
        stop_answering(alice.publisher_pc)

        left = await next_event(bob, "participant_left")
        assert left.data["identity"] == alice.me["identity"]
        ended = await closed(alice)
        assert ended["code"] == CloseCode.MEDIA_LOST == alice.close_code
        # aiortc reports an expired consent as "closed" (it closes the connection itself).
        assert ended["reason"] in ("publisher connection failed", "publisher connection closed")
        # Dropped and freed: out of the room, forwarding stopped, its connections closed.
        assert gone.closed and gone.media_lost == ended["reason"]
        assert not gone.publications
        assert gone.publisher_pc is not None and gone.publisher_pc.connectionState == "closed"
        room = sfu.app[SFU].rooms.get("lobby")
        assert room is not None and list(room.peers) == [bob.me["identity"]]
        assert all(not sub.active for sub in server_peer(sfu, bob).subscriptions)

        # Bob's own media was never touched: he is still in, and Alice can come back.
        await alice.close()
        alice = await SfuClient.connect(url(sfu), token("Alice"))
        await alice.publish(audio=pcm_audio_track(tone(5), 48_000))
        assert (await next_event(bob, "track")).track is not None
    finally:
        await alice.close()
        await bob.close()


async def test_a_client_whose_media_died_closes_and_is_dropped(sfu: TestServer) -> None:
    alice, bob = await joined_pair(sfu)
    try:
        # The SFU stops answering Bob's checks on his subscriber connection, and only
        # Bob's end may notice.
        peer = server_peer(sfu, bob)
        stop_checking_consent(peer.subscriber_pc)
        stop_answering(peer.subscriber_pc)

        ended = await closed(bob)
        assert ended["code"] == CloseCode.MEDIA_FAILED == bob.close_code
        assert ended["reason"] in ("subscriber connection failed", "subscriber connection closed")
        heard = bob.participants[alice.me["identity"]].audio
        assert heard is not None and heard.ended  # consumers of the track see it end
        # Bob said so to the SFU (close 4000), which dropped him at once.
        left = await next_event(alice, "participant_left")
        assert left.data["identity"] == bob.me["identity"]
        assert peer.closed and peer.media_lost is None  # dropped on the close, not on media
    finally:
        await alice.close()
        await bob.close()


async def test_our_own_close_is_not_a_media_failure(sfu: TestServer) -> None:
    alice, bob = await joined_pair(sfu)
    peer = server_peer(sfu, alice)
    await alice.close()
    assert (await next_event(bob, "participant_left")).data["identity"] == alice.me["identity"]
    assert peer.closed and peer.media_lost is None
    assert alice.close_code not in (CloseCode.MEDIA_FAILED, CloseCode.MEDIA_LOST)
    await bob.close()


async def watch_unconnected_link(*, close_peer_first: bool) -> tuple[Peer, list[str]]:
    """A peer watching a connection that never connects (bound 0.2 s), 0.5 s on; returns
    the peer and every loss it reported, the connection's own close included."""
    lost: list[str] = []
    peer = Peer(Grants("lobby", "alice"), send=lambda message: True, connect_timeout=0.2)
    peer.on_media_lost = lost.append
    pc = RTCPeerConnection()
    try:
        peer.watch(pc, "publisher")
        if close_peer_first:
            await peer.close()
        await asyncio.sleep(0.5)
    finally:
        await pc.close()
    return peer, lost


async def test_a_link_that_never_connects_is_lost_after_the_bound() -> None:
    """A firewall blocking UDP: ICE never succeeds, and nothing else would end the link
    (the SFU gets no end-of-candidates from browsers, so aioice waits for ever)."""
    peer, lost = await watch_unconnected_link(close_peer_first=False)
    # Reported once, not again on the connection's close.
    assert lost == ["publisher connection not connected after 0.2 s"]
    assert peer.media_lost == lost[0]


async def test_a_closed_peer_does_not_report_its_unconnected_link() -> None:
    peer, lost = await watch_unconnected_link(close_peer_first=True)
    assert lost == [] and peer.media_lost is None
