"""Grounding for a consultation turn: numbered passages, the no-answer reply, citation markers, numbers guard.

Pure functions (stdlib only), used by the turn pipeline (workers/tasks/turns.py):

- `passages_from_hits` turns rag.search hits into the numbered passages [1]..[k] the LLM sees; each
  passage becomes one Citation row with the same `n`.
- `no_answer` is what the turn answers when retrieval finds nothing relevant (the LLM is not asked).
- `cited_numbers` reads the [n] markers of an answer (only those that name a given passage).
- `attribute` adds the marker a small model left out: a sentence without one that shares enough of its
  words with exactly one best passage gets that passage's [n] (post-hoc attribution by word overlap).
- `NumbersGuard.check(sentence)`: every quantity in a sentence (a number with a unit, dose, frequency or
  duration: "500 mg", "3 times", "7–10 days", "每日3次") must appear in a passage the sentence cites (all
  passages when it cites none); otherwise the sentence is replaced by the passage sentence that best
  matches it (with that passage's marker), or dropped when no passage sentence matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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


def no_answer(language: str | None) -> str:
    return NO_ANSWER[answer_language(language)]


def passages_from_hits(hits: Iterable[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The first k hits as numbered passages: {n, chunk_id, doc_id, title, source, score, text}."""
    out: list[dict[str, Any]] = []
    for hit in hits:
        text = (hit.get("text") or "").strip()
        if not text:
            continue
        out.append({
            "n": len(out) + 1,
            "chunk_id": str(hit.get("chunk_id") or ""),
            "doc_id": str(hit.get("doc_id") or ""),
            "title": (hit.get("title") or None),
            "source": (hit.get("source") or None),
            "score": float(hit.get("score") or 0.0),
            "text": text,
        })
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
# unit spelling → canonical unit. Longer spellings first so the regex prefers them.
_UNITS: dict[str, str] = {}


def _unit(canonical: str, *spellings: str) -> None:
    for s in (canonical, *spellings):
        _UNITS[s.lower()] = canonical


_unit("mg/kg", "mg/kg/day", "mg per kg")
_unit("mg/dl", "mg/dL")
_unit("mmol/l", "mmol/L", "mmol")
_unit("mmhg", "mm hg", "mmHg")
_unit("mcg", "µg", "μg", "ug", "microgram", "micrograms")
_unit("mg", "milligram", "milligrams", "mgs", "毫克")
_unit("g", "gram", "grams", "克")
_unit("kg", "kilogram", "kilograms", "公斤", "千克")
_unit("ml", "mL", "millilitre", "milliliter", "millilitres", "milliliters", "毫升")
_unit("l", "litre", "liter", "litres", "liters", "升")
_unit("iu", "IU", "units", "unit", "单位")
_unit("%", "percent", "per cent")
_unit("tablet", "tablets", "tab", "tabs", "pill", "pills", "片")
_unit("capsule", "capsules", "caps", "粒", "胶囊")
_unit("drop", "drops", "滴")
_unit("puff", "puffs", "喷")
_unit("dose", "doses", "剂")
_unit("times", "time", "x", "次")
_unit("min", "minute", "minutes", "mins", "分钟")
_unit("h", "hour", "hours", "hr", "hrs", "小时")
_unit("d", "day", "days", "天", "日")
_unit("wk", "week", "weeks", "周", "星期")
_unit("mo", "month", "months", "个月", "月")
_unit("y", "year", "years", "yr", "yrs", "年", "岁")
_unit("bpm", "beats per minute")
_unit("°c", "°C", "degrees", "度")

_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_NUM = r"\d+(?:[.,]\d+)?"
# "500 mg", "500mg", "7-10 days", "7 to 10 days", "2–3 times", "3次", "10 毫克"
_QUANTITY = re.compile(
    rf"(?<![A-Za-z0-9.])({_NUM})(?:\s*(?:-|–|—|to|~|至|到)\s*({_NUM}))?\s*(?:-\s*)?({_UNIT_ALT})(?![A-Za-z])",
    re.IGNORECASE,
)


def _number(raw: str) -> float:
    return float(raw.replace(",", "")) if raw.count(",") == 1 and len(raw.split(",")[1]) == 3 else float(
        raw.replace(",", "."))


def quantities(text: str) -> set[tuple[float, str]]:
    """Every (value, canonical unit) in `text`; a range gives both ends."""
    out: set[tuple[float, str]] = set()
    for m in _QUANTITY.finditer(text or ""):
        unit = _UNITS.get(m.group(3).lower())
        if unit is None:
            continue
        out.add((_number(m.group(1)), unit))
        if m.group(2):
            out.add((_number(m.group(2)), unit))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;])\s+|(?<=[。！？；])")
_WORD = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]", re.IGNORECASE)
_STOP = {"the", "a", "an", "of", "and", "or", "to", "in", "for", "is", "are", "be", "with", "on", "at", "by",
         "it", "this", "that", "as", "should", "can", "may"}


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(_MARKER.sub(" ", text)) if w.lower() not in _STOP}


def passage_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text or "") if s and s.strip()]


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
        labels = [f"{v:g} {u}" for v, u in missing]
        return GuardResult(self._replacement(sentence, cited, {u for _, u in missing}), True, labels)

    def _replacement(self, sentence: str, cited: list[int], units: set[str]) -> str | None:
        """The cited passage sentence most like `sentence` that states a quantity in one of `units`."""
        words = _words(sentence)
        best: tuple[float, int, str] | None = None
        for n in cited:
            for cand in passage_sentences(self.passages[n]["text"]):
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
