"""Versioned schema of the transcript store, one list per database dialect.

A store applies, in order and each in one transaction, every migration newer than the
highest version recorded in its ``schema_version`` table, then records it. Migrations are
append-only: a released one is never edited; a change of schema is a new version in both
lists (the two dialects stay at the same version number with the same meaning).

Version 1 is the schema of the first release (it used ``CREATE ... IF NOT EXISTS``, so
an SQLite file written before versioning existed is adopted as version 1 unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "captions and rooms",
        (
            """CREATE TABLE IF NOT EXISTS captions (
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
            )""",
            "CREATE INDEX IF NOT EXISTS captions_room_time ON captions (room, wall_start)",
            """CREATE TABLE IF NOT EXISTS rooms (
                room TEXT PRIMARY KEY,
                last_activity REAL NOT NULL,
                active INTEGER NOT NULL DEFAULT 0
            )""",
        ),
    ),
    Migration(
        2,
        "index for retention scans",
        ("CREATE INDEX IF NOT EXISTS rooms_last_activity ON rooms (last_activity)",),
    ),
    Migration(3, "utterance numbers are 64-bit (SQLite integers already are)", ()),
)

POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "captions and rooms",
        (
            """CREATE TABLE IF NOT EXISTS captions (
                id BIGSERIAL PRIMARY KEY,
                room TEXT NOT NULL,
                stream TEXT NOT NULL,
                utterance INTEGER NOT NULL,
                speaker_id TEXT NOT NULL,
                speaker_name TEXT NOT NULL,
                text TEXT NOT NULL,
                words TEXT NOT NULL,
                stream_started_at DOUBLE PRECISION NOT NULL,
                wall_start DOUBLE PRECISION NOT NULL,
                emitted_at DOUBLE PRECISION NOT NULL,
                UNIQUE (room, stream, utterance)
            )""",
            "CREATE INDEX IF NOT EXISTS captions_room_time ON captions (room, wall_start)",
            """CREATE TABLE IF NOT EXISTS rooms (
                room TEXT PRIMARY KEY,
                last_activity DOUBLE PRECISION NOT NULL,
                active INTEGER NOT NULL DEFAULT 0
            )""",
        ),
    ),
    Migration(
        2,
        "index for retention scans",
        ("CREATE INDEX IF NOT EXISTS rooms_last_activity ON rooms (last_activity)",),
    ),
    Migration(
        3,
        "utterance numbers are 64-bit (meeting sidecars number them from a millisecond time)",
        ("ALTER TABLE captions ALTER COLUMN utterance TYPE BIGINT",),
    ),
)

LATEST_VERSION = SQLITE_MIGRATIONS[-1].version
assert POSTGRES_MIGRATIONS[-1].version == LATEST_VERSION
