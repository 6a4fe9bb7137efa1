"""Captions of a real two-speaker meeting: aiortc bots speak, Whisper transcribes each.

Two bots publish synthesized speech (two different voices) over WebRTC through the SFU;
the embedded sidecar decodes their Opus tracks and captions each with the real default
engine. The /captions socket must carry each speaker's words under that speaker, with
loose WER bounds (never exact model output).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jiwer
import numpy as np
import pytest

from captions.audio import load_audio
from captions.engines import EngineOptions, create_engine
from captions.runtime import EngineRunner
from evaluation.normalize import normalize
from meeting.app import Meeting
from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track
from sfu.settings import Settings
from sfu.tokens import Grants, mint_token
from tests.speech import synthesize

pytestmark = pytest.mark.slow

SECRET = "w" * 40
ALICE = "The quick brown fox jumps over the lazy dog near the river bank."
BOB = "Tomorrow the weather will be sunny with a light breeze in the afternoon."


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>"))


def speech(text: str, voice: str) -> np.ndarray:
    pcm = load_audio(synthesize(text, voice=voice), sample_rate=48_000)
    silence = np.zeros(48_000, np.float32)  # lets the VAD hear the end of speech
    return np.concatenate([silence, pcm, silence, silence])


async def test_two_speakers_are_captioned_and_attributed(tmp_path: Path) -> None:
    engine = create_engine("whisper", EngineOptions())
    settings = Settings(port=0, data_dir=tmp_path, secret_override=SECRET)
    meeting = Meeting(settings, EngineRunner(engine))
    await meeting.start()
    tracks = {
        "alice": pcm_audio_track(speech(ALICE, "piper"), 48_000),
        "bob": pcm_audio_track(speech(BOB, "espeak:en-us+f3"), 48_000),
    }
    finals: dict[str, list[str]] = {"alice": [], "bob": []}
    names: dict[str, set[str]] = {"alice": set(), "bob": set()}
    try:
        async with aiohttp.ClientSession() as http:
            listener = mint_token(SECRET, Grants.for_role("lobby", "Carol", "guest"))
            ws = await http.ws_connect(f"{meeting.base_url}/captions?token={listener}")
            bots = []
            for identity, track in tracks.items():
                grants = Grants.for_role(
                    "lobby", identity.title(), "participant", identity=identity
                )
                bot = await SfuClient.connect(meeting.base_url, mint_token(SECRET, grants))
                await bot.publish(audio=track)
                bots.append(bot)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                wer(ref, " ".join(finals[who])) <= 0.3
                for who, ref in (("alice", ALICE), ("bob", BOB))
            ):
                try:
                    msg = await asyncio.wait_for(ws.receive(), 1.0)
                except TimeoutError:
                    continue
                data: dict[str, Any] = json.loads(msg.data)
                if data["type"] == "caption" and data["kind"] == "final":
                    assert data["speaker"] in finals, data
                    finals[data["speaker"]].append(data["text"])
                    names[data["speaker"]].add(data["speaker_name"])
            for bot in bots:
                await bot.close()
            await ws.close()
    finally:
        await meeting.stop()
    alice, bob = " ".join(finals["alice"]), " ".join(finals["bob"])
    assert wer(ALICE, alice) <= 0.3, alice
    assert wer(BOB, bob) <= 0.3, bob
    # Attribution: each speaker's captions match their own words, not the other's.
    assert wer(BOB, alice) > 0.7 and wer(ALICE, bob) > 0.7
    assert names == {"alice": {"Alice"}, "bob": {"Bob"}}
