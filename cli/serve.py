"""``captions serve``: the SFU, the captioning sidecar and the meeting page in one process.

Listens on 127.0.0.1:8000 by default with the embedded default engine, prints a host
link and a guest link for the default room, and stops cleanly on Ctrl-C or SIGTERM:
every open caption stream is flushed into the transcript store first.

Browsers only give the microphone to secure origins (and localhost): to serve other
machines, use ``--tls-cert/--tls-key`` or ``--tls-self-signed``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from captions.asr_server import ASR_STREAMING_PATH
from captions.engines import create_engine
from captions.runtime import EngineRunner
from cli.common import (
    add_connection_limit_arguments,
    add_engine_arguments,
    add_metrics_token_argument,
    engine_options,
)
from meeting.app import Meeting
from sfu.settings import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the meeting server (SFU, captions, meeting page)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    parser.add_argument("--data-dir", help="token secret, transcripts, TLS files (default: ./data)")
    parser.add_argument("--base-url", help="how browsers reach the server, for the links")
    parser.add_argument("--room", help="the default room, for the printed links (default: lobby)")
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", help="PEM certificate (with --tls-key)")
    tls.add_argument("--tls-key", help="PEM private key (with --tls-cert)")
    tls.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="generate (once, into the data directory) and use a self-signed certificate",
    )
    parser.add_argument(
        "--retention-hours",
        type=float,
        default=24.0,
        help="delete a room's transcript this long after the room ends (default: 24)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="keep transcripts in PostgreSQL (postgresql://user@host:port/db), shared by"
        " every node of a cluster (default: SQLite in the data directory)",
    )
    add_metrics_token_argument(parser)
    cluster = parser.add_argument_group("cluster (docs/scaling.md)")
    cluster.add_argument(
        "--redis",
        metavar="URL",
        help="join a cluster: register in the room directory at redis://host:port/db",
    )
    cluster.add_argument("--node-id", help="this node's id in the cluster (default: host-pid)")
    cluster.add_argument(
        "--public-url",
        help="how the entry point reaches this node (default: the --base-url or listen URL)",
    )
    parser.add_argument(
        "--no-sidecar",
        action="store_true",
        help="no embedded sidecar: rooms are captioned by separate `captions sidecar`s",
    )
    parser.add_argument(
        "--asr-api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="also serve Kyutai's /api/asr-streaming with this API key (repeatable)",
    )
    limits = add_connection_limit_arguments(parser)
    limits.add_argument(
        "--max-participants-per-room",
        type=int,
        help="participants of one room (default: 100; then close 4429)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log more")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        public_base_url=args.base_url,
        default_room=args.room,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_self_signed=args.tls_self_signed or None,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        header_timeout_seconds=args.header_timeout,
        max_participants_per_room=args.max_participants_per_room,
    )


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def on_stop_signals(callback: Callable[[], object]) -> None:
    """Calls ``callback`` on Ctrl-C and SIGTERM (from inside the running event loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, callback)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    settings = settings_from(args)
    print(f"loading the {args.engine} engine...", flush=True)
    engine = create_engine(args.engine, engine_options(args))
    asyncio.run(serve(settings, engine, args))
    return 0


async def serve(settings: Settings, engine: Any, args: argparse.Namespace) -> None:
    runner = EngineRunner(engine)
    meeting = Meeting(
        settings,
        runner,
        retention_hours=args.retention_hours,
        language=args.language,
        asr_api_keys=[key for key in args.asr_api_key if key],
        embedded_sidecar=not args.no_sidecar,
        database_url=args.database_url,
        metrics_token=args.metrics_token,
        redis_url=args.redis,
        node_id=args.node_id,
    )
    if args.public_url and meeting.directory is not None:
        meeting.directory.node = replace(meeting.directory.node, url=args.public_url)
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    with contextlib.suppress(NotImplementedError):  # SIGUSR1 drains (docs/scaling.md)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, meeting.drain)
    await meeting.start()
    try:
        links = meeting.links()
        print(f"captions: serving {meeting.base_url} (engine {engine.info.name})")
        print(f"  data directory: {settings.data_dir.resolve()}")
        print(f"  host link  (room {settings.default_room}): {links.host}")
        print(f"  guest link (room {settings.default_room}): {links.guest}")
        if args.asr_api_key:
            asr = meeting.base_url.replace("http", "ws", 1) + ASR_STREAMING_PATH
            print(f"  Kyutai ASR streaming: {asr} (key from --asr-api-key)")
        print("  Ctrl-C stops the server (open captions are flushed first)", flush=True)
        await stop.wait()
        print("captions: stopping, flushing transcripts...", flush=True)
    finally:
        await meeting.stop()
