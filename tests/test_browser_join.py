"""Joining and meeting controls in real Chromium against the real SFU (no speech engine):
join screen with preview, denied microphone, names on tiles, active speaker, mute,
keyboard operation, leave, lost connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sfu.tokens import Grants, mint_token
from tests.browser import browser_page, chromium_playwright, sfu_server
from tests.speech import speech_with_pauses

pytestmark = pytest.mark.browser

SECRET = "join-test-secret-" + "z" * 32
ROOM = "joinlab"
# A camera and microphone exist, but the site is refused access to them.
DENY_MEDIA = ["--use-fake-device-for-media-stream", "--deny-permission-prompts"]


def link(base: str, name: str, role: str) -> str:
    token = mint_token(SECRET, Grants.for_role(ROOM, name, role))  # type: ignore[arg-type]
    return f"{base}/room/{ROOM}#token={token}"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with chromium_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def voice() -> Path:
    return speech_with_pauses([0.3, "Good morning, can everybody hear me?", 0.8], voice="piper")


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    with sfu_server(SECRET, tmp_path) as server:
        yield server.url


def open_join_screen(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("[data-testid=join-screen]:not([hidden])")


def join(page: Any) -> None:
    if page.is_visible("[data-testid=join-camera]"):
        page.wait_for_function(
            "() => document.querySelector('[data-testid=join-camera]').options.length > 0"
        )
        page.select_option("[data-testid=join-camera]", "")
    page.click("[data-testid=join-button]")
    page.wait_for_selector("[data-testid=meeting]:not([hidden])")


def tiles(page: Any) -> dict[str, dict[str, str]]:
    return {
        t["name"]: t
        for t in page.eval_on_selector_all(
            "[data-testid=tile]",
            "els => els.map(e => ({name: e.dataset.name, speaking: e.dataset.speaking,"
            " label: e.querySelector('.tile-name').textContent}))",
        )
    }


def test_join_screen_preview_devices_and_name(playwright: Any, base: str, voice: Path) -> None:
    with browser_page(playwright, fake_audio=voice) as page:
        open_join_screen(page, link(base, "Alice", "host"))
        assert page.input_value("[data-testid=join-name]") == "Alice"
        page.wait_for_function(
            "() => document.querySelector('[data-testid=join-mic]').options.length > 1"
        )
        mics = page.eval_on_selector_all(
            "[data-testid=join-mic] option", "options => options.map(o => o.value)"
        )
        assert len(mics) >= 2 and "" in mics  # the fake device and "no microphone"
        page.wait_for_function(
            "() => document.querySelector('[data-role=preview]')"
            ".srcObject?.getVideoTracks().length === 1"
        )
        page.wait_for_function("() => document.querySelector('#join-level').value > 0.05")
        # The name is the one signed into the link (the SFU shows everyone that one).
        assert page.get_attribute("[data-testid=join-name]", "readonly") is not None


def test_link_without_name_asks_for_one(playwright: Any, base: str) -> None:
    grants = Grants(room=ROOM, identity="anon-1", role="guest", can_publish=False)
    with browser_page(playwright) as page:
        open_join_screen(page, f"{base}/room/{ROOM}#token={mint_token(SECRET, grants)}")
        assert page.get_attribute("[data-testid=join-name]", "readonly") is None
        page.click("[data-testid=join-button]")
        assert page.get_attribute("[data-testid=join-message]", "data-code") == "join.name_required"
        assert page.is_visible("[data-testid=join-screen]")
        page.fill("[data-testid=join-name]", "Ann")
        join(page)  # the page sends the name in `join`; the SFU may or may not use it
        assert len(tiles(page)) == 1


def test_denied_microphone_is_explained_and_listening_still_works(
    playwright: Any, base: str
) -> None:
    with browser_page(playwright, extra_args=DENY_MEDIA) as page:
        open_join_screen(page, link(base, "Dora", "participant"))
        page.wait_for_selector("[data-testid=join-message][data-code='error.mic_denied']")
        assert "denied" in page.inner_text("[data-testid=join-message]")
        join(page)
        assert page.is_hidden("[data-testid=mute-toggle]")


def test_meeting_tiles_speaker_mute_keyboard_and_leave(
    playwright: Any, base: str, voice: Path
) -> None:
    with (
        browser_page(playwright, fake_audio=voice) as alice,
        browser_page(playwright) as bob,
    ):
        open_join_screen(alice, link(base, "Alice", "host"))
        join(alice)
        open_join_screen(bob, link(base, "Bob", "guest"))
        join(bob)
        alice.wait_for_function(
            "() => document.querySelectorAll('[data-testid=tile]').length === 2"
        )
        bob.wait_for_function("() => document.querySelectorAll('[data-testid=tile]').length === 2")
        assert set(tiles(bob)) == {"Alice", "Bob"}
        assert "(you)" in tiles(alice)["Alice"]["label"]
        # Alice's fake microphone speaks: Bob sees her tile highlighted.
        bob.wait_for_selector("[data-testid=tile][data-name=Alice][data-speaking=true]")
        alice.click("[data-testid=mute-toggle]")
        bob.wait_for_function(
            "() => document.querySelector('[data-testid=tile][data-name=Alice] .tile-muted')"
            ".textContent.includes('muted')"
        )
        bob.wait_for_timeout(1500)
        bob.wait_for_selector("[data-testid=tile][data-name=Alice][data-speaking=false]")

        # Keyboard: every control is reachable with Tab and works with Enter / Escape.
        reached = set()
        for _ in range(20):
            alice.keyboard.press("Tab")
            reached.add(alice.evaluate("document.activeElement?.dataset.testid || ''"))
        assert {
            "mute-toggle",
            "captions-toggle",
            "transcript-toggle",
            "settings-open",
            "room-captions-toggle",
            "leave",
            "language-switch",
        } <= reached
        alice.focus("[data-testid=transcript-toggle]")
        alice.keyboard.press("Enter")
        assert alice.is_visible("[data-testid=transcript]")
        alice.keyboard.press("Escape")
        assert alice.is_hidden("[data-testid=transcript]")
        assert alice.evaluate("document.activeElement.dataset.testid") == "transcript-toggle"
        alice.focus("[data-testid=settings-open]")
        alice.keyboard.press("Enter")
        assert alice.is_visible("[data-testid=settings]")
        alice.keyboard.press("Escape")
        assert alice.is_hidden("[data-testid=settings]")

        bob.click("[data-testid=leave]")
        bob.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        alice.wait_for_function(
            "() => document.querySelectorAll('[data-testid=tile]').length === 1"
        )


def test_lost_connection_is_announced(playwright: Any, tmp_path: Path) -> None:
    with browser_page(playwright) as page:
        with sfu_server(SECRET, tmp_path) as server:
            open_join_screen(page, link(server.url, "Gus", "guest"))
            join(page)
        # The server is gone: the page says so and tries to reconnect.
        page.wait_for_selector("html[data-connection=lost]")
        assert "Connection lost" in page.inner_text("[data-testid=notice]")


SLOW_SECOND_GET_USER_MEDIA = """
(() => {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  let calls = 0;
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    calls += 1;
    if (calls > 1) await new Promise((resolve) => setTimeout(resolve, 1500));
    return original(constraints);
  };
})();
"""


def test_join_right_after_a_device_change_keeps_the_microphone(
    playwright: Any, base: str, voice: Path
) -> None:
    # A slow device (or a loaded machine) must not make a quick click join muted.
    with (
        browser_page(playwright, fake_audio=voice) as alice,
        browser_page(playwright) as bob,
    ):
        alice.add_init_script(SLOW_SECOND_GET_USER_MEDIA)
        open_join_screen(alice, link(base, "Alice", "host"))
        alice.wait_for_function(
            "() => document.querySelector('[data-testid=join-camera]').options.length > 0"
        )
        alice.select_option("[data-testid=join-camera]", "")  # restarts the preview, slowly
        alice.click("[data-testid=join-button]")
        alice.wait_for_selector("[data-testid=meeting]:not([hidden])")
        open_join_screen(bob, link(base, "Bob", "guest"))
        join(bob)
        bob.wait_for_selector("[data-testid=tile][data-name=Alice][data-speaking=true]")


def test_guest_join_screen_says_guests_only_listen_and_read(
    playwright: Any, base: str, voice: Path
) -> None:
    """QA: the guest's join screen said only "You join as guest."; a guest cannot speak."""
    with (
        browser_page(playwright, fake_audio=voice) as guest,
        browser_page(playwright, fake_audio=voice) as participant,
    ):
        open_join_screen(guest, link(base, "Gail", "guest"))
        text = guest.inner_text("[data-role=join-role]")
        assert "guest" in text and "listen" in text and "captions only" in text, text
        # No microphone or camera choice, no preview: nothing a guest could use.
        for selector in ("join-mic", "join-camera"):
            assert guest.is_hidden(f"[data-testid={selector}]")
        assert guest.is_hidden("[data-role=preview-figure]")
        assert guest.evaluate("document.querySelector('[data-role=preview]').srcObject") is None
        guest.click("[data-testid=language-switch]")
        guest.wait_for_function(
            "() => document.querySelector('[data-role=join-role]').textContent.includes('invité')"
        )
        text = guest.inner_text("[data-role=join-role]")
        assert "écoutent" in text and "sous-titres uniquement" in text, text
        join(guest)
        assert guest.is_hidden("[data-testid=mute-toggle]")
        # Someone who may speak is told nothing of the kind, and chooses a microphone.
        open_join_screen(participant, link(base, "Pat", "participant"))
        assert "listen" not in participant.inner_text("[data-role=join-role]")
        assert participant.is_visible("[data-testid=join-mic]")
        # A link of another role that may not publish says it too.
        grants = Grants.for_role(ROOM, "Lee", "participant")
        listener = Grants(**{**grants.__dict__, "can_publish": False})
        participant.goto("about:blank")  # a new fragment alone would not load the page again
        open_join_screen(participant, f"{base}/room/{ROOM}#token={mint_token(SECRET, listener)}")
        text = participant.inner_text("[data-role=join-role]")
        assert "participant" in text and "captions only" in text, text
        assert participant.is_hidden("[data-testid=join-mic]")
