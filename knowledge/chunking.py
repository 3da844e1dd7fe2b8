"""Sentence-aware chunking (English and Chinese) with overlap, sized in tokens of the embedding model.

Every chunk keeps its document title and section heading as context: the context is prepended to the
text that is embedded and indexed for BM25 (so "symptoms of X" finds X's chunks), and stored separately
from the chunk body that is shown and cited.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from knowledge.loaders import Document
from knowledge.text import CJK, CJK_CHAR, detect_language, split_sentences

TokenCounter = Callable[[str], int]


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    index: int
    text: str  # the body: what is shown and cited
    context: str  # "title — heading"
    language: str

    @property
    def indexed_text(self) -> str:
        """What is embedded and indexed: context first, then the body."""
        return f"{self.context}\n{self.text}" if self.context else self.text


def chunk_id(doc_id: str, index: int) -> str:
    return f"{doc_id}#{index:05d}"


def approx_tokens(text: str) -> int:
    """A cheap estimate (words ×1.3, CJK characters ×1) for when no tokenizer is at hand."""
    cjk = len(CJK_CHAR.findall(text))
    words = len(re.findall(r"[A-Za-z0-9]+", text))
    other = len(re.findall(rf"[^\sA-Za-z0-9{CJK}]", text))
    return int(cjk + words * 1.3 + other * 0.5) + 1


def _split_long(sentence: str, n_tokens: int, budget: int) -> list[str]:
    """Cut a sentence longer than the budget into pieces of about `budget` tokens (at spaces if any)."""
    parts = max(2, -(-n_tokens // max(1, budget)))
    words = sentence.split(" ")
    if len(words) >= parts * 2:
        per = -(-len(words) // parts)
        return [" ".join(words[i : i + per]) for i in range(0, len(words), per)]
    per = -(-len(sentence) // parts)
    return [sentence[i : i + per] for i in range(0, len(sentence), per)]


def chunk_document(
    doc: Document, count_tokens: TokenCounter | None = None, chunk_tokens: int = 200, overlap_tokens: int = 40
) -> list[Chunk]:
    count = count_tokens or approx_tokens
    chunks: list[Chunk] = []
    for section in doc.sections:
        context = doc.title if not section.heading else f"{doc.title} — {section.heading}"
        budget = max(32, chunk_tokens - count(context))
        sents: list[tuple[str, int]] = []
        for s in split_sentences(section.text):
            n = count(s)
            if n > budget:
                for piece in _split_long(s, n, budget):
                    sents.append((piece, count(piece)))
            else:
                sents.append((s, n))
        if not sents:
            continue
        start = 0
        while start < len(sents):
            end, used = start, 0
            while end < len(sents) and (used + sents[end][1] <= budget or end == start):
                used += sents[end][1]
                end += 1
            body = _join([s for s, _ in sents[start:end]])
            chunks.append(Chunk("", doc.doc_id, 0, body, context, detect_language(body)))
            if end >= len(sents):
                break
            # Overlap: the next chunk starts with the last sentences of this one (at most overlap_tokens),
            # and always moves forward.
            back, acc = end, 0
            while back - 1 > start and acc + sents[back - 1][1] <= overlap_tokens:
                back -= 1
                acc += sents[back][1]
            start = back
    for i, c in enumerate(chunks):
        c.index = i
        c.chunk_id = chunk_id(doc.doc_id, i)
    return chunks


def _join(sentences: list[str]) -> str:
    out = ""
    for s in sentences:
        if not out:
            out = s
        elif CJK_CHAR.match(s[:1]) and re.search(rf"[{CJK}。！？；]$", out):
            out += s  # Chinese sentences join without a space
        else:
            out += " " + s
    return out
