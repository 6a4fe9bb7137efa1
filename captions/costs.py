"""Where an engine's compute goes: seconds per named step, summed over threads.

An engine that keeps a :class:`StepCosts` (``engine.costs``) lets ``captions eval`` and
``captions bench`` publish a per-step breakdown (VAD, features, encoder, decoder,
alignment, second look, final beam decode, ...). Times are wall seconds of each step on
the thread that ran it, so steps that run on parallel workers add up to more than the
elapsed time; on a shared machine they include time lost to other processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


class StepCosts:
    """Thread-safe running totals of seconds and calls per step name."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds
            self._calls[name] = self._calls.get(name, 0) + 1

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begin)

    def snapshot(self) -> dict[str, float]:
        """Seconds per step so far (a copy)."""
        with self._lock:
            return dict(self._seconds)

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def since(self, before: Mapping[str, float]) -> dict[str, float]:
        """Seconds per step spent after ``before`` (an earlier :meth:`snapshot`)."""
        now = self.snapshot()
        return {k: v - before.get(k, 0.0) for k, v in now.items() if v - before.get(k, 0.0) > 0}


def add_costs(total: dict[str, float], more: Mapping[str, float]) -> None:
    for name, seconds in more.items():
        total[name] = total.get(name, 0.0) + seconds
