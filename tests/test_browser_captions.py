"""The page's caption handling over the real SFU and the real captions API, without a
speech engine: the test publishes caption events and room status into the hub the way
the sidecar does, and watches two pages (a host and a guest)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from captions.events import CaptionEvent, Speaker, Word
from meeting.protocol import Person, SidecarStatus
from sfu.tokens import Grants, mint_token
from tests.browser import InProcessServer, browser_page, chromium_playwright, sfu_server

pytestmark = pytest.mark.browser

SECRET = "captions-page-secret-" + "q" * 32
ROOM = "capslab"
CAROL = Speaker("carol-1", "Carol")
LANGS = ("en", "fr")


def link(base: str, name: str, role: str) -> str:
    token = mint_token(SECRET, Grants.for_role(ROOM, name, role))  # type: ignore[arg-type]
    return f"{base}/room/{ROOM}#token={token}"


def caption(revision: int, words: list[tuple[str, bool]], kind: str = "partial") -> CaptionEvent:
    timed = tuple(Word(w, 0.5 * i, 0.5 * i + 0.4, final) for i, (w, final) in enumerate(words))
    return CaptionEvent(CAROL, 1, revision, kind, timed, time.time())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, Any, Any]]:
    with (
        chromium_playwright() as playwright,
        sfu_server(SECRET, tmp_path_factory.mktemp("caps"), captions=True) as server,
        browser_page(playwright) as host,
        browser_page(playwright) as guest,
    ):
        attach_captioner(server)
        server.call(server.hub.update_status, ROOM, SidecarStatus(languages=LANGS))
        for page, name, role in ((host, "Hana", "host"), (guest, "Gil", "guest")):
            page.add_init_script(CSP_WATCH)
            page.goto(link(server.url, name, role))
            page.wait_for_selector("[data-testid=join-screen]:not([hidden])")
            page.click("[data-testid=join-button]")
            page.wait_for_selector("[data-testid=captions-health][data-state=live]")
        yield server, host, guest


CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


CAPTIONERS: list[Any] = []  # the test's stand-in captioner's hub subscription


def attach_captioner(server: InProcessServer) -> None:
    server.call(lambda: CAPTIONERS.append(server.hub.attach_captioner(ROOM)))


def publish(server: InProcessServer, event: CaptionEvent) -> None:
    async def publish_and_store() -> None:
        assert server.hub is not None
        if server.hub.publish(ROOM, event, stream="stream-1") and event.kind == "final":
            await server.hub.persist(ROOM, event, stream="stream-1", stream_started_at=time.time())

    server.call(publish_and_store)


def test_partial_then_final_in_every_page_announced_once(meeting: Any) -> None:
    server, host, guest = meeting
    publish(server, caption(1, [("hello", True), ("wor", False)]))
    line = "[data-testid=captions] .caption-line[data-speaker=Carol]"
    for page in (host, guest):
        page.wait_for_selector(f"{line}[data-final=false]")
        assert page.inner_text(f"{line} .caption-text") == "hello wor"
        assert page.locator(f"{line} .w.partial").count() == 1
        assert page.inner_text("[data-testid=captions-log]") == ""
    publish(server, caption(2, [("hello", True), ("world", True)], kind="final"))
    for page in (host, guest):
        page.wait_for_selector(f"{line}[data-final=true]")
        assert page.inner_text(f"{line} .caption-text") == "hello world"
        assert page.text_content("[data-testid=captions-log]") == "Carol: hello world"
        page.click("[data-testid=transcript-toggle]")
        entry = page.locator("[data-testid=transcript] .transcript-entry[data-speaker=Carol]")
        assert entry.locator(".transcript-text").inner_text() == "hello world"
        page.click("[data-testid=transcript-toggle]")


def test_health_follows_the_captioner(meeting: Any) -> None:
    server, host, guest = meeting
    server.call(server.hub.update_status, ROOM, SidecarStatus(degraded=True, languages=LANGS))
    for page in (host, guest):
        page.wait_for_selector("[data-testid=captions-health][data-state=degraded]")
        assert "delayed" in page.inner_text("[data-testid=captions-health]")
    server.call(server.hub.update_status, ROOM, SidecarStatus(languages=LANGS))
    for page in (host, guest):
        page.wait_for_selector("[data-testid=captions-health][data-state=live]")
    # Its engine cannot caption (e.g. a remote Kyutai server refused its API key).
    server.call(server.hub.update_status, ROOM, SidecarStatus(unavailable=True, languages=LANGS))
    for page in (host, guest):
        page.wait_for_selector("[data-testid=captions-health][data-state=offline]")
        assert "unavailable" in page.inner_text("[data-testid=captions-health]")
    server.call(server.hub.update_status, ROOM, SidecarStatus(languages=LANGS))
    for page in (host, guest):
        page.wait_for_selector("[data-testid=captions-health][data-state=live]")
    server.call(lambda: server.hub.unsubscribe(CAPTIONERS.pop()))
    for page in (host, guest):
        page.wait_for_selector("[data-testid=captions-health][data-state=offline]")
    attach_captioner(server)
    for page in (host, guest):
        page.wait_for_selector("[data-testid=captions-health][data-state=live]")


def test_host_chooses_the_language_everyone_is_told(meeting: Any) -> None:
    _, host, guest = meeting
    assert guest.is_hidden("[data-testid=host-toggle]")
    host.click("[data-testid=host-toggle]")
    options = host.eval_on_selector_all(
        "[data-testid=host-language] option", "options => options.map(o => o.value)"
    )
    assert options == ["en", "fr"]
    host.select_option("[data-testid=host-language]", "fr")
    guest.wait_for_function(
        "() => document.querySelector('[data-testid=notice]').textContent.includes('French')"
    )
    assert "Hana" in guest.inner_text("[data-testid=notice]")
    host.keyboard.press("Escape")


def test_deleted_transcript_is_cleared(meeting: Any) -> None:
    server, _, guest = meeting
    guest.click("[data-testid=transcript-toggle]")
    assert guest.locator("[data-testid=transcript] .transcript-entry").count() >= 1
    server.call(server.hub.delete_transcript, ROOM, Person("hana", "Hana"))
    guest.wait_for_function(
        "() => document.querySelectorAll('[data-testid=transcript] .transcript-entry').length === 0"
    )
    guest.keyboard.press("Escape")


def final(utterance: int, text: str) -> CaptionEvent:
    words = tuple(Word(w, 0.5 * i, 0.5 * i + 0.4, True) for i, w in enumerate(text.split()))
    return CaptionEvent(CAROL, utterance, 1, "final", words, time.time())


def choose(page: Any, name: str, value: str) -> None:
    page.click("[data-testid=settings-open]")
    page.check(f"[data-testid=settings] input[name={name}][value={value}]")
    page.keyboard.press("Escape")


def test_hiding_captions_keeps_announcing_and_the_key_can_change_or_go(meeting: Any) -> None:
    server, _, guest = meeting
    toggle = "[data-testid=captions-toggle]"
    guest.focus(toggle)
    guest.keyboard.press("c")
    assert guest.get_attribute(toggle, "aria-pressed") == "false"
    publish(server, final(10, "still read out"))
    guest.wait_for_function(
        "() => document.querySelector('[data-testid=captions-log]').textContent"
        ".includes('Carol: still read out')"
    )
    assert guest.is_hidden("[data-testid=captions]")
    # No single-key shortcut: c does nothing.
    choose(guest, "captionsKey", "off")
    assert guest.get_attribute(toggle, "aria-keyshortcuts") is None
    guest.focus(toggle)
    guest.keyboard.press("c")
    assert guest.get_attribute(toggle, "aria-pressed") == "false"
    # Remapped to k.
    choose(guest, "captionsKey", "k")
    guest.focus(toggle)
    guest.keyboard.press("c")
    assert guest.get_attribute(toggle, "aria-pressed") == "false"
    guest.keyboard.press("k")
    assert guest.get_attribute(toggle, "aria-pressed") == "true"
    assert guest.get_attribute(toggle, "aria-keyshortcuts") == "k"
    # Silencing the screen reader is its own, explicit choice.
    choose(guest, "announce", "off")
    publish(server, final(11, "not read out"))
    guest.wait_for_selector("[data-testid=captions] .caption-line[data-utterance='11']")
    assert "not read out" not in guest.text_content("[data-testid=captions-log]")
    choose(guest, "announce", "on")
    choose(guest, "captionsKey", "c")


def test_settings_dialog_opens_on_the_current_choice(meeting: Any) -> None:
    _, _, guest = meeting
    guest.click("[data-testid=settings-open]")
    focused = guest.evaluate("() => [document.activeElement.name, document.activeElement.checked]")
    assert focused == ["size", True]
    guest.keyboard.press("Escape")


def test_skip_link_then_leave_and_join_again(meeting: Any) -> None:
    """Last in this module: the guest leaves. The skip link moves focus to the captions
    without touching the fragment that holds the token, so "Join again" works."""
    _, _, guest = meeting
    guest.focus("[data-role=skip-link]")
    guest.keyboard.press("Enter")
    assert guest.evaluate("() => document.activeElement.id") == "captions-region"
    assert "#token=" in guest.url
    guest.click("[data-testid=leave]")
    guest.wait_for_selector("[data-testid=error-screen]:not([hidden])")
    # Nothing is received after leaving: no "Captions live" over "You left the meeting".
    assert guest.is_hidden("[data-testid=captions-health]")
    assert guest.evaluate("() => document.activeElement.dataset.role") == "error-heading"
    guest.click("[data-role=error-retry]")
    guest.wait_for_selector("[data-testid=join-screen]:not([hidden])")
    guest.click("[data-testid=join-button]")
    guest.wait_for_selector("[data-testid=meeting]:not([hidden])")
    guest.wait_for_selector("[data-testid=captions-health][data-state=live]")


def test_the_page_runs_under_its_strict_csp_and_warns_the_host_when_not_saving(
    meeting: Any,
) -> None:
    """Issue 10: a strict CSP the page satisfies (the server sends it on every response:
    tests/test_security_headers.py), and "Transcript not being saved" for the host only."""
    server, host, guest = meeting
    assert server.hub is not None
    server.call(server.hub._set_saving, False)
    host.wait_for_selector("[data-testid=saving-warning]:not([hidden])")
    assert "not being saved" in host.inner_text("[data-testid=saving-warning]")
    guest.wait_for_timeout(300)
    assert guest.locator("[data-testid=saving-warning]").is_hidden()
    server.call(server.hub._set_saving, True)
    host.wait_for_selector("[data-testid=saving-warning]", state="hidden")
    for page in (host, guest):
        assert page.evaluate("window.__cspViolations") == []
