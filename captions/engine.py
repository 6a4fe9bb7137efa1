"""The streaming speech engine interface.

An :class:`Engine` holds one loaded model and serves many speakers. Each speaker has
a :class:`Session`: sans-I/O recognition state fed through a bounded, thread-safe
:class:`AudioInbox`, and reporting through its :class:`~captions.track.CaptionTrack`.
The engine only ever runs inside one worker thread (see :mod:`captions.runtime`),
which calls :meth:`Engine.step` with every session that has work, so an engine can
batch across speakers (Kyutai) or serve them in turn (Whisper).

Evaluation drives the same objects synchronously on a virtual clock.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from captions.audio import PCM
from captions.costs import StepCosts
from captions.track import CaptionTrack
from common.exceptions import CaptionsError

AUTO_LANGUAGE = "mul"
"""The language a multilingual engine offers for "each speaker's own": ISO 639's code for
multiple languages, so it passes wherever a language code does (rooms, the page, the
protocol). A session opened with it detects its speaker's language (docs/languages.md)."""

PREFERRED_LANGUAGES = ("fr", "en")
"""Listed first by a multilingual engine, after :data:`AUTO_LANGUAGE`: the languages its
users meet in (the page offers them in this order)."""


@dataclass(frozen=True)
class EngineInfo:
    name: str
    sample_rate: int
    """Native sample rate; streams resample to it on the way in."""
    frame_samples: int
    """Smallest unit of audio the engine consumes at once."""
    delay_seconds: float
    """Algorithmic delay: audio needed after a word before it can be emitted."""
    languages: tuple[str, ...] = ("en",)
    """What a stream may ask for; the first is the default (see :data:`AUTO_LANGUAGE`)."""
    max_streams: int | None = None
    """Concurrent sessions the engine accepts; None means limited by compute only."""
    model: str = ""
    description: str = ""
    real_time_only: bool = False
    """The engine runs on the wall clock (a remote server paces it), so it cannot be
    driven on a virtual clock (``captions transcribe --fast``, simulations)."""


class AudioInbox:
    """Bounded FIFO of native-rate mono PCM between the network side and the engine.

    Policy when full (the engine fell behind): the *oldest* audio is dropped, the drop
    is counted, and the session is marked degraded. Stream time keeps counting dropped
    samples, so word times stay aligned with the speaker's real timeline.
    """

    def __init__(self, sample_rate: int, *, max_seconds: float = 10.0) -> None:
        self.sample_rate = sample_rate
        self.capacity = max(1, int(max_seconds * sample_rate))
        self._chunks: list[PCM] = []
        self._size = 0
        self._read_pos = 0  # absolute index of the first sample still in the inbox
        self.dropped_samples = 0
        self._lock = threading.Lock()

    def push(self, pcm: PCM) -> int:
        """Appends audio; returns how many old samples had to be dropped to fit it."""
        if pcm.size == 0:
            return 0
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        with self._lock:
            self._chunks.append(pcm)
            self._size += pcm.size
            overflow = self._size - self.capacity
            if overflow > 0:
                self._discard(overflow)
                self.dropped_samples += overflow
            return max(0, overflow)

    def take(self, max_samples: int | None = None) -> tuple[int, PCM]:
        """Removes up to ``max_samples`` (all by default); returns (absolute offset, pcm)."""
        with self._lock:
            n = self._size if max_samples is None else min(max_samples, self._size)
            offset = self._read_pos
            if n == 0:
                return offset, np.zeros(0, dtype=np.float32)
            data = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            out, rest = data[:n], data[n:]
            self._chunks = [rest] if rest.size else []
            self._size -= n
            self._read_pos += n
            return offset, out

    @property
    def available(self) -> int:
        with self._lock:
            return self._size

    @property
    def position(self) -> int:
        """Absolute sample index of the next sample :meth:`take` would return."""
        with self._lock:
            return self._read_pos

    def _discard(self, n: int) -> None:
        data = np.concatenate(self._chunks)
        self._chunks = [data[n:]] if data.size > n else []
        self._size -= n
        self._read_pos += n


@dataclass(eq=False)
class Session:
    """One speaker's recognition state. Engines subclass it to add their own state.

    Control flags are set by the runtime from the event loop and acted on by the engine
    in :meth:`Engine.step`: ``flush_requested`` closes the current utterance, and
    ``end_requested`` flushes everything and then sets ``finished``.
    """

    track: CaptionTrack
    inbox: AudioInbox
    language: str | None = None
    flush_requested: bool = False
    end_requested: bool = False
    finished: bool = False
    failure: CaptionsError | None = None
    """Why the engine gave up on this stream for good (set with ``finished``); the
    runtime raises it to the stream's owner after the last events."""
    wake: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def has_control(self) -> bool:
        return (self.flush_requested or self.end_requested) and not self.finished

    def ready(self) -> bool:
        """True when a step would do work. Engines refine this (e.g. a minimum chunk)."""
        return self.has_control or self.inbox.available > 0


class Engine(ABC):
    info: EngineInfo
    costs: StepCosts | None = None
    """Per-step compute totals, for engines that measure them (see :mod:`captions.costs`)."""

    @abstractmethod
    def create_session(
        self, track: CaptionTrack, inbox: AudioInbox, *, language: str | None = None
    ) -> Session:
        """Allocates per-speaker state. Raises CapacityError when no slot is free."""

    @abstractmethod
    def step(self, sessions: Sequence[Session]) -> None:
        """Does one unit of work for each of ``sessions`` (all have ``ready()``).

        Called from a single worker thread. Must honour ``flush_requested`` and
        ``end_requested`` (clearing the former, setting ``finished`` for the latter).
        Read the flags *before* taking audio from the inbox: the runtime pushes a
        stream's last audio before it sets ``end_requested``, so reading in that order
        never finishes a session with audio still waiting.
        """

    def release_session(self, session: Session) -> None:
        """Frees the session's slot; called once after it finished or was abandoned."""

    def close(self) -> None:
        """Releases the model."""


def seconds(samples: int, sample_rate: int) -> float:
    return samples / float(sample_rate)


def sessions_needing_work(sessions: Sequence[Session]) -> list[Session]:
    return [s for s in sessions if not s.finished and s.ready()]
