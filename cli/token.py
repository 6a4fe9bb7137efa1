"""``captions token``: mint a room token and print a ready-to-open join link.

The link is the last line of the output: ``{base_url}/room/{room}#token={jwt}``. The
token sits in the URL fragment, which browsers never send to the server, so it stays
out of access logs; the meeting page reads it from ``location.hash``.

With ``--captioner`` it mints the token of a separate ``captions sidecar --token T``
instead (the ``captioner`` grant: hidden, subscribe-only) and prints the token alone.
"""

from __future__ import annotations

import argparse
from typing import Any, cast

from common.exceptions import ConfigError
from sfu.settings import Settings
from sfu.tokens import DEFAULT_TTL_SECONDS, ROLES, Grants, Role, mint_token


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token",
        help="mint a room token and print a join link",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--room", required=True, help="room name (letters, digits, _ . -)")
    parser.add_argument("--name", help="display name of the participant (required for a link)")
    parser.add_argument("--role", choices=ROLES, default="participant")
    parser.add_argument(
        "--captioner",
        action="store_true",
        help="a token for `captions sidecar --token` (printed alone) instead of a join link",
    )
    parser.add_argument("--identity", help="unique identity (default: derived from the name)")
    parser.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL_SECONDS,
        help="validity in seconds (default: 1 day)",
    )
    parser.add_argument("--base-url", help="how browsers reach the server (default: from settings)")
    parser.add_argument("--data-dir", help="data directory holding the secret (default: ./data)")
    parser.set_defaults(func=run)


def join_link(base_url: str, room: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/room/{room}#token={token}"


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(data_dir=args.data_dir, public_base_url=args.base_url)
    if args.captioner:
        captioner = Grants.captioner_for(args.room, identity=args.identity or "captioner")
        print(mint_token(settings.secret, captioner, ttl=args.ttl))
        return 0
    if not args.name:
        raise ConfigError("--name is required for a join link (or pass --captioner)")
    grants = Grants.for_role(args.room, args.name, cast(Role, args.role), identity=args.identity)
    token = mint_token(settings.secret, grants, ttl=args.ttl)
    print(
        f"room {grants.room}, {grants.role} {grants.display_name} ({grants.identity}),"
        f" valid {args.ttl:g} s"
    )
    print(join_link(settings.base_url, grants.room, token))
    return 0
