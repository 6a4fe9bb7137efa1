"""Streaming voice activity detection with Silero VAD (the ONNX model bundled in faster-whisper).

:class:`SileroVad` holds the loaded model (one per engine, shared by every speaker).
:class:`VadStream` is one speaker's sans-I/O state: the model's recurrent state, the
audio context between 32 ms frames, and a hysteresis gate that turns frame
probabilities into speech segments. Feed it audio with :meth:`VadStream.feed`; it
returns :class:`SpeechChange` events (speech started / ended, at absolute sample
positions). :meth:`VadStream.reset` forgets everything.

The gate opens when a frame's speech probability reaches ``threshold`` and closes
after ``min_silence_seconds`` below ``threshold - 0.15``. Segments shorter than
``min_speech_seconds`` are dropped, so clicks and short noise bursts never reach the
recogniser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from captions.audio import PCM
from common.exceptions import ModelNotFoundError

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 512  # what Silero expects at 16 kHz (32 ms)
_CONTEXT_SAMPLES = 64
_STATE_SHAPE = (1, 1, 128)


def default_model_path() -> str:
    from faster_whisper.vad import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


class SileroVad:
    """The Silero VAD ONNX model. Stateless itself; state lives in each :class:`VadStream`."""

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime

        path = path or default_model_path()
        if not os.path.exists(path):
            raise ModelNotFoundError(
                f"Silero VAD model not found at {path} (pip install faster-whisper)"
            )
        opts = onnxruntime.SessionOptions()
        # One thread: frames are tiny, and the recogniser needs the cores.
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            path, providers=["CPUExecutionProvider"], sess_options=opts
        )

    def run(self, frames: PCM, context: PCM, h: PCM, c: PCM) -> tuple[PCM, PCM, PCM]:
        """Speech probabilities of ``frames`` (shape (n, 512)), consecutive in time.

        ``context`` is the last 64 samples before them; returns (probs, h, c).
        """
        contexts = np.concatenate([context.reshape(1, -1), frames[:-1, -_CONTEXT_SAMPLES:]])
        batch = np.concatenate([contexts, frames], axis=1).astype(np.float32, copy=False)
        probs, h, c = self._session.run(None, {"input": batch, "h": h, "c": c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), h, c


@dataclass(frozen=True)
class SpeechChange:
    kind: Literal["start", "end"]
    sample: int
    """Absolute sample index where speech started, or where it ended."""


class VadStream:
    """One speaker's streaming VAD state and speech gate."""

    def __init__(
        self,
        model: SileroVad,
        *,
        threshold: float = 0.5,
        min_silence_seconds: float = 0.5,
        min_speech_seconds: float = 0.25,
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.min_silence = round(min_silence_seconds * SAMPLE_RATE)
        self.min_speech = round(min_speech_seconds * SAMPLE_RATE)
        self.reset()

    def reset(self, position: int = 0) -> None:
        """Forgets all state; the next sample fed is at absolute index ``position``."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = position  # absolute index of the first pending sample
        self.in_speech = False
        self._confirmed = False  # the current segment has lasted min_speech
        self._speech_start = 0
        self._silence_start: int | None = None
        self.last_probability = 0.0

    @property
    def speech_start(self) -> int | None:
        """Absolute start of the confirmed ongoing speech segment, if any."""
        return self._speech_start if self.in_speech and self._confirmed else None

    def feed(self, pcm: PCM) -> list[SpeechChange]:
        """Consumes audio (whole 32 ms frames; the rest waits for the next call)."""
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n_frames = data.size // FRAME_SAMPLES
        self._pending = data[n_frames * FRAME_SAMPLES :].copy()
        if n_frames == 0:
            return []
        frames = data[: n_frames * FRAME_SAMPLES].reshape(n_frames, FRAME_SAMPLES)
        probs, self._h, self._c = self.model.run(frames, self._context, self._h, self._c)
        self._context = frames[-1, -_CONTEXT_SAMPLES:].copy()
        changes: list[SpeechChange] = []
        for i, p in enumerate(probs):
            frame_start = self._position + i * FRAME_SAMPLES
            self._gate(float(p), frame_start, changes)
        self._position += n_frames * FRAME_SAMPLES
        self.last_probability = float(probs[-1])
        return changes

    def _gate(self, p: float, frame_start: int, changes: list[SpeechChange]) -> None:
        frame_end = frame_start + FRAME_SAMPLES
        if not self.in_speech:
            if p >= self.threshold:
                self.in_speech, self._confirmed = True, False
                self._speech_start = frame_start
                self._silence_start = None
            return
        if p >= self.threshold:
            self._silence_start = None
        elif p < self.neg_threshold and self._silence_start is None:
            self._silence_start = frame_start
        long_enough = frame_end - self._speech_start >= self.min_speech
        if not self._confirmed and long_enough and self._silence_start is None:
            self._confirmed = True
            changes.append(SpeechChange("start", self._speech_start))
        if self._silence_start is not None and frame_end - self._silence_start >= self.min_silence:
            if self._confirmed:
                changes.append(SpeechChange("end", self._silence_start))
            self.in_speech = self._confirmed = False
            self._silence_start = None
        elif not self._confirmed and self._silence_start is not None:
            # A blip that fell silent before lasting min_speech: not speech.
            self.in_speech = False
            self._silence_start = None
