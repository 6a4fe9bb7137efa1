"""Room access tokens: HS256 JWTs (PyJWT) that carry a participant's grants.

A token names exactly one room and expires. :func:`verify_token` raises one
:class:`~common.exceptions.AuthError` subclass per rejection case, each with a stable
``code`` that clients see (``docs/signalling.md`` lists them):

- no token: ``token_missing``; bad signature or not a token: ``token_invalid``;
- past its expiry: ``token_expired``; issued for another room: ``wrong_room``;
- a host-only action by a non-host: ``forbidden`` (see :func:`require_host`).
"""

from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

import jwt

from common.exceptions import (
    ForbiddenError,
    TokenExpiredError,
    TokenInvalidError,
    TokenMissingError,
    WrongRoomError,
)
from sfu.names import MAX_NAME_CHARS, clean_display_name

Role = Literal["host", "participant", "guest"]
ROLES: tuple[Role, ...] = ("host", "participant", "guest")
ALGORITHM = "HS256"
ISSUER = "sovereign-captions"
DEFAULT_TTL_SECONDS = 24 * 3600
MAX_TOKEN_CHARS = 4096
ROOM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Room names are URL-path safe: letters, digits, ``_ . -``, at most 64 characters."""
MAX_IDENTITY_CHARS = 64
MAX_TTL_SECONDS = 366 * 24 * 3600.0


@dataclass(frozen=True)
class Grants:
    """What the bearer of a token may do in one room.

    ``identity`` is unique in the room (a second connection with the same identity
    replaces the first). ``hidden`` participants (the captioning sidecar) are not listed
    to others and cannot publish; ``captioner`` marks the sidecar itself.
    """

    room: str
    identity: str
    name: str = ""
    role: Role = "participant"
    can_publish: bool = True
    can_subscribe: bool = True
    hidden: bool = False
    captioner: bool = False
    expires_at: float | None = field(default=None, compare=False)
    """When the token carrying these grants expires (set by :func:`verify_token`; not
    signed as a grant: the token's ``exp`` is)."""

    def __post_init__(self) -> None:
        # Every display name passes here (tokens, join.name): the one place it is cleaned.
        object.__setattr__(self, "name", clean_display_name(self.name))
        if not ROOM_PATTERN.match(self.room):
            raise TokenInvalidError(f"invalid room name {self.room!r}")
        if not self.identity or len(self.identity) > MAX_IDENTITY_CHARS:
            raise TokenInvalidError("identity must be 1 to 64 characters")
        if clean_display_name(self.identity) != self.identity:
            raise TokenInvalidError("identity has control characters or invalid Unicode")
        if len(self.name) > MAX_NAME_CHARS:
            raise TokenInvalidError("name must be at most 64 characters")
        if self.role not in ROLES:
            raise TokenInvalidError(f"unknown role {self.role!r}")

    @property
    def is_host(self) -> bool:
        return self.role == "host"

    @property
    def display_name(self) -> str:
        return self.name or self.identity

    @classmethod
    def for_role(cls, room: str, name: str, role: Role, *, identity: str | None = None) -> Grants:
        """Grants a person gets by role; guests may listen and watch but not publish."""
        return cls(
            room=room,
            identity=identity or new_identity(name),
            name=name,
            role=role,
            can_publish=role != "guest",
        )

    @classmethod
    def captioner_for(cls, room: str, *, identity: str = "captioner") -> Grants:
        """The captioning sidecar: hidden, subscribe-only."""
        return cls(
            room=room,
            identity=identity,
            name="Captions",
            role="participant",
            can_publish=False,
            hidden=True,
            captioner=True,
        )

    def with_room(self, room: str) -> Grants:
        return replace(self, room=room)


def new_identity(name: str) -> str:
    """A unique identity derived from a display name: ``alice-3f9c1a``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "user"
    return f"{slug}-{secrets.token_hex(3)}"


def mint_token(secret: str, grants: Grants, *, ttl: float = DEFAULT_TTL_SECONDS) -> str:
    """Signs ``grants`` for ``ttl`` seconds."""
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL_SECONDS:
        raise TokenInvalidError(f"ttl must be a number of seconds in (0, {MAX_TTL_SECONDS:g}]")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": grants.identity,
        "iat": now,
        "nbf": now - 5,
        "exp": now + int(ttl),
        "grants": {k: v for k, v in asdict(grants).items() if k != "expires_at"},
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None, room: str | None = None) -> Grants:
    """Returns the grants of a valid token, for ``room`` if given; raises an AuthError."""
    if not token:
        raise TokenMissingError("no room token was given")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalidError("room token is too long")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpiredError("room token has expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenInvalidError(f"room token is invalid: {exc}") from exc
    grants = _grants_from_claims(claims)
    if room is not None and grants.room != room:
        raise WrongRoomError(f"room token is for another room, not {room!r}")
    return grants


def require_host(grants: Grants, action: str, *, now: float | None = None) -> None:
    """Raises ``forbidden`` unless the grants belong to the room's host, and
    ``token_expired`` once the host's token has expired: a signalling socket outlives its
    token (the meeting goes on), but host powers end with it. No leeway is allowed."""
    if not grants.is_host:
        raise ForbiddenError(f"only the host may {action}")
    now = time.time() if now is None else now
    if grants.expires_at is not None and now >= grants.expires_at:
        raise TokenExpiredError(f"the host token has expired: rejoin to {action}")


def _grants_from_claims(claims: dict[str, Any]) -> Grants:
    raw = claims.get("grants")
    if not isinstance(raw, dict) or raw.get("identity") != claims.get("sub"):
        raise TokenInvalidError("room token carries no valid grants")
    text_fields = ("room", "identity", "name", "role")
    flag_fields = ("can_publish", "can_subscribe", "hidden", "captioner")
    if not all(isinstance(raw.get(k, ""), str) for k in text_fields) or not all(
        isinstance(raw.get(k, False), bool) for k in flag_fields
    ):
        raise TokenInvalidError("room token grants have wrong types")
    known = {k: raw[k] for k in (*text_fields, *flag_fields) if k in raw}
    if "room" not in known or "identity" not in known:
        raise TokenInvalidError("room token names no room or identity")
    return Grants(**cast(dict[str, Any], known), expires_at=float(claims["exp"]))
