"""Issue 10, items 5 and 6 and their equivalents on every parser: deep JSON nesting and
NaN/Infinity/huge numbers are protocol errors that cost one message, never a crash, a
1006 close, a stored NaN or a broken download.

The captions protocol's own rules live in meeting/protocol.py (tests/test_captions_protocol.py);
these tests check the behaviour end to end, over real sockets, and in the signalling and
Kyutai parsers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from captions.kyutai_protocol import decode_client_message, decode_server_message
from common.exceptions import ProtocolError
from meeting.api import install_captions_api
from meeting.hub import CaptionHub
from meeting.store import SqliteTranscriptStore
from sfu.signalling import parse_client_message
from sfu.tokens import Grants, mint_token

SECRET = "j" * 40
DEEP = "[" * 3000 + "]" * 3000
DEEP_OBJECT = '{"a":' * 3000 + "1" + "}" * 3000


@pytest.mark.parametrize(
    "frame",
    [
        DEEP,
        DEEP_OBJECT,
        '{"type":"ping","id":NaN}',
        '{"type":"ping","id":Infinity}',
        '{"type":"ping","id":' + str(2**70) + "}",
        '{"type":"candidate","pc":"publisher","candidate":"x","sdp_mline_index":'
        + str(2**70)
        + "}",
        '{"type":"candidate","pc":"publisher","candidate":"x","sdp_mline_index":NaN}',
        '{"type":"join","token":' + DEEP + "}",
    ],
)
def test_signalling_refuses_deep_nesting_and_hostile_numbers(frame: str) -> None:
    with pytest.raises(ProtocolError):
        parse_client_message(frame, max_bytes=64 * 1024)


def test_kyutai_refuses_deep_nesting_and_non_finite_audio() -> None:
    deep = b"\x91" * 5000 + b"\xc0"  # arrays nested 5000 deep
    nan_audio = msgpack.packb({"type": "Audio", "pcm": [0.0, float("nan")]})
    inf_time = msgpack.packb({"type": "Word", "text": "a", "start_time": float("inf")})
    for data in (deep, nan_audio):
        with pytest.raises(ProtocolError):
            decode_client_message(data, max_bytes=1 << 20)
    for data in (deep, inf_time):
        with pytest.raises(ProtocolError):
            decode_server_message(data, max_bytes=1 << 20)


def caption(**override: Any) -> dict[str, Any]:
    message = {
        "type": "caption",
        "speaker": "alice",
        "name": "Alice",
        "utterance": 1,
        "revision": 1,
        "kind": "final",
        "words": [{"text": "hello", "start": 0.0, "end": 0.5, "final": True}],
        "emitted_at": time.time(),
        "seq": 1,
        "stream": "s",
        "stream_started_at": 1000.0,
    }
    message.update(override)
    return message


async def test_captions_sockets_survive_deep_nesting_and_hostile_numbers(tmp_path: Path) -> None:
    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"))
    app = web.Application()
    install_captions_api(app, hub, SECRET)
    host = mint_token(SECRET, Grants.for_role("r", "Host", "host"))
    captioner = mint_token(SECRET, Grants.captioner_for("r"))
    async with TestClient(TestServer(app)) as client:
        # Unauthenticated and deep: refused with a close code, not a crash (1006).
        raw = await client.ws_connect("/captions")
        await raw.send_str(DEEP)
        while (await raw.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert raw.close_code not in (None, 1006), raw.close_code

        viewer = await client.ws_connect(f"/captions?token={host}")
        pub = await client.ws_connect(f"/captions/publish?token={captioner}")
        words_nan = [{"text": "x", "start": float("nan"), "end": 1.0, "final": True}]
        hostile = [
            DEEP,
            DEEP_OBJECT,
            json.dumps(caption(words=words_nan)),  # NaN (Python writes it bare)
            json.dumps(caption(emitted_at=float("inf"))),
            json.dumps(caption(utterance=2**70)),
            json.dumps(caption(seq=2**70)),
            json.dumps(caption(stream_started_at=-float("inf"))),
        ]
        for frame in hostile:
            await pub.send_str(frame)
            reply = await _next(pub, "error", "ack")
            assert reply["type"] == "error", (frame[:60], reply)
        await viewer.send_str("[" * 2000 + "]" * 2000)  # under the 4 KiB client limit
        assert (await _next(viewer, "error"))["type"] == "error"
        # Both sockets still work, nothing hostile was stored or fanned out.
        await pub.send_str(json.dumps(caption(seq=2)))
        assert (await _next(pub, "ack")) == {"type": "ack", "seq": 2}
        got = await _next(viewer, "caption")
        assert got["text"] == "hello"
        for fmt in ("vtt", "srt", "txt", "json"):
            response = await client.get(f"/rooms/r/transcript.{fmt}?token={host}")
            assert response.status == 200, fmt
            body = await response.text()
            assert "NaN" not in body and "Infinity" not in body
        late = await client.ws_connect(f"/captions?token={host}")
        backlog = await _next(late, "backlog")  # strict JSON: no bare NaN for browsers
        assert [c["text"] for c in backlog["captions"]] == ["hello"]
        for ws in (viewer, pub, late):
            await ws.close()


async def _next(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data: dict[str, Any] = json.loads(msg.data, parse_constant=_no_constant)
            if data["type"] in kinds:
                return data


def _no_constant(name: str) -> Any:
    raise AssertionError(f"the server sent a bare {name}: not JSON for a browser")


async def test_an_unauthenticated_caption_socket_cannot_ping_its_way_past_the_deadline(
    tmp_path: Path,
) -> None:
    from meeting.api import CaptionsApiLimits

    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"))
    app = web.Application()
    install_captions_api(app, hub, SECRET, limits=CaptionsApiLimits(auth_timeout_seconds=1.0))
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/captions", autoping=True)
        started = time.monotonic()
        async with asyncio.timeout(6):
            while not ws.closed:
                await ws.ping()  # the server answers each one
                with contextlib.suppress(TimeoutError):
                    await ws.receive(timeout=0.3)
        assert ws.close_code == 4408 and time.monotonic() - started < 3
        # An oversize first message is refused cleanly, not with a server error.
        big = await client.ws_connect("/captions")
        await big.send_str("x" * 10_000)
        await big.receive(timeout=5)
        assert big.close_code == 1009
