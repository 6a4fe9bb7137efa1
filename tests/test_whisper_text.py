"""Cleaning Whisper hypotheses (captions.engines.whisper.text): no model needed."""

from hypothesis import given
from hypothesis import strategies as st

from captions.engines.whisper.text import (
    compression_ratio,
    cut_echo,
    cut_loop,
    cut_repetition,
    cut_unheard,
    is_silent,
    merge_punctuation,
    not_before,
)
from captions.events import Word


def words(text: str) -> list[Word]:
    return [Word(w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(text.split())]


def texts(ws: list[Word]) -> str:
    return " ".join(w.text for w in ws)


def test_cuts_short_phrase_said_three_times() -> None:
    assert texts(cut_repetition(words("replied he replied he replied he replied"))) == "replied he"


def test_cuts_sentence_said_twice() -> None:
    looped = "ask what you can do. Ask what you can do. Ask what"
    assert texts(cut_repetition(words(looped))) == "ask what you can do."


def test_keeps_natural_repeats() -> None:
    for text in ("no no I mean it", "that that is fine", "very very good indeed"):
        assert texts(cut_repetition(words(text))) == text


def test_lone_punctuation_joins_its_word_in_stream_time() -> None:
    aligned = [
        {"word": " Hello", "start": 0.0, "end": 0.4},
        {"word": ",", "start": 0.4, "end": 0.4},
        {"word": " world", "start": 0.5, "end": 0.9},
        {"word": ".", "start": 0.9, "end": 1.0},
        {"word": " o", "start": 1.1, "end": 1.2},
        {"word": "'clock", "start": 1.2, "end": 1.5},
    ]
    merged = merge_punctuation(aligned, base=10.0)
    assert [(w.text, w.start, w.end) for w in merged] == [
        ("Hello,", 10.0, 10.4),
        ("world.", 10.5, 11.0),
        ("o'clock", 11.1, 11.5),
    ]


def test_keeps_a_phrase_really_said_twice() -> None:
    text = "some sung out tear down the fence tear down the fence"
    assert texts(cut_repetition(words(text))) == text


def test_cuts_a_repeat_without_audio_of_its_own() -> None:
    heard = words("but i swear i know not how to help it")
    echo = [Word(w.text, 3.0, 3.0) for w in words("but i swear i know not how to")]
    assert texts(cut_repetition(heard + echo)) == texts(heard)
    said = [Word("He", 2.5, 3.3), Word("said.", 3.3, 3.7)]
    assert texts(cut_repetition([*said, Word("He", 3.7, 3.7), Word("said.", 3.7, 3.7)])) == (
        "He said."
    )


def test_cut_loop_leaves_echoes_to_cut_echo() -> None:
    heard = words("it was late he said")
    echo = [Word("said.", 2.0, 2.0)]
    assert cut_loop(heard + echo) == heard + echo
    assert texts(cut_echo(heard + echo)) == texts(heard)


def test_cut_echo_keeps_silent_words_that_repeat_nothing() -> None:
    heard = words("it was late")
    new = [Word("tonight", 2.0, 2.0)]
    assert cut_echo(heard + new) == heard + new


def test_cut_unheard_cuts_before_two_words_without_audio() -> None:
    heard = words("we met on monday")
    made_up = [Word("and", 1.2, 1.2), Word("then", 1.2, 1.21)]
    later = [Word("tuesday", 1.3, 1.7)]
    assert cut_unheard(heard + made_up + later) == heard
    # One short word alone ("a") is real speech, not made up.
    single = [*heard, Word("a", 1.2, 1.21), *later]
    assert cut_unheard(single) == single


def test_silence_is_judged_on_every_word() -> None:
    assert is_silent([Word("a", 1.0, 1.0), Word("b", 1.0, 1.01)])
    assert not is_silent([Word("a", 1.0, 1.0), Word("b", 1.0, 1.3)])


def test_compression_ratio_flags_degenerate_repeats() -> None:
    normal = words("the quick brown fox jumps over the lazy dog near the river bank")
    looped = words(" ".join(["thank you so much"] * 12))
    assert compression_ratio(normal) < 2.4 < compression_ratio(looped)


_WORD = st.sampled_from(["the", "a", "fox", "dog", "ran", "said.", "He", "no"])


@given(st.lists(_WORD, max_size=14), st.lists(st.booleans(), min_size=14, max_size=14))
def test_cuts_only_ever_shorten_to_a_prefix(texts_: list[str], silent: list[bool]) -> None:
    """Every cleaning step keeps a prefix of the words: nothing reordered or invented."""
    ws = [Word(t, i * 0.3, i * 0.3 + (0.0 if silent[i] else 0.25)) for i, t in enumerate(texts_)]
    for cut in (cut_loop, cut_echo, cut_repetition, cut_unheard):
        out = cut(ws)
        assert out == ws[: len(out)]


@given(
    st.lists(st.tuples(st.floats(0, 5), st.floats(0, 2)), max_size=8),
    st.floats(0, 6),
)
def test_not_before_moves_only_starts_and_never_past_a_word_end(
    spans: list[tuple[float, float]], onset: float
) -> None:
    given_words = [Word(f"w{i}", start, start + length) for i, (start, length) in enumerate(spans)]
    moved = not_before(given_words, onset)
    assert [(w.text, w.end, w.final) for w in moved] == [
        (w.text, w.end, w.final) for w in given_words
    ]
    for before, after in zip(given_words, moved, strict=True):
        assert after.start == max(before.start, min(onset, before.end))
