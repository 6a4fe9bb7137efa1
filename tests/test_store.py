"""The transcript store: one suite, run against SQLite and a real PostgreSQL 15."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from captions.events import CaptionEvent, Speaker, Word
from common.exceptions import StoreRejectedError, StoreUnavailableError
from meeting.migrations import LATEST_VERSION
from meeting.store import SqliteTranscriptStore, TranscriptStore, open_store

ALICE = Speaker("alice-1", "Alice")
BOB = Speaker("bob-2", "Bob")
HOUR = 3600.0

Opener = Callable[[], Awaitable[TranscriptStore]]


def final(speaker: Speaker, utterance: int, *words: tuple[str, float, float]) -> CaptionEvent:
    return CaptionEvent(
        speaker, utterance, 3, "final", tuple(Word(t, a, b, True) for t, a, b in words), 100.0
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens (and on teardown closes) stores on one database: a second store opened is a
    second node of a cluster, or the same node after a restart."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened: list[TranscriptStore] = []

    async def open_one() -> TranscriptStore:
        store = open_store(url, tmp_path)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.aclose()


async def test_finals_survive_reopening_and_resends_are_stored_once(opener: Opener) -> None:
    store = await opener()
    event = final(ALICE, 0, ("hello", 0.5, 0.9), ("there", 1.0, 1.4))
    assert await store.append("r1", event, stream="s1", stream_started_at=1000.0)
    assert not await store.append("r1", event, stream="s1", stream_started_at=1000.0)
    partial = CaptionEvent(ALICE, 1, 1, "partial", (Word("x", 2, 3),), 101.0)
    assert not await store.append("r1", partial, stream="s1", stream_started_at=1000.0)
    await store.aclose()

    store = await opener()
    assert await store.count("r1") == 1
    (back,) = await store.recent("r1")
    assert back.speaker == ALICE and back.kind == "final" and back.text == "hello there"
    assert [w.start for w in back.words] == [0.5, 1.0]
    assert await store.count("other") == 0


async def test_transcript_puts_streams_on_one_timeline(opener: Opener) -> None:
    store = await opener()
    # Bob's stream started 10 s after Alice's; his words at stream time 1 s came later.
    await store.append("r", final(BOB, 0, ("late", 1.0, 1.5)), stream="b", stream_started_at=1010)
    await store.append(
        "r", final(ALICE, 0, ("early", 2.0, 2.5)), stream="a", stream_started_at=1000
    )
    events = await store.transcript("r")
    assert [e.text for e in events] == ["early", "late"]
    assert events[0].words[0].start == 0.0
    assert abs(events[1].words[0].start - 9.0) < 1e-6


async def test_meeting_utterance_numbers_are_64_bit(opener: Opener) -> None:
    store = await opener()
    utterance = 1_764_460_800_000 + 7  # the sidecar numbers from the stream's millisecond
    assert await store.append(
        "r", final(ALICE, utterance, ("hi", 0, 1)), stream="a", stream_started_at=0
    )
    (back,) = await store.transcript("r")
    assert back.utterance == utterance


async def test_recent_is_bounded_and_oldest_first(opener: Opener) -> None:
    store = await opener()
    for i in range(10):
        event = final(ALICE, i, (f"w{i}", i, i + 0.5))
        await store.append("r", event, stream="a", stream_started_at=0)
    assert [e.text for e in await store.recent("r", 3)] == ["w7", "w8", "w9"]


async def test_retention_purges_only_ended_rooms_past_the_limit(opener: Opener) -> None:
    store = await opener()
    for room in ("old", "live", "recent"):
        await store.append(room, final(ALICE, 0, ("hi", 0, 1)), stream="a", stream_started_at=0)
    await store.touch("old", now=1000.0, active=False)
    await store.touch("live", now=1000.0, active=True)
    await store.touch("recent", now=1000.0 + 20 * HOUR, active=False)
    # The live room's node refreshes it (as meeting.api's retention pass does).
    await store.touch("live", now=1000.0 + 24.5 * HOUR)
    assert await store.purge_expired(24, now=1000.0 + 25 * HOUR) == ["old"]
    assert await store.count("old") == 0
    assert await store.count("live") == 1 and await store.count("recent") == 1
    # The live room ends: it is purged once the retention has passed since then.
    await store.touch("live", now=1000.0 + 25 * HOUR, active=False)
    assert await store.purge_expired(24, now=1000.0 + 48 * HOUR) == ["recent"]
    assert await store.purge_expired(24, now=1000.0 + 50 * HOUR) == ["live"]


async def test_a_live_room_whose_node_died_is_purged_like_an_ended_one(opener: Opener) -> None:
    node_a, node_b = await opener(), await opener()
    await node_a.append("r", final(ALICE, 0, ("hi", 0, 1)), stream="a", stream_started_at=0)
    await node_a.touch("r", now=1000.0, active=True)
    # Node A dies: nobody refreshes "r" any more. Node B's retention pass purges it after
    # the retention, counted from its last refresh...
    assert await node_b.purge_expired(24, now=1000.0 + 23 * HOUR) == []
    assert await node_b.purge_expired(24, now=1000.0 + 25 * HOUR) == ["r"]
    # ...but with a retention shorter than the orphan delay, only after that delay.
    await node_a.append("s", final(ALICE, 0, ("hi", 0, 1)), stream="a", stream_started_at=0)
    await node_a.touch("s", now=1000.0, active=True)
    assert await node_b.purge_expired(0, now=1000.0 + 0.5 * HOUR, orphan_after_hours=1) == []
    assert await node_b.purge_expired(0, now=1000.0 + 1.5 * HOUR, orphan_after_hours=1) == ["s"]


async def test_delete_from_another_node(opener: Opener) -> None:
    node_a, node_b = await opener(), await opener()
    await node_a.append("r", final(ALICE, 0, ("hi", 0, 1)), stream="a", stream_started_at=0)
    await node_a.append("q", final(ALICE, 0, ("kept", 0, 1)), stream="a", stream_started_at=0)
    assert [e.text for e in await node_b.transcript("r")] == ["hi"]
    assert await node_b.delete("r") == 1
    assert await node_a.transcript("r") == []
    assert await node_a.count("q") == 1
    assert await node_b.delete("r") == 0


async def test_migrations_are_applied_once_even_by_nodes_starting_together(
    opener: Opener,
) -> None:
    stores = await asyncio.gather(*(opener() for _ in range(3)))
    for store in stores:
        assert await store.schema_version() == LATEST_VERSION
        await store.ping()


def test_an_sqlite_file_from_before_versioning_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE captions (id INTEGER PRIMARY KEY, room TEXT NOT NULL, stream TEXT NOT NULL,"
        " utterance INTEGER NOT NULL, speaker_id TEXT NOT NULL, speaker_name TEXT NOT NULL,"
        " text TEXT NOT NULL, words TEXT NOT NULL, stream_started_at REAL NOT NULL,"
        " wall_start REAL NOT NULL, emitted_at REAL NOT NULL, UNIQUE (room, stream, utterance));"
        "CREATE TABLE rooms (room TEXT PRIMARY KEY, last_activity REAL NOT NULL,"
        " active INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO captions VALUES (1, 'r', 's', 0, 'a', 'A', 'old', '[[\"old\", 0, 1]]',"
        " 0, 0, 0);"
    )
    db.commit()
    db.close()
    store = SqliteTranscriptStore(path)
    assert asyncio.run(store.schema_version()) == LATEST_VERSION
    assert [e.text for e in asyncio.run(store.transcript("r"))] == ["old"]


async def test_an_unreachable_postgres_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    from evaluation.services import free_port

    store = open_store(f"postgresql://captions@127.0.0.1:{free_port()}/x", tmp_path)
    with pytest.raises(StoreUnavailableError, match="cannot reach PostgreSQL"):
        await store.open()
    with pytest.raises(StoreUnavailableError, match="postgresql://"):
        open_store("mysql://x", tmp_path)


# -- SQLite: a private file, clear errors, a full disk ---------------------------------


def fill_up(store: SqliteTranscriptStore) -> None:
    """Makes the database full as a full disk does (SQLite's own SQLITE_FULL error)."""
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def make_room(store: SqliteTranscriptStore) -> None:
    store._db.execute("PRAGMA max_page_count = 1073741823")


async def test_sqlite_data_files_are_private(tmp_path: Path) -> None:
    import stat

    path = tmp_path / "data" / "t.sqlite"
    store = SqliteTranscriptStore(path)
    await store.append("r", final(ALICE, 0, ("hi", 0.0, 0.5)), stream="s", stream_started_at=1.0)
    files = [p for p in path.parent.iterdir() if p.name.startswith("t.sqlite")]
    assert len(files) >= 2  # the database and its WAL
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    await store.aclose()
    path.chmod(0o644)  # as an older version left it: tightened on opening
    await SqliteTranscriptStore(path).aclose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_full_sqlite_store_fails_with_store_unavailable(tmp_path: Path) -> None:
    store = SqliteTranscriptStore(tmp_path / "t.sqlite")
    fill_up(store)
    with pytest.raises(StoreUnavailableError, match="full"):
        for i in range(50):
            words = ("w" * 2000, i, i + 1)
            await store.append("r", final(ALICE, i, words), stream="s", stream_started_at=1)
    make_room(store)
    assert await store.append("r", final(ALICE, 99, ("x", 0, 1)), stream="s", stream_started_at=1)


def test_an_unusable_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailableError, match="cannot open the transcript store"):
        SqliteTranscriptStore(blocker / "data" / "t.sqlite")


