"""Options shared by every command that runs an engine."""

from __future__ import annotations

import argparse
import os

from captions.engines import DEFAULT_ENGINE, EngineOptions, engine_names


def add_metrics_token_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-token",
        metavar="TOKEN",
        default=os.environ.get("CAPTIONS_METRICS_TOKEN"),
        help="bearer token for GET /metrics (env CAPTIONS_METRICS_TOKEN); without it,"
        " /metrics answers loopback clients only",
    )


def add_connection_limit_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The bounds on TCP connections (``sfu.connections``); unset means the default."""
    limits = parser.add_argument_group("limits (see docs/security.md)")
    limits.add_argument(
        "--max-connections", type=int, help="open connections in all (default: 2048; then 503)"
    )
    limits.add_argument(
        "--max-connections-per-address",
        type=int,
        help="open connections from one IP address (default: 256; then 429)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="time to send a request head (default: 10; then 408)",
    )
    return limits


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--engine",
        default=DEFAULT_ENGINE,
        help=f"speech engine: {', '.join(engine_names())} (default: {DEFAULT_ENGINE})",
    )
    group.add_argument(
        "--model",
        help="model: a whisper name (tiny.en, default; base, multilingual) or a path "
        "(CTranslate2 Whisper dir, Kyutai checkpoint)",
    )
    group.add_argument("--language", help="language code, e.g. en or fr")
    group.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    group.add_argument("--max-streams", type=int, help="concurrent speakers the engine accepts")
    group.add_argument(
        "--kyutai-url",
        action="append",
        default=[],
        help="ws://HOST:PORT/api/asr-streaming (kyutai-remote); repeat it for a pool of"
        " servers: speakers are spread (least connections) and moved when one fails",
    )
    group.add_argument("--kyutai-api-key", help="API key for --kyutai-url (kyutai-remote)")
    group.add_argument(
        "--setting",
        action="append",
        default=[],
        type=setting,
        metavar="NAME=VALUE",
        help="an engine tunable, e.g. step_seconds=0.7 (whisper; see docs/whisper-engine.md)",
    )


def setting(text: str) -> tuple[str, str]:
    """An argparse type: ``NAME=VALUE``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def engine_options(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(
        model=args.model,
        language=args.language,
        device=args.device,
        max_streams=args.max_streams,
        kyutai_url=(args.kyutai_url or [None])[0],
        kyutai_urls=tuple(args.kyutai_url or ()),
        kyutai_api_key=args.kyutai_api_key,
        settings=dict(getattr(args, "setting", None) or []),
    )
