"""A whole meeting in one process, every socket address it uses recorded (run by
tests/test_zero_egress.py inside a network namespace that has only loopback).

The server (SFU, captions API, store) with its embedded sidecar (Whisper), two bots
speaking real speech and a viewer of the captions. An audit hook records the address of
every ``connect``, ``sendto``, ``sendmsg`` and name lookup from the start, before
anything is imported; the result is printed as one JSON line: the addresses, and the
finals the viewer received.

Usage: ``python tests/zero_egress_meeting.py SPEECH_1 SPEECH_2``
"""

from __future__ import annotations

import sys

SEEN: list[list[str]] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1]
        if isinstance(address, tuple):
            SEEN.append([event, str(address[0])])
        elif address is not None:
            SEEN.append([event, f"unix:{address!r}"])
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        SEEN.append([event, str(args[0])])  # a name looked up: DNS may leave the machine


sys.addaudithook(_audit)

import asyncio  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

SECRET = "zero-egress-secret-" + "z" * 32
ROOM = "egress"


async def meeting(speech: list[str]) -> list[str]:
    import aiohttp

    from captions.audio import load_audio
    from captions.engines import EngineOptions, create_engine
    from captions.runtime import EngineRunner
    from meeting.app import Meeting
    from sfu.client import SfuClient
    from sfu.contrib.media import pcm_audio_track
    from sfu.settings import Settings
    from sfu.tokens import Grants, mint_token

    settings = Settings(port=0, data_dir=Path(tempfile.mkdtemp()), secret_override=SECRET)
    meeting = Meeting(settings, EngineRunner(create_engine("whisper", EngineOptions())))
    await meeting.start()
    finals: list[str] = []
    bots = []
    try:
        viewer_token = mint_token(SECRET, Grants.for_role(ROOM, "Viewer", "guest"))
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                meeting.base_url.replace("http", "ws") + f"/captions?token={viewer_token}"
            )
            for i, path in enumerate(speech):
                token = mint_token(SECRET, Grants.for_role(ROOM, f"Bot {i}", "participant"))
                bot = await SfuClient.connect(meeting.base_url, token)
                await bot.publish(
                    audio=pcm_audio_track(load_audio(path, sample_rate=48_000), 48_000)
                )
                bots.append(bot)
            async with asyncio.timeout(90):
                while len(finals) < 2:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = json.loads(msg.data)
                    if data.get("kind") == "final" and data.get("text"):
                        finals.append(data["text"])
            await ws.close()
    finally:
        for bot in bots:
            await bot.close()
        await meeting.stop()
    return finals


def main() -> None:
    finals = asyncio.run(meeting(sys.argv[1:]))
    print(json.dumps({"finals": finals, "addresses": SEEN}))


if __name__ == "__main__":
    main()
