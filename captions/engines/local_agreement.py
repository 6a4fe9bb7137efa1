"""LocalAgreement-2 streaming policy (Macháček et al., "Turning Whisper into Real-Time
Transcription System", 2023), sans-I/O.

The recogniser re-transcribes a growing audio buffer; each result is a *hypothesis*
(words with absolute times). A word becomes final once two consecutive hypotheses agree
on it as part of a common prefix after the words already committed. Committed text
serves as the recogniser's prompt, and when the audio buffer is trimmed the committed
words inside the trimmed part leave the comparison window.

Words are compared after normalisation (case and surrounding punctuation), since
Whisper often changes "dog" into "dog." once the sentence goes on; the newer spelling
is the one committed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from captions.events import Word

_NON_WORD = re.compile(r"[^\w']+")


def normalise(text: str) -> str:
    return _NON_WORD.sub("", text.lower())


@dataclass
class LocalAgreement:
    """Hypothesis buffer: committed words, the previous hypothesis' tail, the prompt."""

    max_ngram: int = 5
    """Longest run of words searched for at the start of a hypothesis to drop repeats."""
    overlap_seconds: float = 0.1
    """Hypothesis words starting this much before the last commit end are dropped."""
    max_prompt_words: int = 40
    max_tentative_seconds: float | None = None
    """Commit words that ended this long before the audio's end even without agreement."""
    committed: list[Word] = field(default_factory=list)
    """Committed words still inside the audio buffer."""
    previous_text: list[str] = field(default_factory=list)
    """Committed words whose audio was trimmed away (kept for the prompt)."""
    _tail: list[Word] = field(default_factory=list)
    _last_commit_end: float = float("-inf")

    def reset(self, *, keep_prompt: bool = True) -> None:
        """Starts a new utterance; the committed text stays as context unless told not to."""
        text = [*self.previous_text, *(w.text for w in self.committed)] if keep_prompt else []
        self.previous_text = text[-self.max_prompt_words :]
        self.committed = []
        self._tail = []
        self._last_commit_end = float("-inf")

    @property
    def tail(self) -> list[Word]:
        """The newest hypothesis' words that are not committed yet."""
        return list(self._tail)

    @property
    def prompt(self) -> str:
        """Committed text whose audio left the buffer (the words inside it are re-heard)."""
        return " ".join(self.previous_text[-self.max_prompt_words :])

    def insert(self, hypothesis: Sequence[Word], *, audio_end: float | None = None) -> list[Word]:
        """Takes a new hypothesis of the buffer; returns the words it newly commits.

        With ``audio_end`` (the buffer's end, same clock as the words) and
        ``max_tentative_seconds`` set, a word that ended that long before the end of the
        audio is committed even without agreement, which bounds the finalisation delay
        when the recogniser keeps hesitating over one word.
        """
        new = self._strip_committed(hypothesis)
        commit: list[Word] = []
        for old, word in zip(self._tail, new, strict=False):
            if normalise(old.text) != normalise(word.text):
                break
            commit.append(word)
        if audio_end is not None and self.max_tentative_seconds is not None:
            limit = audio_end - self.max_tentative_seconds
            while len(commit) < len(new) and new[len(commit)].end <= limit:
                commit.append(new[len(commit)])
        self._tail = new[len(commit) :]
        if commit:
            self.committed.extend(commit)
            self._last_commit_end = commit[-1].end
        return commit

    def finish(self, hypothesis: Sequence[Word] | None = None) -> list[Word]:
        """The utterance ended: everything not committed yet (of ``hypothesis`` if given)."""
        rest = self._strip_committed(hypothesis) if hypothesis is not None else self._tail
        self.committed.extend(rest)
        self._tail = []
        return list(rest)

    def trim(self, before: float) -> None:
        """The audio buffer now starts at ``before``: committed words ending by then move
        out of the comparison window into the prompt."""
        while self.committed and self.committed[0].end <= before:
            self.previous_text.append(self.committed.pop(0).text)
        self.previous_text = self.previous_text[-self.max_prompt_words :]

    def _strip_committed(self, hypothesis: Sequence[Word]) -> list[Word]:
        new = [w for w in hypothesis if w.start > self._last_commit_end - self.overlap_seconds]
        if new and self.committed and abs(new[0].start - self._last_commit_end) < 1.0:
            # The recogniser often repeats the last committed words at the start of the
            # window; drop the longest such repeat.
            for n in range(min(len(self.committed), len(new), self.max_ngram), 0, -1):
                tail = [normalise(w.text) for w in self.committed[-n:]]
                if tail == [normalise(w.text) for w in new[:n]]:
                    new = new[n:]
                    break
        return new
