"""A Python participant of the SFU: test bots, the benchmark and the captioning sidecar.

It speaks ``docs/signalling.md`` over ``aiohttp`` and WebRTC through aiortc. Received
media is never decoded by aiortc: each remote track delivers the publisher's encoded
frames (``av.Packet``), and :meth:`RemoteTrack.pcm` decodes Opus with PyAV only when
someone asks for PCM.

Usage::

    client = await SfuClient.connect("http://127.0.0.1:8000", token)
    await client.publish(audio=WavAudioSource("speech.wav"))      # optional
    async for event in client.events():                          # ClientEvent
        if event.type == "track" and event.track.kind == "audio":
            asyncio.create_task(consume(event.participant, event.track))
        elif event.type == "participant_updated":                 # mute state
            print(event.participant.identity, event.participant.audio_muted)
    ...
    async def consume(participant, track):
        async for pcm, rate in track.pcm():          # float32 mono, 48000 Hz
            ...                                       # ends when the track ends
    await client.close()

Events (``ClientEvent.type``): ``participant_joined``, ``participant_left``,
``participant_updated`` (mute/publish changes), ``track`` (a new remote track: ``participant``,
``track``), ``track_ended``, ``error`` (``data`` has ``code`` and ``message``),
``closed`` (the last event: ``data["code"]`` is the close code, ``data["reason"]`` why).

The client is gone once either of its peer connections dies, as on the page: it emits
``closed`` (code ``MEDIA_FAILED``, reason ``"publisher connection failed"`` or
``"... closed"``) and closes its socket with that code, so the SFU drops it at once.
A connection ``failed`` ends the client at once. One that aiortc ``closed`` by itself
(its DTLS transport ended: the SFU closed it, or aioice ended the link after about 30 s
of unanswered consent checks) first gives the socket :data:`MEDIA_CLOSED_GRACE` seconds
to bring the SFU's own close (``MEDIA_LOST`` when the SFU saw the failure first).
Consumers rejoin on ``closed``.

Remote participants are in :attr:`SfuClient.participants` (identity ->
:class:`RemoteParticipant` with ``identity``, ``name``, ``role``, ``audio_muted``,
``video_muted``, ``audio`` and ``video`` tracks). Hidden participants (the captioner)
never appear. A refused action arrives as an ``error`` event with code ``forbidden``.

Bounded queues: the event queue holds 1000 events and each remote track 50 audio /
30 video frames; when full the oldest entry is dropped (and counted in ``dropped``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from yarl import URL

from common.aio import bounded, cancel_and_wait
from common.closecodes import CloseCode
from common.exceptions import AuthError, CaptionsError, ProtocolError
from sfu.contrib.media import PacedPacketTrack
from sfu.forwarding import EncodedFrameReceiver, EncodedTrack, receive_encoded
from sfu.peer import new_peer_connection, offer_loopback_candidates, on_connection_death
from sfu.signalling import encode, parse_server_message

EVENT_QUEUE = 1000
CLOSE_TIMEOUT = 5.0  # seconds for each step of close()
MEDIA_CLOSED_GRACE = 2.0
"""Seconds a peer connection closed by the SFU waits for the SFU's socket close."""
_ENDS = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


# ---------------------------------------------------------------- remote side


class RemoteTrack:
    """One track received from a remote participant, as encoded frames."""

    def __init__(self, kind: str, mid: str) -> None:
        self.kind = kind
        self.mid = mid
        self.buffer = EncodedTrack(kind)
        self.codec: str | None = None
        self.frames_received = 0
        self.received_at: deque[float] = deque(maxlen=10_000)
        self.receiver: EncodedFrameReceiver | None = None

    async def request_keyframe(self) -> None:
        """Sends a PLI for this (video) track; the SFU relays it to the publisher."""
        if self.receiver is not None:
            await self.receiver.send_pli()

    def _on_frame(self, packet: av.Packet, codec: RTCRtpCodecParameters) -> None:
        self.codec = codec.mimeType
        self.frames_received += 1
        self.received_at.append(time.monotonic())
        self.buffer.push(packet)

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    @property
    def ended(self) -> bool:
        return self.buffer.readyState != "live"

    def end(self) -> None:
        self.buffer.stop()

    async def packets(self) -> AsyncIterator[av.Packet]:
        """Encoded frames as the publisher sent them, until the track ends."""
        while True:
            try:
                yield await self.buffer.recv()
            except MediaStreamError:
                return

    async def pcm(self) -> AsyncIterator[tuple[npt.NDArray[np.float32], int]]:
        """Decoded audio: ``(float32 mono samples, 48000)`` per Opus frame."""
        decoder = av.CodecContext.create("opus", "r")
        async for packet in self.packets():
            try:
                frames = decoder.decode(packet)
            except av.FFmpegError:
                continue  # one corrupt frame; the next decodes
            for frame in frames:
                data = frame.to_ndarray().astype(np.float32)
                if frame.format.name.startswith("s16"):
                    data /= 32768.0
                if frame.format.is_planar:
                    mono = data.mean(axis=0)
                else:
                    mono = data.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                yield mono.astype(np.float32), frame.sample_rate


