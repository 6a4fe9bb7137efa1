"""Cleaning Whisper's hypotheses: word pieces to words, and the text Whisper makes up.

Pure functions on :class:`~captions.events.Word` lists (no model), used on every decode:

- :func:`merge_punctuation` joins Whisper's word pieces into words in stream time;
- :func:`cut_loop` cuts a decoding loop ("replied he replied he replied he");
- :func:`cut_echo` cuts words repeated past the end of the speech ("... he said. He said.");
- :func:`cut_repetition` is the loop cut, or else the echo cut;
- :func:`cut_unheard` cuts text the alignment found no audio for;
- :func:`compression_ratio` is Whisper's own repetitiveness measure.

A word "has no audio of its own" when the cross-attention alignment gave it less than
:data:`SILENT_WORD_SECONDS`: Whisper wrote it, but nothing in the audio was heard as it.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from captions.engines.local_agreement import normalise
from captions.events import Word

SILENT_WORD_SECONDS = 0.02
"""A word aligned shorter than this has no audio of its own: text past the speech."""
ECHO_SIMILARITY = 0.7
"""Two words this alike (difflib ratio of their letters) are one word heard twice."""


def merge_punctuation(aligned: Sequence[Mapping[str, Any]], base: float) -> list[Word]:
    """Whisper's word pieces (``{"word", "start", "end"}``, seconds from ``base``) to words
    in stream time; lone punctuation and pieces without a leading space ("'clock" after
    "o") join the word before."""
    words: list[Word] = []
    for item in aligned:
        raw = str(item["word"])
        text = raw.strip()
        if not text:
            continue
        start, end = base + float(item["start"]), base + float(item["end"])
        continues = not raw[0].isspace() or not any(ch.isalnum() for ch in text)
        if words and continues:
            last = words[-1]
            words[-1] = Word(last.text + text, last.start, max(last.end, end))
        else:
            words.append(Word(text, start, max(start, end)))
    return words


def not_before(words: list[Word], onset: float) -> list[Word]:
    """Words starting no earlier than ``onset`` (a word that would end before it ends there).

    The cross-attention alignment puts the first word's start at the start of the
    decoded audio, i.e. at the pre-roll's start, up to half a second before the voice:
    a caption cue then began before anyone spoke."""
    return [
        w if w.start >= onset else Word(w.text, min(onset, w.end), w.end, w.final) for w in words
    ]


def is_silent(words: Sequence[Word]) -> bool:
    """Every word has no audio of its own (see :data:`SILENT_WORD_SECONDS`)."""
    return all(w.end - w.start < SILENT_WORD_SECONDS for w in words)


def cut_repetition(words: list[Word]) -> list[Word]:
    """Cuts a decoding loop (:func:`cut_loop`), or else echoes off the end (:func:`cut_echo`)."""
    cut = cut_loop(words)
    return cut if len(cut) < len(words) else cut_echo(words)


def cut_loop(words: list[Word]) -> list[Word]:
    """Cuts a decoding loop at its first repeat: 1-2 words said three times in a row
    ("replied he replied he replied he"), or a run of 3+ words said twice in a row that
    starts a third time or whose second time has no audio of its own.

    Greedy Whisper sometimes loops on the last words near the end of the audio; a
    phrase really said twice ("tear down the fence, tear down the fence") has audio
    under both copies and is not followed by a third start, so it stays.
    """
    keys = [normalise(w.text) for w in words]
    for i in range(len(keys)):
        for run in range(1, (len(keys) - i) // 2 + 1):
            once, again = keys[i : i + run], keys[i + run : i + 2 * run]
            if once != again:
                continue
            third = keys[i + 2 * run : i + 3 * run]
            looping = bool(third) and once[: len(third)] == third
            if third == once or (run >= 3 and (looping or is_silent(words[i + run : i + 2 * run]))):
                return words[: i + run]
    return words


def cut_unheard(words: list[Word]) -> list[Word]:
    """Cuts the hypothesis before two words in a row without audio of their own: the
    alignment found nothing for text that Whisper made up (often after a trim, from its
    prompt); the real words after them return, aligned, in later hypotheses."""
    for i in range(len(words) - 1):
        if is_silent(words[i : i + 2]):
            return words[:i]
    return words


def cut_echo(words: list[Word]) -> list[Word]:
    """Cuts trailing words without audio that repeat words heard earlier ("... he said.
    He said."): Whisper echoing its own text past the end of the speech."""
    silent = 0
    while silent < len(words) and is_silent(words[len(words) - silent - 1 :]):
        silent += 1
    keys = [normalise(w.text) for w in words]
    for size in range(silent, 0, -1):
        echo, before = keys[len(keys) - size :], keys[: len(keys) - size]
        if size == 1 and before[-1:] == echo:
            return words[:-1]
        if size >= 2 and any(before[i : i + size] == echo for i in range(len(before) - size + 1)):
            return words[: len(words) - size]
    return words


def compression_ratio(words: Sequence[Word]) -> float:
    """Whisper's repetitiveness test: text length over its zlib-compressed length (Whisper
    treats above 2.4 as a degenerate, repeating decode)."""
    text = " ".join(w.text for w in words).encode()
    return len(text) / max(1, len(zlib.compress(text)))


def with_trailing_words(
    words: list[Word], earlier: Sequence[Word], *, before: float, near: float = 0.5
) -> list[Word]:
    """``words`` followed by the words an ``earlier`` hypothesis of the same audio heard
    after ``words``' last word (found by text, within ``near`` seconds of it) that start
    before ``before``; unless the first of them sounds like that last word again (an
    echo: "Anuli Annuli" for one "annuler")."""
    if not words:
        return words
    last = words[-1]
    key = normalise(last.text)
    for j in range(len(earlier) - 1, -1, -1):
        if normalise(earlier[j].text) == key and abs(earlier[j].start - last.start) < near:
            extra = [w for w in earlier[j + 1 :] if w.start < before]
            if extra and _sounds_alike(normalise(extra[0].text), key):
                return words
            return [*words, *extra]
    return words


def _sounds_alike(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio() >= ECHO_SIMILARITY
