"""``captions token``: mint a room token and print a ready-to-open join link.

The link is the last line of the output: ``{base_url}/room/{room}#token={jwt}``. The
token sits in the URL fragment, which browsers never send to the server, so it stays
out of access logs; the meeting page reads it from ``location.hash``.

With ``--captioner`` it mints the token of a separate ``captions sidecar --token T``
instead (the ``captioner`` grant: hidden, subscribe-only) and prints the token alone.

Tokens are signed with the server's secret: ``CAPTIONS_SECRET``, else the file
``secret`` in the data directory. When neither exists yet, a new secret file is created
and a warning goes to stderr: links signed with it only work with a server that uses the
same data directory (or ``CAPTIONS_SECRET``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from common.exceptions import ConfigError
from sfu.settings import SECRET_FILE, Settings
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


def signing_secret(settings: Settings) -> str:
    """The server's secret; warns on stderr when it had to be created just now (a server
    given ``CAPTIONS_SECRET`` or another data directory would refuse these links)."""
    path = settings.data_dir / SECRET_FILE
    creating = settings.secret_override is None and not path.exists()
    secret = settings.secret
    if creating:
        print(
            f"captions: warning: no secret existed, so a new one was created in {path};"
            " these links only work with a server that uses the same data directory"
            " (--data-dir) or the same CAPTIONS_SECRET",
            file=sys.stderr,
        )
    return secret


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(data_dir=args.data_dir, public_base_url=args.base_url)
    if not args.name and not args.captioner:
        raise ConfigError("--name is required for a join link (or pass --captioner)")
    secret = signing_secret(settings)
    if args.captioner:
        captioner = Grants.captioner_for(args.room, identity=args.identity or "captioner")
        print(mint_token(secret, captioner, ttl=args.ttl))
        return 0
    grants = Grants.for_role(args.room, args.name, cast(Role, args.role), identity=args.identity)
    token = mint_token(secret, grants, ttl=args.ttl)
    print(
        f"room {grants.room}, {grants.role} {grants.display_name} ({grants.identity}),"
        f" valid {args.ttl:g} s"
    )
    print(join_link(settings.base_url, grants.room, token))
    return 0
