from hypothesis import given
from hypothesis import strategies as st

from captions.engines.local_agreement import LocalAgreement
from captions.events import Word


def hyp(text: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    return [Word(w, start + i * step, start + i * step + 0.4) for i, w in enumerate(text.split())]


def texts(words: list[Word]) -> list[str]:
    return [w.text for w in words]


def test_commits_prefix_agreed_by_two_consecutive_hypotheses() -> None:
    la = LocalAgreement()
    assert la.insert(hyp("the quick")) == []
    assert texts(la.tail) == ["the", "quick"]
    assert texts(la.insert(hyp("the quick brown"))) == ["the", "quick"]
    assert texts(la.tail) == ["brown"]
    # A disagreement stops the commit at the first differing word.
    assert texts(la.insert(hyp("the quick crown fox"))) == []
    assert texts(la.insert(hyp("the quick crown fox jumps"))) == ["crown", "fox"]
    assert texts(la.committed) == ["the", "quick", "crown", "fox"]


def test_agreement_ignores_case_and_punctuation_and_keeps_newest_spelling() -> None:
    la = LocalAgreement()
    la.insert(hyp("hello world"))
    assert texts(la.insert(hyp("Hello, world. Next"))) == ["Hello,", "world."]


def test_repeated_committed_words_at_window_start_are_dropped() -> None:
    la = LocalAgreement()
    la.insert(hyp("a b c"))
    la.insert(hyp("a b c d"))  # commits a b c (ends at 1.4)
    # After trimming, the recogniser re-hears "c" slightly after the commit end.
    repeat = [Word("c", 1.35, 1.45), Word("d", 1.5, 1.9), Word("e", 2.0, 2.4)]
    assert texts(la.insert(repeat)) == ["d"]
    assert texts(la.tail) == ["e"]


def test_finish_commits_the_rest_and_prompt_carries_context() -> None:
    la = LocalAgreement()
    la.insert(hyp("one two"))
    la.insert(hyp("one two three"))
    assert la.prompt == ""  # committed words still in the buffer are re-heard, not prompted
    assert texts(la.finish(hyp("one two three four"))) == ["three", "four"]
    la.reset()
    assert la.committed == [] and la.tail == []
    assert la.prompt == "one two three four"
    la.reset(keep_prompt=False)
    assert la.prompt == ""


def test_trim_moves_committed_words_into_prompt() -> None:
    la = LocalAgreement(max_prompt_words=3)
    la.insert(hyp("a b c d"))
    la.insert(hyp("a b c d e"))
    la.trim(1.0)  # a (0-0.4) and b (0.5-0.9) leave the window
    assert texts(la.committed) == ["c", "d"]
    assert la.previous_text == ["a", "b"]
    assert la.prompt == "a b"
    la.reset()
    assert la.prompt == "b c d"  # the uncommitted "e" is not context


@given(st.lists(st.lists(st.sampled_from("abcd"), max_size=8), min_size=1, max_size=12))
def test_committed_words_only_ever_grow(hypotheses: list[list[str]]) -> None:
    la = LocalAgreement()
    seen: list[str] = []
    for h in hypotheses:
        commit = la.insert(hyp(" ".join(h)))
        seen.extend(texts(commit))
        assert texts(la.committed) == seen
    seen.extend(texts(la.finish()))
    assert texts(la.committed) == seen


def test_max_tentative_seconds_bounds_the_finalisation_delay() -> None:
    la = LocalAgreement(max_tentative_seconds=2.0)
    la.insert(hyp("we met on monday"), audio_end=2.0)
    # "met" flips every time, which would block everything after it.
    assert texts(la.insert(hyp("we mat on monday at", step=0.5), audio_end=2.5)) == ["we"]
    commit = la.insert(hyp("we mit on monday at noon today", step=0.5), audio_end=4.0)
    # Words ending by 4.0 - 2.0 = 2.0 s are committed in the newest spelling.
    assert texts(commit) == ["mit", "on", "monday"]
    assert texts(la.tail) == ["at", "noon", "today"]


def test_stretched_end_time_of_last_commit_does_not_swallow_new_words() -> None:
    la = LocalAgreement()
    stretched = [Word("lazy", 0.0, 0.4), Word("dog.", 0.5, 3.4)]  # end stretched to the buffer end
    la.insert(stretched)
    la.insert(stretched)
    assert texts(la.committed) == ["lazy", "dog."]
    later = [Word("lazy", 0.0, 0.4), Word("dog", 0.5, 0.9), Word("near", 1.0, 1.3)]
    later += [Word("the", 1.3, 1.5), Word("bank.", 1.5, 3.6)]
    assert texts(la.finish(later)) == ["near", "the", "bank."]


def test_misheard_committed_word_is_still_skipped() -> None:
    la = LocalAgreement()
    la.insert(hyp("we met today"))
    la.insert(hyp("we met today at"))
    assert texts(la.finish(hyp("we mat today at noon"))) == ["at", "noon"]


def test_common_last_word_does_not_skip_new_words() -> None:
    la = LocalAgreement()
    la.insert(hyp("the cut in the"))
    la.insert(hyp("the cut in the"))
    assert texts(la.committed) == ["the", "cut", "in", "the"]
    heard = hyp("the gut and the gut of the gut being cut across")
    assert texts(la.finish(heard)) == ["gut", "of", "the", "gut", "being", "cut", "across"]


def test_agreed_word_at_the_very_end_of_the_audio_waits() -> None:
    la = LocalAgreement(hold_seconds=0.3)
    la.insert(hyp("lips and mouse"), audio_end=1.5)
    # "mouse" ends at 1.4, within 0.3 s of the audio's end: it may be a cut-off "mouth".
    assert texts(la.insert(hyp("lips and mouse"), audio_end=1.5)) == ["lips", "and"]
    assert texts(la.insert(hyp("lips and mouth"), audio_end=2.5)) == []
    assert texts(la.insert(hyp("lips and mouth"), audio_end=2.5)) == ["mouth"]


def test_nothing_is_committed_before_the_minimum_window() -> None:
    la = LocalAgreement(min_window_seconds=1.5)
    assert la.insert(hyp("later to"), audio_end=1.0, utterance_start=0.0) == []
    # Agreement alone is not enough while the utterance is shorter than the window.
    assert la.insert(hyp("later to"), audio_end=1.4, utterance_start=0.0) == []
    assert texts(la.tail) == ["later", "to"]
    # The longer window corrects the guess; agreement then commits as usual.
    la.insert(hyp("the later traditions"), audio_end=1.8, utterance_start=0.0)
    commit = la.insert(hyp("the later traditions tend"), audio_end=2.3, utterance_start=0.0)
    assert texts(commit) == ["the", "later", "traditions"]


def test_three_agreeing_hypotheses_commit_before_the_minimum_window() -> None:
    la = LocalAgreement(min_window_seconds=2.5, early_agreement=3)
    assert la.insert(hyp("the later"), audio_end=1.0, utterance_start=0.0) == []
    assert la.insert(hyp("the later to"), audio_end=1.5, utterance_start=0.0) == []
    # Three in a row agree on "the later"; "to" was heard twice only.
    commit = la.insert(hyp("the later traditions"), audio_end=2.0, utterance_start=0.0)
    assert texts(commit) == ["the", "later"] and texts(la.tail) == ["traditions"]
    # A disagreeing hypothesis commits nothing; two more agreeing ones do.
    assert la.insert(hyp("the later tradition tend"), audio_end=2.2, utterance_start=0.0) == []
    la.insert(hyp("the later traditions tend"), audio_end=2.3, utterance_start=0.0)
    assert la.insert(hyp("the later traditions tend to"), audio_end=2.4, utterance_start=0.0) == []
    commit = la.insert(hyp("the later traditions tend to be"), audio_end=3.0, utterance_start=0.0)
    assert texts(la.committed)[:3] == ["the", "later", "traditions"]


def test_words_reheard_after_a_trim_are_not_committed_twice() -> None:
    la = LocalAgreement()
    la.insert(hyp("i know not how to"))
    la.insert(hyp("i know not how to help"))  # commits up to "to" (ends at 2.4)
    la.trim(2.4)  # every committed word leaves the buffer
    assert la.committed == []
    # The new buffer starts inside "to": the recogniser hears it again, then new words.
    again = [Word("to", 2.4, 2.5), Word("help", 2.5, 2.9), Word("it", 3.0, 3.3)]
    assert texts(la.insert(again)) == ["help"]  # agreed with the previous tail
    assert texts(la.tail) == ["it"]
    assert texts(la.finish(again)) == ["it"]
    assert la.previous_text + texts(la.committed) == ["i", "know", "not", "how", "to", "help", "it"]


def test_a_repeated_word_long_after_the_trim_is_new_speech() -> None:
    la = LocalAgreement()
    la.insert(hyp("he said"))
    la.insert(hyp("he said"))
    la.trim(1.0)
    later = [Word("he", 2.5, 2.7), Word("said", 2.8, 3.1)]
    assert texts(la.finish(later)) == ["he", "said"]
