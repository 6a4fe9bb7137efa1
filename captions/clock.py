"""Clocks. Live code uses wall time; evaluation uses a virtual clock that charges compute.

The virtual clock stands still between events, and inside :meth:`VirtualClock.charging`
it runs at real speed, so a caption emitted in the middle of an engine step is stamped
with the virtual time at which a live user would have seen it (computation-aware
simulation).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds; only differences and ordering are meaningful to callers."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()


class VirtualClock:
    def __init__(self, start: float = 0.0) -> None:
        self._base = start
        self._charging_since: float | None = None
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            if self._charging_since is None:
                return self._base
            return self._base + (time.perf_counter() - self._charging_since)

    def advance_to(self, t: float) -> None:
        """Moves time forward to ``t``; never backwards (a late compute already passed it)."""
        with self._lock:
            if self._charging_since is not None:
                raise RuntimeError("cannot jump while charging compute time")
            self._base = max(self._base, t)

    @contextmanager
    def charging(self) -> Iterator[None]:
        """Lets virtual time flow at real speed for the duration of some real compute."""
        with self._lock:
            self._charging_since = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                assert self._charging_since is not None
                self._base += time.perf_counter() - self._charging_since
                self._charging_since = None


class FreeComputeClock(VirtualClock):
    """A virtual clock on which compute costs no time: every step runs exactly when its
    audio is due, as on an idle machine of unlimited speed. Simulating on it gives the
    streaming policy's own latency and the CPU cost of its nominal step schedule,
    whatever else the machine is doing."""

    @contextmanager
    def charging(self) -> Iterator[None]:
        yield
