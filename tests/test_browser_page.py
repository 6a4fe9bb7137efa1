"""The meeting page's own logic in real Chromium, without a server: caption overlay,
transcript panel and writers, bad links, language and settings.

The page's files are served by a tiny static server; the ES modules are imported into
the page and driven with caption events as the sidecar sends them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.browser import browser_page, chromium_playwright, static_server

pytestmark = pytest.mark.browser


def fake_token(
    room: str, *, role: str = "participant", name: str = "Alice", exp_in: float = 3600
) -> str:
    """A token the page can read (the page never checks signatures: the server does)."""
    now = int(time.time())
    grants = {
        "room": room,
        "identity": "alice-1",
        "name": name,
        "role": role,
        "can_publish": True,
        "can_subscribe": True,
        "hidden": False,
        "captioner": False,
    }
    claims = {
        "iss": "sovereign-captions",
        "sub": "alice-1",
        "iat": now,
        "exp": now + int(exp_in),
        "grants": grants,
    }
    return jwt.encode(claims, "not-the-server-secret-" * 2, algorithm="HS256")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with chromium_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with static_server() as url:
        yield url


@pytest.fixture(scope="module")
def page(playwright: Any, base_url: str) -> Iterator[Any]:
    with browser_page(playwright) as page:
        page.goto(f"{base_url}/room/lab")  # no token: the error screen, modules loaded
        page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        yield page


def event(
    speaker: str,
    name: str,
    utterance: int,
    revision: int,
    words: list[tuple[str, bool]],
    kind: str = "partial",
    start: float = 1.0,
) -> dict[str, Any]:
    return {
        "type": "caption",
        "speaker": speaker,
        "speaker_name": name,
        "utterance": utterance,
        "revision": revision,
        "kind": kind,
        "text": " ".join(w for w, _ in words),
        "words": [
            {"text": w, "start": start + i * 0.4, "end": start + i * 0.4 + 0.3, "final": f}
            for i, (w, f) in enumerate(words)
        ],
        "emitted_at": 1_763_900_000.0 + start + len(words) * 0.4 + 0.5,
    }


OVERLAY_SETUP = """
async () => {
  const { CaptionOverlay } = await import('/static/captions.js');
  document.querySelector('#lab')?.remove();
  const lab = document.createElement('div');
  lab.id = 'lab';
  lab.className = 'captions-region';
  lab.style = 'position: fixed; top: 0; left: 0; width: 800px';
  lab.innerHTML = '<div class="captions" data-testid="lab-captions"></div>'
    + '<div class="visually-hidden" data-role="lab-log"></div>';
  document.body.append(lab);
  window.clock = 0;
  window.overlay = new CaptionOverlay(lab.firstElementChild, lab.lastElementChild,
                                      { now: () => window.clock });
}
"""


def lines(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "[data-testid=lab-captions] .caption-line",
        """els => els.map(e => ({speaker: e.dataset.speaker, final: e.dataset.final,
              text: e.querySelector('.caption-text').textContent,
              partialWords: e.querySelectorAll('.w.partial').length,
              continued: e.classList.contains('continued'), color: e.dataset.color}))""",
    )


def test_partial_settles_into_final_in_place(page: Any) -> None:
    page.evaluate(OVERLAY_SETUP)
    update = "e => window.overlay.update(e)"
    assert page.evaluate(update, event("a", "Alice", 1, 1, [("so", True), ("the", False)]))
    page.evaluate("() => { window.firstWord = document.querySelector('#lab .w'); }")
    top_before = page.evaluate(
        "() => document.querySelector('#lab .caption-line').getBoundingClientRect().top"
    )
    page.evaluate(
        update, event("a", "Alice", 1, 2, [("so", True), ("the", True), ("budget", False)])
    )
    assert lines(page) == [
        {
            "speaker": "Alice",
            "final": "false",
            "text": "so the budget",
            "partialWords": 1,
            "continued": False,
            "color": lines(page)[0]["color"],
        }
    ]
    # An older revision arriving late changes nothing.
    assert not page.evaluate(update, event("a", "Alice", 1, 1, [("no", False)]))
    page.evaluate(
        update,
        event("a", "Alice", 1, 3, [("so", True), ("the", True), ("budget", True)], kind="final"),
    )
    [line] = lines(page)
    assert line["final"] == "true" and line["partialWords"] == 0 and line["text"] == "so the budget"
    # Same DOM node for the settled word, same place on screen: the line did not jump.
    assert page.evaluate("() => window.firstWord === document.querySelector('#lab .w')")
    top_after = page.evaluate(
        "() => document.querySelector('#lab .caption-line').getBoundingClientRect().top"
    )
    assert top_after == top_before
    # A revision after the final is ignored.
    assert not page.evaluate(update, event("a", "Alice", 1, 4, [("changed", False)]))


def test_lines_grouped_per_speaker_with_stable_colours_box_bounded(page: Any) -> None:
    page.evaluate(OVERLAY_SETUP)
    update = "e => window.overlay.update(e)"
    page.evaluate(update, event("a", "Alice", 1, 1, [("one", True)], kind="final"))
    page.evaluate(update, event("a", "Alice", 2, 1, [("two", True)], kind="final"))
    page.evaluate(update, event("b", "Bob", 1, 1, [("three", False)]))
    shown = lines(page)
    assert [(s["speaker"], s["continued"]) for s in shown] == [
        ("Alice", False),
        ("Alice", True),
        ("Bob", False),
    ]
    assert shown[0]["color"] == shown[1]["color"] != shown[2]["color"]
    # A fourth line does not push out finals that are not read yet.
    page.evaluate(update, event("a", "Alice", 3, 1, [("four", False)]))
    assert [s["text"] for s in lines(page)] == ["one", "two", "three", "four"]
    # The box grows to --caption-box-lines text lines at most, even for a long utterance.
    long_words = [(f"word{i}", False) for i in range(80)]
    page.evaluate(update, event("b", "Bob", 1, 2, long_words))
    height, line_height, box_lines = page.evaluate(
        """() => { const box = document.querySelector('[data-testid=lab-captions]');
                   const s = getComputedStyle(box);
                   return [box.clientHeight, parseFloat(s.lineHeight),
                           parseFloat(s.getPropertyValue('--caption-box-lines'))]; }"""
    )
    assert box_lines >= 3
    assert height <= box_lines * line_height + 20


def test_reading_time_rule(page: Any) -> None:
    """1.5 s plus one word per 60/wpm s, capped at 15 s; the speed is a viewer setting."""
    times = page.evaluate(
        """async () => {
          const { readingTimeMs } = await import('/static/captions.js');
          return [readingTimeMs(19), readingTimeMs(19, 'slow'), readingTimeMs(19, 'fast'),
                  readingTimeMs(0), readingTimeMs(500), readingTimeMs(3, 'bogus')];
        }"""
    )
    assert times == [1500 + 19 * 60000 / 180, 1500 + 19 * 500, 1500 + 19 * 250, 1500, 15000, 2500]


def test_only_finals_reach_the_live_log(page: Any) -> None:
    page.evaluate(OVERLAY_SETUP)
    update = "e => window.overlay.update(e)"
    page.evaluate(update, event("a", "Alice", 1, 1, [("hello", False)]))
    page.evaluate(update, event("a", "Alice", 1, 2, [("hello", True), ("there", False)]))
    assert page.eval_on_selector("[data-role=lab-log]", "e => e.children.length") == 0
    page.evaluate(
        update, event("a", "Alice", 1, 3, [("hello", True), ("there", True)], kind="final")
    )
    assert (
        page.eval_on_selector("[data-role=lab-log]", "e => e.textContent") == "Alice: hello there"
    )
    # The page's own log region is polite and the overlay itself is hidden from screen readers.
    assert page.get_attribute("[data-testid=captions-log]", "aria-live") == "polite"
    assert page.get_attribute("[data-testid=captions]", "aria-hidden") == "true"


def test_malformed_events_are_ignored(page: Any) -> None:
    page.evaluate(OVERLAY_SETUP)
    for bad in [
        None,
        {"type": "caption"},
        {"type": "other"},
        {**event("a", "A", 1, 1, []), "kind": "x"},
    ]:
        assert page.evaluate("e => window.overlay.update(e)", bad) is False
    assert lines(page) == []


def test_transcript_orders_dedupes_searches_and_writes(page: Any) -> None:
    result = page.evaluate(
        """async (events) => {
          const m = await import('/static/transcript.js');
          const rule = await import('/static/cuerule.js');
          const tr = new m.Transcript();
          for (const e of events) tr.add(e);
          return {
            names: tr.entries.map(e => e.name),
            count: tr.entries.length,
            search: tr.search('BUDGET').map(e => e.text),
            accents: tr.search('cafe').map(e => e.text),
            vtt: rule.toVtt(tr.timeline()), srt: rule.toSrt(tr.timeline()),
            txt: rule.toTxt(tr.timeline()),
          };
        }""",
        [
            event(
                "b",
                "Bob",
                1,
                3,
                [("the", True), ("budget", True), ("is", True), ("fine", True)],
                kind="final",
                start=5.0,
            ),
            event(
                "a", "Alice", 1, 2, [("hello", True), ("everyone", True)], kind="final", start=1.0
            ),
            event(
                "a", "Alice", 1, 2, [("hello", True), ("everyone", True)], kind="final", start=1.0
            ),
            event("a", "Alice", 2, 1, [("partial", False)], start=9.0),
            event("a", "Alice", 3, 1, [("un", True), ("café", True)], kind="final", start=9.0),
        ],
    )
    assert result["names"] == ["Alice", "Bob", "Alice"]
    assert result["search"] == ["the budget is fine"]
    assert result["accents"] == ["un café"]
    vtt = result["vtt"]
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.700\n<v Alice>hello everyone</v>")
    assert "<v Bob>the budget is fine</v>" in vtt
    assert result["srt"].startswith("1\n00:00:00,000 --> 00:00:00,700\nAlice: hello everyone\n")
    assert result["txt"].splitlines()[1] == "[00:00:04.000 - 00:00:05.500] Bob: the budget is fine"


def test_page_writes_the_shared_cue_table(page: Any) -> None:
    """The page's writers (cuerule.js) give exactly the files captions/formats.py gives
    (tests/test_formats.py runs the same table)."""
    cases = json.loads((Path(__file__).parent / "cue_cases.json").read_text(encoding="utf-8"))
    written = page.evaluate(
        """async (cases) => {
          const rule = await import('/static/cuerule.js');
          return cases.map(c => ({vtt: rule.toVtt(c.finals), srt: rule.toSrt(c.finals),
                                  txt: rule.toTxt(c.finals)}));
        }""",
        cases["cases"],
    )
    assert len(written) == len(cases["cases"]) > 10
    for case, got in zip(cases["cases"], written, strict=True):
        for fmt in ("vtt", "srt", "txt"):
            assert got[fmt] == case[fmt], (case["name"], fmt)


@pytest.mark.parametrize(
    ("path_room", "token_kwargs", "code"),
    [
        ("lab", {"exp_in": -3600}, "token_expired"),
        ("other", {}, "wrong_room"),
        ("lab", None, "token_invalid"),
    ],
)
def test_bad_link_shows_error_screen(
    page: Any, base_url: str, path_room: str, token_kwargs: dict[str, Any] | None, code: str
) -> None:
    token = "not.a-token" if token_kwargs is None else fake_token("lab", **token_kwargs)
    page.goto(f"{base_url}/room/{path_room}#token={token}")
    page.reload()  # a new fragment alone does not reload the page
    page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
    assert page.is_hidden("[data-testid=join-screen]")
    assert page.get_attribute("[data-testid=error-message]", "data-code") == code
    assert len(page.inner_text("[data-testid=error-message]")) > 20


def test_french_interface_from_browser_language_with_switch(playwright: Any, base_url: str) -> None:
    with browser_page(playwright, locale="fr-FR") as fr:
        fr.goto(f"{base_url}/room/lab#token={fake_token('lab', exp_in=-3600)}")
        fr.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        assert fr.get_attribute("html", "lang") == "fr"
        assert "expiré" in fr.inner_text("[data-testid=error-message]")
        fr.click("[data-testid=language-switch]")
        assert fr.get_attribute("html", "lang") == "en"
        assert "expired" in fr.inner_text("[data-testid=error-message]")
        fr.reload()  # the choice is remembered
        fr.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        assert fr.get_attribute("html", "lang") == "en"


def test_viewer_settings_persist_and_apply(page: Any) -> None:
    applied = page.evaluate(
        """async () => {
          const s = await import('/static/settings.js');
          localStorage.setItem('captions.viewer-settings', JSON.stringify(
            {size: 'XL', preset: 'yellow-on-black', position: 'top', opacity: '0.5', bogus: 1}));
          const loaded = s.loadSettings();
          s.applySettings(loaded);
          localStorage.setItem('captions.viewer-settings', '{broken');
          const fallback = s.loadSettings();
          const root = document.documentElement;
          return {loaded, fallback, size: root.dataset.captionSize,
                  preset: root.dataset.captionPreset,
                  font: getComputedStyle(root).getPropertyValue('--caption-size').trim()};
        }"""
    )
    assert applied["loaded"] == {
        "size": "XL",
        "preset": "yellow-on-black",
        "position": "top",
        "opacity": "0.5",
        "readingSpeed": "normal",
        "captionsKey": "c",
        "announce": "on",
        "captionsVisible": True,
    }
    assert applied["fallback"]["size"] == "M"
    assert applied["font"] == "2.6rem"


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_caption_contrast_meets_wcag_aa_at_every_setting(page: Any) -> None:
    """Every preset x background opacity x text size: caption text, partial words and all
    eight speaker colours against the box as it is drawn over the page behind it, at
    WCAG 2.2 AA for the size shown (3:1 from 24 px, or 18.66 px bold; else 4.5:1)."""
    page.evaluate(OVERLAY_SETUP)
    update = "e => window.overlay.update(e)"
    page.evaluate(update, event("a", "Alice", 1, 1, [("final", True), ("partial", False)]))
    combos = page.evaluate(
        """async () => {
          const s = await import('/static/settings.js');
          const rgba = v => v.match(/[\\d.]+/g).map(Number);
          const box = document.querySelector('[data-testid=lab-captions]');
          const probe = document.createElement('span');
          probe.className = 'caption-speaker';
          box.append(probe);
          const still = document.createElement('style'); // colours, not transitions
          still.textContent = '* { transition: none !important; }';
          document.head.append(still);
          const out = [];
          for (const preset of s.CHOICES.preset) for (const opacity of s.CHOICES.opacity)
            for (const size of s.CHOICES.size) {
              s.applySettings({ ...s.DEFAULTS, preset, opacity, size });
              const colour = (el, value) => { if (value) el.style.color = value;
                                              return rgba(getComputedStyle(el).color); };
              const text = box.querySelector('.caption-text');
              const partial = box.querySelector('.w.partial');
              const speakers = [0, 1, 2, 3, 4, 5, 6, 7].map(i => colour(probe, `var(--spk-${i})`));
              const px = el => parseFloat(getComputedStyle(el).fontSize);
              const weight = el => Number(getComputedStyle(el).fontWeight);
              out.push({ preset, opacity, size, bg: rgba(getComputedStyle(box).backgroundColor),
                         page: rgba(getComputedStyle(document.body).backgroundColor),
                         fg: [[colour(text), px(text), weight(text)],
                              [colour(partial), px(partial), weight(partial)],
                              ...speakers.map(c => [c, px(probe), weight(probe)])] });
            }
          probe.remove();
          still.remove();
          s.applySettings(s.DEFAULTS);
          return out;
        }"""
    )
    assert len(combos) == 3 * 4 * 4
    failures = []
    for combo in combos:
        r, g, b, *alpha = combo["bg"]
        a = alpha[0] if alpha else 1.0
        drawn = tuple(
            round(a * c + (1 - a) * p) for c, p in zip((r, g, b), combo["page"][:3], strict=True)
        )
        for rgb, px, weight in combo["fg"]:
            large = px >= 24 or (px >= 18.66 and weight >= 700)
            ratio = contrast(tuple(rgb[:3]), drawn)
            if ratio < (3.0 if large else 4.5):
                failures.append((combo["preset"], combo["opacity"], combo["size"], rgb, ratio))
    assert not failures, failures


def test_every_interface_text_exists_in_english_and_french(page: Any) -> None:
    keys = page.evaluate(
        """async () => {
          const { STRINGS } = await import('/static/i18n.js');
          return { en: Object.keys(STRINGS.en), fr: Object.keys(STRINGS.fr),
                   used: [...document.querySelectorAll('[data-i18n], [data-i18n-label]')]
                     .map(e => e.dataset.i18n || e.dataset.i18nLabel) };
        }"""
    )
    assert sorted(keys["en"]) == sorted(keys["fr"])
    assert set(keys["used"]) <= set(keys["en"])


@pytest.mark.parametrize(("motion", "expected"), [("reduce", "0s"), ("no-preference", "0.15s")])
def test_reduced_motion_is_honoured(
    playwright: Any, base_url: str, motion: str, expected: str
) -> None:
    with browser_page(playwright, reduced_motion=motion) as page:
        page.goto(f"{base_url}/room/lab")
        page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        duration = page.evaluate(
            """() => { const tile = document.createElement('li');
                       tile.className = 'tile';
                       document.body.append(tile);
                       return getComputedStyle(tile).transitionDuration.split(',')[0]; }"""
        )
        assert duration == expected


VISIBLE_LINES = """() => {
  const box = document.querySelector('[data-testid=lab-captions]');
  const r = box.getBoundingClientRect();
  const pad = parseFloat(getComputedStyle(box).paddingTop);
  return [...box.querySelectorAll('.caption-line')].map(e => {
    const t = e.getBoundingClientRect();
    return { text: e.querySelector('.caption-text').textContent.slice(0, 3),
             startVisible: t.top >= r.top + pad - 1 && t.top < r.bottom,
             cutAtTop: t.top < r.top + pad - 1 && t.bottom > r.top + pad + 1 };
  });
}"""


def test_unread_finals_stay_and_the_box_scrolls_to_a_line_start(page: Any) -> None:
    page.evaluate(OVERLAY_SETUP)
    page.evaluate(
        "() => document.querySelector('[data-testid=lab-captions]').style.scrollBehavior = 'auto'"
    )
    update = "e => window.overlay.update(e)"
    page.evaluate(update, event("a", "Alice", 1, 1, [("short", True)], kind="final"))
    long_final = [(f"w{i}", True) for i in range(30)]
    page.evaluate(update, event("b", "Bob", 1, 1, long_final, kind="final"))
    page.evaluate(update, event("c", "Cy", 2, 1, [(f"x{i}", False) for i in range(40)]))
    # Nothing is read yet: every line stays, the box scrolls instead.
    assert [s["text"][:2] for s in lines(page)] == ["sh", "w0", "x0"]
    shown = page.evaluate(VISIBLE_LINES)
    assert not any(s["cutAtTop"] for s in shown), shown
    assert shown[0]["startVisible"]  # the oldest unread final anchors the box
    assert page.is_visible(".caption-more")  # newer text waits below
    # Alice's line is read (1.5 s + 1 word at 180 wpm): it may leave to make room.
    page.evaluate("() => { window.clock = 1900; window.overlay.expire(); }")
    assert [s["text"][:2] for s in lines(page)] == ["w0", "x0"]
    # Bob's 30 words need 11.5 s: still there at 11 s, gone at 12 s.
    page.evaluate("() => { window.clock = 11000; window.overlay.expire(); }")
    assert [s["text"][:2] for s in lines(page)] == ["w0", "x0"]
    page.evaluate("() => { window.clock = 12000; window.overlay.expire(); }")
    assert [(s["speaker"], s["text"][:2], s["continued"]) for s in lines(page)] == [
        ("Cy", "x0", False)
    ]


def test_reconnect_policy_backs_off_with_jitter_caps_and_resets(page: Any) -> None:
    """The one reconnect policy of the page (captions socket and meeting connection)."""
    result = page.evaluate(
        """async () => {
          const { ReconnectPolicy } = await import('/static/reconnect.js');
          const draws = (random, options) => {
            const p = new ReconnectPolicy({ baseMs: 500, maxMs: 4000, random, ...options });
            return Array.from({ length: 7 }, () => p.next());
          };
          const p = new ReconnectPolicy({ baseMs: 1000, maxMs: 10000, maxAttempts: 3,
                                          random: () => 0 });
          const limited = [p.next(), p.next(), p.next(), p.next()];
          p.reset();
          const afterReset = p.next();
          const spread = new Set(Array.from({ length: 50 }, () =>
            new ReconnectPolicy({ baseMs: 1000, maxMs: 1000 }).next()));
          let refused = false;
          try { new ReconnectPolicy({ baseMs: 0 }); }
          catch (e) { refused = e instanceof RangeError; }
          return { noJitter: draws(() => 0), fullDraw: draws(() => 1),
                   limited, afterReset, spread: [...spread], refused };
        }"""
    )
    assert result["noJitter"] == [500, 1000, 2000, 4000, 4000, 4000, 4000]
    assert result["fullDraw"] == [250, 500, 1000, 2000, 2000, 2000, 2000]  # jitter 0.5
    assert result["limited"] == [1000, 2000, 4000, None]
    assert result["afterReset"] == 1000
    assert len(result["spread"]) > 10 and all(500 <= d <= 1000 for d in result["spread"])
    assert result["refused"]


# Speakers talking over each other, on a simulated clock: each says 19-word utterances at
# 180 words a minute (a word every 330 ms), the next starting 1.7 s after the previous one.
SIMULATE = (Path(__file__).parent / "reading_time_sim.js").read_text(encoding="utf-8")


def talkers(n: int) -> list[dict[str, Any]]:
    names = ["Alice", "Bob", "Cy"]
    return [
        {
            "id": n_.lower(),
            "name": n_,
            "startMs": i * 1700,
            "words": 19,
            "wordMs": 330,
            "pauseMs": 600,
        }
        for i, n_ in enumerate(names[:n])
    ]


VIEWPORTS = pytest.mark.parametrize("viewport", [(390, 844), (1280, 720)], ids=["phone", "desktop"])


@pytest.mark.parametrize("speakers", [2, 3])
@VIEWPORTS
def test_reading_time_with_speakers_talking_over_each_other(
    page: Any, viewport: tuple[int, int], speakers: int
) -> None:
    """No final leaves before it was on screen for its reading time; no line is shown cut
    at the top (nameless); with two speakers a final shows at once."""
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    try:
        page.evaluate("() => { document.documentElement.dataset.captionSize = 'M'; }")
        page.evaluate(OVERLAY_SETUP)
        result = page.evaluate(
            SIMULATE, {"speakers": talkers(speakers), "stepMs": 100, "durationMs": 30000}
        )
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})
    assert result["removedEarly"] == 0, result
    assert result["cut"] == 0, result
    if speakers == 2:
        assert result["maxLagMs"] <= 500, result


def test_caption_language_and_unsupported_language_notice(page: Any) -> None:
    page.evaluate(OVERLAY_SETUP)
    update = "e => window.overlay.update(e)"
    ui = page.evaluate("async () => (await import('/static/i18n.js')).language()")
    assert ui == "en"
    french = {**event("a", "Amélie", 1, 1, [("bonjour", False)]), "language": "fr"}
    english = {**event("b", "Bob", 1, 1, [("hello", False)]), "language": "en"}
    assert page.evaluate(update, french) and page.evaluate(update, english)
    shown = page.eval_on_selector_all(
        "[data-testid=lab-captions] .caption-line",
        """els => els.map(e => ({lang: e.querySelector('.caption-text').lang,
              tag: e.querySelector('.caption-language:not([hidden])')?.textContent ?? null}))""",
    )
    # Words carry their language; a tag marks the one that is not the page's.
    assert shown == [{"lang": "fr", "tag": "FR"}, {"lang": "en", "tag": None}]
    # Speech the model cannot transcribe: a notice in the page's language, no words.
    flagged = {**event("c", "Chloé", 1, 1, []), "flags": {"unsupported_language": True}}
    assert page.evaluate(update, flagged)
    final = {**flagged, "revision": 2, "kind": "final"}
    assert page.evaluate(update, final)
    line = lines(page)[-1]
    assert line["speaker"] == "Chloé" and line["final"] == "true"
    assert "need another model" in line["text"]
    log = page.eval_on_selector("[data-role=lab-log]", "e => e.textContent")
    assert "Chloé: (speaking a language" in log


def test_page_state_changes_only_through_the_store(page: Any) -> None:
    """The meeting page's modules read the state with current() and change it only with
    store.js's named functions, which tell every subscriber which keys changed."""
    static = Path(__file__).resolve().parent.parent / "meeting" / "static"
    pokes = [
        f"{path.name}:{n}"
        for path in static.glob("*.js")
        if path.name != "store.js"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"current\(\)(\.\w+)+(\[[^\]]+\])?\s*(=(?!=)|\+=|-=|\+\+|--)", line)
    ]
    assert not pokes, pokes
    seen = page.evaluate(
        """async () => {
          const store = await import('/static/store.js');
          const seen = [];
          store.onChange((keys, state) => seen.push([[...keys], state.micMuted]));
          store.setMicMuted(true);
          store.setFeed({ socket: 'open' });
          const before = store.setRoomCaptions({ enabled: false });
          store.setMicMuted(false);
          return { seen, everOpen: store.current().feed.everOpen, before: before.enabled,
                   languages: store.current().roomCaptions.languages };
        }"""
    )
    assert seen["seen"] == [
        [["micMuted"], True],
        [["feed"], True],
        [["roomCaptions"], True],
        [["micMuted"], False],
    ]
    assert seen["everOpen"] is True and seen["before"] is True and seen["languages"] == []


