"""``captions eval`` and ``captions bench`` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from tests.speech import write_wav


@pytest.fixture
def good_manifest(tmp_path: Path) -> Path:
    write_wav(tmp_path / "a.wav", np.zeros(8_000, np.float32), 16_000)
    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "hello"}) + "\n")
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unreadable_manifest_line_exits_2_naming_the_line(
    tmp_path: Path, good_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good_manifest.read_text() + '{"id": "b", "audio": "a.wav"}\n')
    assert main(["eval", str(bad)]) == 2
    err = one_error_line(capsys)
    assert err.startswith("captions: error: ") and "bad.jsonl:2:" in err and "'text'" in err


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_missing_manifest_and_missing_audio_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl: cannot read manifest" in one_error_line(capsys)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "gone.wav", "text": "x"}) + "\n")
    assert main([command, str(manifest)]) == 2
    assert "m.jsonl:1: audio file" in one_error_line(capsys)


def test_unknown_engine_exits_2(good_manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(good_manifest), "--engine", "nope"]) == 2
    assert "unknown engine 'nope'" in one_error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--limit", "0"],
        ["eval", "--limit", "many"],
        ["bench", "--speakers", "0"],
        ["bench", "--seconds", "-1"],
        ["bench", "--sweep", "0,2"],
        ["eval", "--setting", "step_seconds"],
    ],
)
def test_bad_options_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def short_items(shared_eval: Path, out: Path) -> Path:
    """Two short LibriSpeech items (word times by alignment) and one with manifest words."""
    lines: list[dict[str, object]] = []
    for name, count in (("en_librispeech_test_other", 2), ("en_mfa_wordalign", 1)):
        folder = shared_eval / name
        items = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
        for item in sorted(items, key=lambda x: x["duration_s"])[:count]:
            item["audio"] = str(folder / item["audio"])
            lines.append(item)
    path = out / "short.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.slow
def test_eval_whisper_on_real_speech(
    shared_eval: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = short_items(shared_eval, tmp_path)
    out, png = tmp_path / "eval.json", tmp_path / "latency.png"
    assert main(["eval", str(manifest), "--json", str(out), "--plot", str(png)]) == 0
    assert "streaming WER" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert {"engine", "items", "audio_seconds", "wer", "offline_wer", "rtf", "latency"} <= set(data)
    assert set(data["latency"]) >= {
        "first_partial_p50",
        "final_p50",
        "final_p95",
        "eou_p50",
        "eou_p95",
    }
    assert data["engine"] == "whisper" and data["items"] == 3
    assert data["word_times"] == {"manifest": 1, "aligned": 2, "none": 0}
    assert 0 <= data["wer"] <= 0.6 and 0 <= data["offline_wer"] <= 0.6
    assert 0 < data["rtf"] < 5
    latency = data["latency"]
    assert latency["timed_words"] >= 5
    assert 0 <= latency["first_partial_p50"] <= latency["final_p50"] < 10
    assert latency["final_p50"] <= latency["final_p95"] < 15
    assert -2 < latency["eou_p50"] < 10
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
