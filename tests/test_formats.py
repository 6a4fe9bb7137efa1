import html
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import srt
import webvtt
from hypothesis import example, given
from hypothesis import strategies as st

from captions.events import CaptionEvent, Speaker, Word
from captions.formats import clean, cues, render, to_json, to_srt, to_txt, to_vtt
from common.exceptions import UnknownFormatError

ALICE = Speaker("a", "Alice")
BOB = Speaker("b", "Bob <the builder>")


def _event(
    speaker: Speaker,
    utterance: int,
    text: str,
    start: float,
    step: float = 0.4,
    kind: str = "final",
) -> CaptionEvent:
    words = tuple(
        Word(w, start + i * step, start + i * step + step * 0.8, kind == "final")
        for i, w in enumerate(text.split())
    )
    return CaptionEvent(speaker, utterance, 3, kind, words, emitted_at=start + 5)  # type: ignore[arg-type]


EVENTS = [
    _event(BOB, 0, "hello there & welcome", 2.0),
    _event(ALICE, 0, "good morning everyone", 0.5),
    _event(ALICE, 1, "this partial is superseded", 9.0, kind="partial"),
    _event(ALICE, 1, "this one is final", 9.0),
]


def test_vtt_parses_with_voices_in_time_order() -> None:
    text = to_vtt(EVENTS)
    parsed = webvtt.from_buffer(io.StringIO(text))
    assert [html.unescape(c.voice) for c in parsed] == ["Alice", "Bob <the builder>", "Alice"]
    assert [html.unescape(c.text) for c in parsed] == [
        "good morning everyone",
        "hello there & welcome",
        "this one is final",
    ]
    assert parsed[0].start == "00:00:00.500"
    assert "&amp;" in text  # the text is escaped for the cue payload
    assert "superseded" not in text


def test_srt_parses_with_speaker_prefix() -> None:
    parsed = list(srt.parse(to_srt(EVENTS)))
    assert [s.content for s in parsed] == [
        "Alice: good morning everyone",
        "Bob <the builder>: hello there & welcome",
        "Alice: this one is final",
    ]
    assert parsed[2].start.total_seconds() == pytest.approx(9.0)


def test_txt_has_times_and_names() -> None:
    lines = to_txt(EVENTS).splitlines()
    assert lines[0] == "[00:00:00.500 - 00:00:01.620] Alice: good morning everyone"
    assert len(lines) == 3


def test_json_round_trips_finals() -> None:
    data = json.loads(to_json(EVENTS))
    assert [CaptionEvent.from_json(d).text for d in data] == [
        "good morning everyone",
        "hello there & welcome",
        "this one is final",
    ]
    assert len(json.loads(to_json(EVENTS, finals_only=False))) == 4


def test_long_utterance_splits_into_readable_cues() -> None:
    text = " ".join(f"word{i}" for i in range(60))
    result = cues([_event(ALICE, 0, text, 0.0, step=0.3)])
    assert len(result) > 3
    assert " ".join(" ".join(c.lines) for c in result) == text
    for cue in result:
        assert len(cue.lines) <= 2
        assert all(len(line) <= 42 for line in cue.lines)
        assert cue.end - cue.start <= 7.0


def test_pause_starts_a_new_cue() -> None:
    words = (Word("before", 0.0, 0.5, True), Word("after", 4.0, 4.5, True))
    event = CaptionEvent(ALICE, 0, 1, "final", words, 5.0)
    assert [c.text for c in cues([event])] == ["before", "after"]


def test_render_unknown_format() -> None:
    assert render("srt", EVENTS) == to_srt(EVENTS)
    with pytest.raises(UnknownFormatError, match="docx"):
        render("docx", EVENTS)


@given(
    st.lists(st.text(min_size=1, max_size=30).filter(lambda s: s.strip() == s and s), max_size=30)
)
@example(["0", "0", "000000000", "000000000", "AA-AA00000000000000"])  # once split at "-"
def test_every_word_lands_in_a_cue(texts: list[str]) -> None:
    words = tuple(Word(t, i * 0.5, i * 0.5 + 0.4, True) for i, t in enumerate(texts))
    event = CaptionEvent(ALICE, 0, 1, "final", words, 0.0)
    joined = " ".join(c.text.replace("\n", " ") for c in cues([event]))
    assert joined.split() == " ".join(clean(t) for t in texts).split()
    assert_parses_back([event])


# ---- The one cue rule, shared with the page (meeting/static/cuerule.js) ----

CASES = json.loads((Path(__file__).parent / "cue_cases.json").read_text(encoding="utf-8"))["cases"]


def case_events(finals: list[dict[str, Any]]) -> list[CaptionEvent]:
    return [
        CaptionEvent(
            Speaker(f["speaker"], f["name"]),
            f["utterance"],
            1,
            "final",
            tuple(Word(w["text"], w["start"], w["end"], True) for w in f["words"]),
            0.0,
        )
        for f in finals
    ]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_cue_table(case: dict[str, Any]) -> None:
    """The same table runs in the page (tests/test_browser_page.py)."""
    events = case_events(case["finals"])
    assert to_vtt(events) == case["vtt"]
    assert to_srt(events) == case["srt"]
    assert to_txt(events) == case["txt"]
    assert_parses_back(events)


def assert_parses_back(events: list[CaptionEvent]) -> None:
    """What was written parses back with as many cues, each naming its own speaker:
    no name or word can forge a cue or a line, in a strict parser or a lenient one."""
    written = cues(events)
    names = [c.speaker.display_name for c in written]
    vtt = to_vtt(events)
    parsed = webvtt.from_buffer(io.StringIO(vtt))
    assert [html.unescape(c.voice or "") for c in parsed] == names
    srt_text = to_srt(events)
    subtitles = list(srt.parse(srt_text))
    assert len(subtitles) == len(names)
    for subtitle, name in zip(subtitles, names, strict=True):
        assert subtitle.content.startswith(re.sub("-{2,}>", "->", f"{name}: "))
    # Lenient players take any line holding "-->" for a timing line.
    assert sum("-->" in line for line in vtt.splitlines()) == len(written)
    assert sum("-->" in line for line in srt_text.splitlines()) == len(written)
    txt = to_txt(events).splitlines()
    assert len(txt) == len({(e.speaker.id, e.utterance) for e in events if clean(e.text)})


HOSTILE = st.text(alphabet=st.sampled_from(list("ab9:-> <&\r\n\t\u2028\u0085,0")), max_size=40)


@given(st.lists(st.tuples(HOSTILE, st.lists(HOSTILE, min_size=1, max_size=6)), max_size=4))
@example([("Eve\r\n\r\n9\r\n00:00:00,000 --> 00:00:30,000\r\nHost: I approve", ["hi"])])
@example([("--", ["0"])])  # a voice ending in "--" formed "-->" with the tag's ">"
def test_hostile_names_and_words_never_forge_cues(finals: list[tuple[str, list[str]]]) -> None:
    events = [
        CaptionEvent(
            Speaker(f"s{i}", name),
            0,
            1,
            "final",
            tuple(Word(t, i + j * 0.3, i + j * 0.3 + 0.2, True) for j, t in enumerate(texts)),
            0.0,
        )
        for i, (name, texts) in enumerate(finals)
    ]
    assert_parses_back(events)
