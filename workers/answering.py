"""Answering a clinical question from retrieved passages, safely: one path for every place answers are made
(consultation turns today; live sessions and chat completions use the same two functions).

    select(question, passages, settings)   → the passages that cover the question, and the gate's verdict
    answer(question, passages, ...)        → the spoken, cited sentences, and what every check decided

`select` (on the rag pool, right after retrieval): passages far below the best one go (stale editions sink by
their decay), then the answerability gate (knowledge/answerability.py) keeps the documents that cover what
the question is about. None left: the reply names what the knowledge base lacks, and no citation is claimed.

`answer` (on the llm pool):
- *extractive* (the default mode, for dose, frequency, duration, threshold and which-drug questions): the
  passage line that answers the question for this patient (knowledge/support.py), quoted with its [n]. Exact,
  and instant: the LLM is not asked to decide a number.
- *generated* (other questions, or `consult_answer_mode=generative`): the LLM streams sentences; each is put
  into spoken style (knowledge/spoken.py) and must be supported by one passage line: its numbers with their
  qualifiers, its drug and condition words, its polarity. A sentence that is not supported, echoes the
  question or is a fragment is replaced by the line that answers the question (quoted, cited) or dropped.
  Generation stops after `consult_max_sentences`.

With `consult_safety` off, the earlier behaviour (numbers guard only) is kept for comparison (bench/answer_safety.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from knowledge.answerability import assess
from knowledge.spoken import clean, is_echo, is_fragment, pieces
from knowledge.support import Pick, Support, quote
from workers.grounding import answer_language, attribute, no_answer

log = logging.getLogger("medvoice.answering")
_MARKERS = re.compile(r"\s*\[\d{1,3}\]")

NO_ENTRY = {
    "en": "The knowledge base has no entry for exactly {patient}; it gives this general rule.",
    "zh": "知识库中没有 {patient} 的对应条目，以下是一般规则。",
}


@dataclass
class Selection:
    passages: list[dict[str, Any]]
    verdict: dict[str, Any]

    @property
    def answerable(self) -> bool:
        return bool(self.verdict.get("answerable", True))


def select(question: str, passages: list[dict[str, Any]], settings: Any) -> Selection:
    """The passages an answer may use, renumbered [1]..[k], and the answerability verdict."""
    if not getattr(settings, "consult_safety", True):
        return Selection(passages, {"answerable": bool(passages), "reason": "safety off"})
    top = max((float(p.get("score") or 0.0) for p in passages), default=0.0)
    near = [p for p in passages if float(p.get("score") or 0.0) >= settings.consult_relative_floor * top]
    gate = assess(question, near, settings.consult_min_coverage)
    keep = [p for p in near if p["n"] in gate.keep]
    renumbered = [{**p, "n": i} for i, p in enumerate(keep, 1)]
    verdict = {**gate.as_dict(), "keep": [p["n"] for p in renumbered],
               "dropped_far": len(passages) - len(near)}
    return Selection(renumbered, verdict)


@dataclass
class Answer:
    sentences: list[str] = field(default_factory=list)
    mode: str = "generated"  # no_answer | extractive | generated | unverified
    claims: list[dict[str, Any]] = field(default_factory=list)  # one per generated sentence: action, reason
    style: dict[str, int] = field(default_factory=lambda: {"cleaned": 0, "dropped": 0, "echo": 0, "fragment": 0})
    generation: dict[str, Any] | None = None  # the LLM's own result (timings, finish_reason), when it ran
    attributed: int = 0

    @property
    def guard_fired(self) -> bool:
        return any(c["action"] != "kept" for c in self.claims)

    def verdicts(self) -> dict[str, Any]:
        return {"mode": self.mode, "claims": self.claims, "style": self.style}


Generate = Callable[[Callable[[str], bool], Callable[[], bool]], dict[str, Any]]
"""generate(on_sentence, stop) runs the LLM: on_sentence(text) for each streamed sentence, stop() asked between
tokens; returns the engine's result dict."""


def answer(question: str, language: str | None, passages: list[Mapping[str, Any]], settings: Any,
           emit: Callable[[str], None], generate: Generate | None,
           missing: str = "") -> Answer:
    """Answer `question` from `passages` (already selected), calling emit(sentence) as each sentence is final."""
    lang = answer_language(language)
    out = Answer()

    def say(text: str) -> None:
        for piece in pieces(text, settings.tts_max_chars):  # each one is spoken as it comes
            out.sentences.append(piece)
            emit(piece)

    if not passages:
        out.mode = "no_answer"
        say(no_answer(lang, missing))
        return out
    support = Support(question, list(passages))
    picks = support.best_lines()
    quoted: set[str] = set()

    def say_pick(pick: Pick) -> bool:
        text = quote(pick, support.question, lang)
        if text in quoted:
            return False
        quoted.add(text)
        say(text)
        return True

    def note_patient() -> None:
        patient = support.unmatched_patient()
        if patient:
            say(NO_ENTRY[lang].format(patient=patient))

    if settings.consult_answer_mode == "extractive" and support.question.factual and picks:
        out.mode = "extractive"
        note_patient()
        for pick in picks:
            say_pick(pick)
        return out
    if generate is None:
        out.mode = "unverified"
        return out
    limit = settings.consult_max_sentences

    def on_sentence(raw: str) -> bool:
        """One streamed sentence: cleaned, checked, then spoken, replaced or dropped."""
        index = len(out.claims)
        text = clean(raw)
        if text is None:
            out.style["dropped"] += 1
            out.claims.append({"index": index, "action": "dropped", "reason": "style"})
            return False
        out.style["cleaned"] += text != raw.strip()
        problem = ("echo" if is_echo(text, question) else "fragment" if is_fragment(text) else None)
        if problem:
            out.style[problem] += 1
            verdict_reason = problem
        else:
            verdict = support.check(text)
            if verdict.supported:
                if settings.consult_attribute_citations:
                    marked = attribute(text, list(passages)) if verdict.line is None else _cite(text, verdict.line.n)
                    out.attributed += marked != text
                    text = marked
                out.claims.append({"index": index, "action": "kept", "reason": "supported"})
                say(text)
                return True
            verdict_reason = verdict.reason
        replaced = bool(picks) and say_pick(picks[0])
        out.claims.append({"index": index, "action": "replaced" if replaced else "dropped", "reason": verdict_reason})
        return replaced

    out.generation = generate(on_sentence, lambda: len(out.sentences) >= limit)
    if out.generation.get("cancelled") and len(out.sentences) < limit:
        return out  # the caller reports the cancellation
    if not out.sentences:
        if picks:
            say_pick(picks[0])
        else:
            out.mode = "unverified"
            return out
    return out


def _cite(sentence: str, n: int) -> str:
    """The sentence citing the passage whose line supports it (the model's own markers may name another)."""
    body = _MARKERS.sub("", sentence).rstrip()
    end = len(body)
    while end and body[end - 1] in ".!?。！？;；":
        end -= 1
    return f"{body[:end]} [{n}]{body[end:]}"
