"""/healthz, /readyz and /metrics of a node (with a real PostgreSQL that goes away) and
of an ASR server (ready only with a free slot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from captions.asr_server import create_asr_app
from captions.events import Speaker
from captions.runtime import EngineRunner
from evaluation.services import PostgresServer
from meeting.app import Meeting
from meeting.ops import add_asr_ops_routes, add_ops_routes
from sfu.settings import Settings
from sfu.tokens import Grants, mint_token
from tests.conftest import require_services
from tests.fakes import ScriptedEngine
from tests.test_serve_captions_api import caption

SECRET = "o" * 40


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    require_services("postgresql")
    with PostgresServer() as server:
        yield server


async def ready(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, object]]:
    async with http.get(f"{base}/readyz") as resp:
        return resp.status, await resp.json()


async def until_ready(http: aiohttp.ClientSession, base: str, want: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (await ready(http, base))[0] != want:
        assert time.monotonic() < deadline, f"/readyz never answered {want}"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(120)
async def test_node_health_readiness_and_metrics(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    settings = Settings(port=0, data_dir=tmp_path, secret_override=SECRET)
    meeting = Meeting(settings, EngineRunner(ScriptedEngine()), database_url=own_postgres.url)
    await meeting.start()
    base = meeting.base_url
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            status, body = await ready(http, base)
            assert status == 200 and body["checks"] == {
                "store": "ok",
                "draining": "accepting rooms",
            }

            # A final published 1.5 s after its last word ended shows in the histogram.
            token = mint_token(SECRET, Grants.captioner_for("r"), ttl=60)
            async with http.ws_connect(f"{base}/captions/publish?token={token}") as pub:
                final = caption(0, "final", "hello there", seq=1)
                final["stream_started_at"] = time.time() - 1.5 - final["words"][-1]["end"]
                await pub.send_json(final)
                while (await pub.receive_json(timeout=10))["type"] != "ack":
                    pass  # the hub also sends the captioner the room's state
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            for name in (
                "captions_rooms 0.0",
                "captions_participants 0.0",
                'captions_engine_streams{engine="scripted"} 0.0',
                "captions_engine_busy_fraction",
                "captions_audio_dropped_seconds_total",
                "captions_store_failures_total 0.0",
                "captions_forwarded_frames_total",
                'captions_caption_latency_seconds_bucket{le="1.0"} 0.0',
                'captions_caption_latency_seconds_bucket{le="2.0"} 1.0',
            ):
                assert name in text, name

            meeting.draining = True
            status, body = await ready(http, base)
            assert status == 503 and "draining" in str(body["checks"]["draining"])
            meeting.draining = False

            await asyncio.to_thread(own_postgres.stop)
            status, body = await ready(http, base)
            assert status == 503 and body["checks"]["store"] != "ok"
            await asyncio.to_thread(own_postgres.start)
            await until_ready(http, base, 200, 30)
    finally:
        await meeting.stop()


async def test_metrics_need_the_token_when_one_is_set() -> None:
    app = web.Application()
    add_ops_routes(app, [], {}, metrics_token="t" * 20)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/metrics")).status == 403
        headers = {"Authorization": "Bearer wrong"}
        assert (await client.get("/metrics", headers=headers)).status == 403
        headers = {"Authorization": "Bearer " + "t" * 20}
        assert (await client.get("/metrics", headers=headers)).status == 200


async def test_asr_server_is_ready_only_with_a_free_slot() -> None:
    app = create_asr_app(ScriptedEngine(max_streams=1), ["k" * 20])
    add_asr_ops_routes(app)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 200
        assert (await resp.json())["checks"]["slots"] == {"free_slots": 1, "streams": 0}
        from captions.asr_server import runner_of

        stream = runner_of(app).open_stream(Speaker("a", "A"))
        resp = await client.get("/readyz")
        assert resp.status == 503 and "no free channels" in str(await resp.json())
        metrics = await (await client.get("/metrics")).text()
        assert 'captions_engine_free_slots{engine="scripted"} 0.0' in metrics
        await stream.aclose()
        assert (await client.get("/readyz")).status == 200
