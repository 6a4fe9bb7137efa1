"""Durable transcripts: final captions of every room in one SQLite file.

Each row is one final caption event: room, speaker id and name, text, word times, and
wall-clock anchoring (``stream_started_at`` = Unix time of the event's stream time 0,
so utterances from different streams, sidecar runs or server restarts line up on one
timeline). Rows are unique per ``(room, stream, utterance)``: a sidecar resending a
final after a reconnect stores it once.

Rooms have an activity record. A room *ends* when no participant is left; its captions
are purged ``retention_hours`` after its last activity (:meth:`purge_expired`).

Writes are small and rare (finals only), so the connection is used synchronously from
the event loop, in WAL mode.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from captions.events import CaptionEvent, Speaker, Word

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    stream TEXT NOT NULL,
    utterance INTEGER NOT NULL,
    speaker_id TEXT NOT NULL,
    speaker_name TEXT NOT NULL,
    text TEXT NOT NULL,
    words TEXT NOT NULL,
    stream_started_at REAL NOT NULL,
    wall_start REAL NOT NULL,
    emitted_at REAL NOT NULL,
    UNIQUE (room, stream, utterance)
);
CREATE INDEX IF NOT EXISTS captions_room_time ON captions (room, wall_start);
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    last_activity REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 0
);
"""


class TranscriptStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- captions -------------------------------------------------------------------

    def append(
        self, room: str, event: CaptionEvent, *, stream: str, stream_started_at: float
    ) -> bool:
        """Stores a final event; returns False when it was already stored (a resend)."""
        if event.kind != "final" or not event.words:
            return False
        words = json.dumps([[w.text, round(w.start, 3), round(w.end, 3)] for w in event.words])
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO captions (room, stream, utterance, speaker_id, speaker_name,"
            " text, words, stream_started_at, wall_start, emitted_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
            ),
        )
        self.touch(room, now=event.emitted_at)
        return cursor.rowcount > 0

    def recent(self, room: str, limit: int = 50) -> list[CaptionEvent]:
        """The room's last ``limit`` finals, oldest first, with their own stream times."""
        rows = self._db.execute(
            "SELECT speaker_id, speaker_name, utterance, words, emitted_at, stream_started_at,"
            " wall_start FROM (SELECT * FROM captions WHERE room = ?"
            " ORDER BY wall_start DESC, id DESC LIMIT ?) ORDER BY wall_start, id",
            (room, limit),
        ).fetchall()
        return [_event(row, offset=0.0) for row in rows]

    def transcript(self, room: str) -> list[CaptionEvent]:
        """Every final of the room, word times in seconds since its first stored caption."""
        rows = self._db.execute(
            "SELECT speaker_id, speaker_name, utterance, words, emitted_at,"
            " stream_started_at, wall_start FROM captions WHERE room = ?"
            " ORDER BY wall_start, id",
            (room,),
        ).fetchall()
        if not rows:
            return []
        origin = min(row[6] for row in rows)
        return [_event(row, offset=row[5] - origin) for row in rows]

    def count(self, room: str) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM captions WHERE room = ?", (room,)).fetchone()
        return int(n)

    def delete(self, room: str) -> int:
        """Deletes the room's transcript; returns how many captions were removed."""
        cursor = self._db.execute("DELETE FROM captions WHERE room = ?", (room,))
        self._db.execute("DELETE FROM rooms WHERE room = ?", (room,))
        return cursor.rowcount

    # -- room lifecycle and retention -----------------------------------------------

    def touch(self, room: str, *, now: float | None = None, active: bool | None = None) -> None:
        """Records activity in ``room`` (and whether participants are present, if known)."""
        now = time.time() if now is None else now
        self._db.execute(
            "INSERT INTO rooms (room, last_activity, active) VALUES (?, ?, ?)"
            " ON CONFLICT (room) DO UPDATE SET"
            " last_activity = MAX(last_activity, excluded.last_activity),"
            " active = COALESCE(?, active)",
            (room, now, int(bool(active)), None if active is None else int(active)),
        )

    def purge_expired(self, retention_hours: float, *, now: float | None = None) -> list[str]:
        """Deletes transcripts of rooms that ended more than ``retention_hours`` ago."""
        now = time.time() if now is None else now
        cutoff = now - retention_hours * 3600.0
        rooms = [
            r
            for (r,) in self._db.execute(
                "SELECT room FROM rooms WHERE active = 0 AND last_activity < ?", (cutoff,)
            )
        ]
        for room in rooms:
            self.delete(room)
        return rooms


def _event(row: tuple[str, str, int, str, float, float, float], *, offset: float) -> CaptionEvent:
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
