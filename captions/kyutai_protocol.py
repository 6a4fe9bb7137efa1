"""Kyutai's ``/api/asr-streaming`` protocol (as spoken by ``moshi-server``), sans-I/O.

Every WebSocket message is one binary frame holding one MessagePack map with a
``type`` key.

Client to server:

- ``Audio{pcm}``: float32 samples, 24 kHz mono, in [-1, 1], any length;
- ``OggOpus{data}``: Ogg/Opus bytes (a continuous stream split anywhere);
- ``Marker{id}``: echoed back once all earlier audio and the model delay are processed;
- ``Init``: answered with ``Ready`` (moshi-server's batched server answers it so);
- ``Ping``: accepted and ignored (moshi-server has no such message and drops the
  connection; accepting it costs nothing).

Server to client: ``Ready``, ``Word{text, start_time}``, ``EndWord{stop_time}``,
``Step{step_idx, prs, buffered_pcm}``, ``Marker{id}``, ``Error{message}``.

This module only turns bytes into messages and back, and holds the per-connection
bookkeeping (:class:`AsrStreamState`): which caption words became ``Word`` messages,
which markers are due, which steps were announced. Decoding raises only
:class:`MessageTooLargeError` and :class:`MalformedMessageError`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from captions.audio import PCM
from captions.events import CaptionEvent
from common.exceptions import MalformedMessageError, MessageTooLargeError, ProtocolError

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920
STEP_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
"""1 MiB: about 10 s of float32 audio in one message (msgpack floats take 5 bytes)."""
NO_FREE_CHANNELS = "no free channels"
NEUTRAL_PAUSE_PROBABILITIES = (0.0, 0.0, 0.0, 0.0)
"""``Step.prs`` from engines without end-of-turn heads: no pause predicted."""


# -- messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Audio:
    pcm: PCM


@dataclass(frozen=True)
class OggOpus:
    data: bytes


@dataclass(frozen=True)
class Marker:
    id: int


@dataclass(frozen=True)
class Init:
    pass


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class WordMessage:
    text: str
    start_time: float


@dataclass(frozen=True)
class EndWord:
    stop_time: float


@dataclass(frozen=True)
class Step:
    step_idx: int
    prs: tuple[float, ...]
    buffered_pcm: int


@dataclass(frozen=True)
class Error:
    message: str


ClientMessage = Audio | OggOpus | Marker | Init | Ping
ServerMessage = Ready | WordMessage | EndWord | Step | Marker | Error


# -- encoding -----------------------------------------------------------------------------


def encode(message: ClientMessage | ServerMessage) -> bytes:
    """One message as the bytes of one binary WebSocket frame."""
    body: dict[str, Any]
    match message:
        case Audio(pcm):
            samples = np.asarray(pcm, dtype=np.float32).tolist()
            # float32 on the wire: 5 bytes a sample instead of 9.
            return bytes(msgpack.packb({"type": "Audio", "pcm": samples}, use_single_float=True))
        case OggOpus(data):
            body = {"type": "OggOpus", "data": bytes(data)}
        case Marker(marker_id):
            body = {"type": "Marker", "id": int(marker_id)}
        case Init():
            body = {"type": "Init"}
        case Ping():
            body = {"type": "Ping"}
        case Ready():
            body = {"type": "Ready"}
        case WordMessage(text, start_time):
            body = {"type": "Word", "text": text, "start_time": float(start_time)}
        case EndWord(stop_time):
            body = {"type": "EndWord", "stop_time": float(stop_time)}
        case Step(step_idx, prs, buffered_pcm):
            body = {
                "type": "Step",
                "step_idx": int(step_idx),
                "prs": [float(p) for p in prs],
                "buffered_pcm": int(buffered_pcm),
            }
        case Error(text):
            body = {"type": "Error", "message": text}
        case _:
            raise TypeError(f"not a protocol message: {message!r}")
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


# -- decoding -----------------------------------------------------------------------------


def _unpack(data: bytes, max_bytes: int) -> tuple[str, dict[Any, Any]]:
    if len(data) > max_bytes:
        raise MessageTooLargeError(
            f"message of {len(data)} bytes is over the {max_bytes}-byte limit"
        )
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types for garbage; all mean "not msgpack"
        raise MalformedMessageError(f"not a MessagePack message ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise MalformedMessageError("a message must be a MessagePack map")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise MalformedMessageError("a message needs a string 'type'")
    return kind, body


def _int(body: dict[Any, Any], key: str, kind: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise MalformedMessageError(f"{kind}.{key} must be a 64-bit integer")
    return value


def _float(body: dict[Any, Any], key: str, kind: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedMessageError(f"{kind}.{key} must be a finite number")
    return float(value)


def _pcm(value: object) -> PCM:
    if isinstance(value, bytes | bytearray | str | dict) or not isinstance(value, list):
        raise MalformedMessageError("Audio.pcm must be an array of float32 samples")
    if any(isinstance(x, bool) or not isinstance(x, int | float) for x in value):
        raise MalformedMessageError("Audio.pcm must hold only numbers")
    pcm = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(pcm)):
        raise MalformedMessageError("Audio.pcm holds NaN or infinite samples")
    return np.clip(pcm, -1.0, 1.0).astype(np.float32)


def decode_client_message(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Parses what a client sent. Raises MessageTooLargeError or MalformedMessageError."""
    kind, body = _unpack(data, max_bytes)
    if kind == "Audio":
        return Audio(_pcm(body.get("pcm")))
    if kind == "OggOpus":
        blob = body.get("data")
        if not isinstance(blob, bytes):
            raise MalformedMessageError("OggOpus.data must be binary")
        return OggOpus(blob)
    if kind == "Marker":
        return Marker(_int(body, "id", kind))
    if kind == "Init":
        return Init()
    if kind == "Ping":
        return Ping()
    raise MalformedMessageError(f"unknown message type {kind[:40]!r}")


