"""``captions sidecar --sfu URL --token T``: caption one room from a separate process.

The same code as the sidecar embedded in ``captions serve``: it joins the room of the
token (which needs the ``captioner`` grant) through the SFU at ``URL`` as a hidden
participant, and publishes captions to that server's ``/captions/publish``. It rejoins
after a server restart and stops cleanly on Ctrl-C or SIGTERM, flushing last words.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from captions.engines import create_engine
from captions.runtime import EngineRunner
from captions.sidecar import Sidecar
from cli.common import add_engine_arguments, engine_options
from cli.serve import on_stop_signals, setup_logging


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sidecar",
        help="caption one room of a running server from a separate process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sfu", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="room token with the captioner grant")
    parser.add_argument("--verbose", "-v", action="store_true", help="log more")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    engine = create_engine(args.engine, engine_options(args))
    asyncio.run(follow(args, engine))
    return 0


async def follow(args: argparse.Namespace, engine: Any) -> None:
    async with EngineRunner(engine) as runner:
        sidecar = Sidecar(args.sfu, args.token, runner)
        stopping: list[asyncio.Task[None]] = []  # keeps the stop task referenced
        on_stop_signals(lambda: stopping.append(asyncio.create_task(sidecar.stop())))
        await sidecar.run()
