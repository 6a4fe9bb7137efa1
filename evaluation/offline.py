"""Offline recognition of whole items: the offline-WER baseline and word timings.

An engine that can also transcribe a whole item at once exposes the optional hook
``transcribe_offline(pcm: PCM, language: str | None) -> str`` (native-rate mono PCM);
:func:`offline_transcriber` uses it. For an engine without it, the ``whisper`` engine's
model is run here through ``faster-whisper`` (greedy, the same weights). Other engines
get no offline WER (reported as ``null``).

:class:`WhisperWordTimer` gives word end times for items whose manifest has no
``words``: faster-whisper word timestamps (cross-attention alignment) of the same audio.
Models resolve as the engine's ``--model`` does
(:func:`captions.engines.whisper.models.resolve_model`); weights always come from disk,
nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from captions.audio import PCM
from captions.engine import Engine
from captions.engines import EngineOptions
from captions.engines.whisper.models import resolve_model
from evaluation.manifest import TimedWord

OfflineTranscriber = Callable[[PCM, str | None], str]

WHISPER_RATE = 16_000


class FasterWhisper:
    """A faster-whisper model on CPU, loaded on first use."""

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu") -> None:
        self.model_path = resolve_model(model)
        self.device = "cpu" if device == "auto" else device

    @cached_property
    def _model(self) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(str(self.model_path), device=self.device, compute_type="int8")

    def _segments(self, pcm: PCM, language: str | None, *, word_timestamps: bool) -> Any:
        """Greedy decoding of the whole item, no VAD, no conditioning on earlier text."""
        segments, _ = self._model.transcribe(
            pcm,
            language=language if self._model.model.is_multilingual else None,
            beam_size=1,
            condition_on_previous_text=False,
            vad_filter=False,
            word_timestamps=word_timestamps,
        )
        return segments

    def transcribe(self, pcm: PCM, language: str | None = None) -> str:
        segments = self._segments(pcm, language, word_timestamps=False)
        return " ".join(s.text.strip() for s in segments).strip()

    def word_times(self, pcm: PCM, language: str | None = None) -> list[TimedWord]:
        segments = self._segments(pcm, language, word_timestamps=True)
        return [
            TimedWord(w.word.strip(), float(w.start), float(w.end))
            for s in segments
            for w in (s.words or [])
        ]


def offline_transcriber(
    engine: Engine, engine_name: str, options: EngineOptions
) -> OfflineTranscriber | None:
    """The engine's own offline hook, faster-whisper for ``whisper``, else None."""
    hook = getattr(engine, "transcribe_offline", None)
    if callable(hook):
        return hook
    if engine_name == "whisper":
        return FasterWhisper(options.model, device=options.device).transcribe
    return None
