"""Prometheus metrics of one :class:`~captions.runtime.EngineRunner`, read at scrape time.

Metrics are *pulled*: nothing is sent anywhere; an operator's Prometheus scrapes
``/metrics`` of each ``captions serve`` node and each ``captions asr-serve`` (see
docs/scaling.md for who may read it). No metric carries a room, speaker or text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from captions.runtime import EngineRunner


def free_slots(runner: EngineRunner) -> int | None:
    """Streams the engine can still open, or None when it has no fixed limit."""
    limit = runner.engine.info.max_streams
    return None if limit is None else max(0, limit - runner.active_streams)


class EngineCollector(Collector):
    """Streams, free slots, busy fraction and dropped audio of one engine runner.

    ``captions_engine_busy_fraction`` is the share of wall time the engine worker spent
    in steps since the previous scrape (1.0 = saturated); the counter behind it,
    ``captions_engine_busy_seconds_total``, gives the same over any window with rate().
    """

    def __init__(self, runner: EngineRunner) -> None:
        self.runner = runner
        self._last = (time.monotonic(), runner.busy_seconds)

    def collect(self) -> Iterator[Metric]:
        runner = self.runner
        info = runner.engine.info
        now, busy = time.monotonic(), runner.busy_seconds
        then, busy_then = self._last
        self._last = (now, busy)
        fraction = (busy - busy_then) / (now - then) if now > then else 0.0
        streams = GaugeMetricFamily(
            "captions_engine_streams", "Open speech streams (captioned speakers)", labels=["engine"]
        )
        streams.add_metric([info.name], runner.active_streams)
        yield streams
        slots = free_slots(runner)
        if slots is not None:
            free = GaugeMetricFamily(
                "captions_engine_free_slots", "Streams the engine can still open", labels=["engine"]
            )
            free.add_metric([info.name], slots)
            yield free
        gauge = GaugeMetricFamily(
            "captions_engine_busy_fraction",
            "Share of time the engine spent in steps since the previous scrape",
            labels=["engine"],
        )
        gauge.add_metric([info.name], min(1.0, max(0.0, fraction)))
        yield gauge
        counter = CounterMetricFamily(
            "captions_engine_busy_seconds", "Time spent in engine steps", labels=["engine"]
        )
        counter.add_metric([info.name], busy)
        yield counter
        dropped = CounterMetricFamily(
            "captions_audio_dropped_seconds",
            "Audio dropped because the engine fell behind",
            labels=["engine"],
        )
        dropped.add_metric([info.name], runner.dropped_audio_seconds)
        yield dropped
