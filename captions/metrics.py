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
        engine = info.name
        yield _one(
            GaugeMetricFamily,
            "captions_engine_streams",
            "Open speech streams",
            engine,
            runner.active_streams,
        )
        slots = free_slots(runner)
        if slots is not None:
            yield _one(
                GaugeMetricFamily,
                "captions_engine_free_slots",
                "Streams the engine can still open",
                engine,
                slots,
            )
        yield _one(
            GaugeMetricFamily,
            "captions_engine_busy_fraction",
            "Share of time the engine spent in steps since the previous scrape",
            engine,
            min(1.0, max(0.0, fraction)),
        )
        yield _one(
            CounterMetricFamily,
            "captions_engine_busy_seconds",
            "Time spent in engine steps",
            engine,
            busy,
        )
        yield _one(
            CounterMetricFamily,
            "captions_audio_dropped_seconds",
            "Audio dropped because the engine fell behind",
            engine,
            runner.dropped_audio_seconds,
        )


def _one(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    documentation: str,
    engine: str,
    value: float,
) -> Metric:
    """A metric family with one sample, labelled with the engine's name."""
    metric = family(name, documentation, labels=["engine"])
    metric.add_metric([engine], value)
    return metric
