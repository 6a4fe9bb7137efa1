"""The captions API over real loopback sockets: /captions, /captions/publish, transcripts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from captions.events import CaptionEvent, Speaker, Word
from meeting.api import (
    HUB_KEY,
    CaptionsApi,
    CaptionsApiLimits,
    install_captions_api,
)
from meeting.hub import CaptionHub
from meeting.protocol import Error, Pong, Publication, SidecarStatus, serialize_publish
from meeting.store import SqliteTranscriptStore
from sfu.tokens import Grants, mint_token

SECRET = "s" * 40
ALICE = Speaker("alice-1", "Alice")


def token(role: str = "participant", room: str = "r", **extra: Any) -> str:
    grants = Grants.for_role(room, f"{role}-user", role)  # type: ignore[arg-type]
    if extra.get("captioner"):
        grants = Grants.captioner_for(room)
    return mint_token(SECRET, grants, ttl=extra.get("ttl", 600))


def caption(utterance: int, kind: str, text: str, seq: int = 0) -> dict[str, Any]:
    words = tuple(Word(t, i, i + 0.4, kind == "final") for i, t in enumerate(text.split()))
    data = CaptionEvent(ALICE, utterance, 1, kind, words, time.time()).to_json()
    return {**data, "seq": seq, "stream": "s1", "stream_started_at": 1000.0}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"), max_pending_finals=8)
    app = web.Application()
    install_captions_api(app, hub, SECRET, limits=CaptionsApiLimits(auth_timeout_seconds=1.0))
    async with TestClient(TestServer(app)) as c:
        yield c


async def receive_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data: dict[str, Any] = json.loads(msg.data)
        if data["type"] == kind:
            return data


async def test_publish_fans_out_stores_and_acks(client: TestClient[Any, Any]) -> None:
    reader = await client.ws_connect(f"/captions?token={token()}")
    hello = await receive_until(reader, "hello")
    assert hello["room"] == "r" and hello["role"] == "participant"
    assert (await receive_until(reader, "backlog"))["captions"] == []
    assert (await receive_until(reader, "room_state"))["captioner"] == "absent"

    pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
    assert (await receive_until(reader, "room_state"))["captioner"] == "connected"
    await pub.send_json(caption(0, "partial", "hello", seq=1))
    await pub.send_json(caption(0, "final", "hello world", seq=2))
    await pub.send_str(serialize_publish(SidecarStatus(degraded=True, participants=1)))
    assert (await receive_until(pub, "ack"))["seq"] == 2
    first = await receive_until(reader, "caption")
    assert first["speaker"] == "alice-1"
    if first["kind"] == "partial":
        first = await receive_until(reader, "caption")
    assert first["kind"] == "final" and first["text"] == "hello world"
    assert (await receive_until(reader, "room_state"))["degraded"] is True

    # A late joiner authenticating by message gets the final in its backlog.
    late = await client.ws_connect("/captions")
    await late.send_json({"type": "auth", "token": token("guest")})
    backlog = await receive_until(late, "backlog")
    assert [c["text"] for c in backlog["captions"]] == ["hello world"]

    # Malformed input gets an error and the sockets stay open.
    await pub.send_str("{nope")
    assert (await receive_until(pub, "error"))["code"] == "malformed"
    await late.send_json({"type": "dance"})
    assert (await receive_until(late, "error"))["code"] == "unknown_type"
    await late.send_json({"type": "ping", "id": 7})
    assert (await receive_until(late, "pong"))["id"] == 7
    for ws in (reader, pub, late):
        await ws.close()


@pytest.mark.parametrize(
    ("query", "code", "reason"),
    [
        ("", 4401, "token_missing"),
        ("?token=garbage", 4401, "token_invalid"),
        ("?token={expired}", 4401, "token_expired"),
        ("?token={participant}&room=elsewhere", 4403, "wrong_room"),
    ],
)
async def test_refused_tokens_close_with_documented_codes(
    client: TestClient[Any, Any], query: str, code: int, reason: str
) -> None:
    expired = mint_token(SECRET, Grants.for_role("r", "x", "guest"), ttl=1)
    if "expired" in query:
        await asyncio.sleep(2.1)
    ws = await client.ws_connect("/captions" + query.format(expired=expired, participant=token()))
    if not query:
        await ws.send_json({"type": "auth"})
    error = await receive_until(ws, "error")
    assert error["code"] == reason
    msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == code
    assert msg.extra == reason


async def test_publish_needs_the_captioner_grant(client: TestClient[Any, Any]) -> None:
    ws = await client.ws_connect(f"/captions/publish?token={token('host')}")
    assert (await receive_until(ws, "error"))["code"] == "forbidden"
    await ws.receive()
    assert ws.close_code == 4403


async def test_oversize_client_frame_closes_only_that_client(
    client: TestClient[Any, Any],
) -> None:
    good = await client.ws_connect(f"/captions?token={token()}")
    bad = await client.ws_connect(f"/captions?token={token()}")
    await receive_until(bad, "room_state")
    await bad.send_str("x" * 10_000)
    while (await bad.receive()).type != aiohttp.WSMsgType.CLOSE:
        pass
    assert bad.close_code == 1009
    pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
    await pub.send_json(caption(0, "final", "still here", seq=1))
    assert (await receive_until(good, "caption"))["text"] == "still here"
    await good.close()
    await pub.close()


async def never_reading_socket(client: TestClient[Any, Any], path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up quickly
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (str(client.host), int(client.port)))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {client.host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_client_that_never_reads_is_dropped_while_another_keeps_receiving(
    client: TestClient[Any, Any],
) -> None:
    silent = await never_reading_socket(client, f"/captions?token={token()}")
    reader = await client.ws_connect(f"/captions?token={token()}")
    await receive_until(reader, "room_state")
    pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
    big = " ".join(["word"] * 600)  # about 40 KiB per event with word times
    hub = client.app[HUB_KEY]
    assert hub.subscribers("r") == 2
    dropped_at = None
    for i in range(400):
        await pub.send_json(caption(i, "final", big, seq=i))
        await receive_until(pub, "ack")
        data = await receive_until(reader, "caption")
        assert data["utterance"] == i  # the reading client misses nothing
        if dropped_at is None and hub.subscribers("r") == 1:
            dropped_at = i
        if dropped_at is not None and i >= dropped_at + 10:
            break
    assert dropped_at is not None, "the client that never reads was never dropped"
    await assert_connection_ends(silent)
    silent.close()
    await reader.close()
    await pub.close()


async def assert_connection_ends(sock: socket.socket) -> None:
    """The server ended ``sock``'s connection: reading reaches EOF or a reset in time."""
    loop = asyncio.get_running_loop()
    with pytest.raises(ConnectionResetError):  # an EOF counts too (raised below)
        async with asyncio.timeout(10):
            while await loop.sock_recv(sock, 1 << 20):
                pass
            raise ConnectionResetError("EOF")


