"""Partial transcripts that never take back a word: LocalAgreement-2 (as in ufal/whisper_streaming).

Each partial re-transcribes the whole utterance so far; a word is released only once two consecutive
hypotheses agree on it and on everything before it. Released text is append-only, so a client can print deltas
as they come. Chinese is compared character by character, other scripts word by word; case and punctuation do
not count as disagreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from knowledge.text import CJK

_TOKEN = re.compile(rf"[{CJK}]|[^\s{CJK}]+")
_PUNCT = re.compile(r"[^\w]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _key(token: str) -> str:
    return _PUNCT.sub("", token).lower()


def _is_wide(token: str) -> bool:
    return bool(re.fullmatch(f"[{CJK}]", token))


def join(parts: list[str], after: str = "") -> str:
    """Tokens as text: no space around Chinese characters, one space between other words."""
    out = []
    prev = after[-1:] if after else ""
    for t in parts:
        if prev and not (_is_wide(t) or _is_wide(prev)) and not re.fullmatch(r"[,.!?;:，。！？；：、]+", t):
            out.append(" ")
        out.append(t)
        prev = t[-1]
    return "".join(out)


@dataclass
class LocalAgreement:
    released: list[str] = field(default_factory=list)
    _previous: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return join(self.released)

    def update(self, hypothesis: str) -> str:
        """Take the newest hypothesis of the whole utterance; return the newly stable text ('' if none)."""
        current = tokens(hypothesis)
        agreed = 0
        for a, b in zip(self._previous, current):
            if _key(a) != _key(b):
                break
            agreed += 1
        self._previous = current
        # Released words stay released: only an agreement that extends them, and starts with them, adds text.
        if agreed <= len(self.released):
            return ""
        if any(_key(r) != _key(c) for r, c in zip(self.released, current)):
            return ""
        new = current[len(self.released) : agreed]
        delta = join(new, after=self.text)
        self.released.extend(new)
        return delta

    def reset(self) -> None:
        self.released, self._previous = [], []
