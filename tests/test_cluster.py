"""A real cluster on loopback: Redis, PostgreSQL 15, two `captions serve` nodes (Whisper)
and HAProxy running deploy/haproxy.cfg as shipped. Bots publish real speech through the
entry point; viewers read captions through it. Kept small for 2 shared cores: short
sentences, two rooms of two speakers, one room for the node-death test."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import psycopg
import pytest

from captions.audio import load_audio
from evaluation.cluster import LocalCluster, SpeakerBot, Viewer, lookup
from sfu.tokens import Grants, mint_token
from tests.conftest import require_services
from tests.speech import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

SENTENCES = {
    "Ada": ("Please remember to send the quarterly report today.", "piper"),
    "Bo": ("The train leaves from platform nine at noon.", "espeak:en-us"),
    "Cy": ("We should water the garden before the sun sets.", "piper"),
    "Di": ("My brother bought a new bicycle last week.", "espeak:en-us"),
}


def speech(name: str) -> np.ndarray:
    text, voice = SENTENCES[name]
    pcm = load_audio(synthesize(text, voice=voice), sample_rate=48_000)
    return np.concatenate([np.zeros(24_000, np.float32), pcm, np.zeros(48_000, np.float32)])


def token(cluster: LocalCluster, room: str, name: str, role: str = "host") -> str:
    return mint_token(cluster.secret, Grants.for_role(room, name, role), ttl=3600)  # type: ignore[arg-type]


@pytest.fixture
def cluster(postgres_url: str) -> Iterator[LocalCluster]:
    require_services("redis-server", "haproxy")
    with LocalCluster(nodes_count=2, database_url=postgres_url) as running:
        yield running


async def until(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


def stored_finals(database_url: str, room: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT text FROM captions WHERE room = %s", (room,)).fetchall()
    return [r[0] for r in rows]


async def test_two_rooms_on_two_nodes_through_haproxy(cluster: LocalCluster) -> None:
    rooms = {"alpha": ("Ada", "Bo"), "beta": ("Cy", "Di")}
    async with aiohttp.ClientSession() as http:
        placed = {
            room: (await lookup(http, cluster.entry, room, token(cluster, room, "x")))["node"]
            for room in rooms
        }
    assert set(placed.values()) == {"node1", "node2"}, placed  # least-loaded placement
    viewers = {
        room: Viewer(cluster.entry, room, token(cluster, room, "viewer", "guest")) for room in rooms
    }
    bots = [
        SpeakerBot(cluster.entry, room, token(cluster, room, name), speech(name))
        for room, names in rooms.items()
        for name in names
    ]
    for client in [*viewers.values(), *bots]:
        client.start()
    try:
        for room, names in rooms.items():
            await until(
                lambda v=viewers[room], n=names: {f[1]["speaker_name"] for f in v.finals} >= set(n),
                180,
                f"finals of both speakers of {room}",
            )
    finally:
        for client in [*bots, *viewers.values()]:
            await client.stop()
    for room, names in rooms.items():
        viewer = viewers[room]
        assert set(viewer.nodes) == {placed[room]}
        # Each room's captions reach only its own viewers.
        assert {f[1]["speaker_name"] for f in viewer.finals} <= set(names), viewer.finals
    async with aiohttp.ClientSession() as http:
        for room, names in rooms.items():
            # The transcript is downloadable through the entry point, from either node.
            for path in ("", "/n/node1", "/n/node2"):
                url = f"{cluster.entry}{path}/rooms/{room}/transcript.txt"
                async with http.get(url, params={"token": token(cluster, room, "h")}) as resp:
                    assert resp.status == 200, (url, resp.status)
                    text = await resp.text()
                for name in names:
                    assert name in text, (room, text)
            url = f"{cluster.entry}/n/{placed[room]}/metrics"
            async with http.get(url) as resp:
                assert resp.status == 403  # never through the entry point


async def test_node_death_bots_and_viewers_come_back_through_the_entry_point(
    cluster: LocalCluster,
) -> None:
    room = "gamma"
    viewer = Viewer(cluster.entry, room, token(cluster, room, "viewer", "guest"))
    bot = SpeakerBot(cluster.entry, room, token(cluster, room, "Ada"), speech("Ada"))
    viewer.start()
    bot.start()
    try:
        await until(lambda: len(viewer.finals) >= 2, 180, "finals before the kill")
        await asyncio.sleep(1.5)  # so that these finals were written well before the kill
        first_node = viewer.nodes[-1]
        killed_at = time.time()
        cluster.node(first_node).kill()
        seen_before = [f[1]["text"] for f in viewer.finals if f[0] < killed_at - 1.0]
        await until(
            lambda: any(t > killed_at for t, _ in viewer.finals), 120, "a caption after the kill"
        )
        first_new = min(t for t, _ in viewer.finals if t > killed_at)
        gap = first_new - killed_at
        print(f"node death: first new caption {gap:.1f} s after kill -9 of {first_node}")
    finally:
        await bot.stop()
        await viewer.stop()
    assert viewer.nodes[-1] != first_node and bot.nodes[-1] == viewer.nodes[-1]
    # Every final broadcast (so written, and acknowledged) well before the kill is stored.
    assert cluster.database_url is not None
    stored = stored_finals(cluster.database_url, room)
    missing = [t for t in seen_before if t not in stored]
    assert seen_before and not missing, missing


async def test_redis_restart_mid_meeting(cluster: LocalCluster) -> None:
    room = "delta"
    viewer = Viewer(cluster.entry, room, token(cluster, room, "viewer", "guest"))
    bot = SpeakerBot(cluster.entry, room, token(cluster, room, "Ada"), speech("Ada"))
    viewer.start()
    bot.start()
    assert cluster.redis is not None
    try:
        await until(lambda: len(viewer.finals) >= 1, 180, "a first final")
        node = cluster.node(viewer.nodes[-1])
        async with aiohttp.ClientSession() as http:

            async def ready() -> int:
                async with http.get(f"{node.url}/readyz") as resp:
                    return resp.status

            assert await ready() == 200
            cluster.redis.stop()
            down_at = time.time()
            assert await ready() == 503  # not ready while the directory is unreachable
            # Live captions keep flowing without Redis.
            await until(
                lambda: any(t > down_at for t, _ in viewer.finals), 120, "a final without Redis"
            )
            assert await ready() == 503
            cluster.redis.start()  # empty: it keeps nothing (--save '')
            deadline = time.monotonic() + 20
            while await ready() != 200:
                assert time.monotonic() < deadline, "never ready again"
                await asyncio.sleep(0.2)
            # The node re-claimed its live room at its next heartbeat.
            answer = await lookup(http, cluster.entry, room, token(cluster, room, "x"))
            assert answer["node"] == node.id
    finally:
        await bot.stop()
        await viewer.stop()
    assert set(viewer.nodes) == {node.id}  # nobody had to move


@pytest.mark.browser
def test_a_page_follows_its_room_after_its_node_dies(cluster: LocalCluster) -> None:
    """Chromium joins through the entry point; its node is killed; the page reconnects
    through the entry point to the surviving node and captions resume there."""
    from tests.browser import browser_page, chromium_playwright
    from tests.test_browser_meeting import final_text, join, speech_file

    room = "epsilon"
    wav = speech_file(["Please remember to send the quarterly report today."], "piper")
    url = f"{cluster.entry}/room/{room}#token={token(cluster, room, 'Alice')}"

    def finals(page: Any) -> int:
        return len(final_text(page, "Alice").split())

    with chromium_playwright() as playwright, browser_page(playwright, fake_audio=wav) as page:
        join(page, url)
        page.wait_for_function(
            "() => (window.__captionRecorder.order || []).some("
            "k => window.__captionRecorder.lines[k].final)",
            timeout=180_000,
        )
        where = _lookup(cluster, room)
        before = finals(page)
        killed_at = time.monotonic()
        cluster.node(where).kill()
        deadline = killed_at + 150
        while finals(page) <= before:
            assert time.monotonic() < deadline, "no caption after the node died"
            page.wait_for_timeout(200)
        gap = time.monotonic() - killed_at
        print(f"browser: first new caption {gap:.1f} s after kill -9 of {where}")
        assert _lookup(cluster, room) != where


def _lookup(cluster: LocalCluster, room: str) -> str:
    """The room's node, asked of the entry point (a blocking call: Playwright's sync API
    owns this thread's event loop)."""
    request = urllib.request.Request(
        f"{cluster.entry}/rooms/{room}/node",
        headers={"Authorization": f"Bearer {token(cluster, room, 'x')}"},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return str(json.load(resp)["node"])
        except OSError:
            assert time.monotonic() < deadline, "no node answers"
            time.sleep(0.2)


async def test_postgres_restart_mid_meeting_with_whole_nodes() -> None:
    """Captions keep flowing while PostgreSQL is down, the node is not ready meanwhile,
    and every final the viewer saw ends up stored once PostgreSQL is back."""
    require_services("postgresql", "redis-server", "haproxy")
    with LocalCluster(nodes_count=1) as cluster:  # its own PostgreSQL, to restart
        room = "zeta"
        viewer = Viewer(cluster.entry, room, token(cluster, room, "viewer", "guest"))
        bot = SpeakerBot(cluster.entry, room, token(cluster, room, "Ada"), speech("Ada"))
        viewer.start()
        bot.start()
        assert cluster.postgres is not None and cluster.database_url is not None
        node = cluster.nodes[0]
        try:
            await until(lambda: len(viewer.finals) >= 1, 180, "a first final")
            async with aiohttp.ClientSession() as http:

                async def ready() -> int:
                    async with http.get(f"{node.url}/readyz") as resp:
                        return resp.status

                await asyncio.to_thread(cluster.postgres.stop)
                down_at = time.time()
                assert await ready() == 503
                await until(
                    lambda: any(t > down_at for t, _ in viewer.finals),
                    120,
                    "a final while PostgreSQL is down",
                )
                await asyncio.to_thread(cluster.postgres.start)
                deadline = time.monotonic() + 30
                while await ready() != 200:
                    assert time.monotonic() < deadline, "never ready again"
                    await asyncio.sleep(0.2)
        finally:
            await bot.stop()
            await viewer.stop()
        seen = [f[1]["text"] for f in viewer.finals]
        deadline = time.monotonic() + 30  # retried writes land within the backoff cap
        while missing := [t for t in seen if t not in stored_finals(cluster.database_url, room)]:
            assert time.monotonic() < deadline, missing
            await asyncio.sleep(0.5)
