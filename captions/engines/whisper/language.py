"""Which language a speaker speaks, decided per utterance.

With a multilingual model and no fixed language ("auto"), a speaker's language is taken
from Whisper's language identification on their first two seconds of speech, kept for the
whole utterance, and carried over to their next utterances; a later utterance changes it
only on strong evidence (the detector is sure of another language), so one short or
mumbled utterance cannot flip a French speaker to Portuguese mid-meeting.

An English-only model (tiny.en) cannot tell languages apart, but it shows when it is
guessing: on French speech its decodes average a log-probability per token of -0.8 to
-3, against -0.05 to -0.7 on most English (down to -1.7 on hard test-other speakers;
measured on the shared eval sets, see docs/languages.md). :class:`ForeignSpeech` turns
that into a per-utterance verdict. Hard English sits in the same range as some French, so
where the pinned multilingual model is installed, :class:`LanguageConfirmer` asks its
language identification before an utterance is withheld: only another language is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.exceptions import CaptionsError

log = logging.getLogger(__name__)


@dataclass
class SpeakerLanguage:
    """One speaker's language under "auto", with hysteresis."""

    switch_probability: float = 0.8
    """A different language replaces the speaker's only when detected at least this sure."""
    settle_probability: float = 0.5
    """Below this, the speaker's language is a guess any surer detection replaces."""
    language: str | None = None
    confidence: float = 0.0

    def observe(self, ranked: Sequence[tuple[str, float]]) -> str:
        """The language of a new utterance, given the detector's ranking (language,
        probability), best first, on its first seconds; updates the speaker's language."""
        top, probability = ranked[0]
        if self.language is None or top == self.language:
            same = top == self.language
            self.language = top
            self.confidence = max(self.confidence, probability) if same else probability
        elif probability >= self.switch_probability or (
            self.confidence < self.settle_probability and probability > self.confidence
        ):
            self.language, self.confidence = top, probability
        return self.language


@dataclass
class ForeignSpeech:
    """Whether an English-only model is hearing another language in one utterance.

    Decodes of the first second or two are poor even on English (a few words, often cut),
    so only looks at ``min_seconds`` of audio or more count, and the verdict takes
    ``min_looks`` of them (no word of the utterance is final before: see
    :attr:`settled`); the utterance's last look (the whole utterance, beam search)
    counts from ``min_final_seconds``, so short utterances are judged too.
    """

    max_logprob: float = -1.3
    """Mean log-probability per token below which the decodes are guesses, while the
    utterance goes on (its partials are then withdrawn)."""
    max_final_logprob: float = -1.2
    """The same, with the utterance's last look counted (its words are then withheld)."""
    clear_logprob: float = -0.9
    """Words become final only once the counted looks average above this: speech in the
    grey zone between English and foreign waits for its utterance's end, so that words
    of an utterance judged foreign at its last look were never final."""
    min_seconds: float = 2.0
    min_final_seconds: float = 1.5
    min_looks: int = 2
    scores: list[float] = field(default_factory=list)
    own_language: bool = False
    """A language identifier heard the model's own language: the utterance is not judged
    again (hard speech, not another language)."""
    other_language: bool = False
    """A language identifier confirmed another language: not asked again this utterance."""

    def observe(self, logprob: float, seconds: float, *, final: bool = False) -> bool:
        """Adds one decode's mean log-probability per token, of an utterance ``seconds``
        long so far; True once the utterance sounds like a language the model lacks."""
        if self.own_language:
            return False
        if seconds < (self.min_final_seconds if final else self.min_seconds):
            return False
        self.scores.append(logprob)
        if len(self.scores) < (1 if final else self.min_looks):
            return False
        limit = self.max_final_logprob if final else self.max_logprob
        return sum(self.scores) / len(self.scores) < limit

    @property
    def settled(self) -> bool:
        """Enough looks were counted, and they sound like the model's own language."""
        if self.own_language:
            return True
        if len(self.scores) < self.min_looks:
            return False
        return sum(self.scores) / len(self.scores) >= self.clear_logprob

    def reset(self) -> None:
        self.scores.clear()
        self.own_language = self.other_language = False


class LanguageConfirmer:
    """Language identification by the pinned multilingual Whisper (``--model base``), to
    confirm that speech an English-only model cannot transcribe is another language.

    Loaded once, in the background from the engine's first session (:meth:`preload`); without
    the multilingual model installed it confirms nothing (:meth:`is_other_language`
    returns None) and the log-probability verdict stands alone. Runs only when that
    verdict is "foreign" (rare on English).
    """

    def __init__(
        self, language: str = "en", *, min_probability: float = 0.5, keep_unsure: bool = False
    ) -> None:
        self.language = language
        self.min_probability = min_probability
        self.keep_unsure = keep_unsure
        """Speech whose top language is another one, but below ``min_probability``, counts
        as the model's own (False) rather than as undecided (None)."""
        self._model: Any = None
        self._unavailable = False
        self._lock = threading.Lock()

    def preload(self) -> threading.Thread:
        """Loads the model in the background now, rather than on first use: its ~240 MB
        then come with the first speaker (flat memory afterwards), and the first foreign
        utterance does not stall every speaker's step while it loads. First use waits
        for this load (same lock)."""
        thread = threading.Thread(target=self._load, name="language-confirmer", daemon=True)
        thread.start()
        return thread

    def _load(self) -> Any:
        with self._lock:
            if self._model is None and not self._unavailable:
                try:
                    from faster_whisper import WhisperModel

                    from captions.engines.whisper.models import resolve_model

                    path = resolve_model("base")
                    self._model = WhisperModel(
                        str(path), device="cpu", compute_type="int8", cpu_threads=1
                    )
                except CaptionsError as exc:
                    log.info("no language identification for the foreign-speech check: %s", exc)
                    self._unavailable = True
            return self._model

    def is_other_language(self, audio: npt.NDArray[np.float32]) -> bool | None:
        """True if ``audio`` (16 kHz mono) is surely another language than the model's,
        False if it is the model's own (or unsure, with ``keep_unsure``), None if that
        cannot be told."""
        model = self._load()
        if model is None or audio.size == 0:
            return None
        top, probability, _ = model.detect_language(audio)
        if top == self.language:
            return False
        if probability >= self.min_probability:
            return True
        return False if self.keep_unsure else None
