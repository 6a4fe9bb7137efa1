"""``captions asr-serve`` as a process: never open, key generated and printed."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import websockets

from cli.main import build_parser
from evaluation.kyutai_checkpoint import write_random_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_api_key_is_repeatable() -> None:
    args = build_parser().parse_args(["asr-serve", "--api-key", "a", "--api-key", "b"])
    assert args.api_key == ["a", "b"]


async def start_asr_serve(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], int, str]:
    """``captions asr-serve`` on a tiny random Kyutai checkpoint: the process, its port and
    the generated key, once it says it is serving (it listens by then)."""
    checkpoint = write_random_checkpoint(tmp_path / "tiny")
    port = free_port()
    command = [sys.executable, "-m", "cli.main", "asr-serve", "--port", str(port),
               "--engine", "kyutai", "--model", str(checkpoint), "--device", "cpu",
               "--max-streams", "1", *options]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while not any(line.startswith("serving") for line in lines):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(lines)
        lines.append(await asyncio.to_thread(process.stdout.readline))
    key = next(line.split(": ", 1)[1].strip() for line in lines if "API key" in line)
    return process, port, key


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.slow
async def test_generated_key_is_printed_and_required(tmp_path: Path) -> None:
    process, port, key = await start_asr_serve(tmp_path)
    try:
        assert len(key) >= 24
        url = f"ws://127.0.0.1:{port}/api/asr-streaming"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 401
        async with websockets.connect(url, additional_headers={"kyutai-api-key": key}) as ws:
            assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10)) == {"type": "Ready"}
    finally:
        stop(process)
    assert process.returncode == 0  # SIGTERM is a clean stop


@pytest.mark.slow
async def test_raw_connections_are_bounded(tmp_path: Path) -> None:
    """Connections that never speak are counted per address and timed out, before HTTP."""
    process, port, key = await start_asr_serve(
        tmp_path, "--max-connections-per-address", "2", "--header-timeout", "1"
    )
    silent: list[asyncio.StreamWriter] = []
    try:
        for _ in range(2):  # two silent connections hold both of this address's places...
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            silent.append(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        silent.append(writer)
        refusal = await asyncio.wait_for(reader.read(), 10)  # ...so a third is refused
        assert refusal.startswith(b"HTTP/1.1 429"), refusal
        # The silent ones are closed with a 408 once the header timeout is over...
        await asyncio.sleep(1.5)
        url = f"ws://127.0.0.1:{port}/api/asr-streaming"
        # ...which frees the places for a real client.
        async with websockets.connect(url, additional_headers={"kyutai-api-key": key}) as ws:
            assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10)) == {"type": "Ready"}
    finally:
        for writer in silent:
            writer.close()
        stop(process)
