"""An utterance's last look (captions.engines.whisper.utterances.Utterances.close) keeps
what the steps heard at its end: the beam-search look at the utterance sometimes drops a
quiet last word that the greedy steps had ("...can never be [known]"). No model needed:
the transcriber is a stand-in that returns a given hypothesis."""

from dataclasses import dataclass, field

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from captions.clock import VirtualClock
from captions.costs import StepCosts
from captions.engine import AudioInbox
from captions.engines.whisper.session import Hypothesis, WhisperSession
from captions.engines.whisper.settings import WhisperSettings
from captions.engines.whisper.text import with_trailing_words
from captions.engines.whisper.utterances import Utterances
from captions.events import Speaker, Word
from captions.track import CaptionTrack
from captions.vad import SAMPLE_RATE


def timed(*spans: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end) for text, start, end in spans]


STEP_HEARD = timed(
    ("can", 4.38, 4.68), ("never", 4.68, 4.90), ("be", 4.90, 5.06), ("known.", 5.06, 5.42)
)


def test_a_word_after_the_last_looks_last_word_is_kept() -> None:
    last_look = STEP_HEARD[:3]
    assert with_trailing_words(last_look, STEP_HEARD, before=5.58) == STEP_HEARD


def test_words_starting_after_the_utterance_end_are_not_kept() -> None:
    # "known." starts after the end: the VAD put it in the silence, so it is not speech of
    # this utterance (nor of the next, which starts after that silence).
    assert with_trailing_words(STEP_HEARD[:3], STEP_HEARD, before=5.0) == STEP_HEARD[:3]


def test_the_last_word_is_found_where_it_was_said_not_at_an_earlier_repeat() -> None:
    step = timed(
        ("the", 0.0, 0.2),
        ("cat", 0.2, 0.5),
        ("saw", 0.5, 0.8),
        ("the", 0.8, 1.0),
        ("dog.", 1.0, 1.4),
    )
    assert with_trailing_words(step[:4], step, before=2.0) == step
    # Only the first "the" is in the last look: nothing the steps heard is appended twice.
    assert with_trailing_words(step[:1], step[2:], before=2.0) == step[:1]


def test_a_word_that_repeats_the_last_one_is_an_echo_and_not_kept() -> None:
    step = timed(("Anuli", 0.24, 1.06), ("Annuli", 1.06, 1.48))
    assert with_trailing_words(step[:1], step, before=1.45) == step[:1]


def test_a_last_look_that_says_something_else_at_its_end_is_left_as_it_is() -> None:
    last_look = timed(("can", 4.38, 4.68), ("never", 4.68, 4.90), ("go.", 4.90, 5.3))
    assert with_trailing_words(last_look, STEP_HEARD, before=5.58) == last_look
    assert with_trailing_words([], STEP_HEARD, before=5.58) == []


_WORD = st.sampled_from(["the", "a", "fox", "dog.", "ran", "no"])


@given(
    st.lists(_WORD, max_size=10),
    st.lists(_WORD, max_size=10),
    st.floats(0, 4),
)
def test_only_ever_appends_the_steps_next_words_said_before_the_end(
    look_texts: list[str], step_texts: list[str], before: float
) -> None:
    look = [Word(t, i * 0.3, i * 0.3 + 0.25) for i, t in enumerate(look_texts)]
    step = [Word(t, i * 0.3, i * 0.3 + 0.25) for i, t in enumerate(step_texts)]
    kept = with_trailing_words(look, step, before=before)
    assert kept[: len(look)] == look
    added = kept[len(look) :]
    assert all(w.start < before for w in added)
    if added:
        # Contiguous words of the step's, right after the look's last word.
        first = step.index(added[0])
        assert step[first : first + len(added)] == added
        assert step[first - 1].text == look[-1].text


@dataclass
class _Decoder:
    multilingual: bool = True


@dataclass
class _LastLook:
    """Stands in for the BatchTranscriber: every transcription returns ``hypothesis``."""

    hypothesis: Hypothesis
    decoder: _Decoder = field(default_factory=_Decoder)

    def transcribe(self, *args: object, **kwargs: object) -> Hypothesis:
        return self.hypothesis


def _closed_utterance(settings: WhisperSettings) -> list[str]:
    transcriber = _LastLook(Hypothesis(STEP_HEARD[:3], "en", logprob=-0.2))
    utterances = Utterances(settings, transcriber, StepCosts())  # type: ignore[arg-type]
    session = WhisperSession(
        track=CaptionTrack(Speaker("s"), VirtualClock()), inbox=AudioInbox(SAMPLE_RATE)
    )
    session.audio = np.zeros(round(5.9 * SAMPLE_RATE), dtype=np.float32)
    session.active = True
    session.last_hypothesis = (0, round(5.82 * SAMPLE_RATE), Hypothesis(STEP_HEARD, "en"))
    utterances.close(session, round(5.58 * SAMPLE_RATE))
    [event] = session.track.take_events()
    assert event.kind == "final"
    return [w.text for w in event.words]


def test_the_utterance_closes_with_the_word_only_the_steps_heard() -> None:
    assert _closed_utterance(WhisperSettings()) == ["can", "never", "be", "known."]
    assert _closed_utterance(WhisperSettings(keep_trailing_words=0)) == ["can", "never", "be"]
