import numpy as np
import pytest

from captions.audio import load_audio
from captions.vad import SileroVad, SpeechChange, VadStream
from tests.speech import speech_with_pauses

RATE = 16_000


@pytest.fixture(scope="module")
def model() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def two_sentences() -> np.ndarray:
    path = speech_with_pauses([1.0, "Hello there.", 1.5, "How are you today?", 1.0])
    return load_audio(path)


def feed_in_chunks(vad: VadStream, pcm: np.ndarray, sizes: list[int]) -> list[SpeechChange]:
    changes: list[SpeechChange] = []
    at, i = 0, 0
    while at < pcm.size:
        n = sizes[i % len(sizes)]
        changes += vad.feed(pcm[at : at + n])
        at, i = at + n, i + 1
    return changes


def test_speech_segments_found_with_pause_between(
    model: SileroVad, two_sentences: np.ndarray
) -> None:
    changes = VadStream(model).feed(two_sentences)
    assert [c.kind for c in changes] == ["start", "end", "start", "end"]
    first_start, first_end = changes[0].sample / RATE, changes[1].sample / RATE
    assert 0.8 <= first_start <= 1.3
    assert first_end < changes[2].sample / RATE - 1.0  # the 1.5 s pause


def test_chunking_does_not_change_the_result(model: SileroVad, two_sentences: np.ndarray) -> None:
    whole = VadStream(model).feed(two_sentences)
    chunked = feed_in_chunks(VadStream(model), two_sentences, [100, 1600, 333, 5000])
    assert chunked == whole


def test_silence_and_noise_are_not_speech(model: SileroVad) -> None:
    rng = np.random.default_rng(3)
    vad = VadStream(model)
    assert vad.feed(np.zeros(3 * RATE, dtype=np.float32)) == []
    assert vad.feed((0.05 * rng.standard_normal(3 * RATE)).astype(np.float32)) == []
    assert not vad.in_speech


def test_reset_forgets_state_and_sets_position(model: SileroVad, two_sentences: np.ndarray) -> None:
    vad = VadStream(model)
    vad.feed(two_sentences[: 2 * RATE])  # stops inside the first sentence
    assert vad.in_speech
    vad.reset(position=10 * RATE)
    assert not vad.in_speech and vad.speech_start is None
    changes = vad.feed(two_sentences)
    assert changes[0] == SpeechChange(
        "start", 10 * RATE + VadStream(model).feed(two_sentences)[0].sample
    )
