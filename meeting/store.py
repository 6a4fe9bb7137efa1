"""Durable transcripts: one interface, two back ends.

:class:`TranscriptStore` is what the meeting layer uses; :func:`open_store` picks the
implementation:

- :class:`SqliteTranscriptStore`, the embedded default: one file in the data directory,
  for one machine;
- :class:`~meeting.postgres_store.PostgresTranscriptStore` (``--database-url
  postgresql://...``), shared by every node of a cluster.

Each row is one final caption event: room, speaker id and name, text, word times, and
wall-clock anchoring (``stream_started_at`` = Unix time of the event's stream time 0,
so utterances from different streams, sidecar runs, nodes or restarts line up on one
timeline). Rows are unique per ``(room, stream, utterance)``: a final sent again after a
reconnect is stored once.

Rooms have an activity record. A room *ends* when no participant is left; its captions
are purged ``retention_hours`` after its last activity (:meth:`purge_expired`). A node
refreshes the activity of its live rooms (:meth:`touch`) more often than
``orphan_after_hours``; a room still marked live but not refreshed for that long (its
node died) counts as ended at its last activity, so its transcript is purged too.

The schema is versioned (:mod:`meeting.migrations`): opening a store applies the
migrations it has not seen yet, in order, each in one transaction.

Every method is a coroutine: the SQLite one runs its statements inline (they take
microseconds on a local file and writes are finals only); the PostgreSQL one awaits a
connection pool and never blocks the event loop. Both raise
:class:`~common.exceptions.StoreUnavailableError` when the database cannot be reached or
fails (worth retrying: the hub retries writes, see :mod:`meeting.hub`), and
:class:`~common.exceptions.StoreRejectedError` when it refuses a record for good.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captions.events import CaptionEvent, Speaker, Word
from common.exceptions import StoreRejectedError, StoreUnavailableError
from meeting.migrations import SQLITE_MIGRATIONS, Migration

DEFAULT_ORPHAN_AFTER_HOURS = 1.0

CaptionRow = tuple[str, str, int, str, float, float, float]
"""speaker_id, speaker_name, utterance, words (JSON), emitted_at, stream_started_at,
wall_start: the columns every read selects, in this order."""


class TranscriptStore(ABC):
    """Final captions of every room, and each room's activity (for retention)."""

    async def open(self) -> None:
        """Connects and applies pending migrations (where that needs the event loop)."""

    @abstractmethod
    async def append(
        self, room: str, event: CaptionEvent, *, stream: str, stream_started_at: float
    ) -> bool:
        """Stores a final event; returns False when it was already stored (a resend).

        Partials and empty finals are not stored (False)."""

    @abstractmethod
    async def recent(self, room: str, limit: int = 50) -> list[CaptionEvent]:
        """The room's last ``limit`` finals, oldest first, with their own stream times."""

    @abstractmethod
    async def transcript(self, room: str) -> list[CaptionEvent]:
        """Every final of the room, word times in seconds since its first stored caption."""

    @abstractmethod
    async def count(self, room: str) -> int:
        """How many finals of ``room`` are stored."""

    @abstractmethod
    async def delete(self, room: str) -> int:
        """Deletes the room's transcript; returns how many captions were removed."""

    @abstractmethod
    async def touch(
        self, room: str, *, now: float | None = None, active: bool | None = None
    ) -> None:
        """Records activity in ``room`` (and whether participants are present, if known)."""

    async def purge_expired(
        self,
        retention_hours: float,
        *,
        now: float | None = None,
        orphan_after_hours: float = DEFAULT_ORPHAN_AFTER_HOURS,
    ) -> list[str]:
        """Deletes transcripts of rooms that ended more than ``retention_hours`` ago (or
        whose node died: no activity for ``orphan_after_hours``); returns those rooms."""
        cutoff, orphaned = purge_cutoffs(retention_hours, orphan_after_hours, now)
        rooms = await self._expired_rooms(cutoff, orphaned)
        for room in rooms:
            await self.delete(room)
        return rooms

    @abstractmethod
    async def _expired_rooms(self, cutoff: float, orphaned: float) -> list[str]:
        """Rooms ended before ``cutoff``, or silent since ``orphaned``, sorted."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The newest migration applied."""

    @abstractmethod
    async def ping(self) -> None:
        """Raises StoreUnavailableError unless the database answers (readiness checks)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Releases connections; the store is unusable afterwards."""


