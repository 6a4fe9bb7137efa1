"""An utterance's life in one session: opened by the VAD, re-transcribed while it grows,
finalised word by word through LocalAgreement, trimmed when long, closed on silence.

While speech goes on, the utterance's audio buffer is re-transcribed after every
``step_seconds`` of new audio; LocalAgreement-2 finalises the words two consecutive
hypotheses agree on, and the rest is shown as the partial tail. When the VAD hears
``end_silence_seconds`` of silence, the buffer is transcribed once more (with beam search)
and the utterance closes with every word final. Buffers longer than
``max_buffer_seconds`` are trimmed at a committed word, and a caption longer than
``max_utterance_seconds`` is closed at a committed word, so compute per step and caption
length stay bounded.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from captions.costs import StepCosts
from captions.engines.whisper import text
from captions.engines.whisper.batching import BatchTranscriber
from captions.engines.whisper.language import LanguageConfirmer
from captions.engines.whisper.session import Hypothesis, WhisperSession
from captions.engines.whisper.settings import WhisperSettings
from captions.vad import SAMPLE_RATE, SpeechChange

# Silero's gate opens on the first 32 ms frame it is sure of; soft onsets (an "s", an
# "h") come a little before it.
ONSET_MARGIN_SECONDS = 0.1


def samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


class Utterances:
    """Drives the utterances of sessions; transcriptions go through ``transcriber``."""

    def __init__(
        self,
        settings: WhisperSettings,
        transcriber: BatchTranscriber,
        costs: StepCosts,
        confirmer: LanguageConfirmer | None = None,
    ) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.costs = costs
        self.confirmer = confirmer
        """Asked before an utterance is withheld as another language (None: not asked)."""

    def ingest(self, s: WhisperSession) -> None:
        """Takes the session's new audio through the VAD, opening and closing utterances."""
        assert s.vad is not None
        offset, pcm = s.inbox.take()
        if pcm.size and offset != s.position:
            # Old audio was dropped (the engine fell behind): close what we had and
            # restart recognition at the new position.
            self.close(s, s.position)
            s.audio, s.audio_start = np.zeros(0, dtype=np.float32), offset
            s.vad.reset(offset)
        if pcm.size:
            s.audio = np.concatenate([s.audio, pcm])
            with self.costs.measure("vad"):
                changes = s.vad.feed(pcm)
            for change in changes:
                self._on_change(s, change)

    def due(self, s: WhisperSession) -> bool:
        """The open utterance grew by a step since its last transcription."""
        if s.track.unsupported_language:
            # Nothing more to transcribe in this utterance; its audio is not kept.
            s.buffer_start = s.transcribed_to = s.position
            return False
        return s.active and s.position - s.transcribed_to >= samples(self.settings.step_seconds)

    def _on_change(self, s: WhisperSession, change: SpeechChange) -> None:
        if change.kind == "start" and not s.active:
            s.active = True
            # The pre-roll never reaches into the previous utterance: after a flush
            # mid-speech it did, and the same words were final twice.
            s.buffer_start = max(
                s.audio_start,
                s.closed_to,
                change.sample - samples(self.settings.pre_roll_seconds),
            )
            s.transcribed_to = s.utterance_start = s.buffer_start
            onset = change.sample - samples(ONSET_MARGIN_SECONDS)
            s.speech_onset = max(s.buffer_start, onset) / SAMPLE_RATE
            s.utterance_language = None
            s.foreign.reset()
        elif change.kind == "end" and s.active:
            # A little trailing silence helps Whisper end the last word cleanly.
            end = min(s.position, change.sample + samples(0.2))
            self.close(s, end)

    def update(self, s: WhisperSession, hypothesis: Hypothesis) -> None:
        """A new hypothesis of the open utterance's buffer; LocalAgreement decides what is final."""
        s.transcribed_to = s.position
        hypothesis = replace(hypothesis, words=text.not_before(hypothesis.words, s.speech_onset))
        if hypothesis.words and hypothesis.language:
            s.track.language = hypothesis.language
        if self._sounds_foreign(s, hypothesis, s.position):
            s.track.mark_unsupported_language()
            return
        if not hypothesis.words and (s.agreement.tail or s.agreement.committed):
            # The VAD hears speech: an empty look is a recogniser miss, not a retraction.
            return
        s.last_hypothesis = (s.buffer_start, s.position, hypothesis)
        # An English-only model finalises nothing before it could tell another language.
        judging = (
            bool(self.settings.detect_foreign)
            and not self.transcriber.decoder.multilingual
            and not s.foreign.settled
        )
        commit = s.agreement.insert(
            hypothesis.words,
            audio_end=s.position / SAMPLE_RATE,
            utterance_start=(s.position if judging else s.utterance_start) / SAMPLE_RATE,
            early=not judging,
        )
        s.track.update(commit=commit, tail=s.agreement.tail)
        self._trim(s)

    def _sounds_foreign(
        self, s: WhisperSession, hypothesis: Hypothesis, end: int, *, final: bool = False
    ) -> bool:
        """An English-only model guessing at another language (see language.py)."""
        if (
            self.transcriber.decoder.multilingual
            or not self.settings.detect_foreign
            or not hypothesis.words
        ):
            return False
        heard = (end - s.utterance_start) / SAMPLE_RATE
        if not s.foreign.observe(hypothesis.logprob, heard, final=final):
            return False
        if self.confirmer is None or s.foreign.other_language:
            return True
        start = max(s.utterance_start, s.audio_start) - s.audio_start
        verdict = self.confirmer.is_other_language(s.audio[start : end - s.audio_start])
        if verdict is False:  # hard speech in the model's own language: keep it
            s.foreign.own_language = True
            return False
        s.foreign.other_language = verdict is True
        return True

    def _trim(self, s: WhisperSession) -> None:
        settings = self.settings
        committed = s.agreement.committed
        buffer_seconds = (s.position - s.buffer_start) / SAMPLE_RATE
        if buffer_seconds > settings.max_buffer_seconds and committed:
            self._trim_at_last_commit(s, s.position)
        elif buffer_seconds > 2 * settings.max_buffer_seconds:
            # No agreement for a long time (e.g. endless non-speech): give up on the buffer.
            self.close(s, s.position)
            s.active = True
            s.buffer_start = s.transcribed_to = s.utterance_start = s.position
            return
        finals = s.track.final_words
        if finals and finals[-1].end - finals[0].start > settings.max_utterance_seconds:
            # Readability: a long caption closes at its last final word; the tail moves on.
            s.track.end_utterance(tail=())

    def _trim_at_last_commit(self, s: WhisperSession, end: int) -> None:
        """The buffer starts again at the last final word; the final words before the cut
        move into the decoder's prompt."""
        committed, tail = s.agreement.committed, s.agreement.tail
        # The earlier of the two: the last word's end is often stretched too late.
        cut = min(committed[-1].end, tail[0].start) if tail else committed[-1].end
        cut_sample = min(end, max(s.buffer_start, round(cut * SAMPLE_RATE)))
        s.buffer_start = cut_sample
        s.agreement.trim(cut_sample / SAMPLE_RATE)

    def close(self, s: WhisperSession, end: int) -> None:
        """Ends the open utterance at ``end`` (absolute sample): a last look makes every
        word final."""
        foreign = s.track.unsupported_language
        if foreign:
            s.track.end_utterance()
        elif s.active and end - s.buffer_start >= samples(0.1):
            last = s.last_hypothesis
            # A greedy last look at the span the latest step decoded would repeat it.
            if self.settings.final_beam_size == 1 and last and last[:2] == (s.buffer_start, end):
                hypothesis = last[2]
            else:
                hypothesis = self.transcriber.transcribe(
                    s, s.buffer_start, end, beam_size=self.settings.final_beam_size, phase="final "
                )
            words = text.not_before(hypothesis.words, s.speech_onset)
            if self.settings.keep_trailing_words and last and last[0] == s.buffer_start:
                # The beam look may stop short of a quiet last word the steps heard.
                words = text.with_trailing_words(words, last[2].words, before=end / SAMPLE_RATE)
            hypothesis = replace(hypothesis, words=words)
            if self._sounds_foreign(s, hypothesis, end, final=True):
                s.track.mark_unsupported_language()
                foreign = True
            # An empty last look (short audio, or judged non-speech) keeps the tail that
            # was shown rather than silently dropping words the reader already saw.
            s.track.end_utterance(tail=s.agreement.finish(hypothesis.words or None))
        elif s.track.is_open:
            s.track.end_utterance()
        # The words of another language's utterance are no context for the next one.
        s.agreement.reset(keep_prompt=not foreign)
        s.active = False
        s.last_hypothesis = None
        s.closed_to = max(s.closed_to, end)

    def forget_old_audio(self, s: WhisperSession) -> None:
        keep_from = s.buffer_start if s.active else s.position - samples(1.0)
        drop = keep_from - s.audio_start
        if drop > 0:
            s.audio = s.audio[drop:]
            s.audio_start = keep_from
