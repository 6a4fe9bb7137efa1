"""End-to-end caption latency as a meeting participant sees it, in real Chromium.

The chain measured: Chromium's fake microphone plays a WAV -> WebRTC (Opus) -> SFU ->
captioning sidecar (engine) -> ``/captions`` WebSocket -> the meeting page's overlay.
A MutationObserver injected into the page (``tests/caption_recorder.js``) stamps when
each word is first shown and when it becomes final.

Timeline: the WAV is speech items (from an evaluation manifest, real human speech) joined
by pauses, after a leading silence. Word end times in the WAV come from the manifest's
``words`` or an offline alignment (:class:`evaluation.evaluate.WordTimes`), exactly as for
``captions eval``. The page stamps the first sample above a threshold on its microphone
stream; the same threshold on the WAV gives the WAV's first onset, which lines the file
up with the wall clock (to about 10 ms). Displayed words are aligned to the reference
like ``captions eval`` does (:mod:`evaluation.alignment`), and only correct words are
timed:

- ``first_partial`` = first time the word is shown (as a partial or final) - its end;
- ``final`` = time it is shown as final - its end.

The same WAV, as one manifest item, is then run through ``captions eval`` (the engine
alone on a computation-aware virtual clock); the difference is what the media path,
the sidecar and the page cost.

Run from the checkout (it uses the test helpers for Chromium and the recorder)::

    .venv/bin/python -m evaluation.e2e_latency --limit 6 --json .cache/e2e_latency.json
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from captions.audio import PCM
from evaluation.alignment import align, reference_ends, tokens_of
from evaluation.evaluate import WordTimes
from evaluation.manifest import DEFAULT_MANIFEST, ManifestItem, read_manifest
from evaluation.metrics import corpus_wer, percentile
from evaluation.normalize import normalized_words

RATE = 16_000
ONSET = 0.02
"""Amplitude that marks the first speech sample; the page's recorder uses the same."""
LEAD_SECONDS = 3.0
TAIL_SECONDS = 6.0
ROOM = "latency"
ROOT = Path(__file__).resolve().parent.parent
EVAL_COMMAND = (sys.executable, "-m", "cli.main", "eval")
LATENCY_KEYS = ("first_partial_p50", "first_partial_p95", "final_p50", "final_p95")


@dataclass(frozen=True)
class Timeline:
    wav: Path
    reference: list[str]
    """Normalised reference tokens of every item, in order."""
    ends: list[float | None]
    """End of each reference token in the WAV (seconds), where known."""
    timed_words: list[dict[str, Any]]
    """Word timings of the WAV for the ``captions eval`` manifest."""
    onset: float
    speech_seconds: float


def build_timeline(items: list[ManifestItem], out_dir: Path, gap: float) -> Timeline:
    """Joins the items with pauses into one WAV and places every reference word on it."""
    timer = WordTimes()
    pieces: list[PCM] = [np.zeros(int(LEAD_SECONDS * RATE), dtype=np.float32)]
    offset = LEAD_SECONDS
    reference: list[str] = []
    ends: list[float | None] = []
    timed_words: list[dict[str, Any]] = []
    for item in items:
        pcm = item.load_audio(RATE)
        timed, _source = timer(item)
        ref_tokens = normalized_words(item.text, item.language)
        timed_tokens = tokens_of([(w.word, w.end) for w in timed], item.language)
        item_ends = reference_ends(ref_tokens, timed_tokens)
        reference += ref_tokens
        ends += [None if e is None else e + offset for e in item_ends]
        timed_words += [
            {"word": w.word, "start": round(w.start + offset, 3), "end": round(w.end + offset, 3)}
            for w in timed
        ]
        pieces += [pcm, np.zeros(int(gap * RATE), dtype=np.float32)]
        offset += len(pcm) / RATE + gap
    speech_seconds = offset
    # Silence long enough that Chromium does not loop back into speech while we measure.
    pieces.append(np.zeros(int((TAIL_SECONDS + 60) * RATE), dtype=np.float32))
    audio = np.concatenate(pieces)
    wav = out_dir / "e2e.wav"
    _write_wav(wav, audio)
    loud = np.flatnonzero(np.abs(audio) > ONSET)
    onset = float(loud[0]) / RATE if loud.size else 0.0
    return Timeline(wav, reference, ends, timed_words, onset, speech_seconds)


def _write_wav(path: Path, pcm: PCM) -> None:
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


