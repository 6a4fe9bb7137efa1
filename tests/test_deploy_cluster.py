"""`make cluster` (deploy/cluster.py) as an operator runs it: everything comes up, a bot's
speech is captioned through the entry point (node -> kyutai-remote -> a pool of two
asr-serve); killing the ASR server that holds the stream mid-utterance moves it to the
other and captions continue (the gap is reported); Ctrl-C stops every process and
removes the temporary data."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from captions.audio import load_audio
from evaluation.cluster import SpeakerBot, Viewer
from tests.conftest import require_services
from tests.speech import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
ROOT = Path(__file__).resolve().parent.parent


def test_make_cluster_serves_and_stops_on_ctrl_c() -> None:
    require_services("postgresql", "redis-server", "haproxy")
    process = subprocess.Popen(
        [sys.executable, "deploy/cluster.py", "--room", "demo"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = ""
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops everything" not in output:
            assert time.monotonic() < deadline and process.poll() is None, output
            output += process.stdout.readline()
        entry = re.search(r"entry point \(HAProxy\): (\S+)", output)
        host = re.search(r"host link: +\S+#token=(\S+)", output)
        guest = re.search(r"guest link: +\S+#token=(\S+)", output)
        data = re.search(r"data and logs: (\S+)", output)
        assert entry and host and guest and data, output
        pcm = load_audio(
            synthesize("Please remember to send the quarterly report today."), sample_rate=48_000
        )
        pcm = np.concatenate([np.zeros(24_000, np.float32), pcm, np.zeros(48_000, np.float32)])

        servers = re.findall(r"asr-serve: ws://127.0.0.1:(\d+)/\S+ \(pid (\d+)", output)
        assert len(servers) == 2, output

        async def streams(port: str) -> int:
            url = f"http://127.0.0.1:{port}/readyz"
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                return int((await resp.json())["checks"]["slots"]["streams"])

        async def caption_then_lose_an_asr_server() -> float:
            viewer = Viewer(entry.group(1), "demo", guest.group(1))
            bot = SpeakerBot(entry.group(1), "demo", host.group(1), pcm)
            viewer.start()
            bot.start()
            try:
                until = time.monotonic() + 180
                while not viewer.finals:
                    assert time.monotonic() < until, "no caption through the cluster"
                    await asyncio.sleep(0.2)
                assert str(viewer.finals[0][1]["text"]).strip()
                # Kill the asr-serve holding the speaker's stream, mid-utterance.
                busy = [(port, pid) for port, pid in servers if await streams(port) > 0]
                assert len(busy) == 1, busy
                os.kill(int(busy[0][1]), signal.SIGKILL)
                killed_at = time.time()
                until = time.monotonic() + 120
                while not any(t > killed_at for t, _ in viewer.finals):
                    assert time.monotonic() < until, "captions did not continue"
                    await asyncio.sleep(0.2)
                (other,) = [port for port, _ in servers if port != busy[0][0]]
                assert await streams(other) >= 1  # the stream moved to the other server
                return min(t for t, _ in viewer.finals if t > killed_at) - killed_at
            finally:
                await bot.stop()
                await viewer.stop()

        gap = asyncio.run(caption_then_lose_an_asr_server())
        print(f"asr-serve killed: next caption after {gap:.1f} s")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
        assert not Path(data.group(1)).exists()
        leftovers = subprocess.run(
            ["pgrep", "-f", data.group(1)], capture_output=True, text=True
        ).stdout
        assert not leftovers.strip(), leftovers  # no node or service survives
        for port, _ in servers:  # nor any asr-serve
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", int(port))) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
