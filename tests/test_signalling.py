"""The sans-I/O signalling parser: typed messages, documented errors only (fuzzed)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.exceptions import (
    InvalidSdpError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtocolError,
    UnknownMessageTypeError,
)
from sfu.signalling import (
    Candidate,
    ClientSession,
    CloseCode,
    Join,
    Mute,
    Offer,
    Ping,
    error_code,
    parse_client_message,
)

TYPES = [
    "join",
    "offer",
    "answer",
    "candidate",
    "mute",
    "leave",
    "ping",
    "nope",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.text(max_size=300) | st.binary(max_size=100))
@settings(max_examples=200, deadline=None)
def test_arbitrary_frames_raise_only_protocol_errors(data: str | bytes) -> None:
    try:
        parse_client_message(data, max_bytes=200)
    except ProtocolError as exc:
        assert error_code(exc) in {"malformed", "unknown_type", "too_large", "invalid_sdp"}


@given(
    st.sampled_from(TYPES),
    st.dictionaries(
        st.sampled_from(
            [
                "token",
                "room",
                "sdp",
                "tracks",
                "pc",
                "candidate",
                "sdp_mid",
                "sdp_mline_index",
                "kind",
                "muted",
                "enabled",
                "language",
                "id",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
@settings(max_examples=250, deadline=None)
def test_wrong_field_types_raise_only_protocol_errors(kind: str, fields: dict) -> None:
    with contextlib.suppress(ProtocolError):
        parse_client_message(json.dumps({"type": kind, **fields}))


def test_typed_messages() -> None:
    assert parse_client_message('{"type":"join","token":"t","room":"r"}') == Join("t", "r")
    offer = parse_client_message('{"type":"offer","sdp":"v=0\\r\\n","tracks":{"0":"audio"}}')
    assert isinstance(offer, Offer) and offer.tracks == {"0": "audio"}
    assert parse_client_message('{"type":"mute","kind":"video","muted":true}') == Mute(
        "video", True
    )
    assert parse_client_message('{"type":"ping","id":3}') == Ping(3)
    candidate = parse_client_message(
        '{"type":"candidate","pc":"publisher",'
        '"candidate":"candidate:1 1 udp 1 abcd.local 5 typ host","sdp_mid":"0","sdp_mline_index":0}'
    )
    assert isinstance(candidate, Candidate) and candidate.sdp_mline_index == 0


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("{", MalformedMessageError),
        ("42", MalformedMessageError),
        ('{"kind":"x"}', MalformedMessageError),
        ('{"type":"warp"}', UnknownMessageTypeError),
        ('{"type":"mute","kind":"audio"}', MalformedMessageError),
        ('{"type":"mute","kind":"smell","muted":true}', MalformedMessageError),
        ('{"type":"set_captions","enabled":false}', UnknownMessageTypeError),
        ('{"type":"candidate","pc":"publisher","sdp_mline_index":true}', MalformedMessageError),
        ('{"type":"offer","sdp":"hello"}', InvalidSdpError),
        (b"\x00\x01", MalformedMessageError),
        ('{"type":"ping","id":"' + "x" * 300 + '"}', MessageTooLargeError),
    ],
)
def test_refusals(frame: str | bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_client_message(frame, max_bytes=256)


def test_session_requires_join_first_and_counts_errors() -> None:
    session = ClientSession(max_errors=3)
    with pytest.raises(MalformedMessageError):
        session.read('{"type":"leave"}')
    assert session.close_code == CloseCode.PROTOCOL
    session.reset()
    assert session.close_code is None
    assert isinstance(session.read('{"type":"join","token":"t"}'), Join)
    session.joined = True
    for _ in range(3):
        with pytest.raises(MalformedMessageError):
            session.read("nope")
    assert session.close_code == CloseCode.PROTOCOL
    oversize = ClientSession(max_bytes=10)
    with pytest.raises(MessageTooLargeError):
        oversize.read('{"type":"ping","id":"long"}')
    assert oversize.close_code == CloseCode.TOO_BIG


@given(st.text(max_size=400))
@settings(max_examples=200, deadline=None)
def test_sdp_check_raises_only_invalid_sdp(text: str) -> None:
    from sfu.peer import check_session_description

    with contextlib.suppress(InvalidSdpError):
        check_session_description("v=0\r\n" + text)
