"""Signalling over a real socket: tokens, host actions, room changes, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from common.exceptions import AuthError
from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track
from sfu.server import create_app
from sfu.settings import Settings
from tests.test_sfu_forwarding import SECRET, sfu, token, tone, url

__all__ = ["sfu"]


async def raw_join(server: TestServer, message: object) -> tuple[list[dict], int | None]:
    """Sends one join frame; returns the server's messages and the close code."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url(server) + "/ws") as ws:
        await ws.send_str(json.dumps(message))
        replies = []
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                replies.append(json.loads(frame.data))
                if replies[-1]["type"] == "joined":
                    break
        return replies, ws.close_code


def expired_token() -> str:
    claims = jwt.decode(token("Old"), SECRET, algorithms=["HS256"])
    claims["exp"] = int(time.time()) - 5
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("message", "code", "close"),
    [
        ({"type": "join"}, "token_missing", 4401),
        ({"type": "join", "token": "garbage"}, "token_invalid", 4401),
        (
            {"type": "join", "token": jwt.encode({"sub": "x"}, "other-secret-" * 3)},
            "token_invalid",
            4401,
        ),
        ({"type": "join", "token": "EXPIRED"}, "token_expired", 4401),
        ({"type": "join", "token": "LOBBY", "room": "boardroom"}, "wrong_room", 4403),
        ({"type": "offer", "sdp": "v=0"}, "not_joined", 4400),
    ],
)
async def test_rejections_have_codes_and_leave_others_alone(
    sfu: TestServer, message: dict, code: str, close: int
) -> None:
    if message.get("token") == "EXPIRED":
        message = {**message, "token": expired_token()}
    if message.get("token") == "LOBBY":
        message = {**message, "token": token("Mallory")}
    alice = await SfuClient.connect(url(sfu), token("Alice", "host"))
    try:
        replies, close_code = await raw_join(sfu, message)
        assert replies[-1]["type"] == "error" and replies[-1]["code"] == code
        assert close_code == close
        await alice.send_raw(json.dumps({"type": "ping", "id": 7}))
        assert (await alice.wait_for("pong", timeout=5)).data["id"] == 7
    finally:
        await alice.close()


async def test_client_connect_raises_auth_error_with_code(sfu: TestServer) -> None:
    with pytest.raises(AuthError) as info:
        await SfuClient.connect(url(sfu), expired_token())
    assert info.value.code == "token_expired"


async def test_join_mute_leave_renegotiate(sfu: TestServer) -> None:
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    await alice.publish(audio=pcm_audio_track(tone(30), 48000))
    captioner = await SfuClient.connect(
        url(sfu), token("cap", hidden=True, captioner=True, can_publish=False)
    )
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        assert next(iter(bob.participants.values())).name == "Alice"
        assert "cap" not in {p.name for p in bob.participants.values()}
        joined = await alice.wait_for("participant_joined", timeout=5)
        assert joined.participant is not None and joined.participant.name == "Bob"
        event = await bob.wait_for("track", timeout=10)
        assert event.track is not None and event.track.kind == "audio"
        cap_track = (await captioner.wait_for("track", timeout=10)).track
        assert cap_track is not None
        await asyncio.sleep(0.5)
        assert event.track.frames_received > 0

        await alice.set_muted("audio", True)
        update = await bob.wait_for("participant_updated", timeout=5)
        assert update.participant is not None and update.participant.audio_muted
        await asyncio.sleep(0.3)
        before = event.track.frames_received
        await asyncio.sleep(0.5)
        assert event.track.frames_received == before  # muted: nothing is forwarded
        await alice.set_muted("audio", False)
        await bob.wait_for("participant_updated", timeout=5)
        await asyncio.sleep(0.5)
        assert event.track.frames_received > before

        await alice.close()
        left = await bob.wait_for("participant_left", timeout=5)
        assert left.data["identity"] == alice.me["identity"]
        ended = await bob.wait_for("track_ended", timeout=10)
        assert ended.track is event.track and event.track.ended
        await captioner.wait_for("track_ended", timeout=10)
    finally:
        await alice.close()
        await bob.close()
        await captioner.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "mute", "kind": "audio", "muted": "yes"}', "malformed"),
        ('{"type": "offer", "sdp": "v=0\\r\\nthis is not sdp"}', "invalid_sdp"),
        ('{"type": "answer", "sdp": "v=0\\r\\n"}', "invalid_sdp"),
    ],
)
async def test_bad_input_gets_an_error_and_the_connection_survives(
    sfu: TestServer, frame: str, code: str
) -> None:
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    try:
        await alice.send_raw(frame)
        assert (await alice.wait_for("error", timeout=10)).data["code"] == code
        await alice.send_raw('{"type": "ping", "id": 1}')
        await alice.wait_for("pong", timeout=5)
    finally:
        await alice.close()


async def test_oversize_message_closes_with_1009_and_others_keep_going(sfu: TestServer) -> None:
    alice = await SfuClient.connect(url(sfu), token("Alice"))
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        await alice.send_raw(json.dumps({"type": "ping", "id": "x" * 300_000}))
        assert (await alice.wait_for("closed", timeout=5)).data["code"] == 1009
        left = await bob.wait_for("participant_left", timeout=5)
        assert left.data["name"] == "Alice"
        await bob.send_raw('{"type": "ping"}')
        await bob.wait_for("pong", timeout=5)
    finally:
        await alice.close()
        await bob.close()


