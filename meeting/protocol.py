"""Sans-I/O core of the captions protocol (``docs/captions-api.md``).

Two sockets, four directions, one ``parse``/``serialize`` pair per direction:

=====================  =================================  ======================================
direction              functions                          messages
=====================  =================================  ======================================
page -> server         :func:`parse_client`,              :class:`Auth`, :class:`Ping`,
(``/captions``)        :func:`serialize_client`           :class:`SetCaptions`, :class:`SetLanguage`
server -> page         :func:`parse_server`,              :class:`Hello`, :class:`Backlog`,
(``/captions``)        :func:`serialize_server`           :class:`RoomState`, :class:`Caption`,
                                                          :class:`TranscriptDeleted`,
                                                          :class:`Pong`, :class:`Error`
sidecar -> server      :func:`parse_publish`,             :class:`Publication`,
(``/captions/publish``) :func:`serialize_publish`        :class:`SidecarStatus`
server -> sidecar      :func:`parse_publish_reply`,       :class:`Ack`, :class:`RoomState`,
(``/captions/publish``) :func:`serialize_publish_reply`   :class:`Error`
=====================  =================================  ======================================

A ``parse_*`` function takes one text frame and its limits as keyword arguments (frame
size, nesting depth, list lengths, string lengths) and returns a typed, frozen message,
or raises one of :class:`~common.exceptions.MessageTooLargeError`,
:class:`~common.exceptions.MalformedMessageError` or
:class:`~common.exceptions.UnknownMessageTypeError`; nothing else escapes, whatever the
input. Numbers must be finite and in range (``NaN``, ``Infinity`` and integers beyond
JavaScript's safe range are refused), strings must be valid Unicode (no lone surrogate),
and nesting is checked before the JSON is decoded, so a frame of ``[[[[...`` costs a
scan, never a recursion. ``serialize_*`` is the exact inverse on valid messages.
Close codes are in :mod:`common.closecodes` (re-exported here).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from captions.events import CaptionEvent, Speaker, Word
from common.closecodes import CloseCode, close_code_for
from common.exceptions import (
    MalformedMessageError,
    MessageTooLargeError,
    UnknownMessageTypeError,
)

__all__ = ["CloseCode", "close_code_for"]

MAX_SAFE_INTEGER = 2**53 - 1  # the page reads numbers as JavaScript doubles
MAX_SECONDS = 1e7  # stream times: 115 days of one stream
MAX_WALL_CLOCK = 1e11  # Unix seconds, year 5138
LANGUAGE_PATTERN = re.compile(r"[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})?")

# Defaults for the keyword limits of every ``parse_*``.
CLIENT_MAX_BYTES = 4096
PUBLISH_MAX_BYTES = 64 * 1024
SERVER_MAX_BYTES = 16 * 1024 * 1024  # a backlog of 50 long finals fits easily
DEFAULT_MAX_DEPTH = 6  # backlog > captions > caption > words > word: 5 levels
DEFAULT_MAX_ITEMS = 1000  # words of a caption, captions of a backlog, languages
DEFAULT_MAX_CHARS = 8192  # any one string (a token, a word, a name)


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Person:
    """Who did something: an identity and a display name."""

    identity: str
    name: str


# page -> server


@dataclass(frozen=True)
class Auth:
    """The first message when no ``?token=`` was given."""

    token: str


@dataclass(frozen=True)
class Ping:
    id: str | int | None = None


@dataclass(frozen=True)
class SetCaptions:
    """Host only: captions on or off for the whole room."""

    enabled: bool


@dataclass(frozen=True)
class SetLanguage:
    """Host only: the room's caption language."""

    language: str


ClientMessage = Auth | Ping | SetCaptions | SetLanguage


# server -> page


@dataclass(frozen=True)
class Hello:
    room: str
    identity: str
    role: str
    max_message_bytes: int
    max_pending_finals: int


@dataclass(frozen=True)
class Backlog:
    captions: tuple[CaptionEvent, ...]


