"""Soak benchmark: a long meeting with every moving part, watching for leaks and loss.

Processes: ``captions serve --no-sidecar`` (SFU, captions API, store), one
``captions sidecar`` per room (the default Whisper engine), and this process: bot
speakers publishing real speech (LibriSpeech test-other from ``../shared/eval``, each
bot a different reader, utterances separated by pauses; a bot whose client closes, for
instance because its media link died, joins again as the page and the sidecar do), a
witness viewer per room that stays all along, and viewers that join and leave. Midway,
one room's sidecar is killed (SIGKILL) and restarted.

Every ``--sample-seconds`` it records the RSS and open file descriptors of every
process; it records the arrival of every final at the witness viewers; at the end it
reads the transcript store. Reported:

- per process: RSS and fds over time, and their growth from minute 2 to the last minute
  (target < 5 %; a restarted sidecar is compared from its own minute 2);
- caption latency per minute: a final's arrival at the witness viewer minus the wall
  time its last word was spoken (stream start + word end, from the store);
- finals seen live vs stored: the server acknowledges a final only once stored, so a
  final seen but not stored would be a lost one (finals the killed sidecar had not yet
  published are not seen either, and are lost by design: they were never acknowledged).

Run: ``.venv/bin/python -m evaluation.soak --minutes 11 --bots 6 --out soak.json``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from evaluation.machine import machine_state

ROOT = Path(__file__).resolve().parent.parent
SHARED_EVAL = ROOT.parent / "shared" / "eval"
SECRET = "soak-benchmark-secret-" + "s" * 32
ROOMS = ("soak-a", "soak-b")


def _speech(bot: int, seconds: float, pause: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    """About ``seconds`` of one reader's utterances at 48 kHz, each followed by a pause."""
    from captions.audio import load_audio

    manifest = SHARED_EVAL / "en_librispeech_test_other" / "manifest.jsonl"
    items = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    readers = sorted({item["speaker"] for item in items})
    mine = [i for i in items if i["speaker"] == readers[bot % len(readers)]]
    parts: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    total = 0.0
    for item in mine:
        pcm = load_audio(manifest.parent / item["audio"], sample_rate=48_000)
        parts += [pcm, np.zeros(int(pause * 48_000), dtype=np.float32)]
        total += len(pcm) / 48_000 + pause
        if total >= seconds:
            break
    return np.concatenate(parts).astype(np.float32)


