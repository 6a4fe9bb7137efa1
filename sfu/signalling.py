"""Sans-I/O core of the SFU signalling protocol (``docs/signalling.md``).

Text in, typed messages out: :func:`parse_client_message` turns one WebSocket frame into
a :class:`ClientMessage` or raises one of the documented protocol errors
(:class:`~common.exceptions.MessageTooLargeError`,
:class:`~common.exceptions.MalformedMessageError`,
:class:`~common.exceptions.UnknownMessageTypeError`); nothing else escapes. The server
and the Python client share the builders for outgoing messages, so both ends agree on
field names. :class:`ClientSession` holds the per-connection protocol state (joined or
not, protocol errors so far), explicit and resettable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from common.closecodes import CloseCode
from common.exceptions import (
    AuthError,
    CaptionsError,
    InvalidSdpError,
    MalformedMessageError,
    MessageTooLargeError,
    UnknownMessageTypeError,
)

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
DEFAULT_MAX_PROTOCOL_ERRORS = 20
JOIN_TIMEOUT_SECONDS = 10.0
MAX_MLINE_INDEX = 1023  # media sections of one session description
MAX_SAFE_INTEGER = 2**53 - 1  # what a browser's JSON.parse keeps exact

MediaKind = Literal["audio", "video"]
PcName = Literal["publisher", "subscriber"]
KINDS: tuple[MediaKind, ...] = ("audio", "video")


# ---------------------------------------------------------------- client -> server


@dataclass(frozen=True)
class Join:
    token: str | None
    room: str | None = None
    name: str | None = None
    """Display name chosen on the join screen; used only when the token names nobody."""


@dataclass(frozen=True)
class Offer:
    sdp: str
    tracks: dict[str, MediaKind] = field(default_factory=dict)
    """Publisher offers: mid -> what it carries (microphone or camera)."""


@dataclass(frozen=True)
class Answer:
    sdp: str


@dataclass(frozen=True)
class Candidate:
    pc: PcName
    candidate: str | None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass(frozen=True)
class Mute:
    kind: MediaKind
    muted: bool


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class Ping:
    id: str | int | None = None


ClientMessage = Join | Offer | Answer | Candidate | Mute | Leave | Ping


def parse_client_message(
    data: str | bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Parses one client frame; raises only the protocol errors named in the module doc."""
    if isinstance(data, bytes | bytearray):
        raise MalformedMessageError("binary frames are not part of the protocol")
    if len(data) > max_bytes or len(data.encode("utf-8", "surrogatepass")) > max_bytes:
        raise MessageTooLargeError(f"message over {max_bytes} bytes")
    obj = _decode_object(data)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MalformedMessageError("message has no string field 'type'")
    if kind == "join":
        token = _optional(obj, "token", str)
        room = _optional(obj, "room", str)
        name = _optional(obj, "name", str)
        return Join(token=token, room=room, name=name)
    if kind == "offer":
        tracks_raw = _optional(obj, "tracks", dict) or {}
        tracks: dict[str, MediaKind] = {}
        for mid, what in tracks_raw.items():
            if what not in KINDS or len(mid) > 32:
                raise MalformedMessageError("offer.tracks maps mid to 'audio' or 'video'")
            tracks[mid] = what
        return Offer(sdp=_sdp(obj), tracks=tracks)
    if kind == "answer":
        return Answer(sdp=_sdp(obj))
    if kind == "candidate":
        pc = _required(obj, "pc", str)
        if pc not in ("publisher", "subscriber"):
            raise MalformedMessageError("candidate.pc must be 'publisher' or 'subscriber'")
        index = _optional(obj, "sdp_mline_index", int)
        if index is not None and not 0 <= index <= MAX_MLINE_INDEX:
            raise MalformedMessageError(f"candidate.sdp_mline_index must be 0 to {MAX_MLINE_INDEX}")
        return Candidate(
            pc=pc,
            candidate=_optional(obj, "candidate", str) or None,
            sdp_mid=_optional(obj, "sdp_mid", str),
            sdp_mline_index=index,
        )
    if kind == "mute":
        media = _required(obj, "kind", str)
        if media not in KINDS:
            raise MalformedMessageError("mute.kind must be 'audio' or 'video'")
        return Mute(kind=media, muted=_required(obj, "muted", bool))
    if kind == "leave":
        return Leave()
    if kind == "ping":
        ident = obj.get("id")
        if ident is not None and (not isinstance(ident, str | int) or isinstance(ident, bool)):
            raise MalformedMessageError("ping.id must be a string or an integer")
        if isinstance(ident, int) and not abs(ident) <= MAX_SAFE_INTEGER:
            raise MalformedMessageError("ping.id must be a safe integer (|id| < 2**53)")
        return Ping(id=ident)
    raise UnknownMessageTypeError(f"unknown message type {kind[:40]!r}")