TOOLBAR = """async () => {
  const { t } = await import('/static/i18n.js');
  // The meeting screen without a server: a host's toolbar (every button), each toggle
  // with the longer of its two labels, as toolbar.js and host.js fill them.
  for (const screen of document.querySelectorAll('main.screen')) {
    screen.hidden = screen.id !== 'meeting';
  }
  const bar = document.querySelector('.toolbar');
  for (const button of bar.querySelectorAll('button')) button.hidden = false;
  const longer = (...keys) => keys.map((key) => t(key)).sort((a, b) => b.length - a.length)[0];
  const label = (name, text) => {
    document.querySelector(`[data-role=${name}]`).textContent = text;
  };
  label('mute-label', longer('meeting.mute', 'meeting.unmute'));
  label('camera-label', longer('meeting.camera_on', 'meeting.camera_off'));
  label('room-captions-label', t('host.room_captions'));
  return {
    lang: document.documentElement.lang, width: innerWidth,
    pageOverflow: document.documentElement.scrollWidth - innerWidth,
    barOverflow: bar.scrollWidth - bar.clientWidth,
    buttons: [...bar.querySelectorAll('button')].map((b) => {
      const r = b.getBoundingClientRect();
      return { id: b.dataset.testid, top: r.top, left: r.left, right: r.right,
               text: b.innerText.trim(), label: b.getAttribute('aria-label') };
    }),
  };
}"""


