"""Scripted fake engine: deterministic words at scripted stream times.

A word becomes a partial once the stream has consumed audio up to its end, and final
``delay`` seconds later; voiced frames are not needed, so timing tests stay exact.
``steps_seen`` records every batch, and ``samples_seen`` the audio each session got,
so tests can assert what reached the engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captions.engine import AudioInbox, Engine, EngineInfo, Session
from captions.events import Word
from captions.track import CaptionTrack
from common.exceptions import CapacityError
from tests.speech import write_wav


@dataclass(eq=False)
class ScriptedSession(Session):
    script: list[tuple[str, float, float]] = field(default_factory=list)
    consumed: int = 0
    emitted: int = 0


class ScriptedEngine(Engine):
    def __init__(
        self,
        script: Sequence[tuple[str, float, float]] = (),
        *,
        sample_rate: int = 16_000,
        delay: float = 0.5,
        max_streams: int | None = None,
    ) -> None:
        self.info = EngineInfo(
            name="scripted",
            sample_rate=sample_rate,
            frame_samples=sample_rate // 10,
            delay_seconds=delay,
            max_streams=max_streams,
        )
        self.script = list(script)
        self.active = 0
        self.steps_seen: list[list[str]] = []
        self.samples_seen: dict[str, int] = {}

    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> ScriptedSession:
        if self.info.max_streams is not None and self.active >= self.info.max_streams:
            raise CapacityError("no free channels")
        self.active += 1
        return ScriptedSession(track=track, inbox=inbox, language=language, script=self.script)

    def release_session(self, session: Session) -> None:
        self.active -= 1

    def step(self, sessions: Sequence[Session]) -> None:
        self.steps_seen.append([s.track.speaker.id for s in sessions])
        rate = self.info.sample_rate
        for s in sessions:
            assert isinstance(s, ScriptedSession)
            # Flags first: audio pushed before a close is already in the inbox then.
            ending, flushing = s.end_requested, s.flush_requested
            _, pcm = s.inbox.take()
            s.consumed += pcm.size
            key = s.track.speaker.id
            self.samples_seen[key] = self.samples_seen.get(key, 0) + pcm.size
            now = s.consumed / rate
            words = [Word(t, a, b) for t, a, b in s.script[s.emitted :] if b <= now]
            final = [w for w in words if w.end + self.info.delay_seconds <= now]
            s.emitted += len(final)
            if ending or flushing:
                s.track.end_utterance(tail=words)
                s.emitted += len(words) - len(final)
                s.flush_requested = False
                s.finished = ending
            else:
                s.track.update(commit=final, tail=words[len(final) :])


def silent_manifest(
    folder: Path, script: Sequence[tuple[str, float, float]], *, items: int
) -> Path:
    """A manifest of ``items`` 1-second silent items whose words are ``script`` (for the
    scripted engine, which needs no real speech)."""
    write_wav(folder / "a.wav", np.zeros(16_000, np.float32), 16_000)
    words = [{"word": w, "start": a, "end": b} for w, a, b in script]
    text = " ".join(w for w, _, _ in script)
    lines = [
        json.dumps({"id": f"item{i}", "audio": "a.wav", "text": text, "words": words})
        for i in range(items)
    ]
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
