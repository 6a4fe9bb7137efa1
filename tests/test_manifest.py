from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.exceptions import ManifestError
from evaluation.manifest import check_audio_files, parse_line, read_manifest

SOURCE = Path("/data/set/manifest.jsonl")


def line(**fields: object) -> str:
    return json.dumps({"id": "a", "audio": "audio/a.wav", "text": "hello world", **fields})


def test_whole_file_item_resolves_audio_next_to_the_manifest() -> None:
    item = parse_line(line(speaker=61, language="en"), source=SOURCE, line_no=1)
    assert item.audio == Path("/data/set/audio/a.wav")
    assert (item.id, item.text, item.speaker, item.language) == ("a", "hello world", "61", "en")
    assert (item.start, item.end, item.channel, item.words) == (None, None, None, None)


def test_segment_channel_and_word_times_relative_to_the_segment() -> None:
    words = [
        {"word": "hello", "start": 1.5, "end": 1.9},
        {"word": "world", "start": 2.0, "end": 2.4},
    ]
    item = parse_line(
        line(start=1.0, end=3.0, channel=1, words=words, license="CC-BY-4.0"),
        source=SOURCE,
        line_no=3,
    )
    assert (item.start, item.end, item.channel) == (1.0, 3.0, 1)
    assert item.words is not None
    assert [(w.word, w.start, w.end) for w in item.words] == [
        ("hello", 0.5, pytest.approx(0.9)),
        ("world", 1.0, pytest.approx(1.4)),
    ]
    assert item.extra == {"license": "CC-BY-4.0"}
    assert item.line == 3


def test_word_times_in_start_sec_form_and_untimed_words() -> None:
    timed = parse_line(
        line(words=[{"word": "Mr", "start_sec": 0.54, "end_sec": 0.8}]), source=SOURCE, line_no=1
    )
    assert timed.words is not None and timed.words[0].end == 0.8
    tagged = parse_line(line(words=[{"word": "and", "speaker_tag": 1}]), source=SOURCE, line_no=1)
    assert tagged.words is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"audio": "a.wav", "text": "x"}), "missing or empty 'id'"),
        (json.dumps({"id": "a", "text": "x"}), "missing or empty 'audio'"),
        (json.dumps({"id": "a", "audio": "a.wav"}), "'text' must be a string"),
        (line(start=2.0, end=1.0), "must be after 'start'"),
        (line(start=-1), "non-negative"),
        (line(end="soon"), "number of seconds"),
        ('{"id": "a", "audio": "a", "text": "", "start": 1' + "0" * 400 + "}", "finite"),
        (line(channel=-1), "'channel'"),
        (line(channel=True), "'channel'"),
        (line(words=[{"word": "x", "start": 2, "end": 1}]), "ends before it starts"),
        (line(words="hello"), "'words' must be a list"),
    ],
)
def test_bad_lines_name_file_and_line(text: str, problem: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_line(text, source=SOURCE, line_no=7)
    assert str(err.value).startswith(f"{SOURCE}:7: ")
    assert problem in str(err.value)


def test_read_manifest_skips_blanks_and_comments_and_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(f"# comment\n{line()}\n\n{line(id='b')}\n{{oops\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:5: not a JSON object"):
        read_manifest(path)
    path.write_text(f"{line()}\n\n{line(id='b')}\n")
    assert [i.id for i in read_manifest(path)] == ["a", "b"]


def test_duplicate_ids_missing_files_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(f"{line()}\n{line()}\n")
    with pytest.raises(ManifestError, match=r":2: duplicate id 'a' \(first on line 1\)"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path / "absent.jsonl")
    path.write_bytes(line().encode() + b"\n\xff\xfe\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not UTF-8"):
        read_manifest(path)
    path.write_text(f"{line()}\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: audio file .*a\.wav not found"):
        check_audio_files(read_manifest(path), source=path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["id", "audio", "text", "speaker", "language", "start", "end", "channel", "words"]
)
word_entries = st.lists(
    st.dictionaries(st.sampled_from(["word", "start", "end", "start_sec", "end_sec"]), json_values),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.dictionaries(field_names, json_values | word_entries, max_size=9).map(json.dumps),
        st.builds(
            lambda extra: line(**extra),
            st.dictionaries(field_names, json_values | word_entries, max_size=4),
        ),
    )
)
def test_fuzzed_lines_raise_only_manifest_error(text: str) -> None:
    try:
        item = parse_line(text, source=SOURCE, line_no=1)
    except ManifestError as exc:
        assert str(exc).startswith(f"{SOURCE}:1: ")
    else:
        assert item.id and isinstance(item.text, str)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_files_raise_only_manifest_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "m.jsonl"
    path.write_bytes(data)
    with contextlib.suppress(ManifestError):
        read_manifest(path)