def error_code(exc: CaptionsError) -> str:
    """The documented ``error.code`` for a refused message."""
    if isinstance(exc, AuthError):
        return exc.code
    if isinstance(exc, UnknownMessageTypeError):
        return "unknown_type"
    if isinstance(exc, MessageTooLargeError):
        return "too_large"
    if isinstance(exc, InvalidSdpError):
        return "invalid_sdp"
    return "malformed"


@dataclass
class ClientSession:
    """Protocol state of one signalling connection, independent of any I/O.

    ``read`` enforces that ``join`` comes first and counts protocol errors; the caller
    closes the socket with :attr:`close_code` once it is not None.
    """

    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_errors: int = DEFAULT_MAX_PROTOCOL_ERRORS
    joined: bool = False
    errors: int = 0
    close_code: int | None = None

    def read(self, data: str | bytes) -> ClientMessage:
        try:
            message = parse_client_message(data, max_bytes=self.max_bytes)
        except MessageTooLargeError:
            self.close_code = CloseCode.TOO_BIG
            raise
        except MalformedMessageError:
            self.note_error()
            raise
        if not self.joined and not isinstance(message, Join | Ping):
            self.close_code = CloseCode.PROTOCOL
            raise MalformedMessageError("the first message must be 'join'")
        if self.joined and isinstance(message, Join):
            self.note_error()
            raise MalformedMessageError("already joined")
        return message

    def note_error(self) -> None:
        self.errors += 1
        if self.errors >= self.max_errors:
            self.close_code = CloseCode.PROTOCOL

    def reset(self) -> None:
        self.joined = False
        self.errors = 0
        self.close_code = None


# ---------------------------------------------------------------- server -> client


def encode(message: dict[str, Any]) -> str:
    """One frame's text, always valid to send (UTF-8 encodable JSON)."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate slipped into some string: escaped (\udXXX) it is valid JSON,
        # whereas the raw text cannot be encoded and would end the writer.
        return json.dumps(message, separators=(",", ":"))
    return text


def error_message(code: str, message: str, request: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request:
        out["request"] = request
    return out


SERVER_TYPES = frozenset(
    {
        "joined",
        "offer",
        "answer",
        "participant_joined",
        "participant_left",
        "participant_updated",
        "pong",
        "error",
    }
)


def parse_server_message(data: str | bytes, *, max_bytes: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """Client side: one server frame as a dict with a known ``type``."""
    if isinstance(data, bytes | bytearray):
        raise MalformedMessageError("binary frames are not part of the protocol")
    if len(data) > max_bytes:
        raise MessageTooLargeError(f"message over {max_bytes} bytes")
    obj = _decode_object(data)
    if obj.get("type") not in SERVER_TYPES:
        raise UnknownMessageTypeError(f"unknown server message type {obj.get('type')!r}")
    return obj


# ---------------------------------------------------------------- helpers


def _decode_object(data: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"not JSON: {str(exc)[:80]}") from exc
    if not isinstance(obj, dict):
        raise MalformedMessageError("message is not a JSON object")
    return obj


def _required(obj: dict[str, Any], name: str, kind: type) -> Any:
    if obj.get(name) is None:
        raise MalformedMessageError(f"{obj['type']}.{name} is missing")
    return _optional(obj, name, kind)


def _optional(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    # bool is an int in Python; the protocol keeps them apart.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedMessageError(f"{obj['type']}.{name} must be {kind.__name__}")
    return value


def _sdp(obj: dict[str, Any]) -> str:
    sdp = _required(obj, "sdp", str)
    if not sdp.startswith("v=0"):
        raise InvalidSdpError(f"{obj['type']}.sdp is not a session description")
    return str(sdp)
