"""French speech on the English-only tiny.en: withheld and flagged, never English nonsense."""

from __future__ import annotations

from pathlib import Path

import pytest

from captions.engines import EngineOptions
from captions.engines.whisper import load
from captions.events import Speaker
from captions.simulate import simulate
from evaluation.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_french_on_tiny_en_is_flagged_instead_of_captioned(shared_eval: Path) -> None:
    engine = load(EngineOptions())
    try:
        for set_name, count in (("fr_fleurs_cuttledoc", 3), ("fr_short_misc", 2)):
            for item in read_manifest(shared_eval / set_name / "manifest.jsonl")[:count]:
                record = simulate(
                    engine, item.load_audio(16_000), speaker=Speaker(item.id), tail_seconds=1.0
                )
                finals = [e for e in record.events if e.kind == "final"]
                assert finals, item.id
                assert all(e.flags.get("unsupported_language") for e in finals), item.id
                # Words final before the verdict (about 3 s in) stay; the sentences do not.
                assert all(len(e.words) <= 3 for e in finals), [e.text for e in finals]
        english = read_manifest(shared_eval / "en_librispeech_misc" / "manifest.jsonl")[0]
        record = simulate(
            engine, english.load_audio(16_000), speaker=Speaker("bob"), tail_seconds=1.0
        )
        finals = [e for e in record.events if e.kind == "final"]
        assert finals and not any(e.flags.get("unsupported_language") for e in finals)
        assert {e.language for e in finals} == {"en"}
    finally:
        engine.close()
