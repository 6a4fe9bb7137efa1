"""The Whisper engine's streaming tunables (see docs/whisper-engine.md for their effect)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from common.exceptions import ConfigError


@dataclass(frozen=True)
class WhisperSettings:
    """Streaming tunables; the defaults suit tiny.en on two CPU cores."""

    step_seconds: float = 0.5
    min_speech_seconds: float = 0.25
    end_silence_seconds: float = 0.5
    pre_roll_seconds: float = 0.5
    max_buffer_seconds: float = 12.0
    max_utterance_seconds: float = 12.0
    pad_seconds: float = 2.0
    max_batch: int = 8
    hold_seconds: float = 0.3
    """Agreed words ending this close to the audio's end are not final yet (may be cut)."""
    max_tentative_seconds: float = 1.5
    """A word this old (behind the audio's end) is finalised even without agreement."""
    keep_trailing_words: int = 1
    """1: words the latest step heard after the last look's last word, starting before the
    utterance's end, are kept (the last look drops a quiet last word)."""
    min_window_seconds: float = 2.0
    """No word of an utterance is final before this much of it was heard (2.5 before the
    second round of issue 13: with looks every 0.5 s from 0.75 s, 2.5 waited for the look
    at 2.8 s, 2.0 takes the one at 2.3 s)..."""
    early_agreement: int = 0
    """...unless this many consecutive hypotheses agree on it (0: never; else >= 3)."""
    final_beam_size: int = 4
    """Beam width of the last transcription of an utterance (the steps decode greedily)."""
    fallback_beam_size: int = 4
    """Beam width of the second decode of a span whose greedy decode looks broken."""
    max_unheard_seconds: float = 1.2
    """A decode whose last word ends this long before its audio does stopped early (the
    VAD closes an utterance after less silence than this)."""
    max_tokens_per_second: float = 6.0
    """Decoding budget for English: a loop stops here instead of at Whisper's 448 tokens."""
    max_tokens_per_second_other: float = 14.0
    """The budget for other languages: Whisper's byte-level BPE spends about twice as many
    tokens per second on French as on English (accents, shorter merges); at 6 a second,
    decodes of French stopped mid-word ("un incend")."""
    max_word_seconds: float = 2.0
    """A word aligned longer than this covers speech the decode has no text for."""
    cpu_threads: int = 1
    """Threads of one transcription; ``workers`` of them run at once."""
    workers: int = 2
    """Transcriptions of one step that run in parallel (CTranslate2 releases the GIL):
    the speakers of a step are split into this many batches, which keeps both cores
    busy where one batched call used little more than one."""
    language_switch_probability: float = 0.8
    """Under "auto", a speaker's next utterance changes language only when the detector
    gives another language at least this probability (see language.py)."""
    detect_min_seconds: float = 2.0
    """Language identification on less audio than this is not kept for the utterance."""
    detect_foreign: int = 1
    """1: an English-only model withholds speech it sounds unable to transcribe (below);
    0: it captions everything (as before the check existed)."""
    foreign_min_nll: float = 1.3
    """An English-only model whose decodes of an utterance average a negative
    log-probability per token above this (i.e. a log-prob below -1.3) is hearing another
    language: its words are withheld (see language.py)."""
    foreign_min_final_nll: float = 1.2
    """The same, with the utterance's last look counted."""
    foreign_clear_nll: float = 0.9
    """No word is final until the looks average under this (clearly the model's language)."""
    foreign_min_seconds: float = 1.5
    """Looks at less of an utterance than this do not count (see language.py); 1.5 counts
    the look at 1.8 s, so the judge's two looks are in by 2.3 s (2.0 waited for 2.8 s)."""
    foreign_confirm: int = 2
    """1: before withholding, the pinned multilingual model (if installed) must identify
    another language; hard English is kept. 2: the same, and speech it is unsure of (top
    language not English, below 0.5) is kept too. 0: the log-probability verdict alone."""
    vad_threshold: float = 0.5
    # Hypotheses that look like Whisper's hallucinations on non-speech are dropped.
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4

    @classmethod
    def from_overrides(
        cls, overrides: Mapping[str, str], *, defaults: Mapping[str, float] | None = None
    ) -> WhisperSettings:
        """The defaults (the class's, then a model's own ``defaults``) with ``overrides``
        (name -> text, as on the command line) applied. Raises ConfigError for an unknown
        name or a value of the wrong kind."""
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, float | int] = {}
        for name, text in overrides.items():
            kind = kinds.get(name)
            if kind is None:
                known = ", ".join(sorted(kinds))
                raise ConfigError(f"unknown whisper setting {name!r} (known: {known})")
            try:
                values[name] = int(text) if kind in ("int", int) else float(text)
            except ValueError:
                raise ConfigError(f"whisper setting {name}: not a number: {text!r}") from None
            if values[name] < 0:
                raise ConfigError(f"whisper setting {name} must not be negative")
        return replace(cls(), **{**(defaults or {}), **values})  # type: ignore[arg-type]
