"""Transcribing many speakers' spans at once: batches spread over worker threads.

CTranslate2 releases the GIL, so ``workers`` transcriptions run in parallel; the spans of
one step are grouped into batches (one encoder and one decoder call each) of one
language and prompt kind, with encoder windows close enough in length that padding to the
longest wastes little, and split so that every worker gets a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from captions.engines.whisper.decode import Decoder
from captions.engines.whisper.session import Hypothesis, WhisperSession

_In = TypeVar("_In")
_Out = TypeVar("_Out")

MAX_FRAMES_SPREAD = 200
"""Encoder windows in one batch differ by at most this many feature frames (2 s)."""


def plan_batches(
    keys: Sequence[str],
    frames: Sequence[int],
    *,
    max_batch: int,
    workers: int,
    max_spread: int = MAX_FRAMES_SPREAD,
) -> list[list[int]]:
    """Groups item indices into batches: same key, windows within ``max_spread`` frames of
    the batch's shortest, and at most ``ceil(items / workers)`` (and ``max_batch``) each."""
    largest = min(max_batch, -(-len(keys) // workers))
    order = sorted(range(len(keys)), key=lambda i: (keys[i], frames[i]))
    batches: list[list[int]] = []
    for i in order:
        first = batches[-1][0] if batches else None
        if (
            first is None
            or keys[i] != keys[first]
            or frames[i] > frames[first] + max_spread
            or len(batches[-1]) >= largest
        ):
            batches.append([])
        batches[-1].append(i)
    return batches


class WorkerPool:
    """Maps a function over items on ``workers`` threads (inline with one worker)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="whisper") if workers > 1 else None
        )

    def map(self, function: Callable[[_In], _Out], items: Sequence[_In]) -> list[_Out]:
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class BatchTranscriber:
    """Transcribes (session, start, end) spans with a :class:`Decoder`, batched over workers."""

    def __init__(self, decoder: Decoder, *, workers: int, max_batch: int) -> None:
        self.decoder = decoder
        self.max_batch = max_batch
        self.pool = WorkerPool(workers)

    def close(self) -> None:
        self.pool.close()
        self.decoder.close()

    def transcribe(
        self, session: WhisperSession, start: int, end: int, *, beam_size: int = 1, phase: str = ""
    ) -> Hypothesis:
        return self.transcribe_many([(session, start, end)], beam_size=beam_size, phase=phase)[0]

    def transcribe_many(
        self,
        requests: Sequence[tuple[WhisperSession, int, int]],
        *,
        beam_size: int = 1,
        phase: str = "",
    ) -> list[Hypothesis]:
        """Transcribes each (session, start, end) audio span, batching similar ones."""
        prepared = self.pool.map(lambda request: self.decoder.prepare(*request), requests)
        batches = plan_batches(
            [span.key for span in prepared],
            [span.frames for span in prepared],
            max_batch=self.max_batch,
            workers=self.pool.workers,
        )
        decoded = self.pool.map(
            lambda batch: self.decoder.decode([prepared[j] for j in batch], beam_size, phase=phase),
            batches,
        )
        results: list[Hypothesis] = [Hypothesis([], "")] * len(prepared)
        for batch, hypotheses in zip(batches, decoded, strict=True):
            for j, hypothesis in zip(batch, hypotheses, strict=True):
                results[j] = hypothesis
        return results
