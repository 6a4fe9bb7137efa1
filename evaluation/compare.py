"""Several engine specs on the same items, interleaved item by item, with ratios.

On a shared machine an absolute figure moves with the load; a ratio between two specs
measured in one run, item after item, is stable. Each spec is a comma-separated list:
an engine name and/or ``key=value`` pairs, e.g. ``whisper``,
``whisper,step_seconds=0.7``, ``model=base,language=fr`` or ``whisper,mode=realtime``.
Keys ``engine``, ``model``, ``language``, ``device`` and ``mode`` are the run's; any
other key is an engine tunable (``--setting``). Modes:

- ``sim`` (default): the computation-aware simulation (compute time is charged);
- ``realtime``: audio paced through the live runtime, words stamped on arrival;
- ``ideal``: simulated with compute costing no time (steps exactly on schedule): the
  policy's own latency, and the CPU its nominal schedule costs, independent of the load.

Items run in turn through every spec, the spec order rotating from item to item so no
spec always runs first; the 1-minute load average is recorded at every run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from captions.engine import Engine
from captions.engines import EngineOptions, create_engine, engine_names
from common.exceptions import ConfigError
from evaluation.evaluate import WordTimes, stream_and_score
from evaluation.manifest import ManifestItem
from evaluation.metrics import ItemScore, summarize
from evaluation.offline import offline_transcriber

Mode = Literal["sim", "realtime", "ideal"]
MODES: tuple[Mode, ...] = ("sim", "realtime", "ideal")

# Figures whose ratio to the baseline spec is reported (dotted: inside "latency").
RATIO_KEYS = (
    "wer",
    "wer_vs_offline",
    "rtf",
    "cpu_per_audio_second",
    "latency.first_partial_p50",
    "latency.final_p50",
    "latency.final_p95",
    "latency.eou_p50",
)


@dataclass(frozen=True)
class Spec:
    label: str
    engine: str
    options: EngineOptions
    mode: Mode = "sim"

    @property
    def engine_key(self) -> tuple[Any, ...]:
        """Specs with equal keys share one loaded engine (e.g. the sim and realtime twins)."""
        o = self.options
        return (*self.model_key, tuple(sorted(o.settings.items())))

    @property
    def model_key(self) -> tuple[Any, ...]:
        """Specs with equal keys share one offline transcript (tunables do not change it)."""
        o = self.options
        return (self.engine, o.model, o.language, o.device)


def parse_spec(text: str, base: EngineOptions, *, default_engine: str) -> Spec:
    """A spec from its text; unset fields come from ``base`` (the command's options)."""
    engine, mode = default_engine, "sim"
    options = replace(base, settings=dict(base.settings))
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            if key not in engine_names():
                raise ConfigError(f"spec {text!r}: {key!r} is no engine and no key=value")
            engine = key
        elif not key or not value:
            raise ConfigError(f"spec {text!r}: empty key or value in {part!r}")
        elif key == "engine":
            engine = value
        elif key == "mode":
            if value not in MODES:
                raise ConfigError(f"spec {text!r}: mode must be one of {', '.join(MODES)}")
            mode = value
        elif key == "model":
            options.model = value
        elif key == "language":
            options.language = value
        elif key == "device":
            options.device = value
        else:
            options.settings[key] = value
    return Spec(text, engine, options, mode)  # type: ignore[arg-type]


def with_realtime_twins(specs: Sequence[Spec]) -> list[Spec]:
    """Each simulated spec followed by the same spec in real time (``--realtime``)."""
    out: list[Spec] = []
    for spec in specs:
        out.append(spec)
        if spec.mode == "sim" and not any(
            s.mode == "realtime" and s.engine_key == spec.engine_key for s in specs
        ):
            out.append(replace(spec, label=f"{spec.label},mode=realtime", mode="realtime"))
    return out


@dataclass
class SpecRun:
    spec: Spec
    scores: list[ItemScore] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    """The machine's 1-minute load average at each of its runs."""


def compare(
    items: Sequence[ManifestItem],
    specs: Sequence[Spec],
    *,
    tail_seconds: float = 2.0,
    word_times: WordTimes | None = None,
    offline: bool = True,
    on_run: Callable[[], None] | None = None,
    load_engine: Callable[[str, EngineOptions], Engine] = create_engine,
) -> list[SpecRun]:
    """Runs every item through every spec, interleaved; engines load once per engine key."""
    if len({s.label for s in specs}) != len(specs):
        raise ConfigError("two specs have the same text")
    engines: dict[tuple[Any, ...], Engine] = {}
    runs = [SpecRun(spec) for spec in specs]
    timer = word_times or WordTimes()
    try:
        for spec in specs:
            if spec.engine_key not in engines:
                engines[spec.engine_key] = load_engine(spec.engine, spec.options)
        transcribers = {
            spec.model_key: offline_transcriber(engines[spec.engine_key], spec.engine, spec.options)
            if offline
            else None
            for spec in specs
        }
        for index, item in enumerate(items):
            timed, source = timer(item)
            offline_texts: dict[tuple[Any, ...], str | None] = {}
            order = [runs[(index + k) % len(runs)] for k in range(len(runs))]
            for run in order:
                spec, engine = run.spec, engines[run.spec.engine_key]
                language = spec.options.language or item.language
                pcm = item.load_audio(engine.info.sample_rate)
                key = spec.model_key
                if key not in offline_texts:
                    transcribe = transcribers[key]
                    offline_texts[key] = transcribe(pcm, language) if transcribe else None
                run.loads.append(os.getloadavg()[0])
                score = stream_and_score(
                    engine,
                    item,
                    pcm,
                    language=language,
                    tail_seconds=tail_seconds,
                    word_times=(timed, source),
                    offline_text=offline_texts[key],
                    mode=spec.mode,
                )
                run.scores.append(score)
                if on_run is not None:
                    on_run()
    finally:
        for engine in engines.values():
            engine.close()
    return runs


def figure(summary: dict[str, Any], dotted: str) -> Any:
    """A summary's figure by dotted key (``latency.final_p50``, ``costs.encoder``)."""
    value: Any = summary
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def comparison_summary(runs: Sequence[SpecRun]) -> dict[str, Any]:
    """Each spec's summary (``captions eval --json`` keys, plus ``spec``, ``mode`` and
    ``load_1min``) and each spec's ratios to the first (the baseline)."""
    summaries = []
    for run in runs:
        summary = summarize(run.spec.engine, run.scores)
        summary["spec"], summary["mode"] = run.spec.label, run.spec.mode
        summary["load_1min"] = {
            "min": round(min(run.loads), 2) if run.loads else None,
            "mean": round(sum(run.loads) / len(run.loads), 2) if run.loads else None,
            "max": round(max(run.loads), 2) if run.loads else None,
        }
        summaries.append(summary)
    base = summaries[0]
    ratios: dict[str, dict[str, float | None]] = {}
    for summary in summaries[1:]:
        ratios[summary["spec"]] = {}
        for key in RATIO_KEYS:
            a, b = figure(summary, key), figure(base, key)
            ratios[summary["spec"]][key] = (
                round(a / b, 3)
                if isinstance(a, int | float) and isinstance(b, int | float) and b
                else None
            )
    return {"baseline": base["spec"], "specs": summaries, "ratios": ratios}
