"""Loopback load test of a cluster through HAProxy: rooms of three bots (one speaking,
two listening and reading captions), the same load on one node and on two.

    python -m evaluation.cluster_bench --audio SPEECH.wav --rooms 2 --nodes 1 2 --seconds 40

For each node count: starts a :class:`~evaluation.cluster.LocalCluster` (Redis,
PostgreSQL, nodes running the default Whisper engine, HAProxy), lets every room's
speaker talk for ``warmup`` seconds, then measures for ``seconds``: CPU of each node
process (share of one core), caption latency from the nodes' own
``captions_caption_latency_seconds`` histograms (end of a final's last word to its
broadcast), finals delivered to the listeners, and the machine's load average. Prints
one JSON line per node count. The machine is shared: read the load with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from captions.audio import load_audio
from evaluation.cluster import LocalCluster, SpeakerBot, Viewer, lookup
from evaluation.machine import machine_state
from sfu.client import SfuClient
from sfu.tokens import Grants, mint_token


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def latency_totals(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    total = re.search(r"^captions_caption_latency_seconds_sum (\S+)$", text, re.M)
    count = re.search(r"^captions_caption_latency_seconds_count (\S+)$", text, re.M)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


@dataclass
class Listener:
    """A bot that joins without publishing (it receives the speaker's audio from the SFU)."""

    entry: str
    room: str
    token: str
    client: SfuClient | None = None

    async def join(self, http: aiohttp.ClientSession) -> None:
        where = await lookup(http, self.entry, self.room, self.token)
        self.client = await SfuClient.connect(f"{self.entry}{where['path']}", self.token)

    async def leave(self) -> None:
        if self.client is not None:
            await self.client.close()


async def measure(
    cluster: LocalCluster, audio: str, rooms: int, warmup: float, seconds: float
) -> dict[str, Any]:
    speech = load_audio(audio, sample_rate=48_000)
    pcm = np.concatenate([speech, np.zeros(48_000, np.float32)])

    def token(room: str, name: str) -> str:
        return mint_token(cluster.secret, Grants.for_role(room, name, "host"), ttl=3600)

    names = [f"room{i}" for i in range(rooms)]
    speakers = [SpeakerBot(cluster.entry, r, token(r, "Speaker"), pcm) for r in names]
    viewers = [Viewer(cluster.entry, r, token(r, "Reader")) for r in names]
    listeners = [
        Listener(cluster.entry, r, token(r, f"Listener{k}")) for r in names for k in (1, 2)
    ]
    async with aiohttp.ClientSession() as http:
        for client in [*viewers, *speakers]:
            client.start()
        await asyncio.gather(*(listener.join(http) for listener in listeners))
        try:
            await asyncio.sleep(warmup)
            pids = {n.id: n.process.pid for n in cluster.nodes if n.process is not None}
            cpu0 = {node: cpu_seconds(pid) for node, pid in pids.items()}
            lat0 = {n.id: await latency_totals(http, n.url) for n in cluster.nodes}
            finals0 = sum(len(v.finals) for v in viewers)
            started = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - started
            cpu = {node: (cpu_seconds(pid) - cpu0[node]) / elapsed for node, pid in pids.items()}
            lat1 = {n.id: await latency_totals(http, n.url) for n in cluster.nodes}
            finals = sum(len(v.finals) for v in viewers) - finals0
            state = machine_state()
        finally:
            await asyncio.gather(*(listener.leave() for listener in listeners))
            for client in [*speakers, *viewers]:
                await client.stop()
    placed = {v.room: v.nodes[-1] if v.nodes else None for v in viewers}
    latency_sum = sum(lat1[n][0] - lat0[n][0] for n in lat1)
    latency_count = sum(lat1[n][1] - lat0[n][1] for n in lat1)
    return {
        "nodes": len(cluster.nodes),
        "rooms": rooms,
        "bots_per_room": 3,
        "seconds": round(elapsed, 1),
        "rooms_per_node": {
            n.id: sum(1 for p in placed.values() if p == n.id) for n in cluster.nodes
        },
        "cpu_per_node": {node: round(value, 2) for node, value in cpu.items()},
        "caption_latency_mean_s": round(latency_sum / latency_count, 2) if latency_count else None,
        "finals_measured": int(latency_count),
        "finals_to_readers": finals,
        "machine": state,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", required=True, help="speech each room's speaker loops")
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    args = parser.parse_args()
    for nodes in args.nodes:
        with LocalCluster(nodes_count=nodes) as cluster:
            result = asyncio.run(
                measure(cluster, args.audio, args.rooms, args.warmup, args.seconds)
            )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
