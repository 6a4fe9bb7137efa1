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

import difflib
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

    search_slack: int = 2
    """How far past the committed words' count a hypothesis is searched for them: the
    re-heard words sit at the same positions give or take a split or merged word, and a
    wider search lets a common last word ("the") match a later one and skip new words."""
    overlap_seconds: float = 0.1
    """When a hypothesis shares no word with the committed ones, its words starting this
    much before the last commit's end are taken as already committed."""
    max_prompt_words: int = 40
    hold_seconds: float = 0.0
    """Agreed words ending this close to ``audio_end`` wait: they may be truncated."""
    max_tentative_seconds: float | None = None
    """Commit words that ended this long before the audio's end even without agreement."""
    min_window_seconds: float = 0.0
    """Nothing of an utterance is committed before its audio spans this long: from a
    too-short window Whisper guesses the first words without their right context..."""
    early_agreement: int = 0
    """...unless this many consecutive hypotheses (at least 3) agree on them: the
    stricter agreement that lets an utterance's first words be final before the window
    (0: never)."""
    echo_seconds: float = 1.0
    """After a trim, leading hypothesis words that repeat the last committed words and
    start within this long of their end are the same speech heard again."""
    committed: list[Word] = field(default_factory=list)
    """Committed words still inside the audio buffer."""
    previous_text: list[str] = field(default_factory=list)
    """Committed words whose audio was trimmed away (kept for the prompt)."""
    _tail: list[Word] = field(default_factory=list)
    _last_commit_end: float = float("-inf")
    _early: list[list[Word]] = field(default_factory=list)
    """The latest hypotheses (uncommitted words) while inside the minimum window."""

    def reset(self, *, keep_prompt: bool = True) -> None:
        """Starts a new utterance; the committed text stays as context unless told not to."""
        text = [*self.previous_text, *(w.text for w in self.committed)] if keep_prompt else []
        self.previous_text = text[-self.max_prompt_words :]
        self.committed = []
        self._tail = []
        self._last_commit_end = float("-inf")
        self._early = []

    @property
    def tail(self) -> list[Word]:
        """The newest hypothesis' words that are not committed yet."""
        return list(self._tail)

    @property
    def prompt(self) -> str:
        """Committed text whose audio left the buffer (the words inside it are re-heard)."""
        return " ".join(self.previous_text[-self.max_prompt_words :])

    def insert(
        self,
        hypothesis: Sequence[Word],
        *,
        audio_end: float | None = None,
        utterance_start: float | None = None,
        early: bool = True,
    ) -> list[Word]:
        """Takes a new hypothesis of the buffer; returns the words it newly commits.

        With ``audio_end`` (the buffer's end, same clock as the words) and
        ``max_tentative_seconds`` set, a word that ended that long before the end of the
        audio is committed even without agreement, which bounds the finalisation delay
        when the recogniser keeps hesitating over one word. With ``utterance_start``,
        nothing is committed until ``min_window_seconds`` of the utterance were heard,
        except what ``early_agreement`` hypotheses in a row agree on (unless ``early`` is
        False).
        """
        new = self._strip_committed(hypothesis)
        if (
            audio_end is not None
            and utterance_start is not None
            and audio_end - utterance_start < self.min_window_seconds
        ):
            return self._insert_early(new, audio_end, allowed=early)
        self._early = []
        commit: list[Word] = []
        for old, word in zip(self._tail, new, strict=False):
            if normalise(old.text) != normalise(word.text):
                break
            if audio_end is not None and word.end > audio_end - self.hold_seconds:
                break  # may be cut off by the end of the audio heard so far
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

    def _insert_early(self, new: list[Word], audio_end: float, *, allowed: bool) -> list[Word]:
        """Inside the minimum window: commits what the last ``early_agreement``
        hypotheses all agree on (and that is not too close to the audio's end)."""
        self._early = [*self._early, new][-max(1, self.early_agreement) :]
        commit: list[Word] = []
        if allowed and self.early_agreement >= 3 and len(self._early) == self.early_agreement:
            for i, word in enumerate(new):
                keys = {normalise(h[i].text) if i < len(h) else None for h in self._early[:-1]}
                if keys != {normalise(word.text)} or word.end > audio_end - self.hold_seconds:
                    break
                commit.append(word)
        self._tail = new[len(commit) :]
        if commit:
            self.committed.extend(commit)
            self._last_commit_end = commit[-1].end
            # The agreed words leave every remembered hypothesis.
            self._early = [h[len(commit) :] for h in self._early]
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
        """The hypothesis without the committed words it hears again at its start.

        Matched by text, not by time: the last word of a hypothesis often gets an end
        time stretched to the end of the audio, so times alone would swallow new words.
        """
        if not self.committed:
            return self._strip_echo(hypothesis)
        committed = [normalise(w.text) for w in self.committed]
        heard = [normalise(w.text) for w in hypothesis[: len(committed) + self.search_slack]]
        matcher = difflib.SequenceMatcher(a=committed, b=heard, autojunk=False)
        blocks = [b for b in matcher.get_matching_blocks() if b.size]
        if blocks:
            last = blocks[-1]
            # Committed words after the last match were misheard this time: skip as many.
            unmatched = len(committed) - (last.a + last.size)
            return list(hypothesis[min(len(hypothesis), last.b + last.size + unmatched) :])
        # Nothing in common: fall back to time, keeping words after the last commit.
        return [w for w in hypothesis if w.start > self._last_commit_end - self.overlap_seconds]

    def _strip_echo(self, hypothesis: Sequence[Word]) -> list[Word]:
        """After a trim moved every committed word out of the buffer: drops what the new
        buffer hears again of them: leading words repeating the last committed ones that
        start right after them (the cut point is often inside the last word)."""
        words = list(hypothesis)
        if self._last_commit_end == float("-inf"):
            return words
        previous = [normalise(t) for t in self.previous_text]
        for size in range(min(3, len(previous), len(words)), 0, -1):
            heard = words[:size]
            if [normalise(w.text) for w in heard] == previous[-size:] and (
                heard[0].start < self._last_commit_end + self.echo_seconds
            ):
                return words[size:]
        return words
