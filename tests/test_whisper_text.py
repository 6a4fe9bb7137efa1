"""Pure helpers of the Whisper engine: loop cutting and punctuation merging (no model)."""

from captions.engines.whisper import _cut_repetition, _merge_punctuation
from captions.events import Word


def words(text: str) -> list[Word]:
    return [Word(w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(text.split())]


def texts(ws: list[Word]) -> str:
    return " ".join(w.text for w in ws)


def test_cuts_short_phrase_said_three_times() -> None:
    assert texts(_cut_repetition(words("replied he replied he replied he replied"))) == "replied he"


def test_cuts_sentence_said_twice() -> None:
    looped = "ask what you can do. Ask what you can do. Ask what"
    assert texts(_cut_repetition(words(looped))) == "ask what you can do."


def test_keeps_natural_repeats() -> None:
    for text in ("no no I mean it", "that that is fine", "very very good indeed"):
        assert texts(_cut_repetition(words(text))) == text


def test_lone_punctuation_joins_its_word_in_stream_time() -> None:
    aligned = [
        {"word": " Hello", "start": 0.0, "end": 0.4},
        {"word": ",", "start": 0.4, "end": 0.4},
        {"word": " world", "start": 0.5, "end": 0.9},
        {"word": ".", "start": 0.9, "end": 1.0},
        {"word": " o", "start": 1.1, "end": 1.2},
        {"word": "'clock", "start": 1.2, "end": 1.5},
    ]
    merged = _merge_punctuation(aligned, base=10.0)
    assert [(w.text, w.start, w.end) for w in merged] == [
        ("Hello,", 10.0, 10.4),
        ("world.", 10.5, 11.0),
        ("o'clock", 11.1, 11.5),
    ]


def test_keeps_a_phrase_really_said_twice() -> None:
    text = "some sung out tear down the fence tear down the fence"
    assert texts(_cut_repetition(words(text))) == text


def test_cuts_a_repeat_without_audio_of_its_own() -> None:
    heard = words("but i swear i know not how to help it")
    echo = [Word(w.text, 3.0, 3.0) for w in words("but i swear i know not how to")]
    assert texts(_cut_repetition(heard + echo)) == texts(heard)
    said = [Word("He", 2.5, 3.3), Word("said.", 3.3, 3.7)]
    assert texts(_cut_repetition([*said, Word("He", 3.7, 3.7), Word("said.", 3.7, 3.7)])) == (
        "He said."
    )