async def test_a_send_that_never_completes_drops_the_client(tmp_path: Path) -> None:
    """The per-send deadline drops a client that stopped reading before its queue overflows."""
    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"), max_pending_finals=10_000)
    app = web.Application()
    limits = CaptionsApiLimits(send_timeout_seconds=1.0)
    install_captions_api(app, hub, SECRET, limits=limits)
    async with TestClient(TestServer(app)) as client:
        silent = await never_reading_socket(client, f"/captions?token={token()}")
        reader = await client.ws_connect(f"/captions?token={token()}")
        pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
        big = " ".join(["word"] * 600)
        for i in range(150):  # about 6 MB: more than the kernel's buffers hold
            await pub.send_json(caption(i, "final", big, seq=i))
            await receive_until(pub, "ack")
            assert (await receive_until(reader, "caption"))["utterance"] == i
        async with asyncio.timeout(10):
            while hub.subscribers("r") != 1:
                await asyncio.sleep(0.05)
        await assert_connection_ends(silent)
        silent.close()
        await pub.send_json(caption(150, "final", "still reading", seq=150))
        assert (await receive_until(reader, "caption"))["text"] == "still reading"
        await reader.close()
        await pub.close()


async def test_transcript_download_and_delete_are_host_only(
    client: TestClient[Any, Any],
) -> None:
    pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
    await pub.send_json(caption(0, "final", "budget is approved", seq=1))
    await receive_until(pub, "ack")
    host = token("host")
    resp = await client.get("/rooms/r/transcript.vtt", headers={"Authorization": f"Bearer {host}"})
    assert resp.status == 200
    body = await resp.text()
    assert body.startswith("WEBVTT") and "<v Alice>budget is approved</v>" in body
    resp = await client.get(f"/rooms/r/transcript.json?token={host}")
    assert [e["text"] for e in json.loads(await resp.text())] == ["budget is approved"]
    for fmt in ("srt", "txt"):
        resp = await client.get(f"/rooms/r/transcript.{fmt}?token={host}")
        assert resp.status == 200 and "Alice" in await resp.text()
    assert (await client.get(f"/rooms/r/transcript.doc?token={host}")).status == 404
    resp = await client.get(f"/rooms/r/transcript.vtt?token={token()}")
    assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    resp = await client.get("/rooms/r/transcript.vtt")
    assert resp.status == 401 and (await resp.json())["error"] == "token_missing"
    resp = await client.get(f"/rooms/other/transcript.vtt?token={host}")
    assert resp.status == 403 and (await resp.json())["error"] == "wrong_room"
    assert (await client.delete(f"/rooms/r/transcript?token={token()}")).status == 403
    assert (await client.delete(f"/rooms/r/transcript?token={host}")).status == 204
    resp = await client.get(f"/rooms/r/transcript.json?token={host}")
    assert json.loads(await resp.text()) == []
    await pub.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
