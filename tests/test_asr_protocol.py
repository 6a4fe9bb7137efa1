"""The sans-I/O core of /api/asr-streaming: framing, fuzzing, per-connection bookkeeping."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captions.events import CaptionEvent, Speaker, Word
from captions.kyutai_protocol import (
    AsrStreamState,
    Audio,
    EndWord,
    Error,
    Init,
    Marker,
    OggOpus,
    Ping,
    Ready,
    Step,
    WordMessage,
    decode_client_message,
    decode_server_message,
    encode,
)
from common.exceptions import MalformedMessageError, MessageTooLargeError, ProtocolError


def test_client_messages_round_trip() -> None:
    pcm = np.linspace(-1, 1, 1920, dtype=np.float32)
    decoded = decode_client_message(encode(Audio(pcm)))
    assert isinstance(decoded, Audio)
    np.testing.assert_array_equal(decoded.pcm, pcm)
    assert decode_client_message(encode(OggOpus(b"OggS..."))) == OggOpus(b"OggS...")
    assert decode_client_message(encode(Marker(7))) == Marker(7)
    assert decode_client_message(encode(Init())) == Init()
    assert decode_client_message(encode(Ping())) == Ping()


def test_server_messages_round_trip() -> None:
    for message in (
        Ready(),
        WordMessage("bonjour", 1.25),
        EndWord(1.5),
        Step(3, (0.1, 0.0, 0.9, 0.0), 480),
        Marker(-5),
        Error("no free channels"),
    ):
        decoded = decode_server_message(encode(message))
        if isinstance(message, Step):
            assert isinstance(decoded, Step)
            assert decoded.step_idx == 3 and decoded.buffered_pcm == 480
            assert decoded.prs == pytest.approx(message.prs)
        else:
            assert decoded == message


def test_wire_format_is_a_msgpack_map_with_type() -> None:
    assert msgpack.unpackb(encode(WordMessage("hi", 0.5))) == {
        "type": "Word",
        "text": "hi",
        "start_time": 0.5,
    }
    # Kyutai's own clients send float64 lists: accepted, clipped to [-1, 1].
    raw = msgpack.packb({"type": "Audio", "pcm": [0.5, -2.0, 3, 0]})
    decoded = decode_client_message(raw)
    assert isinstance(decoded, Audio)
    assert decoded.pcm.dtype == np.float32 and decoded.pcm.tolist() == [0.5, -1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Audio", "pcm": [float("nan")]},
        {"type": "Audio", "pcm": [True, False]},
        {"type": "Audio"},
        {"type": "OggOpus", "data": "text"},
        {"type": "Marker", "id": 1.5},
        {"type": "Marker", "id": 2**64 - 1},
        {"type": 3},
        {"type": "Word", "text": "server-only"},
    ],
)
def test_bad_client_messages(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessageError):
        decode_client_message(msgpack.packb(body))


def test_size_limit() -> None:
    data = encode(Audio(np.zeros(1000, dtype=np.float32)))
    assert isinstance(decode_client_message(data, max_bytes=len(data)), Audio)
    with pytest.raises(MessageTooLargeError):
        decode_client_message(data, max_bytes=len(data) - 1)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for decode in (decode_client_message, decode_server_message):
        with contextlib.suppress(ProtocolError):
            decode(data, max_bytes=200)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(
        [
            "Audio",
            "OggOpus",
            "Marker",
            "Init",
            "Ping",
            "Word",
            "EndWord",
            "Step",
            "Ready",
            "Error",
            "Other",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "pcm",
                "data",
                "id",
                "text",
                "start_time",
                "stop_time",
                "step_idx",
                "prs",
                "buffered_pcm",
                "message",
            ]
        ),
        _values,
        max_size=4,
    ),
)
def test_fuzz_shapes_raise_only_protocol_errors(kind: str, fields: dict[str, Any]) -> None:
    data = msgpack.packb({"type": kind, **fields}, use_bin_type=True)
    for decode in (decode_client_message, decode_server_message):
        with contextlib.suppress(ProtocolError):
            decode(data)


def _event(utterance: int, words: list[tuple[str, float, float, bool]], kind: str) -> CaptionEvent:
    return CaptionEvent(
        speaker=Speaker("s"),
        utterance=utterance,
        revision=1,
        kind=kind,  # type: ignore[arg-type]
        words=tuple(Word(t, a, b, f) for t, a, b, f in words),
        emitted_at=0.0,
    )


def test_each_final_word_becomes_word_then_endword_once() -> None:
    state = AsrStreamState(delay_seconds=0.5)
    out = state.words(_event(0, [("a", 0.1, 0.2, True), ("b", 0.3, 0.4, False)], "partial"))
    assert out == [WordMessage("a", 0.1), EndWord(0.2)]
    out = state.words(_event(0, [("a", 0.1, 0.2, True), ("b", 0.3, 0.45, False)], "partial"))
    assert out == []
    out = state.words(_event(0, [("a", 0.1, 0.2, True), ("b", 0.3, 0.45, True)], "final"))
    assert out == [WordMessage("b", 0.3), EndWord(0.45)]
    out = state.words(_event(1, [("c", 1.0, 1.2, True)], "final"))
    assert out == [WordMessage("c", 1.0), EndWord(1.2)]


def test_markers_wait_for_their_audio_and_the_delay() -> None:
    state = AsrStreamState(delay_seconds=0.5, max_pending_markers=2)
    state.audio_received(24_000)  # 1 s
    state.marker_received(1)
    state.audio_received(12_000)
    state.marker_received(2)
    assert state.due_markers(1.4) == []
    assert state.due_markers(1.5) == [Marker(1)]
    assert state.due_markers(1.9) == []
    assert state.due_markers(2.0) == [Marker(2)]
    state.marker_received(3)
    state.marker_received(4)
    with pytest.raises(ProtocolError):
        state.marker_received(5)
    assert state.all_markers() == [Marker(3), Marker(4)]


def test_one_step_per_80_ms_processed() -> None:
    state = AsrStreamState(delay_seconds=0.5)
    assert state.steps(0.05, (0.0,), 0) == []
    steps = state.steps(0.24, (0.2,), 100)
    assert [s.step_idx for s in steps] == [1, 2, 3]
    assert all(s.prs == (0.2,) and s.buffered_pcm == 100 for s in steps)
    assert [s.step_idx for s in state.steps(0.32, (0.0,), 0)] == [4]
