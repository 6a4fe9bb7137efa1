"""``captions transcribe`` and ``captions models``: bad input, outputs, channels."""

from __future__ import annotations

import html
import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt

from captions.audio import load_audio
from captions.events import CaptionEvent
from cli.main import main
from tests.speech import synthesize, write_wav

FOX = "The quick brown fox jumps over the lazy dog near the river bank."
MEETING = "Let us move the budget meeting to Thursday morning at ten o'clock."


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("captions: error: ")
    return lines[0]


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _error_line(capsys, ["transcribe", "--fast", str(tmp_path / "nope.wav")])
    assert "nope.wav" in line and "no such file" in line


def test_not_audio(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_text("these are meeting notes, not audio\n")
    line = _error_line(capsys, ["transcribe", "--fast", str(notes)])
    assert "notes.wav" in line and "not" in line


def test_empty_audio(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
    line = _error_line(capsys, ["transcribe", "--fast", str(empty)])
    assert "empty.wav" in line and "no audio" in line


def test_unknown_engine(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(capsys, ["transcribe", "--engine", "nope", str(synthesize(FOX))])
    assert "'nope'" in line and "whisper" in line


def test_bad_model_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _error_line(capsys, ["transcribe", "--model", str(tmp_path), str(synthesize(FOX))])
    assert str(tmp_path) in line


@pytest.mark.slow
def test_language_not_in_english_only_model(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(capsys, ["transcribe", "--fast", "--language", "fr", str(synthesize(FOX))])
    assert "English-only" in line
    assert "model tiny.en is" in line  # its name, not its directory's ("model")


def test_output_directory_must_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "missing" / "out.vtt"
    line = _error_line(capsys, ["transcribe", "--vtt", str(out), str(synthesize(FOX))])
    assert "missing" in line


@pytest.mark.slow
def test_outputs_parse(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    audio = tmp_path / "alice.wav"
    audio.write_bytes(synthesize(FOX).read_bytes())
    out = {fmt: tmp_path / f"out.{fmt}" for fmt in ("vtt", "srt", "json", "txt")}
    argv = ["transcribe", "--fast", str(audio)]
    for fmt, path in out.items():
        argv += [f"--{fmt}", str(path)]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "alice:" in shown

    cues = webvtt.from_buffer(io.StringIO(out["vtt"].read_text()))
    assert len(cues) >= 1 and {c.voice for c in cues} == {"alice"}
    assert "fox" in html.unescape(" ".join(c.text for c in cues)).lower()
    subs = list(srt.parse(out["srt"].read_text()))
    assert subs and all(s.content.startswith("alice: ") for s in subs)
    events = [CaptionEvent.from_json(d) for d in json.loads(out["json"].read_text())]
    assert events and all(e.kind == "final" for e in events)
    assert all(w.final for e in events for w in e.words)
    assert "alice: " in out["txt"].read_text()


@pytest.mark.slow
def test_split_channels_gives_one_speaker_per_channel(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    left, right = load_audio(synthesize(FOX)), load_audio(synthesize(MEETING))
    n = max(left.size, right.size)
    stereo = np.zeros((n, 2), dtype=np.float32)
    stereo[: left.size, 0], stereo[: right.size, 1] = left, right
    path = write_wav(tmp_path / "call.wav", stereo, 16_000)
    json_out = tmp_path / "call.json"
    assert (
        main(["transcribe", "--fast", "--split-channels", str(path), "--json", str(json_out)]) == 0
    )
    events = [CaptionEvent.from_json(d) for d in json.loads(json_out.read_text())]
    text = {
        sid: " ".join(e.text for e in events if e.speaker.id == sid).lower()
        for sid in {e.speaker.id for e in events}
    }
    assert set(text) == {"call:ch1", "call:ch2"}
    assert "fox" in text["call:ch1"] and "fox" not in text["call:ch2"]
    assert "thursday" in text["call:ch2"]


@pytest.mark.slow
def test_real_time_pacing_through_the_runner(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Short clip, paced live: the transcript arrives through EngineRunner like in a meeting.
    clip = write_wav(tmp_path / "bob.wav", load_audio(synthesize("Good morning everyone.")), 16_000)
    out = tmp_path / "bob.srt"
    assert main(["transcribe", str(clip), "--srt", str(out)]) == 0
    subs = list(srt.parse(out.read_text()))
    assert "morning" in " ".join(s.content for s in subs).lower()


def test_models_lists_the_default_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "whisper" in out and "tiny.en" in out and "kyutai" in out


def test_fast_with_a_real_time_remote_engine_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 10: --fast with kyutai-remote wrote an empty transcript and exited 0."""
    clip = tmp_path / "tone.wav"
    write_wav(clip, np.zeros(16_000, dtype=np.float32), 16_000)
    out = tmp_path / "out.srt"
    argv = ["transcribe", "--fast", "--engine", "kyutai-remote", str(clip), "--srt", str(out)]
    argv += ["--kyutai-url", "ws://127.0.0.1:9/api/asr-streaming", "--kyutai-api-key", "k"]
    line = _error_line(capsys, argv)
    assert "--fast" in line and "real time" in line
    assert not out.exists()
