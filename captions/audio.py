"""Audio in: decoding files with PyAV and streaming resampling to an engine's native rate.

All PCM inside the project is mono float32 in [-1, 1] at the engine's native rate.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from common.exceptions import AudioDecodeError, AudioError, EmptyAudioError

PCM = npt.NDArray[np.float32]


def load_audio(
    path: str | Path,
    *,
    sample_rate: int = 16_000,
    channel: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> PCM:
    """Decodes ``path`` to mono float32 at ``sample_rate``.

    ``channel`` keeps one channel of a multi-channel file (otherwise channels are
    averaged); ``start``/``end`` cut a segment, in seconds.
    Raises :class:`AudioError` subclasses with a message naming the file.
    """
    channels = load_channels(path, sample_rate=sample_rate)
    if channel is not None:
        if not 0 <= channel < channels.shape[0]:
            raise AudioError(f"{path}: no channel {channel} (file has {channels.shape[0]})")
        pcm = channels[channel]
    else:
        pcm = channels.mean(axis=0).astype(np.float32)
    a = 0 if start is None else max(0, round(start * sample_rate))
    b = pcm.shape[0] if end is None else round(end * sample_rate)
    pcm = pcm[a:b]
    if pcm.size == 0:
        raise EmptyAudioError(f"{path}: the requested segment holds no audio")
    return np.ascontiguousarray(pcm, dtype=np.float32)


def load_channels(path: str | Path, *, sample_rate: int = 16_000) -> npt.NDArray[np.float32]:
    """Decodes every channel of ``path``: shape ``(channels, samples)``, float32."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path}: not an audio file (no audio stream)")
            stream = container.streams.audio[0]
            n_channels = stream.codec_context.channels or 1
            layout = "mono" if n_channels == 1 else "stereo" if n_channels == 2 else None
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
            chunks: list[npt.NDArray[np.float32]] = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().astype(np.float32, copy=False))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().astype(np.float32, copy=False))
    except AudioError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"{path}: not decodable audio ({exc})") from exc
    if not chunks:
        raise EmptyAudioError(f"{path}: contains no audio samples")
    data = np.concatenate(chunks, axis=1)
    if data.shape[1] == 0:
        raise EmptyAudioError(f"{path}: contains no audio samples")
    return data


class StreamResampler:
    """Stateful resampler for live audio: any rate and channel layout in, mono out.

    Keeps filter state across calls so chunk boundaries leave no clicks. Input is
    int16 or float arrays shaped ``(samples,)`` or ``(samples, channels)``.
    """

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        self._in_rate: int | None = None
        self._resampler: av.AudioResampler | None = None

    def __call__(self, pcm: npt.ArrayLike, sample_rate: int) -> PCM:
        data = np.asarray(pcm)
        if data.ndim == 2:
            data = data.mean(axis=1)
        elif data.ndim != 1:
            raise AudioError(f"expected (samples,) or (samples, channels) audio, got {data.shape}")
        if data.dtype == np.int16:
            mono = data.astype(np.float32) / 32768.0
        elif np.issubdtype(data.dtype, np.floating):
            mono = data.astype(np.float32, copy=False)
        else:
            raise AudioError(f"unsupported sample type {data.dtype}")
        if sample_rate <= 0:
            raise AudioError(f"invalid sample rate {sample_rate}")
        if sample_rate == self.out_rate:
            return np.ascontiguousarray(mono, dtype=np.float32)
        if self._in_rate != sample_rate:
            self._in_rate = sample_rate
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
        assert self._resampler is not None
        if mono.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)
