"""``captions transcribe FILE...``: live captions of audio files in the terminal.

Each file is one speaker (named after its stem), or with ``--split-channels`` each
channel is (``stem:ch1``, ``stem:ch2``...). Audio is paced in real time through the
same :class:`~captions.runtime.EngineRunner` the sidecar uses, so what you see is what a
meeting would see; ``--fast`` drives the engine synchronously on a virtual clock.
Partials are shown dim and italic, finals plain; ``--vtt/--srt/--txt/--json`` write the
final transcript.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from captions.audio import PCM, load_audio, load_channels
from captions.engine import Engine
from captions.engines import create_engine, engine_names
from captions.events import CaptionEvent, Speaker
from captions.formats import render
from captions.runtime import EngineRunner, SpeechStream, push_in_real_time
from cli.common import add_engine_arguments, engine_options
from common.exceptions import CaptionsError, UnknownEngineError

LOAD_RATE = 16_000
CHUNK_SECONDS = 0.1
OUTPUTS = ("vtt", "srt", "txt", "json")
COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")


@dataclass(frozen=True)
class Source:
    speaker: Speaker
    path: Path
    channel: int | None
    pcm: PCM
    """Mono float32 at LOAD_RATE."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="live captions of audio files, one speaker per file (or channel)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio or video files")
    parser.add_argument(
        "--split-channels", action="store_true", help="each channel of a file is one speaker"
    )
    parser.add_argument("--fast", action="store_true", help="no real-time pacing (virtual clock)")
    for fmt in OUTPUTS:
        parser.add_argument(f"--{fmt}", metavar="OUT", type=Path, help=f"write a {fmt} transcript")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    outputs = {fmt: getattr(args, fmt) for fmt in OUTPUTS if getattr(args, fmt) is not None}
    for path in outputs.values():
        if not path.parent.is_dir():
            raise CaptionsError(f"{path}: cannot write there (no directory {path.parent})")
    if args.engine not in engine_names():
        raise UnknownEngineError(
            f"unknown engine {args.engine!r} (known: {', '.join(engine_names())})"
        )
    # Inputs are checked before the (slow) model load, so a typo fails at once.
    sources = load_sources(args.files, split_channels=args.split_channels)
    engine = create_engine(args.engine, engine_options(args))
    if args.fast and engine.info.real_time_only:
        engine.close()
        # Its server answers in real time: a virtual clock would end the stream before the
        # words come back, and the transcript would be empty.
        raise CaptionsError(
            f"--fast cannot drive the {engine.info.name} engine (it runs in real time);"
            " run without --fast"
        )
    console = Console(highlight=False)
    display = CaptionDisplay(console, [s.speaker for s in sources])
    with Live(display, console=console, refresh_per_second=10, transient=True) as live:
        on_event = display.handler(live)
        if args.fast:
            events = transcribe_fast(engine, sources, language=args.language, on_event=on_event)
        else:
            events = asyncio.run(
                transcribe_live(engine, sources, language=args.language, on_event=on_event)
            )
    if outputs and not any(e.kind == "final" for e in events):
        console.print("[yellow]warning: no words were recognised; the transcript is empty[/yellow]")
    for fmt, path in outputs.items():
        try:
            path.write_text(render(fmt, events), encoding="utf-8")
        except OSError as exc:
            raise CaptionsError(f"{path}: cannot write ({exc.strerror})") from exc
        console.print(f"[dim]wrote {path}[/dim]")
    return 0


def load_sources(files: Iterable[str], *, split_channels: bool = False) -> list[Source]:
    """Decodes every file; raises AudioError subclasses naming the bad file."""
    sources: list[Source] = []
    taken: set[str] = set()
    for name in files:
        path = Path(name)
        channels = load_channels(path, sample_rate=LOAD_RATE)
        if split_channels:
            picks: list[tuple[str, int | None, PCM]] = [
                (f"{path.stem}:ch{i + 1}", i, channels[i]) for i in range(channels.shape[0])
            ]
        else:
            picks = [(path.stem, None, channels.mean(axis=0).astype(np.float32))]
        for speaker_name, channel, pcm in picks:
            unique, n = speaker_name, 1
            while unique in taken:
                n += 1
                unique = f"{speaker_name}#{n}"
            taken.add(unique)
            sources.append(Source(Speaker(unique, unique), path, channel, pcm))
    return sources


async def transcribe_live(
    engine: Engine,
    sources: list[Source],
    *,
    language: str | None = None,
    on_event: Callable[[CaptionEvent], None] = lambda e: None,
) -> list[CaptionEvent]:
    """Streams every source at real-time pace through one engine; returns all events."""
    events: list[CaptionEvent] = []

    async def feed(stream: SpeechStream, pcm: PCM) -> None:
        await push_in_real_time(stream, pcm, LOAD_RATE, chunk_seconds=CHUNK_SECONDS)
        await stream.aclose()

    async def collect(stream: SpeechStream) -> None:
        async for event in stream:
            events.append(event)
            on_event(event)

    async with EngineRunner(engine) as runner:
        streams = [runner.open_stream(s.speaker, language=language) for s in sources]
        await asyncio.gather(
            *(feed(stream, s.pcm) for stream, s in zip(streams, sources, strict=True)),
            *(collect(stream) for stream in streams),
        )
    return events


def transcribe_fast(
    engine: Engine,
    sources: list[Source],
    *,
    language: str | None = None,
    on_event: Callable[[CaptionEvent], None] = lambda e: None,
) -> list[CaptionEvent]:
    """Runs each source through the engine synchronously on a virtual clock (no sleeping)."""
    from captions.simulate import simulate

    events: list[CaptionEvent] = []
    try:
        for source in sources:
            pcm = source.pcm
            if engine.info.sample_rate != LOAD_RATE:
                pcm = load_audio(
                    source.path, sample_rate=engine.info.sample_rate, channel=source.channel
                )
            record = simulate(
                engine, pcm, speaker=source.speaker, language=language, tail_seconds=1.0
            )
            for event in record.events:
                events.append(event)
                on_event(event)
    finally:
        engine.close()
    return events


class CaptionDisplay:
    """Open utterances live at the bottom (tail dim italic); finals scroll above."""

    def __init__(self, console: Console, speakers: list[Speaker]) -> None:
        self.console = console
        self.colours = {s.id: COLOURS[i % len(COLOURS)] for i, s in enumerate(speakers)}
        self.open: dict[str, CaptionEvent] = {}

    def line(self, event: CaptionEvent) -> Text:
        colour = self.colours.get(event.speaker.id, "white")
        text = Text.assemble((f"{event.speaker.display_name}: ", f"bold {colour}"))
        final = " ".join(w.text for w in event.words if w.final)
        tail = " ".join(w.text for w in event.words if not w.final)
        text.append(final)
        if tail:
            text.append((" " if final else "") + tail, style="dim italic")
        return text

    def handler(self, live: Live) -> Callable[[CaptionEvent], None]:
        def on_event(event: CaptionEvent) -> None:
            if event.kind == "final":
                self.open.pop(event.speaker.id, None)
                live.console.print(self.line(event))
            else:
                self.open[event.speaker.id] = event
            live.refresh()

        return on_event

    def __rich__(self) -> Group:
        return Group(*(self.line(e) for e in self.open.values()))
