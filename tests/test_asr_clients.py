"""``/api/asr-streaming`` driven by the clients that talk to moshi-server in the wild.

- Kyutai's own client (``scripts/stt_from_file_rust_server.py`` in
  ``kyutai-labs/delayed-streams-modeling``): its message sequence, replayed with raw
  frames, against a random-weight Kyutai engine; the words it receives are the words
  the reference loop derives from the same audio.
- La Suite Meet's LiveKit plugin (``livekit-plugins-kyutai-lasuite``), unchanged: its
  own ``SpeechStream`` against the server, for protocol shape behind the random Kyutai
  engine, and for accuracy (a WER bound) behind the Whisper engine with real speech.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jiwer
import msgpack
import numpy as np
import pytest
import websockets

from captions.audio import load_audio
from captions.engine import Engine
from captions.engines import EngineOptions, create_engine
from captions.engines.kyutai import FRAME_SAMPLES, SAMPLE_RATE, KyutaiEngine, locate_checkpoint
from evaluation.kyutai_checkpoint import write_random_checkpoint
from evaluation.normalize import normalize
from tests.kyutai_reference import Reference, RefWord
from tests.speech import speech_with_pauses
from tests.test_asr_server import KEY, serving
from tests.test_kyutai import voice

pytestmark = pytest.mark.slow

FIELDS = {
    "Ready": {"type"},
    "Word": {"type", "text", "start_time"},
    "EndWord": {"type", "stop_time"},
    "Step": {"type", "step_idx", "prs", "buffered_pcm"},
    "Marker": {"type", "id"},
}
"""moshi-server's OutMsg variants (rust/moshi-server/src/asr.rs) and their fields."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shaped like stt-1b-en_fr (0.5 s delay, 4 extra heads), biased toward boundaries
    # and padding so that random weights make words.
    return write_random_checkpoint(
        tmp_path_factory.mktemp("kyutai-clients") / "stt-1b-like",
        audio_delay_seconds=0.5,
        audio_silence_prefix_seconds=0.0,
        extra_heads=4,
        text_bias={0: 1.6, 3: 1.8},
    )


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> Reference:
    return Reference(checkpoint)


def kyutai_engine(checkpoint: Path) -> KyutaiEngine:
    # One slot: the same batch size as the reference, so the arithmetic is bit-identical.
    # No turn closing: its random pause heads would close turns the reference knows nothing of.
    return KyutaiEngine(
        locate_checkpoint(str(checkpoint)), device="cpu", max_streams=1, end_of_turn_threshold=2.0
    )


def audio_message(pcm: np.ndarray) -> bytes:
    # As Kyutai's client packs it.
    samples = [float(x) for x in pcm]
    return bytes(msgpack.packb({"type": "Audio", "pcm": samples}, use_single_float=True))