@dataclass
class RemoteParticipant:
    identity: str
    name: str
    role: str = "participant"
    audio_muted: bool = False
    video_muted: bool = False
    audio_published: bool = False
    video_published: bool = False
    audio: RemoteTrack | None = None
    video: RemoteTrack | None = None

    def update(self, info: dict[str, Any]) -> None:
        self.name = str(info.get("name", self.name))
        self.role = str(info.get("role", self.role))
        for kind in ("audio", "video"):
            state = info.get(kind) or {}
            setattr(self, f"{kind}_muted", bool(state.get("muted", False)))
            setattr(self, f"{kind}_published", bool(state.get("published", False)))


@dataclass
class ClientEvent:
    type: str
    participant: RemoteParticipant | None = None
    track: RemoteTrack | None = None
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- client


class SfuClient:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self.me: dict[str, Any] = {}
        self.room = ""
        self.participants: dict[str, RemoteParticipant] = {}
        self.errors: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.publisher_pc: RTCPeerConnection | None = None
        self.subscriber_pc: RTCPeerConnection | None = None
        self.published: dict[str, PacedPacketTrack] = {}
        self._tracks_by_mid: dict[str, RemoteTrack] = {}
        self._new_remote_tracks: list[Any] = []
        self._events: deque[ClientEvent] = deque(maxlen=EVENT_QUEUE)
        self._event_ready = asyncio.Event()
        self._answer: asyncio.Future[str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False  # close() runs: our own peer-connection closes are no failure
        self._ended = False  # the "closed" event was emitted
        self._media_task: asyncio.Task[None] | None = None
        self._subscriber_lock = asyncio.Lock()
        self.offers_answered = 0
        self.dropped_events = 0

    @classmethod
    async def connect(
        cls, url: str, token: str, *, room: str | None = None, ssl: Any = True
    ) -> SfuClient:
        """Joins the room of ``token`` on the SFU at ``url`` (http(s)://host:port).

        ``ssl`` is aiohttp's: True verifies certificates, False accepts a self-signed one,
        or an ``ssl.SSLContext``. Raises an :class:`AuthError` (with ``code``) if the token
        is refused, a :class:`ProtocolError` if the SFU cannot be reached.
        """
        if URL(url).host in ("127.0.0.1", "localhost", "::1"):
            # The SFU is on this machine: also offer loopback candidates, so that media
            # flows even where loopback is the only interface (as the server does).
            offer_loopback_candidates()
        http = aiohttp.ClientSession()
        ws_url = url.rstrip("/").replace("http", "ws", 1) + "/ws"
        try:
            ws = await http.ws_connect(ws_url, max_msg_size=0, ssl=ssl, heartbeat=30)
        except (aiohttp.ClientError, OSError) as exc:
            await http.close()
            raise ProtocolError(f"cannot reach the SFU at {ws_url}: {exc}") from exc
        client = cls(http, ws)
        join: dict[str, Any] = {"type": "join", "token": token}
        if room is not None:
            join["room"] = room
        await ws.send_str(encode(join))
        first = await ws.receive()
        if first.type != aiohttp.WSMsgType.TEXT:
            await client.close()
            raise ProtocolError(f"the SFU closed the connection (code {ws.close_code})")
        message = parse_server_message(first.data)
        if message["type"] == "error":
            await client.close()
            error = AuthError(message.get("message", "refused"))
            error.code = str(message.get("code"))
            raise error
        client._on_joined(message)
        client._reader = asyncio.ensure_future(client._read())
        return client

    # ------------------------------------------------------------ public API

    async def publish(
        self,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        video_codec: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """(Re)negotiates the publisher connection with these tracks.

        ``video_codec`` (``"video/VP8"`` or ``"video/H264"``) is offered first; the track
        must yield packets of that codec, since nothing is transcoded.
        """
        if self.publisher_pc is None:
            self.publisher_pc = new_peer_connection()
            self._watch(self.publisher_pc, "publisher")
        pc = self.publisher_pc
        for kind, track in (("audio", audio), ("video", video)):
            if track is None:
                continue
            existing = next((t for t in pc.getTransceivers() if t.kind == kind), None)
            if existing is not None:
                existing.sender.replaceTrack(track)
                existing.direction = "sendonly"
            else:
                existing = pc.addTransceiver(track, direction="sendonly")
            if kind == "video" and video_codec:
                capabilities = RTCRtpSender.getCapabilities("video").codecs
                wanted = video_codec.lower()
                existing.setCodecPreferences(
                    [c for c in capabilities if c.mimeType.lower() == wanted]
                    + [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
                )
            self.published[kind] = track  # type: ignore[assignment]
        await self._negotiate_publisher(pc, timeout)

    async def unpublish_video(self, timeout: float = 10.0) -> None:
        """Stops the camera: the video m-line becomes inactive."""
        pc = self.publisher_pc
        if pc is None:
            return
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.direction = "inactive"
                transceiver.sender.replaceTrack(None)
        self.published.pop("video", None)
        await self._negotiate_publisher(pc, timeout)

    async def _negotiate_publisher(self, pc: RTCPeerConnection, timeout: float) -> None:
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        self._answer = asyncio.get_running_loop().create_future()
        await self._send({"type": "offer", "sdp": pc.localDescription.sdp})
        sdp = await asyncio.wait_for(self._answer, timeout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def set_muted(self, kind: str, muted: bool) -> None:
        await self._send({"type": "mute", "kind": kind, "muted": muted})

    async def send_raw(self, text: str) -> None:
        """Sends any text frame (tests use it for malformed input)."""
        await self._ws.send_str(text)

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Room events until the connection closes."""
        while True:
            while self._events:
                event = self._events.popleft()
                yield event
                if event.type == "closed":
                    return
            self._event_ready.clear()
            await self._event_ready.wait()

    async def wait_for(self, type: str, *, timeout: float = 10.0, **match: Any) -> ClientEvent:
        """The next event of ``type`` whose ``data`` fields or participant match."""

        async def find() -> ClientEvent:
            async for event in self.events():
                if event.type == type and all(
                    event.data.get(k) == v
                    or (event.participant is not None and getattr(event.participant, k, None) == v)
                    for k, v in match.items()
                ):
                    return event
                if event.type == "closed" and type != "closed":
                    raise ProtocolError(f"connection closed ({event.data.get('code')})")
            raise ProtocolError("connection closed")

        return await asyncio.wait_for(find(), timeout)

    async def leave(self) -> None:
        """Closes the signalling socket: the server tells the others, and :meth:`events`
        ends with a ``closed`` event, so a consumer can finish its work; :meth:`close`
        still releases the rest."""
        await bounded(self._ws.close(), timeout=CLOSE_TIMEOUT, what="closing the SFU socket")

    async def close(self) -> None:
        """Leaves the room (the server then tells the others) and releases everything."""
        # Every step is bounded: close() runs on stop paths, often in a cancelled task.
        self._closing = True
        await cancel_and_wait(self._media_task, timeout=CLOSE_TIMEOUT)
        await cancel_and_wait(self._reader, timeout=CLOSE_TIMEOUT)
        await self.leave()
        for track in self._tracks_by_mid.values():
            track.end()
        for pc in (self.publisher_pc, self.subscriber_pc):
            if pc is not None:
                await bounded(pc.close(), timeout=CLOSE_TIMEOUT, what="closing a peer connection")
        await bounded(self._http.close(), timeout=CLOSE_TIMEOUT, what="closing the HTTP session")

    async def __aenter__(self) -> SfuClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ internals

    async def _send(self, message: dict[str, Any]) -> None:
        await self._ws.send_str(encode(message))

    def _emit(self, event: ClientEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        self._events.append(event)
        self._event_ready.set()

    def _on_joined(self, message: dict[str, Any]) -> None:
        self.me = message.get("you", {})
        self.room = str(message.get("room", ""))
        for info in message.get("participants", []):
            self._participant(info).update(info)

    def _participant(self, info: dict[str, Any]) -> RemoteParticipant:
        """The known participant of ``info["identity"]``, added if new."""
        participant = self.participants.get(info["identity"])
        if participant is None:
            participant = RemoteParticipant(identity=info["identity"], name=info.get("name", ""))
            self.participants[participant.identity] = participant
        return participant

    async def _read(self) -> None:
        reason = ""
        try:
            while True:
                frame = await self._ws.receive()
                if frame.type == aiohttp.WSMsgType.CLOSE:
                    reason = str(frame.extra or "")
                if frame.type in _ENDS:
                    return
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = parse_server_message(frame.data)
                except CaptionsError:
                    continue
                await self._handle(message)
        finally:
            self._end(self._ws.close_code, reason)

    def _end(self, code: int | None, reason: str) -> None:
        """Emits the last event, ``closed``, once; the remote tracks end."""
        if self._ended:
            return
        self._ended = True
        self.close_code = code
        for track in self._tracks_by_mid.values():
            track.end()
        self._emit(ClientEvent("closed", data={"code": code, "reason": reason}))

    # ------------------------------------------------------------ media state

    def _watch(self, pc: RTCPeerConnection, name: str) -> None:
        """Ends the client when ``pc`` dies (see the module doc)."""

        def died(state: str) -> None:
            if self._closing or self._media_task:
                return
            reason = f"{name} connection {state}"
            self._media_task = asyncio.ensure_future(
                self._media_died(reason, grace=MEDIA_CLOSED_GRACE if state == "closed" else 0)
            )

        on_connection_death(pc, died)

    async def _media_died(self, reason: str, *, grace: float) -> None:
        if grace and self._reader is not None:
            # The SFU closed the connection: its socket close (and code) is on its way.
            await asyncio.wait({self._reader}, timeout=grace)
        if self._ended:
            return
        self._end(CloseCode.MEDIA_FAILED, reason)
        # As the page does: tell the SFU at once rather than let it find out by itself.
        await bounded(
            self._ws.close(code=CloseCode.MEDIA_FAILED, message=reason.encode()[:120]),
            timeout=CLOSE_TIMEOUT,
            what="closing the socket of a client whose media failed",
        )

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "answer":
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(message["sdp"])
        elif kind == "offer":
            await self._on_subscriber_offer(message)
        elif kind in ("participant_joined", "participant_updated"):
            info = message["participant"]
            if info["identity"] == self.me.get("identity"):
                self.me = info  # our own mute/publish state, as the others see it
                return
            participant = self._participant(info)
            participant.update(info)
            self._emit(ClientEvent(kind, participant=participant, data=info))
        elif kind == "participant_left":
            gone = self.participants.pop(message["identity"], None)
            self._emit(ClientEvent(kind, participant=gone, data=message))
        elif kind == "error":
            self.errors.append(message)
            self._emit(ClientEvent("error", data=message))
        elif kind == "pong":
            self._emit(ClientEvent("pong", data=message))

    async def _on_subscriber_offer(self, message: dict[str, Any]) -> None:
        async with self._subscriber_lock:
            if self.subscriber_pc is None:
                self.subscriber_pc = new_peer_connection()
                self.subscriber_pc.on("track", self._new_remote_tracks.append)
                self._watch(self.subscriber_pc, "subscriber")
            pc = self.subscriber_pc
            described = {t["mid"]: t for t in message.get("tracks", [])}
            new_receivers = self._new_remote_tracks
            new_receivers.clear()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type="offer"))
            for transceiver in pc.getTransceivers():
                mid = transceiver.mid
                if mid is None or mid in self._tracks_by_mid or mid not in described:
                    continue
                if transceiver.receiver.track not in new_receivers:
                    continue
                remote = RemoteTrack(transceiver.kind, mid)
                remote.receiver = receive_encoded(transceiver.receiver, remote._on_frame)
                self._tracks_by_mid[mid] = remote
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            await self._send({"type": "answer", "sdp": pc.localDescription.sdp})
            self.offers_answered += 1
            for mid, info in described.items():
                remote_track = self._tracks_by_mid.get(mid)
                if remote_track is None:
                    continue
                if info.get("active", True) and not remote_track.ended:
                    participant = self._participant(info)
                    if getattr(participant, info["kind"]) is not remote_track:
                        setattr(participant, info["kind"], remote_track)
                        self._emit(
                            ClientEvent("track", participant=participant, track=remote_track)
                        )
                elif not remote_track.ended:
                    remote_track.end()
                    owner = self.participants.get(info["identity"])
                    if owner is not None and getattr(owner, info["kind"]) is remote_track:
                        setattr(owner, info["kind"], None)
                    self._emit(ClientEvent("track_ended", participant=owner, track=remote_track))
