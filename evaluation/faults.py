"""Fault benchmark: what a viewer sees when a part of the meeting fails, and what is lost.

One room: ``captions serve --no-sidecar`` and a ``captions sidecar`` as processes (for
the remote case, the sidecar uses ``kyutai-remote`` against a ``captions asr-serve``
process), one bot speaking real speech (a LibriSpeech reader, short pauses), one viewer
on ``/captions`` that reconnects like the page. Each scenario runs ``--before`` seconds,
injects its fault right after a partial caption arrived (mid-utterance), recovers after
``--down`` seconds, runs ``--after`` seconds, and reports:

- what the viewer saw: its socket closing and reconnecting, ``room_state`` changes
  (captioner absent/connected, ``saving`` false/true), in order with times;
- how long captions were gone: the longest silence between captions from the fault on
  (and the first caption after it), beside the longest silence before the fault;
- what was lost: finals the viewer saw live that the store does not hold at the end
  (a lost acknowledged final would be among them), and whether the sidecar's log shows
  unacknowledged finals dropped.

Scenarios: ``sidecar`` (SIGKILL, restarted), ``server`` (SIGKILL, restarted on the same
data directory), ``asr`` (the Kyutai ASR server killed and restarted, sidecar on
``kyutai-remote``), ``disk`` (the data directory on a 2 MiB tmpfs, filled up, then freed;
root only), ``loss`` (one UDP packet in ten dropped on loopback for ``--down`` seconds,
with nftables; run in a private network namespace so that no one else's traffic is
touched; root only).

Run: ``.venv/bin/python -m evaluation.faults --out faults.json [--only sidecar,disk]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from evaluation.machine import machine_state
from evaluation.soak import ROOT, SECRET, _free_port, _speech

ROOM = "faults"
SCENARIOS = ("sidecar", "server", "asr", "disk", "loss")


class Scenario:
    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name, self.args = name, args
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
        self.port, self.asr_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, CAPTIONS_SECRET=SECRET, PYTHONPATH=str(ROOT))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.seen: list[tuple[float, str]] = []  # (time since start, what the viewer saw)
        self.captions: list[float] = []  # arrival times of caption messages
        self.finals: set[tuple[str, int]] = set()
        self.partial_at = 0.0
        self.t0 = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def _spawn(self, name: str, *argv: str) -> None:
        log = open(self.data_dir.parent / f"{self.data_dir.name}-{name}.log", "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "cli.main", *argv]
        self.procs[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=log, cwd=ROOT)

    def _kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def start_server(self) -> None:
        self._spawn(
            "server",
            "serve",
            "--no-sidecar",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        )

    def start_asr(self) -> None:
        self._spawn("asr", "asr-serve", "--port", str(self.asr_port), "--api-key", "fault-key")

    def start_sidecar(self) -> None:
        from sfu.tokens import Grants, mint_token

        token = mint_token(SECRET, Grants.captioner_for(ROOM))
        extra: list[str] = []
        if self.name == "asr":
            url = f"ws://127.0.0.1:{self.asr_port}/api/asr-streaming"
            extra = [
                "--engine",
                "kyutai-remote",
                "--kyutai-url",
                url,
                "--kyutai-api-key",
                "fault-key",
            ]
        self._spawn("sidecar", "sidecar", "--sfu", self.url, "--token", token, *extra)

    async def wait_http(self, url: str) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as response:
                        if response.status < 500:
                            return
                await asyncio.sleep(0.5)
        raise RuntimeError(f"{url} did not come up")

    async def viewer(self) -> None:
        from sfu.tokens import Grants, mint_token

        token = mint_token(SECRET, Grants.for_role(ROOM, "Host", "host"))
        ws_url = self.url.replace("http", "ws") + f"/captions?token={token}"
        state: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.ws_connect(ws_url, heartbeat=5) as ws:
                        self.seen.append((self.now(), "viewer socket open"))
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                continue
                            data = json.loads(msg.data)
                            if data.get("type") == "caption":
                                self.captions.append(self.now())
                                if data.get("kind") == "partial":
                                    self.partial_at = time.monotonic()
                                else:
                                    self.finals.add((data["speaker"], int(data["utterance"])))
                            elif data.get("type") == "room_state":
                                for key in ("captioner", "saving"):
                                    if state.get(key) != data.get(key):
                                        state[key] = data.get(key)
                                        self.seen.append((self.now(), f"{key}: {data.get(key)}"))
                    self.seen.append((self.now(), f"viewer socket closed ({ws.close_code})"))
                except aiohttp.ClientError as exc:
                    if not self.seen or not self.seen[-1][1].startswith("viewer cannot"):
                        self.seen.append(
                            (self.now(), f"viewer cannot connect ({type(exc).__name__})")
                        )
                await asyncio.sleep(1.0)

    async def mid_utterance(self) -> None:
        """Waits until a partial caption has just arrived (someone is mid-sentence)."""
        async with asyncio.timeout(60):
            while time.monotonic() - self.partial_at > 0.3:
                await asyncio.sleep(0.05)

    async def run(self) -> dict[str, Any]:
        from sfu.client import SfuClient
        from sfu.contrib.media import pcm_audio_track
        from sfu.tokens import Grants, mint_token

        if self.name == "disk":
            self._mount_small_tmpfs()
        if self.name == "asr":
            self.start_asr()
            await self.wait_http(f"http://127.0.0.1:{self.asr_port}/healthz")
        self.start_server()
        await self.wait_http(self.url + "/healthz")
        self.start_sidecar()
        bot = await SfuClient.connect(
            self.url, mint_token(SECRET, Grants.for_role(ROOM, "Speaker", "participant"))
        )
        pcm = _speech(1, 120.0, pause=1.5)
        pcm = np.roll(pcm, random.Random(3).randrange(len(pcm)))
        await bot.publish(audio=pcm_audio_track(pcm, 48_000, loop=True))
        viewer = asyncio.create_task(self.viewer())
        await asyncio.sleep(self.args.before)
        await self.mid_utterance()
        fault_at = self.now()
        self.seen.append((fault_at, f"FAULT: {self.name}"))
        await self.inject()
        await asyncio.sleep(self.args.down)
        recover_at = self.now()
        self.seen.append((recover_at, "RECOVERY"))
        await self.recover()
        await asyncio.sleep(self.args.after)
        await bot.close()
        await asyncio.sleep(8.0)  # the last finals reach the store
        viewer.cancel()
        await asyncio.gather(viewer, return_exceptions=True)
        stored = self._stored()
        for name in ("sidecar", "server", "asr"):
            if name in self.procs:
                self.procs[name].terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        if self.name == "disk":
            subprocess.run(["umount", str(self.data_dir)], check=False)
        after = [fault_at, *(t for t in self.captions if t > fault_at)]
        gaps_after = [b - a for a, b in itertools.pairwise(after)]
        before = [b - a for a, b in itertools.pairwise(self.captions) if b < fault_at]
        sidecar_log = (self.data_dir.parent / f"{self.data_dir.name}-sidecar.log").read_text(
            errors="replace"
        )
        return {
            "scenario": self.name,
            "fault_at_s": fault_at,
            "recovered_at_s": recover_at,
            "first_caption_after_fault_s": round(after[1] - fault_at, 2) if gaps_after else None,
            "longest_silence_after_fault_s": round(max(gaps_after), 2) if gaps_after else None,
            "longest_normal_silence_s": round(max(before), 2) if before else None,
            "viewer_saw": [f"{t:7.2f} s  {what}" for t, what in self.seen],
            "finals_seen_live": len(self.finals),
            "finals_stored": len(stored),
            "finals_seen_but_not_stored": sorted(self.finals - stored),
            "sidecar_reported_unacknowledged": "not acknowledged" in sidecar_log,
            "machine": machine_state(),
        }

    def _stored(self) -> set[tuple[str, int]]:
        path = self.data_dir / "transcripts.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return {
                (s, int(u)) for s, u in db.execute("SELECT speaker_id, utterance FROM captions")
            }

    def _mount_small_tmpfs(self) -> None:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(self.data_dir)], check=True
        )

    async def inject(self) -> None:
        if self.name in ("sidecar", "server", "asr"):
            self._kill(self.name)
        elif self.name == "disk":
            filler = self.data_dir / "filler"
            with open(filler, "wb") as out, contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
        elif self.name == "loss":
            # One UDP packet in ten dropped on (this namespace's) loopback: the media.
            rule = "add rule inet loss input meta l4proto udp numgen random mod 10 0 drop"
            for command in (
                "add table inet loss",
                "add chain inet loss input { type filter hook input priority 0 ; }",
                rule,
            ):
                subprocess.run(["nft", *command.split()], check=True)

    async def recover(self) -> None:
        if self.name == "sidecar":
            self.start_sidecar()
        elif self.name == "server":
            self.start_server()
        elif self.name == "asr":
            self.start_asr()
        elif self.name == "disk":
            (self.data_dir / "filler").unlink()
        elif self.name == "loss":
            subprocess.run(["nft", "delete", "table", "inet", "loss"], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--before", type=float, default=25.0)
    parser.add_argument("--down", type=float, default=8.0)
    parser.add_argument("--after", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results = []
    for name in args.only.split(","):
        if name == "loss" and not args.in_namespace:
            # Loss on loopback would hit every process of the machine: a private namespace.
            script = f"ip link set lo up && exec {sys.executable} -m evaluation.faults"
            done = subprocess.run(
                [
                    "unshare",
                    "-n",
                    "sh",
                    "-c",
                    f"{script} --only loss --in-namespace"
                    f" --before {args.before} --down {args.down} --after {args.after}",
                ],
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                capture_output=True,
                text=True,
            )
            try:
                results += json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                results.append({"scenario": "loss", "error": done.stderr[-2000:]})
            continue
        print(f"scenario {name}...", file=sys.stderr, flush=True)
        results.append(asyncio.run(Scenario(name, args).run()))
    text = json.dumps(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
