"""One evaluation run: every item simulated, recognised offline, timed and scored."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from captions.engine import Engine
from captions.engines import EngineOptions
from captions.events import Speaker
from captions.simulate import simulate
from evaluation.manifest import ManifestItem, TimedWord
from evaluation.metrics import ItemScore, WordSource, score_item
from evaluation.offline import WHISPER_RATE, FasterWhisper, offline_transcriber


class WordTimes:
    """Word end times for an item: the manifest's ``words``, else an offline alignment.

    The aligner (faster-whisper word timestamps, ``align_model`` or the bundled
    tiny.en) loads only when an item without ``words`` needs it.
    """

    def __init__(self, align_model: str | None = None) -> None:
        self.align_model = align_model
        self._aligner: FasterWhisper | None = None

    def __call__(self, item: ManifestItem) -> tuple[Sequence[TimedWord], WordSource]:
        if item.words:
            return item.words, "manifest"
        if self._aligner is None:
            self._aligner = FasterWhisper(self.align_model, device="cpu")
        pcm = item.load_audio(WHISPER_RATE)
        return self._aligner.word_times(pcm, item.language), "aligned"


def evaluate(
    items: Sequence[ManifestItem],
    engine: Engine,
    *,
    engine_name: str,
    options: EngineOptions,
    tail_seconds: float = 2.0,
    word_times: WordTimes | None = None,
    offline: bool = True,
    on_item: Callable[[ItemScore], None] | None = None,
) -> list[ItemScore]:
    transcribe = offline_transcriber(engine, engine_name, options) if offline else None
    timer = word_times or WordTimes()
    scores: list[ItemScore] = []
    for item in items:
        language = options.language or item.language
        pcm = item.load_audio(engine.info.sample_rate)
        record = simulate(
            engine,
            pcm,
            speaker=Speaker(item.speaker or item.id),
            language=language,
            tail_seconds=tail_seconds,
        )
        timed, source = timer(item)
        score = score_item(
            item_id=item.id,
            reference_text=item.text,
            record=record,
            timed_words=timed,
            word_source=source,
            offline_text=transcribe(pcm, language) if transcribe else None,
            language=item.language,
        )
        scores.append(score)
        if on_item is not None:
            on_item(score)
    return scores