@VIEWPORTS
@pytest.mark.parametrize("lang", ["en", "fr"])
def test_toolbar_one_row_on_desktop_every_button_in_sight_on_a_phone(
    playwright: Any, base_url: str, viewport: tuple[int, int], lang: str
) -> None:
    """A host's toolbar, in the language the browser asks for: on one row in a 1280x720
    window (French labels are longer), and on a phone every button inside the window
    (none hidden past the edge of a scrolling row); each keeps a name that contains its
    visible words."""
    with browser_page(
        playwright, locale={"en": "en-US", "fr": "fr-FR"}[lang], viewport=viewport
    ) as page:
        page.goto(f"{base_url}/room/lab")
        page.wait_for_selector("[data-testid=error-screen]:not([hidden])")
        bar = page.evaluate(TOOLBAR)
    buttons = bar["buttons"]
    assert bar["lang"] == lang and len(buttons) == 8
    for button in buttons:
        assert button["text"], button
        if button["label"]:  # the visible words are part of the name (WCAG 2.5.3)
            words = button["text"].lower()
            assert words in button["label"].lower(), button
    assert bar["pageOverflow"] <= 0 and bar["barOverflow"] <= 0, bar
    assert all(b["left"] >= 0 and b["right"] <= bar["width"] for b in buttons), bar
    if viewport == (1280, 720):
        tops = [b["top"] for b in buttons]
        assert max(tops) - min(tops) <= 2, buttons