def measure_in_browser(timeline: Timeline, *, keep_dir: Path) -> dict[str, Any]:
    """Runs one participant whose fake microphone plays the WAV; returns the recorder's log."""
    from playwright.sync_api import sync_playwright

    from evaluation.browser import browser_page, captions_server
    from sfu.tokens import Grants, mint_token

    recorder = (ROOT / "tests" / "caption_recorder.js").read_text()
    secret = secrets.token_urlsafe(40)
    with (
        captions_server(keep_dir, secret) as base,
        sync_playwright() as playwright,
        browser_page(playwright, fake_audio=timeline.wav) as page,
    ):
        token = mint_token(secret, Grants.for_role(ROOM, "Speaker", "host"))
        page.add_init_script(recorder)
        page.goto(f"{base}/room/{ROOM}#token={token}")
        page.wait_for_selector("[data-testid=join-screen]:not([hidden])")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=join-camera]').options.length > 0"
        )
        page.select_option("[data-testid=join-camera]", "")  # no video: less CPU
        page.click("[data-testid=join-button]")
        page.wait_for_selector("[data-testid=meeting]:not([hidden])")
        # The first speech sample on the microphone the page kept (its last one).
        page.wait_for_function(
            """() => { const log = window.__captionRecorder;
                       const last = (log.micStarts || []).at(-1);
                       return (log.micOnsets || []).some(o => o.started >= last); }""",
            timeout=(LEAD_SECONDS + 20) * 1000,
        )
        log: dict[str, Any] = page.evaluate("() => window.__captionRecorder")
        started = onset_of_last_microphone(log)
        # Until the end of the speech, plus time for the last finals.
        end_wall = started / 1000 - timeline.onset + timeline.speech_seconds + TAIL_SECONDS
        while time.time() < end_wall:
            page.wait_for_timeout(1000)
        log = page.evaluate("() => window.__captionRecorder")
    return log


def onset_of_last_microphone(log: dict[str, Any]) -> float:
    """Wall-clock ms of the first sound on the microphone stream the page published."""
    last = log["micStarts"][-1]
    return float(next(o["at"] for o in log["micOnsets"] if o["started"] >= last))


def score(timeline: Timeline, log: dict[str, Any]) -> dict[str, Any]:
    """Per-word latencies of the displayed captions against the WAV's word ends."""
    onset_wall = onset_of_last_microphone(log) / 1000
    origin = onset_wall - timeline.onset  # wall-clock time of the WAV's sample 0
    lines = sorted(log["lines"].values(), key=lambda line: (line["speakerId"], line["utterance"]))
    shown: list[tuple[str, tuple[float, float | None]]] = []
    for line in lines:
        if not line["final"]:
            continue
        for i, word in enumerate(line["words"]):
            seen = line["shown"].get(f"{i}:{word['text']}", word["seen"]) / 1000
            final_at = (word["finalAt"] or line["finalAt"]) / 1000
            shown.append((word["text"], (seen - origin, final_at - origin)))
    hyp = tokens_of(shown)
    first_partial: list[float] = []
    final: list[float] = []
    for pair in align(timeline.reference, [token for token, _ in hyp]):
        end = timeline.ends[pair.ref]
        if pair.equal and end is not None:
            seen, final_at = hyp[pair.hyp][1]
            first_partial.append(seen - end)
            if final_at is not None:
                final.append(final_at - end)
    return {
        "wer": corpus_wer([" ".join(timeline.reference)], [" ".join(t for t, _ in hyp)]),
        "timed_words": len(final),
        "first_partial_p50": percentile(first_partial, 50),
        "first_partial_p95": percentile(first_partial, 95),
        "final_p50": percentile(final, 50),
        "final_p95": percentile(final, 95),
        # A clearly negative minimum would mean the file and the clock are misaligned.
        "first_partial_min": round(min(first_partial), 3) if first_partial else None,
    }


def engine_only(timeline: Timeline, out_dir: Path, text: str) -> dict[str, Any]:
    """``captions eval`` on the same WAV (one item, same word times)."""
    manifest = out_dir / "manifest.jsonl"
    line = {"id": "e2e", "audio": timeline.wav.name, "text": text, "words": timeline.timed_words}
    manifest.write_text(json.dumps(line) + "\n")
    result = out_dir / "eval.json"
    subprocess.run(
        [*EVAL_COMMAND, str(manifest), "--no-offline", "--json", str(result)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    summary = json.loads(result.read_text())
    latency = summary["latency"]
    return {
        "wer": summary["wer"],
        "timed_words": latency["timed_words"],
        **{k: latency[k] for k in LATENCY_KEYS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--limit", type=int, default=6, help="first N items (default 6)")
    parser.add_argument("--gap", type=float, default=2.0, help="pause between items, seconds")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)

    items = read_manifest(args.manifest)[: args.limit]
    with tempfile.TemporaryDirectory(prefix="e2e-latency-") as tmp:
        out_dir = Path(tmp)
        timeline = build_timeline(items, out_dir, args.gap)
        print(f"{len(items)} items, {timeline.speech_seconds:.1f} s of audio; engine alone...")
        engine = engine_only(timeline, out_dir, " ".join(item.text for item in items))
        print("in Chromium, through the SFU and the sidecar...")
        page = score(timeline, measure_in_browser(timeline, keep_dir=out_dir))
        # How often the live engine fell behind and dropped audio (it logs each time).
        page["engine_behind_warnings"] = (
            (out_dir / "serve.log").read_text().count("dropping old audio")
        )
    figures = {"manifest": str(args.manifest), "items": len(items), "page": page, "engine": engine}
    keys = [*LATENCY_KEYS, "wer", "timed_words", "first_partial_min", "engine_behind_warnings"]
    print(f"{'':20} {'page (e2e)':>12} {'engine only':>12} {'media path':>12}")
    for key in keys:
        a, b = page.get(key), engine.get(key)
        diff = ""
        if isinstance(a, float) and isinstance(b, float) and key != "wer":
            diff = f"{a - b:+.3f}"
        print(f"{key:20} {a!s:>12} {b!s:>12} {diff:>12}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
