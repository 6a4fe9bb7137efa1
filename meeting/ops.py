"""Operator endpoints of a node (``captions serve``) or an ASR server (``asr-serve``).

- ``GET /healthz``: liveness; 200 while the process's event loop answers.
- ``GET /readyz``: readiness, 200 or 503 with a JSON body naming each check. A node is
  not ready while draining, or when its transcript database or room directory does not
  answer within ``check_timeout_seconds``; an ASR server is not ready when it has no
  free stream slot (HAProxy and kyutai-remote clients skip it).
- ``GET /metrics``: Prometheus text format, pulled by the operator's Prometheus; nothing
  is ever pushed. It carries no room name, identity or text, only counts, but it still
  tells how busy a deployment is: with ``metrics_token`` set it needs
  ``Authorization: Bearer <token>``; without one it answers loopback clients only.
  The shipped HAProxy configuration also refuses it at the entry point, so it is
  scraped on each node's own address (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from captions.asr_server import runner_of
from captions.events import CaptionEvent
from captions.metrics import EngineCollector, free_slots
from common.exceptions import CapacityError
from meeting.hub import CaptionHub
from sfu.forwarding import TOTALS as FORWARDING
from sfu.server import SfuServer

ReadyCheck = Callable[[], Awaitable[Any]]
"""Raises (any exception) or returns a false value when not ready; may return details."""

REGISTRY_KEY = web.AppKey("ops_registry", CollectorRegistry)


class Ops:
    def __init__(
        self,
        registry: CollectorRegistry,
        checks: Mapping[str, ReadyCheck],
        *,
        metrics_token: str | None = None,
        check_timeout_seconds: float = 2.0,
    ) -> None:
        self.registry = registry
        self.checks = dict(checks)
        self.metrics_token = metrics_token or None
        self.check_timeout_seconds = check_timeout_seconds

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        results = await asyncio.gather(*(self._check(c) for c in self.checks.values()))
        report = dict(zip(self.checks, results, strict=True))
        return all(ok for ok, _ in results), {k: v for k, (_, v) in report.items()}

    async def _check(self, check: ReadyCheck) -> tuple[bool, Any]:
        try:
            async with asyncio.timeout(self.check_timeout_seconds):
                detail = await check()
        except TimeoutError:
            return False, "timeout"
        except Exception as exc:
            return False, str(exc)[:200]
        ok = detail is not False and detail != 0
        return ok, detail if detail not in (None, True) else "ok"

    async def readyz(self, request: web.Request) -> web.Response:
        ready, checks = await self.readiness()
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        if not self._may_read_metrics(request):
            return web.json_response({"error": "forbidden"}, status=403)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _may_read_metrics(self, request: web.Request) -> bool:
        if self.metrics_token is not None:
            header = request.headers.get("Authorization", "")
            given = header[7:].strip() if header.lower().startswith("bearer ") else ""
            return hmac.compare_digest(given.encode(), self.metrics_token.encode())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            return peer is not None and ipaddress.ip_address(peer[0]).is_loopback
        except ValueError:
            return False


def add_ops_routes(
    app: web.Application,
    collectors: Iterable[Collector],
    checks: Mapping[str, ReadyCheck],
    *,
    metrics_token: str | None = None,
) -> Ops:
    """Mounts /healthz, /readyz and /metrics; returns the :class:`Ops` (its registry holds
    ``collectors``; more metrics can be registered on it)."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    ops = Ops(registry, checks, metrics_token=metrics_token)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    return ops


CAPTION_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class NodeCollector(Collector):
    """Rooms, participants, store health and forwarding of one ``captions serve`` node."""

    def __init__(
        self,
        sfu: SfuServer,
        hub: CaptionHub,
        *,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.sfu = sfu
        self.hub = hub
        self.draining = draining

    def collect(self) -> Iterator[Metric]:
        rooms = list(self.sfu.rooms)
        participants = sum(1 for r in rooms for p in r.peers.values() if not p.grants.hidden)
        yield GaugeMetricFamily("captions_rooms", "Rooms open on this node", value=len(rooms))
        yield GaugeMetricFamily(
            "captions_participants", "Visible participants on this node", value=participants
        )
        yield GaugeMetricFamily(
            "captions_draining", "1 while the node takes no new rooms", value=int(self.draining())
        )
        yield CounterMetricFamily(
            "captions_store_failures",
            "Transcript store operations that failed (each retry counts)",
            value=self.hub.store_failures,
        )
        yield GaugeMetricFamily(
            "captions_store_pending_writes",
            "Finals broadcast and not yet written to the store",
            value=self.hub.pending_writes,
        )
        yield CounterMetricFamily(
            "captions_forwarded_frames",
            "Media frames the SFU pushed to subscribers",
            value=FORWARDING.frames_forwarded,
        )


def caption_latency_histogram(registry: CollectorRegistry, hub: CaptionHub) -> Histogram:
    """Observes, for every final, the time from the end of its last word (wall clock, from
    the stream's anchoring) to its arrival at the hub: engine + sidecar + transport."""
    histogram = Histogram(
        "captions_caption_latency_seconds",
        "End of a final's last word to its broadcast",
        buckets=CAPTION_LATENCY_BUCKETS,
        registry=registry,
    )

    def observe(room: str, event: CaptionEvent, stream_started_at: float | None) -> None:
        if stream_started_at is not None and event.words:
            histogram.observe(max(0.0, time.time() - (stream_started_at + event.words[-1].end)))

    hub.on_final.append(observe)
    return histogram


def add_asr_ops_routes(app: web.Application, *, metrics_token: str | None = None) -> Ops:
    """/healthz, /readyz and /metrics of a ``captions asr-serve`` application: ready while
    the engine has a free stream slot (the body tells how many)."""
    runner = runner_of(app)

    async def slots() -> dict[str, Any]:
        free = free_slots(runner)
        if free == 0:
            raise CapacityError("no free channels")
        return {"free_slots": free, "streams": runner.active_streams}

    return add_ops_routes(
        app, [EngineCollector(runner)], {"slots": slots}, metrics_token=metrics_token
    )
