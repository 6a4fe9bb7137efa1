"""``captions eval``: streaming WER and latency of an engine on evaluation manifests."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from captions.engines import create_engine
from cli.common import add_engine_arguments, engine_options
from common.exceptions import ManifestError
from evaluation.machine import machine_state
from evaluation.manifest import DEFAULT_MANIFEST, ManifestItem, check_audio_files, read_manifest

T = TypeVar("T", int, float)

# Runs with more items than this get a progress bar.
_PROGRESS_FROM = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="streaming WER and latency on speech manifests (computation-aware simulation)",
        description=(
            "Streams every item of the manifests through the engine on a virtual clock that "
            "charges real compute time, and reports corpus WER (normalised), the same model's "
            f"offline WER, and latencies. Default manifest: {DEFAULT_MANIFEST}"
        ),
    )
    add_run_arguments(parser)
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="PNG of latency histograms")
    parser.add_argument("--limit", type=positive(int), metavar="N", help="first N items only")
    parser.add_argument(
        "--no-offline", action="store_true", help="skip the offline WER of whole items"
    )
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="SPEC",
        help="compare specs side by side, interleaved item by item, with ratios to the "
        "first: an engine and/or key=value pairs, e.g. 'whisper' 'whisper,step_seconds=0.7' "
        "'model=base,language=fr'; mode=sim (default), realtime (paced through the live "
        "runtime) or ideal (compute free: the policy's own latency) (repeat the option)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="also run every spec in real time through the live runtime (words stamped on "
        "arrival), beside the computation-aware simulation",
    )
    parser.set_defaults(func=run)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Manifests, engine and scoring options shared by ``eval`` and ``bench``."""
    parser.add_argument("manifests", nargs="*", type=Path, metavar="MANIFEST")
    add_engine_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    parser.add_argument(
        "--tail-seconds",
        type=float,
        default=2.0,
        help="silence streamed after each item before its stream closes (default: 2)",
    )
    parser.add_argument(
        "--align-model",
        metavar="MODEL",
        help="Whisper model (name or path) for word timings of items without 'words' "
        "(default: tiny.en for English items, the multilingual base for others)",
    )


def positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type: ``kind`` parsed from the text, and greater than zero."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError("must be greater than zero")
        return value

    return parse


def load_items(manifests: list[Path], limit: int | None) -> list[ManifestItem]:
    """Every item of ``manifests`` (the default set when none), audio files checked."""
    if not manifests:
        if not DEFAULT_MANIFEST.exists():
            raise ManifestError(
                f"no manifest given and the default set {DEFAULT_MANIFEST} is absent"
            )
        manifests = [DEFAULT_MANIFEST]
    items: list[ManifestItem] = []
    for path in manifests:
        batch = read_manifest(path)
        check_audio_files(batch, source=path)
        items.extend(batch)
    if not items:
        raise ManifestError(f"no items in {', '.join(map(str, manifests))}")
    return items[:limit] if limit else items


def progress_bar(console: Console, *, runs: int) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=runs <= _PROGRESS_FROM,
    )


def run(args: argparse.Namespace) -> int:
    from evaluation.evaluate import WordTimes, evaluate
    from evaluation.metrics import summarize

    console = Console(stderr=True)
    items = load_items(args.manifests, args.limit)
    if args.spec or args.realtime:
        return run_comparison(args, items, console)
    options = engine_options(args)
    engine = create_engine(args.engine, options)
    machine_before = machine_state()
    try:
        with progress_bar(console, runs=len(items)) as progress:
            task = progress.add_task(f"eval {args.engine}", total=len(items))
            scores = evaluate(
                items,
                engine,
                engine_name=args.engine,
                options=options,
                tail_seconds=args.tail_seconds,
                word_times=WordTimes(args.align_model),
                offline=not args.no_offline,
                on_item=lambda _score: progress.advance(task),
            )
    finally:
        engine.close()
    summary = summarize(args.engine, scores)
    summary["machine"] = {"before": machine_before, "after": machine_state()}
    Console().print(summary_table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        from evaluation.plot import plot_latencies

        plot_latencies(scores, args.plot, title=f"{args.engine}: {len(scores)} items")
    return 0


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.1f} %"
    return f"{value:.3f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _load(summary: dict[str, Any]) -> str:
    machine = summary.get("machine", {})
    loads = [machine.get(k, {}).get("loadavg") or ["-"] for k in ("before", "after")]
    cpus = machine.get("before", {}).get("cpu_count")
    return f"{loads[0][0]} / {loads[1][0]} on {cpus} CPUs"


