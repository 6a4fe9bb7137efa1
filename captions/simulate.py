"""Computation-aware simulation: one speech item streamed through an engine on a virtual clock.

Audio "arrives" in engine-frame-sized chunks at the moment its last sample would have
been spoken live. Between steps the virtual clock stands still; during ``engine.step``
it runs at real speed (:meth:`VirtualClock.charging`), so compute time is charged and
every caption is stamped with the time a live user would have seen it. A step never
starts before the audio it consumes has arrived: the loop delivers exactly the chunks
that arrived by *now*, steps while the session is ready, and otherwise jumps the clock
to the next arrival. If compute is slower than real time, audio piles up in the
session's bounded inbox (dropping the oldest, as live), and later steps see more at once.

After the item, ``tail_seconds`` of silence follow (a live stream stays open when the
speaker stops talking), then the stream is closed, which flushes the last words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from captions.audio import PCM
from captions.clock import VirtualClock
from captions.engine import AudioInbox, Engine
from captions.events import CaptionEvent, Speaker
from captions.track import CaptionTrack
from common.exceptions import EngineError

# Steps an engine may take after being asked to end before we call it stuck.
_MAX_STEPS_TO_END = 10_000


@dataclass(frozen=True)
class StreamRecord:
    """Everything a stream emitted, with times relative to the stream's start."""

    events: tuple[CaptionEvent, ...]
    origin: float
    """Clock reading at the stream's start: ``emitted_at - origin`` is stream time."""
    audio_seconds: float
    """The item's audio, without the silent tail."""
    fed_seconds: float
    """All audio fed, including the silent tail."""
    compute_seconds: float
    steps: int
    dropped_seconds: float


@dataclass(frozen=True)
class HypothesisWord:
    """A word of the final transcript and when the user saw it (stream time, seconds)."""

    text: str
    start: float
    end: float
    shown_at: float
    """First event of its utterance showing this text at this position."""
    final_at: float
    """First event in which this position was final (it never changes afterwards)."""


def simulate(
    engine: Engine,
    pcm: PCM,
    *,
    speaker: Speaker,
    language: str | None = None,
    clock: VirtualClock | None = None,
    tail_seconds: float = 2.0,
    max_buffer_seconds: float = 10.0,
) -> StreamRecord:
    """Streams ``pcm`` (native-rate mono) through ``engine``; returns what it emitted."""
    clock = clock or VirtualClock()
    rate = engine.info.sample_rate
    frame = max(1, engine.info.frame_samples)
    tail = np.zeros(max(0, round(tail_seconds * rate)), dtype=np.float32)
    audio = np.concatenate([np.asarray(pcm, dtype=np.float32), tail])
    origin = clock.now()
    track = CaptionTrack(speaker, clock)
    inbox = AudioInbox(rate, max_seconds=max_buffer_seconds)
    session = engine.create_session(track, inbox, language=language)
    events: list[CaptionEvent] = []
    pushed = steps = steps_after_end = 0
    compute = 0.0

    def arrival(end_sample: int) -> float:
        return origin + end_sample / rate

    try:
        while not session.finished:
            while pushed < audio.size:
                nxt = min(pushed + frame, audio.size)
                if arrival(nxt) > clock.now():
                    break
                if inbox.push(audio[pushed:nxt]):
                    track.degraded = True
                pushed = nxt
            if pushed >= audio.size:
                session.end_requested = True
            if session.ready():
                before = clock.now()
                with clock.charging():
                    engine.step([session])
                compute += clock.now() - before
                steps += 1
                events.extend(track.take_events())
                if session.end_requested:
                    steps_after_end += 1
                    if steps_after_end > _MAX_STEPS_TO_END:
                        raise EngineError(f"{engine.info.name}: stream did not end when closed")
            elif pushed < audio.size:
                clock.advance_to(arrival(min(pushed + frame, audio.size)))
            else:
                break  # ended and nothing left to do
    finally:
        engine.release_session(session)
    return StreamRecord(
        events=tuple(events),
        origin=origin,
        audio_seconds=len(pcm) / rate,
        fed_seconds=audio.size / rate,
        compute_seconds=compute,
        steps=steps,
        dropped_seconds=inbox.dropped_samples / rate,
    )


def hypothesis_words(events: Sequence[CaptionEvent], origin: float = 0.0) -> list[HypothesisWord]:
    """The final transcript, word by word, with when each word was shown and finalised.

    A word's identity is its utterance and position in it: it counts as shown from the
    first event of that utterance carrying the same text at the same position.
    """
    utterances: dict[tuple[str, int], list[CaptionEvent]] = {}
    for event in events:
        utterances.setdefault((event.speaker.id, event.utterance), []).append(event)
    words: list[HypothesisWord] = []
    for evs in utterances.values():
        last = evs[-1]
        finals = last.words if last.kind == "final" else last.final_words
        for i, word in enumerate(finals):
            shown = [e.emitted_at for e in evs if len(e.words) > i and e.words[i].text == word.text]
            final = [e.emitted_at for e in evs if len(e.words) > i and e.words[i].final]
            final_at = min(final) if final else last.emitted_at
            words.append(
                HypothesisWord(
                    text=word.text,
                    start=word.start,
                    end=word.end,
                    shown_at=min(shown, default=final_at) - origin,
                    final_at=final_at - origin,
                )
            )
    return words
