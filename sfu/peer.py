"""One participant as the SFU sees it: its signalling outbox and two peer connections.

The *publisher* connection receives the participant's microphone and camera (the client
offers, the SFU answers); the *subscriber* connection sends everyone else's tracks (the
SFU offers, the client answers). Each has one offerer, so renegotiations never collide.
Subscriber renegotiation is serialised: while an offer awaits its answer, further changes
are merged into the next offer.

Dead media (:meth:`Peer.watch`): when either connection goes to ``failed``, or to
``closed`` without the SFU closing it, the peer reports it once through
``on_media_lost`` and the server treats the participant as gone (``sfu/server.py``).
aiortc closes a connection by itself once its DTLS transports end: when the remote end
closed them, and when aioice ended the link after six unanswered consent checks (about
30 s without answers; aiortc 1.16 then reports ``closed`` rather than ``failed``). There
is no further grace: aiortc has no ``disconnected`` state, and a link that ended is past
recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.sdp import SessionDescription, candidate_from_sdp

from common.aio import bounded
from common.exceptions import InvalidSdpError
from sfu.forwarding import EncodedTrack, Publication, receive_encoded, relay_keyframe_requests
from sfu.signalling import KINDS, Candidate
from sfu.tokens import Grants

logger = logging.getLogger(__name__)

OUTBOX_MESSAGES = 256
"""Signalling messages queued for one client; a client that lets it fill is closed."""
CLOSE_TIMEOUT = 5.0  # seconds for a sender or peer connection to stop


@dataclass
class Subscription:
    publisher: Peer
    kind: str
    transceiver: RTCRtpTransceiver
    track: EncodedTrack
    active: bool = True


def on_connection_death(pc: RTCPeerConnection, died: Callable[[str], None]) -> None:
    """Calls ``died(state)`` whenever ``pc`` goes to ``failed`` or ``closed`` (the SFU's
    peers and the client both treat either as a dead link, see the module doc)."""

    def changed() -> None:
        if pc.connectionState in ("failed", "closed"):
            died(pc.connectionState)

    pc.on("connectionstatechange", changed)


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection that talks to nobody but its peer.

    aiortc's default configuration (``RTCPeerConnection()``) gathers candidates through
    Google's public STUN server, looking up ``stun.l.google.com`` and sending it a request
    from every IPv4 host address: an outside call on every connection (found by
    tests/test_zero_egress.py). Participants reach the SFU directly; no STUN server.
    """
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def check_session_description(sdp: str) -> None:
    """Refuses SDP that aiortc would accept but that cannot carry media to the SFU."""
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        raise InvalidSdpError(f"unparsable SDP: {str(exc)[:200]}") from exc
    if not parsed.media:
        raise InvalidSdpError("SDP has no media section")
    for media in parsed.media:
        if media.kind not in ("audio", "video", "application"):
            raise InvalidSdpError(f"SDP media of unknown kind {media.kind!r}")
        if media.port != 0 and (
            media.ice is None or not media.ice.usernameFragment or not media.dtls
        ):
            raise InvalidSdpError("SDP media section without ICE credentials or DTLS fingerprint")


