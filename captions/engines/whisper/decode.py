"""Decoding audio spans with Whisper, with a second look at a decode that looks broken.

One encoder pass covers a batch of spans (each only as long as its audio plus
``pad_seconds`` of silence, instead of Whisper's fixed 30 s window); decoding is greedy
without timestamp tokens, with cross-attention word alignment. A span whose decode loops
or misses text (see :class:`Look`) is decoded once more the other way (greedy <-> beam
search) and the better look is kept. The hypotheses are cleaned by
:mod:`captions.engines.whisper.text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from captions.costs import StepCosts
from captions.engines.whisper import text
from captions.engines.whisper.session import Hypothesis, WhisperSession
from captions.engines.whisper.settings import WhisperSettings
from captions.events import Word
from captions.vad import SAMPLE_RATE


@dataclass(frozen=True)
class Span:
    """Audio of one session prepared for the encoder."""

    session: WhisperSession
    start: int
    samples: int
    features: np.ndarray
    frames: int
    """Encoder window: the span's frames plus ``pad_seconds`` of silence."""
    key: str
    """Spans batch together only with the same key (their language and prompt kind)."""


@dataclass(frozen=True)
class Look:
    """One decode of a span, before choosing between decodes."""

    words: list[Word]
    broken: bool
    """A loop was cut off, or text is missing: it stops well before the audio does, or
    the alignment stretched a word over seconds of speech."""
    covered: float
    """Seconds of the span up to its last word's end."""
    logprob: float = 0.0
    """Mean log-probability per token of the decode."""

    def better_than(self, other: Look) -> bool:
        if self.broken != other.broken:
            return not self.broken
        return self.covered > other.covered


