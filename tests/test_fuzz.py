"""Property-based fuzzing of every message parser and writer with text from the whole
Unicode range, lone surrogates and control characters included (issue 10).

- signalling (``sfu.signalling``): any frame parses or raises a protocol error; any
  message encodes to valid UTF-8 JSON that reads back the same; any display name cleans
  to one line of valid Unicode, idempotently;
- captions protocol (``meeting.protocol``): any frame, on every direction's parser,
  parses or raises a protocol error; what it accepts serialises to valid UTF-8;
- Kyutai protocol (``captions.kyutai_protocol``): any MessagePack map, including strings
  that are not UTF-8, decodes or raises a protocol error;
- transcript writers (``captions.formats``): whatever the names and words, the output is
  valid UTF-8 and parses back with as many cues, each naming its own speaker.
"""

from __future__ import annotations

import contextlib
import json
import unicodedata
from typing import Any

import msgpack
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from captions.events import CaptionEvent, Speaker, Word
from captions.formats import clean, render
from common.exceptions import ProtocolError
from tests.test_formats import assert_parses_back

# Every code point: surrogates (Cs) and controls (Cc) included, unlike Hypothesis' default.
EVERYTHING = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
ANY_TEXT = st.text(EVERYTHING, max_size=40)
HOSTILE_TEXT = st.text(
    st.one_of(EVERYTHING, st.sampled_from(list("\r\n\t\x00\x85\u2028\u2029\ud800\udfff<>&-"))),
    max_size=40,
)


def json_text(value: Any) -> str:
    # ensure_ascii: a lone surrogate becomes an escape, as a hostile client may send it.
    return json.dumps(value)


# ---------------------------------------------------------------- signalling


@given(
    kind=st.sampled_from(["join", "offer", "answer", "candidate", "mute", "ping", "x"]),
    fields=st.dictionaries(
        st.sampled_from(["token", "room", "name", "sdp", "pc", "candidate", "id", "kind"]),
        st.none() | st.booleans() | st.integers() | HOSTILE_TEXT,
    ),
)
@settings(max_examples=300, deadline=None)
def test_signalling_frames_parse_or_raise_protocol_errors(
    kind: str, fields: dict[str, Any]
) -> None:
    from sfu.signalling import parse_client_message

    with contextlib.suppress(ProtocolError):
        parse_client_message(json_text({"type": kind, **fields}))


@given(st.dictionaries(st.sampled_from(["name", "message", "identity"]), HOSTILE_TEXT))
@settings(max_examples=300, deadline=None)
def test_signalling_messages_always_encode_as_utf8_and_read_back(fields: dict[str, Any]) -> None:
    from sfu.signalling import encode

    message = {"type": "participant_joined", "participant": fields}
    text = encode(message)
    assert json.loads(text.encode("utf-8")) == message


@given(HOSTILE_TEXT)
@settings(max_examples=500, deadline=None)
def test_display_names_clean_to_one_line_of_valid_unicode(raw: str) -> None:
    from sfu.names import clean_display_name

    name = clean_display_name(raw)
    name.encode("utf-8")
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name)
    assert name == name.strip() and "  " not in name
    assert clean_display_name(name) == name


# ---------------------------------------------------------------- captions protocol


def caption_fields(text: str) -> dict[str, Any]:
    return {
        "type": "caption",
        "speaker": text,
        "name": text,
        "utterance": 1,
        "revision": 1,
        "kind": "final",
        "words": [{"text": text, "start": 0.0, "end": 0.5, "final": True}],
        "emitted_at": 1.0,
        "seq": 1,
        "stream": "s",
        "stream_started_at": 1.0,
    }


@given(text=HOSTILE_TEXT, noise=st.dictionaries(st.text(max_size=8), st.none() | HOSTILE_TEXT))
@settings(max_examples=300, deadline=None)
def test_captions_protocol_frames_parse_or_raise_protocol_errors(
    text: str, noise: dict[str, Any]
) -> None:
    from meeting import protocol

    frames = [json_text({**caption_fields(text), **noise}), json_text(noise), text]
    for frame in frames:
        for parse, serialize in (
            (protocol.parse_publish, protocol.serialize_publish),
            (protocol.parse_client, protocol.serialize_client),
            (protocol.parse_server, protocol.serialize_server),
            (protocol.parse_publish_reply, protocol.serialize_publish_reply),
        ):
            try:
                message = parse(frame)
            except ProtocolError:
                continue
            serialize(message).encode("utf-8")  # what is accepted can be sent on


# ---------------------------------------------------------------- Kyutai protocol


def msgpack_str_bytes(raw: bytes) -> bytes:
    """A MessagePack str holding ``raw`` as is (maybe not UTF-8)."""
    return bytes([0xD9, len(raw)]) + raw


@given(
    kind=st.sampled_from(["Audio", "OggOpus", "Marker", "Word", "EndWord", "Step", "Error", "?"]),
    fields=st.dictionaries(
        st.sampled_from(["pcm", "data", "id", "text", "start_time", "stop_time", "message"]),
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats()
        | st.text(EVERYTHING.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=20)
        | st.binary(max_size=20)
        | st.lists(st.floats(), max_size=8),
    ),
    invalid=st.binary(min_size=1, max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_kyutai_frames_decode_or_raise_protocol_errors(
    kind: str, fields: dict[str, Any], invalid: bytes
) -> None:
    from captions.kyutai_protocol import decode_client_message, decode_server_message

    frame = bytes(msgpack.packb({"type": kind, **fields}, use_bin_type=True))
    # The same map with a "text" that may not be UTF-8 (msgpack strs are bytes on the wire).
    raw_text = b"\x82" + msgpack.packb("type") + msgpack.packb(kind) + msgpack.packb("text")
    for data in (frame, raw_text + msgpack_str_bytes(invalid)):
        for decode in (decode_client_message, decode_server_message):
            with contextlib.suppress(ProtocolError):
                decode(data)


# ---------------------------------------------------------------- transcript writers


@given(
    st.lists(st.tuples(HOSTILE_TEXT, st.lists(HOSTILE_TEXT, min_size=1, max_size=5)), max_size=4)
)
@settings(max_examples=200, deadline=None)
def test_transcript_writers_carry_any_text_and_parse_back(
    finals: list[tuple[str, list[str]]],
) -> None:
    events = [
        CaptionEvent(
            Speaker(f"s{i}", name),
            0,
            1,
            "final",
            tuple(Word(t, i + j * 0.3, i + j * 0.3 + 0.2, True) for j, t in enumerate(texts)),
            0.0,
        )
        for i, (name, texts) in enumerate(finals)
    ]
    for fmt in ("vtt", "srt", "txt", "json"):
        render(fmt, events).encode("utf-8")  # a download never fails to encode
    # webvtt-py strips any Unicode white space around a voice; the WebVTT spec (and
    # Chromium) only ASCII white space, which the rule trims: compare what both agree on.
    assume(all(clean(name) == clean(name).strip() for name, _ in finals))
    assert_parses_back(events)
