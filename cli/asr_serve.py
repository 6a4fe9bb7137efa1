"""``captions asr-serve``: a standalone Kyutai ``/api/asr-streaming`` server (moshi-server drop-in).

Clients send the key in the ``kyutai-api-key`` header or the ``auth_id`` query
parameter. ``--api-key`` is repeatable; with none, a random key is generated and
printed at start, so the server is never open.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets

from aiohttp import web

from captions.asr_server import ASR_STREAMING_PATH, AsrServerLimits, create_asr_app
from captions.engines import create_engine
from cli.common import (
    add_connection_limit_arguments,
    add_engine_arguments,
    add_metrics_token_argument,
    engine_options,
)
from cli.serve import on_stop_signals
from common.exceptions import ConfigError
from meeting.ops import add_asr_ops_routes
from sfu.connections import ConnectionGuard, ConnectionLimits, GuardedTCPSite


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "asr-serve",
        help="serve Kyutai's /api/asr-streaming protocol (moshi-server drop-in)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted API key (repeatable); one is generated when none is given",
    )
    parser.add_argument(
        "--max-streams-per-key",
        type=int,
        metavar="N",
        help="streams one API key may hold at once (default: all of the engine's)",
    )
    add_connection_limit_arguments(parser)
    add_metrics_token_argument(parser)
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    keys = [k for k in args.api_key if k]
    if not keys:
        keys = [secrets.token_urlsafe(24)]
        print(f"generated API key: {keys[0]}", flush=True)
    engine = create_engine(args.engine, engine_options(args))
    limits = AsrServerLimits(max_streams_per_key=args.max_streams_per_key)
    app = create_asr_app(engine, keys, limits=limits)
    add_asr_ops_routes(app, metrics_token=args.metrics_token)
    url = f"ws://{args.host}:{args.port}{ASR_STREAMING_PATH}"
    banner = f"serving {url} with engine {engine.info.name} ({engine.info.model or 'default'})"
    asyncio.run(serve(app, args.host, args.port, connection_limits(args), banner=banner))
    return 0


def connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    given = {
        "max_total": args.max_connections,
        "max_per_address": args.max_connections_per_address,
        "header_timeout_seconds": args.header_timeout,
    }
    return ConnectionLimits(**{name: value for name, value in given.items() if value is not None})


async def serve(
    app: web.Application, host: str, port: int, limits: ConnectionLimits, *, banner: str
) -> None:
    """Serves ``app`` until Ctrl-C or SIGTERM, printing ``banner`` once it listens; every
    connection counted and timed as ``captions serve`` does (sfu.connections: 503 over
    the total, 429 per address, 408 without a request head in time)."""
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = GuardedTCPSite(runner, host, port, guard=ConnectionGuard(limits))
        try:
            await site.start()
        except OSError as exc:  # a busy port is the usual cause: say so, not a traceback
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(is another server running there? choose --port)"
            ) from exc
        print(banner, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()  # closes the streams and the engine (the app's cleanup)
