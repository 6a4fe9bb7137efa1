"""Selective forwarding of encoded media: received RTP frames go out as they came in.

aiortc normally decodes every received track in a thread and re-encodes on send. The SFU
uses two seams instead (aiortc 1.16):

- :func:`receive_encoded` turns one ``RTCRtpReceiver`` (of the SFU's own peer
  connections only) into a receiver that hands each reassembled *encoded* frame to a
  callback as an ``av.Packet``. No decoder thread is started and aiortc's unbounded
  remote-track queue is never filled. Audio frames skip aiortc's jitter buffer (which
  holds 4+ packets back): each Opus RTP packet is a whole frame and is forwarded the
  moment it arrives; late or duplicate packets are dropped.
- An ``RTCRtpSender`` whose track yields ``av.Packet`` objects only packetises them
  (``Encoder.pack``), so :class:`EncodedTrack` feeds subscribers without transcoding.

Keyframe requests: aiortc answers a subscriber's PLI/FIR by forcing a keyframe in its
own encoder, which a forwarding sender does not have. :func:`relay_keyframe_requests`
redirects them to :meth:`Publication.request_keyframe`, which sends a PLI to the
publisher (rate limited).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

FrameCallback = Callable[[av.Packet, RTCRtpCodecParameters], None]

AUDIO_QUEUE_FRAMES = 50
"""1 s of 20 ms Opus frames queued per subscriber before the oldest are dropped."""
VIDEO_QUEUE_FRAMES = 30
KEYFRAME_REQUEST_INTERVAL = 0.5


@dataclass
class ForwardingTotals:
    """Process-wide counts since start, for metrics (a node is one process)."""

    frames_forwarded: int = 0
    """Media frames pushed to subscribers (one per subscriber per frame)."""


TOTALS = ForwardingTotals()


class EncodedTrack(MediaStreamTrack):
    """A track of encoded frames (``av.Packet``) with a bounded queue.

    Used on both ends: in the SFU one per (publication, subscriber), read by that
    subscriber's sender; in :mod:`sfu.client` one per received remote track.

    Policy when full (the reader fell behind): the *oldest* frame is dropped and counted
    in :attr:`dropped`. For video a dropped frame breaks decoding until the next
    keyframe, so ``on_drop`` (if given) is called to request one.
    """

    def __init__(
        self,
        kind: str,
        *,
        max_frames: int | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        limit = max_frames or (AUDIO_QUEUE_FRAMES if kind == "audio" else VIDEO_QUEUE_FRAMES)
        self._frames: deque[tuple[av.Packet, float]] = deque(maxlen=limit)
        self._waiter: asyncio.Future[None] | None = None
        self._on_drop = on_drop
        self.dropped = 0
        self.delivered = 0
        self.delays: deque[float] = deque(maxlen=512)
        """Recent seconds from the frame's arrival (``push`` or ``arrival``) to ``recv``."""

    def push(self, packet: av.Packet, arrival: float | None = None) -> None:
        if self.readyState != "live":
            return
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
        self._frames.append((packet, time.monotonic() if arrival is None else arrival))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> av.Packet:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.delivered += 1
        packet, arrival = self._frames.popleft()
        self.delays.append(time.monotonic() - arrival)
        return packet

    def stop(self) -> None:
        super().stop()
        self._frames.clear()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def queued(self) -> int:
        return len(self._frames)


class _AudioPassThrough:
    """Stands in for aiortc's audio JitterBuffer: one RTP packet is one Opus frame."""

    def __init__(self) -> None:
        self._highest: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._highest is not None and not uint16_gt(seq, self._highest):
            return False, None  # late or duplicate: forwarding it would reorder the stream
        self._highest = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


