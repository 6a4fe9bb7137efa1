"""The whole product in one process, as ``captions serve`` runs it.

One aiohttp application holds the SFU (``sfu.server``: signalling and the meeting page)
and the captions API (:mod:`meeting.api`: ``/captions``, transcripts). When a
room gets its first visible participant, an embedded :class:`~meeting.sidecar.Sidecar`
joins it as a hidden captioner, exactly as ``captions sidecar`` would, over a loopback
listener (plain HTTP on 127.0.0.1, so a self-signed public certificate never gets in its
way), and publishes back to ``/captions/publish``. When the room goes idle its sidecar
leaves, flushing its last words. All rooms share one :class:`EngineRunner`, which also
serves Kyutai's ``/api/asr-streaming`` when API keys are given.

Stopping (Ctrl-C, SIGTERM) flushes every stream to the transcript store before the
server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import ipaddress
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from captions.asr_server import add_asr_routes
from captions.metrics import EngineCollector
from captions.runtime import EngineRunner
from common.aio import bounded, wait_ended
from common.exceptions import ConfigError, DirectoryUnavailableError, PlacementError
from meeting.api import install_captions_api
from meeting.directory import NodeLoad, RoomDirectory, default_node_id
from meeting.hub import CaptionHub
from meeting.ops import NodeCollector, ReadyCheck, add_ops_routes, caption_latency_histogram
from meeting.page import add_page_routes
from meeting.placement import Placement
from meeting.sidecar import Sidecar
from meeting.store import SQLITE_FILE, open_store
from sfu.connections import ConnectionGuard, GuardedTCPSite
from sfu.room import Room
from sfu.server import SFU, create_app
from sfu.settings import Settings, SettingsError
from sfu.tokens import Grants, mint_token

log = logging.getLogger(__name__)

TRANSCRIPTS_FILE = SQLITE_FILE
SIDECAR_TOKEN_TTL = 30 * 24 * 3600.0
# Stop-path bounds. A sidecar flushes its streams and waits for the server's acks
# (each bounded by 10 s in meeting.sidecar); aiohttp's own shutdown waits up to 60 s.
SIDECAR_STOP_SECONDS = 30.0
SERVER_STOP_SECONDS = 90.0
RUNNER_STOP_SECONDS = 30.0


@dataclass(frozen=True)
class JoinLinks:
    host: str
    guest: str


class Meeting:
    """SFU + captions API + embedded sidecars, bound to ``settings``."""

    def __init__(
        self,
        settings: Settings,
        runner: EngineRunner,
        *,
        retention_hours: float = 24.0,
        language: str | None = None,
        sidecar_options: dict[str, Any] | None = None,
        embedded_sidecar: bool = True,
        asr_api_keys: Sequence[str] = (),
        database_url: str | None = None,
        metrics_token: str | None = None,
        redis_url: str | None = None,
        node_id: str | None = None,
        heartbeat_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.secret = settings.secret
        self.store = open_store(database_url, Path(settings.data_dir))
        self.language = language or runner.engine.info.languages[0]
        self.hub = CaptionHub(self.store, default_language=self.language)
        self.app = create_app(settings)
        add_page_routes(self.app)
        self.api = install_captions_api(
            self.app, self.hub, self.secret, retention_hours=retention_hours
        )
        self.draining = False
        """Set by drain(): no new rooms come here; live rooms finish."""
        self.directory: RoomDirectory | None = None
        checks: dict[str, ReadyCheck] = {"store": self.store.ping, "draining": self._not_draining}
        if redis_url:
            self.directory = RoomDirectory(
                redis_url,
                node_id or default_node_id(),
                settings.public_base_url or "",
                load=self._load,
                live_rooms=lambda: [room.name for room in self.app[SFU].rooms],
                heartbeat_seconds=heartbeat_seconds,
                ttl_seconds=3 * heartbeat_seconds,
            )
            Placement(self.directory, self.secret).install(self.app, self.app[SFU])
            checks["directory"] = self.directory.ping
        self.ops = add_ops_routes(
            self.app,
            [
                NodeCollector(self.app[SFU], self.hub, draining=lambda: self.draining),
                EngineCollector(runner),
            ],
            checks,
            metrics_token=metrics_token,
        )
        caption_latency_histogram(self.ops.registry, self.hub)
        if asr_api_keys:  # Kyutai's /api/asr-streaming, on the same engine
            add_asr_routes(self.app, runner, asr_api_keys)
        server = self.app[SFU]
        if embedded_sidecar:  # else rooms are captioned by separate ``captions sidecar``s
            server.on_room_opened.append(self._room_opened)
        server.on_room_idle.append(self._room_idle)
        self.sidecar_options = sidecar_options or {}
        self.sidecars: dict[str, Sidecar] = {}
        self._sidecar_tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._web: web.AppRunner | None = None
        self.internal_url = ""
        self.port = settings.port

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        self._web = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._web.setup()
        self.connections = ConnectionGuard(self.settings.connection_limits())
        public = GuardedTCPSite(
            self._web,
            self.settings.host,
            self.settings.port,
            ssl_context=self._ssl_context(),
            guard=self.connections,
        )
        try:
            await public.start()
        except OSError as exc:  # a busy port is the usual cause: say so, not a traceback
            raise ConfigError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: "
                f"{exc.strerror or exc} (is another server running there? choose --port)"
            ) from exc
        self.port = _bound_port(public)
        internal = web.TCPSite(self._web, "127.0.0.1", 0)
        await internal.start()
        self.internal_url = f"http://127.0.0.1:{_bound_port(internal)}"
        if self.directory is not None:
            if not self.directory.node.url:
                self.directory.node = replace(self.directory.node, url=self.base_url)
            await self.directory.start()

    def drain(self) -> None:
        """No new rooms come to this node (readiness fails, placement skips it); the rooms
        it holds go on until they end."""
        self.draining = True
        if self.directory is not None:
            self.directory.draining = True

    def _load(self) -> NodeLoad:
        rooms = list(self.app[SFU].rooms)
        participants = sum(1 for r in rooms for p in r.peers.values() if not p.grants.hidden)
        return NodeLoad(len(rooms), participants, self.runner.active_streams)

    async def stop(self) -> None:
        """Flushes every sidecar's streams into the store, then closes the server."""
        if self.directory is not None:
            self.drain()
            with contextlib.suppress(DirectoryUnavailableError):
                await self.directory.heartbeat()  # no new rooms while stopping
        await asyncio.gather(
            *(self._stop_sidecar(room) for room in list(self.sidecars)),
            *self._stopping,
            return_exceptions=True,
        )
        if self._web is not None:
            await bounded(self._web.cleanup(), timeout=SERVER_STOP_SECONDS, what="server cleanup")
            self._web = None
        await bounded(self.runner.aclose(), timeout=RUNNER_STOP_SECONDS, what="engine shutdown")
        await self.hub.aclose()
        await self.store.aclose()
        if self.directory is not None:
            await self.directory.aclose()

    @property
    def base_url(self) -> str:
        if self.settings.public_base_url:
            return self.settings.base_url
        return self.settings.with_overrides(port=self.port).base_url

    def links(self, room: str | None = None, *, ttl: float = 24 * 3600.0) -> JoinLinks:
        room = room or self.settings.default_room
        host = mint_token(self.secret, Grants.for_role(room, "Host", "host"), ttl=ttl)
        guest = mint_token(self.secret, Grants.for_role(room, "Guest", "guest"), ttl=ttl)
        return JoinLinks(
            f"{self.base_url}/room/{room}#token={host}",
            f"{self.base_url}/room/{room}#token={guest}",
        )

    async def _not_draining(self) -> str:
        if self.draining:
            raise PlacementError("draining: this node takes no new rooms")
        return "accepting rooms"

    # -- embedded sidecars ----------------------------------------------------------

    def _room_opened(self, room: Room) -> None:
        if room.name in self.sidecars:
            return
        token = mint_token(self.secret, Grants.captioner_for(room.name), ttl=SIDECAR_TOKEN_TTL)
        sidecar = Sidecar(self.internal_url, token, self.runner, **self.sidecar_options)
        self.sidecars[room.name] = sidecar
        task = asyncio.create_task(sidecar.run())
        self._sidecar_tasks[room.name] = task
        task.add_done_callback(functools.partial(self._sidecar_done, room.name))

    def _sidecar_done(self, room: str, task: asyncio.Task[None]) -> None:
        if self._sidecar_tasks.get(room) is task:
            del self._sidecar_tasks[room]
            self.sidecars.pop(room, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("sidecar of %s failed", room, exc_info=task.exception())

    def _room_idle(self, room: Room) -> None:
        self.hub.touch(room.name, active=False)
        if room.name in self.sidecars:
            task = asyncio.ensure_future(self._stop_sidecar(room.name))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _stop_sidecar(self, room: str) -> None:
        # Forgotten at once, so that the room reopening meanwhile gets a new sidecar.
        sidecar = self.sidecars.pop(room, None)
        task = self._sidecar_tasks.pop(room, None)
        if sidecar is None or task is None:
            return
        await sidecar.stop()
        if not await wait_ended(task, timeout=SIDECAR_STOP_SECONDS):
            log.warning("the sidecar of %s did not leave in time; cancelled", room)

    def _ssl_context(self) -> ssl.SSLContext | None:
        settings = self.settings
        if settings.tls_self_signed:
            cert, key = self_signed_certificate(Path(settings.data_dir) / "tls", settings.host)
        elif settings.tls_cert is not None and settings.tls_key is not None:
            cert, key = settings.tls_cert, settings.tls_key
        else:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
        return context


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp has no public accessor for the bound port
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


def self_signed_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """Returns (cert, key) PEM paths, generating a one-year self-signed pair if absent."""
    cert_path, key_path = directory / "self-signed.crt", directory / "self-signed.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for address in {"127.0.0.1", host}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sovereign-captions")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
