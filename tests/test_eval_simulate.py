"""The simulation's latency arithmetic, exactly, on a scripted engine with a fixed compute cost."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pytest

from captions.clock import VirtualClock
from captions.engine import Session
from captions.events import Speaker
from captions.simulate import StreamRecord, hypothesis_words, simulate
from evaluation.alignment import align, reference_ends
from evaluation.manifest import TimedWord
from evaluation.metrics import ItemScore, score_item, summarize
from tests.fakes import ScriptedEngine

RATE = 16_000
# The engine knows its words end at 0.25 s and 0.65 s; the manifest's own timings say
# 0.2 s and 0.6 s, and latencies must be measured against the manifest's.
SCRIPT = [("Hello,", 0.0, 0.25), ("world.", 0.4, 0.65)]
MANIFEST_WORDS = (TimedWord("hello", 0.0, 0.2), TimedWord("world", 0.4, 0.6))


class FixedCostClock(VirtualClock):
    """Every engine step costs exactly ``cost`` seconds of virtual time, charged up front,
    so events emitted during a step are stamped at its start plus ``cost``."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost
        self.step_starts: list[float] = []

    @contextmanager
    def charging(self) -> Iterator[None]:
        self.step_starts.append(self.now())
        self.advance_to(self.now() + self.cost)
        yield


class WatchedEngine(ScriptedEngine):
    """Records, at every step, when it started and how much audio had been received."""

    def __init__(self, clock: FixedCostClock, *, delay: float) -> None:
        super().__init__(SCRIPT, delay=delay)
        self.clock = clock
        self.received: list[tuple[float, int]] = []

    def step(self, sessions: Sequence[Session]) -> None:
        s = sessions[0]
        self.received.append((self.clock.step_starts[-1], s.inbox.position + s.inbox.available))
        super().step(sessions)


def run(cost: float) -> tuple[WatchedEngine, StreamRecord, ItemScore]:
    clock = FixedCostClock(cost)
    engine = WatchedEngine(clock, delay=0.5)
    record = simulate(
        engine,
        np.zeros(RATE, dtype=np.float32),  # 1.0 s item
        speaker=Speaker("s"),
        clock=clock,
        tail_seconds=0.5,
    )
    score = score_item(
        item_id="x",
        reference_text="Hello world",
        record=record,
        timed_words=MANIFEST_WORDS,
        word_source="manifest",
    )
    return engine, record, score


def test_latencies_when_compute_keeps_up() -> None:
    engine, record, score = run(cost=0.05)
    # A step at every 0.1 s frame, each ending 0.05 s later. "Hello" (engine end 0.25) shows
    # once 0.3 s of audio is in (step at 0.3 -> 0.35) and is final once 0.75 s is in
    # (step at 0.8 -> 0.85); "world" (0.65) shows at 0.75 and is final at 1.25.
    # Latencies count from the manifest's word ends, 0.2 and 0.6.
    assert score.first_partial == pytest.approx([0.35 - 0.2, 0.75 - 0.6], abs=1e-9)
    assert score.final == pytest.approx([0.85 - 0.2, 1.25 - 0.6], abs=1e-9)
    assert score.eou == pytest.approx(1.25 - 1.0, abs=1e-9)
    # 15 frames (1.0 s + 0.5 s tail); the last step also closes the stream.
    assert record.steps == 15
    assert record.compute_seconds == pytest.approx(15 * 0.05, abs=1e-9)
    assert record.fed_seconds == 1.5 and record.audio_seconds == 1.0
    assert score.hypothesis == "hello world" and score.word_times == "manifest"
    assert record.events[-1].kind == "final"
    assert record.events[-1].emitted_at == pytest.approx(1.55, abs=1e-9)
    assert engine.samples_seen["s"] == 24_000