def _proc(pid: int) -> dict[str, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": fds}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir = Path(tempfile.mkdtemp(prefix="soak-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, CAPTIONS_SECRET=SECRET, PYTHONPATH=str(ROOT))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.samples: list[dict[str, Any]] = []
        self.arrivals: dict[tuple[str, str, int], float] = {}  # (room, speaker, utterance)
        # Finals without words (an utterance withheld as another language) are shown as a
        # notice and have nothing to store: counted apart, not as losses.
        self.wordless_finals: set[tuple[str, str, int]] = set()
        self.viewer_sessions = 0
        self.bot_closes = 0  # bot clients that closed (and rejoined) during the run
        self.events: list[dict[str, Any]] = []
        self.t0 = self.wall_t0 = 0.0

    def _cli(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "cli.main", *argv]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 (kept with the process)
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, cwd=ROOT)
        self.started_at[name] = time.monotonic()

    def _start_sidecar(self, room: str) -> None:
        from sfu.tokens import Grants, mint_token

        token = mint_token(SECRET, Grants.captioner_for(room))
        self._spawn(f"sidecar-{room}", self._cli("sidecar", "--sfu", self.url, "--token", token))

    async def _wait_http(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.url + "/healthz") as response:
                        if response.status < 500:
                            return
                await asyncio.sleep(0.5)
        raise RuntimeError("the server did not start")

    async def run(self) -> dict[str, Any]:
        serve = ["serve", "--no-sidecar", "--port", str(self.port), "--data-dir"]
        self._spawn("server", self._cli(*serve, str(self.data_dir)))
        await self._wait_http()
        for room in ROOMS:
            self._start_sidecar(room)
        bots = []
        speech = [_speech(i, 90.0, self.args.pause) for i in range(self.args.bots)]
        for i in range(self.args.bots):
            # A random phase, so that bots do not all speak at the same moments.
            pcm = np.roll(speech[i], random.Random(i).randrange(len(speech[i])))
            speaking = asyncio.Event()
            bots.append(asyncio.create_task(self._bot(i, pcm, speaking)))
            await asyncio.wait_for(speaking.wait(), 60.0)  # one after the other, as before
        self.t0, self.wall_t0 = time.monotonic(), time.time()
        self.events.append({"t": 0.0, "what": f"{len(bots)} bots speaking in {len(ROOMS)} rooms"})
        tasks = [asyncio.create_task(self._witness(room)) for room in ROOMS]
        tasks += [asyncio.create_task(self._churn()), asyncio.create_task(self._sampler())]
        duration = self.args.minutes * 60.0
        kill_at = duration * 0.45
        await asyncio.sleep(kill_at)
        victim = f"sidecar-{ROOMS[0]}"
        self.procs[victim].send_signal(signal.SIGKILL)
        self.procs[victim].wait()
        self.events.append({"t": round(time.monotonic() - self.t0, 1), "what": f"{victim} killed"})
        await asyncio.sleep(5.0)
        self._start_sidecar(ROOMS[0])
        self.events.append({"t": round(time.monotonic() - self.t0, 1), "what": "restarted"})
        await asyncio.sleep(duration - kill_at - 5.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bot in bots:  # each leaves the room (its client's close is bounded)
            bot.cancel()
        await asyncio.gather(*bots, return_exceptions=True)
        await asyncio.sleep(10.0)  # the last finals reach the store
        for name, proc in self.procs.items():
            if name.startswith("sidecar"):
                proc.terminate()
        await asyncio.sleep(5.0)
        self.procs["server"].terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        return self.report()

    async def _bot(self, index: int, pcm: np.ndarray[Any, Any], speaking: asyncio.Event) -> None:
        """One bot speaker. Like the product's clients (the page, the sidecar), it joins
        again whenever its client closes (its media link died, the server restarted),
        with capped backoff, and keeps its link (so its identity) across rejoins."""
        from common.aio import Backoff
        from common.exceptions import CaptionsError
        from sfu.client import SfuClient
        from sfu.contrib.media import pcm_audio_track
        from sfu.tokens import Grants, mint_token

        room = ROOMS[index % len(ROOMS)]
        token = mint_token(SECRET, Grants.for_role(room, f"Bot {index}", "participant"))
        backoff = Backoff(base=1.0, cap=10.0)
        async for _ in backoff.attempts():
            client: SfuClient | None = None
            try:
                client = await SfuClient.connect(self.url, token)
                await client.publish(audio=pcm_audio_track(pcm, 48_000, loop=True))
                backoff.reset()
                if speaking.is_set():
                    self._note(f"bot {index} rejoined")
                speaking.set()
                async for event in client.events():
                    if event.type == "closed":
                        self.bot_closes += 1
                        self._note(f"bot {index} closed: {event.data}")
            except (CaptionsError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._note(f"bot {index} could not join: {exc!r}"[:200])
            finally:
                if client is not None:
                    await client.close()

    def _note(self, what: str) -> None:
        self.events.append({"t": round(time.monotonic() - self.t0, 1), "what": what})

    async def _witness(self, room: str) -> None:
        await self._view(room, None)

    async def _churn(self) -> None:
        rng = random.Random(7)
        viewers: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(rng.uniform(5.0, 15.0))
                task = asyncio.create_task(self._view(rng.choice(ROOMS), rng.uniform(10.0, 60.0)))
                viewers.add(task)
                task.add_done_callback(viewers.discard)
        finally:
            for task in viewers:
                task.cancel()

    async def _view(self, room: str, seconds: float | None) -> None:
        """A /captions viewer; the witness (seconds None) records every final's arrival."""
        from sfu.tokens import Grants, mint_token

        token = mint_token(SECRET, Grants.for_role(room, "Viewer", "guest"))
        ws_url = self.url.replace("http", "ws") + f"/captions?token={token}"
        self.viewer_sessions += seconds is not None
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with (
                        http.ws_connect(ws_url, heartbeat=30) as ws,
                        asyncio.timeout(seconds),  # leaves on time, even in a silent room
                    ):
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                continue
                            data = json.loads(msg.data)
                            if seconds is None and data.get("kind") == "final":
                                key = (room, data["speaker"], int(data["utterance"]))
                                if data.get("words"):
                                    self.arrivals.setdefault(key, time.time())
                                else:
                                    self.wordless_finals.add(key)
                except TimeoutError:
                    return
                except aiohttp.ClientError:
                    pass
                if seconds is not None:
                    return
                await asyncio.sleep(1.0)  # the witness reconnects

    async def _sampler(self) -> None:
        while True:
            sample: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 1)}
            for name, proc in [*self.procs.items(), ("bench", None)]:
                pid = os.getpid() if proc is None else proc.pid
                if proc is not None and proc.poll() is not None:
                    continue
                info = _proc(pid)
                if info is not None:
                    sample[name] = info
            sample["load1"] = round(os.getloadavg()[0], 2)
            self.samples.append(sample)
            await asyncio.sleep(self.args.sample_seconds)

    def report(self) -> dict[str, Any]:
        db = sqlite3.connect(f"file:{self.data_dir / 'transcripts.sqlite'}?mode=ro", uri=True)
        rows = db.execute(
            "SELECT room, speaker_id, utterance, words, stream_started_at FROM captions"
        ).fetchall()
        stored = {(r, s, u): started + json.loads(w)[-1][2] for r, s, u, w, started in rows}
        per_minute: dict[int, list[float]] = defaultdict(list)
        for key, arrived in self.arrivals.items():
            spoken_end = stored.get(key)
            if spoken_end is None:
                continue
            minute = int((arrived - self.wall_t0) // 60)
            per_minute[minute].append(arrived - spoken_end)
        latency = {
            str(m): {
                "finals": len(v),
                "median_s": round(float(np.median(v)), 2),
                "p90_s": round(float(np.percentile(v, 90)), 2),
            }
            for m, v in sorted(per_minute.items())
        }
        seen_not_stored = sorted(set(self.arrivals) - set(stored))
        return {
            "machine_at_end": machine_state(),
            "minutes": self.args.minutes,
            "bots": self.args.bots,
            "rooms": len(ROOMS),
            "viewer_sessions_joined_and_left": self.viewer_sessions,
            "bot_closes_then_rejoins": self.bot_closes,
            "events": self.events,
            "growth_min2_to_last": self._growth(),
            "latency_per_minute": latency,
            "finals_seen_live": len(self.arrivals),
            "wordless_finals_seen": len(self.wordless_finals),
            "finals_stored": len(stored),
            "finals_seen_but_not_stored": [list(k) for k in seen_not_stored],
            "load1_mean": round(float(np.mean([s["load1"] for s in self.samples])), 2),
            "samples": self.samples,
            "data_dir": str(self.data_dir),
        }

    def _growth(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        names = {k for s in self.samples for k in s if k not in ("t", "load1")}
        for name in sorted(names):
            series = [(s["t"], s[name]) for s in self.samples if name in s]
            restart = 0.0
            if name == f"sidecar-{ROOMS[0]}":  # compare the restarted one from its own start
                killed = [e["t"] for e in self.events if e["what"].endswith("killed")]
                later = [(t, v) for t, v in series if killed and t > killed[0]]
                series, restart = later, (later[0][0] if later else 0.0)
            early = [v for t, v in series if restart + 60 <= t < restart + 120]
            last_t = series[-1][0] if series else 0.0
            late = [v for t, v in series if t >= last_t - 60]
            if not early or not late:
                continue
            entry: dict[str, Any] = {}
            for field in ("rss_mb", "fds"):
                a = float(np.mean([v[field] for v in early]))
                b = float(np.mean([v[field] for v in late]))
                entry[field] = {"minute2": round(a, 1), "last": round(b, 1)}
                entry[field]["growth_percent"] = round(100.0 * (b - a) / a, 1) if a else None
            out[name] = entry
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=11.0)
    parser.add_argument("--bots", type=int, default=6)
    parser.add_argument("--pause", type=float, default=6.0, help="seconds between utterances")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="write the full report (JSON) here")
    args = parser.parse_args(argv)
    if not (SHARED_EVAL / "en_librispeech_test_other").is_dir():
        print(f"needs the speech sets at {SHARED_EVAL}", file=sys.stderr)
        return 2
    report = asyncio.run(Soak(args).run())
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
