"""The whole chain in real Chromium: fake microphone -> WebRTC -> SFU -> captioning
sidecar (Whisper) -> /captions WebSocket -> caption on the page.

One meeting is shared by the tests of this module (they run in file order): Alice (host,
piper voice) and Bob (participant, espeak voice) each get a browser whose fake
microphone loops their own speech file. The page's overlay is watched by a
MutationObserver (tests/caption_recorder.js) that keeps every line it ever showed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import pytest

from sfu.tokens import Grants, mint_token
from tests.browser import SCREENSHOTS, browser_page, captions_server, chromium_playwright
from tests.speech import speech_with_pauses

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "browser-test-secret-" + "x" * 32
ROOM = "standup"
RECORDER = (Path(__file__).parent / "caption_recorder.js").read_text()

ALICE_SENTENCES = [
    "The quarterly budget is ready for review.",
    "Please send your comments before Friday.",
]
BOB_SENTENCES = [
    "I will check the numbers with the finance team.",
    "Let us meet again next Tuesday morning.",
]


def speech_file(sentences: list[str], voice: str) -> Path:
    """The sentences with pauses, then a long silence: Chromium loops the file."""
    parts: list[str | float] = [1.0]
    for sentence in sentences:
        parts += [sentence, 1.2]
    parts.append(4.0)
    return speech_with_pauses(parts, voice=voice)


def link(base: str, name: str, role: str, *, room: str = ROOM, ttl: float = 3600) -> str:
    token = mint_token(SECRET, Grants.for_role(room, name, role), ttl=ttl)  # type: ignore[arg-type]
    return f"{base}/room/{room}#token={token}"


def join(page: Any, url: str, *, camera: bool = False) -> None:
    page.add_init_script(RECORDER)
    page.goto(url)
    page.wait_for_selector("[data-testid=join-screen]:not([hidden])")
    if not camera and page.is_visible("[data-testid=join-camera]"):
        page.wait_for_function(
            "() => document.querySelector('[data-testid=join-camera]').options.length > 0"
        )
        page.select_option("[data-testid=join-camera]", "")
    page.click("[data-testid=join-button]")
    page.wait_for_selector("[data-testid=meeting]:not([hidden])")


def recorded(page: Any) -> list[dict[str, Any]]:
    """Every caption line the page has shown, in order of appearance."""
    return page.evaluate(
        "() => window.__captionRecorder.order.map(k => window.__captionRecorder.lines[k])"
    )


def final_text(page: Any, speaker: str) -> str:
    lines = recorded(page)
    return " ".join(line["text"] for line in lines if line["speaker"] == speaker and line["final"])


def normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def best_window_wer(reference: str, hypothesis_words: list[str]) -> float:
    """The lowest WER of ``reference`` against any stretch of the hypothesis of about its length.

    The fake microphone loops, and the meeting starts anywhere in the file, so a
    sentence can be found anywhere in what was displayed.
    """
    ref = normalise(reference)
    best = 1.0
    for size in range(max(1, len(ref) - 2), len(ref) + 3):
        for start in range(0, max(1, len(hypothesis_words) - size + 1)):
            window = " ".join(hypothesis_words[start : start + size])
            if window:
                best = min(best, jiwer.wer(" ".join(ref), window))
    return best


@dataclass
class Meeting:
    base: str
    alice: Any
    bob: Any
    playwright: Any


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Meeting]:
    alice_wav = speech_file(ALICE_SENTENCES, "piper")
    bob_wav = speech_file(BOB_SENTENCES, "espeak:en-us+m3")
    data_dir = tmp_path_factory.mktemp("serve")
    with (
        captions_server(data_dir, SECRET) as base,
        chromium_playwright() as playwright,
        browser_page(playwright, fake_audio=alice_wav) as alice,
        browser_page(playwright, fake_audio=bob_wav) as bob,
    ):
        join(alice, link(base, "Alice", "host"))
        join(bob, link(base, "Bob", "participant"))
        yield Meeting(base, alice, bob, playwright)


def wait_for_finals(page: Any, speakers: dict[str, int], timeout: float = 90) -> None:
    """Until the page displayed at least this many final words per speaker."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {s: len(normalise(final_text(page, s))) for s in speakers}
        if all(counts[s] >= n for s, n in speakers.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not enough final captions after {timeout} s: {counts}")
        page.wait_for_timeout(500)


def test_two_speakers_captioned_and_attributed_in_both_pages(meeting: Meeting) -> None:
    need = {
        "Alice": sum(len(normalise(s)) for s in ALICE_SENTENCES) * 3 // 2,
        "Bob": sum(len(normalise(s)) for s in BOB_SENTENCES) * 3 // 2,
    }
    for page in (meeting.alice, meeting.bob):
        wait_for_finals(page, need)
        own = {"Alice": ALICE_SENTENCES, "Bob": BOB_SENTENCES}
        for speaker, sentences in own.items():
            shown = normalise(final_text(page, speaker))
            other = BOB_SENTENCES if speaker == "Alice" else ALICE_SENTENCES
            for sentence in sentences:
                wer = best_window_wer(sentence, shown)
                assert wer <= 0.5, (speaker, sentence, wer, " ".join(shown))
            # Attribution: the other speaker's sentences are not under this name.
            for sentence in other:
                assert best_window_wer(sentence, shown) > 0.6, (speaker, sentence, " ".join(shown))
        # Both speakers were shown as partials first, then settled into finals.
        lines = recorded(page)
        assert any(not line["final"] or line["finalAt"] > line["firstSeen"] for line in lines)
        # The box grows to its bound of text lines at most (finals stay until read).
        height, line_height, box_lines = page.evaluate(
            """() => { const box = document.querySelector('[data-testid=captions]');
                       const s = getComputedStyle(box);
                       return [box.clientHeight, parseFloat(s.lineHeight),
                               parseFloat(s.getPropertyValue('--caption-box-lines'))]; }"""
        )
        assert height <= box_lines * line_height + 20


def test_screenshot_of_meeting_with_captions(meeting: Meeting) -> None:
    page = meeting.alice
    page.click("[data-testid=transcript-toggle]")
    page.wait_for_selector("[data-testid=transcript]:not([hidden]) .transcript-entry")
    page.wait_for_selector("[data-testid=captions] .caption-line", timeout=30_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "meeting.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    # Keyboard: `c` hides and shows the captions for this viewer only.
    # Not while typing in the search box (where the transcript panel put the focus)...
    page.keyboard.press("c")
    assert page.get_attribute("[data-testid=captions]", "data-visible") == "true"
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("c")
    assert page.get_attribute("[data-testid=captions]", "data-visible") == "false"
    assert page.get_attribute("[data-testid=captions-toggle]", "aria-pressed") == "false"
    page.keyboard.press("c")
    assert page.get_attribute("[data-testid=captions]", "data-visible") == "true"
    page.click("[data-testid=transcript-toggle]")


def test_host_turns_captions_off_then_on(meeting: Meeting) -> None:
    alice, bob = meeting.alice, meeting.bob
    toggle = alice.locator("[data-testid=room-captions-toggle]")
    assert toggle.get_attribute("aria-checked") == "true"
    # Bob is not a host: no room toggle for him.
    assert bob.is_hidden("[data-testid=room-captions-toggle]")
    toggle.click()
    for page in (alice, bob):
        page.wait_for_selector("[data-testid=captions-health][data-state=off]")
        assert "Alice" in page.inner_text("[data-testid=captions-health]")
        assert "turned off by Alice" in page.inner_text("[data-testid=notice]")
    # Whatever the engine had already heard is flushed as finals; wait until that settles
    # (3 s without a new line), then nothing new may appear.
    before = {"alice": len(recorded(alice)), "bob": len(recorded(bob))}
    settle_deadline = time.monotonic() + 15
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 3 and time.monotonic() < settle_deadline:
        alice.wait_for_timeout(500)
        now = {"alice": len(recorded(alice)), "bob": len(recorded(bob))}
        if now != before:
            before, quiet_since = now, time.monotonic()
    alice.wait_for_timeout(8000)  # both files loop through speech in this time
    after = {"alice": len(recorded(alice)), "bob": len(recorded(bob))}
    assert after == before, "a caption line appeared while captions were off"
    toggle.click()
    for page in (alice, bob):
        page.wait_for_selector("[data-testid=captions-health]:not([data-state=off])")
        assert "turned on by Alice" in page.inner_text("[data-testid=notice]")
    deadline = time.monotonic() + 45
    while len(recorded(bob)) <= after["bob"] or len(recorded(alice)) <= after["alice"]:
        assert time.monotonic() < deadline, "captions did not resume"
        bob.wait_for_timeout(500)


def test_late_joiner_sees_earlier_finals_in_transcript(meeting: Meeting) -> None:
    earlier = {line["speaker"] for line in recorded(meeting.alice) if line["final"]}
    assert earlier == {"Alice", "Bob"}
    with browser_page(meeting.playwright) as carol:
        join(carol, link(meeting.base, "Carol", "guest"))
        carol.click("[data-testid=transcript-toggle]")
        carol.wait_for_selector("[data-testid=transcript] .transcript-entry")
        entries = carol.eval_on_selector_all(
            "[data-testid=transcript] .transcript-entry",
            "els => els.map(e => [e.dataset.speaker,"
            " e.querySelector('.transcript-text').textContent])",
        )
        assert {speaker for speaker, _ in entries} >= {"Alice", "Bob"}
        alice_words = normalise(" ".join(text for speaker, text in entries if speaker == "Alice"))
        assert (
            best_window_wer(ALICE_SENTENCES[0], alice_words) <= 0.5
            or best_window_wer(ALICE_SENTENCES[1], alice_words) <= 0.5
        )
        # Guests listen: no microphone, camera or host controls.
        assert carol.is_hidden("[data-testid=mute-toggle]")
        assert carol.is_hidden("[data-testid=room-captions-toggle]")
        # Anyone can download what their page holds, made in the page.
        with carol.expect_download() as download:
            carol.click("[data-testid=download-vtt]")
        vtt = Path(download.value.path()).read_text()
        assert vtt.startswith("WEBVTT") and "<v Alice>" in vtt and "<v Bob>" in vtt
        # Search filters the transcript.
        carol.fill("[data-testid=transcript-search]", "zzzz-nothing")
        assert carol.locator("[data-testid=transcript] .transcript-entry").count() == 0
        assert carol.is_hidden("[data-testid=host-toggle]")


def test_host_downloads_the_stored_transcript(meeting: Meeting) -> None:
    alice = meeting.alice
    alice.click("[data-testid=host-toggle]")
    with alice.expect_download() as download:
        alice.click("[data-testid=host-download-vtt]")
    vtt = Path(download.value.path()).read_text()
    assert vtt.startswith("WEBVTT") and "<v Alice>" in vtt and "<v Bob>" in vtt
    alice.keyboard.press("Escape")
    assert alice.is_hidden("[data-testid=host-panel]")


@pytest.mark.parametrize("case", ["bad_signature", "just_expired"])
def test_link_refused_by_server_shows_error_screen(meeting: Meeting, case: str) -> None:
    if case == "bad_signature":
        grants = Grants.for_role(ROOM, "Eve", "guest")
        token = mint_token("another-secret-" + "y" * 32, grants)
        url, code = f"{meeting.base}/room/{ROOM}#token={token}", "token_invalid"
    else:
        # Expired a moment ago: within the page's clock tolerance, so the server decides.
        url, code = link(meeting.base, "Eve", "guest", ttl=1), "token_expired"
        time.sleep(2)
    with browser_page(meeting.playwright) as eve:
        eve.goto(url)
        eve.wait_for_selector("[data-testid=join-screen]:not([hidden])")
        eve.click("[data-testid=join-button]")
        eve.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        assert eve.get_attribute("[data-testid=error-message]", "data-code") == code
        assert eve.is_hidden("[data-testid=meeting]")
