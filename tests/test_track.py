from hypothesis import given
from hypothesis import strategies as st

from captions.clock import VirtualClock
from captions.events import CaptionEvent, Speaker, Word
from captions.track import CaptionTrack
from common.exceptions import MalformedMessageError


def _words(texts: list[str], t0: float = 0.0) -> list[Word]:
    return [Word(t, t0 + i * 0.3, t0 + i * 0.3 + 0.25) for i, t in enumerate(texts)]


def test_final_words_never_change_and_revisions_count_up() -> None:
    track = CaptionTrack(Speaker("a", "Alice"), VirtualClock())
    track.update(tail=_words(["hello", "word"]))
    track.update(commit=_words(["hello"]), tail=_words(["world", "again"], 0.3))
    track.update(tail=_words(["world", "again", "now"], 0.3))
    track.end_utterance()
    events = track.take_events()
    assert [e.revision for e in events] == [1, 2, 3, 4]
    assert [e.kind for e in events] == ["partial", "partial", "partial", "final"]
    assert events[-1].text == "hello world again now"
    assert all(w.final for w in events[-1].words)
    finals_so_far: tuple[Word, ...] = ()
    for event in events:
        assert event.words[: len(finals_so_far)] == finals_so_far
        finals_so_far = event.final_words


def test_utterances_are_numbered_and_empty_ones_are_silent() -> None:
    track = CaptionTrack(Speaker("a"), VirtualClock())
    track.end_utterance()
    assert track.take_events() == []
    track.update(tail=_words(["hi"]))
    track.end_utterance()
    events = track.take_events()
    assert {e.utterance for e in events} == {1}


@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
            st.lists(st.sampled_from(["x", "y"]), max_size=3),
        ),
        max_size=8,
    )
)
def test_invariants_hold_for_any_update_sequence(
    updates: list[tuple[list[str], list[str]]],
) -> None:
    track = CaptionTrack(Speaker("s"), VirtualClock())
    for commit, tail in updates:
        track.update(commit=_words(commit), tail=_words(tail))
    track.end_utterance()
    stable: tuple[Word, ...] = ()
    for event in track.take_events():
        assert event.words[: len(stable)] == stable
        assert all(w.final for w in event.words[: len(event.final_words)])
        stable = event.final_words


def test_json_round_trip_and_rejection() -> None:
    track = CaptionTrack(Speaker("a", "Alice"), VirtualClock(12.5))
    track.update(commit=_words(["hello"]))
    event = track.take_events()[0]
    data = event.to_json()
    assert data["speaker_name"] == "Alice" and data["text"] == "hello"
    assert CaptionEvent.from_json(data) == event
    for bad in [None, {}, {"type": "caption"}, {**data, "kind": "maybe"}, {**data, "words": 3}]:
        try:
            CaptionEvent.from_json(bad)
        except MalformedMessageError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_events_carry_the_utterance_language() -> None:
    track = CaptionTrack(Speaker("a", "Amélie"), VirtualClock(0.0))
    track.language = "fr"
    track.update(tail=_words(["bonjour"]))
    track.end_utterance()
    events = track.take_events()
    assert [e.language for e in events] == ["fr", "fr"]
    data = events[-1].to_json()
    assert data["language"] == "fr"
    assert CaptionEvent.from_json(data) == events[-1]
    track.language = None
    track.update(tail=_words(["hm"]))
    assert "language" not in track.take_events()[0].to_json()


def test_an_unsupported_language_withdraws_the_guesses_and_says_so() -> None:
    track = CaptionTrack(Speaker("a"), VirtualClock(0.0))
    track.update(tail=_words(["I", "will", "let", "you", "know"]))
    track.mark_unsupported_language()
    track.mark_unsupported_language()  # once per utterance
    track.update(tail=_words(["more", "nonsense"]))  # ignored from now on
    assert track.is_open
    track.end_utterance(tail=_words(["nonsense"]))
    partial, final = track.take_events()[1:]
    for event in (partial, final):
        assert event.words == () and event.flags == {"unsupported_language": True}
    assert (partial.kind, final.kind) == ("partial", "final")
    # The next utterance is judged afresh.
    track.update(tail=_words(["hello"]))
    (event,) = track.take_events()
    assert event.utterance == final.utterance + 1 and not event.flags
