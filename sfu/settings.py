"""Server settings, shared by ``captions serve``, ``captions token`` and the sidecar.

Every field has a safe default; the environment overrides the defaults and command-line
options override the environment (see :meth:`Settings.from_env`).

``secret`` signs room tokens. It comes from ``CAPTIONS_SECRET`` if set; otherwise it is
generated on first use and kept in ``<data_dir>/secret`` (mode 0600), so that
``captions token`` and a running ``captions serve`` with the same data directory agree.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.exceptions import ConfigError
from sfu.connections import ConnectionLimits
from sfu.signalling import JOIN_TIMEOUT_SECONDS

ENV_DATA_DIR = "CAPTIONS_DATA_DIR"
ENV_SECRET = "CAPTIONS_SECRET"
ENV_HOST = "CAPTIONS_HOST"
ENV_PORT = "CAPTIONS_PORT"
ENV_BASE_URL = "CAPTIONS_BASE_URL"
SECRET_FILE = "secret"
DEFAULT_ROOM = "lobby"
MIN_SECRET_CHARS = 32


SettingsError = ConfigError
"""Alias kept for readers of this module: unusable settings."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path("data"))
    secret_override: str | None = None
    """A secret given explicitly (environment or caller); else the data-dir file."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    public_base_url: str | None = None
    """How browsers reach the server, for join links (default: scheme://host:port)."""
    default_room: str = DEFAULT_ROOM
    max_message_bytes: int = 256 * 1024
    """Largest signalling message accepted (subscriber answers grow with the room)."""
    max_participants_per_room: int = 100
    join_timeout_seconds: float = JOIN_TIMEOUT_SECONDS
    """A signalling socket must have joined within this time of connecting (4408)."""
    max_connections: int = 2048
    """Open TCP connections in all; beyond, HTTP 503 (``sfu.connections``)."""
    max_connections_per_address: int = 256
    """Open TCP connections from one IP address; beyond, HTTP 429."""
    header_timeout_seconds: float = 10.0
    """Time a new connection has to send its first request head; else 408, closed."""
    media_connect_timeout_seconds: float = 30.0
    """A participant's media connection must be connected within this time of being set
    up; else it is a dead link (4410 MEDIA_LOST), as when it fails later. Without it the
    SFU waited for ever on a link whose ICE cannot succeed (a firewall blocking UDP): it
    gets no end-of-candidates, so aioice never gives up."""
    ice_loopback: bool = True
    """Also offer 127.0.0.1 ICE candidates (aioice leaves loopback out by default)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CAPTIONS_*`` variables, then non-None ``overrides``."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        if env.get(ENV_DATA_DIR):
            values["data_dir"] = Path(env[ENV_DATA_DIR])
        if env.get(ENV_SECRET):
            values["secret_override"] = env[ENV_SECRET]
        if env.get(ENV_HOST):
            values["host"] = env[ENV_HOST]
        if env.get(ENV_PORT):
            try:
                values["port"] = int(env[ENV_PORT])
            except ValueError as exc:
                raise SettingsError(f"{ENV_PORT} must be a port number") from exc
        if env.get(ENV_BASE_URL):
            values["public_base_url"] = env[ENV_BASE_URL]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        settings = cls(**values)
        settings.validate()
        return settings

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            max_total=self.max_connections,
            max_per_address=self.max_connections_per_address,
            header_timeout_seconds=self.header_timeout_seconds,
        )

    def validate(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("--tls-cert and --tls-key go together")
        if self.tls_self_signed and self.tls_cert is not None:
            raise SettingsError("use either --tls-self-signed or --tls-cert/--tls-key")
        self.connection_limits()  # raises on a limit below 1 or a timeout not positive
        if not self.media_connect_timeout_seconds > 0:
            raise SettingsError("the media connect timeout must be positive")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port {self.port} is out of range")
        if self.secret_override is not None and len(self.secret_override) < MIN_SECRET_CHARS:
            # The same rule as for the secret file: a short secret makes tokens forgeable.
            raise SettingsError(f"{ENV_SECRET}: secret shorter than {MIN_SECRET_CHARS} characters")

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def uses_tls(self) -> bool:
        return self.tls_self_signed or self.tls_cert is not None

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        scheme = "https" if self.uses_tls else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    @property
    def secret(self) -> str:
        """The token secret; generated into the data directory on first use."""
        if self.secret_override:
            return self.secret_override
        return load_or_create_secret(self.data_dir)


def load_or_create_secret(data_dir: Path) -> str:
    path = data_dir / SECRET_FILE
    try:
        if path.exists():
            secret = path.read_text().strip()
            if len(secret) < MIN_SECRET_CHARS:
                raise SettingsError(f"{path}: secret shorter than {MIN_SECRET_CHARS} characters")
            return secret
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        # O_EXCL: if two processes race on first start, the loser reads the winner's file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_secret(data_dir)
    except OSError as exc:
        raise SettingsError(f"cannot read or create the token secret in {data_dir}: {exc}") from exc
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return secret
