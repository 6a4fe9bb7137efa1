"""Real PostgreSQL, Redis and HAProxy processes on loopback, for tests, benchmarks and
``deploy/cluster.py``: each in its own temporary directory, on a free port, stopped
(and its directory removed) by :meth:`stop` or on leaving the ``with`` block.

They use the Debian packages that ``scripts/system-deps.sh`` installs (``postgresql``,
``redis-server``, ``haproxy``); :func:`missing_services` names the absent ones, so tests
can skip with that reason. PostgreSQL refuses to run as root: when root, its commands
run as the ``postgres`` user (``runuser``) and its directory belongs to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from common.exceptions import ConfigError

START_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = START_TIMEOUT_SECONDS, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ConfigError(f"{what or 'service'} did not listen on port {port} within {timeout:.0f} s")


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def missing_services() -> list[str]:
    """Debian packages of the services that are not installed here."""
    missing = []
    if postgres_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if shutil.which("haproxy") is None:
        missing.append("haproxy")
    return missing


def terminate(process: subprocess.Popen[bytes] | None, *, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL: the process dies as a crashed machine would, flushing nothing."""
    if process is not None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


class _Service:
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self.cleanup()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    directory: Path


class _Process(_Service):
    """A service that runs in the foreground as one child process."""

    def __init__(self, port: int | None) -> None:
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix=f"captions-{type(self).__name__}-"))
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.directory / "log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
        )
        log.close()
        wait_for_port(self.port, what=type(self).__name__)

    def stop(self) -> None:
        """Terminates the process (SIGTERM, then SIGKILL after 10 s)."""
        terminate(self.process, timeout=10)
        self.process = None

    def kill(self) -> None:
        """Dies at once (SIGKILL), like a crashed machine."""
        kill(self.process)
        self.process = None

    def log(self) -> str:
        return (self.directory / "log").read_text(errors="replace")


class RedisServer(_Process):
    """``redis-server`` without persistence, bound to 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> Sequence[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]


class HAProxy(_Process):
    """``haproxy -db -f CONFIG`` with ``environment`` (the shipped config reads its
    addresses from environment variables)."""

    def __init__(self, config: Path, environment: Mapping[str, str], port: int) -> None:
        super().__init__(port)
        self.config = config
        self.environment = dict(environment)

    def command(self) -> Sequence[str]:
        return ["haproxy", "-db", "-f", str(self.config)]

    def start(self) -> None:
        check = subprocess.run(
            ["haproxy", "-c", "-f", str(self.config)],
            env={**os.environ, **self.environment},
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise ConfigError(f"haproxy rejects {self.config}: {check.stdout}{check.stderr}")
        log = open(self.directory / "log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.environment},
        )
        log.close()
        wait_for_port(self.port, what="haproxy")


class PostgresServer(_Service):
    """A PostgreSQL cluster (``initdb``, ``pg_ctl``) with a trusted ``captions`` superuser,
    listening on 127.0.0.1 and a Unix socket in its own directory."""

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise ConfigError("PostgreSQL is not installed (Debian package postgresql)")
        self.bin = bin_dir
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="captions-pg-"))
        self.data = self.directory / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "captions", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://captions@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ConfigError(f"{tool} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        log = str(self.directory / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``mode`` "immediate" is a crash-like stop (no checkpoint), "fast" a clean one."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()
