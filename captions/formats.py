"""Transcript writers: final caption events to WebVTT, SubRip (SRT), plain text and JSON.

Only ``final`` events are written (partials are superseded by them). Each utterance is
split into readable cues: at most ``max_lines`` lines of ``line_chars`` characters and
``max_cue_seconds`` per cue, and a new cue after a pause of ``max_gap_seconds``.
Cues of every speaker are ordered by start time; overlapping speech gives overlapping
cues, which both WebVTT and SRT allow. Times are the events' stream times.

Speaker names appear as WebVTT voice spans (``<v Alice>``), as an ``Alice:`` prefix in
SRT, and before each utterance in the plain text.

The meeting page writes the same files from its own view (``meeting/static/cuerule.js``).
Both follow the one rule spelled out here, step for step, and both pass the shared table
``tests/cue_cases.json``; change them together. The rule:

- **Clean** every name and word: lone surrogates become U+FFFD; control characters and
  line breaks (C0, DEL, C1, U+2028, U+2029) become spaces, runs of spaces become one,
  ends are trimmed. No name or word can then start a line, so none can forge a cue.
  Empty words are dropped; an event without words is not written.
- **Wrap** greedily: words joined by one space, a line full when the next word would
  pass ``line_chars`` characters (code points); a longer word gets a line of its own.
- **Times** are whole milliseconds, ``floor(seconds * 1000 + 0.5)``, never negative; a
  cue ends at least 1 ms after it starts.
- **Escape** per format: ``&``, ``<``, ``>`` as entities in WebVTT (text and voice), and
  a voice ending in ``-`` ends in ``&#45;`` instead, so that it never forms ``-->`` with the
  tag's closing ``>``;
  ``-->`` (or longer arrows) becomes ``->`` in SRT and text, where lenient players read a
  line holding ``-->`` as a timing line.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import srt

from captions.events import CaptionEvent, Speaker, Word
from common.exceptions import UnknownFormatError


@dataclass(frozen=True)
class Cue:
    speaker: Speaker
    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


_CONTROL = re.compile("[\u0000-\u001f\u007f-\u009f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone ones: UTF-8 cannot carry them
_SPACES = re.compile(" {2,}")
_ARROW = re.compile("-{2,}>")


def clean(text: str) -> str:
    """One line of text: lone surrogates become U+FFFD (as a browser's UTF-8 encoder
    does), control characters and line breaks spaces, runs of spaces one space, ends
    trimmed (the rule's first step)."""
    text = _SURROGATE.sub("\ufffd", text)
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip(" ")


def _clean_event(event: CaptionEvent) -> CaptionEvent:
    words = tuple(
        Word(text, w.start, w.end, w.final) for w in event.words if (text := clean(w.text))
    )
    name = clean(event.speaker.display_name) or clean(event.speaker.id)
    speaker = Speaker(event.speaker.id, name)
    return CaptionEvent(
        speaker, event.utterance, event.revision, event.kind, words, event.emitted_at
    )


def final_events(events: Iterable[CaptionEvent]) -> list[CaptionEvent]:
    """The final, non-empty events, ordered by start time (speakers interleaved)."""
    finals = [e for e in events if e.kind == "final" and e.words]
    return sorted(finals, key=lambda e: (e.words[0].start, e.speaker.id, e.utterance))


def written_finals(events: Iterable[CaptionEvent]) -> list[CaptionEvent]:
    """What the cue writers write: the finals with names and words cleaned, those left
    with words, ordered by start time (speakers interleaved)."""
    return final_events(_clean_event(e) for e in events if e.kind == "final")


def cues(
    events: Iterable[CaptionEvent],
    *,
    line_chars: int = 42,
    max_lines: int = 2,
    max_cue_seconds: float = 7.0,
    max_gap_seconds: float = 1.5,
) -> list[Cue]:
    """Splits every final utterance into cues short enough to read."""
    out: list[Cue] = []
    for event in written_finals(events):
        group: list[Word] = []
        for word in event.words:
            if group and not _fits(
                group, word, line_chars, max_lines, max_cue_seconds, max_gap_seconds
            ):
                out.append(_cue(event.speaker, group, line_chars))
                group = []
            group.append(word)
        if group:
            out.append(_cue(event.speaker, group, line_chars))
    out.sort(key=lambda c: (c.start, c.speaker.id))
    return out


def _fits(
    group: list[Word],
    word: Word,
    line_chars: int,
    max_lines: int,
    max_cue_seconds: float,
    max_gap_seconds: float,
) -> bool:
    if word.end - group[0].start > max_cue_seconds:
        return False
    if word.start - group[-1].end > max_gap_seconds:
        return False
    return len(wrap([w.text for w in (*group, word)], line_chars)) <= max_lines


def _cue(speaker: Speaker, words: Sequence[Word], line_chars: int) -> Cue:
    end = max(words[-1].end, words[0].start + 0.001)
    return Cue(speaker, words[0].start, end, wrap([w.text for w in words], line_chars))


def wrap(words: Sequence[str], line_chars: int) -> tuple[str, ...]:
    """Cleaned words filled greedily into lines of at most ``line_chars`` characters,
    breaking only between words: never inside one, not even at its hyphen, so every
    word reads (and is searched) whole. A single over-long word gets a line of its own."""
    lines: list[str] = []
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > line_chars:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return tuple(lines)


def milliseconds(seconds: float) -> int:
    """A time in whole milliseconds, half up (Python's round() is half-even; the page's
    Math.round is half-up: this form gives both the same integer)."""
    return max(0, math.floor(seconds * 1000 + 0.5))


def _span(cue: Cue) -> tuple[int, int]:
    """A cue's start and end in milliseconds; it lasts at least 1 ms once rounded."""
    start = milliseconds(cue.start)
    return start, max(milliseconds(cue.end), start + 1)


def _clock(ms: int, separator: str) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _no_arrow(text: str) -> str:
    return _ARROW.sub("->", text)


def _vtt_voice(name: str) -> str:
    escaped = _vtt_escape(name)
    return escaped[:-1] + "&#45;" if escaped.endswith("-") else escaped


def to_vtt(events: Iterable[CaptionEvent]) -> str:
    """WebVTT with one voice span per cue line, naming the speaker."""
    blocks = ["WEBVTT"]
    for cue in cues(events):
        voice = _vtt_voice(cue.speaker.display_name)
        body = "\n".join(f"<v {voice}>{_vtt_escape(line)}</v>" for line in cue.lines)
        start, end = _span(cue)
        blocks.append(f"{_clock(start, '.')} --> {_clock(end, '.')}\n{body}")
    return "\n\n".join(blocks) + "\n"


def to_srt(events: Iterable[CaptionEvent]) -> str:
    """SubRip, the speaker's name before the first line of each cue."""
    subtitles = [
        srt.Subtitle(
            index=i,
            start=datetime.timedelta(milliseconds=_span(cue)[0]),
            end=datetime.timedelta(milliseconds=_span(cue)[1]),
            content=_no_arrow(f"{cue.speaker.display_name}: {cue.text}"),
        )
        for i, cue in enumerate(cues(events), start=1)
    ]
    return str(srt.compose(subtitles, reindex=False))


def to_txt(events: Iterable[CaptionEvent]) -> str:
    """One line per utterance: ``[start - end] Speaker: text``."""
    lines = [
        f"[{_clock(milliseconds(e.words[0].start), '.')}"
        f" - {_clock(milliseconds(e.words[-1].end), '.')}] "
        + _no_arrow(f"{e.speaker.display_name}: {e.text}")
        for e in written_finals(events)
    ]
    return "".join(line + "\n" for line in lines)


def to_json(events: Iterable[CaptionEvent], *, finals_only: bool = True) -> str:
    """A JSON list of caption events (docs/caption-format.md), all of them if not finals_only."""
    chosen = final_events(events) if finals_only else list(events)
    return json.dumps([e.to_json() for e in chosen], indent=1) + "\n"


FORMATS: dict[str, Callable[[Iterable[CaptionEvent]], str]] = {
    "vtt": to_vtt,
    "srt": to_srt,
    "txt": to_txt,
    "json": to_json,
}

MEDIA_TYPES = {
    "vtt": "text/vtt; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
}


def render(format_name: str, events: Iterable[CaptionEvent]) -> str:
    """Renders ``events`` as ``vtt``, ``srt``, ``txt`` or ``json``."""
    try:
        writer = FORMATS[format_name]
    except KeyError:
        known = ", ".join(FORMATS)
        raise UnknownFormatError(
            f"unknown transcript format {format_name!r} (known: {known})"
        ) from None
    return writer(events)
