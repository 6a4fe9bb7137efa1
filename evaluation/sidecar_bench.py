"""Sidecar benchmark: CPU per captioned speaker, excluding the speech engine.

Two processes, so the sidecar's CPU time is measured alone (``/proc/<pid>/stat``):

- this one: the meeting server (SFU + captions API, no embedded sidecar) and N bots,
  each publishing real-time Opus (20 ms frames, 32 kbit/s) of a voice-like signal;
- the sidecar (:class:`meeting.sidecar.Sidecar`, the code ``captions sidecar`` runs),
  with a null engine that accepts audio and recognises nothing, so what is measured is
  the sidecar itself: WebRTC receive (SRTP), Opus decoding, resampling, silence and mute
  checks, and the engine inboxes.

Reported: the sidecar's CPU (percent of one core) idle in the room, then with N speakers,
and the difference per speaker.

Run: ``.venv/bin/python -m evaluation.sidecar_bench --speakers 4 --seconds 20``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captions.engine import AudioInbox, Engine, EngineInfo, Session
from captions.track import CaptionTrack

ROOM = "bench"
SECRET = "sidecar-bench-" + "x" * 32


class NullEngine(Engine):
    """Takes every sample and recognises nothing: the engine's cost, taken out."""

    def __init__(self) -> None:
        self.info = EngineInfo("null", 16_000, 1_600, 0.0)

    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> Session:
        return Session(track=track, inbox=inbox, language=language)

    def step(self, sessions: Sequence[Session]) -> None:
        for session in sessions:
            session.inbox.take()
            if session.end_requested:
                session.finished = True
            session.flush_requested = False


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run_sidecar(url: str, token: str) -> None:
    from captions.runtime import EngineRunner
    from meeting.sidecar import Sidecar

    async with EngineRunner(NullEngine()) as runner:
        await Sidecar(url, token, runner).run()


async def _measure(pid: int, seconds: float) -> float:
    start_cpu, start = _cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100.0 * (_cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


async def run(speakers: int, seconds: float, warmup: float) -> dict[str, Any]:
    from captions.runtime import EngineRunner
    from evaluation.sfu_bench import _voice_like
    from meeting.app import Meeting
    from sfu.client import SfuClient
    from sfu.contrib.media import pcm_audio_track
    from sfu.settings import Settings
    from sfu.tokens import Grants, mint_token

    data_dir = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    settings = Settings(port=0, data_dir=data_dir, secret_override=SECRET)
    meeting = Meeting(settings, EngineRunner(NullEngine()), embedded_sidecar=False)
    await meeting.start()
    token = mint_token(SECRET, Grants.captioner_for(ROOM))
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "evaluation.sidecar_bench", "--sidecar", meeting.base_url, token]
    )
    bots: list[SfuClient] = []
    try:
        while not meeting.hub.state(ROOM).captioner:
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        idle = await _measure(sidecar.pid, seconds / 2)
        for index in range(speakers):
            grants = Grants.for_role(ROOM, f"Speaker {index}", "participant")
            bot = await SfuClient.connect(meeting.base_url, mint_token(SECRET, grants))
            await bot.publish(audio=pcm_audio_track(_voice_like(10.0, index), 48_000, loop=True))
            bots.append(bot)
        await asyncio.sleep(warmup)
        busy = await _measure(sidecar.pid, seconds)
    finally:
        for bot in bots:
            await bot.close()
        sidecar.terminate()
        sidecar.wait(10)
        await meeting.stop()
    return {
        "speakers": speakers,
        "sidecar_cpu_idle_percent": round(idle, 1),
        "sidecar_cpu_percent": round(busy, 1),
        "cpu_percent_per_speaker": round((busy - idle) / max(1, speakers), 2),
        "load_average": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--sidecar", nargs=2, metavar=("URL", "TOKEN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sidecar:
        asyncio.run(_run_sidecar(*args.sidecar))
        return 0
    print(json.dumps(asyncio.run(run(args.speakers, args.seconds, args.warmup)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
