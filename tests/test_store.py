from __future__ import annotations

from pathlib import Path

from captions.events import CaptionEvent, Speaker, Word
from meeting.store import TranscriptStore

ALICE = Speaker("alice-1", "Alice")
BOB = Speaker("bob-2", "Bob")


def final(speaker: Speaker, utterance: int, *words: tuple[str, float, float]) -> CaptionEvent:
    return CaptionEvent(
        speaker, utterance, 3, "final", tuple(Word(t, a, b, True) for t, a, b in words), 100.0
    )


def test_finals_survive_reopening_and_resends_are_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    store = TranscriptStore(path)
    event = final(ALICE, 0, ("hello", 0.5, 0.9), ("there", 1.0, 1.4))
    assert store.append("r1", event, stream="s1", stream_started_at=1000.0)
    assert not store.append("r1", event, stream="s1", stream_started_at=1000.0)
    partial = CaptionEvent(ALICE, 1, 1, "partial", (Word("x", 2, 3),), 101.0)
    assert not store.append("r1", partial, stream="s1", stream_started_at=1000.0)
    store.close()

    store = TranscriptStore(path)
    assert store.count("r1") == 1
    (back,) = store.recent("r1")
    assert back.speaker == ALICE and back.kind == "final" and back.text == "hello there"
    assert [w.start for w in back.words] == [0.5, 1.0]
    assert store.count("other") == 0


def test_transcript_puts_streams_on_one_timeline(tmp_path: Path) -> None:
    store = TranscriptStore(tmp_path / "t.sqlite")
    # Bob's stream started 10 s after Alice's; his words at stream time 1 s came later.
    store.append("r", final(BOB, 0, ("late", 1.0, 1.5)), stream="b", stream_started_at=1010.0)
    store.append("r", final(ALICE, 0, ("early", 2.0, 2.5)), stream="a", stream_started_at=1000.0)
    events = store.transcript("r")
    assert [e.text for e in events] == ["early", "late"]
    assert events[0].words[0].start == 0.0
    assert abs(events[1].words[0].start - 9.0) < 1e-6


def test_recent_is_bounded_and_oldest_first(tmp_path: Path) -> None:
    store = TranscriptStore(tmp_path / "t.sqlite")
    for i in range(10):
        store.append("r", final(ALICE, i, (f"w{i}", i, i + 0.5)), stream="a", stream_started_at=0)
    assert [e.text for e in store.recent("r", 3)] == ["w7", "w8", "w9"]


def test_retention_purges_only_ended_rooms_past_the_limit(tmp_path: Path) -> None:
    store = TranscriptStore(tmp_path / "t.sqlite")
    for room in ("old", "live", "recent"):
        store.append(room, final(ALICE, 0, ("hi", 0, 1)), stream="a", stream_started_at=0)
    hour = 3600.0
    store.touch("old", now=1000.0, active=False)
    store.touch("live", now=1000.0, active=True)
    store.touch("recent", now=1000.0 + 20 * hour, active=False)
    assert store.purge_expired(24, now=1000.0 + 25 * hour) == ["old"]
    assert store.count("old") == 0
    assert store.count("live") == 1 and store.count("recent") == 1
    # The live room ends: it is purged once the retention has passed since then.
    store.touch("live", now=1000.0 + 25 * hour, active=False)
    assert store.purge_expired(24, now=1000.0 + 48 * hour) == ["recent"]
    assert store.purge_expired(24, now=1000.0 + 50 * hour) == ["live"]


def test_delete(tmp_path: Path) -> None:
    store = TranscriptStore(tmp_path / "t.sqlite")
    store.append("r", final(ALICE, 0, ("hi", 0, 1)), stream="a", stream_started_at=0)
    assert store.delete("r") == 1
    assert store.transcript("r") == []
