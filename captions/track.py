"""Per-speaker caption state that makes the caption invariants hold by construction.

Engines never build :class:`CaptionEvent` by hand: they tell a :class:`CaptionTrack`
which words became final and what the tentative tail is now, and the track numbers
utterances and revisions, stamps emission times, and refuses to rewrite final words.
It is sans-I/O and not thread-safe: one engine worker owns it.
"""

from __future__ import annotations

from collections.abc import Sequence

from captions.clock import Clock
from captions.events import CaptionEvent, Speaker, Word


class CaptionTrack:
    def __init__(self, speaker: Speaker, clock: Clock) -> None:
        self.speaker = speaker
        self.clock = clock
        self._utterance = 0
        self._revision = 0
        self._final: list[Word] = []
        self._tail: tuple[Word, ...] = ()
        self._events: list[CaptionEvent] = []
        self.degraded = False
        self.language: str | None = None
        """Language of the current utterance's words, set by the engine; events carry it."""
        self._unsupported = False

    @property
    def utterance(self) -> int:
        return self._utterance

    @property
    def final_words(self) -> tuple[Word, ...]:
        return tuple(self._final)

    @property
    def tail(self) -> tuple[Word, ...]:
        return self._tail

    @property
    def is_open(self) -> bool:
        """True while the current utterance has any word, final or not, or was marked."""
        return bool(self._final or self._tail or self._unsupported)

    def update(self, *, commit: Sequence[Word] = (), tail: Sequence[Word] = ()) -> None:
        """Appends ``commit`` as final words and replaces the tentative tail.

        Emits a partial event when anything visible changed. Ignored once the utterance
        was marked as in an unsupported language.
        """
        if self._unsupported:
            return
        committed = [w.as_final() for w in commit if w.text]
        new_tail = tuple(Word(w.text, w.start, w.end, False) for w in tail if w.text)
        if not committed and new_tail == self._tail:
            return
        self._final.extend(committed)
        self._tail = new_tail
        self._emit("partial")

    @property
    def unsupported_language(self) -> bool:
        """The open utterance was marked as speech the model cannot transcribe."""
        return self._unsupported

    def mark_unsupported_language(self) -> None:
        """The open utterance is in a language the model cannot transcribe: its tentative
        words (nonsense) are withdrawn, and its events say so (``flags.unsupported_language``)
        until it closes with a final that has only the words already final, if any."""
        if self._unsupported:
            return
        self._unsupported = True
        self._tail = ()
        self._emit("partial")

    def end_utterance(self, *, tail: Sequence[Word] | None = None) -> None:
        """Closes the utterance; its tail (``tail`` when given, replacing it) becomes final."""
        if self._unsupported:
            tail = ()
        if tail is not None:
            self._tail = tuple(w for w in tail if w.text)
        self._final.extend(w.as_final() for w in self._tail)
        self._tail = ()
        if self._final or self._unsupported:
            self._emit("final")
        self._utterance += 1
        self._revision = 0
        self._final = []
        self._unsupported = False

    def take_events(self) -> list[CaptionEvent]:
        events, self._events = self._events, []
        return events

    def _emit(self, kind: str) -> None:
        self._revision += 1
        flags = {"degraded": True} if self.degraded else {}
        if self._unsupported:
            flags["unsupported_language"] = True
        self._events.append(
            CaptionEvent(
                speaker=self.speaker,
                utterance=self._utterance,
                revision=self._revision,
                kind="final" if kind == "final" else "partial",
                words=(*self._final, *self._tail),
                emitted_at=self.clock.now(),
                flags=flags,
                language=self.language,
            )
        )