def word_triples(messages: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """Word + EndWord pairs, as Kyutai's client assembles them into timed words."""
    out: list[tuple[str, float, float]] = []
    for m in messages:
        if m["type"] == "Word":
            out.append((m["text"], m["start_time"], m["start_time"]))
        elif m["type"] == "EndWord" and out:
            out[-1] = (out[-1][0], out[-1][1], m["stop_time"])
    return out


def as_triples(words: list[RefWord]) -> list[tuple[str, float, float]]:
    return [(w.text, round(w.start, 3), round(w.end, 3)) for w in words]


async def test_kyutais_file_client_sequence(checkpoint: Path, reference: Reference) -> None:
    speech = voice(1.6, seed=3)
    second = np.zeros(SAMPLE_RATE, dtype=np.float32)
    sent: list[np.ndarray] = []
    messages: list[dict[str, Any]] = []
    async with (
        serving(kyutai_engine(checkpoint)) as url,
        websockets.connect(url, additional_headers={"kyutai-api-key": KEY}) as ws,
    ):

        async def send(pcm: np.ndarray) -> None:
            sent.append(pcm)
            await ws.send(audio_message(pcm))

        async def sender() -> None:
            # The client's order: a second of silence, the file in 1920-sample chunks,
            # silence, the marker, then more silence until the marker comes back.
            await send(second)
            for i in range(0, speech.size, FRAME_SAMPLES):
                await send(speech[i : i + FRAME_SAMPLES])
            await send(second)
            await ws.send(bytes(msgpack.packb({"type": "Marker", "id": 0})))
            for _ in range(35):
                await send(second)
                await asyncio.sleep(0.5)

        async def receiver() -> None:
            async for data in ws:
                assert isinstance(data, bytes)
                body = msgpack.unpackb(data, raw=False)
                messages.append(body)
                if body["type"] == "Marker":
                    return

        sending = asyncio.create_task(sender())
        try:
            await asyncio.wait_for(receiver(), 120)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending

    assert messages[0] == {"type": "Ready"}
    assert messages[-1] == {"type": "Marker", "id": 0}
    for m in messages:
        assert set(m) == FIELDS[m["type"]], m
    steps = [m for m in messages if m["type"] == "Step"]
    assert [s["step_idx"] for s in steps] == list(range(1, len(steps) + 1))
    assert all(len(s["prs"]) == 4 and all(0.0 <= p <= 1.0 for p in s["prs"]) for s in steps)
    # Every frame before the marker, plus the delay, was stepped before it came back.
    before_marker = sum(p.size for p in sent[: 2 + -(-speech.size // FRAME_SAMPLES)])
    assert len(steps) * FRAME_SAMPLES >= before_marker + 0.5 * SAMPLE_RATE - FRAME_SAMPLES

    # The words: those the reference derives from the same audio, in the same order.
    got = word_triples(messages)
    ref = as_triples(reference.words(reference.run(np.concatenate(sent))))
    assert len(got) >= 2 and got == ref[: len(got)]


# -- La Suite Meet's plugin ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def lasuite_stream(url: str) -> AsyncIterator[Any]:
    import aiohttp
    from lasuite.plugins.kyutai import STT

    async with aiohttp.ClientSession() as http:
        stt = STT(api_key=KEY, http_session=http, base_url=url)
        stream = stt.stream()
        try:
            yield stream
        finally:
            await stream.aclose()


async def lasuite_transcribe(url: str, pcm: np.ndarray, *, quiet_seconds: float) -> list[Any]:
    """Pushes ``pcm`` (24 kHz) through the plugin's SpeechStream in 20 ms frames, as
    LiveKit delivers a track, and collects its events until none came for
    ``quiet_seconds``."""
    from livekit import rtc

    events: list[Any] = []
    async with lasuite_stream(url) as stream:
        samples = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
        step = SAMPLE_RATE // 50
        for i in range(0, samples.size, step):
            chunk = samples[i : i + step]
            stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, chunk.size))
        stream.flush()
        with contextlib.suppress(TimeoutError):
            while True:
                events.append(await asyncio.wait_for(stream.__anext__(), quiet_seconds))
    return events


def final_words(events: list[Any]) -> list[tuple[str, float]]:
    from livekit.agents import stt

    return [
        (e.alternatives[0].text, e.alternatives[0].start_time)
        for e in events
        if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    ]


async def test_lasuite_plugin_against_the_kyutai_engine(
    checkpoint: Path, reference: Reference
) -> None:
    pcm = np.concatenate([voice(1.6, seed=3), np.zeros(SAMPLE_RATE, dtype=np.float32)])
    async with serving(kyutai_engine(checkpoint)) as url:
        events = await lasuite_transcribe(url, pcm, quiet_seconds=4.0)
    words = final_words(events)
    # The plugin pads its last frame to 1920 samples; the server then saw this audio.
    padded = np.concatenate([pcm, np.zeros(-pcm.size % FRAME_SAMPLES, dtype=np.float32)])
    ref = [(w.text, round(w.start, 3)) for w in reference.words(reference.run(padded))]
    assert len(words) >= 2 and words == ref[: len(words)]


FOX = "The quick brown fox jumps over the lazy dog near the river bank."
WEATHER = "Tomorrow the weather will be sunny with a light breeze in the afternoon."


async def test_lasuite_plugin_transcribes_real_speech_through_whisper() -> None:
    pcm = load_audio(
        speech_with_pauses([FOX, 0.8, WEATHER, 2.0], sample_rate=SAMPLE_RATE),
        sample_rate=SAMPLE_RATE,
    )
    engine: Engine = create_engine("whisper", EngineOptions(max_streams=1))
    async with serving(engine) as url:
        events = await lasuite_transcribe(url, pcm, quiet_seconds=8.0)
    text = " ".join(word for word, _ in final_words(events))
    # Whisper tiny.en on clean synthesized speech: the bound the engine's own tests use.
    wer = jiwer.wer(normalize(f"{FOX} {WEATHER}"), normalize(text) or "<empty>")
    assert wer <= 0.25, text
