"""Kyutai text tokens to timed words (sans-I/O), derived as Kyutai's reference derives them.

A Kyutai delayed-streams STT model emits one text token per 80 ms audio frame. Kyutai's
reference (``scripts/stt_from_file_pytorch.py`` in ``kyutai-labs/delayed-streams-modeling``)
turns the whole token sequence into words like this, and :class:`WordAssembler` gives the
same words, token by token:

- ``0`` (end of padding) is a word boundary. A *segment* runs from the frame after one
  boundary up to the next boundary; everything before the first boundary is ignored.
- A segment's text is the decoded text of its ids above the padding id (``3``): padding,
  BOS and EOS carry no text.
- One word in a segment: it spans ``[start, end)`` of the segment. Several words (no
  boundary came between them): each but the last takes as many frames as the tokenizer
  gives it pieces, and the last takes the rest.
- The last segment (end of the stream) ends at the first EOS id in it, else one second
  (``frame_rate`` frames) after its start or at the end of the stream, whichever comes
  first. Frames at or past that bound carry no text. (The reference indexes the tokens
  with a fractional bound there; we take the frames before it.)
- Frame position ``f`` is stream time ``max(0, f / frame_rate - offset_seconds)``; the
  reference's offset is ``int(prefix_frames / frame_rate) + audio_delay_seconds``.

Streaming: a word is final when the boundary after it arrives (only then are its text
and its end known); until then it is the partial. Closing a turn or the stream early
(:meth:`WordAssembler.finish`) applies the last-segment rule to the frames seen so far.
Tokens after such a close and before the next boundary open a segment at their own
frame, so no text is lost. ``skipped_seconds`` (audio dropped upstream) is added to
every time, so times stay on the speaker's real timeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from captions.events import Word

BOUNDARY_ID = 0
PADDING_ID = 3
EOS_ID = 2
FRAME_RATE = 12.5


class WordAssembler:
    """Turns a stream of text tokens into words. Explicit, resettable state.

    ``decode`` turns ids into text; ``count_pieces`` says how many ids the tokenizer
    gives one word (to share a segment among several words). Ids at or beyond
    ``vocab_size`` carry no text.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        count_pieces: Callable[[str], int],
        *,
        vocab_size: int,
        frame_rate: float = FRAME_RATE,
        offset_seconds: float = 0.0,
        boundary_id: int = BOUNDARY_ID,
        padding_id: int = PADDING_ID,
        eos_id: int = EOS_ID,
    ) -> None:
        self._decode = decode
        self._count_pieces = count_pieces
        self.vocab_size = vocab_size
        self.frame_rate = frame_rate
        self.offset_seconds = offset_seconds
        self.boundary_id = boundary_id
        self.padding_id = padding_id
        self.eos_id = eos_id
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        """Tokens consumed so far (the frame index of the next token)."""
        self.skipped_seconds = 0.0
        self._start: int | None = None
        """First frame of the open segment (None: no segment open)."""
        self._tokens: list[int] = []
        self._closed_early = False

    def time(self, frame: float) -> float:
        """Stream time, in seconds, of frame position ``frame``."""
        return max(0.0, frame / self.frame_rate - self.offset_seconds) + self.skipped_seconds

    def carries_text(self, token: int) -> bool:
        return self.padding_id < token < self.vocab_size

    def push(self, token: int) -> list[Word]:
        """Consumes the token of the next frame; returns the words it made final."""
        frame = self.frames
        self.frames += 1
        if token == self.boundary_id:
            done = self._words(self._start, frame, self._tokens) if self._start is not None else []
            self._start, self._tokens = frame + 1, []
            self._closed_early = False
            return done
        if self._start is not None:
            self._tokens.append(token)
        elif self._closed_early and self.carries_text(token):
            self._start, self._tokens = frame, [token]
        return []

    @property
    def has_text(self) -> bool:
        """Whether the open segment holds any text yet."""
        return any(self.carries_text(t) for t in self._tokens)

    @property
    def building(self) -> list[Word]:
        """The words of the open segment so far (not final)."""
        if self._start is None:
            return []
        return self._words(self._start, self.frames, self._tokens)

    def finish(self) -> list[Word]:
        """Closes the open segment by the reference's end-of-stream rule (see module doc)."""
        if self._start is None:
            return []
        start, tokens = self._start, self._tokens
        self._start, self._tokens, self._closed_early = None, [], True
        if self.eos_id in tokens:
            end: float = start + tokens.index(self.eos_id)
        else:
            end = min(self.frames, start + self.frame_rate)
        return self._words(start, end, tokens[: math.ceil(end) - start])

    def _words(self, start: float, end: float, tokens: list[int]) -> list[Word]:
        texts = self._decode([t for t in tokens if self.carries_text(t)]).split()
        words: list[Word] = []
        for text in texts[:-1]:
            pieces = self._count_pieces(text)
            words.append(Word(text, self.time(start), self.time(start + pieces)))
            start += pieces
        if texts:
            words.append(Word(texts[-1], self.time(start), self.time(end)))
        return words
