"""``captions serve``: TLS, printed links, and a clean shutdown that flushes transcripts."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from captions.audio import load_audio
from captions.runtime import EngineRunner
from common.exceptions import ConfigError
from meeting.app import TRANSCRIPTS_FILE, Meeting
from meeting.store import SqliteTranscriptStore
from sfu.client import SfuClient
from sfu.contrib.media import pcm_audio_track
from sfu.settings import Settings
from sfu.tokens import Grants, mint_token, verify_token
from tests.browser import free_port
from tests.fakes import ScriptedEngine
from tests.speech import synthesize

SECRET = "c" * 40
ROOT = Path(__file__).resolve().parent.parent


async def test_self_signed_tls_and_links(tmp_path: Path) -> None:
    settings = Settings(port=0, data_dir=tmp_path, secret_override=SECRET, tls_self_signed=True)
    meeting = Meeting(settings, EngineRunner(ScriptedEngine()))
    await meeting.start()
    try:
        assert (tmp_path / "tls" / "self-signed.crt").exists()
        links = meeting.links()
        assert links.host.startswith(f"https://127.0.0.1:{meeting.port}/room/lobby#token=")
        host = verify_token(SECRET, links.host.split("#token=")[1], room="lobby")
        guest = verify_token(SECRET, links.guest.split("#token=")[1], room="lobby")
        assert host.role == "host" and guest.role == "guest" and not guest.can_publish
        async with aiohttp.ClientSession() as http:
            url = f"{meeting.base_url}/rooms/lobby/transcript.txt"
            async with http.get(url, ssl=False) as resp:
                assert resp.status == 401  # served over TLS, and still needs a token
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(url)  # a real client does not trust it silently
    finally:
        await meeting.stop()


async def test_a_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(port=port, data_dir=tmp_path, secret_override=SECRET)
        meeting = Meeting(settings, EngineRunner(ScriptedEngine()))
        try:
            with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*choose --port"):
                await meeting.start()
        finally:
            await meeting.stop()


@pytest.mark.slow
def test_serve_prints_links_and_flushes_transcripts_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, CAPTIONS_SECRET=SECRET)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        assert process.stdout is not None
        deadline = time.monotonic() + 90
        while not any("guest link" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        output = "".join(lines)
        host_link = re.search(r"host link.*?: (\S+)", output)
        guest_link = re.search(r"guest link.*?: (\S+)", output)
        assert host_link and guest_link, output
        assert host_link.group(1).startswith(f"http://127.0.0.1:{port}/room/lobby#token=")

        speech = load_audio(
            synthesize("Please remember to send the quarterly report today.", voice="piper"),
            sample_rate=48_000,
        )
        pcm = np.concatenate([np.zeros(24_000, np.float32), speech])

        sigterm_at: list[float] = []

        async def speak_then_stop() -> None:
            token = host_link.group(1).split("#token=")[1]
            bot = await SfuClient.connect(f"http://127.0.0.1:{port}", token)
            # Loops: the speaker is still talking when the server is told to stop.
            await bot.publish(audio=pcm_audio_track(pcm, 48_000, loop=True))
            await asyncio.sleep(len(pcm) / 48_000 + 1.5)
            sigterm_at.append(time.time())
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            await bot.close()

        asyncio.run(speak_then_stop())
        assert process.wait(timeout=60) == 0, process.stdout.read()
        output += process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    store = SqliteTranscriptStore(tmp_path / TRANSCRIPTS_FILE)
    events = asyncio.run(store.transcript("lobby"))
    assert events, f"no final caption was stored; server said:\n{output}"
    assert {e.speaker.name for e in events} == {"Host"}
    assert "report" in " ".join(e.text for e in events).lower()
    # The utterance still open at SIGTERM was flushed into the store during shutdown.
    assert max(e.emitted_at for e in events) >= sigterm_at[0]


async def test_kyutai_endpoint_is_mounted_only_with_api_keys(tmp_path: Path) -> None:
    for keys, expected in (((), 404), (("k" * 20,), 401)):
        settings = Settings(port=0, data_dir=tmp_path, secret_override=SECRET)
        meeting = Meeting(settings, EngineRunner(ScriptedEngine()), asr_api_keys=keys)
        await meeting.start()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{meeting.base_url}/api/asr-streaming") as resp,
            ):
                assert resp.status == expected  # mounted: refused without the key
        finally:
            await meeting.stop()


async def start_sidecar(url: str, token: str, *options: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "sidecar",
        "--sfu",
        url,
        "--token",
        token,
        *options,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def join_then_stop(meeting: Meeting, process: asyncio.subprocess.Process) -> None:
    """The sidecar process shows up as the room's captioner, then leaves on SIGTERM."""
    deadline = time.monotonic() + 60
    while not meeting.hub.state("lobby").captioner:
        assert time.monotonic() < deadline and process.returncode is None
        await asyncio.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output
    while meeting.hub.state("lobby").captioner:
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_sidecar_command_joins_and_stops_cleanly(tmp_path: Path) -> None:
    settings = Settings(port=0, data_dir=tmp_path, secret_override=SECRET)
    meeting = Meeting(settings, EngineRunner(ScriptedEngine()), embedded_sidecar=False)
    await meeting.start()
    try:
        refused = await start_sidecar(meeting.base_url, "not-a-token")
        output, _ = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 2 and b"captions: error:" in output, output

        captioner = mint_token(SECRET, Grants.captioner_for("lobby"))
        await join_then_stop(meeting, await start_sidecar(meeting.base_url, captioner))
    finally:
        await meeting.stop()


@pytest.mark.slow
async def test_sidecar_command_trusts_a_self_signed_server_given_its_certificate(
    tmp_path: Path,
) -> None:
    settings = Settings(port=0, data_dir=tmp_path, secret_override=SECRET, tls_self_signed=True)
    meeting = Meeting(settings, EngineRunner(ScriptedEngine()), embedded_sidecar=False)
    await meeting.start()
    captioner = mint_token(SECRET, Grants.captioner_for("lobby"))
    try:
        assert meeting.base_url.startswith("https://")
        bad = tmp_path / "not-a-certificate.pem"
        bad.write_text("hello")
        refused = await start_sidecar(meeting.base_url, captioner, "--cafile", str(bad))
        output, _ = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 2 and b"--cafile" in output, output

        cert = tmp_path / "tls" / "self-signed.crt"
        process = await start_sidecar(meeting.base_url, captioner, "--cafile", str(cert))
        await join_then_stop(meeting, process)
    finally:
        await meeting.stop()
