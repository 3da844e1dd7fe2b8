"""Grounding for a consultation turn: numbered passages, the no-answer reply, citation markers, numbers guard.

Pure functions (no model library), used by the turn pipeline (workers/tasks/turns.py):

- `passages_from_hits` turns rag.search hits into the numbered passages [1]..[k] the LLM sees; each
  passage becomes one Citation row with the same `n`.
- `no_answer` is what the turn answers when retrieval finds nothing relevant (the LLM is not asked).
- `cited_numbers` reads the [n] markers of an answer (only those that name a given passage).
- `attribute` adds the marker a small model left out: a sentence without one that shares enough of its
  words with exactly one best passage gets that passage's [n] (post-hoc attribution by word overlap).
- `NumbersGuard.check(sentence)`: every quantity in a sentence (a number with a unit, dose, frequency or
  duration: "500 mg", "3 times", "7–10 days", "每日3次") must appear in a passage the sentence cites (all
  passages when it cites none); otherwise the sentence is replaced by the passage clause that best
  matches it (with that passage's marker), or dropped when none matches. Passages are cut into sentences
  and clauses (at ; too) by knowledge.text.split_clauses, as knowledge/support.py reads passage lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from knowledge.quantities import label, quantities
from knowledge.text import CJK, split_clauses

NO_ANSWER = {
    "en": "The knowledge base has no answer to this question.",
    "zh": "知识库中没有这个问题的答案。",
}


# When no answer sentence survives (the model gave none, or the numbers guard dropped them all) although
# passages were found: say so, and point at the sources instead of guessing.
UNVERIFIED = {
    "en": "I could not state an answer that matches the knowledge base; please read passage [1].",
    "zh": "我无法给出与知识库一致的回答，请查看资料 [1]。",
}


def unverified(language: str | None) -> str:
    return UNVERIFIED[answer_language(language)]


def answer_language(language: str | None) -> str:
    return "zh" if (language or "").lower().startswith(("zh", "yue")) else "en"


def disclaimer(settings: Any, language: str | None) -> str | None:
    """The configured medical disclaimer in the answer's language; None when it is set to empty."""
    text = getattr(settings, f"consult_disclaimer_{answer_language(language)}", "") or ""
    return text.strip() or None


# The no-answer reply that names what the knowledge base lacks, in the question's own words.
NO_ANSWER_ON = {
    "en": "The knowledge base has nothing on {missing}.",
    "zh": "知识库中没有关于{missing}的内容。",
}


def no_answer(language: str | None, missing: str = "") -> str:
    lang = answer_language(language)
    return NO_ANSWER_ON[lang].format(missing=missing) if missing else NO_ANSWER[lang]


# A factual question about something the knowledge base covers, but no line states the fact it asks for (the
# page on diabetes mentions metformin and gives no dose): said instead of letting the model guess one.
NO_FACT = {
    "en": "The knowledge base gives no {fact} for {topic}.",
    "zh": "知识库中没有{topic}的{fact}。",
}
# Every reply that says the knowledge base has no answer, as a pattern of the whole reply.
_ONE_PHRASE = "[^。.!?！？]+"  # what the reply names: a phrase, never a further sentence
_CANNED = [
    re.compile(re.sub(r"\\\{\w+\\\}", lambda _m: _ONE_PHRASE, re.escape(t)))
    for t in (*NO_ANSWER_ON.values(), *NO_FACT.values())
]


def is_canned(answer: str) -> bool:
    """A no-answer or could-not-verify reply (it tells a later turn nothing)."""
    text = (answer or "").strip()
    return text in UNVERIFIED.values() or text in NO_ANSWER.values() or any(rx.fullmatch(text) for rx in _CANNED)


