"""Concurrency benchmark: N live speakers through one engine, paced in real time.

Each of the N speakers streams real speech items one after another through a single
:class:`~captions.runtime.EngineRunner` on the wall clock: audio is pushed in
``chunk_seconds`` pieces at the moment it would have been spoken, each item is followed
by ``tail_seconds`` of silence, and its stream is then closed (flushing its last words)
before the speaker's next item starts. A speaker starts no new item once it has
streamed ``seconds`` of audio, so a run lasts about ``seconds`` plus one item.

Latencies are scored exactly as in ``captions eval`` (see :mod:`evaluation.metrics`),
with the events' wall-clock emission times taken relative to each stream's start.
Word timings of the items are computed before the run, so the aligner does not compete
with the engine for the CPU.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from captions.audio import PCM
from captions.clock import WallClock
from captions.engine import Engine
from captions.events import Speaker
from captions.runtime import EngineRunner
from common.exceptions import CapacityError
from evaluation.evaluate import WordTimes
from evaluation.machine import machine_state
from evaluation.manifest import ManifestItem, TimedWord
from evaluation.metrics import ItemScore, WordSource, corpus_wer, percentile, score_item
from evaluation.realtime import TimedEngine, stream_in_real_time

# Speaker i starts at item i * _ITEM_STRIDE, so concurrent speakers say different things.
_ITEM_STRIDE = 5


@dataclass
class SpeakerResult:
    speaker: str
    scores: list[ItemScore] = field(default_factory=list)
    degraded: bool = False
    """Some of its captions were marked delayed (the engine was behind)."""

    @property
    def final(self) -> list[float]:
        return [x for s in self.scores for x in s.final]

    def to_json(self) -> dict[str, Any]:
        first = [x for s in self.scores for x in s.first_partial]
        eou = [s.eou for s in self.scores if s.eou is not None]
        return {
            "speaker": self.speaker,
            "items": len(self.scores),
            "audio_seconds": round(sum(s.audio_seconds for s in self.scores), 3),
            "dropped_seconds": round(sum(s.dropped_seconds for s in self.scores), 3),
            "degraded": self.degraded,
            "first_partial_p50": percentile(first, 50),
            "final_p50": percentile(self.final, 50),
            "final_p95": percentile(self.final, 95),
            "eou_p50": percentile(eou, 50),
        }


@dataclass
class BenchResult:
    speakers: int
    wall_seconds: float = 0.0
    fed_seconds: float = 0.0
    busy_seconds: float = 0.0
    cpu_seconds: float = 0.0
    streams: list[SpeakerResult] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    """The machine's 1/5/15-minute load averages when the run ended."""
    error: str | None = None
    """Why the run could not serve every speaker (e.g. the engine's capacity)."""
    costs: dict[str, float] = field(default_factory=dict)
    """Seconds per engine step during the run (see :mod:`captions.costs`)."""

    @property
    def final_p95(self) -> float | None:
        return percentile([x for s in self.streams for x in s.final], 95)

    def passes(self, max_final_p95: float) -> bool:
        p95 = self.final_p95
        return self.error is None and p95 is not None and p95 < max_final_p95

    def to_json(self) -> dict[str, Any]:
        all_scores = [sc for s in self.streams for sc in s.scores]
        first = [x for sc in all_scores for x in sc.first_partial]
        final = [x for sc in all_scores for x in sc.final]
        eou = [sc.eou for sc in all_scores if sc.eou is not None]
        cores = self.cpu_seconds / self.wall_seconds if self.wall_seconds else None
        return {
            "speakers": self.speakers,
            "error": self.error,
            "wall_seconds": round(self.wall_seconds, 2),
            "audio_seconds": round(self.fed_seconds, 2),
            "rtf": round(self.busy_seconds / self.fed_seconds, 4) if self.fed_seconds else None,
            "cpu_cores": None if cores is None else round(cores, 3),
            "cpu_per_audio_second": round(self.cpu_seconds / self.fed_seconds, 4)
            if self.fed_seconds
            else None,
            "costs": {k: round(v / self.fed_seconds, 4) for k, v in sorted(self.costs.items())}
            if self.fed_seconds
            else {},
            # Share of the run the engine worker spent computing: near 1 means saturated.
            "engine_busy": round(self.busy_seconds / self.wall_seconds, 3)
            if self.wall_seconds
            else None,
            # Every caption arrived when this stays near the single-speaker WER.
            "wer": corpus_wer(
                [sc.reference for sc in all_scores], [sc.hypothesis for sc in all_scores]
            )
            if all_scores
            else None,
            "cpu_count": os.cpu_count(),
            "loadavg_after": self.loadavg_after,
            "latency": {
                "first_partial_p50": percentile(first, 50),
                "final_p50": percentile(final, 50),
                "final_p95": percentile(final, 95),
                "eou_p50": percentile(eou, 50),
                "eou_p95": percentile(eou, 95),
                "timed_words": len(final),
            },
            "streams": [s.to_json() for s in self.streams],
        }


