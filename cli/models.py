"""``captions models``: the engines and the models each can find on this machine."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from captions.engines import ModelListing, engine_names, list_models


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "models", help="list engines and the models they can find", description=__doc__
    )
    parser.set_defaults(func=run)


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
    for column in ("engine", "model", "available", "location", "note"):
        table.add_column(column, overflow="fold")
    for item in listings():
        table.add_row(
            item.engine,
            item.model,
            "[green]yes[/green]" if item.available else "[red]no[/red]",
            item.location,
            item.note,
        )
    Console().print(table)
    return 0
