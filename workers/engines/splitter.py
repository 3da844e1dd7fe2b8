"""Streaming sentence splitter for Chinese and English LLM output (pure Python, no model imports).

This is the splitter for text being *written* (the answer, on its way to speech). Stored passages, read
whole, are split by knowledge.text.split_sentences / split_clauses instead; the cuts here differ on
purpose (an early first chunk at a comma, a number waiting for its next character).

Text arrives token by token; a sentence is emitted as soon as its end is certain, so speech synthesis
can start while the model is still writing. Boundaries:

- Chinese 。！？； (and a run of them, plus closing quotes/brackets) always end a sentence.
- English . ! ? ; end a sentence when followed by whitespace, a CJK character or the end of the text —
  never inside a number (2.5 mg, 1,000), a dotted word (e.g., U.S., example.com) or after a known
  abbreviation (e.g. / i.e. / Dr. / vs. ...), an initial ("J. Smith"), a list marker ("1. "), or when
  the next word starts in lower case ("approx. five").
- A line break ends a sentence (LLMs write lists without full stops).
- The *first* chunk may also end at ，/, (comma followed by a space) once it is long enough to be
  worth speaking, so the first audio starts sooner.
- A run-on longer than `max_chars` is cut at its last comma or space.

A boundary whose decision needs the next character waits for it (one more token), or for `flush()`.
"""

from __future__ import annotations

import re

from knowledge.text import is_cjk

ZH_TERMINATORS = "。！？；"
EN_TERMINATORS = ".!?;"
ELLIPSIS = "…"
CLOSERS = "\"'”’」』）)]】》>"
# Lower-case forms, without the final dot, that never end a sentence.
ABBREVIATIONS = frozenset(
    {
        "e.g",
        "i.e",
        "eg",
        "ie",
        "vs",
        "cf",
        "viz",
        "approx",
        "ca",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "fig",
        "figs",
        "al",
        "inc",
        "ltd",
        "co",
        "dept",
        "est",
        "resp",
        "b.i.d",
        "t.i.d",
        "q.i.d",
        "q.d",
        "p.o",
        "i.v",
        "i.m",
        "s.c",
        "p.r.n",
        "a.m",
        "p.m",
    }
)
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def is_wide(ch: str) -> bool:
    """A wide character: a Chinese character (knowledge.text.CJK) and, wider on purpose here, Extension B
    ideographs, CJK punctuation (U+3000-303F: 。、「」) and full-width forms (U+FF00-FFEF: ，！？): each
    takes about two Latin characters of speech, and an English '.' or ';' before one ends a sentence."""
    if is_cjk(ch):
        return True
    o = ord(ch)
    return 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x2A6DF


def weighted_len(text: str) -> int:
    """Length in 'Latin character' units: a CJK character carries about as much speech as two."""
    return sum(2 if is_wide(c) else 1 for c in text if not c.isspace())