class _FrameSink:
    """Stands in for the decoder thread's input queue; runs on the event loop."""

    def __init__(self, receiver: RTCRtpReceiver, on_frame: FrameCallback) -> None:
        self._receiver = receiver
        self._on_frame = on_frame
        self._time_bases: dict[int, fractions.Fraction] = {}

    def put(self, item: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        if item is None:  # the receiver stopped
            track = self._receiver.track
            if track is not None:
                track.stop()
            return
        codec, frame = item
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        time_base = self._time_bases.get(codec.clockRate)
        if time_base is None:
            time_base = self._time_bases[codec.clockRate] = fractions.Fraction(1, codec.clockRate)
        packet.time_base = time_base
        self._on_frame(packet, codec)


class _NoThread:
    """Truthy placeholder for the decoder thread aiortc checks before queueing a frame."""

    def join(self) -> None:
        pass


class EncodedFrameReceiver(RTCRtpReceiver):
    """An ``RTCRtpReceiver`` that delivers encoded frames; see :func:`receive_encoded`.

    It reuses aiortc's RTP handling (RTCP, NACK, RTX, depacketising, video frame
    reassembly) and replaces only what comes after it. Private attribute names are those
    of aiortc 1.16; ``tests/test_sfu_forwarding.py`` fails if they change.
    """

    _frame_sink: _FrameSink
    last_ssrc: int | None
    last_arrival: float

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        aiortc: Any = self  # aiortc's private state, by its mangled names
        if aiortc._RTCRtpReceiver__started:
            return
        for codec in parameters.codecs:
            aiortc._RTCRtpReceiver__codecs[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                aiortc._RTCRtpReceiver__rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        aiortc._RTCRtpReceiver__decoder_queue = self._frame_sink
        aiortc._RTCRtpReceiver__decoder_thread = _NoThread()
        aiortc._RTCRtpReceiver__transport._register_rtp_receiver(self, parameters)
        aiortc._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        aiortc._RTCRtpReceiver__started = True

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.last_ssrc = packet.ssrc
        self.last_arrival = time.monotonic()

        await super()._handle_rtp_packet(packet, arrival_time_ms)

    async def send_pli(self) -> None:
        """Asks the remote sender for a keyframe (RFC 4585 Picture Loss Indication)."""
        if self.last_ssrc is not None:
            await self._send_rtcp_pli(self.last_ssrc)


def receive_encoded(receiver: RTCRtpReceiver, on_frame: FrameCallback) -> EncodedFrameReceiver:
    """Makes ``receiver`` deliver encoded frames to ``on_frame`` instead of decoding.

    Call it from the peer connection's ``track`` event (or right after
    ``setRemoteDescription``), before aiortc starts the receiver. ``on_frame`` runs on
    the event loop for every frame and must not block.
    """
    if isinstance(receiver, EncodedFrameReceiver):
        receiver._frame_sink = _FrameSink(receiver, on_frame)
        return receiver
    encoded: Any = receiver
    if encoded._RTCRtpReceiver__started:
        raise RuntimeError("receive_encoded() must be called before the receiver starts")
    receiver.__class__ = EncodedFrameReceiver
    encoded._frame_sink = _FrameSink(receiver, on_frame)
    encoded.last_ssrc = None
    encoded.last_arrival = 0.0
    if receiver.track is not None and receiver.track.kind == "audio":
        encoded._RTCRtpReceiver__jitter_buffer = _AudioPassThrough()
    return encoded


def relay_keyframe_requests(sender: RTCRtpSender, request: Callable[[], None]) -> None:
    """Sends ``sender``'s incoming PLI/FIR to ``request`` instead of its (absent) encoder."""
    sender._send_keyframe = request  # type: ignore[method-assign]


class Publication:
    """One published track (a microphone or a camera) and its subscribers' queues.

    Frames arrive from the publisher's :class:`EncodedFrameReceiver` and are pushed to
    every subscriber's :class:`EncodedTrack`; with nobody subscribed they are dropped at
    once, so an unconsumed track holds no memory. While :attr:`muted`, nothing is
    forwarded.
    """

    def __init__(self, kind: str, receiver: EncodedFrameReceiver | None = None) -> None:
        self.kind = kind
        self.receiver = receiver
        self.codec: RTCRtpCodecParameters | None = None
        self.mime_type: str | None = None
        """The negotiated codec (first of the answer), which subscribers must send."""
        self.muted = False
        self.subscribers: dict[str, EncodedTrack] = {}
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_wrong_codec = 0
        self._last_keyframe_request = 0.0
        self._pli_task: asyncio.Task[None] | None = None

    def on_frame(self, packet: av.Packet, codec: RTCRtpCodecParameters) -> None:
        self.frames_in += 1
        self.bytes_in += packet.size
        if self.codec is None:
            self.codec = codec
        if codec.mimeType.lower() != (self.mime_type or self.codec.mimeType).lower():
            self.frames_wrong_codec += 1  # subscribers negotiated the first codec only
            return
        if self.muted:
            return
        # Latency is measured from the RTP packet's arrival at the SFU.
        arrival = self.receiver.last_arrival if self.receiver is not None else None
        for track in self.subscribers.values():
            track.push(packet, arrival)
        TOTALS.frames_forwarded += len(self.subscribers)

    def subscribe(self, subscriber: str) -> EncodedTrack:
        old = self.subscribers.pop(subscriber, None)
        if old is not None:
            old.stop()
        track = EncodedTrack(
            self.kind, on_drop=self.request_keyframe if self.kind == "video" else None
        )
        self.subscribers[subscriber] = track
        self.request_keyframe()
        return track

    def unsubscribe(self, subscriber: str) -> None:
        track = self.subscribers.pop(subscriber, None)
        if track is not None:
            track.stop()

    def request_keyframe(self) -> None:
        """Asks the publisher for a video keyframe, at most every 500 ms."""
        if self.kind != "video" or self.receiver is None:
            return
        now = time.monotonic()
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        self._last_keyframe_request = now
        if self._pli_task is None or self._pli_task.done():
            self._pli_task = asyncio.ensure_future(self.receiver.send_pli())

    def close(self) -> None:
        for track in self.subscribers.values():
            track.stop()
        self.subscribers.clear()
