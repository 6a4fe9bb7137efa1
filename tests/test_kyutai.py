"""Engine ``kyutai`` on a tiny random-weight checkpoint, saved and loaded like a real one."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from captions.clock import VirtualClock
from captions.engine import AudioInbox
from captions.engines import EngineOptions, create_engine
from captions.engines.kyutai import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    KyutaiEngine,
    KyutaiSession,
    locate_checkpoint,
)
from captions.engines.kyutai_text import WordAssembler
from captions.events import CaptionEvent, Speaker
from captions.runtime import EngineRunner
from captions.track import CaptionTrack
from common.exceptions import CapacityError, ModelNotFoundError
from evaluation.kyutai_checkpoint import write_random_checkpoint

pytestmark = pytest.mark.slow

DELAY = 0.48  # the tiny checkpoint's stt_config.audio_delay_seconds


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("kyutai") / "stt-tiny", extra_heads=4)


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> KyutaiEngine:
    torch.manual_seed(0)
    loaded = create_engine(
        "kyutai", EngineOptions(model=str(checkpoint), device="cpu", max_streams=2)
    )
    assert isinstance(loaded, KyutaiEngine)
    return loaded


def voice(seconds: float, seed: int, loud: float = 0.3) -> np.ndarray:
    """Deterministic speech-like audio: a wobbling tone with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 60 * np.sin(2 * np.pi * 1.5 * t + seed)
    pcm = loud * np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE) + 0.05 * rng.standard_normal(
        t.size
    )
    return pcm.astype(np.float32)


def run(engine: KyutaiEngine, audio: dict[str, np.ndarray]) -> dict[str, KyutaiSession]:
    """Streams each speaker's audio to its end, stepping the engine like the runtime does."""
    clock = VirtualClock()
    sessions: dict[str, KyutaiSession] = {}
    for name in audio:
        s = engine.create_session(CaptionTrack(Speaker(name), clock), AudioInbox(SAMPLE_RATE))
        sessions[name] = s
    for name, pcm in audio.items():
        sessions[name].inbox.push(pcm)
        sessions[name].end_requested = True
    while True:
        ready = [s for s in sessions.values() if s.ready()]
        if not ready:
            break
        engine.step(ready)
    for s in sessions.values():
        assert s.finished
        engine.release_session(s)
    return sessions


def texts(events: Sequence[CaptionEvent]) -> list[tuple[str, float, float]]:
    return [(w.text, w.start, w.end) for e in events if e.kind == "final" for w in e.words]


# Rows of one batch may differ in the last float bit (BLAS kernels depend on the row), so
# a speaker is compared with itself in the SAME slot, with and without the other one.


def test_slots_isolate_speakers(engine: KyutaiEngine) -> None:
    b_audio = voice(0.8, seed=2)
    # Slot 0 is held by a speaker who sends nothing: masked out of every step.
    idle = engine.create_session(
        CaptionTrack(Speaker("idle"), VirtualClock()), AudioInbox(SAMPLE_RATE)
    )
    alone = run(engine, {"b": b_audio})["b"]
    engine.release_session(idle)
    assert idle.steps == 0
    b_tokens = list(alone.recent_tokens)
    # The output depends on the input (otherwise this test could not fail).
    assert len(set(b_tokens)) > 1

    # A talks at the same time, louder and longer, in slot 0.
    both = run(engine, {"a": voice(1.2, seed=7, loud=0.9), "b": b_audio})
    assert (both["a"].slot, both["b"].slot) == (0, alone.slot) == (0, 1)
    assert list(both["a"].recent_tokens)[: len(b_tokens)] != b_tokens
    assert list(both["b"].recent_tokens) == b_tokens
    assert texts(both["b"].track.take_events()) == texts(alone.track.take_events())


