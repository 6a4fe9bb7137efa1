"""A peer whose subscriber connection aiortc closed by itself (the remote end closed its
DTLS transports) stays in the room until its socket goes: it must not stop anyone else
from publishing, nor fail a renegotiation (found by QA: after one such peer, every
participant who joined the room again was disconnected on publishing, in a loop)."""

from __future__ import annotations

from typing import Any

from sfu.forwarding import Publication
from sfu.peer import Peer, new_peer_connection
from sfu.tokens import Grants


def peer(name: str, role: str = "participant") -> tuple[Peer, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    return Peer(Grants.for_role("r", name, role), send=lambda m: sent.append(m) or True), sent


async def test_a_peer_whose_subscriber_connection_closed_is_skipped() -> None:
    alice, _ = peer("Alice")
    bob, bob_sent = peer("Bob")
    carol, carol_sent = peer("Carol")
    alice.publications["audio"] = Publication("audio")
    bob.subscriber_pc = new_peer_connection()
    await bob.subscriber_pc.close()  # as aiortc does when the remote closes DTLS
    assert not bob.closed and not bob.can_receive
    bob.subscribe(alice, "audio")  # raised InvalidStateError: RTCPeerConnection is closed
    assert bob.subscriptions == []
    await bob.renegotiate()
    assert bob_sent == []
    carol.subscribe(alice, "audio")  # the others still get the new publication
    assert len(carol.subscriptions) == 1
    await carol.renegotiate()
    assert [m["type"] for m in carol_sent] == ["offer"]
    for p in (alice, bob, carol):
        await p.close()
