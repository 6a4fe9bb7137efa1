"""Evaluation manifests: JSON Lines, one speech item a line (``../shared/eval/README.md``).

Keys read here (others, such as the provenance fields, are kept in ``ManifestItem.extra``):

- ``id`` (str, unique in the file), ``audio`` (path relative to the manifest), ``text``;
- ``speaker``, ``language`` (default ``en``);
- ``start``, ``end``: seconds, the segment inside a longer file (absent: the whole file);
- ``channel``: channel index of a multi-channel file;
- ``words``: optional word timings ``[{"word", "start", "end"}]`` in seconds of the audio
  *file* (``start_sec``/``end_sec`` are accepted too). Entries without times (e.g. only a
  ``speaker_tag``) mean the item has no usable word timings.

Blank lines and lines starting with ``#`` are skipped. Anything else that cannot be used
raises :class:`~common.exceptions.ManifestError` naming the file and the line number;
that is the only exception :func:`read_manifest` and :func:`parse_line` raise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captions.audio import PCM, load_audio
from common.exceptions import ManifestError

SHARED_EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
"""The evaluation speech sets beside the checkout (``../shared/eval``), where present."""
DEFAULT_MANIFEST = SHARED_EVAL / "en_librispeech_test_other" / "manifest.jsonl"


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class ManifestItem:
    id: str
    audio: Path
    text: str
    speaker: str | None = None
    language: str = "en"
    start: float | None = None
    end: float | None = None
    channel: int | None = None
    words: tuple[TimedWord, ...] | None = None
    """Word timings relative to the item's own audio (segment start already subtracted)."""
    line: int = 0
    """Line of the manifest it came from, for error messages."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def load_audio(self, sample_rate: int) -> PCM:
        """The item's mono audio at ``sample_rate`` (segment and channel applied)."""
        return load_audio(
            self.audio,
            sample_rate=sample_rate,
            channel=self.channel,
            start=self.start,
            end=self.end,
        )


_KNOWN = {"id", "audio", "text", "speaker", "language", "start", "end", "channel", "words"}


def read_manifest(path: str | Path, *, max_line_chars: int = 1_000_000) -> list[ManifestItem]:
    """Reads every item of ``path``; raises :class:`ManifestError` on the first bad line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(f"{path}:{line_no}: not UTF-8 text") from exc
    return list(parse_lines(text.splitlines(), source=path, max_line_chars=max_line_chars))


def parse_lines(
    lines: Iterable[str], *, source: Path, max_line_chars: int = 1_000_000
) -> Iterator[ManifestItem]:
    seen: dict[str, int] = {}
    for line_no, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = parse_line(line, source=source, line_no=line_no, max_line_chars=max_line_chars)
        if item.id in seen:
            raise ManifestError(
                f"{source}:{line_no}: duplicate id {item.id!r} (first on line {seen[item.id]})"
            )
        seen[item.id] = line_no
        yield item


def parse_line(
    line: str, *, source: Path, line_no: int, max_line_chars: int = 1_000_000
) -> ManifestItem:
    """Parses one manifest line; audio paths resolve against ``source``'s folder."""
    where = f"{source}:{line_no}"
    if len(line) > max_line_chars:
        raise ManifestError(f"{where}: line longer than {max_line_chars} characters")
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{where}: not a JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: not a JSON object")
    try:
        return _item(data, source, line_no)
    except _FieldError as exc:
        raise ManifestError(f"{where}: {exc}") from None


class _FieldError(Exception):
    pass


def _item(data: dict[str, Any], source: Path, line_no: int) -> ManifestItem:
    item_id = _string(data, "id")
    audio_name = _string(data, "audio")
    if "\x00" in audio_name:
        raise _FieldError("'audio' holds a NUL character")
    text = data.get("text")
    if not isinstance(text, str):
        raise _FieldError("'text' must be a string")
    speaker = data.get("speaker")
    if speaker is not None and not isinstance(speaker, str | int):
        raise _FieldError("'speaker' must be a string")
    language = data.get("language", "en")
    if not isinstance(language, str) or not language:
        raise _FieldError("'language' must be a non-empty string")
    start = _seconds(data, "start")
    end = _seconds(data, "end")
    if start is not None and end is not None and end <= start:
        raise _FieldError(f"'end' ({end}) must be after 'start' ({start})")
    channel = data.get("channel")
    if channel is not None and (
        isinstance(channel, bool) or not isinstance(channel, int) or channel < 0
    ):
        raise _FieldError("'channel' must be a non-negative integer")
    return ManifestItem(
        id=item_id,
        audio=source.parent / audio_name,
        text=text,
        speaker=None if speaker is None else str(speaker),
        language=language,
        start=start,
        end=end,
        channel=channel,
        words=_words(data.get("words"), offset=start or 0.0),
        line=line_no,
        extra={k: v for k, v in data.items() if k not in _KNOWN},
    )


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and key == "id":
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _FieldError(f"missing or empty {key!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"{what} must be a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise _FieldError(f"{what} must be a finite, non-negative number of seconds")
    return seconds


def _seconds(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    return None if value is None else _number(value, repr(key))


def _words(value: Any, *, offset: float) -> tuple[TimedWord, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _FieldError("'words' must be a list")
    words: list[TimedWord] = []
    for n, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise _FieldError(f"'words'[{n}] must be an object")
        word = entry.get("word")
        if not isinstance(word, str):
            raise _FieldError(f"'words'[{n}] needs a string 'word'")
        start = entry.get("start", entry.get("start_sec"))
        end = entry.get("end", entry.get("end_sec"))
        if start is None and end is None:
            return None  # words without times (e.g. speaker tags only): no timings
        a = _number(start, f"'words'[{n}].start") - offset
        b = _number(end, f"'words'[{n}].end") - offset
        if b < a:
            raise _FieldError(f"'words'[{n}] ends before it starts")
        words.append(TimedWord(word, a, b))
    return tuple(words) or None


def check_audio_files(items: Iterable[ManifestItem], *, source: Path) -> None:
    """Raises :class:`ManifestError` naming the line of the first item whose audio is missing."""
    for item in items:
        if not item.audio.is_file():
            raise ManifestError(f"{source}:{item.line}: audio file {item.audio} not found")
