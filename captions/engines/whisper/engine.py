"""The Whisper engine: loads the model, owns the sessions, and runs a step for all of them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from captions.costs import StepCosts
from captions.engine import (
    AUTO_LANGUAGE,
    PREFERRED_LANGUAGES,
    AudioInbox,
    Engine,
    EngineInfo,
    Session,
)
from captions.engines import EngineOptions
from captions.engines.local_agreement import LocalAgreement
from captions.engines.whisper.batching import BatchTranscriber
from captions.engines.whisper.decode import Decoder
from captions.engines.whisper.language import ForeignSpeech, LanguageConfirmer, SpeakerLanguage
from captions.engines.whisper.models import (
    check_model_dir,
    model_name,
    model_settings,
    resolve_model,
)
from captions.engines.whisper.session import WhisperSession
from captions.engines.whisper.settings import WhisperSettings
from captions.engines.whisper.utterances import Utterances
from captions.track import CaptionTrack
from captions.vad import FRAME_SAMPLES, SAMPLE_RATE, SileroVad, VadStream
from common.exceptions import CapacityError, ModelNotFoundError, UnsupportedLanguageError


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
        check_model_dir(model_path)
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
        self.costs = StepCosts()
        self.decoder = Decoder(self.model, self.settings, self.costs)
        self.multilingual = self.decoder.multilingual
        # The model's own count: base knows 99, large-v3 one more (Cantonese).
        count = int(self.model.model.num_languages) if self.multilingual else 1
        languages: tuple[str, ...] = ("en",)
        if self.multilingual:
            known = _LANGUAGE_CODES[:count]
            preferred = tuple(code for code in PREFERRED_LANGUAGES if code in known)
            others = tuple(code for code in known if code not in preferred)
            languages = (AUTO_LANGUAGE, *preferred, *others)
        self._check_language(language, languages, model_path)
        self.default_language = None if language == AUTO_LANGUAGE else language
        self.vad_model = SileroVad()
        self.transcriber = BatchTranscriber(
            self.decoder, workers=self.settings.workers, max_batch=self.settings.max_batch
        )
        confirmer = (
            LanguageConfirmer(keep_unsure=self.settings.foreign_confirm >= 2)
            if self.settings.detect_foreign
            and self.settings.foreign_confirm
            and not self.decoder.multilingual
            else None
        )
        self._preload: threading.Thread | None = None
        """The confirmer's load, started by the first session (see create_session)."""
        self.utterances = Utterances(self.settings, self.transcriber, self.costs, confirmer)
        self.active_sessions = 0
        self.info = EngineInfo(
            name="whisper",
            sample_rate=SAMPLE_RATE,
            frame_samples=FRAME_SAMPLES,
            delay_seconds=self.settings.step_seconds,
            languages=languages,
            max_streams=max_streams,
            model=str(model_path),
            description=f"Whisper {model_name(model_path)} (CTranslate2 int8 on {device}), "
            "Silero VAD, LocalAgreement-2",
        )

    @staticmethod
    def _check_language(language: str | None, languages: tuple[str, ...], path: Path) -> None:
        if language is None or language in languages:
            return
        name = model_name(path)
        if languages == ("en",):
            raise UnsupportedLanguageError(
                f"model {name} is English-only; for {language!r} use the multilingual "
                "model (--model base) or another CTranslate2 Whisper model (--model PATH)"
            )
        raise UnsupportedLanguageError(f"model {name} does not know language {language!r}")

    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> WhisperSession:
        if self.info.max_streams is not None and self.active_sessions >= self.info.max_streams:
            raise CapacityError(f"no free channels (all {self.info.max_streams} in use)")
        language = language or self.default_language
        self._check_language(language, self.info.languages, Path(self.info.model))
        if language == AUTO_LANGUAGE:
            language = None  # each speaker's own, detected
        s = self.settings
        session = WhisperSession(
            track=track,
            inbox=inbox,
            language=language,
            agreement=LocalAgreement(
                hold_seconds=s.hold_seconds,
                max_tentative_seconds=s.max_tentative_seconds,
                min_window_seconds=s.min_window_seconds,
                early_agreement=s.early_agreement,
            ),
            vad=VadStream(
                self.vad_model,
                threshold=s.vad_threshold,
                min_silence_seconds=s.end_silence_seconds,
                min_speech_seconds=s.min_speech_seconds,
            ),
            speaker_language=SpeakerLanguage(switch_probability=s.language_switch_probability),
            foreign=ForeignSpeech(
                max_logprob=-s.foreign_min_nll,
                max_final_logprob=-s.foreign_min_final_nll,
                clear_logprob=-s.foreign_clear_nll,
                min_seconds=s.foreign_min_seconds,
            ),
        )
        # A fixed language is known from the start (English for an English-only model).
        track.language = language or (None if self.multilingual else "en")
        session.audio_start = inbox.position
        assert session.vad is not None
        session.vad.reset(inbox.position)
        self.active_sessions += 1
        confirmer = self.utterances.confirmer
        if self._preload is None and confirmer is not None:
            # In the background from the first speaker on (LanguageConfirmer.preload); an
            # engine that never transcribes (a server whose sidecars run apart) never
            # pays for the model.
            self._preload = confirmer.preload()
        return session

    def release_session(self, session: Session) -> None:
        self.active_sessions = max(0, self.active_sessions - 1)

    def close(self) -> None:
        self.transcriber.close()
        if self._preload is not None:
            # A native load still running while the interpreter exits can crash it.
            self._preload.join(timeout=60)

    def step(self, sessions: Sequence[Session]) -> None:
        """Serves the ready sessions in turn; their periodic re-transcriptions run as
        batches (one encoder and one decoder call for several speakers)."""
        utterances = self.utterances
        # Control flags are read before the audio is taken: the stream sets them after its
        # last push, so everything pushed before a flush or close is in the inbox by now.
        controls = {id(s): (s.flush_requested, s.end_requested) for s in sessions}
        due: list[WhisperSession] = []
        for session in sessions:
            assert isinstance(session, WhisperSession)
            utterances.ingest(session)
            if utterances.due(session):
                due.append(session)
        hypotheses = self.transcriber.transcribe_many(
            [(s, s.buffer_start, s.position) for s in due]
        )
        for session, hypothesis in zip(due, hypotheses, strict=True):
            utterances.update(session, hypothesis)
        for session in sessions:
            assert isinstance(session, WhisperSession)
            flush, end = controls[id(session)]
            if flush or end:
                assert session.vad is not None
                utterances.close(session, session.position)
                session.vad.reset(session.position)
                if flush:
                    session.flush_requested = False
                session.finished = end
            utterances.forget_old_audio(session)


def load(options: EngineOptions) -> WhisperEngine:
    return WhisperEngine(
        resolve_model(options.model),
        language=options.language,
        device=options.device,
        max_streams=options.max_streams,
        settings=WhisperSettings.from_overrides(
            options.settings, defaults=model_settings(options.model)
        ),
    )