def summary_table(summary: dict[str, Any]) -> Table:
    latency = summary["latency"]
    sources = summary["word_times"]
    table = Table(title=f"captions eval: {summary['engine']}", show_header=False)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("items", _fmt(summary["items"])),
        ("audio", _fmt(summary["audio_seconds"], " s")),
        ("streaming WER", _fmt(summary["wer"], "%")),
        ("offline WER (same model)", _fmt(summary["offline_wer"], "%")),
        ("RTF (compute / audio)", _fmt(summary["rtf"])),
        ("CPU s per audio s (all threads)", _fmt(summary.get("cpu_per_audio_second"))),
        ("audio dropped", _fmt(summary["dropped_seconds"], " s")),
        ("first_partial p50", _fmt(latency["first_partial_p50"], " s")),
        ("final p50", _fmt(latency["final_p50"], " s")),
        ("final p95", _fmt(latency["final_p95"], " s")),
        ("eou p50", _fmt(latency["eou_p50"], " s")),
        ("eou p95", _fmt(latency["eou_p95"], " s")),
        ("timed words", _fmt(latency["timed_words"])),
        ("load average (1 min) before / after", _load(summary)),
        (
            "word end times from",
            f"manifest words: {sources['manifest']} items, "
            f"faster-whisper alignment: {sources['aligned']} items",
        ),
    ]
    for name, seconds in summary.get("costs", {}).items():
        rows.append((f"  step {name} (s per audio s)", _fmt(seconds)))
    for row in rows:
        table.add_row(*row)
    return table


def run_comparison(args: argparse.Namespace, items: list[ManifestItem], console: Console) -> int:
    from evaluation.compare import compare, comparison_summary, parse_spec, with_realtime_twins
    from evaluation.evaluate import WordTimes

    base = engine_options(args)
    specs = [parse_spec(t, base, default_engine=args.engine) for t in args.spec or [args.engine]]
    if args.realtime:
        specs = with_realtime_twins(specs)
    machine_before = machine_state()
    with progress_bar(console, runs=len(items) * len(specs)) as progress:
        task = progress.add_task(f"eval {len(specs)} specs", total=len(items) * len(specs))
        runs = compare(
            items,
            specs,
            tail_seconds=args.tail_seconds,
            word_times=WordTimes(args.align_model),
            offline=not args.no_offline,
            on_run=lambda: progress.advance(task),
        )
    output = comparison_summary(runs)
    output["machine"] = {"before": machine_before, "after": machine_state()}
    Console().print(comparison_table(output))
    if args.json:
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


_COMPARED = (
    ("streaming WER", "wer", "%"),
    ("offline WER (same model)", "offline_wer", "%"),
    ("streaming / offline WER", "wer_vs_offline", ""),
    ("RTF (compute / audio)", "rtf", ""),
    ("CPU s per audio s", "cpu_per_audio_second", ""),
    ("audio dropped", "dropped_seconds", " s"),
    ("first_partial p50", "latency.first_partial_p50", " s"),
    ("final p50", "latency.final_p50", " s"),
    ("final p95", "latency.final_p95", " s"),
    ("eou p50", "latency.eou_p50", " s"),
    ("timed words", "latency.timed_words", ""),
)


def comparison_table(output: dict[str, Any]) -> Table:
    """Measures as rows, specs as columns; each non-baseline value with its ratio."""
    from evaluation.compare import figure

    specs = output["specs"]
    ratios = output["ratios"]
    table = Table(
        title=f"captions eval: {len(specs)} specs, {specs[0]['items']} items each, interleaved",
        caption=f"(x ratio) to the baseline {output['baseline']!r}; "
        f"load average (1 min) {_load(output)}",
    )
    table.add_column("measure", style="bold")
    for summary in specs:
        table.add_column(summary["spec"], justify="right")
    rows: list[tuple[str, str, str]] = list(_COMPARED)
    steps = sorted({name for s in specs for name in s.get("costs", {})})
    rows += [(f"  step {name} (s / audio s)", f"costs.{name}", "") for name in steps]
    rows.append(("load 1 min (mean over its runs)", "load_1min.mean", ""))
    for title, key, unit in rows:
        cells = []
        for summary in specs:
            cell = _fmt(figure(summary, key), unit)
            ratio = ratios.get(summary["spec"], {}).get(key)
            cells.append(f"{cell} (x{ratio:.2f})" if ratio is not None else cell)
        table.add_row(title, *cells)
    return table
