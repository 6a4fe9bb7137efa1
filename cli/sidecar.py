"""``captions sidecar --sfu URL --token T``: caption one room from a separate process.

The same code as the sidecar embedded in ``captions serve``: it joins the room of the
token (which needs the ``captioner`` grant) through the SFU at ``URL`` as a hidden
participant, and publishes captions to that server's ``/captions/publish``. It rejoins
after a server restart and stops cleanly on Ctrl-C or SIGTERM, flushing last words.

Over HTTPS the server's certificate is verified; for a server started with
``--tls-self-signed``, pass its certificate with ``--cafile DATA_DIR/tls/self-signed.crt``.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from pathlib import Path
from typing import Any

from captions.engines import create_engine
from captions.runtime import EngineRunner
from cli.common import add_engine_arguments, engine_options
from cli.serve import on_stop_signals, setup_logging
from common.exceptions import ConfigError
from meeting.sidecar import Sidecar


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sidecar",
        help="caption one room of a running server from a separate process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sfu", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="room token with the captioner grant")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--cafile",
        type=Path,
        metavar="PEM",
        help="trust this certificate (e.g. the server's self-signed one) for HTTPS",
    )
    trust.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (testing only)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log more")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    args.ssl = ssl_option(args)
    engine = create_engine(args.engine, engine_options(args))
    asyncio.run(follow(args, engine))
    return 0


async def follow(args: argparse.Namespace, engine: Any) -> None:
    async with EngineRunner(engine) as runner:
        sidecar = Sidecar(args.sfu, args.token, runner, ssl=args.ssl)
        stopping: list[asyncio.Task[None]] = []  # keeps the stop task referenced
        on_stop_signals(lambda: stopping.append(asyncio.create_task(sidecar.stop())))
        await sidecar.run()


def ssl_option(args: argparse.Namespace) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl``: verify (default), a context trusting ``--cafile``, or off."""
    if args.insecure:
        return False
    if args.cafile is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(args.cafile))
    except (OSError, ssl.SSLError) as exc:
        problem = f"--cafile {args.cafile}: not a readable PEM certificate ({exc})"
        raise ConfigError(problem) from exc
