"""Caption events: the wire format shared by the CLI, the sidecar, the page and the bridges.

An *utterance* is one stretch of speech by one speaker. While it is open, the engine
sends ``partial`` events; each carries every word of the utterance so far, with the
words that can no longer change marked ``final``. Closing the utterance sends one
``final`` event in which every word is final. Revisions count up per utterance.

Invariants (enforced by :class:`captions.track.CaptionTrack`, checked by the tests):

- a word once final never changes, in text or in time, in any later revision;
- a partial only revises the tail of words that are not final yet;
- closing a stream flushes its tail as a ``final`` event.

See ``docs/caption-format.md`` for the JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from common.exceptions import MalformedMessageError

Kind = Literal["partial", "final"]


@dataclass(frozen=True)
class Speaker:
    id: str
    name: str = ""

    @property
    def display_name(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    final: bool = False

    def as_final(self) -> Word:
        return self if self.final else Word(self.text, self.start, self.end, True)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "final": self.final,
        }


@dataclass(frozen=True)
class CaptionEvent:
    speaker: Speaker
    utterance: int
    revision: int
    kind: Kind
    words: tuple[Word, ...]
    emitted_at: float
    # Extra facts a consumer may show, such as {"degraded": True}.
    flags: dict[str, Any] = field(default_factory=dict, compare=False)
    language: str | None = None
    """Language of the utterance's words (e.g. "fr"), where the engine knows it."""

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def final_words(self) -> tuple[Word, ...]:
        return tuple(w for w in self.words if w.final)

    @property
    def start(self) -> float | None:
        return self.words[0].start if self.words else None

    @property
    def end(self) -> float | None:
        return self.words[-1].end if self.words else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "caption",
            "speaker": self.speaker.id,
            "speaker_name": self.speaker.display_name,
            "utterance": self.utterance,
            "revision": self.revision,
            "kind": self.kind,
            "text": self.text,
            "words": [w.to_json() for w in self.words],
            "emitted_at": round(self.emitted_at, 3),
        }
        if self.flags:
            data["flags"] = dict(self.flags)
        if self.language:
            data["language"] = self.language
        return data

    @classmethod
    def from_json(cls, data: Any) -> CaptionEvent:
        """Parses the JSON form; raises :class:`MalformedMessageError` on anything else."""
        try:
            if not isinstance(data, dict) or data.get("type") != "caption":
                raise ValueError("not a caption event")
            kind = data["kind"]
            if kind not in ("partial", "final"):
                raise ValueError(f"bad kind {kind!r}")
            words = tuple(
                Word(str(w["text"]), float(w["start"]), float(w["end"]), bool(w["final"]))
                for w in data["words"]
            )
            return cls(
                speaker=Speaker(str(data["speaker"]), str(data.get("speaker_name", ""))),
                utterance=int(data["utterance"]),
                revision=int(data["revision"]),
                kind=kind,
                words=words,
                emitted_at=float(data["emitted_at"]),
                flags=dict(data.get("flags") or {}),
                language=str(data["language"]) if data.get("language") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessageError(f"invalid caption event: {exc}") from exc
