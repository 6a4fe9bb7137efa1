"""One speaker's Whisper stream: its audio, VAD, agreement state and latest hypothesis."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from captions.audio import PCM
from captions.engine import Session
from captions.engines.local_agreement import LocalAgreement
from captions.engines.whisper.language import ForeignSpeech, SpeakerLanguage
from captions.events import Word
from captions.vad import FRAME_SAMPLES, VadStream


@dataclass(frozen=True)
class Hypothesis:
    """One transcription of a session's buffer: words in stream time, and the language."""

    words: list[Word]
    language: str
    logprob: float = 0.0
    """Mean log-probability per token of the decode (0 without words)."""


@dataclass(eq=False)
class WhisperSession(Session):
    vad: VadStream | None = None
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    """Replaced per session by one configured from the engine's settings."""
    audio: PCM = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    audio_start: int = 0
    """Absolute sample index of ``audio[0]``."""
    active: bool = False
    """An utterance is open (the VAD confirmed speech)."""
    buffer_start: int = 0
    """Absolute sample where the utterance's recognition buffer begins."""
    utterance_start: int = 0
    """Absolute sample where the utterance (its first buffer) began."""
    speech_onset: float = 0.0
    """Stream time (s) where the VAD heard the open utterance's voice begin, less a
    margin: no word of it starts earlier (the pre-roll before it is silence)."""
    transcribed_to: int = 0
    closed_to: int = 0
    """Absolute sample where the latest utterance closed: its audio is transcribed and
    final, so the next utterance's buffer (pre-roll included) starts no earlier."""
    utterance_language: str | None = None
    """Under "auto": the open utterance's language, once detected on enough audio."""
    speaker_language: SpeakerLanguage = field(default_factory=SpeakerLanguage)
    """Under "auto": the speaker's language across utterances."""
    foreign: ForeignSpeech = field(default_factory=ForeignSpeech)
    """English-only model: whether the open utterance sounds like another language."""
    last_hypothesis: tuple[int, int, Hypothesis] | None = None
    """(start, end, hypothesis) of the latest transcription, reused if nothing changed."""

    @property
    def position(self) -> int:
        return self.audio_start + self.audio.size

    def ready(self) -> bool:
        return self.has_control or self.inbox.available >= FRAME_SAMPLES