def test_latencies_when_compute_falls_behind() -> None:
    engine, record, score = run(cost=0.23)
    # Steps take longer than a frame, so each step takes all audio that arrived meanwhile:
    #   step 1 at 0.10 (audio to 0.1) -> 0.33     step 2 at 0.33 (to 0.3) -> 0.56: Hello shown
    #   step 3 at 0.56 (to 0.5) -> 0.79          step 4 at 0.79 (to 0.7) -> 1.02: world shown
    #   step 5 at 1.02 (to 1.0) -> 1.25: Hello final    step 6 at 1.25 (to 1.2) -> 1.48: world final
    #   step 7 at 1.48 (to 1.4) -> 1.71          step 8 at 1.71 (to 1.5, closed) -> 1.94
    assert [t for t, _ in engine.received] == pytest.approx(
        [0.1, 0.33, 0.56, 0.79, 1.02, 1.25, 1.48, 1.71], abs=1e-9
    )
    assert [n / RATE for _, n in engine.received] == pytest.approx(
        [0.1, 0.3, 0.5, 0.7, 1.0, 1.2, 1.4, 1.5], abs=1e-9
    )
    assert score.first_partial == pytest.approx([0.56 - 0.2, 1.02 - 0.6], abs=1e-9)
    assert score.final == pytest.approx([1.25 - 0.2, 1.48 - 0.6], abs=1e-9)
    assert score.eou == pytest.approx(1.48 - 1.0, abs=1e-9)
    assert record.compute_seconds == pytest.approx(8 * 0.23, abs=1e-9)
    assert record.dropped_seconds == 0.0


@pytest.mark.parametrize("cost", [0.0, 0.05, 0.23, 0.7])
def test_no_step_starts_before_its_audio_arrived(cost: float) -> None:
    engine, _, _ = run(cost)
    for now, received in engine.received:
        assert received / RATE <= now + 1e-9


def test_summary_on_scripted_engine() -> None:
    _, _, score = run(cost=0.05)
    summary = summarize("scripted", [score])
    assert summary["wer"] == 0.0 and summary["offline_wer"] is None
    assert summary["rtf"] == pytest.approx(15 * 0.05 / 1.5, abs=1e-4)
    latency = summary["latency"]
    assert latency["first_partial_p50"] == pytest.approx(0.15)
    assert latency["final_p50"] == pytest.approx(0.65)
    assert latency["eou_p50"] == pytest.approx(0.25)
    assert summary["word_times"] == {"manifest": 1, "aligned": 0, "none": 0}


def test_only_correct_words_are_timed_and_revisions_keep_first_sight() -> None:
    clock = FixedCostClock(0.0)
    engine = ScriptedEngine([("the", 0.0, 0.2), ("cat", 0.3, 0.5), ("sat", 0.6, 0.8)], delay=0.3)
    record = simulate(engine, np.zeros(RATE, np.float32), speaker=Speaker("s"), clock=clock)
    words = hypothesis_words(record.events, record.origin)
    assert [(w.text, w.shown_at, w.final_at) for w in words] == [
        ("the", pytest.approx(0.2), pytest.approx(0.5)),
        ("cat", pytest.approx(0.5), pytest.approx(0.8)),
        ("sat", pytest.approx(0.8), pytest.approx(1.1)),
    ]
    timed = (TimedWord("the", 0, 0.2), TimedWord("dog", 0.3, 0.5), TimedWord("sat", 0.6, 0.8))
    score = score_item(
        item_id="x",
        reference_text="the dog sat",
        record=record,
        timed_words=timed,
        word_source="aligned",
    )
    # "cat" is wrong for "dog", so only "the" and "sat" are timed.
    assert score.final == pytest.approx([0.3, 0.3])
    assert score.hypothesis == "the cat sat"


def test_alignment_transfers_times_across_substitutions_only() -> None:
    assert [(p.ref, p.hyp, p.equal) for p in align(["a", "b", "c"], ["a", "x", "c", "d"])] == [
        (0, 0, True),
        (1, 1, False),
        (2, 2, True),
    ]
    ends = reference_ends(["a", "b", "c", "e"], [("a", 1.0), ("z", 2.0), ("c", 3.0)])
    assert ends == [1.0, 2.0, 3.0, None]
    assert align([], ["a"]) == [] and align(["a"], []) == []
