"""Text normalisation before scoring, so WER counts recognition errors, not style.

English uses the normaliser of the Whisper paper (appendix C), as packaged offline by
``whisper-normalizer`` (``EnglishTextNormalizer``; its spelling table ships inside the
package, nothing is downloaded). It:

- lower-cases, and removes punctuation and symbols (keeping ``'`` where it matters,
  decimal points and currency signs next to digits);
- splits hyphenated words (``well-known`` -> ``well known``);
- writes numbers as digits (``twenty-five`` -> ``25``, ``two point five`` -> ``2.5``);
- expands common contractions (``won't`` -> ``will not``, ``it's`` -> ``it is``) and
  titles (``Mr.`` -> ``mister``);
- maps British spellings to American (``colour`` -> ``color``, ``organise`` -> ``organize``);
- drops hesitations (``um``, ``uh``, ``hmm``) and text in brackets or parentheses.

Tokens left without any letter or digit (the packaged normaliser keeps a lone ``.`` from
an ellipsis, for instance) are dropped.

Other languages get the paper's basic normaliser (lower case, no punctuation or symbols,
no bracketed text), which is language-neutral; accents are kept (``été`` is not ``ete``)
and apostrophes split words (``l'accident`` -> ``l accident``) on both sides alike.
Before it, for the languages ``text2num`` knows (French, Spanish, Portuguese, German,
Dutch, Danish, Italian), numbers written in words become digits (``dix-sept`` -> ``17``,
``cent pour cent`` -> ``100 pour 100``), as the English normaliser does, and ``%`` is read
as the words for per cent in French (``80 %`` -> ``80 pour 100``): a reference that spells
a number and a hypothesis that writes digits then agree.
"""

from __future__ import annotations

from functools import cache

from text_to_num import alpha2digit
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer


@cache
def _english() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


@cache
def _basic() -> BasicTextNormalizer:
    return BasicTextNormalizer()


_NUMBERS_IN_WORDS = {"fr", "es", "pt", "de", "nl", "da", "it"}
"""Languages whose spelled-out numbers ``text2num`` turns into digits."""


def normalize(text: str, language: str = "en") -> str:
    """Normalised text: space-separated lower-case words, no punctuation."""
    code = language.lower()[:2]
    if code == "en":
        normalized = _english()(text)
    else:
        if code == "fr":
            text = text.replace("%", " pour cent")
        if code in _NUMBERS_IN_WORDS:
            text = alpha2digit(text, code)
        normalized = _basic()(text)
    return " ".join(t for t in normalized.split() if any(c.isalnum() for c in t))


def normalized_words(text: str, language: str = "en") -> list[str]:
    return normalize(text, language).split()
