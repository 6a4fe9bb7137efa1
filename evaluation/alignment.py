"""Word alignment: which hypothesis word is which reference word, and when it ended.

Latency needs the end time, in the audio, of each word the engine recognised. The
reference transcript has no times, so times come from a *timed word list* (the
manifest's ``words``, or an offline recognition with word timestamps, see
:mod:`evaluation.offline`), which is aligned to the normalised reference by edit
distance (``jiwer``): equal and substituted words take the timed word's end, so a
misrecognised timing word still marks where its reference word ended. The streaming
hypothesis is aligned the same way, and only words it got *right* are timed.

Words are normalised one by one (a word may become several tokens, e.g. ``won't`` ->
``will not``; each token keeps its word's times).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import jiwer

from evaluation.normalize import normalized_words

T = TypeVar("T")


@dataclass(frozen=True)
class Pair:
    ref: int
    hyp: int
    equal: bool


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[Pair]:
    """Pairs of (reference index, hypothesis index) that edit-distance alignment matches.

    Equal and substituted words form pairs; inserted and deleted words do not.
    """
    if not ref or not hyp:
        return []
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    pairs: list[Pair] = []
    for chunk in out.alignments[0]:
        if chunk.type not in ("equal", "substitute"):
            continue
        for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
            pairs.append(
                Pair(chunk.ref_start_idx + k, chunk.hyp_start_idx + k, chunk.type == "equal")
            )
    return pairs


def tokens_of(words: Sequence[tuple[str, T]], language: str = "en") -> list[tuple[str, T]]:
    """Normalises each word on its own; every token carries its word's payload."""
    return [
        (token, payload) for text, payload in words for token in normalized_words(text, language)
    ]


def reference_ends(
    reference: Sequence[str], timed: Sequence[tuple[str, float]]
) -> list[float | None]:
    """End time of each reference token, transferred from aligned timed tokens."""
    ends: list[float | None] = [None] * len(reference)
    for pair in align(reference, [token for token, _ in timed]):
        ends[pair.ref] = timed[pair.hyp][1]
    return ends
