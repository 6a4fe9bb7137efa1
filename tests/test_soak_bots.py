"""The soak's bot speakers rejoin when their client closes, as the product's clients do:
a bench run must not count a bot whose media link died as a starved speaker."""

from __future__ import annotations

import argparse
import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from common.aio import cancel_and_wait
from evaluation.soak import ROOMS, SECRET, Soak
from sfu.server import SFU, create_app
from sfu.settings import Settings
from tests.test_sfu_media_lost import fast_consent, stop_answering
from tests.test_sidecar_meeting import until

__all__ = ["fast_consent"]


@pytest.fixture
async def sfu(tmp_path: Path) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(Settings(data_dir=tmp_path, secret_override=SECRET)))
    await server.start_server()
    yield server
    await server.close()


async def test_a_bot_whose_link_died_rejoins(sfu: TestServer) -> None:
    soak = Soak(argparse.Namespace(minutes=1.0, bots=1, pause=1.0, sample_seconds=10.0))
    shutil.rmtree(soak.data_dir)  # no server process here
    soak.url = str(sfu.make_url("")).rstrip("/")
    t = np.arange(48_000 * 5) / 48_000
    pcm = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    speaking = asyncio.Event()
    bot = asyncio.create_task(soak._bot(0, pcm, speaking))
    try:
        await asyncio.wait_for(speaking.wait(), 30)
        room = sfu.app[SFU].rooms.get(ROOMS[0])
        assert room is not None
        (first,) = room.peers.values()
        await until(
            lambda: "audio" in first.publications and first.publications["audio"].frames_in,
            timeout=30,
            what="the bot's audio at the SFU",
        )
        # The SFU's end stops answering: the bot's client sees its link die and closes.
        assert first.publisher_pc is not None
        stop_answering(first.publisher_pc)
        await until(lambda: first.closed, timeout=30, what="the bot dropped")

        def back() -> bool:  # the room was forgotten once empty: look it up again
            again = sfu.app[SFU].rooms.get(ROOMS[0])
            return again is not None and any(p.publications for p in again.peers.values())

        await until(back, timeout=30, what="the bot back and publishing")
        # The SFU sees the publication before the bot's publish() returns and notes it.
        await until(
            lambda: any(e["what"] == "bot 0 rejoined" for e in soak.events),
            timeout=30,
            what="the bot's rejoin noted",
        )
        assert soak.bot_closes == 1
    finally:
        await cancel_and_wait(bot, timeout=30)
