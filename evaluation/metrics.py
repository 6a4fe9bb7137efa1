"""Scores: corpus WER after normalisation, and per-word latencies (seconds).

For every hypothesis word that matches its reference word (see
:mod:`evaluation.alignment`) and whose reference word has an end time ``e``:

- ``first_partial`` = (stream time the word was first shown) - ``e``;
- ``final`` = (stream time the word became final) - ``e``.

Per item, ``eou`` = (stream time at which every hypothesis word is final) - (end of the
item's audio). Stream time counts from the first sample of the item, so these are the
delays a live user would see. Percentiles pool words (or items, for ``eou``) over the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jiwer
import numpy as np

from captions.costs import add_costs
from captions.simulate import HypothesisWord, StreamRecord, hypothesis_words
from evaluation.alignment import align, reference_ends, tokens_of
from evaluation.manifest import TimedWord
from evaluation.normalize import normalize, normalized_words

WordSource = Literal["manifest", "aligned", "none"]


@dataclass
class ItemScore:
    id: str
    reference: str
    """Normalised reference."""
    hypothesis: str
    """Normalised streaming transcript (its final words)."""
    offline: str | None
    """Normalised offline transcript of the whole item, when the engine has one."""
    audio_seconds: float
    fed_seconds: float
    compute_seconds: float
    dropped_seconds: float
    word_times: WordSource
    first_partial: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    timed: list[str] = field(default_factory=list)
    """The timed words, in the order of ``first_partial`` and ``final``."""
    eou: float | None = None
    cpu_seconds: float | None = None
    """Process CPU time (every thread) spent on the item, when measured."""
    costs: dict[str, float] = field(default_factory=dict)
    """Seconds per engine step (see :mod:`captions.costs`), when the engine measures them."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "wer": corpus_wer([self.reference], [self.hypothesis]),
            "offline_wer": None
            if self.offline is None
            else corpus_wer([self.reference], [self.offline]),
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "offline": self.offline,
            "audio_seconds": round(self.audio_seconds, 3),
            "rtf": _ratio(self.compute_seconds, self.fed_seconds),
            "dropped_seconds": round(self.dropped_seconds, 3),
            "word_times": self.word_times,
            "timed_words": len(self.final),
            "first_partial_p50": percentile(self.first_partial, 50),
            "final_p50": percentile(self.final, 50),
            "eou": None if self.eou is None else round(self.eou, 3),
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
            "costs": {k: round(v, 4) for k, v in sorted(self.costs.items())},
            "words": [
                {"word": w, "first_partial": round(a, 3), "final": round(b, 3)}
                for w, a, b in zip(self.timed, self.first_partial, self.final, strict=True)
            ],
        }


def score_item(
    *,
    item_id: str,
    reference_text: str,
    record: StreamRecord,
    timed_words: Sequence[TimedWord] | None,
    word_source: WordSource,
    offline_text: str | None = None,
    language: str = "en",
) -> ItemScore:
    hyp = hypothesis_words(record.events, record.origin)
    ref_tokens = normalized_words(reference_text, language)
    score = ItemScore(
        id=item_id,
        reference=" ".join(ref_tokens),
        hypothesis=normalize(" ".join(w.text for w in hyp), language),
        offline=None if offline_text is None else normalize(offline_text, language),
        audio_seconds=record.audio_seconds,
        fed_seconds=record.fed_seconds,
        compute_seconds=record.compute_seconds,
        dropped_seconds=record.dropped_seconds,
        word_times=word_source if timed_words else "none",
        eou=max(w.final_at for w in hyp) - record.audio_seconds if hyp else None,
    )
    if not timed_words:
        return score
    ends = reference_ends(ref_tokens, tokens_of([(w.word, w.end) for w in timed_words], language))
    hyp_tokens = tokens_of([(w.text, w) for w in hyp], language)
    seen: set[int] = set()
    for pair in align(ref_tokens, [token for token, _ in hyp_tokens]):
        end = ends[pair.ref]
        word: HypothesisWord = hyp_tokens[pair.hyp][1]
        if not pair.equal or end is None or id(word) in seen:
            continue
        seen.add(id(word))
        score.first_partial.append(word.shown_at - end)
        score.final.append(word.final_at - end)
        score.timed.append(ref_tokens[pair.ref])
    return score


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Word errors over reference words, pooled over items; items with empty references skip."""
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.split()]
    if not pairs:
        return None
    return round(float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])), 4)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 3)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b > 0 else None


def _wer_vs_offline(scores: Sequence[ItemScore]) -> float | None:
    """Streaming WER over the same model's offline WER (1.0: streaming loses nothing)."""
    references = [s.reference for s in scores]
    streaming = corpus_wer(references, [s.hypothesis for s in scores])
    offline = corpus_wer(references, [s.offline or "" for s in scores])
    return None if streaming is None or not offline else round(streaming / offline, 3)


def cost_breakdown(scores: Sequence[ItemScore]) -> dict[str, float]:
    """Seconds of each engine step per second of audio fed, pooled over the items."""
    fed = sum(s.fed_seconds for s in scores)
    total: dict[str, float] = {}
    for s in scores:
        add_costs(total, s.costs)
    return {k: round(v / fed, 4) for k, v in sorted(total.items())} if fed > 0 else {}


def summarize(engine: str, scores: Sequence[ItemScore]) -> dict[str, Any]:
    """The run's JSON summary (the keys documented for ``captions eval --json``)."""
    first = [x for s in scores for x in s.first_partial]
    final = [x for s in scores for x in s.final]
    eou = [s.eou for s in scores if s.eou is not None]
    offline_ok = bool(scores) and all(s.offline is not None for s in scores)
    sources: dict[str, int] = {"manifest": 0, "aligned": 0, "none": 0}
    for s in scores:
        sources[s.word_times] += 1
    return {
        "engine": engine,
        "items": len(scores),
        "audio_seconds": round(sum(s.audio_seconds for s in scores), 3),
        "wer": corpus_wer([s.reference for s in scores], [s.hypothesis for s in scores]),
        "offline_wer": corpus_wer([s.reference for s in scores], [s.offline or "" for s in scores])
        if offline_ok
        else None,
        "rtf": _ratio(sum(s.compute_seconds for s in scores), sum(s.fed_seconds for s in scores)),
        "wer_vs_offline": _wer_vs_offline(scores) if offline_ok else None,
        "dropped_seconds": round(sum(s.dropped_seconds for s in scores), 3),
        "cpu_per_audio_second": _ratio(
            sum(s.cpu_seconds or 0.0 for s in scores), sum(s.fed_seconds for s in scores)
        )
        if scores and all(s.cpu_seconds is not None for s in scores)
        else None,
        "costs": cost_breakdown(scores),
        "latency": {
            "first_partial_p50": percentile(first, 50),
            "first_partial_p95": percentile(first, 95),
            "final_p50": percentile(final, 50),
            "final_p95": percentile(final, 95),
            "eou_p50": percentile(eou, 50),
            "eou_p95": percentile(eou, 95),
            "timed_words": len(final),
        },
        "word_times": sources,
        "per_item": [s.to_json() for s in scores],
    }