class SentenceSplitter:
    def __init__(self, first_chunk_comma: bool = True, min_first_chars: int = 12, max_chars: int = 240) -> None:
        self.first_chunk_comma = first_chunk_comma
        self.min_first_chars = min_first_chars
        self.max_chars = max_chars
        self._buf = ""
        self._emitted = 0

    # -- public -------------------------------------------------------------------------------------
    def feed(self, text: str) -> list[str]:
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> list[str]:
        out = self._drain(final=True)
        rest = self._buf.strip()
        self._buf = ""
        if rest:
            out.append(rest)
            self._emitted += 1
        return out

    @property
    def pending(self) -> str:
        return self._buf

    # -- internals ----------------------------------------------------------------------------------
    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            end = self._boundary(self._buf, final)
            if end is None:
                break
            sentence = self._buf[:end].strip()
            self._buf = self._buf[end:]
            if sentence:
                out.append(sentence)
                self._emitted += 1
        # drop leading whitespace between sentences (but keep it while the buffer may still grow into
        # a decision that needs it)
        if not self._buf.strip():
            self._buf = "" if final else self._buf.lstrip(" \t")
        return out

    def _boundary(self, buf: str, final: bool) -> int | None:
        """End index (exclusive) of the first complete sentence in buf, or None if not yet certain."""
        n = len(buf)
        first = self._emitted == 0
        i = 0
        while i < n:
            ch = buf[i]
            if ch == "\n":
                if buf[:i].strip():
                    return i + 1
                i += 1
                continue
            if ch in ZH_TERMINATORS or ch == ELLIPSIS:
                end = self._absorb(buf, i + 1)
                if end >= n and not final:
                    return None  # a closer or another terminator may still follow
                if ch == ELLIPSIS and not buf[:i].strip():
                    i = end
                    continue
                return end
            if ch in EN_TERMINATORS:
                decision = self._english_terminator(buf, i, final)
                if decision is None:
                    return None
                if decision > 0:
                    return decision
            elif self.first_chunk_comma and first and ch in "，,、":
                decision = self._comma(buf, i, final)
                if decision is None:
                    return None
                if decision > 0:
                    return decision
            i += 1
        if weighted_len(buf) > self.max_chars:
            return self._forced_cut(buf)
        return None

    @staticmethod
    def _absorb(buf: str, j: int) -> int:
        """Skip further terminators and closing quotes/brackets after a terminator."""
        n = len(buf)
        while j < n and (
            buf[j] in ZH_TERMINATORS or buf[j] in EN_TERMINATORS or buf[j] in CLOSERS or buf[j] == ELLIPSIS
        ):
            j += 1
        return j

    def _english_terminator(self, buf: str, i: int, final: bool) -> int | None:
        """>0: sentence ends there; 0: not a boundary; None: need more text to decide."""
        n = len(buf)
        ch = buf[i]
        end = self._absorb(buf, i + 1)
        if end >= n:
            return end if final else None
        nxt = buf[end]
        before = buf[:i]
        if ch == "." and end == i + 1:
            if nxt.isalnum() and not is_wide(nxt):
                return 0  # 2.5, e.g (inner dot), example.com, v1.2
            if not nxt.isspace() and not is_wide(nxt):
                return 0 if nxt not in CLOSERS else end
            if nxt.isspace():
                word_m = _WORD_BEFORE.search(before)
                word = word_m.group(1).lower() if word_m else ""
                if word in ABBREVIATIONS or word.rstrip(".") in ABBREVIATIONS:
                    return 0
                if word_m and len(word) == 1 and word.isalpha() and word_m.group(1).isupper():
                    return 0  # an initial: "J. Smith"
                stripped = before.strip()
                if stripped.isdigit() or (len(stripped) == 1 and stripped.isalpha()):
                    return 0  # list marker "1. " or "a. "
                # the next word decides: a lower-case word continues the sentence
                k = end
                while k < n and buf[k].isspace():
                    if buf[k] == "\n":
                        return end
                    k += 1
                if k >= n:
                    return end if final else None
                if buf[k].islower():
                    return 0
                if "." in word.strip(".") and not buf[k].isupper():
                    return 0  # a dotted abbreviation we do not list (U.S., a.m.): a boundary only before a capital
                return end
        if ch == ";" and end == i + 1 and not (nxt.isspace() or is_wide(nxt)):
            return 0  # "&amp;" or code
        if ch in "!?" and nxt.isalnum() and not is_wide(nxt) and end == i + 1:
            return 0  # "Yahoo!Mail"-like run-ons are rare; keep them together
        return end

    def _comma(self, buf: str, i: int, final: bool) -> int | None:
        if weighted_len(buf[:i]) < self.min_first_chars:
            return 0
        ch = buf[i]
        if ch in "，、":
            end = self._absorb_closers(buf, i + 1)
            return end
        # ASCII comma: only before a space (never inside 1,000)
        if i + 1 >= len(buf):
            return i + 1 if final else None
        return i + 1 if buf[i + 1].isspace() else 0

    @staticmethod
    def _absorb_closers(buf: str, j: int) -> int:
        while j < len(buf) and buf[j] in CLOSERS:
            j += 1
        return j

    def _forced_cut(self, buf: str) -> int:
        # cut at the last comma or space that keeps the chunk under max_chars
        limit, acc = 0, 0
        for idx, c in enumerate(buf):
            acc += 0 if c.isspace() else (2 if is_wide(c) else 1)
            if acc > self.max_chars:
                break
            limit = idx + 1
        head = buf[:limit]
        for marks in ("，,、：:", " "):
            cut = max(head.rfind(m) for m in marks)
            if cut > 0:
                return cut + 1
        return max(limit, 1)


def split_sentences(text: str, first_chunk_comma: bool = False, **kwargs: int) -> list[str]:
    """Split a whole text (the non-streaming form of SentenceSplitter)."""
    s = SentenceSplitter(first_chunk_comma=first_chunk_comma, **kwargs)
    out = s.feed(text)
    out.extend(s.flush())
    return out
