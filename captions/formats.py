"""Transcript writers: final caption events to WebVTT, SubRip (SRT), plain text and JSON.

Only ``final`` events are written (partials are superseded by them). Each utterance is
split into readable cues: at most ``max_lines`` lines of ``line_chars`` characters and
``max_cue_seconds`` per cue, and a new cue after a pause of ``max_gap_seconds``.
Cues of every speaker are ordered by start time; overlapping speech gives overlapping
cues, which both WebVTT and SRT allow. Times are the events' stream times.

Speaker names appear as WebVTT voice spans (``<v Alice>``), as an ``Alice:`` prefix in
SRT, and before each utterance in the plain text.
"""

from __future__ import annotations

import datetime
import json
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape

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


def final_events(events: Iterable[CaptionEvent]) -> list[CaptionEvent]:
    """The final, non-empty events, ordered by start time (speakers interleaved)."""
    finals = [e for e in events if e.kind == "final" and e.words]
    return sorted(finals, key=lambda e: (e.words[0].start, e.speaker.id, e.utterance))


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
    for event in final_events(events):
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
    return len(_lines((*group, word), line_chars)) <= max_lines


def _cue(speaker: Speaker, words: Sequence[Word], line_chars: int) -> Cue:
    end = max(words[-1].end, words[0].start + 0.001)
    return Cue(speaker, words[0].start, end, _lines(words, line_chars))


def _lines(words: Sequence[Word], line_chars: int) -> tuple[str, ...]:
    """The words wrapped into lines, breaking only between words: never inside one,
    not even at its hyphen, so every word reads (and is searched) whole. A single
    over-long word gets a line of its own."""
    text = " ".join(w.text for w in words)
    wrapped = textwrap.wrap(text, line_chars, break_long_words=False, break_on_hyphens=False)
    return tuple(wrapped) or (text,)


def _clock(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_vtt(events: Iterable[CaptionEvent]) -> str:
    """WebVTT with one voice span per cue, naming the speaker."""
    blocks = ["WEBVTT"]
    for cue in cues(events):
        # Voice annotations may not contain '>' or line breaks; the text is escaped.
        voice = cue.speaker.display_name.replace(">", "").replace("\n", " ")
        body = "\n".join(f"<v {voice}>{escape(line, quote=False)}</v>" for line in cue.lines)
        blocks.append(f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{body}")
    return "\n\n".join(blocks) + "\n"


def to_srt(events: Iterable[CaptionEvent]) -> str:
    """SubRip, the speaker's name before the first line of each cue."""
    subtitles = [
        srt.Subtitle(
            index=i,
            start=datetime.timedelta(seconds=cue.start),
            end=datetime.timedelta(seconds=cue.end),
            content=f"{cue.speaker.display_name}: {cue.text}",
        )
        for i, cue in enumerate(cues(events), start=1)
    ]
    return str(srt.compose(subtitles, reindex=False))


def to_txt(events: Iterable[CaptionEvent]) -> str:
    """One line per utterance: ``[start - end] Speaker: text``."""
    lines = [
        f"[{_clock(e.words[0].start, '.')} - {_clock(e.words[-1].end, '.')}] "
        f"{e.speaker.display_name}: {e.text}"
        for e in final_events(events)
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
