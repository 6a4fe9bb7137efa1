"""One evaluation run: every item streamed (simulated, or live), recognised offline, timed
and scored."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from captions.audio import PCM
from captions.clock import FreeComputeClock, VirtualClock
from captions.engine import Engine
from captions.engines import EngineOptions
from captions.events import Speaker
from captions.simulate import simulate
from evaluation.manifest import ManifestItem, TimedWord
from evaluation.metrics import ItemScore, WordSource, score_item
from evaluation.offline import WHISPER_RATE, FasterWhisper, offline_transcriber
from evaluation.realtime import run_in_real_time


class WordTimes:
    """Word end times for an item: the manifest's ``words``, else an offline alignment.

    The aligner (faster-whisper word timestamps: ``align_model``, else the bundled
    tiny.en for English and the multilingual ``base`` for other languages, since an
    English-only model cannot align French words) loads only when an item without
    ``words`` needs it.
    """

    def __init__(self, align_model: str | None = None) -> None:
        self.align_model = align_model
        self._aligners: dict[str, FasterWhisper] = {}

    def __call__(self, item: ManifestItem) -> tuple[Sequence[TimedWord], WordSource]:
        if item.words:
            return item.words, "manifest"
        model = self.align_model or ("tiny.en" if item.language.startswith("en") else "base")
        if model not in self._aligners:
            self._aligners[model] = FasterWhisper(model, device="cpu")
        pcm = item.load_audio(WHISPER_RATE)
        return self._aligners[model].word_times(pcm, item.language), "aligned"


def stream_and_score(
    engine: Engine,
    item: ManifestItem,
    pcm: PCM,
    *,
    language: str | None,
    tail_seconds: float,
    word_times: tuple[Sequence[TimedWord], WordSource],
    offline_text: str | None = None,
    mode: str = "sim",
) -> ItemScore:
    """Streams one item through ``engine`` and scores it, with the process CPU time and
    the engine's step costs it took. ``mode``: ``sim`` (computation-aware simulation),
    ``realtime`` (paced through the live runtime) or ``ideal`` (simulated, compute free)."""
    costs_before = engine.costs.snapshot() if engine.costs else {}
    cpu_before = time.process_time()
    speaker = Speaker(item.speaker or item.id)
    if mode == "realtime":
        record = run_in_real_time(
            engine, pcm, speaker=speaker, language=language, tail_seconds=tail_seconds
        )
    else:
        clock = FreeComputeClock() if mode == "ideal" else VirtualClock()
        record = simulate(
            engine, pcm, speaker=speaker, language=language, tail_seconds=tail_seconds, clock=clock
        )
    cpu_seconds = time.process_time() - cpu_before
    timed, source = word_times
    score = score_item(
        item_id=item.id,
        reference_text=item.text,
        record=record,
        timed_words=timed,
        word_source=source,
        offline_text=offline_text,
        language=item.language,
    )
    score.cpu_seconds = cpu_seconds
    score.costs = engine.costs.since(costs_before) if engine.costs else {}
    return score


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
        score = stream_and_score(
            engine,
            item,
            pcm,
            language=language,
            tail_seconds=tail_seconds,
            word_times=timer(item),
            offline_text=transcribe(pcm, language) if transcribe else None,
        )
        scores.append(score)
        if on_item is not None:
            on_item(score)
    return scores
