"""``captions bench``: N concurrent live speakers through one engine, in real time."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from captions.engines import create_engine
from cli.common import engine_options
from cli.eval import add_run_arguments, load_items, positive
from evaluation.manifest import DEFAULT_MANIFEST


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="concurrent speakers through one engine at real-time pace: latency, RTF, CPU",
        description=(
            "Streams real speech for N speakers at once through one engine on the wall clock "
            f"and reports per-stream latencies, RTF and CPU. Default manifest: {DEFAULT_MANIFEST}"
        ),
    )
    add_run_arguments(parser)
    parser.add_argument("--speakers", type=positive(int), default=1, metavar="N")
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="search the largest N (up to --max-speakers) keeping final_p95 under --target",
    )
    parser.add_argument("--max-speakers", type=positive(int), default=16, metavar="N")
    parser.add_argument(
        "--sweep",
        type=speaker_counts,
        metavar="N,N,...",
        help="one run per speaker count (e.g. 1,2,4,8 up to twice --find-max): latency "
        "against load, including overload",
    )
    parser.add_argument(
        "--target", type=float, default=3.0, help="final_p95 bound in seconds (default: 3)"
    )
    parser.add_argument(
        "--seconds",
        type=positive(float),
        default=30.0,
        help="audio each speaker streams per run; a run lasts about this plus one item "
        "(default: 30)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evaluation.bench import Bench, BenchResult, find_max
    from evaluation.evaluate import WordTimes

    console = Console()
    items = load_items(args.manifests, None)
    options = engine_options(args)
    engine = create_engine(args.engine, options)
    try:
        bench = Bench(
            engine,
            items,
            word_times=WordTimes(args.align_model),
            language=options.language,
            seconds=args.seconds,
            tail_seconds=args.tail_seconds,
        )

        def probe(n: int) -> BenchResult:
            with console.status(f"{n} speaker(s), about {args.seconds:.0f} s of speech each"):
                result = bench.run(n)
            console.print(run_table(args.engine, result))
            return result

        output: dict[str, Any]
        if args.sweep:
            results = {n: probe(n) for n in args.sweep}
            console.print(sweep_table(args.engine, results))
            output = {"engine": args.engine, "runs": [results[n].to_json() for n in results]}
        elif args.find_max:
            best, results = find_max(probe, max_final_p95=args.target, limit=args.max_speakers)
            console.print(
                f"[bold]max concurrent speakers with final_p95 < {args.target:g} s: {best}[/]"
            )
            output = {
                "engine": args.engine,
                "max_speakers": best,
                "target_final_p95": args.target,
                "runs": [results[n].to_json() for n in sorted(results)],
            }
        else:
            output = {"engine": args.engine, **probe(args.speakers).to_json()}
    finally:
        engine.close()
    if args.json:
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


def speaker_counts(text: str) -> list[int]:
    """An argparse type: comma-separated positive speaker counts, e.g. ``1,2,4,8``."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("speaker counts must be positive")
    return sorted(set(counts))


def sweep_table(engine: str, results: dict[int, Any]) -> Table:
    """Latency against the number of speakers: one row per run."""
    table = Table(title=f"captions bench --sweep: {engine}")
    columns = ["speakers", "WER", "first p50", "final p50", "final p95", "eou p50", "delayed"]
    columns += ["dropped s", "CPU s / audio s", "engine busy", "load after"]
    for name in columns:
        table.add_column(name, justify="right")
    for n, result in results.items():
        data = result.to_json()
        latency = data["latency"]
        streams = data["streams"]
        table.add_row(
            str(n),
            "-" if data["wer"] is None else f"{100 * data['wer']:.1f} %",
            _s(latency["first_partial_p50"]),
            _s(latency["final_p50"]),
            _s(latency["final_p95"]),
            _s(latency["eou_p50"]),
            f"{sum(s['degraded'] for s in streams)}/{len(streams)}",
            f"{sum(s['dropped_seconds'] for s in streams):.1f}",
            _s(data["cpu_per_audio_second"]),
            _s(data["engine_busy"]),
            _s((data["loadavg_after"] or [None])[0]),
        )
    return table


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run_table(engine: str, result: Any) -> Table:
    data = result.to_json()
    latency = data["latency"]
    cores = data["cpu_cores"]
    caption = (
        f"RTF {_s(data['rtf'])} (engine busy / audio), engine busy {_s(data['engine_busy'])} "
        f"of the time, CPU {_s(cores)} of {data['cpu_count']} cores (load average after: "
        f"{_s((data['loadavg_after'] or [None])[0])}), wall {data['wall_seconds']:.0f} s; "
        "all streams: "
        f"final p50 {_s(latency['final_p50'])} s, p95 {_s(latency['final_p95'])} s"
    )
    if data["error"]:
        caption += f"\n[red]{data['error']}[/]"
    table = Table(title=f"captions bench: {engine}, {data['speakers']} speaker(s)", caption=caption)
    table.add_column("stream", no_wrap=True)
    for name in ("items", "audio s", "first p50", "final p50", "final p95", "eou p50", "dropped s"):
        table.add_column(name, justify="right")
    for s in data["streams"]:
        table.add_row(
            s["speaker"] + (" [yellow](degraded)[/]" if s["degraded"] else ""),
            str(s["items"]),
            f"{s['audio_seconds']:.1f}",
            _s(s["first_partial_p50"]),
            _s(s["final_p50"]),
            _s(s["final_p95"]),
            _s(s["eou_p50"]),
            f"{s['dropped_seconds']:.1f}",
        )
    return table
