"""What one final costs the transcript database: transactions and time per write.

    python -m evaluation.store_bench --finals 2000            # starts its own PostgreSQL
    python -m evaluation.store_bench --database-url postgresql://...  --finals 2000

Appends ``finals`` final captions one after the other (as one node's writer does), then
reads PostgreSQL's own counters (``pg_stat_database``: committed transactions, rows
inserted and updated) to report what each final cost, and the wall time per write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import psycopg

from captions.events import CaptionEvent, Speaker, Word
from evaluation.machine import machine_state
from evaluation.services import PostgresServer
from meeting.postgres_store import PostgresTranscriptStore


def counters(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return {"commits": int(row[0]), "inserted": int(row[1]), "updated": int(row[2])}


async def append_finals(url: str, finals: int) -> float:
    store = PostgresTranscriptStore(url)
    await store.open()
    speaker = Speaker("bench", "Bench")
    words = tuple(
        Word(w, i * 0.3, i * 0.3 + 0.25, True) for i, w in enumerate(["a", "b", "c", "d", "e", "f"])
    )
    started = time.perf_counter()
    for i in range(finals):
        event = CaptionEvent(speaker, 1_764_000_000_000 + i, 1, "final", words, time.time())
        await store.append(f"room{i % 10}", event, stream="s", stream_started_at=time.time())
    elapsed = time.perf_counter() - started
    await store.aclose()
    return elapsed


def measure(url: str, finals: int) -> dict[str, Any]:
    asyncio.run(append_finals(url, 10))  # migrations, warm pool
    time.sleep(1.0)  # the statistics collector publishes with a delay
    before = counters(url)
    elapsed = asyncio.run(append_finals(url, finals))
    time.sleep(1.0)
    after = counters(url)
    delta = {k: after[k] - before[k] for k in after}
    return {
        "finals": finals,
        "ms_per_final": round(1000 * elapsed / finals, 3),
        "finals_per_second_one_writer": round(finals / elapsed),
        "transactions_per_final": round(delta["commits"] / finals, 2),
        "rows_inserted_per_final": round(delta["inserted"] / finals, 2),
        "rows_updated_per_final": round(delta["updated"] / finals, 2),
        "machine": machine_state(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an existing database (else a temporary one)")
    parser.add_argument("--finals", type=int, default=2000)
    args = parser.parse_args()
    if args.database_url:
        print(json.dumps(measure(args.database_url, args.finals)))
        return
    with PostgresServer() as server:
        print(json.dumps(measure(server.url, args.finals)))


if __name__ == "__main__":
    main()