@dataclass(frozen=True)
class RoomState:
    """A room's caption state, as the hub owns it (pages and the captioner read it)."""

    room: str
    enabled: bool = True
    language: str | None = None
    changed_by: Person | None = None
    captioner: bool = False
    degraded: bool = False
    languages: tuple[str, ...] = ()
    saving: bool = True
    """False while the server cannot write transcripts (live captions still flow)."""
    unavailable: bool = False
    """The captioner is attached but its engine cannot caption (sent as ``captioner:
    "unavailable"``)."""


@dataclass(frozen=True)
class Caption:
    event: CaptionEvent


@dataclass(frozen=True)
class TranscriptDeleted:
    room: str
    by: Person


@dataclass(frozen=True)
class Pong:
    id: str | int | None = None


@dataclass(frozen=True)
class Error:
    code: str
    message: str


ServerMessage = Hello | Backlog | RoomState | Caption | TranscriptDeleted | Pong | Error


# sidecar -> server


@dataclass(frozen=True)
class Publication:
    """One caption event of an engine stream, numbered for the server's ack."""

    event: CaptionEvent
    seq: int
    stream: str
    stream_started_at: float


@dataclass(frozen=True)
class SidecarStatus:
    """What only the sidecar knows about its room."""

    degraded: bool = False
    participants: int = 0
    languages: tuple[str, ...] = ()
    unavailable: bool = False
    """The engine gave up on a stream of the room (e.g. its server refused our API key)
    and none has worked since: the pages show captions unavailable."""


PublishMessage = Publication | SidecarStatus


# server -> sidecar


@dataclass(frozen=True)
class Ack:
    """The final numbered ``seq`` is stored durably."""

    seq: int


@dataclass(frozen=True)
class NotSaved:
    """The final numbered ``seq`` went out live but the server cannot take it for storing
    now (its store is far behind): the publisher sends it again later."""

    seq: int


PublishReply = Ack | NotSaved | RoomState | Error


# ---------------------------------------------------------------- limits and reading


