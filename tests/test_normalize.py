from __future__ import annotations

import pytest

from evaluation.metrics import corpus_wer
from evaluation.normalize import normalize, normalized_words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # case and punctuation
        ("HE HOPED THERE WOULD BE STEW.", "he hoped there would be stew"),
        ("And so, my fellow Americans: ask not!", "and so my fellow americans ask not"),
        ("I am... what a thing..", "i am what a thing"),
        # hyphens
        ("a well-known e-mail", "a well known e mail"),
        # numbers, spelled out or in digits, end up the same
        ("twenty-five years", "25 years"),
        ("25 years", "25 years"),
        ("it costs three dollars", "it costs $3"),
        # contractions and titles
        ("I won't, it's fine", "i will not it is fine"),
        ("Mr. Quilter", "mister quilter"),
        # British -> American spelling
        ("the colour of the organised theatre", "the color of the organized theater"),
        # hesitations and bracketed notes
        ("um so [laughter] uh yes", "so yes"),
    ],
)
def test_english_normalisation(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_styles_that_differ_only_in_form_score_zero_wer() -> None:
    reference = normalize("THERE'S IRON THEY SAY IN ALL OUR BLOOD TWENTY FIVE TIMES")
    hypothesis = normalize("There is iron, they say, in all our blood: 25 times.")
    assert corpus_wer([reference], [hypothesis]) == 0.0


def test_other_languages_get_the_basic_normaliser() -> None:
    assert normalized_words("L'accident a eu lieu, en terrain montagneux.", "fr") == [
        "l",
        "accident",
        "a",
        "eu",
        "lieu",
        "en",
        "terrain",
        "montagneux",
    ]
    assert normalize("", "en") == ""


def test_corpus_wer_pools_words_and_skips_empty_references() -> None:
    # 1 error in 2 words + 1 error in 4 words = 2 / 6, not the mean of 1/2 and 1/4.
    assert corpus_wer(["a b", "c d e f", ""], ["a x", "c d e", "noise"]) == pytest.approx(
        2 / 6, abs=1e-4
    )
    assert corpus_wer([""], ["x"]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "L'accident a eu lieu, en terrain montagneux !",
            "l accident a eu lieu en terrain montagneux",
        ),
        ("Il a été causé par un incendie.", "il a été causé par un incendie"),
        ("tuant ainsi dix-sept personnes", "tuant ainsi 17 personnes"),
        ("tuant ainsi 17 personnes", "tuant ainsi 17 personnes"),
        ("avec cent pour cent de certitude", "avec 100 pour 100 de certitude"),
        ("avec 100 % de certitude", "avec 100 pour 100 de certitude"),
        ("allume la chambre à 80 %", "allume la chambre à 80 pour 100"),
        ("un homme et une femme", "un homme et une femme"),
    ],
)
def test_french_normalisation(text: str, expected: str) -> None:
    assert normalize(text, "fr") == expected
