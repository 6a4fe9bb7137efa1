"""Sovereignty as a test: a whole meeting makes no connection beyond 127.0.0.0/8.

The meeting (server, embedded Whisper sidecar, two bots speaking real speech, a captions
viewer: tests/zero_egress_meeting.py) runs inside a network namespace that has only
loopback (``unshare -n``, as root), and an audit hook records the address of every
connect, send and name lookup the process makes. Anything but loopback fails the test,
even an attempt that the namespace made fail (it found aiortc's default STUN server,
``stun.l.google.com``, looked up on every peer connection).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def is_local(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name to look up


def test_a_whole_meeting_never_leaves_loopback(shared_eval: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip (a network namespace with only loopback)")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("network namespaces are not allowed here")
    audio = sorted((shared_eval / "en_librispeech_test_other" / "audio").glob("*/*.flac"))
    speech = [str(audio[0]), str(audio[30])]
    script = f"ip link set lo up && exec {sys.executable} tests/zero_egress_meeting.py"
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"{script} {' '.join(speech)}"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finals"], "the viewer got no caption: the meeting did not run"
    assert report["addresses"], "nothing recorded: the audit hook did not run"
    outside = sorted({tuple(a) for a in report["addresses"] if not is_local(a[1])})
    assert not outside, f"calls beyond loopback: {outside}"