def decode_server_message(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ServerMessage:
    """Parses what a server sent. Raises MessageTooLargeError or MalformedMessageError."""
    kind, body = _unpack(data, max_bytes)
    if kind == "Ready":
        return Ready()
    if kind == "Word":
        text = body.get("text")
        if not isinstance(text, str):
            raise MalformedMessageError("Word.text must be a string")
        return WordMessage(text, _float(body, "start_time", kind))
    if kind == "EndWord":
        return EndWord(_float(body, "stop_time", kind))
    if kind == "Step":
        prs = body.get("prs", [])
        if not isinstance(prs, list) or any(
            isinstance(p, bool) or not isinstance(p, int | float) for p in prs
        ):
            raise MalformedMessageError("Step.prs must be an array of numbers")
        buffered = body.get("buffered_pcm", 0)
        buffered = buffered if isinstance(buffered, int) and not isinstance(buffered, bool) else 0
        return Step(_int(body, "step_idx", kind), tuple(float(p) for p in prs), buffered)
    if kind == "Marker":
        return Marker(_int(body, "id", kind))
    if kind == "Error":
        message = body.get("message")
        return Error(message if isinstance(message, str) else repr(message))
    raise MalformedMessageError(f"unknown message type {kind[:40]!r}")


# -- per-connection bookkeeping (server side) ---------------------------------------------


class AsrStreamState:
    """What one server connection has said and still owes its client.

    Bounded: at most ``max_pending_markers`` markers wait for their echo; one more is a
    protocol error (a client flooding markers gets an Error and a close).
    """

    def __init__(self, *, delay_seconds: float, max_pending_markers: int = 64) -> None:
        self.delay_seconds = delay_seconds
        self.max_pending_markers = max_pending_markers
        self.received_seconds = 0.0
        self._markers: deque[tuple[float, int]] = deque()
        self._utterance = -1
        self._sent_in_utterance = 0
        self._steps_sent = 0

    def audio_received(self, samples: int, sample_rate: int = SAMPLE_RATE) -> None:
        self.received_seconds += samples / sample_rate

    def marker_received(self, marker_id: int) -> None:
        if len(self._markers) >= self.max_pending_markers:
            raise ProtocolError(f"more than {self.max_pending_markers} markers awaiting echo")
        self._markers.append((self.received_seconds, marker_id))

    def due_markers(self, processed_seconds: float) -> list[Marker]:
        """Markers whose earlier audio, plus the model delay, has now been processed."""
        due: list[Marker] = []
        # A small tolerance: engines step in whole frames and resampling rounds lengths.
        while (
            self._markers and self._markers[0][0] + self.delay_seconds <= processed_seconds + 1e-3
        ):
            due.append(Marker(self._markers.popleft()[1]))
        return due

    def all_markers(self) -> list[Marker]:
        """Every marker still waiting (the stream was flushed to its end)."""
        due = [Marker(marker_id) for _, marker_id in self._markers]
        self._markers.clear()
        return due

    def words(self, event: CaptionEvent) -> list[WordMessage | EndWord]:
        """``Word`` + ``EndWord`` for each word of ``event`` that became final just now."""
        if event.utterance != self._utterance:
            self._utterance = event.utterance
            self._sent_in_utterance = 0
        final = event.final_words
        out: list[WordMessage | EndWord] = []
        for word in final[self._sent_in_utterance :]:
            out.append(WordMessage(word.text, round(word.start, 3)))
            out.append(EndWord(round(word.end, 3)))
        self._sent_in_utterance = max(self._sent_in_utterance, len(final))
        return out

    def steps(
        self, processed_seconds: float, prs: Sequence[float], buffered_pcm: int
    ) -> list[Step]:
        """One ``Step`` per 80 ms of audio processed since the last call."""
        reached = int(processed_seconds / STEP_SECONDS + 1e-6)
        out = [Step(i + 1, tuple(prs), buffered_pcm) for i in range(self._steps_sent, reached)]
        self._steps_sent = max(self._steps_sent, reached)
        return out
