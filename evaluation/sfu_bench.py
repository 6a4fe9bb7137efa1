"""SFU benchmark: N publisher bots, M subscriber bots, forwarded Opus over loopback.

Three kinds of processes, so that the SFU's CPU time is measured alone
(``/proc/<pid>/stat``) and the bots do not starve each other:

- the SFU (:func:`sfu.server.create_app`, plus a bench-only ``/bench-stats`` route);
- this process: N publisher bots, each sending pre-encoded Opus in real time (20 ms
  frames, 32 kbit/s);
- subscriber processes, each running some of the M hidden subscriber bots; every
  subscriber receives every publisher, so the SFU forwards ``N * M`` streams.

Reported over the steady-state window (after warm-up):

- SFU CPU (percent of one core), CPU per forwarded stream, and streams per core;
- latency added by the SFU: RTP packet arrival -> the frame handed to the subscriber's
  sender (median, p95; packetising, SRTP and ``sendto`` add a constant after that);
- packet loss at the subscribers, first half versus second half of the window
  (growing loss means the SFU cannot keep up).

Run: ``.venv/bin/python -m evaluation.sfu_bench --publishers 10 --subscribers 6 --seconds 20``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from sfu.client import RemoteTrack, SfuClient
from sfu.contrib.media import OPUS_RATE, PacedPacketTrack, encode_opus
from sfu.tokens import Grants, mint_token

SECRET = "bench-secret-" + "x" * 32
ROOM = "bench"
FRAME_SECONDS = 0.02
SUBSCRIBERS_PER_PROCESS = 3


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runqueue_wait_seconds(pid: int) -> float:
    """Time the SFU's main thread spent runnable but not running (scheduler starvation)."""
    try:
        with open(f"/proc/{pid}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- SFU process


def serve(port: int) -> None:
    from aiohttp import web

    from sfu.server import SFU, create_app
    from sfu.settings import Settings

    app = create_app(Settings(host="127.0.0.1", port=port, secret_override=SECRET))

    async def stats(request: web.Request) -> web.Response:
        delays: list[float] = []
        frames_in = dropped = delivered = 0
        for room in app[SFU].rooms:
            for peer in room.peers.values():
                for publication in peer.publications.values():
                    frames_in += publication.frames_in
                    for track in publication.subscribers.values():
                        dropped += track.dropped
                        delivered += track.delivered
                        delays.extend(track.delays)
                        if request.query.get("reset"):
                            track.delays.clear()
        return web.json_response(
            {"delays": delays, "frames_in": frames_in, "dropped": dropped, "delivered": delivered}
        )

    app.router.add_get("/bench-stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# ---------------------------------------------------------------- subscriber process


async def subscribe(url: str, first: int, count: int, publishers: int, seconds: float) -> None:
    """Runs ``count`` subscribers; prints ``ready``, waits for ``start``, prints loss JSON."""
    clients = []
    for index in range(first, first + count):
        grants = Grants(room=ROOM, identity=f"sub{index}", can_publish=False, hidden=True)
        clients.append(await SfuClient.connect(url, mint_token(SECRET, grants)))
    tracks: list[RemoteTrack] = []
    deadline = time.monotonic() + 60
    while len(tracks) < publishers * count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        tracks = [p.audio for c in clients for p in c.participants.values() if p.audio]
    drains = [asyncio.ensure_future(_drain(t)) for t in tracks]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    counts = [[t.frames_received for t in tracks]]
    for _ in range(2):
        await asyncio.sleep(seconds / 2)
        counts.append([t.frames_received for t in tracks])
    expected = seconds / 2 / FRAME_SECONDS
    halves = [
        [max(0.0, 1 - (b - a) / expected) for a, b in zip(counts[i], counts[i + 1], strict=True)]
        for i in range(2)
    ]
    print(
        json.dumps({"streams": len(tracks), "loss": [statistics.mean(h) for h in halves]}),
        flush=True,
    )
    for task in drains:
        task.cancel()
    for client in clients:
        await client.close()


async def _drain(track: RemoteTrack) -> None:
    async for _ in track.packets():
        pass


# ---------------------------------------------------------------- coordinator


def _voice_like(seconds: float, index: int) -> np.ndarray:
    t = np.arange(int(seconds * OPUS_RATE)) / OPUS_RATE
    pcm = 0.2 * np.sin(2 * np.pi * (200 + 40 * index) * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    return pcm.astype(np.float32)


async def _get_stats(url: str, *, reset: bool) -> dict[str, Any]:
    import aiohttp

    params = {"reset": "1"} if reset else {}
    async with aiohttp.ClientSession() as http, http.get(f"{url}/bench-stats", params=params) as r:
        return dict(await r.json())


async def run(publishers: int, subscribers: int, seconds: float, warmup: float) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    me = [sys.executable, "-m", "evaluation.sfu_bench"]
    sfu: subprocess.Popen[Any] = subprocess.Popen([*me, "--serve", str(port)], env=env)
    children: list[subprocess.Popen[str]] = []
    clients: list[SfuClient] = []
    sources: list[PacedPacketTrack] = []
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        packets = encode_opus(_voice_like(20, 0), OPUS_RATE)
        for index in range(publishers):
            # Publish-only: publishers subscribing to each other would add N*(N-1) streams.
            grants = Grants(
                room=ROOM, identity=f"pub{index}", name=f"pub{index}", can_subscribe=False
            )
            client = await SfuClient.connect(url, mint_token(SECRET, grants))
            clients.append(client)
            source = PacedPacketTrack("audio", packets, OPUS_RATE, loop=True)
            sources.append(source)
            await client.publish(audio=source)
        for first in range(0, subscribers, SUBSCRIBERS_PER_PROCESS):
            count = min(SUBSCRIBERS_PER_PROCESS, subscribers - first)
            children.append(
                subprocess.Popen(
                    [
                        *me,
                        "--subscribe",
                        url,
                        "--first",
                        str(first),
                        "--count",
                        str(count),
                        "--publishers",
                        str(publishers),
                        "--seconds",
                        str(seconds),
                    ],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        loop = asyncio.get_running_loop()
        for child in children:
            assert child.stdout is not None
            line = await loop.run_in_executor(None, child.stdout.readline)
            if line.strip() != "ready":
                raise RuntimeError(f"subscriber process failed: {line!r}")
        await asyncio.sleep(warmup)
        before = await _get_stats(url, reset=True)
        start_wall, start_cpu = time.monotonic(), _cpu_seconds(sfu.pid)
        start_wait = _runqueue_wait_seconds(sfu.pid)
        sent_before = sum(s.frames_sent for s in sources)
        for child in children:
            assert child.stdin is not None
            child.stdin.write("start\n")
            child.stdin.flush()
        results = []
        for child in children:
            assert child.stdout is not None
            results.append(json.loads(await loop.run_in_executor(None, child.stdout.readline)))
        wall = time.monotonic() - start_wall
        sent_rate = (sum(s.frames_sent for s in sources) - sent_before) / (publishers * wall * 50)
        cpu_share = (_cpu_seconds(sfu.pid) - start_cpu) / wall
        wait_share = (_runqueue_wait_seconds(sfu.pid) - start_wait) / wall
        after = await _get_stats(url, reset=False)
        delays = sorted(after["delays"])
        received = (after["frames_in"] - before["frames_in"]) / (publishers * wall * 50)
        forwarded = after["delivered"] - before["delivered"]
        us_per_packet = 1e6 * cpu_share * wall / max(forwarded, 1)
        streams = sum(r["streams"] for r in results)

        def loss(half: int) -> float:
            return 100 * sum(r["loss"][half] * r["streams"] for r in results) / max(streams, 1)

        return {
            "publishers": publishers,
            "subscribers": subscribers,
            "forwarded_streams": streams,
            "sfu_cpu_percent_of_core": 100 * cpu_share,
            "sfu_waiting_for_a_cpu_percent": 100 * wait_share,
            "sfu_cpu_ms_per_stream_second": 1000 * cpu_share / max(streams, 1),
            "streams_per_core": streams / cpu_share if cpu_share else float("inf"),
            "sfu_cpu_us_per_forwarded_packet": us_per_packet,
            "streams_per_core_at_that_cost": 1e6 / (us_per_packet * 50),
            "publishers_behind_schedule_percent": max(0.0, 100 * (1 - sent_rate)),
            "loss_publisher_to_sfu_percent": max(0.0, 100 * (1 - received)),
            "sfu_queue_drops": after["dropped"] - before["dropped"],
            "loss_first_half_percent": loss(0),
            "loss_second_half_percent": loss(1),
            "added_latency_median_ms": 1000 * statistics.median(delays) if delays else float("nan"),
            "added_latency_p95_ms": 1000 * delays[int(0.95 * (len(delays) - 1))]
            if delays
            else float("nan"),
        }
    finally:
        for client in clients:
            await client.close()
        processes: list[subprocess.Popen[Any]] = [*children, sfu]
        for process in processes:
            process.terminate()
            process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--subscribe", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
    elif args.subscribe:
        asyncio.run(
            subscribe(args.subscribe, args.first, args.count, args.publishers, args.seconds)
        )
    else:
        result = asyncio.run(run(args.publishers, args.subscribers, args.seconds, args.warmup))
        for key, value in result.items():
            print(f"{key:>30}: {value:.2f}" if isinstance(value, float) else f"{key:>30}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
