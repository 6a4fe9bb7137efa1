"""The transcript store on PostgreSQL (``--database-url postgresql://...``), for clusters.

Every node of a cluster uses the same database: a transcript is written by the node that
holds the room, read (downloaded) and deleted from any node, and purged by whichever
node's retention pass sees it first (deletes are idempotent).

Connections come from a bounded :class:`psycopg_pool.AsyncConnectionPool` (``max_size``
connections, a request waits at most ``timeout_seconds`` for one); a connection broken
by a database restart is detected when it is taken from the pool and replaced. Any
database failure surfaces as :class:`~common.exceptions.StoreUnavailableError`.

Migrations run under a PostgreSQL advisory lock, so nodes starting together apply each
one once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from captions.events import CaptionEvent
from common.exceptions import StoreRejectedError, StoreUnavailableError
from meeting.migrations import POSTGRES_MIGRATIONS, Migration
from meeting.store import (
    SELECT_COLUMNS,
    TranscriptStore,
    caption_row,
    recent_events,
    transcript_events,
)

MIGRATION_LOCK_ID = 0x5C0A_7105  # pg_advisory_xact_lock key: "sovereign captions"


class PostgresTranscriptStore(TranscriptStore):
    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout_seconds: float = 5.0,
        connect_timeout_seconds: float = 3.0,
    ) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_seconds,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_seconds))},
            name="transcripts",
        )
        self._opened = False

    async def open(self) -> None:
        """Connects and applies pending migrations; raises StoreUnavailableError if it cannot."""
        try:
            await self._pool.open(wait=True, timeout=self.timeout_seconds)
        except (PoolTimeout, psycopg.Error) as exc:
            await self._pool.close()
            raise StoreUnavailableError(f"cannot reach PostgreSQL: {exc}") from exc
        self._opened = True
        await self._migrate(POSTGRES_MIGRATIONS)

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                row = await cur.fetchone()
                current = int(row[0]) if row else 0
                for migration in migrations:
                    if migration.version <= current:
                        continue
                    async with conn.transaction():
                        for statement in migration.statements:
                            await conn.execute(statement)
                        await conn.execute(
                            "INSERT INTO schema_version (version) VALUES (%s)",
                            (migration.version,),
                        )
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreUnavailableError(f"PostgreSQL migration failed: {exc}") from exc

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall() if cur.description is not None else []
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise StoreRejectedError(f"PostgreSQL refused it: {exc}") from exc
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreUnavailableError(f"PostgreSQL: {exc}") from exc

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return cur.rowcount
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreUnavailableError(f"PostgreSQL: {exc}") from exc

    async def append(
        self, room: str, event: CaptionEvent, *, stream: str, stream_started_at: float
    ) -> bool:
        if event.kind != "final" or not event.words:
            return False
        # One round trip: the insert and the room's activity in one statement.
        rows = await self._fetch(
            "WITH inserted AS (INSERT INTO captions (room, stream, utterance, speaker_id,"
            " speaker_name, text, words, stream_started_at, wall_start, emitted_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (room, stream, utterance) DO NOTHING RETURNING 1),"
            " touched AS (INSERT INTO rooms (room, last_activity, active) VALUES (%s, %s, 0)"
            " ON CONFLICT (room) DO UPDATE SET"
            " last_activity = GREATEST(rooms.last_activity, excluded.last_activity))"
            " SELECT COUNT(*) FROM inserted",
            (
                *caption_row(room, event, stream=stream, stream_started_at=stream_started_at),
                room,
                event.emitted_at,
            ),
        )
        return bool(rows and rows[0][0])

    async def recent(self, room: str, limit: int = 50) -> list[CaptionEvent]:
        rows = await self._fetch(
            f"SELECT {SELECT_COLUMNS} FROM (SELECT * FROM captions WHERE room = %s"
            " ORDER BY wall_start DESC, id DESC LIMIT %s) AS last ORDER BY wall_start, id",
            (room, limit),
        )
        return recent_events(rows)

    async def transcript(self, room: str) -> list[CaptionEvent]:
        rows = await self._fetch(
            f"SELECT {SELECT_COLUMNS} FROM captions WHERE room = %s ORDER BY wall_start, id",
            (room,),
        )
        return transcript_events(rows)

    async def count(self, room: str) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM captions WHERE room = %s", (room,))
        return int(rows[0][0])

    async def delete(self, room: str) -> int:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute("DELETE FROM captions WHERE room = %s", (room,))
                removed = cur.rowcount
                await conn.execute("DELETE FROM rooms WHERE room = %s", (room,))
                return removed
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreUnavailableError(f"PostgreSQL: {exc}") from exc

    async def touch(
        self, room: str, *, now: float | None = None, active: bool | None = None
    ) -> None:
        now = time.time() if now is None else now
        await self._execute(
            "INSERT INTO rooms (room, last_activity, active) VALUES (%s, %s, %s)"
            " ON CONFLICT (room) DO UPDATE SET"
            " last_activity = GREATEST(rooms.last_activity, excluded.last_activity),"
            " active = COALESCE(%s, rooms.active)",
            (room, now, int(bool(active)), None if active is None else int(active)),
        )

    async def _expired_rooms(self, cutoff: float, orphaned: float) -> list[str]:
        rows = await self._fetch(
            "SELECT room FROM rooms WHERE last_activity < %s"
            " AND (active = 0 OR last_activity < %s) ORDER BY room",
            (cutoff, orphaned),
        )
        return [str(r) for (r,) in rows]

    async def schema_version(self) -> int:
        rows = await self._fetch("SELECT MAX(version) FROM schema_version")
        return int(rows[0][0])

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def aclose(self) -> None:
        await self._pool.close()
