"""The sans-I/O captions protocol (meeting/protocol.py): typed messages, documented errors
only (fuzzed with the whole Unicode range), exact round trips, and one set of close codes
shared with the page."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captions.events import CaptionEvent, Speaker, Word
from common.closecodes import REFUSED, CloseCode
from common.exceptions import (
    MalformedMessageError,
    MessageTooLargeError,
    ProtocolError,
    UnknownMessageTypeError,
)
from meeting import protocol
from meeting.protocol import (
    Ack,
    Auth,
    Backlog,
    Caption,
    Error,
    Hello,
    Person,
    Ping,
    Pong,
    Publication,
    RoomState,
    SetCaptions,
    SetLanguage,
    SidecarStatus,
    TranscriptDeleted,
)

STATIC = Path(__file__).resolve().parents[1] / "meeting" / "static"

PAIRS: list[tuple[Callable[..., Any], Callable[[Any], str]]] = [
    (protocol.parse_client, protocol.serialize_client),
    (protocol.parse_server, protocol.serialize_server),
    (protocol.parse_publish, protocol.serialize_publish),
    (protocol.parse_publish_reply, protocol.serialize_publish_reply),
]
PARSERS = [parse for parse, _ in PAIRS]
TYPES = ["auth", "ping", "set_captions", "set_language", "hello", "backlog", "room_state"]
TYPES += ["caption", "transcript_deleted", "pong", "error", "status", "ack", "nope"]
FIELDS = ["token", "id", "enabled", "language", "room", "identity", "role", "limits"]
FIELDS += ["captions", "changed_by", "captioner", "degraded", "languages", "speaker"]
FIELDS += ["speaker_name", "utterance", "revision", "kind", "words", "text", "start", "end"]
FIELDS += ["final", "emitted_at", "flags", "by", "code", "message", "seq", "stream"]
FIELDS += ["stream_started_at", "participants", "max_message_bytes", "max_pending_finals"]

# Every code point, lone surrogates and control characters included.
any_text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF))
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps writes them as NaN/Infinity
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | any_text, inner, max_size=5)
    ),
    max_leaves=16,
)


def refuses_only_documented(parse: Callable[..., Any], data: str | bytes, **limits: int) -> None:
    try:
        parse(data, **limits)
    except ProtocolError as exc:
        assert isinstance(exc, MessageTooLargeError | MalformedMessageError), exc


@pytest.mark.parametrize("parse", PARSERS)
@given(data=any_text | st.binary(max_size=64))
@settings(max_examples=150, deadline=None)
def test_arbitrary_frames_raise_only_protocol_errors(
    parse: Callable[..., Any], data: str | bytes
) -> None:
    refuses_only_documented(parse, data, max_bytes=400)


@pytest.mark.parametrize("parse", PARSERS)
@given(kind=st.sampled_from(TYPES), fields=st.dictionaries(st.sampled_from(FIELDS), json_values))
@settings(max_examples=300, deadline=None)
def test_wrong_field_types_raise_only_protocol_errors(
    parse: Callable[..., Any], kind: str, fields: dict[str, Any]
) -> None:
    refuses_only_documented(parse, json.dumps({"type": kind, **fields}))


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "frame",
    [
        "[" * 3000,
        '{"type":"caption","words":' + "[" * 100_000,
        '{"type":"ping","id":' + "{" * 3000 + "}" * 3000 + "}",
        '{"type":"ping","id":NaN}',
        '{"type":"ping","id":Infinity}',
        '{"type":"ping","id":-Infinity}',
        '{"type":"ping","id":1e400}',
        '{"type":"ack","seq":' + "9" * 5000 + "}",
        '{"type":"ack","seq":1180591620717411303424}',
        '{"type":"ack","seq":-1}',
        '{"type":"ack","seq":1.5}',
        '{"type":"auth","token":"\\ud800"}',
        '"just a string"',
    ],
)
def test_hostile_frames_are_protocol_errors(parse: Callable[..., Any], frame: str) -> None:
    with pytest.raises(ProtocolError):
        parse(frame, max_bytes=200_000)


def caption_json(**changes: Any) -> str:
    words = (Word("hi", 0.5, 0.9, True),)
    event = CaptionEvent(Speaker("a", "A"), 1, 1, "final", words, 10.0)
    data = {**event.to_json(), "seq": 1, "stream": "s", "stream_started_at": 5.0, **changes}
    return json.dumps(data)


@pytest.mark.parametrize(
    "change",
    [
        {"utterance": 2**70},
        {"utterance": True},
        {"revision": -1},
        {"emitted_at": 1e300},
        {"stream_started_at": -3.0},
        {"words": [{"text": "x", "start": 1e30, "end": 1.0, "final": True}]},
        {"words": [{"text": "x", "start": 0.0, "end": 1.0}]},
        {"words": [{"text": "x", "start": 0.0, "end": 1.0, "final": True}] * 2000},
        {"kind": "maybe"},
        {"flags": {"degraded": "very"}},
        {"language": "français"},
        {"language": 7},
        {"speaker": "x" * 300},
        {"seq": None},
    ],
)
def test_out_of_range_publications_are_refused(change: dict[str, Any]) -> None:
    protocol.parse_publish(caption_json())  # the unchanged one is fine
    with pytest.raises(MalformedMessageError):
        protocol.parse_publish(caption_json(**change), max_bytes=1_000_000)


def test_limits_are_keyword_arguments() -> None:
    frame = caption_json()
    with pytest.raises(MessageTooLargeError):
        protocol.parse_publish(frame, max_bytes=50)
    with pytest.raises(MalformedMessageError):
        protocol.parse_publish(frame, max_depth=2)
    with pytest.raises(MalformedMessageError):
        protocol.parse_publish(caption_json(words=[]) and frame, max_items=0)
    with pytest.raises(MalformedMessageError):
        protocol.parse_publish(frame, max_chars=1)
    with pytest.raises(UnknownMessageTypeError):
        protocol.parse_client('{"type":"hello"}')


# ---------------------------------------------------------------- round trips

valid_text = st.text(st.characters(codec="utf-8"), max_size=12)  # no lone surrogates
names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
seconds = st.integers(0, 10**9).map(lambda ms: ms / 1000)
languages = st.from_regex(protocol.LANGUAGE_PATTERN, fullmatch=True)
people = st.builds(Person, valid_text, valid_text)
events = st.builds(
    CaptionEvent,
    speaker=st.builds(Speaker, names, names),
    utterance=st.integers(0, protocol.MAX_SAFE_INTEGER),
    revision=st.integers(0, 1000),
    kind=st.sampled_from(["partial", "final"]),
    words=st.lists(st.builds(Word, valid_text, seconds, seconds, st.booleans()), max_size=5).map(
        tuple
    ),
    emitted_at=st.integers(-(10**12), 10**12).map(lambda ms: ms / 1000),
    flags=st.dictionaries(valid_text, st.booleans(), max_size=3),
    language=st.none() | languages,
)
ids = st.none() | st.integers(-(2**53) + 1, 2**53 - 1) | valid_text
room_states = st.builds(
    RoomState,
    room=valid_text,
    enabled=st.booleans(),
    language=st.none() | languages,
    changed_by=st.none() | people,
    captioner=st.booleans(),
    degraded=st.booleans(),
    languages=st.lists(languages, max_size=4).map(tuple),
    saving=st.booleans(),
)
client_messages = st.one_of(
    st.builds(Auth, valid_text),
    st.builds(Ping, ids),
    st.builds(SetCaptions, st.booleans()),
    st.builds(SetLanguage, languages),
)
server_messages = st.one_of(
    st.builds(Hello, valid_text, valid_text, valid_text, st.integers(0, 2**40), st.integers(0, 9)),
    st.builds(Backlog, st.lists(events, max_size=3).map(tuple)),
    room_states,
    st.builds(Caption, events),
    st.builds(TranscriptDeleted, valid_text, people),
    st.builds(Pong, ids),
    st.builds(Error, valid_text, valid_text),
)
publish_messages = st.one_of(
    st.builds(Publication, events, st.integers(0, 2**53 - 1), valid_text, seconds),
    st.builds(
        SidecarStatus,
        degraded=st.booleans(),
        participants=st.integers(0, 1000),
        languages=st.lists(languages, max_size=4).map(tuple),
    ),
)
publish_replies = st.one_of(
    st.builds(Ack, st.integers(0, 2**53 - 1)),
    st.builds(protocol.NotSaved, st.integers(0, 2**53 - 1)),
    room_states,
    st.builds(Error, valid_text, valid_text),
)


def same(a: Any, b: Any) -> bool:
    """Equality that also compares caption flags (CaptionEvent leaves them out)."""
    return a == b and repr(a) == repr(b)


@pytest.mark.parametrize(
    ("strategy", "pair"),
    [
        (client_messages, PAIRS[0]),
        (server_messages, PAIRS[1]),
        (publish_messages, PAIRS[2]),
        (publish_replies, PAIRS[3]),
    ],
)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_serialize_then_parse_is_the_identity(
    strategy: st.SearchStrategy[Any],
    pair: tuple[Callable[..., Any], Callable[[Any], str]],
    data: Any,
) -> None:
    parse, serialize = pair
    message = data.draw(strategy)
    text = serialize(message)
    text.encode("utf-8")  # always sendable as a WebSocket text frame
    assert same(parse(text), message)


def test_the_wire_format_is_the_documented_one() -> None:
    state = RoomState("main", False, "en", Person("a", "Alice"), True, False, ("en", "fr"))
    assert json.loads(protocol.serialize_server(state)) == {
        "type": "room_state",
        "room": "main",
        "captions": "off",
        "language": "en",
        "changed_by": {"identity": "a", "name": "Alice"},
        "captioner": "connected",
        "degraded": False,
        "languages": ["en", "fr"],
        "saving": True,
    }
    assert json.loads(protocol.serialize_publish_reply(Ack(17))) == {"type": "ack", "seq": 17}
    not_saved = protocol.serialize_publish_reply(protocol.NotSaved(18))
    assert json.loads(not_saved) == {"type": "not_saved", "seq": 18}
    assert protocol.parse_client('{"type":"ping","id":7}') == Ping(7)


# ---------------------------------------------------------------- close codes


def js_close_codes() -> dict[str, int]:
    source = (STATIC / "closecodes.js").read_text()
    body = re.search(r"export const CloseCode = Object\.freeze\(\{(.*?)\}\);", source, re.S)
    assert body, "closecodes.js must export CloseCode = Object.freeze({...})"
    pairs = re.findall(r"^\s*([A-Z_]+):\s*(\d+),?\s*$", body.group(1), re.M)
    return {name: int(code) for name, code in pairs}


def test_the_page_has_the_same_close_codes_as_the_server() -> None:
    assert js_close_codes() == {member.name: member.value for member in CloseCode}
    source = (STATIC / "closecodes.js").read_text()
    refused = re.search(r"export const REFUSED = new Set\(\[(.*?)\]\)", source, re.S)
    assert refused is not None
    names = set(re.findall(r"CloseCode\.([A-Z_]+)", refused.group(1)))
    assert names == {code.name for code in REFUSED}
    # A failed media connection is transient: the page rejoins (connection.js reconnects
    # on every close code outside FATAL).
    fatal = re.search(r"export const FATAL = new Set\(\[(.*?)\]\)", source, re.S)
    assert fatal is not None
    fatal_names = set(re.findall(r"CloseCode\.([A-Z_]+)", fatal.group(1)))
    assert fatal_names and not fatal_names & {"MEDIA_LOST", "MEDIA_FAILED"}
