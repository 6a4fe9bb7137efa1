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


@pytest.mark.slow
async def test_generated_key_is_printed_and_required(tmp_path: Path) -> None:
    checkpoint = write_random_checkpoint(tmp_path / "tiny")
    port = free_port()
    command = [sys.executable, "-m", "cli.main", "asr-serve", "--port", str(port),
               "--engine", "kyutai", "--model", str(checkpoint), "--device", "cpu",
               "--max-streams", "1"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not any(line.startswith("serving") for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, lines
            lines.append(await asyncio.to_thread(process.stdout.readline))
        key = next(line.split(": ", 1)[1].strip() for line in lines if "API key" in line)
        assert len(key) >= 24
        url = f"ws://127.0.0.1:{port}/api/asr-streaming"
        for _ in range(50):  # the port opens right after the "serving" line
            try:
                with pytest.raises(websockets.InvalidStatus) as refused:
                    async with websockets.connect(url):
                        pass
                break
            except OSError:
                await asyncio.sleep(0.2)
        assert refused.value.response.status_code == 401
        async with websockets.connect(url, additional_headers={"kyutai-api-key": key}) as ws:
            assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10)) == {"type": "Ready"}
    finally:
        process.terminate()
        process.wait(timeout=30)
