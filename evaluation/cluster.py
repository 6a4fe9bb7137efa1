"""A whole cluster on loopback (Redis, PostgreSQL, nodes, HAProxy with
``deploy/haproxy.cfg``), and clients that find their room's node through the entry
point and come back after a node dies. Used by ``deploy/cluster.py`` (``make
cluster``), the cluster tests and the cluster load test.

Nodes are real ``captions serve`` processes, so that a test can ``kill -9`` one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import numpy as np
import numpy.typing as npt

from common.aio import cancel_and_wait
from common.exceptions import ConfigError, ProtocolError
from evaluation.services import (
    HAProxy,
    PostgresServer,
    RedisServer,
    free_port,
    kill,
    terminate,
    wait_for_port,
)
from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"
NODE_IDS = ("node1", "node2")  # the server names in deploy/haproxy.cfg


@dataclass
class Node:
    id: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: the node dies as a crashed machine would, flushing nothing."""
        kill(self.process)
        self.process = None

    def stop(self) -> None:
        """SIGTERM: the node flushes its open captions, then exits (60 s at most)."""
        terminate(self.process, timeout=60)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@dataclass
class LocalCluster:
    """Redis, PostgreSQL, ``nodes`` ``captions serve`` nodes and HAProxy, on loopback.

    ``node_args`` are added to every node's command line (an engine, a model...).
    """

    nodes_count: int = 2
    secret: str = field(default_factory=lambda: os.urandom(24).hex())
    node_args: Sequence[str] = ()
    per_node_args: dict[str, Sequence[str]] = field(default_factory=dict)
    """Extra arguments of one node, by node id (e.g. its own ASR server)."""
    database_url: str | None = None
    """An existing PostgreSQL database; else the cluster starts its own server."""
    redis: RedisServer | None = None
    postgres: PostgresServer | None = None
    haproxy: HAProxy | None = None
    nodes: list[Node] = field(default_factory=list)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="captions-")))

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def entry(self) -> str:
        assert self.haproxy is not None
        return f"http://127.0.0.1:{self.haproxy.port}"

    def start(self) -> None:
        if not 1 <= self.nodes_count <= len(NODE_IDS):
            raise ConfigError(f"deploy/haproxy.cfg names {len(NODE_IDS)} nodes")
        self.redis = RedisServer()
        self.redis.start()
        if self.database_url is None:
            self.postgres = PostgresServer()
            self.postgres.start()
            self.database_url = self.postgres.url
        for node_id in NODE_IDS[: self.nodes_count]:
            self.nodes.append(self.start_node(node_id))
        for node in self.nodes:
            wait_for_port(node.port, timeout=120, what=f"node {node.id}")
        entry_port = free_port()
        environment = {"ENTRY_BIND": f"127.0.0.1:{entry_port}"}
        for i, node_id in enumerate(NODE_IDS, 1):
            # An absent node is a closed port: HAProxy marks it down.
            port = self.nodes[i - 1].port if i <= len(self.nodes) else free_port()
            environment[f"NODE{i}_ADDR"] = f"127.0.0.1:{port}"
            del node_id
        self.haproxy = HAProxy(HAPROXY_CONFIG, environment, entry_port)
        self.haproxy.start()

    def start_node(self, node_id: str, port: int | None = None) -> Node:
        port = port or free_port()
        data_dir = self.directory / node_id
        data_dir.mkdir(parents=True, exist_ok=True)
        assert self.redis is not None and self.database_url is not None
        command = [
            sys.executable,
            "-m",
            "cli.main",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--redis",
            self.redis.url,
            "--database-url",
            self.database_url,
            "--node-id",
            node_id,
            "--public-url",
            f"http://127.0.0.1:{port}",
            # Every client comes through HAProxy's one address (which caps per source).
            "--max-connections-per-address",
            "2048",
            *self.node_args,
            *self.per_node_args.get(node_id, ()),
        ]
        node = Node(node_id, port, data_dir, log_path=data_dir / "log")
        with open(node.log_path, "ab") as out:  # type: ignore[arg-type]
            node.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "CAPTIONS_SECRET": self.secret, "PYTHONPATH": str(ROOT)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return node

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        for service in (self.haproxy, self.redis, self.postgres):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()
                service.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)


# -- clients that go through the entry point --------------------------------------------


async def lookup(
    http: aiohttp.ClientSession, entry: str, room: str, token: str, *, timeout: float = 30.0
) -> dict[str, Any]:
    """Asks the entry point which node holds ``room``; retries while no node can say
    (a node just died: HAProxy has not marked it down yet, or its heartbeat lingers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(
                f"{entry}/rooms/{room}/node", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                if resp.status == 200:
                    answer: dict[str, Any] = await resp.json()
                    return answer
                if resp.status in (401, 403):
                    raise ProtocolError(f"lookup refused: {await resp.text()}")
                reason = f"HTTP {resp.status}"
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc)
        if time.monotonic() > deadline:
            raise ProtocolError(f"no node for room {room}: {reason}")
        await asyncio.sleep(0.2)


class _Background:
    """A client running as one task until stopped."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task, timeout=15.0)

    async def _run(self) -> None:
        raise NotImplementedError


@dataclass
class Viewer(_Background):
    """A ``/captions`` client of one room through the entry point; reconnects (after a
    new lookup) whenever its socket closes. ``finals`` holds (receive time, caption)."""

    entry: str
    room: str
    token: str
    finals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    where = await lookup(http, self.entry, self.room, self.token)
                    url = f"{self.entry}{where['path']}/captions".replace("http", "ws", 1)
                    async with http.ws_connect(url, heartbeat=5.0) as ws:
                        await ws.send_json({"type": "auth", "token": self.token})
                        self.nodes.append(where["node"])
                        self.connected.set()
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                continue
                            data = json.loads(msg.data)
                            if data.get("type") == "caption" and data.get("kind") == "final":
                                self.finals.append((time.time(), data))
                except (aiohttp.ClientError, OSError, ProtocolError) as exc:
                    log.info("viewer of %s: %s; reconnecting", self.room, exc)
                self.connected.clear()
                await asyncio.sleep(0.2)


@dataclass
class SpeakerBot(_Background):
    """Joins its room through the entry point and publishes ``pcm`` (48 kHz) in a loop;
    after losing the node it looks the room up again and rejoins."""

    entry: str
    room: str
    token: str
    pcm: npt.NDArray[np.float32]
    nodes: list[str] = field(default_factory=list)
    joined: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                client: SfuClient | None = None
                try:
                    where = await lookup(http, self.entry, self.room, self.token)
                    client = await SfuClient.connect(f"{self.entry}{where['path']}", self.token)
                    await client.publish(audio=pcm_audio_track(self.pcm, 48_000, loop=True))
                    self.nodes.append(where["node"])
                    self.joined.set()
                    await client.wait_for("closed", timeout=3600)
                except (aiohttp.ClientError, OSError, ProtocolError, TimeoutError) as exc:
                    log.info("bot in %s: %s; rejoining", self.room, exc)
                finally:
                    self.joined.clear()
                    if client is not None:
                        await client.close()
                await asyncio.sleep(0.2)
