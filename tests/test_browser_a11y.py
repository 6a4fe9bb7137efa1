"""Accessibility of every screen state, in English and French, with axe-core in real
Chromium, and the caption box at 200 % and 400 % zoom with each panel open.

axe-core comes from npm (tests/npm, installed by scripts/system-deps.sh into the git-ignored
tests/npm/node_modules); it is injected by the test, never loaded from a CDN. Zoom is
simulated the way the browser does it for layout: a 1280x720 window at 200 % lays the
page out in 640x360 CSS px, at 400 % in 320x180.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from captions.events import CaptionEvent, Speaker, Word
from meeting.protocol import SidecarStatus
from sfu.tokens import Grants, mint_token
from tests.browser import InProcessServer, browser_page, chromium_playwright, sfu_server
from tests.test_browser_page import fake_token

pytestmark = pytest.mark.browser

AXE = Path(__file__).parent / "npm" / "node_modules" / "axe-core" / "axe.min.js"
SECRET = "captions-a11y-secret-" + "z" * 32
ROOM = "a11y"
LANGUAGES = ("en", "fr")
# WCAG 2.0-2.2 A and AA, and axe's best practices.
RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def link(base: str, name: str, role: str) -> str:
    grants = Grants.for_role(ROOM, name, role)  # type: ignore[arg-type]
    return f"{base}/room/{ROOM}#token={mint_token(SECRET, grants)}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with sfu_server(SECRET, tmp_path_factory.mktemp("a11y"), captions=True) as server:
        server.call(server.hub.attach_captioner, ROOM)
        server.call(server.hub.update_status, ROOM, SidecarStatus(languages=("en", "fr")))
        yield server


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with chromium_playwright() as p:
        yield p


def require_axe() -> None:
    if not AXE.exists():
        pytest.skip(f"{AXE} missing: scripts/system-deps.sh installs axe-core from npm")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        """async (rules) => {
          const result = await axe.run(document, { runOnly: { type: 'tag', values: rules },
                                                   resultTypes: ['violations'] });
          return result.violations.map(v => ({ id: v.id, impact: v.impact,
            nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' :: ' + n.failureSummary) }));
        }""",
        RULES,
    )


def check_both_languages(page: Any, state: str) -> None:
    """axe on the page as it is, in English and in French (set as the header's switch does:
    a modal dialog keeps the switch itself out of reach)."""
    found = {}
    for lang in LANGUAGES:
        page.evaluate("async (l) => (await import('/static/i18n.js')).setLanguage(l)", lang)
        violations = axe_violations(page)
        if violations:
            found[lang] = violations
    assert not found, (state, found)


def publish(server: InProcessServer, utterance: int, text: str, kind: str = "final") -> None:
    words = tuple(
        Word(w, 0.4 * i, 0.4 * i + 0.3, kind == "final") for i, w in enumerate(text.split())
    )
    event = CaptionEvent(Speaker("carol-1", "Carol"), utterance, 1, kind, words, time.time())  # type: ignore[arg-type]
    server.call(lambda: server.hub.publish(ROOM, event, stream="s1"))


def test_axe_on_error_screens(playwright: Any, server: InProcessServer) -> None:
    require_axe()
    with browser_page(playwright) as page:
        page.add_init_script(path=str(AXE))
        page.goto(f"{server.url}/room/{ROOM}")
        page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        # axe is there and finds what it should: an image without a text alternative.
        page.evaluate("() => document.body.append(Object.assign(new Image(), {id: 'bad'}))")
        assert "image-alt" in {v["id"] for v in axe_violations(page)}
        page.evaluate("() => document.querySelector('#bad').remove()")
        check_both_languages(page, "no token")
        page.goto(f"{server.url}/room/{ROOM}#token={fake_token(ROOM, exp_in=-3600)}")
        page.reload()
        page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        check_both_languages(page, "expired link")


def test_axe_on_join_meeting_panels_dialog_and_left(
    playwright: Any, server: InProcessServer
) -> None:
    require_axe()
    with browser_page(playwright) as page:
        page.add_init_script(path=str(AXE))
        page.goto(link(server.url, "Hana", "host"))
        page.wait_for_selector("[data-testid=join-screen]:not([hidden])")
        check_both_languages(page, "join")
        page.click("[data-testid=join-button]")
        page.wait_for_selector("[data-testid=captions-health][data-state=live]")
        publish(server, 1, "hello everyone and welcome")
        page.wait_for_selector("[data-testid=captions] .caption-line[data-final=true]")
        publish(server, 2, "this one is still", kind="partial")
        page.wait_for_selector("[data-testid=captions] .caption-line[data-final=false]")
        check_both_languages(page, "meeting with captions")
        page.click("[data-testid=transcript-toggle]")
        check_both_languages(page, "transcript open")
        page.click("[data-testid=host-toggle]")
        check_both_languages(page, "host controls open")
        page.keyboard.press("Escape")
        page.click("[data-testid=settings-open]")
        check_both_languages(page, "settings dialog")
        page.keyboard.press("Escape")
        page.click("[data-testid=captions-toggle]")
        check_both_languages(page, "captions hidden")
        page.click("[data-testid=captions-toggle]")
        page.set_viewport_size({"width": 320, "height": 180})  # 400 % zoom
        check_both_languages(page, "400 % zoom")
        page.click("[data-testid=transcript-toggle]")
        check_both_languages(page, "400 % zoom, transcript open")
        page.keyboard.press("Escape")
        page.set_viewport_size({"width": 1280, "height": 720})
        page.click("[data-testid=leave]")
        page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        check_both_languages(page, "left")


CAPTION_BOX = """() => {
  const box = document.querySelector('[data-testid=captions]');
  const r = box.getBoundingClientRect();
  let shown = 0, total = 0;
  for (let i = 1; i < 10; i++) for (let j = 1; j < 6; j++) {
    const x = r.left + r.width * i / 10, y = r.top + r.height * j / 6;
    total++;
    const el = document.elementFromPoint(x, y);
    if (el && box.contains(el)) shown++;
  }
  const dialog = document.querySelector('[data-testid=settings]');
  const d = dialog.open ? dialog.getBoundingClientRect() : null;
  const panel = document.querySelector('.panel:not([hidden])');
  return { inside: r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth,
           uncovered: shown / total,
           lines: r.height / parseFloat(getComputedStyle(box).lineHeight),
           dialogOverlaps: d !== null && d.bottom > r.top && d.top < r.bottom,
           panelHeight: panel ? panel.getBoundingClientRect().height : null };
}"""
OPEN = {
    "transcript": "[data-testid=transcript-toggle]",
    "host": "[data-testid=host-toggle]",
    "settings": "[data-testid=settings-open]",
}


@pytest.mark.parametrize(
    ("zoom", "viewport"),
    [(200, (640, 360)), (400, (320, 180)), (100, (390, 844))],
    ids=["200%", "400%", "phone"],
)
def test_caption_box_stays_whole_at_zoom_with_every_panel(
    playwright: Any, server: InProcessServer, zoom: int, viewport: tuple[int, int]
) -> None:
    """A 1280x720 window at 200 % / 400 % zoom (640x360 / 320x180 CSS px) and a phone,
    English and French, nothing open or each panel open: the caption box is inside the
    window, nothing is drawn over it, it keeps two lines or more; panels take the videos'
    place."""
    with browser_page(playwright, viewport=viewport) as page:
        page.goto(link(server.url, "Zed", "host"))
        page.wait_for_selector("[data-testid=join-screen]:not([hidden])")
        page.click("[data-testid=join-button]")
        page.wait_for_selector("[data-testid=captions-health][data-state=live]")
        publish(server, zoom, "welcome back everyone to the weekly planning meeting")
        page.wait_for_selector(f"[data-testid=captions] .caption-line[data-utterance='{zoom}']")
        failures = []
        for lang in LANGUAGES:
            page.evaluate("async (l) => (await import('/static/i18n.js')).setLanguage(l)", lang)
            for panel in (None, *OPEN):
                if panel:
                    page.evaluate(f"() => document.querySelector('{OPEN[panel]}').click()")
                box = page.evaluate(CAPTION_BOX)
                if panel:
                    page.keyboard.press("Escape")
                ok = box["inside"] and box["lines"] >= 2 - 0.01
                if panel == "settings":
                    ok = ok and not box["dialogOverlaps"]
                else:
                    ok = ok and box["uncovered"] == 1
                if panel in ("transcript", "host"):
                    ok = ok and box["panelHeight"] >= 40
                if not ok:
                    failures.append((lang, panel, box))
        assert not failures, failures
