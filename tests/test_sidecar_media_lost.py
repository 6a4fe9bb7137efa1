"""The sidecar keeps captioning a room through dead media links (the soak's stall).

Links die as in tests/test_sfu_media_lost.py: one end stops answering ICE (a frozen
process) and consent checks run every 0.1 s, so a link ends in about 4 s, not 30 s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from captions.runtime import EngineRunner
from common.aio import wait_ended
from common.closecodes import CloseCode
from meeting.sidecar import Sidecar
from sfu.client import SfuClient
from sfu.server import SFU
from sfu.tokens import Grants, mint_token
from tests.fakes import ScriptedEngine
from tests.test_sfu_media_lost import closed, fast_consent, stop_answering, stop_checking_consent
from tests.test_sidecar_meeting import (
    CLEANUP_SECONDS,
    ROOM,
    SCRIPT,
    SECRET,
    Closers,
    closers,
    reader,
    speaker,
    start_meeting,
    until,
)

__all__ = ["closers", "fast_consent"]


async def test_sidecar_rejoins_after_its_link_or_a_speakers_link_died(
    tmp_path: Path, closers: Closers, monkeypatch: pytest.MonkeyPatch
) -> None:
    meeting = await start_meeting(tmp_path, ScriptedEngine(), embedded_sidecar=False)
    closers.append(meeting.stop)
    engine = ScriptedEngine(SCRIPT, delay=5.0)
    runner = EngineRunner(engine)
    closers.append(runner.aclose)
    joins: list[SfuClient] = []  # the sidecar's
    real_connect = SfuClient.connect

    async def counted_connect(url: str, token: str, **kw: Any) -> SfuClient:
        client = await real_connect(url, token, **kw)
        if client.me.get("identity") == "captioner":
            joins.append(client)
        return client

    monkeypatch.setattr(SfuClient, "connect", counted_connect)
    sidecar = Sidecar(
        meeting.base_url,
        mint_token(SECRET, Grants.captioner_for(ROOM)),
        runner,
        reconnect_seconds=0.2,
    )
    task = asyncio.create_task(sidecar.run())
    closers.append(lambda: wait_ended(task, timeout=CLEANUP_SECONDS))
    closers.append(sidecar.stop)

    def heard() -> int:
        return engine.samples_seen.get("alice", 0)

    def room_peer(identity: str) -> Any:
        room = meeting.app[SFU].rooms.get(ROOM)
        return room.peers.get(identity) if room is not None else None

    async with aiohttp.ClientSession() as http:
        watcher = await reader(http, meeting, "watcher")
        closers.append(watcher.ws.close)
        alice = await speaker(meeting, "alice", closers)
        await until(lambda: heard() > 24_000, what="alice captioned")
        await until(lambda: watcher.captions("partial", "alice"), what="alice's partials")

        # 1. The sidecar's own link dies (only its end checks consent): its client ends
        #    with "closed", and the sidecar joins again and hears alice again.
        captioner = room_peer("captioner")
        stop_checking_consent(captioner.subscriber_pc)
        stop_answering(captioner.subscriber_pc)
        await until(lambda: len(joins) == 2 and sidecar.joined.is_set(), what="sidecar rejoined")
        assert joins[0].close_code == CloseCode.MEDIA_FAILED
        assert room_peer("captioner") is not captioner and captioner.closed
        before = heard()
        await until(lambda: heard() > before + 24_000, what="alice captioned after the rejoin")

        # 2. Alice's link dies (only the SFU's end checks consent): the SFU drops her
        #    (her last words become a final), and once she rejoins, as the soak's bots
        #    do, she is captioned again.
        assert alice.publisher_pc is not None
        stop_checking_consent(alice.publisher_pc)
        stop_answering(alice.publisher_pc)
        assert (await closed(alice))["code"] == CloseCode.MEDIA_LOST
        await until(lambda: watcher.captions("final", "alice"), what="alice's final")
        last = max(m["utterance"] for m in watcher.captions(speaker="alice"))
        await alice.close()
        alice = await speaker(meeting, "alice", closers)
        await until(
            lambda: any(m["utterance"] > last for m in watcher.captions("partial", "alice")),
            what="alice captioned after her rejoin",
        )
        assert len(joins) == 2  # the sidecar itself stayed
        await alice.close()
