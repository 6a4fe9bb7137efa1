"""Display names: cleaned once, where they enter the SFU (token grants and ``join.name``).

A display name travels to every participant's page, to the captioning sidecar and into
stored transcripts, so it must be safe in all of them. :func:`clean_display_name` is the
one rule, applied by :class:`~sfu.tokens.Grants` (which every name passes through):

- invalid Unicode (lone surrogates, which JSON escapes can carry but UTF-8 cannot
  encode) becomes U+FFFD;
- the text is NFC-normalised (one spelling per visible name);
- control characters, line breaks and separators (Unicode Cc, Zl, Zp: CR, LF, TAB,
  NEL, U+2028, U+2029 ...) become spaces, so a name can never start a transcript line
  or cue; format characters (Cf: bidi overrides, zero-width spaces) are dropped except
  the zero-width (non-)joiners that emoji and several scripts need;
- runs of white space become one space and the ends are trimmed;
- what remains must be at most ``MAX_NAME_CHARS`` characters (longer is refused, not
  cut: the person sees why).
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_CHARS = 64
_SURROGATES = re.compile("[\ud800-\udfff]")
_KEPT_FORMAT = frozenset("\u200c\u200d")  # ZWNJ, ZWJ
_WHITE = re.compile(r"\s+")


def clean_display_name(raw: str) -> str:
    """The name as shown everywhere (see the module docstring); may be empty."""
    text = unicodedata.normalize("NFC", _SURROGATES.sub("\ufffd", raw))
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            out.append(" ")
        elif category != "Cf" or char in _KEPT_FORMAT:
            out.append(char)
    return _WHITE.sub(" ", "".join(out)).strip()
