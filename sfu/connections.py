"""Bounds on TCP connections to the server, before HTTP: per address, in total, and the
time a connection may take to send its first request head.

aiohttp has no such limits: a client that opens connections and never finishes its
headers (slowloris) keeps each one for ever, and nothing caps how many one address or
everyone together may hold. :class:`ConnectionGuard` wraps aiohttp's protocol factory
(:class:`GuardedTCPSite` is a ``web.TCPSite`` using it), so every connection is counted
and timed whatever it turns out to be (page, API, WebSocket):

- over ``max_total`` connections: ``503 Service Unavailable`` (``Retry-After``), closed;
- over ``max_per_address`` from one IP address: ``429 Too Many Requests``, closed;
- no complete first request head within ``header_timeout_seconds`` of connecting:
  ``408 Request Timeout``, closed. After that aiohttp's own timers apply (an idle
  kept-alive connection closes after 75 s) and a WebSocket its heartbeat and deadlines.

The refusal is written raw, before aiohttp sees the connection, so it costs nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from common.exceptions import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    max_total: int = 2048
    """Open TCP connections the server accepts in all (keep it under ``ulimit -n``)."""
    max_per_address: int = 256
    """Open connections from one IP address (one participant uses about ten; an office
    behind one NAT address holds many participants)."""
    header_timeout_seconds: float = 10.0
    """Time to send a complete request head."""

    def __post_init__(self) -> None:
        if min(self.max_total, self.max_per_address) < 1:
            raise ConfigError("connection limits must be at least 1")
        if not self.header_timeout_seconds > 0:
            raise ConfigError("the header timeout must be positive")


def _refusal(status: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(status) + 1}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
        f"{status}\n"
    ).encode()


class ConnectionGuard:
    """Counts connections by address and wraps each in a :class:`_GuardedProtocol`."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self.total = 0
        self.by_address: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.timed_out = 0

    def factory(self, inner: Any) -> Any:
        """A protocol factory for ``loop.create_server`` wrapping aiohttp's ``inner``."""
        return lambda: _GuardedProtocol(self, inner())

    def admit(self, address: str) -> bytes | None:
        """Counts a new connection from ``address``; the refusal to send, if over a bound."""
        if self.total >= self.limits.max_total:
            self.refused += 1
            return _refusal("503 Service Unavailable")
        if self.by_address[address] >= self.limits.max_per_address:
            self.refused += 1
            return _refusal("429 Too Many Requests")
        self.total += 1
        self.by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's request handler behind the guard: every asyncio callback is forwarded."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.address: str | None = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, to find the end of a request head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        refusal = self.guard.admit(address)
        if refusal is not None:
            log.info("refused a connection from %s: over a connection limit", address)
            transport.write(refusal)
            transport.close()
            return
        self.address, self.transport = address, transport
        self._arm()
        self.inner.connection_made(transport)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.limits.header_timeout_seconds, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.guard.timed_out += 1
            log.info("closing a connection from %s: no request head in time", self.address)
            self.transport.write(_refusal("408 Request Timeout"))
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.address is None:
            return  # refused
        if self._timer is not None:
            window = self._tail + data
            if b"\r\n\r\n" in window:  # the head is complete: aiohttp's own timers rule now
                self._timer.cancel()
                self._timer = None
            self._tail = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.address is None:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.guard.release(self.address)
        self.address = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, *args: Any, guard: ConnectionGuard, **kw: Any):
        super().__init__(runner, *args, **kw)
        self.guard = guard

    async def start(self) -> None:
        # As web.TCPSite.start, with the guard around aiohttp's protocol factory.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self.guard.factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
