"""A media link that cannot connect, in real Chromium against the real SFU.

A network that blocks UDP lets the page join (signalling is a WebSocket) but not carry
media: ICE fails, the SFU closes the socket with 4410 MEDIA_LOST, the page rejoins, and
so on. The page must count those rejoins as failures (media never flowed), stop after
its policy's last attempt and say why, while a link that does recover starts the count
afresh. When it gives up because media cannot get through, the page stays in the meeting
for captions only (their socket is TCP) and offers "Try again". The firewall here drops
every UDP datagram that reaches the SFU's ICE sockets (aioice's), as a firewall that
blocks UDP does. A link that never connects is ended by
the SFU after ``media_connect_timeout_seconds`` (here 6 s; Chromium's own ICE gives up
after ~15 s, a timing the test used to depend on and once waited past), a link that was
up dies on the SFU's consent checks after ~4 s (every 0.1 s instead of 5 s), and the
page's policy is shortened through ``configureReconnect``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aioice.ice
import pytest

from tests.browser import InProcessServer, browser_page, chromium_playwright, sfu_server
from tests.test_browser_captions import SECRET, attach_captioner, caption, link, publish

pytestmark = pytest.mark.browser

FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
CONNECT_SECONDS = 6.0  # the SFU's bound on a link that never connects
WAIT_MS = 45_000  # a link ends in 4 to 6 s; generous for a loaded machine
CAPTION_LINE = "[data-testid=captions] .caption-line[data-speaker=Carol]"
STORE = "(await import('/static/store.js')).current()"  # the page's state (store.js)


class Firewall:
    """Drops the UDP that reaches the SFU's ICE sockets while ``blocked``."""

    blocked = False


@pytest.fixture
def firewall(monkeypatch: pytest.MonkeyPatch) -> Firewall:
    wall = Firewall()
    receive = aioice.ice.StunProtocol.datagram_received

    def filtered(self: aioice.ice.StunProtocol, data: bytes | str, addr: Any) -> None:
        if not wall.blocked:
            receive(self, data, addr)

    monkeypatch.setattr(aioice.ice.StunProtocol, "datagram_received", filtered)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)
    return wall


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with sfu_server(
        SECRET, tmp_path, captions=True, media_connect_timeout_seconds=CONNECT_SECONDS
    ) as server:
        attach_captioner(server)
        yield server


@pytest.fixture
def playwright() -> Iterator[Any]:
    with chromium_playwright() as p:
        yield p


# The page's connection states and notices, as they change: "lost" lasts well under a
# second when the rejoin's media connects at once, too short to poll for reliably.
RECORD_CHANGES = """
window.seen = { connection: [], notices: [] };
document.addEventListener("DOMContentLoaded", () => {
  const root = document.documentElement;
  new MutationObserver(() => window.seen.connection.push(root.dataset.connection))
    .observe(root, { attributes: true, attributeFilter: ["data-connection"] });
  const notice = document.querySelector("[data-testid=notice]");
  new MutationObserver(() => window.seen.notices.push(notice.textContent))
    .observe(notice, { childList: true, characterData: true, subtree: true });
});
"""


def join_with_short_policy(
    page: Any,
    server: InProcessServer,
    max_attempts: int,
    on_join: Callable[[int], None] = lambda n: None,
) -> list[str]:
    """Joins as a participant publishing a microphone; returns the list of signalling
    sockets the page opens (one per join), kept up to date; ``on_join(n)`` runs as the
    n-th opens."""
    joins: list[str] = []

    def opened(ws: Any) -> None:
        if urlparse(ws.url).path == "/ws":
            joins.append(ws.url)
            on_join(len(joins))

    page.on("websocket", opened)
    page.add_init_script(RECORD_CHANGES)
    page.goto(link(server.url, "Mia", "participant"))
    page.wait_for_selector("[data-testid=join-screen]:not([hidden])")
    page.evaluate(
        """async (maxAttempts) => (await import('/static/connection.js'))
             .configureReconnect({ baseMs: 200, maxMs: 400, maxAttempts })""",
        max_attempts,
    )
    page.wait_for_function(
        "() => document.querySelector('[data-testid=join-camera]').options.length > 0"
    )
    page.select_option("[data-testid=join-camera]", "")
    page.click("[data-testid=join-button]")
    page.wait_for_selector("[data-testid=meeting]:not([hidden])")
    return joins