def test_reused_slot_starts_clean(engine: KyutaiEngine) -> None:
    b_audio = voice(0.8, seed=4)
    first = run(engine, {"b": b_audio})["b"]
    b_tokens = list(first.recent_tokens)
    other = run(engine, {"a": voice(1.0, seed=9, loud=0.9)})["a"]
    assert other.slot == first.slot and list(other.recent_tokens) != b_tokens
    # B again in the slot A just used: nothing of A's Mimi or LM state leaks into it.
    again = run(engine, {"b": b_audio})["b"]
    assert again.slot == first.slot
    assert list(again.recent_tokens) == b_tokens
    assert texts(again.track.take_events()) == texts(first.track.take_events())
    # Every frame plus the flush (the delay's worth of frames, as Kyutai's reference) was stepped.
    assert again.steps == math.ceil(b_audio.size / FRAME_SAMPLES) + math.ceil(DELAY * 12.5)


def test_full_pool_refuses_with_no_free_channels(engine: KyutaiEngine) -> None:
    clock = VirtualClock()
    taken = [
        engine.create_session(CaptionTrack(Speaker(str(i)), clock), AudioInbox(SAMPLE_RATE))
        for i in range(engine.info.max_streams or 0)
    ]
    with pytest.raises(CapacityError, match="no free channels"):
        engine.create_session(CaptionTrack(Speaker("x"), clock), AudioInbox(SAMPLE_RATE))
    for s in taken:
        engine.release_session(s)
    assert engine.free_slots == engine.info.max_streams