def test_a_read_only_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    """An existing data directory on a read-only filesystem (root ignores file modes, so
    a read-only tmpfs is mounted; skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        asyncio.run(SqliteTranscriptStore(mount / "t.sqlite").aclose())
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(StoreUnavailableError, match="cannot open the transcript store"):
            SqliteTranscriptStore(mount / "t.sqlite")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


async def test_a_record_refused_for_good_is_dropped_not_retried(tmp_path: Path) -> None:
    """The hub gives up on a final the database refuses (its data), so the writes behind it
    are not blocked; a transient failure would be retried instead (test_store_outage)."""
    from meeting.hub import CaptionHub

    store = SqliteTranscriptStore(tmp_path / "t.sqlite")
    hub = CaptionHub(store)
    too_big = final(ALICE, 2**64, ("hi", 0, 1))  # over SQLite's 64-bit integers
    with pytest.raises(StoreRejectedError):
        await store.append("r", too_big, stream="a", stream_started_at=0)
    await asyncio.wait_for(hub.persist("r", too_big, stream="a", stream_started_at=0), 2)
    assert hub.store_failures == 1 and hub.pending_writes == 0
    await hub.persist("r", final(ALICE, 1, ("next", 0, 1)), stream="a", stream_started_at=0)
    assert [e.text for e in await store.transcript("r")] == ["next"]
