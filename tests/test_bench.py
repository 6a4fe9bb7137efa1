"""Concurrency benchmark on the scripted engine (short real-time runs) and its search."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cli.bench import speaker_counts, sweep_table
from evaluation.bench import Bench, BenchResult, SpeakerResult, find_max
from evaluation.manifest import read_manifest
from evaluation.metrics import ItemScore
from tests.fakes import ScriptedEngine, silent_manifest

SCRIPT = [("hello", 0.1, 0.4), ("world", 0.5, 0.8)]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return silent_manifest(tmp_path, SCRIPT, items=3)


def test_concurrent_speakers_in_real_time(manifest: Path) -> None:
    engine = ScriptedEngine(SCRIPT, delay=0.5)
    bench = Bench(engine, read_manifest(manifest), seconds=1.0, tail_seconds=0.3)
    result = bench.run(2)
    data = result.to_json()
    assert result.error is None
    assert [s["speaker"] for s in data["streams"]] == ["speaker-0", "speaker-1"]
    assert all(s["items"] == 1 and s["audio_seconds"] == 1.0 for s in data["streams"])
    # Real time: 1.3 s of audio per speaker cannot take less than that.
    assert data["wall_seconds"] >= 1.3
    assert data["audio_seconds"] == pytest.approx(2.6)
    latency = data["latency"]
    assert latency["timed_words"] == 4
    # A word is shown once its audio is in, and final 0.5 s (the scripted delay) later;
    # audio arrives in 0.1 s chunks, so both land within one chunk plus scheduling.
    assert 0.0 <= latency["first_partial_p50"] < 1.0
    assert 0.5 <= latency["final_p50"] < 1.5
    assert result.passes(3.0)
    assert data["cpu_cores"] is not None and data["cpu_cores"] >= 0
    assert data["rtf"] is not None and data["rtf"] < 1


def test_engine_capacity_fails_the_run(manifest: Path) -> None:
    engine = ScriptedEngine(SCRIPT, delay=0.5, max_streams=1)
    result = Bench(engine, read_manifest(manifest), seconds=0.5, tail_seconds=0.1).run(2)
    assert result.error is not None and "no free channels" in result.error
    assert not result.passes(3.0)


def fake_result(n: int, p95: float) -> BenchResult:
    score = ItemScore("x", "a", "a", None, 1.0, 1.0, 0.0, 0.0, "manifest", [0.1], [p95])
    return BenchResult(speakers=n, streams=[SpeakerResult("s", [score])])


@pytest.mark.parametrize(
    ("capacity", "limit", "expected_probes"),
    [
        (5, 16, [1, 2, 4, 8, 6, 5]),
        (0, 16, [1]),
        (16, 16, [1, 2, 4, 8, 16]),
        (40, 10, [1, 2, 4, 8, 9, 10]),
    ],
)
def test_find_max_searches_the_largest_passing_count(
    capacity: int, limit: int, expected_probes: list[int]
) -> None:
    probes: list[int] = []

    def run(n: int) -> BenchResult:
        probes.append(n)
        return fake_result(n, 1.0 if n <= capacity else 4.0)

    best, results = find_max(run, max_final_p95=3.0, limit=limit)
    assert best == min(capacity, limit)
    assert probes == expected_probes
    assert sorted(results) == sorted(expected_probes)


def test_sweep_runs_each_speaker_count_and_tables_them(manifest: Path) -> None:
    assert speaker_counts("4,1,2,2") == [1, 2, 4]
    for bad in ("0,1", "a", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            speaker_counts(bad)
    bench = Bench(ScriptedEngine(SCRIPT, delay=0.5), read_manifest(manifest), seconds=1.0)
    results = {n: bench.run(n) for n in speaker_counts("1,2")}
    table = sweep_table("scripted", results)
    assert table.row_count == 2
    assert all(r.to_json()["cpu_per_audio_second"] is not None for r in results.values())
