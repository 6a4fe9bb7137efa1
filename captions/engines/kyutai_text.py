"""Kyutai text tokens to timed words (sans-I/O).

A Kyutai delayed-streams STT model emits one text token per 80 ms audio frame:

- ``0`` ends a stretch of padding: a word starts right after it (word boundary);
- ``3`` is padding: nothing is being said, so a word in progress is complete;
- anything else is a sentencepiece piece of the current word. A piece starting with
  ``▁`` begins a new word (the sentencepiece convention), which also completes the
  word in progress when no boundary token came between them.

The token of frame ``t`` (0-based) describes audio that the model heard
``offset_seconds`` earlier: the checkpoint's ``audio_delay_seconds`` plus any silence
prefix fed before the stream. So frame index ``t`` maps to stream time
``t * frame_seconds - offset_seconds`` (never below 0), plus any audio that was dropped
upstream (``skipped_seconds``), so times stay on the speaker's real timeline.

Word timing: a word starts one frame after its boundary token (or at its first piece
when there was no boundary), and ends one frame after its last piece. That end is
known as soon as the word is complete, so the word can be final at once (Kyutai text
is monotonic) and it never runs past the next boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from captions.events import Word

BOUNDARY_ID = 0
PADDING_ID = 3
WORD_START = "▁"


@dataclass
class _Building:
    start_frame: int
    ids: list[int] = field(default_factory=list)
    last_frame: int = 0


class WordAssembler:
    """Turns a stream of text tokens into words. Explicit, resettable state.

    ``decode`` turns piece ids into text; ``piece`` gives one id's piece (to spot the
    ``▁`` that starts a word). Ids in ``ignored_ids`` (e.g. BOS/EOS) and ids at or
    beyond ``vocab_size`` carry no text and are treated like padding.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        piece: Callable[[int], str],
        *,
        vocab_size: int,
        frame_seconds: float = 0.08,
        offset_seconds: float = 0.0,
        boundary_id: int = BOUNDARY_ID,
        padding_id: int = PADDING_ID,
        ignored_ids: Sequence[int] = (1, 2),
    ) -> None:
        self._decode = decode
        self._piece = piece
        self.vocab_size = vocab_size
        self.frame_seconds = frame_seconds
        self.offset_seconds = offset_seconds
        self.boundary_id = boundary_id
        self.padding_id = padding_id
        self.ignored_ids = frozenset(ignored_ids)
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        """Tokens consumed so far (the frame index of the next token)."""
        self.skipped_seconds = 0.0
        self._boundary_frame: int | None = None
        self._building: _Building | None = None

    def time(self, frame: int) -> float:
        """Stream time, in seconds, of the audio that frame index ``frame`` describes."""
        return max(0.0, frame * self.frame_seconds - self.offset_seconds) + self.skipped_seconds

    def push(self, token: int) -> list[Word]:
        """Consumes the token of the next frame; returns the words it completed."""
        frame = self.frames
        self.frames += 1
        if token == self.boundary_id:
            ended = self.finish()
            self._boundary_frame = frame
            return ended
        if (
            token == self.padding_id
            or token in self.ignored_ids
            or not 0 <= token < self.vocab_size
        ):
            return self.finish()
        done: list[Word] = []
        if self._building is not None and self._piece(token).startswith(WORD_START):
            done = self.finish()
        if self._building is None:
            start = frame if self._boundary_frame is None else self._boundary_frame + 1
            self._building = _Building(start_frame=min(start, frame))
            self._boundary_frame = None
        self._building.ids.append(token)
        self._building.last_frame = frame
        return done

    @property
    def building(self) -> Word | None:
        """The word still being built (not final), if any."""
        if self._building is None:
            return None
        text = " ".join(self._decode(self._building.ids).split())
        return Word(text, *self._span(self._building)) if text else None

    def finish(self) -> list[Word]:
        """Completes the word in progress (end of a word, a turn, or the stream)."""
        building, self._building = self._building, None
        return self._words(building) if building is not None else []

    def _span(self, building: _Building) -> tuple[float, float]:
        start = self.time(building.start_frame)
        return start, max(start, self.time(building.last_frame + 1))

    def _words(self, building: _Building) -> list[Word]:
        texts = self._decode(building.ids).split()
        if not texts:
            return []
        start, end = self._span(building)
        # Rarely several words share one span (no boundary between them): split it evenly.
        share = (end - start) / len(texts)
        return [
            Word(text, start + i * share, start + (i + 1) * share) for i, text in enumerate(texts)
        ]