class Peer:
    def __init__(
        self,
        grants: Grants,
        *,
        send: Callable[[dict[str, Any]], bool],
        connect_timeout: float | None = None,
    ) -> None:
        self.grants = grants
        self.connect_timeout = connect_timeout
        """A media connection not connected within this long is lost (None: no bound)."""
        self._connect_deadlines: list[asyncio.TimerHandle] = []
        self._send = send
        self.publisher_pc: RTCPeerConnection | None = None
        self.subscriber_pc: RTCPeerConnection | None = None
        self.publications: dict[str, Publication] = {}
        self.subscriptions: list[Subscription] = []
        self.muted: dict[str, bool] = {kind: False for kind in KINDS}
        self._offer_pending = False
        self._renegotiate_again = False
        self._negotiation_lock = asyncio.Lock()
        self.closed = False
        self.disconnect: Callable[[int, str], Awaitable[None]] | None = None
        """Closes this peer's signalling socket (set by the server)."""
        self.on_media_lost: Callable[[str], None] | None = None
        """Called once, with :attr:`media_lost`, when a media connection fails or closes
        by itself (set by the server)."""
        self.media_lost: str | None = None
        """Why this peer's media died (``"publisher connection failed"``), once it did."""

    @property
    def identity(self) -> str:
        return self.grants.identity

    @property
    def name(self) -> str:
        return self.grants.display_name

    def send(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self._send(message)

    def describe(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "name": self.name,
            "role": self.grants.role,
            **{
                kind: {"published": kind in self.publications, "muted": self.muted[kind]}
                for kind in KINDS
            },
        }

    # ------------------------------------------------------------ publishing

    async def apply_publisher_offer(self, sdp: str) -> tuple[str, set[str], set[str]]:
        """Answers a publisher offer; returns (answer sdp, kinds added, kinds removed)."""
        if self.publisher_pc is None:
            self.publisher_pc = new_peer_connection()
            self.publisher_pc.on("track", self._on_publisher_track)
            self.watch(self.publisher_pc, "publisher")
        pc = self.publisher_pc
        check_session_description(sdp)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                if transceiver.direction == "sendrecv":
                    transceiver.direction = "recvonly"  # the SFU never sends on this one
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises ValueError, OperationError, ... on bad SDP
            raise InvalidSdpError(f"cannot apply the offer: {str(exc)[:200]}") from exc
        active: dict[str, Publication] = {}
        for transceiver in pc.getTransceivers():
            receiver: Any = transceiver.receiver
            kind = transceiver.kind
            if transceiver.currentDirection not in ("recvonly", "sendrecv") or kind in active:
                continue
            publication = getattr(receiver, "publication", None)
            if publication is not None:
                active[kind] = publication
        before = set(self.publications)
        removed = {k for k in before if self.publications[k] is not active.get(k)}
        for kind in removed:
            self.publications.pop(kind).close()
        added = set()
        for kind, publication in active.items():
            if kind not in self.publications:
                self.publications[kind] = publication
                added.add(kind)
        local = pc.localDescription
        return local.sdp, added, removed

    def _on_publisher_track(self, track: Any) -> None:
        assert self.publisher_pc is not None
        for transceiver in self.publisher_pc.getTransceivers():
            if transceiver.receiver.track is track:
                publication = Publication(track.kind)
                receiver: Any = receive_encoded(transceiver.receiver, publication.on_frame)
                publication.receiver = receiver
                receiver.publication = publication
                codecs: Any = transceiver
                if codecs._codecs:
                    publication.mime_type = codecs._codecs[0].mimeType
                return

    def set_muted(self, kind: str, muted: bool) -> None:
        self.muted[kind] = muted
        publication = self.publications.get(kind)
        if publication is not None:
            publication.muted = muted

    # ------------------------------------------------------------ media state

    def watch(self, pc: RTCPeerConnection, name: str) -> None:
        """Reports ``pc``'s death (see the module doc), or its failure to connect within
        :attr:`connect_timeout`, through :attr:`on_media_lost`."""
        on_connection_death(pc, lambda state: self._lose_media(f"{name} connection {state}"))
        if self.connect_timeout is not None:
            timeout = self.connect_timeout

            def check() -> None:
                if pc.connectionState != "connected":
                    self._lose_media(f"{name} connection not connected after {timeout:g} s")

            deadline = asyncio.get_running_loop().call_later(timeout, check)
            self._connect_deadlines.append(deadline)

    def _lose_media(self, reason: str) -> None:
        if self.closed or self.media_lost:
            return  # our own close (``closed`` is set first) is no failure
        self.media_lost = reason
        logger.info("%s: %s", self.identity, reason)
        if self.on_media_lost is not None:
            self.on_media_lost(reason)

    # ------------------------------------------------------------ subscribing

    @property
    def can_receive(self) -> bool:
        """False once this peer is closed, or once aiortc closed its subscriber connection
        by itself (it does when the remote end closes every DTLS transport; the server
        then drops the peer, see :meth:`watch`): a peer that can no longer receive must
        not stop the others from publishing meanwhile."""
        pc = self.subscriber_pc
        return not self.closed and (pc is None or pc.signalingState != "closed")

    def subscribe(self, publisher: Peer, kind: str) -> None:
        publication = publisher.publications.get(kind)
        if publication is None or not self.grants.can_subscribe or not self.can_receive:
            return
        if self.subscriber_pc is None:
            self.subscriber_pc = new_peer_connection()
            self.watch(self.subscriber_pc, "subscriber")
        track = publication.subscribe(self.identity)
        transceiver = self.subscriber_pc.addTransceiver(track, direction="sendonly")
        if publication.mime_type:
            # Send with the publisher's codec: frames are forwarded, not transcoded.
            wanted = publication.mime_type.lower()
            capabilities = RTCRtpSender.getCapabilities(kind).codecs
            transceiver.setCodecPreferences(
                [c for c in capabilities if c.mimeType.lower() in (wanted, f"{kind}/rtx")]
            )
        relay_keyframe_requests(transceiver.sender, publication.request_keyframe)
        self.subscriptions.append(Subscription(publisher, kind, transceiver, track))

    async def unsubscribe(self, publisher: Peer, kind: str | None = None) -> bool:
        changed = False
        for sub in self.subscriptions:
            if sub.active and sub.publisher is publisher and kind in (None, sub.kind):
                sub.active = False
                changed = True
                publication = publisher.publications.get(sub.kind)
                if publication is not None:
                    publication.unsubscribe(self.identity)
                sub.track.stop()
                sub.transceiver.direction = "inactive"
                sender: RTCRtpSender = sub.transceiver.sender
                sender.replaceTrack(None)
                # A trackless sender still polls every 20 ms; the slot is dead, so stop it.
                await bounded(sender.stop(), timeout=CLOSE_TIMEOUT, what="stopping a sender")
        return changed

    async def renegotiate(self) -> None:
        """Sends a subscriber offer now, or after the pending one is answered."""
        if self.subscriber_pc is None or not self.can_receive:
            return
        if self._offer_pending:
            self._renegotiate_again = True
            return
        self._offer_pending = True
        self._renegotiate_again = False
        pc = self.subscriber_pc
        async with self._negotiation_lock:
            if not self.can_receive:  # closed while waiting for the lock
                self._offer_pending = False
                return
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
        tracks = [
            {
                "mid": sub.transceiver.mid,
                "identity": sub.publisher.identity,
                "name": sub.publisher.name,
                "kind": sub.kind,
                "active": sub.active,
            }
            for sub in self.subscriptions
        ]
        self.send({"type": "offer", "sdp": pc.localDescription.sdp, "tracks": tracks})

    async def apply_subscriber_answer(self, sdp: str) -> None:
        pc = self.subscriber_pc
        if pc is None or not self._offer_pending:
            raise InvalidSdpError("no subscriber offer is waiting for an answer")
        check_session_description(sdp)
        try:
            async with self._negotiation_lock:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            raise InvalidSdpError(f"cannot apply the answer: {str(exc)[:200]}") from exc
        self._offer_pending = False
        if self._renegotiate_again:
            await self.renegotiate()

    async def add_candidate(self, message: Candidate) -> None:
        pc = self.publisher_pc if message.pc == "publisher" else self.subscriber_pc
        if pc is None or not message.candidate:
            return
        text = message.candidate.removeprefix("candidate:")
        try:
            candidate = candidate_from_sdp(text)
            candidate.sdpMid = message.sdp_mid
            candidate.sdpMLineIndex = message.sdp_mline_index
            await pc.addIceCandidate(candidate)
        except Exception as exc:
            # mDNS names (abcd.local) and other unusable candidates are ignored by design.
            logger.debug("ignored ICE candidate %r: %s", message.candidate[:80], exc)

    async def close(self) -> None:
        self.closed = True
        for deadline in self._connect_deadlines:  # no timer keeps a closed peer alive
            deadline.cancel()
        for publication in self.publications.values():
            publication.close()
        self.publications.clear()
        for sub in self.subscriptions:
            sub.track.stop()
        for pc in (self.publisher_pc, self.subscriber_pc):
            if pc is not None:  # bounded: an interrupted aiortc close never resolves again
                await bounded(pc.close(), timeout=CLOSE_TIMEOUT, what="closing a peer connection")


def offer_loopback_candidates() -> None:
    """aioice skips 127.0.0.1; add it so a meeting works on a machine without a LAN."""
    original = aioice.ice.get_host_addresses
    if getattr(original, "with_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    with_loopback.with_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback
