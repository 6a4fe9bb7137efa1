"""Media for tests, bots and benchmarks: pre-encoded Opus and video played in real time.

Apart from the SFU core, the way aiortc keeps ``contrib/media.py`` apart from its own:
:class:`PacedPacketTrack` publishes packets by their timestamps without re-encoding, and
the ``*_track`` helpers build one from a sound file, PCM or a moving test pattern.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms
VIDEO_CLOCK = 90_000


def _resample(mono: npt.NDArray[np.float32], sample_rate: int) -> npt.NDArray[np.float32]:
    """Mono float PCM at ``sample_rate`` -> 48 kHz, with PyAV's resampler."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=OPUS_RATE)
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
    frame.sample_rate = sample_rate
    chunks = [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _decode_mono(path: str | Path) -> npt.NDArray[np.float32]:
    """Any file PyAV reads -> mono float PCM at 48 kHz."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=OPUS_RATE)
    chunks: list[npt.NDArray[np.float32]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


class PacedPacketTrack(MediaStreamTrack):
    """Publishes pre-encoded packets in real time (by their ``pts``), without re-encoding.

    ``sent`` records each payload handed to the sender when ``record`` is true, so tests
    can compare what arrived with what was sent.
    """

    def __init__(
        self,
        kind: str,
        packets: Sequence[tuple[bytes, int]],
        clock_rate: int,
        *,
        loop: bool = False,
        record: bool = False,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._packets = packets
        self._rate = clock_rate
        self._time_base = fractions.Fraction(1, clock_rate)
        self._repeat = loop
        self._index = 0
        self._offset = 0
        self._start: float | None = None
        self.record = record
        self.sent: list[bytes] = []
        self.frames_sent = 0
        self.sent_times: dict[bytes, float] | None = None
        """If set to a dict, payload -> monotonic time it was handed to the sender."""

    @property
    def duration(self) -> float:
        return (self._packets[-1][1] + OPUS_FRAME) / self._rate if self._packets else 0.0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._index >= len(self._packets):
            if not self._repeat or not self._packets:
                self.stop()
                raise MediaStreamError
            self._offset += self._packets[-1][1] + (
                self._packets[1][1] if len(self._packets) > 1 else 1
            )
            self._index = 0
        payload, pts = self._packets[self._index]
        self._index += 1
        pts += self._offset
        if self._start is None:
            self._start = time.monotonic() - pts / self._rate
        delay = self._start + pts / self._rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = self._time_base
        if self.record:
            self.sent.append(payload)
        self.frames_sent += 1
        if self.sent_times is not None:
            self.sent_times[payload] = time.monotonic()
        return packet


def encode_opus(
    pcm: npt.ArrayLike, sample_rate: int, *, bitrate: int = 32_000
) -> list[tuple[bytes, int]]:
    """Mono PCM (float, any rate) -> Opus packets ``(payload, pts at 48 kHz)``."""
    mono = np.asarray(pcm, dtype=np.float32)
    if mono.ndim > 1:
        mono = mono.mean(axis=1)
    if sample_rate != OPUS_RATE:
        mono = _resample(mono, sample_rate)
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = OPUS_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = bitrate
    samples = (np.clip(mono, -1, 1) * 32767).astype(np.int16)
    pad = (-len(samples)) % OPUS_FRAME
    samples = np.concatenate([samples, np.zeros(pad, np.int16)])
    packets: list[tuple[bytes, int]] = []
    for start in range(0, len(samples), OPUS_FRAME):
        frame = av.AudioFrame.from_ndarray(
            samples[None, start : start + OPUS_FRAME], format="s16", layout="mono"
        )
        frame.sample_rate = OPUS_RATE
        frame.pts = start
        for packet in encoder.encode(frame):
            packets.append((bytes(packet), len(packets) * OPUS_FRAME))
    for packet in encoder.encode(None):
        packets.append((bytes(packet), len(packets) * OPUS_FRAME))
    return packets


def encode_test_video(
    seconds: float, *, width: int = 320, height: int = 240, fps: int = 15, codec: str = "libvpx"
) -> list[tuple[bytes, int]]:
    """A moving test pattern as VP8 (``libvpx``) or H.264 (``libx264``, constrained
    baseline, Annex B) packets ``(payload, pts at 90 kHz)``."""
    encoder = av.CodecContext.create(codec, "w")
    encoder.width = width  # type: ignore[attr-defined]
    encoder.height = height  # type: ignore[attr-defined]
    encoder.pix_fmt = "yuv420p"  # type: ignore[attr-defined]
    encoder.time_base = fractions.Fraction(1, fps)
    encoder.bit_rate = 300_000
    if codec == "libx264":
        encoder.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "g": str(fps),
        }
    else:
        encoder.options = {
            "deadline": "realtime",
            "lag-in-frames": "0",
            "cpu-used": "8",
            "g": str(fps),
        }
    packets: list[tuple[bytes, int]] = []
    ys, xs = np.mgrid[0:height, 0:width]
    for index in range(int(seconds * fps)):
        image = np.stack(
            [(xs + index * 4) % 256, (ys + index * 2) % 256, np.full_like(xs, 128)], axis=-1
        ).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        for packet in encoder.encode(frame):  # type: ignore[attr-defined]
            packets.append((bytes(packet), int(packet.pts or index) * VIDEO_CLOCK // fps))
    for packet in encoder.encode(None):  # type: ignore[attr-defined]
        packets.append((bytes(packet), int(packet.pts or 0) * VIDEO_CLOCK // fps))
    return packets


def wav_audio_track(
    path: str | Path, *, loop: bool = False, record: bool = False
) -> PacedPacketTrack:
    """A microphone that plays a sound file (any format PyAV reads) in real time."""
    pcm = _decode_mono(path)
    return PacedPacketTrack(
        "audio", encode_opus(pcm, OPUS_RATE), OPUS_RATE, loop=loop, record=record
    )


def pcm_audio_track(
    pcm: npt.ArrayLike, sample_rate: int, *, loop: bool = False, record: bool = False
) -> PacedPacketTrack:
    return PacedPacketTrack(
        "audio", encode_opus(pcm, sample_rate), OPUS_RATE, loop=loop, record=record
    )


def video_test_track(
    seconds: float = 10.0, *, loop: bool = True, record: bool = False, codec: str = "libvpx"
) -> PacedPacketTrack:
    """A camera showing a moving pattern; publish with ``video_codec`` matching ``codec``."""
    return PacedPacketTrack(
        "video", encode_test_video(seconds, codec=codec), VIDEO_CLOCK, loop=loop, record=record
    )