@dataclass(frozen=True)
class _Prepared:
    item: ManifestItem
    pcm: PCM
    timed: Sequence[TimedWord]
    source: WordSource


class Bench:
    """Reuses one engine, decoded audio and word timings across runs of any size."""

    def __init__(
        self,
        engine: Engine,
        items: Sequence[ManifestItem],
        *,
        word_times: WordTimes | None = None,
        language: str | None = None,
        seconds: float = 30.0,
        tail_seconds: float = 2.0,
        chunk_seconds: float = 0.1,
    ) -> None:
        self.engine = TimedEngine(engine)
        self.items = list(items)
        self.word_times = word_times or WordTimes()
        self.language = language
        self.seconds = seconds
        self.tail_seconds = tail_seconds
        self.chunk_seconds = chunk_seconds
        self._prepared: dict[int, _Prepared] = {}

    def _prepare(self, index: int) -> _Prepared:
        index %= len(self.items)
        if index not in self._prepared:
            item = self.items[index]
            timed, source = self.word_times(item)
            pcm = item.load_audio(self.engine.info.sample_rate)
            self._prepared[index] = _Prepared(item, pcm, timed, source)
        return self._prepared[index]

    def playlist(self, speaker: int) -> list[_Prepared]:
        """Items speaker ``speaker`` will stream: at least ``seconds`` of audio."""
        out: list[_Prepared] = []
        total = 0.0
        index = speaker * _ITEM_STRIDE
        while total < self.seconds and len(out) < len(self.items):
            prepared = self._prepare(index)
            out.append(prepared)
            total += prepared.pcm.size / self.engine.info.sample_rate
            index += 1
        return out

    def run(self, speakers: int) -> BenchResult:
        playlists = [self.playlist(i) for i in range(speakers)]  # prepared before timing
        return asyncio.run(self._run(playlists))

    async def _run(self, playlists: list[list[_Prepared]]) -> BenchResult:
        result = BenchResult(speakers=len(playlists))
        busy_before = self.engine.busy_seconds
        costs = self.engine.costs
        costs_before = costs.snapshot() if costs else {}
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        async with EngineRunner(self.engine, clock=WallClock()) as runner:
            outcomes = await asyncio.gather(
                *(
                    self._speak(runner, f"speaker-{i}", playlist, result, delay=0.25 * i)
                    for i, playlist in enumerate(playlists)
                ),
                return_exceptions=True,
            )
        for outcome in outcomes:
            if isinstance(outcome, CapacityError):
                result.error = f"engine refused a stream: {outcome}"
            elif isinstance(outcome, BaseException):
                raise outcome
        result.wall_seconds = time.perf_counter() - wall_before
        result.cpu_seconds = time.process_time() - cpu_before
        result.busy_seconds = self.engine.busy_seconds - busy_before
        result.costs = costs.since(costs_before) if costs else {}
        result.loadavg_after = machine_state()["loadavg"]
        return result

    async def _speak(
        self,
        runner: EngineRunner,
        name: str,
        playlist: list[_Prepared],
        result: BenchResult,
        *,
        delay: float,
    ) -> None:
        speaker = SpeakerResult(name)
        result.streams.append(speaker)
        await asyncio.sleep(delay)  # staggered starts, as people do not speak in lockstep
        for prepared in playlist:
            stream = runner.open_stream(Speaker(name), language=self.language)
            record = await stream_in_real_time(
                stream,
                prepared.pcm,
                tail_seconds=self.tail_seconds,
                chunk_seconds=self.chunk_seconds,
            )
            result.fed_seconds += record.fed_seconds
            # Any event shown as "Captions delayed" (the mark clears once caught up).
            speaker.degraded |= any(e.flags.get("degraded") for e in record.events)
            speaker.scores.append(
                score_item(
                    item_id=prepared.item.id,
                    reference_text=prepared.item.text,
                    record=record,
                    timed_words=prepared.timed,
                    word_source=prepared.source,
                    language=prepared.item.language,
                )
            )


def find_max(
    run: Callable[[int], BenchResult],
    *,
    max_final_p95: float = 3.0,
    limit: int = 16,
) -> tuple[int, dict[int, BenchResult]]:
    """Largest N in 1..limit whose run passes: doubling, then bisection.

    Assumes that more speakers never make latency better. Returns (N, every run by N);
    N is 0 when even one speaker fails.
    """
    results: dict[int, BenchResult] = {}

    def passes(n: int) -> bool:
        results[n] = run(n)
        return results[n].passes(max_final_p95)

    good, n = 0, 1
    while n <= limit and passes(n):
        good, n = n, n * 2
    bad = min(n, limit + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return good, results