publication_keys = st.sampled_from(
    [
        "type",
        "kind",
        "speaker",
        "utterance",
        "revision",
        "words",
        "emitted_at",
        "stream",
        "stream_started_at",
        "seq",
        "captions",
        "participants",
        "language",
        "languages",
        "enabled",
        "degraded",
        "changed_by",
    ]
)


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(
        st.text(max_size=64),
        st.dictionaries(publication_keys, json_values, max_size=10).map(json.dumps),
        st.builds(
            lambda extra: json.dumps({**caption(0, "final", "a b"), **extra}),
            st.dictionaries(publication_keys, json_values, max_size=3),
        ),
    )
)
def test_malformed_publications_get_an_error_reply_and_nothing_else(text: str) -> None:
    api = CaptionsApi(CaptionHub(SqliteTranscriptStore(":memory:")), SECRET)
    reply = api._accept_publication("r", text)
    assert reply is None or isinstance(reply, Publication | Error)


@given(
    st.text(max_size=64)
    | st.dictionaries(st.sampled_from(["type", "id", "enabled", "language"]), json_values).map(
        json.dumps
    )
)
def test_any_client_message_gets_a_reply_or_an_error(text: str) -> None:
    api = CaptionsApi(CaptionHub(SqliteTranscriptStore(":memory:")), SECRET)
    guest = Grants.for_role("r", "g", "guest")
    before = api.hub.state("r")
    reply = api._client_message(guest, text)
    assert isinstance(reply, Pong | Error)
    assert api.hub.state("r") == before  # a guest changes nothing


async def test_host_changes_reach_every_page_and_the_captioner(
    client: TestClient[Any, Any],
) -> None:
    guest = await client.ws_connect(f"/captions?token={token('guest')}")
    assert (await receive_until(guest, "room_state"))["captions"] == "on"
    pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
    assert (await receive_until(pub, "room_state"))["captions"] == "on"
    await pub.send_str(serialize_publish(SidecarStatus(languages=("en", "fr"))))
    await guest.send_json({"type": "set_captions", "enabled": False})
    refusal = await receive_until(guest, "error")
    assert refusal["code"] == "forbidden"
    host = await client.ws_connect("/captions")
    await host.send_json({"type": "auth", "token": token("host")})
    await receive_until(host, "room_state")
    await host.send_json({"type": "set_captions", "enabled": False})
    for ws in (guest, host, pub):
        state = await receive_until(ws, "room_state")
        while state["captions"] != "off":  # earlier states (the captioner's languages)
            state = await receive_until(ws, "room_state")
        assert state["changed_by"]["name"] == "host-user"
    await host.send_json({"type": "set_language", "language": "fr"})
    assert (await receive_until(pub, "room_state"))["language"] == "fr"
    await host.send_json({"type": "set_language", "language": "not a language"})
    assert (await receive_until(host, "error"))["code"] == "malformed"
    for ws in (guest, host, pub):
        await ws.close()


async def test_retention_purges_ended_rooms_only(tmp_path: Path) -> None:
    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"))
    app = web.Application()
    install_captions_api(app, hub, SECRET, retention_hours=0.0, purge_interval_seconds=0.05)
    async with TestClient(TestServer(app)) as client:
        pub = await client.ws_connect(f"/captions/publish?token={token(captioner=True)}")
        await pub.send_str(serialize_publish(SidecarStatus(participants=2)))
        await pub.send_json(caption(0, "final", "kept while the room is live", seq=1))
        await receive_until(pub, "ack")
        await asyncio.sleep(0.3)
        assert await hub.store.count("r") == 1  # the room has not ended
        await pub.send_str(serialize_publish(SidecarStatus(participants=0)))
        deadline = time.monotonic() + 5
        while await hub.store.count("r"):
            assert time.monotonic() < deadline, "the ended room's transcript was not purged"
            await asyncio.sleep(0.05)
        await pub.close()


async def test_a_host_action_after_the_token_expired_is_refused_without_closing(
    client: TestClient[Any, Any],
) -> None:
    """Host powers end with the host's token: the socket stays open, nothing changes."""
    host = await client.ws_connect(f"/captions?token={token('host', ttl=1)}")
    await receive_until(host, "room_state")
    await asyncio.sleep(2.2)  # exp is whole seconds: at most 1 s after minting
    await host.send_json({"type": "set_captions", "enabled": False})
    assert (await receive_until(host, "error"))["code"] == "token_expired"
    await host.send_json({"type": "ping", "id": 5})
    assert (await receive_until(host, "pong"))["id"] == 5  # still connected
    assert client.app[HUB_KEY].state("r").enabled
    await host.close()
