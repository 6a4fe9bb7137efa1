"""Side-by-side evaluation (evaluation.compare): specs, interleaving, ratios, real time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from captions.engine import Engine, Session
from captions.engines import EngineOptions, create_engine
from captions.engines.whisper import WhisperSettings
from common.exceptions import ConfigError
from evaluation.compare import (
    compare,
    comparison_summary,
    figure,
    parse_spec,
    with_realtime_twins,
)
from evaluation.manifest import read_manifest
from tests.fakes import ScriptedEngine, silent_manifest

SCRIPT = [("hello", 0.1, 0.4), ("world", 0.5, 0.8)]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return silent_manifest(tmp_path, SCRIPT, items=3)


def test_spec_text_sets_engine_run_options_and_tunables() -> None:
    base = EngineOptions(model="/m", language="en")
    spec = parse_spec(
        "whisper,step_seconds=0.7,language=fr,mode=realtime", base, default_engine="x"
    )
    assert (spec.engine, spec.mode, spec.options.language, spec.options.model) == (
        "whisper",
        "realtime",
        "fr",
        "/m",
    )
    assert spec.options.settings == {"step_seconds": "0.7"} and base.settings == {}
    plain = parse_spec("step_seconds=0.7", base, default_engine="whisper")
    assert plain.engine == "whisper" and plain.mode == "sim"
    for bad in ("nonsense", "mode=fast", "whisper,=3", "whisper,step_seconds="):
        with pytest.raises(ConfigError):
            parse_spec(bad, base, default_engine="whisper")


def test_realtime_twins_share_the_engine_key() -> None:
    base = EngineOptions()
    specs = with_realtime_twins([parse_spec("whisper", base, default_engine="whisper")])
    assert [s.mode for s in specs] == ["sim", "realtime"]
    assert specs[0].engine_key == specs[1].engine_key
    assert specs[1].label == "whisper,mode=realtime"


def test_whisper_settings_from_the_command_line() -> None:
    settings = WhisperSettings.from_overrides({"step_seconds": "0.7", "workers": "1"})
    assert settings.step_seconds == 0.7 and settings.workers == 1
    for bad in ({"nope": "1"}, {"workers": "1.5"}, {"step_seconds": "-1"}):
        with pytest.raises(ConfigError):
            WhisperSettings.from_overrides(bad)
    with pytest.raises(ConfigError, match="no tunables"):
        create_engine("kyutai-remote", EngineOptions(settings={"step_seconds": "1"}))


def test_items_interleave_across_specs_and_ratios_compare_to_the_first(
    manifest: Path,
) -> None:
    loaded: list[tuple[str, ScriptedEngine]] = []
    order: list[str] = []

    def load(name: str, options: EngineOptions) -> Engine:
        delay = float(options.settings.get("delay", "0.5"))
        engine = ScriptedEngine(SCRIPT, delay=delay)
        label = f"delay={delay}"
        original = engine.create_session

        def create(*args: object, **kwargs: object) -> object:
            order.append(label)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        engine.create_session = create  # type: ignore[method-assign]
        loaded.append((label, engine))
        return engine

    base = EngineOptions()
    specs = [
        parse_spec("whisper,delay=0.5", base, default_engine="whisper"),
        parse_spec("whisper,delay=1.0", base, default_engine="whisper"),
    ]
    runs = compare(
        read_manifest(manifest), specs, tail_seconds=1.5, offline=False, load_engine=load
    )
    assert len(loaded) == 2
    # Item by item, the first spec rotating: a b, b a, a b.
    assert order == ["delay=0.5", "delay=1.0", "delay=1.0", "delay=0.5", "delay=0.5", "delay=1.0"]
    assert all(len(run.scores) == 3 and len(run.loads) == 3 for run in runs)
    summary = comparison_summary(runs)
    assert summary["baseline"] == "whisper,delay=0.5"
    fast, slow = summary["specs"]
    assert figure(fast, "latency.final_p50") < figure(slow, "latency.final_p50")
    ratio = summary["ratios"]["whisper,delay=1.0"]["latency.final_p50"]
    assert ratio == pytest.approx(
        figure(slow, "latency.final_p50") / figure(fast, "latency.final_p50"), abs=0.01
    )
    assert fast["load_1min"]["mean"] is not None


def test_realtime_mode_stamps_words_on_arrival(manifest: Path) -> None:
    base = EngineOptions()
    specs = with_realtime_twins([parse_spec("whisper", base, default_engine="whisper")])
    runs = compare(
        read_manifest(manifest)[:1],
        specs,
        tail_seconds=0.6,
        offline=False,
        load_engine=lambda name, options: ScriptedEngine(SCRIPT, delay=0.5),
    )
    sim, live = comparison_summary(runs)["specs"]
    assert (sim["mode"], live["mode"]) == ("sim", "realtime")
    assert sim["wer"] == live["wer"] == 0.0
    # Live: audio arrives in 0.1 s chunks and the worker wakes on it, so words come a
    # little later than simulated, never earlier than their audio.
    assert live["latency"]["final_p50"] >= 0.5
    assert live["latency"]["final_p50"] < sim["latency"]["final_p50"] + 1.0


def test_ideal_mode_charges_no_compute(manifest: Path) -> None:
    """mode=ideal: every step on schedule whatever it costs, so a slow engine's latencies
    are its policy's own; the simulation charges the same engine its compute."""

    class SlowEngine(ScriptedEngine):
        def step(self, sessions: Sequence[Session]) -> None:
            time.sleep(0.02)
            super().step(sessions)

    base = EngineOptions()
    specs = [parse_spec(t, base, default_engine="whisper") for t in ("mode=ideal", "mode=sim")]
    runs = compare(
        read_manifest(manifest)[:1],
        specs,
        tail_seconds=0.5,
        offline=False,
        load_engine=lambda name, options: SlowEngine(SCRIPT, delay=0.5),
    )
    ideal, sim = comparison_summary(runs)["specs"]
    assert ideal["rtf"] == 0.0 and sim["rtf"] > 0.1
    # Words end at 0.4 s and 0.8 s, audio arrives in 0.1 s frames, finals 0.5 s later.
    assert 0.5 <= ideal["latency"]["final_p50"] <= 0.65
    assert sim["latency"]["final_p50"] > ideal["latency"]["final_p50"]
