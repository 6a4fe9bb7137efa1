"""``captions bench-kyutai``: Kyutai engine throughput on this machine (random weights)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench-kyutai",
        help="time the batched Kyutai step and the Mimi encoder on this machine",
        description=__doc__,
    )
    parser.add_argument("--batches", default="1,2,4,8", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evaluation.kyutai_bench import main

    argv = ["--batches", args.batches, "--steps", str(args.steps), "--threads", str(args.threads)]
    if args.json:
        argv += ["--json", args.json]
    return main(argv)