def open_store(database_url: str | None, data_dir: Path, **options: Any) -> TranscriptStore:
    """The PostgreSQL store for a ``postgresql://`` URL, else SQLite in ``data_dir``.

    Call ``await store.open()`` before use (:class:`meeting.app.Meeting` does it on start)."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise StoreUnavailableError(
                "--database-url must be a postgresql:// URL (SQLite is the default without it)"
            )
        from meeting.postgres_store import PostgresTranscriptStore

        return PostgresTranscriptStore(database_url, **options)
    return SqliteTranscriptStore(data_dir / SQLITE_FILE)


SQLITE_FILE = "transcripts.sqlite"


class SqliteTranscriptStore(TranscriptStore):
    """The embedded store: one SQLite file in WAL mode, used from the event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                _make_private(self.path)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(SQLITE_MIGRATIONS)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(
                f"cannot open the transcript store {path}: {exc}"
                " (is the data directory writable, with space left?)"
            ) from exc

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        (current,) = self._db.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version"
        ).fetchone()
        for migration in migrations:
            if migration.version <= current:
                continue
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in migration.statements:
                    self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (migration.version,)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _run(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except (sqlite3.IntegrityError, sqlite3.DataError, OverflowError) as exc:
            raise StoreRejectedError(f"transcript store refused it: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"transcript store: {exc}") from exc

    async def append(
        self, room: str, event: CaptionEvent, *, stream: str, stream_started_at: float
    ) -> bool:
        if event.kind != "final" or not event.words:
            return False
        cursor = self._run(
            "INSERT OR IGNORE INTO captions (room, stream, utterance, speaker_id, speaker_name,"
            " text, words, stream_started_at, wall_start, emitted_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            caption_row(room, event, stream=stream, stream_started_at=stream_started_at),
        )
        await self.touch(room, now=event.emitted_at)
        return cursor.rowcount > 0

    async def recent(self, room: str, limit: int = 50) -> list[CaptionEvent]:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM (SELECT * FROM captions WHERE room = ?"
            " ORDER BY wall_start DESC, id DESC LIMIT ?) ORDER BY wall_start, id",
            (room, limit),
        ).fetchall()
        return recent_events(rows)

    async def transcript(self, room: str) -> list[CaptionEvent]:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM captions WHERE room = ? ORDER BY wall_start, id", (room,)
        ).fetchall()
        return transcript_events(rows)

    async def count(self, room: str) -> int:
        (n,) = self._run("SELECT COUNT(*) FROM captions WHERE room = ?", (room,)).fetchone()
        return int(n)

    async def delete(self, room: str) -> int:
        cursor = self._run("DELETE FROM captions WHERE room = ?", (room,))
        self._run("DELETE FROM rooms WHERE room = ?", (room,))
        return cursor.rowcount

    async def touch(
        self, room: str, *, now: float | None = None, active: bool | None = None
    ) -> None:
        now = time.time() if now is None else now
        self._run(
            "INSERT INTO rooms (room, last_activity, active) VALUES (?, ?, ?)"
            " ON CONFLICT (room) DO UPDATE SET"
            " last_activity = MAX(last_activity, excluded.last_activity),"
            " active = COALESCE(?, active)",
            (room, now, int(bool(active)), None if active is None else int(active)),
        )

    async def _expired_rooms(self, cutoff: float, orphaned: float) -> list[str]:
        return [
            r
            for (r,) in self._run(
                "SELECT room FROM rooms WHERE last_activity < ?"
                " AND (active = 0 OR last_activity < ?) ORDER BY room",
                (cutoff, orphaned),
            )
        ]

    async def schema_version(self) -> int:
        (version,) = self._run("SELECT MAX(version) FROM schema_version").fetchone()
        return int(version)

    async def ping(self) -> None:
        self._run("SELECT 1")

    async def aclose(self) -> None:
        self._db.close()


def _make_private(path: Path) -> None:
    """Creates the database file with mode 0600 (SQLite gives its WAL companions the
    same mode), and tightens the files an older version left world-readable."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if companion.stat().st_mode & 0o077:
                companion.chmod(0o600)


# -- shared by both implementations ----------------------------------------------------

_COLUMNS = "speaker_id, speaker_name, utterance, words, emitted_at, stream_started_at, wall_start"
SELECT_COLUMNS = _COLUMNS


def caption_row(
    room: str, event: CaptionEvent, *, stream: str, stream_started_at: float
) -> tuple[Any, ...]:
    """The values of one ``captions`` row, in INSERT column order."""
    words = json.dumps([[w.text, round(w.start, 3), round(w.end, 3)] for w in event.words])
    return (
        room,
        stream,
        event.utterance,
        event.speaker.id,
        event.speaker.name,
        event.text,
        words,
        stream_started_at,
        stream_started_at + event.words[0].start,
        event.emitted_at,
    )


def purge_cutoffs(
    retention_hours: float, orphan_after_hours: float, now: float | None
) -> tuple[float, float]:
    """(ended before this -> expired, last refreshed before this -> orphaned live room)."""
    now = time.time() if now is None else now
    cutoff = now - retention_hours * 3600.0
    return cutoff, min(cutoff, now - orphan_after_hours * 3600.0)


def recent_events(rows: Sequence[CaptionRow]) -> list[CaptionEvent]:
    return [_event(row, offset=0.0) for row in rows]


def transcript_events(rows: Sequence[CaptionRow]) -> list[CaptionEvent]:
    if not rows:
        return []
    origin = min(row[6] for row in rows)
    return [_event(row, offset=row[5] - origin) for row in rows]


def _event(row: CaptionRow, *, offset: float) -> CaptionEvent:
    speaker_id, speaker_name, utterance, words_json, emitted_at, _, _ = row
    words = tuple(Word(t, a + offset, b + offset, True) for t, a, b in json.loads(words_json))
    return CaptionEvent(
        speaker=Speaker(speaker_id, speaker_name),
        utterance=utterance,
        revision=1,
        kind="final",
        words=words,
        emitted_at=emitted_at,
    )