class Decoder:
    """Turns spans of sessions' audio into hypotheses with one faster-whisper model."""

    def __init__(self, model: Any, settings: WhisperSettings, costs: StepCosts) -> None:
        self.model = model
        """A ``faster_whisper.WhisperModel``."""
        self.settings = settings
        self.costs = costs
        self.multilingual = bool(model.model.is_multilingual)
        self._tokenizers: dict[str, Any] = {}

    def close(self) -> None:
        self._tokenizers.clear()

    def prepare(self, s: WhisperSession, start: int, end: int) -> Span:
        """The log-mel features of ``s``'s audio from ``start`` to ``end`` (absolute samples)."""
        audio = s.audio[start - s.audio_start : end - s.audio_start]
        extractor = self.model.feature_extractor
        with self.costs.measure("features"):
            features = extractor(audio)
        frame_rate = SAMPLE_RATE / extractor.hop_length
        frames = math.ceil((features.shape[-1] + self.settings.pad_seconds * frame_rate) / 100)
        frames = min(frames * 100, extractor.nb_max_frames)
        features = features[:, :frames]
        language = s.language or s.utterance_language
        # A multilingual model without a language detects it alone, first.
        key = language if language is not None or not self.multilingual else f"?{id(s)}"
        # Batched decoding needs <|startoftranscript|> at one position: spans with and
        # without previous text do not mix (within a batch, contexts are cut to one length).
        key = f"{key or 'en'}+{'context' if s.agreement.prompt else 'none'}"
        return Span(s, start, audio.size, features, frames, key)

    def decode(self, spans: list[Span], beam_size: int = 1, *, phase: str = "") -> list[Hypothesis]:
        """One encoder pass over the spans, then decoding; a span whose decode looks
        broken (see :class:`Look`) is decoded once more the other way (greedy <-> beam
        search), and the better look is kept. Costs are recorded as ``phase`` + the step
        ("encoder", "decoder", "alignment", "second look")."""
        frames = max(span.frames for span in spans)
        batch = np.stack(
            [np.pad(sp.features, ((0, 0), (0, frames - sp.features.shape[-1]))) for sp in spans]
        )
        with self.costs.measure(phase + "encoder"):
            encoded = self.model.encode(batch)
        first = spans[0].session
        language = first.language or first.utterance_language
        if language is None:
            # Only spans of one session share a batch before its language is known.
            language = self._utterance_language(spans[0], encoded)
        tokenizer = self._tokenizer(language)
        looks = self._generate(spans, encoded, tokenizer, beam_size, phase)
        retry = [i for i, look in enumerate(looks) if look.broken]
        other_beam = 1 if beam_size > 1 else self.settings.fallback_beam_size
        if retry and other_beam != beam_size:
            if len(retry) < len(spans):
                import ctranslate2

                encoded = ctranslate2.StorageView.from_array(
                    np.ascontiguousarray(np.asarray(encoded)[retry])
                )
            retried = [spans[i] for i in retry]
            again = self._generate(retried, encoded, tokenizer, other_beam, phase + "second look ")
            for i, look in zip(retry, again, strict=True):
                if look.better_than(looks[i]):
                    looks[i] = look
        return [Hypothesis(look.words, language, look.logprob) for look in looks]

    def _generate(
        self, spans: list[Span], encoded: Any, tokenizer: Any, beam_size: int, phase: str
    ) -> list[Look]:
        """Decodes encoded spans (with their sessions' prompts) into aligned words."""
        model, settings = self.model, self.settings
        contexts = [
            tokenizer.encode(" " + span.session.agreement.prompt)
            if span.session.agreement.prompt
            else []
            for span in spans
        ]
        shortest = min(map(len, contexts))
        prompts = [
            model.get_prompt(tokenizer, context[len(context) - shortest :], without_timestamps=True)
            for context in contexts
        ]
        longest = max(span.samples for span in spans) / SAMPLE_RATE
        rate = (
            settings.max_tokens_per_second
            if tokenizer.language_code == "en"
            else settings.max_tokens_per_second_other
        )
        with self.costs.measure(phase + "decoder"):
            results = model.model.generate(
                encoded,
                prompts,
                beam_size=beam_size,
                max_length=min(model.max_length, max(map(len, prompts)) + int(rate * longest) + 10),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=[-1],
            )
        texts: list[list[int]] = []
        for result in results:
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            if tokens and self._looks_like_non_speech(result):
                tokens = []
            texts.append(tokens)
        if not any(texts):
            return [Look([], broken=False, covered=0.0) for _ in spans]
        # Alignment runs on the whole batch; an empty text gets a placeholder token.
        placeholder = tokenizer.encode(" .")
        with self.costs.measure(phase + "alignment"):
            aligned = model.find_alignment(
                tokenizer,
                [tokens or placeholder for tokens in texts],
                encoded,
                [sp.features.shape[-1] for sp in spans],  # one count per batch item
            )
        looks = []
        for span, tokens, pieces, result in zip(spans, texts, aligned, results, strict=True):
            if not tokens:
                looks.append(Look([], broken=False, covered=0.0))
                continue
            raw = text.merge_punctuation(pieces, span.start / SAMPLE_RATE)
            heard = text.cut_unheard(text.cut_repetition(raw))
            repetitive = text.compression_ratio(heard) > settings.compression_ratio_threshold
            # Only a loop says the decode went wrong: text past the end of the audio
            # (echoes, words without audio) is cut routinely from a sound decode.
            looped = repetitive or len(text.cut_loop(raw)) < len(raw)
            if repetitive:
                heard = []
            covered = heard[-1].end - span.start / SAMPLE_RATE if heard else 0.0
            # Text missing under the audio shows as a gap after the last word, or as
            # a word stretched over seconds of speech by the alignment.
            stopped_early = span.samples / SAMPLE_RATE - covered > settings.max_unheard_seconds
            stretched = any(w.end - w.start > settings.max_word_seconds for w in heard)
            looks.append(
                Look(
                    heard,
                    broken=looped or stopped_early or stretched,
                    covered=covered,
                    logprob=float(result.scores[0]) if result.scores else 0.0,
                )
            )
        return looks

    def _looks_like_non_speech(self, result: Any) -> bool:
        settings = self.settings
        avg_logprob = result.scores[0] if result.scores else 0.0
        return bool(
            result.no_speech_prob > settings.no_speech_threshold
            and avg_logprob < settings.logprob_threshold
        )

    def _utterance_language(self, span: Span, encoded: Any) -> str:
        """Under "auto": the language of ``span``'s utterance (see language.py). Detection
        on less than ``detect_min_seconds`` is used for this look only."""
        s = span.session
        if not self.multilingual:
            s.utterance_language = "en"
            return "en"
        ranked = [
            (str(token).strip("<|>"), float(probability))
            for token, probability in self.model.model.detect_language(encoded)[0][:3]
        ]
        if span.samples / SAMPLE_RATE < self.settings.detect_min_seconds:
            return s.speaker_language.language or ranked[0][0]
        s.utterance_language = s.speaker_language.observe(ranked)
        return s.utterance_language

    def _tokenizer(self, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self.model.hf_tokenizer,
                self.multilingual,
                task="transcribe",
                language=language if self.multilingual else "en",
            )
        return self._tokenizers[language]