class ScriptedLM:
    """Stands in for moshi's LMGen: scripted text tokens (and pause heads) per slot."""

    def __init__(self, tokens: Sequence[int], pauses: Sequence[float] = (), slots: int = 2) -> None:
        self.tokens = list(tokens)
        self.pauses = list(pauses)
        self.frame = [0] * slots

    def reset_streaming(self, mask: torch.Tensor) -> None:
        for i, reset in enumerate(mask.tolist()):
            if reset:
                self.frame[i] = 0

    def set_exec_mask(self, mask: torch.Tensor) -> None:
        self.active = mask.tolist()

    def step_with_extra_heads(self, codes: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = torch.full((len(self.frame), 1, 1), 3, dtype=torch.long)
        head = torch.zeros((len(self.frame), 1, 6))
        for i, active in enumerate(self.active):
            if active:
                f = self.frame[i]
                out[i, 0, 0] = self.tokens[f] if f < len(self.tokens) else 3
                head[i, 0, 0] = self.pauses[f] if f < len(self.pauses) else 0.0
                self.frame[i] += 1
        return out, [head]


def ids(engine: KyutaiEngine, word: str) -> list[int]:
    pieces: list[int] = engine._tokenizer.encode(word)
    return pieces


def at(frame: float) -> float:
    """Stream time of a frame position in the tiny checkpoint (no prefix, DELAY)."""
    return max(0.0, frame * 0.08 - DELAY)


def test_flush_emits_the_tail_with_compensated_times(
    engine: KyutaiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    the, fox = ids(engine, "the"), ids(engine, "fox")
    # Audio is 10 frames, the flush 6 more; "fox" only starts during the flush.
    script = [3] * 6 + [0, *the]
    script += [3] * (12 - len(script)) + [0, *fox]
    script += [3] * (16 - len(script))
    assert len(script) == 16 and script[12] == 0
    monkeypatch.setattr(engine, "_gen", ScriptedLM(script))
    clock = VirtualClock()
    s = engine.create_session(CaptionTrack(Speaker("s"), clock), AudioInbox(SAMPLE_RATE))
    s.inbox.push(np.zeros(10 * FRAME_SAMPLES, dtype=np.float32))
    while s.ready():
        engine.step([s])
    before = s.track.take_events()
    # "the" is shown (partial) at once; final only once the boundary after it comes.
    assert [w.text for w in before[-1].words] == ["the"] and not before[-1].words[0].final
    s.end_requested = True
    while s.ready():
        engine.step([s])
    engine.release_session(s)
    assert s.finished and s.steps == 16
    final = [e for e in s.track.take_events() if e.kind == "final"][-1]
    # A word spans its segment: from the frame after its boundary to the next boundary;
    # the last one to the end of the stream (less than a second after its start).
    assert [(w.text, w.start, w.end) for w in final.words] == [
        ("the", pytest.approx(at(7)), pytest.approx(at(12))),
        ("fox", pytest.approx(at(13)), pytest.approx(at(16))),
    ]


def test_end_of_turn_head_closes_the_utterance(
    engine: KyutaiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    the, fox = ids(engine, "the"), ids(engine, "fox")
    script = [3] * 7 + [0, *the, 3, 3, 3, 0, *fox, 3, 3]
    pause_at = 7 + 1 + len(the)  # the padding right after "the"
    pauses = [0.0] * len(script)
    pauses[pause_at - 1] = 0.9  # on a text piece: never closes mid-word
    pauses[pause_at] = 0.9
    monkeypatch.setattr(engine, "_gen", ScriptedLM(script, pauses))
    monkeypatch.setattr(engine, "end_of_turn_head", 0)
    clock = VirtualClock()
    s = engine.create_session(CaptionTrack(Speaker("s"), clock), AudioInbox(SAMPLE_RATE))
    s.inbox.push(np.zeros(len(script) * FRAME_SAMPLES, dtype=np.float32))
    while s.ready():
        engine.step([s])
    engine.release_session(s)
    finals = [e for e in s.track.take_events() if e.kind == "final"]
    assert [[(w.text, w.end) for w in e.words] for e in finals] == [
        [("the", pytest.approx(at(pause_at + 1)))]
    ]
    assert s.track.utterance == 1 and [w.text for w in s.track.tail] == ["fox"]


PIECES = ["<unk>", "<s>", "</s>", "<pad>", "▁hel", "lo", "▁wor", "ld", "▁a", "▁b"]


def decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids).replace("▁", " ").strip()


def count_pieces(word: str) -> int:
    return {"hello": 2, "world": 2, "a": 1, "b": 1}[word]


def stream_words(tokens: list[int], asm: WordAssembler) -> list[tuple[int, str, float, float]]:
    out = []
    for frame, token in enumerate(tokens):
        out += [(frame, w.text, round(w.start, 3), round(w.end, 3)) for w in asm.push(token)]
    out += [(len(tokens), w.text, round(w.start, 3), round(w.end, 3)) for w in asm.finish()]
    return out


@pytest.mark.parametrize(
    "tokens",
    [
        # Text before the first boundary is ignored; padding inside a segment is skipped;
        # "world a b" share one segment by their piece counts; beyond the vocabulary: no text.
        [4, 5, 3, 0, 4, 3, 5, 3, 0, 6, 7, 8, 9, 3, 42, 0, 8, 3, 3],
        # The last segment ends one second (12.5 frames) after its start: "b" is cut off.
        [3, 0, 4, 5] + [3] * 12 + [9, 3, 3],
        # ... or at an EOS (2) before that.
        [0, 6, 7, 2, 9, 3],
        [3, 3, 3],
    ],
)
def test_word_assembler_streams_the_reference_derivation(tokens: list[int]) -> None:
    from tests.kyutai_reference import reference_words

    asm = WordAssembler(decode, count_pieces, vocab_size=len(PIECES), offset_seconds=0.1)
    streamed = stream_words(tokens, asm)
    whole = reference_words(
        tokens,
        decode=decode,
        count_pieces=count_pieces,
        eos_id=2,
        vocab_size=len(PIECES),
        frame_rate=12.5,
        offset_seconds=0.1,
    )
    expected = [(w.text, round(w.start, 3), round(w.end, 3)) for w in whole]
    assert [w[1:] for w in streamed] == expected


def test_word_assembler_finality_partials_and_timeline() -> None:
    asm = WordAssembler(decode, count_pieces, vocab_size=len(PIECES), offset_seconds=0.5)
    tokens = [3] * 7 + [0, 4, 5, 3, 3, 0, 6, 7, 8, 9, 3, 0]
    out = stream_words(tokens, asm)
    # A word is final when the next boundary comes (frame 12 for "hello", 18 for the rest).
    t = lambda f: round(f * 0.08 - 0.5, 3)  # noqa: E731
    assert out == [
        (12, "hello", t(8), t(12)),
        (18, "world", t(13), t(15)),
        (18, "a", t(15), t(16)),
        (18, "b", t(16), t(18)),
    ]
    asm.reset()
    partials = []
    for token in [0, 4, 5, 3]:
        asm.push(token)
        partials.append([w.text for w in asm.building])
    assert partials == [[], ["hel"], ["hello"], ["hello"]]
    # Times never go below zero, and dropped audio shifts them onto the real timeline.
    asm.reset()
    asm.skipped_seconds = 2.0
    for token in [0, 4, 5, 3]:
        asm.push(token)
    assert [(w.text, w.start, round(w.end, 3)) for w in asm.finish()] == [("hello", 2.0, 2.0)]
    # After a turn closed early, text before the next boundary is kept (own segment).
    for token in [8, 3, 0]:
        done = asm.push(token)
    assert [w.text for w in done] == ["a"]


async def test_runtime_streams_through_the_kyutai_engine(engine: KyutaiEngine) -> None:
    runner = EngineRunner(engine)
    runner.start()
    try:
        stream = runner.open_stream(Speaker("live"))
        stream.push_audio(voice(0.8, seed=3), SAMPLE_RATE)
        await stream.aclose()
        events = [e async for e in stream]
    finally:
        # Leave the module's engine usable: stop the worker without closing the engine.
        with runner._cond:
            runner._stop = True
            runner._cond.notify()
        await asyncio.get_running_loop().run_in_executor(None, runner._thread.join)  # type: ignore[union-attr]
    assert engine.free_slots == engine.info.max_streams
    if events:
        assert events[-1].kind == "final"
        assert all(w.final for w in events[-1].words)


# -- loading ---------------------------------------------------------------------------


def test_missing_weights_name_the_files_and_how_to_provision(
    tmp_path: Path, checkpoint: Path
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"config\.json.*huggingface-cli download"):
        locate_checkpoint(str(tmp_path))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((checkpoint / "config.json").read_text())
    (partial / "tokenizer.model").write_bytes((checkpoint / "tokenizer.model").read_bytes())
    with pytest.raises(ModelNotFoundError, match=r"model\.safetensors, mimi\.safetensors"):
        locate_checkpoint(str(partial))
    with pytest.raises(ModelNotFoundError, match="no such checkpoint"):
        locate_checkpoint(str(tmp_path / "nope" / "deeper"))


def _fake_hf_cache(cache: Path, repo: str, checkpoint: Path) -> None:
    entry = cache / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in checkpoint.iterdir():
        (snapshot / f.name).symlink_to(f)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(revision)


def test_hugging_face_cache_is_resolved_offline(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"kyutai/stt-1b-en_fr.*huggingface-cli download"):
        locate_checkpoint(None)
    _fake_hf_cache(tmp_path, "kyutai/stt-1b-en_fr", checkpoint)
    files = locate_checkpoint(None)
    assert files.lm_weights.name == "model.safetensors"
    assert json.loads(files.config.read_text())["stt_config"]["audio_delay_seconds"] == DELAY
    loaded = create_engine("kyutai", EngineOptions(device="cpu", max_streams=1))
    assert loaded.info.languages == ("en", "fr") and loaded.info.delay_seconds == DELAY


async def test_protocol_server_backed_by_kyutai_reports_its_pause_heads(
    engine: KyutaiEngine,
) -> None:
    from tests.test_asr_server import connect, pack, read_until, serving

    async with serving(engine) as url, connect(url) as ws:
        await read_until(ws, lambda m: m["type"] == "Ready")
        pcm = voice(0.8, seed=5)
        for i in range(0, pcm.size, FRAME_SAMPLES):
            await ws.send(pack({"type": "Audio", "pcm": pcm[i : i + FRAME_SAMPLES].tolist()}))
        await ws.send(pack({"type": "Marker", "id": 9}))
        silence = [0.0] * FRAME_SAMPLES
        for _ in range(math.ceil(DELAY * 12.5) + 2):
            await ws.send(pack({"type": "Audio", "pcm": silence}))
        seen = await read_until(ws, lambda m: m["type"] == "Marker", timeout=120)
    steps = [m for m in seen if m["type"] == "Step"]
    assert steps, "no Step messages"
    # Four end-of-turn heads in this checkpoint: real probabilities, not the neutral zeros.
    assert all(len(s["prs"]) == 4 for s in steps)
    assert any(p > 0 for s in steps for p in s["prs"])
    assert seen[-1] == {"type": "Marker", "id": 9}