@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    max_depth: int
    max_items: int
    max_chars: int


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _decode(data: str | bytes, limits: _Limits) -> dict[str, Any]:
    if isinstance(data, bytes | bytearray):
        raise MalformedMessageError("binary frames are not part of the protocol")
    if len(data) > limits.max_bytes or (
        len(data) * 4 > limits.max_bytes
        and len(data.encode("utf-8", "surrogatepass")) > limits.max_bytes
    ):
        raise MessageTooLargeError(f"message over {limits.max_bytes} bytes")
    depth = 0
    for token in _JSON_TOKENS.finditer(data):  # nesting is bounded before json recurses
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limits.max_depth:
                raise MalformedMessageError(f"nested deeper than {limits.max_depth} levels")
        elif char in "]}":
            depth -= 1
    try:
        obj = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"not JSON: {str(exc)[:80]}") from exc
    if not isinstance(obj, dict):
        raise MalformedMessageError("message is not a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MalformedMessageError("message has no string field 'type'")
    return obj


def _is_language(value: Any) -> bool:
    return isinstance(value, str) and bool(LANGUAGE_PATTERN.fullmatch(value))


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number the protocol accepts")


class _Fields:
    """Typed, bounded access to one JSON object's fields; errors name the field."""

    def __init__(self, obj: Any, where: str, limits: _Limits) -> None:
        if not isinstance(obj, dict):
            raise MalformedMessageError(f"{where} must be an object")
        self.obj, self.where, self.limits = obj, where, limits

    def _fail(self, name: str, what: str) -> MalformedMessageError:
        return MalformedMessageError(f"{self.where}.{name} must be {what}")

    def present(self, name: str) -> bool:
        return self.obj.get(name) is not None

    def string(self, name: str, *, optional: bool = False, max_chars: int | None = None) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        limit = min(max_chars or self.limits.max_chars, self.limits.max_chars)
        if not isinstance(value, str) or len(value) > limit:
            raise self._fail(name, f"a string of at most {limit} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self._fail(name, "valid Unicode (no lone surrogate)") from None
        return value

    def boolean(self, name: str, *, default: bool | None = None) -> bool:
        value = self.obj.get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, bool):
            raise self._fail(name, "true or false")
        return value

    def integer(self, name: str, *, low: int = 0, high: int = MAX_SAFE_INTEGER) -> int:
        value = self.obj.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self._fail(name, f"an integer from {low} to {high}")
        return value

    def number(self, name: str, *, low: float, high: float) -> float:
        value = self.obj.get(name)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise self._fail(name, f"a finite number from {low:g} to {high:g}")
        return float(value)

    def items(self, name: str, *, optional: bool = False) -> list[Any]:
        value = self.obj.get(name)
        if value is None and optional:
            return []
        if not isinstance(value, list) or len(value) > self.limits.max_items:
            raise self._fail(name, f"a list of at most {self.limits.max_items} items")
        return value

    def nested(self, name: str) -> _Fields:
        return _Fields(self.obj.get(name), f"{self.where}.{name}", self.limits)

    def person(self, name: str, *, optional: bool = False) -> Person | None:
        if optional and self.obj.get(name) is None:
            return None
        fields = self.nested(name)
        return Person(fields.string("identity"), fields.string("name"))

    def language(self, name: str, *, optional: bool = False) -> str | None:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if not _is_language(value):
            raise self._fail(name, "a language code such as 'en' or 'pt-BR'")
        return str(value)

    def languages(self, name: str) -> tuple[str, ...]:
        values = self.items(name, optional=True)
        if not all(_is_language(value) for value in values):
            raise self._fail(name, "a list of language codes")
        return tuple(values)

    def ping_id(self) -> str | int | None:
        value = self.obj.get("id")
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer("id", low=-MAX_SAFE_INTEGER)
        return self.string("id", max_chars=64)


def _caption_event(fields: _Fields) -> CaptionEvent:
    """The caption-core event (docs/caption-format.md), every field checked."""
    kind = fields.string("kind")
    if kind not in ("partial", "final"):
        raise MalformedMessageError(f"{fields.where}.kind must be 'partial' or 'final'")
    words = []
    for i, raw in enumerate(fields.items("words")):
        word = _Fields(raw, f"{fields.where}.words[{i}]", fields.limits)
        words.append(
            Word(
                word.string("text"),
                word.number("start", low=0.0, high=MAX_SECONDS),
                word.number("end", low=0.0, high=MAX_SECONDS),
                word.boolean("final"),
            )
        )
    flags: dict[str, Any] = {}
    if fields.present("flags"):
        raw_flags = fields.nested("flags")
        if len(raw_flags.obj) > 16:
            raise MalformedMessageError(f"{fields.where}.flags has more than 16 entries")
        for key, value in raw_flags.obj.items():
            if len(key) > 64:
                raise MalformedMessageError(f"{fields.where}.flags has a key over 64 characters")
            if not isinstance(value, bool):
                raise MalformedMessageError(f"{fields.where}.flags values must be true or false")
            flags[key] = value
    speaker_id = fields.string("speaker", max_chars=256)
    name = fields.string("speaker_name", optional=True, max_chars=256)
    language = fields.language("language", optional=True)
    return CaptionEvent(
        speaker=Speaker(speaker_id, name or ""),
        utterance=fields.integer("utterance"),
        revision=fields.integer("revision"),
        kind=kind,
        words=tuple(words),
        emitted_at=fields.number("emitted_at", low=-MAX_WALL_CLOCK, high=MAX_WALL_CLOCK),
        flags=flags,
        language=language,
    )


def _room_state(fields: _Fields) -> RoomState:
    captions, captioner = fields.string("captions"), fields.string("captioner")
    if captions not in ("on", "off") or captioner not in ("connected", "absent", "unavailable"):
        raise MalformedMessageError(
            "room_state: captions is on/off, captioner connected/absent/unavailable"
        )
    return RoomState(
        room=fields.string("room"),
        enabled=captions == "on",
        language=fields.language("language", optional=True),
        changed_by=fields.person("changed_by", optional=True),
        captioner=captioner != "absent",
        unavailable=captioner == "unavailable",
        degraded=fields.boolean("degraded"),
        languages=fields.languages("languages"),
        saving=fields.boolean("saving", default=True),
    )


def _error(fields: _Fields) -> Error:
    return Error(fields.string("code", max_chars=64), fields.string("message"))


Reader = Callable[[_Fields], Any]


def _parse(
    data: str | bytes, readers: Mapping[str, Reader], limits: _Limits, direction: str
) -> Any:
    obj = _decode(data, limits)
    kind = obj["type"]
    reader = readers.get(kind)
    if reader is None:
        raise UnknownMessageTypeError(f"unknown {direction} message type {kind[:40]!r}")
    return reader(_Fields(obj, kind, limits))


# ---------------------------------------------------------------- page -> server

_CLIENT_READERS: dict[str, Reader] = {
    "auth": lambda f: Auth(f.string("token")),
    "ping": lambda f: Ping(f.ping_id()),
    "set_captions": lambda f: SetCaptions(f.boolean("enabled")),
    "set_language": lambda f: SetLanguage(str(f.language("language"))),
}


def parse_client(
    data: str | bytes,
    *,
    max_bytes: int = CLIENT_MAX_BYTES,
    max_depth: int = 2,
    max_items: int = 16,
    max_chars: int = CLIENT_MAX_BYTES,
) -> ClientMessage:
    """One frame a page sent on ``/captions``."""
    limits = _Limits(max_bytes, max_depth, max_items, max_chars)
    return _parse(data, _CLIENT_READERS, limits, "client")


def serialize_client(message: ClientMessage) -> str:
    if isinstance(message, Auth):
        return _dump({"type": "auth", "token": message.token})
    if isinstance(message, Ping):
        return _dump(_with_id({"type": "ping"}, message.id))
    if isinstance(message, SetCaptions):
        return _dump({"type": "set_captions", "enabled": message.enabled})
    return _dump({"type": "set_language", "language": message.language})


# ---------------------------------------------------------------- server -> page


def _hello(f: _Fields) -> Hello:
    limits = f.nested("limits")
    return Hello(
        room=f.string("room"),
        identity=f.string("identity"),
        role=f.string("role", max_chars=32),
        max_message_bytes=limits.integer("max_message_bytes"),
        max_pending_finals=limits.integer("max_pending_finals"),
    )


def _backlog(f: _Fields) -> Backlog:
    captions = f.items("captions")
    events = []
    for i, raw in enumerate(captions):
        caption = _Fields(raw, f"backlog.captions[{i}]", f.limits)
        if raw.get("type") != "caption":
            raise MalformedMessageError(f"{caption.where} is not a caption")
        events.append(_caption_event(caption))
    return Backlog(tuple(events))


_SERVER_READERS: dict[str, Reader] = {
    "hello": _hello,
    "backlog": _backlog,
    "room_state": _room_state,
    "caption": lambda f: Caption(_caption_event(f)),
    "transcript_deleted": lambda f: TranscriptDeleted(f.string("room"), f.person("by")),  # type: ignore[arg-type]
    "pong": lambda f: Pong(f.ping_id()),
    "error": _error,
}


def parse_server(
    data: str | bytes,
    *,
    max_bytes: int = SERVER_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> ServerMessage:
    """One frame the server sent on ``/captions`` (Python consumers, tests)."""
    limits = _Limits(max_bytes, max_depth, max_items, max_chars)
    return _parse(data, _SERVER_READERS, limits, "server")


def serialize_server(message: ServerMessage) -> str:
    return _dump(_server_json(message))


def _server_json(message: ServerMessage) -> dict[str, Any]:
    if isinstance(message, Caption):
        return message.event.to_json()
    if isinstance(message, RoomState):
        return {
            "type": "room_state",
            "room": message.room,
            "captions": "on" if message.enabled else "off",
            "language": message.language,
            "changed_by": _person(message.changed_by),
            "captioner": (
                ("unavailable" if message.unavailable else "connected")
                if message.captioner
                else "absent"
            ),
            "degraded": message.degraded,
            "languages": list(message.languages),
            "saving": message.saving,
        }
    if isinstance(message, Hello):
        return {
            "type": "hello",
            "room": message.room,
            "identity": message.identity,
            "role": message.role,
            "limits": {
                "max_message_bytes": message.max_message_bytes,
                "max_pending_finals": message.max_pending_finals,
            },
        }
    if isinstance(message, Backlog):
        return {"type": "backlog", "captions": [e.to_json() for e in message.captions]}
    if isinstance(message, TranscriptDeleted):
        return {"type": "transcript_deleted", "room": message.room, "by": _person(message.by)}
    if isinstance(message, Pong):
        return _with_id({"type": "pong"}, message.id)
    return {"type": "error", "code": message.code, "message": message.message}


# ---------------------------------------------------------------- sidecar -> server


def _publication(f: _Fields) -> Publication:
    return Publication(
        event=_caption_event(f),
        seq=f.integer("seq"),
        stream=f.string("stream", max_chars=64),
        stream_started_at=f.number("stream_started_at", low=0.0, high=MAX_WALL_CLOCK),
    )


def _sidecar_status(f: _Fields) -> SidecarStatus:
    return SidecarStatus(
        degraded=f.boolean("degraded"),
        unavailable=f.boolean("unavailable", default=False),
        participants=f.integer("participants", high=1_000_000),
        languages=f.languages("languages"),
    )


_PUBLISH_READERS: dict[str, Reader] = {"caption": _publication, "status": _sidecar_status}


def parse_publish(
    data: str | bytes,
    *,
    max_bytes: int = PUBLISH_MAX_BYTES,
    max_depth: int = 4,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> PublishMessage:
    """One frame the sidecar sent on ``/captions/publish``."""
    limits = _Limits(max_bytes, max_depth, max_items, max_chars)
    return _parse(data, _PUBLISH_READERS, limits, "publish")


def serialize_publish(message: PublishMessage) -> str:
    if isinstance(message, Publication):
        return _dump(
            {
                **message.event.to_json(),
                "seq": message.seq,
                "stream": message.stream,
                "stream_started_at": round(message.stream_started_at, 3),
            }
        )
    return _dump(
        {
            "type": "status",
            "degraded": message.degraded,
            "unavailable": message.unavailable,
            "participants": message.participants,
            "languages": list(message.languages),
        }
    )


# ---------------------------------------------------------------- server -> sidecar

_REPLY_READERS: dict[str, Reader] = {
    "ack": lambda f: Ack(f.integer("seq")),
    "not_saved": lambda f: NotSaved(f.integer("seq")),
    "room_state": _room_state,
    "error": _error,
}


def parse_publish_reply(
    data: str | bytes,
    *,
    max_bytes: int = PUBLISH_MAX_BYTES,
    max_depth: int = 3,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> PublishReply:
    """One frame the server sent the sidecar on ``/captions/publish``."""
    limits = _Limits(max_bytes, max_depth, max_items, max_chars)
    return _parse(data, _REPLY_READERS, limits, "publish reply")


def serialize_publish_reply(message: PublishReply) -> str:
    if isinstance(message, Ack):
        return _dump({"type": "ack", "seq": message.seq})
    if isinstance(message, NotSaved):
        return _dump({"type": "not_saved", "seq": message.seq})
    return serialize_server(message)


# ---------------------------------------------------------------- helpers


def _dump(obj: dict[str, Any]) -> str:
    # ensure_ascii keeps the text encodable whatever a string holds; allow_nan=False
    # refuses to put on the wire what the parsers would refuse to read.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _person(person: Person | None) -> dict[str, str] | None:
    return None if person is None else {"identity": person.identity, "name": person.name}


def _with_id(obj: dict[str, Any], ident: str | int | None) -> dict[str, Any]:
    if ident is not None:
        obj["id"] = ident
    return obj
