"""A speaker's language under "auto", and an English-only model's foreign-speech verdict."""

from __future__ import annotations

from captions.engines.whisper.language import ForeignSpeech, SpeakerLanguage


def test_the_first_detection_sets_the_speaker_language() -> None:
    speaker = SpeakerLanguage()
    assert speaker.observe([("fr", 0.92), ("en", 0.05)]) == "fr"
    assert speaker.language == "fr" and speaker.confidence == 0.92


def test_a_later_utterance_switches_only_on_strong_evidence() -> None:
    speaker = SpeakerLanguage(switch_probability=0.8)
    speaker.observe([("fr", 0.9)])
    assert speaker.observe([("pt", 0.55), ("fr", 0.3)]) == "fr"  # a mumbled utterance
    assert speaker.observe([("en", 0.79)]) == "fr"
    assert speaker.observe([("en", 0.95)]) == "en"  # the speaker changed language
    assert speaker.observe([("fr", 0.6)]) == "en"


def test_a_weak_first_guess_gives_way_to_a_surer_one() -> None:
    speaker = SpeakerLanguage(switch_probability=0.8, settle_probability=0.5)
    speaker.observe([("es", 0.35), ("fr", 0.3)])
    assert speaker.observe([("fr", 0.6)]) == "fr"
    assert speaker.observe([("es", 0.7)]) == "fr"  # now settled: 0.7 is not enough


def test_foreign_speech_needs_enough_audio_and_looks() -> None:
    foreign = ForeignSpeech(max_logprob=-1.1, min_seconds=2.0, min_looks=3)
    assert not foreign.observe(-3.0, 1.0)  # too short: not counted
    assert not foreign.observe(-1.5, 2.0)
    assert not foreign.observe(-1.5, 2.5) and not foreign.settled
    assert foreign.observe(-1.5, 3.0)  # foreign: the utterance is withheld
    foreign.reset()
    for seconds in (2.0, 2.5, 3.0):
        verdict = foreign.observe(-0.4, seconds)  # English-like confidence
    assert not verdict and foreign.settled
    foreign.reset()
    for seconds in (2.0, 2.5, 3.0):
        verdict = foreign.observe(-1.0, seconds)  # grey zone: no verdict, nothing final yet
    assert not verdict and not foreign.settled


def test_the_last_look_judges_a_short_utterance() -> None:
    foreign = ForeignSpeech(max_final_logprob=-1.0, min_final_seconds=1.5)
    assert not foreign.observe(-1.6, 1.2, final=True)  # one word: too little to judge
    assert foreign.observe(-1.6, 1.6, final=True)
    foreign.reset()
    assert not foreign.observe(-0.6, 1.6, final=True)