def passages_from_hits(hits: Iterable[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The first k hits as numbered passages: {n, chunk_id, doc_id, title, source, score, text}."""
    out: list[dict[str, Any]] = []
    for hit in hits:
        text = (hit.get("text") or "").strip()
        if not text:
            continue
        out.append(
            {
                "n": len(out) + 1,
                "chunk_id": str(hit.get("chunk_id") or ""),
                "doc_id": str(hit.get("doc_id") or ""),
                "title": (hit.get("title") or None),
                "source": (hit.get("source") or None),
                "score": float(hit.get("score") or 0.0),
                "context": (hit.get("context") or None),  # "title — section heading": a table row's subject
                "text": text,
            }
        )
        if len(out) >= k:
            break
    return out


def context_texts(passages: list[dict[str, Any]], texts: list[str] | None = None) -> list[str]:
    """The passage texts in order, as the prompt numbers them [1]..[k] (title first when there is one);
    `texts` replaces the passages' own (their query-focused cut)."""
    texts = [p["text"] for p in passages] if texts is None else texts
    return [f"({p['title']}) {t}" if p.get("title") else t for p, t in zip(passages, texts)]


_MARKER = re.compile(r"\[(\d{1,3})\]")


def cited_numbers(text: str, known: Iterable[int] | None = None) -> list[int]:
    """The passage numbers cited as [n] in `text`, in order of first use (only those in `known`, if given)."""
    allowed = set(known) if known is not None else None
    seen: list[int] = []
    for m in _MARKER.finditer(text or ""):
        n = int(m.group(1))
        if (allowed is None or n in allowed) and n not in seen:
            seen.append(n)
    return seen


# ---- numbers guard ------------------------------------------------------------------------------------
_WORD = re.compile(rf"[a-z0-9]+|[{CJK}]", re.IGNORECASE)
_STOP = {
    "the",
    "a",
    "an",
    "of",
    "and",
    "or",
    "to",
    "in",
    "for",
    "is",
    "are",
    "be",
    "with",
    "on",
    "at",
    "by",
    "it",
    "this",
    "that",
    "as",
    "should",
    "can",
    "may",
}


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(_MARKER.sub(" ", text)) if w.lower() not in _STOP}


def attribute(sentence: str, passages: list[dict[str, Any]], min_overlap: float = 0.34) -> str:
    """`sentence` with a [n] marker for the passage it most overlaps with, when it has no marker yet."""
    if not passages or _MARKER.search(sentence):
        return sentence
    words = _words(sentence)
    if len(words) < 3:
        return sentence
    best_n, best = None, 0.0
    for p in passages:
        overlap = len(words & _words(p["text"])) / len(words)
        if overlap > best:
            best_n, best = p["n"], overlap
    if best_n is None or best < min_overlap:
        return sentence
    body = sentence.rstrip()
    end = len(body)
    while end and body[end - 1] in ".!?。！？;；":
        end -= 1
    return f"{body[:end]} [{best_n}]{body[end:]}"


@dataclass
class GuardResult:
    text: str | None  # the sentence to keep (original or replacement); None: dropped
    fired: bool
    unsupported: list[str] = field(default_factory=list)  # "500 mg"-style labels, never logged at INFO


class NumbersGuard:
    """Checks each answer sentence's quantities against the passages it cites (all, when it cites none)."""

    def __init__(self, passages: list[dict[str, Any]], min_overlap: float = 0.2) -> None:
        self.passages = {p["n"]: p for p in passages}
        self.quantities = {n: quantities(p["text"]) for n, p in self.passages.items()}
        self.min_overlap = min_overlap
        self.fired = False

    def check(self, sentence: str) -> GuardResult:
        found = quantities(sentence)
        if not found:
            return GuardResult(sentence, False)
        cited = cited_numbers(sentence, self.passages) or list(self.passages)
        supported: set[tuple[float, str]] = set()
        for n in cited:
            supported |= self.quantities.get(n, set())
        missing = sorted(q for q in found if q not in supported)
        if not missing:
            return GuardResult(sentence, False)
        self.fired = True
        labels = [label(q) for q in missing]
        return GuardResult(self._replacement(sentence, cited, {u for _, u in missing}), True, labels)

    def _replacement(self, sentence: str, cited: list[int], units: set[str]) -> str | None:
        """The cited passage clause most like `sentence` that states a quantity in one of `units`."""
        words = _words(sentence)
        best: tuple[float, int, str] | None = None
        for n in cited:
            for cand in split_clauses(self.passages[n]["text"] or ""):
                if not {u for _, u in quantities(cand)} & units:
                    continue
                cw = _words(cand)
                overlap = len(words & cw) / max(1, len(words))
                if overlap >= self.min_overlap and (best is None or overlap > best[0]):
                    best = (overlap, n, cand)
        if best is None:
            return None
        _, n, cand = best
        return f"{cand} [{n}]"