async def test_full_room_refuses_with_room_full(tmp_path: object) -> None:
    from sfu.server import create_app
    from sfu.settings import Settings

    settings = Settings(secret_override=SECRET, max_participants_per_room=1)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    alice = await SfuClient.connect(url(server), token("Alice"))
    try:
        replies, close_code = await raw_join(server, {"type": "join", "token": token("Bob")})
        assert replies[-1]["code"] == "room_full" and close_code == 4429
        other_room, _ = await raw_join(server, {"type": "join", "token": token("Cy", room="b")})
        assert other_room[0]["type"] == "joined"
    finally:
        await alice.close()
        await server.close()


async def short_join_deadline(tmp_path: Path) -> TestServer:
    settings = Settings(data_dir=tmp_path, secret_override=SECRET, join_timeout_seconds=0.5)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    return server


async def test_silent_socket_is_closed_with_4408(tmp_path: Path) -> None:
    server = await short_join_deadline(tmp_path)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url(server) + "/ws") as ws:
            frame = await ws.receive(timeout=5)
            assert frame.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4408
    finally:
        await server.close()


async def test_pings_before_join_do_not_extend_the_join_deadline(tmp_path: Path) -> None:
    """The deadline covers the whole unauthenticated phase, not just the first message."""
    server = await short_join_deadline(tmp_path)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url(server) + "/ws") as ws:
            started = time.monotonic()
            while time.monotonic() - started < 5:
                await ws.send_json({"type": "ping", "id": 1})
                frame = await ws.receive(timeout=5)
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                assert json.loads(frame.data)["type"] == "pong"
                await asyncio.sleep(0.1)
            assert ws.closed and ws.close_code == 4408
            assert time.monotonic() - started < 2
    finally:
        await server.close()


async def test_rejoin_gets_a_fresh_track(sfu: TestServer) -> None:
    bob = await SfuClient.connect(url(sfu), token("Bob"))
    try:
        for round in range(2):
            alice = await SfuClient.connect(url(sfu), token("Alice"))
            await alice.publish(audio=pcm_audio_track(tone(10, 300 + round), 48000))
            event = await bob.wait_for("track", timeout=10)
            assert event.track is not None and event.participant is not None
            assert event.participant.name == "Alice"
            await asyncio.sleep(0.6)
            assert event.track.frames_received > 10, f"round {round}"
            await alice.close()
            await bob.wait_for("track_ended", timeout=10)
            assert event.track.ended
        assert bob.offers_answered >= 4  # join, leave, rejoin, leave
    finally:
        await bob.close()


async def test_join_name_names_only_a_nameless_link(sfu: TestServer) -> None:
    replies, _ = await raw_join(sfu, {"type": "join", "token": token(""), "name": " Zoé "})
    assert replies[-1]["type"] == "joined" and replies[-1]["you"]["name"] == "Zoé"
    # A name signed into the link always wins over the one typed on the join screen.
    replies, _ = await raw_join(sfu, {"type": "join", "token": token("Ada"), "name": "Mallory"})
    assert replies[-1]["you"]["name"] == "Ada"
    async with aiohttp.ClientSession() as http, http.ws_connect(url(sfu) + "/ws") as ws:
        await ws.send_json({"type": "join", "token": token(""), "name": "x" * 65})
        reply = await asyncio.wait_for(ws.receive_json(), 10)
    assert reply["type"] == "error" and reply["code"] == "malformed"


async def test_hostile_display_names_are_cleaned_and_signalling_keeps_working(
    sfu: TestServer,
) -> None:
    """A lone surrogate or CR/LF in a chosen name is cleaned where it enters: the room's
    signalling (pings, mutes, later joins) keeps working for everyone."""
    forged = "Eve\r\n\r\n9\r\n00:00:00,000 --> 00:00:30,000\r\nHost: I approve"
    cases = [
        ("x\ud800y", "x\ufffdy"),
        (forged, "Eve 9 00:00:00,000 --> 00:00:30,000 Host: I approve"),
        ("\u202eevil\u0000\x85 ", "evil"),
    ]
    host = await SfuClient.connect(url(sfu), token("Host", "host"))
    try:
        for name, shown in cases:
            async with aiohttp.ClientSession() as http, http.ws_connect(url(sfu) + "/ws") as ws:
                await ws.send_str(json.dumps({"type": "join", "token": token(""), "name": name}))
                reply = await asyncio.wait_for(ws.receive_json(), 10)
                assert reply["type"] == "joined" and reply["you"]["name"] == shown
                seen = await host.wait_for("participant_joined", timeout=10)
                assert seen.participant is not None and seen.participant.name == shown
        await host.send_raw(json.dumps({"type": "ping", "id": 9}))
        assert (await host.wait_for("pong", timeout=10)).data["id"] == 9
        late = await SfuClient.connect(url(sfu), token("Late"))
        assert late.me["name"] == "Late"
        await late.close()
    finally:
        await host.close()


def test_a_message_with_a_lone_surrogate_still_encodes_as_valid_utf8() -> None:
    from sfu.signalling import encode

    text = encode({"type": "participant_joined", "participant": {"name": "x\ud800y"}})
    assert json.loads(text.encode("utf-8"))["participant"]["name"] == "x\ud800y"
