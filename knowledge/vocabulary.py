"""The knowledge base's own vocabulary, for the speech recogniser: document titles, tags and the technical
words of the passages (drug and disease names, eponyms) that a general-purpose ASR model mishears.

Built beside the BM25 index (the same pass over the chunks) whenever the store changes, and written to
`<kb path>/vocabulary.json` so the asr pool can read it without opening the store, which the rag pool holds:

    {"generation": 7, "built_at": "...", "terms": ["Otitis media in adults", "amoxicillin", ...]}

Terms are ranked: titles (newest document first), then tags, then passage words by how many documents use
them. The consumer bounds what it feeds the recogniser (Whisper's prompt window is 224 tokens).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from knowledge.files import write_atomic

FILE_NAME = "vocabulary.json"
MAX_TERMS = 400

# Endings of drug (INN stems) and disease names: words a general model has rarely heard. The answer checks
# (knowledge/terms.py) use the same endings, less the broad ones that also end everyday words (-ism, -mol,
# -oma...), which only widen the recogniser's vocabulary.
NAME_ENDINGS = (
    "cillin|mycin|micin|cycline|oxacin|azole|prazole|tidine|pril|sartan|olol|dipine|statin|formin|gliptin"
    "|gliflozin|glutide|mab|tinib|ciclovir|clovir|navir|zepam|azolam|triptan|parin|xaban|gatran|olone"
    "|profen|fenac|coxib|oxetine|pramine|thiazide|semide|caine|itis|osis|aemia|emia|pathy|algia|plasia"
    "|ectomy|iasis|rrhea|rrhoea|uria|coccus|cocci|bacter|virus"
)
_TECHNICAL = re.compile(rf"(?:{NAME_ENDINGS}|sone|aline|amide|mide|mol|pine|done|oma|trophy|asia|ism|ella)$")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{4,}")
_SENTENCE_END = re.compile(r"[.!?]\s*$")


def _candidates(text: str) -> set[str]:
    """Technical words in one passage: by their ending, or capitalised inside a sentence (an eponym such as
    Kaposi or Hodgkin). Lower-cased unless they are eponyms."""
    out: set[str] = set()
    for m in _WORD.finditer(text):
        word = m.group(0).strip("'-")
        low = word.lower()
        if len(low) >= 6 and _TECHNICAL.search(low):
            out.add(low)
        elif word[0].isupper() and not word.isupper() and m.start() > 0:
            before = text[max(0, m.start() - 3) : m.start()]
            if before.strip() and not _SENTENCE_END.search(before) and "\n" not in before:
                out.add(word)
    return out


class VocabularyBuilder:
    def __init__(self) -> None:
        self._doc_freq: Counter[str] = Counter()
        self._seen: dict[str, set[str]] = {}

    def add(self, doc_ids: list[str], texts: list[str]) -> None:
        for doc_id, text in zip(doc_ids, texts):
            seen = self._seen.setdefault(doc_id, set())
            for word in _candidates(text) - seen:
                seen.add(word)
                self._doc_freq[word] += 1

    def finish(self, documents: list[Any], max_terms: int = MAX_TERMS) -> list[str]:
        """Ranked terms; `documents` are DocRecords (title, tags, date)."""
        terms: list[str] = []
        seen: set[str] = set()

        def take(term: str) -> None:
            term = " ".join(term.split())
            if term and term.lower() not in seen and len(term) <= 80:
                seen.add(term.lower())
                terms.append(term)

        for doc in sorted(documents, key=lambda d: d.date or "", reverse=True):
            take(doc.title)
        for doc in documents:
            for tag in doc.tags or []:
                take(tag)
        # Words named by a title are there already; the rest by how many documents use them.
        for word, _n in sorted(self._doc_freq.items(), key=lambda kv: (-kv[1], kv[0])):
            if not any(word.lower() in t.lower() for t in terms[: len(documents)]):
                take(word)
        return terms[:max_terms]


def write(path: Path, generation: int, terms: list[str]) -> Path:
    target = path / FILE_NAME
    body = {"generation": generation, "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "terms": terms}
    return write_atomic(target, json.dumps(body, ensure_ascii=False))  # a reader never sees half a file


def read(path: Path) -> list[str]:
    """The terms in <path>/vocabulary.json; [] when there is none yet or it is unreadable."""
    try:
        body = json.loads((path / FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    terms = body.get("terms") if isinstance(body, dict) else None
    return [t for t in terms if isinstance(t, str)] if isinstance(terms, list) else []