def test_media_that_cannot_connect_stops_after_the_bound_and_recovery_resets_it(
    playwright: Any, firewall: Firewall, server: InProcessServer
) -> None:
    firewall.blocked = True
    with browser_page(playwright, extra_args=FAKE_MEDIA) as page:

        def opened(n: int) -> None:
            # The firewall lets UDP through for the first rejoin (its ICE checks start
            # after its socket opens), and drops it again for the next one.
            if n == 2:
                firewall.blocked = False

        captions: list[str] = []
        page.on(
            "websocket",
            lambda ws: urlparse(ws.url).path == "/captions" and captions.append(ws.url),
        )
        joins = join_with_short_policy(page, server, max_attempts=1, on_join=opened)
        page.wait_for_function("() => window.seen.connection.includes('lost')", timeout=WAIT_MS)
        # Captions have their own socket: they keep coming while media rejoins.
        publish(server, caption(1, [("still", True), ("reading", True)], kind="final"))
        page.wait_for_selector(CAPTION_LINE)
        # The first rejoin's media flows: "reconnected", and the policy starts afresh.
        page.wait_for_function(
            """() => { const states = window.seen.connection;
                       return states.lastIndexOf('ok') > states.indexOf('lost'); }""",
            timeout=WAIT_MS,
        )
        assert any("Reconnected" in text for text in page.evaluate("() => window.seen.notices"))
        assert len(joins) == 2
        assert len(captions) == 1  # the captions socket never had to reconnect
        # Blocked again: the link dies (4410), and though its one attempt was used before,
        # the page rejoins once more; media never flows, so the page stops rejoining and
        # stays for captions only (the next test covers that state).
        firewall.blocked = True
        page.wait_for_selector("html[data-connection=captions-only]", timeout=WAIT_MS)
        assert page.is_hidden("[data-testid=error-screen]")
        assert len(joins) == 3
        page.wait_for_timeout(1500)
        assert len(joins) == 3  # no further rejoin
        # Leave still works from captions-only, and ends the captions too.
        page.click("[data-testid=leave]")
        page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        assert page.evaluate(f"async () => {STORE}.captionSocket.ws === null")


def test_blocked_media_keeps_the_page_in_the_meeting_for_captions_and_try_again_rejoins(
    playwright: Any, firewall: Firewall, server: InProcessServer
) -> None:
    firewall.blocked = True
    with browser_page(playwright, extra_args=FAKE_MEDIA) as page:
        captions: list[str] = []
        page.on(
            "websocket",
            lambda ws: urlparse(ws.url).path == "/captions" and captions.append(ws.url),
        )
        joins = join_with_short_policy(page, server, max_attempts=1)
        page.evaluate(f"async () => {{ window.joinedTracks = {STORE}.localStream.getTracks(); }}")
        # The join and its one rejoin carry no media: the page gives up, and stays.
        page.wait_for_selector("html[data-connection=captions-only]", timeout=WAIT_MS)
        assert page.is_visible("[data-testid=meeting]")
        assert page.is_hidden("[data-testid=error-screen]")
        message = page.locator("[data-testid=captions-only-message]")
        assert message.get_attribute("role") == "alert"
        assert "cannot get through this network" in message.inner_text()
        assert "Captions continue" in message.inner_text()
        # Media and signalling are gone: our tracks stopped, no connection, no rejoins.
        assert page.evaluate(
            "() => window.joinedTracks.length > 0"
            " && window.joinedTracks.every((track) => track.readyState === 'ended')"
        )
        assert page.evaluate(f"async () => {STORE}.connection === null")
        assert len(joins) == 2
        # A caption produced after giving up still reaches the page, on the first socket.
        publish(server, caption(1, [("still", True), ("reading", True)], kind="final"))
        page.wait_for_selector(CAPTION_LINE)
        assert page.inner_text(f"{CAPTION_LINE} .caption-text") == "still reading"
        assert len(captions) == 1
        page.click("[data-testid=language-switch]")
        assert "Les sous-titres continuent" in message.inner_text()
        assert page.inner_text("[data-testid=captions-only-retry]") == "Réessayer"
        page.click("[data-testid=language-switch]")
        # "Try again" from the keyboard, still blocked: a full rejoin, whose media fails
        # too, and the page is back to captions only.
        page.focus("[data-testid=captions-only-retry]")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => window.seen.connection.filter((s) => s === 'captions-only').length === 2",
            timeout=WAIT_MS,
        )
        assert len(joins) == 3
        assert page.is_visible("[data-testid=captions-only]")
        # Unblocked: the rejoin's media flows (our microphone opened again), the meeting is back.
        firewall.blocked = False
        page.click("[data-testid=captions-only-retry]")
        page.wait_for_selector("html[data-connection=ok]", timeout=WAIT_MS)
        assert page.is_hidden("[data-testid=captions-only]")
        assert page.evaluate(
            f"async () => {STORE}.localStream.getAudioTracks()[0]?.readyState === 'live'"
        )
        assert len(joins) == 4
        assert len(captions) == 1
