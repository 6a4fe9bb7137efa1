"""Conformance of /api/asr-streaming with raw MessagePack frames (behind a scripted engine)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import numpy as np
import pytest
import websockets
from aiohttp import web

from captions.asr_server import AsrServerLimits, add_asr_routes, create_asr_app
from captions.engine import Engine
from captions.kyutai_protocol import FRAME_SAMPLES, SAMPLE_RATE
from captions.runtime import EngineRunner
from common.exceptions import CaptionsError
from tests.fakes import ScriptedEngine

KEY = "test-key"
SCRIPT = [("hello", 0.2, 0.5), ("there", 0.6, 0.9), ("friend", 1.0, 1.3)]


@asynccontextmanager
async def serving(
    engine: Engine, *, keys: tuple[str, ...] = (KEY,), **limits: Any
) -> AsyncIterator[str]:
    app = create_asr_app(engine, keys, limits=AsrServerLimits(**limits))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"ws://127.0.0.1:{port}/api/asr-streaming"
    finally:
        await runner.cleanup()


def scripted(**kwargs: Any) -> ScriptedEngine:
    return ScriptedEngine(SCRIPT, sample_rate=SAMPLE_RATE, delay=0.0, **kwargs)


def pack(body: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))


async def read(ws: websockets.ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    data = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(data, bytes), "the server sends binary frames only"
    body: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return body


async def read_until(
    ws: websockets.ClientConnection, accept: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            body = await read(ws)
            seen.append(body)
            if accept(body):
                return seen


def connect(url: str, key: str | None = KEY) -> Any:
    headers = {"kyutai-api-key": key} if key is not None else {}
    return websockets.connect(url, additional_headers=headers)


def audio(seconds: float) -> list[bytes]:
    frames = int(seconds * SAMPLE_RATE) // FRAME_SAMPLES
    silence = [0.0] * FRAME_SAMPLES
    return [pack({"type": "Audio", "pcm": silence}) for _ in range(frames)]


async def test_words_steps_and_marker() -> None:
    async with serving(scripted()) as url, connect(url) as ws:
        assert (await read(ws))["type"] == "Ready"
        for frame in audio(2.0):
            await ws.send(frame)
        await ws.send(pack({"type": "Marker", "id": 42}))
        for frame in audio(1.0):
            await ws.send(frame)
        seen = await read_until(ws, lambda m: m["type"] == "Marker")
        assert seen[-1] == {"type": "Marker", "id": 42}
        words = [m for m in seen if m["type"] in ("Word", "EndWord")]
        assert [m["text"] for m in words if m["type"] == "Word"] == ["hello", "there", "friend"]
        # Each Word is followed by the EndWord of that word, with the scripted times.
        assert words[0] == {"type": "Word", "text": "hello", "start_time": 0.2}
        assert words[1] == {"type": "EndWord", "stop_time": 0.5}
        steps = [m for m in seen if m["type"] == "Step"]
        assert steps and [s["step_idx"] for s in steps] == list(range(1, len(steps) + 1))
        assert all(s["prs"] == [0.0, 0.0, 0.0, 0.0] for s in steps)


async def test_query_auth_id_is_accepted() -> None:
    async with serving(scripted()) as url, websockets.connect(f"{url}?auth_id={KEY}") as ws:
        assert (await read(ws))["type"] == "Ready"


@pytest.mark.parametrize("key", [None, "", "wrong-key", KEY + "x"])
async def test_auth_failures_get_401(key: str | None) -> None:
    async with serving(scripted()) as url:
        with pytest.raises(websockets.InvalidStatus) as failure:
            async with connect(url, key):
                pass
        assert failure.value.response.status_code == 401


async def test_wrong_query_key_gets_401() -> None:
    async with serving(scripted()) as url:
        with pytest.raises(websockets.InvalidStatus) as failure:
            async with websockets.connect(f"{url}?auth_id=nope"):
                pass
        assert failure.value.response.status_code == 401


async def test_no_keys_is_refused() -> None:
    with pytest.raises(CaptionsError):
        add_asr_routes(web.Application(), EngineRunner(scripted()), [])


BAD_FRAMES = {
    "not msgpack": b"\xc1\xc1\xc1 definitely not msgpack",
    "not a map": pack([1, 2, 3]),  # type: ignore[arg-type]
    "unknown type": pack({"type": "Dance"}),
    "no type": pack({"pcm": [0.0]}),
    "pcm is a string": pack({"type": "Audio", "pcm": "loud"}),
    "pcm is bytes": pack({"type": "Audio", "pcm": b"\x00\x00\x80\x3f"}),
    "pcm holds strings": pack({"type": "Audio", "pcm": [0.0, "x"]}),
    "pcm is nested": pack({"type": "Audio", "pcm": [[0.0]]}),
    "marker id is text": pack({"type": "Marker", "id": "one"}),
    "over the size limit": pack({"type": "Audio", "pcm": [0.0] * 3000}),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_bad_frame_gets_error_and_close_others_keep_going(name: str) -> None:
    limit = {"max_message_bytes": 20_000}
    async with serving(scripted(), **limit) as url, connect(url) as good, connect(url) as bad:
        assert (await read(good))["type"] == "Ready"
        assert (await read(bad))["type"] == "Ready"
        await bad.send(BAD_FRAMES[name])
        error = await read_until(bad, lambda m: m["type"] == "Error")
        assert error[-1]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(bad.recv(), 5)
        # The other client is still served.
        for frame in audio(1.0):
            await good.send(frame)
        seen = await read_until(good, lambda m: m["type"] == "Word")
        assert seen[-1]["text"] == "hello"


async def test_text_frame_is_refused() -> None:
    async with serving(scripted()) as url, connect(url) as ws:
        await read(ws)
        await ws.send("hello")
        assert (await read_until(ws, lambda m: m["type"] == "Error"))[-1]["type"] == "Error"


async def test_full_pool_answers_no_free_channels() -> None:
    async with serving(scripted(max_streams=1)) as url, connect(url) as first:
        assert (await read(first))["type"] == "Ready"
        async with connect(url) as second:
            assert await read(second) == {"type": "Error", "message": "no free channels"}
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(second.recv(), 5)
        # Once the first leaves, its channel is free again.
    async with serving(scripted(max_streams=1)) as url, connect(url) as again:
        assert (await read(again))["type"] == "Ready"


async def test_idle_and_no_audio_timeouts() -> None:
    async with serving(scripted(), idle_timeout=0.4, audio_timeout=5.0) as url, connect(url) as ws:
        await read(ws)
        error = await read_until(ws, lambda m: m["type"] == "Error")
        assert "nothing received" in error[-1]["message"]
    async with serving(scripted(), idle_timeout=5.0, audio_timeout=0.6) as url, connect(url) as ws:
        await read(ws)
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(10):  # keeps talking, but sends no audio
                await ws.send(pack({"type": "Ping"}))
                await asyncio.sleep(0.15)
        error = await read_until(ws, lambda m: m["type"] == "Error")
        assert "no audio" in error[-1]["message"]


async def test_ogg_opus_audio_is_decoded() -> None:
    import sphn

    engine = scripted()
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    async with serving(engine) as url, connect(url) as ws:
        await read(ws)
        for _ in range(20):
            data = writer.append_pcm(np.zeros(FRAME_SAMPLES, dtype=np.float32))
            if data:
                await ws.send(pack({"type": "OggOpus", "data": bytes(data)}))
        seen = await read_until(ws, lambda m: m["type"] == "Word")
        assert seen[-1]["text"] == "hello"
    assert sum(engine.samples_seen.values()) > 0.5 * SAMPLE_RATE


class FailingEngine(ScriptedEngine):
    def step(self, sessions: Any) -> None:
        raise RuntimeError("GPU fell off the bus")


async def test_engine_failure_reaches_the_client_as_an_error() -> None:
    engine = FailingEngine(SCRIPT, sample_rate=SAMPLE_RATE)
    async with serving(engine) as url, connect(url) as ws:
        await read(ws)
        await ws.send(audio(0.2)[0])
        error = await read_until(ws, lambda m: m["type"] == "Error")
        assert "ended on the server" in error[-1]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)


async def test_server_pings_at_the_configured_interval() -> None:
    import aiohttp

    async with serving(scripted(), ping_interval=0.2) as url, aiohttp.ClientSession() as http:
        headers = {"kyutai-api-key": KEY}
        async with http.ws_connect(url, headers=headers, autoping=False) as ws:
            kinds = []
            async with asyncio.timeout(5):
                while aiohttp.WSMsgType.PING not in kinds:
                    kinds.append((await ws.receive()).type)
            assert kinds[0] == aiohttp.WSMsgType.BINARY  # Ready came first


async def test_a_silent_client_that_answers_pings_still_times_out() -> None:
    """Issue 10, item 7: pongs must not reset the idle timeout (the websockets client
    answers every ping by itself, like most libraries)."""
    async with (
        serving(scripted(), idle_timeout=0.6, audio_timeout=5.0, ping_interval=0.1) as url,
        connect(url) as ws,
    ):
        await read(ws)
        error = await read_until(ws, lambda m: m["type"] == "Error", timeout=3)
        assert "nothing received" in error[-1]["message"]
    async with (
        serving(scripted(), idle_timeout=5.0, audio_timeout=0.6, ping_interval=0.1) as url,
        connect(url) as ws,
    ):
        await read(ws)
        error = await read_until(ws, lambda m: m["type"] == "Error", timeout=3)
        assert "no audio" in error[-1]["message"]


async def test_streams_per_api_key_are_capped() -> None:
    engine = scripted(max_streams=4)
    async with (
        serving(engine, keys=(KEY, "other"), max_streams_per_key=2) as url,
        connect(url) as a,
        connect(url) as b,
    ):
        assert (await read(a))["type"] == (await read(b))["type"] == "Ready"
        async with connect(url) as third:
            assert await read(third) == {"type": "Error", "message": "no free channels"}
        async with connect(url, key="other") as c:  # another key still gets a slot
            assert (await read(c))["type"] == "Ready"


async def test_init_is_answered_with_ready_as_moshi_server_does() -> None:
    # moshi-server's batched ASR sends Ready for its own Init at connect and again for
    # each Init a client sends; the stream then goes on as usual.
    async with serving(scripted()) as url, connect(url) as ws:
        assert await read(ws) == {"type": "Ready"}
        await ws.send(pack({"type": "Init"}))
        assert await read(ws) == {"type": "Ready"}
        for frame in audio(1.0):
            await ws.send(frame)
        seen = await read_until(ws, lambda m: m["type"] == "Word")
        assert seen[-1]["text"] == "hello"


async def test_a_peer_that_leaves_pings_unanswered_is_closed() -> None:
    import aiohttp

    async with serving(scripted(), ping_interval=0.2) as url, aiohttp.ClientSession() as http:
        headers = {"kyutai-api-key": KEY}
        async with http.ws_connect(url, headers=headers, autoping=False) as ws:
            ended = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            kinds = []
            for _ in range(10):  # bounded: a closed socket answers at once, forever
                kinds.append((await asyncio.wait_for(ws.receive(), 5)).type)
                if kinds[-1] in ended:
                    break
            assert aiohttp.WSMsgType.PING in kinds and kinds[-1] in ended
