"""Entry point of the ``captions`` command.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning
an exit status. Documented errors (:class:`CaptionsError`) become a one-line message
and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from common.exceptions import CaptionsError

COMMANDS = [
    "cli.transcribe",
    "cli.models",
    "cli.token",
    "cli.eval",
    "cli.bench",
    "cli.serve",
    "cli.sidecar",
    "cli.asr_serve",
    "cli.bench_kyutai",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captions", description="Self-hostable live captions for videoconferences."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except CaptionsError as exc:
        print(f"captions: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
